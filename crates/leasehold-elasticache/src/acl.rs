//! A parser for the subset of Redis ACL rules that ElastiCache access strings use.
//!
//! ElastiCache passes the access string to the engine's `ACL SETUSER`; a string the engine
//! refuses makes `CreateUser` fail only after the secret is in use. Parsing it when the secret
//! is registered turns that into an [`ErrorKind::InvalidConfig`] up front. Passwords never
//! belong in an access string (ElastiCache takes them in `Passwords`), so `>`, `<`, `#`, `!`,
//! `nopass` and `resetpass` are refused.

use leasehold_core::{Error, ErrorKind, Result};

/// The command categories of Redis 7 / Valkey 7-8 (`ACL CAT`).
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
    "search",
    "json",
    "bloom",
    "cuckoo",
    "topk",
    "cms",
    "tdigest",
    "timeseries",
];

/// What an access string grants, as far as the checks here need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessSummary {
    /// The user is switched on (the last of `on` / `off` is `on`).
    pub enabled: bool,
    /// Every key pattern is allowed (`~*` or `allkeys`, not reset afterwards).
    pub all_keys: bool,
    /// Every command is allowed (`+@all` / `allcommands`, with nothing removed afterwards).
    pub all_commands: bool,
}

impl AccessSummary {
    /// On, all keys, all commands: with no password, anyone can do anything.
    pub fn is_full_access(&self) -> bool {
        self.enabled && self.all_keys && self.all_commands
    }
}

fn bad(rule: &str, why: &str) -> Error {
    let shown: String = rule.chars().take(60).collect();
    Error::new(
        ErrorKind::InvalidConfig,
        format!("access string: rule {shown:?} is invalid: {why}"),
    )
}

fn command_name_ok(name: &str) -> bool {
    // `config|get` names a subcommand; command names are letters, digits, `-`, `_`, `.`.
    let mut parts = name.split('|');
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let first = parts.next().is_some_and(ok);
    let rest: Vec<&str> = parts.collect();
    first && rest.len() <= 1 && rest.iter().all(|p| ok(p))
}

fn pattern_ok(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_graphic())
}

/// Parses `access` as Redis ACL rules and summarises it.
///
/// # Examples
///
/// ```
/// use leasehold_elasticache::acl::parse_access_string;
///
/// let s = parse_access_string("on ~app:* +@read -keys").unwrap();
/// assert!(s.enabled && !s.all_keys && !s.all_commands);
/// assert!(parse_access_string("on ~* +@all").unwrap().is_full_access());
/// assert!(parse_access_string("on ~* +@bogus").is_err());
/// assert!(parse_access_string("on >secret ~* +@all").is_err());
/// ```
pub fn parse_access_string(access: &str) -> Result<AccessSummary> {
    if access.trim().is_empty() {
        return Err(Error::invalid_config(
            "access string: it is empty; use for example \"on ~* +@all\"",
        ));
    }
    if access.len() > 4096 {
        return Err(Error::invalid_config(
            "access string: longer than 4096 characters",
        ));
    }
    let mut s = AccessSummary::default();
    let mut saw_on_off = false;
    for rule in access.split_ascii_whitespace() {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => {
                s.enabled = true;
                saw_on_off = true;
            }
            "off" => {
                s.enabled = false;
                saw_on_off = true;
            }
            "allkeys" => s.all_keys = true,
            "resetkeys" => s.all_keys = false,
            "allchannels" | "resetchannels" => {}
            "allcommands" => s.all_commands = true,
            "nocommands" => s.all_commands = false,
            "nopass" | "resetpass" | "reset" => return Err(bad(
                rule,
                "passwords are set with Passwords / NoPasswordRequired, not in the access string",
            )),
            _ => {
                let first = rule.chars().next().unwrap_or(' ');
                match first {
                    '~' => {
                        let p = &rule[1..];
                        if !pattern_ok(p) {
                            return Err(bad(rule, "a key pattern follows '~'"));
                        }
                        if p == "*" {
                            s.all_keys = true;
                        }
                    }
                    '%' => {
                        // %R~pattern, %W~pattern, %RW~pattern (Redis 7 key permissions).
                        let Some((perm, pat)) = rule[1..].split_once('~') else {
                            return Err(bad(rule, "expected %R~, %W~ or %RW~ and a key pattern"));
                        };
                        let perm = perm.to_ascii_uppercase();
                        if !matches!(perm.as_str(), "R" | "W" | "RW" | "WR") || !pattern_ok(pat) {
                            return Err(bad(rule, "expected %R~, %W~ or %RW~ and a key pattern"));
                        }
                        if pat == "*" && matches!(perm.as_str(), "RW" | "WR") {
                            s.all_keys = true;
                        }
                    }
                    '&' => {
                        if !pattern_ok(&rule[1..]) {
                            return Err(bad(rule, "a channel pattern follows '&'"));
                        }
                    }
                    '+' | '-' => {
                        let body = &rule[1..];
                        if let Some(cat) = body.strip_prefix('@') {
                            if !CATEGORIES.contains(&cat.to_ascii_lowercase().as_str()) {
                                return Err(bad(rule, "unknown command category"));
                            }
                            if cat.eq_ignore_ascii_case("all") {
                                s.all_commands = first == '+';
                            } else if first == '-' {
                                s.all_commands = false;
                            }
                        } else if command_name_ok(body) {
                            if first == '-' {
                                s.all_commands = false;
                            }
                        } else {
                            return Err(bad(rule, "expected a command name or @category"));
                        }
                    }
                    '>' | '<' | '#' | '!' => {
                        return Err(bad(
                            "[password rule]",
                            "passwords are set with Passwords, not in the access string",
                        ))
                    }
                    '(' => return Err(bad(rule, "selectors are not supported by ElastiCache")),
                    _ => return Err(bad(rule, "not an ACL rule")),
                }
            }
        }
    }
    if !saw_on_off || !s.enabled {
        return Err(Error::invalid_config(
            "access string: it must switch the user on (\"on\"), or the credential could never log in",
        ));
    }
    Ok(s)
}

