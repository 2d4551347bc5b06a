//! ACL rules: the part of `ACL SETUSER` after the name and the password, checked offline by
//! the [`SelfHosted`](AclDialect::SelfHosted) dialect of the one Redis ACL grammar in
//! [`leasehold_core::acl`].

use std::fmt;

use leasehold_core::acl::AclDialect;
use leasehold_core::{Error, Result};

/// The rules every issued user gets unless the configuration says otherwise: every key and
/// channel, every command except the `@dangerous` ones (`FLUSHALL`, `CONFIG`, `DEBUG`, `KEYS`,
/// `ACL`, `CLIENT KILL`, ...).
pub const DEFAULT_ACL_RULES: &str = "~* &* +@all -@dangerous";

/// Longest rules string accepted (Redis has no limit of its own; this keeps errors short).
pub const MAX_RULES_LEN: usize = AclDialect::SelfHosted.max_len();

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
        let args = AclDialect::SelfHosted.parse(rules)?.into_args();
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
