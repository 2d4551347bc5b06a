//! Username and statement templates (handlebars), compiled once per secret, rendered per issue.
//!
//! Username templates may use `randomUsername`, `unixTimestamp` (seconds), `identity.name`,
//! `dynamicSecret.name` and `dynamicSecret.type`. Statement templates (JSON creation and
//! revocation statements) may use `username`, `password`, `expiration` (RFC 3339),
//! `randomUsername` (the rendered username) and `unixTimestamp`.
//!
//! Helpers: `random N` (also spelled `random-N`; `N` random `[a-z0-9]`, 1 to 256), `truncate s
//! N`, `replace s 'from' 'to'`, `uppercase s`, `lowercase s`; helpers nest as subexpressions:
//! `{{truncate (lowercase identity.name) 8}}`.
//!
//! A template is checked when it is parsed, not when it first renders: an unknown variable or
//! helper, a wrong number of arguments, a block (`{{#if}}`), a partial, a decorator, or a
//! `random` length outside its range is an [`ErrorKind::InvalidTemplate`]. Username output is
//! never HTML-escaped. Statement output is JSON-escaped, helper results included, and the raw
//! `{{{ }}}` form is refused there, so no password can break out of its JSON string.
//!
//! Errors never carry a rendered value: parse errors quote the template source, render errors
//! name only the template position and the variable or helper involved.

use std::fmt;

use chrono::{DateTime, Utc};
use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonValue, Path, RenderContext, RenderErrorReason,
    ScopedJson,
};
use rand::distr::{Distribution, Uniform};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::names::NameRule;

/// The default username template.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "{{randomUsername}}";

/// Length of the random part of `randomUsername`.
pub const RANDOM_USERNAME_LEN: usize = 20;

/// Longest output of the `random` helper.
const MAX_RANDOM_LEN: u64 = 256;

/// Longest template source accepted.
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;

/// Deepest nesting of brackets (`(`, `[`, `{`, counting each brace of `{{`) accepted.
const MAX_NESTING: usize = 48;

/// Deepest nesting of helper calls accepted in a template.
const MAX_HELPER_DEPTH: usize = 8;

const RANDOM_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Variables of username templates.
pub const USERNAME_VARIABLES: &[&str] = &[
    "randomUsername",
    "unixTimestamp",
    "identity.name",
    "dynamicSecret.name",
    "dynamicSecret.type",
];

/// Variables of statement templates.
pub const STATEMENT_VARIABLES: &[&str] = &[
    "username",
    "password",
    "expiration",
    "randomUsername",
    "unixTimestamp",
];

/// The helpers of both template kinds.
pub const HELPERS: &[&str] = &["random", "truncate", "replace", "uppercase", "lowercase"];

/// `len` characters from `[a-z0-9]`, uniformly, from the OS-seeded CSPRNG.
pub fn random_lowercase(len: usize) -> String {
    let index = Uniform::new(0, RANDOM_CHARS.len()).expect("non-empty range");
    let mut rng = rand::rng();
    (0..len)
        .map(|_| RANDOM_CHARS[index.sample(&mut rng)] as char)
        .collect()
}

/// The value of `randomUsername`: the prefix and 20 random lower-case letters and digits.
pub fn random_username(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + RANDOM_USERNAME_LEN);
    s.push_str(prefix);
    s.push_str(&random_lowercase(RANDOM_USERNAME_LEN));
    s
}

// ---------------------------------------------------------------------------------------------
// Helpers. They return values (`call_inner`) rather than writing to the output, so handlebars
// applies the template's escape function to their results and they work as subexpressions.

fn param_str(h: &Helper<'_>, idx: usize, name: &'static str) -> Result<String, RenderErrorReason> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, idx))?;
    match p.value() {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(RenderErrorReason::ParamTypeMismatchForName(
            name,
            idx.to_string(),
            "string".into(),
        )),
    }
}

fn param_u64(h: &Helper<'_>, idx: usize, name: &'static str) -> Result<u64, RenderErrorReason> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, idx))?;
    literal_u64(p.value()).ok_or_else(|| {
        RenderErrorReason::ParamTypeMismatchForName(
            name,
            idx.to_string(),
            "non-negative integer".into(),
        )
    })
}

