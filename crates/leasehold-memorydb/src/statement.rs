//! Rendered creation and revocation statements, read into the MemoryDB API's input fields.
//!
//! A statement is JSON shaped like the API input (`CreateUser`, `DeleteUser`). Every key is
//! checked: an unknown key, a value of the wrong type, a missing required key or a value the
//! API would refuse is an [`ErrorKind::InvalidTemplate`] naming the key, never the value (a
//! rendered statement holds the password).

use std::fmt;

use leasehold_core::{Error, ErrorKind, NameRule, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::access::check_access_string;

/// Members of MemoryDB `CreateUser` input.
pub(crate) const CREATE_USER_KEYS: &[&str] =
    &["UserName", "AuthenticationMode", "AccessString", "Tags"];

/// Members of MemoryDB `AuthenticationMode`.
const AUTH_MODE_KEYS: &[&str] = &["Type", "Passwords"];

/// Members of MemoryDB `DeleteUser` input.
pub(crate) const DELETE_USER_KEYS: &[&str] = &["UserName"];

/// Tag keys the provider sets itself.
const RESERVED_TAG_PREFIX: &str = "leasehold:";

fn invalid(field: &str, msg: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidTemplate, format!("{field}: {msg}")).with_context("field", field)
}

/// `CreateUser` input read from a rendered creation statement. Holds the passwords, so its
/// `Debug` shows only how many there are.
pub(crate) struct CreateUserInput {
    pub user_name: String,
    pub access_string: String,
    pub passwords: Vec<SecretString>,
    pub tags: Vec<(String, String)>,
}

impl fmt::Debug for CreateUserInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserInput")
            .field("user_name", &self.user_name)
            .field("access_string", &self.access_string)
            .field("passwords", &self.passwords.len())
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

fn object<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(field, "must be a JSON object"))
}

fn refuse_unknown(
    obj: &Map<String, Value>,
    allowed: &[&str],
    field: &str,
    api: &str,
) -> Result<()> {
    let unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "key(s) {} are not {api} input; allowed: {}",
                unknown.join(", "),
                allowed.join(", ")
            ),
        ))
    }
}

fn required_str<'v>(obj: &'v Map<String, Value>, key: &str, field: &str) -> Result<&'v str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            Err(invalid(field, format!("the required key {key} is missing")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(field, format!("{key} must be a string"))),
    }
}

/// Checks a user name taken from a statement against the MemoryDB rule, lower-cased.
fn user_name(obj: &Map<String, Value>, field: &str) -> Result<String> {
    let raw = required_str(obj, "UserName", field)?;
    let name = NameRule::MemoryDbUserName.normalize(raw);
    NameRule::MemoryDbUserName
        .check(&name)
        .map_err(|e| invalid(field, format!("UserName: {}", e.message())))?;
    Ok(name)
}

impl CreateUserInput {
    /// Reads a rendered creation statement (`field` names it in errors).
    pub(crate) fn from_json(v: &Value, field: &str) -> Result<Self> {
        let obj = object(v, field)?;
        refuse_unknown(obj, CREATE_USER_KEYS, field, "CreateUser")?;
        let user_name = user_name(obj, field)?;
        let access_string = required_str(obj, "AccessString", field)?.to_string();
        check_access_string(&access_string)
            .map_err(|e| invalid(field, format!("AccessString: {}", e.message())))?;

        let mode =
            match obj.get("AuthenticationMode") {
                None | Some(Value::Null) => return Err(invalid(
                    field,
                    "the required key AuthenticationMode is missing (MemoryDB CreateUser needs it)",
                )),
                Some(m) => object(m, &format!("{field}.AuthenticationMode"))?,
            };
        refuse_unknown(
            mode,
            AUTH_MODE_KEYS,
            &format!("{field}.AuthenticationMode"),
            "AuthenticationMode",
        )?;
        match mode.get("Type") {
            Some(Value::String(t)) if t == "password" => {}
            None | Some(Value::Null) => {
                return Err(invalid(
                    field,
                    "AuthenticationMode.Type is missing; it must be \"password\"",
                ))
            }
            Some(_) => {
                return Err(invalid(
                    field,
                    "AuthenticationMode.Type must be \"password\" (IAM-authenticated users have no password to lease)",
                ))
            }
        }
        let passwords = match mode.get("Passwords") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| match p {
                    Value::String(s) => Ok(SecretString::from(s.clone())),
                    _ => Err(invalid(
                        field,
                        "AuthenticationMode.Passwords must be a list of strings",
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(invalid(
                    field,
                    "AuthenticationMode.Passwords must be a list of strings",
                ))
            }
        };
        if passwords.is_empty() || passwords.len() > 2 {
            return Err(invalid(
                field,
                "AuthenticationMode.Passwords must hold one or two passwords",
            ));
        }
        for p in &passwords {
            let s = p.expose_secret();
            // Never quote the value: it is a password.
            if !(16..=128).contains(&s.chars().count()) {
                return Err(invalid(
                    field,
                    "AuthenticationMode.Passwords: a MemoryDB password has 16 to 128 characters",
                ));
            }
            if s.chars().any(|c| {
                !c.is_ascii_graphic() || leasehold_core::password::AWS_CACHE_FORBIDDEN.contains(c)
            }) {
                return Err(invalid(
                    field,
                    "AuthenticationMode.Passwords: a MemoryDB password is printable ASCII without spaces, ',', '\"', '/' or '@'",
                ));
            }
        }

        let mut tags = Vec::new();
        match obj.get("Tags") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let t = object(item, &format!("{field}.Tags"))?;
                    refuse_unknown(t, &["Key", "Value"], &format!("{field}.Tags"), "Tag")?;
                    let key = required_str(t, "Key", &format!("{field}.Tags"))?;
                    let value = match t.get("Value") {
                        None | Some(Value::Null) => "",
                        Some(Value::String(s)) => s.as_str(),
                        Some(_) => return Err(invalid(field, "Tags: Value must be a string")),
                    };
                    check_tag(key, value).map_err(|m| invalid(field, format!("Tags: {m}")))?;
                    tags.push((key.to_string(), value.to_string()));
                }
            }
            Some(_) => {
                return Err(invalid(
                    field,
                    "Tags must be a list of {\"Key\", \"Value\"}",
                ))
            }
        }
        Ok(CreateUserInput {
            user_name,
            access_string,
            passwords,
            tags,
        })
    }

    /// Whether `password` is one of the statement's passwords.
    pub(crate) fn has_password(&self, password: &SecretString) -> bool {
        self.passwords
            .iter()
            .any(|p| p.expose_secret() == password.expose_secret())
    }
}

