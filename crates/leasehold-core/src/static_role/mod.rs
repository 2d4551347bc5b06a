//! Static roles: the password of an **existing** user, rotated on a schedule by one instance of
//! a fleet and read by all of them, with two passwords valid while clients move over.
//!
//! The pieces:
//!
//! - a [`StaticRoleTarget`] — the user on the backend (an ElastiCache user, a MemoryDB user, a
//!   Redis/Valkey ACL user on every node): make two passwords valid, drop the old one, test
//!   the new one;
//! - a [`StaticRolePublisher`] — where the fleet reads the password, with the staging labels
//!   of AWS Secrets Manager (`AWSPENDING`, `AWSCURRENT`, `AWSPREVIOUS`) and the JSON format of
//!   AWS's own ElastiCache user rotation (`{"username", "password", "user_arn"}`). The AWS
//!   crate has the Secrets Manager one; [`MemoryPublisher`] and [`FilePublisher`] are here;
//! - a [`StaticRoleRotator`] — elected per static role through the lease store's
//!   [`CoordinationStore`](crate::CoordinationStore) claim (owner + hold, taken over when the
//!   holder dies); it runs the four resumable steps of a rotation and drops the old password
//!   after the grace;
//! - a [`StaticRoleReader`] — follows the published secret on every instance, with the
//!   `current()` / `subscribe()` shape of [`CredentialWatch`](crate::CredentialWatch).
//!
//! The lease store never holds a password: it keeps the claim and one bookkeeping entry per
//! role (phase and time of the last promotion). The publisher holds the secrets; an interrupted
//! rotation is found there (a version labelled `AWSPENDING`) and finished by the next holder.

mod publisher;
mod reader;
mod rotator;
mod schedule;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, ErrorKind, Result};
use crate::password::PasswordPolicy;

pub use publisher::{FilePublisher, MemoryPublisher};
pub use reader::{ReaderOptions, StaticRoleReader};
pub use rotator::{RotationOutcome, RotationTask, StaticRoleOptions, StaticRoleRotator};
pub use schedule::RotationSchedule;

/// A static role's credential as published: what a reader authenticates with.
///
/// Serialised as AWS's ElastiCache user rotation stores it:
/// `{"username": "...", "password": "...", "user_arn": "..."}` (`user_arn` only when known).
#[derive(Clone)]
#[non_exhaustive]
pub struct StaticCredential {
    /// The user name clients authenticate with.
    pub username: String,
    /// The password.
    pub password: SecretString,
    /// The user's ARN (ElastiCache, MemoryDB), when there is one.
    pub user_arn: Option<String>,
}

impl fmt::Debug for StaticCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredential")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("user_arn", &self.user_arn)
            .finish_non_exhaustive()
    }
}

impl StaticCredential {
    /// A credential.
    pub fn new(username: impl Into<String>, password: SecretString) -> Self {
        StaticCredential {
            username: username.into(),
            password,
            user_arn: None,
        }
    }

    /// The JSON document a publisher stores. It contains the password: hand it only to the
    /// publisher.
    pub fn to_json(&self) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("username".into(), self.username.clone().into());
        doc.insert(
            "password".into(),
            self.password.expose_secret().to_string().into(),
        );
        if let Some(arn) = &self.user_arn {
            doc.insert("user_arn".into(), arn.clone().into());
        }
        serde_json::Value::Object(doc).to_string()
    }

    /// Parses [`to_json`](Self::to_json) output (other keys are ignored). The error never
    /// quotes the document.
    pub fn from_json(doc: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("published static role secret: {why}; expected {{\"username\": ..., \"password\": ...}}"),
            )
        };
        let v: serde_json::Value =
            serde_json::from_str(doc).map_err(|_| bad("not a JSON document"))?;
        let username = v
            .get("username")
            .and_then(|u| u.as_str())
            .ok_or_else(|| bad("no \"username\" string"))?;
        let password = v
            .get("password")
            .and_then(|u| u.as_str())
            .ok_or_else(|| bad("no \"password\" string"))?;
        Ok(StaticCredential {
            username: username.to_string(),
            password: SecretString::from(password.to_string()),
            user_arn: v
                .get("user_arn")
                .and_then(|a| a.as_str())
                .map(str::to_string),
        })
    }
}

crate::setters! {
    StaticCredential {
        /// Sets the user's ARN.
        user_arn: Option<String>,
    }
}

/// A staging label of the published secret (Secrets Manager's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `AWSCURRENT`: what readers use.
    Current,
    /// `AWSPENDING`: a rotation in progress (the new password, maybe not on the user yet).
    Pending,
    /// `AWSPREVIOUS`: the password before the current one, valid until the grace ends.
    Previous,
}

