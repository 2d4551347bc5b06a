//! Fuzz target (proptest-driven; `cargo fuzz` needs a nightly toolchain) for the one Redis ACL
//! parser, [`AclDialect::parse`], in each dialect: self-hosted `acl_rules`, ElastiCache and
//! MemoryDB access strings.
//!
//! Properties, for every dialect: no input panics; a refusal is a permanent `InvalidConfig`
//! error that starts with the dialect's field name and never quotes a refused password; whatever
//! is accepted fits the dialect's length limit, holds no control character (and, for the AWS
//! dialects, only printable ASCII), can never set, clear or bypass a password (`nopass`, `>pw`,
//! `<pw`, `#hash`, `!hash`, `resetpass`, `reset`, at the top level or inside a selector), has
//! every argument an ACL rule by its first character or a known keyword, leaves the user on
//! (AWS dialects: the last of `on` / `off` is `on`; self-hosted: no `off` at all), has selectors
//! only where the dialect allows them, prints and parses back unchanged, and (AWS dialects)
//! agrees with `summarize_existing`, which reads access strings back from AWS.
//!
//! `PROPTEST_CASES=N` sets the number of inputs per dialect (default 2,000; 100,000 with
//! `LEASEHOLD_LONG=1`).

use leasehold_core::acl::{summarize_existing, AclDialect};
use leasehold_core::ErrorKind;
use proptest::prelude::*;

/// Cases per target: `PROPTEST_CASES` if set, else 2,000, or 100,000 with `LEASEHOLD_LONG=1`.
/// Failures are not persisted to files: a failing input is printed, shrunk, in the test output.
fn config() -> ProptestConfig {
    let long = std::env::var("LEASEHOLD_LONG").is_ok_and(|v| v == "1");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long { 100_000 } else { 2_000 });
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

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
    "clearselectors",
];

/// Pieces of ACL syntax, password rules, separators and troublemakers, glued at random.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "nopass", "NoPass", "NOPASS", "resetpass", "ResetPass", "reset", "RESET", "off",
            "Off", "on", "ON", ">", "<", "#", "!", ">Zq9pw", "<Zq9pw", "#Zq9pw", "!Zq9pw", "(",
            ")", "()", "(~x +get)", "~", "~*", "~app:*", "%", "%R~", "%W~*", "%RW~*", "%WR~*",
            "%X~*", "%R", "&", "&*", "+", "-", "@", "+@all", "-@all", "+@ALL", "+@read",
            "+@search", "+@bogus", "-@dangerous", "+get", "-flushall", "config|set",
            "+config|get", "+config|get|x", "+|", "allkeys", "resetkeys", "allchannels",
            "resetchannels", "allcommands", "nocommands", "clearselectors", "user", "default",
            "acl", "setuser", "*", ":", "|", "\"", "'", "\\", "\\x3e", "=", ",", " ", " ", " ",
            "  ", "\t", "\n", "\r", "\r\n", "\u{b}", "\u{c}", "\u{0}", "\u{7}", "\u{1b}",
            "\u{7f}", "\u{85}", "\u{a0}", "\u{2028}", "\u{200b}", "\u{feff}", "\u{202e}", "ü",
            "😀", "a", "x", "0", "9",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[ -~]{0,12}",
    ]
}

fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(token(), 0..40).prop_map(|t| t.concat()),
        // Well-formed rules with one hostile token spliced in, so acceptance is reached often.
        3 => (prop::collection::vec(prop::sample::select(vec![
                "on", "~cache:*", "~*", "&events:*", "&*", "+@read", "+@all", "-@dangerous",
                "+get", "-flushall", "%R~r:*", "(~a:* +get)", "allkeys", "allchannels",
                "-config|set",
            ]), 0..8), token(), any::<prop::sample::Index>(), any::<bool>())
            .prop_map(|(rules, hostile, at, lead_on)| {
                let mut parts: Vec<String> = rules.into_iter().map(str::to_string).collect();
                if lead_on {
                    parts.insert(0, "on".into());
                }
                let i = at.index(parts.len() + 1);
                parts.insert(i, hostile);
                parts.join(" ")
            }),
        1 => any::<String>(),
        // Huge inputs: around and over the length limits.
        1 => (prop::sample::select(vec!["+get ", "~a ", "on ", "(", "nopass ", "\u{85}", "ü"]), 1usize..4000)
            .prop_map(|(t, n)| format!("on {}", t.repeat(n))),
    ]
}

/// True when `arg` alone could set, clear or bypass the password.
fn touches_password(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    matches!(lower.as_str(), "nopass" | "resetpass" | "reset")
        || arg.starts_with(['>', '<', '#', '!'])
}

/// An argument Redis reads as a rule by its first character, or a keyword.
fn is_rule_shaped(arg: &str) -> bool {
    KEYWORDS.contains(&arg.to_ascii_lowercase().as_str())
        || (arg.len() > 1 && arg.starts_with(['~', '&', '+', '-', '%']))
}

