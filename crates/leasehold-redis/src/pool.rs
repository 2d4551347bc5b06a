//! A [deadpool] connection pool whose connections always authenticate as a
//! [`CredentialWatch`]'s current credential (feature `deadpool`).
//!
//! - Each **new** connection does `AUTH` as the user of the watch's current lease.
//! - When the watch rotates to a new credential, pooled connections of the replaced user are
//!   never handed out again: `recycle` fails for them, so deadpool drops them and opens new
//!   ones as the new user. Connections checked out at the moment of the rotation finish their
//!   work within the watch's grace, then are dropped when they come back.
//! - [`PoolBuilder::max_age`] drops connections older than a limit, for credentials that a
//!   server honours for a limited connection time only (ElastiCache IAM auth tokens: 12 hours).
//! - `recycle` also pings (`UNWATCH`, `PING`) so a connection the server closed (its user was
//!   deleted, the server restarted) is replaced before a caller gets it.
//!
//! ```no_run
//! # async fn f(watch: leasehold_core::CredentialWatch) -> Result<(), Box<dyn std::error::Error>> {
//! let pool = leasehold_redis::pool::builder(&watch, "redis://10.0.0.5:6379").max_size(8).build()?;
//! let mut conn = pool.get().await?;
//! let n: i64 = redis::cmd("INCR").arg("orders:count").query_async(&mut conn).await?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! The pool holds a receiver of the watch ([`CredentialWatch::subscribe`]), which keeps the
//! watch running while the pool lives; [`CredentialWatch::close`] still revokes everything
//! (connections then fail to authenticate).
//!
//! [deadpool]: https://docs.rs/deadpool

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use leasehold_core::secrecy::ExposeSecret;
use leasehold_core::{CredentialWatch, Error, ErrorKind, IssuedLease, LeaseId, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{ConnectionAddr, RedisConnectionInfo};
use tokio::sync::watch;

use crate::client;
use crate::config::NodeAddr;
use crate::connect::Dialer;
use crate::errors;

pub use deadpool::managed::{PoolError, Status, Timeouts};

/// The pool: `pool.get().await?` gives a [`Connection`]; see the [module docs](self).
pub type Pool = managed::Pool<Manager, Connection>;

/// Default time to connect (TCP, TLS, `AUTH`) to the node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time for one command, including the `PING` of a recycle.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`PoolBuilder`] for connections to `node` (`redis://host:port[/db]`, `rediss://…`,
/// `valkey://…`, `valkeys://…`; no credentials in the URL) as `watch`'s current credential.
pub fn builder(watch: &CredentialWatch, node: &str) -> PoolBuilder {
    PoolBuilder::from_receiver(watch.subscribe(), node)
}

/// Settings of a [`Pool`]; [`build`](Self::build) checks them without a network call.
pub struct PoolBuilder {
    rx: watch::Receiver<Arc<IssuedLease>>,
    node: String,
    max_size: Option<usize>,
    max_age: Option<Duration>,
    wait_timeout: Option<Duration>,
    connect_timeout: Duration,
    command_timeout: Duration,
    #[cfg(feature = "tls")]
    ca_cert: Option<std::path::PathBuf>,
    #[cfg(feature = "tls")]
    client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("lease_id", &self.rx.borrow().lease_id)
            .field("max_size", &self.max_size)
            .field("max_age", &self.max_age)
            .field("wait_timeout", &self.wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl PoolBuilder {
    /// A builder from a receiver of [`CredentialWatch::subscribe`] (what [`builder`] uses).
    pub fn from_receiver(rx: watch::Receiver<Arc<IssuedLease>>, node: &str) -> PoolBuilder {
        PoolBuilder {
            rx,
            node: node.to_string(),
            max_size: None,
            max_age: None,
            wait_timeout: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            #[cfg(feature = "tls")]
            ca_cert: None,
            #[cfg(feature = "tls")]
            client_cert: None,
        }
    }

    /// At most this many connections, in use or idle (default: deadpool's, 4 × the CPUs).
    #[must_use]
    pub fn max_size(mut self, n: usize) -> Self {
        self.max_size = Some(n);
        self
    }

    /// Drops connections once they are this old (checked when one is handed out), so none
    /// outlives what the server allows a credential's connection (ElastiCache closes IAM
    /// authenticated connections after 12 hours: set a little less). Default: no limit.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// How long `get` waits for a free connection when all `max_size` are in use
    /// (default: as long as it takes).
    #[must_use]
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = Some(d);
        self
    }

    /// PEM file of the CA that signed the node's certificate, for a `rediss://` node (default:
    /// the system trust store).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// PEM files of a client certificate and its key, for a `rediss://` node that asks for
    /// one (`tls-auth-clients yes`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Checks the settings and builds the pool; connections are opened on demand.
    ///
    /// `ErrorKind::InvalidConfig` names what is wrong: a node URL that does not parse, carries
    /// credentials or a fragment, or is a Unix socket (the pool connects over TCP); a
    /// `rediss://` node without the `tls` feature; a zero size, age or timeout; unreadable TLS
    /// files. A watch whose credential is not a username and password is
    /// `ErrorKind::InvalidInput`.
    pub fn build(self) -> Result<Pool> {
        if self.max_size == Some(0) {
            return Err(Error::invalid_config("pool max_size: must be at least 1"));
        }
        for (name, d) in [
            ("max_age", self.max_age),
            ("wait_timeout", self.wait_timeout),
            ("connect_timeout", Some(self.connect_timeout)),
            ("command_timeout", Some(self.command_timeout)),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(Error::invalid_config(format!(
                    "pool {name}: must be positive"
                )));
            }
        }
        let info = client::parse_node(&self.node)?;
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => NodeAddr::data(host, *port, false),
            ConnectionAddr::TcpTls { host, port, .. } => NodeAddr::data(host, *port, true),
            _ => {
                return Err(Error::invalid_config(
                    "node: the pool connects over TCP; use a redis:// or rediss:// URL",
                ))
            }
        };
        let base = info.redis_settings().clone();
        {
            let current = self.rx.borrow();
            client::user_and_password(&current.credentials)?;
        }
        let dialer = self.dialer(&addr)?;
        let manager = Manager {
            rx: self.rx,
            addr,
            base,
            dialer,
            max_age: self.max_age,
            pings: AtomicUsize::new(0),
        };
        let mut pool = managed::Pool::builder(manager)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(self.wait_timeout);
        if let Some(n) = self.max_size {
            pool = pool.max_size(n);
        }
        pool.build()
            .map_err(|e| Error::invalid_config(format!("pool: {e}")))
    }

    #[cfg(feature = "tls")]
    fn dialer(&self, addr: &NodeAddr) -> Result<Dialer> {
        if !addr.tls && (self.ca_cert.is_some() || self.client_cert.is_some()) {
            return Err(Error::invalid_config(
                "pool: TLS certificate files are set but the node is not rediss://",
            ));
        }
        let read = |field: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                Error::invalid_config(format!("pool {field}: cannot read {}: {e}", path.display()))
            })
        };
        let files = if addr.tls {
            Some(crate::config::TlsFiles {
                ca_cert: self
                    .ca_cert
                    .as_deref()
                    .map(|p| read("ca_cert", p))
                    .transpose()?,
                client: match &self.client_cert {
                    Some((c, k)) => Some((read("client_cert", c)?, read("client_key", k)?)),
                    None => None,
                },
            })
        } else {
            None
        };
        Dialer::new(self.connect_timeout, self.command_timeout, files.as_ref())
    }

    #[cfg(not(feature = "tls"))]
    fn dialer(&self, addr: &NodeAddr) -> Result<Dialer> {
        if addr.tls {
            return Err(Error::invalid_config(format!(
                "node: {} needs TLS, which this build lacks: enable the leasehold-redis feature \
                 \"tls\" (leasehold feature \"redis-tls\")",
                addr.label
            )));
        }
        Dialer::new(self.connect_timeout, self.command_timeout, None)
    }
}

