//! [`RedisAclProvider`]: ACL users on every configured node.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, ManagedCredential, NameRule, PasswordPolicy, Readiness, Result,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{NodeAddr, RedisConfig, TlsFiles};
use crate::errors;
use crate::rules::AclRules;

/// The provider's kind, stored with each lease.
pub const KIND: &str = "redis";

/// `ExternalRef` attribute: the nodes (`host:port`, comma separated) the user was created on.
pub const ATTR_NODES: &str = "nodes";

/// Most names remembered as "refused because it existed" (see `revoke`).
const REFUSED_MAX: usize = 1024;

/// Issues Redis / Valkey ACL users on every configured node (kind `redis`).
///
/// - `create`: `ACL GETUSER` on every node (a name that exists anywhere is
///   [`ErrorKind::AlreadyExists`]; nothing is overwritten), then
///   `ACL SETUSER <name> reset on ><password> <rules>` on every node. If any node fails, the
///   user is deleted from the nodes that took it and the error is returned. Unless the caller
///   opts out, the new credential then `AUTH`s on every node before it is returned
///   ([`Readiness::Confirmed`]).
/// - `revoke`: `ACL DELUSER` on every node, which also closes the user's open connections.
///   A user that is already gone is success.
/// - `renew`: nothing to do on the server; Redis ACL users have no expiry of their own, the
///   lease is what ends them.
/// - `list_managed`: `ACL USERS` on every node, filtered by prefix (for reconcile).
/// - `validate`: connects to every node as the admin user, creates and deletes a disabled
///   throwaway user with the configured rules (so the server checks them), checks the admin
///   may run `ACL SAVE` when configured, and warns about replicas that are not configured.
///
/// Commands that fail temporarily (connection refused or dropped, `LOADING`, timeouts) are
/// retried per node; every command used is idempotent.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_core::{DynamicSecret, IssueRequest, LeaseManager, MemoryStore};
/// use leasehold_redis::{RedisAclProvider, RedisConfig};
///
/// let provider = RedisAclProvider::new(
///     RedisConfig::new("redis://10.0.0.5:6379")
///         .node("redis://10.0.0.6:6379")
///         .admin("leasehold-admin", std::env::var("REDIS_ADMIN_PASSWORD").unwrap())
///         .acl_rules("~orders:* +@read +@write -@dangerous"),
/// )?;
/// let secret = DynamicSecret::builder("orders-cache", Arc::new(provider))
///     .default_ttl(Duration::from_secs(3600))
///     .build()?;
/// let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
///     .secret(secret)
///     .build()
///     .await?;
/// let lease = manager.issue("orders-cache", IssueRequest::new()).await?;
/// # let _ = lease;
/// # Ok(()) }
/// ```
pub struct RedisAclProvider {
    nodes: Vec<Node>,
    rules: AclRules,
    acl_save: bool,
    attempts: u32,
    retry_delay: Duration,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// Names `create` refused because the user existed (someone else's). A write-ahead revoke
    /// of such a name (the manager compensating a failed issue) must not delete that user.
    refused: Mutex<HashSet<String>>,
}

struct Node {
    addr: NodeAddr,
    /// Connects as the admin user.
    admin: Client,
    /// Connects without credentials; used to `AUTH` as an issued user.
    probe: Client,
    conn_config: AsyncConnectionConfig,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisAclProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.addr.label.as_str()).collect();
        f.debug_struct("RedisAclProvider")
            .field("nodes", &nodes)
            .field("rules", &self.rules)
            .field("acl_save", &self.acl_save)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

fn build_client(
    addr: &NodeAddr,
    redis: RedisConnectionInfo,
    tls: Option<&TlsFiles>,
    field: &str,
) -> Result<Client> {
    let bad = |e: redis::RedisError| Error::invalid_config(format!("{field}: {}: {e}", addr.label));
    let info = addr
        .url
        .as_str()
        .into_connection_info()
        .map_err(bad)?
        .set_redis_settings(redis);
    match (addr.tls, tls) {
        (true, Some(files)) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: files
                    .client
                    .as_ref()
                    .map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }),
                root_cert: files.ca_cert.clone(),
            },
        )
        .map_err(bad),
        _ => Client::open(info).map_err(bad),
    }
}

