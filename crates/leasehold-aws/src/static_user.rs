//! [`StaticUserTarget`]: an existing ElastiCache or MemoryDB user as the target of a fleet-wide
//! static role. The rotation steps are written once; each service says how its user API is
//! called through a [`UserService`].

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use leasehold_core::backoff::Backoff;
use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{Error, ErrorKind, PasswordPolicy, Result};
use secrecy::{ExposeSecret, SecretString};

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
        let (rule, key) = (S::SERVICE.name_rule(), S::SERVICE.user_key());
        let name = rule.normalize(user);
        // `default` is reserved for created users, but its password may be rotated.
        if name != "default" {
            rule.check(&name)
                .map_err(|e| Error::invalid_config(format!("{key}: {}", e.message())))?;
        }
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
