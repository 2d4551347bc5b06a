//! The expiry worker: claiming due leases, pacing revocations, lease gauges and drift repair.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{now, Inner, SecretEntry};
use crate::model::LeaseState;
use crate::store::{add_duration, LeaseFilter, LeasePages};
use crate::telemetry;

impl Inner {
    /// Leases to claim at once: `claim_batch`, and under `revoke_rate` no more than the worker
    /// revokes in half a `claim_hold`.
    fn claim_batch(&self) -> usize {
        let c = &self.config;
        match c.revoke_rate {
            Some(rate) => {
                let in_half_hold = (f64::from(rate) * c.claim_hold.as_secs_f64() / 2.0) as usize;
                c.claim_batch.min(in_half_hold.max(1))
            }
            None => c.claim_batch,
        }
    }

    /// Waits for the next revocation slot under `revoke_rate`. Without one, still gives the
    /// runtime a chance to run other tasks (issues) between revocations: with a store and a
    /// provider that answer at once, a backlog would otherwise hold the thread for a whole batch.
    async fn pace(&self) {
        let Some(rate) = self.config.revoke_rate else {
            tokio::task::consume_budget().await;
            return;
        };
        let gap = Duration::from_secs(1) / rate.max(1);
        let slot = {
            let mut next = self
                .next_revoke_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// One drift-repair pass over every secret whose provider repairs drift.
    async fn repair_drift(&self) {
        let entries: Vec<Arc<SecretEntry>> = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.secret.provider().capabilities().repairs_drift)
            .cloned()
            .collect();
        for entry in entries {
            let name = entry.secret.name();
            // Every lease of the backend's kind counts: secrets may share one (and a prefix).
            let mut leased = Vec::new();
            let mut pages = LeasePages::new(&*self.store, LeaseFilter::all(), 1000);
            loop {
                let page = match pages.next_page().await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        telemetry::store_error("list");
                        tracing::warn!(secret = name, error = %e, "drift repair could not read the leases");
                        return;
                    }
                };
                leased.extend(
                    page.into_iter()
                        .filter(|l| *l.provider_kind == *entry.kind)
                        .map(|l| l.external),
                );
            }
            let mark = crate::secret::installation_prefix(
                entry.secret.username_prefix(),
                &self.installation,
            );
            let repair = entry.secret.provider().repair_drift(&leased, &mark);
            match tokio::time::timeout(self.config.revoke_timeout, repair).await {
                Ok(Ok(r)) => {
                    telemetry::drift(&entry.kind, &r);
                    if r.copied + r.removed + r.failed > 0 {
                        tracing::info!(target: "leasehold::audit", action = "repair_drift", secret = name, copied = r.copied, removed = r.removed, failed = r.failed);
                    }
                }
                Ok(Err(e)) => tracing::warn!(secret = name, error = %e, "drift repair failed"),
                Err(_) => tracing::warn!(
                    secret = name,
                    "drift repair did not finish in revoke_timeout"
                ),
            }
        }
    }

    /// Refreshes the lease-count gauges of every registered secret from the store.
    async fn refresh_gauges(&self) {
        let secrets: Vec<Arc<str>> = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.secret.name_arc().clone())
            .collect();
        for secret in secrets {
            for state in [
                LeaseState::Pending,
                LeaseState::Active,
                LeaseState::Revoking,
                LeaseState::Irrevocable,
            ] {
                match self
                    .store
                    .count(&LeaseFilter::secret(&*secret).state(state))
                    .await
                {
                    Ok(n) => telemetry::lease_gauge(&secret, state, n),
                    Err(e) => {
                        telemetry::store_error("count");
                        tracing::debug!(error = %e, "could not count leases for the metrics");
                        return;
                    }
                }
            }
        }
    }
}

pub(super) async fn worker_loop(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    tracing::debug!(instance = %inner.owner, "expiry worker started");
    let mut gauges_at: Option<tokio::time::Instant> = None;
    let mut repair_at: Option<tokio::time::Instant> = None;
    // Revocations run in tasks of their own, at most revoke_concurrency at once; the loop goes
    // on claiming while there is room, so one revocation hanging on a slow backend holds up
    // one slot, not the expiry of every lease that falls due after it.
    let slots = Arc::new(tokio::sync::Semaphore::new(inner.config.revoke_concurrency));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        telemetry::worker_loop();
        inner
            .worker_alive_ms
            .store(now().timestamp_millis(), Ordering::Relaxed);
        if gauges_at.is_none_or(|at| at.elapsed() >= inner.config.metrics_interval) {
            gauges_at = Some(tokio::time::Instant::now());
            inner.refresh_gauges().await;
        }
        if repair_at.is_none_or(|at| at.elapsed() >= inner.config.repair_interval) {
            repair_at = Some(tokio::time::Instant::now());
            // In a task of its own: a slow backend must not hold up expiry.
            if !inner.repairing.swap(true, Ordering::SeqCst) {
                let inner = inner.clone();
                tokio::spawn(async move {
                    inner.repair_drift().await;
                    inner.repairing.store(false, Ordering::SeqCst);
                });
            }
        }
        // Awake: every write from now on is seen by the reads below, or wakes the worker.
        inner.planned_wake_ms.store(i64::MAX, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let t = now();
        let batch = inner.claim_batch().min(free);
        // Revocations run while the loop goes on claiming: a claim must outlive the revocation
        // it covers (paced for at most half a claim_hold, then bounded by revoke_timeout), or
        // this worker, or another, would claim the lease again and revoke it twice.
        let hold = inner
            .config
            .claim_hold
            .saturating_add(inner.config.revoke_timeout);
        let claimed = match inner.store.claim_due(t, &inner.owner, hold, batch).await {
            Ok(c) => c,
            Err(e) => {
                telemetry::store_error("claim_due");
                tracing::warn!(error = %e, "expiry worker could not claim due leases");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let full = claimed.len() >= batch;
        for lease in claimed {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Not reached: no more were claimed than there were free slots.
                break;
            };
            let inner = inner.clone();
            running.spawn(async move {
                inner.pace().await;
                inner.process_due(lease).await;
                drop(slot);
            });
        }
        if full {
            continue;
        }
        let next = inner.store.next_due().await.ok().flatten();
        let idle = inner.config.max_idle;
        let sleep_for = match next {
            Some(at) => (at - now()).to_std().unwrap_or(Duration::ZERO).min(idle),
            None => idle,
        };
        if sleep_for.is_zero() {
            // Due now but claimed elsewhere: yield briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // The timer starts a little after this, so the worker wakes no earlier than planned.
        let planned = add_duration(now(), sleep_for).timestamp_millis();
        inner.planned_wake_ms.store(planned, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = inner.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    // Revocations under way finish (each bounded by revoke_timeout) before the worker stops.
    while running.join_next().await.is_some() {}
    tracing::debug!(instance = %inner.owner, "expiry worker stopped");
}
