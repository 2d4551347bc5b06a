//! Fuzz target (proptest-driven; `cargo fuzz` needs a nightly toolchain): the duration parser
//! on arbitrary strings. No input may panic; a parsed duration is between one second and the
//! maximum; every failure is an `InvalidConfig` error naming the field.
//!
//! `PROPTEST_CASES=N` sets the number of inputs (default 2,000; 100,000 with `LEASEHOLD_LONG=1`).

use std::time::Duration;

use leasehold_core::duration::{parse_default_and_max, MAX_DURATION};
use leasehold_core::{parse_duration, ErrorKind};
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

fn duration_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => prop::sample::select(vec![
            "0", "1", "7", "30", "90", "1.5", "s", "m", "h", "d", "w", "y", "ms", "us", "ns",
            "sec", "min", "hours", "days", "months", "years", " ", "-", "+", ".", "e9",
            "18446744073709551615", "18446744073709551616", "99999999999999999999999999",
            "\u{0663}", "\u{221e}", "\u{0}", "ü",
        ]).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop_oneof![
        3 => prop::collection::vec(token, 0..12).prop_map(|t| t.concat()),
        1 => any::<String>(),
        1 => (1usize..10_000).prop_map(|n| "9".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_never_panic(text in duration_text()) {
        match parse_duration("fuzz_field", &text) {
            Ok(d) => prop_assert!(d >= Duration::from_secs(1) && d <= MAX_DURATION, "{:?}", d),
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
                prop_assert!(e.to_string().contains("fuzz_field"), "{}", e);
                prop_assert!(e.to_string().len() < 400, "{}", e);
            }
        }
    }

    #[test]
    fn default_and_max_never_panic(default in duration_text(), max in duration_text()) {
        match parse_default_and_max("default_ttl", &default, "max_ttl", &max) {
            Ok((d, m)) => prop_assert!(d <= m),
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig),
        }
    }
}
