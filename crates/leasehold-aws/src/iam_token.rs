//! [`IamTokenProvider`]: short-lived IAM authentication tokens for one IAM-enabled ElastiCache or
//! MemoryDB user, as leases. The provider is written once; each service describes its target
//! by an [`IamTokenTarget`] (the user, the lease's attributes, the service's own checks).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use leasehold_core::chrono::{self, DateTime, Utc};
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, Readiness, Result,
};

use crate::{AuthToken, AuthTokenBuilder, AuthTokenClock, AwsConfig, AUTH_TOKEN_MAX_EXPIRY};

/// `ExternalRef` attribute of a token lease: when the token stops being accepted (RFC 3339).
pub const ATTR_TOKEN_EXPIRES_AT: &str = "token_expires_at";

/// What an [`IamTokenProvider`] needs to know about the service and the user it signs tokens
/// for: the user, the resource, the lease's attributes and the service's own checks.
/// Implemented by each service's token target (`ElastiCacheIamUser`, `MemoryDbIamUser`); the
/// settings every target shares are in [`IamTokenConfig`].
#[async_trait]
pub trait IamTokenTarget: Clone + fmt::Debug + Send + Sync + 'static {
    /// The service's SDK client, for [`check`](Self::check).
    type Client: Send + Sync + 'static;

    /// The provider's [`kind`](DynamicSecretProvider::kind).
    const KIND: &'static str;

    /// Builds the client from an SDK configuration.
    fn client(sdk: &SdkConfig) -> Self::Client;

    /// The IAM-enabled user every token authenticates as.
    fn user(&self) -> &str;

    /// The token builder for `region` (service, resource, user; the expiry is set by
    /// [`IamTokenConfig`]).
    fn token_builder(&self, region: &str) -> AuthTokenBuilder;

    /// `ExternalRef` attributes naming the resource (besides [`ATTR_TOKEN_EXPIRES_AT`]).
    fn attributes(&self) -> Vec<(&'static str, String)>;

    /// The service's own checks, with the network: the user exists, authenticates with IAM,
    /// and may connect to the resource.
    async fn check(&self, client: &Self::Client) -> Result<()>;
}

/// Settings of an [`IamTokenProvider`]: the service's user and resource (`target`), the AWS
/// settings whose credentials sign the tokens, and how long each token is accepted.
///
/// Each service names its own: `ElastiCacheIamTokenConfig` is
/// `IamTokenConfig<ElastiCacheIamUser>`, `MemoryDbIamTokenConfig` is
/// `IamTokenConfig<MemoryDbIamUser>`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IamTokenConfig<T> {
    /// AWS credentials (they sign the tokens and need the service's `Connect` permission),
    /// region, endpoint.
    pub aws: AwsConfig,
    /// The service's IAM-enabled user and the resource it connects to.
    pub target: T,
    /// How long each token is accepted (default and at most 15 minutes). The lease ends then.
    pub token_expiry: Duration,
}

impl<T: IamTokenTarget> IamTokenConfig<T> {
    /// Tokens for `target`, valid 15 minutes, default AWS settings.
    pub fn new(target: T) -> Self {
        IamTokenConfig {
            aws: AwsConfig::default(),
            target,
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

    /// The token builder for `region`, with the configured expiry.
    pub fn token_builder(&self, region: &str) -> AuthTokenBuilder {
        self.target
            .token_builder(region)
            .expires_in(self.token_expiry)
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        // The region is checked by AwsConfig when set; a stand-in lets the rest be checked
        // when it comes from the environment.
        let region = self.aws.region.as_deref().unwrap_or("us-east-1");
        self.token_builder(region).validate()
    }
}

/// Issues IAM authentication tokens for one IAM-enabled user of `T`'s service.
///
/// Each lease's credential is the user and, as password, a SigV4 presigned
/// `GET http://<resource>/?Action=connect&User=<user>` signed with the provider's AWS
/// credentials (an assumed role's session token included). Nothing is created in AWS: the token
/// expires by itself, so leases are neither renewable nor revocable and end when the token
/// does; a [`CredentialWatch`](leasehold_core::CredentialWatch) issues a fresh token ahead of
/// that. The lease's username only labels the lease.
pub struct IamTokenProvider<T: IamTokenTarget> {
    config: IamTokenConfig<T>,
    client: T::Client,
    credentials: SharedCredentialsProvider,
    tokens: AuthTokenBuilder,
}

impl<T: IamTokenTarget> fmt::Debug for IamTokenProvider<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamTokenProvider")
            .field("kind", &T::KIND)
            .field("config", &self.config)
            .field("region", &self.tokens.region())
            .finish_non_exhaustive()
    }
}

impl<T: IamTokenTarget> IamTokenProvider<T> {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: IamTokenConfig<T>) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_sdk_config(config, &sdk)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used): its
    /// credentials sign the tokens, its region is the token's region.
    pub fn from_sdk_config(config: IamTokenConfig<T>, sdk: &SdkConfig) -> Result<Self> {
        let (credentials, region) = crate::signing_parts(sdk, config.aws.region.as_deref())?;
        Self::from_parts(config, T::client(sdk), credentials, &region)
    }

    /// Uses the given client, credentials and region (`config.aws` is then not used).
    pub fn from_parts(
        config: IamTokenConfig<T>,
        client: T::Client,
        credentials: SharedCredentialsProvider,
        region: &str,
    ) -> Result<Self> {
        let tokens = config.token_builder(region);
        tokens.validate()?;
        Ok(IamTokenProvider {
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
    pub fn config(&self) -> &IamTokenConfig<T> {
        &self.config
    }

    /// The token builder (service, region, resource, user, expiry, clock).
    pub fn token_builder(&self) -> &AuthTokenBuilder {
        &self.tokens
    }

    /// Signs a fresh token now, outside any lease.
    pub async fn token(&self) -> Result<AuthToken> {
        self.tokens.generate(&self.credentials).await
    }
}

#[async_trait]
impl<T: IamTokenTarget> DynamicSecretProvider for IamTokenProvider<T> {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .renewable(false)
            .revocable(false)
            .needs_password(false)
            .max_ttl(Some(self.tokens.expiry()))
    }

    /// Checks the settings, that the provider's credentials can sign a token, and the
    /// service's own checks ([`IamTokenTarget::check`]).
    async fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.token().await?;
        self.config.target.check(&self.client).await
    }

    /// Signs a token. The lease's username only labels the lease: the credential is always
    /// the configured user.
    async fn create(&self, req: &CreateRequest) -> Result<Created> {
        let token = self
            .token()
            .await
            .map_err(|e| e.with_context("lease_id", &req.lease_id))?;
        let expires_at = DateTime::<Utc>::from(token.expires_at());
        let mut external = ExternalRef::new(self.config.target.user());
        for (key, value) in self.config.target.attributes() {
            external = external.with_attr(key, value);
        }
        let external = external.with_attr(
            ATTR_TOKEN_EXPIRES_AT,
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let credentials = Credentials::UsernamePassword {
            username: self.config.target.user().to_string(),
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
