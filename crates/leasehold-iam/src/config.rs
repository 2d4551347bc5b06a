//! [`IamConfig`]: the settings of either IAM provider, chosen by `credential_type`, as one
//! config-file schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_aws::config::{deserialize_config, FlatConfig};
use leasehold_aws::AwsConfig;
use leasehold_core::{DurationText, DynamicSecretProvider, Error, Result};
use serde::{Deserialize, Deserializer};

use crate::{
    AssumedRole, FederationToken, IamUserConfig, IamUserProvider, StsConfig, StsCredentialType,
    StsProvider,
};

/// The `credential_type` values, as written.
pub const CREDENTIAL_TYPES: &[&str] = &[
    "iam_user",
    "assumed_role",
    "federation_token",
    "session_token",
];

/// The settings of an IAM secret: an IAM user per lease ([`IamUserConfig`]) or temporary STS
/// credentials ([`StsConfig`]), as chosen by `credential_type`.
///
/// It deserializes from one flat table: `credential_type`, the keys of the crate README's
/// "Configuration keys" table and the AWS keys ([`AwsConfig::KEYS`]). Unknown keys are refused,
/// and so are keys that the chosen credential type does not use; the result is validated
/// without a network call. [`IamConfig::into_provider`] builds the matching provider.
///
/// # Examples
///
/// ```
/// use leasehold_iam::IamConfig;
///
/// let config: IamConfig = serde_json::from_value(serde_json::json!({
///     "credential_type": "assumed_role",
///     "role_arn": "arn:aws:iam::123456789012:role/reports-reader",
///     "max_session_duration": "2h",
///     "region": "us-east-1",
/// }))
/// .unwrap();
/// assert_eq!(config.credential_type(), "assumed_role");
///
/// let e = serde_json::from_value::<IamConfig>(serde_json::json!({
///     "credential_type": "session_token",
///     "path": "/leasehold/",
/// }))
/// .unwrap_err();
/// assert!(e.to_string().contains("path: not used by credential_type \"session_token\""));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IamConfig {
    /// `credential_type = "iam_user"`: an IAM user and an access key per lease.
    IamUser(IamUserConfig),
    /// `assumed_role`, `federation_token` or `session_token`: temporary STS credentials.
    Sts(StsConfig),
}

impl IamConfig {
    /// The credential type as written in a config file (`iam_user`, `assumed_role`, ...).
    pub fn credential_type(&self) -> &'static str {
        match self {
            IamConfig::IamUser(_) => "iam_user",
            IamConfig::Sts(c) => c.credential_type.as_str(),
        }
    }

    /// The AWS settings.
    pub fn aws(&self) -> &AwsConfig {
        match self {
            IamConfig::IamUser(c) => &c.aws,
            IamConfig::Sts(c) => &c.aws,
        }
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        match self {
            IamConfig::IamUser(c) => c.validate(),
            IamConfig::Sts(c) => c.validate(),
        }
        .map_err(|e| e.with_context("credential_type", self.credential_type()))
    }

    /// Builds the provider of the credential type: an [`IamUserProvider`] or an
    /// [`StsProvider`] (validated offline, AWS settings loaded; no IAM or STS call yet).
    pub async fn into_provider(self) -> Result<Arc<dyn DynamicSecretProvider>> {
        self.validate()?;
        Ok(match self {
            IamConfig::IamUser(c) => Arc::new(IamUserProvider::new(c).await?),
            IamConfig::Sts(c) => Arc::new(StsProvider::new(c).await?),
        })
    }
}

impl From<IamUserConfig> for IamConfig {
    fn from(c: IamUserConfig) -> Self {
        IamConfig::IamUser(c)
    }
}

impl From<StsConfig> for IamConfig {
    fn from(c: StsConfig) -> Self {
        IamConfig::Sts(c)
    }
}

/// The IAM keys as written, for every credential type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    credential_type: String,
    policy_document: Option<String>,
    policy_arns: Option<Vec<String>>,
    path: Option<String>,
    permissions_boundary: Option<String>,
    groups: Option<Vec<String>>,
    tags: Option<BTreeMap<String, String>>,
    inline_policy_name: Option<String>,
    consistency_window: Option<DurationText>,
    sweep_service_specific_credentials: Option<bool>,
    role_arn: Option<String>,
    external_id: Option<String>,
    max_session_duration: Option<DurationText>,
    ready_timeout: Option<DurationText>,
}

