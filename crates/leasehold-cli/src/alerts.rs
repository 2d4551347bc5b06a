//! Alerts of `run`: one `ALERT ...` line on stderr per alert, and an optional webhook that
//! receives a JSON body per alert.
//!
//! The webhook client is a few lines of HTTP/1.1 over a TCP stream rather than an HTTP client
//! crate: one POST with a JSON body to a plain `http://` URL does not justify one (and a relay
//! on the same host or network is the usual target). `https://` is refused when the config is
//! read.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use leasehold_core::{Alert, AlertHook, AlertReason, AuditEvent};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::output::{escape, time};

/// How long one webhook delivery may take: connecting, sending and reading the status line.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Alerts waiting for delivery; more are dropped (each is on stderr as well).
const WEBHOOK_QUEUE: usize = 256;

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl WebhookUrl {
    /// Parses `http://host[:port][/path]`; anything else is an error saying why.
    pub fn parse(url: &str) -> Result<WebhookUrl, String> {
        if url.len() > 2048 {
            return Err("must be at most 2048 characters".into());
        }
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("must not contain spaces or control characters".into());
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(
                "https is not supported: point it at an http:// relay (on this host or a trusted network) that forwards over TLS"
                    .into(),
            );
        }
        if !lower.starts_with("http://") {
            return Err(format!("{url:?} is not an http:// URL"));
        }
        let rest = &url["http://".len()..];
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err("user info in the URL is not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        Ok(WebhookUrl {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The stable name of an alert's reason.
pub fn reason_name(reason: &AlertReason) -> &'static str {
    match reason {
        AlertReason::Irrevocable => "irrevocable",
        AlertReason::RepeatedRevokeFailures(_) => "repeated_revoke_failures",
        AlertReason::QuotaRefused => "quota_refused",
        _ => "alert",
    }
}

/// The JSON body posted for an alert.
pub fn alert_json(reason: &AlertReason, e: &AuditEvent) -> Value {
    json!({
        "alert": reason_name(reason),
        "at": time(e.at),
        "action": e.action.as_str(),
        "lease_id": e.lease_id.as_ref().map(|l| l.as_str()),
        "secret": e.secret,
        "principal": e.principal,
        "identity": e.identity,
        "error": e.error.map(|k| k.as_str()),
        "message": e.message,
        "attempts": e.attempts,
    })
}

/// `value` for a `key=value` line: escaped, and quoted when it holds a space, a quote or `=`.
fn field(value: &str) -> String {
    let v = escape(value);
    if v.is_empty() || v.contains([' ', '"', '=']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v
    }
}

/// The one-line form of `alert` for stderr:
/// `ALERT irrevocable lease=... secret=... principal=... error="..."`.
pub fn alert_line(reason: &AlertReason, e: &AuditEvent) -> String {
    let mut line = format!("ALERT {}", reason_name(reason));
    if let AlertReason::RepeatedRevokeFailures(n) = reason {
        let _ = write!(line, " attempts={n}");
    }
    if let Some(id) = &e.lease_id {
        let _ = write!(line, " lease={}", field(id.as_str()));
    }
    let _ = write!(line, " secret={}", field(&e.secret));
    if let Some(p) = &e.principal {
        let _ = write!(line, " principal={}", field(p));
    }
    if let Some(i) = &e.identity {
        let _ = write!(line, " identity={}", field(i));
    }
    let error = match (&e.message, e.error) {
        (Some(m), _) => Some(m.split_whitespace().collect::<Vec<_>>().join(" ")),
        (None, Some(k)) => Some(k.as_str().to_string()),
        (None, None) => None,
    };
    if let Some(err) = error {
        let _ = write!(line, " error={}", field(&err));
    }
    line
}

/// The CLI's [`AlertHook`]: prints each alert on stderr and queues it for the webhook, if one
/// is configured. Never blocks the manager: the webhook is posted by a task of its own.
#[derive(Debug)]
pub struct CliAlerts {
    webhook: Option<mpsc::Sender<Value>>,
}

impl CliAlerts {
    /// Alerts on stderr, and to `webhook` when given (must be called inside the runtime).
    pub fn new(webhook: Option<WebhookUrl>) -> CliAlerts {
        let webhook = webhook.map(|url| {
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            tokio::spawn(deliver(url, rx));
            tx
        });
        CliAlerts { webhook }
    }
}

impl AlertHook for CliAlerts {
    fn alert(&self, alert: &Alert) {
        let line = format!("{}\n", alert_line(&alert.reason, &alert.event));
        let mut stderr = std::io::stderr().lock();
        let _ = stderr
            .write_all(line.as_bytes())
            .and_then(|()| stderr.flush());
        if let Some(tx) = &self.webhook {
            if tx
                .try_send(alert_json(&alert.reason, &alert.event))
                .is_err()
            {
                tracing::warn!(
                    "alert webhook: {WEBHOOK_QUEUE} alerts are waiting for delivery; this one is dropped (it is on stderr)"
                );
            }
        }
    }
}

/// Posts each queued alert, one after the other.
async fn deliver(url: WebhookUrl, mut rx: mpsc::Receiver<Value>) {
    while let Some(body) = rx.recv().await {
        match tokio::time::timeout(WEBHOOK_TIMEOUT, post_json(&url, &body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {}
            Ok(Ok(status)) => {
                tracing::warn!(status, host = %url.host, "alert webhook answered with an error status")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, host = %url.host, "alert webhook failed"),
            Err(_) => tracing::warn!(
                host = %url.host,
                "alert webhook did not answer within {}s",
                WEBHOOK_TIMEOUT.as_secs()
            ),
        }
    }
}

/// POSTs `body` as JSON to `url`; returns the response's status code.
pub async fn post_json(url: &WebhookUrl, body: &Value) -> std::io::Result<u16> {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: leasehold/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    // The status line is all that matters; read at most a little of the response.
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("the webhook's answer is not an HTTP response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::{AuditAction, ErrorKind};

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("http://127.0.0.1:8080/hooks/lh?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/lh?x=1")
        );
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = WebhookUrl::parse("http://alerts.internal").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.host_header(), "alerts.internal");
        let u = WebhookUrl::parse("http://[::1]:9000/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.host_header(), "[::1]:9000");
        assert!(WebhookUrl::parse("https://x/")
            .unwrap_err()
            .contains("https is not supported"));
        for bad in [
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://x:0/",
            "http://x:99999/",
            "http://x:port/",
            "http://u:p@x/",
            "http://x/a b",
            "http://x/\r\nEvil: 1",
            "http://[::1/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alert_line_names_what_to_act_on() {
        let mut e = AuditEvent::new(AuditAction::Irrevocable, "orders-cache");
        e.principal = Some("lh-orders-abc".into());
        e.error = Some(ErrorKind::PermissionDenied);
        e.message = Some("NOPERM this user has no\npermissions".into());
        e.attempts = 5;
        let line = alert_line(&AlertReason::Irrevocable, &e);
        assert_eq!(
            line,
            "ALERT irrevocable secret=orders-cache principal=lh-orders-abc error=\"NOPERM this user has no permissions\""
        );
        let v = alert_json(&AlertReason::Irrevocable, &e);
        assert_eq!(v["alert"], "irrevocable");
        assert_eq!(v["attempts"], 5);
        assert_eq!(v["error"], "PermissionDenied");
    }
}
