//! Durations: the documented forms parse to what they say, and every bad input is a typed error
//! naming the field.

use std::time::Duration;

use leasehold_core::duration::{check_default_within_max, parse_default_and_max, MAX_DURATION};
use leasehold_core::{format_duration, parse_duration, ErrorKind};
use proptest::prelude::*;

#[test]
fn documented_forms() {
    for (s, secs) in [
        ("30s", 30),
        ("15m", 900),
        ("1h30m", 5400),
        ("2d", 172_800),
        ("90", 90),
        ("1", 1),
    ] {
        assert_eq!(
            parse_duration("ttl", s).unwrap(),
            Duration::from_secs(secs),
            "{s}"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors_naming_the_field() {
    for (s, why) in [
        ("0", "zero"),
        ("0s", "zero"),
        ("0h0m", "zero"),
        ("-5s", "negative"),
        ("-5", "negative"),
        ("500ms", "one second"),
        ("garbage", "unit"),
        ("", "empty"),
        ("   ", "empty"),
        ("1h30", "no unit"),
        ("99999999999999999999999999", "overflow"),
        ("99999999999999999999999999s", "overflow"),
        ("101years", "100 years"),
        (&"9".repeat(100), "too long"),
    ] {
        let e = parse_duration("max_ttl", s).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{s}");
        let msg = e.to_string();
        assert!(msg.contains("max_ttl"), "{msg}");
        assert!(msg.contains(why), "{s:?}: {msg}");
    }
}

#[test]
fn default_above_max_names_both_fields() {
    let e = parse_default_and_max("default_ttl", "2h", "max_ttl", "1h").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let msg = e.to_string();
    assert!(
        msg.contains("default_ttl") && msg.contains("max_ttl"),
        "{msg}"
    );
    // A bad value is reported for its own field.
    let e = parse_default_and_max("default_ttl", "1h", "max_ttl", "soon").unwrap_err();
    assert!(e.to_string().contains("max_ttl"), "{e}");
    assert!(parse_default_and_max("default_ttl", "1h", "max_ttl", "1h").is_ok());
    assert!(check_default_within_max(
        "default_ttl",
        Duration::from_secs(1),
        "max_ttl",
        Duration::from_secs(2)
    )
    .is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn unit_sums_parse_to_their_total(d in 0u64..400, h in 0u64..48, m in 0u64..120, s in 0u64..120, spaced in any::<bool>()) {
        let mut parts = Vec::new();
        for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if n > 0 {
                parts.push(format!("{n}{unit}"));
            }
        }
        let input = parts.join(if spaced { " " } else { "" });
        let total = d * 86_400 + h * 3600 + m * 60 + s;
        match parse_duration("ttl", &input) {
            Ok(got) => prop_assert_eq!(got, Duration::from_secs(total)),
            Err(e) => {
                prop_assert_eq!(total, 0);
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            }
        }
    }

    #[test]
    fn plain_seconds_parse_or_are_out_of_range(n in any::<u64>()) {
        match parse_duration("ttl", &n.to_string()) {
            Ok(got) => {
                prop_assert_eq!(got, Duration::from_secs(n));
                prop_assert!(n > 0 && got <= MAX_DURATION);
            }
            Err(e) => {
                prop_assert!(n == 0 || Duration::from_secs(n) > MAX_DURATION);
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            }
        }
    }

    #[test]
    fn formatted_durations_parse_back(secs in 1u64..(100 * 365 * 86_400)) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(parse_duration("ttl", &format_duration(d)).unwrap(), d);
    }
}
