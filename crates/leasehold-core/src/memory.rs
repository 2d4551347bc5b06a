//! [`MemoryStore`]: the in-process reference [`LeaseStore`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::coordination::{CoordinationStore, MemoryCoordination};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{LeaseId, LeaseRecord, LeaseState};
use crate::store::{add_duration, LeaseFilter, LeaseStore, RevokeClaim};

/// A [`LeaseStore`] in memory: fast, shared by every manager in one process, forgotten on exit.
///
/// Use it for tests and for credentials whose loss on a crash is acceptable (they still expire
/// in the backend only if the backend has its own expiry). For anything else use a durable
/// store (`leasehold-store-sql`).
///
/// ```
/// use std::sync::Arc;
/// use leasehold_core::{LeaseStore, MemoryStore};
///
/// let store: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
/// ```
///
/// A `MemoryStore` dies with the process: credentials issued through it are revoked only if
/// the process lives to revoke them (or [`LeaseManager::shutdown`](crate::LeaseManager::shutdown)
/// does, for watches). Each `MemoryStore` has its own random installation id.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    installation: Arc<str>,
    coordination: Arc<MemoryCoordination>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Arc::default(),
            installation: crate::store::new_installation_id().into(),
            coordination: Arc::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed so B-tree nodes hold pointers: node slack then costs 8 bytes an entry, not ~230.
    leases: BTreeMap<LeaseId, Box<LeaseRecord>>,
    /// (claimable_at, id) for every non-revoked lease: claim_due and next_due read the front.
    due: BTreeSet<(DateTime<Utc>, LeaseId)>,
    /// Live leases per secret, for quick quota checks.
    per_secret: HashMap<Arc<str>, u64>,
}

impl Inner {
    fn index(&mut self, lease: &LeaseRecord) {
        if lease.state != LeaseState::Revoked {
            self.due.insert((lease.claimable_at(), lease.id.clone()));
        }
    }

    fn unindex(&mut self, lease: &LeaseRecord) {
        self.due.remove(&(lease.claimable_at(), lease.id.clone()));
    }

    fn put(&mut self, lease: LeaseRecord) {
        if let Some(old) = self.leases.get(&lease.id) {
            let old_key = (old.claimable_at(), old.id.clone());
            self.due.remove(&old_key);
        } else {
            *self.per_secret.entry(lease.secret.clone()).or_default() += 1;
        }
        self.index(&lease);
        self.leases.insert(lease.id.clone(), Box::new(lease));
    }

