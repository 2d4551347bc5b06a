//! Alerts to a webhook: an [`AlertHook`] that POSTs each alert as JSON, so that a lease whose
//! credential could not be revoked pages someone instead of sitting in a table.
//!
//! ```text
//! cargo run --example alert_webhook
//! LEASEHOLD_ALERT_WEBHOOK=http://127.0.0.1:9000/hooks/leasehold cargo run --example alert_webhook
//! ```
//!
//! The webhook URL comes from `LEASEHOLD_ALERT_WEBHOOK` (plain `http://`; for https, post to a
//! relay or use an HTTP client crate such as reqwest in `post_json`). Without it, the example
//! starts a local receiver that prints what it gets. A provider whose revoke always fails
//! stands in for a backend that refuses: its lease fails twice (an alert for repeated
//! failures) and then becomes irrevocable (an alert carrying the lease id, secret, principal and
//! last error — what an operator needs to remove the credential by hand).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use leasehold::async_trait;
use leasehold::secrecy::SecretString;
use leasehold::{
    Alert, AlertHook, AlertReason, Alerting, Capabilities, CreateRequest, Created, Credentials,
    DynamicSecret, DynamicSecretProvider, Error, ErrorKind, ExternalRef, IssueRequest,
    LeaseManager, ManagerConfig, MemoryStore, Readiness, RetryPolicy,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long one delivery may take: connect, send, read the status line.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Posts each alert as JSON to a webhook. `alert` is called on the manager's path, so it only
/// queues the body; a task delivers it. A full queue drops the alert rather than wait.
#[derive(Debug)]
struct WebhookAlerts {
    queue: mpsc::Sender<Value>,
}

impl WebhookAlerts {
    /// Starts the delivery task (call inside a Tokio runtime).
    fn new(url: WebhookUrl) -> Self {
        let (queue, mut rx) = mpsc::channel::<Value>(256);
        tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                match tokio::time::timeout(WEBHOOK_TIMEOUT, post_json(&url, &body)).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {}
                    Ok(Ok(status)) => eprintln!("webhook answered {status}"),
                    Ok(Err(e)) => eprintln!("webhook failed: {e}"),
                    Err(_) => eprintln!("webhook did not answer in time"),
                }
            }
        });
        WebhookAlerts { queue }
    }
}

impl AlertHook for WebhookAlerts {
    fn alert(&self, alert: &Alert) {
        let e = &alert.event;
        let reason = match alert.reason {
            AlertReason::Irrevocable => "irrevocable",
            AlertReason::RepeatedRevokeFailures(_) => "repeated_revoke_failures",
            AlertReason::QuotaRefused => "quota_refused",
            _ => "alert",
        };
        let body = json!({
            "alert": reason,
            "at": e.at.to_rfc3339(),
            "lease_id": e.lease_id.as_ref().map(|l| l.as_str()),
            "secret": e.secret,
            "principal": e.principal,
            "identity": e.identity,
            "error": e.error.map(|k| k.as_str()),
            "message": e.message,
            "attempts": e.attempts,
        });
        if self.queue.try_send(body).is_err() {
            eprintln!("alert queue full; dropped an alert for {}", e.secret);
        }
    }
}

/// `http://host[:port][/path]`.
#[derive(Debug, Clone)]
struct WebhookUrl {
    host: String,
    port: u16,
    path: String,
}

impl WebhookUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url:?}: bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} is not a usable URL"));
        }
        Ok(WebhookUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// One HTTP/1.1 POST with a JSON body; returns the status code.
async fn post_json(url: &WebhookUrl, body: &Value) -> std::io::Result<u16> {
    let body = body.to_string();
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        url.path,
        url.host,
        url.port,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await?;
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

/// A backend that creates credentials but refuses to remove them.
#[derive(Debug)]
struct RefusesRevoke;

#[async_trait]
impl DynamicSecretProvider for RefusesRevoke {
    fn kind(&self) -> &'static str {
        "example-refuses-revoke"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    async fn validate(&self) -> leasehold::Result<()> {
        Ok(())
    }

    async fn create(&self, request: &CreateRequest) -> leasehold::Result<Created> {
        let password = request
            .password
            .clone()
            .unwrap_or_else(|| SecretString::from("unused"));
        Ok(Created::new(
            ExternalRef::new(&request.username),
            Credentials::UsernamePassword {
                username: request.username.clone(),
                password,
            },
            Readiness::Confirmed,
        ))
    }

    async fn revoke(&self, external: &ExternalRef) -> leasehold::Result<()> {
        Err(Error::new(
            ErrorKind::ProviderUnavailable,
            format!(
                "backend refused to delete {}: it is read-only for maintenance",
                external.id
            ),
        ))
    }
}

/// A local webhook receiver: prints each body and passes it on.
async fn receiver() -> std::io::Result<(String, mpsc::UnboundedReceiver<Value>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/leasehold", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as many body bytes as Content-Length says.
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body[..len].to_string();
                    }
                };
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    println!("webhook received: {v}");
                    let _ = tx.send(v);
                }
            });
        }
    });
    Ok((url, rx))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("alert_webhook failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let (url, mut received) = match std::env::var("LEASEHOLD_ALERT_WEBHOOK") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let (url, rx) = receiver().await.map_err(|e| e.to_string())?;
            println!("no LEASEHOLD_ALERT_WEBHOOK: a local receiver listens at {url}");
            (url, Some(rx))
        }
    };
    let hook = WebhookAlerts::new(WebhookUrl::parse(&url)?);
    // Alert from the second failed attempt on; the third makes the lease irrevocable.
    let alerting = Alerting::new(hook).repeated_after(2);

    let secret = DynamicSecret::builder("orders-db", Arc::new(RefusesRevoke))
        .default_ttl(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let config = ManagerConfig::default()
        .max_idle(Duration::from_millis(200))
        .retry(RetryPolicy::new(Duration::from_millis(200), 3).max_delay(Duration::from_secs(1)));
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .audit_sink(Arc::new(alerting))
        .secret(secret)
        .build()
        .await
        .map_err(|e| e.to_string())?;

    let lease = manager
        .issue("orders-db", IssueRequest::new().identity("orders-api"))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "issued lease {} (expires in 2s; its revocation will fail)",
        lease.lease_id
    );

    let outcome = match received.as_mut() {
        Some(rx) => {
            // Wait for the irrevocable alert to arrive at the local receiver.
            let wait = async {
                while let Some(v) = rx.recv().await {
                    if v["alert"] == "irrevocable" {
                        return Some(v);
                    }
                }
                None
            };
            match tokio::time::timeout(Duration::from_secs(30), wait).await {
                Ok(Some(v)) if v["lease_id"] == lease.lease_id.as_str() => Ok(()),
                Ok(other) => Err(format!("unexpected alert: {other:?}")),
                Err(_) => Err("no irrevocable alert within 30s".to_string()),
            }
        }
        None => {
            // An external webhook: give the alerts time to go out.
            tokio::time::sleep(Duration::from_secs(8)).await;
            Ok(())
        }
    };
    manager.shutdown().await;
    outcome
}
