//! Settings of a [`MemoryDbProvider`](crate::MemoryDbProvider), checked offline.

use std::collections::BTreeMap;
use std::time::Duration;

use leasehold_aws::config::deserialize_config;
use leasehold_aws::user_config::{
    shows_sample_password, TagRules, UserFlatConfig, UserKeys, WithUserKeys,
};
use leasehold_aws::AwsConfig;
use leasehold_core::settings::shorten;
use leasehold_core::{DurationText, Error, ErrorKind, Result, StatementTemplate, StatementVars};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::statement::{check_tag, delete_user_name, CreateUserInput};

/// The default creation statement: MemoryDB `CreateUser` input.
pub const DEFAULT_CREATION_STATEMENT: &str = r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#;

/// The default revocation statement: MemoryDB `DeleteUser` input.
pub const DEFAULT_REVOCATION_STATEMENT: &str = r#"{"UserName":"{{username}}"}"#;

/// The most users a MemoryDB ACL holds (the `default` user included).
pub const MAX_USERS_PER_ACL: usize = 100;

/// The built-in ACL that lets every connection in as `default`, without a password.
pub const OPEN_ACCESS_ACL: &str = "open-access";

/// The most tags a MemoryDB resource carries.
const MAX_TAGS: usize = 50;

/// Tags the provider adds itself.
pub(crate) const OWN_TAGS: usize = 5;

/// MemoryDB's tag limits and rules, for the shared checks.
const TAG_RULES: TagRules = TagRules {
    service: "MemoryDB",
    max_tags: MAX_TAGS,
    own_tags: OWN_TAGS,
    check: check_tag,
};

leasehold_aws::user_config! {
    /// Settings of a [`MemoryDbProvider`](crate::MemoryDbProvider).
    ///
    /// Build it in code with [`MemoryDbConfig::new`] and the setters, or deserialize it from one
    /// flat table of a config file: the AWS keys ([`AwsConfig::KEYS`]) and the keys of the crate
    /// README's "Configuration keys" table (unknown keys are refused, the result is validated).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold_aws::AwsConfig;
    /// use leasehold_core::StatementTemplate;
    /// use leasehold_memorydb::MemoryDbConfig;
    ///
    /// let config = MemoryDbConfig::new("orders")
    ///     .aws(AwsConfig::new().region("eu-west-1"))
    ///     .acl_name("orders-acl")
    ///     .creation_statement(StatementTemplate::parse(
    ///         r#"{"UserName":"{{username}}","AccessString":"on ~orders:* +@read","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
    ///     ).unwrap())
    ///     .tag("team", "payments")
    ///     .readiness_endpoint("rediss://clustercfg.orders.abc123.memorydb.eu-west-1.amazonaws.com:6379", None)
    ///     .ready_timeout(Duration::from_secs(120));
    /// config.validate().unwrap();
    ///
    /// // Offline checks refuse what MemoryDB would refuse later.
    /// let e = MemoryDbConfig::new("orders").acl_name("open-access").validate().unwrap_err();
    /// assert_eq!(e.kind(), leasehold_core::ErrorKind::InvalidConfig);
    /// ```
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct MemoryDbConfig {
        /// The cluster the users are for.
        pub cluster_name: String,
        /// The ACL users are added to. `None`: the ACL the cluster uses, read at `validate` (or
        /// the first issue). When set, `validate` checks that the cluster uses it.
        pub acl_name: Option<String>,
        /// How long `revoke` waits on the user's state: it rides out a user that is `creating`
        /// or `modifying` (`InvalidUserStateFault`) and then waits for the deletion to show
        /// (default 60 s). While the user is still busy after that, revoke fails with a
        /// temporary error and the manager retries later. Keep it below the manager's
        /// `revoke_timeout` (the bound on one whole revoke call).
        pub user_state_wait: Duration => "Sets how long revoke waits on a busy or deleting user.",
        /// The first pause between polls of a user's or the ACL's status; later pauses grow up to
        /// eight times this (default 250 ms).
        pub poll_interval: Duration => "Sets the first pause between status polls.",
    }
}

