//! One queue per ACL: concurrent issues are batched into few `UpdateACL` calls.
//!
//! A MemoryDB ACL takes one change at a time and stays `modifying` for a while after each;
//! a second `UpdateACL` meanwhile fails with `InvalidACLStateFault`. Users that arrive while a
//! change is in flight wait here, and when the ACL is `active` again one call adds all of them
//! (`UserNamesToAdd` with many names). A driver task runs while there is work; each waiter
//! gets its own result through a channel. The queue also keeps the ACL's member count, so an
//! issue that would take the ACL past [`MAX_USERS_PER_ACL`] is refused before `CreateUser`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_sdk_memorydb::types::Acl;
use aws_sdk_memorydb::Client;
use leasehold_aws::{error_code, map_sdk_error};
use leasehold_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

use crate::config::MAX_USERS_PER_ACL;

/// How a queued user ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The ACL is `active` again and lists the user.
    Active,
    /// `UpdateACL` accepted the user; the caller chose not to wait for `active`.
    Accepted,
}

struct Waiter {
    user: String,
    confirm: bool,
    tx: oneshot::Sender<Result<Joined>>,
}

#[derive(Default)]
struct Inner {
    queue: Vec<Waiter>,
    driving: bool,
    /// Members (pending additions included) as last seen, and when.
    members: HashSet<String>,
    members_at: Option<Instant>,
    /// Users that passed the quota check and are not yet known members.
    reserved: HashSet<String>,
}

/// Poll timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    pub poll: Duration,
    pub poll_max: Duration,
    /// How long a member count is trusted for the quota check.
    pub members_fresh_for: Duration,
    /// Temporary failures in a row before a batch fails.
    pub max_failures: u32,
}

impl Pacing {
    pub(crate) fn from_poll(poll: Duration) -> Self {
        Pacing {
            poll,
            poll_max: poll * 8,
            members_fresh_for: Duration::from_secs(30),
            max_failures: 8,
        }
    }

    pub(crate) fn delay(&self, round: u32) -> Duration {
        let factor = 1.5f64.powi(i32::try_from(round.min(16)).unwrap_or(16));
        self.poll.mul_f64(factor).min(self.poll_max)
    }
}

pub(crate) struct AclQueue {
    client: Client,
    acl: String,
    pacing: Pacing,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AclQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclQueue")
            .field("acl", &self.acl)
            .finish_non_exhaustive()
    }
}

/// A quota place held from before `CreateUser` until the user is a member or has failed.
pub(crate) struct Reservation {
    queue: Arc<AclQueue>,
    user: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.queue.lock().reserved.remove(&self.user);
    }
}

