//! [`StaticUserTarget`]: an existing ElastiCache or MemoryDB user as the target of a fleet-wide
//! static role. The rotation steps are written once; each service says how its user API is
//! called through a [`UserService`].

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use leasehold_core::backoff::Backoff;
use leasehold_core::settings::from_map;
use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{DurationText, Error, ErrorKind, PasswordPolicy, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::user_config::check_readiness;
use crate::{
    check_password_policy, check_rotatable, wait_until, AuthProbe, CacheService, UserAuth,
};

/// An existing user as its service describes it, as far as a static role cares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DescribedUser {
    /// The name the user logs in with (`None` if the service did not say).
    pub name: Option<String>,
    /// The user's ARN.
    pub arn: Option<String>,
    /// The user's `status` (`active`, `creating`, `modifying`, `deleting`).
    pub status: Option<String>,
    /// How the user logs in.
    pub auth: UserAuth,
}

impl DescribedUser {
    /// A user as `DescribeUsers` gives it: its name, ARN, `status` and authentication type
    /// (`password`, `iam`, `no-password`, as both services spell them).
    pub fn new(
        name: Option<&str>,
        arn: Option<&str>,
        status: Option<&str>,
        auth_type: Option<&str>,
    ) -> Self {
        DescribedUser {
            name: name.map(str::to_string),
            arn: arn.map(str::to_string),
            status: status.map(str::to_string),
            auth: match auth_type {
                Some("password") => UserAuth::Password,
                Some("iam") => UserAuth::Iam,
                Some("no-password" | "no-password-required") => UserAuth::NoPassword,
                _ => UserAuth::Unknown,
            },
        }
    }

    /// Whether the user is `active`: no change in flight.
    pub fn is_active(&self) -> bool {
        self.status.as_deref() == Some("active")
    }
}

/// The two user calls of one service that a [`StaticUserTarget`] makes: ElastiCache's
/// `DescribeUsers` and `ModifyUser`, MemoryDB's `DescribeUsers` and `UpdateUser`. Implemented
/// by a marker type in each service's crate (`ElastiCacheUsers`, `MemoryDbUsers`).
#[async_trait]
pub trait UserService: Send + Sync + 'static {
    /// The service's SDK client.
    type Client: Clone + Send + Sync + 'static;

    /// The service: its names, its user key and naming rule, its kinds.
    const SERVICE: CacheService;

    /// Builds the client from an SDK configuration.
    fn client(sdk: &SdkConfig) -> Self::Client;

    /// The default password policy for the service's users: 16 to 128 characters of the set
    /// both ElastiCache and MemoryDB accept ([`PasswordPolicy::elasticache`], which
    /// [`PasswordPolicy::memorydb`] equals).
    fn password_policy() -> PasswordPolicy {
        PasswordPolicy::elasticache()
    }

    /// Describes `user`; `Ok(None)` when the service has no such user. Errors carry the
    /// operation and the user.
    async fn describe(client: &Self::Client, user: &str) -> Result<Option<DescribedUser>>;

    /// Sets exactly `passwords` (one or two) as the user's passwords, with authentication type
    /// `password`, leaving the access string alone. A user with a change in flight is a
    /// temporary error (as [`map_sdk_error`](crate::map_sdk_error) maps `Invalid*State`).
    async fn set_passwords(
        client: &Self::Client,
        user: &str,
        passwords: &[&SecretString],
    ) -> Result<()>;
}

/// Settings of a static role on an existing ElastiCache or MemoryDB user: which user, and how
/// a new password is tested. [`StaticUserTarget::from_config`] builds the target from them; the
/// CLI reads them from a `type = "aws-elasticache"` or `"aws-memorydb"` static role with
/// [`from_table`](Self::from_table).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_aws::{CacheService, StaticUserConfig};
///
/// let config = StaticUserConfig::new(CacheService::MemoryDb, "app-writer")
///     .readiness_endpoint("rediss://clustercfg.orders.xxxxxx.memorydb.eu-west-1.amazonaws.com:6379")
///     .ready_timeout(Duration::from_secs(120));
/// config.validate()?; // offline: the user's name, the endpoint, the bound
///
/// let table = serde_json::json!({"user_id": "app-writer", "ready_timeout": "2m"});
/// let read = StaticUserConfig::from_table(CacheService::ElastiCache, table.as_object().unwrap().clone())?;
/// assert_eq!(read.ready_timeout, Duration::from_secs(120));
///
/// let wrong = serde_json::json!({"user_name": "app-writer"});
/// let e = StaticUserConfig::from_table(CacheService::ElastiCache, wrong.as_object().unwrap().clone());
/// assert!(e.unwrap_err().message().starts_with("user_name: "));
/// # Ok::<(), leasehold_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaticUserConfig {
    /// The service.
    pub service: CacheService,
    /// The user: its id (ElastiCache, key `user_id`) or name (MemoryDB, key `user_name`).
    pub user: String,
    /// `rediss://host:port` where new passwords are tested with `AUTH`; without it, the user
    /// being `active` is the test.
    pub readiness_endpoint: Option<String>,
    /// The CA (PEM file) of the readiness endpoint's certificate (default: the system roots).
    pub readiness_ca_pem: Option<PathBuf>,
    /// How long a change may take to settle (default 5 minutes).
    pub ready_timeout: Duration,
}

