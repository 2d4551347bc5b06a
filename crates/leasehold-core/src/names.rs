//! Per-target name rules, checked on every rendered username before any network call.

use crate::error::{Error, ErrorKind, Result};

/// The default prefix of generated usernames; reconcile finds the library's users by it.
pub const DEFAULT_USERNAME_PREFIX: &str = "lh-";

/// The naming rule of a target system.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// ElastiCache user id: starts with a letter; letters, digits and hyphens; no trailing or
    /// doubled hyphen; at most 40 characters; stored lower-case.
    ElastiCacheUserId,
    /// MemoryDB user name: starts with a letter; letters, digits and hyphens; no trailing or
    /// doubled hyphen; at most 40 characters.
    MemoryDbUserName,
    /// IAM user name: 1 to 64 characters from `[A-Za-z0-9+=,.@_-]`.
    IamUserName,
    /// STS role session name: 2 to 64 characters from `[A-Za-z0-9+=,.@_-]`.
    StsSessionName,
    /// STS federation token name: 2 to 32 characters from `[A-Za-z0-9+=,.@_-]`.
    FederationTokenName,
    /// Redis / Valkey ACL user name: 1 to 128 printable ASCII characters, no spaces.
    RedisAclUser,
    /// Anything non-empty without control characters or whitespace, at most 256 bytes.
    Any,
}

fn iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

impl NameRule {
    /// A short human name of the rule, used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            NameRule::ElastiCacheUserId => "ElastiCache user id",
            NameRule::MemoryDbUserName => "MemoryDB user name",
            NameRule::IamUserName => "IAM user name",
            NameRule::StsSessionName => "STS role session name",
            NameRule::FederationTokenName => "STS federation token name",
            NameRule::RedisAclUser => "Redis ACL user name",
            NameRule::Any => "user name",
        }
    }

    /// The longest name the rule allows.
    pub fn max_len(self) -> usize {
        match self {
            NameRule::ElastiCacheUserId | NameRule::MemoryDbUserName => 40,
            NameRule::IamUserName | NameRule::StsSessionName => 64,
            NameRule::FederationTokenName => 32,
            NameRule::RedisAclUser => 128,
            NameRule::Any => 256,
        }
    }

    /// Brings a rendered name into the target's canonical form (ElastiCache stores user ids
    /// lower-case). Other rules return the name unchanged.
    pub fn normalize(self, name: &str) -> String {
        match self {
            NameRule::ElastiCacheUserId => name.to_ascii_lowercase(),
            _ => name.to_string(),
        }
    }

    /// Checks `name` (already normalized) against the rule.
    pub fn check(self, name: &str) -> Result<()> {
        let fail = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidTemplate,
                format!(
                    "{} {:?} is invalid: {why}",
                    self.describe(),
                    name.escape_debug().to_string()
                ),
            ))
        };
        let len = name.chars().count();
        if len == 0 {
            return fail("it is empty".into());
        }
        if len > self.max_len() {
            return fail(format!(
                "it has {len} characters, at most {} are allowed",
                self.max_len()
            ));
        }
        match self {
            NameRule::ElastiCacheUserId | NameRule::MemoryDbUserName => {
                if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return fail("it must start with a letter".into());
                }
                if let Some(c) = name
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
                {
                    return fail(format!(
                        "{c:?} is not allowed (letters, digits and hyphens only)"
                    ));
                }
                if name.ends_with('-') {
                    return fail("it must not end with a hyphen".into());
                }
                if name.contains("--") {
                    return fail("it must not contain two consecutive hyphens".into());
                }
            }
            NameRule::IamUserName | NameRule::StsSessionName | NameRule::FederationTokenName => {
                if matches!(
                    self,
                    NameRule::StsSessionName | NameRule::FederationTokenName
                ) && len < 2
                {
                    return fail("it must have at least 2 characters".into());
                }
                if let Some(c) = name.chars().find(|c| !iam_char(*c)) {
                    return fail(format!(
                        "{c:?} is not allowed (letters, digits and +=,.@_- only)"
                    ));
                }
            }
            NameRule::RedisAclUser => {
                if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) {
                    return fail(format!(
                        "{c:?} is not allowed (printable ASCII without spaces only)"
                    ));
                }
            }
            NameRule::Any => {
                if name.len() > 256 {
                    return fail("it is longer than 256 bytes".into());
                }
                if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
                    return fail(format!("{c:?} is not allowed"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elasticache_rules() {
        let r = NameRule::ElastiCacheUserId;
        assert!(r.check("lh-abc123").is_ok());
        assert!(r.check(&"a".repeat(40)).is_ok());
        for bad in ["", "1abc", "abc-", "a--b", "a_b", "a b", &"a".repeat(41)] {
            assert!(r.check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(r.normalize("LH-Abc"), "lh-abc");
    }

    #[test]
    fn iam_rules() {
        assert!(NameRule::IamUserName.check("lh-a+b=c,d.e@f_g").is_ok());
        assert!(NameRule::IamUserName.check(&"a".repeat(65)).is_err());
        assert!(NameRule::StsSessionName.check("a").is_err());
        assert!(NameRule::FederationTokenName
            .check(&"a".repeat(33))
            .is_err());
    }

    #[test]
    fn redis_rules() {
        assert!(NameRule::RedisAclUser.check("lh-x.y:z").is_ok());
        assert!(NameRule::RedisAclUser.check("a b").is_err());
        assert!(NameRule::RedisAclUser.check("a\nb").is_err());
    }
}
