//! [`AwsConfig`]: the AWS settings every AWS provider shares, in code and in a config file.
//!
//! In a config file the AWS keys ([`AwsConfig::KEYS`]) sit flat in the same table as the
//! provider's own keys; [`deserialize_flat`] splits one such table into the two parts and
//! refuses keys that belong to neither.

use std::fmt;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use leasehold_core::settings::shorten;
use leasehold_core::{DurationText, Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::validate_arn;

/// Where the AWS credentials of a provider come from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum AwsCredentials {
    /// The SDK's default chain: environment, shared config/credentials files, web identity,
    /// ECS/EC2 instance metadata.
    #[default]
    DefaultChain,
    /// Explicit keys.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: SecretString,
        /// Session token, for temporary keys.
        session_token: Option<SecretString>,
    },
    /// Assume a role, authorised by `source` credentials.
    AssumeRole {
        /// The role's ARN.
        role_arn: String,
        /// The external id the role's trust policy requires, if any.
        external_id: Option<String>,
        /// The session name (default `leasehold`).
        session_name: Option<String>,
        /// The credentials that assume the role.
        source: Box<AwsCredentials>,
    },
}

impl AwsCredentials {
    /// Explicit keys.
    pub fn from_keys(access_key_id: impl Into<String>, secret_access_key: SecretString) -> Self {
        AwsCredentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
        }
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsCredentials::DefaultChain => f.write_str("DefaultChain"),
            AwsCredentials::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"[REDACTED]")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "[REDACTED]"),
                )
                .finish_non_exhaustive(),
            AwsCredentials::AssumeRole {
                role_arn,
                external_id,
                session_name,
                source,
            } => f
                .debug_struct("AssumeRole")
                .field("role_arn", role_arn)
                .field("external_id", &external_id.as_ref().map(|_| "[SET]"))
                .field("session_name", session_name)
                .field("source", source)
                .finish_non_exhaustive(),
        }
    }
}

/// AWS settings shared by every AWS provider: credentials, region, endpoint override, retries.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::{AwsConfig, AwsCredentials};
///
/// let sdk = AwsConfig::new()
///     .region("eu-west-1")
///     .credentials(AwsCredentials::DefaultChain)
///     .load()
///     .await?;
/// # Ok(()) }
/// ```
///
/// In a config file, the keys [`AwsConfig::KEYS`] (unknown keys are refused):
///
/// ```
/// use leasehold_aws::AwsConfig;
///
/// let aws: AwsConfig = serde_json::from_value(serde_json::json!({
///     "region": "eu-west-1",
///     "assume_role_arn": "arn:aws:iam::123456789012:role/leasehold",
///     "attempt_timeout": "5s",
/// }))
/// .unwrap();
/// assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// The region; when unset, the environment's (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// An endpoint override (an emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Where credentials come from.
    pub credentials: AwsCredentials,
    /// Attempts per SDK call, including the first (default 3; the SDK's standard retry mode
    /// with exponential backoff retries throttling and transient errors).
    pub max_attempts: Option<u32>,
    /// Timeout of one attempt (default 10 s).
    pub attempt_timeout: Option<Duration>,
}

impl AwsConfig {
    /// The keys of the AWS settings in a config file, as [`deserialize_flat`] splits them off.
    pub const KEYS: &'static [&'static str] = &[
        "region",
        "endpoint_url",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "assume_role_arn",
        "assume_role_external_id",
        "assume_role_session_name",
        "max_attempts",
        "attempt_timeout",
    ];

    /// Defaults: environment region, default credential chain.
    pub fn new() -> Self {
        AwsConfig::default()
    }

    /// Sets the region.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the endpoint override.
    #[must_use]
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sets the credentials.
    #[must_use]
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets attempts per call.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the timeout of one attempt.
    #[must_use]
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }

    /// Checks the settings without a network call.
    pub fn validate(&self) -> Result<()> {
        if let Some(region) = &self.region {
            check_region(region)?;
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() > 2048
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid_config(format!(
                    "endpoint_url: {:?} must be an http:// or https:// URL",
                    shorten(url)
                )));
            }
        }
        if self.max_attempts == Some(0) {
            return Err(Error::invalid_config("max_attempts: must be at least 1"));
        }
        if self.attempt_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid_config("attempt_timeout: must be positive"));
        }
        check_credentials(&self.credentials)
    }

    /// Builds the SDK configuration (resolving the credential chain lazily, as the SDK does).
    pub async fn load(&self) -> Result<SdkConfig> {
        self.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts.unwrap_or(3)))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(
                        self.attempt_timeout.unwrap_or(Duration::from_secs(10)),
                    )
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        loader = match &self.credentials {
            AwsCredentials::DefaultChain => loader,
            other => loader.credentials_provider(credentials_provider(other, self).await?),
        };
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::invalid_config(
                "region: no region configured and none found in the environment (set AWS_REGION or the secret's region)",
            ));
        }
        Ok(sdk)
    }
}

