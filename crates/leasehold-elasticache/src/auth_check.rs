//! The optional readiness check: `AUTH` with the new credential on the cache endpoint.

use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

/// Connects to a cache endpoint and authenticates as a user.
#[derive(Clone)]
pub(crate) struct AuthChecker {
    url: String,
    root_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for AuthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthChecker")
            .field("url", &self.url)
            .field("custom_ca", &self.root_cert.is_some())
            .finish_non_exhaustive()
    }
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// The server accepted the credential.
    Accepted,
    /// The server refused the credential (not yet propagated, or revoked).
    Refused,
}

impl AuthChecker {
    /// Reads the CA file now, so a bad path is a configuration error, not a readiness failure.
    pub(crate) fn new(url: &str, ca_pem: Option<&std::path::Path>) -> Result<Self> {
        let root_cert = match ca_pem {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::invalid_config(format!(
                        "readiness_ca_pem: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(Error::invalid_config(format!(
                        "readiness_ca_pem: {} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(AuthChecker {
            url: url.to_string(),
            root_cert,
        })
    }

    /// One attempt: connect, `AUTH username password`, `PING`, on one connection.
    pub(crate) async fn check(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<AuthOutcome> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::invalid_config(format!("readiness_endpoint: {e}")))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_username(username)
            .set_password(password.expose_secret());
        let info = info.set_redis_settings(settings);
        let client = if self.url.starts_with("rediss://") {
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: self.root_cert.clone(),
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|e| Error::invalid_config(format!("readiness_endpoint: {}", e.kind_str())))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        // The client sends AUTH with the user and password on connect: a refused AUTH fails
        // the connection itself, so no command can silently run as `default`.
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                match pong {
                    Ok(_) => Ok(AuthOutcome::Accepted),
                    // Authenticated, but the access string does not allow PING.
                    Err(e) if e.code() == Some("NOPERM") => Ok(AuthOutcome::Accepted),
                    Err(e) => Err(unavailable(&e)),
                }
            }
            Err(e) if is_auth_refusal(&e) => Ok(AuthOutcome::Refused),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

fn is_auth_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("WRONGPASS") | Some("NOAUTH") | Some("NOPERM")
        )
}

// Redis error text can echo the command; only the kind and code go into our error.
fn unavailable(e: &redis::RedisError) -> Error {
    Error::new(
        ErrorKind::ProviderUnavailable,
        format!(
            "readiness AUTH check could not reach the cache ({}{})",
            e.kind_str(),
            e.code().map(|c| format!(", {c}")).unwrap_or_default()
        ),
    )
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}
