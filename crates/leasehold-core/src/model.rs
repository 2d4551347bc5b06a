//! The lease model: ids, states, the record a store keeps, and the credentials a caller gets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, Distribution, SampleString};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::settings::shorten;

/// Length of the random part of a [`LeaseId`]: 24 alphanumeric characters, about 143 bits.
pub const LEASE_ID_RANDOM_LEN: usize = 24;

/// A lease id: `<secret-name>/<random>`, where the random part is unguessable.
///
/// ```
/// use leasehold_core::LeaseId;
///
/// let id = LeaseId::generate("orders-cache");
/// assert_eq!(id.secret(), "orders-cache");
/// let parsed: LeaseId = id.as_str().parse().unwrap();
/// assert_eq!(parsed, id);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseId(Arc<str>);

impl LeaseId {
    /// A fresh id for a lease of `secret`, from the OS-seeded CSPRNG.
    pub fn generate(secret: &str) -> Self {
        // Built in place: one allocation (the Arc) for the usual secret name lengths.
        const STACK: usize = 192;
        let len = secret.len() + 1 + LEASE_ID_RANDOM_LEN;
        let mut rng = rand::rng();
        if len > STACK {
            let random = Alphanumeric.sample_string(&mut rng, LEASE_ID_RANDOM_LEN);
            return LeaseId(format!("{secret}/{random}").into());
        }
        let mut buf = [0u8; STACK];
        buf[..secret.len()].copy_from_slice(secret.as_bytes());
        buf[secret.len()] = b'/';
        for (b, r) in buf[secret.len() + 1..len]
            .iter_mut()
            .zip(Alphanumeric.sample_iter(&mut rng))
        {
            *b = r;
        }
        // Valid UTF-8: a str, '/', then ASCII letters and digits.
        let id = std::str::from_utf8(&buf[..len]).unwrap_or_default();
        LeaseId(Arc::from(id))
    }

    /// The secret name part.
    pub fn secret(&self) -> &str {
        self.0.rsplit_once('/').map(|(s, _)| s).unwrap_or(&self.0)
    }

    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LeaseId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{why}: a lease id looks like <secret>/<random>"),
            )
            .with_context("lease_id", shorten(s).escape_debug())
        };
        if s.len() > 512 {
            return Err(bad("lease id is longer than 512 bytes"));
        }
        let Some((secret, random)) = s.rsplit_once('/') else {
            return Err(bad("lease id has no '/'"));
        };
        if secret.is_empty() || random.is_empty() {
            return Err(bad("lease id has an empty part"));
        }
        if secret.len() > 128
            || !secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(
                "lease id's secret part is not a secret name (letters, digits, '-', '_', '.')",
            ));
        }
        if !random.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad("lease id's random part is not alphanumeric"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("lease id contains whitespace or control characters"));
        }
        Ok(LeaseId(s.into()))
    }
}

impl TryFrom<String> for LeaseId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<LeaseId> for String {
    fn from(id: LeaseId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

/// Where a lease is in its life.
///
/// `Pending -> Active -> Revoking -> Revoked`, and `Irrevocable` when revocation keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Written ahead of the provider call: the credential may or may not exist.
    Pending,
    /// The credential exists and is handed out.
    Active,
    /// Revocation is due or in progress (retrying after failures).
    Revoking,
    /// The credential is gone. A store may delete such a record at once.
    Revoked,
    /// Revocation failed too often; kept for an operator to retry or force-forget.
    Irrevocable,
}

impl LeaseState {
    /// All states, in lifecycle order.
    pub const ALL: [LeaseState; 5] = [
        LeaseState::Pending,
        LeaseState::Active,
        LeaseState::Revoking,
        LeaseState::Revoked,
        LeaseState::Irrevocable,
    ];

    /// Stable lower-case name (`pending`, `active`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Pending => "pending",
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::Revoked => "revoked",
            LeaseState::Irrevocable => "irrevocable",
        }
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LeaseState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "unknown lease state {s:?}: expected one of pending, active, revoking, revoked, irrevocable"
                ))
            })
    }
}

/// What a provider needs to find (and revoke) the external credential: never secret material.
///
/// `id` is the primary name (a username, an IAM user name, an STS session name); `attrs` holds
/// whatever else revoke needs (an access key id, a user group id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRef {
    /// The external credential's name.
    pub id: String,
    /// Further non-secret identifiers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

