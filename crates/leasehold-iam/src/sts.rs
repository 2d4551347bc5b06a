//! STS temporary credentials: `assumed_role`, `federation_token`, `session_token`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use leasehold_aws::AwsConfig;
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ExternalRef,
    NameRule, Readiness, Result,
};
use secrecy::SecretString;
use tokio::sync::OnceCell;

use crate::checks::{
    check_policy_arn, check_policy_document, check_positive, sts_duration_seconds, to_chrono,
};
use crate::readiness::confirm_identity;

/// The shortest STS credential: 15 minutes, for every type.
pub const STS_MIN_TTL: Duration = Duration::from_secs(900);
/// The longest `AssumeRole` session AWS allows (a role's `MaxSessionDuration` is at most 12 h).
pub const ASSUME_ROLE_MAX_TTL: Duration = Duration::from_secs(12 * 3600);
/// The default max of an assumed-role session: a role's default `MaxSessionDuration`, 1 h.
pub const ASSUME_ROLE_DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// The longest federation token or session token: 36 h.
pub const TOKEN_MAX_TTL: Duration = Duration::from_secs(36 * 3600);

/// `ExternalRef` attribute: the temporary access key id.
pub const ATTR_ACCESS_KEY_ID: &str = "access_key_id";
/// `ExternalRef` attribute: the principal the credentials act as (assumed-role or
/// federated-user ARN).
pub const ATTR_PRINCIPAL_ARN: &str = "principal_arn";
/// `ExternalRef` attribute: when STS ends the credentials (RFC 3339).
pub const ATTR_EXPIRES_AT: &str = "expires_at";

/// `assumed_role`: `AssumeRole` into one role, with the rendered username as session name.
#[derive(Clone)]
#[non_exhaustive]
pub struct AssumedRole {
    /// The role to assume.
    pub role_arn: String,
    /// An inline session policy (JSON) that narrows the role's permissions.
    pub session_policy: Option<String>,
    /// Managed session policies that narrow the role's permissions.
    pub policy_arns: Vec<String>,
    /// The external id the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// The role's `MaxSessionDuration` (default 1 h, at most 12 h): the longest TTL issued.
    pub max_session_duration: Duration,
}

impl AssumedRole {
    /// Assume `role_arn`, sessions of at most 1 h.
    pub fn new(role_arn: impl Into<String>) -> Self {
        AssumedRole {
            role_arn: role_arn.into(),
            session_policy: None,
            policy_arns: Vec::new(),
            external_id: None,
            max_session_duration: ASSUME_ROLE_DEFAULT_MAX_TTL,
        }
    }

    /// Adds a managed session policy.
    #[must_use]
    pub fn policy_arn(mut self, arn: impl Into<String>) -> Self {
        self.policy_arns.push(arn.into());
        self
    }
}

leasehold_core::setters! {
    AssumedRole {
        /// Sets the role's max session duration.
        max_session_duration: Duration,
    }
}

leasehold_core::setters! {
    into Some AssumedRole {
        /// Sets the inline session policy.
        session_policy: String,
        /// Sets the external id.
        external_id: String,
    }
}

impl fmt::Debug for AssumedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The external id is a shared secret of sorts between the two accounts.
        f.debug_struct("AssumedRole")
            .field("role_arn", &self.role_arn)
            .field(
                "session_policy",
                &self.session_policy.as_ref().map(|_| "[SET]"),
            )
            .field("policy_arns", &self.policy_arns)
            .field("external_id", &self.external_id.as_ref().map(|_| "[SET]"))
            .field("max_session_duration", &self.max_session_duration)
            .finish_non_exhaustive()
    }
}

/// `federation_token`: `GetFederationToken` with the rendered username as the federated user's
/// name. The caller must be an IAM user (or root); the token's permissions are the
/// intersection of the caller's and the policy given here, so one is required.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FederationToken {
    /// The inline policy (JSON) of the federated user.
    pub policy: Option<String>,
    /// Managed policies of the federated user.
    pub policy_arns: Vec<String>,
}

impl FederationToken {
    /// A federation token scoped by the inline `policy`.
    pub fn with_policy(json: impl Into<String>) -> Self {
        FederationToken {
            policy: Some(json.into()),
            policy_arns: Vec::new(),
        }
    }

