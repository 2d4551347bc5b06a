//! Username and statement templates (handlebars), compiled once per secret, rendered per issue.
//!
//! Variables: `randomUsername`, `unixTimestamp`, `identity.name`, `dynamicSecret.name`,
//! `dynamicSecret.type`; in statement templates also `username`, `password`, `expiration`.
//! Helpers: `random N` (also spelled `random-N`), `truncate s N`, `replace s from to`,
//! `uppercase s`, `lowercase s`. Nothing is HTML-escaped; unknown variables and helpers are
//! errors.

use std::fmt;

use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};

/// The default username template.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "{{randomUsername}}";

/// Length of the random part of `randomUsername`.
pub const RANDOM_USERNAME_LEN: usize = 20;

/// Longest output of the `random` helper.
const MAX_RANDOM_LEN: u64 = 256;

/// Longest template source accepted.
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;

const RANDOM_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters from `[a-z0-9]`, uniformly, from the OS-seeded CSPRNG.
pub fn random_lowercase(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| RANDOM_CHARS[rng.random_range(0..RANDOM_CHARS.len())] as char)
        .collect()
}

/// The value of `randomUsername`: the prefix and 20 random lower-case letters and digits.
pub fn random_username(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + RANDOM_USERNAME_LEN);
    s.push_str(prefix);
    s.push_str(&random_lowercase(RANDOM_USERNAME_LEN));
    s
}

fn param_str<'a>(
    h: &'a Helper<'_>,
    idx: usize,
    name: &'static str,
) -> Result<&'a str, RenderErrorReason> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, idx))?;
    p.value().as_str().ok_or_else(|| {
        RenderErrorReason::ParamTypeMismatchForName(name, idx.to_string(), "string".into())
    })
}

fn param_u64(h: &Helper<'_>, idx: usize, name: &'static str) -> Result<u64, RenderErrorReason> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, idx))?;
    match p.value() {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        RenderErrorReason::ParamTypeMismatchForName(
            name,
            idx.to_string(),
            "non-negative integer".into(),
        )
    })
}

fn random_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let n = param_u64(h, 0, "random")?;
    if n == 0 || n > MAX_RANDOM_LEN {
        return Err(RenderErrorReason::Other(format!(
            "random length {n} is outside 1..={MAX_RANDOM_LEN}"
        ))
        .into());
    }
    out.write(&random_lowercase(n as usize))?;
    Ok(())
}

fn truncate_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let s = param_str(h, 0, "truncate")?;
    let n = param_u64(h, 1, "truncate")? as usize;
    let end = s.char_indices().nth(n).map(|(i, _)| i).unwrap_or(s.len());
    out.write(&s[..end])?;
    Ok(())
}

fn replace_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let s = param_str(h, 0, "replace")?;
    let from = param_str(h, 1, "replace")?;
    let to = param_str(h, 2, "replace")?;
    if from.is_empty() {
        return Err(
            RenderErrorReason::Other("replace: the text to replace is empty".into()).into(),
        );
    }
    out.write(&s.replace(from, to))?;
    Ok(())
}

fn uppercase_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&param_str(h, 0, "uppercase")?.to_uppercase())?;
    Ok(())
}

fn lowercase_helper(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    out.write(&param_str(h, 0, "lowercase")?.to_lowercase())?;
    Ok(())
}

/// Rewrites the `{{random-N}}` spelling to `{{random N}}`.
fn normalize_random_spelling(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(pos) = rest.find("{{random-") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + "{{random-".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with("}}") {
            out.push_str("{{random ");
            out.push_str(&after[..digits]);
            out.push_str("}}");
            rest = &after[digits + 2..];
        } else {
            out.push_str("{{random-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn registry(src: &str, escape: fn(&str) -> String) -> Result<Handlebars<'static>> {
    if src.len() > MAX_TEMPLATE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidTemplate,
            format!(
                "template is {} bytes, at most {MAX_TEMPLATE_LEN} are allowed",
                src.len()
            ),
        ));
    }
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.set_prevent_indent(true);
    hb.register_escape_fn(escape);
    hb.register_helper("random", Box::new(random_helper));
    hb.register_helper("truncate", Box::new(truncate_helper));
    hb.register_helper("replace", Box::new(replace_helper));
    hb.register_helper("uppercase", Box::new(uppercase_helper));
    hb.register_helper("lowercase", Box::new(lowercase_helper));
    hb.register_template_string("t", normalize_random_spelling(src))
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidTemplate,
                format!("template does not parse: {e}"),
            )
        })?;
    Ok(hb)
}

