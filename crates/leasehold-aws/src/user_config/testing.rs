//! Checks for the unit tests of the AWS user providers' configs: what every such config file
//! reads and refuses, written once. Each provider passes its own minimal table, its own keys
//! and its own refusals.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::UserSettings;
use crate::{AwsConfig, AwsCredentials};

/// A secret access key the checks put in tables: it never shows in an error or in `Debug`.
pub const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-secret-key";

/// How a provider reads its config file, for the checks.
pub struct Loader<C> {
    /// The smallest valid table of the provider's own keys.
    pub minimal: Value,
    /// Reads one table as the provider does, the error as text.
    pub load: fn(Value) -> Result<C, String>,
}

/// What a provider's config file reads and refuses beside the shared keys, for
/// [`Loader::check_refusals`].
pub struct OwnKeys<'a> {
    /// Keys that are no keys of the provider (beside `colour`).
    pub unknown: &'a [&'a str],
    /// The provider's own durations, and whether zero is refused for each.
    pub durations: &'a [(&'a str, bool)],
    /// Key, bad value and the start of the error, for the provider's own keys.
    pub refusals: &'a [(&'a str, Value, &'a str)],
}

impl<C: Debug> Loader<C> {
    /// The minimal table with `key` set to `value`.
    pub fn with(&self, key: &str, value: Value) -> Value {
        let mut v = self.minimal.clone();
        v[key] = value;
        v
    }

    /// The error of loading the minimal table with `key` set to `value`.
    pub fn error(&self, key: &str, value: Value) -> String {
        match (self.load)(self.with(key, value.clone())) {
            Ok(c) => panic!("{key} = {value} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts that unknown keys, bad durations, bad shared values and the `own` refusals
    /// are refused at load time with their key first, and that no error or `Debug` shows the
    /// secret access key.
    pub fn check_refusals(&self, own: &OwnKeys<'_>) {
        for key in ["colour"].iter().chain(own.unknown) {
            let e = self.error(key, "30s".into());
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        }
        let shared = [("ready_timeout", true), ("attempt_timeout", true)];
        for &(key, zero_refused) in shared.iter().chain(own.durations) {
            let e = self.error(key, "5 parsecs".into());
            assert!(e.starts_with(&format!("{key}: ")), "{e}");
            let e = self.error(key, true.into());
            assert!(e.starts_with(&format!("{key}: invalid type")), "{e}");
            if zero_refused {
                let e = self.error(key, "0".into());
                assert!(e.starts_with(&format!("{key}: ")), "{e}");
            } else {
                (self.load)(self.with(key, "0".into())).unwrap();
            }
        }
        let shared = [
            ("readiness_ca_pem", json!("/ca.pem"), "readiness_ca_pem:"),
            (
                "readiness_endpoint",
                json!("http://x:1"),
                "readiness_endpoint:",
            ),
            (
                "readiness_endpoint",
                json!("rediss://u:p@x:1"),
                "readiness_endpoint:",
            ),
            (
                "creation_statement",
                json!("{\"UserId\":"),
                "creation_statement:",
            ),
            ("tags", json!({"leasehold:x": "y"}), "tags:"),
            ("tags", json!({"aws:x": "y"}), "tags:"),
            ("tags", json!({"team\n": "x"}), "tags:"),
            ("tags", json!("team"), "tags: invalid type"),
            ("region", json!("Mars Base"), "region:"),
        ];
        for (key, value, want) in shared.iter().chain(own.refusals) {
            let e = self.error(key, value.clone());
            assert!(e.starts_with(want), "{key}: {e}");
        }
        self.check_secret_hidden();
    }

    fn check_secret_hidden(&self) {
        let mut v = self.with("secret_access_key", SECRET.into());
        let e = (self.load)(v.clone()).unwrap_err();
        assert!(e.starts_with("access_key_id: missing"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        v["access_key_id"] = "AKIDEXAMPLE".into();
        v["region"] = "Mars Base".into();
        let e = (self.load)(v.clone()).unwrap_err();
        assert!(e.starts_with("region:") && !e.contains(SECRET), "{e}");
        v["region"] = "eu-west-1".into();
        let c = (self.load)(v).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
    }
}

/// `own` (a table of the provider's own keys) with every AWS key and every shared key but the
/// statements set; [`assert_every_shared_key`] checks what a config read from it holds.
pub fn every_shared_key(own: Value) -> Value {
    let mut v = json!({
        "region": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:5000",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": SECRET,
        "session_token": "FwoGZXIvYXdzEXAMPLEtoken",
        "assume_role_arn": "arn:aws:iam::123456789012:role/leasehold",
        "assume_role_external_id": "orders",
        "assume_role_session_name": "leasehold-orders",
        "max_attempts": 4,
        "attempt_timeout": "3s",
        "tags": {"team": "payments"},
        "readiness_endpoint": "rediss://orders.example:6379",
        "readiness_ca_pem": "/etc/leasehold/ca.pem",
        "ready_timeout": "2m",
    });
    for (k, x) in own.as_object().expect("a table").clone() {
        v[k] = x;
    }
    v
}

/// Asserts that a config read from [`every_shared_key`] holds its values.
pub fn assert_every_shared_key(aws: &AwsConfig, shared: UserSettings<'_>) {
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(aws.max_attempts, Some(4));
    assert_eq!(aws.attempt_timeout, Some(Duration::from_secs(3)));
    assert!(matches!(aws.credentials, AwsCredentials::AssumeRole { .. }));
    assert!(!format!("{aws:?}").contains(SECRET));
    assert_eq!(shared.tags["team"], "payments");
    assert_eq!(
        shared.readiness_endpoint,
        Some("rediss://orders.example:6379")
    );
    assert_eq!(
        shared.readiness_ca_pem,
        Some(Path::new("/etc/leasehold/ca.pem"))
    );
    assert_eq!(shared.ready_timeout, Duration::from_secs(120));
}