    /// Adds a managed policy.
    #[must_use]
    pub fn policy_arn(mut self, arn: impl Into<String>) -> Self {
        self.policy_arns.push(arn.into());
        self
    }
}

/// The kind of temporary credential an [`StsProvider`] issues.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StsCredentialType {
    /// `AssumeRole`.
    AssumedRole(AssumedRole),
    /// `GetFederationToken`.
    FederationToken(FederationToken),
    /// `GetSessionToken`: temporary keys of the calling IAM user itself.
    SessionToken,
}

impl StsCredentialType {
    /// The type's name as in configuration: `assumed_role`, `federation_token`, `session_token`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StsCredentialType::AssumedRole(_) => "assumed_role",
            StsCredentialType::FederationToken(_) => "federation_token",
            StsCredentialType::SessionToken => "session_token",
        }
    }

    /// The longest TTL this type issues.
    pub fn max_ttl(&self) -> Duration {
        match self {
            StsCredentialType::AssumedRole(r) => r.max_session_duration,
            _ => TOKEN_MAX_TTL,
        }
    }
}

/// Settings of an [`StsProvider`].
///
/// # Examples
///
/// ```
/// use leasehold_iam::{AssumedRole, StsConfig, StsCredentialType};
///
/// let config = StsConfig::new(StsCredentialType::AssumedRole(
///     AssumedRole::new("arn:aws:iam::123456789012:role/reports-reader").external_id("ext-1"),
/// ));
/// config.validate().unwrap();
/// assert!(!format!("{config:?}").contains("ext-1"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StsConfig {
    /// AWS credentials (the caller of the STS API), region, endpoint.
    pub aws: AwsConfig,
    /// What to issue.
    pub credential_type: StsCredentialType,
    /// How long `create` waits, at most, to see the new credentials accepted (default 10 s).
    pub ready_timeout: Duration,
}

impl StsConfig {
    /// Issues `credential_type` with the default AWS settings.
    pub fn new(credential_type: StsCredentialType) -> Self {
        StsConfig {
            aws: AwsConfig::default(),
            credential_type,
            ready_timeout: Duration::from_secs(10),
        }
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        self.checked_policy().map(|_| ())
    }

    /// Validates and returns the compact inline (session) policy.
    fn checked_policy(&self) -> Result<Option<String>> {
        check_positive("ready_timeout", self.ready_timeout)?;
        let check_arns = |arns: &[String]| -> Result<()> {
            if arns.len() > 10 {
                return Err(Error::invalid_config(
                    "policy_arns: STS accepts at most 10 managed session policies",
                ));
            }
            arns.iter()
                .try_for_each(|a| check_policy_arn("policy_arns", a))
        };
        match &self.credential_type {
            StsCredentialType::AssumedRole(r) => {
                leasehold_aws::validate_arn("role_arn", &r.role_arn, Some("iam"))?;
                if !r
                    .role_arn
                    .splitn(6, ':')
                    .nth(5)
                    .unwrap_or_default()
                    .starts_with("role/")
                {
                    return Err(Error::invalid_config(
                        "role_arn: not a role ARN (its resource must start with role/)",
                    ));
                }
                if let Some(id) = &r.external_id {
                    let ok = (2..=1224).contains(&id.len())
                        && id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
                    if !ok {
                        return Err(Error::invalid_config(
                            "external_id: must be 2 to 1224 letters, digits or +=,.@:/-_",
                        ));
                    }
                }
                if r.max_session_duration < STS_MIN_TTL
                    || r.max_session_duration > ASSUME_ROLE_MAX_TTL
                {
                    return Err(Error::invalid_config(
                        "max_session_duration: a role's max session lasts 15m to 12h",
                    ));
                }
                check_arns(&r.policy_arns)?;
                r.session_policy
                    .as_deref()
                    .map(|d| check_policy_document("session_policy", d))
                    .transpose()
            }
            StsCredentialType::FederationToken(t) => {
                if t.policy.is_none() && t.policy_arns.is_empty() {
                    return Err(Error::invalid_config(
                        "federation_token: needs a policy or policy_arns (without one the token has no permissions)",
                    ));
                }
                check_arns(&t.policy_arns)?;
                t.policy
                    .as_deref()
                    .map(|d| check_policy_document("policy", d))
                    .transpose()
            }
            StsCredentialType::SessionToken => Ok(None),
        }
    }
}

