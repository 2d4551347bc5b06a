//! [`RedisConfig`]: the nodes, the admin credential, TLS files and the rules of issued users.
//!
//! Over 700 lines: about 370 are its unit tests (every documented key, every refusal, TLS files).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_core::settings::shorten;
use leasehold_core::{DurationText, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::rules::{AclRules, DEFAULT_ACL_RULES};

/// Most nodes one provider manages (a primary with its replicas, or a handful of standalone
/// servers; every issue talks to each of them).
pub const MAX_NODES: usize = 64;

/// Most attempts per command per node.
pub const MAX_ATTEMPTS: u32 = 10;

/// Shortest pause between two topology refreshes triggered by a node that failed or appeared;
/// a flapping node cannot turn every call into a discovery round.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// The admin user when none is configured: Redis's built-in user (`requirepass` sets its
/// password).
pub const DEFAULT_ADMIN_USERNAME: &str = "default";

/// Settings of a [`RedisAclProvider`](crate::RedisAclProvider).
///
/// Built in code with [`RedisConfig::new`] and the setters, or deserialized from a config
/// file: a flat map with the keys of the crate README's *Configuration* table (the public
/// fields below, by the same names). Unknown keys are refused by name, durations are text
/// (`"250ms"`, `"1h30m"`) or a number of seconds, and deserializing runs
/// [`validate`](Self::validate), so a loaded config is a checked one. Nothing touches the
/// network until the provider is used.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_redis::RedisConfig;
/// use secrecy::SecretString;
///
/// let config = RedisConfig::new("redis://10.0.0.5:6379")
///     .node("redis://10.0.0.6:6379") // the replica: ACL users are not replicated
///     .admin("leasehold-admin", SecretString::from("admin-password"))
///     .acl_rules("~cache:* +@read +@write -@dangerous")
///     .command_timeout(Duration::from_secs(2));
/// config.validate().unwrap();
///
/// assert!(RedisConfig::new("redis://10.0.0.5").acl_rules("~* +@all nopass").validate().is_err());
///
/// let loaded: RedisConfig = serde_json::from_str(
///     r#"{"urls": ["redis://10.0.0.5:6379"], "admin_username": "leasehold-admin",
///         "admin_password": "admin-password", "command_timeout": "2s"}"#,
/// ).unwrap();
/// assert_eq!(loaded.command_timeout, Duration::from_secs(2));
/// ```
#[derive(Clone, Deserialize)]
#[serde(try_from = "RawConfig")]
#[non_exhaustive]
pub struct RedisConfig {
    /// Seed nodes: `redis://host:port` or `rediss://host:port` (`valkey://` / `valkeys://`
    /// too), or a Sentinel as `sentinel://host:port/<master-name>` (`sentinels://` with TLS).
    /// With [`discover`](Self::discover) on (the default) the provider finds every replica
    /// and cluster node from these; with it off, list the primary **and** every replica.
    pub urls: Vec<String>,
    /// Find the whole topology from the seeds: replicas (`ROLE`), all nodes of a Redis Cluster
    /// (`CLUSTER NODES`), the set a Sentinel manages (default true). ACL users are never
    /// replicated, so writing to every node found is always right.
    pub discover: bool,
    /// How often the topology is found again even when nothing failed (default 30 s). A call
    /// that finds a node gone refreshes sooner, at most once per [`MIN_REFRESH_GAP`].
    pub refresh_interval: Duration,
    /// The admin user the provider connects as (default [`DEFAULT_ADMIN_USERNAME`]). Not the
    /// issued users: their names come from the secret's username template.
    pub admin_username: String,
    /// The admin user's password (`None`: no `AUTH`). Another user than `default` needs one.
    pub admin_password: Option<SecretString>,
    /// Rules of every issued user, after `reset on ><password>` (default
    /// [`DEFAULT_ACL_RULES`]). See [`AclRules`] for what is refused.
    pub acl_rules: String,
    /// PEM file of the CA(s) that signed the nodes' certificates, for `rediss://` nodes
    /// (`None`: the system's trust store). Read when the config is checked.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS; set together with
    /// [`client_key`](Self::client_key).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Run `ACL SAVE` after every change, for servers that keep users in an `aclfile`
    /// (default false).
    pub acl_save: bool,
    /// How long connecting to a node may take (default 2 s).
    pub connect_timeout: Duration,
    /// How long one command may take (default 5 s).
    pub command_timeout: Duration,
    /// Tries per command and node when the failure is temporary (default 3; the pause doubles
    /// from `retry_delay`).
    pub attempts: u32,
    /// The first pause between tries (default 100 ms).
    pub retry_delay: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls)
            .field("discover", &self.discover)
            .field("refresh_interval", &self.refresh_interval)
            .field("admin_username", &self.admin_username)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "[REDACTED]"),
            )
            .field("acl_rules", &self.acl_rules)
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("acl_save", &self.acl_save)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("attempts", &self.attempts)
            .field("retry_delay", &self.retry_delay)
            .finish_non_exhaustive()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            urls: Vec::new(),
            discover: true,
            refresh_interval: Duration::from_secs(30),
            admin_username: DEFAULT_ADMIN_USERNAME.to_string(),
            admin_password: None,
            acl_rules: DEFAULT_ACL_RULES.to_string(),
            ca_cert: None,
            client_cert: None,
            client_key: None,
            acl_save: false,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            attempts: 3,
            retry_delay: Duration::from_millis(100),
        }
    }
}

