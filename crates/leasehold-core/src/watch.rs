//! [`CredentialWatch`]: a credential that keeps itself fresh, for application code.
//!
//! `manager.watch(secret, request, options)` issues a lease and then, in the background,
//! renews it before it expires; when renewal is capped by the max TTL or refused, it issues a
//! **new** credential ahead of time, publishes it, and revokes the old one after a grace
//! period so in-flight work can finish.
//!
//! # Ending a watch
//!
//! Everything a watch issued is revoked when it ends, which happens on the first of:
//! [`CredentialWatch::close`]; [`LeaseManager::shutdown`] (which ends every watch of that
//! manager, bounded by the manager's `revoke_timeout`, before it returns); or the moment the
//! watch **and every receiver from [`CredentialWatch::subscribe`]** are dropped — a receiver
//! keeps its watch alive, so `manager.watch(..).await?.subscribe()` is a working pattern.
//! Revocation after a drop runs on the runtime in the background; a process that returns from
//! `main` right after a drop may not live to finish it, so end `main` with
//! `manager.shutdown().await` (or [`LeaseManager::shutdown_on_signal`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, Jitter};
use crate::error::{Error, ErrorKind, Result};
use crate::manager::{IssueRequest, IssuedLease, LeaseManager};
use crate::model::LeaseId;

/// How a [`CredentialWatch`] refreshes its credential.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Refresh when this fraction of the remaining lifetime has passed (default 2/3: renew with
    /// a third of the TTL left).
    pub refresh_at: f64,
    /// Random spread of the refresh time, as a fraction of the wait (default 0.1), so that
    /// replicas do not renew in lock-step.
    pub jitter: f64,
    /// How long a replaced credential keeps working before it is revoked (default 30 s; never
    /// past its own expiry).
    pub grace: Duration,
    /// First delay after a failed renew or re-issue (default 1 s, doubling, capped at a
    /// quarter of the remaining lifetime).
    pub retry_delay: Duration,
    /// Rotate no later than this long before the current lease's max expiry (default: the
    /// grace), so a replaced credential gets its whole grace. A secret whose max TTL is not
    /// longer than this is refused by [`LeaseManager::watch`] with a clear error instead of
    /// rotating with a grace silently cut short.
    pub rotate_before: Option<Duration>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            refresh_at: 2.0 / 3.0,
            jitter: 0.1,
            grace: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            rotate_before: None,
        }
    }
}

impl WatchOptions {
    /// Sets the rotation lead before the max expiry (see [`rotate_before`](Self::rotate_before)).
    #[must_use]
    pub fn rotate_before(mut self, lead: Duration) -> Self {
        self.rotate_before = Some(lead);
        self
    }

    /// The rotation lead in effect: `rotate_before`, or the grace.
    fn lead(&self) -> Duration {
        self.rotate_before.unwrap_or(self.grace)
    }

