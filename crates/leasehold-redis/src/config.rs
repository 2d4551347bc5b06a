//! [`RedisConfig`]: the nodes, the admin credential, TLS files and the rules of issued users.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::rules::{AclRules, DEFAULT_ACL_RULES};

/// Most nodes one provider manages (a primary with its replicas, or a handful of standalone
/// servers; every issue talks to each of them).
pub const MAX_NODES: usize = 64;

/// Most attempts per command per node.
pub const MAX_ATTEMPTS: u32 = 10;

/// Shortest pause between two topology refreshes triggered by a node that failed or appeared;
/// a flapping node cannot turn every call into a discovery round.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);

/// TLS files for `rediss://` nodes (PEM). Paths are read when the provider is built.
///
/// Without `ca_cert` the system's trust store is used. A client certificate is sent only when
/// both `client_cert` and `client_key` are set (for servers with `tls-auth-clients yes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTls {
    /// CA certificate(s) that signed the servers' certificates.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key, for mutual TLS.
    pub client_key: Option<PathBuf>,
}

impl RedisTls {
    fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }
}

/// Settings of a [`RedisAclProvider`](crate::RedisAclProvider).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://10.0.0.5:6379")
///     .node("redis://10.0.0.6:6379") // the replica: ACL users are not replicated
///     .admin("leasehold-admin", "admin-password")
///     .acl_rules("~cache:* +@read +@write -@dangerous")
///     .command_timeout(Duration::from_secs(2));
/// config.validate().unwrap();
///
/// assert!(RedisConfig::new("redis://10.0.0.5").acl_rules("~* +@all nopass").validate().is_err());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Seed nodes: `redis://host:port` or `rediss://host:port` (`valkey://` / `valkeys://`
    /// too), or a Sentinel as `sentinel://host:port/<master-name>` (`sentinels://` with TLS).
    /// With [`discover`](Self::discover) on (the default) the provider finds every replica
    /// and cluster node from these; with it off, list the primary **and** every replica.
    pub nodes: Vec<String>,
    /// Find the whole topology from the seeds: replicas (`ROLE`), all nodes of a Redis Cluster
    /// (`CLUSTER NODES`), the set a Sentinel manages (default true). ACL users are never
    /// replicated, so writing to every node found is always right.
    pub discover: bool,
    /// How often the topology is found again even when nothing failed (default 30 s). A call
    /// that finds a node gone refreshes sooner, at most once per [`MIN_REFRESH_GAP`].
    pub refresh_interval: Duration,
    /// The admin user the provider connects as (`None`: the `default` user).
    pub username: Option<String>,
    /// The admin user's password (`None`: no `AUTH`).
    pub password: Option<SecretString>,
    /// TLS files for `rediss://` nodes.
    pub tls: RedisTls,
    /// Rules of every issued user, after `reset on ><password>` (default
    /// [`DEFAULT_ACL_RULES`]). See [`AclRules`] for what is refused.
    pub acl_rules: String,
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
            .field("nodes", &self.nodes)
            .field("discover", &self.discover)
            .field("refresh_interval", &self.refresh_interval)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("tls", &self.tls)
            .field("acl_rules", &self.acl_rules)
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
            nodes: Vec::new(),
            discover: true,
            refresh_interval: Duration::from_secs(30),
            username: None,
            password: None,
            tls: RedisTls::default(),
            acl_rules: DEFAULT_ACL_RULES.to_string(),
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
            nodes: vec![url.into()],
            ..RedisConfig::default()
        }
    }

    /// Adds a node.
    #[must_use]
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Sets whether the topology is discovered from the seeds (default true); `false` limits
    /// the provider to the listed nodes.
    #[must_use]
    pub fn discover(mut self, yes: bool) -> Self {
        self.discover = yes;
        self
    }

    /// Sets how often the topology is found again on a schedule.
    #[must_use]
    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    /// Sets the admin user and its password.
    #[must_use]
    pub fn admin(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(SecretString::from(password.into()));
        self
    }

    /// Sets the admin password only (the `default` user, or `requirepass`).
    #[must_use]
    pub fn admin_password(mut self, password: SecretString) -> Self {
        self.password = Some(password);
        self
    }

    /// Sets the rules of issued users.
    #[must_use]
    pub fn acl_rules(mut self, rules: impl Into<String>) -> Self {
        self.acl_rules = rules.into();
        self
    }

    /// Sets the CA certificate file for `rediss://` nodes.
    #[must_use]
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_cert = Some(path.into());
        self
    }

    /// Sets the client certificate and key files (mutual TLS).
    #[must_use]
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_cert = Some(cert.into());
        self.tls.client_key = Some(key.into());
        self
    }

    /// Sets whether every change is followed by `ACL SAVE`.
    #[must_use]
    pub fn acl_save(mut self, yes: bool) -> Self {
        self.acl_save = yes;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the command timeout.
    #[must_use]
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// Sets the tries per command and node.
    #[must_use]
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// Sets the first pause between tries.
    #[must_use]
    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }

    /// Checks every setting without a network call (TLS files are read).
    pub fn validate(&self) -> Result<()> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<Checked> {
        if self.nodes.is_empty() {
            return Err(Error::invalid_config(
                "nodes: at least one redis:// or rediss:// URL is needed",
            ));
        }
        if self.nodes.len() > MAX_NODES {
            return Err(Error::invalid_config(format!(
                "nodes: {} nodes, at most {MAX_NODES}",
                self.nodes.len()
            )));
        }
        let mut nodes: Vec<NodeAddr> = Vec::with_capacity(self.nodes.len());
        for (i, url) in self.nodes.iter().enumerate() {
            let node = NodeAddr::parse(url)
                .map_err(|why| Error::invalid_config(format!("nodes[{i}]: {why}")))?;
            if let Some(j) = nodes.iter().position(|n| n.label == node.label) {
                return Err(Error::invalid_config(format!(
                    "nodes[{i}]: {} is listed twice (also nodes[{j}])",
                    node.label
                )));
            }
            nodes.push(node);
        }
        if let Some(u) = &self.username {
            if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid_config(
                    "username: must be non-empty, without spaces or control characters",
                ));
            }
        }
        if let Some(p) = &self.password {
            if p.expose_secret().is_empty() {
                return Err(Error::invalid_config(
                    "password: is empty; leave it unset for no AUTH",
                ));
            }
        }
        if self.username.is_some() && self.password.is_none() {
            return Err(Error::invalid_config(
                "password: the admin username is set but its password is not",
            ));
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
                    "nodes[{i}]: a sentinel:// seed needs discovery; remove discover = false \
                     or list the data nodes instead"
                )));
            }
        }
        let any_tls = nodes.iter().any(|n| n.tls);
        #[cfg(not(feature = "tls"))]
        if let Some(i) = nodes.iter().position(|n| n.tls) {
            return Err(Error::invalid_config(format!(
                "nodes[{i}]: {} needs TLS, which this build lacks: enable the leasehold-redis \
                 feature \"tls\" (leasehold feature \"redis-tls\")",
                nodes[i].label
            )));
        }
        if !self.tls.is_empty() && !any_tls {
            return Err(Error::invalid_config(
                "tls: certificate files are set but no node uses rediss://",
            ));
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(Error::invalid_config(
                "tls: client_cert and client_key go together; set both or neither",
            ));
        }
        let tls = if any_tls {
            Some(TlsFiles {
                ca_cert: self
                    .tls
                    .ca_cert
                    .as_deref()
                    .map(|p| read_pem("tls.ca_cert", p, "CERTIFICATE"))
                    .transpose()?,
                client: match (&self.tls.client_cert, &self.tls.client_key) {
                    (Some(c), Some(k)) => Some((
                        read_pem("tls.client_cert", c, "CERTIFICATE")?,
                        read_pem("tls.client_key", k, "PRIVATE KEY")?,
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
                "the URL carries credentials; set username and password in the config instead"
                    .into(),
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
                "the URL carries credentials; set username and password in the config instead"
                    .into(),
            );
        }
        if parsed.fragment().is_some() {
            return Err(
                "URL fragments (such as #insecure) are refused: certificates are always \
                        verified; set tls.ca_cert for a private CA"
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

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;

    fn err(c: RedisConfig) -> String {
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        e.message().to_string()
    }

    #[test]
    fn good_configs_pass() {
        RedisConfig::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
        RedisConfig::new("redis://localhost")
            .node("valkey://[::1]:7000")
            .node("redis://cache.internal:6380/0")
            .admin("admin", "pw")
            .validate()
            .unwrap();
    }

    #[test]
    fn bad_nodes_are_refused_naming_the_index() {
        assert!(err(RedisConfig::default()).starts_with("nodes:"));
        assert!(err(RedisConfig::new("http://x")).starts_with("nodes[0]:"));
        assert!(err(RedisConfig::new("redis://a").node("not a url")).starts_with("nodes[1]:"));
        assert!(err(RedisConfig::new("redis://0.0.0.0:1")).contains("wildcard"));
        assert!(err(RedisConfig::new("unix:///tmp/redis.sock")).contains("not supported"));
        assert!(err(RedisConfig::new("redis://a:1").node("redis://a:1")).contains("twice"));
        assert!(err(RedisConfig::new("redis://a").node("redis://a:6379")).contains("twice"));
        assert!(err(RedisConfig::new("rediss://a#insecure")).contains("verified"));
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
        assert!(err(base().admin("a b", "pw")).starts_with("username:"));
        assert!(err(base().admin("a", "")).starts_with("password:"));
        let mut c = base();
        c.username = Some("admin".into());
        assert!(err(c).starts_with("password:"));
        assert!(err(base().ca_cert("/nonexistent/ca.pem")).starts_with("tls:"));
        assert!(err(base().refresh_interval(Duration::ZERO)).starts_with("refresh_interval:"));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_settings_are_checked() {
        assert!(
            err(RedisConfig::new("rediss://h").ca_cert("/nonexistent/ca.pem"))
                .starts_with("tls.ca_cert:")
        );
        let mut c = RedisConfig::new("rediss://h");
        c.tls.client_cert = Some("/x".into());
        assert!(err(c).contains("client_key"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_nodes_name_the_missing_feature() {
        let m = err(RedisConfig::new("redis://a").node("rediss://b:6380"));
        assert!(m.starts_with("nodes[1]:"), "{m}");
        assert!(
            m.contains("feature \"tls\"") && m.contains("redis-tls"),
            "{m}"
        );
        assert!(err(RedisConfig::new("sentinels://s:26379/m")).contains("\"tls\""));
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

    #[cfg(feature = "tls")]
    #[test]
    fn pem_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not pem").unwrap();
        assert!(err(RedisConfig::new("rediss://h").ca_cert(&bad)).contains("not a PEM"));
        let good = dir.path().join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        RedisConfig::new("rediss://h")
            .ca_cert(&good)
            .validate()
            .unwrap();
    }

    #[test]
    fn debug_redacts_the_admin_password() {
        let c = RedisConfig::new("redis://h").admin("admin", "hunter2");
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("[REDACTED]"));
    }
}
