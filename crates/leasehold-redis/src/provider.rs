//! [`RedisAclProvider`]: ACL users on every configured node.
//!
//! Over 700 lines because create, revoke, validate and list all run across the discovered nodes
//! with the same per-node compensation; the node fan-out is written once, here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use leasehold_core::backoff::Backoff;
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, ManagedCredential, NameRule, PasswordPolicy, Readiness, Result,
};
use redis::aio::MultiplexedConnection;
use redis::RedisConnectionInfo;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{NodeAddr, RedisConfig, MIN_REFRESH_GAP};
use crate::connect::Dialer;
use crate::errors;
use crate::rules::AclRules;

/// The provider's kind, stored with each lease.
pub const KIND: &str = "redis";

/// `ExternalRef` attribute: the nodes (`host:port`, comma separated) the user was created on.
pub const ATTR_NODES: &str = "nodes";

/// Most names remembered as "refused because it existed" (see `revoke`).
const REFUSED_MAX: usize = 1024;

/// Issues Redis / Valkey ACL users on every node (kind `redis`): the configured seeds and,
/// with discovery on, every replica, cluster node or Sentinel-managed node found from them.
///
/// - `create`: `ACL GETUSER` on every node (a name that exists anywhere is
///   [`ErrorKind::AlreadyExists`]; nothing is overwritten), then
///   `ACL SETUSER <name> reset on ><password> <rules>` on every node. If a node that must take
///   it (a configured node or a primary) fails, the user is deleted from every node and the
///   error is returned; a discovered replica that cannot be reached is skipped and caught up
///   by [`repair`](Self::repair). Unless the caller opts out, the new credential then
///   `AUTH`s on every node it was written to ([`Readiness::Confirmed`]).
/// - `revoke`: `ACL DELUSER` on every node, which also closes the user's open connections.
///   A user that is already gone is success.
/// - `renew`: nothing to do on the server; Redis ACL users have no expiry of their own, the
///   lease is what ends them.
/// - `list_managed`: `ACL USERS` on every node, filtered by prefix (for reconcile).
/// - `validate`: finds the topology, connects to every node as the admin user, checks the
///   admin may run what discovery and repair need, and creates and deletes a disabled
///   throwaway user with the configured rules (so the server checks them).
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
/// use secrecy::SecretString;
///
/// let provider = RedisAclProvider::new(
///     RedisConfig::new("redis://10.0.0.5:6379")
///         .node("redis://10.0.0.6:6379")
///         .admin("leasehold-admin", SecretString::from(std::env::var("REDIS_ADMIN_PASSWORD").unwrap()))
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
    /// The configured nodes (data nodes and Sentinels).
    pub(crate) seeds: Vec<NodeAddr>,
    pub(crate) discover: bool,
    pub(crate) refresh_interval: Duration,
    /// The nodes users are written to, as last found.
    pub(crate) topo: std::sync::RwLock<Arc<Topology>>,
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    /// A call found a node gone or failing: refresh at the next call (bounded rate).
    pub(crate) dirty: AtomicBool,
    pub(crate) dialer: Dialer,
    pub(crate) admin_info: RedisConnectionInfo,
    rules: AclRules,
    acl_save: bool,
    attempts: u32,
    retry_delay: Duration,
    command_timeout: Duration,
    /// Names `create` refused because the user existed (someone else's). A write-ahead revoke
    /// of such a name (the manager compensating a failed issue) must not delete that user.
    refused: Mutex<HashSet<String>>,
    /// Names a `create` or `revoke` of this provider is working on: repair leaves them alone.
    pub(crate) busy: Mutex<HashMap<String, usize>>,
    /// Names revoked lately, so a repair working from an older lease list does not copy them
    /// back.
    pub(crate) revoked: Mutex<HashMap<String, Instant>>,
    pub(crate) repair_state: tokio::sync::Mutex<crate::repair::RepairState>,
    /// Wakes the repair task after the topology changed.
    pub(crate) topology_changed: tokio::sync::Notify,
}