fn literal_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

type HelperFn = fn(&Helper<'_>) -> Result<String, RenderErrorReason>;

/// Adapts a string function to a value-returning handlebars helper.
struct ValueHelper(HelperFn);

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        Ok(ScopedJson::Derived(JsonValue::String((self.0)(h)?)))
    }
}

fn random_helper(h: &Helper<'_>) -> Result<String, RenderErrorReason> {
    let n = param_u64(h, 0, "random")?;
    if n == 0 || n > MAX_RANDOM_LEN {
        return Err(RenderErrorReason::Other(format!(
            "random length {n} is outside 1..={MAX_RANDOM_LEN}"
        )));
    }
    Ok(random_lowercase(n as usize))
}

fn truncate_helper(h: &Helper<'_>) -> Result<String, RenderErrorReason> {
    let s = param_str(h, 0, "truncate")?;
    let n = param_u64(h, 1, "truncate")?;
    let end = s
        .char_indices()
        .nth(usize::try_from(n).unwrap_or(usize::MAX))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    Ok(s[..end].to_string())
}

fn replace_helper(h: &Helper<'_>) -> Result<String, RenderErrorReason> {
    let s = param_str(h, 0, "replace")?;
    let from = param_str(h, 1, "replace")?;
    let to = param_str(h, 2, "replace")?;
    if from.is_empty() {
        return Err(RenderErrorReason::Other(
            "replace: the text to replace is empty".into(),
        ));
    }
    Ok(s.replace(&from, &to))
}

fn uppercase_helper(h: &Helper<'_>) -> Result<String, RenderErrorReason> {
    Ok(param_str(h, 0, "uppercase")?.to_uppercase())
}

fn lowercase_helper(h: &Helper<'_>) -> Result<String, RenderErrorReason> {
    Ok(param_str(h, 0, "lowercase")?.to_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Parsing and the static check.

/// Rewrites the `{{random-N}}` spelling (also `{{~ random-N ~}}`) to `{{random N}}`.
fn normalize_random_spelling(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(pos) = rest.find("{{") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        match random_dash(after) {
            Some((open_tilde, digits, close_tilde, used)) => {
                out.push_str("{{");
                out.push_str(open_tilde);
                out.push_str("random ");
                out.push_str(digits);
                out.push_str(close_tilde);
                out.push_str("}}");
                rest = &after[used..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Matches `~? ws* random-DIGITS ws* ~? }}` at the start of `s`.
fn random_dash(s: &str) -> Option<(&str, &str, &str, usize)> {
    let mut i = 0;
    let open = if s.starts_with('~') {
        i += 1;
        "~"
    } else {
        ""
    };
    i += s[i..].len() - s[i..].trim_start_matches([' ', '\t']).len();
    let body = s[i..].strip_prefix("random-")?;
    i += "random-".len();
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let digit_str = &s[i..i + digits];
    i += digits;
    i += s[i..].len() - s[i..].trim_start_matches([' ', '\t']).len();
    let close = if s[i..].starts_with('~') {
        i += 1;
        "~"
    } else {
        ""
    };
    s[i..].strip_prefix("}}")?;
    Some((open, digit_str, close, i + 2))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Username,
    Statement,
}

impl Kind {
    fn variables(self) -> &'static [&'static str] {
        match self {
            Kind::Username => USERNAME_VARIABLES,
            Kind::Statement => STATEMENT_VARIABLES,
        }
    }
    fn what(self) -> &'static str {
        match self {
            Kind::Username => "username template",
            Kind::Statement => "statement template",
        }
    }
}

/// What the static check learned about a template.
#[derive(Default, Clone, Copy)]
struct Uses {
    identity: bool,
    random_username: bool,
    timestamp: bool,
    starts_with_random_username: bool,
}

fn invalid(kind: Kind, msg: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidTemplate,
        format!("{}: {msg}", kind.what()),
    )
}

fn param_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(s) => Some(s),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw),
        _ => None,
    }
}