impl RedisConfig {
    /// One node, the `default` admin user without password, the default rules.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            urls: vec![url.into()],
            ..RedisConfig::default()
        }
    }

    /// Adds a node URL.
    #[must_use]
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Sets the admin user and its password. For a server with only `requirepass`, the user
    /// is [`DEFAULT_ADMIN_USERNAME`] (`"default"`).
    #[must_use]
    pub fn admin(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.admin_username = username.into();
        self.admin_password = Some(password);
        self
    }

    /// Sets the client certificate and key files (mutual TLS).
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// Checks every setting without a network call (TLS files are read). Errors are
    /// [`ErrorKind::InvalidConfig`](leasehold_core::ErrorKind::InvalidConfig) and start with
    /// the key at fault (`urls[1]: ...`, `client_key: ...`).
    pub fn validate(&self) -> Result<()> {
        self.checked().map(|_| ())
    }

    /// Whether the provider sends a username with `AUTH` (`AUTH <password>` alone is the
    /// `default` user's, and works with `requirepass`).
    pub(crate) fn auth_username(&self) -> Option<&str> {
        (self.admin_username != DEFAULT_ADMIN_USERNAME).then_some(self.admin_username.as_str())
    }

    pub(crate) fn checked(&self) -> Result<Checked> {
        if self.urls.is_empty() {
            return Err(Error::invalid_config(
                "urls: list at least one redis://, rediss:// or sentinel:// URL",
            ));
        }
        if self.urls.len() > MAX_NODES {
            return Err(Error::invalid_config(format!(
                "urls: {} nodes, at most {MAX_NODES}",
                self.urls.len()
            )));
        }
        let mut nodes: Vec<NodeAddr> = Vec::with_capacity(self.urls.len());
        for (i, url) in self.urls.iter().enumerate() {
            let node = NodeAddr::parse(url)
                .map_err(|why| Error::invalid_config(format!("urls[{i}]: {why}")))?;
            if let Some(j) = nodes.iter().position(|n| n.label == node.label) {
                return Err(Error::invalid_config(format!(
                    "urls[{i}]: {} is listed twice (also urls[{j}])",
                    node.label
                )));
            }
            nodes.push(node);
        }
        let u = &self.admin_username;
        if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid_config(
                "admin_username: must be non-empty, without spaces or control characters",
            ));
        }
        if let Some(p) = &self.admin_password {
            if p.expose_secret().is_empty() {
                return Err(Error::invalid_config(
                    "admin_password: is empty; leave it unset for no AUTH",
                ));
            }
        }
        if self.auth_username().is_some() && self.admin_password.is_none() {
            return Err(Error::invalid_config(format!(
                "admin_password: missing (admin_username is {u:?}, which needs a password)"
            )));
        }
        let rules = AclRules::parse(&self.acl_rules)?;
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("retry_delay", self.retry_delay),
            ("refresh_interval", self.refresh_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid_config(format!("{name}: must be positive")));
            }
        }
        if self.attempts == 0 || self.attempts > MAX_ATTEMPTS {
            return Err(Error::invalid_config(format!(
                "attempts: must be 1 to {MAX_ATTEMPTS}, not {}",
                self.attempts
            )));
        }
        if !self.discover {
            if let Some(i) = nodes.iter().position(|n| n.sentinel_master.is_some()) {
                return Err(Error::invalid_config(format!(
                    "urls[{i}]: a sentinel:// seed needs discovery; remove discover = false \
                     or list the data nodes instead"
                )));
            }
        }
        let any_tls = nodes.iter().any(|n| n.tls);
        #[cfg(not(feature = "tls"))]
        if let Some(i) = nodes.iter().position(|n| n.tls) {
            return Err(Error::invalid_config(format!(
                "urls[{i}]: {} needs TLS, which this build lacks: enable the leasehold-redis \
                 feature \"tls\" (leasehold feature \"redis-tls\")",
                nodes[i].label
            )));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(Error::invalid_config(
                    "client_key: missing (client_cert is set without it; set both or neither)",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid_config(
                    "client_cert: missing (client_key is set without it; set both or neither)",
                ))
            }
            _ => {}
        }
        if !any_tls {
            let set = [
                ("ca_cert", self.ca_cert.is_some()),
                ("client_cert", self.client_cert.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
                return Err(Error::invalid_config(format!(
                    "{key}: set, but no node uses rediss:// (or sentinels://)"
                )));
            }
        }
        let tls = if any_tls {
            Some(TlsFiles {
                ca_cert: self
                    .ca_cert
                    .as_deref()
                    .map(|p| read_pem("ca_cert", p, "CERTIFICATE"))
                    .transpose()?,
                client: match (&self.client_cert, &self.client_key) {
                    (Some(c), Some(k)) => Some((
                        read_pem("client_cert", c, "CERTIFICATE")?,
                        read_pem("client_key", k, "PRIVATE KEY")?,
                    )),
                    _ => None,
                },
            })
        } else {
            None
        };
        Ok(Checked { nodes, rules, tls })
    }
}

