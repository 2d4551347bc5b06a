//! Fuzz target (proptest-driven; `cargo fuzz` needs a nightly toolchain): the statement
//! template parser and renderer on arbitrary templates and passwords. No input may panic, every
//! failure is a typed error, a rendered statement is a JSON object, and no error or `Debug`
//! output contains the password.
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`).

use leasehold_core::{ErrorKind, StatementTemplate, StatementVars};
use proptest::prelude::*;
use secrecy::SecretString;

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

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => input(),
        // Mostly-valid statements with fuzzed insides, so rendering is reached often.
        2 => prop::collection::vec(token(), 0..12).prop_map(|t| format!(
            r#"{{"UserName":"{{{{username}}}}","P":["{{{{password}}}}"],"X":"{}"}}"#,
            t.concat()
        )),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn statements_never_panic_or_leak(
        source in statement(),
        password in any::<String>(),
        username in any::<String>(),
        keys in prop::collection::vec(any::<String>(), 0..4),
    ) {
        let template = match StatementTemplate::parse(&source) {
            Ok(t) => t,
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
                return Ok(());
            }
        };
        // A marker no template piece contains, so finding it means the password leaked.
        let marker = format!("Zq9LEAK{password}");
        let pw = SecretString::from(marker.clone());
        let vars = StatementVars { username: &username, password: Some(&pw), expiration: None };
        match template.render(&vars) {
            Ok(v) => {
                prop_assert!(v.expose_json().is_object());
                let shown = format!("{:?}", v);
                prop_assert!(!shown.contains(&marker));
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                if let Err(e) = v.check_shape(&keys, &keys) {
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
                    prop_assert!(!e.to_string().contains(&marker));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
                let shown = format!("{} {:?}", e, e);
                prop_assert!(!shown.contains(&marker), "{}", e);
            }
        }
    }
}
