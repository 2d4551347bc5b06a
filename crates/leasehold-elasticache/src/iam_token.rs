//! [`ElastiCacheIamTokenProvider`]: short-lived IAM authentication tokens for an IAM-enabled
//! ElastiCache user, as leases.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_elasticache::types::AuthenticationType;
use aws_sdk_elasticache::Client;
use leasehold_aws::{
    error_code, map_sdk_error, AuthTokenBuilder, AwsConfig, IamTokenProvider, IamTokenTarget,
    AUTH_TOKEN_MAX_EXPIRY,
};
use leasehold_core::{Error, Result};

use crate::config::Target;

/// The token provider's [`kind`](DynamicSecretProvider::kind).
pub const IAM_TOKEN_KIND: &str = "aws-elasticache-iam-token";

/// `ExternalRef` attribute of a token lease: the cache's id.
const ATTR_CACHE: &str = "cache";

/// Settings of an [`ElastiCacheIamTokenProvider`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::{ElastiCacheIamTokenConfig, Target};
///
/// let config = ElastiCacheIamTokenConfig::new(
///     Target::ServerlessCache("orders".into()),
///     "orders-app",
/// )
/// .aws(AwsConfig::new().region("eu-west-1"))
/// .token_expiry(Duration::from_secs(600));
/// config.validate().unwrap();
/// assert!(ElastiCacheIamTokenConfig::new(Target::ReplicationGroup("orders".into()), "A B")
///     .validate()
///     .is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ElastiCacheIamTokenConfig {
    /// AWS credentials (they sign the tokens and need `elasticache:Connect`), region, endpoint.
    pub aws: AwsConfig,
    /// The replication group or serverless cache the tokens are for.
    pub target: Target,
    /// The IAM-enabled user's id (which AWS requires to equal its user name).
    pub user_id: String,
    /// How long each token is accepted (default and at most 15 minutes). The lease ends then.
    pub token_expiry: Duration,
}

impl ElastiCacheIamTokenConfig {
    /// Tokens for `user_id` on `target`, valid 15 minutes, default AWS settings.
    pub fn new(target: Target, user_id: impl Into<String>) -> Self {
        ElastiCacheIamTokenConfig {
            aws: AwsConfig::default(),
            target,
            user_id: user_id.into(),
            token_expiry: AUTH_TOKEN_MAX_EXPIRY,
        }
    }

    /// Sets the AWS settings.
    #[must_use]
    pub fn aws(mut self, aws: AwsConfig) -> Self {
        self.aws = aws;
        self
    }

    /// Sets the token validity (1 s to 15 min, whole seconds).
    #[must_use]
    pub fn token_expiry(mut self, d: Duration) -> Self {
        self.token_expiry = d;
        self
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.validate_offline()
    }
}

/// Issues IAM authentication tokens for one IAM-enabled ElastiCache user (kind
/// `aws-elasticache-iam-token`).
///
/// Each lease's credential is the user id and, as password, a SigV4 presigned
/// `GET http://<cache>/?Action=connect&User=<user-id>` (with `ResourceType=ServerlessCache` for
/// a serverless cache) signed for service `elasticache` with the provider's AWS credentials
/// (an assumed role's session token included). Nothing is created in AWS: the token expires
/// by itself, so leases are neither renewable nor revocable and end when the token does; a
/// [`CredentialWatch`](leasehold_core::CredentialWatch) issues a fresh token ahead of that.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::DynamicSecret;
/// use leasehold_elasticache::{ElastiCacheIamTokenConfig, ElastiCacheIamTokenProvider, Target};
///
/// let provider = ElastiCacheIamTokenProvider::new(
///     ElastiCacheIamTokenConfig::new(Target::ReplicationGroup("orders".into()), "orders-app")
///         .aws(AwsConfig::new().region("eu-west-1")),
/// )
/// .await?;
/// let secret = DynamicSecret::builder("orders-iam", Arc::new(provider))
///     .default_ttl(Duration::from_secs(900))
///     .max_ttl(Duration::from_secs(900))
///     .build()?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
pub type ElastiCacheIamTokenProvider = IamTokenProvider<ElastiCacheIamTokenConfig>;

#[async_trait]
impl IamTokenTarget for ElastiCacheIamTokenConfig {
    type Client = Client;
    const KIND: &'static str = IAM_TOKEN_KIND;

    fn client(sdk: &SdkConfig) -> Client {
        Client::new(sdk)
    }

    fn aws(&self) -> &AwsConfig {
        &self.aws
    }

    fn user(&self) -> &str {
        &self.user_id
    }