    fn remove(&mut self, id: &LeaseId) {
        if let Some(old) = self.leases.remove(id) {
            self.unindex(&old);
            if let Some(n) = self.per_secret.get_mut(&old.secret) {
                *n -= 1;
                if *n == 0 {
                    self.per_secret.remove(&old.secret);
                }
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// An empty store with a given installation id (to stand in for a durable store in tests).
    pub fn with_installation_id(id: &str) -> Result<Self> {
        crate::store::check_installation_id(id)?;
        Ok(MemoryStore {
            inner: Arc::default(),
            installation: id.into(),
            coordination: Arc::default(),
        })
    }

    /// How many records the store holds.
    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map (every mutation is
        // one insert/remove pair), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(id: &LeaseId) -> Error {
    Error::new(ErrorKind::LeaseNotFound, "no lease with this id").with_context("lease_id", id)
}

fn conflict(id: &LeaseId, expected: u64, found: u64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("lease was changed concurrently (expected version {expected}, found {found})"),
    )
    .with_context("lease_id", id)
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn insert(&self, lease: &LeaseRecord) -> Result<()> {
        let mut inner = self.lock();
        if inner.leases.contains_key(&lease.id) {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "a lease with this id exists")
                    .with_context("lease_id", &lease.id),
            );
        }
        let mut lease = lease.clone();
        lease.version = 1;
        inner.put(lease);
        Ok(())
    }

    async fn insert_within(&self, lease: &LeaseRecord, limit: u64) -> Result<bool> {
        let mut inner = self.lock();
        let stored = inner.per_secret.get(&*lease.secret).copied().unwrap_or(0);
        if stored >= limit {
            return Ok(false);
        }
        if inner.leases.contains_key(&lease.id) {
            return Err(
                Error::new(ErrorKind::AlreadyExists, "a lease with this id exists")
                    .with_context("lease_id", &lease.id),
            );
        }
        let mut lease = lease.clone();
        lease.version = 1;
        inner.put(lease);
        Ok(true)
    }

    async fn claim_for_revoke(
        &self,
        id: &LeaseId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<RevokeClaim> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(stored) = inner.leases.get_mut(id) else {
            return Ok(RevokeClaim::Gone);
        };
        if !stored.revocable_by(owner, now) {
            return Ok(RevokeClaim::Busy((**stored).clone()));
        }
        let (old_due, was_indexed) = (stored.claimable_at(), stored.state != LeaseState::Revoked);
        let owner = match &stored.claimed_by {
            Some(o) if &**o == owner => o.clone(),
            _ => owner.into(),
        };
        stored.claim_for_revoke(owner, now, until);
        stored.version += 1;
        let new_due = stored.claimable_at();
        let claimed = (**stored).clone();
        if was_indexed {
            inner.due.remove(&(old_due, id.clone()));
        }
        inner.due.insert((new_due, id.clone()));
        Ok(RevokeClaim::Claimed(claimed))
    }

    async fn get(&self, id: &LeaseId) -> Result<Option<LeaseRecord>> {
        Ok(self.lock().leases.get(id).map(|l| (**l).clone()))
    }

    async fn update(&self, lease: &LeaseRecord) -> Result<u64> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let stored = inner
            .leases
            .get_mut(&lease.id)
            .ok_or_else(|| not_found(&lease.id))?;
        if stored.version != lease.version {
            return Err(conflict(&lease.id, lease.version, stored.version));
        }
        // In place: the record keeps its box and its map entry.
        let (old_due, was_indexed) = (stored.claimable_at(), stored.state != LeaseState::Revoked);
        **stored = lease.clone();
        stored.version = lease.version + 1;
        let v = stored.version;
        let (new_due, indexed) = (stored.claimable_at(), stored.state != LeaseState::Revoked);
        if !(was_indexed && indexed && old_due == new_due) {
            if was_indexed {
                inner.due.remove(&(old_due, lease.id.clone()));
            }
            if indexed {
                inner.due.insert((new_due, lease.id.clone()));
            }
        }
        Ok(v)
    }

    async fn delete(&self, id: &LeaseId, version: u64) -> Result<()> {
        let mut inner = self.lock();
        let stored = inner.leases.get(id).ok_or_else(|| not_found(id))?;
        if stored.version != version {
            return Err(conflict(id, version, stored.version));
        }
        inner.remove(id);
        Ok(())
    }

    async fn list(&self, filter: &LeaseFilter) -> Result<Vec<LeaseRecord>> {
        let inner = self.lock();
        let start = match &filter.after {
            Some(a) => std::ops::Bound::Excluded(a.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(inner
            .leases
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, l)| l)
            .filter(|l| filter.matches(l))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|l| (**l).clone())
            .collect())
    }

    async fn count(&self, filter: &LeaseFilter) -> Result<u64> {
        let inner = self.lock();
        let unpaged = filter.after.is_none();
        if unpaged && filter.states.is_empty() {
            if let Some(secret) = &filter.secret {
                return Ok(inner.per_secret.get(secret.as_str()).copied().unwrap_or(0));
            }
            return Ok(inner.leases.len() as u64);
        }
        let f = LeaseFilter {
            after: None,
            limit: None,
            ..filter.clone()
        };
        Ok(inner.leases.values().filter(|l| f.matches(l)).count() as u64)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<LeaseRecord>> {
        let mut inner = self.lock();
        let due: Vec<LeaseId> = inner
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let owner: Arc<str> = owner.into();
        let until = add_duration(now, hold);
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let Some(mut lease) = inner.leases.get(&id).map(|l| (**l).clone()) else {
                continue;
            };
            debug_assert!(lease.is_due_at(now));
            lease.claim(owner.clone(), until);
            lease.version += 1;
            inner.put(lease.clone());
            out.push(lease);
        }
        Ok(out)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self.lock().due.first().map(|(at, _)| *at))
    }

    async fn installation_id(&self) -> Result<Arc<str>> {
        Ok(self.installation.clone())
    }

    fn coordination(&self) -> Option<Arc<dyn CoordinationStore>> {
        Some(self.coordination.clone())
    }
}
