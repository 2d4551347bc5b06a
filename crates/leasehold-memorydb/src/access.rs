//! Checking MemoryDB access strings before the first `CreateUser`.
//!
//! MemoryDB hands the access string to the engine's ACL parser; a string the engine refuses
//! fails `CreateUser` only once the secret is in use. Parsing it when the secret is registered
//! makes that a configuration error up front. Passwords belong in `AuthenticationMode`, never in
//! the access string, so the password rules (`>`, `<`, `#`, `!`, `nopass`, `resetpass`) and
//! `reset` (which clears them) are refused.

use leasehold_core::{Error, ErrorKind, Result};

/// Command categories of Redis OSS 7 and Valkey 7/8 (`ACL CAT`).
const CATEGORIES: &[&str] = &[
    "all",
    "admin",
    "bitmap",
    "blocking",
    "connection",
    "dangerous",
    "fast",
    "geo",
    "hash",
    "hyperloglog",
    "keyspace",
    "list",
    "pubsub",
    "read",
    "scripting",
    "set",
    "slow",
    "sortedset",
    "stream",
    "string",
    "transaction",
    "write",
];

/// What an access string grants, as far as leasehold's checks need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AccessSummary {
    /// The last of `on` / `off` is `on`: the user can log in.
    pub enabled: bool,
    /// Every key is reachable (`~*` or `allkeys`, not reset afterwards).
    pub all_keys: bool,
    /// Every command is allowed (`+@all` or `allcommands`, nothing removed afterwards).
    pub all_commands: bool,
}

fn invalid(rule: &str, why: &str) -> Error {
    // A password rule is never quoted back.
    let shown: String = if rule.starts_with(['>', '<', '#', '!']) {
        "[password rule]".to_string()
    } else {
        rule.chars().take(60).collect()
    };
    Error::new(
        ErrorKind::InvalidConfig,
        format!("access string: rule {shown:?} is invalid: {why}"),
    )
}

fn command_ok(name: &str) -> bool {
    // `config|get` names a subcommand.
    !name.is_empty()
        && name.split('|').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        && name.split('|').count() <= 2
}

fn pattern_ok(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_graphic())
}

/// Parses a MemoryDB access string (Redis ACL rules without password rules) and says what it
/// grants. The user must end up switched `on`: a leased credential that cannot log in is a
/// configuration mistake.
///
/// # Examples
///
/// ```
/// use leasehold_memorydb::check_access_string;
///
/// let s = check_access_string("on ~app:* &* +@read -keys").unwrap();
/// assert!(s.enabled && !s.all_keys && !s.all_commands);
/// assert!(check_access_string("on ~* +@all").unwrap().all_commands);
/// assert!(check_access_string("on ~* +@everything").is_err());
/// assert!(check_access_string("on >password ~* +@all").is_err());
/// assert!(check_access_string("off ~* +@all").is_err());
/// ```
pub fn check_access_string(access: &str) -> Result<AccessSummary> {
    if access.len() > 8192 {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "access string: longer than 8192 bytes",
        ));
    }
    let mut summary = AccessSummary::default();
    let mut seen_on_off = false;
    for rule in access.split_ascii_whitespace() {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => {
                summary.enabled = true;
                seen_on_off = true;
            }
            "off" => {
                summary.enabled = false;
                seen_on_off = true;
            }
            "allkeys" => summary.all_keys = true,
            "resetkeys" => summary.all_keys = false,
            "allchannels" | "resetchannels" => {}
            "allcommands" => summary.all_commands = true,
            "nocommands" => summary.all_commands = false,
            "nopass" | "resetpass" | "reset" => {
                return Err(invalid(
                    rule,
                    "passwords are set through AuthenticationMode, not the access string",
                ))
            }
            _ => {
                let first = rule.chars().next().unwrap_or(' ');
                match first {
                    '>' | '<' | '#' | '!' => {
                        return Err(invalid(
                            rule,
                            "passwords are set through AuthenticationMode, not the access string",
                        ))
                    }
                    '~' => {
                        if !pattern_ok(&rule[1..]) {
                            return Err(invalid(rule, "empty key pattern"));
                        }
                        if &rule[1..] == "*" {
                            summary.all_keys = true;
                        }
                    }
                    '%' => {
                        // %R~pattern, %W~pattern, %RW~pattern (Redis 7 key permissions).
                        let Some((perm, pat)) = rule[1..].split_once('~') else {
                            return Err(invalid(rule, "expected %R~, %W~ or %RW~ and a pattern"));
                        };
                        let perm = perm.to_ascii_uppercase();
                        if !matches!(perm.as_str(), "R" | "W" | "RW" | "WR") || !pattern_ok(pat) {
                            return Err(invalid(rule, "expected %R~, %W~ or %RW~ and a pattern"));
                        }
                    }
                    '&' => {
                        if !pattern_ok(&rule[1..]) {
                            return Err(invalid(rule, "empty channel pattern"));
                        }
                    }
                    '+' | '-' => {
                        let body = &lower[1..];
                        if let Some(cat) = body.strip_prefix('@') {
                            if !CATEGORIES.contains(&cat) {
                                return Err(invalid(
                                    rule,
                                    &format!(
                                        "unknown command category; known: {}",
                                        CATEGORIES.join(", ")
                                    ),
                                ));
                            }
                            if cat == "all" {
                                summary.all_commands = first == '+';
                            } else if first == '-' {
                                summary.all_commands = false;
                            }
                        } else if command_ok(body) {
                            if first == '-' {
                                summary.all_commands = false;
                            }
                        } else {
                            return Err(invalid(rule, "not a command name"));
                        }
                    }
                    _ => return Err(invalid(rule, "unknown rule")),
                }
            }
        }
    }
    if !seen_on_off || !summary.enabled {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "access string: the user must be switched on (add \"on\"), or the leased credential cannot log in",
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_strings() {
        for ok in [
            "on ~* +@all",
            "on ~* &* +@all",
            "on ~app:* +@read +@write -flushall",
            "on %R~cache:* +get +config|get",
            "on allkeys allchannels allcommands",
            "off on ~* +@read",
        ] {
            check_access_string(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn refuses_bad_strings() {
        for bad in [
            "",
            "~* +@all",
            "on ~* +@all off",
            "on ~ +@all",
            "on ~* +@nothing",
            "on ~* +get|",
            "on nopass ~* +@all",
            "on >pw ~* +@all",
            "on #abc ~* +@all",
            "on reset ~* +@all",
            "on %X~a +@all",
            "on ~* what",
        ] {
            let e = check_access_string(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }

    #[test]
    fn summarises_grants() {
        let s = check_access_string("on ~* +@all -debug").unwrap();
        assert!(s.all_keys && !s.all_commands);
        let s = check_access_string("on ~* resetkeys ~a +@all").unwrap();
        assert!(!s.all_keys && s.all_commands);
    }
}
