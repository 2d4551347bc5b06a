//! [`RedisUserTarget`]: an existing Redis / Valkey ACL user as the target of a fleet-wide
//! static role.

use std::fmt;

use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{async_trait, Error, ErrorKind, PasswordPolicy, Result};
use redis::aio::MultiplexedConnection;
use redis::RedisConnectionInfo;
use secrecy::{ExposeSecret, SecretString};

use crate::config::NodeAddr;
use crate::connect::Dialer;
use crate::RedisConfig;

/// An existing ACL user on every listed node, whose password a
/// [`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator) rotates: a Redis user
/// holds any number of passwords, so a rotation adds the new one (`ACL SETUSER name >new`,
/// keeping the current one) and, after the grace, removes the old one (`ACL SETUSER name <old`)
/// — on every node, and only the password rules: the user's keys, channels and commands stay
/// as they are. The test step `AUTH`s as the user with the new password on every node.
///
/// The admin connection needs `ACL SETUSER` and `ACL GETUSER` (`+acl`). Nodes that persist
/// ACLs to a file also get `ACL SAVE` when [`acl_save`](Self::acl_save) is set.
///
/// Connections are dialed as [`RedisAclProvider`](crate::RedisAclProvider)'s are: `rediss://`
/// nodes verified against `ca_cert` (or the system roots), with an optional client
/// certificate, and no TLS crypto provider installed process-wide.
///
/// # Examples
///
/// ```
/// use leasehold_redis::RedisUserTarget;
/// use secrecy::SecretString;
///
/// let target = RedisUserTarget::new("app-writer", ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])?
///     .admin("leasehold-admin", SecretString::from("admin-password"));
/// # Ok::<(), leasehold_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisUserTarget {
    username: String,
    nodes: Vec<NodeAddr>,
    dialer: Dialer,
    admin: Option<(String, SecretString)>,
    acl_save: bool,
}

impl fmt::Debug for RedisUserTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.label.as_str()).collect();
        f.debug_struct("RedisUserTarget")
            .field("username", &self.username)
            .field("nodes", &nodes)
            .field("admin", &self.admin.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl RedisUserTarget {
    /// The user `username` on `nodes` (`redis://host:port` or `rediss://`), with the default
    /// timeouts and TLS against the system roots. The URLs are checked here.
    pub fn new<I, S>(username: impl Into<String>, nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nodes = nodes.into_iter().map(Into::into);
        let first = nodes.next().ok_or_else(|| {
            Error::invalid_config("urls: at least one redis:// or rediss:// URL is needed")
        })?;
        let config = nodes.fold(RedisConfig::new(first), RedisConfig::node);
        Self::from_config(username, &config)
    }

    /// The user `username` on the nodes of `config`, reached with its admin user, TLS files
    /// (`ca_cert`, `client_cert`, `client_key`), timeouts and `acl_save`. The password is set on
    /// the listed nodes only (no discovery; `sentinel://` seeds are refused). `config` is
    /// checked here, TLS files read.
    pub fn from_config(username: impl Into<String>, config: &RedisConfig) -> Result<Self> {
        let username = username.into();
        if username.is_empty()
            || username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid_config(
                "username: must be non-empty, without spaces or control characters",
            ));
        }
        let checked = config.checked()?;
        if let Some(i) = checked
            .nodes
            .iter()
            .position(|n| n.sentinel_master.is_some())
        {
            return Err(Error::invalid_config(format!(
                "urls[{i}]: a static role sets the password on the listed data nodes; list them \
                 instead of a sentinel:// seed"
            )));
        }
        let dialer = Dialer::new(
            config.connect_timeout,
            config.command_timeout,
            checked.tls.as_ref(),
        )?;
        Ok(RedisUserTarget {
            username,
            nodes: checked.nodes,
            dialer,
            admin: config
                .admin_password
                .clone()
                .map(|p| (config.admin_username.clone(), p)),
            acl_save: config.acl_save,
        })
    }

    /// Authenticates the admin connections as `username`.
    #[must_use]
    pub fn admin(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.admin = Some((username.into(), password));
        self
    }

    /// Connects to `node`, authenticated as `auth` when given.
    async fn connect(
        &self,
        node: &NodeAddr,
        auth: Option<(&str, &SecretString)>,
    ) -> Result<MultiplexedConnection> {
        let mut info = RedisConnectionInfo::default();
        if let Some((user, password)) = auth {
            info = info
                .set_username(user)
                .set_password(password.expose_secret());
        }
        self.dialer
            .dial(node, &info, auth.map(|(_, p)| p.expose_secret()))
            .await
    }

    async fn admin_conn(&self, node: &NodeAddr) -> Result<MultiplexedConnection> {
        self.connect(node, self.admin.as_ref().map(|(u, p)| (u.as_str(), p)))
            .await
            .map_err(|e| e.with_context("operation", "connecting as admin"))
    }

    /// `ACL SETUSER username <rules>` on every node, then `ACL SAVE` when asked.
    async fn setuser(&self, rules: &[String]) -> Result<()> {
        for node in &self.nodes {
            let mut conn = self.admin_conn(node).await?;
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER").arg(&self.username);
            for r in rules {
                cmd.arg(r);
            }
            cmd.query_async::<()>(&mut conn)
                .await
                .map_err(|e| node_error(node, "ACL SETUSER", &e))?;
            self.save(node, &mut conn).await?;
        }
        Ok(())
    }

    /// `ACL SAVE` when asked.
    async fn save(&self, node: &NodeAddr, conn: &mut MultiplexedConnection) -> Result<()> {
        if !self.acl_save {
            return Ok(());
        }
        redis::cmd("ACL")
            .arg("SAVE")
            .query_async::<()>(conn)
            .await
            .map_err(|e| node_error(node, "ACL SAVE", &e))
    }
}

