//! [`MemoryDbIamTokenProvider`]: short-lived IAM authentication tokens for an IAM-enabled
//! MemoryDB user, as leases.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_memorydb::types::AuthenticationType;
use aws_sdk_memorydb::Client;
use leasehold_aws::{
    error_code, map_sdk_error, AuthTokenBuilder, AwsConfig, IamTokenProvider, IamTokenTarget,
    AUTH_TOKEN_MAX_EXPIRY,
};
use leasehold_core::{Error, Result};

use crate::config::OPEN_ACCESS_ACL;
use crate::provider::{ATTR_ACL, ATTR_CLUSTER};

pub use leasehold_aws::ATTR_TOKEN_EXPIRES_AT;

/// The token provider's [`kind`](DynamicSecretProvider::kind).
pub const IAM_TOKEN_KIND: &str = "aws-memorydb-iam-token";

/// Settings of a [`MemoryDbIamTokenProvider`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_memorydb::MemoryDbIamTokenConfig;
///
/// let config = MemoryDbIamTokenConfig::new("orders", "orders-app")
///     .aws(AwsConfig::new().region("eu-west-1"))
///     .token_expiry(Duration::from_secs(600));
/// config.validate().unwrap();
/// assert!(MemoryDbIamTokenConfig::new("orders", "Not A Name").validate().is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryDbIamTokenConfig {
    /// AWS credentials (they sign the tokens and need `memorydb:Connect`), region, endpoint.
    pub aws: AwsConfig,
    /// The cluster's name.
    pub cluster_name: String,
    /// The IAM-enabled MemoryDB user's name (the name clients `AUTH` with).
    pub user_name: String,
    /// How long each token is accepted (default and at most 15 minutes). The lease ends then.
    pub token_expiry: Duration,
}