impl ExternalRef {
    /// A reference by name only.
    pub fn new(id: impl Into<String>) -> Self {
        ExternalRef {
            id: id.into(),
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.insert(key.into(), value.into());
        self
    }

    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// The record a [`LeaseStore`](crate::LeaseStore) keeps for one lease. It holds no secret
/// material: a stolen lease table exposes no live credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// `<secret>/<random>`.
    pub id: LeaseId,
    /// The secret that issued the lease.
    pub secret: Arc<str>,
    /// The provider's [`kind`](crate::DynamicSecretProvider::kind), such as `redis`.
    pub provider_kind: Arc<str>,
    /// Who asked for it, if the caller said.
    pub identity: Option<Arc<str>>,
    /// What revoke needs.
    pub external: ExternalRef,
    /// Where the lease is in its life.
    pub state: LeaseState,
    /// When the lease was issued.
    pub issued_at: DateTime<Utc>,
    /// When the lease ends unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The latest `expires_at` renewals can reach (`issued_at + max_ttl`).
    pub max_expires_at: DateTime<Utc>,
    /// Whether renew may extend the lease.
    pub renewable: bool,
    /// The time the expiry worker must next look at this lease: `expires_at` while active, the
    /// next attempt while revoking, the issue deadline while pending.
    pub due_at: DateTime<Utc>,
    /// Failed revocation attempts so far.
    pub revoke_attempts: u32,
    /// The last revocation error, for operators. Never holds secret material.
    pub last_error: Option<String>,
    /// The manager instance that holds a claim on the lease, if any.
    pub claimed_by: Option<Arc<str>>,
    /// Until when the claim holds; after that any instance may claim the lease.
    pub claim_until: Option<DateTime<Utc>>,
    /// Compare-and-set version, starting at 1 on insert and increased by the store on update.
    pub version: u64,
}

impl LeaseRecord {
    /// Whether the lease's claim (if any) is held by someone at `now`.
    pub fn is_claimed_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self.claim_until, Some(until) if until > now)
    }

    /// Whether the worker should look at the lease at `now`: due and not claimed.
    pub fn is_due_at(&self, now: DateTime<Utc>) -> bool {
        self.state != LeaseState::Revoked && self.due_at <= now && !self.is_claimed_at(now)
    }

    /// Whether `owner` may claim the lease for revocation at `now`: no live claim, or a live
    /// claim on an `Active` or `Irrevocable` lease held by another instance (its worker found
    /// the lease due but has not started revoking; the compare-and-set settles who does).
    pub fn revocable_by(&self, owner: &str, now: DateTime<Utc>) -> bool {
        !(self.is_claimed_at(now)
            && (matches!(self.state, LeaseState::Pending | LeaseState::Revoking)
                || self.claimed_by.as_deref() == Some(owner)))
    }

    /// Marks the lease claimed by `owner` for revocation, due now: what
    /// [`LeaseStore::claim_for_revoke`](crate::LeaseStore::claim_for_revoke) writes. The version
    /// is left to the store.
    pub fn claim_for_revoke(&mut self, owner: Arc<str>, now: DateTime<Utc>, until: DateTime<Utc>) {
        self.begin_revoke();
        self.claim(owner, until);
        self.due_at = now;
    }

    /// Claims the lease for `owner` until `until`, leaving its state and due time: what
    /// [`LeaseStore::claim_due`](crate::LeaseStore::claim_due) writes. The version is left to
    /// the store.
    pub fn claim(&mut self, owner: Arc<str>, until: DateTime<Utc>) {
        self.claimed_by = Some(owner);
        self.claim_until = Some(until);
    }

    /// Ends the lease's claim, whoever holds it.
    pub fn release_claim(&mut self) {
        self.claimed_by = None;
        self.claim_until = None;
    }

    /// Ends the lease's claim and makes it due by `now` at the latest: what
    /// [`LeaseStore::release_claims`](crate::LeaseStore::release_claims) writes for a claim
    /// whose holder is gone.
    pub fn release_claim_due_by(&mut self, now: DateTime<Utc>) {
        self.release_claim();
        self.due_at = self.due_at.min(now);
    }

    /// Makes a `Pending` lease live: `Active`, pointing at `external`, ending at `expires_at`
    /// (when it falls due) and renewable up to `max_expires_at`. The issuer's claim ends.
    pub fn activate(
        &mut self,
        external: ExternalRef,
        expires_at: DateTime<Utc>,
        max_expires_at: DateTime<Utc>,
    ) {
        self.state = LeaseState::Active;
        self.external = external;
        self.expires_at = expires_at;
        self.max_expires_at = max_expires_at;
        self.due_at = expires_at;
        self.release_claim();
    }

    /// Moves the lease's end to `expires_at` (a renewal); it falls due then.
    pub fn extend(&mut self, expires_at: DateTime<Utc>) {
        self.expires_at = expires_at;
        self.due_at = expires_at;
    }

    /// Marks the lease `Revoking`, unless it is already `Revoking` or `Irrevocable` (which
    /// stays so until revoked). Returns whether the state changed.
    pub fn begin_revoke(&mut self) -> bool {
        if matches!(self.state, LeaseState::Revoking | LeaseState::Irrevocable) {
            return false;
        }
        self.state = LeaseState::Revoking;
        true
    }

    /// Leaves the revocation to the worker at `due_at`: `Revoking`, unclaimed, with `error`
    /// (why it cannot be revoked now) kept for operators.
    pub fn defer_revoke(&mut self, error: String, due_at: DateTime<Utc>) {
        self.state = LeaseState::Revoking;
        self.last_error = Some(error);
        self.release_claim();
        self.due_at = due_at;
    }

    /// Counts a failed revocation attempt and keeps its `error` for operators; returns the
    /// attempts so far. The caller then schedules the next one with
    /// [`schedule_retry`](Self::schedule_retry) or [`make_irrevocable`](Self::make_irrevocable).
    pub fn record_failed_revoke(&mut self, error: String) -> u32 {
        self.revoke_attempts = self.revoke_attempts.saturating_add(1);
        self.last_error = Some(error);
        self.revoke_attempts
    }

    /// Schedules the next revocation attempt at `due_at` and ends the claim.
    pub fn schedule_retry(&mut self, due_at: DateTime<Utc>) {
        self.due_at = due_at;
        self.release_claim();
    }

    /// Marks the lease `Irrevocable` (retries exhausted, or an error that will not go away by
    /// itself), tried again at `retry_at`; the claim ends.
    pub fn make_irrevocable(&mut self, retry_at: DateTime<Utc>) {
        self.state = LeaseState::Irrevocable;
        self.schedule_retry(retry_at);
    }

    /// Marks the lease `Revoked`: its credential is gone.
    pub fn mark_revoked(&mut self) {
        self.state = LeaseState::Revoked;
    }

    /// The earliest time the lease can be claimed: its due time, or the end of a claim.
    pub fn claimable_at(&self) -> DateTime<Utc> {
        match self.claim_until {
            Some(until) if until > self.due_at => until,
            _ => self.due_at,
        }
    }
}

