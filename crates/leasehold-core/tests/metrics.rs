//! Every metric the manager records, counted exactly over a scripted scenario: issue 3, renew 1,
//! revoke 1, let 1 expire, and force 1 revocation into `irrevocable`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::telemetry as t;
use leasehold_core::{
    DynamicSecret, IssueRequest, LeaseManager, LeaseState, ManagerConfig, MemoryStore, RetryPolicy,
};
use leasehold_testkit::{Fault, FaultyProvider, Operation, RecordingProvider};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

/// The provider kind of the testkit's recording provider (the faulty wrapper keeps it).
const KIND: &str = "recording";

type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn find<'a>(snap: &'a Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snap.iter()
        .find(|(k, _, _, _)| {
            let key = k.key();
            key.name() == name
                && key.labels().count() == labels.len()
                && labels
                    .iter()
                    .all(|(ln, lv)| key.labels().any(|l| l.key() == *ln && l.value() == *lv))
        })
        .map(|(_, _, _, v)| v)
}

fn counter(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(snap, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
    }
}

fn gauge(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(snap, name, labels) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        None => None,
        Some(other) => panic!("{name} {labels:?} is not a gauge: {other:?}"),
    }
}

fn histogram_count(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> usize {
    match find(snap, name, labels) {
        Some(DebugValue::Histogram(v)) => v.len(),
        None => 0,
        Some(other) => panic!("{name} {labels:?} is not a histogram: {other:?}"),
    }
}

#[test]
fn every_metric_counts_a_scripted_scenario_exactly() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A current-thread runtime: every task the manager spawns records on this thread.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryStore::new();
        let faulty = FaultyProvider::new(Arc::new(RecordingProvider::new()));
        let secret = DynamicSecret::builder("m", Arc::new(faulty.clone()))
            .default_ttl(Duration::from_secs(60))
            .max_ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        let config = ManagerConfig::default()
            .max_idle(Duration::from_millis(50))
            .metrics_interval(Duration::from_millis(50))
            .retry(RetryPolicy::new(Duration::from_secs(60), 3));
        let m = LeaseManager::builder(Arc::new(store.clone()))
            .config(config)
            .secret(secret)
            .build()
            .await
            .unwrap();
        let renewed = m.issue("m", IssueRequest::new()).await.unwrap();
        let revoked = m.issue("m", IssueRequest::new()).await.unwrap();
        let expiring = m
            .issue("m", IssueRequest::new().ttl(Duration::from_secs(1)))
            .await
            .unwrap();
        m.renew(&renewed.lease_id, None).await.unwrap();
        m.revoke(&revoked.lease_id).await.unwrap();
        // The worker expires the third one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while m.lookup(&expiring.lease_id).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lease did not expire"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A permanent failure: irrevocable at once.
        faulty.fail_always(Operation::Revoke, Fault::denied());
        m.revoke(&renewed.lease_id).await.unwrap_err();
        assert_eq!(
            m.lookup(&renewed.lease_id).await.unwrap().state,
            LeaseState::Irrevocable
        );
        // Let the worker refresh the gauges.
        tokio::time::sleep(Duration::from_millis(300)).await;
        m.shutdown().await;
    });
    let snap: Snapshot = snapshotter.snapshot().into_vec();
    let kinds: HashMap<String, MetricKind> = snap
        .iter()
        .map(|(k, _, _, _)| (k.key().name().to_string(), k.kind()))
        .collect();
    let s = &[("secret", "m")];
    assert_eq!(
        counter(&snap, t::ISSUES, &[("secret", "m"), ("outcome", "success")]),
        3
    );
    assert_eq!(histogram_count(&snap, t::ISSUE_DURATION, s), 3);
    assert_eq!(
        counter(
            &snap,
            t::RENEWALS,
            &[("secret", "m"), ("outcome", "success")]
        ),
        1
    );
    let rev = |reason, outcome| {
        counter(
            &snap,
            t::REVOCATIONS,
            &[("secret", "m"), ("reason", reason), ("outcome", outcome)],
        )
    };
    assert_eq!(rev("revoke", "success"), 1);
    assert_eq!(rev("expire", "success"), 1);
    assert_eq!(rev("revoke", "refused"), 1);
    assert_eq!(histogram_count(&snap, t::REVOKE_DURATION, s), 3);
    assert_eq!(counter(&snap, t::IRREVOCABLE, s), 1);
    assert_eq!(counter(&snap, t::REVOKE_RETRIES, s), 0);
    assert_eq!(histogram_count(&snap, t::EXPIRY_LAG, s), 1);
    let call = |op, outcome| {
        counter(
            &snap,
            t::PROVIDER_CALLS,
            &[("provider", KIND), ("operation", op), ("outcome", outcome)],
        )
    };
    assert_eq!(call("create", "success"), 3);
    assert_eq!(call("renew", "success"), 1);
    assert_eq!(call("revoke", "success"), 2);
    assert_eq!(call("revoke", "refused"), 1);
    assert_eq!(
        histogram_count(
            &snap,
            t::PROVIDER_CALL_DURATION,
            &[("provider", KIND), ("operation", "revoke")]
        ),
        3
    );
    assert_eq!(
        gauge(
            &snap,
            t::LEASES,
            &[("secret", "m"), ("state", "irrevocable")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(&snap, t::LEASES, &[("secret", "m"), ("state", "active")]),
        Some(0.0)
    );
    assert_eq!(gauge(&snap, t::IRREVOCABLE_LEASES, s), Some(1.0));
    assert!(counter(&snap, t::WORKER_LOOPS, &[]) > 0);
    assert_eq!(
        kinds.get(t::STORE_ERRORS),
        None,
        "no store errors were recorded"
    );
    // No label carries a lease id or a username.
    for (k, _, _, _) in &snap {
        for l in k.key().labels() {
            assert!(
                !l.value().contains('/') && !l.value().starts_with("lh-"),
                "unbounded label {}={}",
                l.key(),
                l.value()
            );
        }
    }
}
