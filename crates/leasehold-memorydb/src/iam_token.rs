//! [`MemoryDbIamTokenProvider`]: short-lived IAM authentication tokens for an IAM-enabled
//! MemoryDB user, as leases.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_memorydb::types::AuthenticationType;
use aws_sdk_memorydb::Client;
use chrono::{DateTime, Utc};
use leasehold_aws::{
    error_code, map_sdk_error, AuthToken, AuthTokenBuilder, AuthTokenClock, AwsConfig,
    AUTH_TOKEN_MAX_EXPIRY,
};
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, Readiness, Result,
};

use crate::config::OPEN_ACCESS_ACL;
use crate::provider::{ATTR_ACL, ATTR_CLUSTER};

/// The token provider's [`kind`](DynamicSecretProvider::kind).
pub const IAM_TOKEN_KIND: &str = "aws-memorydb-iam-token";
/// `ExternalRef` attribute: when the token stops being accepted (RFC 3339).
pub const ATTR_TOKEN_EXPIRES_AT: &str = "token_expires_at";

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
        self.aws.validate()?;
        // The region is checked by AwsConfig when set; a stand-in lets the rest be checked
        // when it comes from the environment.
        let region = self.aws.region.as_deref().unwrap_or("us-east-1");
        self.builder(region).validate()
    }

    fn builder(&self, region: &str) -> AuthTokenBuilder {
        AuthTokenBuilder::memorydb(region, &self.cluster_name, &self.user_name)
            .expires_in(self.token_expiry)
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
pub struct MemoryDbIamTokenProvider {
    config: MemoryDbIamTokenConfig,
    client: Client,
    credentials: SharedCredentialsProvider,
    tokens: AuthTokenBuilder,
}

impl fmt::Debug for MemoryDbIamTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDbIamTokenProvider")
            .field("config", &self.config)
            .field("region", &self.tokens.region())
            .finish_non_exhaustive()
    }
}

impl MemoryDbIamTokenProvider {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: MemoryDbIamTokenConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_sdk_config(config, &sdk)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used): its
    /// credentials sign the tokens, its region is the token's region.
    pub fn from_sdk_config(config: MemoryDbIamTokenConfig, sdk: &SdkConfig) -> Result<Self> {
        let (credentials, region) =
            leasehold_aws::signing_parts(sdk, config.aws.region.as_deref())?;
        Self::from_parts(config, Client::new(sdk), credentials, &region)
    }

    /// Uses the given client, credentials and region (`config.aws` is then not used).
    pub fn from_parts(
        config: MemoryDbIamTokenConfig,
        client: Client,
        credentials: SharedCredentialsProvider,
        region: &str,
    ) -> Result<Self> {
        let tokens = config.builder(region);
        tokens.validate()?;
        Ok(MemoryDbIamTokenProvider {
            config,
            client,
            credentials,
            tokens,
        })
    }

    /// Replaces the clock that dates the tokens (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: AuthTokenClock) -> Self {
        self.tokens = self.tokens.clock(clock);
        self
    }

    /// The settings.
    pub fn config(&self) -> &MemoryDbIamTokenConfig {
        &self.config
    }

    /// The token builder (service, region, cluster, user, expiry, clock).
    pub fn token_builder(&self) -> &AuthTokenBuilder {
        &self.tokens
    }

    /// Signs a fresh token now, outside any lease.
    pub async fn token(&self) -> Result<AuthToken> {
        self.tokens.generate(&self.credentials).await
    }

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

fn to_chrono(t: std::time::SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

#[async_trait]
impl DynamicSecretProvider for MemoryDbIamTokenProvider {
    fn kind(&self) -> &'static str {
        IAM_TOKEN_KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .renewable(false)
            .revocable(false)
            .needs_password(false)
            .max_ttl(Some(self.tokens.expiry()))
    }

    /// Checks the settings, that the provider's credentials can sign a token, that the user
    /// exists and authenticates with IAM, and that it is in the cluster's ACL.
    async fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.token().await?;
        self.check_user().await?;
        let acl = self.cluster_acl().await?;
        self.check_acl_member(&acl)
            .await
            .map_err(|e| e.with_context(ATTR_ACL, &acl))
    }

    /// Signs a token. The lease's username only labels the lease: the credential is always
    /// the configured user.
    async fn create(&self, req: &CreateRequest) -> Result<Created> {
        let token = self
            .token()
            .await
            .map_err(|e| e.with_context("lease_id", &req.lease_id))?;
        let expires_at = to_chrono(token.expires_at());
        let external = ExternalRef::new(&self.config.user_name)
            .with_attr(ATTR_CLUSTER, &self.config.cluster_name)
            .with_attr(
                ATTR_TOKEN_EXPIRES_AT,
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        let credentials = Credentials::UsernamePassword {
            username: self.config.user_name.clone(),
            password: token.into_secret(),
        };
        Ok(Created::new(external, credentials, Readiness::Unchecked).with_expires_at(expires_at))
    }

    /// A token has a fixed expiry; a new lease brings a new token.
    async fn renew(&self, external: &ExternalRef, _expires_at: DateTime<Utc>) -> Result<()> {
        Err(Error::new(
            ErrorKind::NotRenewable,
            "an IAM auth token cannot be extended; issue a new lease for a fresh token",
        )
        .with_context("user", &external.id))
    }

    /// Tokens cannot be withdrawn; they expire by themselves. Succeeds without a call.
    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        tracing::debug!(user = %external.id, "IAM auth tokens expire by themselves; nothing to revoke");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
