//! Handing a lease's credential to redis-rs: [`connection_info`] builds a
//! [`redis::ConnectionInfo`] for a node that authenticates as the lease's user.
//!
//! The password goes straight into redis-rs's [`RedisConnectionInfo`] (whose `Debug` hides it),
//! never into a URL string that could end up in a log. The node URL keeps its own settings —
//! `rediss://` (TLS), the database (`/2`), `?protocol=resp3` — and must not carry credentials.
//!
//! ```no_run
//! # async fn f(lease: leasehold_core::IssuedLease) -> Result<(), Box<dyn std::error::Error>> {
//! let info = leasehold_redis::client::connection_info(&lease.credentials, "redis://10.0.0.5:6379/2")?;
//! let client = redis::Client::open(info)?; // any `IntoConnectionInfo` taker works
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let _: () = redis::cmd("SET").arg("orders:1").arg("paid").query_async(&mut conn).await?;
//! # Ok(()) }
//! ```

use leasehold_core::secrecy::ExposeSecret;
use leasehold_core::{Credentials, Error, ErrorKind, Result};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// A [`redis::ConnectionInfo`] for `node` (`redis://host:port[/db]`, `rediss://…`,
/// `valkey://…`, `redis+unix:///path`) that authenticates as the user of `credentials`.
///
/// The node's address, TLS, database and protocol settings are kept. Refused with
/// `ErrorKind::InvalidConfig`, before any network call: a node that is not a Redis URL, a URL
/// carrying a username or password (the lease's are used; a URL ends up in logs), a URL
/// fragment such as `#insecure` (certificates are always verified). Credentials that are not a
/// username and password (AWS keys) are `ErrorKind::InvalidInput`.
pub fn connection_info(credentials: &Credentials, node: &str) -> Result<ConnectionInfo> {
    with_credentials(parse_node(node)?, credentials)
}

/// `info` with the username and password of `credentials` (any username or password it had
/// is replaced); its address, database and protocol are kept. For callers that build their own
/// [`ConnectionInfo`] (a Unix socket, TLS parameters); see [`connection_info`].
pub fn with_credentials(info: ConnectionInfo, credentials: &Credentials) -> Result<ConnectionInfo> {
    let settings = redis_connection_info(info.redis_settings().clone(), credentials)?;
    Ok(info.set_redis_settings(settings))
}

/// `settings` (database, protocol, client name) with the username and password of
/// `credentials`: the handshake part of a [`ConnectionInfo`], for redis-rs APIs that take
/// [`RedisConnectionInfo`] (such as `MultiplexedConnection::new_with_config` on a stream of
/// your own).
pub fn redis_connection_info(
    settings: RedisConnectionInfo,
    credentials: &Credentials,
) -> Result<RedisConnectionInfo> {
    let (username, password) = user_and_password(credentials)?;
    Ok(settings
        .set_username(username)
        .set_password(password.expose_secret()))
}

/// The username and password of a Redis credential.
pub(crate) fn user_and_password(
    credentials: &Credentials,
) -> Result<(&str, &leasehold_core::secrecy::SecretString)> {
    match credentials {
        Credentials::UsernamePassword { username, password } => {
            if username.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "credentials: the username is empty",
                ));
            }
            Ok((username, password))
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            "credentials: a Redis connection needs a username and password, not AWS keys \
             (is this lease from a Redis, ElastiCache or MemoryDB secret?)",
        )),
    }
}

