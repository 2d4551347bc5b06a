//! redis-rs errors mapped into [`leasehold_core::Error`].

use leasehold_core::{Error, ErrorKind};
use redis::RedisError;

/// Maps a failure of `op` on `node` into a typed error. `scrub` is a value (the new user's
/// password) that must not appear in the message even if the server echoed it.
pub(crate) fn map(e: &RedisError, node: &str, op: &str, scrub: Option<&str>) -> Error {
    let code = e.code().unwrap_or("");
    let (kind, hint) = if e.is_timeout() {
        (ErrorKind::Timeout, "")
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        if looks_like_tls_failure(e) {
            (
                ErrorKind::InvalidConfig,
                " (the TLS handshake failed: check ca_cert and the node's certificate)",
            )
        } else {
            (ErrorKind::ProviderUnavailable, "")
        }
    } else {
        match (e.kind(), code) {
            (redis::ErrorKind::AuthenticationFailed, _) | (_, "WRONGPASS") => (
                ErrorKind::PermissionDenied,
                " (the admin username/password was refused)",
            ),
            (_, "NOAUTH") => (
                ErrorKind::PermissionDenied,
                " (the node requires a password: set the admin password)",
            ),
            (_, "NOPERM") => (
                ErrorKind::PermissionDenied,
                " (the admin user lacks a permission; see the README for the ACL it needs)",
            ),
            (_, "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "BUSY") => {
                (ErrorKind::ProviderUnavailable, "")
            }
            (redis::ErrorKind::InvalidClientConfig, _) => (ErrorKind::InvalidConfig, ""),
            _ => (ErrorKind::Unexpected, ""),
        }
    };
    let mut detail = e.to_string();
    if let Some(secret) = scrub.filter(|s| !s.is_empty()) {
        detail = detail.replace(secret, "[REDACTED]");
    }
    Error::new(kind, format!("node {node}: {op} failed: {detail}{hint}"))
        .with_context("node", node)
        .with_context("operation", op)
}

/// The server's reason, for messages that quote it (rules refused by `ACL SETUSER`).
pub(crate) fn server_reason(e: &RedisError) -> String {
    match e.detail() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    }
}

/// Whether `e` is a server error reply (the server answered; it did not fail to connect).
pub(crate) fn is_server_reply(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

fn looks_like_tls_failure(e: &RedisError) -> bool {
    let s = e.to_string();
    s.contains("certificate") || s.contains("InvalidCertificate") || s.contains("UnknownIssuer")
}