/// The keys of a static role's user besides the user key, as written in a config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticUserKeys {
    user_id: Option<String>,
    user_name: Option<String>,
    readiness_endpoint: Option<String>,
    readiness_ca_pem: Option<PathBuf>,
    ready_timeout: Option<DurationText>,
}

impl StaticUserConfig {
    /// How long a change may take to settle unless set.
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

    /// The user `user` of `service`, tested by being `active`, 5 minutes to settle.
    pub fn new(service: CacheService, user: impl Into<String>) -> Self {
        StaticUserConfig {
            service,
            user: user.into(),
            readiness_endpoint: None,
            readiness_ca_pem: None,
            ready_timeout: Self::DEFAULT_READY_TIMEOUT,
        }
    }

    /// Reads the keys of `service`'s static role (its user key, `readiness_endpoint`,
    /// `readiness_ca_pem`, `ready_timeout`) from a config table and
    /// [validates](Self::validate) them. Unknown keys, and the other service's user key, are
    /// refused by name.
    pub fn from_table(
        service: CacheService,
        table: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let keys: StaticUserKeys = from_map(table).map_err(Error::invalid_config)?;
        let key = service.user_key();
        let (user, other_user, other) = match service {
            CacheService::ElastiCache => (keys.user_id, keys.user_name, "user_name"),
            CacheService::MemoryDb => (keys.user_name, keys.user_id, "user_id"),
        };
        if other_user.is_some() {
            return Err(Error::invalid_config(format!(
                "{other}: not a key of {service} users; {service} names its users by {key}"
            )));
        }
        let user = user.ok_or_else(|| Error::invalid_config(format!("{key}: required")))?;
        let mut config = StaticUserConfig::new(service, user);
        config.readiness_endpoint = keys.readiness_endpoint;
        config.readiness_ca_pem = keys.readiness_ca_pem;
        if let Some(d) = keys.ready_timeout {
            config.ready_timeout = d.parse_pause("ready_timeout", false)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings without a network call: the user's name follows the service's rule
    /// (`default` is accepted: its password may be rotated), the endpoint is a
    /// `redis(s)://host:port` URL, its CA comes with it, and `ready_timeout` is positive.
    pub fn validate(&self) -> Result<()> {
        user_name(self.service, &self.user)?;
        if self.ready_timeout.is_zero() {
            return Err(Error::invalid_config("ready_timeout: must be positive"));
        }
        check_readiness(
            self.readiness_endpoint.as_deref(),
            self.readiness_ca_pem.as_deref(),
        )
    }
}

leasehold_core::setters! {
    into Some StaticUserConfig {
        /// Tests new passwords with `AUTH` on this endpoint (`rediss://host:port`).
        readiness_endpoint: String,
        /// Trusts this CA (PEM file) for the readiness endpoint.
        readiness_ca_pem: PathBuf,
    }
}

leasehold_core::setters! {
    StaticUserConfig {
        /// Sets how long a change may take to settle.
        ready_timeout: Duration,
    }
}

/// `user` as `service` stores it (lower case), checked against the service's naming rule;
/// `default` is accepted besides. Errors name the service's user key.
fn user_name(service: CacheService, user: &str) -> Result<String> {
    let (rule, key) = (service.name_rule(), service.user_key());
    let name = rule.normalize(user);
    // `default` is reserved for created users, but its password may be rotated.
    if name != "default" {
        rule.check(&name)
            .map_err(|e| Error::invalid_config(format!("{key}: {}", e.message())))?;
    }
    Ok(name)
}

/// An existing user of service `S` whose password a
/// [`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator) rotates: the service's
/// password call with two passwords (current and new), then, after the grace, with the new one
/// alone; the access string is never touched. A user with another change in flight is waited
/// out, and every change waits until the user is `active` again. The test step `AUTH`s on a
/// readiness endpoint when one is configured; without one, the user being `active` is the test.
///
/// Each service names its own: `ElastiCacheUserTarget` and `MemoryDbUserTarget`.
pub struct StaticUserTarget<S: UserService> {
    client: S::Client,
    user: String,
    ready_timeout: Duration,
    poll: Duration,
    password_policy: PasswordPolicy,
    probe: Option<AuthProbe>,
    service: PhantomData<fn() -> S>,
}

impl<S: UserService> Clone for StaticUserTarget<S> {
    fn clone(&self) -> Self {
        StaticUserTarget {
            client: self.client.clone(),
            user: self.user.clone(),
            ready_timeout: self.ready_timeout,
            poll: self.poll,
            password_policy: self.password_policy.clone(),
            probe: self.probe.clone(),
            service: PhantomData,
        }
    }
}

impl<S: UserService> fmt::Debug for StaticUserTarget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(S::SERVICE.static_role_type())
            .field(S::SERVICE.user_key(), &self.user)
            .field("ready_timeout", &self.ready_timeout)
            .field("readiness", &self.probe)
            .finish_non_exhaustive()
    }
}

