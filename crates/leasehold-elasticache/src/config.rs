//! Settings of an [`ElastiCacheProvider`](crate::ElastiCacheProvider), checked offline.
//!
//! About 700 lines: 170 are its unit tests (every documented key, every refusal).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use leasehold_aws::config::deserialize_config;
use leasehold_aws::user_config::{
    shows_sample_password, TagRules, UserFlatConfig, UserKeys, WithUserKeys,
};
use leasehold_aws::AwsConfig;
use leasehold_core::settings::shorten;
use leasehold_core::{DurationText, Error, NameRule, Result, StatementTemplate};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::acl::parse_access_string;

/// The default creation statement (the issue's, and Infisical's ElastiCache default).
pub const DEFAULT_CREATION_STATEMENT: &str = r#"{"UserId":"{{username}}","UserName":"{{username}}","Engine":"redis","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#;

/// The default revocation statement.
pub const DEFAULT_REVOCATION_STATEMENT: &str = r#"{"UserId":"{{username}}"}"#;

/// The members of ElastiCache `CreateUser` input.
pub(crate) const CREATE_USER_KEYS: &[&str] = &[
    "UserId",
    "UserName",
    "Engine",
    "Passwords",
    "AccessString",
    "NoPasswordRequired",
    "Tags",
    "AuthenticationMode",
];

/// The members of ElastiCache `DeleteUser` input.
pub(crate) const DELETE_USER_KEYS: &[&str] = &["UserId"];

/// The most users an ElastiCache user group holds (AWS quota, not adjustable).
pub const MAX_USERS_PER_GROUP: usize = 100;

/// The most tags an ElastiCache resource carries.
const MAX_TAGS: usize = 50;

/// What the users are for: a replication group or a serverless cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A replication group id (node-based cluster).
    ReplicationGroup(String),
    /// A serverless cache name.
    ServerlessCache(String),
}

impl Target {
    /// The id or name.
    pub fn id(&self) -> &str {
        match self {
            Target::ReplicationGroup(id) | Target::ServerlessCache(id) => id,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::ReplicationGroup(id) => format!("replication group {id:?}"),
            Target::ServerlessCache(id) => format!("serverless cache {id:?}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The cache engine of the user group.
///
/// The default is `redis`, matching the default creation statement (`"Engine":"redis"`) and
/// the engine of user groups made for Redis OSS caches. Set `valkey` for a Valkey user group
/// and give a creation statement with `"Engine":"valkey"` (or none: the configured engine is
/// used when the statement names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Valkey.
    Valkey,
    /// Redis OSS.
    #[default]
    Redis,
}

impl Engine {
    /// `valkey` or `redis`, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Valkey => "valkey",
            Engine::Redis => "redis",
        }
    }
}

leasehold_aws::user_config! {
    /// Settings of an [`ElastiCacheProvider`](crate::ElastiCacheProvider).
    ///
    /// Build it in code with [`ElastiCacheConfig::new`] and the setters, or deserialize it from one
    /// flat table of a config file: the AWS keys ([`AwsConfig::KEYS`]) and the keys of the crate
    /// README's "Configuration keys" table (unknown keys are refused, the result is validated).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold_elasticache::{ElastiCacheConfig, Engine, Target};
    ///
    /// let config = ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
    ///     .engine(Engine::Redis)
    ///     .tag("team", "payments")
    ///     .ready_timeout(Duration::from_secs(120));
    /// config.validate().unwrap();
    /// ```
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct ElastiCacheConfig {
        /// The cache the users are for.
        pub target: Target,
        /// The user group attached to the target; every user is added to it.
        pub user_group_id: String,
        /// The engine of the user group.
        pub engine: Engine => "Sets the engine.",
        /// Accept a user group whose `default` user needs no password and may do everything
        /// (default false: such a group lets anyone in, and leased credentials add nothing).
        pub allow_open_default_user: bool => "Sets whether an open `default` user is accepted.",
        /// How long `revoke` waits, at most, after `DeleteUser` for the user to be gone (a user
        /// that is `deleting` can still log in). Zero returns as soon as `DeleteUser` is accepted.
        /// Default 60 s; when it runs out, revoke still succeeds (the deletion is under way).
        pub revoke_wait: Duration => "Sets how long revoke waits for the user to be gone.",
    }
}

impl ElastiCacheConfig {
    /// Defaults for `target` and its `user_group_id`: engine `redis`, the default statements,
    /// a 5 minute readiness bound, no `AUTH` check, open default users refused.
    pub fn new(target: Target, user_group_id: impl Into<String>) -> Self {
        ElastiCacheConfig {
            aws: AwsConfig::default(),
            target,
            user_group_id: user_group_id.into(),
            engine: Engine::default(),
            creation_statement: StatementTemplate::parse(DEFAULT_CREATION_STATEMENT)
                .expect("the default creation statement parses"),
            revocation_statement: StatementTemplate::parse(DEFAULT_REVOCATION_STATEMENT)
                .expect("the default revocation statement parses"),
            tags: BTreeMap::new(),
            readiness_endpoint: None,
            readiness_ca_pem: None,
            ready_timeout: Duration::from_secs(300),
            allow_open_default_user: false,
            revoke_wait: Duration::from_secs(60),
        }
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        let target_ok = match &self.target {
            Target::ReplicationGroup(id) => check_identifier(id, 40),
            Target::ServerlessCache(name) => check_identifier(name, 40),
        };
        if !target_ok {
            return Err(Error::invalid_config(format!(
                "target: {} is not an ElastiCache identifier (a letter, then letters, digits and single hyphens, at most 40)",
                self.target
            )));
        }
        if !check_identifier(&self.user_group_id, 40) {
            return Err(Error::invalid_config(format!(
                "user_group_id: {:?} is not an ElastiCache identifier (a letter, then letters, digits and single hyphens, at most 40)",
                shorten(&self.user_group_id)
            )));
        }
        // revoke_wait may be zero: revoke then returns as soon as DeleteUser is accepted.
        self.user_settings().check(&TAG_RULES, &[])?;
        self.check_statements()
    }

