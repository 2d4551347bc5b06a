//! [`MemoryDbUserTarget`]: an existing MemoryDB user as the target of a fleet-wide static role.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_memorydb::types::{AuthenticationMode, AuthenticationType, InputAuthenticationType};
use aws_sdk_memorydb::Client;
use leasehold_aws::{error_code, map_sdk_error, wait_until};
use leasehold_core::backoff::Backoff;
use leasehold_core::static_role::{StaticRoleTarget, StaticUser};
use leasehold_core::{async_trait, Error, ErrorKind, NameRule, PasswordPolicy, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::AuthProbe;

/// An existing MemoryDB user whose password a
/// [`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator) rotates: `UpdateUser`
/// with `AuthenticationMode` `password` and two passwords (current and new), then, after the
/// grace, with the new one alone. The access string is never touched. A user that is
/// `modifying` (another change in flight) is waited out, and every change waits until the user
/// is `active` again. The test step `AUTH`s on a readiness endpoint when one is configured;
/// without one, the user being `active` is the test.
///
/// IAM: `memorydb:DescribeUsers` and `memorydb:UpdateUser` on the user.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::AwsConfig;
/// use leasehold_memorydb::MemoryDbUserTarget;
/// let sdk = AwsConfig::new().region("eu-west-1").load().await?;
/// let target = MemoryDbUserTarget::new(&sdk, "app-writer")?
///     .readiness_endpoint("rediss://clustercfg.orders.xxxxxx.memorydb.eu-west-1.amazonaws.com:6379", None)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryDbUserTarget {
    client: Client,
    user_name: String,
    ready_timeout: Duration,
    poll: Duration,
    password_policy: PasswordPolicy,
    probe: Option<AuthProbe>,
}

impl fmt::Debug for MemoryDbUserTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDbUserTarget")
            .field("user_name", &self.user_name)
            .field("ready_timeout", &self.ready_timeout)
            .field("readiness", &self.probe)
            .finish_non_exhaustive()
    }
}

impl MemoryDbUserTarget {
    /// The user `user_name`.
    pub fn new(sdk: &SdkConfig, user_name: &str) -> Result<Self> {
        Self::from_client(Client::new(sdk), user_name)
    }

    /// Uses a ready client.
    pub fn from_client(client: Client, user_name: &str) -> Result<Self> {
        let name = NameRule::MemoryDbUserName.normalize(user_name);
        // `default` is reserved for created users, but its password may be rotated.
        if name != "default" {
            NameRule::MemoryDbUserName
                .check(&name)
                .map_err(|e| Error::invalid_config(format!("user_name: {}", e.message())))?;
        }
        Ok(MemoryDbUserTarget {
            client,
            user_name: name,
            ready_timeout: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            password_policy: PasswordPolicy::memorydb(),
            probe: None,
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
        self.password_policy = leasehold_aws::check_password_policy("MemoryDB", p)?;
        Ok(self)
    }

    async fn describe(&self) -> Result<aws_sdk_memorydb::types::User> {
        let not_found = || {
            Error::new(
                ErrorKind::NotFound,
                format!("user_name: MemoryDB user {:?} not found", self.user_name),
            )
        };
        match self
            .client
            .describe_users()
            .user_name(&self.user_name)
            .send()
            .await
        {
            Ok(out) => out
                .users()
                .iter()
                .find(|u| u.name() == Some(self.user_name.as_str()))
                .cloned()
                .ok_or_else(not_found),
            Err(e) if error_code(&e) == Some("UserNotFoundFault") => Err(not_found()),
            Err(e) => Err(map_sdk_error("DescribeUsers", e).with_context("user", &self.user_name)),
        }
    }

    /// `UpdateUser` with exactly `passwords`, riding out `InvalidUserStateFault`, then a wait
    /// until the user is `active`.
    async fn update_passwords(&self, passwords: &[&SecretString]) -> Result<()> {
        let budget = self.ready_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let mut delays = Backoff::new(self.poll, Duration::from_secs(5).max(self.poll)).iter();
        loop {
            let mut mode = AuthenticationMode::builder().r#type(InputAuthenticationType::Password);
            for p in passwords {
                mode = mode.passwords(p.expose_secret());
            }
            let sent = self
                .client
                .update_user()
                .user_name(&self.user_name)
                .authentication_mode(mode.build())
                .send()
                .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    let busy = error_code(&e) == Some("InvalidUserStateFault");
                    let err = map_sdk_error("UpdateUser", e).with_context("user", &self.user_name);
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
                    "MemoryDB user {:?} did not become active within {budget:?} after UpdateUser",
                    self.user_name
                ),
            )
            .temporary())
        }
    }
}

