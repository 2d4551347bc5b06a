//! One coordinator per user group: batches concurrent additions into few `ModifyUserGroup`
//! calls and keeps the group's user count for the quota check.
//!
//! A user group accepts one change at a time and stays `modifying` for a while after each.
//! Users that arrive meanwhile queue here; when the group is `active` again the next call adds
//! all of them (`UserIdsToAdd` with many ids). A driver task runs while there is work; every
//! waiter gets its own result through a channel.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_elasticache::Client;
use leasehold_aws::{error_code, map_sdk_error};
use leasehold_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

use crate::config::MAX_USERS_PER_GROUP;

/// How many `active` looks at the group a user that is neither listed nor pending gets before
/// its addition counts as failed.
const MAX_MISSES: u32 = 3;

/// How a queued user ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The group is `active` again and lists the user.
    Active,
    /// `ModifyUserGroup` accepted the user; the caller chose not to wait for `active`.
    Accepted,
}

struct Waiter {
    user_id: String,
    confirm: bool,
    tx: oneshot::Sender<Result<Joined>>,
}

#[derive(Default)]
struct Inner {
    queue: Vec<Waiter>,
    driving: bool,
    /// Members of the group (pending additions included) at `members_at`.
    members: HashSet<String>,
    members_at: Option<Instant>,
    /// Users that passed the quota check and are not yet known members.
    reserved: HashSet<String>,
    /// Reserved users that have not reached [`GroupCoordinator::submit`] yet (being created).
    arriving: HashSet<String>,
}

/// Timing of the coordinator's polls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// How long a batch waits, at most, for users that are still being created (reserved,
    /// not yet submitted) before `ModifyUserGroup` goes out without them. A group change
    /// costs a whole `modifying` window, so a short wait for concurrent issues pays off;
    /// an issue with nothing else in flight never waits.
    pub gather: Duration,
    pub members_fresh_for: Duration,
    pub max_temporary_failures: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            poll_initial: Duration::from_millis(200),
            poll_max: Duration::from_secs(2),
            gather: Duration::from_secs(2),
            members_fresh_for: Duration::from_secs(30),
            max_temporary_failures: 8,
        }
    }
}

pub(crate) struct GroupCoordinator {
    client: Client,
    group_id: String,
    pacing: Pacing,
    inner: Mutex<Inner>,
    /// Held while the member list is re-read, so that concurrent first issues share one
    /// `DescribeUserGroups` instead of making one each.
    refreshing: tokio::sync::Mutex<()>,
}

/// A quota slot held from before `CreateUser` until the user is a member (or has failed).
pub(crate) struct Slot {
    coordinator: Arc<GroupCoordinator>,
    user_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.coordinator.lock();
        inner.reserved.remove(&self.user_id);
        inner.arriving.remove(&self.user_id);
    }
}

/// A copy of an error for each waiter of a failed batch (`Error` is not `Clone`).
pub(crate) fn replicate(e: &Error) -> Error {
    let mut copy = Error::new(e.kind(), e.message().to_string());
    for (k, v) in e.context_pairs() {
        copy = copy.with_context(k, v);
    }
    if e.is_temporary() {
        copy.temporary()
    } else {
        copy.permanent()
    }
}

fn group_members(g: &aws_sdk_elasticache::types::UserGroup) -> HashSet<String> {
    let mut set: HashSet<String> = g
        .user_ids()
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if let Some(p) = g.pending_changes() {
        set.extend(p.user_ids_to_add().iter().map(|s| s.to_ascii_lowercase()));
        for r in p.user_ids_to_remove() {
            set.remove(&r.to_ascii_lowercase());
        }
    }
    set
}

