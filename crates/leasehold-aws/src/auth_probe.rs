//! The readiness check the ElastiCache and MemoryDB providers share: authenticate with a new
//! credential on the cache / cluster endpoint (TLS, an optional private CA, bounded timeouts).
//!
//! It lives here, beside the rest of the AWS providers' shared plumbing, because both AWS
//! providers use it and both already depend on this crate; the Redis ACL grammar, which needs
//! no network, is in `leasehold_core::acl`.

use std::path::Path;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

/// How long one connect, and one reply, may take by default.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one [`AuthProbe::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The server accepted the credential. A `NOPERM` reply counts as accepted: the server
    /// knew the user and its password and refused only a command the user's ACL does not allow.
    Accepted,
    /// The server refused the credential (`WRONGPASS`, `NOAUTH`, an authentication failure):
    /// not live yet, or revoked.
    Refused,
}

/// Connects to a Valkey / Redis OSS endpoint and authenticates as a given user.
///
/// The client sends `AUTH username password` on connect and a refused `AUTH` fails the
/// connection itself, so nothing ever runs as `default` by accident. Anything that is neither
/// an acceptance nor a refusal (unreachable, untrusted certificate, timeout) is a temporary
/// [`ErrorKind::ProviderUnavailable`] error; no error quotes the server's text, which can echo
/// a command.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::{AuthOutcome, AuthProbe};
/// use secrecy::SecretString;
///
/// let probe = AuthProbe::new("rediss://my-cache.example:6379", None)?;
/// let outcome = probe.check("lh-orders-1", &SecretString::from("pw")).await?;
/// assert_eq!(outcome, AuthOutcome::Accepted);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuthProbe {
    url: String,
    root_cert: Option<Vec<u8>>,
    timeout: Duration,
}

impl std::fmt::Debug for AuthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthProbe")
            .field("url", &self.url)
            .field("custom_ca", &self.root_cert.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AuthProbe {
    /// A probe of `url` (`rediss://host:port` for TLS), trusting the PEM certificates in
    /// `ca_pem` if given. The CA file is read now, so a bad path is a configuration error
    /// rather than a readiness failure on every issue.
    pub fn new(url: &str, ca_pem: Option<&Path>) -> Result<Self> {
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
            timeout: DEFAULT_PROBE_TIMEOUT,
        })
    }

    /// Sets how long the connect, and each reply, may take (default [`DEFAULT_PROBE_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One attempt: connect with `AUTH username password`, then `PING`, on one connection.
    pub async fn check(&self, username: &str, password: &SecretString) -> Result<AuthOutcome> {
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
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let reply = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        match reply {
            Ok(()) => Ok(AuthOutcome::Accepted),
            Err(e) => classify(&e),
        }
    }

    /// [`check`](Self::check) as a bool: `Ok(false)` when the server refuses the credential.
    pub async fn authenticates(&self, username: &str, password: &SecretString) -> Result<bool> {
        Ok(self.check(username, password).await? == AuthOutcome::Accepted)
    }
}

/// The one classification of a failed connect or `PING`.
fn classify(e: &redis::RedisError) -> Result<AuthOutcome> {
    if e.code() == Some("NOPERM") {
        // Only an authenticated user is told it lacks a permission.
        return Ok(AuthOutcome::Accepted);
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS") | Some("NOAUTH"))
    {
        return Ok(AuthOutcome::Refused);
    }
    // Redis error text can echo a command; only its kind and code go into the error.
    Err(Error::new(
        ErrorKind::ProviderUnavailable,
        format!(
            "readiness AUTH check could not reach the endpoint ({:?}{})",
            e.kind(),
            e.code().map(|c| format!(", {c}")).unwrap_or_default()
        ),
    ))
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

    #[tokio::test]
    async fn noperm_counts_as_accepted_and_a_wrong_password_as_refused() {
        let Some(server) =
            RedisServer::start("noperm_counts_as_accepted_and_a_wrong_password_as_refused").await
        else {
            return;
        };
        let mut conn = Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let password = "Noping-password-0123456789";
        // The user may run no command at all, PING included: still a live credential.
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "lh-noping",
                "on",
                &format!(">{password}"),
                "-@all",
            ])
            .query_async(&mut conn)
            .await
            .unwrap();
        let probe = AuthProbe::new(&server.url(), None).unwrap();
        let outcome = probe
            .check("lh-noping", &SecretString::from(password))
            .await
            .unwrap();
        assert_eq!(outcome, AuthOutcome::Accepted);
        let outcome = probe
            .check(
                "lh-noping",
                &SecretString::from("Wrong-password-0123456789"),
            )
            .await
            .unwrap();
        assert_eq!(outcome, AuthOutcome::Refused);
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error() {
        let e = AuthProbe::new("rediss://x:1", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let dir = std::env::temp_dir().join(format!("lh-aws-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let e = AuthProbe::new("rediss://x:1", Some(&dir)).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
