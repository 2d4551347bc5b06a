//! One membership queue for every AWS group that takes one change at a time: ElastiCache user
//! groups (`ModifyUserGroup`) and MemoryDB ACLs (`UpdateACL`).
//!
//! Such a group stays `modifying` for a while after each change and refuses a second one
//! meanwhile, so concurrent additions are batched: each issue records its user as an entry in
//! a [`CoordinationStore`] (the lease store's, shared by a fleet, or an in-process one), and
//! whichever instance holds the group's claim describes the group and adds every pending entry
//! in one call, then marks each entry with its outcome. The others wait for their entry. The
//! algorithm is written once here; each service implements the small [`GroupBackend`] trait,
//! in the way OpenDAL's `BatchDeleter` sits over `BatchDelete`.
//!
//! Safe under failure: entries are marked `applying` before the call, and every applier round
//! starts from a fresh `Describe`, so a holder that dies before, during or after its call loses
//! nothing and adds nothing twice — the next holder finds the users listed, pending, or missing
//! and acts on that. A whole-request refusal because one listed user is gone is split: the
//! missing users fail, the rest go again.
//!
//! Over 700 lines because the queue's buffering, claimed application and adoption of a dead
//! applier's batch share one state machine over the coordination store; split, each part
//! would need the others' invariants restated.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use leasehold_core::backoff::Backoff;
use leasehold_core::chrono::{DateTime, Utc};
use leasehold_core::{
    CoordinationStore, Error, ErrorKind, MemberEntry, MemberState, MemoryCoordination, Result,
};

/// A group as one `Describe` shows it. Member names are normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// `active` (a change would be accepted now) rather than `modifying` or anything else.
    pub active: bool,
    /// Members the group lists.
    pub listed: HashSet<String>,
    /// Members a change in flight adds.
    pub adding: HashSet<String>,
    /// Members a change in flight removes.
    pub removing: HashSet<String>,
}

impl GroupView {
    /// Members once the change in flight is done.
    pub fn members(&self) -> HashSet<String> {
        let mut set: HashSet<String> = self.listed.union(&self.adding).cloned().collect();
        for r in &self.removing {
            set.remove(r);
        }
        set
    }
}

/// Why a group refused an addition, as far as the queue must tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The group is not `active` (another change got in first): wait and send again.
    Busy,
    /// A listed user does not exist; the whole request was refused. Split and retry.
    MemberMissing,
    /// The group would exceed its member limit.
    OverLimit,
    /// A listed user is not ready yet (e.g. still `modifying`): retry like a temporary error.
    MemberBusy,
    /// Anything else: a temporary error is retried a few times, a permanent one fails the batch.
    Other,
}

/// What names a group, for the store and for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSpec {
    /// What the service calls such a group: `"user group"`, `"ACL"`.
    pub noun: &'static str,
    /// The error context key naming the group: `"user_group"`, `"acl"`.
    pub context_key: &'static str,
    /// The add operation: `"ModifyUserGroup"`, `"UpdateACL"`.
    pub operation: &'static str,
    /// The group's name.
    pub name: String,
    /// The name among all services, regions and accounts sharing a store.
    pub key: String,
    /// The most members the group may hold.
    pub member_limit: usize,
}

impl GroupSpec {
    /// A spec; `key` is `"{service}:{region}:{name}"`.
    pub fn new(
        (noun, context_key, operation): (&'static str, &'static str, &'static str),
        service: &str,
        region: Option<&str>,
        name: &str,
        member_limit: usize,
    ) -> Self {
        GroupSpec {
            noun,
            context_key,
            operation,
            name: name.to_string(),
            key: format!("{service}:{}:{name}", region.unwrap_or_default()),
            member_limit,
        }
    }
}

/// What the queue needs from a service: the group, described, and added to.
#[async_trait]
pub trait GroupBackend: Send + Sync + fmt::Debug + 'static {
    /// What names the group.
    fn spec(&self) -> &GroupSpec;
    /// The member name as the service compares it (ElastiCache user ids are case-insensitive).
    fn normalize(&self, member: &str) -> String {
        member.to_string()
    }
    /// The group now.
    async fn describe(&self) -> Result<GroupView>;
    /// Adds `members` in one call; on refusal, the error and how to read it.
    async fn add(&self, members: &[String]) -> std::result::Result<(), (Refusal, Error)>;
    /// Whether the user `member` still exists (to split a whole-request refusal).
    async fn member_exists(&self, member: &str) -> Result<bool>;
}