leasehold_core::setters! {
    RedisUserTarget {
        /// Runs `ACL SAVE` after each change (for nodes started with an `aclfile`).
        acl_save: bool,
    }
}

/// Only the error's kind and code: Redis error text can echo the command and its password.
fn node_error(node: &NodeAddr, what: &str, e: &redis::RedisError) -> Error {
    let (kind, temporary) = match e.code() {
        Some("NOPERM") | Some("WRONGPASS") | Some("NOAUTH") => (ErrorKind::PermissionDenied, false),
        _ if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            (ErrorKind::PermissionDenied, false)
        }
        _ => (ErrorKind::ProviderUnavailable, true),
    };
    let err = Error::new(
        kind,
        format!(
            "{what} on {} failed ({:?}{})",
            node.label,
            e.kind(),
            e.code().map(|c| format!(", {c}")).unwrap_or_default()
        ),
    )
    .with_context("node", &node.label);
    if temporary {
        err.temporary()
    } else {
        err
    }
}

#[async_trait]
impl StaticRoleTarget for RedisUserTarget {
    fn kind(&self) -> &'static str {
        "redis-static"
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::redis()
    }

    async fn validate(&self) -> Result<()> {
        for node in &self.nodes {
            let mut conn = self.admin_conn(node).await?;
            let user: Option<redis::Value> = redis::cmd("ACL")
                .arg("GETUSER")
                .arg(&self.username)
                .query_async(&mut conn)
                .await
                .map_err(|e| node_error(node, "ACL GETUSER", &e))?;
            if matches!(user, None | Some(redis::Value::Nil)) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "user {:?} does not exist on {}; a static role rotates an existing user",
                        self.username, node.label
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn user(&self) -> Result<StaticUser> {
        Ok(StaticUser::new(&self.username, None))
    }

    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        let mut rules = Vec::new();
        if let Some(old) = old {
            rules.push(format!(">{}", old.expose_secret()));
        }
        rules.push(format!(">{}", new.expose_secret()));
        self.setuser(&rules).await
    }

    async fn drop_password(&self, old: &SecretString, current: &SecretString) -> Result<()> {
        if old.expose_secret() == current.expose_secret() {
            return Ok(());
        }
        let keep = format!(">{}", current.expose_secret());
        let drop = format!("<{}", old.expose_secret());
        for node in &self.nodes {
            let mut conn = self.admin_conn(node).await?;
            let both: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(&self.username)
                .arg(&keep)
                .arg(&drop)
                .query_async(&mut conn)
                .await;
            match both {
                Ok(()) => {}
                // `<` of a password the node does not have is refused: it is gone already.
                Err(e) if e.code() == Some("ERR") => {
                    redis::cmd("ACL")
                        .arg("SETUSER")
                        .arg(&self.username)
                        .arg(&keep)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| node_error(node, "ACL SETUSER", &e))?;
                }
                Err(e) => return Err(node_error(node, "ACL SETUSER", &e)),
            }
            self.save(node, &mut conn).await?;
        }
        Ok(())
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        for node in &self.nodes {
            let mut conn = self
                .connect(node, Some((username, password)))
                .await
                .map_err(|e| match e.kind() {
                    // Not the admin's password, as the dialer's hint would say.
                    ErrorKind::PermissionDenied => Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "AUTH with the new password on {} failed: {username:?} was refused",
                            node.label
                        ),
                    )
                    .with_context("node", &node.label),
                    _ => e.with_context("operation", "AUTH with the new password"),
                })?;
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            match pong {
                Ok(_) => {}
                Err(e) if e.code() == Some("NOPERM") => {}
                Err(e) => return Err(node_error(node, "PING", &e)),
            }
        }
        Ok(())
    }
}
