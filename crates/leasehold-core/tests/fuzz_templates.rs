//! Fuzz target (proptest-driven; `cargo fuzz` needs a nightly toolchain): the username
//! template parser and renderer and the name rules, on arbitrary strings. No input may panic,
//! every failure is a typed error, and every name a rule accepts satisfies it.
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`).

use leasehold_core::{ErrorKind, NameRule, TemplateVars, UsernameTemplate};
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

/// Pieces of handlebars syntax, names the templates know, and troublemakers, glued at random.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "{{", "}}", "{{{", "}}}", "{{{{", "}}}}", "(", ")", "[", "]", "{", "}", "~", "#", "/",
            ">", "!", "--", "*", "^", "&", "else", "as |x|", "@root", "@index", "../", "this",
            ".", "random", "random-", "truncate", "replace", "uppercase", "lowercase", "log",
            "lookup", "if", "each", "with", "identity.name", "identity", "randomUsername",
            "unixTimestamp", "dynamicSecret.name", "dynamicSecret.type", "password", "username",
            "expiration", "'", "\"", "\\", " ", "\n", "\t", "=", ":", ",", "true", "null", "-1",
            "1.5", "0", "8", "256", "257", "99999999999999999999999", "ü", "\u{0}", "😀",
            "\u{202e}", "a", "lh-",
        ]).prop_map(str::to_string),
        1 => any::<String>(),
        1 => (1usize..400).prop_map(|n| "9".repeat(n)),
    ]
}

fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(token(), 0..40).prop_map(|t| t.concat()),
        1 => any::<String>(),
        // Huge inputs: over the size limit, or deeply nested.
        1 => (prop::sample::select(vec!["(", "[", "{", "{{#if a}}", "{{", "(lowercase ", "{\"a\":"]), 1usize..6000)
            .prop_map(|(t, n)| format!("{{{{uppercase {}}}}}", t.repeat(n))),
    ]
}

const RULES: [NameRule; 8] = [
    NameRule::ElastiCacheUserId,
    NameRule::ElastiCacheUserName,
    NameRule::MemoryDbUserName,
    NameRule::IamUserName,
    NameRule::StsSessionName,
    NameRule::FederationTokenName,
    NameRule::RedisAclUser,
    NameRule::Any,
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn username_templates_never_panic(source in input(), identity in proptest::option::of(any::<String>()), secret in any::<String>()) {
        let template = match UsernameTemplate::parse(&source) {
            Ok(t) => t,
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
                prop_assert!(!e.message().is_empty());
                return Ok(());
            }
        };
        let vars = TemplateVars {
            secret_name: &secret,
            secret_type: "fuzz",
            identity: identity.as_deref(),
            prefix: "lh-",
        };
        if let Err(e) = template.render(&vars) {
            prop_assert!(
                matches!(e.kind(), ErrorKind::InvalidTemplate | ErrorKind::InvalidInput),
                "{:?}", e
            );
        }
        for rule in RULES {
            match template.render_for(&vars, rule) {
                Ok(name) => prop_assert!(rule.is_valid(&name), "{:?} {:?}", rule, name),
                Err(e) => prop_assert!(
                    matches!(e.kind(), ErrorKind::InvalidTemplate | ErrorKind::InvalidInput),
                    "{:?}", e
                ),
            }
        }
    }

    #[test]
    fn name_rules_never_panic(name in input()) {
        for rule in RULES {
            let normalized = rule.normalize(&name);
            if let Err(e) = rule.check(&normalized) {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
                prop_assert!(e.to_string().len() < 400, "{}", e);
            }
        }
    }
}
