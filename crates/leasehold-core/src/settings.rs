//! Reading config tables: one flat map split by key name, each part deserialized with its
//! unknown keys refused and every error naming the key. The facade's `leasehold::config`, the
//! AWS providers' configs and the CLI all read their tables through these two functions.
//!
//! serde's `deny_unknown_fields` does not work through `flatten`, so a table that mixes the
//! keys of several types (a secret's common keys, the AWS keys, the provider's own) is split
//! with [`take_keys`] first and each part read with [`from_map`].

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Input as a message shows it: whole up to 80 characters; longer input (a config value can
/// be huge) by its first 64 characters, then `…` and its length. Every message about a
/// config value in the workspace shortens it here.
///
/// ```
/// use leasehold_core::settings::shorten;
///
/// assert_eq!(shorten("app-writer"), "app-writer");
/// let long = "x".repeat(1000);
/// assert_eq!(shorten(&long), format!("{}… (1000 characters)", "x".repeat(64)));
/// ```
pub fn shorten(input: &str) -> String {
    let count = input.chars().count();
    if count <= 80 {
        return input.to_string();
    }
    let head: String = input.chars().take(64).collect();
    format!("{head}… ({count} characters)")
}

/// Removes `keys` from `table` and returns them as a table of their own.
///
/// ```
/// use leasehold_core::settings::take_keys;
///
/// let mut t = serde_json::json!({"name": "a", "urls": ["redis://h"]}).as_object().unwrap().clone();
/// let common = take_keys(&mut t, &["name", "type"]);
/// assert_eq!(common.len(), 1);
/// assert_eq!(t.len(), 1);
/// ```
pub fn take_keys(table: &mut Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in keys {
        if let Some(v) = table.remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out
}

/// Deserializes `table` into `T`, naming the key in every error.
///
/// serde names the key in "unknown field" and "missing field" errors but not in type errors
/// ("invalid type: boolean `true`, expected a string"); for those, the key whose removal
/// clears the error (or turns it into another one that is not about a missing key) is named
/// in front of the message. Messages of a type's own checks that already start with a key
/// (`region: ...`) are kept as they are. serde quotes the offending value in type errors; the
/// values of keys that hold secrets (`*password*`, `*secret*`, `*token*`) never reach a
/// message.
///
/// ```
/// use leasehold_core::settings::from_map;
///
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Own { acl_save: bool }
///
/// let t = serde_json::json!({"acl_save": "yes"}).as_object().unwrap().clone();
/// let e = from_map::<Own>(t).unwrap_err();
/// assert!(e.starts_with("acl_save: invalid type"), "{e}");
/// ```
pub fn from_map<T: DeserializeOwned>(table: Map<String, Value>) -> Result<T, String> {
    let attempt = |t: &Map<String, Value>| {
        serde_json::from_value::<T>(Value::Object(t.clone()))
            .map_err(|e| redact(e.to_string(), &table))
    };
    let msg = match attempt(&table) {
        Ok(v) => return Ok(v),
        Err(m) => m,
    };
    let names_a_key = msg.split_once(": ").is_some_and(|(head, _)| {
        !head.is_empty() && head.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    });
    if msg.contains("field `") || names_a_key || table.len() > 64 {
        return Err(msg);
    }
    for key in table.keys() {
        let mut without = table.clone();
        without.remove(key);
        // Removing the culprit clears the error, or turns it into another one; when the
        // key is required, into "missing field" for that very key (not for another one).
        match attempt(&without) {
            Ok(_) => return Err(format!("{key}: {msg}")),
            Err(m) if m.contains(&format!("missing field `{key}`")) => {
                return Err(format!("{key}: {msg}"))
            }
            Err(m) if m != msg && !m.contains("missing field") => {
                return Err(format!("{key}: {msg}"))
            }
            Err(_) => {}
        }
    }
    Err(msg)
}

/// Replaces the values of secret-holding keys in `msg`.
fn redact(mut msg: String, table: &Map<String, Value>) -> String {
    for (k, v) in table {
        if !(k.contains("password") || k.contains("secret") || k.contains("token")) {
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if !text.is_empty() {
            msg = msg.replace(&text, "[REDACTED]");
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Own {
        admin_password: Option<String>,
        attempts: Option<u32>,
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_keys_and_type_errors_name_the_key() {
        let e = from_map::<Own>(map(serde_json::json!({"attempt": 3}))).unwrap_err();
        assert!(e.contains("unknown field `attempt`"), "{e}");
        let e = from_map::<Own>(map(serde_json::json!({"attempts": "x"}))).unwrap_err();
        assert!(e.starts_with("attempts: invalid type"), "{e}");
    }

    #[test]
    fn a_secret_value_is_never_quoted() {
        let e = from_map::<Own>(map(serde_json::json!({"admin_password": 918273645}))).unwrap_err();
        assert!(e.contains("admin_password"), "{e}");
        assert!(!e.contains("918273645"), "{e}");
    }
}