/// How a queued user ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The group is `active` again and lists the user.
    Active,
    /// The change carrying the user was accepted; the caller chose not to wait for `active`.
    Accepted,
}

/// Timing of the queue.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Pacing {
    /// First poll interval; polls grow by `growth` each round up to `poll_max`.
    pub poll: Duration,
    /// Longest poll interval.
    pub poll_max: Duration,
    /// Growth factor of the poll interval.
    pub growth: f64,
    /// How long a batch waits, at most, for users still being created (reserved, not yet
    /// pending) before the change goes out without them. A change costs a whole `modifying`
    /// window, so a short wait for concurrent issues pays off; with nothing else in flight
    /// nothing waits.
    pub gather: Duration,
    /// How long a described member count is trusted for the quota check.
    pub members_fresh_for: Duration,
    /// Temporary failures in a row before a batch fails.
    pub max_failures: u32,
    /// How long the group's claim lasts unless renewed: the time it takes the fleet to notice
    /// a dead applier.
    pub claim_hold: Duration,
    /// How long after its deadline an abandoned entry (its issuer died) is swept.
    pub abandon_after: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            poll: Duration::from_millis(200),
            poll_max: Duration::from_secs(2),
            growth: 1.25,
            gather: Duration::from_secs(2),
            members_fresh_for: Duration::from_secs(30),
            max_failures: 8,
            claim_hold: Duration::from_secs(15),
            abandon_after: Duration::from_secs(5),
        }
    }
}

impl Pacing {
    /// Sets the first poll interval.
    #[must_use]
    pub fn poll(mut self, poll: Duration, poll_max: Duration, growth: f64) -> Self {
        self.poll = poll;
        self.poll_max = poll_max;
        self.growth = growth;
        self
    }

    /// Sets [`claim_hold`](Self::claim_hold).
    #[must_use]
    pub fn claim_hold(mut self, hold: Duration) -> Self {
        self.claim_hold = hold;
        self
    }

    /// Sets [`gather`](Self::gather).
    #[must_use]
    pub fn gather(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    /// The schedule of polls: from `poll`, growing by `growth` up to `poll_max`, unjittered.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.poll, self.poll_max.max(self.poll)).factor(self.growth.max(1.0))
    }

    /// The poll interval of round `round`.
    pub fn delay(&self, round: u32) -> Duration {
        self.backoff().delay(round)
    }
}

/// A copy of an error for each waiter of a failed batch (`Error` is not `Clone`).
pub fn copy_error(e: &Error) -> Error {
    let mut copy = Error::new(e.kind(), e.message().to_string());
    for (k, v) in e.context_pairs() {
        copy = copy.with_context(k, v);
    }
    if e.is_temporary() {
        copy.temporary()
    } else if e.is_persistent() {
        copy.temporary().persist()
    } else {
        copy.permanent()
    }
}

/// How many `active` looks a user whose change was accepted, but that is neither listed nor
/// being added, gets before its addition counts as failed (a Describe right after the change
/// may still show the old group).
const MAX_MISSES: u32 = 3;

/// The applier's memory between rounds (lost with the holder; the next one starts afresh).
#[derive(Default)]
struct Applier {
    round: u32,
    failures: u32,
    misses: HashMap<String, u32>,
}

#[derive(Default)]
struct Cache {
    members: HashSet<String>,
    at: Option<Instant>,
}

/// The membership queue of one group.
pub struct MembershipQueue<B: GroupBackend> {
    backend: B,
    /// Where the fleet's entries live: set at construction, or adopted from the manager's store
    /// before first use; the in-process store when neither happened.
    store: std::sync::OnceLock<Arc<dyn CoordinationStore>>,
    key: String,
    owner: String,
    pacing: Pacing,
    cache: Mutex<Cache>,
    /// Held while the member list is re-read for the quota check, so concurrent first issues
    /// share one Describe.
    refreshing: tokio::sync::Mutex<()>,
    /// Held by the local task doing an applier round.
    applier: tokio::sync::Mutex<Applier>,
    /// Local issues waiting in [`join`](Self::join); the claim is released when none is left.
    waiting: Mutex<HashSet<String>>,
    /// Failures this instance recorded for its own entries, with their full context (the
    /// store keeps kind and message only).
    failures: Mutex<HashMap<String, Error>>,
}

impl<B: GroupBackend> fmt::Debug for MembershipQueue<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipQueue")
            .field("group", &self.key)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// A fresh name for this queue instance as a claim holder: the process id (so an operator can