/// Parses a node URL into redis-rs settings without credentials. The URL is quoted in errors
/// only when it cannot hold a password.
pub(crate) fn parse_node(node: &str) -> Result<ConnectionInfo> {
    let quoted = || {
        if node.contains('@') || node.contains('?') {
            String::from("the node URL")
        } else {
            format!("{:?}", leasehold_core::settings::shorten(node))
        }
    };
    let url = redis::parse_redis_url(node).ok_or_else(|| {
        Error::invalid_config(format!(
            "node: {} is not a redis://, rediss://, valkey://, valkeys:// or redis+unix:// URL",
            quoted()
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid_config(
            "node: the URL carries credentials; the lease's username and password are used \
             (and a URL ends up in logs)",
        ));
    }
    if url.fragment().is_some() {
        return Err(Error::invalid_config(
            "node: URL fragments (such as #insecure) are refused: certificates are always verified",
        ));
    }
    let info = node
        .into_connection_info()
        .map_err(|e| Error::invalid_config(format!("node: {} does not parse: {e}", quoted())))?;
    let settings = info.redis_settings();
    if settings.username().is_some() || settings.password().is_some() {
        return Err(Error::invalid_config(
            "node: the URL carries credentials; the lease's username and password are used \
             (and a URL ends up in logs)",
        ));
    }
    if let ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } = info.addr() {
        if host.is_empty() {
            return Err(Error::invalid_config("node: the URL has no host"));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::secrecy::SecretString;

    const PASSWORD: &str = "s3cret-Pa55word-that-must-not-leak";

    fn creds() -> Credentials {
        Credentials::UsernamePassword {
            username: "lh-ab12cd34-user".into(),
            password: SecretString::from(PASSWORD),
        }
    }

    fn invalid(node: &str) -> String {
        let e = connection_info(&creds(), node).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{node}: {e}");
        assert!(!e.to_string().contains(PASSWORD));
        e.message().to_string()
    }

    #[test]
    fn the_lease_user_authenticates_and_the_node_settings_stay() {
        let info = connection_info(&creds(), "redis://10.0.0.5:6380/3").unwrap();
        assert_eq!(info.redis_settings().username(), Some("lh-ab12cd34-user"));
        assert_eq!(info.redis_settings().password(), Some(PASSWORD));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("10.0.0.5".into(), 6380));

        let info = connection_info(&creds(), "valkey://cache.internal").unwrap();
        assert_eq!(info.redis_settings().db(), 0);
        assert_eq!(info.addr().to_string(), "cache.internal:6379");

        let info = connection_info(&creds(), "redis://h:6379/?protocol=resp3").unwrap();
        assert_eq!(
            info.redis_settings().protocol(),
            redis::ProtocolVersion::RESP3
        );
    }

    #[test]
    fn a_tls_node_stays_tls_and_verified() {
        let info = connection_info(&creds(), "rediss://cache.example.com:6390/1").unwrap();
        match info.addr() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                assert_eq!(
                    (host.as_str(), *port, *insecure),
                    ("cache.example.com", 6390, false)
                );
            }
            other => panic!("expected TLS, got {other:?}"),
        }
        assert_eq!(info.redis_settings().db(), 1);
    }

    #[test]
    fn with_credentials_replaces_what_was_there() {
        let base = ("10.0.0.7", 7000).into_connection_info().unwrap();
        let base = base.set_redis_settings(
            RedisConnectionInfo::default()
                .set_db(5)
                .set_username("old")
                .set_password("old-password"),
        );
        let info = with_credentials(base, &creds()).unwrap();
        assert_eq!(info.redis_settings().username(), Some("lh-ab12cd34-user"));
        assert_eq!(info.redis_settings().password(), Some(PASSWORD));
        assert_eq!(info.redis_settings().db(), 5);
    }

    #[test]
    fn the_password_is_in_no_debug_or_error() {
        let info = connection_info(&creds(), "redis://10.0.0.5:6379").unwrap();
        let debug = format!("{info:?} {:?}", info.redis_settings());
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("lh-ab12cd34-user"));
        assert!(!info.addr().to_string().contains(PASSWORD));
        assert!(!format!("{:?}", creds()).contains(PASSWORD));
    }

    #[test]
    fn bad_nodes_are_refused_without_echoing_secrets() {
        let m = invalid("redis://admin:hunter2@10.0.0.5:6379");
        assert!(m.contains("carries credentials"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
        let m = invalid("redis://:hunter2@10.0.0.5:6379");
        assert!(
            m.contains("carries credentials") && !m.contains("hunter2"),
            "{m}"
        );
        let m = invalid("redis+unix:///tmp/redis.sock?user=a&pass=hunter2");
        assert!(
            m.contains("carries credentials") && !m.contains("hunter2"),
            "{m}"
        );
        assert!(invalid("rediss://h:6379/#insecure").contains("verified"));
        assert!(invalid("http://h:6379").contains("not a redis://"));
        assert!(invalid("h:6379").contains("not a redis://"));
        assert!(invalid("redis://h:6379/notadb").contains("does not parse"));
    }

    #[test]
    fn aws_keys_are_not_a_redis_credential() {
        let keys = Credentials::AwsKeys {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: SecretString::from(PASSWORD),
            session_token: None,
        };
        let e = connection_info(&keys, "redis://h:6379").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.to_string().contains(PASSWORD));
    }

    #[test]
    fn a_unix_socket_keeps_its_path_and_db() {
        let info = connection_info(&creds(), "redis+unix:///run/redis.sock?db=4").unwrap();
        assert_eq!(info.redis_settings().db(), 4);
        assert_eq!(info.redis_settings().username(), Some("lh-ab12cd34-user"));
        assert!(matches!(info.addr(), ConnectionAddr::Unix(p) if p.ends_with("redis.sock")));
    }
}
