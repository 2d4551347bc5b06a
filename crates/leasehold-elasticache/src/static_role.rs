//! [`ElastiCacheUserTarget`]: an existing ElastiCache user as the target of a fleet-wide
//! static role.

use std::fmt;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_elasticache::types::AuthenticationType;
use aws_sdk_elasticache::Client;
use leasehold_aws::{error_code, map_sdk_error, wait_until};
use leasehold_core::backoff::Backoff;
use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{Error, ErrorKind, NameRule, PasswordPolicy, Result};
use secrecy::{ExposeSecret, SecretString};

/// An existing ElastiCache user as the target of a fleet-wide static role
/// ([`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator)): `ModifyUser` with two passwords
/// (`AuthenticationMode` `password`, never touching the access string), then one; a test by
/// `AUTH` on a readiness endpoint when configured, otherwise by the user being `active`.
///
/// IAM: `elasticache:DescribeUsers` and `elasticache:ModifyUser` on the user.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::ElastiCacheUserTarget;
/// let sdk = AwsConfig::new().region("eu-west-1").load().await?;
/// let target = ElastiCacheUserTarget::new(&sdk, "app-writer")?
///     .readiness_endpoint("rediss://my-cache.xxxxxx.use1.cache.amazonaws.com:6379")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ElastiCacheUserTarget {
    client: Client,
    user_id: String,
    ready_timeout: Duration,
    poll: Duration,
    password_policy: PasswordPolicy,
    checker: Option<crate::auth_check::AuthChecker>,
}

impl fmt::Debug for ElastiCacheUserTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElastiCacheUserTarget")
            .field("user_id", &self.user_id)
            .field("ready_timeout", &self.ready_timeout)
            .field("readiness", &self.checker)
            .finish_non_exhaustive()
    }
}

impl ElastiCacheUserTarget {
    /// The user `user_id`.
    pub fn new(sdk: &SdkConfig, user_id: &str) -> Result<Self> {
        Self::from_client(Client::new(sdk), user_id)
    }

    /// Uses a ready client.
    pub fn from_client(client: Client, user_id: &str) -> Result<Self> {
        let id = NameRule::ElastiCacheUserId.normalize(user_id);
        if id != "default" {
            NameRule::ElastiCacheUserId
                .check(&id)
                .map_err(|e| Error::invalid_config(format!("user_id: {}", e.message())))?;
        }
        Ok(ElastiCacheUserTarget {
            client,
            user_id: id,
            ready_timeout: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            password_policy: PasswordPolicy::elasticache(),
            checker: None,
        })
    }

    /// Tests new passwords with `AUTH` on this endpoint (`redis://` or `rediss://`).
    pub fn readiness_endpoint(mut self, url: &str) -> Result<Self> {
        self.checker = Some(crate::auth_check::AuthChecker::new(url, None)?);
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
        self.password_policy = leasehold_aws::check_password_policy("ElastiCache", p)?;
        Ok(self)
    }

    async fn describe(&self) -> Result<aws_sdk_elasticache::types::User> {
        let not_found = || {
            Error::new(
                ErrorKind::NotFound,
                format!("user_id: ElastiCache user {:?} not found", self.user_id),
            )
        };
        match self
            .client
            .describe_users()
            .user_id(&self.user_id)
            .send()
            .await
        {
            Ok(out) => out
                .users()
                .iter()
                .find(|u| {
                    u.user_id()
                        .is_some_and(|id| id.eq_ignore_ascii_case(&self.user_id))
                })
                .cloned()
                .ok_or_else(not_found),
            Err(e) if error_code(&e) == Some("UserNotFound") => Err(not_found()),
            Err(e) => Err(map_sdk_error("DescribeUsers", e).with_context("user_id", &self.user_id)),
        }
    }

    /// `ModifyUser` with exactly `passwords` (riding out `InvalidUserState`), then a wait
    /// until the user is `active`.
    async fn modify_passwords(&self, passwords: &[&SecretString]) -> Result<()> {
        let budget = self.ready_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let mut delays = Backoff::new(self.poll, Duration::from_secs(5).max(self.poll)).iter();
        loop {
            let mut call = self.client.modify_user().user_id(&self.user_id);
            for p in passwords {
                call = call.passwords(p.expose_secret());
            }
            match call.send().await {
                Ok(_) => break,
                Err(e) => {
                    let busy = error_code(&e) == Some("InvalidUserState");
                    let err = map_sdk_error("ModifyUser", e).with_context("user_id", &self.user_id);
                    if !(busy || err.is_temporary()) {
                        return Err(err);
                    }
                    let delay = delays.next_delay();
                    if tokio::time::Instant::now() + delay > deadline {
                        // Retried until the deadline: no outer loop should re-run it at once.
                        return Err(err.temporary().persist());
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let active = wait_until(remaining, self.poll, Duration::from_secs(2), || async {
            Ok(self.describe().await?.status() == Some("active"))
        })
        .await?;
        if active {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "user {:?} did not become active within {budget:?} after ModifyUser",
                    self.user_id
                ),
            )
            .temporary())
        }
    }
}

#[leasehold_core::async_trait]
impl StaticRoleTarget for ElastiCacheUserTarget {
    fn kind(&self) -> &'static str {
        "aws-elasticache-static"
    }

    fn password_policy(&self) -> PasswordPolicy {
        self.password_policy.clone()
    }

    async fn validate(&self) -> Result<()> {
        let user = self.describe().await?;
        let auth = match user.authentication().and_then(|a| a.r#type()) {
            Some(AuthenticationType::Password) => leasehold_aws::UserAuth::Password,
            Some(AuthenticationType::Iam) => leasehold_aws::UserAuth::Iam,
            Some(AuthenticationType::NoPassword) => leasehold_aws::UserAuth::NoPassword,
            _ => leasehold_aws::UserAuth::Unknown,
        };
        leasehold_aws::check_rotatable("user_id", &self.user_id, auth)
    }

    async fn user(&self) -> Result<StaticUser> {
        let u = self.describe().await?;
        Ok(StaticUser::new(
            u.user_name().unwrap_or(&self.user_id),
            u.arn().map(str::to_string),
        ))
    }

    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        match old {
            Some(old) if old.expose_secret() != new.expose_secret() => {
                self.modify_passwords(&[old, new]).await
            }
            _ => self.modify_passwords(&[new]).await,
        }
    }

    async fn drop_password(&self, _old: &SecretString, current: &SecretString) -> Result<()> {
        self.modify_passwords(&[current]).await
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        if self.describe().await?.status() != Some("active") {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("user {:?} is not active yet", self.user_id),
            )
            .temporary());
        }
        match &self.checker {
            None => Ok(()),
            Some(c) => match c.check(username, password).await? {
                crate::auth_check::AuthOutcome::Accepted => Ok(()),
                crate::auth_check::AuthOutcome::Refused => Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "the new password of {username:?} is refused by the readiness endpoint"
                    ),
                )
                .temporary()),
            },
        }
    }
}