impl Stage {
    /// The label as Secrets Manager spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

/// One version of the published secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublishedVersion {
    /// The version id (Secrets Manager's `VersionId`, the rotation's client request token).
    pub version_id: String,
    /// The credential.
    pub credential: StaticCredential,
    /// When the version was stored, when the publisher knows.
    pub created_at: Option<DateTime<Utc>>,
}

impl PublishedVersion {
    /// A version.
    pub fn new(
        version_id: impl Into<String>,
        credential: StaticCredential,
        created_at: Option<DateTime<Utc>>,
    ) -> Self {
        PublishedVersion {
            version_id: version_id.into(),
            credential,
            created_at,
        }
    }
}

/// The user of a static role, as the backend describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaticUser {
    /// The name clients authenticate with.
    pub username: String,
    /// The user's ARN, when the backend has one.
    pub user_arn: Option<String>,
}

impl StaticUser {
    /// A user.
    pub fn new(username: impl Into<String>, user_arn: Option<String>) -> Self {
        StaticUser {
            username: username.into(),
            user_arn,
        }
    }
}

/// The user whose password a static role rotates.
///
/// # Behavior
///
/// - `set_passwords(old, new)` leaves the user accepting `new` and, when given, `old`, and
///   returns once the backend applied it (an AWS user is `active` again). Repeating it with
///   the same arguments succeeds and changes nothing more. Without `old` (the first
///   rotation), other passwords the user had may stop working.
/// - `drop_password(old, current)` leaves the user accepting `current` and not `old`;
///   repeating it succeeds.
/// - `test(password)` succeeds when the backend accepts the password, checked with `AUTH`
///   where a readiness endpoint is configured; without one it succeeds once the user is
///   settled. Errors are temporary when trying again may help.
/// - No method's error, `Debug` output or log line contains a password.
#[async_trait]
pub trait StaticRoleTarget: Send + Sync + fmt::Debug + 'static {
    /// A stable tag (`aws-elasticache-static`, `aws-memorydb-static`, `redis-static`).
    fn kind(&self) -> &'static str;

    /// The policy new passwords follow (what the backend accepts).
    fn password_policy(&self) -> PasswordPolicy;

    /// Checks that the user exists and can have its password rotated.
    async fn validate(&self) -> Result<()>;

    /// The user's name and ARN.
    async fn user(&self) -> Result<StaticUser>;

    /// Makes `new` (and `old`, when given) valid.
    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()>;

    /// Makes `old` invalid, leaving `current`.
    async fn drop_password(&self, old: &SecretString, current: &SecretString) -> Result<()>;

    /// Confirms that `password` works.
    async fn test(&self, username: &str, password: &SecretString) -> Result<()>;
}

/// Where a static role's password is published for the fleet to read.
///
/// # Behavior
///
/// - `get(stage)` returns the version that carries `stage`, or `None` (no such label, or no
///   secret yet).
/// - `put_pending(version_id, credential)` stores `credential` as version `version_id`
///   labelled `AWSPENDING` (taking the label from any other version). Repeating it with the
///   same id and value succeeds. The first version of a secret also becomes `AWSCURRENT`
///   (as in Secrets Manager).
/// - `promote(version_id)` moves `AWSCURRENT` to `version_id`, labels the version that had it
///   `AWSPREVIOUS`, and removes `AWSPENDING` from `version_id`; repeating it succeeds.
/// - Errors never contain the secret.
#[async_trait]
pub trait StaticRolePublisher: Send + Sync + fmt::Debug + 'static {
    /// Where the secret is published (a secret id, a path), for messages.
    fn location(&self) -> String;

    /// Checks configuration and reachability.
    async fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The version carrying `stage`.
    async fn get(&self, stage: Stage) -> Result<Option<PublishedVersion>>;

    /// Stores a pending version.
    async fn put_pending(&self, version_id: &str, credential: &StaticCredential) -> Result<()>;

    /// Makes `version_id` current.
    async fn promote(&self, version_id: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_redaction() {
        let c = StaticCredential::new("app", SecretString::from("Sup3r-secret-static-pw"))
            .user_arn(Some("arn:aws:elasticache:us-east-1:1:user:app".into()));
        let doc = c.to_json();
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["username"], "app");
        assert_eq!(v["password"], "Sup3r-secret-static-pw");
        assert_eq!(v["user_arn"], "arn:aws:elasticache:us-east-1:1:user:app");
        let back = StaticCredential::from_json(&doc).unwrap();
        assert_eq!(back.password.expose_secret(), "Sup3r-secret-static-pw");
        assert!(!format!("{back:?}").contains("Sup3r"));
        let err = StaticCredential::from_json("{\"password\": \"Sup3r-secret\"}").unwrap_err();
        assert!(!err.to_string().contains("Sup3r"));
        assert!(StaticCredential::from_json("Sup3r-not-json")
            .unwrap_err()
            .to_string()
            .contains("not a JSON"));
    }
}