leasehold_core::setters! {
    RedisConfig {
        /// Sets whether the topology is discovered from the seeds (default true); `false` limits
        /// the provider to the listed nodes.
        discover: bool,
        /// Sets how often the topology is found again on a schedule.
        refresh_interval: Duration,
        /// Sets whether every change is followed by `ACL SAVE`.
        acl_save: bool,
        /// Sets the connect timeout.
        connect_timeout: Duration,
        /// Sets the command timeout.
        command_timeout: Duration,
        /// Sets the tries per command and node.
        attempts: u32,
        /// Sets the first pause between tries.
        retry_delay: Duration,
    }
}

leasehold_core::setters! {
    into RedisConfig {
        /// Sets the rules of issued users.
        acl_rules: String,
    }
}

leasehold_core::setters! {
    into Some RedisConfig {
        /// Sets the CA certificate file for `rediss://` nodes.
        ca_cert: PathBuf,
    }
}

// ---------------------------------------------------------------------------------------------
// Deserialization: the config-file schema. Every key is optional except `urls`; what is left
// out keeps the default of `RedisConfig::default()`.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    urls: Vec<String>,
    admin_username: Option<String>,
    admin_password: Option<AdminPassword>,
    acl_rules: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    acl_save: Option<bool>,
    connect_timeout: Option<DurationText>,
    command_timeout: Option<DurationText>,
    attempts: Option<u32>,
    retry_delay: Option<DurationText>,
    discover: Option<bool>,
    refresh_interval: Option<DurationText>,
}