leasehold_core::setters! {
    PoolBuilder {
        /// Time to connect, TLS handshake and `AUTH` included (default 2 s).
        connect_timeout: Duration,
        /// Time for one command's answer (default 5 s).
        command_timeout: Duration,
    }
}

/// The deadpool [`Manager`](managed::Manager) of a [`Pool`]: opens connections as the watch's
/// current credential and retires those of replaced credentials. Built by [`PoolBuilder`].
pub struct Manager {
    rx: watch::Receiver<Arc<IssuedLease>>,
    addr: NodeAddr,
    /// Database, protocol, client name: the node URL's settings, without credentials.
    base: RedisConnectionInfo,
    dialer: Dialer,
    max_age: Option<Duration>,
    pings: AtomicUsize,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("node", &self.addr.label)
            .field("db", &self.base.db())
            .field("lease_id", &self.rx.borrow().lease_id)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// The node's `host:port`.
    pub fn node(&self) -> &str {
        &self.addr.label
    }

    /// The lease new connections authenticate as.
    pub fn current_lease(&self) -> LeaseId {
        self.rx.borrow().lease_id.clone()
    }

    /// A refused `AUTH` says which leased user was refused, not the admin hint of the provider.
    fn connect_error(&self, e: Error, lease: &IssuedLease, username: &str) -> Error {
        let node = self.addr.label.as_str();
        let (temporary, persistent) = (e.is_temporary(), e.is_persistent());
        let e = if e.kind() == ErrorKind::PermissionDenied {
            Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "node {node}: the leased user {username} (lease {}) could not connect: {}",
                    lease.lease_id,
                    e.message()
                        .replace(" (the admin username/password was refused)", "")
                        .replace(
                            " (the admin user lacks a permission; see the README for the ACL it needs)",
                            " (the user's ACL rules do not allow the connection handshake)",
                        )
                ),
            )
            .with_context("node", node)
            .with_context("operation", "connect")
        } else {
            e
        };
        let e = e.with_context("lease_id", &lease.lease_id);
        match (temporary, persistent) {
            (true, _) => e.temporary(),
            (_, true) => e.temporary().persist(),
            _ => e,
        }
    }
}

