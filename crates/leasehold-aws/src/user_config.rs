//! What the configs of the AWS user providers (ElastiCache, MemoryDB) share: the creation and
//! revocation statements, the extra tags, the `AUTH` readiness check and its bound.
//!
//! Both configs keep these as public fields of the same names: [`user_config!`] declares them
//! (with the provider's own fields), writes their builder setters and the two helpers that hand
//! the fields to the code here, which reads the shared keys of a config file ([`UserKeys`]) and
//! checks the shared settings ([`UserSettings::check`]). What differs between the services
//! (their tag rules, their own waits) comes in as parameters. The `testing` module (feature
//! `testing`, which only the providers' dev-dependencies enable) holds the checks both configs'
//! unit tests run.
//!
//! [`user_config!`]: crate::user_config!

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_core::settings::{from_map, take_keys};
use leasehold_core::{DurationText, Error, Result, StatementTemplate};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::config::{AwsConfig, FlatConfig};

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

/// The tag rules of one AWS service, for [`UserSettings::check`].
#[derive(Debug, Clone, Copy)]
pub struct TagRules {
    /// The service as errors name it (`ElastiCache`).
    pub service: &'static str,
    /// The most tags a resource of the service carries.
    pub max_tags: usize,
    /// How many of them the provider puts on each user itself (`leasehold:*`).
    pub own_tags: usize,
    /// Checks one extra tag; its message follows `tags: ` in the error.
    pub check: fn(&str, &str) -> std::result::Result<(), String>,
}

impl TagRules {
    /// Checks the number of extra tags and each of them.
    pub fn check_tags(&self, tags: &BTreeMap<String, String>) -> Result<()> {
        let TagRules {
            service,
            max_tags,
            own_tags,
            check,
        } = *self;
        if tags.len() + own_tags > max_tags {
            return Err(Error::invalid_config(format!(
                "tags: at most {} extra tags ({service} allows {max_tags}, leasehold uses {own_tags})",
                max_tags - own_tags
            )));
        }
        for (k, v) in tags {
            check(k, v).map_err(|m| Error::invalid_config(format!("tags: {m}")))?;
        }
        Ok(())
    }
}

/// The shared settings of one config, borrowed for [`UserSettings::check`] (the private
/// `user_settings` method that [`user_config!`](crate::user_config!) writes lends them).
#[derive(Debug, Clone, Copy)]
pub struct UserSettings<'a> {
    /// The extra tags.
    pub tags: &'a BTreeMap<String, String>,
    /// The `AUTH` check endpoint.
    pub readiness_endpoint: Option<&'a str>,
    /// The CA of the endpoint's certificate.
    pub readiness_ca_pem: Option<&'a Path>,
    /// The readiness bound.
    pub ready_timeout: Duration,
}

impl UserSettings<'_> {
    /// Checks the shared settings without a network call: `ready_timeout` and the provider's
    /// own `waits` (name, value) are positive, the tags follow `rules`, the readiness endpoint
    /// is a `redis(s)://host:port` URL and its CA comes with it.
    pub fn check(&self, rules: &TagRules, waits: &[(&str, Duration)]) -> Result<()> {
        let bounds = std::iter::once(("ready_timeout", self.ready_timeout));
        for (name, d) in bounds.chain(waits.iter().copied()) {
            if d.is_zero() {
                return Err(Error::invalid_config(format!("{name}: must be positive")));
            }
        }
        rules.check_tags(self.tags)?;
        check_readiness(self.readiness_endpoint, self.readiness_ca_pem)
    }
}

