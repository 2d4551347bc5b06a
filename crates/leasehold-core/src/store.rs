//! The [`LeaseStore`] trait: where lease records live.

use std::fmt;
use std::sync::Arc;
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

crate::setters! {
    LeaseFilter {
        /// Starts after `id`.
        after: Option<LeaseId>,
    }
}

/// A stored record that cannot be read back as a [`LeaseRecord`] (a row edited by hand, written
/// by a newer version, or damaged on disk).
///
/// Stores that can hold such rows keep them out of [`LeaseStore::claim_due`], [`LeaseStore::list`]
/// and [`LeaseStore::count`] so that one bad row never stops the others' expiry, and report them
/// through [`LeaseStore::damaged`] for an operator. The credential such a row names may still
/// exist: `principal` says which, when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedLease {
    /// The row's id as stored (it may not even parse as a [`LeaseId`]).
    pub id: String,
    /// The secret column, when it could be read.
    pub secret: Option<String>,
    /// The external credential's name, when it could be read.
    pub principal: Option<String>,
    /// Why the row cannot be read.
    pub reason: String,
}

impl DamagedLease {
    /// A damaged row with what could be read of it.
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        DamagedLease {
            id: id.into(),
            secret: None,
            principal: None,
            reason: reason.into(),
        }
    }

    /// Sets the secret.
    #[must_use]
    pub fn with_secret(mut self, secret: Option<String>) -> Self {
        self.secret = secret;
        self
    }

    /// Sets the principal.
    #[must_use]
    pub fn with_principal(mut self, principal: Option<String>) -> Self {
        self.principal = principal;
        self
    }
}

/// Pages through every lease a filter matches, in id order, `page_size` at a time: each page
/// is one [`LeaseStore::list`] call starting after the last id of the page before. The scan
/// ends at the first empty page (not at a short one: a store may return fewer than asked).
///
/// ```
/// # async fn f(store: &dyn leasehold_core::LeaseStore) -> leasehold_core::Result<()> {
/// use leasehold_core::store::{LeaseFilter, LeasePages};
///
/// let mut pages = LeasePages::new(store, LeaseFilter::secret("orders-cache"), 500);
/// while let Some(page) = pages.next_page().await? {
///     for lease in page {
///         println!("{}", lease.id);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeasePages<'a, S: ?Sized> {
    store: &'a S,
    filter: LeaseFilter,
    done: bool,
}

impl<'a, S: LeaseStore + ?Sized> LeasePages<'a, S> {
    /// Pages through the leases `filter` matches (its `after` is where the scan starts, its
    /// `limit` is replaced by `page_size`).
    pub fn new(store: &'a S, filter: LeaseFilter, page_size: usize) -> Self {
        LeasePages {
            store,
            filter: filter.limit(page_size.max(1)),
            done: false,
        }
    }

    /// The next page, or `None` once the scan is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<LeaseRecord>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.list(&self.filter).await?;
        match page.last() {
            Some(last) => {
                self.filter.after = Some(last.id.clone());
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Every remaining lease, read page by page.
    pub async fn collect_all(mut self) -> Result<Vec<LeaseRecord>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// What [`LeaseStore::claim_for_revoke`] found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RevokeClaim {
    /// The record is claimed for the caller: the stored record, with its new version.
    Claimed(LeaseRecord),
    /// Someone is at work on the record (being issued, being revoked, or claimed by the caller
    /// itself): the record as stored, unchanged.
    Busy(LeaseRecord),
    /// There is no record with this id.
    Gone,
}

/// Length of a generated installation id.
pub const INSTALLATION_ID_LEN: usize = 8;

/// A fresh installation id: [`INSTALLATION_ID_LEN`] lowercase letters and digits, starting with a
/// letter, so it fits every backend's user-name rules.
pub fn new_installation_id() -> String {
    loop {
        let id = crate::template::random_lowercase(INSTALLATION_ID_LEN);
        if id.starts_with(|c: char| c.is_ascii_lowercase()) {
            return id;
        }
    }
}

/// Checks an installation id: 1 to 16 lowercase ASCII letters and digits.
pub fn check_installation_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 16
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(crate::Error::invalid_config(
            "installation id: must be 1 to 16 lowercase ASCII letters and digits",
        ));
    }
    Ok(())
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
/// - `installation_id` returns the same id for the life of the store's data, in every process
///   that opens it: it is created with the store and never changes. Two stores never share one.
/// - A row that cannot be decoded never makes `claim_due`, `list` or `count` fail: it is
///   skipped (and its claim released), reported by `damaged`, and removed only by
///   `remove_damaged`. `get` of such a row is an [`ErrorKind::Store`](crate::ErrorKind::Store)
///   error.
/// - `release_claims(owner, now)` ends every claim `owner` holds at `now`, making each such
///   record due at once (`due_at = min(due_at, now)`), and returns how many it released.
/// - `insert_within(lease, limit)` inserts as `insert` does only while the lease's secret has
///   fewer than `limit` records (as `count` of that secret counts them), and returns whether it
///   did; nothing is written when the secret is full.
/// - `claim_for_revoke(id, owner, now, until)` claims one record for revocation in one step:
///   unless its claim is live at `now` and the record is `Pending`, `Revoking`, or claimed by
///   `owner` (someone is at work on it), it sets `state = Revoking` (an `Irrevocable` record
///   stays `Irrevocable`), `claimed_by = owner`, `claim_until = until`, `due_at = now`, bumps
///   the version and returns [`RevokeClaim::Claimed`] with the stored record. Otherwise it
///   changes nothing and returns [`RevokeClaim::Busy`] with the record, or
///   [`RevokeClaim::Gone`] when there is no record.
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