impl MemoryDbConfig {
    /// Defaults for `cluster_name`: its own ACL, the default statements, no `AUTH` check, a
    /// 5 minute readiness bound.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        MemoryDbConfig {
            aws: AwsConfig::default(),
            cluster_name: cluster_name.into(),
            acl_name: None,
            creation_statement: StatementTemplate::parse(DEFAULT_CREATION_STATEMENT)
                .expect("the default creation statement parses"),
            revocation_statement: StatementTemplate::parse(DEFAULT_REVOCATION_STATEMENT)
                .expect("the default revocation statement parses"),
            tags: BTreeMap::new(),
            readiness_endpoint: None,
            readiness_ca_pem: None,
            ready_timeout: Duration::from_secs(300),
            user_state_wait: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
        }
    }

    /// Sets the ACL explicitly.
    #[must_use]
    pub fn acl_name(mut self, name: impl Into<String>) -> Self {
        self.acl_name = Some(name.into());
        self
    }

    /// Checks every setting without a network call: names, tags, bounds, the endpoint, and
    /// that both statements render to valid MemoryDB input.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        check_identifier("cluster_name", &self.cluster_name)?;
        if let Some(acl) = &self.acl_name {
            check_identifier("acl_name", acl)?;
            if acl == OPEN_ACCESS_ACL {
                return Err(Error::invalid_config(
                    "acl_name: open-access lets everyone in as the default user; create an ACL for the cluster and name it here",
                ));
            }
        }
        let waits = [
            ("user_state_wait", self.user_state_wait),
            ("poll_interval", self.poll_interval),
        ];
        self.user_settings().check(&TAG_RULES, &waits)?;
        self.check_statements()
    }

    /// Renders both statements with sample values and reads them as API input.
    fn check_statements(&self) -> Result<()> {
        let username = "lh-sample-user";
        let password = SecretString::from("Xq7PwnK4jT2vB8mR5sL0zW9c");
        let ctx = |field: &'static str| move |e: Error| e.with_context("field", field);
        let rendered = self
            .creation_statement
            .render(&StatementVars {
                username,
                password: Some(&password),
                expiration: Some(chrono::Utc::now()),
            })
            .map_err(ctx("creation_statement"))?;
        let input = CreateUserInput::from_json(rendered.expose_json(), "creation_statement")?;
        if input.user_name != username {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "creation_statement: UserName must be \"{{username}}\" (the lease's username; revoke deletes the user by it)",
            )
            .with_context("field", "creation_statement"));
        }
        let visible = std::iter::once(input.user_name.as_str())
            .chain([input.access_string.as_str()])
            .chain(
                input
                    .tags
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            )
            .collect::<Vec<_>>()
            .join("\n");
        if shows_sample_password(&visible, password.expose_secret()) {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "creation_statement: {{password}} may appear only in AuthenticationMode.Passwords (an access string, name or tag would expose it)",
            )
            .with_context("field", "creation_statement"));
        }
        if !input.has_password(&password) {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "creation_statement: AuthenticationMode.Passwords must contain \"{{password}}\" (the lease's generated password)",
            )
            .with_context("field", "creation_statement"));
        }
        if input.tags.len() + self.tags.len() + OWN_TAGS > MAX_TAGS {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                format!("creation_statement: with the configured tags and leasehold's own, a user would carry more than {MAX_TAGS} tags"),
            )
            .with_context("field", "creation_statement"));
        }
        let rendered = self
            .revocation_statement
            .render(&StatementVars {
                username,
                password: None,
                expiration: Some(chrono::Utc::now()),
            })
            .map_err(ctx("revocation_statement"))?;
        let name = delete_user_name(rendered.expose_json(), "revocation_statement")?;
        if name != username {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "revocation_statement: UserName must be \"{{username}}\"",
            )
            .with_context("field", "revocation_statement"));
        }
        Ok(())
    }
}

/// MemoryDB cluster and ACL names: a letter, then letters, digits and single hyphens, not
/// ending with a hyphen, at most 40 characters.
fn check_identifier(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{field}: {:?} is not a MemoryDB name (a letter, then letters, digits and single hyphens, at most 40)",
            shorten(id)
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Config files.

/// The keys of the provider besides the AWS and the shared ones, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_name: String,
    acl_name: Option<String>,
    user_state_wait: Option<DurationText>,
}

impl UserFlatConfig for RawConfig {
    type Config = MemoryDbConfig;