/// One node users are written to.
pub(crate) struct Node {
    pub addr: NodeAddr,
    pub conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Node {
    pub(crate) fn new(addr: NodeAddr) -> Node {
        Node {
            addr,
            conn: tokio::sync::Mutex::new(None),
        }
    }
}

/// A node of the topology and whether a call must reach it (a configured node or a primary)
/// or may skip it while it is down (a discovered replica; repair fills it in later).
#[derive(Clone)]
pub(crate) struct Member {
    pub node: Arc<Node>,
    pub required: bool,
    /// When a seed, a Sentinel or another node last reported this node.
    pub reported_at: Instant,
}

/// The nodes as last found.
pub(crate) struct Topology {
    pub members: Vec<Member>,
    pub cluster: bool,
    /// When it was found; `None` before the first discovery.
    pub at: Option<Instant>,
}

impl Topology {
    pub(crate) fn labels(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.node.addr.label.clone())
            .collect()
    }
}

impl fmt::Debug for RedisAclProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seeds: Vec<&str> = self.seeds.iter().map(|n| n.label.as_str()).collect();
        f.debug_struct("RedisAclProvider")
            .field("seeds", &seeds)
            .field("discover", &self.discover)
            .field("rules", &self.rules)
            .field("acl_save", &self.acl_save)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Marks `name` busy while alive.
pub(crate) struct Busy<'a> {
    provider: &'a RedisAclProvider,
    name: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut map = self.provider.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// How long a revoked name is kept from being copied back by repair.
const REVOKED_MEMORY: Duration = Duration::from_secs(600);