fn check_nesting(kind: Kind, src: &str) -> Result<()> {
    // The handlebars parser recurses once per level of subexpression, array or object literal
    // and block; unbounded nesting could exhaust the stack, so it is bounded before parsing.
    let (mut depth, mut max) = (0usize, 0usize);
    for b in src.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_NESTING {
        return Err(invalid(
            kind,
            format!("brackets nest {max} deep, at most {MAX_NESTING} are allowed"),
        ));
    }
    // Blocks are never allowed; refusing them before parsing keeps the parser from recursing
    // through nested ones. An opener is `{{`, an optional `~`, optional whitespace and `#`.
    let opens_block = src.match_indices("{{").any(|(i, _)| {
        src[i + 2..]
            .trim_start()
            .trim_start_matches('~')
            .trim_start()
            .starts_with('#')
    });
    if opens_block {
        return Err(invalid(kind, "block helpers ({{#...}}) are not supported"));
    }
    Ok(())
}

fn compile(kind: Kind, src: &str) -> Result<(Template, Uses)> {
    if src.len() > MAX_TEMPLATE_LEN {
        return Err(invalid(
            kind,
            format!(
                "it is {} bytes, at most {MAX_TEMPLATE_LEN} are allowed",
                src.len()
            ),
        ));
    }
    check_nesting(kind, src)?;
    let normalized = normalize_random_spelling(src);
    let template = Template::compile(&normalized)
        .map_err(|e| invalid(kind, format!("it does not parse: {e}")))?;
    let mut uses = Uses::default();
    check_elements(kind, &template.elements, &mut uses)?;
    uses.starts_with_random_username = template
        .elements
        .iter()
        .find(|e| match e {
            TemplateElement::Comment(_) => false,
            TemplateElement::RawString(s) => !s.trim().is_empty(),
            _ => true,
        })
        .is_some_and(|e| match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                h.params.is_empty() && param_name(&h.name) == Some("randomUsername")
            }
            _ => false,
        });
    Ok((template, uses))
}

fn check_elements(kind: Kind, elements: &[TemplateElement], uses: &mut Uses) -> Result<()> {
    for e in elements {
        match e {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) => check_expression(kind, h, uses, 0)?,
            TemplateElement::HtmlExpression(h) => {
                if kind == Kind::Statement {
                    return Err(invalid(
                        kind,
                        "{{{...}}} would insert a value without JSON escaping; use {{...}}",
                    ));
                }
                check_expression(kind, h, uses, 0)?
            }
            TemplateElement::HelperBlock(_) => {
                return Err(invalid(kind, "block helpers ({{#...}}) are not supported"))
            }
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                return Err(invalid(kind, "partials ({{> ...}}) are not supported"))
            }
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                return Err(invalid(kind, "decorators ({{* ...}}) are not supported"))
            }
            _ => return Err(invalid(kind, "this template construct is not supported")),
        }
    }
    Ok(())
}

fn check_variable(kind: Kind, name: &str, uses: &mut Uses) -> Result<()> {
    if !kind.variables().contains(&name) {
        let hint = if HELPERS.contains(&name) {
            format!("helper {name:?} needs arguments")
        } else {
            format!(
                "unknown variable {name:?}; known: {}",
                kind.variables().join(", ")
            )
        };
        return Err(invalid(kind, hint));
    }
    match name {
        "identity.name" => uses.identity = true,
        "randomUsername" => uses.random_username = true,
        "unixTimestamp" => uses.timestamp = true,
        _ => {}
    }
    Ok(())
}

/// A value argument: a string or number literal, a known variable, or a helper subexpression.
fn check_value(kind: Kind, p: &Parameter, uses: &mut Uses, depth: usize) -> Result<()> {
    match p {
        Parameter::Literal(Value::String(_) | Value::Number(_)) => Ok(()),
        Parameter::Literal(other) => Err(invalid(
            kind,
            format!("literal {other} is not a string or a number"),
        )),
        Parameter::Subexpression(sub) => match sub.as_element() {
            TemplateElement::Expression(h) if !h.params.is_empty() => {
                check_expression(kind, h, uses, depth + 1)
            }
            _ => Err(invalid(
                kind,
                format!("({}) is not a helper call", sub.name()),
            )),
        },
        _ => match param_name(p) {
            Some(name) => check_variable(kind, name, uses),
            None => Err(invalid(kind, "@-variables and ../ paths are not supported")),
        },
    }
}

