//! Duration parsing for configuration and requests: `30s`, `15m`, `1h30m`, `2d`, or seconds.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::settings::shorten;

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
    let d = parse_text(field, input, "30s, 15m, 1h30m, 2d")?;
    if d.is_zero() {
        return Err(bad_duration(
            field,
            input,
            "it is zero",
            "30s, 15m, 1h30m, 2d",
        ));
    }
    // Leases are kept in whole seconds; `500ms` would round to a zero TTL.
    if d.as_secs() == 0 {
        return Err(bad_duration(
            field,
            input,
            "it is shorter than one second",
            "30s, 15m, 1h30m, 2d",
        ));
    }
    Ok(d)
}

fn bad_duration(field: &str, input: &str, why: &str, examples: &str) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "{field}: {:?} is not a valid duration ({why}); use e.g. {examples} or a number of seconds",
            shorten(input)
        ),
    )
    .with_context("field", field)
}

/// The syntax both parsers share: humantime units or a plain number of seconds, at most
/// [`MAX_DURATION`].
fn parse_text(field: &str, input: &str, examples: &str) -> Result<Duration> {
    let bad = |why: &str| bad_duration(field, input, why, examples);
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
        Duration::from_secs(s.parse().map_err(|_| bad("it overflows"))?)
    } else if !s.ends_with(|c: char| c.is_ascii_alphabetic()) {
        // humantime reads the `30` of `1h30` as minutes; a bare trailing number is ambiguous.
        return Err(bad("the last number has no unit"));
    } else {
        humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => bad("it overflows"),
            _ => bad("unknown unit or syntax"),
        })?
    };
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

/// Parses a timeout or pause: like [`parse_duration`], but sub-second values (`250ms`) and,
/// when `allow_zero`, `0` are accepted. Used for connection timeouts, retry pauses and waits,
/// where a lease's whole-second rule does not apply.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::duration::parse_pause;
///
/// assert_eq!(parse_pause("retry_delay", "250ms", false).unwrap(), Duration::from_millis(250));
/// assert_eq!(parse_pause("revoke_wait", "0", true).unwrap(), Duration::ZERO);
/// assert!(parse_pause("command_timeout", "0", false).is_err());
/// ```
pub fn parse_pause(field: &str, input: &str, allow_zero: bool) -> Result<Duration> {
    let d = parse_text(field, input, "250ms, 5s, 2m")?;
    if d.is_zero() && !allow_zero {
        return Err(bad_duration(field, input, "it is zero", "250ms, 5s, 2m"));
    }
    Ok(d)
}

/// A duration as written in a config file: a string such as `"1h30m"` or a whole number of
/// seconds. It deserializes from either and is parsed later, when the field's name is known,
/// so the error names the setting (`ready_timeout: "5 parsecs" is not a valid duration ...`).
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::duration::DurationText;
///
/// let t: DurationText = serde_json::from_str("\"1h30m\"").unwrap();
/// assert_eq!(t.parse("default_ttl").unwrap(), Duration::from_secs(5400));
/// let n: DurationText = serde_json::from_str("90").unwrap();
/// assert_eq!(n.parse("max_ttl").unwrap(), Duration::from_secs(90));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DurationText(pub String);

impl DurationText {
    /// Parses a TTL-like duration (whole seconds, at least one): see [`parse_duration`].
    pub fn parse(&self, field: &str) -> Result<Duration> {
        parse_duration(field, &self.0)
    }

    /// Parses a timeout or pause (sub-second allowed; zero when `allow_zero`): see
    /// [`parse_pause`].
    pub fn parse_pause(&self, field: &str, allow_zero: bool) -> Result<Duration> {
        parse_pause(field, &self.0, allow_zero)
    }

    /// Parses an optional TTL-like field.
    pub fn parse_opt(text: &Option<DurationText>, field: &str) -> Result<Option<Duration>> {
        text.as_ref().map(|t| t.parse(field)).transpose()
    }

    /// Parses an optional timeout or pause field.
    pub fn parse_pause_opt(
        text: &Option<DurationText>,
        field: &str,
        allow_zero: bool,
    ) -> Result<Option<Duration>> {
        text.as_ref()
            .map(|t| t.parse_pause(field, allow_zero))
            .transpose()
    }
}

impl From<Duration> for DurationText {
    fn from(d: Duration) -> Self {
        if d.subsec_nanos() == 0 {
            DurationText(d.as_secs().to_string())
        } else {
            DurationText(format!("{}ms", d.as_millis()))
        }
    }
}

impl<'de> serde::Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a duration such as \"30s\", \"15m\", \"1h30m\", \"2d\" or a number of seconds",
                )
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(
                self,
                v: i64,
            ) -> std::result::Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(
                self,
                v: u64,
            ) -> std::result::Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_accept_milliseconds_and_optional_zero() {
        assert_eq!(
            parse_pause("d", "1500ms", false).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_pause("d", "0", true).unwrap(), Duration::ZERO);
        assert_eq!(parse_pause("d", "0s", true).unwrap(), Duration::ZERO);
        let e = parse_pause("wait", "0", false).unwrap_err();
        assert!(e.to_string().contains("wait"), "{e}");
        assert!(parse_pause("d", "-1s", true).is_err());
        assert!(parse_pause("d", "1h30", true).is_err());
        assert!(parse_pause("d", "200y", true).is_err());
    }

    #[test]
    fn duration_text_reads_strings_and_numbers_and_names_the_field() {
        let t: DurationText = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(t.parse("ttl").unwrap(), Duration::from_secs(120));
        let n: DurationText = serde_json::from_str("7").unwrap();
        assert_eq!(n.parse("ttl").unwrap(), Duration::from_secs(7));
        assert!(serde_json::from_str::<DurationText>("true").is_err());
        let bad: DurationText = serde_json::from_str("\"5 parsecs\"").unwrap();
        assert!(bad
            .parse("ready_timeout")
            .unwrap_err()
            .to_string()
            .contains("ready_timeout"));
        assert_eq!(
            DurationText::from(Duration::from_millis(250))
                .parse_pause("p", false)
                .unwrap(),
            Duration::from_millis(250)
        );
    }

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