pub(crate) fn check_region(region: &str) -> Result<()> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "region: {:?} is not an AWS region name (like us-east-1)",
            shorten(region)
        )))
    }
}

fn check_credentials(c: &AwsCredentials) -> Result<()> {
    match c {
        AwsCredentials::DefaultChain => Ok(()),
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
            ..
        } => {
            if access_key_id.is_empty()
                || access_key_id.len() > 128
                || !access_key_id.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(Error::invalid_config(
                    "access_key_id: must be 1 to 128 letters and digits",
                ));
            }
            if secret_access_key.expose_secret().is_empty() {
                return Err(Error::invalid_config(
                    "secret_access_key: must not be empty",
                ));
            }
            Ok(())
        }
        AwsCredentials::AssumeRole {
            role_arn,
            session_name,
            source,
            ..
        } => {
            validate_arn("assume_role_arn", role_arn, Some("iam"))?;
            if let Some(name) = session_name {
                leasehold_core::NameRule::StsSessionName
                    .check(name)
                    .map_err(|e| {
                        Error::invalid_config(format!("assume_role_session_name: {}", e.message()))
                    })?;
            }
            check_credentials(source)
        }
    }
}

async fn credentials_provider(
    c: &AwsCredentials,
    cfg: &AwsConfig,
) -> Result<SharedCredentialsProvider> {
    match c {
        AwsCredentials::DefaultChain => {
            let chain =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .build()
                    .await;
            Ok(SharedCredentialsProvider::new(chain))
        }
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => Ok(SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose_secret().to_string(),
                session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                None,
                "leasehold-static",
            ),
        )),
        AwsCredentials::AssumeRole {
            role_arn,
            external_id,
            session_name,
            source,
        } => {
            let source_cfg = AwsConfig {
                credentials: (**source).clone(),
                ..cfg.clone()
            };
            let base = Box::pin(source_cfg.load()).await?;
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role_arn.clone())
                .session_name(session_name.clone().unwrap_or_else(|| "leasehold".into()))
                .configure(&base);
            if let Some(id) = external_id {
                b = b.external_id(id.clone());
            }
            Ok(SharedCredentialsProvider::new(b.build().await))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config files.

/// The AWS keys as written; [`RawAws::into_config`] turns them into an [`AwsConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    session_token: Option<SecretString>,
    assume_role_arn: Option<String>,
    assume_role_external_id: Option<String>,
    assume_role_session_name: Option<String>,
    max_attempts: Option<u32>,
    attempt_timeout: Option<DurationText>,
}