impl MemoryDbIamTokenConfig {
    /// Tokens for `user_name` on `cluster_name`, valid 15 minutes, default AWS settings.
    pub fn new(cluster_name: impl Into<String>, user_name: impl Into<String>) -> Self {
        MemoryDbIamTokenConfig {
            aws: AwsConfig::default(),
            cluster_name: cluster_name.into(),
            user_name: user_name.into(),
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

/// Issues IAM authentication tokens for one IAM-enabled MemoryDB user (kind
/// `aws-memorydb-iam-token`).
///
/// Each lease's credential is the user name and, as password, a SigV4 presigned
/// `GET http://<cluster>/?Action=connect&User=<user>` signed for service `memorydb` with the
/// provider's AWS credentials (an assumed role's session token included). Nothing is created
/// in AWS: the token expires by itself, so leases are neither renewable nor revocable and end
/// when the token does; a [`CredentialWatch`](leasehold_core::CredentialWatch) issues a fresh
/// token ahead of that.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::DynamicSecret;
/// use leasehold_memorydb::{MemoryDbIamTokenConfig, MemoryDbIamTokenProvider};
///
/// let provider = MemoryDbIamTokenProvider::new(
///     MemoryDbIamTokenConfig::new("orders", "orders-app").aws(AwsConfig::new().region("eu-west-1")),
/// )
/// .await?;
/// let secret = DynamicSecret::builder("orders-iam", Arc::new(provider))
///     .default_ttl(Duration::from_secs(900))
///     .max_ttl(Duration::from_secs(900))
///     .build()?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
pub type MemoryDbIamTokenProvider = IamTokenProvider<MemoryDbIamTokenConfig>;

#[async_trait]
impl IamTokenTarget for MemoryDbIamTokenConfig {
    type Client = Client;
    const KIND: &'static str = IAM_TOKEN_KIND;

    fn client(sdk: &SdkConfig) -> Client {
        Client::new(sdk)
    }

    fn aws(&self) -> &AwsConfig {
        &self.aws
    }

    fn user(&self) -> &str {
        &self.user_name
    }

    fn token_builder(&self, region: &str) -> AuthTokenBuilder {
        AuthTokenBuilder::memorydb(region, &self.cluster_name, &self.user_name)
            .expires_in(self.token_expiry)
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        vec![(ATTR_CLUSTER, self.cluster_name.clone())]
    }

    /// The user exists and authenticates with IAM, and it is in the cluster's ACL.
    async fn check(&self, client: &Client) -> Result<()> {
        let checks = Checks {
            config: self,
            client,
        };
        checks.check_user().await?;
        let acl = checks.cluster_acl().await?;
        checks
            .check_acl_member(&acl)
            .await
            .map_err(|e| e.with_context(ATTR_ACL, &acl))
    }
}

/// The service's checks, against the settings and a client.
struct Checks<'a> {
    config: &'a MemoryDbIamTokenConfig,
    client: &'a Client,
}

impl Checks<'_> {
    async fn check_user(&self) -> Result<()> {
        let name = &self.config.user_name;
        let out = match self.client.describe_users().user_name(name).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("UserNotFoundFault") => {
                return Err(user_not_found(name))
            }
            Err(e) => return Err(map_sdk_error("DescribeUsers", e)),
        };
        let user = out
            .users()
            .iter()
            .find(|u| u.name() == Some(name.as_str()))
            .ok_or_else(|| user_not_found(name))?;
        let auth = user.authentication().and_then(|a| a.r#type());
        if auth != Some(&AuthenticationType::Iam) {
            return Err(Error::invalid_config(format!(
                "user_name: MemoryDB user {name:?} authenticates with {}, not IAM; create it with --authentication-mode Type=iam",
                auth.map_or("an unknown method", |t| t.as_str())
            )));
        }
        Ok(())
    }

    async fn cluster_acl(&self) -> Result<String> {
        let cluster = &self.config.cluster_name;
        let not_found = || {
            Error::invalid_config(format!(
                "cluster_name: MemoryDB cluster {cluster:?} not found"
            ))
        };
        let out = match self
            .client
            .describe_clusters()
            .cluster_name(cluster)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("ClusterNotFoundFault") => return Err(not_found()),
            Err(e) => return Err(map_sdk_error("DescribeClusters", e)),
        };
        let c = out
            .clusters()
            .iter()
            .find(|c| c.name() == Some(cluster.as_str()))
            .ok_or_else(not_found)?;
        match c.acl_name() {
            Some(acl) if acl != OPEN_ACCESS_ACL => Ok(acl.to_string()),
            _ => Err(Error::invalid_config(format!(
                "cluster {cluster:?} uses the open-access ACL, which holds no IAM users; attach an ACL that contains {:?}",
                self.config.user_name
            ))),
        }
    }

    async fn check_acl_member(&self, acl: &str) -> Result<()> {
        let out = match self.client.describe_acls().acl_name(acl).send().await {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("ACLNotFoundFault") => {
                return Err(Error::invalid_config(format!(
                    "the cluster's ACL {acl:?} was not found"
                )))
            }
            Err(e) => return Err(map_sdk_error("DescribeACLs", e)),
        };
        let members = out
            .acls()
            .iter()
            .find(|a| a.name() == Some(acl))
            .map(|a| a.user_names().to_vec())
            .unwrap_or_default();
        if members.contains(&self.config.user_name) {
            Ok(())
        } else {
            Err(Error::invalid_config(format!(
                "user_name: {:?} is not in ACL {acl:?} of cluster {:?}; add it with aws memorydb update-acl --user-names-to-add",
                self.config.user_name, self.config.cluster_name
            )))
        }
    }
}

fn user_not_found(name: &str) -> Error {
    Error::invalid_config(format!("user_name: MemoryDB user {name:?} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;

    #[test]
    fn config_is_checked_offline() {
        assert!(MemoryDbIamTokenConfig::new("orders", "app")
            .validate()
            .is_ok());
        for bad in [
            MemoryDbIamTokenConfig::new("", "app"),
            MemoryDbIamTokenConfig::new("orders", "App"),
            MemoryDbIamTokenConfig::new("orders", "app").token_expiry(Duration::from_secs(3600)),
            MemoryDbIamTokenConfig::new("orders", "app").aws(AwsConfig::new().region("Mars Base")),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }
}
