//! The Redis ACL rule grammar, checked offline: one parser for self-hosted Redis / Valkey
//! (`ACL SETUSER` rules), ElastiCache access strings and MemoryDB access strings.
//!
//! A rule string the engine refuses fails only once the secret is in use (`CreateUser` or
//! `ACL SETUSER` at 3 a.m.); parsing it when the secret is registered turns that into an
//! [`ErrorKind::InvalidConfig`](crate::ErrorKind) up front. The three targets speak the same
//! grammar and differ only where an [`AclDialect`] says so: whether selectors are allowed, which
//! command categories exist, whether the string itself must switch the user `on`, and how long
//! it may be. Whatever the dialect, a rule that sets, clears or reveals a password is refused in
//! one place, [`password_rule`]: leasehold sets the password itself, and an error never quotes a
//! refused password rule.

use crate::{Error, Result};

/// The command categories of Redis OSS 7 and Valkey 7/8 (`ACL CAT`).
const ENGINE_CATEGORIES: &[&str] = &[
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

/// The module categories ElastiCache's Valkey / Redis OSS engines add (search, JSON, probabilistic
/// and time-series data types).
const MODULE_CATEGORIES: &[&str] = &[
    "search",
    "json",
    "bloom",
    "cuckoo",
    "topk",
    "cms",
    "tdigest",
    "timeseries",
];

/// Keywords that change neither the password nor, except `on` / `off`, the user's state.
const KEYWORDS: &[&str] = &[
    "on",
    "off",
    "allkeys",
    "resetkeys",
    "allchannels",
    "resetchannels",
    "allcommands",
    "nocommands",
    "clearselectors",
];

/// Where a rule string goes, and so which variant of the grammar applies.
///
/// | | selectors `(...)` | command categories | must say `on` | longest |
/// |---|---|---|---|---|
/// | [`SelfHosted`](Self::SelfHosted) | yes | any well-formed name (the server checks) | no: the provider sends `on`; `off` is refused | 8192 bytes |
/// | [`ElastiCache`](Self::ElastiCache) | no | engine + module categories | yes | 4096 bytes, printable ASCII |
/// | [`MemoryDb`](Self::MemoryDb) | no | engine categories | yes | 8192 bytes, printable ASCII |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AclDialect {
    /// `ACL SETUSER` rules for a self-hosted Redis or Valkey (the `acl_rules` setting).
    SelfHosted,
    /// An ElastiCache user's `AccessString`.
    ElastiCache,
    /// A MemoryDB user's `AccessString`.
    MemoryDb,
}

impl AclDialect {
    /// Every dialect, for tests that run over all of them.
    pub const ALL: [AclDialect; 3] = [
        AclDialect::SelfHosted,
        AclDialect::ElastiCache,
        AclDialect::MemoryDb,
    ];

