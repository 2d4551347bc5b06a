//! Fuzz targets for what a MemoryDB secret is configured with: the creation / revocation
//! statement checks behind
//! `MemoryDbConfig::validate` (the statement parser itself is private; `validate` renders each
//! statement with a sample username and password and reads it as `CreateUser` / `DeleteUser`
//! input). `cargo fuzz` needs a nightly toolchain, and this crate has no proptest, so a seeded
//! generator drives them with the input mix of the proptest targets.
//!
//! (The access-string parser itself is fuzzed with every dialect in leasehold-core's
//! `tests/fuzz_acl.rs`.)
//!
//! Properties: no input panics; every refusal is a permanent invalid-input error; an accepted
//! creation statement renders to exactly the
//! `CreateUser` members, names the lease's user, authenticates by the generated password, and
//! carries an access string with the same guarantees; an accepted revocation statement deletes
//! the lease's user and nothing else.
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`);
//! `LEASEHOLD_FUZZ_SEED=N` replays a run (a failure prints its seed).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use leasehold_core::secrecy::SecretString;
use leasehold_core::{Error, ErrorKind, StatementTemplate, StatementVars};
use leasehold_memorydb::MemoryDbConfig;
use serde_json::Value;

/// The password `MemoryDbConfig::validate` renders statements with.
const SAMPLE_PASSWORD: &str = "Sample-password-0123456789";
/// The username it renders them with.
const SAMPLE_USER: &str = "lh-sample-user";

const KEYWORDS: &[&str] = &[
    "on",
    "off",
    "allkeys",
    "resetkeys",
    "allchannels",
    "resetchannels",
    "allcommands",
    "nocommands",
];

const ACCESS_TOKENS: &[&str] = &[
    "on",
    "ON",
    "off",
    "nopass",
    "NOPASS",
    "resetpass",
    "reset",
    ">",
    "<",
    "#",
    "!",
    ">pw",
    "<pw",
    "#ab",
    "!ab",
    "(",
    ")",
    "(~x +get)",
    "~",
    "~*",
    "~app:*",
    "%",
    "%R~",
    "%W~*",
    "%RW~*",
    "%X~*",
    "&",
    "&*",
    "+",
    "-",
    "+@all",
    "-@all",
    "+@ALL",
    "+@read",
    "+@search",
    "+@bogus",
    "-@dangerous",
    "+get",
    "-flushall",
    "config|set",
    "+config|get",
    "+config|get|x",
    "allkeys",
    "resetkeys",
    "allchannels",
    "allcommands",
    "nocommands",
    "clearselectors",
    "user",
    "*",
    ":",
    "|",
    "\"",
    "'",
    "\\",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\u{b}",
    "\u{c}",
    "\u{0}",
    "\u{1b}",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{200b}",
    "ü",
    "😀",
    "a",
    "0",
];

const VALID_RULES: &[&str] = &[
    "on",
    "~*",
    "~app:*",
    "&*",
    "+@all",
    "+@read",
    "-@dangerous",
    "+get",
    "-flushall",
    "%R~r:*",
    "allkeys",
    "-config|set",
];

/// Pieces of JSON and handlebars for statements.
const STATEMENT_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\\"",
    "\\n",
    "\\u0000",
    " ",
    "\n",
    "{{",
    "}}",
    "{{{",
    "}}}",
    "{{username}}",
    "{{password}}",
    "{{{password}}}",
    "{{randomUsername}}",
    "{{expiration}}",
    "{{unixTimestamp}}",
    "{{nosuchvar}}",
    "{{#if password}}",
    "{{/if}}",
    "{{lowercase username}}",
    "{{uppercase password}}",
    "{{truncate password 3}}",
    "{{replace username '-' '_'}}",
    "\"UserName\"",
    "\"AccessString\"",
    "\"AuthenticationMode\"",
    "\"Type\"",
    "\"Passwords\"",
    "\"Tags\"",
    "\"Key\"",
    "\"Value\"",
    "\"ACLName\"",
    "\"password\"",
    "\"iam\"",
    "\"on ~* +@all\"",
    "\"default\"",
    "null",
    "true",
    "1",
    "-1",
    "1e400",
    "ü",
    "😀",
    "\u{0}",
];

/// A small seeded generator (splitmix64): enough to fuzz without a dependency.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Any char: ASCII most often, then controls, then anything in Unicode.
    fn char(&mut self) -> char {
        match self.below(4) {
            0 | 1 => (b' ' + self.below(95) as u8) as char,
            2 => char::from_u32(self.below(0x100) as u32).unwrap_or('?'),
            _ => loop {
                if let Some(c) = char::from_u32(self.below(0x11_0000) as u32) {
                    break c;
                }
            },
        }
    }

    fn string(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        (0..n).map(|_| self.char()).collect()
    }

    fn soup(&mut self, tokens: &[&str], max: usize) -> String {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| {
                if self.below(8) == 0 {
                    self.string(6)
                } else {
                    self.pick(tokens).to_string()
                }
            })
            .collect()
    }

    fn access_string(&mut self) -> String {
        match self.below(10) {
            0..=3 => self.soup(ACCESS_TOKENS, 30),
            4..=6 => {
                let mut parts: Vec<String> = vec!["on".into()];
                for _ in 0..self.below(8) {
                    parts.push(self.pick(VALID_RULES).into());
                }
                let at = self.below(parts.len() + 1);
                let hostile = self.pick(ACCESS_TOKENS).to_string();
                parts.insert(at, hostile);
                parts.join(self.pick(&[" ", " ", "\t", "\n", "  "]))
            }
            7 => self.string(48),
            8 => {
                let unit = self.pick(&["~a ", "+get ", "on ", "nopass ", "ü", " "]);
                format!("on {}", unit.repeat(1 + self.below(5000)))
            }
            _ => {
                let n = 1 + self.below(10);
                (0..n)
                    .map(|_| self.pick(VALID_RULES))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }

    /// A JSON string literal whose content is partly handlebars.
    fn json_string(&mut self) -> String {
        let content = match self.below(6) {
            0 => "{{username}}".to_string(),
            1 => "{{password}}".to_string(),
            2 => self.access_string(),
            3 => self
                .pick(&["password", "iam", "default", "lh-x", "leasehold:x", ""])
                .into(),
            4 => self.soup(STATEMENT_TOKENS, 4),
            _ => self.string(12),
        };
        serde_json::to_string(&content).unwrap()
    }

    fn json_value(&mut self, depth: usize) -> String {
        match self.below(if depth == 0 { 4 } else { 7 }) {
            0..=2 => self.json_string(),
            3 => self
                .pick(&["null", "true", "1", "-1", "1.5", "{}", "[]"])
                .into(),
            4 | 5 => {
                let n = self.below(4);
                let members: Vec<String> = (0..n)
                    .map(|_| {
                        let key = self.pick(&[
                            "UserName",
                            "AccessString",
                            "AuthenticationMode",
                            "Type",
                            "Passwords",
                            "Tags",
                            "Key",
                            "Value",
                            "ACLName",
                            "Extra",
                        ]);
                        format!("\"{key}\":{}", self.json_value(depth - 1))
                    })
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            _ => {
                let n = self.below(3);
                let items: Vec<String> = (0..n).map(|_| self.json_value(depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
        }
    }

    /// A creation statement: the default one with members replaced, added or dropped; random
    /// JSON of the right vocabulary; soup; or any text.
    fn creation_statement(&mut self) -> String {
        match self.below(10) {
            0..=4 => {
                let mut members: Vec<(String, String)> = vec![
                    ("UserName".into(), "\"{{username}}\"".into()),
                    ("AccessString".into(), "\"on ~* +@all\"".into()),
                    (
                        "AuthenticationMode".into(),
                        "{\"Type\":\"password\",\"Passwords\":[\"{{password}}\"]}".into(),
                    ),
                ];
                for _ in 0..1 + self.below(2) {
                    match self.below(5) {
                        0 => {
                            let i = self.below(members.len());
                            members[i].1 = self.json_value(2);
                        }
                        1 => {
                            let i = self.below(members.len());
                            members[i].1 = serde_json::to_string(&self.access_string()).unwrap();
                        }
                        2 => {
                            let key = self.pick(&["Tags", "ACLName", "Extra", "UserName", ""]);
                            let value = self.json_value(2);
                            members.push((key.into(), value));
                        }
                        3 if members.len() > 1 => {
                            let i = self.below(members.len());
                            members.remove(i);
                        }
                        _ => {
                            // Half plausible tags, half any strings.
                            let (key, value) = if self.below(2) == 0 {
                                (
                                    format!(
                                        "\"{}\"",
                                        self.pick(&["team", "env:prod", "cost center", "a/b=c"])
                                    ),
                                    format!(
                                        "\"{}\"",
                                        self.pick(&[
                                            "{{expiration}}",
                                            "{{username}}",
                                            "payments",
                                            ""
                                        ])
                                    ),
                                )
                            } else {
                                (self.json_string(), self.json_string())
                            };
                            members.push((
                                "Tags".into(),
                                format!("[{{\"Key\":{key},\"Value\":{value}}}]"),
                            ));
                        }
                    }
                }
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect();
                let mut text = format!("{{{}}}", body.join(","));
                if self.below(4) == 0 {
                    // Splice a token in at a char boundary.
                    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
                    let at = bounds[self.below(bounds.len())];
                    let token = self.pick(STATEMENT_TOKENS);
                    text.insert_str(at, token);
                }
                text
            }
            5 | 6 => self.json_value(3),
            7 => self.soup(STATEMENT_TOKENS, 30),
            8 => self.string(64),
            _ => {
                let unit = self.pick(&["[", "{\"a\":", "{{", "(", "\"x\","]);
                unit.repeat(1 + self.below(20_000))
            }
        }
    }

    fn revocation_statement(&mut self) -> String {
        match self.below(4) {
            0 | 1 => format!("{{\"UserName\":{}}}", self.json_string()),
            2 => self.json_value(2),
            _ => self.soup(STATEMENT_TOKENS, 12),
        }
    }
}

fn cases() -> usize {
    let long = std::env::var("LEASEHOLD_LONG").is_ok_and(|v| v == "1");
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long { 100_000 } else { 2_000 })
}

fn seed() -> u64 {
    std::env::var("LEASEHOLD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| RandomState::new().build_hasher().finish())
}

fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(400)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 400 {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

/// Runs `check` on `cases()` inputs from `input`; panics with the seed and the input on the
/// first failure. Returns how many inputs `accepted` said were accepted.
fn fuzz(
    input: impl Fn(&mut Gen) -> String,
    check: impl Fn(&str) -> Result<bool, String>,
) -> (usize, usize) {
    let seed = seed();
    let mut g = Gen(seed);
    let n = cases();
    let mut accepted = 0;
    for i in 0..n {
        let text = input(&mut g);
        match catch_unwind(AssertUnwindSafe(|| check(&text))) {
            Ok(Ok(ok)) => accepted += usize::from(ok),
            Ok(Err(why)) => panic!(
                "case {i} (LEASEHOLD_FUZZ_SEED={seed}): {why}\ninput: \"{}\"",
                shown(&text)
            ),
            Err(_) => panic!(
                "case {i} (LEASEHOLD_FUZZ_SEED={seed}): panicked\ninput: \"{}\"",
                shown(&text)
            ),
        }
    }
    (accepted, n)
}

fn touches_authentication(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    matches!(lower.as_str(), "nopass" | "resetpass" | "reset")
        || token.starts_with(['>', '<', '#', '!'])
}

/// The guarantees of an accepted access string.
fn accepted_access_string(s: &str) -> Result<(), String> {
    if s.len() > 8192 {
        return Err("accepted more than 8192 bytes".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_graphic() || c.is_ascii_whitespace()))
    {
        return Err(format!("accepted {c:?} in an access string"));
    }
    let mut on = None;
    for token in s.split_ascii_whitespace() {
        let lower = token.to_ascii_lowercase();
        if touches_authentication(token) {
            return Err(format!("accepted the password rule {token:?}"));
        }
        match lower.as_str() {
            "on" => on = Some(true),
            "off" => on = Some(false),
            _ => {}
        }
        let rule_shaped = KEYWORDS.contains(&lower.as_str())
            || (token.len() > 1 && token.starts_with(['~', '%', '&', '+', '-']));
        if !rule_shaped {
            return Err(format!("accepted {token:?}, which is not a rule"));
        }
    }
    if on != Some(true) {
        return Err("accepted an access string that leaves the user off".into());
    }
    Ok(())
}

fn check_error(e: &Error) -> Result<(), String> {
    if !e.kind().is_invalid_input() || e.is_temporary() {
        return Err(format!("wrong error: {e}"));
    }
    let text = format!("{e} {e:?}");
    if text.len() > 4096 {
        return Err(format!("an error of {} bytes", text.len()));
    }
    Ok(())
}

#[test]
fn creation_statements_never_panic_and_keep_their_promises() {
    let (accepted, n) = fuzz(Gen::creation_statement, |src| {
        let template = match StatementTemplate::parse(src) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::InvalidTemplate => return Ok(false),
            Err(e) => return Err(format!("parse: wrong error: {e}")),
        };
        let config = MemoryDbConfig::new("ledger").creation_statement(template.clone());
        if let Err(e) = config.validate() {
            check_error(&e)?;
            return Ok(false);
        }
        // Accepted: render it the way validate does and check what MemoryDB would receive.
        let pw = SecretString::from(SAMPLE_PASSWORD);
        let v = template
            .render(&StatementVars {
                username: SAMPLE_USER,
                password: Some(&pw),
                expiration: Some(chrono::Utc::now()),
            })
            .map_err(|e| format!("accepted, then failed to render: {e}"))?
            .into_json();
        let obj = v
            .as_object()
            .ok_or("accepted a statement that is no object")?;
        for key in obj.keys() {
            if !["UserName", "AuthenticationMode", "AccessString", "Tags"].contains(&key.as_str()) {
                return Err(format!("accepted the member {key:?}"));
            }
        }
        if v["UserName"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some(SAMPLE_USER)
        {
            return Err(format!("accepted UserName {}", v["UserName"]));
        }
        let mode = &v["AuthenticationMode"];
        if mode["Type"] != "password" {
            return Err(format!("accepted AuthenticationMode {mode}"));
        }
        let passwords = mode["Passwords"].as_array().ok_or("no Passwords")?;
        if !passwords.iter().any(|p| p == SAMPLE_PASSWORD) {
            return Err("accepted Passwords without the generated password".into());
        }
        let access = v["AccessString"]
            .as_str()
            .ok_or("AccessString is no string")?;
        accepted_access_string(access)?;
        if let Some(tags) = obj.get("Tags").filter(|t| !t.is_null()) {
            for t in tags.as_array().ok_or("Tags is no list")? {
                let key = t["Key"].as_str().ok_or("a tag without a Key")?;
                if key.starts_with("aws:") || key.starts_with("leasehold:") {
                    return Err(format!("accepted the reserved tag key {key:?}"));
                }
                let value = t["Value"].as_str().unwrap_or_default();
                let aws_char = |c: char| {
                    c.is_alphanumeric()
                        || (c.is_whitespace() && !c.is_control())
                        || "_.:/=+-@".contains(c)
                };
                if !key.chars().chain(value.chars()).all(aws_char) {
                    return Err(format!("accepted the tag {key:?}={value:?}"));
                }
            }
        }
        Ok(true)
    });
    assert!(accepted * 50 >= n, "only {accepted} of {n} accepted");
}

#[test]
fn revocation_statements_never_panic_and_delete_only_the_lease_user() {
    let (_accepted, _n) = fuzz(Gen::revocation_statement, |src| {
        let template = match StatementTemplate::parse(src) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::InvalidTemplate => return Ok(false),
            Err(e) => return Err(format!("parse: wrong error: {e}")),
        };
        let config = MemoryDbConfig::new("ledger").revocation_statement(template.clone());
        if let Err(e) = config.validate() {
            check_error(&e)?;
            return Ok(false);
        }
        let v: Value = template
            .render(&StatementVars {
                username: SAMPLE_USER,
                password: None,
                expiration: Some(chrono::Utc::now()),
            })
            .map_err(|e| format!("accepted, then failed to render: {e}"))?
            .into_json();
        let obj = v
            .as_object()
            .ok_or("accepted a statement that is no object")?;
        if obj.len() != 1
            || v["UserName"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
                != Some(SAMPLE_USER)
        {
            return Err(format!("accepted {v}"));
        }
        Ok(true)
    });
}

#[test]
fn a_password_outside_passwords_is_refused_at_validation() {
    let statement = leasehold_core::StatementTemplate::parse(
        r#"{"UserName":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"AccessString":"on ~* +{{password}}"}"#,
    )
    .unwrap();
    let config = leasehold_memorydb::MemoryDbConfig::new("c").creation_statement(statement);
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("may appear only"), "{err}");
    assert!(
        leasehold_memorydb::check_access_string("on >secretpw ~* +@all")
            .unwrap_err()
            .to_string()
            .contains("[password rule]")
    );
}