    fn into_config(self, aws: AwsConfig, shared: UserKeys) -> Result<MemoryDbConfig> {
        let mut c = MemoryDbConfig::new(self.cluster_name).aws(aws);
        c.acl_name = self.acl_name;
        shared.apply(c.user_fields_mut())?;
        if let Some(t) = self.user_state_wait {
            c.user_state_wait = t.parse_pause("user_state_wait", false)?;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Reads one flat table: the AWS keys ([`AwsConfig::KEYS`]) and the keys listed in the crate
/// README, unknown keys refused, durations as text. The result is validated
/// ([`MemoryDbConfig::validate`]) without a network call.
impl<'de> Deserialize<'de> for MemoryDbConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_config::<D, WithUserKeys<RawConfig>>(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_aws::user_config::testing::{
        assert_every_shared_key, every_shared_key, Loader, OwnKeys, SECRET,
    };

    fn base() -> MemoryDbConfig {
        MemoryDbConfig::new("orders").aws(AwsConfig::new().region("us-east-1"))
    }

    fn statement(s: &str) -> Result<()> {
        base()
            .creation_statement(StatementTemplate::parse(s)?)
            .validate()
    }

    #[test]
    fn defaults_validate() {
        base().validate().unwrap();
        base().acl_name("orders-acl").validate().unwrap();
    }

    #[test]
    fn names_bounds_tags_and_endpoint_are_checked() {
        for bad in [
            MemoryDbConfig::new("1orders"),
            MemoryDbConfig::new("a--b"),
            MemoryDbConfig::new(""),
            base().acl_name("open-access"),
            base().acl_name("acl_x"),
            base().ready_timeout(Duration::ZERO),
            base().poll_interval(Duration::ZERO),
            base().tag("leasehold:lease-id", "x"),
            base().tag("aws:x", "y"),
            base().tag("team\n", "x"),
            base().tag("team", "a\tb"),
            base().tag("team", "<b>"),
            base().readiness_endpoint("http://x:1", None),
            base().readiness_endpoint("rediss://u:p@x:1", None),
        ] {
            let e = bad.validate().expect_err(&format!("{bad:?}"));
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        let mut many = base();
        for i in 0..46 {
            many = many.tag(format!("k{i}"), "v");
        }
        assert!(many.validate().is_err());
        base()
            .tag("Team Name_1", "ä b:c/d=e+f-g@h.i")
            .validate()
            .unwrap();
        base()
            .readiness_endpoint("rediss://cluster.example:6379", Some("/etc/ca.pem".into()))
            .validate()
            .unwrap();
        let mut ca_only = base();
        ca_only.readiness_ca_pem = Some("/etc/ca.pem".into());
        assert!(ca_only.validate().is_err());
    }

    #[test]
    fn statements_are_checked_as_api_input() {
        let bad = [
            (
                r#"{"UserName":"fixed-user","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
                "UserName",
            ),
            (
                r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["a-fixed-password-0123"]}}"#,
                "{{password}}",
            ),
            (
                r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Engine":"redis"}"#,
                "Engine",
            ),
            (
                r#"{"UserName":"{{username}}","AccessString":"on ~* +@all"}"#,
                "AuthenticationMode",
            ),
            (
                r#"{"UserName":"{{username}}","AccessString":"+@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
                "on",
            ),
        ];
        for (s, needle) in bad {
            let e = statement(s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{e}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        statement(r#"{"UserName":"{{username}}","AccessString":"on ~app:* &* +@read","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Tags":[{"Key":"expires","Value":"{{expiration}}"}]}"#).unwrap();

        let e = base()
            .revocation_statement(
                StatementTemplate::parse(r#"{"UserName":"someone-else"}"#).unwrap(),
            )
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
        let e = base()
            .revocation_statement(
                StatementTemplate::parse(r#"{"UserName":"{{username}}","ACLName":"x"}"#).unwrap(),
            )
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ACLName"), "{e}");
    }

    #[test]
    fn debug_hides_aws_secrets() {
        let c = base().aws(AwsConfig::new().region("us-east-1").credentials(
            leasehold_aws::AwsCredentials::from_keys(
                "AKIDEXAMPLE",
                SecretString::from("wJalrXUtnFEMI-very-secret"),
            ),
        ));
        let s = format!("{c:?}");
        assert!(
            s.contains("AKIDEXAMPLE") && !s.contains("wJalrXUtnFEMI"),
            "{s}"
        );
    }

    fn load(v: serde_json::Value) -> std::result::Result<MemoryDbConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn loader() -> Loader<MemoryDbConfig> {
        Loader {
            minimal: serde_json::json!({"cluster_name": "orders"}),
            load,
        }
    }

    #[test]
    fn every_documented_key_deserializes() {
        let c = load(every_shared_key(serde_json::json!({
            "cluster_name": "orders",
            "acl_name": "orders-acl",
            "creation_statement": r#"{"UserName":"{{username}}","AccessString":"on ~orders:* +@read","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
            "revocation_statement": r#"{"UserName":"{{username}}"}"#,
            "user_state_wait": "45s",
        })))
        .unwrap();
        assert_every_shared_key(&c.aws, c.user_settings());
        assert_eq!(c.cluster_name, "orders");
        assert_eq!(c.acl_name.as_deref(), Some("orders-acl"));
        assert!(format!("{:?}", c.creation_statement).contains("on ~orders:* +@read"));
        assert!(format!("{:?}", c.revocation_statement).contains("UserName"));
        assert_eq!(c.user_state_wait, Duration::from_secs(45));
        assert!(!format!("{c:?}").contains(SECRET));

        let c = load(serde_json::json!({"cluster_name": "orders"})).unwrap();
        assert_eq!(c.acl_name, None);
        assert_eq!(c.ready_timeout, Duration::from_secs(300));
        assert_eq!(c.user_state_wait, Duration::from_secs(60));
    }

    #[test]
    fn refuses_a_missing_cluster() {
        let e = load(serde_json::json!({"acl_name": "orders-acl"})).unwrap_err();
        assert!(e.contains("missing field `cluster_name`"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_at_load_time_naming_their_key() {
        // The manager's revoke_timeout is not a provider key; poll_interval is set in code only.
        loader().check_refusals(&OwnKeys {
            unknown: &["revoke_timeout", "poll_interval"],
            durations: &[("user_state_wait", true)],
            refusals: &[
                ("acl_name", serde_json::json!("open-access"), "acl_name:"),
                ("cluster_name", serde_json::json!("a--b"), "cluster_name:"),
                (
                    "revocation_statement",
                    serde_json::json!("{\"UserName\":\"x\"}"),
                    "revocation_statement:",
                ),
            ],
        });
    }
}