fn render_error(e: handlebars::RenderError) -> Error {
    // A strict-mode miss on an optional variable is the caller's input, not the template's.
    Error::new(
        ErrorKind::InvalidTemplate,
        format!("template does not render: {e}"),
    )
}

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
    fn to_json(self) -> Value {
        let mut v = json!({
            "randomUsername": random_username(self.prefix),
            "unixTimestamp": Utc::now().timestamp(),
            "dynamicSecret": { "name": self.secret_name, "type": self.secret_type },
        });
        if let Some(id) = self.identity {
            v["identity"] = json!({ "name": id });
        }
        v
    }
}

/// A compiled username template.
///
/// ```
/// use leasehold_core::{TemplateVars, UsernameTemplate};
///
/// let t = UsernameTemplate::parse("{{truncate identity.name 4}}-{{random 6}}").unwrap();
/// let name = t
///     .render(&TemplateVars {
///         secret_name: "orders",
///         secret_type: "redis",
///         identity: Some("testuser"),
///         prefix: "lh-",
///     })
///     .unwrap();
/// assert!(name.starts_with("test-"));
/// assert_eq!(name.len(), 11);
/// ```
pub struct UsernameTemplate {
    source: String,
    hb: Handlebars<'static>,
}

impl UsernameTemplate {
    /// Compiles `source`; a template that does not parse, or that uses an unknown helper or
    /// variable, is refused (a sample render with every variable set is tried).
    pub fn parse(source: &str) -> Result<Self> {
        let hb = registry(source, handlebars::no_escape)?;
        let t = UsernameTemplate {
            source: source.to_string(),
            hb,
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
        self.hb.render("t", &vars.to_json()).map_err(|e| {
            if vars.identity.is_none() && self.source.contains("identity") {
                Error::new(
                    ErrorKind::InvalidInput,
                    "the username template uses identity.name but the request names no identity",
                )
            } else {
                render_error(e)
            }
        })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template output starts with the `randomUsername` prefix (so reconcile can
    /// recognise its users).
    pub fn keeps_prefix(&self) -> bool {
        self.source.trim_start().starts_with("{{randomUsername}}")
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
        UsernameTemplate::parse(&self.source).expect("a parsed template parses again")
    }
}

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
/// ```
/// use leasehold_core::{StatementTemplate, StatementVars};
/// use secrecy::SecretString;
///
/// let t = StatementTemplate::parse(r#"{"UserName":"{{username}}","Passwords":["{{password}}"]}"#).unwrap();
/// let pw = SecretString::from(r#"a"b\c"#);
/// let v = t.render(&StatementVars { username: "lh-x", password: Some(&pw), expiration: None }).unwrap();
/// assert_eq!(v.expose_json()["Passwords"][0], r#"a"b\c"#);
/// ```
pub struct StatementTemplate {
    source: String,
    hb: Handlebars<'static>,
}

impl StatementTemplate {
    /// Compiles `source` and checks that a sample render is a JSON object.
    pub fn parse(source: &str) -> Result<Self> {
        let hb = registry(source, json_escape)?;
        let t = StatementTemplate {
            source: source.to_string(),
            hb,
        };
        let pw = SecretString::from("sample\"pass\\word");
        t.render(&StatementVars {
            username: "lh-sample",
            password: Some(&pw),
            expiration: Some(Utc::now()),
        })?;
        Ok(t)
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
        let text = self.hb.render("t", &ctx).map_err(|e| {
            // The handlebars error never contains rendered output, only the template position.
            render_error(e)
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidTemplate,
                format!(
                    "statement does not render to JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if !value.is_object() {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "statement must render to a JSON object",
            ));
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
        StatementTemplate::parse(&self.source).expect("a parsed template parses again")
    }
}

/// A rendered statement. It may hold a password, so `Debug` shows nothing of it.
pub struct RenderedStatement(Value);

impl RenderedStatement {
    /// The JSON value, password included: hand it to the API call and nowhere else.
    pub fn expose_json(&self) -> &Value {
        &self.0
    }

    /// Consumes the statement.
    pub fn into_json(self) -> Value {
        self.0
    }
}

impl fmt::Debug for RenderedStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderedStatement([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(identity: Option<&str>) -> TemplateVars<'_> {
        TemplateVars {
            secret_name: "orders",
            secret_type: "redis",
            identity,
            prefix: "lh-",
        }
    }

    #[test]
    fn documented_examples_render() {
        let t = UsernameTemplate::parse("{{truncate identity.name 4}}").unwrap();
        assert_eq!(t.render(&vars(Some("testuser"))).unwrap(), "test");
        let t = UsernameTemplate::parse("{{replace identity.name 'user' 'replace'}}").unwrap();
        assert_eq!(t.render(&vars(Some("testuser"))).unwrap(), "testreplace");
        let t =
            UsernameTemplate::parse("{{uppercase dynamicSecret.name}}-{{lowercase 'AB'}}").unwrap();
        assert_eq!(t.render(&vars(None)).unwrap(), "ORDERS-ab");
    }

    #[test]
    fn random_both_spellings() {
        for src in ["x{{random 8}}", "x{{random-8}}"] {
            let t = UsernameTemplate::parse(src).unwrap();
            let s = t.render(&vars(None)).unwrap();
            assert_eq!(s.len(), 9, "{src}");
        }
    }

    #[test]
    fn default_template_keeps_prefix() {
        let t = UsernameTemplate::parse(DEFAULT_USERNAME_TEMPLATE).unwrap();
        assert!(t.keeps_prefix());
        let s = t.render(&vars(None)).unwrap();
        assert!(s.starts_with("lh-") && s.len() == 23);
    }

    #[test]
    fn unknown_variables_and_helpers_are_refused() {
        assert_eq!(
            UsernameTemplate::parse("{{nope}}").unwrap_err().kind(),
            ErrorKind::InvalidTemplate
        );
        assert_eq!(
            UsernameTemplate::parse("{{shout 'x'}}").unwrap_err().kind(),
            ErrorKind::InvalidTemplate
        );
        assert_eq!(
            UsernameTemplate::parse("{{#if}}").unwrap_err().kind(),
            ErrorKind::InvalidTemplate
        );
        assert!(UsernameTemplate::parse("{{random 0}}").is_err());
        assert!(UsernameTemplate::parse("{{random 100000}}").is_err());
    }

    #[test]
    fn missing_identity_is_input_error() {
        let t = UsernameTemplate::parse("{{identity.name}}").unwrap();
        assert_eq!(
            t.render(&vars(None)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn no_html_escaping() {
        let t = UsernameTemplate::parse("{{identity.name}}").unwrap();
        assert_eq!(t.render(&vars(Some("a&b<c>"))).unwrap(), "a&b<c>");
    }

    #[test]
    fn statements_escape_hostile_passwords() {
        let t = StatementTemplate::parse(r#"{"U":"{{username}}","P":["{{password}}"]}"#).unwrap();
        for hostile in [
            r#"","AccessString":"on ~* +@all"#,
            "a\\",
            "line\nbreak",
            "\u{0}\u{1f}",
            "ünï",
        ] {
            let pw = SecretString::from(hostile);
            let v = t
                .render(&StatementVars {
                    username: "u",
                    password: Some(&pw),
                    expiration: None,
                })
                .unwrap();
            assert_eq!(v.expose_json()["P"][0], hostile);
            assert_eq!(v.expose_json().as_object().unwrap().len(), 2);
            assert!(!format!("{v:?}").contains(hostile));
        }
    }

    #[test]
    fn statement_must_be_json_object() {
        assert!(StatementTemplate::parse("not json").is_err());
        assert!(StatementTemplate::parse("[1]").is_err());
        assert!(StatementTemplate::parse(r#"{"a": {{password}} }"#).is_err());
    }
}
