//! Revoking: by id, by secret, by the worker; recording failed attempts; forgetting.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use super::{lease_not_found, now, Inner, LeaseManager};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{LeaseId, LeaseRecord, LeaseState};
use crate::store::{add_duration, LeaseFilter, LeasePages, RevokeClaim};
use crate::telemetry;

/// The outcome of [`LeaseManager::revoke_secret`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RevokeSummary {
    /// Leases revoked.
    pub revoked: usize,
    /// Leases that could not be revoked now (they stay scheduled for retry).
    pub failed: Vec<(LeaseId, Error)>,
}

impl LeaseManager {
    /// Revokes a lease now. Also the operator's way to retry an `Irrevocable` lease.
    ///
    /// Idempotent: a lease whose record is gone (revoked already, by this call or any other
    /// instance, or by the worker at expiry) is `Ok`. The store keeps no record of revoked
    /// leases, so an id that never existed is `Ok` too; use [`lookup`](Self::lookup) to tell.
    ///
    /// On failure the lease stays, scheduled for retry by the worker, and the error is returned.
    pub async fn revoke(&self, lease_id: &LeaseId) -> Result<()> {
        let ctx = |e: Error| {
            e.with_context("lease_id", lease_id)
                .with_context("operation", "revoke")
        };
        let mut conflicts = 0;
        // Set while waiting for this instance's own revocation of the lease to finish.
        let mut waiting_until: Option<DateTime<Utc>> = None;
        let owner = &*self.inner.owner;
        while conflicts < 4 {
            let t = now();
            // Claimed so that no worker revokes it at the same time; one store call reads and
            // claims. Due now, held by the claim: if this instance dies mid-revoke, the next
            // one to start with its id takes the lease at once, any other one when the claim
            // ends.
            let until = add_duration(t, self.inner.config.revoke_timeout);
            let lease = match self
                .inner
                .store
                .claim_for_revoke(lease_id, owner, t, until)
                .await
            {
                Ok(RevokeClaim::Claimed(lease)) => lease,
                // Revoked already (or by the revocation we waited for): the credential is gone.
                Ok(RevokeClaim::Gone) => return Ok(()),
                Ok(RevokeClaim::Busy(lease)) => {
                    if lease.state != LeaseState::Pending
                        && lease.claimed_by.as_deref() == Some(owner)
                    {
                        // The worker (or another call) here is revoking it now: revoking it a
                        // second time in parallel would revoke it twice. Wait for that one.
                        let until = *waiting_until.get_or_insert(until);
                        if t > until {
                            return Err(ctx(Error::new(
                                ErrorKind::Conflict,
                                "the lease is still being revoked by this instance; try again",
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let message = match lease.state {
                        LeaseState::Pending if lease.claimed_by.as_deref() != Some(owner) => {
                            "the lease is still being issued by another instance; try again shortly"
                        }
                        LeaseState::Pending => "the lease is still being issued; try again shortly",
                        LeaseState::Revoking => "the lease is being revoked by another instance",
                        // Its claim ended since the store looked: look again.
                        _ => {
                            conflicts += 1;
                            continue;
                        }
                    };
                    return Err(ctx(Error::new(ErrorKind::Conflict, message)));
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    conflicts += 1;
                    continue;
                }
                Err(e) => return Err(ctx(e)),
            };
            return self
                .inner
                .revoke_claimed(lease, AuditAction::Revoke)
                .await
                .map_err(ctx);
        }
        Err(ctx(Error::new(
            ErrorKind::Conflict,
            "the lease kept changing while revoking; try again",
        )))
    }

    /// Revokes every lease of `secret`, `revoke_concurrency` at a time.
    pub async fn revoke_secret(&self, secret: &str) -> Result<RevokeSummary> {
        self.revoke_secret_with_progress(secret, |_, _| {}).await
    }

    /// Like [`revoke_secret`](Self::revoke_secret), calling `progress(done, total)` as it goes.
    pub async fn revoke_secret_with_progress(
        &self,
        secret: &str,
        mut progress: impl FnMut(usize, usize) + Send,
    ) -> Result<RevokeSummary> {
        let total = self.inner.store.count(&LeaseFilter::secret(secret)).await? as usize;
        let mut summary = RevokeSummary::default();
        let mut pages = LeasePages::new(&*self.inner.store, LeaseFilter::secret(secret), 500);
        let mut done = 0usize;
        while let Some(page) = pages.next_page().await? {
            let mut results = stream::iter(page.into_iter().map(|l| {
                let m = self.clone();
                async move {
                    let r = m.revoke(&l.id).await;
                    (l.id, r)
                }
            }))
            .buffer_unordered(self.inner.config.revoke_concurrency);
            while let Some((id, r)) = results.next().await {
                match r {
                    Ok(()) => summary.revoked += 1,
                    Err(e) if e.kind() == ErrorKind::LeaseNotFound => summary.revoked += 1,
                    Err(e) => summary.failed.push((id, e)),
                }
                done += 1;
                progress(done, total.max(done));
            }
        }
        Ok(summary)
    }

    /// Removes a lease record without revoking its credential: the operator's escape hatch
    /// for a credential removed by hand. Audited, and logged at WARN.
    pub async fn force_forget(&self, lease_id: &LeaseId) -> Result<LeaseRecord> {
        for _ in 0..4 {
            let lease = match self.inner.store.get(lease_id).await {
                Ok(Some(l)) => l,
                Ok(None) => return Err(lease_not_found(lease_id)),
                Err(e) if e.kind() == ErrorKind::Store => {
                    // A row that cannot be read: forget_damaged removes it.
                    if self.forget_damaged(lease_id.as_str()).await? {
                        return Err(Error::new(
                            ErrorKind::LeaseNotFound,
                            "the lease's row was damaged; it was removed without revoking",
                        )
                        .with_context("lease_id", lease_id));
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.inner.store.delete(&lease.id, lease.version).await {
                Ok(()) => {
                    tracing::warn!(
                        lease_id = %lease.id,
                        secret = %lease.secret,
                        principal = %lease.external.id,
                        state = %lease.state,
                        "lease forgotten without revoking its credential"
                    );
                    self.inner.audit(AuditAction::ForceForget, &lease, None);
                    return Ok(lease);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(
            Error::new(ErrorKind::Conflict, "the lease kept changing; try again")
                .with_context("lease_id", lease_id),
        )
    }

    /// Removes a damaged row (one the store cannot decode, see [`LeaseStore::damaged`](crate::LeaseStore::damaged)) by its
    /// id as stored, without revoking anything: the operator's way out of a row edited by hand.
    /// Audited and logged at WARN with what could be read of the row. `false` when the store
    /// has no damaged row with that id.
    pub async fn forget_damaged(&self, id: &str) -> Result<bool> {
        let known = self
            .inner
            .store
            .damaged(usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.id == id);
        if !self.inner.store.remove_damaged(id).await? {
            return Ok(false);
        }
        let d = known.unwrap_or_else(|| crate::store::DamagedLease::new(id, "unknown"));
        tracing::warn!(
            lease_id = %crate::settings::shorten(id).escape_debug(),
            secret = d.secret.as_deref().unwrap_or(""),
            principal = d.principal.as_deref().unwrap_or(""),
            reason = %d.reason,
            "damaged lease row forgotten without revoking its credential"
        );
        let mut event = AuditEvent::new(AuditAction::ForceForget, d.secret.unwrap_or_default());
        event.lease_id = id.parse().ok();
        event.principal = d.principal;
        event.error = Some(ErrorKind::Store);
        event.message = Some(format!("damaged row: {}", d.reason));
        self.inner.emit(event);
        Ok(true)
    }

    /// Rows the store cannot decode (see [`LeaseStore::damaged`](crate::LeaseStore::damaged)).
    pub async fn damaged(&self) -> Result<Vec<crate::store::DamagedLease>> {
        self.inner.store.damaged(usize::MAX).await
    }
}

impl Inner {
    /// Claims `lease` (whose version is current) for revocation and revokes it.
    pub(super) async fn revoke_now(
        &self,
        mut lease: LeaseRecord,
        action: AuditAction,
    ) -> Result<()> {
        let t = now();
        lease.claim_for_revoke(
            self.owner.clone(),
            t,
            add_duration(t, self.config.revoke_timeout),
        );
        lease.version = self.store.update(&lease).await?;
        self.revoke_claimed(lease, action).await
    }

    /// Revokes a lease this instance holds a claim on; deletes it on success, schedules a retry
    /// (or marks it irrevocable) on failure.
    pub(super) async fn revoke_claimed(
        &self,
        mut lease: LeaseRecord,
        action: AuditAction,
    ) -> Result<()> {
        let Some(entry) = self.entry(&lease.secret) else {
            return Err(Error::new(
                ErrorKind::SecretNotFound,
                format!(
                    "the lease's secret {:?} is not registered with this manager",
                    &*lease.secret
                ),
            ));
        };
        let provider = entry.secret.provider();
        if lease.begin_revoke() {
            lease.version = self.store.update(&lease).await?;
        }
        let reason = if action == AuditAction::Expire {
            "expire"
        } else {
            "revoke"
        };
        let started = std::time::Instant::now();
        let result = if provider.capabilities().revocable {
            let r = match tokio::time::timeout(
                self.config.revoke_timeout,
                provider.revoke(&lease.external),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    "the provider did not revoke in time",
                )),
            };
            telemetry::provider_call(
                &entry.kind,
                "revoke",
                r.as_ref().copied(),
                started.elapsed(),
            );
            r
        } else {
            // Nothing to revoke: the credential ends by itself at its expiry.
            Ok(())
        };
        match result {
            Ok(()) => {
                // The audit line goes out before the record does: a crash between the two
                // leaves a record that is revoked again (idempotent), never a revocation
                // without its line.
                let mut gone = lease.clone();
                gone.mark_revoked();
                self.audit(action, &gone, None);
                match self.store.delete(&lease.id, lease.version).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::LeaseNotFound => {
                        // Someone else ended the lease (force_forget, or a revocation that
                        // finished first) and recorded it: not a second revocation.
                        tracing::debug!(lease_id = %lease.id, "the lease record was already gone after revoking");
                        return Ok(());
                    }
                    Err(e) => {
                        // The credential is gone; the record will be revoked again (idempotent)
                        // and deleted by whoever holds it next.
                        tracing::warn!(lease_id = %lease.id, error = %e, "revoked, but could not delete the lease record");
                        return Err(e);
                    }
                }
                lease.mark_revoked();
                telemetry::revocation(&lease.secret, reason, Ok(()), started.elapsed());
                if action == AuditAction::Expire {
                    telemetry::expiry_lag(&lease.secret, now() - lease.expires_at);
                }
                Ok(())
            }
            Err(e) => {
                let e = e
                    .with_context("lease_id", &lease.id)
                    .with_context("secret", &*lease.secret);
                let t = now();
                let attempts = lease.record_failed_revoke(e.to_string());
                let retry = &self.config.retry;
                match retry.next_attempt(&e, attempts) {
                    Some(delay) if lease.state != LeaseState::Irrevocable => {
                        lease.schedule_retry(add_duration(t, delay));
                    }
                    _ => lease.make_irrevocable(add_duration(t, retry.irrevocable_retry)),
                }
                let state = lease.state;
                if let Err(se) = self.store.update(&lease).await {
                    tracing::warn!(lease_id = %lease.id, error = %se, "could not record the failed revocation");
                }
                telemetry::revocation(&lease.secret, reason, Err(&e), started.elapsed());
                if state == LeaseState::Irrevocable {
                    telemetry::irrevocable(&lease.secret);
                    tracing::error!(lease_id = %lease.id, secret = %lease.secret, principal = %lease.external.id, attempts = lease.revoke_attempts, error = %e, "lease is irrevocable: an operator must retry or force-forget it");
                    self.audit(AuditAction::Irrevocable, &lease, Some(e.kind()));
                } else {
                    telemetry::revoke_retry(&lease.secret);
                    self.audit(AuditAction::RevokeRetry, &lease, Some(e.kind()));
                }
                self.wake_for(lease.due_at);
                Err(e)
            }
        }
    }

    pub(super) async fn process_due(self: &Arc<Self>, lease: LeaseRecord) {
        if self.entry(&lease.secret).is_none() {
            // Another instance may know this secret; leave the claim to run out.
            tracing::debug!(lease_id = %lease.id, secret = %lease.secret, "due lease of a secret this instance does not know");
            return;
        }
        let action = if lease.state == LeaseState::Active {
            AuditAction::Expire
        } else {
            AuditAction::Revoke
        };
        if let Err(e) = self.revoke_claimed(lease, action).await {
            tracing::debug!(error = %e, "revocation by the worker failed; scheduled for retry");
        }
    }
}
