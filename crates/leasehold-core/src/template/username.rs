//! Username templates.

use std::fmt;

use chrono::Utc;
use handlebars::{Context, Handlebars};
use serde_json::{json, Value};

use super::check::{compile, render_error, Kind, Uses};
use super::helpers::registry;
use super::random_username;
use crate::error::{Error, ErrorKind, Result};
use crate::names::NameRule;

/// What a username template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// The secret's name (`dynamicSecret.name`).
    pub secret_name: &'a str,
    /// The provider kind (`dynamicSecret.type`).
    pub secret_type: &'a str,
    /// The caller's identity (`identity.name`).
    pub identity: Option<&'a str>,
    /// The prefix of `randomUsername`.
    pub prefix: &'a str,
}

impl TemplateVars<'_> {
    /// Only what the template uses is computed: random bytes and the clock are not free.
    fn to_json(self, uses: Uses) -> Value {
        let mut v = json!({
            "dynamicSecret": { "name": self.secret_name, "type": self.secret_type },
        });
        if uses.random_username {
            v["randomUsername"] = Value::String(random_username(self.prefix));
        }
        if uses.timestamp {
            v["unixTimestamp"] = json!(Utc::now().timestamp());
        }
        if let Some(id) = self.identity {
            v["identity"] = json!({ "name": id });
        }
        v
    }
}

/// A compiled username template.
///
/// ```
/// use leasehold_core::{NameRule, TemplateVars, UsernameTemplate};
///
/// let t = UsernameTemplate::parse("{{truncate identity.name 4}}-{{random 6}}").unwrap();
/// let vars = TemplateVars {
///     secret_name: "orders",
///     secret_type: "redis",
///     identity: Some("testuser"),
///     prefix: "lh-",
/// };
/// let name = t.render(&vars).unwrap();
/// assert!(name.starts_with("test-"));
/// assert_eq!(name.len(), 11);
///
/// // Rendered, normalized and checked against the target's rule in one call.
/// let t = UsernameTemplate::parse("{{randomUsername}}-{{uppercase identity.name}}").unwrap();
/// let id = t.render_for(&vars, NameRule::ElastiCacheUserId).unwrap();
/// assert!(id.starts_with("lh-") && id.ends_with("-testuser"));
///
/// // Unknown variables and helpers are refused when the template is parsed.
/// assert!(UsernameTemplate::parse("{{identity.email}}").is_err());
/// assert!(UsernameTemplate::parse("{{shout identity.name}}").is_err());
/// ```
pub struct UsernameTemplate {
    source: String,
    uses: Uses,
    hb: Handlebars<'static>,
}

impl UsernameTemplate {
    /// Compiles `source`. A template that does not parse, or that uses an unknown helper or
    /// variable, a block, a partial or a bad `random` length, is refused; a sample render with
    /// every variable set is tried as well.
    pub fn parse(source: &str) -> Result<Self> {
        let (template, uses) = compile(Kind::Username, source)?;
        let t = UsernameTemplate {
            source: source.to_string(),
            uses,
            hb: registry(template, handlebars::no_escape),
        };
        t.render(&TemplateVars {
            secret_name: "sample-secret",
            secret_type: "sample",
            identity: Some("sample-identity"),
            prefix: crate::names::DEFAULT_USERNAME_PREFIX,
        })?;
        Ok(t)
    }

    /// Renders a username. A template that refers to `identity.name` fails with
    /// [`ErrorKind::InvalidInput`] when the request names no identity.
    pub fn render(&self, vars: &TemplateVars<'_>) -> Result<String> {
        if self.uses.identity && vars.identity.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the username template uses identity.name but the request names no identity",
            ));
        }
        // A Context built from the value avoids `render`'s serialise-again copy.
        let mut name = self
            .hb
            .render_with_context("t", &Context::from(vars.to_json(self.uses)))
            .map_err(|e| render_error(Kind::Username, &e))?;
        // The renderer writes into an 8 KiB buffer: a kept name must not keep all of it.
        name.shrink_to_fit();
        Ok(name)
    }

    /// Renders a username, brings it into the target's canonical form
    /// ([`NameRule::normalize`]) and checks it against the rule ([`NameRule::check`]).
    pub fn render_for(&self, vars: &TemplateVars<'_>, rule: NameRule) -> Result<String> {
        let name = rule.normalize(&self.render(vars)?);
        rule.check(&name)?;
        Ok(name)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template uses `identity.name` (and so needs an identity in every request).
    pub fn uses_identity(&self) -> bool {
        self.uses.identity
    }

    /// Whether the template output starts with `randomUsername`, and so with the provider's
    /// prefix (so reconcile can recognise its users).
    pub fn keeps_prefix(&self) -> bool {
        self.uses.starts_with_random_username
    }
}

impl fmt::Debug for UsernameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsernameTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Clone for UsernameTemplate {
    fn clone(&self) -> Self {
        UsernameTemplate {
            source: self.source.clone(),
            uses: self.uses,
            hb: self.hb.clone(),
        }
    }
}
