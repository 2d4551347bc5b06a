//! [`CoordinationStore`]: how the instances sharing a lease store agree on group changes.
//!
//! An ElastiCache user group or a MemoryDB ACL accepts one change at a time and stays
//! `modifying` for a while after each. Instances that issue credentials for the same group at
//! once record their pending additions here; whichever instance holds the group's claim (an
//! owner and a hold, taken over when the holder dies — the same idea as
//! [`LeaseStore::claim_due`](crate::LeaseStore::claim_due)) applies all of them in one call and
//! marks each entry with its outcome. The batching algorithm itself lives in the AWS crates;
//! a store only keeps the entries and the claim.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::store::add_duration;

/// Where one pending group addition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Counted against the group's member limit; the user is still being created.
    Reserved,
    /// The user exists and waits for the next group change.
    Pending,
    /// An applier is sending a change that carries the user; its outcome is not known yet.
    Applying,
    /// The change carrying the user was accepted; the group is not `active` with it yet.
    Accepted,
    /// The group is `active` and lists the user.
    Applied,
    /// The addition failed; [`MemberEntry::error`] says why.
    Failed,
}

impl MemberState {
    /// A short stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Reserved => "reserved",
            MemberState::Pending => "pending",
            MemberState::Applying => "applying",
            MemberState::Accepted => "accepted",
            MemberState::Applied => "applied",
            MemberState::Failed => "failed",
        }
    }

    /// Parses [`as_str`](Self::as_str) output.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "reserved" => MemberState::Reserved,
            "pending" => MemberState::Pending,
            "applying" => MemberState::Applying,
            "accepted" => MemberState::Accepted,
            "applied" => MemberState::Applied,
            "failed" => MemberState::Failed,
            other => {
                return Err(Error::new(
                    ErrorKind::Store,
                    format!(
                        "unknown membership state {:?}",
                        other.chars().take(32).collect::<String>()
                    ),
                ))
            }
        })
    }

    /// Whether the entry still counts against the group's member limit and still needs work.
    pub fn is_open(self) -> bool {
        !matches!(self, MemberState::Applied | MemberState::Failed)
    }
}

/// One pending addition of `member` to `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberEntry {
    /// The group (service, region and name; the caller chooses the key).
    pub group: String,
    /// The member (a user id or name, normalised by the caller).
    pub member: String,
    /// Where the addition stands.
    pub state: MemberState,
    /// The instance that asked for the addition.
    pub owner: String,
    /// When the asking issue gives up; an open entry past it is abandoned.
    pub deadline: DateTime<Utc>,
    /// For [`MemberState::Failed`]: the error's kind ([`ErrorKind::as_str`]).
    pub error_kind: Option<String>,
    /// For [`MemberState::Failed`]: the error's message.
    pub error: Option<String>,
}

impl MemberEntry {
    /// A new entry.
    pub fn new(
        group: impl Into<String>,
        member: impl Into<String>,
        state: MemberState,
        owner: impl Into<String>,
        deadline: DateTime<Utc>,
    ) -> Self {
        MemberEntry {
            group: group.into(),
            member: member.into(),
            state,
            owner: owner.into(),
            deadline,
            error_kind: None,
            error: None,
        }
    }

    /// The failure recorded on a [`MemberState::Failed`] entry, as an [`Error`].
    pub fn failure(&self) -> Error {
        let kind = self
            .error_kind
            .as_deref()
            .and_then(kind_named)
            .unwrap_or(ErrorKind::Unexpected);
        Error::new(
            kind,
            self.error
                .clone()
                .unwrap_or_else(|| "the group change failed".to_string()),
        )
        .with_context("group", &self.group)
    }
}