/// Checks a readiness endpoint and its CA, as the user providers and the static-role targets
/// take them: the endpoint is a `redis(s)://host:port` URL ([`check_readiness_url`]), and a CA
/// is a non-empty path that comes with an endpoint.
pub fn check_readiness(endpoint: Option<&str>, ca_pem: Option<&Path>) -> Result<()> {
    if let Some(url) = endpoint {
        check_readiness_url(url)?;
    }
    match ca_pem {
        Some(_) if endpoint.is_none() => Err(Error::invalid_config(
            "readiness_ca_pem: set readiness_endpoint too (the CA is only used for the AUTH check)",
        )),
        Some(path) if path.as_os_str().is_empty() => {
            Err(Error::invalid_config("readiness_ca_pem: empty path"))
        }
        _ => Ok(()),
    }
}

/// Checks a readiness endpoint: `rediss://host:port` (or `redis://`, for test setups), with no
/// user, password or path in it.
///
/// ```
/// use leasehold_aws::user_config::check_readiness_url;
///
/// check_readiness_url("rediss://cache.example:6379").unwrap();
/// let e = check_readiness_url("rediss://user:pw@cache.example:6379").unwrap_err();
/// assert!(e.message().starts_with("readiness_endpoint: "), "{e}");
/// ```
pub fn check_readiness_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("rediss://")
        .or_else(|| url.strip_prefix("redis://"));
    let ok = rest.is_some_and(|r| {
        let hostport = r.trim_end_matches('/');
        !hostport.is_empty()
            && !hostport.contains('@')
            && !hostport.contains('/')
            && hostport.chars().all(|c| c.is_ascii_graphic())
    });
    if ok && url.len() <= 2048 {
        Ok(())
    } else {
        let shown: String = url.chars().take(60).collect();
        Err(Error::invalid_config(format!(
            "readiness_endpoint: {shown:?} must be rediss://host:port (no user or password in it)"
        )))
    }
}

/// Whether `text` carries any eight characters in a row of `sample`: when a statement is
/// checked with a sample password, the password must reach only the password fields, never a
/// name, access string or tag that errors and listings may show.
///
/// ```
/// use leasehold_aws::user_config::shows_sample_password;
///
/// let sample = "Xq7PwnK4jT2vB8mR5sL0zW9c";
/// assert!(shows_sample_password("on ~jT2vB8mR5s* +@all", sample));
/// assert!(!shows_sample_password("on ~* +@all", sample));
/// ```
pub fn shows_sample_password(text: &str, sample: &str) -> bool {
    let chars: Vec<char> = sample.chars().collect();
    chars
        .windows(8)
        .any(|w| text.contains(&w.iter().collect::<String>()))
}

/// The shared fields of one config, lent for writing to [`UserKeys::apply`] (the private
/// `user_fields_mut` method that [`user_config!`](crate::user_config!) writes lends them).
#[derive(Debug)]
pub struct UserFieldsMut<'a> {
    /// The creation statement.
    pub creation_statement: &'a mut StatementTemplate,
    /// The revocation statement.
    pub revocation_statement: &'a mut StatementTemplate,
    /// The extra tags.
    pub tags: &'a mut BTreeMap<String, String>,
    /// The `AUTH` check endpoint.
    pub readiness_endpoint: &'a mut Option<String>,
    /// The CA of the endpoint's certificate.
    pub readiness_ca_pem: &'a mut Option<PathBuf>,
    /// The readiness bound.
    pub ready_timeout: &'a mut Duration,
}

/// The shared keys ([`UserKeys::KEYS`]) as written in a config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserKeys {
    creation_statement: Option<String>,
    revocation_statement: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    readiness_endpoint: Option<String>,
    readiness_ca_pem: Option<PathBuf>,
    ready_timeout: Option<DurationText>,
}