/// Summarises an access string read back from AWS (a group member's). Unlike
/// [`parse_access_string`] it never fails: unknown rules are ignored, and a missing `on` means
/// the user is off.
pub fn summarize_existing(access: &str) -> AccessSummary {
    let mut s = AccessSummary::default();
    for rule in access.split_ascii_whitespace() {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => s.enabled = true,
            "off" => s.enabled = false,
            "allkeys" | "~*" | "%rw~*" | "%wr~*" => s.all_keys = true,
            "resetkeys" => s.all_keys = false,
            "allcommands" | "+@all" => s.all_commands = true,
            "nocommands" | "-@all" => s.all_commands = false,
            r if r.starts_with('-') => s.all_commands = false,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_strings() {
        for ok in [
            "on ~* +@all",
            "on ~* &* +@all",
            "on ~app:* +@read +@write -flushall -flushdb",
            "on %R~cache:* +get +mget",
            "on allkeys allchannels allcommands -config|set",
            "off on ~* +@all -@dangerous",
            "ON ~* +@ALL",
        ] {
            parse_access_string(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_garbage_and_passwords() {
        for bad in [
            "",
            "   ",
            "~* +@all",
            "on off ~* +@all",
            "on ~ +@all",
            "on ~* +@nope",
            "on ~* +",
            "on ~* +get|set|x",
            "on ~* +@all nopass",
            "on >hunter2hunter2hunter2 ~* +@all",
            "on #abcdef ~* +@all",
            "on ~* +@all (~x +get)",
            "on ~* +@all blah",
            "on %X~* +@all",
        ] {
            assert!(parse_access_string(bad).is_err(), "{bad:?}");
        }
        let e = parse_access_string("on >hunter2hunter2hunter2 ~* +@all").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn summaries() {
        assert!(parse_access_string("on ~* +@all").unwrap().is_full_access());
        assert!(!parse_access_string("on ~* +@all -flushall")
            .unwrap()
            .is_full_access());
        assert!(!parse_access_string("on ~app:* +@all")
            .unwrap()
            .is_full_access());
        assert!(summarize_existing("on ~* +@all").is_full_access());
        assert!(summarize_existing("on ~* &* +@all").is_full_access());
        assert!(!summarize_existing("off ~* +@all").is_full_access());
        assert!(!summarize_existing("on ~* -@all").is_full_access());
    }
}