    fn validate(&self) -> Result<()> {
        if !(self.refresh_at > 0.0 && self.refresh_at < 1.0) {
            return Err(Error::invalid_config(
                "watch refresh_at: must be between 0 and 1",
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::invalid_config("watch jitter: must be in [0, 1)"));
        }
        if self.retry_delay.is_zero() {
            return Err(Error::invalid_config("watch retry_delay: must be positive"));
        }
        Ok(())
    }
}

crate::setters! {
    WatchOptions {
        /// Sets the grace period of replaced credentials.
        grace: Duration,
        /// Sets the refresh fraction (0 < f < 1).
        refresh_at: f64,
        /// Sets the jitter fraction (0 <= j < 1).
        jitter: f64,
        /// Sets the first retry delay.
        retry_delay: Duration,
    }
}

/// What happened to a watched credential.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The lease was renewed until `expires_at`; the credential is unchanged.
    Renewed {
        /// The lease.
        lease_id: LeaseId,
        /// The new expiry.
        expires_at: DateTime<Utc>,
    },
    /// A new credential replaced the old one (published on the watch channel).
    Rotated {
        /// The old lease, revoked after the grace period.
        old: LeaseId,
        /// The new lease.
        new: LeaseId,
    },
    /// A replaced credential was revoked after its grace period.
    RetiredRevoked {
        /// The old lease.
        lease_id: LeaseId,
    },
    /// A renew or re-issue failed; it is retried.
    RefreshFailed {
        /// The lease being refreshed.
        lease_id: LeaseId,
        /// The error kind.
        kind: ErrorKind,
        /// The error message (no secret material).
        message: String,
        /// When the next try happens.
        retry_at: DateTime<Utc>,
    },
    /// A replaced credential got less than the configured grace, because it expired sooner
    /// (a rotation that had to be retried, or an operator's revoke).
    GraceShortened {
        /// The replaced lease.
        lease_id: LeaseId,
        /// The grace it got.
        grace: Duration,
    },
    /// The current credential will expire before a replacement exists.
    ExpiringWithoutReplacement {
        /// The lease.
        lease_id: LeaseId,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
}

/// A credential kept fresh in the background. Cheap to read; see the module docs.
///
/// # Examples
///
/// ```no_run
/// # async fn f(manager: leasehold_core::LeaseManager) -> leasehold_core::Result<()> {
/// use leasehold_core::{IssueRequest, WatchOptions};
///
/// let watch = manager.watch("orders-cache", IssueRequest::new(), WatchOptions::default()).await?;
/// let creds = watch.current();              // always the freshest credential
/// let mut changes = watch.subscribe();      // rebuild a pool when it changes
/// # let _ = (creds, &mut changes);
/// watch.close().await?;                     // revokes everything it issued
/// # Ok(()) }
/// ```
pub struct CredentialWatch {
    rx: watch::Receiver<Arc<IssuedLease>>,
    events: broadcast::Sender<WatchEvent>,
    id: u64,
    manager: LeaseManager,
}

/// The manager's running watches: what [`LeaseManager::shutdown`] ends.
#[derive(Default)]
pub(crate) struct WatchRegistry {
    next: u64,
    closed: bool,
    live: HashMap<u64, WatchSlot>,
}

struct WatchSlot {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl WatchRegistry {
    /// Stops taking new watches and hands out every running one's stop signal and task.
    fn close_all(&mut self) -> Vec<WatchSlot> {
        self.closed = true;
        self.live.drain().map(|(_, slot)| slot).collect()
    }
}

/// Ends every running watch of the manager, revoking what each issued, within `bound`.
pub(crate) async fn end_all(registry: &std::sync::Mutex<WatchRegistry>, bound: Duration) {
    let slots = registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .close_all();
    if slots.is_empty() {
        return;
    }
    let tasks: Vec<_> = slots
        .into_iter()
        .map(|slot| {
            let _ = slot.stop.send(());
            slot.task
        })
        .collect();
    let n = tasks.len();
    match tokio::time::timeout(bound, futures::future::join_all(tasks)).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "a watch could not revoke all it issued at shutdown; the leases stay in the store for the worker")
                    }
                    Err(_) => tracing::warn!("a watch task failed at shutdown"),
                }
            }
        }
        Err(_) => {
            tracing::warn!(watches = n, "watches did not finish revoking within the shutdown bound; their leases stay in the store")
        }
    }
}

impl fmt::Debug for CredentialWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialWatch")
            .field("current", &self.rx.borrow().lease_id)
            .finish_non_exhaustive()
    }
}

impl CredentialWatch {
    /// The current credential.
    pub fn current(&self) -> Arc<IssuedLease> {
        self.rx.borrow().clone()
    }