/// tell which process holds a group) and random letters.
fn owner_name() -> String {
    format!(
        "pid{}-{}",
        std::process::id(),
        leasehold_core::new_installation_id()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data are plain counters and sets, consistent after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B: GroupBackend> MembershipQueue<B> {
    /// Uses `store` for the fleet's entries unless a store was given at construction or the
    /// queue has been used already; returns whether it was adopted. The manager hands its lease
    /// store's coordination to every provider it registers through this, so fleet-wide batching
    /// needs no wiring by the application.
    pub fn adopt(&self, store: Arc<dyn CoordinationStore>) -> bool {
        self.store.set(store).is_ok()
    }

    fn store(&self) -> &Arc<dyn CoordinationStore> {
        self.store
            .get_or_init(|| Arc::new(MemoryCoordination::new()) as Arc<dyn CoordinationStore>)
    }

    /// A queue over `backend`, coordinated through `store` (`None`: the store the manager
    /// hands over through [`adopt`](Self::adopt), else an in-process store of its own, so only
    /// this queue's issues are batched together).
    pub fn new(backend: B, store: Option<Arc<dyn CoordinationStore>>, pacing: Pacing) -> Self {
        let key = backend.spec().key.clone();
        MembershipQueue {
            backend,
            store: match store {
                Some(s) => std::sync::OnceLock::from(s),
                None => std::sync::OnceLock::new(),
            },
            key,
            owner: owner_name(),
            pacing,
            cache: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            applier: tokio::sync::Mutex::new(Applier::default()),
            waiting: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The service side.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.backend.spec().name
    }

    fn spec(&self) -> &GroupSpec {
        self.backend.spec()
    }

    /// The timing.
    pub fn pacing(&self) -> &Pacing {
        &self.pacing
    }

    /// The group as the service describes it now.
    pub async fn describe(&self) -> Result<GroupView> {
        let view = self.backend.describe().await?;
        self.note(&view);
        Ok(view)
    }

    fn note(&self, view: &GroupView) {
        let mut cache = lock(&self.cache);
        cache.members = view.members();
        cache.at = Some(Instant::now());
    }

    /// Forgets a member (after `DeleteUser`, which takes a user out of every group).
    pub fn forget(&self, member: &str) {
        let member = self.backend.normalize(member);
        lock(&self.cache).members.remove(&member);
    }

    fn group_error(&self, kind: ErrorKind, msg: String) -> Error {
        Error::new(kind, msg).with_context(self.spec().context_key, self.spec().name.as_str())
    }

    /// Counts `member` against the group's limit before its user is created, or fails with
    /// [`ErrorKind::QuotaExceeded`] when members, pending additions and users being created
    /// (by every instance sharing the store) would exceed it. The entry lasts until `deadline`.
    pub async fn reserve(&self, member: &str, deadline: DateTime<Utc>) -> Result<()> {
        let member = self.backend.normalize(member);
        let stale = || {
            lock(&self.cache)
                .at
                .is_none_or(|at| at.elapsed() > self.pacing.members_fresh_for)
        };
        if stale() {
            let _one_at_a_time = self.refreshing.lock().await;
            // Whoever held the lock before may have just re-read the members.
            if stale() {
                self.describe().await?;
            }
        }
        let now = Utc::now();
        let entries = self.store().members(&self.key).await?;
        let mut counted = lock(&self.cache).members.clone();
        counted.extend(
            entries
                .iter()
                .filter(|e| e.state.is_open() && !self.abandoned(e, now))
                .map(|e| e.member.clone()),
        );
        counted.insert(member.clone());
        let limit = self.spec().member_limit;
        if counted.len() > limit {
            return Err(self.group_error(
                ErrorKind::QuotaExceeded,
                format!(
                    "{} {:?} would exceed {limit} users (members, pending additions and users being created); revoke leases or use another {}",
                    self.spec().noun,
                    self.spec().name.as_str(),
                    self.spec().noun
                ),
            ));
        }
        let entry = MemberEntry::new(
            &self.key,
            &member,
            MemberState::Reserved,
            &self.owner,
            deadline,
        );
        self.store().put_member(&entry).await
    }

    /// Takes `member` out of the queue. Returns true when no change can have carried it (it
    /// was only reserved or pending, or unknown): the queue will never add it.
    pub async fn withdraw(&self, member: &str) -> Result<bool> {
        let member = self.backend.normalize(member);
        let old = self.store().withdraw(&self.key, &member).await?;
        Ok(!matches!(
            old,
            Some(MemberState::Applying | MemberState::Accepted | MemberState::Applied)
        ))
    }

    /// Queues the (now existing) user `member` for the next change and waits until `deadline`
    /// for the outcome: with `confirm`, until the group is `active` with it; without, until the
    /// change is accepted. Meanwhile this instance applies everyone's entries whenever it holds
    /// the group's claim. On [`ErrorKind::Timeout`] the entry is still queued; call
    /// [`withdraw`](Self::withdraw).
    pub async fn join(
        &self,
        member: &str,
        confirm: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Joined> {
        let member = self.backend.normalize(member);
        let wall_deadline = leasehold_core::store::add_duration(
            Utc::now(),
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        );
        let entry = MemberEntry::new(
            &self.key,
            &member,
            MemberState::Pending,
            &self.owner,
            wall_deadline,
        );
        self.store().put_member(&entry).await?;
        lock(&self.waiting).insert(member.clone());
        let result = self.wait_for(&member, confirm, deadline).await;
        let last = {
            let mut waiting = lock(&self.waiting);
            waiting.remove(&member);
            waiting.is_empty()
        };
        lock(&self.failures).remove(&member);
        if last {
            // Hand the group to another instance at once rather than after the hold.
            if let Err(e) = self.store().release_group(&self.key, &self.owner).await {
                tracing::debug!(group = %self.key, error = %e, "could not release the group claim");
            }
        }
        if result.is_ok() {
            let _ = self.store().withdraw(&self.key, &member).await;
        }
        result
    }

    async fn wait_for(
        &self,
        member: &str,
        confirm: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Joined> {
        loop {
            let entry = self.store().member(&self.key, member).await?;
            match entry.as_ref().map(|e| e.state) {
                Some(MemberState::Applied) => return Ok(Joined::Active),
                Some(MemberState::Accepted) if !confirm => return Ok(Joined::Accepted),
                Some(MemberState::Failed) => {
                    let e = entry
                        .map(|e| e.failure())
                        .unwrap_or_else(|| Error::unexpected("the group change failed"));
                    let _ = self.store().withdraw(&self.key, member).await;
                    // This instance's own failures keep their full context.
                    if let Some(full) = lock(&self.failures).remove(member) {
                        return Err(full);
                    }
                    return Err(e.with_context(self.spec().context_key, self.spec().name.as_str()));
                }
                None => {
                    return Err(self.group_error(
                        ErrorKind::Unexpected,
                        format!(
                            "the queued addition of {member:?} to {} {:?} was withdrawn",
                            self.spec().noun,
                            self.spec().name.as_str()
                        ),
                    ))
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.group_error(
                    ErrorKind::Timeout,
                    format!(
                        "{} {:?} did not take the change in time",
                        self.spec().noun,
                        self.spec().name.as_str()
                    ),
                ));
            }
            let pause = match self.applier.try_lock() {
                Ok(mut applier) => {
                    let held = self
                        .store()
                        .claim_group(&self.key, &self.owner, Utc::now(), self.pacing.claim_hold)
                        .await?;
                    if held {
                        self.round(&mut applier).await
                    } else {
                        *applier = Applier::default();
                        None
                    }
                }
                // Another local issue is applying for this instance.
                Err(_) => None,
            };
            let pause = pause
                .unwrap_or(self.pacing.poll)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if !pause.is_zero() {
                self.store().changed(&self.key, pause).await;
            }
        }
    }

    fn abandoned(&self, e: &MemberEntry, now: DateTime<Utc>) -> bool {
        leasehold_core::store::add_duration(e.deadline, self.pacing.abandon_after) < now
    }

    async fn fail(&self, members: &[String], from: &[MemberState], e: &Error) -> Result<()> {
        let failed = self
            .store()
            .set_state(&self.key, members, from, MemberState::Failed, Some(e))
            .await?;
        let waiting = lock(&self.waiting);
        let mut local = lock(&self.failures);
        // The queue retried the batch up to `max_failures` already: a temporary error that
        // ends it is persistent, so the waiting issue or revoke is not re-run at once.
        for m in failed.into_iter().filter(|m| waiting.contains(m)) {
            local.insert(m, copy_error(e).persist());
        }
        Ok(())
    }

    /// One applier round, under the group's claim. Returns how long to wait before the next.
    async fn round(&self, a: &mut Applier) -> Option<Duration> {
        match self.try_round(a).await {
            Ok(pause) => pause,
            Err(e) => {
                tracing::debug!(group = %self.key, error = %e, "membership round failed; retrying");
                a.failures += 1;
                Some(self.pacing.delay(a.failures))
            }
        }
    }

    async fn try_round(&self, a: &mut Applier) -> Result<Option<Duration>> {
        const OPEN: [MemberState; 3] = [
            MemberState::Pending,
            MemberState::Applying,
            MemberState::Accepted,
        ];
        let now = Utc::now();
        let mut entries = Vec::new();
        for e in self.store().members(&self.key).await? {
            if e.state.is_open() && self.abandoned(&e, now) {
                // Its issue gave up long ago (its process died); the lease's revoke removes the user.
                let _ = self.store().withdraw(&self.key, &e.member).await;
            } else {
                entries.push(e);
            }
        }
        let names = |states: &[MemberState]| -> Vec<String> {
            entries
                .iter()
                .filter(|e| states.contains(&e.state))
                .map(|e| e.member.clone())
                .collect()
        };
        let open = names(&OPEN);
        if open.is_empty() {
            return Ok(None);
        }
        let view = match self.describe().await {
            Ok(v) => v,
            Err(e) if e.is_temporary() && a.failures < self.pacing.max_failures => {
                a.failures += 1;
                return Ok(Some(self.pacing.delay(a.failures)));
            }
            Err(e) => {
                a.failures = 0;
                self.fail(&open, &OPEN, &e).await?;
                return Ok(Some(Duration::ZERO));
            }
        };
        if !view.active {
            // Ours or someone else's change is in flight: new users keep queueing.
            let pause = self.pacing.delay(a.round);
            a.round += 1;
            return Ok(Some(pause));
        }
        a.round = 0;

        // Reconcile what earlier changes (ours, or a dead holder's) did.
        let mut in_flight = false;
        let mut listed = Vec::new();
        let mut resend = Vec::new();
        for e in &entries {
            if !matches!(e.state, MemberState::Applying | MemberState::Accepted) {
                continue;
            }
            if view.listed.contains(&e.member) {
                listed.push(e.member.clone());
                a.misses.remove(&e.member);
            } else if view.adding.contains(&e.member) {
                in_flight = true;
            } else if e.state == MemberState::Applying {
                // Its change never went through (the holder died before or during its call).
                resend.push(e.member.clone());
            } else {
                let misses = a.misses.entry(e.member.clone()).or_default();
                *misses += 1;
                if *misses > MAX_MISSES {
                    a.misses.remove(&e.member);
                    let err = self.group_error(
                        ErrorKind::Unexpected,
                        format!(
                            "user {:?} is not in {} {:?} after {} finished (deleted or removed meanwhile)",
                            e.member,
                            self.spec().noun,
                            self.spec().name.as_str(),
                            self.spec().operation
                        ),
                    );
                    self.fail(
                        std::slice::from_ref(&e.member),
                        &[MemberState::Accepted],
                        &err,
                    )
                    .await?;
                } else {
                    in_flight = true;
                }
            }
        }
        // A pending user was never carried by a change (entries are marked `applying` before
        // the call), so only applying and accepted ones are looked for in the group.
        self.store()
            .set_state(&self.key, &listed, &OPEN, MemberState::Applied, None)
            .await?;
        self.store()
            .set_state(
                &self.key,
                &resend,
                &[MemberState::Applying],
                MemberState::Pending,
                None,
            )
            .await?;
        if in_flight {
            return Ok(Some(self.pacing.delay(0)));
        }

        self.gather().await?;
        let now = Utc::now();
        let mut batch: Vec<String> = self
            .store()
            .members(&self.key)
            .await?
            .into_iter()
            .filter(|e| e.state == MemberState::Pending && !self.abandoned(e, now))
            .map(|e| e.member)
            .collect();
        metrics::gauge!(leasehold_core::telemetry::MEMBERSHIP_QUEUE_DEPTH, "operation" => self.spec().operation)
            .set(batch.len() as f64);
        if batch.is_empty() {
            return Ok(Some(Duration::ZERO));
        }
        // A full group fails only the users that do not fit.
        let limit = self.spec().member_limit;
        let room = limit.saturating_sub(view.members().len());
        if batch.len() > room {
            let over = batch.split_off(room);
            let err = self.group_error(
                ErrorKind::QuotaExceeded,
                format!(
                    "{} {:?} holds {} users; {} more would exceed {limit}",
                    self.spec().noun,
                    self.spec().name.as_str(),
                    view.members().len(),
                    over.len()
                ),
            );
            self.fail(&over, &[MemberState::Pending], &err).await?;
            if batch.is_empty() {
                return Ok(Some(Duration::ZERO));
            }
        }
        // The claim may have run out while gathering: only the holder sends.
        if !self
            .store()
            .claim_group(&self.key, &self.owner, Utc::now(), self.pacing.claim_hold)
            .await?
        {
            return Ok(None);
        }
        let batch = self
            .store()
            .set_state(
                &self.key,
                &batch,
                &[MemberState::Pending],
                MemberState::Applying,
                None,
            )
            .await?;
        if batch.is_empty() {
            return Ok(Some(Duration::ZERO));
        }
        let outcome = self.backend.add(&batch).await;
        metrics::histogram!(leasehold_core::telemetry::MEMBERSHIP_BATCH_SIZE, "operation" => self.spec().operation)
            .record(batch.len() as f64);
        match outcome {
            Ok(()) => {
                a.failures = 0;
                tracing::debug!(group = %self.key, users = batch.len(), operation = self.spec().operation, "group change accepted");
                lock(&self.cache).members.extend(batch.iter().cloned());
                self.store()
                    .set_state(
                        &self.key,
                        &batch,
                        &[MemberState::Applying],
                        MemberState::Accepted,
                        None,
                    )
                    .await?;
                Ok(Some(self.pacing.poll))
            }
            Err((refusal, e)) => self.refused(a, batch, refusal, e, &view).await,
        }
    }

    async fn refused(
        &self,
        a: &mut Applier,
        batch: Vec<String>,
        refusal: Refusal,
        e: Error,
        view: &GroupView,
    ) -> Result<Option<Duration>> {
        let back = |members: Vec<String>| async move {
            self.store()
                .set_state(
                    &self.key,
                    &members,
                    &[MemberState::Applying],
                    MemberState::Pending,
                    None,
                )
                .await
        };
        let applying = [MemberState::Applying];
        match refusal {
            Refusal::Busy => {
                // Someone else changed the group meanwhile: wait for `active` and send again.
                back(batch).await?;
                Ok(Some(self.pacing.delay(0)))
            }
            Refusal::MemberMissing => {
                // The whole request was refused for a user that is gone: fail it, keep the rest.
                let mut gone = Vec::new();
                let mut alive = Vec::new();
                for m in batch {
                    match self.backend.member_exists(&m).await {
                        Ok(false) => gone.push(m),
                        _ => alive.push(m),
                    }
                }
                self.fail(&gone, &applying, &e).await?;
                if gone.is_empty() {
                    a.failures += 1;
                    if a.failures > self.pacing.max_failures {
                        a.failures = 0;
                        self.fail(&alive, &applying, &e).await?;
                        return Ok(Some(Duration::ZERO));
                    }
                    back(alive).await?;
                    return Ok(Some(self.pacing.delay(a.failures)));
                }
                back(alive).await?;
                Ok(Some(Duration::ZERO))
            }
            Refusal::OverLimit if view.listed.len() + batch.len() > self.spec().member_limit => {
                let limit = self.spec().member_limit;
                let q = self.group_error(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "{} {:?} holds {} users; adding {} would exceed {limit}",
                        self.spec().noun,
                        self.spec().name.as_str(),
                        view.listed.len(),
                        batch.len()
                    ),
                );
                self.fail(&batch, &applying, &q).await?;
                Ok(Some(Duration::ZERO))
            }
            _ if (e.is_temporary() || refusal == Refusal::MemberBusy)
                && a.failures < self.pacing.max_failures =>
            {
                a.failures += 1;
                back(batch).await?;
                Ok(Some(self.pacing.delay(a.failures)))
            }
            _ => {
                a.failures = 0;
                self.fail(&batch, &applying, &e).await?;
                Ok(Some(Duration::ZERO))
            }
        }
    }

    /// Waits, up to [`Pacing::gather`], while users that passed the quota check are still
    /// being created, so that concurrent issues (of any instance) share one change.
    async fn gather(&self) -> Result<()> {
        let until = tokio::time::Instant::now() + self.pacing.gather;
        loop {
            let now = Utc::now();
            let entries = self.store().members(&self.key).await?;
            let live = |s: MemberState| {
                entries
                    .iter()
                    .any(|e| e.state == s && !self.abandoned(e, now) && e.deadline > now)
            };
            if !live(MemberState::Reserved)
                || !live(MemberState::Pending)
                || tokio::time::Instant::now() >= until
            {
                return Ok(());
            }
            self.store()
                .changed(&self.key, Duration::from_millis(50))
                .await;
        }
    }
}