impl RawAws {
    fn into_config(self) -> Result<AwsConfig> {
        let base =
            match (self.access_key_id, self.secret_access_key) {
                (Some(access_key_id), Some(secret_access_key)) => AwsCredentials::Static {
                    access_key_id,
                    secret_access_key,
                    session_token: self.session_token,
                },
                (None, None) if self.session_token.is_none() => AwsCredentials::DefaultChain,
                (None, _) => return Err(Error::invalid_config(
                    "access_key_id: missing (secret_access_key or session_token is set without it)",
                )),
                (Some(_), None) => {
                    return Err(Error::invalid_config(
                        "secret_access_key: missing (access_key_id is set without it)",
                    ))
                }
            };
        let credentials = match self.assume_role_arn {
            Some(role_arn) => AwsCredentials::AssumeRole {
                role_arn,
                external_id: self.assume_role_external_id,
                session_name: self.assume_role_session_name,
                source: Box::new(base),
            },
            None => {
                for (key, set) in [
                    (
                        "assume_role_external_id",
                        self.assume_role_external_id.is_some(),
                    ),
                    (
                        "assume_role_session_name",
                        self.assume_role_session_name.is_some(),
                    ),
                ] {
                    if set {
                        return Err(Error::invalid_config(format!(
                            "{key}: set without assume_role_arn"
                        )));
                    }
                }
                base
            }
        };
        let config = AwsConfig {
            region: self.region,
            endpoint_url: self.endpoint_url,
            credentials,
            max_attempts: self.max_attempts,
            attempt_timeout: DurationText::parse_pause_opt(
                &self.attempt_timeout,
                "attempt_timeout",
                false,
            )?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Reads the keys [`AwsConfig::KEYS`] and runs [`AwsConfig::validate`]: a bad value is an error
/// naming its key, at load time, without a network call. Error text never quotes a secret.
impl<'de> Deserialize<'de> for AwsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        RawAws::deserialize(d)?
            .into_config()
            .map_err(|e| D::Error::custom(e.message()))
    }
}

/// Deserializes one flat table holding the AWS keys ([`AwsConfig::KEYS`]) and a provider's own
/// keys (`T`, which should refuse unknown fields) into the two parts.
///
/// serde's `deny_unknown_fields` does not work through `#[serde(flatten)]`, so the table is
/// read as a map, split by key name, and each part deserialized on its own: a key that belongs
/// to neither is refused by `T`, with its name in the error. A type error names its key too.
///
/// ```
/// use leasehold_aws::config::deserialize_flat;
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Own {
///     cluster_name: String,
/// }
///
/// let table = serde_json::json!({"region": "eu-west-1", "cluster_name": "orders"});
/// let (aws, own) = deserialize_flat::<_, Own>(table).unwrap();
/// assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
/// assert_eq!(own.cluster_name, "orders");
///
/// let typo = serde_json::json!({"regoin": "eu-west-1", "cluster_name": "orders"});
/// let e = deserialize_flat::<_, Own>(typo).unwrap_err();
/// assert!(e.to_string().contains("unknown field `regoin`"), "{e}");
/// ```
pub fn deserialize_flat<'de, D, T>(d: D) -> std::result::Result<(AwsConfig, T), D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    use leasehold_core::settings::{from_map, take_keys};
    let mut own = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    let aws = take_keys(&mut own, AwsConfig::KEYS);
    let aws: AwsConfig = from_map(aws).map_err(D::Error::custom)?;
    let own: T = from_map(own).map_err(D::Error::custom)?;
    Ok((aws, own))
}

/// The file form of an AWS provider's config: its own keys, read beside the AWS keys by
/// [`deserialize_config`], and turned into the checked config.
pub trait FlatConfig: DeserializeOwned {
    /// The provider's config type.
    type Config;

