//! ACL rules: the part of `ACL SETUSER` after the name and the password, checked offline.

use std::fmt;

use leasehold_core::{Error, Result};

/// The rules every issued user gets unless the configuration says otherwise: every key and
/// channel, every command except the `@dangerous` ones (`FLUSHALL`, `CONFIG`, `DEBUG`, `KEYS`,
/// `ACL`, `CLIENT KILL`, ...).
pub const DEFAULT_ACL_RULES: &str = "~* &* +@all -@dangerous";

/// Longest rules string accepted (Redis has no limit of its own; this keeps errors short).
pub const MAX_RULES_LEN: usize = 8192;

/// Keywords that `ACL SETUSER` takes and that cannot change the user's password or state.
const KEYWORDS: &[&str] = &[
    "on",
    "allkeys",
    "resetkeys",
    "allchannels",
    "resetchannels",
    "allcommands",
    "nocommands",
    "clearselectors",
];

/// A checked ACL rules string, split into the arguments `ACL SETUSER` takes.
///
/// The provider always sends `ACL SETUSER <name> reset on ><password>` before these rules, so
/// the rules decide what the user may do but never how it authenticates. Anything that would
/// give the user another password, no password, or switch it off is refused here, before any
/// network call: `nopass`, `>pw` / `<pw`, `#hash` / `!hash`, `resetpass`, `reset`, `off`.
/// Other rules must look like `ACL SETUSER` rules (`~keys`, `%R~keys`, `&channels`, `+cmd`,
/// `-@category`, `(selector)` or one of the keywords `on`, `allkeys`, `resetkeys`,
/// `allchannels`, `resetchannels`, `allcommands`, `nocommands`, `clearselectors`); the server
/// checks the rest in [`RedisAclProvider::validate`](crate::RedisAclProvider).
///
/// # Examples
///
/// ```
/// use leasehold_redis::AclRules;
///
/// let rules = AclRules::parse("~cache:* +@read +@write -flushall (~audit:* +get)").unwrap();
/// assert_eq!(rules.args(), ["~cache:*", "+@read", "+@write", "-flushall", "(~audit:* +get)"]);
///
/// assert!(AclRules::parse("~* +@all nopass").is_err());
/// assert!(AclRules::parse("~* +@all >another-password").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AclRules {
    args: Vec<String>,
}

impl AclRules {
    /// Splits and checks `rules`. The error is [`ErrorKind::InvalidConfig`](leasehold_core::ErrorKind)
    /// and names the offending rule (rules are not secret; a refused password token is not
    /// quoted).
    pub fn parse(rules: &str) -> Result<AclRules> {
        let err = |why: String| Error::invalid_config(format!("acl_rules: {why}"));
        if rules.len() > MAX_RULES_LEN {
            return Err(err(format!(
                "{} bytes is too long (at most {MAX_RULES_LEN})",
                rules.len()
            )));
        }
        if let Some(c) = rules
            .chars()
            .find(|c| c.is_control() && !c.is_ascii_whitespace())
        {
            return Err(err(format!("{c:?} is not allowed")));
        }
        let args = split(rules).map_err(err)?;
        for arg in &args {
            check_rule(arg).map_err(err)?;
        }
        Ok(AclRules { args })
    }

    /// The rules as separate `ACL SETUSER` arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

impl Default for AclRules {
    fn default() -> Self {
        AclRules::parse(DEFAULT_ACL_RULES).expect("the default rules are valid")
    }
}

impl fmt::Display for AclRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args.join(" "))
    }
}

impl fmt::Debug for AclRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AclRules({:?})", self.to_string())
    }
}

impl std::str::FromStr for AclRules {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AclRules::parse(s)
    }
}

/// Splits on whitespace, keeping a parenthesised selector (which holds spaces) in one piece.
fn split(rules: &str) -> std::result::Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_selector = false;
    for c in rules.chars() {
        if in_selector {
            current.push(c);
            if c == ')' {
                in_selector = false;
                args.push(std::mem::take(&mut current));
            } else if c == '(' {
                return Err("selectors cannot be nested".into());
            }
        } else if c.is_whitespace() {
            if !current.is_empty() {
                args.push(std::mem::take(&mut current));
            }
        } else {
            if c == '(' {
                if !current.is_empty() {
                    return Err(format!(
                        "{current:?} runs into a selector; separate them with a space"
                    ));
                }
                in_selector = true;
            } else if c == ')' {
                return Err("')' without '('".into());
            }
            current.push(c);
        }
    }
    if in_selector {
        return Err(format!("selector {current:?} is not closed with ')'"));
    }
    if !current.is_empty() {
        args.push(current);
    }
    Ok(args)
}