    /// The name of the setting the rules come from; every error message starts with it.
    pub const fn field(self) -> &'static str {
        match self {
            AclDialect::SelfHosted => "acl_rules",
            AclDialect::ElastiCache | AclDialect::MemoryDb => "access string",
        }
    }

    /// The longest rule string accepted, in bytes.
    pub const fn max_len(self) -> usize {
        match self {
            AclDialect::ElastiCache => 4096,
            AclDialect::SelfHosted | AclDialect::MemoryDb => 8192,
        }
    }

    /// Whether `(...)` selectors (Redis 7) and `clearselectors` are allowed.
    pub const fn allows_selectors(self) -> bool {
        matches!(self, AclDialect::SelfHosted)
    }

    /// Whether the string itself must leave the user switched `on`. Self-hosted rules come
    /// after the provider's own `reset on ><password>`, so there `off` is refused instead.
    pub const fn requires_on(self) -> bool {
        !matches!(self, AclDialect::SelfHosted)
    }

    /// Whether only printable ASCII is accepted (the AWS APIs pass the string on as is; a key
    /// pattern on a self-hosted server may hold any text).
    pub const fn ascii_only(self) -> bool {
        !matches!(self, AclDialect::SelfHosted)
    }

    /// Whether `category` (without `@`, any case) names a command category of this target.
    pub fn knows_category(self, category: &str) -> bool {
        let lower = category.to_ascii_lowercase();
        match self {
            // Modules add categories of their own; the server checks them in `validate`.
            AclDialect::SelfHosted => word_ok(&lower),
            AclDialect::ElastiCache => {
                ENGINE_CATEGORIES.contains(&lower.as_str())
                    || MODULE_CATEGORIES.contains(&lower.as_str())
            }
            AclDialect::MemoryDb => ENGINE_CATEGORIES.contains(&lower.as_str()),
        }
    }

    fn target(self) -> &'static str {
        match self {
            AclDialect::SelfHosted => "self-hosted Redis",
            AclDialect::ElastiCache => "ElastiCache",
            AclDialect::MemoryDb => "MemoryDB",
        }
    }

    /// Where the password is set instead, for the refusal message.
    fn password_home(self) -> &'static str {
        match self {
            AclDialect::SelfHosted => "leasehold sets the password itself",
            AclDialect::ElastiCache => {
                "passwords are set with Passwords / NoPasswordRequired, not in the access string"
            }
            AclDialect::MemoryDb => {
                "passwords are set through AuthenticationMode, not the access string"
            }
        }
    }

    /// Splits and checks `rules`.
    ///
    /// The error is [`ErrorKind::InvalidConfig`](crate::ErrorKind), starts with
    /// [`field`](Self::field), and names the offending rule (rules are not secret; a refused
    /// password rule is shown as `[password rule]`).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold_core::acl::AclDialect;
    ///
    /// let acl = AclDialect::ElastiCache.parse("on ~app:* +@read -keys").unwrap();
    /// assert_eq!(acl.args(), ["on", "~app:*", "+@read", "-keys"]);
    /// assert!(acl.summary().enabled && !acl.summary().all_keys);
    ///
    /// assert!(AclDialect::MemoryDb.parse("on ~* +@search").is_err()); // not a MemoryDB category
    /// assert!(AclDialect::ElastiCache.parse("on ~* +@all (~x +get)").is_err()); // no selectors
    /// assert!(AclDialect::SelfHosted.parse("~* +@all (~x +get)").is_ok());
    /// for dialect in AclDialect::ALL {
    ///     let e = dialect.parse("on ~* +@all >hunter2").unwrap_err();
    ///     assert!(!e.to_string().contains("hunter2"));
    /// }
    /// ```
    pub fn parse(self, rules: &str) -> Result<ParsedAcl> {
        let field = self.field();
        let fail = |why: String| Error::invalid_config(format!("{field}: {why}"));
        let max = self.max_len();
        if rules.len() > max {
            return Err(fail(format!(
                "{} bytes is too long (at most {max})",
                rules.len()
            )));
        }
        if let Some(c) = rules.chars().find(|c| {
            (c.is_control() && !c.is_ascii_whitespace()) || (self.ascii_only() && !c.is_ascii())
        }) {
            return Err(fail(format!("{c:?} is not allowed")));
        }
        if self.requires_on() && rules.trim().is_empty() {
            return Err(fail(
                "it is empty; use for example \"on ~* +@all\"".to_string(),
            ));
        }
        let args = split(rules).map_err(fail)?;
        let mut summary = AccessSummary::default();
        let mut saw_on_off = false;
        for arg in &args {
            let effect = self
                .rule(arg, false)
                .map_err(|why| fail(format!("rule {:?} is invalid: {why}", shown(arg))))?;
            match effect {
                Effect::None => {}
                Effect::Enabled(on) => {
                    summary.enabled = on;
                    saw_on_off = true;
                }
                Effect::AllKeys(all) => summary.all_keys = all,
                Effect::AllCommands(all) => summary.all_commands = all,
            }
        }
        if self.requires_on() && !(saw_on_off && summary.enabled) {
            return Err(fail(
                "it must switch the user on (\"on\"), or the leased credential could never log in"
                    .to_string(),
            ));
        }
        Ok(ParsedAcl { args, summary })
    }

    /// Checks one argument; `Err` says why it is refused (without quoting it).
    fn rule(self, arg: &str, in_selector: bool) -> std::result::Result<Effect, String> {
        if let Some(why) = password_rule(arg) {
            return Err(format!("{why}; {}", self.password_home()));
        }
        let lower = arg.to_ascii_lowercase();
        if KEYWORDS.contains(&lower.as_str()) {
            return match lower.as_str() {
                "on" | "off" | "clearselectors" if in_selector => {
                    Err("it is not allowed inside a selector".into())
                }
                "off" if !self.requires_on() => {
                    Err("it would disable the user; issued users are always \"on\"".into())
                }
                "clearselectors" if !self.allows_selectors() => {
                    Err(format!("selectors are not supported by {}", self.target()))
                }
                "on" => Ok(Effect::Enabled(true)),
                "off" => Ok(Effect::Enabled(false)),
                "allkeys" => Ok(Effect::AllKeys(true)),
                "resetkeys" => Ok(Effect::AllKeys(false)),
                "allcommands" => Ok(Effect::AllCommands(true)),
                "nocommands" => Ok(Effect::AllCommands(false)),
                _ => Ok(Effect::None),
            };
        }
        let mut chars = arg.chars();
        let first = chars.next().unwrap_or(' ');
        let body = chars.as_str();
        match first {
            '~' if !body.is_empty() => Ok(Effect::AllKeys(true).only_if(body == "*")),
            '~' => Err("a key pattern follows '~'".into()),
            '%' => {
                // %R~pattern, %W~pattern, %RW~pattern (Redis 7 key permissions).
                let why = "expected %R~, %W~ or %RW~ and a key pattern";
                let (perm, pattern) = body.split_once('~').ok_or(why)?;
                let perm = perm.to_ascii_uppercase();
                if !matches!(perm.as_str(), "R" | "W" | "RW" | "WR") || pattern.is_empty() {
                    return Err(why.into());
                }
                let all = pattern == "*" && perm.len() == 2;
                Ok(Effect::AllKeys(true).only_if(all))
            }
            '&' if !body.is_empty() => Ok(Effect::None),
            '&' => Err("a channel pattern follows '&'".into()),
            '+' | '-' => {
                let grant = first == '+';
                if let Some(category) = body.strip_prefix('@') {
                    if !self.knows_category(category) {
                        return Err(self.unknown_category());
                    }
                    if category.eq_ignore_ascii_case("all") {
                        Ok(Effect::AllCommands(grant))
                    } else {
                        Ok(Effect::AllCommands(false).only_if(!grant))
                    }
                } else if command_ok(body) {
                    Ok(Effect::AllCommands(false).only_if(!grant))
                } else {
                    Err("expected a command name (\"get\", \"config|get\") or @category".into())
                }
            }
            '(' if !self.allows_selectors() => {
                Err(format!("selectors are not supported by {}", self.target()))
            }
            '(' if in_selector => Err("selectors cannot be nested".into()),
            '(' => {
                // Selectors hold key, channel and command rules only.
                let inner = body.strip_suffix(')').ok_or("a selector ends with ')'")?;
                let mut parts = inner.split_whitespace().peekable();
                if parts.peek().is_none() {
                    return Err("an empty selector \"()\" grants nothing; remove it".into());
                }
                for part in parts {
                    self.rule(part, true)
                        .map_err(|why| format!("{:?} in the selector: {why}", shown(part)))?;
                }
                Ok(Effect::None)
            }
            _ => {
                Err(format!(
                "not an ACL rule (expected ~keys, %R~keys, &channels, +command, -@category{} or \
                 one of {})",
                if self.allows_selectors() { ", (selector)" } else { "" },
                KEYWORDS
                    .iter()
                    .filter(|k| self.allows_selectors() || **k != "clearselectors")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            }
        }
    }

    fn unknown_category(self) -> String {
        match self {
            AclDialect::SelfHosted => "a category name is letters, digits, '-' and '_'".into(),
            AclDialect::ElastiCache => format!(
                "unknown command category; known: {}, {}",
                ENGINE_CATEGORIES.join(", "),
                MODULE_CATEGORIES.join(", ")
            ),
            AclDialect::MemoryDb => format!(
                "unknown command category; known: {}",
                ENGINE_CATEGORIES.join(", ")
            ),
        }
    }
}

/// What one rule does to the summary.
#[derive(Clone, Copy)]
enum Effect {
    None,
    Enabled(bool),
    AllKeys(bool),
    AllCommands(bool),
}

impl Effect {
    fn only_if(self, cond: bool) -> Effect {
        if cond {
            self
        } else {
            Effect::None
        }
    }
}

/// The one check for rules that set, clear, bypass or reveal a password: `nopass`, `resetpass`,
/// `reset` (which clears the passwords), `>password`, `<password`, `#hash`, `!hash`. Returns
/// why the rule is refused, or `None` for any other rule. The reason never quotes the rule.
///
/// # Examples
///
/// ```
/// use leasehold_core::acl::password_rule;
///
/// assert!(password_rule("NOPASS").is_some());
/// assert!(password_rule(">hunter2").is_some_and(|why| !why.contains("hunter2")));
/// assert!(password_rule("~a>b").is_none());
/// ```
pub fn password_rule(arg: &str) -> Option<&'static str> {
    let lower = arg.to_ascii_lowercase();
    match lower.as_str() {
        "nopass" => return Some("\"nopass\" would let anyone in without a password"),
        "resetpass" | "reset" => return Some("it would remove the user's password"),
        _ => {}
    }
    match arg.chars().next() {
        Some('>' | '<') => Some("password rules (\">...\" / \"<...\") are not allowed"),
        Some('#' | '!') => Some("password hash rules (\"#...\" / \"!...\") are not allowed"),
        _ => None,
    }
}