impl UserKeys {
    /// The shared keys in a config file.
    pub const KEYS: &'static [&'static str] = &[
        "creation_statement",
        "revocation_statement",
        "tags",
        "readiness_endpoint",
        "readiness_ca_pem",
        "ready_timeout",
    ];

    /// Parses the statements and the bound (errors name their key) and sets the keys that are
    /// present; unset keys leave the defaults. Values are checked later, by the config's
    /// `validate`.
    pub fn apply(self, to: UserFieldsMut<'_>) -> Result<()> {
        if let Some(s) = self.creation_statement {
            *to.creation_statement = StatementTemplate::parse_setting("creation_statement", &s)?;
        }
        if let Some(s) = self.revocation_statement {
            *to.revocation_statement =
                StatementTemplate::parse_setting("revocation_statement", &s)?;
        }
        *to.tags = self.tags;
        *to.readiness_endpoint = self.readiness_endpoint;
        *to.readiness_ca_pem = self.readiness_ca_pem;
        if let Some(t) = self.ready_timeout {
            *to.ready_timeout = t.parse_pause("ready_timeout", false)?;
        }
        Ok(())
    }
}

/// The own keys of a user provider's config file, read beside the AWS keys and the shared
/// [`UserKeys`]: `deserialize_config::<D, WithUserKeys<R>>` reads all three
/// ([`deserialize_config`](crate::config::deserialize_config)).
pub trait UserFlatConfig: DeserializeOwned {
    /// The provider's config type.
    type Config;

    /// Checks the keys (names in errors are the keys) and builds the config, validated.
    fn into_config(self, aws: AwsConfig, shared: UserKeys) -> Result<Self::Config>;
}

/// A user provider's own keys `R` and the shared [`UserKeys`], split by key name from one
/// table (after [`deserialize_flat`](crate::config::deserialize_flat) took the AWS keys): a
/// key that belongs to neither is refused by `R`.
pub struct WithUserKeys<R> {
    shared: UserKeys,
    own: R,
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for WithUserKeys<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut own = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let shared = take_keys(&mut own, UserKeys::KEYS);
        Ok(WithUserKeys {
            shared: from_map(shared).map_err(D::Error::custom)?,
            own: from_map(own).map_err(D::Error::custom)?,
        })
    }
}

impl<R: UserFlatConfig> FlatConfig for WithUserKeys<R> {
    type Config = R::Config;

    fn into_config(self, aws: AwsConfig) -> Result<R::Config> {
        self.own.into_config(aws, self.shared)
    }
}