leasehold_core::setters! {
    StsConfig {
        /// Sets the AWS settings.
        aws: AwsConfig,
        /// Sets the readiness bound.
        ready_timeout: Duration,
    }
}

/// Issues STS temporary credentials (kind `aws-sts`).
///
/// STS credentials cannot be revoked: they end at their expiry, which is set to the lease's
/// TTL. So leases are not renewable, and `revoke` succeeds without a call (the lease closes;
/// the credentials keep working until they expire). Keep TTLs short.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::DynamicSecret;
/// use leasehold_iam::{AssumedRole, StsConfig, StsCredentialType, StsProvider};
///
/// let provider = StsProvider::new(
///     StsConfig::new(StsCredentialType::AssumedRole(AssumedRole::new(
///         "arn:aws:iam::123456789012:role/reports-reader",
///     )))
///     .aws(AwsConfig::new().region("us-east-1")),
/// )
/// .await?;
/// let secret = DynamicSecret::builder("reports-session", Arc::new(provider))
///     .default_ttl(Duration::from_secs(900))
///     .max_ttl(Duration::from_secs(3600))
///     .build()?;
/// # Ok(()) }
/// ```
pub struct StsProvider {
    config: StsConfig,
    policy: Option<String>,
    sts: aws_sdk_sts::Client,
    caller_arn: OnceCell<String>,
}

impl fmt::Debug for StsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn policy_descriptors(arns: &[String]) -> Option<Vec<aws_sdk_sts::types::PolicyDescriptorType>> {
    if arns.is_empty() {
        return None;
    }
    Some(
        arns.iter()
            .map(|a| {
                aws_sdk_sts::types::PolicyDescriptorType::builder()
                    .arn(a)
                    .build()
            })
            .collect(),
    )
}