    /// Checks that the statements render to valid `CreateUser` / `DeleteUser` input.
    fn check_statements(&self) -> Result<()> {
        let pw = SecretString::from("Xq7PwnK4jT2vB8mR5sL0zW9c");
        let username = "lh-sample-user";
        let rendered = self
            .creation_statement
            .render(&leasehold_core::StatementVars {
                username,
                password: Some(&pw),
                expiration: Some(chrono::Utc::now()),
            })
            .map_err(|e| Error::invalid_config(format!("creation_statement: {}", e.message())))?;
        CreateUserStatement::from_rendered(rendered.expose_json(), self.engine)
            .map_err(|e| Error::invalid_config(format!("creation_statement: {}", e.message())))
            .and_then(|s| {
                let visible = std::iter::once(s.user_name.as_str())
                    .chain([s.access_string.as_str(), s.engine.as_str()])
                    .chain(s.tags.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
                    .collect::<Vec<_>>()
                    .join("\n");
                if shows_sample_password(&visible, pw.expose_secret()) {
                    return Err(Error::invalid_config(
                        "creation_statement: {{password}} may appear only in Passwords (an access string, name or tag would expose it)",
                    ));
                }
                if s.user_id != username {
                    Err(Error::invalid_config(
                        "creation_statement: UserId must be \"{{username}}\" (revoke deletes the user by the lease's username)",
                    ))
                } else {
                    Ok(())
                }
            })?;
        let del = self
            .revocation_statement
            .render(&leasehold_core::StatementVars {
                username,
                password: None,
                expiration: None,
            })
            .map_err(|e| Error::invalid_config(format!("revocation_statement: {}", e.message())))?;
        del.check_shape(&["UserId"], DELETE_USER_KEYS)
            .map_err(|e| Error::invalid_config(format!("revocation_statement: {}", e.message())))?;
        if del.expose_json()["UserId"].as_str() != Some(username) {
            return Err(Error::invalid_config(
                "revocation_statement: UserId must be \"{{username}}\"",
            ));
        }
        Ok(())
    }
}

/// `CreateUser` input taken from a rendered creation statement. Holds the passwords, so its
/// `Debug` shows none of them.
pub(crate) struct CreateUserStatement {
    pub user_id: String,
    pub user_name: String,
    pub engine: String,
    pub access_string: String,
    pub passwords: Vec<SecretString>,
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for CreateUserStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserStatement")
            .field("user_id", &self.user_id)
            .field("user_name", &self.user_name)
            .field("engine", &self.engine)
            .field("access_string", &self.access_string)
            .field("passwords", &self.passwords.len())
            .finish_non_exhaustive()
    }
}

impl CreateUserStatement {
    /// Reads and checks a rendered statement: required keys present, unknown keys refused,
    /// password authentication only, an access string that parses.
    pub(crate) fn from_rendered(v: &serde_json::Value, engine: Engine) -> Result<Self> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::invalid_config("it must be a JSON object"))?;
        let unknown: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !CREATE_USER_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid_config(format!(
                "key(s) {} are not CreateUser input; allowed: {}",
                unknown.join(", "),
                CREATE_USER_KEYS.join(", ")
            )));
        }
        let string = |key: &str, required: bool| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) if required => Err(Error::invalid_config(
                    format!("the required key {key} is missing"),
                )),
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid_config(format!("{key} must be a string"))),
            }
        };
        let user_id = string("UserId", true)?.unwrap_or_default();
        let user_name = string("UserName", true)?.unwrap_or_default();
        let access_string = string("AccessString", true)?.unwrap_or_default();
        let engine = string("Engine", false)?.unwrap_or_else(|| engine.as_str().to_string());
        if !matches!(engine.to_ascii_lowercase().as_str(), "redis" | "valkey") {
            return Err(Error::invalid_config(
                "Engine must be \"redis\" or \"valkey\"",
            ));
        }
        let user_id_norm = NameRule::ElastiCacheUserId.normalize(&user_id);
        NameRule::ElastiCacheUserId
            .check(&user_id_norm)
            .map_err(|e| Error::invalid_config(format!("UserId: {}", e.message())))?;
        NameRule::ElastiCacheUserName
            .check(&user_name)
            .map_err(|e| Error::invalid_config(format!("UserName: {}", e.message())))?;
        parse_access_string(&access_string)?;
        if matches!(
            obj.get("NoPasswordRequired"),
            Some(serde_json::Value::Bool(true))
        ) {
            return Err(Error::invalid_config(
                "NoPasswordRequired: a leased credential needs a password",
            ));
        }
        let mut passwords = password_list(obj.get("Passwords"), "Passwords")?;
        if let Some(mode) = obj.get("AuthenticationMode") {
            let mode = mode
                .as_object()
                .ok_or_else(|| Error::invalid_config("AuthenticationMode must be an object"))?;
            if let Some(k) = mode
                .keys()
                .find(|k| !matches!(k.as_str(), "Type" | "Passwords"))
            {
                return Err(Error::invalid_config(format!(
                    "AuthenticationMode.{k} is not CreateUser input; allowed: Type, Passwords"
                )));
            }
            match mode.get("Type").and_then(|t| t.as_str()) {
                Some("password") | None => {}
                Some(_) => {
                    return Err(Error::invalid_config(
                        "AuthenticationMode.Type must be \"password\" (IAM and no-password users are not leased)",
                    ))
                }
            }
            let more = password_list(mode.get("Passwords"), "AuthenticationMode.Passwords")?;
            if !more.is_empty() && !passwords.is_empty() {
                return Err(Error::invalid_config(
                    "give the passwords either in Passwords or in AuthenticationMode.Passwords, not both",
                ));
            }
            passwords.extend(more);
        }
        if passwords.is_empty() {
            return Err(Error::invalid_config(
                "the required key Passwords (or AuthenticationMode.Passwords) is missing",
            ));
        }
        if passwords.len() > 2 {
            return Err(Error::invalid_config("a user has at most two passwords"));
        }
        let mut tags = Vec::new();
        if let Some(t) = obj.get("Tags") {
            let arr = t
                .as_array()
                .ok_or_else(|| Error::invalid_config("Tags must be a list of {Key, Value}"))?;
            for item in arr {
                let key = item.get("Key").and_then(|k| k.as_str());
                let value = item.get("Value").and_then(|k| k.as_str()).unwrap_or("");
                let Some(key) = key else {
                    return Err(Error::invalid_config("Tags must be a list of {Key, Value}"));
                };
                tags.push((key.to_string(), value.to_string()));
            }
        }
        Ok(CreateUserStatement {
            user_id: user_id_norm,
            user_name,
            engine: engine.to_ascii_lowercase(),
            access_string,
            passwords,
            tags,
        })
    }
}