impl RedisAclProvider {
    /// Checks `config` (no network call; TLS files are read) and builds the provider.
    /// Connections are opened, and the topology found, on first use.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let checked = config.checked()?;
        let dialer = Dialer::new(
            config.connect_timeout,
            config.command_timeout,
            checked.tls.as_ref(),
        )?;
        let mut admin_info = RedisConnectionInfo::default();
        if let Some(p) = &config.admin_password {
            if let Some(u) = config.auth_username() {
                admin_info = admin_info.set_username(u);
            }
            admin_info = admin_info.set_password(p.expose_secret());
        }
        let members = checked
            .nodes
            .iter()
            .filter(|n| n.sentinel_master.is_none())
            .map(|n| Member {
                node: Arc::new(Node::new(n.clone())),
                required: true,
                reported_at: Instant::now(),
            })
            .collect();
        Ok(RedisAclProvider {
            seeds: checked.nodes,
            discover: config.discover,
            refresh_interval: config.refresh_interval,
            topo: std::sync::RwLock::new(Arc::new(Topology {
                members,
                cluster: false,
                at: None,
            })),
            refresh_lock: tokio::sync::Mutex::new(()),
            dirty: AtomicBool::new(false),
            dialer,
            admin_info,
            rules: checked.rules,
            acl_save: config.acl_save,
            attempts: config.attempts,
            retry_delay: config.retry_delay,
            command_timeout: config.command_timeout,
            refused: Mutex::new(HashSet::new()),
            busy: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
            repair_state: tokio::sync::Mutex::new(Default::default()),
            topology_changed: tokio::sync::Notify::new(),
        })
    }

    /// The nodes users are written to, as `host:port`: the configured data nodes before the
    /// first call, every discovered node after it.
    pub fn nodes(&self) -> Vec<String> {
        self.current().labels()
    }

    /// Finds the topology now (ignoring the refresh schedule) and returns its nodes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(p: leasehold_redis::RedisAclProvider) -> leasehold_core::Result<()> {
    /// let nodes = p.refresh_topology().await?; // ["10.0.0.5:6379", "10.0.0.6:6379", ...]
    /// # let _ = nodes; Ok(()) }
    /// ```
    pub async fn refresh_topology(&self) -> Result<Vec<String>> {
        Ok(self.refresh(true).await?.labels())
    }

    pub(crate) fn current(&self) -> Arc<Topology> {
        self.topo.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The topology to use for a call: refreshed first when it is due (never found, older
    /// than `refresh_interval`, or marked dirty and older than [`MIN_REFRESH_GAP`]).
    pub(crate) async fn topology(&self) -> Result<Arc<Topology>> {
        let cur = self.current();
        if !self.refresh_due(&cur) {
            return Ok(cur);
        }
        self.refresh(false).await
    }

    fn refresh_due(&self, t: &Topology) -> bool {
        match t.at {
            None => true,
            Some(at) => {
                let age = at.elapsed();
                age >= self.refresh_interval
                    || (self.dirty.load(Ordering::Relaxed) && age >= MIN_REFRESH_GAP)
            }
        }
    }

    /// Runs discovery (one at a time) and stores the result. `force` ignores the schedule but
    /// not [`MIN_REFRESH_GAP`].
    pub(crate) async fn refresh(&self, force: bool) -> Result<Arc<Topology>> {
        let _one = self.refresh_lock.lock().await;
        let cur = self.current();
        let due = if force {
            cur.at.is_none_or(|at| at.elapsed() >= MIN_REFRESH_GAP)
        } else {
            self.refresh_due(&cur)
        };
        if !due {
            return Ok(cur);
        }
        self.dirty.store(false, Ordering::Relaxed);
        match self.discover_topology(&cur).await {
            Ok(new) => {
                let changed = new.labels() != cur.labels();
                let new = Arc::new(new);
                if changed {
                    if cur.at.is_some() {
                        tracing::info!(before = ?cur.labels(), after = ?new.labels(),
                            "redis topology changed");
                    }
                    self.topology_changed.notify_waiters();
                }
                *self.topo.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
                Ok(new)
            }
            Err(e) if cur.at.is_some() => {
                tracing::warn!(error = %e, "topology refresh failed; using the nodes found before");
                let kept = Arc::new(Topology {
                    members: cur.members.clone(),
                    cluster: cur.cluster,
                    at: Some(Instant::now()),
                });
                *self.topo.write().unwrap_or_else(|e| e.into_inner()) = kept.clone();
                Ok(kept)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub(crate) fn busy(&self, name: &str) -> Busy<'_> {
        *self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert(0) += 1;
        Busy {
            provider: self,
            name: name.to_string(),
        }
    }

    fn remember_revoked(&self, name: &str) {
        let mut map = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, at| at.elapsed() < REVOKED_MEMORY);
        if map.len() < 100_000 {
            map.insert(name.to_string(), Instant::now());
        }
    }

    /// The rules every issued user gets.
    pub fn rules(&self) -> &AclRules {
        &self.rules
    }

    /// Whether `username` / `password` authenticate (`AUTH`, then a command on the same
    /// connection) on every node. A configured node or primary that cannot be reached is an
    /// error; a discovered replica that cannot be reached is skipped; a refused `AUTH` is
    /// `Ok(false)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(p: leasehold_redis::RedisAclProvider, pw: secrecy::SecretString) -> leasehold_core::Result<()> {
    /// let works = p.authenticates("lh-abc", &pw).await?;
    /// # let _ = works; Ok(()) }
    /// ```
    pub async fn authenticates(&self, username: &str, password: &SecretString) -> Result<bool> {
        let topo = self.topology().await?;
        let members: Vec<&Member> = topo.members.iter().collect();
        self.authenticates_on(&members, username, password).await
    }

    async fn authenticates_on(
        &self,
        members: &[&Member],
        username: &str,
        password: &SecretString,
    ) -> Result<bool> {
        let results = join_all(
            members
                .iter()
                .map(|m| self.auth_on(&m.node, username, password)),
        )
        .await;
        let mut all = true;
        for (m, r) in members.iter().zip(results) {
            match r {
                Ok(ok) => all &= ok,
                Err(e) if !m.required && e.is_retryable() => {
                    self.mark_dirty();
                    tracing::debug!(node = %m.node.addr.label, error = %e, "replica skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// `AUTH` on one node with a fresh connection, then `PING` on the same connection: the
    /// second reply shows the connection really is the user's. `Ok(false)` when the server
    /// refuses.
    async fn auth_on(&self, node: &Node, username: &str, password: &SecretString) -> Result<bool> {
        let pw = password.expose_secret();
        // The probe sends nothing before AUTH (no CLIENT SETINFO an issued user may lack).
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        let mut conn = self.dialer.dial(&node.addr, &info, Some(pw)).await?;
        let label = &node.addr.label;
        let mut cmd = redis::cmd("AUTH");
        cmd.arg(username).arg(pw);
        match tokio::time::timeout(self.command_timeout, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.code() == Some("WRONGPASS") => return Ok(false),
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::AuthenticationFailed
                    || (errors::is_server_reply(&e)
                        && errors::server_reason(&e).contains("invalid username-password")) =>
            {
                return Ok(false)
            }
            Ok(Err(e)) => return Err(errors::map(&e, label, "AUTH", Some(pw))),
            Err(_) => return Err(timeout_error(label, "AUTH")),
        }
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.command_timeout, ping.query_async::<String>(&mut conn))
            .await
        {
            Ok(Ok(pong)) => Ok(pong == "PONG"),
            // The user's own rules may forbid PING: the server judged it as that user.
            Ok(Err(e)) if e.code() == Some("NOPERM") => Ok(true),
            Ok(Err(e)) if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => Ok(false),
            Ok(Err(e)) => Err(errors::map(&e, label, "PING", Some(pw))),
            Err(_) => Err(timeout_error(label, "PING")),
        }
    }

    async fn connection(&self, node: &Node) -> Result<MultiplexedConnection> {
        let mut slot = node.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = self.dialer.dial(&node.addr, &self.admin_info, None).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one idempotent command on `node`, retrying temporary failures. Server replies
    /// come back as `Ok(Err(reply))` so callers can read them; `op` names the command in
    /// errors; `scrub` is kept out of messages.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        op: &str,
        scrub: Option<&str>,
    ) -> Result<std::result::Result<T, redis::RedisError>> {
        self.run_tries(node, cmd, op, scrub, false).await
    }

    /// [`run`](Self::run); with `skippable` (a discovered replica, which may be gone) a node
    /// that cannot be connected to is not retried, while a connection that dropped (a
    /// failover closing clients) is.
    pub(crate) async fn run_tries<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        op: &str,
        scrub: Option<&str>,
        skippable: bool,
    ) -> Result<std::result::Result<T, redis::RedisError>> {
        // Doubling from retry_delay; `attempts` bounds it, so the cap is never reached.
        let mut delays = Backoff::new(self.retry_delay, Duration::MAX).iter();
        let mut attempt = 1;
        loop {
            let outcome = match self.connection(node).await {
                Err(e) if skippable => return Err(e),
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
            if !outcome.is_temporary() {
                return Err(outcome);
            }
            if attempt >= self.attempts {
                // Tried `attempts` times: no outer loop should re-run it at once.
                return Err(outcome.persist());
            }
            tracing::debug!(node = %node.addr.label, op, attempt, error = %outcome, "retrying");
            tokio::time::sleep(delays.next_delay()).await;
            attempt += 1;
        }
    }

    /// Like [`run`](Self::run), with a server error reply mapped into an error too.
    pub(crate) async fn exec<T: redis::FromRedisValue>(
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

    /// [`exec`](Self::exec) on a member: a discovered replica that cannot be connected to is
    /// not retried (it may be gone; repair catches it up).
    pub(crate) async fn exec_on<T: redis::FromRedisValue>(
        &self,
        m: &Member,
        cmd: &redis::Cmd,
        op: &str,
        scrub: Option<&str>,
    ) -> Result<T> {
        self.run_tries(&m.node, cmd, op, scrub, !m.required)
            .await?
            .map_err(|e| errors::map(&e, &m.node.addr.label, op, scrub))
    }

    pub(crate) async fn user_exists(&self, m: &Member, name: &str) -> Result<bool> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("GETUSER").arg(name);
        let v: redis::Value = self.exec_on(m, &cmd, "ACL GETUSER", None).await?;
        Ok(!matches!(v, redis::Value::Nil))
    }

    async fn set_user(&self, m: &Member, name: &str, password: &str) -> Result<()> {
        let node = &m.node;
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"))
            .arg(self.rules.args());
        match self
            .run_tries::<()>(node, &cmd, "ACL SETUSER", Some(password), !m.required)
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

    pub(crate) async fn delete_user(&self, m: &Member, name: &str) -> Result<()> {
        // ACL DELUSER also closes every connection authenticated as the user (Redis since 6.0,
        // where ACLs appeared, and Valkey), so no CLIENT KILL USER follows: run after the
        // deletion it could only answer "No such user", and before it a connection could
        // still open in between. The redis tests check that an open connection drops.
        let mut del = redis::cmd("ACL");
        del.arg("DELUSER").arg(name);
        let _: i64 = self.exec_on(m, &del, "ACL DELUSER", None).await?;
        self.save(m).await
    }

    pub(crate) async fn save(&self, m: &Member) -> Result<()> {
        if self.acl_save {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SAVE");
            self.exec_on::<()>(m, &cmd, "ACL SAVE", None).await?;
        }
        Ok(())
    }

    /// Deletes `name` from `members` (compensation); failures are logged, not returned.
    async fn compensate(&self, members: &[Member], name: &str) {
        let results =
            join_all(members.iter().map(|m| async move {
                (m.node.addr.label.as_str(), self.delete_user(m, name).await)
            }))
            .await;
        for (label, r) in results {
            match r {
                Ok(()) => tracing::debug!(node = label, user = name, "compensated: user deleted"),
                Err(e) => tracing::warn!(node = label, user = name, error = %e,
                    "could not delete a partly created user; revoke by name or repair will"),
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

    /// Runs `cmd` as a permission check: a `NOPERM` reply becomes a `PermissionDenied` error
    /// naming what to grant; other server replies (wrong arguments) are fine.
    async fn check_permission(
        &self,
        node: &Node,
        cmd: &redis::Cmd,
        op: &str,
        grant: &str,
        why: &str,
    ) -> Result<()> {
        match self.run::<redis::Value>(node, cmd, op, None).await? {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NOPERM") => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "node {}: the admin user may not run {op}: grant it {grant} ({why})",
                    node.addr.label
                ),
            )
            .with_context("node", &node.addr.label)
            .with_context("operation", op)),
            Err(_) => Ok(()),
        }
    }

    async fn validate_node(&self, m: &Member, topo: &Topology) -> Result<()> {
        let node = &m.node;
        let label = &node.addr.label;
        let mut whoami = redis::cmd("ACL");
        whoami.arg("WHOAMI");
        // Checks the connection, the admin credentials and the +acl permission first.
        let me: String = self.exec(node, &whoami, "ACL WHOAMI", None).await?;

        let mut getuser = redis::cmd("ACL");
        getuser.arg("GETUSER").arg(&me);
        self.check_permission(
            node,
            &getuser,
            "ACL GETUSER",
            "+acl|getuser",
            "create checks names with it; repair copies users with it",
        )
        .await?;
        if self.discover {
            self.check_permission(
                node,
                &redis::cmd("ROLE"),
                "ROLE",
                "+role",
                "discovery finds replicas with it; or set discover = false",
            )
            .await?;
            let mut info = redis::cmd("INFO");
            info.arg("replication");
            self.check_permission(
                node,
                &info,
                "INFO",
                "+info",
                "discovery tells a cluster node with it; or set discover = false",
            )
            .await?;
            if topo.cluster {
                let mut nodes = redis::cmd("CLUSTER");
                nodes.arg("NODES");
                self.check_permission(
                    node,
                    &nodes,
                    "CLUSTER NODES",
                    "+cluster|nodes",
                    "discovery finds the cluster's nodes with it; or set discover = false",
                )
                .await?;
            }
        }

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

        if !self.discover {
            // ACL users are not replicated: a replica left out loses every user on failover.
            let labels: BTreeSet<String> = topo.labels().into_iter().collect();
            if let Ok(Ok(role)) = self
                .run::<redis::Value>(node, &redis::cmd("ROLE"), "ROLE", None)
                .await
            {
                for r in crate::topology::role_replicas(&role, &node.addr) {
                    if !labels.contains(&r.label) {
                        tracing::warn!(node = %label, replica = %r.label,
                            "a replica of this node is not configured and discover = false: issued users will not exist on it");
                    }
                }
            }
        }
        Ok(())
    }
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
        // Renewable, revocable, with a password the manager makes (the defaults).
        Capabilities::new().lists_managed(true).repairs_drift(true)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::RedisAclUser
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::redis()
    }

    async fn validate(&self) -> Result<()> {
        let topo = self
            .refresh(true)
            .await
            .map_err(|e| e.with_context("operation", "validate"))?;
        let results = join_all(topo.members.iter().map(|m| self.validate_node(m, &topo))).await;
        for (m, r) in topo.members.iter().zip(results) {
            match r {
                Ok(()) => {}
                Err(e) if !m.required && e.is_retryable() => {
                    tracing::warn!(node = %m.node.addr.label, error = %e,
                        "a discovered replica could not be checked");
                }
                Err(e) => return Err(e.with_context("operation", "validate")),
            }
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
        let _busy = self.busy(name);
        let topo = self
            .topology()
            .await
            .map_err(|e| e.with_context("operation", "create"))?;

        // Never overwrite a user that exists on any node. A replica that cannot be reached
        // is left out of this issue (repair copies the user to it when it is back).
        let exists = join_all(topo.members.iter().map(|m| self.user_exists(m, name))).await;
        let mut targets: Vec<Member> = Vec::with_capacity(topo.members.len());
        for (m, r) in topo.members.iter().zip(exists) {
            match r {
                Ok(true) => {
                    self.remember_refused(name);
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "ACL user {name:?} already exists on node {}; leasehold never \
                             overwrites a user",
                            m.node.addr.label
                        ),
                    )
                    .with_context("node", &m.node.addr.label));
                }
                Ok(false) => targets.push(m.clone()),
                Err(e) if !m.required && e.is_retryable() => {
                    self.mark_dirty();
                    tracing::warn!(node = %m.node.addr.label, user = name, error = %e,
                        "a replica is unreachable: the user is created without it, repair adds it later");
                }
                Err(e) => return Err(e.with_context("operation", "create")),
            }
        }

        let results = join_all(targets.iter().map(|m| async move {
            self.set_user(m, name, pw).await?;
            self.save(m).await
        }))
        .await;
        let mut done: Vec<&Member> = Vec::new();
        let mut first_err = None;
        for (m, r) in targets.iter().zip(results) {
            match r {
                Ok(()) => done.push(m),
                Err(e) if !m.required && e.is_retryable() => {
                    self.mark_dirty();
                    tracing::warn!(node = %m.node.addr.label, user = name, error = %e,
                        "a replica failed during create: repair adds the user later");
                }
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
            self.compensate(&topo.members, name).await;
            return Err(e.with_context("operation", "create"));
        }
        tracing::debug!(
            user = name,
            nodes = done.len(),
            "created ACL user on every node"
        );

        let readiness = if request.wait_ready {
            match self.authenticates_on(&done, name, password).await {
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
        let labels: Vec<&str> = done.iter().map(|m| m.node.addr.label.as_str()).collect();
        let external = ExternalRef::new(name).with_attr(ATTR_NODES, labels.join(","));
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
        let _busy = self.busy(name);
        self.remember_revoked(name);
        let mut topo = self
            .topology()
            .await
            .map_err(|e| e.with_context("operation", "revoke"))?;
        let mut pending: Vec<Member> = topo.members.clone();
        // A replica that fails gets one more chance after a topology refresh: if it is gone
        // from the topology (down), repair removes the user when it returns.
        for round in 0..2 {
            let results = join_all(pending.iter().map(|m| self.delete_user(m, name))).await;
            let mut failed = Vec::new();
            for (m, r) in pending.iter().zip(results) {
                match r {
                    Ok(()) => {}
                    Err(e) if !m.required && e.is_retryable() && round == 0 => {
                        self.mark_dirty();
                        failed.push(m.clone());
                    }
                    Err(e) => return Err(e.with_context("operation", "revoke")),
                }
            }
            if failed.is_empty() {
                break;
            }
            topo = self
                .refresh(true)
                .await
                .map_err(|e| e.with_context("operation", "revoke"))?;
            let now: HashSet<String> = topo.labels().into_iter().collect();
            pending = failed
                .into_iter()
                .filter(|m| now.contains(&m.node.addr.label))
                .collect();
            if pending.is_empty() {
                tracing::warn!(user = name,
                    "revoked on every reachable node; a node that is down is cleaned by repair when it returns");
                break;
            }
        }
        self.remember_revoked(name);
        tracing::debug!(user = name, "deleted ACL user on every node");
        Ok(())
    }

    async fn repair_drift(
        &self,
        leased: &[ExternalRef],
        installation_mark: &str,
    ) -> Result<leasehold_core::DriftReport> {
        let r = self.repair(leased, installation_mark).await?;
        Ok(leasehold_core::DriftReport::new(
            r.copied.len(),
            r.removed.len(),
            r.errors.len(),
        ))
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        let topo = self
            .topology()
            .await
            .map_err(|e| e.with_context("operation", "list_managed"))?;
        let results = join_all(topo.members.iter().map(|m| async move {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("USERS");
            self.exec_on::<Vec<String>>(m, &cmd, "ACL USERS", None)
                .await
        }))
        .await;
        let mut names = BTreeSet::new();
        for (m, r) in topo.members.iter().zip(results) {
            let users = match r {
                Ok(u) => u,
                Err(e) if !m.required && e.is_retryable() => {
                    self.mark_dirty();
                    continue;
                }
                Err(e) => return Err(e.with_context("operation", "list_managed")),
            };
            for user in users {
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
