//! Offline checks of IAM settings: policy documents, paths, names, tags, durations.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use leasehold_core::settings::shorten;
use leasehold_core::{Error, ErrorKind, Result};

/// Longest policy document IAM and STS accept for a user's inline policy or a session policy:
/// 2,048 characters (IAM quotas; STS `Policy` parameter), counted here on the compact form.
pub const MAX_POLICY_CHARS: usize = 2048;

/// IAM allows 50 tags per user.
pub const MAX_USER_TAGS: usize = 50;

/// Parses a policy document: a JSON object with a `Statement` (an object or a non-empty array of
/// objects), each with `Effect` `Allow` or `Deny`. Returns the compact form that is sent.
pub fn check_policy_document(field: &str, doc: &str) -> Result<String> {
    let bad = |why: String| Err(Error::invalid_config(format!("{field}: {why}")));
    let value: serde_json::Value = match serde_json::from_str(doc) {
        Ok(v) => v,
        // serde_json's message names line and column only, never the document's content.
        Err(e) => return bad(format!("not valid JSON ({e})")),
    };
    let Some(obj) = value.as_object() else {
        return bad("a policy document must be a JSON object".into());
    };
    if let Some(version) = obj.get("Version") {
        if !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17")) {
            return bad("Version must be \"2012-10-17\" (or the legacy \"2008-10-17\")".into());
        }
    }
    let statements: Vec<&serde_json::Value> = match obj.get("Statement") {
        None => return bad("a policy document needs a Statement".into()),
        Some(serde_json::Value::Array(a)) if a.is_empty() => {
            return bad("Statement must not be empty".into())
        }
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(v @ serde_json::Value::Object(_)) => vec![v],
        Some(_) => return bad("Statement must be an object or an array of objects".into()),
    };
    for (i, st) in statements.iter().enumerate() {
        let Some(st) = st.as_object() else {
            return bad(format!("Statement[{i}] must be an object"));
        };
        if !matches!(
            st.get("Effect").and_then(|e| e.as_str()),
            Some("Allow" | "Deny")
        ) {
            return bad(format!(
                "Statement[{i}].Effect must be \"Allow\" or \"Deny\""
            ));
        }
    }
    let compact = value.to_string();
    let n = compact.chars().count();
    if n > MAX_POLICY_CHARS {
        return bad(format!(
            "the policy is {n} characters (compact), AWS accepts at most {MAX_POLICY_CHARS}"
        ));
    }
    Ok(compact)
}

/// An IAM path: `/` or `/.../`, 1 to 512 characters of `!` to `~`.
pub fn check_path(path: &str) -> Result<()> {
    let ok = !path.is_empty()
        && path.len() <= 512
        && path.starts_with('/')
        && path.ends_with('/')
        && path.chars().all(|c| ('!'..='~').contains(&c))
        && !path.contains("//");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "path: {:?} is not an IAM path (\"/\" or \"/team/app/\": starts and ends with '/', printable ASCII)",
            shorten(path)
        )))
    }
}

/// An IAM group or policy name: 1 to 128 characters of `[\w+=,.@-]`.
pub fn check_iam_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{field}: {:?} must be 1 to 128 letters, digits or +=,.@_-",
            shorten(name)
        )))
    }
}

/// A managed policy ARN (`arn:aws:iam::aws:policy/...` or an account's).
pub fn check_policy_arn(field: &str, arn: &str) -> Result<()> {
    leasehold_aws::validate_arn(field, arn, Some("iam"))?;
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    if !resource.starts_with("policy/") {
        return Err(Error::invalid_config(format!(
            "{field}: {:?} is not a managed policy ARN (its resource must start with policy/)",
            shorten(arn)
        )));
    }
    Ok(())
}

fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// User-supplied tags: IAM's character set and lengths, no `aws:` keys, no keys this library
/// sets itself, and room for the library's own four tags within IAM's 50.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() + 4 > MAX_USER_TAGS {
        return Err(Error::invalid_config(format!(
            "tags: {} tags given; IAM allows {MAX_USER_TAGS} per user and leasehold adds 4",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || !k.chars().all(tag_char) {
            return Err(Error::invalid_config(format!(
                "tags: key {:?} must be 1 to 128 letters, digits, spaces or _.:/=+-@",
                shorten(k)
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(Error::invalid_config(format!(
                "tags: key {:?} uses the reserved aws: prefix",
                shorten(k)
            )));
        }
        if k.starts_with("leasehold:") {
            return Err(Error::invalid_config(format!(
                "tags: key {:?} uses the leasehold: prefix, which the provider sets itself",
                shorten(k)
            )));
        }
        if v.chars().count() > 256 || !v.chars().all(tag_char) {
            return Err(Error::invalid_config(format!(
                "tags: the value of {:?} must be at most 256 letters, digits, spaces or _.:/=+-@",
                shorten(k)
            )));
        }
    }
    Ok(())
}

/// Makes any string a valid IAM tag value (a secret name may hold characters tags refuse).
pub fn tag_value(s: &str) -> String {
    s.chars()
        .map(|c| if tag_char(c) { c } else { '_' })
        .take(256)
        .collect()
}

/// A duration setting that must be positive.
pub fn check_positive(field: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        Err(Error::invalid_config(format!("{field}: must be positive")))
    } else {
        Ok(())
    }
}

/// The whole seconds an STS call gets for `ttl` (rounded up), checked against `[min, max]`.
pub fn sts_duration_seconds(ttl: Duration, min: Duration, max: Duration) -> Result<i32> {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs > max.as_secs() {
        return Err(Error::new(
            ErrorKind::TtlExceedsMax,
            format!(
                "ttl {} exceeds the AWS maximum of {} for this credential type",
                leasehold_core::format_duration(ttl),
                leasehold_core::format_duration(max)
            ),
        ));
    }
    if secs < min.as_secs() {
        return Err(Error::invalid_input(format!(
            "ttl {} is below the AWS minimum of {} for this credential type",
            leasehold_core::format_duration(ttl),
            leasehold_core::format_duration(min)
        )));
    }
    i32::try_from(secs).map_err(|_| Error::new(ErrorKind::TtlExceedsMax, "ttl is too long"))
}

/// Whether an SDK error is IAM's `NoSuchEntity`.
pub fn is_no_such_entity<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    leasehold_aws::error_code(e) == Some("NoSuchEntity")
}

/// Maps an IAM SDK error. Beyond [`leasehold_aws::map_sdk_error`]: `DeleteConflict` (something
/// still hangs on the user, often a listing that had not caught up yet) and
/// `EntityTemporarilyUnmodifiable` are temporary conflicts, worth another sweep.
pub fn iam_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match leasehold_aws::error_code(&err) {
        Some(code @ ("DeleteConflict" | "EntityTemporarilyUnmodifiable")) => {
            let msg = format!(
                "{operation} failed: {} ({code}); IAM has not caught up yet, retry",
                match &err {
                    SdkError::ServiceError(se) => se.err().message().unwrap_or("no message"),
                    _ => "no message",
                }
            );
            Error::new(ErrorKind::Conflict, msg)
                .with_context("operation", operation)
                .set_source(err)
                .temporary()
        }
        _ => leasehold_aws::map_sdk_error(operation, err),
    }
}

/// An SDK timestamp as a chrono one.
pub fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
        assert!(check_policy_document("p", ok).is_ok());
        let single = r#"{ "Statement": { "Effect": "Deny", "Action": "*", "Resource": "*" } }"#;
        let compact = check_policy_document("p", single).unwrap();
        assert!(!compact.contains(' '), "{compact}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&compact).unwrap(),
            serde_json::from_str::<serde_json::Value>(single).unwrap()
        );
        for bad in [
            "",
            "not json",
            "[]",
            r#""str""#,
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Statement":[]}"#,
            r#"{"Statement":"x"}"#,
            r#"{"Statement":[{"Action":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Maybe"}]}"#,
            r#"{"Version":"2020-01-01","Statement":[{"Effect":"Allow"}]}"#,
        ] {
            let e = check_policy_document("inline_policy", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
            assert!(e.message().starts_with("inline_policy:"), "{e}");
        }
        let big = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Action":"s3:*","Resource":["{}"]}}]}}"#,
            "a".repeat(3000)
        );
        assert!(check_policy_document("p", &big).is_err());
    }

    #[test]
    fn paths_names_arns() {
        for ok in ["/", "/leasehold/", "/a/b-c/"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "/a", "a/", "/a b/", "//", "/a//b/"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_iam_name("groups", "dev-ops_1").is_ok());
        assert!(check_iam_name("groups", "a/b").is_err());
        assert!(check_iam_name("groups", &"a".repeat(129)).is_err());
        assert!(check_policy_arn("policy_arns", "arn:aws:iam::aws:policy/ReadOnlyAccess").is_ok());
        assert!(
            check_policy_arn("policy_arns", "arn:aws:iam::123456789012:role/ReadOnly").is_err()
        );
        assert!(check_policy_arn("policy_arns", "arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn tags() {
        let mut t = BTreeMap::new();
        t.insert("team".to_string(), "payments / core".to_string());
        assert!(check_tags(&t).is_ok());
        t.insert("aws:x".into(), "v".into());
        assert!(check_tags(&t).is_err());
        t.clear();
        t.insert("leasehold:lease-id".into(), "v".into());
        assert!(check_tags(&t).is_err());
        t.clear();
        t.insert("k".into(), "bad\u{0}value".into());
        assert!(check_tags(&t).is_err());
        let many: BTreeMap<_, _> = (0..47).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_tags(&many).is_err());
        assert_eq!(tag_value("orders#cache/abc"), "orders_cache/abc");
    }

    #[test]
    fn sts_durations() {
        let min = Duration::from_secs(900);
        let max = Duration::from_secs(3600);
        assert_eq!(
            sts_duration_seconds(Duration::from_secs(900), min, max).unwrap(),
            900
        );
        assert_eq!(
            sts_duration_seconds(
                Duration::from_millis(1_000_500),
                min,
                Duration::from_secs(7200)
            )
            .unwrap(),
            1001
        );
        let e = sts_duration_seconds(Duration::from_secs(3601), min, max).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TtlExceedsMax);
        let e = sts_duration_seconds(Duration::from_secs(899), min, max).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
