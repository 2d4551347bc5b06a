//! The optional readiness check: authenticate with the new credential on the cluster endpoint.

use std::path::Path;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

/// Connects to the cluster endpoint as a given user.
#[derive(Clone)]
pub(crate) struct AuthProbe {
    url: String,
    root_cert: Option<Vec<u8>>,
}

impl std::fmt::Debug for AuthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthProbe")
            .field("url", &self.url)
            .field("custom_ca", &self.root_cert.is_some())
            .finish()
    }
}

impl AuthProbe {
    /// Reads the CA file now, so a bad path is a configuration error rather than a readiness
    /// failure on every issue.
    pub(crate) fn new(url: &str, ca_pem: Option<&Path>) -> Result<Self> {
        let root_cert = match ca_pem {
            None => None,
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
        };
        Ok(AuthProbe {
            url: url.to_string(),
            root_cert,
        })
    }

    /// One attempt: connect with `AUTH username password`, then `PING`. `Ok(false)` when the
    /// server refuses the credential (not live yet, or revoked).
    pub(crate) async fn authenticates(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<bool> {
        let info =
            self.url.as_str().into_connection_info().map_err(|e| {
                Error::invalid_config(format!("readiness_endpoint: {:?}", e.kind()))
            })?;
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
        .map_err(|e| Error::invalid_config(format!("readiness_endpoint: {:?}", e.kind())))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        // The client sends AUTH on connect; a refused AUTH fails the connection, so nothing can
        // run as `default` by accident.
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                match redis::cmd("PING").query_async::<String>(&mut conn).await {
                    Ok(_) => Ok(true),
                    // Authenticated; the access string just does not allow PING.
                    Err(e) if e.code() == Some("NOPERM") => Ok(true),
                    Err(e) if refused(&e) => Ok(false),
                    Err(e) => Err(unreachable(&e)),
                }
            }
            Err(e) if refused(&e) => Ok(false),
            Err(e) => Err(unreachable(&e)),
        }
    }
}

fn refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS") | Some("NOAUTH"))
}

// Redis error text can echo a command; only its kind and code go into the error.
fn unreachable(e: &redis::RedisError) -> Error {
    Error::new(
        ErrorKind::ProviderUnavailable,
        format!(
            "readiness AUTH check could not reach the cluster ({:?}{})",
            e.kind(),
            e.code().map(|c| format!(", {c}")).unwrap_or_default()
        ),
    )
}
