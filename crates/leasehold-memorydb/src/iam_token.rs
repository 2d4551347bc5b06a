//! [`MemoryDbIamTokenProvider`]: short-lived IAM authentication tokens for an IAM-enabled
//! MemoryDB user, as leases.

use async_trait::async_trait;
use aws_sdk_memorydb::Client;
use leasehold_aws::{
    found, AuthTokenBuilder, CacheService, IamTokenConfig, IamTokenProvider, IamTokenTarget,
};
use leasehold_core::{Error, Result};

use crate::config::OPEN_ACCESS_ACL;
use crate::provider::{ATTR_ACL, ATTR_CLUSTER};
use crate::users::MemoryDbUsers;

pub use leasehold_aws::ATTR_TOKEN_EXPIRES_AT;

/// The token provider's [`kind`](leasehold_core::DynamicSecretProvider::kind).
pub const IAM_TOKEN_KIND: &str = CacheService::MemoryDb.iam_token_kind();

/// The IAM-enabled MemoryDB user a token provider signs tokens for, and its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryDbIamUser {
    /// The cluster's name.
    pub cluster_name: String,
    /// The IAM-enabled MemoryDB user's name (the name clients `AUTH` with).
    pub user_name: String,
}

impl MemoryDbIamUser {
    /// The user `user_name` of cluster `cluster_name`.
    pub fn new(cluster_name: impl Into<String>, user_name: impl Into<String>) -> Self {
        MemoryDbIamUser {
            cluster_name: cluster_name.into(),
            user_name: user_name.into(),
        }
    }
}

/// Settings of a [`MemoryDbIamTokenProvider`]: the [`MemoryDbIamUser`], the AWS settings
/// (their credentials sign the tokens and need `memorydb:Connect`) and the token expiry.
pub type MemoryDbIamTokenConfig = IamTokenConfig<MemoryDbIamUser>;

/// Issues IAM authentication tokens for one IAM-enabled MemoryDB user (kind
/// `aws-memorydb-iam-token`), signed for service `memorydb`; see [`IamTokenProvider`] for what
/// a lease holds.
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_core::DynamicSecret;
/// use leasehold_memorydb::{MemoryDbIamTokenConfig, MemoryDbIamTokenProvider, MemoryDbIamUser};
///
/// let config = MemoryDbIamTokenConfig::new(MemoryDbIamUser::new("orders", "orders-app"));
/// let provider = MemoryDbIamTokenProvider::new(config).await?;
/// let secret = DynamicSecret::builder("orders-iam", Arc::new(provider))
///     .max_ttl(Duration::from_secs(900))
///     .build()?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
pub type MemoryDbIamTokenProvider = IamTokenProvider<MemoryDbIamUser>;

#[async_trait]
impl IamTokenTarget for MemoryDbIamUser {
    type Service = MemoryDbUsers;

    fn user(&self) -> &str {
        &self.user_name
    }

    fn token_builder(&self, region: &str) -> AuthTokenBuilder {
        AuthTokenBuilder::memorydb(region, &self.cluster_name, &self.user_name)
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![(ATTR_CLUSTER, self.cluster_name.clone())]
    }

    /// The cluster exists, and its ACL contains the user.
    async fn check(&self, client: &Client) -> Result<()> {
        let acl = self.cluster_acl(client).await?;
        self.check_acl_member(client, &acl)
            .await
            .map_err(|e| e.with_context(ATTR_ACL, &acl))
    }
}

impl MemoryDbIamUser {
    /// The ACL of the cluster; the open-access ACL is refused, it holds no IAM users.
    async fn cluster_acl(&self, client: &Client) -> Result<String> {
        let cluster = &self.cluster_name;
        let not_found = || {
            Error::invalid_config(format!(
                "cluster_name: MemoryDB cluster {cluster:?} not found"
            ))
        };
        let sent = client
            .describe_clusters()
            .cluster_name(cluster)
            .send()
            .await;
        let out = found("DescribeClusters", "ClusterNotFoundFault", sent)?.ok_or_else(not_found)?;
        let c = out
            .clusters()
            .iter()
            .find(|c| c.name() == Some(cluster.as_str()))
            .ok_or_else(not_found)?;
        match c.acl_name() {
            Some(acl) if acl != OPEN_ACCESS_ACL => Ok(acl.to_string()),
            _ => Err(Error::invalid_config(format!(
                "cluster {cluster:?} uses the open-access ACL, which holds no IAM users; attach an ACL that contains {:?}",
                self.user_name
            ))),
        }
    }

    async fn check_acl_member(&self, client: &Client, acl: &str) -> Result<()> {
        let sent = client.describe_acls().acl_name(acl).send().await;
        let Some(out) = found("DescribeACLs", "ACLNotFoundFault", sent)? else {
            return Err(Error::invalid_config(format!(
                "the cluster's ACL {acl:?} was not found"
            )));
        };
        let members = out
            .acls()
            .iter()
            .find(|a| a.name() == Some(acl))
            .map(|a| a.user_names().to_vec())
            .unwrap_or_default();
        if members.contains(&self.user_name) {
            Ok(())
        } else {
            Err(Error::invalid_config(format!(
                "user_name: {:?} is not in ACL {acl:?} of cluster {:?}; add it with aws memorydb update-acl --user-names-to-add",
                self.user_name, self.cluster_name
            )))
        }
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
        let config =
            |cluster, user| MemoryDbIamTokenConfig::new(MemoryDbIamUser::new(cluster, user));
        assert!(config("orders", "app").validate().is_ok());
        for bad in [
            config("", "app"),
            config("orders", "App"),
            config("orders", "app").token_expiry(Duration::from_secs(3600)),
            config("orders", "app").aws(AwsConfig::new().region("Mars Base")),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }
}
