//! Fault soak: many lease lifecycles with 30 % of provider calls failing (throttling,
//! unavailability, timeouts, hangs, calls that succeed but report failure, and a few permanent
//! denials), on two managers sharing one store. Every credential must end revoked exactly once,
//! or — for permanent faults only — irrevocable and listed.
//!
//! `LEASEHOLD_LONG=1` runs 50,000 lifecycles instead of 10,000.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use leasehold::{
    DynamicSecret, ErrorKind, IssueRequest, LeaseFilter, LeaseManager, LeaseState, LeaseStore,
    ManagerConfig, MemoryStore, RetryPolicy,
};
use leasehold_testkit::{Fault, FaultyProvider, Operation, RecordingProvider};

fn long() -> bool {
    std::env::var("LEASEHOLD_LONG").is_ok_and(|v| v == "1")
}

fn temporary_faults() -> Vec<Fault> {
    vec![
        Fault::Fail {
            kind: ErrorKind::Throttled,
            temporary: true,
        },
        Fault::unavailable(),
        Fault::Fail {
            kind: ErrorKind::Timeout,
            temporary: true,
        },
        Fault::Delay(Duration::from_millis(400)), // longer than the revoke timeout below
        Fault::Hang,
        Fault::FailAfter {
            kind: ErrorKind::ProviderUnavailable,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lifecycles_with_thirty_percent_faults() {
    let total: usize = if long() { 50_000 } else { 10_000 };
    let store = MemoryStore::new();
    let backend = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(backend.clone()));
    // Revocation faults are temporary except a small share of permanent denials; creation and
    // renewal get the full mix.
    let mut revoke_faults: Vec<Fault> = (0..3).flat_map(|_| temporary_faults()).collect();
    revoke_faults.push(Fault::denied());
    faulty.fail_randomly(Operation::Create, 0.3, temporary_faults());
    faulty.fail_randomly(Operation::Renew, 0.3, temporary_faults());
    faulty.fail_randomly(Operation::Revoke, 0.3, revoke_faults);

    let mut cfg = ManagerConfig::default();
    cfg.retry = RetryPolicy::new(Duration::from_millis(20), 12)
        .max_delay(Duration::from_millis(200))
        .irrevocable_retry(Duration::from_secs(3600));
    cfg.revoke_timeout = Duration::from_millis(200);
    cfg.issue_timeout = Duration::from_millis(1500);
    cfg.claim_hold = Duration::from_secs(2);
    cfg.max_idle = Duration::from_millis(100);
    cfg.revoke_concurrency = 64;
    let secret = DynamicSecret::builder("soak", Arc::new(faulty.clone()))
        .default_ttl(Duration::from_secs(1))
        .max_ttl(Duration::from_secs(3))
        .max_active_leases(total as u64 + 1)
        .build()
        .unwrap();
    let mut managers = Vec::new();
    for _ in 0..2 {
        managers.push(
            LeaseManager::builder(Arc::new(store.clone()))
                .config(cfg.clone())
                .secret(secret.clone())
                .build()
                .await
                .unwrap(),
        );
    }

    // Issue in waves; some leases are revoked explicitly, some renewed, the rest expire.
    let mut issued = 0usize;
    let mut failed_issues = 0usize;
    let wave = 500;
    while issued + failed_issues < total {
        let n = wave.min(total - issued - failed_issues);
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let m = managers[i % 2].clone();
                tokio::spawn(async move {
                    let lease = m.issue("soak", IssueRequest::new()).await?;
                    match i % 4 {
                        0 => {
                            let _ = m.revoke(&lease.lease_id).await;
                        }
                        1 => {
                            let _ = m.renew(&lease.lease_id, None).await;
                        }
                        _ => {}
                    }
                    Ok::<_, leasehold::Error>(())
                })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => issued += 1,
                Err(_) => failed_issues += 1,
            }
        }
    }
    assert!(failed_issues > 0, "faults reached issue");

    // Wait until everything is either gone or irrevocable.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(if long() { 600 } else { 180 });
    loop {
        let left = store
            .count(&LeaseFilter::all().states([
                LeaseState::Pending,
                LeaseState::Active,
                LeaseState::Revoking,
            ]))
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} leases still not settled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let irrevocable = store
        .list(&LeaseFilter::all().state(LeaseState::Irrevocable))
        .await
        .unwrap();
    // Irrevocable only through a permanent fault: their last error is the injected denial.
    for l in &irrevocable {
        let err = l.last_error.as_deref().unwrap_or("");
        assert!(
            err.contains("PermissionDenied"),
            "irrevocable without a permanent fault: {err}"
        );
    }
    let irrevocable_names: HashSet<String> =
        irrevocable.iter().map(|l| l.external.id.clone()).collect();
    let live: HashSet<String> = backend.live_usernames().into_iter().collect();
    // The credentials that still exist are exactly those of the irrevocable leases (a denied
    // compensation may also leave one whose create reported failure; it too has its lease).
    assert!(
        live.is_subset(&irrevocable_names),
        "credentials without a lease: {:?}",
        live.difference(&irrevocable_names)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        backend.removed_more_than_once().is_empty(),
        "a credential was removed twice"
    );
    assert_eq!(
        store.len(),
        irrevocable.len(),
        "only irrevocable leases remain"
    );
    println!(
        "soak: {} lifecycles, {} issues failed, {} faults injected, {} creates, {} irrevocable",
        issued + failed_issues,
        failed_issues,
        faulty.injected(),
        backend.creates(),
        irrevocable.len()
    );
    for m in &managers {
        m.shutdown().await;
    }
}
