//! [`ElastiCacheIamTokenProvider`]: short-lived IAM authentication tokens for an IAM-enabled
//! ElastiCache user, as leases.

use async_trait::async_trait;
use aws_sdk_elasticache::Client;
use leasehold_aws::{
    map_sdk_error, AuthTokenBuilder, CacheService, IamTokenConfig, IamTokenProvider, IamTokenTarget,
};
use leasehold_core::{Error, Result};

use crate::config::Target;
use crate::provider::attached_user_groups;
use crate::users::ElastiCacheUsers;

/// The token provider's [`kind`](leasehold_core::DynamicSecretProvider::kind).
pub const IAM_TOKEN_KIND: &str = CacheService::ElastiCache.iam_token_kind();

/// `ExternalRef` attribute of a token lease: the cache's id.
const ATTR_CACHE: &str = "cache";

/// The IAM-enabled ElastiCache user a token provider signs tokens for, and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElastiCacheIamUser {
    /// The replication group or serverless cache the tokens are for.
    pub target: Target,
    /// The IAM-enabled user's id (which AWS requires to equal its user name).
    pub user_id: String,
}

impl ElastiCacheIamUser {
    /// The user `user_id` of `target`.
    pub fn new(target: Target, user_id: impl Into<String>) -> Self {
        ElastiCacheIamUser {
            target,
            user_id: user_id.into(),
        }
    }
}

/// Settings of an [`ElastiCacheIamTokenProvider`]: the [`ElastiCacheIamUser`], the AWS settings
/// (their credentials sign the tokens and need `elasticache:Connect`) and the token expiry.
pub type ElastiCacheIamTokenConfig = IamTokenConfig<ElastiCacheIamUser>;

/// Issues IAM authentication tokens for one IAM-enabled ElastiCache user (kind
/// `aws-elasticache-iam-token`); see [`IamTokenProvider`] for what a lease holds. The token is
/// signed for service `elasticache`, with `ResourceType=ServerlessCache` for a serverless cache.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::{
///     ElastiCacheIamTokenConfig, ElastiCacheIamTokenProvider, ElastiCacheIamUser, Target,
/// };
///
/// let user = ElastiCacheIamUser::new(Target::ServerlessCache("orders".into()), "orders-app");
/// let config = ElastiCacheIamTokenConfig::new(user)
///     .aws(AwsConfig::new().region("eu-west-1"))
///     .token_expiry(Duration::from_secs(600));
/// config.validate()?; // offline: names, region, expiry
/// let provider = ElastiCacheIamTokenProvider::new(config).await?;
/// let token = provider.token().await?;
/// # let _ = token;
/// # Ok(()) }
/// ```
pub type ElastiCacheIamTokenProvider = IamTokenProvider<ElastiCacheIamUser>;

#[async_trait]
impl IamTokenTarget for ElastiCacheIamUser {
    type Service = ElastiCacheUsers;

    fn user(&self) -> &str {
        &self.user_id
    }

    fn token_builder(&self, region: &str) -> AuthTokenBuilder {
        AuthTokenBuilder::elasticache(region, self.target.id(), &self.user_id)
            .serverless(matches!(self.target, Target::ServerlessCache(_)))
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![(ATTR_CACHE, self.target.id().to_string())]
    }

    /// The cache exists and has a user group that contains the user.
    async fn check(&self, client: &Client) -> Result<()> {
        let id = &self.user_id;
        let target = &self.target;
        let groups = attached_user_groups(client, target)
            .await?
            .ok_or_else(|| Error::invalid_config(format!("{target} not found")))?;
        if groups.is_empty() {
            return Err(Error::invalid_config(format!(
                "{target} has no user group, so it cannot authenticate IAM users; attach a user group that contains {id:?}"
            )));
        }
        for group in &groups {
            let out = client
                .describe_user_groups()
                .user_group_id(group)
                .send()
                .await
                .map_err(|e| {
                    map_sdk_error("DescribeUserGroups", e).with_context("user_group", group)
                })?;
            let member = out
                .user_groups()
                .iter()
                .filter(|g| {
                    g.user_group_id()
                        .is_some_and(|g| g.eq_ignore_ascii_case(group))
                })
                .any(|g| g.user_ids().iter().any(|u| u.eq_ignore_ascii_case(id)));
            if member {
                return Ok(());
            }
        }
        Err(Error::invalid_config(format!(
            "user_id: {id:?} is not in the user group of {target} ({}); add it with aws elasticache modify-user-group --user-ids-to-add",
            groups.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_aws::AwsConfig;
    use leasehold_core::ErrorKind;
    use std::time::Duration;

    #[test]
    fn config_is_checked_offline() {
        let rg = || Target::ReplicationGroup("orders".into());
        let config =
            |target, user| ElastiCacheIamTokenConfig::new(ElastiCacheIamUser::new(target, user));
        assert!(config(rg(), "app").validate().is_ok());
        for bad in [
            config(Target::ServerlessCache(String::new()), "app"),
            config(rg(), "App"),
            config(rg(), "app").token_expiry(Duration::from_secs(901)),
            config(rg(), "app").aws(AwsConfig::new().region("nowhere 1")),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }
}
