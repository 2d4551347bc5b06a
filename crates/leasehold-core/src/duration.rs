//! Duration parsing for configuration and requests: `30s`, `15m`, `1h30m`, `2d`, or seconds.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// The longest duration accepted anywhere: 100 years. Longer values are configuration
/// mistakes, and they would overflow timestamp arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `input` as a positive duration; `field` names the setting in the error message.
///
/// Accepted: `30s`, `15m`, `1h30m` (or `1h 30m`), `2d`, any humantime unit, or a plain number
/// of seconds. Refused with [`ErrorKind::InvalidConfig`] (context `field`): empty input,
/// garbage, a negative value, zero or anything under one second, and anything that overflows
/// or exceeds [`MAX_DURATION`].
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
    } else if !s.ends_with(|c: char| c.is_ascii_alphabetic()) {
        // humantime reads the `30` of `1h30` as minutes; a bare trailing number is ambiguous.
        return Err(bad("the last number has no unit"));
    } else {
        humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => bad("it overflows"),
            _ => bad("unknown unit or syntax"),
        })?
    };
    if d.is_zero() {
        return Err(bad("it is zero"));
    }
    // Leases are kept in whole seconds; `500ms` would round to a zero TTL.
    if d.as_secs() == 0 {
        return Err(bad("it is shorter than one second"));
    }
    if d > MAX_DURATION {
        return Err(bad("it is longer than 100 years"));
    }
    Ok(d)
}

/// Checks that a default does not exceed its maximum; the error names both fields.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::duration::check_default_within_max;
///
/// let h = Duration::from_secs(3600);
/// assert!(check_default_within_max("default_ttl", h, "max_ttl", 2 * h).is_ok());
/// let e = check_default_within_max("default_ttl", 2 * h, "max_ttl", h).unwrap_err();
/// assert!(e.to_string().contains("default_ttl 2h exceeds max_ttl 1h"));
/// ```
pub fn check_default_within_max(
    default_field: &str,
    default: Duration,
    max_field: &str,
    max: Duration,
) -> Result<()> {
    if default > max {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{default_field} {} exceeds {max_field} {}; lower {default_field} or raise {max_field}",
                format_duration(default),
                format_duration(max)
            ),
        )
        .with_context("field", default_field));
    }
    Ok(())
}

/// Parses a default and a maximum (for example `default_ttl` and `max_ttl`) and checks the
/// default does not exceed the maximum.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::duration::parse_default_and_max;
///
/// let (d, m) = parse_default_and_max("default_ttl", "1h", "max_ttl", "1d").unwrap();
/// assert_eq!((d, m), (Duration::from_secs(3600), Duration::from_secs(86_400)));
/// assert!(parse_default_and_max("default_ttl", "2d", "max_ttl", "1d").is_err());
/// ```
pub fn parse_default_and_max(
    default_field: &str,
    default: &str,
    max_field: &str,
    max: &str,
) -> Result<(Duration, Duration)> {
    let d = parse_duration(default_field, default)?;
    let m = parse_duration(max_field, max)?;
    check_default_within_max(default_field, d, max_field, m)?;
    Ok((d, m))
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
            (" 45s ", 45),
            ("1.5h", 5400),
            ("1m30s", 90),
            ("1w", 604_800),
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
            "500ms",
            "+5s",
            "5s-",
            "1h30",
            "18446744073709551616s",
            "٣s",
            "\u{0}",
        ] {
            let e = parse_duration("max_ttl", s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{s}");
            assert!(e.to_string().contains("max_ttl"), "{e}");
        }
    }
}