    /// This store's installation id: stable, created with the store, unique to it. Everything a
    /// manager on this store creates in a backend carries it, so that reconcile removes only
    /// this installation's users.
    async fn installation_id(&self) -> Result<Arc<str>>;

    /// Ends every claim `owner` holds (a restarted instance with a stable id taking back its
    /// own work); the records become due at once. Returns how many were released.
    ///
    /// The default pages through [`list`](Self::list) and updates each record; SQL stores do it
    /// in one statement.
    async fn release_claims(&self, owner: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut released = 0;
        let mut pages = LeasePages::new(self, LeaseFilter::all(), 1000);
        while let Some(page) = pages.next_page().await? {
            for mut lease in page {
                if lease.state == LeaseState::Revoked
                    || lease.claimed_by.as_deref() != Some(owner)
                    || !lease.is_claimed_at(now)
                {
                    continue;
                }
                lease.release_claim_due_by(now);
                match self.update(&lease).await {
                    Ok(_) => released += 1,
                    Err(e) if e.kind() == crate::ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(released)
    }

    /// Inserts `lease` unless its secret already has `limit` records or more; `false` when it
    /// did not. The issue path's quota check and write-ahead record in one call.
    ///
    /// The default counts, then inserts: two round trips, and another writer may insert between
    /// them. Stores that can check and insert in one statement (the SQL stores, `MemoryStore`)
    /// override it.
    async fn insert_within(&self, lease: &LeaseRecord, limit: u64) -> Result<bool> {
        if self.count(&LeaseFilter::secret(&*lease.secret)).await? >= limit {
            return Ok(false);
        }
        self.insert(lease).await?;
        Ok(true)
    }

    /// Claims the record `id` for revocation by `owner` until `until`, unless someone is at
    /// work on it (see the `# Behavior` section of this trait).
    ///
    /// The default reads the record, then updates it with a compare-and-set: a record changed
    /// in between is [`ErrorKind::Conflict`](crate::ErrorKind::Conflict). Stores that can
    /// claim in one statement override it.
    async fn claim_for_revoke(
        &self,
        id: &LeaseId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<RevokeClaim> {
        let Some(mut lease) = self.get(id).await? else {
            return Ok(RevokeClaim::Gone);
        };
        if !lease.revocable_by(owner, now) {
            return Ok(RevokeClaim::Busy(lease));
        }
        lease.claim_for_revoke(owner.into(), now, until);
        lease.version = self.update(&lease).await?;
        Ok(RevokeClaim::Claimed(lease))
    }

    /// Rows that cannot be decoded, at most `limit`, ordered by id. Stores whose records are
    /// always typed (like [`MemoryStore`](crate::MemoryStore)) have none.
    async fn damaged(&self, limit: usize) -> Result<Vec<DamagedLease>> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// Deletes the damaged row `id` (an operator's `revoke --force`); `false` when no damaged
    /// row has that id.
    async fn remove_damaged(&self, id: &str) -> Result<bool> {
        let _ = id;
        Ok(false)
    }

    /// Where instances sharing this store coordinate group-membership changes (see
    /// [`CoordinationStore`](crate::CoordinationStore)). `None` (the default): the store cannot,
    /// and each process batches only its own changes.
    fn coordination(&self) -> Option<Arc<dyn crate::CoordinationStore>> {
        None
    }
}

/// What [`LeaseManager::builder`](crate::LeaseManager::builder) accepts as its store: a store
/// (`MemoryStore::new()`), an `Arc` of one, or an `Arc<dyn LeaseStore>`.
pub trait IntoLeaseStore {
    /// The store, shared.
    fn into_lease_store(self) -> Arc<dyn LeaseStore>;
}

impl<T: LeaseStore> IntoLeaseStore for T {
    fn into_lease_store(self) -> Arc<dyn LeaseStore> {
        Arc::new(self)
    }
}

impl<T: LeaseStore> IntoLeaseStore for Arc<T> {
    fn into_lease_store(self) -> Arc<dyn LeaseStore> {
        self
    }
}

impl IntoLeaseStore for Arc<dyn LeaseStore> {
    fn into_lease_store(self) -> Arc<dyn LeaseStore> {
        self
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
pub fn add_duration(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
