//! Fuzz target (proptest-driven; `cargo fuzz` needs a nightly toolchain): `AclRules::parse` on
//! arbitrary and adversarial strings. No input may panic; a refusal is an `InvalidConfig` error
//! that starts with `acl_rules:` and never quotes a refused password; whatever is accepted can
//! never change how the user authenticates (no `nopass`, `>pw`, `<pw`, `#hash`, `!hash`,
//! `resetpass`, `reset`, `off`, at the top level or inside a selector), every argument is an ACL
//! rule by its first character or a harmless keyword, and the rules print and parse back
//! unchanged.
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`).

use leasehold_core::ErrorKind;
use leasehold_redis::{AclRules, MAX_RULES_LEN};
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

/// Keywords `ACL SETUSER` takes that leave the password and the on/off state alone.
const SAFE_KEYWORDS: &[&str] = &[
    "on",
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
            ")", "()", "~", "~*", "%", "%R~", "%W~", "%RW~", "%X~", "&", "&*", "+", "-", "@",
            "+@all", "-@all", "+@read", "-@dangerous", "+get", "-flushall", "config|set",
            "+config|get", "allkeys", "resetkeys", "allchannels", "resetchannels", "allcommands",
            "nocommands", "clearselectors", "user", "default", "acl", "setuser", "*", ":", "|",
            "\"", "'", "\\", "\\x3e", "=", ",", " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n",
            "\u{b}", "\u{c}", "\u{0}", "\u{7}", "\u{1b}", "\u{7f}", "\u{85}", "\u{a0}",
            "\u{2028}", "\u{200b}", "\u{feff}", "\u{202e}", "ü", "😀", "a", "x", "0", "9",
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
                "~cache:*", "&events:*", "+@read", "-@dangerous", "+get", "%R~r:*",
                "(~a:* +get)", "allkeys", "on",
            ]), 0..8), token(), any::<prop::sample::Index>())
            .prop_map(|(mut rules, hostile, at)| {
                let i = if rules.is_empty() { 0 } else { at.index(rules.len() + 1) };
                let mut parts: Vec<String> = rules.drain(..).map(str::to_string).collect();
                parts.insert(i.min(parts.len()), hostile);
                parts.join(" ")
            }),
        1 => any::<String>(),
        // Huge inputs: around and over the length limit.
        1 => (prop::sample::select(vec!["+get ", "~a", "(", "nopass ", "\u{85}", "ü"]), 1usize..4000)
            .prop_map(|(t, n)| t.repeat(n)),
    ]
}

/// What `ACL SETUSER` would do with `arg` alone, as far as authentication goes: true when it
/// could set, clear or bypass the password, or switch the user off.
fn touches_authentication(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    matches!(lower.as_str(), "nopass" | "resetpass" | "reset" | "off")
        || arg.starts_with(['>', '<', '#', '!'])
}

/// An argument Redis reads as a rule by its first character, or a keyword that is harmless.
fn is_rule_shaped(arg: &str) -> bool {
    SAFE_KEYWORDS.contains(&arg.to_ascii_lowercase().as_str())
        || (arg.len() > 1 && arg.starts_with(['~', '&', '+', '-', '%']))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn acl_rules_never_panic_and_never_touch_the_password(rules in input()) {
        match AclRules::parse(&rules) {
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
                prop_assert!(e.message().starts_with("acl_rules:"), "{}", e);
                prop_assert!(!e.is_temporary());
                // A refused password rule is named, not quoted.
                if e.message().contains("password") {
                    prop_assert!(!e.to_string().contains(MARKER), "{}", e);
                }
                prop_assert!(e.to_string().len() <= 4 * MAX_RULES_LEN, "{} bytes", e.to_string().len());
            }
            Ok(parsed) => {
                prop_assert!(rules.len() <= MAX_RULES_LEN);
                for arg in parsed.args() {
                    prop_assert!(!arg.is_empty());
                    prop_assert!(
                        !arg.chars().any(|c| c.is_control() && !c.is_ascii_whitespace()),
                        "control character in {:?}", arg
                    );
                    if let Some(inner) = arg.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
                        // Redis splits a selector on spaces; leasehold on any whitespace. Both
                        // readings must hold only selector rules.
                        let parts: Vec<&str> = inner
                            .split_whitespace()
                            .chain(inner.split(' ').filter(|p| !p.is_empty()))
                            .collect();
                        prop_assert!(!parts.is_empty(), "empty selector in {:?}", rules);
                        for part in parts {
                            let p = part.trim();
                            if p.is_empty() {
                                continue;
                            }
                            prop_assert!(!touches_authentication(p), "{:?} in selector {:?}", p, arg);
                            prop_assert!(
                                !matches!(p.to_ascii_lowercase().as_str(), "on" | "clearselectors"),
                                "{:?} in selector {:?}", p, arg
                            );
                        }
                        prop_assert!(!inner.contains(['(', ')']), "nested selector {:?}", arg);
                    } else {
                        prop_assert!(!arg.chars().any(char::is_whitespace), "whitespace in {:?}", arg);
                        prop_assert!(!touches_authentication(arg), "{:?} accepted from {:?}", arg, rules);
                        prop_assert!(is_rule_shaped(arg), "{:?} is not a rule", arg);
                    }
                }
                // What is printed (logs, Debug) parses back to the same rules.
                let again = AclRules::parse(&parsed.to_string());
                prop_assert!(again.is_ok(), "{:?} does not parse back", parsed.to_string());
                prop_assert_eq!(again.unwrap(), parsed);
            }
        }
    }
}

#[test]
fn every_single_authentication_token_is_refused_wherever_it_stands() {
    // Exhaustive over the short list: alone, after rules, inside a selector, with every
    // separator the parser knows.
    let tokens = [
        "nopass",
        "NOPASS",
        "resetpass",
        "reset",
        "off",
        ">pw",
        "<pw",
        "#ab",
        "!ab",
    ];
    for t in tokens {
        for sep in [
            " ", "\t", "\n", "\r\n", "\u{b}", "\u{c}", "\u{85}", "\u{a0}", "\u{2028}",
        ] {
            for rules in [
                t.to_string(),
                format!("~*{sep}{t}"),
                format!("{t}{sep}~*"),
                format!("(~*{sep}{t})"),
                format!("(~*{sep}+get){sep}{t}"),
            ] {
                let e = AclRules::parse(&rules).expect_err(&rules);
                assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{rules:?}");
            }
        }
    }
}