impl<S: UserService> StaticUserTarget<S> {
    /// The user named `user` (`user_id` for ElastiCache, `user_name` for MemoryDB).
    pub fn new(sdk: &SdkConfig, user: &str) -> Result<Self> {
        Self::from_client(S::client(sdk), user)
    }

    /// Uses a ready client.
    pub fn from_client(client: S::Client, user: &str) -> Result<Self> {
        let name = user_name(S::SERVICE, user)?;
        Ok(StaticUserTarget {
            client,
            user: name,
            ready_timeout: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            password_policy: S::password_policy(),
            probe: None,
            service: PhantomData,
        })
    }

    /// The target `config` describes, [validated](StaticUserConfig::validate); `config` must be
    /// for this target's service.
    pub fn from_config(sdk: &SdkConfig, config: &StaticUserConfig) -> Result<Self> {
        if config.service != S::SERVICE {
            return Err(Error::invalid_config(format!(
                "service: the settings are for a {} user, the target is {}'s",
                config.service,
                S::SERVICE
            )));
        }
        config.validate()?;
        let target = Self::new(sdk, &config.user)?.ready_timeout(config.ready_timeout);
        match &config.readiness_endpoint {
            Some(url) => target.readiness_endpoint(url, config.readiness_ca_pem.as_deref()),
            None => Ok(target),
        }
    }

    /// Tests new passwords with `AUTH` on this endpoint (`rediss://`, or `redis://` for test
    /// setups), trusting `ca_pem` when given (else the system roots).
    pub fn readiness_endpoint(mut self, url: &str, ca_pem: Option<&Path>) -> Result<Self> {
        self.probe = Some(AuthProbe::new(url, ca_pem)?);
        Ok(self)
    }

    /// Sets how long a change may take to settle (default 5 min).
    #[must_use]
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// Sets the password policy (16 to 128 characters).
    pub fn password_policy(mut self, p: PasswordPolicy) -> Result<Self> {
        self.password_policy = check_password_policy(S::SERVICE.name(), p)?;
        Ok(self)
    }

