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

use crate::{
    AuthToken, AuthTokenBuilder, AuthTokenClock, AwsConfig, UserAuth, UserService,
    AUTH_TOKEN_MAX_EXPIRY,
};

/// `ExternalRef` attribute of a token lease: when the token stops being accepted (RFC 3339).
pub const ATTR_TOKEN_EXPIRES_AT: &str = "token_expires_at";

/// What an [`IamTokenProvider`] needs to know about the service and the user it signs tokens
/// for: the service, the user, the resource, the lease's attributes and the service's check of
/// the resource. Implemented by each service's token target (`ElastiCacheIamUser`,
/// `MemoryDbIamUser`); the settings every target shares are in [`IamTokenConfig`].
#[async_trait]
pub trait IamTokenTarget: Clone + fmt::Debug + Send + Sync + 'static {
    /// The service's user calls ([`UserService`]): its client, its names, and the
    /// `DescribeUsers` that [`validate`](DynamicSecretProvider::validate) checks the user with.
    type Service: UserService;

    /// The IAM-enabled user every token authenticates as.
    fn user(&self) -> &str;

    /// The token builder for `region` (service, resource, user; the expiry is set by
    /// [`IamTokenConfig`]).
    fn token_builder(&self, region: &str) -> AuthTokenBuilder;

    /// `ExternalRef` attributes naming the resource (besides [`ATTR_TOKEN_EXPIRES_AT`]).
    fn attributes(&self) -> Vec<(&'static str, String)>;

    /// The service's check of the resource, with the network: it exists and the user may
    /// connect to it (ElastiCache: in the cache's user group; MemoryDB: in the cluster's ACL).
    /// It runs after the user itself is checked: it exists, authenticates with IAM, and logs
    /// in with the name the tokens carry.
    async fn check(&self, client: &ServiceClient<Self>) -> Result<()>;
}

/// The SDK client of a target's service.
pub type ServiceClient<T> = <<T as IamTokenTarget>::Service as UserService>::Client;

/// Checks the IAM-enabled `user` of `S` with `DescribeUsers`: it exists, authenticates with
/// IAM, and logs in with `user` (an ElastiCache user's name may differ from its id; IAM
/// authentication requires them equal). Refusals are `InvalidConfig` naming the user key.
async fn check_iam_user<S: UserService>(client: &S::Client, user: &str) -> Result<()> {
    let (key, service) = (S::SERVICE.user_key(), S::SERVICE);
    let found = S::describe(client, user).await?;
    let Some(found) = found else {
        return Err(Error::invalid_config(format!(
            "{key}: {service} user {user:?} not found"
        )));
    };
    let method = match found.auth {
        UserAuth::Iam => None,
        UserAuth::Password => Some("password"),
        UserAuth::NoPassword => Some("no password"),
        UserAuth::Unknown => Some("an unknown method"),
    };
    if let Some(method) = method {
        return Err(Error::invalid_config(format!(
            "{key}: {service} user {user:?} authenticates with {method}, not IAM; create it with --authentication-mode Type=iam"
        )));
    }
    let name = found.name.unwrap_or_default();
    if name != user {
        let id = key.replace('_', " ");
        return Err(Error::invalid_config(format!(
            "{key}: {service} user {user:?} is named {name:?}; IAM authentication requires the user name to equal the {id}"
        )));
    }
    Ok(())
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
    client: ServiceClient<T>,
    credentials: SharedCredentialsProvider,
    tokens: AuthTokenBuilder,
}

impl<T: IamTokenTarget> fmt::Debug for IamTokenProvider<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamTokenProvider")
            .field("kind", &T::Service::SERVICE.iam_token_kind())
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
        Self::from_parts(config, T::Service::client(sdk), credentials, &region)
    }

    /// Uses the given client, credentials and region (`config.aws` is then not used).
    pub fn from_parts(
        config: IamTokenConfig<T>,
        client: ServiceClient<T>,
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
        T::Service::SERVICE.iam_token_kind()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .renewable(false)
            .revocable(false)
            .needs_password(false)
            .max_ttl(Some(self.tokens.expiry()))
    }

    /// Checks the settings, that the provider's credentials can sign a token, the user
    /// (`DescribeUsers`: it exists, authenticates with IAM, its name is the one the tokens
    /// carry) and the resource ([`IamTokenTarget::check`]).
    async fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.token().await?;
        let target = &self.config.target;
        check_iam_user::<T::Service>(&self.client, target.user()).await?;
        target.check(&self.client).await
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