fn check_rule(arg: &str) -> std::result::Result<(), String> {
    let lower = arg.to_ascii_lowercase();
    if let Some(inner) = arg.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        // Selectors hold key, channel and command rules only; refuse everything else here so
        // the message is ours, not the server's.
        let parts: Vec<&str> = inner.split_whitespace().collect();
        if parts.is_empty() {
            return Err("an empty selector \"()\" grants nothing; remove it".into());
        }
        for part in parts {
            check_rule(part)?;
            let p = part.to_ascii_lowercase();
            if p == "on" || p == "clearselectors" {
                return Err(format!("{part:?} is not allowed inside a selector"));
            }
        }
        return Ok(());
    }
    match lower.as_str() {
        "nopass" => {
            return Err(
                "\"nopass\" would let anyone in without a password; leasehold sets the password"
                    .into(),
            )
        }
        "resetpass" | "reset" => {
            return Err(format!(
                "{arg:?} would remove the password leasehold sets; the provider starts every user \
                 from \"reset\" already"
            ))
        }
        "off" => {
            return Err(
                "\"off\" would disable the user; issued users are always \"on\"".to_string(),
            )
        }
        _ => {}
    }
    match arg.chars().next() {
        Some('>' | '<') => Err(
            "password rules (\">...\" / \"<...\") are not allowed: leasehold sets the password"
                .into(),
        ),
        Some('#' | '!') => Err(
            "password hash rules (\"#...\" / \"!...\") are not allowed: leasehold sets the password"
                .into(),
        ),
        Some('~' | '&' | '+' | '-') if arg.len() > 1 => Ok(()),
        Some('%') if arg.contains('~') => Ok(()),
        _ if KEYWORDS.contains(&lower.as_str()) => Ok(()),
        _ => Err(format!(
            "{arg:?} is not an ACL rule (expected ~keys, %R~keys, &channels, +command, \
             -@category, (selector) or one of {})",
            KEYWORDS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::ErrorKind;

    #[test]
    fn default_rules_parse() {
        assert_eq!(
            AclRules::default().args(),
            ["~*", "&*", "+@all", "-@dangerous"]
        );
    }

    #[test]
    fn selectors_stay_whole() {
        let r = AclRules::parse("  +get   (~a:* %W~b:* +set)\t(&c +publish) ").unwrap();
        assert_eq!(r.args(), ["+get", "(~a:* %W~b:* +set)", "(&c +publish)"]);
        assert_eq!(r.to_string(), "+get (~a:* %W~b:* +set) (&c +publish)");
    }

    #[test]
    fn empty_rules_are_allowed() {
        assert!(AclRules::parse("").unwrap().args().is_empty());
    }

    #[test]
    fn password_changing_rules_are_refused() {
        for bad in [
            "nopass",
            "NOPASS",
            "~* >pw",
            "<pw",
            "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
            "!5e88",
            "resetpass",
            "reset",
            "off",
            "(~* nopass)",
            "(~* >x)",
            "(~* reset)",
        ] {
            let e = AclRules::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
            assert!(e.message().starts_with("acl_rules:"), "{e}");
        }
    }

    #[test]
    fn refused_password_is_not_quoted() {
        let e = AclRules::parse("~* >hunter2-secret").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "bogus",
            "~",
            "+",
            "(~a",
            "~a)",
            "(~a (+get))",
            "x(~a)",
            "()",
            "%R",
            "~a\u{0}",
        ] {
            assert!(AclRules::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AclRules::parse(&"+get ".repeat(3000)).is_err());
    }

    #[test]
    fn keywords_and_forms_are_accepted() {
        let r = AclRules::parse(
            "on allkeys resetkeys allchannels resetchannels allcommands nocommands clearselectors \
             %R~r:* %RW~rw:* -config|set +client|setinfo -@all +@read",
        )
        .unwrap();
        assert_eq!(r.args().len(), 14);
    }
}
