//! The [`LeaseStore`] trait: where lease records live.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::model::{LeaseId, LeaseRecord, LeaseState};

/// Which leases [`LeaseStore::list`] and [`LeaseStore::count`] return.
///
/// Results are ordered by lease id; `after` and `limit` page through large sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseFilter {
    /// Only leases of this secret.
    pub secret: Option<String>,
    /// Only leases in one of these states (empty: any state).
    pub states: Vec<LeaseState>,
    /// Only leases whose id sorts after this one.
    pub after: Option<LeaseId>,
    /// At most this many leases.
    pub limit: Option<usize>,
}

impl LeaseFilter {
    /// Every lease.
    pub fn all() -> Self {
        LeaseFilter::default()
    }

    /// Leases of one secret.
    pub fn secret(name: impl Into<String>) -> Self {
        LeaseFilter {
            secret: Some(name.into()),
            ..LeaseFilter::default()
        }
    }

    /// Restricts to one state (may be called again to allow several).
    #[must_use]
    pub fn state(mut self, state: LeaseState) -> Self {
        self.states.push(state);
        self
    }

    /// Restricts to several states.
    #[must_use]
    pub fn states(mut self, states: impl IntoIterator<Item = LeaseState>) -> Self {
        self.states.extend(states);
        self
    }

    /// Starts after `id`.
    #[must_use]
    pub fn after(mut self, id: Option<LeaseId>) -> Self {
        self.after = id;
        self
    }

    /// At most `n` leases.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether `lease` passes the filter (ignoring `limit`).
    pub fn matches(&self, lease: &LeaseRecord) -> bool {
        self.secret.as_deref().is_none_or(|s| &*lease.secret == s)
            && (self.states.is_empty() || self.states.contains(&lease.state))
            && self.after.as_ref().is_none_or(|a| lease.id > *a)
    }
}

/// Storage for lease records, shared by one or many [`LeaseManager`](crate::LeaseManager)s.
///
/// # Behavior
///
/// - `insert` stores a new record with `version` 1 (the version passed in is ignored) and fails
///   with [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) if the id exists.
/// - `get` returns `None` for an unknown id.
/// - `update` is a compare-and-set: it succeeds only if the stored version equals
///   `lease.version`, stores the record with `version + 1` and returns that version. A
///   different stored version is [`ErrorKind::Conflict`](crate::ErrorKind::Conflict); a missing
///   record is [`ErrorKind::LeaseNotFound`](crate::ErrorKind::LeaseNotFound).
/// - `delete` removes the record if its stored version equals `version` (else `Conflict`,
///   or `LeaseNotFound` when it is gone).
/// - `list` returns matching records ordered by id, honouring `after` and `limit`; `count`
///   counts matching records ignoring `after` and `limit`.
/// - `claim_due(now, owner, hold, limit)` atomically picks up to `limit` records that are not
///   `Revoked`, whose `due_at <= now`, and that are unclaimed or whose claim ended
///   (`claim_until <= now`); it sets `claimed_by = owner`, `claim_until = now + hold`, bumps
///   the version, and returns the updated records, earliest due first. Among concurrent
///   callers, a record is returned to exactly one until its claim ends.
/// - `next_due` returns the earliest time at which `claim_due` could return something: the
///   minimum over non-`Revoked` records of `max(due_at, claim_until)`, or `None` when empty.
/// - No method stores or returns secret material; a record has none to store.
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new lease record.
    async fn insert(&self, lease: &LeaseRecord) -> Result<()>;

    /// Reads one lease record.
    async fn get(&self, id: &LeaseId) -> Result<Option<LeaseRecord>>;

    /// Compare-and-set update; returns the new version.
    async fn update(&self, lease: &LeaseRecord) -> Result<u64>;

    /// Compare-and-set delete.
    async fn delete(&self, id: &LeaseId, version: u64) -> Result<()>;

    /// Lists records, ordered by id.
    async fn list(&self, filter: &LeaseFilter) -> Result<Vec<LeaseRecord>>;

    /// Counts records.
    async fn count(&self, filter: &LeaseFilter) -> Result<u64>;

    /// Claims due records for `owner` for `hold`.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<LeaseRecord>>;

    /// The earliest time a record becomes claimable.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;
}

/// `now + d`, saturating far in the future instead of overflowing.
pub fn add_duration(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
