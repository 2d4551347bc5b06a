//! Parsing and the static check: a template is refused when parsed, not when first rendered.

use std::fmt;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Path, RenderErrorReason};
use serde_json::Value;

use super::helpers::literal_u64;
use super::{
    HELPERS, MAX_HELPER_DEPTH, MAX_NESTING, MAX_RANDOM_LEN, MAX_TEMPLATE_LEN, STATEMENT_VARIABLES,
    USERNAME_VARIABLES,
};
use crate::error::{Error, ErrorKind, Result};

/// Rewrites the `{{random-N}}` spelling (also `{{~ random-N ~}}`) to `{{random N}}`.
pub(super) fn normalize_random_spelling(src: &str) -> String {
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
pub(super) fn random_dash(s: &str) -> Option<(&str, &str, &str, usize)> {
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
pub(super) enum Kind {
    Username,
    Statement,
}

impl Kind {
    pub(super) fn variables(self) -> &'static [&'static str] {
        match self {
            Kind::Username => USERNAME_VARIABLES,
            Kind::Statement => STATEMENT_VARIABLES,
        }
    }
    pub(super) fn what(self) -> &'static str {
        match self {
            Kind::Username => "username template",
            Kind::Statement => "statement template",
        }
    }
}

/// What the static check learned about a template.
#[derive(Default, Clone, Copy)]
pub(super) struct Uses {
    pub(super) identity: bool,
    pub(super) random_username: bool,
    pub(super) timestamp: bool,
    pub(super) starts_with_random_username: bool,
}

pub(super) fn invalid(kind: Kind, msg: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidTemplate,
        format!("{}: {msg}", kind.what()),
    )
}

pub(super) fn param_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(s) => Some(s),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw),
        _ => None,
    }
}

pub(super) fn check_nesting(kind: Kind, src: &str) -> Result<()> {
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

pub(super) fn compile(kind: Kind, src: &str) -> Result<(Template, Uses)> {
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

pub(super) fn check_elements(
    kind: Kind,
    elements: &[TemplateElement],
    uses: &mut Uses,
) -> Result<()> {
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

pub(super) fn check_variable(kind: Kind, name: &str, uses: &mut Uses) -> Result<()> {
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
pub(super) fn check_value(kind: Kind, p: &Parameter, uses: &mut Uses, depth: usize) -> Result<()> {
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

pub(super) fn literal_number(kind: Kind, helper: &str, p: &Parameter) -> Result<u64> {
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

pub(super) fn check_expression(
    kind: Kind,
    h: &HelperTemplate,
    uses: &mut Uses,
    depth: usize,
) -> Result<()> {
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

/// Describes a render failure by position and reason only: a handlebars message may in future
/// versions quote values, and a statement's values include the password.
pub(super) fn render_error(kind: Kind, e: &handlebars::RenderError) -> Error {
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