impl TryFrom<RawConfig> for RedisConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> std::result::Result<Self, ConfigError> {
        let d = RedisConfig::default();
        let pause = |text: Option<DurationText>, field: &str, default: Duration| {
            DurationText::parse_pause_opt(&text, field, false).map(|d| d.unwrap_or(default))
        };
        let c = RedisConfig {
            urls: raw.urls,
            discover: raw.discover.unwrap_or(d.discover),
            refresh_interval: pause(raw.refresh_interval, "refresh_interval", d.refresh_interval)?,
            admin_username: raw.admin_username.unwrap_or(d.admin_username),
            admin_password: raw.admin_password.map(|p| p.0),
            acl_rules: raw.acl_rules.unwrap_or(d.acl_rules),
            ca_cert: raw.ca_cert,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
            acl_save: raw.acl_save.unwrap_or(d.acl_save),
            connect_timeout: pause(raw.connect_timeout, "connect_timeout", d.connect_timeout)?,
            command_timeout: pause(raw.command_timeout, "command_timeout", d.command_timeout)?,
            attempts: raw.attempts.unwrap_or(d.attempts),
            retry_delay: pause(raw.retry_delay, "retry_delay", d.retry_delay)?,
        };
        c.validate()?;
        Ok(c)
    }
}

/// A failed check while deserializing: shown as the [`Error`]'s message alone (it starts
/// with the key at fault), which the deserializer then wraps with its own position.
struct ConfigError(Error);

impl From<Error> for ConfigError {
    fn from(e: Error) -> Self {
        ConfigError(e)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.message())
    }
}

/// `admin_password`: a string, and nothing else — a value of another type is refused without
/// being quoted (serde's usual "invalid type: integer `1234`" would print it).
struct AdminPassword(SecretString);

impl<'de> Deserialize<'de> for AdminPassword {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl V {
            fn refuse<E: serde::de::Error>(what: &str) -> E {
                E::custom(format!("admin_password: must be a string, not {what}"))
            }
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AdminPassword;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the admin password as a string")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(AdminPassword(SecretString::from(v)))
            }
            fn visit_string<E: serde::de::Error>(
                self,
                v: String,
            ) -> std::result::Result<Self::Value, E> {
                Ok(AdminPassword(SecretString::from(v)))
            }
            fn visit_bool<E: serde::de::Error>(
                self,
                _: bool,
            ) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a boolean"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a number"))
            }
            fn visit_i128<E: serde::de::Error>(
                self,
                _: i128,
            ) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a number"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a number"))
            }
            fn visit_u128<E: serde::de::Error>(
                self,
                _: u128,
            ) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a number"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("a number"))
            }
            fn visit_char<E: serde::de::Error>(
                self,
                v: char,
            ) -> std::result::Result<Self::Value, E> {
                Ok(AdminPassword(SecretString::from(v.to_string())))
            }
            fn visit_bytes<E: serde::de::Error>(
                self,
                _: &[u8],
            ) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("bytes"))
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Err(V::refuse("null"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                Err(V::refuse("a list"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                _: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                Err(V::refuse("a table"))
            }
        }
        d.deserialize_any(V)
    }
}

/// What [`RedisConfig::checked`] hands the provider.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct Checked {
    pub nodes: Vec<NodeAddr>,
    pub rules: AclRules,
    pub tls: Option<TlsFiles>,
}

#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct TlsFiles {
    pub ca_cert: Option<Vec<u8>>,
    /// Certificate and key, PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