#[async_trait]
impl StaticRoleTarget for MemoryDbUserTarget {
    fn kind(&self) -> &'static str {
        "aws-memorydb-static"
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
        leasehold_aws::check_rotatable("user_name", &self.user_name, auth)
    }

    async fn user(&self) -> Result<StaticUser> {
        let u = self.describe().await?;
        Ok(StaticUser::new(
            &self.user_name,
            u.arn().map(str::to_string),
        ))
    }

    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        match old {
            Some(old) if old.expose_secret() != new.expose_secret() => {
                self.update_passwords(&[old, new]).await
            }
            _ => self.update_passwords(&[new]).await,
        }
    }

    async fn drop_password(&self, _old: &SecretString, current: &SecretString) -> Result<()> {
        self.update_passwords(&[current]).await
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        if self.describe().await?.status() != Some("active") {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("MemoryDB user {:?} is not active yet", self.user_name),
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
    use aws_sdk_memorydb::operation::describe_users::DescribeUsersOutput;
    use aws_sdk_memorydb::operation::update_user::{UpdateUserError, UpdateUserOutput};
    use aws_sdk_memorydb::types::{Authentication, User};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    fn user(status: &str, auth: AuthenticationType) -> DescribeUsersOutput {
        DescribeUsersOutput::builder()
            .users(
                User::builder()
                    .name("app-writer")
                    .status(status)
                    .arn("arn:aws:memorydb:us-east-1:123456789012:user/app-writer")
                    .authentication(
                        Authentication::builder()
                            .r#type(auth)
                            .password_count(1)
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn two_passwords_then_one_riding_out_a_modifying_user() {
        let old = SecretString::from("Old-static-password-0123456789");
        let new = SecretString::from("New-static-password-0123456789");
        let describe = mock!(Client::describe_users)
            .then_output(|| user("active", AuthenticationType::Password));
        let busy_once = mock!(Client::update_user)
            .match_requests(|r| {
                r.authentication_mode()
                    .is_some_and(|m| m.passwords().len() == 2)
            })
            .sequence()
            .error(|| {
                UpdateUserError::generic(
                    ErrorMetadata::builder()
                        .code("InvalidUserStateFault")
                        .message("modifying")
                        .build(),
                )
            })
            .times(1)
            .output(|| UpdateUserOutput::builder().build())
            .repeatedly()
            .build();
        let single = mock!(Client::update_user)
            .match_requests(|r| {
                r.authentication_mode()
                    .is_some_and(|m| m.passwords().len() == 1)
            })
            .then_output(|| UpdateUserOutput::builder().build());
        let client = mock_client!(
            aws_sdk_memorydb,
            RuleMode::MatchAny,
            &[&describe, &busy_once, &single]
        );
        let t = MemoryDbUserTarget::from_client(client, "App-Writer").unwrap();
        t.validate().await.unwrap();
        let u = t.user().await.unwrap();
        assert_eq!(u.username, "app-writer");
        t.set_passwords(Some(&old), &new).await.unwrap();
        assert_eq!(
            busy_once.num_calls(),
            2,
            "InvalidUserStateFault is waited out"
        );
        assert_eq!(single.num_calls(), 0);
        t.test("app-writer", &new).await.unwrap();
        t.drop_password(&old, &new).await.unwrap();
        assert_eq!(single.num_calls(), 1);
        assert!(!format!("{t:?}").contains("static-password"));
    }

    #[tokio::test]
    async fn users_without_passwords_are_refused() {
        for auth in [AuthenticationType::Iam, AuthenticationType::NoPassword] {
            let a = auth.clone();
            let describe =
                mock!(Client::describe_users).then_output(move || user("active", a.clone()));
            let client = mock_client!(aws_sdk_memorydb, RuleMode::MatchAny, &[&describe]);
            let t = MemoryDbUserTarget::from_client(client, "app-writer").unwrap();
            assert_eq!(
                t.validate().await.unwrap_err().kind(),
                ErrorKind::InvalidConfig
            );
        }
        let client = mock_client!(aws_sdk_memorydb, RuleMode::MatchAny, &[]);
        assert!(MemoryDbUserTarget::from_client(client, "1bad").is_err());
    }
}
