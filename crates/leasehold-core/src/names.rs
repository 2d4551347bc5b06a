//! Per-target name rules, checked on every rendered username before any network call.
//!
//! Each rule follows the target's own documentation (named on each variant). Where a service's
//! documented pattern is looser than what its console or sibling APIs enforce, the rule takes the
//! stricter reading, so a name leasehold accepts is never refused by the service.

use crate::error::{Error, ErrorKind, Result};

/// The default prefix of generated usernames; reconcile finds the library's users by it.
pub const DEFAULT_USERNAME_PREFIX: &str = "lh-";

/// Whether `c` is an invisible formatting character that can make text read differently from
/// what it is (bidi overrides and isolates, zero-width characters, the byte-order mark, soft
/// hyphen, line and paragraph separators).
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Names no rule lets a dynamic credential take: the built-in `default` user of Redis, Valkey,
/// ElastiCache and MemoryDB. Creating it would rewrite (and revoking it would try to delete) the
/// user every unauthenticated connection runs as.
pub const RESERVED_CACHE_USER: &str = "default";

/// The longest name quoted back in an error message.
const MAX_QUOTED: usize = 80;

/// The naming rule of a target system.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// ElastiCache user id (`CreateUser` `UserId`, ElastiCache API Reference): pattern
    /// `[a-zA-Z][a-zA-Z0-9\-]*`, stored lower-case. Like every ElastiCache identifier it must
    /// not end with a hyphen or contain two consecutive hyphens and has at most 40 characters
    /// (the rule the ElastiCache user guide gives for identifiers, and the one the AWS CDK user
    /// construct checks). `default` is reserved.
    ElastiCacheUserId,
    /// MemoryDB user name (`CreateUser` `UserName`, MemoryDB API Reference): pattern
    /// `[a-zA-Z][a-zA-Z0-9\-]*`, stored lower-case, at most 40 characters (the AWS provider
    /// documentation of `aws_memorydb_user`). The API pattern allows a trailing or doubled
    /// hyphen; leasehold refuses both, as for ElastiCache, so one name works on either service.
    /// `default` is reserved.
    MemoryDbUserName,
    /// IAM user name (`CreateUser` `UserName`, IAM API Reference): 1 to 64 characters of
    /// `[\w+=,.@-]`, where `\w` is `[A-Za-z0-9_]`. IAM compares user names case-insensitively.
    IamUserName,
    /// STS role session name (`AssumeRole` `RoleSessionName`, STS API Reference): 2 to 64
    /// characters of `[\w+=,.@-]`.
    StsSessionName,
    /// STS federation token name (`GetFederationToken` `Name`, STS API Reference): 2 to 32
    /// characters of `[\w+=,.@-]`.
    FederationTokenName,
    /// Redis / Valkey ACL user name. `ACL SETUSER` refuses names with whitespace or NUL bytes
    /// ("Usernames can't contain spaces or null characters", `acl.c`); leasehold further keeps
    /// to printable ASCII and 128 characters so a name survives ACL files, `ACL LIST` and logs
    /// unchanged. `default` is reserved.
    RedisAclUser,
    /// ElastiCache user name (`CreateUser` `UserName`, ElastiCache API Reference): at least one
    /// character; it is the name clients `AUTH` with, so it follows the Redis rule (no
    /// whitespace or NUL). leasehold keeps to printable ASCII and at most 120 characters (the
    /// bound the AWS CDK user construct checks). `default` is reserved.
    ElastiCacheUserName,
    /// Anything non-empty without control characters or whitespace, at most 256 bytes.
    Any,
}

fn iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

fn quote(name: &str) -> String {
    let mut s: String = name.chars().take(MAX_QUOTED).collect();
    if name.chars().count() > MAX_QUOTED {
        s.push('…');
    }
    format!("{:?}", s)
}