    fn token_builder(&self, region: &str) -> AuthTokenBuilder {
        AuthTokenBuilder::elasticache(region, self.target.id(), &self.user_id)
            .serverless(matches!(self.target, Target::ServerlessCache(_)))
            .expires_in(self.token_expiry)
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![(ATTR_CACHE, self.target.id().to_string())]
    }

    /// The user exists, authenticates with IAM and is named like its id, and it is in the
    /// user group of the cache.
    async fn check(&self, client: &Client) -> Result<()> {
        let checks = Checks {
            config: self,
            client,
        };
        checks.check_user().await?;
        checks.check_group_member().await
    }
}

/// The service's checks, against the settings and a client.
struct Checks<'a> {
    config: &'a ElastiCacheIamTokenConfig,
    client: &'a Client,
}

impl Checks<'_> {
    async fn check_user(&self) -> Result<()> {
        let id = &self.config.user_id;
        let not_found =
            || Error::invalid_config(format!("user_id: ElastiCache user {id:?} not found"));
        let out = match self.client.describe_users().user_id(id).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("UserNotFound") => return Err(not_found()),
            Err(e) => return Err(map_sdk_error("DescribeUsers", e)),
        };
        let user = out
            .users()
            .iter()
            .find(|u| u.user_id().is_some_and(|u| u.eq_ignore_ascii_case(id)))
            .ok_or_else(not_found)?;
        let auth = user.authentication().and_then(|a| a.r#type());
        if auth != Some(&AuthenticationType::Iam) {
            return Err(Error::invalid_config(format!(
                "user_id: ElastiCache user {id:?} authenticates with {}, not IAM; create it with --authentication-mode Type=iam",
                auth.map_or("an unknown method", |t| t.as_str())
            )));
        }
        let name = user.user_name().unwrap_or_default();
        if name != id {
            return Err(Error::invalid_config(format!(
                "user_id: ElastiCache user {id:?} is named {name:?}; IAM authentication requires the user name to equal the user id"
            )));
        }
        Ok(())
    }

    /// The user groups attached to the target.
    async fn target_groups(&self) -> Result<Vec<String>> {
        let missing = |what: String| Error::invalid_config(format!("{what} not found"));
        match &self.config.target {
            Target::ReplicationGroup(id) => {
                let out = match self
                    .client
                    .describe_replication_groups()
                    .replication_group_id(id)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e) if error_code(&e) == Some("ReplicationGroupNotFoundFault") => {
                        return Err(missing(self.config.target.to_string()))
                    }
                    Err(e) => return Err(map_sdk_error("DescribeReplicationGroups", e)),
                };
                let rg = out
                    .replication_groups()
                    .first()
                    .ok_or_else(|| missing(self.config.target.to_string()))?;
                Ok(rg.user_group_ids().to_vec())
            }
            Target::ServerlessCache(name) => {
                let out = match self
                    .client
                    .describe_serverless_caches()
                    .serverless_cache_name(name)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e) if error_code(&e) == Some("ServerlessCacheNotFoundFault") => {
                        return Err(missing(self.config.target.to_string()))
                    }
                    Err(e) => return Err(map_sdk_error("DescribeServerlessCaches", e)),
                };
                let sc = out
                    .serverless_caches()
                    .first()
                    .ok_or_else(|| missing(self.config.target.to_string()))?;
                Ok(sc.user_group_id().map(str::to_string).into_iter().collect())
            }
        }
    }

    async fn check_group_member(&self) -> Result<()> {
        let id = &self.config.user_id;
        let groups = self.target_groups().await?;
        if groups.is_empty() {
            return Err(Error::invalid_config(format!(
                "{} has no user group, so it cannot authenticate IAM users; attach a user group that contains {id:?}",
                self.config.target
            )));
        }
        for group in &groups {
            let out = self
                .client
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
            "user_id: {id:?} is not in the user group of {} ({}); add it with aws elasticache modify-user-group --user-ids-to-add",
            self.config.target,
            groups.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;

    #[test]
    fn config_is_checked_offline() {
        let rg = || Target::ReplicationGroup("orders".into());
        assert!(ElastiCacheIamTokenConfig::new(rg(), "app")
            .validate()
            .is_ok());
        for bad in [
            ElastiCacheIamTokenConfig::new(Target::ServerlessCache(String::new()), "app"),
            ElastiCacheIamTokenConfig::new(rg(), "App"),
            ElastiCacheIamTokenConfig::new(rg(), "app").token_expiry(Duration::from_secs(901)),
            ElastiCacheIamTokenConfig::new(rg(), "app").aws(AwsConfig::new().region("nowhere 1")),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }
}