fn read_pem(field: &str, path: &Path, label: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::invalid_config(format!("{field}: cannot read {}: {e}", path.display()))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(label) {
        return Err(Error::invalid_config(format!(
            "{field}: {} is not a PEM file with a {label}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// One node's address, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeAddr {
    /// `host:port` (`[v6]:port`), for messages and as the node's identity.
    pub label: String,
    /// The host to connect to (without IPv6 brackets) and the name TLS verifies.
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `Some(master name)` for a Sentinel seed; such a node holds no users.
    pub sentinel_master: Option<String>,
}

impl NodeAddr {
    /// A data node at `host:port`, reached like `like` (same TLS setting).
    pub(crate) fn data(host: &str, port: u16, tls: bool) -> NodeAddr {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let label = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        NodeAddr {
            label,
            host,
            port,
            tls,
            sentinel_master: None,
        }
    }

    fn parse(url: &str) -> std::result::Result<NodeAddr, String> {
        for (scheme, tls) in [("sentinel://", false), ("sentinels://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return Self::parse_sentinel(rest, tls);
            }
        }
        Self::parse_data(url)
    }

    fn parse_sentinel(rest: &str, tls: bool) -> std::result::Result<NodeAddr, String> {
        let (hostport, master) = rest
            .split_once('/')
            .ok_or("a sentinel URL is sentinel://host:port/<master-name>")?;
        if hostport.contains('@') {
            return Err(
                "the URL carries credentials; set admin_username and admin_password instead".into(),
            );
        }
        let master = master.trim_end_matches('/');
        if master.is_empty()
            || master
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err("a sentinel URL is sentinel://host:port/<master-name>".into());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{:?} is not a port", shorten(p)))?,
            ),
            _ => (hostport, 26379),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let mut node = NodeAddr::data(host, port, tls);
        node.sentinel_master = Some(master.to_string());
        Ok(node)
    }

    fn parse_data(url: &str) -> std::result::Result<NodeAddr, String> {
        let parsed = redis::parse_redis_url(url).ok_or_else(|| {
            format!(
                "{:?} is not a redis://, rediss://, valkey://, valkeys:// or sentinel:// URL",
                shorten(url)
            )
        })?;
        let tls = match parsed.scheme() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            other => {
                return Err(format!(
                    "scheme {other}:// is not supported; use redis:// or rediss:// (TCP)"
                ))
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // A URL ends up in logs and Debug output; the admin password must not.
            return Err(
                "the URL carries credentials; set admin_username and admin_password instead".into(),
            );
        }
        if parsed.fragment().is_some() {
            return Err(
                "URL fragments (such as #insecure) are refused: certificates are always \
                        verified; set ca_cert for a private CA"
                    .into(),
            );
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        if matches!(host, "0.0.0.0" | "[::]" | "::") {
            return Err(format!("{host} is a wildcard address, not a node"));
        }
        let port = parsed.port().unwrap_or(6379);
        Ok(NodeAddr::data(host, port, tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;
    use serde_json::json;

    fn err(c: RedisConfig) -> String {
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        e.message().to_string()
    }

    fn pw(p: &str) -> SecretString {
        SecretString::from(p)
    }

    /// Deserializes `v`; on failure, the error text.
    fn load(v: serde_json::Value) -> std::result::Result<RedisConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn load_err(v: serde_json::Value) -> String {
        match load(v) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(m) => m,
        }
    }

    #[test]
    fn good_configs_pass() {
        RedisConfig::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
        RedisConfig::new("redis://localhost")
            .node("valkey://[::1]:7000")
            .node("redis://cache.internal:6380/0")
            .admin("admin", pw("pw"))
            .validate()
            .unwrap();
        RedisConfig::new("redis://localhost")
            .admin(DEFAULT_ADMIN_USERNAME, pw("requirepass-pw"))
            .validate()
            .unwrap();
    }

    #[test]
    fn bad_nodes_are_refused_naming_the_index() {
        assert!(err(RedisConfig::default()).starts_with("urls:"));
        assert!(err(RedisConfig::new("http://x")).starts_with("urls[0]:"));
        assert!(err(RedisConfig::new("redis://a").node("not a url")).starts_with("urls[1]:"));
        assert!(err(RedisConfig::new("redis://0.0.0.0:1")).contains("wildcard"));
        assert!(err(RedisConfig::new("unix:///tmp/redis.sock")).contains("not supported"));
        assert!(err(RedisConfig::new("redis://a:1").node("redis://a:1")).contains("twice"));
        assert!(err(RedisConfig::new("redis://a").node("redis://a:6379")).contains("twice"));
        assert!(err(RedisConfig::new("rediss://a#insecure")).contains("verified"));
        let mut c = RedisConfig::new("redis://a");
        c.urls = (0..65).map(|i| format!("redis://h:{}", 7000 + i)).collect();
        assert!(err(c).starts_with("urls: 65 nodes"));
    }

    #[test]
    fn credentials_in_urls_are_refused_without_quoting_them() {
        let m = err(RedisConfig::new("redis://admin:hunter2@127.0.0.1:6379"));
        assert!(m.contains("credentials"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
        let e = RedisConfig::new("redis://:hunter2@127.0.0.1")
            .validate()
            .unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[test]
    fn other_settings_are_checked() {
        let base = || RedisConfig::new("redis://127.0.0.1");
        assert!(err(base().acl_rules("~* nopass")).starts_with("acl_rules:"));
        assert!(err(base().attempts(0)).starts_with("attempts:"));
        assert!(err(base().attempts(11)).starts_with("attempts:"));
        assert!(err(base().command_timeout(Duration::ZERO)).starts_with("command_timeout:"));
        assert!(err(base().connect_timeout(Duration::ZERO)).starts_with("connect_timeout:"));
        assert!(err(base().retry_delay(Duration::ZERO)).starts_with("retry_delay:"));
        assert!(err(base().admin("a b", pw("pw"))).starts_with("admin_username:"));
        assert!(err(base().admin("", pw("pw"))).starts_with("admin_username:"));
        assert!(err(base().admin("a", pw(""))).starts_with("admin_password:"));
        let mut c = base();
        c.admin_username = "admin".into();
        assert!(err(c).starts_with("admin_password: missing"));
        assert!(err(base().ca_cert("/nonexistent/ca.pem")).starts_with("ca_cert:"));
        assert!(err(base().client_cert("/c.pem", "/k.pem")).starts_with("client_cert:"));
        assert!(err(base().refresh_interval(Duration::ZERO)).starts_with("refresh_interval:"));
    }

    #[test]
    fn only_another_user_than_default_is_sent_with_auth() {
        let c = RedisConfig::new("redis://h").admin("default", pw("pw"));
        assert_eq!(c.auth_username(), None);
        let c = RedisConfig::new("redis://h").admin("leasehold-admin", pw("pw"));
        assert_eq!(c.auth_username(), Some("leasehold-admin"));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_are_checked() {
        assert!(
            err(RedisConfig::new("rediss://h").ca_cert("/nonexistent/ca.pem"))
                .starts_with("ca_cert:")
        );
        let mut c = RedisConfig::new("rediss://h");
        c.client_cert = Some("/x".into());
        assert!(err(c).starts_with("client_key: missing"));
        let mut c = RedisConfig::new("rediss://h");
        c.client_key = Some("/x".into());
        assert!(err(c).starts_with("client_cert: missing"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_nodes_name_the_missing_feature() {
        let m = err(RedisConfig::new("redis://a").node("rediss://b:6380"));
        assert!(m.starts_with("urls[1]:"), "{m}");
        assert!(
            m.contains("feature \"tls\"") && m.contains("redis-tls"),
            "{m}"
        );
        assert!(err(RedisConfig::new("sentinels://s:26379/m")).contains("\"tls\""));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_keys_load_without_the_feature_and_rediss_names_it() {
        let m = load_err(json!({
            "urls": ["rediss://h:6380"],
            "ca_cert": "/etc/ca.pem",
        }));
        assert!(
            m.starts_with("urls[0]:") && m.contains("feature \"tls\""),
            "{m}"
        );
    }

    #[test]
    fn sentinel_seeds_parse() {
        let c = RedisConfig::new("sentinel://10.0.0.9:26380/orders")
            .node("sentinel://sentinel.internal/orders");
        let checked = c.checked().unwrap();
        assert_eq!(checked.nodes[0].label, "10.0.0.9:26380");
        assert_eq!(checked.nodes[0].sentinel_master.as_deref(), Some("orders"));
        assert_eq!(checked.nodes[1].port, 26379);
        assert!(err(RedisConfig::new("sentinel://h:1")).contains("master-name"));
        assert!(err(RedisConfig::new("sentinel://h:1/")).contains("master-name"));
        assert!(err(RedisConfig::new("sentinel://u:pw@h:1/m")).contains("credentials"));
        assert!(err(RedisConfig::new("sentinel://h:1/m").discover(false)).contains("discovery"));
    }

    #[test]
    fn ipv6_hosts_keep_brackets_in_labels_only() {
        let checked = RedisConfig::new("redis://[::1]:7000").checked().unwrap();
        assert_eq!(checked.nodes[0].label, "[::1]:7000");
        assert_eq!(checked.nodes[0].host, "::1");
    }

    fn pem_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        (ca.clone(), ca, key)
    }

    #[cfg(feature = "tls")]
    #[test]
    fn pem_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not pem").unwrap();
        assert!(err(RedisConfig::new("rediss://h").ca_cert(&bad)).contains("not a PEM"));
        let (ca, cert, key) = pem_files(dir.path());
        RedisConfig::new("rediss://h")
            .ca_cert(&ca)
            .validate()
            .unwrap();
        RedisConfig::new("rediss://h")
            .client_cert(&cert, &key)
            .validate()
            .unwrap();
        assert!(
            err(RedisConfig::new("rediss://h").client_cert(&cert, &bad)).starts_with("client_key:")
        );
    }

    #[test]
    fn debug_redacts_the_admin_password() {
        let c = RedisConfig::new("redis://h").admin("admin", pw("hunter2"));
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("[REDACTED]"), "{d}");
        assert!(d.contains("admin_username: \"admin\""), "{d}");
    }

    #[test]
    fn every_documented_key_deserializes() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pem_files(dir.path());
        // TLS files are only accepted with a TLS node, and a TLS node needs the feature.
        let url = if cfg!(feature = "tls") {
            "rediss://10.0.0.5:6380"
        } else {
            "redis://10.0.0.5:6379"
        };
        let tls_keys = if cfg!(feature = "tls") {
            json!({"ca_cert": ca, "client_cert": cert, "client_key": key})
        } else {
            json!({})
        };
        let mut v = json!({
            "urls": [url, "sentinel://10.0.0.9:26379/orders"],
            "admin_username": "leasehold-admin",
            "admin_password": "s3cret-admin",
            "acl_rules": "~orders:* +@read",
            "acl_save": true,
            "connect_timeout": "750ms",
            "command_timeout": 3,
            "attempts": 5,
            "retry_delay": "250ms",
            "discover": true,
            "refresh_interval": "1m",
        });
        v.as_object_mut()
            .unwrap()
            .extend(tls_keys.as_object().unwrap().clone());
        let c = load(v).unwrap();
        assert_eq!(c.urls, [url, "sentinel://10.0.0.9:26379/orders"]);
        assert_eq!(c.admin_username, "leasehold-admin");
        assert_eq!(
            c.admin_password.as_ref().map(|p| p.expose_secret()),
            Some("s3cret-admin")
        );
        assert_eq!(c.acl_rules, "~orders:* +@read");
        assert!(c.acl_save);
        assert_eq!(c.connect_timeout, Duration::from_millis(750));
        assert_eq!(c.command_timeout, Duration::from_secs(3));
        assert_eq!(c.attempts, 5);
        assert_eq!(c.retry_delay, Duration::from_millis(250));
        assert!(c.discover);
        assert_eq!(c.refresh_interval, Duration::from_secs(60));
        if cfg!(feature = "tls") {
            assert_eq!(c.ca_cert.as_deref(), Some(ca.as_path()));
            assert_eq!(c.client_cert.as_deref(), Some(cert.as_path()));
            assert_eq!(c.client_key.as_deref(), Some(key.as_path()));
        }
        assert!(!format!("{c:?}").contains("s3cret-admin"));
    }

    #[test]
    fn left_out_keys_keep_the_defaults() {
        let c = load(json!({"urls": ["redis://h"]})).unwrap();
        let d = RedisConfig::new("redis://h");
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        assert_eq!(c.admin_username, "default");
        assert!(c.admin_password.is_none());
        assert_eq!(c.acl_rules, DEFAULT_ACL_RULES);
        assert_eq!(
            (
                c.connect_timeout,
                c.command_timeout,
                c.retry_delay,
                c.refresh_interval
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_millis(100),
                Duration::from_secs(30)
            )
        );
        assert_eq!((c.attempts, c.discover, c.acl_save), (3, true, false));
        // `requirepass` servers: the default user with a password.
        let c = load(json!({"urls": ["redis://h"], "admin_password": "pw"})).unwrap();
        assert_eq!(c.auth_username(), None);
    }

    #[test]
    fn loading_refuses_bad_input_naming_the_key() {
        let m = load_err(json!({"urls": ["redis://h"], "nodes": ["redis://h"]}));
        assert!(m.contains("unknown field `nodes`"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "tls": {"ca_cert": "/ca.pem"}}));
        assert!(m.contains("unknown field `tls`"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "username": "admin"}));
        assert!(m.contains("unknown field `username`"), "{m}");
        let m = load_err(json!({"acl_rules": "~* +@read"}));
        assert!(m.contains("missing field `urls`"), "{m}");
        let m = load_err(json!({"urls": []}));
        assert!(m.starts_with("urls: list at least one"), "{m}");
        let m = load_err(json!({"urls": ["redis://h", "http://h"]}));
        assert!(m.starts_with("urls[1]:"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "client_cert": "/c.pem"}));
        assert!(m.starts_with("client_key: missing"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "client_key": "/k.pem"}));
        assert!(m.starts_with("client_cert: missing"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "ca_cert": "/ca.pem"}));
        assert!(m.starts_with("ca_cert:") && m.contains("rediss://"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "acl_rules": "~* nopass"}));
        assert!(m.starts_with("acl_rules:"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "attempts": 0}));
        assert!(m.starts_with("attempts:"), "{m}");
        let m = load_err(json!({"urls": ["redis://h"], "admin_username": "admin"}));
        assert!(m.starts_with("admin_password: missing"), "{m}");
        for field in [
            "connect_timeout",
            "command_timeout",
            "retry_delay",
            "refresh_interval",
        ] {
            let m = load_err(json!({"urls": ["redis://h"], field: "5 parsecs"}));
            assert!(m.starts_with(&format!("{field}: ")), "{m}");
            assert!(m.contains("not a valid duration"), "{m}");
            let m = load_err(json!({"urls": ["redis://h"], field: 0}));
            assert!(m.starts_with(&format!("{field}: ")), "{m}");
            let m = load_err(json!({"urls": ["redis://h"], field: true}));
            assert!(m.contains("duration"), "{m}");
        }
    }

    #[test]
    fn the_admin_password_is_never_in_an_error() {
        let secret = "Zq9-hunter2-7731";
        let cases = [
            // Each of these fails after the password was read.
            json!({"urls": ["redis://h"], "admin_password": secret, "bogus": 1}),
            json!({"urls": [], "admin_password": secret}),
            json!({"urls": ["redis://h"], "admin_username": "a b", "admin_password": secret}),
            json!({"urls": ["redis://h"], "admin_password": secret, "attempts": 99}),
            json!({"urls": ["redis://h"], "admin_password": secret, "retry_delay": "x"}),
            json!({"urls": ["redis://u:Zq9-hunter2-7731@h"], "admin_password": secret}),
        ];
        for v in cases {
            let m = load_err(v);
            assert!(!m.contains(secret), "{m}");
        }
        // A password of the wrong type is refused without being quoted.
        for (value, what) in [
            (json!(77311234), "a number"),
            (json!(-7731), "a number"),
            (json!(7731.5), "a number"),
            (json!(true), "a boolean"),
            (json!(["Zq9-hunter2-7731"]), "a list"),
            (json!({"p": "Zq9-hunter2-7731"}), "a table"),
        ] {
            let m = load_err(json!({"urls": ["redis://h"], "admin_password": value}));
            assert!(m.starts_with("admin_password: must be a string"), "{m}");
            assert!(m.contains(what), "{m}");
            assert!(
                !m.contains("7731") && !m.contains("hunter2") && !m.contains("true"),
                "{m}"
            );
        }
        let m = load_err(json!({"urls": ["redis://h"], "admin_password": ""}));
        assert!(m.starts_with("admin_password: is empty"), "{m}");
        // And a loaded config's Debug does not show it either.
        let c = load(json!({"urls": ["redis://h"], "admin_password": secret})).unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }
}