impl StsProvider {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: StsConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_sdk_config(config, &sdk)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used).
    pub fn from_sdk_config(config: StsConfig, sdk: &SdkConfig) -> Result<Self> {
        Self::from_client(config, aws_sdk_sts::Client::new(sdk))
    }

    /// Uses the given client (`config.aws` is then not used).
    pub fn from_client(config: StsConfig, sts: aws_sdk_sts::Client) -> Result<Self> {
        let policy = config.checked_policy()?;
        Ok(StsProvider {
            config,
            policy,
            sts,
            caller_arn: OnceCell::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &StsConfig {
        &self.config
    }

    async fn caller_arn(&self) -> Result<&str> {
        self.caller_arn
            .get_or_try_init(|| async {
                let out = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| leasehold_aws::map_sdk_error("GetCallerIdentity", e))?;
                Ok::<_, Error>(out.arn().unwrap_or_default().to_string())
            })
            .await
            .map(String::as_str)
    }
}

#[async_trait]
impl DynamicSecretProvider for StsProvider {
    fn kind(&self) -> &'static str {
        "aws-sts"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .renewable(false)
            .revocable(false)
            .needs_password(false)
            .min_ttl(Some(STS_MIN_TTL))
            .max_ttl(Some(self.config.credential_type.max_ttl()))
    }

    fn name_rule(&self) -> NameRule {
        match self.config.credential_type {
            StsCredentialType::AssumedRole(_) => NameRule::StsSessionName,
            StsCredentialType::FederationToken(_) => NameRule::FederationTokenName,
            // The name goes nowhere in AWS; it only labels the lease.
            _ => NameRule::Any,
        }
    }

    async fn validate(&self) -> Result<()> {
        self.config.checked_policy()?;
        let arn = self.caller_arn().await?;
        // GetFederationToken and GetSessionToken refuse role sessions.
        if !matches!(
            self.config.credential_type,
            StsCredentialType::AssumedRole(_)
        ) && arn.contains(":assumed-role/")
        {
            return Err(Error::invalid_config(format!(
                "{} needs long-term IAM user credentials, but the provider runs as {arn}",
                self.config.credential_type.as_str()
            )));
        }
        Ok(())
    }

    async fn create(&self, req: &CreateRequest) -> Result<Created> {
        let name = req.username.as_str();
        let ty = &self.config.credential_type;
        let ctx = |e: Error| {
            e.with_context("credential_type", ty.as_str())
                .with_context("lease_id", &req.lease_id)
        };
        self.name_rule().check(name).map_err(ctx)?;
        let secs = sts_duration_seconds(req.ttl, STS_MIN_TTL, ty.max_ttl()).map_err(ctx)?;
        let (creds, principal) = match ty {
            StsCredentialType::AssumedRole(r) => {
                let out = self
                    .sts
                    .assume_role()
                    .role_arn(&r.role_arn)
                    .role_session_name(name)
                    .duration_seconds(secs)
                    .set_policy(self.policy.clone())
                    .set_policy_arns(policy_descriptors(&r.policy_arns))
                    .set_external_id(r.external_id.clone())
                    .send()
                    .await
                    .map_err(|e| ctx(leasehold_aws::map_sdk_error("AssumeRole", e)))?;
                let principal = out.assumed_role_user().map(|u| u.arn().to_string());
                (out.credentials, principal)
            }
            StsCredentialType::FederationToken(t) => {
                let out = self
                    .sts
                    .get_federation_token()
                    .name(name)
                    .duration_seconds(secs)
                    .set_policy(self.policy.clone())
                    .set_policy_arns(policy_descriptors(&t.policy_arns))
                    .send()
                    .await
                    .map_err(|e| ctx(leasehold_aws::map_sdk_error("GetFederationToken", e)))?;
                let principal = out.federated_user().map(|u| u.arn().to_string());
                (out.credentials, principal)
            }
            StsCredentialType::SessionToken => {
                let out = self
                    .sts
                    .get_session_token()
                    .duration_seconds(secs)
                    .send()
                    .await
                    .map_err(|e| ctx(leasehold_aws::map_sdk_error("GetSessionToken", e)))?;
                (out.credentials, None)
            }
        };
        let creds = creds.ok_or_else(|| ctx(Error::unexpected("STS returned no credentials")))?;
        let access_key_id = creds.access_key_id().to_string();
        let secret_access_key = SecretString::from(creds.secret_access_key().to_string());
        let session_token = SecretString::from(creds.session_token().to_string());
        let expires_at = to_chrono(creds.expiration());
        drop(creds);

        let readiness = if req.wait_ready {
            // A session token acts as the caller itself.
            let expected = match (&principal, ty) {
                (Some(p), _) => Some(p.clone()),
                (None, StsCredentialType::SessionToken) => {
                    self.caller_arn().await.ok().map(str::to_string)
                }
                _ => None,
            };
            match expected {
                Some(expected) => {
                    confirm_identity(
                        &self.sts,
                        &access_key_id,
                        &secret_access_key,
                        Some(&session_token),
                        &expected,
                        self.config.ready_timeout,
                    )
                    .await
                }
                None => Readiness::Unchecked,
            }
        } else {
            Readiness::Unchecked
        };

        let mut external =
            ExternalRef::new(name).with_attr(ATTR_ACCESS_KEY_ID, access_key_id.clone());
        if let Some(p) = principal {
            external = external.with_attr(ATTR_PRINCIPAL_ARN, p);
        }
        if let Some(at) = expires_at {
            external = external.with_attr(
                ATTR_EXPIRES_AT,
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
        let created = Created::new(
            external,
            Credentials::AwsKeys {
                access_key_id,
                secret_access_key,
                session_token: Some(session_token),
            },
            readiness,
        );
        Ok(match expires_at {
            Some(at) => created.with_expires_at(at),
            None => created,
        })
    }

    /// STS credentials have a fixed expiry; they cannot be extended.
    async fn renew(
        &self,
        external: &ExternalRef,
        _expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        Err(Error::new(
            leasehold_core::ErrorKind::NotRenewable,
            "STS credentials cannot be renewed; issue a new lease instead",
        )
        .with_context("credential_type", self.config.credential_type.as_str())
        .with_context("name", &external.id))
    }

    /// STS credentials cannot be revoked: they end at their expiry. Closing the lease is all
    /// there is to do, so this succeeds without a call.
    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        tracing::debug!(
            name = %external.id,
            "STS credentials cannot be revoked; they end at their expiry"
        );
        Ok(())
    }
}
