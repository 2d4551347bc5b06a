//! Statement templates (JSON creation and revocation statements).

use std::fmt;

use chrono::{DateTime, Utc};
use handlebars::{Context, Handlebars};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::check::{compile, invalid, render_error, Kind};
use super::helpers::registry;
use crate::error::{Error, Result};

fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("strings serialise");
    quoted[1..quoted.len() - 1].to_string()
}

/// What a statement template can refer to.
#[derive(Clone, Copy)]
pub struct StatementVars<'a> {
    /// The rendered username.
    pub username: &'a str,
    /// The generated password.
    pub password: Option<&'a SecretString>,
    /// When the lease ends.
    pub expiration: Option<DateTime<Utc>>,
}

impl fmt::Debug for StatementVars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementVars")
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "[REDACTED]"))
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// A JSON statement template (creation / revocation statements), rendered with every value
/// JSON-escaped so that a password with quotes or backslashes can never break the statement.
///
/// Providers check the statement against their API's input shape when the secret is
/// registered, with [`check_shape`](Self::check_shape) (a sample render), and again on every
/// rendered statement with [`RenderedStatement::check_shape`].
///
/// ```
/// use leasehold_core::{StatementTemplate, StatementVars};
/// use secrecy::SecretString;
///
/// let t = StatementTemplate::parse(
///     r#"{"UserName":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
/// )
/// .unwrap();
/// // MemoryDB CreateUser: UserName, AuthenticationMode and AccessString are required.
/// let shape_err = t
///     .check_shape(
///         &["UserName", "AuthenticationMode.Passwords", "AccessString"],
///         &["UserName", "AuthenticationMode", "AccessString", "Tags"],
///     )
///     .unwrap_err();
/// assert!(shape_err.to_string().contains("AccessString"));
///
/// let pw = SecretString::from(r#"a"b\c"#);
/// let v = t.render(&StatementVars { username: "lh-x", password: Some(&pw), expiration: None }).unwrap();
/// assert_eq!(v.expose_json()["AuthenticationMode"]["Passwords"][0], r#"a"b\c"#);
/// v.require_keys(&["UserName", "AuthenticationMode.Type"]).unwrap();
/// ```
pub struct StatementTemplate {
    source: String,
    hb: Handlebars<'static>,
}

const SAMPLE_PASSWORD: &str = "sample\"pass\\word";

impl StatementTemplate {
    /// [`parse`](Self::parse) for the config key `field`: the error starts with the key.
    pub fn parse_setting(field: &str, source: &str) -> Result<Self> {
        Self::parse(source).map_err(|e| Error::new(e.kind(), format!("{field}: {}", e.message())))
    }

    /// Compiles `source` and checks that a sample render is a JSON object.
    pub fn parse(source: &str) -> Result<Self> {
        let (template, _) = compile(Kind::Statement, source)?;
        let t = StatementTemplate {
            source: source.to_string(),
            hb: registry(template, json_escape),
        };
        t.sample()?;
        Ok(t)
    }

    fn sample(&self) -> Result<RenderedStatement> {
        let pw = SecretString::from(SAMPLE_PASSWORD);
        self.render(&StatementVars {
            username: "lh-sample",
            password: Some(&pw),
            expiration: Some(Utc::now()),
        })
    }

    /// Renders a sample statement and checks its shape (see
    /// [`RenderedStatement::check_shape`]). Providers call this when a secret is registered.
    pub fn check_shape(&self, required: &[&str], allowed: &[&str]) -> Result<()> {
        self.sample()?.check_shape(required, allowed)
    }

    /// Renders the statement and parses it as a JSON object.
    pub fn render(&self, vars: &StatementVars<'_>) -> Result<RenderedStatement> {
        let mut ctx = json!({
            "username": vars.username,
            "randomUsername": vars.username,
            "unixTimestamp": Utc::now().timestamp(),
        });
        if let Some(pw) = vars.password {
            ctx["password"] = Value::String(pw.expose_secret().to_string());
        }
        if let Some(exp) = vars.expiration {
            ctx["expiration"] = Value::String(exp.to_rfc3339());
        }
        let text = self
            .hb
            .render_with_context("t", &Context::from(ctx))
            .map_err(|e| render_error(Kind::Statement, &e))?;
        let text = SecretString::from(text);
        let value: Value = serde_json::from_str(text.expose_secret()).map_err(|e| {
            // Only the position: the text around it may be the password.
            invalid(
                Kind::Statement,
                format!(
                    "it does not render to JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if !value.is_object() {
            return Err(invalid(Kind::Statement, "it must render to a JSON object"));
        }
        Ok(RenderedStatement(value))
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for StatementTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementTemplate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Clone for StatementTemplate {
    fn clone(&self) -> Self {
        StatementTemplate {
            source: self.source.clone(),
            hb: self.hb.clone(),
        }
    }
}

/// A rendered statement. It may hold a password, so `Debug` shows nothing of it, and shape
/// errors name keys, never values.
pub struct RenderedStatement(Value);

pub(super) fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(root, |v, key| v.as_object().and_then(|o| o.get(key)))
}

fn shape_error(msg: String) -> Error {
    invalid(Kind::Statement, msg)
}

impl RenderedStatement {
    /// The JSON value, password included: hand it to the API call and nowhere else.
    pub fn expose_json(&self) -> &Value {
        &self.0
    }

    /// Consumes the statement.
    pub fn into_json(self) -> Value {
        self.0
    }

    /// Checks that every key path is present and not `null`. A path names nested keys with
    /// dots: `AuthenticationMode.Passwords`.
    pub fn require_keys(&self, paths: &[&str]) -> Result<()> {
        let missing: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| lookup(&self.0, p).is_none_or(Value::is_null))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(shape_error(format!(
                "the statement lacks the required key(s) {}",
                missing.join(", ")
            )))
        }
    }

    /// Checks that every top-level key is one of `keys` (the target API's input members).
    pub fn allowed_keys(&self, keys: &[&str]) -> Result<()> {
        let obj = self
            .0
            .as_object()
            .expect("a rendered statement is an object");
        let unknown: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !keys.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(shape_error(format!(
                "the statement has key(s) {} the target does not accept; allowed: {}",
                unknown.join(", "),
                keys.join(", ")
            )))
        }
    }

    /// [`require_keys`](Self::require_keys) and, when `allowed` is not empty,
    /// [`allowed_keys`](Self::allowed_keys).
    pub fn check_shape(&self, required: &[&str], allowed: &[&str]) -> Result<()> {
        self.require_keys(required)?;
        if !allowed.is_empty() {
            self.allowed_keys(allowed)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RenderedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderedStatement([REDACTED])")
    }
}
