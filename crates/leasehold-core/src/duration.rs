//! Duration parsing for configuration and requests: `30s`, `15m`, `1h30m`, `2d`, or seconds.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// The longest duration accepted anywhere: 100 years. Longer values are configuration
/// mistakes, and they would overflow timestamp arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `input` as a positive duration; `field` names the setting in the error message.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::parse_duration;
///
/// assert_eq!(parse_duration("ttl", "1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("ttl", "90").unwrap(), Duration::from_secs(90));
/// assert!(parse_duration("ttl", "0s").is_err());
/// ```
pub fn parse_duration(field: &str, input: &str) -> Result<Duration> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{field}: {:?} is not a valid duration ({why}); use e.g. 30s, 15m, 1h30m, 2d or a number of seconds",
                truncate_for_message(input)
            ),
        )
        .with_context("field", field)
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.len() > 64 {
        return Err(bad("it is too long"));
    }
    if s.starts_with('-') {
        return Err(bad("it is negative"));
    }
    let d = if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| bad("it overflows"))?;
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => bad("it overflows"),
            _ => bad("unknown unit or syntax"),
        })?
    };
    if d.is_zero() {
        return Err(bad("it is zero"));
    }
    if d > MAX_DURATION {
        return Err(bad("it is longer than 100 years"));
    }
    Ok(d)
}

/// Formats a duration the way it is parsed (`1h 30m`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn truncate_for_message(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_forms() {
        let cases = [
            ("30s", 30),
            ("15m", 900),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
            ("3600", 3600),
        ];
        for (s, secs) in cases {
            assert_eq!(
                parse_duration("ttl", s).unwrap(),
                Duration::from_secs(secs),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_bad_forms_naming_the_field() {
        for s in [
            "",
            "0",
            "0s",
            "-5s",
            "abc",
            "5 parsecs",
            "99999999999999999999999",
            "1000000000000h",
        ] {
            let e = parse_duration("max_ttl", s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{s}");
            assert!(e.to_string().contains("max_ttl"), "{e}");
        }
    }
}
