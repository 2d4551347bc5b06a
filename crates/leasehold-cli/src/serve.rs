//! `run --metrics-listen`: the Prometheus exporter and a `/healthz`, on a small HTTP/1.1 server.
//!
//! Hand-written rather than hyper/axum: two read-only endpoints, one request per connection,
//! do not justify an HTTP stack in the operator binary. Every request is bounded (size, read
//! time, connections at once) and a malformed one gets a 4xx, never a panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{telemetry, LeaseManager};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The largest request head read (request line and headers); a longer one gets 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/healthz` waits for the store before it answers 503.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long, and how much, a connection is drained after its response.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// How often histogram samples are folded into the exported state between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Histogram buckets, in seconds, of every `leasehold_*_seconds` metric: from a fast Redis call
/// to a revocation retried for minutes. Buckets (not summaries) so that `histogram_quantile`
/// can aggregate several instances.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Installs the Prometheus recorder as the process's global recorder and describes every
/// metric of the library (the `# HELP` lines). Called only when `run` is asked to serve
/// metrics: without it the library's recording stays a no-op.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    describe();
    Ok(handle)
}

/// `# HELP` and unit of each metric named in [`leasehold_core::telemetry`].
fn describe() {
    describe_gauge!(
        telemetry::LEASES,
        "Leases in the store, by secret and state."
    );
    describe_gauge!(
        telemetry::IRREVOCABLE_LEASES,
        "Irrevocable leases in the store: credentials that may still exist, for an operator to look at."
    );
    describe_counter!(telemetry::ISSUES, "Issue calls, by secret and outcome.");
    describe_histogram!(
        telemetry::ISSUE_DURATION,
        Unit::Seconds,
        "Issue latency, readiness wait included."
    );
    describe_counter!(telemetry::RENEWALS, "Renew calls, by secret and outcome.");
    describe_counter!(
        telemetry::REVOCATIONS,
        "Revocation attempts, by secret, reason (revoke or expire) and outcome."
    );
    describe_histogram!(
        telemetry::REVOKE_DURATION,
        Unit::Seconds,
        "One revocation: the provider call and the store write."
    );
    describe_counter!(
        telemetry::REVOKE_RETRIES,
        "Failed revocations scheduled again."
    );
    describe_counter!(telemetry::IRREVOCABLE, "Leases that became irrevocable.");
    describe_histogram!(
        telemetry::EXPIRY_LAG,
        Unit::Seconds,
        "Time from a lease's expires_at to its revocation by the expiry worker."
    );
    describe_counter!(
        telemetry::PROVIDER_CALLS,
        "Backend calls, by provider, operation and outcome (success, throttled, timeout, refused, error)."
    );
    describe_histogram!(
        telemetry::PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "Backend call latency, by provider and operation."
    );
    describe_counter!(
        telemetry::STORE_ERRORS,
        "Failed store calls of the expiry worker, by operation."
    );
    describe_counter!(
        telemetry::WORKER_LOOPS,
        "Expiry worker passes; flat means the worker is stuck."
    );
}

/// The metrics and health server of one `run`: aborted on drop.
pub struct Server {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a connection needs to answer.
struct State {
    handle: PrometheusHandle,
    manager: LeaseManager,
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the returned [`Server`] is
/// dropped; runs the exporter's upkeep meanwhile.
pub fn spawn(listener: TcpListener, handle: PrometheusHandle, manager: LeaseManager) -> Server {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_INTERVAL).await;
                handle.run_upkeep();
            }
        })
    };
    let state = Arc::new(State { handle, manager });
    let accept = tokio::spawn(accept_loop(listener, state));
    Server {
        addr,
        tasks: vec![upkeep, accept],
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "metrics server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, &state).await {
                tracing::debug!(error = %e, "metrics server: connection ended with an error");
            }
        });
    }
}

/// A response: status line, content type and body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

async fn connection(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let (response, head_only) = match read_head(&mut stream).await {
        Ok(head) => match parse_request_line(&head) {
            Ok(req) => {
                let head_only = req.method == "HEAD";
                (answer(&req, state).await, head_only)
            }
            Err(r) => (r, false),
        },
        Err(r) => (r, false),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await?;
    linger(&mut stream).await;
    Ok(())
}

/// Reads and discards what the client still sends (a body, the rest of an oversized head)
/// for a moment before the socket closes: closing with unread input makes the kernel reset
/// the connection, and the client could lose the response it has not read yet.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Reads up to the blank line that ends the request head. A request body is not expected
/// (GET and HEAD only) and is never read.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            if let Some(end) = find_head_end(&buf) {
                buf.truncate(end);
                return Ok(());
            }
            if buf.len() >= MAX_REQUEST_BYTES {
                return Err(Response::text(431, "request head too large\n"));
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(Response::text(400, "incomplete request\n")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(r)) => Err(r),
        Err(_) => Err(Response::text(408, "request not received in time\n")),
    }
}

/// The offset of the end of the head (`\r\n\r\n`, or a bare `\n\n` from a lenient client).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The parts of a request line this server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

fn parse_request_line(head: &[u8]) -> Result<Request, Response> {
    let bad = || Response::text(400, "malformed request\n");
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| bad())?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad());
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => {
            return Err(Response::text(505, "only HTTP/1.x is served\n"))
        }
        _ => return Err(bad()),
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

async fn answer(req: &Request, state: &State) -> Response {
    let known = matches!(req.path.as_str(), "/metrics" | "/healthz");
    if !known {
        return Response::text(404, "not found: try /metrics or /healthz\n");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET and HEAD are served\n");
    }
    match req.path.as_str() {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: state.handle.render(),
        },
        _ => health(&state.manager).await,
    }
}

async fn health(manager: &LeaseManager) -> Response {
    match tokio::time::timeout(HEALTH_TIMEOUT, manager.health()).await {
        Ok(Ok(())) => Response::text(200, "ok\n"),
        Ok(Err(e)) => Response::text(503, format!("{}\n", one_line(&e.to_string()))),
        Err(_) => Response::text(
            503,
            format!(
                "the store did not answer within {}s\n",
                HEALTH_TIMEOUT.as_secs()
            ),
        ),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, u16> {
        parse_request_line(s.as_bytes()).map_err(|r| r.status)
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse("GET /metrics HTTP/1.1\r\nHost: x"),
            Ok(Request {
                method: "GET".into(),
                path: "/metrics".into()
            })
        );
        assert_eq!(
            parse("GET /healthz?verbose=1 HTTP/1.0").unwrap().path,
            "/healthz"
        );
        assert_eq!(parse("GET /metrics HTTP/2.0"), Err(505));
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET  /metrics HTTP/1.1",
            "get /metrics HTTP/1.1",
            "GET metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 extra",
            "GET /met\u{1}rics HTTP/1.1",
            "\u{0}\u{0}\u{0}",
            "GET /metrics SPDY/3",
        ] {
            assert_eq!(parse(bad).map(|_| 0), Err(400), "{bad:?}");
        }
        assert_eq!(
            parse_request_line(b"GET /\xff HTTP/1.1")
                .map_err(|r| r.status)
                .map(|_| 0),
            Err(400)
        );
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
