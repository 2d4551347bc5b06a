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

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_testkit::servers::{RedisOptions, RedisServer};

    async fn admin(server: &RedisServer, ca: &[u8]) -> redis::aio::MultiplexedConnection {
        Client::build_with_tls(
            server.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        )
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn probe_authenticates_over_tls_with_the_configured_ca() {
        let opts = RedisOptions {
            tls: true,
            ..Default::default()
        };
        let Some(server) =
            RedisServer::start_with("probe_authenticates_over_tls_with_the_configured_ca", opts)
                .await
        else {
            return;
        };
        let ca_path = server.ca_cert_path().expect("a TLS server has a CA");
        let ca = std::fs::read(&ca_path).unwrap();
        let mut conn = admin(&server, &ca).await;
        let password = "Probe-password-0123456789";
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "lh-probe",
                "on",
                &format!(">{password}"),
                "~*",
                "+@all",
            ])
            .query_async(&mut conn)
            .await
            .unwrap();
        // `default` stays open: a refused AUTH must still count as refused, not fall back to it.

        let probe = AuthProbe::new(&server.url(), Some(&ca_path)).unwrap();
        assert!(probe
            .authenticates("lh-probe", &SecretString::from(password))
            .await
            .unwrap());
        assert!(!probe
            .authenticates("lh-probe", &SecretString::from("Wrong-password-0123456789"))
            .await
            .unwrap());
        assert!(!probe
            .authenticates("lh-nobody", &SecretString::from(password))
            .await
            .unwrap());

        // Without the CA the server's certificate is not trusted: unreachable, not refused.
        let untrusted = AuthProbe::new(&server.url(), None).unwrap();
        let e = untrusted
            .authenticates("lh-probe", &SecretString::from(password))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
        assert!(!e.to_string().contains(password));
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error() {
        let e = AuthProbe::new("rediss://x:1", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let dir = std::env::temp_dir().join(format!("lh-mdb-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let e = AuthProbe::new("rediss://x:1", Some(&dir)).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