/// A rule as error messages may show it: a password rule, alone or inside a selector, is never
/// quoted, and long rules are cut.
fn shown(arg: &str) -> String {
    let mut out = String::new();
    let mut token_start = true;
    let mut in_password = false;
    for c in arg.chars() {
        if in_password {
            if !(c.is_whitespace() || c == ')') {
                continue;
            }
            in_password = false;
        }
        if token_start && matches!(c, '>' | '<' | '#' | '!') {
            out.push_str("[password rule]");
            in_password = true;
            token_start = false;
            continue;
        }
        token_start = c.is_whitespace() || c == '(';
        out.push(c);
    }
    if out.chars().count() > 60 {
        out = out.chars().take(60).collect();
    }
    out
}

fn word_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `get`, `config|get`: command names are letters, digits, `-`, `_`, `.`; one `|` names a
/// subcommand.
fn command_ok(name: &str) -> bool {
    let mut parts = name.split('|');
    parts.next().is_some_and(word_ok) && parts.next().is_none_or(word_ok) && parts.next().is_none()
}

/// Splits on whitespace, keeping a parenthesised selector (which holds spaces) in one piece.
/// The dialect decides later whether a selector is allowed.
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
                        "{:?} runs into a selector; separate them with a space",
                        shown(&current)
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
        return Err("a selector is not closed with ')'".into());
    }
    if !current.is_empty() {
        args.push(current);
    }
    Ok(args)
}