    async fn describe(&self) -> Result<DescribedUser> {
        S::describe(&self.client, &self.user).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "{}: {} user {:?} not found",
                    S::SERVICE.user_key(),
                    S::SERVICE,
                    self.user
                ),
            )
        })
    }

    /// Sets exactly `passwords`, riding out a user with a change in flight, then waits until
    /// the user is `active`.
    async fn change_passwords(&self, passwords: &[&SecretString]) -> Result<()> {
        let budget = self.ready_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let mut delays = Backoff::new(self.poll, Duration::from_secs(5).max(self.poll)).iter();
        loop {
            match S::set_passwords(&self.client, &self.user, passwords).await {
                Ok(()) => break,
                Err(err) if !err.is_temporary() => return Err(err),
                Err(err) => {
                    let delay = delays.next_delay();
                    if tokio::time::Instant::now() + delay > deadline {
                        // Retried until the deadline: no outer loop should re-run it at once.
                        return Err(err.persist());
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let active = wait_until(remaining, self.poll, Duration::from_secs(2), || async {
            Ok(self.describe().await?.is_active())
        })
        .await?;
        if active {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "{} user {:?} did not become active within {budget:?} after {}",
                S::SERVICE,
                self.user,
                S::SERVICE.set_passwords_operation()
            ),
        )
        .temporary())
    }
}

#[async_trait]
impl<S: UserService> StaticRoleTarget for StaticUserTarget<S> {
    fn kind(&self) -> &'static str {
        S::SERVICE.static_role_kind()
    }

    fn password_policy(&self) -> PasswordPolicy {
        self.password_policy.clone()
    }

    async fn validate(&self) -> Result<()> {
        let user = self.describe().await?;
        check_rotatable(S::SERVICE.user_key(), &self.user, user.auth)
    }

    async fn user(&self) -> Result<StaticUser> {
        let u = self.describe().await?;
        Ok(StaticUser::new(
            u.name.as_deref().unwrap_or(&self.user),
            u.arn,
        ))
    }

    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        match old {
            Some(old) if old.expose_secret() != new.expose_secret() => {
                self.change_passwords(&[old, new]).await
            }
            _ => self.change_passwords(&[new]).await,
        }
    }

    async fn drop_password(&self, _old: &SecretString, current: &SecretString) -> Result<()> {
        self.change_passwords(&[current]).await
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        if !self.describe().await?.is_active() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{} user {:?} is not active yet", S::SERVICE, self.user),
            )
            .temporary());
        }
        let Some(probe) = &self.probe else {
            return Ok(());
        };
        if probe.authenticates(username, password).await? {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("the new password of {username:?} is refused by the readiness endpoint"),
            )
            .temporary())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;

    fn refused(config: &StaticUserConfig, starts: &str) {
        let e = config.validate().expect_err(starts);
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(e.message().starts_with(starts), "{e}");
    }

    #[test]
    fn static_user_config_is_checked_offline() {
        for service in [CacheService::ElastiCache, CacheService::MemoryDb] {
            let ok = StaticUserConfig::new(service, "App-Writer");
            ok.validate().unwrap();
            StaticUserConfig::new(service, "default")
                .validate()
                .unwrap();
            let key = service.user_key();
            refused(&StaticUserConfig::new(service, "bad--name"), key);
            refused(&StaticUserConfig::new(service, ""), key);
            refused(&ok.clone().ready_timeout(Duration::ZERO), "ready_timeout");
            refused(
                &ok.clone().readiness_endpoint("https://cache:6379"),
                "readiness_endpoint",
            );
            refused(
                &ok.clone().readiness_endpoint("rediss://u:pw@cache:6379"),
                "readiness_endpoint",
            );
            refused(
                &ok.clone().readiness_ca_pem("/etc/ssl/ca.pem"),
                "readiness_ca_pem",
            );
            ok.clone()
                .readiness_endpoint("rediss://cache:6379")
                .readiness_ca_pem("/etc/ssl/ca.pem")
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn static_user_config_reads_its_service_keys_only() {
        let table = |v: serde_json::Value| v.as_object().unwrap().clone();
        let read = StaticUserConfig::from_table(
            CacheService::MemoryDb,
            table(serde_json::json!({
                "user_name": "app-writer",
                "readiness_endpoint": "rediss://cache:6379",
                "readiness_ca_pem": "/etc/ssl/ca.pem",
                "ready_timeout": "90s",
            })),
        )
        .unwrap();
        let expected = StaticUserConfig::new(CacheService::MemoryDb, "app-writer")
            .readiness_endpoint("rediss://cache:6379")
            .readiness_ca_pem("/etc/ssl/ca.pem")
            .ready_timeout(Duration::from_secs(90));
        assert_eq!(read, expected);
        for (service, t, starts) in [
            (
                CacheService::MemoryDb,
                serde_json::json!({"user_id": "a"}),
                "user_id: not a key",
            ),
            (
                CacheService::ElastiCache,
                serde_json::json!({"user_name": "a"}),
                "user_name: not a key",
            ),
            (
                CacheService::ElastiCache,
                serde_json::json!({"user": "a"}),
                "unknown field `user`",
            ),
            (
                CacheService::ElastiCache,
                serde_json::json!({}),
                "user_id: required",
            ),
            (
                CacheService::ElastiCache,
                serde_json::json!({"user_id": "a", "ready_timeout": "soon"}),
                "ready_timeout",
            ),
        ] {
            let e = StaticUserConfig::from_table(service, table(t)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
            assert!(e.message().starts_with(starts), "{e}");
        }
    }
}
