//! Fuzz target for the ElastiCache access-string checker (`acl::parse_access_string`), on
//! arbitrary and adversarial strings. `cargo fuzz` needs a nightly toolchain, and this crate has
//! no proptest, so a seeded generator drives it: the same input mix as the proptest targets
//! (token soup, mostly-valid strings with one hostile token, arbitrary Unicode, huge inputs).
//!
//! Properties: no input panics; a refusal is a permanent `InvalidConfig` error starting with
//! `access string:` that never quotes a refused password rule; whatever is accepted switches the
//! user on, is printable ASCII split by ASCII whitespace, holds no token that could set, clear
//! or bypass a password (`nopass`, `resetpass`, `reset`, `>pw`, `<pw`, `#hash`, `!hash`) and no
//! selector, every token is an ACL rule by its first character or a known keyword, and the
//! summary agrees with `summarize_existing` (which reads access strings back from AWS).
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`);
//! `LEASEHOLD_FUZZ_SEED=N` replays a run (a failure prints its seed).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use leasehold_core::ErrorKind;
use leasehold_elasticache::acl::{parse_access_string, summarize_existing};

/// Marks password tokens the generator makes, so that a quoted password is recognisable.
const MARKER: &str = "Zq9pw";

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

const TOKENS: &[&str] = &[
    "on",
    "ON",
    "off",
    "Off",
    "nopass",
    "NOPASS",
    "resetpass",
    "reset",
    ">",
    "<",
    "#",
    "!",
    ">Zq9pw",
    "<Zq9pw",
    "#Zq9pw",
    "!Zq9pw",
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
    "%WR~*",
    "%X~*",
    "%R",
    "&",
    "&*",
    "+",
    "-",
    "@",
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
    "+|",
    "allkeys",
    "resetkeys",
    "allchannels",
    "resetchannels",
    "allcommands",
    "nocommands",
    "clearselectors",
    "user",
    "default",
    "*",
    ":",
    "|",
    "\"",
    "'",
    "\\",
    "=",
    ",",
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u{b}",
    "\u{c}",
    "\u{0}",
    "\u{7}",
    "\u{1b}",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}",
    "ü",
    "😀",
    "a",
    "x",
    "0",
    "9",
];

const VALID: &[&str] = &[
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
    "allchannels",
    "-config|set",
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

    /// One input of the mix.
    fn input(&mut self) -> String {
        match self.below(10) {
            // Token soup.
            0..=3 => {
                let n = self.below(40);
                (0..n)
                    .map(|_| {
                        if self.below(8) == 0 {
                            self.string(8)
                        } else {
                            self.pick(TOKENS).to_string()
                        }
                    })
                    .collect()
            }
            // A valid string with one hostile token spliced in.
            4..=6 => {
                let mut parts: Vec<String> = vec!["on".into()];
                for _ in 0..self.below(8) {
                    parts.push(self.pick(VALID).into());
                }
                let at = self.below(parts.len() + 1);
                let hostile = self.pick(TOKENS).to_string();
                parts.insert(at, hostile);
                let sep = self.pick(&[" ", " ", "\t", "\n", "  "]);
                parts.join(sep)
            }
            7 => self.string(64),
            // Huge: around and over the length limit.
            8 => {
                let unit = self.pick(&["~a ", "+get ", "on ", "nopass ", "ü", "\u{85}", " "]);
                format!("on {}", unit.repeat(1 + self.below(3000)))
            }
            _ => {
                let n = 1 + self.below(12);
                (0..n)
                    .map(|_| self.pick(VALID))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
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
        .take(300)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 300 {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

fn touches_authentication(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    matches!(lower.as_str(), "nopass" | "resetpass" | "reset")
        || token.starts_with(['>', '<', '#', '!'])
}

/// Checks every property on one input; `Err` says which failed.
fn check(input: &str) -> Result<(), String> {
    let result = catch_unwind(AssertUnwindSafe(|| parse_access_string(input)))
        .map_err(|_| "panicked".to_string())?;
    match result {
        Err(e) => {
            if e.kind() != ErrorKind::InvalidConfig || e.is_temporary() {
                return Err(format!("wrong error: {e}"));
            }
            if !e.message().starts_with("access string:") {
                return Err(format!("message does not name the field: {e}"));
            }
            if e.message().contains("password") && e.to_string().contains(MARKER) {
                return Err(format!("a refused password is quoted: {e}"));
            }
            if e.to_string().len() > 1024 {
                return Err(format!("error of {} bytes", e.to_string().len()));
            }
        }
        Ok(summary) => {
            if !summary.enabled {
                return Err("accepted a string that leaves the user off".into());
            }
            if input.len() > 4096 {
                return Err("accepted more than 4096 bytes".into());
            }
            if let Some(c) = input
                .chars()
                .find(|c| !(c.is_ascii_graphic() || c.is_ascii_whitespace()))
            {
                return Err(format!("accepted {c:?}"));
            }
            for token in input.split_ascii_whitespace() {
                if touches_authentication(token) {
                    return Err(format!("accepted the password rule {token:?}"));
                }
                let lower = token.to_ascii_lowercase();
                let rule_shaped = KEYWORDS.contains(&lower.as_str())
                    || (token.len() > 1 && token.starts_with(['~', '%', '&', '+', '-']));
                if !rule_shaped {
                    return Err(format!("accepted {token:?}, which is not a rule"));
                }
            }
            let existing = summarize_existing(input);
            if existing != summary {
                return Err(format!(
                    "parse_access_string says {summary:?}, summarize_existing says {existing:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn access_strings_never_panic_and_never_touch_the_password() {
    let seed = seed();
    let mut g = Gen(seed);
    let mut accepted = 0usize;
    let n = cases();
    for i in 0..n {
        let input = g.input();
        if let Err(why) = check(&input) {
            panic!(
                "case {i} (LEASEHOLD_FUZZ_SEED={seed}): {why}\ninput: \"{}\"",
                shown(&input)
            );
        }
        accepted += usize::from(parse_access_string(&input).is_ok());
    }
    // The mix must reach acceptance, or the properties above are never exercised.
    assert!(
        accepted * 20 >= n,
        "only {accepted} of {n} inputs were accepted (LEASEHOLD_FUZZ_SEED={seed})"
    );
}

#[test]
fn every_password_token_is_refused_wherever_it_stands() {
    for t in [
        "nopass",
        "NoPass",
        "resetpass",
        "reset",
        ">pw",
        "<pw",
        "#ab",
        "!ab",
    ] {
        for sep in [
            " ", "\t", "\n", "\r\n", "\u{b}", "\u{c}", "\u{85}", "\u{a0}",
        ] {
            for s in [
                format!("on{sep}{t}"),
                format!("{t}{sep}on ~* +@all"),
                format!("on ~* +@all{sep}{t}"),
            ] {
                let e = parse_access_string(&s).expect_err(&s);
                assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{s:?}");
            }
        }
    }
}

#[test]
fn a_password_outside_passwords_is_refused_at_validation() {
    let statement = leasehold_core::StatementTemplate::parse(
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Engine":"redis","Passwords":["{{password}}"],"AccessString":"on ~* +{{password}}"}"#,
    )
    .unwrap();
    let config = leasehold_elasticache::ElastiCacheConfig::new(
        leasehold_elasticache::Target::ServerlessCache("c".into()),
        "g",
    )
    .creation_statement(statement);
    let err = config.validate().unwrap_err();
    assert!(
        err.to_string().contains("may appear only in Passwords"),
        "{err}"
    );
}
