//! [`MemoryDbUserTarget`]: an existing MemoryDB user as the target of a fleet-wide static role;
//! the steps are [`StaticUserTarget`]'s, the calls `DescribeUsers` and `UpdateUser`.

use leasehold_aws::StaticUserTarget;

use crate::users::MemoryDbUsers;

/// An existing MemoryDB user whose password a
/// [`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator) rotates: `UpdateUser`
/// with `AuthenticationMode` `password` and two passwords (current and new), then, after the
/// grace, with the new one alone. The access string is never touched. A user that is
/// `modifying` (another change in flight) is waited out, and every change waits until the user
/// is `active` again. The test step `AUTH`s on a readiness endpoint when one is configured;
/// without one, the user being `active` is the test. See [`StaticUserTarget`] for the steps.
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
pub type MemoryDbUserTarget = StaticUserTarget<MemoryDbUsers>;

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_memorydb::operation::describe_users::DescribeUsersOutput;
    use aws_sdk_memorydb::operation::update_user::{UpdateUserError, UpdateUserOutput};
    use aws_sdk_memorydb::types::{Authentication, AuthenticationType, User};
    use aws_sdk_memorydb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use leasehold_core::static_role::StaticRoleTarget;
    use leasehold_core::ErrorKind;
    use secrecy::SecretString;

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

    #[test]
    fn from_config_builds_the_target_of_its_service_only() {
        use leasehold_aws::{CacheService, StaticUserConfig};
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let config = StaticUserConfig::new(CacheService::MemoryDb, "App-Writer")
            .readiness_endpoint("rediss://cache.example:6379")
            .ready_timeout(std::time::Duration::from_secs(60));
        let target = MemoryDbUserTarget::from_config(&sdk, &config).unwrap();
        let shown = format!("{target:?}");
        assert!(shown.contains("user_name: \"app-writer\""), "{shown}");
        assert!(shown.contains("60s"), "{shown}");
        assert_eq!(target.kind(), "aws-memorydb-static");
        let other = StaticUserConfig::new(CacheService::ElastiCache, "app-writer");
        let e = MemoryDbUserTarget::from_config(&sdk, &other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        let bad = StaticUserConfig::new(CacheService::MemoryDb, "app-writer")
            .readiness_ca_pem("/etc/ssl/ca.pem");
        let e = MemoryDbUserTarget::from_config(&sdk, &bad).unwrap_err();
        assert!(e.message().starts_with("readiness_ca_pem"), "{e}");
    }
}