fn password_list(v: Option<&serde_json::Value>, key: &str) -> Result<Vec<SecretString>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|p| {
                let s = p.as_str().ok_or_else(|| {
                    Error::invalid_config(format!("{key} must be a list of strings"))
                })?;
                if !(16..=128).contains(&s.chars().count()) {
                    // Never quote the value: it is a password.
                    return Err(Error::invalid_config(format!(
                        "{key}: a password has 16 to 128 characters"
                    )));
                }
                Ok(SecretString::from(s.to_string()))
            })
            .collect(),
        Some(_) => Err(Error::invalid_config(format!(
            "{key} must be a list of strings"
        ))),
    }
}

/// ElastiCache identifiers: a letter, then letters, digits and hyphens, no trailing or double
/// hyphen.
pub(crate) fn check_identifier(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--")
}

/// How many `leasehold:*` tags the provider puts on each user.
pub(crate) const OWN_TAGS: usize = 5;

/// ElastiCache's tag limits and rules, for the shared checks.
const TAG_RULES: TagRules = TagRules {
    service: "ElastiCache",
    max_tags: MAX_TAGS,
    own_tags: OWN_TAGS,
    check: check_tag,
};

/// Checks one extra tag; the message follows `tags: `.
fn check_tag(k: &str, v: &str) -> std::result::Result<(), String> {
    if k.is_empty() || k.chars().count() > 128 || k.starts_with("aws:") {
        return Err(format!(
            "key {:?} must be 1 to 128 characters and not start with aws:",
            shorten(k)
        ));
    }
    if k.starts_with("leasehold:") {
        return Err(format!(
            "key {:?} is reserved for the provider's own tags",
            shorten(k)
        ));
    }
    if v.chars().count() > 256 {
        return Err(format!(
            "the value of {:?} is longer than 256 characters",
            shorten(k)
        ));
    }
    if !k.chars().all(tag_char) || !v.chars().all(tag_char) {
        return Err(format!(
            "{:?}: keys and values may hold letters, digits, spaces and _ . : / = + - @",
            shorten(k)
        ));
    }
    Ok(())
}