fn literal_number(kind: Kind, helper: &str, p: &Parameter) -> Result<u64> {
    match p {
        Parameter::Literal(v) => literal_u64(v),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(
            kind,
            format!("{helper}: the length must be a non-negative integer literal"),
        )
    })
}

fn check_expression(kind: Kind, h: &HelperTemplate, uses: &mut Uses, depth: usize) -> Result<()> {
    if depth > MAX_HELPER_DEPTH {
        return Err(invalid(
            kind,
            format!("helpers nest deeper than {MAX_HELPER_DEPTH}"),
        ));
    }
    if !h.hash.is_empty() {
        return Err(invalid(
            kind,
            "named arguments (key=value) are not supported",
        ));
    }
    if h.block_param.is_some() || h.template.is_some() || h.inverse.is_some() || h.block {
        return Err(invalid(kind, "block helpers ({{#...}}) are not supported"));
    }
    let Some(name) = param_name(&h.name) else {
        return Err(invalid(
            kind,
            "an expression must be a variable or a helper call",
        ));
    };
    if h.params.is_empty() {
        return check_variable(kind, name, uses);
    }
    let arity = match name {
        "random" | "uppercase" | "lowercase" => 1,
        "truncate" => 2,
        "replace" => 3,
        _ => {
            return Err(invalid(
                kind,
                format!("unknown helper {name:?}; known: {}", HELPERS.join(", ")),
            ))
        }
    };
    if h.params.len() != arity {
        return Err(invalid(
            kind,
            format!("{name} takes {arity} argument(s), {} given", h.params.len()),
        ));
    }
    match name {
        "random" => {
            let n = literal_number(kind, name, &h.params[0])?;
            if n == 0 || n > MAX_RANDOM_LEN {
                return Err(invalid(
                    kind,
                    format!("random length {n} is outside 1..={MAX_RANDOM_LEN}"),
                ));
            }
        }
        "truncate" => {
            check_value(kind, &h.params[0], uses, depth)?;
            literal_number(kind, name, &h.params[1])?;
        }
        "replace" => {
            check_value(kind, &h.params[0], uses, depth)?;
            match &h.params[1] {
                Parameter::Literal(Value::String(s)) if !s.is_empty() => {}
                _ => {
                    return Err(invalid(
                        kind,
                        "replace: the text to replace must be a non-empty string literal",
                    ))
                }
            }
            check_value(kind, &h.params[2], uses, depth)?;
        }
        _ => check_value(kind, &h.params[0], uses, depth)?,
    }
    Ok(())
}

fn registry(template: Template, escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.set_prevent_indent(true);
    hb.register_escape_fn(escape);
    hb.register_helper("random", Box::new(ValueHelper(random_helper)));
    hb.register_helper("truncate", Box::new(ValueHelper(truncate_helper)));
    hb.register_helper("replace", Box::new(ValueHelper(replace_helper)));
    hb.register_helper("uppercase", Box::new(ValueHelper(uppercase_helper)));
    hb.register_helper("lowercase", Box::new(ValueHelper(lowercase_helper)));
    hb.register_template("t", template);
    hb
}

/// Describes a render failure by position and reason only: a handlebars message may in future
/// versions quote values, and a statement's values include the password.
fn render_error(kind: Kind, e: &handlebars::RenderError) -> Error {
    let reason = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("{path} is not set"),
        RenderErrorReason::MissingVariable(None) => "a variable is not set".to_string(),
        RenderErrorReason::Other(msg) => msg.clone(),
        RenderErrorReason::ParamNotFoundForIndex(helper, idx) => {
            format!("{helper}: argument {idx} is missing")
        }
        RenderErrorReason::ParamTypeMismatchForName(helper, idx, expected) => {
            format!("{helper}: argument {idx} must be a {expected}")
        }
        _ => "rendering failed".to_string(),
    };
    let at = match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        _ => String::new(),
    };
    invalid(kind, format!("it does not render{at}: {reason}"))
}