/// Reads a rendered revocation statement (`DeleteUser` input) and returns the user name.
pub(crate) fn delete_user_name(v: &Value, field: &str) -> Result<String> {
    let obj = object(v, field)?;
    refuse_unknown(obj, DELETE_USER_KEYS, field, "DeleteUser")?;
    user_name(obj, field)
}

/// Checks one user-supplied tag (statement or config): MemoryDB's limits, and keys the
/// provider reserves for itself. The message names the key, which is not secret.
pub(crate) fn check_tag(key: &str, value: &str) -> std::result::Result<(), String> {
    let shown: String = key.chars().take(60).collect();
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("key {shown:?} must have 1 to 128 characters"));
    }
    if key.starts_with("aws:") {
        return Err(format!("key {shown:?} must not start with aws:"));
    }
    if key.starts_with(RESERVED_TAG_PREFIX) {
        return Err(format!(
            "key {shown:?} is reserved for the provider's own tags ({RESERVED_TAG_PREFIX}*)"
        ));
    }
    if value.chars().count() > 256 {
        return Err(format!(
            "the value of {shown:?} is longer than 256 characters"
        ));
    }
    if !key.chars().all(tag_char) || !value.chars().all(tag_char) {
        return Err(format!(
            "{shown:?}: keys and values may hold letters, digits, spaces and _ . : / = + - @"
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PW: &str = "Sample-password-0123456789";

    fn create(v: Value) -> Result<CreateUserInput> {
        CreateUserInput::from_json(&v, "creation_statement")
    }

    fn good() -> Value {
        json!({
            "UserName": "lh-abc",
            "AccessString": "on ~* +@all",
            "AuthenticationMode": {"Type": "password", "Passwords": [PW]},
        })
    }

    #[test]
    fn reads_a_good_statement() {
        let mut v = good();
        v["Tags"] = json!([{"Key": "team", "Value": "payments"}]);
        v["UserName"] = json!("LH-Abc");
        let c = create(v).unwrap();
        assert_eq!(c.user_name, "lh-abc");
        assert_eq!(c.tags, vec![("team".to_string(), "payments".to_string())]);
        assert!(c.has_password(&SecretString::from(PW)));
        assert!(!format!("{c:?}").contains(PW));
    }

    #[test]
    fn refuses_bad_statements_naming_the_key() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"UserName": "lh-a", "AccessString": "on ~* +@all"}),
                "AuthenticationMode",
            ),
            (
                {
                    let mut v = good();
                    v["Colour"] = json!("red");
                    v
                },
                "Colour",
            ),
            (
                {
                    let mut v = good();
                    v["AuthenticationMode"]["Type"] = json!("iam");
                    v
                },
                "Type",
            ),
            (
                {
                    let mut v = good();
                    v["AuthenticationMode"]["Extra"] = json!(1);
                    v
                },
                "Extra",
            ),
            (
                {
                    let mut v = good();
                    v["AuthenticationMode"]["Passwords"] = json!([]);
                    v
                },
                "Passwords",
            ),
            (
                {
                    let mut v = good();
                    v["AuthenticationMode"]["Passwords"] = json!(["short"]);
                    v
                },
                "16 to 128",
            ),
            (
                {
                    let mut v = good();
                    v["AuthenticationMode"]["Passwords"] = json!([PW, PW, PW]);
                    v
                },
                "one or two",
            ),
            (
                {
                    let mut v = good();
                    v["AccessString"] = json!("on ~* +@nope");
                    v
                },
                "AccessString",
            ),
            (
                {
                    let mut v = good();
                    v["UserName"] = json!("1abc");
                    v
                },
                "UserName",
            ),
            (
                {
                    let mut v = good();
                    v["UserName"] = json!(3);
                    v
                },
                "UserName",
            ),
            (
                {
                    let mut v = good();
                    v["Tags"] = json!([{"Key": "leasehold:x", "Value": "y"}]);
                    v
                },
                "reserved",
            ),
            (
                {
                    let mut v = good();
                    v["Tags"] = json!({"team": "x"});
                    v
                },
                "Tags",
            ),
        ];
        for (v, needle) in cases {
            let e = create(v).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        let mut v = good();
        v["AuthenticationMode"]["Passwords"] = json!(["has-an-at@-sign-in-it-0123"]);
        let e = create(v).unwrap_err();
        assert!(!e.to_string().contains("has-an-at"), "{e}");
    }

    #[test]
    fn revocation_statement_takes_only_the_user_name() {
        assert_eq!(
            delete_user_name(&json!({"UserName": "lh-x"}), "revocation_statement").unwrap(),
            "lh-x"
        );
        let e = delete_user_name(&json!({"UserName": "lh-x", "Force": true}), "r").unwrap_err();
        assert!(e.to_string().contains("Force"), "{e}");
        assert!(delete_user_name(&json!({}), "r").is_err());
    }
}