    /// A receiver that is notified whenever the credential is replaced. It keeps the watch
    /// running: the watch ends (and revokes) only when it and every such receiver are gone,
    /// or on [`close`](Self::close) / [`LeaseManager::shutdown`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<IssuedLease>> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// Renewals, rotations, failures and warnings, as they happen.
    pub fn events(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    /// Stops refreshing and revokes every lease this watch issued, even while receivers from
    /// [`subscribe`](Self::subscribe) are alive (they keep the last credential, revoked).
    /// Returns the first revocation error, if any (the manager keeps retrying those leases).
    pub async fn close(self) -> Result<()> {
        let slot = self
            .manager
            .inner()
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .remove(&self.id);
        // None: the manager's shutdown already ended it.
        let Some(slot) = slot else { return Ok(()) };
        let _ = slot.stop.send(());
        slot.task
            .await
            .map_err(|_| Error::unexpected("the watch task panicked"))?
    }
}

struct Retired {
    lease_id: LeaseId,
    revoke_at: DateTime<Utc>,
}

/// The latest moment to rotate `lease`: its max expiry minus the rotation lead and a tenth
/// of it again, for a timer that fires late and the issue of the replacement.
fn rotate_deadline(lease: &IssuedLease, options: &WatchOptions) -> DateTime<Utc> {
    let lead = options.lead();
    lease.max_expires_at - chrono::Duration::from_std(lead + lead / 10).unwrap_or_default()
}

fn to_std(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

impl LeaseManager {
    /// Issues a lease of `secret` and keeps it fresh in the background; see [`CredentialWatch`].
    pub async fn watch(
        &self,
        secret: &str,
        request: IssueRequest,
        options: WatchOptions,
    ) -> Result<CredentialWatch> {
        options.validate()?;
        let shut = || {
            Error::new(
                ErrorKind::Shutdown,
                "the manager is shut down: it starts no new watch",
            )
        };
        if self
            .inner()
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
        {
            return Err(shut());
        }
        let first = self.issue(secret, request.clone()).await?;
        let lifetime = to_std(first.max_expires_at - first.issued_at);
        if lifetime <= options.lead() + options.lead() / 10 {
            let _ = self.revoke(&first.lease_id).await;
            return Err(Error::invalid_config(format!(
                "watch: secret {secret:?} has a max TTL of {}, not longer than the rotation lead of {} (rotate_before, or the grace): lower them or raise max_ttl",
                crate::duration::format_duration(lifetime),
                crate::duration::format_duration(options.lead()),
            ))
            .with_context("secret", secret));
        }
        let (tx, rx) = watch::channel(Arc::new(first));
        let (events, _) = broadcast::channel(64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let registered = {
            let mut registry = self
                .inner()
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if registry.closed {
                None
            } else {
                registry.next += 1;
                let id = registry.next;
                let task = tokio::spawn(run_watch(
                    self.clone(),
                    id,
                    secret.to_string(),
                    request,
                    options,
                    tx,
                    events.clone(),
                    stop_rx,
                ));
                registry.live.insert(
                    id,
                    WatchSlot {
                        stop: stop_tx,
                        task,
                    },
                );
                Some(id)
            }
        };
        let Some(id) = registered else {
            // Shut down while the first credential was issued: it goes at once.
            let first = rx.borrow().lease_id.clone();
            let _ = self.revoke(&first).await;
            return Err(shut());
        };
        Ok(CredentialWatch {
            rx,
            events,
            id,
            manager: self.clone(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    manager: LeaseManager,
    id: u64,
    secret: String,
    request: IssueRequest,
    options: WatchOptions,
    tx: watch::Sender<Arc<IssuedLease>>,
    events: broadcast::Sender<WatchEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let mut retired: Vec<Retired> = Vec::new();
    // Start of the current refresh window: issue time, then each successful renew.
    let mut window_start = Utc::now();
    let mut failures: u32 = 0;
    let mut next_try: Option<DateTime<Utc>> = None;
    let mut warned_expiry = false;
    loop {
        let current = tx.borrow().clone();
        let now = Utc::now();
        let refresh_at = next_try.unwrap_or_else(|| {
            let window = to_std(current.expires_at - window_start);
            let wait = Jitter::Spread(options.jitter).apply(window.mul_f64(options.refresh_at));
            let planned = window_start + chrono::Duration::from_std(wait).unwrap_or_default();
            // Never later than the lead before the max expiry: the old credential keeps its
            // whole grace after the rotation.
            planned.min(rotate_deadline(&current, &options))
        });
        let next_retire = retired.iter().map(|r| r.revoke_at).min();
        let wake_at = next_retire.map_or(refresh_at, |r| r.min(refresh_at));
        let sleep = tokio::time::sleep(to_std(wake_at - now));
        tokio::select! {
            _ = &mut stop => break,
            // The watch and every subscribed receiver are gone: nobody uses the credential.
            _ = tx.closed() => break,
            _ = sleep => {}
        }

        // Revoke retired credentials whose grace is over.
        let now = Utc::now();
        let (due, keep): (Vec<_>, Vec<_>) = retired.into_iter().partition(|r| r.revoke_at <= now);
        retired = keep;
        for r in due {
            match manager.revoke(&r.lease_id).await {
                // Also when it was already gone (expired and revoked by the worker).
                Ok(()) => {
                    let _ = events.send(WatchEvent::RetiredRevoked {
                        lease_id: r.lease_id,
                    });
                }
                Err(e) => {
                    // The manager has scheduled it for retry; it is no longer ours to track.
                    tracing::warn!(lease_id = %r.lease_id, error = %e, "could not revoke a replaced credential; the manager will retry");
                }
            }
        }
        if Utc::now() < refresh_at {
            continue;
        }

        // Refresh: renew if that still buys time, else issue a replacement.
        let renewable = current.renewable
            && current.expires_at < current.max_expires_at
            && Utc::now() < rotate_deadline(&current, &options);
        let outcome = if renewable {
            match manager.renew(&current.lease_id, None).await {
                Ok(rec) => {
                    let capped = rec.expires_at >= rec.max_expires_at;
                    tx.send_if_modified(|v| {
                        let mut updated = (**v).clone();
                        updated.expires_at = rec.expires_at;
                        *v = Arc::new(updated);
                        false // same credential: no need to wake consumers
                    });
                    let _ = events.send(WatchEvent::Renewed {
                        lease_id: rec.id.clone(),
                        expires_at: rec.expires_at,
                    });
                    if capped {
                        // The next refresh must be a rotation; schedule it in the same spirit.
                        tracing::debug!(lease_id = %rec.id, "lease renewed up to its max TTL");
                    }
                    Ok(())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::RenewLimitReached | ErrorKind::NotRenewable
                    ) =>
                {
                    rotate(
                        &manager,
                        &secret,
                        &request,
                        &options,
                        &tx,
                        &events,
                        &mut retired,
                    )
                    .await
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::LeaseNotFound
                            | ErrorKind::LeaseExpired
                            | ErrorKind::LeaseRevoked
                    ) =>
                {
                    // The lease is gone (revoked by an operator?): replace it at once.
                    rotate(
                        &manager,
                        &secret,
                        &request,
                        &options,
                        &tx,
                        &events,
                        &mut retired,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        } else {
            rotate(
                &manager,
                &secret,
                &request,
                &options,
                &tx,
                &events,
                &mut retired,
            )
            .await
        };
        match outcome {
            Ok(()) => {
                failures = 0;
                next_try = None;
                warned_expiry = false;
                window_start = Utc::now();
            }
            Err(e) => {
                failures += 1;
                let current = tx.borrow().clone();
                let remaining = to_std(current.expires_at - Utc::now());
                // Doubling from retry_delay (at most 2^15 times it), and never past a quarter of
                // what is left of the credential's life.
                let delay = Backoff::new(
                    options.retry_delay,
                    options.retry_delay.saturating_mul(1 << 15),
                )
                .base(failures.min(16).saturating_sub(1))
                .min((remaining / 4).max(Duration::from_millis(100)));
                let retry_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(lease_id = %current.lease_id, error = %e, "refreshing a watched credential failed; retrying");
                let _ = events.send(WatchEvent::RefreshFailed {
                    lease_id: current.lease_id.clone(),
                    kind: e.kind(),
                    message: e.to_string(),
                    retry_at,
                });
                if retry_at >= current.expires_at && !warned_expiry {
                    warned_expiry = true;
                    let _ = events.send(WatchEvent::ExpiringWithoutReplacement {
                        lease_id: current.lease_id.clone(),
                        expires_at: current.expires_at,
                    });
                }
                next_try = Some(retry_at);
            }
        }
    }

    // Stopped: revoke everything this watch issued.
    let mut first_err = None;
    let current = tx.borrow().lease_id.clone();
    for lease_id in retired
        .into_iter()
        .map(|r| r.lease_id)
        .chain(std::iter::once(current))
    {
        match manager.revoke(&lease_id).await {
            Ok(()) => {}
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    manager
        .inner()
        .watches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .remove(&id);
    first_err.map_or(Ok(()), Err)
}

async fn rotate(
    manager: &LeaseManager,
    secret: &str,
    request: &IssueRequest,
    options: &WatchOptions,
    tx: &watch::Sender<Arc<IssuedLease>>,
    events: &broadcast::Sender<WatchEvent>,
    retired: &mut Vec<Retired>,
) -> Result<()> {
    let fresh = manager.issue(secret, request.clone()).await?;
    let old = tx.borrow().clone();
    let now = Utc::now();
    let grace_end = now + chrono::Duration::from_std(options.grace).unwrap_or_default();
    let mut old_expires = old.expires_at;
    if old.renewable && old_expires < grace_end && old_expires < old.max_expires_at {
        // Stretch the old lease over its grace (up to its max) so in-flight work can finish.
        if let Ok(rec) = manager.renew(&old.lease_id, Some(options.grace)).await {
            old_expires = rec.expires_at;
        }
    }
    let revoke_at = grace_end.min(old_expires);
    // A cut of a few percent is timer noise; more is worth telling.
    let tolerance = chrono::Duration::from_std(options.grace / 10).unwrap_or_default();
    if revoke_at + tolerance < grace_end {
        let grace = to_std(revoke_at - now);
        tracing::warn!(lease_id = %old.lease_id, grace_ms = grace.as_millis() as u64, "a replaced credential expires before its grace is over");
        let _ = events.send(WatchEvent::GraceShortened {
            lease_id: old.lease_id.clone(),
            grace,
        });
    }
    retired.push(Retired {
        lease_id: old.lease_id.clone(),
        revoke_at,
    });
    let new_id = fresh.lease_id.clone();
    tx.send_replace(Arc::new(fresh));
    let _ = events.send(WatchEvent::Rotated {
        old: old.lease_id.clone(),
        new: new_id,
    });
    Ok(())
}
