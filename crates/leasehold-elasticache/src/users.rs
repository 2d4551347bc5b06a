//! [`ElastiCacheUsers`]: ElastiCache's user calls, `DescribeUsers` and `ModifyUser`. The
//! provider, its user-group queue, the static-role target and the IAM token provider's check
//! all describe users here.

use aws_config::SdkConfig;
use aws_sdk_elasticache::types::{AuthenticationType, User};
use aws_sdk_elasticache::Client;
use leasehold_aws::{found, map_sdk_error, CacheService, DescribedUser, UserService};
use leasehold_core::{async_trait, Result};
use secrecy::{ExposeSecret, SecretString};

/// ElastiCache's user calls, for an [`ElastiCacheUserTarget`](crate::ElastiCacheUserTarget)
/// and the crate's own lookups.
#[derive(Debug, Clone, Copy, Default)]
pub struct ElastiCacheUsers;

#[async_trait]
impl UserService for ElastiCacheUsers {
    type Client = Client;
    const SERVICE: CacheService = CacheService::ElastiCache;

    fn client(sdk: &SdkConfig) -> Client {
        Client::new(sdk)
    }

    /// `DescribeUsers` for the user id, matched as ElastiCache stores ids: without regard to
    /// case.
    async fn describe(client: &Client, user_id: &str) -> Result<Option<DescribedUser>> {
        let same_id = |u: &&User| {
            u.user_id()
                .is_some_and(|id| id.eq_ignore_ascii_case(user_id))
        };
        let sent = client.describe_users().user_id(user_id).send().await;
        let out = found("DescribeUsers", "UserNotFound", sent)
            .map_err(|e| e.with_context("user_id", user_id))?;
        let Some(u) = out
            .as_ref()
            .and_then(|out| out.users().iter().find(same_id))
        else {
            return Ok(None);
        };
        let auth = u.authentication().and_then(|a| a.r#type());
        let auth = auth.map(AuthenticationType::as_str);
        Ok(Some(DescribedUser::new(
            u.user_name(),
            u.arn(),
            u.status(),
            auth,
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