/// Defines the config struct of an AWS user provider: its attributes and own fields as given,
/// then the fields every such config shares (`aws` first; `creation_statement`,
/// `revocation_statement`, `tags`, `readiness_endpoint`, `readiness_ca_pem`, `ready_timeout`
/// last), their builder setters, and two private helpers: `user_settings()`, the fields to
/// read for [`UserSettings::check`], and `user_fields_mut()`, the fields to write for
/// [`UserKeys::apply`].
///
/// An own field written `pub name: Type => "Sets the name.",` gets a setter of the same
/// name that takes a `Type`, with that doc.
#[doc(hidden)]
#[macro_export]
macro_rules! user_config {
    (
        $(#[$meta:meta])*
        pub struct $config:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty $(=> $setter_doc:literal)?,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $config {
            /// AWS credentials, region and endpoint.
            pub aws: $crate::AwsConfig,
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
            /// The `CreateUser` input as a JSON template (`username`, `password`,
            /// `expiration`).
            pub creation_statement: ::leasehold_core::StatementTemplate,
            /// The `DeleteUser` input as a JSON template (`username`).
            pub revocation_statement: ::leasehold_core::StatementTemplate,
            /// Extra tags on every user (the provider adds the `leasehold:*` tags itself).
            pub tags: ::std::collections::BTreeMap<String, String>,
            /// A `rediss://host:port` URL of the cache or cluster, to confirm each new
            /// credential with `AUTH` (optional). `redis://` (no TLS) is accepted for test
            /// setups; ElastiCache user access control and MemoryDB need TLS.
            pub readiness_endpoint: Option<String>,
            /// A PEM file with the CA that signs the endpoint's certificate (default: the
            /// system roots).
            pub readiness_ca_pem: Option<::std::path::PathBuf>,
            /// How long `create` waits, at most, for the user (and its user group or ACL) to be
            /// `active` and the `AUTH` check to pass (default 5 min).
            pub ready_timeout: ::std::time::Duration,
        }

        impl $config {
            $($(
                #[doc = $setter_doc]
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )?)*

            /// Sets the AWS settings.
            #[must_use]
            pub fn aws(mut self, aws: $crate::AwsConfig) -> Self {
                self.aws = aws;
                self
            }

            /// Sets the creation statement.
            #[must_use]
            pub fn creation_statement(mut self, t: ::leasehold_core::StatementTemplate) -> Self {
                self.creation_statement = t;
                self
            }

            /// Sets the revocation statement.
            #[must_use]
            pub fn revocation_statement(mut self, t: ::leasehold_core::StatementTemplate) -> Self {
                self.revocation_statement = t;
                self
            }

            /// Adds a tag.
            #[must_use]
            pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
                self.tags.insert(key.into(), value.into());
                self
            }

            /// Sets the `AUTH` check endpoint and, optionally, its CA.
            #[must_use]
            pub fn readiness_endpoint(
                mut self,
                url: impl Into<String>,
                ca_pem: Option<::std::path::PathBuf>,
            ) -> Self {
                self.readiness_endpoint = Some(url.into());
                self.readiness_ca_pem = ca_pem;
                self
            }

            /// Sets the readiness bound.
            #[must_use]
            pub fn ready_timeout(mut self, d: ::std::time::Duration) -> Self {
                self.ready_timeout = d;
                self
            }

            /// The shared settings, to check.
            fn user_settings(&self) -> $crate::user_config::UserSettings<'_> {
                $crate::user_config::UserSettings {
                    tags: &self.tags,
                    readiness_endpoint: self.readiness_endpoint.as_deref(),
                    readiness_ca_pem: self.readiness_ca_pem.as_deref(),
                    ready_timeout: self.ready_timeout,
                }
            }

            /// The shared fields, to set from a config file.
            fn user_fields_mut(&mut self) -> $crate::user_config::UserFieldsMut<'_> {
                $crate::user_config::UserFieldsMut {
                    creation_statement: &mut self.creation_statement,
                    revocation_statement: &mut self.revocation_statement,
                    tags: &mut self.tags,
                    readiness_endpoint: &mut self.readiness_endpoint,
                    readiness_ca_pem: &mut self.readiness_ca_pem,
                    ready_timeout: &mut self.ready_timeout,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TagRules {
        TagRules {
            service: "Example",
            max_tags: 4,
            own_tags: 2,
            check: |k, _| {
                if k.starts_with("bad") {
                    Err(format!("key {k:?} is bad"))
                } else {
                    Ok(())
                }
            },
        }
    }

    fn settings(tags: &BTreeMap<String, String>) -> UserSettings<'_> {
        UserSettings {
            tags,
            readiness_endpoint: None,
            readiness_ca_pem: None,
            ready_timeout: Duration::from_secs(1),
        }
    }

    fn message(r: Result<()>) -> String {
        r.unwrap_err().message().to_string()
    }

    #[test]
    fn shared_settings_are_checked() {
        let none = BTreeMap::new();
        settings(&none).check(&rules(), &[]).unwrap();
        let two: BTreeMap<_, _> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        settings(&two).check(&rules(), &[]).unwrap();
        let mut three = two.clone();
        three.insert("c".into(), "3".into());
        let e = message(settings(&three).check(&rules(), &[]));
        assert_eq!(
            e,
            "tags: at most 2 extra tags (Example allows 4, leasehold uses 2)"
        );
        let bad: BTreeMap<_, _> = [("bad-one".into(), "1".into())].into();
        let e = message(settings(&bad).check(&rules(), &[]));
        assert_eq!(e, "tags: key \"bad-one\" is bad");

        let e = message(settings(&none).check(&rules(), &[("revoke_wait", Duration::ZERO)]));
        assert_eq!(e, "revoke_wait: must be positive");
        let zero = UserSettings {
            ready_timeout: Duration::ZERO,
            ..settings(&none)
        };
        assert_eq!(
            message(zero.check(&rules(), &[])),
            "ready_timeout: must be positive"
        );

        let ca_only = UserSettings {
            readiness_ca_pem: Some(Path::new("/etc/ca.pem")),
            ..settings(&none)
        };
        assert!(message(ca_only.check(&rules(), &[])).starts_with("readiness_ca_pem: set"));
        let empty_ca = UserSettings {
            readiness_endpoint: Some("rediss://h:6379"),
            readiness_ca_pem: Some(Path::new("")),
            ..settings(&none)
        };
        assert_eq!(
            message(empty_ca.check(&rules(), &[])),
            "readiness_ca_pem: empty path"
        );
    }

    #[test]
    fn readiness_urls_are_host_and_port_only() {
        for ok in ["rediss://h:6379", "redis://127.0.0.1:1/", "rediss://h"] {
            check_readiness_url(ok).unwrap();
        }
        for bad in [
            "http://h:1",
            "rediss://",
            "rediss://u:p@h:1",
            "rediss://h:1/0",
            "rediss://h :1",
            "h:6379",
        ] {
            let e = message(check_readiness_url(bad));
            assert!(
                e.starts_with("readiness_endpoint: ")
                    && e.ends_with("must be rediss://host:port (no user or password in it)"),
                "{bad}: {e}"
            );
        }
        let long = format!("rediss://{}:1", "h".repeat(3000));
        assert!(check_readiness_url(&long).is_err());
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        cluster_name: String,
    }

    impl UserFlatConfig for Own {
        type Config = (AwsConfig, String, UserKeys);

        fn into_config(self, aws: AwsConfig, shared: UserKeys) -> Result<Self::Config> {
            Ok((aws, self.cluster_name, shared))
        }
    }

    fn load(v: serde_json::Value) -> std::result::Result<(AwsConfig, String, UserKeys), String> {
        crate::config::deserialize_config::<_, WithUserKeys<Own>>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn user_keys_split_from_the_own_keys_and_apply() {
        let (aws, cluster, shared) = load(serde_json::json!({
            "region": "eu-west-1",
            "cluster_name": "orders",
            "revocation_statement": "{\"UserName\":\"{{username}}\"}",
            "tags": {"team": "payments"},
            "readiness_endpoint": "rediss://h:6379",
            "readiness_ca_pem": "/etc/ca.pem",
            "ready_timeout": "90s",
        }))
        .unwrap();
        assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cluster, "orders");
        let original = StatementTemplate::parse("{\"Name\":\"{{username}}\"}").unwrap();
        let mut creation = original.clone();
        let mut revocation = original.clone();
        let mut tags = BTreeMap::new();
        let (mut endpoint, mut ca, mut ready) = (None, None, Duration::from_secs(300));
        shared
            .apply(UserFieldsMut {
                creation_statement: &mut creation,
                revocation_statement: &mut revocation,
                tags: &mut tags,
                readiness_endpoint: &mut endpoint,
                readiness_ca_pem: &mut ca,
                ready_timeout: &mut ready,
            })
            .unwrap();
        assert_eq!(format!("{creation:?}"), format!("{original:?}"));
        assert!(format!("{revocation:?}").contains("UserName"));
        assert_eq!(tags["team"], "payments");
        assert_eq!(endpoint.as_deref(), Some("rediss://h:6379"));
        assert_eq!(ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(ready, Duration::from_secs(90));

        let e = load(serde_json::json!({"cluster_name": "orders", "colour": "red"}))
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = load(serde_json::json!({"cluster_name": "orders", "tags": "x"}))
            .map(|_| ())
            .unwrap_err();
        assert!(e.starts_with("tags: invalid type"), "{e}");
        let e = load(serde_json::json!({"tags": {}}))
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("missing field `cluster_name`"), "{e}");
    }
}