/// A checked rule string: its arguments and what they grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAcl {
    args: Vec<String>,
    summary: AccessSummary,
}

impl ParsedAcl {
    /// The rules as separate arguments (a selector is one argument), as `ACL SETUSER` takes them.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The arguments, owned.
    pub fn into_args(self) -> Vec<String> {
        self.args
    }

    /// What the rules grant outside any selector.
    pub fn summary(&self) -> AccessSummary {
        self.summary
    }
}

/// What a rule string grants, as far as leasehold's checks need to know (selectors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AccessSummary {
    /// The last of `on` / `off` is `on`: the user can log in.
    pub enabled: bool,
    /// Every key is reachable (`~*`, `%RW~*` or `allkeys`, not reset afterwards).
    pub all_keys: bool,
    /// Every command is allowed (`+@all` or `allcommands`, nothing removed afterwards).
    pub all_commands: bool,
}

impl AccessSummary {
    /// On, all keys, all commands: with no password, anyone can do anything.
    pub fn is_full_access(&self) -> bool {
        self.enabled && self.all_keys && self.all_commands
    }
}

/// Summarises a rule string read back from a server or AWS (an existing user's). Unlike
/// [`AclDialect::parse`] it never fails: unknown rules are ignored, and a missing `on` means
/// the user is off.
///
/// # Examples
///
/// ```
/// use leasehold_core::acl::summarize_existing;
///
/// assert!(summarize_existing("on ~* &* +@all").is_full_access());
/// assert!(!summarize_existing("on ~* +@all -flushall").is_full_access());
/// ```
pub fn summarize_existing(rules: &str) -> AccessSummary {
    let mut s = AccessSummary::default();
    for rule in rules.split_ascii_whitespace() {
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
    use crate::ErrorKind;

    #[test]
    fn common_access_strings_parse_in_every_aws_dialect() {
        for dialect in [AclDialect::ElastiCache, AclDialect::MemoryDb] {
            for ok in [
                "on ~* +@all",
                "on ~* &* +@all",
                "on ~app:* +@read +@write -flushall -flushdb",
                "on %R~cache:* +get +mget +config|get",
                "on allkeys allchannels allcommands -config|set",
                "off on ~* +@all -@dangerous",
                "ON ~* +@ALL",
            ] {
                dialect
                    .parse(ok)
                    .unwrap_or_else(|e| panic!("{dialect:?} {ok}: {e}"));
            }
        }
    }

    #[test]
    fn dialects_differ_where_they_say() {
        use AclDialect::*;
        let ok = |d: AclDialect, s: &str| d.parse(s).is_ok();
        assert!(ok(ElastiCache, "on ~* +@search") && !ok(MemoryDb, "on ~* +@search"));
        assert!(ok(SelfHosted, "~* +@mymodule") && !ok(ElastiCache, "on ~* +@mymodule"));
        assert!(ok(SelfHosted, "") && !ok(ElastiCache, "") && !ok(MemoryDb, ""));
        assert!(ok(SelfHosted, "~* clearselectors (~a +get)"));
        assert!(!ok(ElastiCache, "on ~* clearselectors") && !ok(MemoryDb, "on (~a +get)"));
        assert!(ok(MemoryDb, "off on ~*") && !ok(SelfHosted, "off on ~*"));
        assert!(ok(SelfHosted, "~café:*") && !ok(MemoryDb, "on ~café:*"));
        let long = format!("on {}", "~a ".repeat(2000));
        assert!(ok(MemoryDb, &long) && !ok(ElastiCache, &long));
    }

    #[test]
    fn refusals_name_the_field_and_hide_passwords() {
        for dialect in AclDialect::ALL {
            for bad in [
                "on ~* +@all nopass",
                "on >hunter2hunter2 ~* +@all",
                "on #abcdef ~* +@all",
                "on ~* +@all reset",
                "on ~* +@no|pe",
                "on ~* +get|set|x",
                "on %X~* +@all",
                "on ~* +@all blah",
                "on ~ +@all",
                "on ~* +",
            ] {
                let e = dialect.parse(bad).expect_err(bad);
                assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{dialect:?} {bad:?}");
                assert!(e.message().starts_with(dialect.field()), "{e}");
                assert!(!e.to_string().contains("hunter2"), "{e}");
            }
        }
        let e = AclDialect::SelfHosted.parse("(~* >hunter2)").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = AclDialect::SelfHosted.parse(">hunter2(~a)").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn summaries() {
        let s = |r: &str| AclDialect::ElastiCache.parse(r).unwrap().summary();
        assert!(s("on ~* +@all").is_full_access());
        assert!(s("on %RW~* +@all").is_full_access());
        assert!(!s("on %R~* +@all").is_full_access());
        assert!(!s("on ~* +@all -flushall").is_full_access());
        assert!(!s("on ~app:* +@all").is_full_access());
        assert!(!s("on ~* resetkeys ~a +@all").all_keys);
        assert!(!summarize_existing("off ~* +@all").is_full_access());
        assert!(!summarize_existing("on ~* -@all").is_full_access());
    }
}
