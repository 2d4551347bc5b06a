//! The template helpers. They return values (`call_inner`) rather than writing to the output,
//! so handlebars applies the template's escape function to their results and they work as
//! subexpressions.

use handlebars::template::Template;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonValue, RenderContext, RenderErrorReason, ScopedJson,
};
use serde_json::Value;

use super::{random_lowercase, MAX_RANDOM_LEN};
use crate::error::Result;

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

pub(super) fn literal_u64(v: &Value) -> Option<u64> {
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

/// A handlebars registry holding `template` as `t`, strict, with every helper and `escape`.
pub(super) fn registry(template: Template, escape: fn(&str) -> String) -> Handlebars<'static> {
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