impl NameRule {
    /// A short human name of the rule, used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            NameRule::ElastiCacheUserId => "ElastiCache user id",
            NameRule::ElastiCacheUserName => "ElastiCache user name",
            NameRule::MemoryDbUserName => "MemoryDB user name",
            NameRule::IamUserName => "IAM user name",
            NameRule::StsSessionName => "STS role session name",
            NameRule::FederationTokenName => "STS federation token name",
            NameRule::RedisAclUser => "Redis ACL user name",
            NameRule::Any => "user name",
        }
    }

    /// The shortest name the rule allows, in characters.
    pub fn min_len(self) -> usize {
        match self {
            NameRule::StsSessionName | NameRule::FederationTokenName => 2,
            _ => 1,
        }
    }

    /// The longest name the rule allows, in characters.
    pub fn max_len(self) -> usize {
        match self {
            NameRule::ElastiCacheUserId | NameRule::MemoryDbUserName => 40,
            NameRule::IamUserName | NameRule::StsSessionName => 64,
            NameRule::FederationTokenName => 32,
            NameRule::ElastiCacheUserName => 120,
            NameRule::RedisAclUser => 128,
            NameRule::Any => 256,
        }
    }

    /// Brings a rendered name into the target's canonical form: ElastiCache user ids and
    /// MemoryDB user names are stored lower-case. Other rules return the name unchanged.
    pub fn normalize(self, name: &str) -> String {
        match self {
            NameRule::ElastiCacheUserId | NameRule::MemoryDbUserName => name.to_ascii_lowercase(),
            _ => name.to_string(),
        }
    }

    /// Whether `name` (already normalized) satisfies the rule.
    pub fn is_valid(self, name: &str) -> bool {
        self.check(name).is_ok()
    }

    /// Checks `name` (already normalized) against the rule. The error is
    /// [`ErrorKind::InvalidTemplate`] and quotes the name (names are not secrets) and the rule.
    ///
    /// ```
    /// use leasehold_core::NameRule;
    ///
    /// assert!(NameRule::ElastiCacheUserId.check("lh-k3v9q0").is_ok());
    /// assert!(NameRule::ElastiCacheUserId.check("lh--x").is_err());
    /// assert!(NameRule::StsSessionName.check("a").is_err());
    /// ```
    pub fn check(self, name: &str) -> Result<()> {
        let fail = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidTemplate,
                format!("{} {} is invalid: {why}", self.describe(), quote(name)),
            ))
        };
        let len = name.chars().count();
        if len == 0 {
            return fail("it is empty".into());
        }
        if len < self.min_len() {
            return fail(format!(
                "it must have at least {} characters",
                self.min_len()
            ));
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
                if let Some(c) = name.chars().find(|c| !iam_char(*c)) {
                    return fail(format!(
                        "{c:?} is not allowed (letters, digits and +=,.@_- only)"
                    ));
                }
            }
            NameRule::RedisAclUser | NameRule::ElastiCacheUserName => {
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
        let reserved = matches!(
            self,
            NameRule::ElastiCacheUserId
                | NameRule::ElastiCacheUserName
                | NameRule::MemoryDbUserName
                | NameRule::RedisAclUser
        );
        if reserved && name == RESERVED_CACHE_USER {
            return fail("it is the built-in default user".into());
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
        for bad in [
            "",
            "1abc",
            "abc-",
            "a--b",
            "a_b",
            "a b",
            "default",
            &"a".repeat(41),
        ] {
            assert!(r.check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(r.normalize("LH-Abc"), "lh-abc");
        assert_eq!(NameRule::MemoryDbUserName.normalize("LH-Abc"), "lh-abc");
        assert!(NameRule::MemoryDbUserName.check("default").is_err());
    }

    #[test]
    fn elasticache_user_name_rules() {
        let r = NameRule::ElastiCacheUserName;
        assert!(r.check("lh-app.reader:1").is_ok());
        assert!(r.check(&"a".repeat(120)).is_ok());
        for bad in ["", "a b", "a\tb", "ü", "default", &"a".repeat(121)] {
            assert!(r.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn iam_rules() {
        assert!(NameRule::IamUserName.check("lh-a+b=c,d.e@f_g").is_ok());
        assert!(NameRule::IamUserName.check("a").is_ok());
        assert!(NameRule::IamUserName.check(&"a".repeat(64)).is_ok());
        assert!(NameRule::IamUserName.check(&"a".repeat(65)).is_err());
        assert!(NameRule::IamUserName.check("a/b").is_err());
        assert!(NameRule::StsSessionName.check("a").is_err());
        assert!(NameRule::StsSessionName.check("ab").is_ok());
        assert!(NameRule::StsSessionName.check(&"a".repeat(65)).is_err());
        assert!(NameRule::FederationTokenName.check("ab").is_ok());
        assert!(NameRule::FederationTokenName
            .check(&"a".repeat(33))
            .is_err());
    }

    #[test]
    fn redis_rules() {
        assert!(NameRule::RedisAclUser.check("lh-x.y:z").is_ok());
        assert!(NameRule::RedisAclUser.check("DEFAULT").is_ok());
        for bad in ["a b", "a\nb", "a\0b", "default", "ü"] {
            assert!(NameRule::RedisAclUser.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_names_are_quoted_shortly() {
        let e = NameRule::IamUserName
            .check(&"x".repeat(10_000))
            .unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }
}