/// The credential handed to the caller. Secret parts are [`SecretString`]; `Debug` redacts them.
#[non_exhaustive]
#[derive(Clone)]
pub enum Credentials {
    /// A username and password (Redis, ElastiCache, MemoryDB, IAM auth tokens).
    UsernamePassword {
        /// The username.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// An AWS key pair, with a session token for temporary credentials.
    AwsKeys {
        /// The access key id (not secret on its own).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretString,
        /// The session token of temporary credentials.
        session_token: Option<SecretString>,
    },
}

impl Credentials {
    /// The username, or the access key id.
    pub fn principal(&self) -> &str {
        match self {
            Credentials::UsernamePassword { username, .. } => username,
            Credentials::AwsKeys { access_key_id, .. } => access_key_id,
        }
    }

    /// The password, or the secret access key.
    pub fn secret(&self) -> &SecretString {
        match self {
            Credentials::UsernamePassword { password, .. } => password,
            Credentials::AwsKeys {
                secret_access_key, ..
            } => secret_access_key,
        }
    }

    /// Every secret value this credential holds, for leak checks in tests.
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            Credentials::UsernamePassword { password, .. } => vec![password.expose_secret()],
            Credentials::AwsKeys {
                secret_access_key,
                session_token,
                ..
            } => {
                let mut v = vec![secret_access_key.expose_secret()];
                if let Some(t) = session_token {
                    v.push(t.expose_secret());
                }
                v
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::UsernamePassword { username, .. } => f
                .debug_struct("UsernamePassword")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish_non_exhaustive(),
            Credentials::AwsKeys {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("AwsKeys")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"[REDACTED]")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "[REDACTED]"),
                )
                .finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_secret_a_slash_and_random_alphanumerics() {
        for secret in ["a", "orders-cache", &"s".repeat(128), &"l".repeat(300)] {
            let a = LeaseId::generate(secret);
            let b = LeaseId::generate(secret);
            assert_ne!(a, b);
            assert_eq!(a.secret(), secret);
            let random = &a.as_str()[secret.len() + 1..];
            assert_eq!(random.len(), LEASE_ID_RANDOM_LEN);
            assert!(random.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        }
    }

    #[test]
    fn lease_id_round_trips_and_rejects_garbage() {
        let id = LeaseId::generate("orders.cache_v2");
        assert_eq!(id.secret(), "orders.cache_v2");
        assert_eq!(id.as_str().parse::<LeaseId>().unwrap(), id);
        for bad in [
            "",
            "nosep",
            "a/",
            "/abc",
            "a/b c",
            "a/b-c",
            "a b/c",
            "../../etc/passwd/abc",
            "orders/cache/abc",
        ] {
            let e = bad.parse::<LeaseId>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn lease_ids_are_distinct() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| LeaseId::generate("s")).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn credentials_debug_redacts() {
        let c = Credentials::UsernamePassword {
            username: "lh-x".into(),
            password: SecretString::from("hunter2-very-secret"),
        };
        let s = format!("{c:?}");
        assert!(s.contains("lh-x"));
        assert!(!s.contains("hunter2"));
        let k = Credentials::AwsKeys {
            access_key_id: "AKIA1".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI"),
            session_token: Some(SecretString::from("FwoGZXIvYXdz")),
        };
        let s = format!("{k:?}");
        assert!(!s.contains("wJalr") && !s.contains("FwoG"));
    }

    #[test]
    fn state_parses_case_insensitively() {
        assert_eq!("Active".parse::<LeaseState>().unwrap(), LeaseState::Active);
        assert!("gone".parse::<LeaseState>().is_err());
    }
}