/// Checks every property of `dialect` on one input; `Err` says which failed.
fn check(dialect: AclDialect, input: &str) -> Result<(), String> {
    let parsed = match dialect.parse(input) {
        Err(e) => {
            if e.kind() != ErrorKind::InvalidConfig || e.is_temporary() {
                return Err(format!("wrong error: {e}"));
            }
            if !e.message().starts_with(&format!("{}:", dialect.field())) {
                return Err(format!("message does not name the field: {e}"));
            }
            // A refused password rule is named, not quoted.
            if e.message().contains("password") && e.to_string().contains(MARKER) {
                return Err(format!("a refused password is quoted: {e}"));
            }
            if e.to_string().len() > 2048 {
                return Err(format!("error of {} bytes", e.to_string().len()));
            }
            return Ok(());
        }
        Ok(parsed) => parsed,
    };
    if input.len() > dialect.max_len() {
        return Err(format!("accepted {} bytes", input.len()));
    }
    if let Some(c) = input.chars().find(|c| {
        (c.is_control() && !c.is_ascii_whitespace()) || (dialect.ascii_only() && !c.is_ascii())
    }) {
        return Err(format!("accepted {c:?}"));
    }
    let mut on = None;
    for arg in parsed.args() {
        if arg.is_empty() {
            return Err("an empty argument".into());
        }
        if let Some(inner) = arg.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
            if !dialect.allows_selectors() {
                return Err(format!("accepted the selector {arg:?}"));
            }
            // Redis splits a selector on spaces; leasehold on any whitespace. Both readings
            // must hold only selector rules.
            let parts: Vec<&str> = inner
                .split_whitespace()
                .chain(inner.split(' ').map(str::trim))
                .filter(|p| !p.is_empty())
                .collect();
            if parts.is_empty() || inner.contains(['(', ')']) {
                return Err(format!("accepted the selector {arg:?}"));
            }
            for p in parts {
                let lower = p.to_ascii_lowercase();
                if touches_password(p) || matches!(lower.as_str(), "on" | "off" | "clearselectors")
                {
                    return Err(format!("accepted {p:?} in the selector {arg:?}"));
                }
            }
            continue;
        }
        if arg.chars().any(char::is_whitespace) {
            return Err(format!("whitespace in {arg:?}"));
        }
        if touches_password(arg) {
            return Err(format!("accepted the password rule {arg:?}"));
        }
        if !is_rule_shaped(arg) {
            return Err(format!("accepted {arg:?}, which is not a rule"));
        }
        match arg.to_ascii_lowercase().as_str() {
            "on" => on = Some(true),
            "off" => on = Some(false),
            "clearselectors" if !dialect.allows_selectors() => {
                return Err("accepted clearselectors".into())
            }
            _ => {}
        }
    }
    if dialect.requires_on() {
        if on != Some(true) || !parsed.summary().enabled {
            return Err("accepted a string that leaves the user off".into());
        }
        let existing = summarize_existing(input);
        if existing != parsed.summary() {
            return Err(format!(
                "parse says {:?}, summarize_existing says {existing:?}",
                parsed.summary()
            ));
        }
    } else if on == Some(false) {
        return Err("accepted \"off\"".into());
    }
    // What is printed (logs, Debug) parses back to the same rules.
    let printed = parsed.args().join(" ");
    match dialect.parse(&printed) {
        Ok(again) if again == parsed => Ok(()),
        other => Err(format!("{printed:?} parses back as {other:?}")),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn self_hosted_rules_never_panic_and_never_touch_the_password(rules in input()) {
        if let Err(why) = check(AclDialect::SelfHosted, &rules) {
            return Err(TestCaseError::fail(why));
        }
    }

    #[test]
    fn elasticache_access_strings_never_panic_and_never_touch_the_password(rules in input()) {
        if let Err(why) = check(AclDialect::ElastiCache, &rules) {
            return Err(TestCaseError::fail(why));
        }
    }

    #[test]
    fn memorydb_access_strings_never_panic_and_never_touch_the_password(rules in input()) {
        if let Err(why) = check(AclDialect::MemoryDb, &rules) {
            return Err(TestCaseError::fail(why));
        }
    }
}

/// The generator reaches acceptance in every dialect, or the properties above are never
/// exercised on accepted input.
#[test]
fn the_generator_reaches_acceptance_in_every_dialect() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = input();
    let inputs: Vec<String> = (0..2_000)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    for dialect in AclDialect::ALL {
        let accepted = inputs.iter().filter(|s| dialect.parse(s).is_ok()).count();
        assert!(
            accepted * 20 >= inputs.len(),
            "{dialect:?}: only {accepted} of {} accepted",
            inputs.len()
        );
    }
}

#[test]
fn every_password_token_is_refused_wherever_it_stands() {
    // Exhaustive over the short list: alone, after rules, before rules, inside a selector, with
    // every separator the parser knows, in every dialect.
    for dialect in AclDialect::ALL {
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
                " ", "\t", "\n", "\r\n", "\u{b}", "\u{c}", "\u{85}", "\u{a0}", "\u{2028}",
            ] {
                for rules in [
                    format!("on{sep}{t}"),
                    format!("{t}{sep}on ~* +@all"),
                    format!("on ~* +@all{sep}{t}"),
                    format!("on (~*{sep}{t})"),
                    format!("on (~*{sep}+get){sep}{t}"),
                ] {
                    let e = dialect.parse(&rules).expect_err(&rules);
                    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{dialect:?} {rules:?}");
                }
            }
        }
    }
}
