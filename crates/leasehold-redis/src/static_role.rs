//! [`RedisUserTarget`]: an existing Redis / Valkey ACL user as the target of a fleet-wide
//! static role.

use std::fmt;
use std::time::Duration;

use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{async_trait, Error, ErrorKind, PasswordPolicy, Result};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use secrecy::{ExposeSecret, SecretString};

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
/// # Examples
///
/// ```
/// use leasehold_redis::RedisUserTarget;
/// use secrecy::SecretString;
///
/// let target = RedisUserTarget::new("app-writer", ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
///     .admin("leasehold-admin", SecretString::from("admin-password"));
/// ```
#[derive(Clone)]
pub struct RedisUserTarget {
    username: String,
    nodes: Vec<String>,
    admin: Option<(String, SecretString)>,
    acl_save: bool,
    timeout: Duration,
}

impl fmt::Debug for RedisUserTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUserTarget")
            .field("username", &self.username)
            .field("nodes", &self.nodes)
            .field("admin", &self.admin.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl RedisUserTarget {
    /// The user `username` on `nodes` (`redis://host:port` or `rediss://`).
    pub fn new<I, S>(username: impl Into<String>, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisUserTarget {
            username: username.into(),
            nodes: nodes.into_iter().map(Into::into).collect(),
            admin: None,
            acl_save: false,
            timeout: Duration::from_secs(5),
        }
    }

    /// Authenticates the admin connections as `username`.
    #[must_use]
    pub fn admin(mut self, username: impl Into<String>, password: SecretString) -> Self {
        self.admin = Some((username.into(), password));
        self
    }

    async fn connect(
        &self,
        url: &str,
        auth: Option<(&str, &SecretString)>,
    ) -> std::result::Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let mut info = url.into_connection_info()?;
        if let Some((user, password)) = auth {
            let settings = info
                .redis_settings()
                .clone()
                .set_username(user)
                .set_password(password.expose_secret());
            info = info.set_redis_settings(settings);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        Client::open(info)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn admin_conn(&self, url: &str) -> Result<redis::aio::MultiplexedConnection> {
        self.connect(url, self.admin.as_ref().map(|(u, p)| (u.as_str(), p)))
            .await
            .map_err(|e| node_error(url, "connecting as admin", &e))
    }

    /// `ACL SETUSER username <rules>` on every node, then `ACL SAVE` when asked.
    async fn setuser(&self, rules: &[String]) -> Result<()> {
        for url in &self.nodes {
            let mut conn = self.admin_conn(url).await?;
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER").arg(&self.username);
            for r in rules {
                cmd.arg(r);
            }
            cmd.query_async::<()>(&mut conn)
                .await
                .map_err(|e| node_error(url, "ACL SETUSER", &e))?;
            if self.acl_save {
                redis::cmd("ACL")
                    .arg("SAVE")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| node_error(url, "ACL SAVE", &e))?;
            }
        }
        Ok(())
    }
}

leasehold_core::setters! {
    RedisUserTarget {
        /// Runs `ACL SAVE` after each change (for nodes started with an `aclfile`).
        acl_save: bool,
    }
}

/// Only the error's kind and code: Redis error text can echo the command and its password.
fn node_error(url: &str, what: &str, e: &redis::RedisError) -> Error {
    let (kind, temporary) = match e.code() {
        Some("NOPERM") | Some("WRONGPASS") | Some("NOAUTH") => (ErrorKind::PermissionDenied, false),
        _ if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            (ErrorKind::PermissionDenied, false)
        }
        _ => (ErrorKind::ProviderUnavailable, true),
    };
    let host = url.rsplit('@').next().unwrap_or(url);
    let err = Error::new(
        kind,
        format!(
            "{what} on {host} failed ({:?}{})",
            e.kind(),
            e.code().map(|c| format!(", {c}")).unwrap_or_default()
        ),
    );
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
        if self.nodes.is_empty() {
            return Err(Error::invalid_config(
                "nodes: at least one redis:// or rediss:// URL is needed",
            ));
        }
        for url in &self.nodes {
            let mut conn = self.admin_conn(url).await?;
            let user: Option<redis::Value> = redis::cmd("ACL")
                .arg("GETUSER")
                .arg(&self.username)
                .query_async(&mut conn)
                .await
                .map_err(|e| node_error(url, "ACL GETUSER", &e))?;
            if matches!(user, None | Some(redis::Value::Nil)) {
                let host = url.rsplit('@').next().unwrap_or(url);
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "user {:?} does not exist on {host}; a static role rotates an existing user",
                        self.username
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
        for url in &self.nodes {
            let mut conn = self.admin_conn(url).await?;
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
                        .map_err(|e| node_error(url, "ACL SETUSER", &e))?;
                }
                Err(e) => return Err(node_error(url, "ACL SETUSER", &e)),
            }
            if self.acl_save {
                redis::cmd("ACL")
                    .arg("SAVE")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| node_error(url, "ACL SAVE", &e))?;
            }
        }
        Ok(())
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        for url in &self.nodes {
            let mut conn = self
                .connect(url, Some((username, password)))
                .await
                .map_err(|e| node_error(url, "AUTH with the new password", &e))?;
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            match pong {
                Ok(_) => {}
                Err(e) if e.code() == Some("NOPERM") => {}
                Err(e) => return Err(node_error(url, "PING", &e)),
            }
        }
        Ok(())
    }
}