/// A copy of an error for every waiter of a failed batch (`Error` is not `Clone`).
pub(crate) fn copy_error(e: &Error) -> Error {
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

fn members_of(acl: &Acl) -> HashSet<String> {
    let mut set: HashSet<String> = acl.user_names().iter().cloned().collect();
    if let Some(p) = acl.pending_changes() {
        set.extend(p.user_names_to_add().iter().cloned());
        for r in p.user_names_to_remove() {
            set.remove(r);
        }
    }
    set
}

impl AclQueue {
    pub(crate) fn new(client: Client, acl: String, pacing: Pacing) -> Arc<Self> {
        Arc::new(AclQueue {
            client,
            acl,
            pacing,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub(crate) fn acl(&self) -> &str {
        &self.acl
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data are plain sets and a queue, consistent after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ACL as MemoryDB describes it now.
    pub(crate) async fn describe(&self) -> Result<Acl> {
        let out = self
            .client
            .describe_acls()
            .acl_name(&self.acl)
            .send()
            .await
            .map_err(|e| map_sdk_error("DescribeACLs", e).with_context("acl", &self.acl))?;
        out.acls()
            .iter()
            .find(|a| a.name() == Some(self.acl.as_str()))
            .cloned()
            .ok_or_else(|| {
                Error::new(ErrorKind::NotFound, format!("ACL {:?} not found", self.acl))
                    .with_context("acl", &self.acl)
            })
    }

    fn note_members(&self, members: HashSet<String>) {
        let mut inner = self.lock();
        inner.members = members;
        inner.members_at = Some(Instant::now());
    }

    /// Takes a place for `user`, or fails with [`ErrorKind::QuotaExceeded`] when members,
    /// pending additions and users being issued would exceed [`MAX_USERS_PER_ACL`].
    pub(crate) async fn reserve(self: &Arc<Self>, user: &str) -> Result<Reservation> {
        let stale = {
            let inner = self.lock();
            !inner.driving
                && inner
                    .members_at
                    .is_none_or(|at| at.elapsed() > self.pacing.members_fresh_for)
        };
        if stale {
            let acl = self.describe().await?;
            self.note_members(members_of(&acl));
        }
        let mut inner = self.lock();
        let mut count = inner.members.union(&inner.reserved).count();
        if !inner.members.contains(user) && !inner.reserved.contains(user) {
            count += 1;
        }
        if count > MAX_USERS_PER_ACL {
            return Err(Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "ACL {:?} would hold more than {MAX_USERS_PER_ACL} users (members, pending additions and users being issued); revoke leases or use another ACL",
                    self.acl
                ),
            )
            .with_context("acl", &self.acl));
        }
        inner.reserved.insert(user.to_string());
        Ok(Reservation {
            queue: self.clone(),
            user: user.to_string(),
        })
    }

    /// Forgets a member (after `DeleteUser`, which takes a user out of every ACL).
    pub(crate) fn forget(&self, user: &str) {
        self.lock().members.remove(user);
    }

    /// Queues `user` for the next `UpdateACL`. With `confirm` the answer comes when the ACL is
    /// `active` again and lists the user; without, when `UpdateACL` accepted it.
    pub(crate) fn submit(
        self: &Arc<Self>,
        user: &str,
        confirm: bool,
    ) -> oneshot::Receiver<Result<Joined>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.queue.push(Waiter {
            user: user.to_string(),
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

    /// Takes `user` out of the queue if no `UpdateACL` has carried it yet. True: this queue
    /// will never add the user.
    pub(crate) fn withdraw(&self, user: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.queue.len();
        inner.queue.retain(|w| w.user != user);
        inner.queue.len() != before
    }

    fn fail_all(waiters: Vec<Waiter>, e: &Error) {
        for w in waiters {
            let _ = w.tx.send(Err(copy_error(e)));
        }
    }

    fn requeue_front(&self, batch: Vec<Waiter>) {
        let mut inner = self.lock();
        let rest = std::mem::take(&mut inner.queue);
        inner.queue = batch;
        inner.queue.extend(rest);
    }

    async fn drive(self: Arc<Self>) {
        // Waiters whose users an accepted UpdateACL carries, waiting for `active`.
        let mut outstanding: Vec<Waiter> = Vec::new();
        let mut round = 0u32;
        let mut failures = 0u32;
        loop {
            {
                let mut inner = self.lock();
                inner.queue.retain(|w| !w.tx.is_closed());
                outstanding.retain(|w| !w.tx.is_closed());
                if outstanding.is_empty() && inner.queue.is_empty() {
                    inner.driving = false;
                    return;
                }
            }
            let acl = match self.describe().await {
                Ok(a) => a,
                Err(e) if e.is_temporary() && failures < self.pacing.max_failures => {
                    failures += 1;
                    tokio::time::sleep(self.pacing.delay(failures)).await;
                    continue;
                }
                Err(e) => {
                    failures = 0;
                    let queued = std::mem::take(&mut self.lock().queue);
                    Self::fail_all(std::mem::take(&mut outstanding), &e);
                    Self::fail_all(queued, &e);
                    continue;
                }
            };
            self.note_members(members_of(&acl));
            if acl.status() != Some("active") {
                // Ours or someone else's change is in flight; new users keep queueing.
                tokio::time::sleep(self.pacing.delay(round)).await;
                round += 1;
                continue;
            }
            round = 0;
            let listed: HashSet<&str> = acl.user_names().iter().map(String::as_str).collect();
            for w in outstanding.drain(..) {
                let result = if listed.contains(w.user.as_str()) {
                    Ok(Joined::Active)
                } else {
                    // Deleted meanwhile (a revoke), or removed by someone else.
                    Err(Error::new(
                        ErrorKind::Unexpected,
                        format!(
                            "user {:?} is not in ACL {:?} after UpdateACL finished (deleted or removed meanwhile)",
                            w.user, self.acl
                        ),
                    )
                    .with_context("acl", &self.acl))
                };
                let _ = w.tx.send(result);
            }
            let batch: Vec<Waiter> = std::mem::take(&mut self.lock().queue)
                .into_iter()
                .filter(|w| !w.tx.is_closed())
                .collect();
            if batch.is_empty() {
                continue;
            }
            let mut names: Vec<String> = batch.iter().map(|w| w.user.clone()).collect();
            names.sort();
            names.dedup();
            let sent = self
                .client
                .update_acl()
                .acl_name(&self.acl)
                .set_user_names_to_add(Some(names.clone()))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    failures = 0;
                    tracing::debug!(acl = %self.acl, users = names.len(), "UpdateACL accepted");
                    self.lock().members.extend(names.iter().cloned());
                    for w in batch {
                        if w.confirm {
                            outstanding.push(w);
                        } else {
                            let _ = w.tx.send(Ok(Joined::Accepted));
                        }
                    }
                    tokio::time::sleep(self.pacing.poll).await;
                }
                Err(err) => {
                    let code = error_code(&err).map(str::to_string);
                    let e = map_sdk_error("UpdateACL", err).with_context("acl", &self.acl);
                    match code.as_deref() {
                        Some("InvalidACLStateFault") => {
                            // Another change got in first: wait for `active` and try again.
                            self.requeue_front(batch);
                        }
                        Some("UserNotFoundFault") => {
                            // A queued user is gone (revoked meanwhile): fail it, keep the rest.
                            let (gone, alive) = self.split_missing(batch).await;
                            if gone.is_empty() {
                                failures += 1;
                                if failures > self.pacing.max_failures {
                                    failures = 0;
                                    Self::fail_all(alive, &e);
                                    continue;
                                }
                                tokio::time::sleep(self.pacing.delay(failures)).await;
                            }
                            Self::fail_all(gone, &e);
                            self.requeue_front(alive);
                        }
                        Some("InvalidParameterValueException")
                            if listed.len() + names.len() > MAX_USERS_PER_ACL =>
                        {
                            let q = Error::new(
                                ErrorKind::QuotaExceeded,
                                format!(
                                    "ACL {:?} holds {} users; adding {} would exceed {MAX_USERS_PER_ACL}",
                                    self.acl,
                                    listed.len(),
                                    names.len()
                                ),
                            )
                            .with_context("acl", &self.acl);
                            Self::fail_all(batch, &q);
                        }
                        _ if (e.is_temporary()
                            || code.as_deref() == Some("InvalidUserStateFault"))
                            && failures < self.pacing.max_failures =>
                        {
                            failures += 1;
                            self.requeue_front(batch);
                            tokio::time::sleep(self.pacing.delay(failures)).await;
                        }
                        _ => {
                            failures = 0;
                            Self::fail_all(batch, &e);
                        }
                    }
                }
            }
        }
    }

    /// Splits a batch into users that no longer exist and users that do.
    async fn split_missing(&self, batch: Vec<Waiter>) -> (Vec<Waiter>, Vec<Waiter>) {
        let mut gone = Vec::new();
        let mut alive = Vec::new();
        for w in batch {
            let found = self.client.describe_users().user_name(&w.user).send().await;
            match found {
                Ok(out) if out.users().is_empty() => gone.push(w),
                Err(e) if error_code(&e) == Some("UserNotFoundFault") => gone.push(w),
                _ => alive.push(w),
            }
        }
        (gone, alive)
    }
}