impl RawConfig {
    /// The keys only `iam_user` uses, and whether each is set.
    fn user_keys(&self) -> [(&'static str, bool); 7] {
        [
            ("path", self.path.is_some()),
            ("permissions_boundary", self.permissions_boundary.is_some()),
            ("groups", self.groups.is_some()),
            ("tags", self.tags.is_some()),
            ("inline_policy_name", self.inline_policy_name.is_some()),
            ("consistency_window", self.consistency_window.is_some()),
            (
                "sweep_service_specific_credentials",
                self.sweep_service_specific_credentials.is_some(),
            ),
        ]
    }

    /// The keys only `assumed_role` uses, and whether each is set.
    fn role_keys(&self) -> [(&'static str, bool); 3] {
        [
            ("role_arn", self.role_arn.is_some()),
            ("external_id", self.external_id.is_some()),
            ("max_session_duration", self.max_session_duration.is_some()),
        ]
    }

    /// The policy keys, which `session_token` does not use.
    fn policy_keys(&self) -> [(&'static str, bool); 2] {
        [
            ("policy_document", self.policy_document.is_some()),
            ("policy_arns", self.policy_arns.is_some()),
        ]
    }
}

impl FlatConfig for RawConfig {
    type Config = IamConfig;

    fn into_config(self, aws: AwsConfig) -> Result<IamConfig> {
        let ct = self.credential_type.as_str();
        let refuse = |set: &[(&str, bool)]| match set.iter().find(|(_, is_set)| *is_set) {
            Some((key, _)) => Err(Error::invalid_config(format!(
                "{key}: not used by credential_type {ct:?}"
            ))),
            None => Ok(()),
        };
        let ready = DurationText::parse_pause_opt(&self.ready_timeout, "ready_timeout", false)?;
        let sts = |t: StsCredentialType| {
            let c = StsConfig::new(t).aws(aws.clone());
            IamConfig::Sts(match ready {
                Some(d) => c.ready_timeout(d),
                None => c,
            })
        };
        let config = match ct {
            "iam_user" => {
                refuse(&self.role_keys())?;
                let mut c = IamUserConfig::new().aws(aws.clone());
                if let Some(p) = self.path {
                    c.path = p;
                }
                c.permissions_boundary = self.permissions_boundary;
                c.groups = self.groups.unwrap_or_default();
                c.tags = self.tags.unwrap_or_default();
                c.policy_arns = self.policy_arns.unwrap_or_default();
                c.inline_policy = self.policy_document;
                if let Some(n) = self.inline_policy_name {
                    c.inline_policy_name = n;
                }
                if let Some(d) = ready {
                    c.ready_timeout = d;
                }
                if let Some(w) = &self.consistency_window {
                    c.consistency_window = w.parse_pause("consistency_window", true)?;
                }
                if let Some(yes) = self.sweep_service_specific_credentials {
                    c.sweep_service_specific_credentials = yes;
                }
                IamConfig::IamUser(c)
            }
            "assumed_role" => {
                refuse(&self.user_keys())?;
                let arn = self.role_arn.as_deref().ok_or_else(|| {
                    Error::invalid_config("role_arn: required by credential_type \"assumed_role\"")
                })?;
                let mut r = AssumedRole::new(arn);
                r.session_policy = self.policy_document;
                r.policy_arns = self.policy_arns.unwrap_or_default();
                r.external_id = self.external_id;
                if let Some(d) = &self.max_session_duration {
                    r.max_session_duration = d.parse("max_session_duration")?;
                }
                sts(StsCredentialType::AssumedRole(r))
            }
            "federation_token" => {
                refuse(&self.user_keys())?;
                refuse(&self.role_keys())?;
                sts(StsCredentialType::FederationToken(FederationToken {
                    policy: self.policy_document,
                    policy_arns: self.policy_arns.unwrap_or_default(),
                }))
            }
            "session_token" => {
                refuse(&self.user_keys())?;
                refuse(&self.role_keys())?;
                refuse(&self.policy_keys())?;
                sts(StsCredentialType::SessionToken)
            }
            other => {
                return Err(Error::invalid_config(format!(
                    "credential_type: unknown credential type {:?}; expected one of {}",
                    other.chars().take(64).collect::<String>(),
                    CREDENTIAL_TYPES.join(", ")
                )))
            }
        };
        config.validate()?;
        Ok(config)
    }
}

/// Reads one flat table (see [`IamConfig`]) and validates it without a network call.
impl<'de> Deserialize<'de> for IamConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_config::<D, RawConfig>(d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-secret-key";
    const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#;

    fn load(v: Value) -> std::result::Result<IamConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// Every AWS key, set.
    fn aws_keys(mut v: Value) -> Value {
        for (k, val) in [
            ("region", json!("us-east-1")),
            ("endpoint_url", json!("http://127.0.0.1:5000")),
            ("access_key_id", json!("AKIDEXAMPLE")),
            ("secret_access_key", json!(SECRET)),
            ("session_token", json!("FwoGZXIvYXdzEXAMPLEtoken")),
            (
                "assume_role_arn",
                json!("arn:aws:iam::123456789012:role/leasehold"),
            ),
            ("assume_role_external_id", json!("ops")),
            ("assume_role_session_name", json!("leasehold-iam")),
            ("max_attempts", json!(4)),
            ("attempt_timeout", json!("8s")),
        ] {
            v[k] = val;
        }
        v
    }

    #[test]
    fn every_iam_user_key_deserializes() {
        let c = load(aws_keys(json!({
            "credential_type": "iam_user",
            "policy_document": POLICY,
            "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
            "path": "/leasehold/",
            "permissions_boundary": "arn:aws:iam::123456789012:policy/boundary",
            "groups": ["report-readers"],
            "tags": {"team": "payments"},
            "inline_policy_name": "reports",
            "consistency_window": "45s",
            "sweep_service_specific_credentials": false,
            "ready_timeout": "1m",
        })))
        .unwrap();
        assert_eq!(c.credential_type(), "iam_user");
        assert_eq!(c.aws().max_attempts, Some(4));
        assert_eq!(c.aws().attempt_timeout, Some(Duration::from_secs(8)));
        let IamConfig::IamUser(u) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(u.inline_policy.as_deref(), Some(POLICY));
        assert_eq!(u.policy_arns, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
        assert_eq!(u.path, "/leasehold/");
        assert_eq!(
            u.permissions_boundary.as_deref(),
            Some("arn:aws:iam::123456789012:policy/boundary")
        );
        assert_eq!(u.groups, ["report-readers"]);
        assert_eq!(u.tags["team"], "payments");
        assert_eq!(u.inline_policy_name, "reports");
        assert_eq!(u.consistency_window, Duration::from_secs(45));
        assert!(!u.sweep_service_specific_credentials);
        assert_eq!(u.ready_timeout, Duration::from_secs(60));
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn every_sts_key_deserializes() {
        let c = load(aws_keys(json!({
            "credential_type": "assumed_role",
            "role_arn": "arn:aws:iam::123456789012:role/reports-reader",
            "external_id": "ext-1",
            "max_session_duration": "2h",
            "policy_document": POLICY,
            "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
            "ready_timeout": "750ms",
        })))
        .unwrap();
        let IamConfig::Sts(s) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(s.ready_timeout, Duration::from_millis(750));
        let StsCredentialType::AssumedRole(r) = &s.credential_type else {
            panic!("{c:?}")
        };
        assert_eq!(r.role_arn, "arn:aws:iam::123456789012:role/reports-reader");
        assert_eq!(r.external_id.as_deref(), Some("ext-1"));
        assert_eq!(r.max_session_duration, Duration::from_secs(7200));
        assert_eq!(r.session_policy.as_deref(), Some(POLICY));
        assert_eq!(r.policy_arns.len(), 1);
        assert!(!format!("{c:?}").contains(SECRET));

        let c = load(json!({"credential_type": "federation_token", "policy_document": POLICY, "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"]})).unwrap();
        assert_eq!(c.credential_type(), "federation_token");
        let c = load(json!({"credential_type": "session_token", "ready_timeout": 5})).unwrap();
        assert_eq!(c.credential_type(), "session_token");
    }

    #[test]
    fn refuses_an_unknown_key_or_type() {
        let e = load(json!({"credential_type": "iam_user", "colour": "red"})).unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = load(json!({"credential_type": "root_user"})).unwrap_err();
        assert!(
            e.starts_with("credential_type: unknown credential type"),
            "{e}"
        );
        let e = load(json!({"path": "/"})).unwrap_err();
        assert!(e.contains("missing field `credential_type`"), "{e}");
    }

    #[test]
    fn refuses_keys_the_credential_type_does_not_use() {
        let cases = [
            (
                "iam_user",
                "role_arn",
                json!("arn:aws:iam::123456789012:role/x"),
            ),
            ("iam_user", "max_session_duration", json!("1h")),
            ("assumed_role", "groups", json!(["g"])),
            (
                "assumed_role",
                "sweep_service_specific_credentials",
                json!(true),
            ),
            ("federation_token", "external_id", json!("x")),
            ("federation_token", "path", json!("/x/")),
            ("session_token", "policy_document", json!(POLICY)),
            ("session_token", "policy_arns", json!([])),
            ("session_token", "tags", json!({})),
        ];
        for (ct, key, value) in cases {
            let mut v = json!({"credential_type": ct});
            if ct == "assumed_role" {
                v["role_arn"] = json!("arn:aws:iam::123456789012:role/x");
            }
            v[key] = value;
            let e = load(v).unwrap_err();
            assert_eq!(e, format!("{key}: not used by credential_type {ct:?}"));
        }
        let e = load(json!({"credential_type": "assumed_role"})).unwrap_err();
        assert!(e.starts_with("role_arn: required"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_its_field() {
        for (ct, key) in [
            ("iam_user", "consistency_window"),
            ("iam_user", "ready_timeout"),
            ("assumed_role", "max_session_duration"),
            ("session_token", "attempt_timeout"),
        ] {
            let e = load(json!({
                "credential_type": ct,
                "role_arn": if ct == "assumed_role" { json!("arn:aws:iam::123456789012:role/x") } else { Value::Null },
                key: "5 parsecs",
            }))
            .map(|_| ());
            // `role_arn: null` counts as unset for the other types.
            let e = e.unwrap_err();
            assert!(e.starts_with(&format!("{key}: ")), "{e}");
        }
        let e = load(json!({"credential_type": "iam_user", "consistency_window": 0})).map(|_| ());
        assert!(e.is_ok(), "a zero consistency window is allowed: {e:?}");
        let e = load(json!({"credential_type": "iam_user", "ready_timeout": 0})).unwrap_err();
        assert!(e.starts_with("ready_timeout: "), "{e}");
    }

    #[test]
    fn values_are_checked_at_load_time() {
        for (v, want) in [
            (
                json!({"credential_type": "iam_user", "path": "no-slashes"}),
                "path",
            ),
            (
                json!({"credential_type": "iam_user", "policy_document": "{}"}),
                "inline_policy",
            ),
            (
                json!({"credential_type": "iam_user", "groups": ["a", "a"]}),
                "groups:",
            ),
            (
                json!({"credential_type": "assumed_role", "role_arn": "nope"}),
                "role_arn:",
            ),
        ] {
            let e = load(v).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn a_secret_is_never_in_error_text_or_debug() {
        let mut v = json!({"credential_type": "iam_user", "secret_access_key": SECRET});
        let e = load(v.clone()).unwrap_err();
        assert!(
            e.starts_with("access_key_id: missing") && !e.contains(SECRET),
            "{e}"
        );
        v["access_key_id"] = json!("AKIDEXAMPLE");
        v["role_arn"] = json!("arn:aws:iam::123456789012:role/x");
        let e = load(v.clone()).unwrap_err();
        assert!(
            e.starts_with("role_arn: not used") && !e.contains(SECRET),
            "{e}"
        );
        v.as_object_mut().unwrap().remove("role_arn");
        let c = load(v).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