/// What AWS accepts in tag keys and values: letters, digits, space separators, `_.:/=+-@`.
fn tag_char(c: char) -> bool {
    c.is_alphanumeric()
        || (c.is_whitespace() && !c.is_control())
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

// ---------------------------------------------------------------------------------------------
// Config files.

/// The keys of the provider besides the AWS and the shared ones, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    replication_group_id: Option<String>,
    serverless_cache_name: Option<String>,
    user_group_id: String,
    #[serde(default)]
    engine: Engine,
    #[serde(default)]
    allow_open_default_user: bool,
    revoke_wait: Option<DurationText>,
}

impl UserFlatConfig for RawConfig {
    type Config = ElastiCacheConfig;

    fn into_config(self, aws: AwsConfig, shared: UserKeys) -> Result<ElastiCacheConfig> {
        let target = match (self.replication_group_id, self.serverless_cache_name) {
            (Some(id), None) => Target::ReplicationGroup(id),
            (None, Some(name)) => Target::ServerlessCache(name),
            (Some(_), Some(_)) => {
                return Err(Error::invalid_config(
                    "serverless_cache_name: set either replication_group_id or serverless_cache_name, not both",
                ))
            }
            (None, None) => {
                return Err(Error::invalid_config(
                    "replication_group_id: missing (or set serverless_cache_name)",
                ))
            }
        };
        let mut c = ElastiCacheConfig::new(target, self.user_group_id)
            .aws(aws)
            .engine(self.engine)
            .allow_open_default_user(self.allow_open_default_user);
        shared.apply(c.user_fields_mut())?;
        if let Some(t) = self.revoke_wait {
            c.revoke_wait = t.parse_pause("revoke_wait", true)?;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Reads one flat table: the AWS keys ([`AwsConfig::KEYS`]) and the keys listed in the crate
/// README, unknown keys refused, durations as text. The result is validated
/// ([`ElastiCacheConfig::validate`]) without a network call.
impl<'de> Deserialize<'de> for ElastiCacheConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_config::<D, WithUserKeys<RawConfig>>(d)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_aws::user_config::testing::{
        assert_every_shared_key, every_shared_key, Loader, OwnKeys, SECRET,
    };

    fn base() -> ElastiCacheConfig {
        ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
            .aws(AwsConfig::new().region("us-east-1"))
    }

    fn with_statement(s: &str) -> Result<()> {
        base()
            .creation_statement(StatementTemplate::parse(s)?)
            .validate()
    }

    #[test]
    fn defaults_validate() {
        base().validate().unwrap();
        assert_eq!(base().ready_timeout, Duration::from_secs(300));
        assert!(!base().allow_open_default_user);
    }

    #[test]
    fn refuses_bad_identifiers_and_tags() {
        let bad = ElastiCacheConfig::new(Target::ReplicationGroup("1x".into()), "g");
        assert!(bad.validate().is_err());
        let bad = ElastiCacheConfig::new(Target::ServerlessCache("ok".into()), "g--x");
        assert!(bad.validate().is_err());
        assert!(base().tag("leasehold:x", "y").validate().is_err());
        for (k, v) in [
            ("team\n", "x"),
            ("team", "a\tb"),
            ("te\"am", "x"),
            ("team", "<b>"),
        ] {
            assert!(base().tag(k, v).validate().is_err(), "{k:?}={v:?}");
        }
        assert!(base()
            .tag("Team Name_1", "ä b:c/d=e+f-g@h.i")
            .validate()
            .is_ok());
        assert!(base().tag("aws:x", "y").validate().is_err());
        assert!(base()
            .readiness_endpoint("http://x:1", None)
            .validate()
            .is_err());
        assert!(base()
            .readiness_endpoint("rediss://u:p@x:1", None)
            .validate()
            .is_err());
        base()
            .readiness_endpoint("rediss://cache.example:6379", None)
            .validate()
            .unwrap();
    }

    #[test]
    fn statement_shape_is_checked() {
        // Missing AccessString.
        let e = with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("AccessString"), "{e}");
        // Unknown key.
        let e = with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Color":"red"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Color"), "{e}");
        // Garbage access string.
        let e = with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@everything"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("access string"), "{e}");
        // No password.
        assert!(with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","NoPasswordRequired":true,"AccessString":"on ~* +@all"}"#,
        )
        .is_err());
        // UserId not the username.
        assert!(with_statement(
            r#"{"UserId":"fixed","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        )
        .is_err());
        // AuthenticationMode form is fine.
        with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","Engine":"valkey","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"AccessString":"on ~app:* +@read"}"#,
        )
        .unwrap();
        // IAM mode is not leased.
        assert!(with_statement(
            r#"{"UserId":"{{username}}","UserName":"{{username}}","AuthenticationMode":{"Type":"iam"},"AccessString":"on ~* +@all"}"#,
        )
        .is_err());
    }

    fn load(v: serde_json::Value) -> std::result::Result<ElastiCacheConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    fn loader() -> Loader<ElastiCacheConfig> {
        Loader {
            minimal: serde_json::json!({"replication_group_id": "orders", "user_group_id": "orders-users"}),
            load,
        }
    }

    #[test]
    fn every_documented_key_deserializes() {
        let creation = r#"{"UserId":"{{username}}","UserName":"{{username}}","Engine":"valkey","Passwords":["{{password}}"],"AccessString":"on ~orders:* +@read"}"#;
        let c = load(every_shared_key(serde_json::json!({
            "replication_group_id": "orders",
            "user_group_id": "orders-users",
            "engine": "valkey",
            "creation_statement": creation,
            "revocation_statement": "{\"UserId\":\"{{username}}\"}",
            "allow_open_default_user": true,
            "revoke_wait": "1500ms",
        })))
        .unwrap();
        assert_every_shared_key(&c.aws, c.user_settings());
        assert_eq!(c.target, Target::ReplicationGroup("orders".into()));
        assert_eq!(c.user_group_id, "orders-users");
        assert_eq!(c.engine, Engine::Valkey);
        assert!(format!("{:?}", c.creation_statement).contains("on ~orders:* +@read"));
        assert!(format!("{:?}", c.revocation_statement).contains("UserId"));
        assert!(c.allow_open_default_user);
        assert_eq!(c.revoke_wait, Duration::from_millis(1500));
        assert!(!format!("{c:?}").contains(SECRET));

        let c = load(serde_json::json!({"serverless_cache_name": "orders", "user_group_id": "g", "revoke_wait": 0})).unwrap();
        assert_eq!(c.target, Target::ServerlessCache("orders".into()));
        assert_eq!(c.revoke_wait, Duration::ZERO);
        assert_eq!(c.ready_timeout, Duration::from_secs(300));
        assert_eq!(c.engine, Engine::Redis);
    }

    #[test]
    fn bad_values_are_refused_at_load_time_naming_their_key() {
        // The nested schema of earlier versions is gone: `aws` is an unknown key.
        loader().check_refusals(&OwnKeys {
            unknown: &["aws"],
            durations: &[("revoke_wait", false)],
            refusals: &[
                (
                    "engine",
                    serde_json::json!("memcached"),
                    "engine: unknown variant",
                ),
                ("user_group_id", serde_json::json!("g--x"), "user_group_id:"),
                (
                    "revocation_statement",
                    serde_json::json!("{\"UserId\":\"x\"}"),
                    "revocation_statement:",
                ),
            ],
        });
    }

    #[test]
    fn refuses_both_or_neither_target() {
        let e = loader().error("serverless_cache_name", "orders".into());
        assert!(e.starts_with("serverless_cache_name: set either"), "{e}");
        let e = load(serde_json::json!({"user_group_id": "g"})).unwrap_err();
        assert!(e.starts_with("replication_group_id: missing"), "{e}");
    }
}