impl managed::Manager for Manager {
    type Type = LeasedConnection;
    type Error = Error;

    async fn create(&self) -> Result<LeasedConnection> {
        let lease = self.rx.borrow().clone();
        let (username, password) = client::user_and_password(&lease.credentials)?;
        let info = client::redis_connection_info(self.base.clone(), &lease.credentials)?;
        let conn = self
            .dialer
            .dial(&self.addr, &info, Some(password.expose_secret()))
            .await
            .map_err(|e| self.connect_error(e, &lease, username))?;
        tracing::debug!(node = %self.addr.label, lease_id = %lease.lease_id, username, "opened a pooled Redis connection");
        Ok(LeasedConnection {
            conn,
            lease_id: lease.lease_id.clone(),
            username: username.to_string(),
        })
    }

    async fn recycle(
        &self,
        conn: &mut LeasedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<Error> {
        let current = self.current_lease();
        if conn.lease_id != current {
            tracing::debug!(node = %self.addr.label, lease_id = %conn.lease_id, current = %current, "retiring a pooled connection of a replaced credential");
            return Err(RecycleError::message(format!(
                "authenticated as {} of lease {}, which lease {current} replaced",
                conn.username, conn.lease_id
            )));
        }
        if let Some(max) = self.max_age {
            if metrics.age() >= max {
                return Err(RecycleError::message(format!(
                    "the connection is older than max_age ({} s)",
                    max.as_secs_f64()
                )));
            }
        }
        // Reset a WATCH a caller left behind, and find out whether the server still talks to
        // us: a closed connection (user deleted, server restarted) is replaced here.
        let n = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let answer = redis::pipe()
            .cmd("UNWATCH")
            .ignore()
            .cmd("PING")
            .arg(&n)
            .query_async::<(String,)>(&mut conn.conn)
            .await;
        match answer {
            Ok((pong,)) if pong == n => Ok(()),
            Ok(_) => Err(RecycleError::message("PING got a wrong answer")),
            // The server answered (rules without +ping or +unwatch): the connection is alive.
            Err(e) if errors::is_server_reply(&e) => Ok(()),
            Err(e) => Err(RecycleError::Backend(errors::map(
                &e,
                &self.addr.label,
                "recycle",
                None,
            ))),
        }
    }
}

/// A pooled connection and the leased user it authenticated as.
pub struct LeasedConnection {
    conn: MultiplexedConnection,
    lease_id: LeaseId,
    username: String,
}

impl fmt::Debug for LeasedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedConnection")
            .field("lease_id", &self.lease_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl LeasedConnection {
    /// The lease whose user this connection authenticated as.
    pub fn lease_id(&self) -> &LeaseId {
        &self.lease_id
    }

    /// The user this connection authenticated as.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl ConnectionLike for LeasedConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// A connection checked out of a [`Pool`]; it goes back when dropped. Use it wherever redis-rs
/// takes a [`ConnectionLike`] (`query_async(&mut conn)`), or as the
/// [`MultiplexedConnection`] it dereferences to.
pub struct Connection {
    obj: Object<Manager>,
}

impl Connection {
    /// The lease whose user this connection authenticated as.
    pub fn lease_id(&self) -> &LeaseId {
        &self.obj.lease_id
    }

    /// The user this connection authenticated as.
    pub fn username(&self) -> &str {
        &self.obj.username
    }

    /// Takes the connection out of the pool for good (the pool opens another when needed).
    pub fn take(this: Self) -> MultiplexedConnection {
        Object::take(this.obj).conn
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("lease_id", &self.obj.lease_id)
            .field("username", &self.obj.username)
            .finish_non_exhaustive()
    }
}

impl From<Object<Manager>> for Connection {
    fn from(obj: Object<Manager>) -> Self {
        Connection { obj }
    }
}

impl Deref for Connection {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        &self.obj.conn
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.obj.conn
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.obj.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.obj.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.obj.conn.get_db()
    }
}