/// The kinds a membership failure is recorded with.
fn kind_named(name: &str) -> Option<ErrorKind> {
    [
        ErrorKind::QuotaExceeded,
        ErrorKind::NotFound,
        ErrorKind::Timeout,
        ErrorKind::Throttled,
        ErrorKind::ProviderUnavailable,
        ErrorKind::PermissionDenied,
        ErrorKind::Conflict,
        ErrorKind::InvalidConfig,
        ErrorKind::InvalidInput,
        ErrorKind::Store,
        ErrorKind::Unexpected,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// Who holds a group's claim, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupClaim {
    /// The holder.
    pub owner: String,
    /// When the claim ends unless renewed.
    pub until: DateTime<Utc>,
}

impl GroupClaim {
    /// A claim held by `owner` until `until`.
    pub fn new(owner: impl Into<String>, until: DateTime<Utc>) -> Self {
        GroupClaim {
            owner: owner.into(),
            until,
        }
    }
}

/// Pending group-membership changes and the claim that elects their applier, shared by every
/// instance that uses one lease store.
///
/// A store offers it through [`LeaseStore::coordination`](crate::LeaseStore::coordination).
/// Entries are keyed by `(group, member)`; nothing here holds a secret.
///
/// # Behavior
///
/// - `put_member` stores the entry, replacing any entry of the same `(group, member)`.
/// - `member` returns the entry of `(group, member)`, or `None`.
/// - `members` returns every entry of `group` (and no other group's), ordered by member.
/// - `set_state(group, members, from, to, error)` changes each listed entry whose state is in
///   `from` to `to` (recording `error` as kind and message, or clearing it when `None`) and
///   returns the members it changed; entries in another state, or missing, are left alone.
/// - `withdraw(group, member)` removes the entry and returns the state it had (`None`: there
///   was none).
/// - `claim_group(group, owner, now, hold)` makes `owner` the group's holder until
///   `now + hold` and returns true when the group is unclaimed, its claim ended
///   (`until <= now`), or `owner` already holds it (a renewal); otherwise it changes nothing
///   and returns false. Among concurrent callers at most one holds a claim at a time.
/// - `release_group(group, owner)` ends `owner`'s claim and returns true; false (and nothing
///   changes) when `owner` does not hold it.
/// - `group_claim(group)` returns the current holder and the end of its claim, or `None`.
/// - `changed(group, within)` returns after at most `within`, earlier when the store can tell
///   that an entry of `group` changed.
#[async_trait]
pub trait CoordinationStore: Send + Sync + fmt::Debug + 'static {
    /// Stores (or replaces) an entry.
    async fn put_member(&self, entry: &MemberEntry) -> Result<()>;

    /// One entry.
    async fn member(&self, group: &str, member: &str) -> Result<Option<MemberEntry>>;

    /// Every entry of a group, ordered by member.
    async fn members(&self, group: &str) -> Result<Vec<MemberEntry>>;

    /// Moves the listed entries that are in one of `from` to `to`; returns those it moved.
    async fn set_state(
        &self,
        group: &str,
        members: &[String],
        from: &[MemberState],
        to: MemberState,
        error: Option<&Error>,
    ) -> Result<Vec<String>>;

    /// Removes an entry; returns the state it had.
    async fn withdraw(&self, group: &str, member: &str) -> Result<Option<MemberState>>;

    /// Takes, takes over or renews the group's claim.
    async fn claim_group(
        &self,
        group: &str,
        owner: &str,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<bool>;

    /// Ends `owner`'s claim on the group.
    async fn release_group(&self, group: &str, owner: &str) -> Result<bool>;

    /// The group's current claim, if any.
    async fn group_claim(&self, group: &str) -> Result<Option<GroupClaim>>;

    /// Waits up to `within` for a change to the group's entries. The default just sleeps.
    async fn changed(&self, group: &str, within: Duration) {
        let _ = group;
        tokio::time::sleep(within).await;
    }
}

/// The in-process [`CoordinationStore`]: what [`MemoryStore`](crate::MemoryStore) offers, and
/// what a provider uses when it is given no store (every issue of the process then shares it).
///
/// ```
/// use std::sync::Arc;
/// use leasehold_core::{CoordinationStore, MemoryCoordination};
///
/// let coordination: Arc<dyn CoordinationStore> = Arc::new(MemoryCoordination::new());
/// ```
#[derive(Debug, Default)]
pub struct MemoryCoordination {
    inner: Mutex<CoordinationInner>,
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct CoordinationInner {
    entries: HashMap<String, BTreeMap<String, MemberEntry>>,
    claims: HashMap<String, GroupClaim>,
}

impl MemoryCoordination {
    /// An empty one.
    pub fn new() -> Self {
        MemoryCoordination::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CoordinationInner> {
        // Every mutation is a single map operation: a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CoordinationStore for MemoryCoordination {
    async fn put_member(&self, entry: &MemberEntry) -> Result<()> {
        self.lock()
            .entries
            .entry(entry.group.clone())
            .or_default()
            .insert(entry.member.clone(), entry.clone());
        self.notify.notify_waiters();
        Ok(())
    }

    async fn member(&self, group: &str, member: &str) -> Result<Option<MemberEntry>> {
        Ok(self
            .lock()
            .entries
            .get(group)
            .and_then(|g| g.get(member))
            .cloned())
    }

    async fn members(&self, group: &str) -> Result<Vec<MemberEntry>> {
        Ok(self
            .lock()
            .entries
            .get(group)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn set_state(
        &self,
        group: &str,
        members: &[String],
        from: &[MemberState],
        to: MemberState,
        error: Option<&Error>,
    ) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        {
            let mut inner = self.lock();
            let Some(g) = inner.entries.get_mut(group) else {
                return Ok(changed);
            };
            for m in members {
                if let Some(e) = g.get_mut(m) {
                    if from.contains(&e.state) {
                        e.state = to;
                        e.error_kind = error.map(|e| e.kind().as_str().to_string());
                        e.error = error.map(|e| e.message().to_string());
                        changed.push(m.clone());
                    }
                }
            }
        }
        if !changed.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(changed)
    }

    async fn withdraw(&self, group: &str, member: &str) -> Result<Option<MemberState>> {
        let mut inner = self.lock();
        let Some(g) = inner.entries.get_mut(group) else {
            return Ok(None);
        };
        let old = g.remove(member).map(|e| e.state);
        if g.is_empty() {
            inner.entries.remove(group);
        }
        drop(inner);
        if old.is_some() {
            self.notify.notify_waiters();
        }
        Ok(old)
    }

    async fn claim_group(
        &self,
        group: &str,
        owner: &str,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let free = inner
            .claims
            .get(group)
            .is_none_or(|c| c.owner == owner || c.until <= now);
        if free {
            inner.claims.insert(
                group.to_string(),
                GroupClaim {
                    owner: owner.to_string(),
                    until: add_duration(now, hold),
                },
            );
        }
        Ok(free)
    }

    async fn release_group(&self, group: &str, owner: &str) -> Result<bool> {
        let mut inner = self.lock();
        if inner.claims.get(group).is_some_and(|c| c.owner == owner) {
            inner.claims.remove(group);
            drop(inner);
            self.notify.notify_waiters();
            return Ok(true);
        }
        Ok(false)
    }

    async fn group_claim(&self, group: &str) -> Result<Option<GroupClaim>> {
        Ok(self.lock().claims.get(group).cloned())
    }

    async fn changed(&self, group: &str, within: Duration) {
        let _ = group;
        let _ = tokio::time::timeout(within, self.notify.notified()).await;
    }
}

/// A [`CoordinationStore`] handed around as a trait object.
pub type SharedCoordination = Arc<dyn CoordinationStore>;