impl GroupCoordinator {
    pub(crate) fn new(client: Client, group_id: String, pacing: Pacing) -> Arc<Self> {
        Arc::new(GroupCoordinator {
            client,
            group_id: group_id.to_ascii_lowercase(),
            pacing,
            inner: Mutex::new(Inner::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (plain sets); keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group as AWS describes it now.
    pub(crate) async fn describe(&self) -> Result<aws_sdk_elasticache::types::UserGroup> {
        let out = self
            .client
            .describe_user_groups()
            .user_group_id(&self.group_id)
            .send()
            .await
            .map_err(|e| {
                map_sdk_error("DescribeUserGroups", e).with_context("user_group", &self.group_id)
            })?;
        out.user_groups()
            .iter()
            .find(|g| {
                g.user_group_id()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&self.group_id))
            })
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("user group {:?} not found", self.group_id),
                )
            })
    }

    fn note_members(&self, members: HashSet<String>) {
        let mut inner = self.lock();
        inner.members = members;
        inner.members_at = Some(Instant::now());
    }

    /// Takes a quota slot for `user_id`, or fails with [`ErrorKind::QuotaExceeded`] when the
    /// group's members, pending additions and users being created reach 100.
    pub(crate) async fn reserve(self: &Arc<Self>, user_id: &str) -> Result<Slot> {
        let stale = || {
            let inner = self.lock();
            inner
                .members_at
                .is_none_or(|at| at.elapsed() > self.pacing.members_fresh_for)
                && !inner.driving
        };
        if stale() {
            let _one_at_a_time = self.refreshing.lock().await;
            // Whoever held the lock before may have just re-read the members.
            if stale() {
                let g = self.describe().await?;
                self.note_members(group_members(&g));
            }
        }
        let mut inner = self.lock();
        let mut count = inner.members.union(&inner.reserved).count();
        if !inner.members.contains(user_id) && !inner.reserved.contains(user_id) {
            count += 1;
        }
        if count > MAX_USERS_PER_GROUP {
            return Err(Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "user group {:?} would exceed {MAX_USERS_PER_GROUP} users (members, pending additions and users being created); revoke leases or use another group",
                    self.group_id
                ),
            )
            .with_context("user_group", &self.group_id));
        }
        inner.reserved.insert(user_id.to_string());
        inner.arriving.insert(user_id.to_string());
        Ok(Slot {
            coordinator: self.clone(),
            user_id: user_id.to_string(),
        })
    }

    /// Forgets a member (after `DeleteUser`, which removes a user from every group).
    pub(crate) fn forget(&self, user_id: &str) {
        self.lock().members.remove(user_id);
    }

    /// Queues `user_id` for the next `ModifyUserGroup`. With `confirm`, the result comes when
    /// the group is `active` again with the user in it; without, when the call is accepted.
    pub(crate) fn submit(
        self: &Arc<Self>,
        user_id: &str,
        confirm: bool,
    ) -> oneshot::Receiver<Result<Joined>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.arriving.remove(user_id);
        inner.queue.push(Waiter {
            user_id: user_id.to_string(),
            confirm,
            tx,
        });
        if !inner.driving {
            inner.driving = true;
            let me = self.clone();
            tokio::spawn(async move { me.drive().await });
        }
        rx
    }

    /// Removes `user_id` from the queue if no `ModifyUserGroup` has taken it yet. Returns
    /// whether it was removed (true: the user will never be added by this coordinator).
    pub(crate) fn withdraw(&self, user_id: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.queue.len();
        inner.queue.retain(|w| w.user_id != user_id);
        inner.queue.len() != before
    }

    fn delay(&self, round: u32) -> Duration {
        let factor = 1.25f64.powi(i32::try_from(round.min(20)).unwrap_or(20));
        self.pacing
            .poll_initial
            .mul_f64(factor)
            .min(self.pacing.poll_max)
    }

    fn fail_all(&self, waiters: Vec<Waiter>, e: &Error) {
        for w in waiters {
            let _ = w.tx.send(Err(replicate(e)));
        }
    }

    fn requeue_front(&self, batch: Vec<Waiter>) {
        let mut inner = self.lock();
        let rest = std::mem::take(&mut inner.queue);
        inner.queue = batch;
        inner.queue.extend(rest);
    }

    async fn drive(self: Arc<Self>) {
        let mut outstanding: Vec<(Waiter, u32)> = Vec::new();
        let mut poll_round = 0u32;
        let mut failures = 0u32;
        loop {
            {
                let mut inner = self.lock();
                inner.queue.retain(|w| !w.tx.is_closed());
                if outstanding.is_empty() && inner.queue.is_empty() {
                    inner.driving = false;
                    return;
                }
            }
            let group = match self.describe().await {
                Ok(g) => g,
                Err(e) if e.is_temporary() && failures < self.pacing.max_temporary_failures => {
                    failures += 1;
                    tokio::time::sleep(self.delay(failures)).await;
                    continue;
                }
                Err(e) => {
                    let queued = std::mem::take(&mut self.lock().queue);
                    let waiting = std::mem::take(&mut outstanding).into_iter().map(|(w, _)| w);
                    self.fail_all(waiting.collect(), &e);
                    self.fail_all(queued, &e);
                    failures = 0;
                    continue;
                }
            };
            self.note_members(group_members(&group));
            if group.status() != Some("active") {
                // Ours or someone else's change is in flight: new users keep queueing.
                tokio::time::sleep(self.delay(poll_round)).await;
                poll_round += 1;
                continue;
            }
            poll_round = 0;
            let listed: HashSet<String> = group
                .user_ids()
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect();
            // A Describe right after ModifyUserGroup may still show the old, `active` group:
            // a user that is neither listed nor pending gets a few more looks before it fails.
            let pending: HashSet<String> = group
                .pending_changes()
                .map(|p| {
                    p.user_ids_to_add()
                        .iter()
                        .map(|s| s.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            let mut still_waiting = Vec::new();
            for (w, misses) in outstanding.drain(..) {
                if listed.contains(&w.user_id) {
                    let _ = w.tx.send(Ok(Joined::Active));
                } else if pending.contains(&w.user_id) || misses < MAX_MISSES {
                    still_waiting.push((w, misses + 1));
                } else {
                    let _ = w.tx.send(Err(Error::new(
                        ErrorKind::Unexpected,
                        format!(
                            "user {:?} is not in user group {:?} after ModifyUserGroup finished (deleted meanwhile?)",
                            w.user_id, self.group_id
                        ),
                    )));
                }
            }
            if !still_waiting.is_empty() {
                outstanding = still_waiting;
                tokio::time::sleep(self.delay(0)).await;
                continue;
            }
            self.gather_arrivals().await;
            let batch: Vec<Waiter> = {
                let mut inner = self.lock();
                std::mem::take(&mut inner.queue)
                    .into_iter()
                    .filter(|w| !w.tx.is_closed())
                    .collect()
            };
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<String> = batch.iter().map(|w| w.user_id.clone()).collect();
            let sent = self
                .client
                .modify_user_group()
                .user_group_id(&self.group_id)
                .set_user_ids_to_add(Some(ids.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    failures = 0;
                    tracing::debug!(user_group = %self.group_id, users = ids.len(), "ModifyUserGroup accepted");
                    {
                        let mut inner = self.lock();
                        inner.members.extend(ids.iter().cloned());
                    }
                    for w in batch {
                        if w.confirm {
                            outstanding.push((w, 0));
                        } else {
                            let _ = w.tx.send(Ok(Joined::Accepted));
                        }
                    }
                    tokio::time::sleep(self.pacing.poll_initial).await;
                }
                Err(err) => {
                    let code = error_code(&err).map(str::to_string);
                    let e = map_sdk_error("ModifyUserGroup", err)
                        .with_context("user_group", &self.group_id);
                    match code.as_deref() {
                        Some("InvalidUserGroupState") => {
                            // Someone else changed the group meanwhile: wait and retry.
                            self.requeue_front(batch);
                            tokio::time::sleep(self.delay(0)).await;
                        }
                        Some("UserNotFound") => {
                            // A queued user vanished (deleted meanwhile): fail it, keep the rest.
                            let (gone, alive) = self.split_missing(batch).await;
                            self.fail_all(gone, &e);
                            self.requeue_front(alive);
                        }
                        Some("InvalidParameterValue")
                            if listed.len() + ids.len() > MAX_USERS_PER_GROUP =>
                        {
                            let q = Error::new(
                                ErrorKind::QuotaExceeded,
                                format!(
                                    "user group {:?} holds {} users; adding {} would exceed {MAX_USERS_PER_GROUP}",
                                    self.group_id,
                                    listed.len(),
                                    ids.len()
                                ),
                            );
                            self.fail_all(batch, &q);
                        }
                        _ if e.is_temporary() && failures < self.pacing.max_temporary_failures => {
                            failures += 1;
                            self.requeue_front(batch);
                            tokio::time::sleep(self.delay(failures)).await;
                        }
                        _ => {
                            failures = 0;
                            self.fail_all(batch, &e);
                        }
                    }
                }
            }
        }
    }

    /// Waits, up to [`Pacing::gather`], while users that passed the quota check are still on
    /// their way to [`submit`](Self::submit), so that concurrent issues share one change.
    async fn gather_arrivals(&self) {
        let deadline = tokio::time::Instant::now() + self.pacing.gather;
        loop {
            let (arriving, queued) = {
                let inner = self.lock();
                (inner.arriving.len(), inner.queue.len())
            };
            if arriving == 0 || queued == 0 || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Splits a batch into users that no longer exist and users that do.
    async fn split_missing(&self, batch: Vec<Waiter>) -> (Vec<Waiter>, Vec<Waiter>) {
        let mut gone = Vec::new();
        let mut alive = Vec::new();
        for w in batch {
            let exists = self
                .client
                .describe_users()
                .user_id(&w.user_id)
                .send()
                .await
                .map(|o| !o.users().is_empty());
            match exists {
                Ok(false) => gone.push(w),
                Err(e) if error_code(&e) == Some("UserNotFound") => gone.push(w),
                _ => alive.push(w),
            }
        }
        (gone, alive)
    }
}
