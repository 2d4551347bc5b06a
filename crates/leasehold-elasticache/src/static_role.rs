//! [`ElastiCacheUserTarget`]: an existing ElastiCache user as the target of a fleet-wide
//! static role; the steps are [`StaticUserTarget`]'s, the calls `DescribeUsers` and
//! `ModifyUser`.

use aws_config::SdkConfig;
use aws_sdk_elasticache::Client;
use leasehold_aws::{error_code, map_sdk_error, DescribedUser, StaticUserTarget, UserService};
use leasehold_core::{async_trait, NameRule, Result};
use secrecy::{ExposeSecret, SecretString};

/// An existing ElastiCache user as the target of a fleet-wide static role
/// ([`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator)): `ModifyUser` with
/// two passwords (`AuthenticationMode` `password`, never touching the access string), then one;
/// a test by `AUTH` on a readiness endpoint when configured, otherwise by the user being
/// `active`. See [`StaticUserTarget`] for the steps.
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
///     .readiness_endpoint("rediss://my-cache.xxxxxx.use1.cache.amazonaws.com:6379", None)?;
/// # Ok(()) }
/// ```
pub type ElastiCacheUserTarget = StaticUserTarget<ElastiCacheUsers>;

/// ElastiCache's user calls for an [`ElastiCacheUserTarget`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ElastiCacheUsers;

#[async_trait]
impl UserService for ElastiCacheUsers {
    type Client = Client;
    const KIND: &'static str = "aws-elasticache-static";
    const TYPE_NAME: &'static str = "ElastiCacheUserTarget";
    const SERVICE: &'static str = "ElastiCache";
    const USER_KEY: &'static str = "user_id";
    const NAME_RULE: NameRule = NameRule::ElastiCacheUserId;
    const SET_OPERATION: &'static str = "ModifyUser";

    fn client(sdk: &SdkConfig) -> Client {
        Client::new(sdk)
    }

    async fn describe(client: &Client, user_id: &str) -> Result<Option<DescribedUser>> {
        let out = match client.describe_users().user_id(user_id).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("UserNotFound") => return Ok(None),
            Err(e) => {
                return Err(map_sdk_error("DescribeUsers", e).with_context("user_id", user_id))
            }
        };
        let Some(u) = out.users().iter().find(|u| {
            u.user_id()
                .is_some_and(|id| id.eq_ignore_ascii_case(user_id))
        }) else {
            return Ok(None);
        };
        let auth = u.authentication().and_then(|a| a.r#type());
        Ok(Some(DescribedUser::new(
            u.user_name(),
            u.arn(),
            u.status(),
            auth.map(|t| t.as_str()),
        )))
    }

    async fn set_passwords(
        client: &Client,
        user_id: &str,
        passwords: &[&SecretString],
    ) -> Result<()> {
        let mut call = client.modify_user().user_id(user_id);
        for p in passwords {
            call = call.passwords(p.expose_secret());
        }
        call.send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_error("ModifyUser", e).with_context("user_id", user_id))
    }
}