// ---------------------------------------------------------------------------------------------
// Username templates.

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

// ---------------------------------------------------------------------------------------------
// Statement templates.

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

fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
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
    fn a_rendered_name_holds_no_more_memory_than_it_needs() {
        let t = UsernameTemplate::parse(DEFAULT_USERNAME_TEMPLATE).unwrap();
        let name = t.render(&vars(None)).unwrap();
        assert!(
            name.capacity() < 2 * name.len().max(16),
            "{}",
            name.capacity()
        );
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

    #[test]
    fn helper_results_are_json_escaped_in_statements() {
        // Helpers used to write their output unescaped; a password with a quote could then add
        // keys to the statement.
        let hostile = r#"x","AccessString":"on ~* +@all"#;
        let pw = SecretString::from(hostile);
        for src in [
            r#"{"P":"{{lowercase password}}"}"#,
            r#"{"P":"{{uppercase password}}"}"#,
            r#"{"P":"{{truncate password 100}}"}"#,
            r#"{"P":"{{replace password 'q' 'r'}}"}"#,
            r#"{"P":"{{lowercase (truncate password 100)}}"}"#,
        ] {
            let t = StatementTemplate::parse(src).unwrap();
            let v = t
                .render(&StatementVars {
                    username: "u",
                    password: Some(&pw),
                    expiration: None,
                })
                .unwrap();
            let obj = v.expose_json().as_object().unwrap();
            assert_eq!(obj.len(), 1, "{src}");
            assert!(
                obj["P"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains("accessstring"),
                "{src}"
            );
        }
    }

    #[test]
    fn raw_output_is_refused_in_statements_only() {
        let e = StatementTemplate::parse(r#"{"P":"{{{password}}}"}"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
        assert!(e.to_string().contains("escaping"), "{e}");
        let t = UsernameTemplate::parse("{{{identity.name}}}").unwrap();
        assert_eq!(t.render(&vars(Some("a&b"))).unwrap(), "a&b");
    }

    #[test]
    fn blocks_partials_and_builtins_are_refused() {
        for src in [
            "{{#if identity.name}}x{{/if}}",
            "{{#each dynamicSecret}}x{{/each}}",
            "{{> other}}",
            "{{log identity.name}}",
            "{{lookup dynamicSecret 'name'}}",
            "{{eq 1 1}}",
            "{{@root.identity.name}}",
            "{{../identity.name}}",
            "{{random}}",
            "{{random 8 9}}",
            "{{random n=8}}",
            "{{random identity.name}}",
            "{{truncate identity.name identity.name}}",
            "{{replace identity.name '' 'x'}}",
            "{{replace identity.name identity.name 'x'}}",
            "{{uppercase true}}",
            "{{uppercase (identity.name)}}",
            "{{password}}",
            "{{username}}",
        ] {
            let e = UsernameTemplate::parse(src).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{src}");
        }
        for src in [
            r#"{"a":"{{identity.name}}"}"#,
            r#"{"a":"{{#if password}}x{{/if}}"}"#,
        ] {
            assert!(StatementTemplate::parse(src).is_err(), "{src}");
        }
    }

    #[test]
    fn subexpressions_and_spellings() {
        let t = UsernameTemplate::parse("{{truncate (lowercase identity.name) 4}}").unwrap();
        assert_eq!(t.render(&vars(Some("TESTuser"))).unwrap(), "test");
        for src in [
            "{{random-8}}",
            "{{ random-8 }}",
            "{{~random-8~}}",
            "{{random 8}}",
            "{{random '8'}}",
        ] {
            let t = UsernameTemplate::parse(src).unwrap();
            let s = t.render(&vars(None)).unwrap();
            assert_eq!(s.len(), 8, "{src}");
            assert!(s.bytes().all(|b| RANDOM_CHARS.contains(&b)), "{src}");
        }
        // Not the random-N spelling: left to the parser, which refuses it.
        assert!(UsernameTemplate::parse("{{random-x}}").is_err());
        assert!(UsernameTemplate::parse("{{random-0}}").is_err());
        assert!(UsernameTemplate::parse("{{random-257}}").is_err());
    }

    #[test]
    fn prefix_detection_reads_the_template() {
        for (src, keeps) in [
            ("{{randomUsername}}", true),
            ("{{ randomUsername }}", true),
            ("{{!-- note --}}{{randomUsername}}-{{identity.name}}", true),
            ("x{{randomUsername}}", false),
            ("{{identity.name}}{{randomUsername}}", false),
        ] {
            assert_eq!(
                UsernameTemplate::parse(src).unwrap().keeps_prefix(),
                keeps,
                "{src}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let deep = format!(
            "{{{{uppercase {}identity.name{}}}}}",
            "(lowercase ".repeat(5000),
            ")".repeat(5000)
        );
        assert!(UsernameTemplate::parse(&deep).is_err());
        for opener in ["{{#if a}}", "{{ ~ #if a}}", "{{~\n#if a}}"] {
            assert!(UsernameTemplate::parse(&opener.repeat(5000)).is_err());
        }
        for deep in [
            format!("{{{{uppercase {}}}}}", "[".repeat(8000)),
            format!("{{{{uppercase {}}}}}", "{\"a\":".repeat(4000)),
        ] {
            assert!(UsernameTemplate::parse(&deep).is_err());
            assert!(StatementTemplate::parse(&deep).is_err());
        }
    }

    #[test]
    fn nesting_at_the_limit_parses_without_overflow() {
        // Runs on a test thread (2 MiB stack, debug build): the bound must leave headroom.
        let n = MAX_NESTING - 2;
        for src in [
            format!("{{{{uppercase {}1{}}}}}", "[".repeat(n), "]".repeat(n)),
            format!(
                "{{{{uppercase {}identity.name{}}}}}",
                "(lowercase ".repeat(n),
                ")".repeat(n)
            ),
        ] {
            let _ = UsernameTemplate::parse(&src);
        }
    }

    #[test]
    fn errors_never_contain_the_password() {
        let marker = "PW-MARKER-7f3a";
        let pw = SecretString::from(format!("{marker}\\\\"));
        let render = |src: &str, password: Option<&SecretString>| {
            StatementTemplate::parse(src).and_then(|t| {
                t.render(&StatementVars {
                    username: "u",
                    password,
                    expiration: None,
                })
            })
        };
        // A statement that is JSON only when the value is quoted by the template.
        let cases: Vec<Result<RenderedStatement>> = vec![
            render(r#"{"a": {{password}} }"#, Some(&pw)),
            render(r#"{"a":"{{password}}"}"#, None),
            render(r#"{"a":"{{password}}", "b": {{expiration}} }"#, Some(&pw)),
        ];
        for r in cases {
            let e = r.unwrap_err();
            assert!(!e.to_string().contains(marker), "{e}");
            assert!(!format!("{e:?}").contains(marker), "{e:?}");
        }
        let t = StatementTemplate::parse(r#"{"a":"{{password}}"}"#).unwrap();
        let v = t
            .render(&StatementVars {
                username: "u",
                password: Some(&pw),
                expiration: None,
            })
            .unwrap();
        let e = v.check_shape(&["b"], &["b"]).unwrap_err();
        assert!(!e.to_string().contains(marker), "{e}");
        assert!(!format!("{v:?}").contains(marker));
    }

    #[test]
    fn statement_shape_checks() {
        let t = StatementTemplate::parse(
            r#"{"UserName":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Extra":null}"#,
        )
        .unwrap();
        t.check_shape(&["UserName", "AuthenticationMode.Type"], &[])
            .unwrap();
        let e = t.check_shape(&["Extra"], &[]).unwrap_err();
        assert!(e.to_string().contains("Extra"), "{e}");
        let e = t
            .check_shape(&["UserName"], &["UserName", "AuthenticationMode"])
            .unwrap_err();
        assert!(e.to_string().contains("Extra"), "{e}");
        let e = t
            .check_shape(&["AuthenticationMode.Passwords.0"], &[])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
    }
}