impl RedisAclProvider {
    /// Checks `config` (no network call; TLS files are read) and builds the provider.
    /// Connections are opened on first use.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let checked = config.checked()?;
        if checked.tls.is_some() {
            // rustls needs a process-wide crypto provider; pick one unless the host already did.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            }
        }
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let mut nodes = Vec::with_capacity(checked.nodes.len());
        for (i, addr) in checked.nodes.into_iter().enumerate() {
            let field = format!("nodes[{i}]");
            let mut admin_info = RedisConnectionInfo::default();
            if let Some(u) = &config.username {
                admin_info = admin_info.set_username(u);
            }
            if let Some(p) = &config.password {
                admin_info = admin_info.set_password(p.expose_secret());
            }
            let admin = build_client(&addr, admin_info, checked.tls.as_ref(), &field)?;
            // The probe sends nothing before AUTH (no CLIENT SETINFO an issued user may lack).
            let probe = build_client(
                &addr,
                RedisConnectionInfo::default().set_skip_set_lib_name(),
                checked.tls.as_ref(),
                &field,
            )?;
            nodes.push(Node {
                addr,
                admin,
                probe,
                conn_config: conn_config.clone(),
                conn: tokio::sync::Mutex::new(None),
            });
        }
        Ok(RedisAclProvider {
            nodes,
            rules: checked.rules,
            acl_save: config.acl_save,
            attempts: config.attempts,
            retry_delay: config.retry_delay,
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
            refused: Mutex::new(HashSet::new()),
        })
    }

    /// The configured nodes, as `host:port`.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.label.clone()).collect()
    }

    /// The rules every issued user gets.
    pub fn rules(&self) -> &AclRules {
        &self.rules
    }

    /// Whether `username` / `password` authenticate (`AUTH`) on every node. A node that
    /// cannot be reached is an error; a refused `AUTH` is `Ok(false)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(p: leasehold_redis::RedisAclProvider, pw: secrecy::SecretString) -> leasehold_core::Result<()> {
    /// let works = p.authenticates("lh-abc", &pw).await?;
    /// # let _ = works; Ok(()) }
    /// ```
    pub async fn authenticates(&self, username: &str, password: &SecretString) -> Result<bool> {
        let results = join_all(
            self.nodes
                .iter()
                .map(|n| self.auth_on(n, username, password)),
        )
        .await;
        let mut all = true;
        for r in results {
            all &= r?;
        }
        Ok(all)
    }

    /// `AUTH` on one node with a fresh connection. `Ok(false)` when the server refuses.
    async fn auth_on(&self, node: &Node, username: &str, password: &SecretString) -> Result<bool> {
        let pw = password.expose_secret();
        let connect = open(
            &node.probe,
            &node.conn_config,
            node.addr.tls,
            &node.addr.label,
        );
        let mut conn = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(Ok(c))) => c,
            Ok(Ok(Err(e))) => return Err(errors::map(&e, &node.addr.label, "connect", Some(pw))),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timeout_error(&node.addr.label, "connect")),
        };
        let mut cmd = redis::cmd("AUTH");
        cmd.arg(username).arg(pw);
        let auth = cmd.query_async::<()>(&mut conn);
        match tokio::time::timeout(self.command_timeout, auth).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e.code() == Some("WRONGPASS") => Ok(false),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::AuthenticationFailed
                    || (errors::is_server_reply(&e)
                        && errors::server_reason(&e).contains("invalid username-password")) =>
            {
                Ok(false)
            }
            Ok(Err(e)) => Err(errors::map(&e, &node.addr.label, "AUTH", Some(pw))),
            Err(_) => Err(timeout_error(&node.addr.label, "AUTH")),
        }
    }

    async fn connection(&self, node: &Node) -> Result<MultiplexedConnection> {
        let mut slot = node.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = open(
            &node.admin,
            &node.conn_config,
            node.addr.tls,
            &node.addr.label,
        );
        let conn = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(Ok(c))) => c,
            Ok(Ok(Err(e))) => return Err(errors::map(&e, &node.addr.label, "connect", None)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timeout_error(&node.addr.label, "connect")),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one idempotent command on `node`, retrying temporary failures. Server replies
    /// come back as `Ok(Err(reply))` so callers can read them; `op` names the command in
    /// errors; `scrub` is kept out of messages.
    async fn run<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        op: &str,
        scrub: Option<&str>,
    ) -> Result<std::result::Result<T, redis::RedisError>> {
        let mut delay = self.retry_delay;
        let mut attempt = 1;
        loop {
            let outcome = match self.connection(node).await {
                Ok(mut conn) => {
                    match tokio::time::timeout(
                        self.command_timeout,
                        cmd.query_async::<T>(&mut conn),
                    )
                    .await
                    {
                        Ok(Ok(v)) => return Ok(Ok(v)),
                        Ok(Err(e)) => {
                            if e.is_io_error()
                                || e.is_connection_dropped()
                                || e.is_connection_refusal()
                                || e.is_timeout()
                            {
                                *node.conn.lock().await = None;
                            }
                            let mapped = errors::map(&e, &node.addr.label, op, scrub);
                            if !mapped.is_temporary() && errors::is_server_reply(&e) {
                                return Ok(Err(e));
                            }
                            mapped
                        }
                        Err(_) => {
                            *node.conn.lock().await = None;
                            timeout_error(&node.addr.label, op)
                        }
                    }
                }
                Err(e) => e,
            };
            if !outcome.is_temporary() || attempt >= self.attempts {
                return Err(outcome);
            }
            tracing::debug!(node = %node.addr.label, op, attempt, error = %outcome, "retrying");
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Like [`run`](Self::run), with a server error reply mapped into an error too.
    async fn exec<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        op: &str,
        scrub: Option<&str>,
    ) -> Result<T> {
        self.run(node, cmd, op, scrub)
            .await?
            .map_err(|e| errors::map(&e, &node.addr.label, op, scrub))
    }

    async fn user_exists(&self, node: &Node, name: &str) -> Result<bool> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("GETUSER").arg(name);
        let v: redis::Value = self.exec(node, &cmd, "ACL GETUSER", None).await?;
        Ok(!matches!(v, redis::Value::Nil))
    }

    async fn set_user(&self, node: &Node, name: &str, password: &str) -> Result<()> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"))
            .arg(self.rules.args());
        match self
            .run::<()>(node, &cmd, "ACL SETUSER", Some(password))
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if errors::map(&e, "", "", None).kind() != ErrorKind::Unexpected => Err(
                errors::map(&e, &node.addr.label, "ACL SETUSER", Some(password)),
            ),
            Err(e) => {
                let mut reason = errors::server_reason(&e);
                reason = reason.replace(password, "[REDACTED]");
                Err(Error::invalid_config(format!(
                    "acl_rules: node {} refused ACL SETUSER: {reason}",
                    node.addr.label
                ))
                .with_context("node", &node.addr.label)
                .with_context("operation", "ACL SETUSER"))
            }
        }
    }

    async fn delete_user(&self, node: &Node, name: &str) -> Result<()> {
        // ACL DELUSER also closes every connection authenticated as the user (Redis since 6.0,
        // where ACLs appeared, and Valkey), so no CLIENT KILL USER follows: run after the
        // deletion it could only answer "No such user", and before it a connection could
        // still open in between. The redis tests check that an open connection drops.
        let mut del = redis::cmd("ACL");
        del.arg("DELUSER").arg(name);
        let _: i64 = self.exec(node, &del, "ACL DELUSER", None).await?;
        Ok(())
    }

    async fn save(&self, node: &Node) -> Result<()> {
        if self.acl_save {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SAVE");
            self.exec::<()>(node, &cmd, "ACL SAVE", None).await?;
        }
        Ok(())
    }

    /// Deletes `name` from `nodes` (compensation); failures are logged, not returned.
    async fn compensate(&self, nodes: &[&Node], name: &str) {
        let results = join_all(nodes.iter().map(|n| async move {
            let r = match self.delete_user(n, name).await {
                Ok(()) => self.save(n).await,
                Err(e) => Err(e),
            };
            (n.addr.label.as_str(), r)
        }))
        .await;
        for (label, r) in results {
            match r {
                Ok(()) => tracing::debug!(node = label, user = name, "compensated: user deleted"),
                Err(e) => tracing::warn!(node = label, user = name, error = %e,
                    "could not delete a partly created user; revoke by name will retry"),
            }
        }
    }

    fn remember_refused(&self, name: &str) {
        let mut set = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= REFUSED_MAX {
            set.clear();
        }
        set.insert(name.to_string());
    }

    fn take_refused(&self, name: &str) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    fn check_password(password: &SecretString) -> Result<()> {
        let pw = password.expose_secret();
        let rule = leasehold_core::password::PasswordRule::RedisAcl;
        if pw.len() < rule.min_len()
            || pw.len() > rule.max_len()
            || !pw.chars().all(|c| rule.allows(c))
        {
            return Err(Error::invalid_input(format!(
                "the password does not satisfy the {} rule (printable ASCII without spaces, \
                 {} to {} characters)",
                rule.describe(),
                rule.min_len(),
                rule.max_len()
            )));
        }
        Ok(())
    }

    async fn validate_node(&self, node: &Node, labels: &BTreeSet<&str>) -> Result<()> {
        let label = &node.addr.label;
        let mut whoami = redis::cmd("ACL");
        whoami.arg("WHOAMI");
        // Checks the connection, the admin credentials and the +acl permission first.
        let _me: String = self.exec(node, &whoami, "ACL WHOAMI", None).await?;

        // The server checks the rules on a disabled throwaway user, which is deleted again.
        let probe_name = format!(
            "lh-validate-{}",
            leasehold_core::template::random_lowercase(12)
        );
        let mut set = redis::cmd("ACL");
        set.arg("SETUSER")
            .arg(&probe_name)
            .arg("reset")
            .arg(self.rules.args())
            .arg("off");
        let created = self.run::<()>(node, &set, "ACL SETUSER", None).await;
        let cleanup = async {
            let mut del = redis::cmd("ACL");
            del.arg("DELUSER").arg(&probe_name);
            if let Err(e) = self.exec::<i64>(node, &del, "ACL DELUSER", None).await {
                tracing::warn!(node = %label, user = %probe_name, error = %e,
                    "could not delete the validation user");
                return Err(e);
            }
            Ok(())
        };
        match created {
            Ok(Ok(())) => cleanup.await?,
            Ok(Err(e))
                if errors::map(&e, label, "", None).kind() == ErrorKind::PermissionDenied =>
            {
                return Err(errors::map(&e, label, "ACL SETUSER", None))
            }
            Ok(Err(e)) => {
                return Err(Error::invalid_config(format!(
                    "acl_rules: node {label} refused the rules {:?}: {}",
                    self.rules.to_string(),
                    errors::server_reason(&e)
                ))
                .with_context("node", label))
            }
            Err(e) => return Err(e),
        }

        if self.acl_save {
            let mut save = redis::cmd("ACL");
            save.arg("SAVE");
            if let Err(e) = self.run::<()>(node, &save, "ACL SAVE", None).await? {
                return Err(Error::invalid_config(format!(
                    "acl_save: node {label} cannot save its ACL: {}",
                    errors::server_reason(&e)
                ))
                .with_context("node", label));
            }
        }

        // ACL users are not replicated: a replica left out loses every user on failover.
        let role: std::result::Result<redis::Value, _> =
            self.run(node, &redis::cmd("ROLE"), "ROLE", None).await?;
        if let Ok(redis::Value::Array(items)) = role {
            if let Some(redis::Value::Array(replicas)) = items.get(2) {
                for r in replicas {
                    if let redis::Value::Array(parts) = r {
                        let text = |v: Option<&redis::Value>| match v {
                            Some(redis::Value::BulkString(b)) => {
                                String::from_utf8_lossy(b).into_owned()
                            }
                            _ => String::new(),
                        };
                        let replica = format!("{}:{}", text(parts.first()), text(parts.get(1)));
                        if !labels.contains(replica.as_str()) {
                            tracing::warn!(node = %label, replica = %replica,
                                "a replica of this node is not configured: issued users will not exist on it");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Opens a multiplexed connection. TLS connects run in their own task: rustls panics when no
/// crypto provider can be chosen, and that must come back as an error, not unwind the caller.
async fn open(
    client: &Client,
    config: &AsyncConnectionConfig,
    tls: bool,
    label: &str,
) -> Result<std::result::Result<MultiplexedConnection, redis::RedisError>> {
    if !tls {
        return Ok(client
            .get_multiplexed_async_connection_with_config(config)
            .await);
    }
    let (client, config) = (client.clone(), config.clone());
    tokio::spawn(async move {
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    })
    .await
    .map_err(|e| {
        if e.is_panic() {
            Error::invalid_config(format!(
                "node {label}: TLS is unavailable: rustls has no crypto provider; enable the \
                 rustls feature \"aws-lc-rs\" or \"ring\", or call \
                 rustls::crypto::aws_lc_rs::default_provider().install_default() at start-up"
            ))
            .with_context("node", label)
        } else {
            Error::unexpected(format!("node {label}: the connect task was cancelled"))
        }
    })
}

fn timeout_error(node: &str, op: &str) -> Error {
    Error::new(ErrorKind::Timeout, format!("node {node}: {op} timed out"))
        .with_context("node", node)
        .with_context("operation", op)
}

#[async_trait]
impl DynamicSecretProvider for RedisAclProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .renewable(true)
            .revocable(true)
            .needs_password(true)
            .lists_managed(true)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::RedisAclUser
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::redis()
    }

    async fn validate(&self) -> Result<()> {
        let labels: BTreeSet<&str> = self.nodes.iter().map(|n| n.addr.label.as_str()).collect();
        let results = join_all(self.nodes.iter().map(|n| self.validate_node(n, &labels))).await;
        for r in results {
            r.map_err(|e| e.with_context("operation", "validate"))?;
        }
        Ok(())
    }

    async fn create(&self, request: &CreateRequest) -> Result<Created> {
        let name = request.username.as_str();
        NameRule::RedisAclUser
            .check(name)
            .map_err(|e| Error::invalid_input(e.message().to_string()))?;
        let password = request.require_password(KIND)?;
        Self::check_password(password)?;
        let pw = password.expose_secret();

        // Never overwrite a user that exists on any node.
        let exists = join_all(self.nodes.iter().map(|n| self.user_exists(n, name))).await;
        for (node, r) in self.nodes.iter().zip(exists) {
            if r? {
                self.remember_refused(name);
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "ACL user {name:?} already exists on node {}; leasehold never overwrites \
                         a user",
                        node.addr.label
                    ),
                )
                .with_context("node", &node.addr.label));
            }
        }

        let results = join_all(self.nodes.iter().map(|n| async move {
            self.set_user(n, name, pw).await?;
            self.save(n).await
        }))
        .await;
        let mut done = Vec::new();
        let mut first_err = None;
        for (node, r) in self.nodes.iter().zip(results) {
            match r {
                Ok(()) => done.push(node),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            // ACL SETUSER may have taken effect on a node whose answer was lost: delete
            // everywhere it may exist, not only where it was confirmed.
            let all: Vec<&Node> = self.nodes.iter().collect();
            self.compensate(&all, name).await;
            return Err(e.with_context("operation", "create"));
        }
        tracing::debug!(
            user = name,
            nodes = done.len(),
            "created ACL user on every node"
        );

        let readiness = if request.wait_ready {
            match self.authenticates(name, password).await {
                Ok(true) => Readiness::Confirmed,
                Ok(false) => {
                    tracing::warn!(user = name, "a new ACL user did not AUTH on every node");
                    Readiness::TimedOut
                }
                Err(e) => {
                    tracing::warn!(user = name, error = %e, "could not confirm a new ACL user");
                    Readiness::TimedOut
                }
            }
        } else {
            Readiness::Unchecked
        };
        let external = ExternalRef::new(name).with_attr(ATTR_NODES, self.nodes().join(","));
        Ok(Created::new(
            external,
            Credentials::UsernamePassword {
                username: name.to_string(),
                password: password.clone(),
            },
            readiness,
        ))
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        let name = external.id.as_str();
        NameRule::RedisAclUser.check(name).map_err(|e| {
            Error::invalid_input(e.message().to_string()).with_context("operation", "revoke")
        })?;
        if external.attrs.is_empty() && self.take_refused(name) {
            // The manager compensating an issue this provider refused because the name was
            // taken: the user is someone else's.
            tracing::debug!(
                user = name,
                "not deleting a user this provider did not create"
            );
            return Ok(());
        }
        let results = join_all(self.nodes.iter().map(|n| async move {
            self.delete_user(n, name).await?;
            self.save(n).await
        }))
        .await;
        for r in results {
            r.map_err(|e| e.with_context("operation", "revoke"))?;
        }
        tracing::debug!(user = name, "deleted ACL user on every node");
        Ok(())
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        let results = join_all(self.nodes.iter().map(|n| async move {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("USERS");
            self.exec::<Vec<String>>(n, &cmd, "ACL USERS", None).await
        }))
        .await;
        let mut names = BTreeSet::new();
        for r in results {
            for user in r.map_err(|e| e.with_context("operation", "list_managed"))? {
                if user.starts_with(prefix) && user != "default" {
                    names.insert(user);
                }
            }
        }
        Ok(names
            .into_iter()
            .map(|n| ManagedCredential::new(ExternalRef::new(n)))
            .collect())
    }
}