    /// Checks the keys (names in errors are the keys) and builds the config, validated.
    fn into_config(self, aws: AwsConfig) -> Result<Self::Config>;
}

/// Reads an AWS provider's config from one flat table: [`deserialize_flat`], then
/// [`FlatConfig::into_config`]; errors carry the key and never a secret value.
pub fn deserialize_config<'de, D, R>(d: D) -> std::result::Result<R::Config, D::Error>
where
    D: Deserializer<'de>,
    R: FlatConfig,
{
    let (aws, raw) = deserialize_flat::<D, R>(d)?;
    raw.into_config(aws)
        .map_err(|e| D::Error::custom(e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYsecret";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLEtokenvalue";

    fn load(v: serde_json::Value) -> std::result::Result<AwsConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_deserializes() {
        let c = load(json!({
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:5000",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": SECRET,
            "session_token": TOKEN,
            "assume_role_arn": "arn:aws:iam::123456789012:role/leasehold",
            "assume_role_external_id": "ext-1",
            "assume_role_session_name": "leasehold-orders",
            "max_attempts": 5,
            "attempt_timeout": "2500ms",
        }))
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.max_attempts, Some(5));
        assert_eq!(c.attempt_timeout, Some(Duration::from_millis(2500)));
        let AwsCredentials::AssumeRole {
            role_arn,
            external_id,
            session_name,
            source,
        } = &c.credentials
        else {
            panic!("{c:?}")
        };
        assert_eq!(role_arn, "arn:aws:iam::123456789012:role/leasehold");
        assert_eq!(external_id.as_deref(), Some("ext-1"));
        assert_eq!(session_name.as_deref(), Some("leasehold-orders"));
        let AwsCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = &**source
        else {
            panic!("{c:?}")
        };
        assert_eq!(access_key_id, "AKIDEXAMPLE");
        assert_eq!(secret_access_key.expose_secret(), SECRET);
        assert_eq!(session_token.as_ref().unwrap().expose_secret(), TOKEN);
        let shown = format!("{c:?}");
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
        // Every key of the list is read above, and nothing else is a key.
        assert_eq!(AwsConfig::KEYS.len(), 10);
    }

    #[test]
    fn no_keys_is_the_default_chain() {
        let c = load(json!({})).unwrap();
        assert!(matches!(c.credentials, AwsCredentials::DefaultChain));
        let c = load(json!({"assume_role_arn": "arn:aws:iam::123456789012:role/x"})).unwrap();
        let AwsCredentials::AssumeRole { source, .. } = c.credentials else {
            panic!()
        };
        assert!(matches!(*source, AwsCredentials::DefaultChain));
    }

    #[test]
    fn refusals_name_the_key_and_never_the_secret() {
        let cases = [
            (json!({"regoin": "x"}), "unknown field `regoin`"),
            (
                json!({"secret_access_key": SECRET}),
                "access_key_id: missing",
            ),
            (json!({"session_token": TOKEN}), "access_key_id: missing"),
            (
                json!({"access_key_id": "AKIDEXAMPLE"}),
                "secret_access_key: missing",
            ),
            (
                json!({"assume_role_external_id": "x"}),
                "assume_role_external_id: set without assume_role_arn",
            ),
            (
                json!({"assume_role_session_name": "x"}),
                "assume_role_session_name: set without assume_role_arn",
            ),
            (
                json!({"assume_role_arn": "arn:aws:s3:::bucket"}),
                "assume_role_arn:",
            ),
            (json!({"region": "Mars Base"}), "region:"),
            (json!({"max_attempts": 0}), "max_attempts:"),
            (json!({"attempt_timeout": "5 parsecs"}), "attempt_timeout:"),
            (json!({"attempt_timeout": "0"}), "attempt_timeout:"),
            (
                json!({"access_key_id": "AKID EXAMPLE", "secret_access_key": SECRET, "session_token": TOKEN}),
                "access_key_id:",
            ),
        ];
        for (v, want) in cases {
            let e = load(v).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(!e.contains(SECRET) && !e.contains(TOKEN), "{e}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        cluster_name: String,
        #[serde(default)]
        tags: BTreeMap<String, String>,
        ready: Option<bool>,
    }

    #[test]
    fn flat_tables_split_into_aws_and_own_keys() {
        let (aws, own) = deserialize_flat::<_, Own>(json!({
            "region": "eu-west-1",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": SECRET,
            "cluster_name": "orders",
            "tags": {"team": "payments"},
        }))
        .unwrap();
        assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
        assert!(matches!(aws.credentials, AwsCredentials::Static { .. }));
        assert_eq!(own.cluster_name, "orders");
        assert_eq!(own.tags["team"], "payments");
        assert_eq!(own.ready, None);
    }

    #[test]
    fn flat_tables_refuse_unknown_keys_and_name_type_errors() {
        let flat = |v: serde_json::Value| {
            deserialize_flat::<_, Own>(v)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = flat(json!({"cluster_name": "orders", "colour": "red"}));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = flat(json!({"cluster_name": "orders", "ready": "yes"}));
        assert!(e.starts_with("ready: invalid type"), "{e}");
        let e = flat(json!({"cluster_name": "orders", "max_attempts": "many"}));
        assert!(e.starts_with("max_attempts: invalid type"), "{e}");
        let e = flat(json!({"region": "eu-west-1"}));
        assert!(e.contains("missing field `cluster_name`"), "{e}");
        let e = flat(json!({"cluster_name": "orders", "secret_access_key": SECRET}));
        assert!(
            e.contains("access_key_id: missing") && !e.contains(SECRET),
            "{e}"
        );
        let e = flat(json!({"cluster_name": "orders", "secret_access_key": 5}));
        assert!(e.starts_with("secret_access_key: invalid type"), "{e}");
    }
}
