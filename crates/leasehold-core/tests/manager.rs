//! The lease manager's guarantees, against the in-memory store and the testkit's providers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use leasehold_core::{
    AuditAction, AuditEvent, AuditSink, Capabilities, DynamicSecret, DynamicSecretProvider,
    ErrorKind, IssueRequest, LeaseFilter, LeaseManager, LeaseState, LeaseStore, ManagerConfig,
    MemoryStore, RetryPolicy, TtlOverMax,
};
use leasehold_testkit::conformance::Fixture;
use leasehold_testkit::{Fault, FaultyProvider, Operation, RecordingProvider};

fn fast_config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.retry = RetryPolicy::new(Duration::from_millis(50), 3)
        .max_delay(Duration::from_millis(200))
        .irrevocable_retry(Duration::from_secs(3600));
    c.max_idle = Duration::from_millis(200);
    c.claim_hold = Duration::from_secs(5);
    c.issue_timeout = Duration::from_secs(30);
    c
}

fn secret(
    name: &str,
    provider: Arc<dyn DynamicSecretProvider>,
    ttl: u64,
    max: u64,
) -> DynamicSecret {
    DynamicSecret::builder(name, provider)
        .default_ttl(Duration::from_secs(ttl))
        .max_ttl(Duration::from_secs(max))
        .build()
        .unwrap()
}

async fn manager(store: &MemoryStore, secrets: Vec<DynamicSecret>) -> LeaseManager {
    let mut b = LeaseManager::builder(Arc::new(store.clone())).config(fast_config());
    for s in secrets {
        b = b.secret(s);
    }
    b.build().await.unwrap()
}

/// Polls `cond` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// The conformance suites, one test per behaviour: `memory_store::insert_refuses_an_existing_id`,
// `recording_provider::revoke_is_idempotent`, ...
leasehold_testkit::store_conformance_tests!(memory_store, |_test| async {
    Fixture::store(MemoryStore::new())
});
leasehold_testkit::store_conformance_tests!(memory_store_through_arc_dyn, |_test| async {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    Fixture::shared_store(store)
});
leasehold_testkit::coordination_conformance_tests!(memory_coordination, |_test| async {
    Fixture::coordination_of(MemoryStore::new())
});
leasehold_testkit::provider_conformance_tests!(recording_provider, |_test| async {
    Fixture::provider(RecordingProvider::new())
});
leasehold_testkit::provider_conformance_tests!(faulty_provider_without_faults, |_test| async {
    Fixture::provider(FaultyProvider::new(Arc::new(RecordingProvider::new())))
});

/// The one provider sentence the generated tests cannot provoke by themselves: a backend that
/// is down.
#[tokio::test]
async fn revoke_failure_while_unreachable_is_temporary() {
    let down = FaultyProvider::new(Arc::new(RecordingProvider::new()));
    down.fail_always(Operation::Revoke, Fault::unavailable());
    leasehold_testkit::conformance::revoke_failure_while_unreachable_is_temporary(&down).await;
}

/// The one-call suites still run every function, in one test.
#[tokio::test]
async fn the_one_call_suites_pass_on_the_memory_store_and_the_recording_provider() {
    leasehold_testkit::store_conformance(&MemoryStore::new()).await;
    leasehold_testkit::provider_conformance(Arc::new(RecordingProvider::new()), None).await;
}

#[tokio::test]
async fn issue_use_renew_revoke() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let m = manager(
        &store,
        vec![secret("orders", Arc::new(provider.clone()), 60, 600)],
    )
    .await;

    let lease = m
        .issue("orders", IssueRequest::new().identity("api"))
        .await
        .unwrap();
    assert!(lease.lease_id.as_str().starts_with("orders/"));
    assert!(lease.credentials.principal().starts_with("lh-"));
    assert!(provider.authenticates(&lease.credentials));
    assert!(lease.live());
    let rec = m.lookup(&lease.lease_id).await.unwrap();
    assert_eq!(rec.state, LeaseState::Active);
    assert_eq!(rec.external.id, lease.credentials.principal());
    assert_eq!(rec.identity.as_deref(), Some("api"));
    assert_eq!(rec.expires_at, lease.expires_at);

    let renewed = m
        .renew(&lease.lease_id, Some(Duration::from_secs(300)))
        .await
        .unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    assert_eq!(provider.renew_calls(), 1);

    m.revoke(&lease.lease_id).await.unwrap();
    assert!(!provider.authenticates(&lease.credentials));
    assert_eq!(
        m.lookup(&lease.lease_id).await.unwrap_err().kind(),
        ErrorKind::LeaseNotFound
    );
    assert!(store.is_empty());
    // Revoking again is idempotent: the credential is gone either way.
    m.revoke(&lease.lease_id).await.unwrap();
    assert!(!provider.authenticates(&lease.credentials));
}

#[tokio::test]
async fn a_two_second_lease_is_revoked_within_a_second_of_expiry() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let m = manager(
        &store,
        vec![secret("short", Arc::new(provider.clone()), 2, 10)],
    )
    .await;
    let lease = m.issue("short", IssueRequest::new()).await.unwrap();
    assert!(provider.authenticates(&lease.credentials));
    let until_expiry = (lease.expires_at - Utc::now()).to_std().unwrap();
    tokio::time::sleep(until_expiry - Duration::from_millis(300)).await;
    assert!(
        provider.authenticates(&lease.credentials),
        "still valid just before expiry"
    );
    tokio::time::sleep(Duration::from_millis(300) + Duration::from_secs(1)).await;
    assert!(
        !provider.authenticates(&lease.credentials),
        "revoked within 1 s after expiry"
    );
    assert!(store.is_empty());
    assert_eq!(provider.removals_of(lease.credentials.principal()), 1);
}

#[tokio::test]
async fn three_failures_then_success_ends_revoked() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    // The default policy's six attempts, with short delays.
    let m = LeaseManager::builder(Arc::new(store.clone()))
        .config(fast_config())
        .retry(RetryPolicy::new(Duration::from_millis(50), 6).max_delay(Duration::from_millis(400)))
        .secret(secret("flaky", Arc::new(faulty.clone()), 1, 10))
        .build()
        .await
        .unwrap();
    let lease = m.issue("flaky", IssueRequest::new()).await.unwrap();
    faulty.fail_next(Operation::Revoke, 3, Fault::unavailable());
    // Watch the retries happen: the lease goes Revoking with attempts counted.
    assert!(
        eventually(Duration::from_secs(10), || faulty.calls(Operation::Revoke)
            >= 2)
        .await,
        "the worker retries"
    );
    let mid = store
        .get(&lease.lease_id)
        .await
        .unwrap()
        .expect("kept while failing");
    assert_eq!(mid.state, LeaseState::Revoking);
    assert!(mid.revoke_attempts >= 1);
    assert!(mid.last_error.as_deref().unwrap().contains("injected"));
    assert!(
        eventually(Duration::from_secs(10), || store.is_empty()).await,
        "ends revoked"
    );
    assert_eq!(faulty.calls(Operation::Revoke), 4);
    assert_eq!(provider.removals_of(lease.credentials.principal()), 1);
    assert_eq!(provider.live_count(), 0);
}

#[tokio::test]
async fn always_failing_revoke_ends_irrevocable_listed_and_operator_can_retry() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    let m = manager(
        &store,
        vec![secret("broken", Arc::new(faulty.clone()), 1, 10)],
    )
    .await;
    let lease = m.issue("broken", IssueRequest::new()).await.unwrap();
    faulty.fail_always(Operation::Revoke, Fault::unavailable());
    let irrevocable = || async {
        m.list(&LeaseFilter::all().state(LeaseState::Irrevocable))
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let l = irrevocable().await;
        if !l.is_empty() || tokio::time::Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed.len(), 1, "the lease is irrevocable and listed");
    assert_eq!(listed[0].id, lease.lease_id);
    assert_eq!(listed[0].revoke_attempts, 3, "max_attempts tries were made");
    assert!(listed[0].last_error.is_some());
    assert!(
        provider.authenticates(&lease.credentials),
        "the credential still exists"
    );
    // It stays: no further tries until the (long) irrevocable retry interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(faulty.calls(Operation::Revoke), 3);
    assert_eq!(irrevocable().await.len(), 1);

    // The operator fixes the backend and retries.
    faulty.clear();
    m.revoke(&lease.lease_id).await.unwrap();
    assert!(store.is_empty());
    assert!(!provider.authenticates(&lease.credentials));
}

#[tokio::test]
async fn a_permanent_revoke_error_is_irrevocable_at_once() {
    let store = MemoryStore::new();
    let faulty = FaultyProvider::new(Arc::new(RecordingProvider::new()));
    let m = manager(
        &store,
        vec![secret("denied", Arc::new(faulty.clone()), 60, 600)],
    )
    .await;
    let lease = m.issue("denied", IssueRequest::new()).await.unwrap();
    faulty.fail_always(Operation::Revoke, Fault::denied());
    let err = m.revoke(&lease.lease_id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let rec = m.lookup(&lease.lease_id).await.unwrap();
    assert_eq!(rec.state, LeaseState::Irrevocable);
    assert_eq!(rec.revoke_attempts, 1);
    // The operator's escape hatch: forget it (audited), the credential stays.
    let forgotten = m.force_forget(&lease.lease_id).await.unwrap();
    assert_eq!(forgotten.id, lease.lease_id);
    assert!(store.is_empty());
}

/// Revokes fail with a throttling error its own retries already exhausted (persistent).
#[derive(Debug, Clone)]
struct Exhausted {
    inner: RecordingProvider,
    revokes: Arc<std::sync::atomic::AtomicU32>,
}

#[leasehold_core::async_trait]
impl DynamicSecretProvider for Exhausted {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn validate(&self) -> leasehold_core::Result<()> {
        self.inner.validate().await
    }
    async fn create(
        &self,
        request: &leasehold_core::CreateRequest,
    ) -> leasehold_core::Result<leasehold_core::Created> {
        self.inner.create(request).await
    }
    async fn revoke(&self, _: &leasehold_core::ExternalRef) -> leasehold_core::Result<()> {
        self.revokes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(
            leasehold_core::Error::new(ErrorKind::Throttled, "still throttled after retries")
                .persist(),
        )
    }
}

#[tokio::test]
async fn a_persistent_revoke_error_is_retried_later_not_at_once() {
    let store = MemoryStore::new();
    let p = Exhausted {
        inner: RecordingProvider::new(),
        revokes: Arc::default(),
    };
    let mut config = fast_config();
    // Slow enough that the worker does not retry within the test.
    config.retry = RetryPolicy::new(Duration::from_secs(60), 3);
    let m = LeaseManager::builder(Arc::new(store.clone()))
        .config(config)
        .secret(secret("throttled", Arc::new(p.clone()), 60, 600))
        .build()
        .await
        .unwrap();
    let lease = m.issue("throttled", IssueRequest::new()).await.unwrap();
    let before = Utc::now();
    let err = m.revoke(&lease.lease_id).await.unwrap_err();
    assert!(err.is_persistent(), "{err:?}");
    // One provider call: the manager did not re-run it.
    assert_eq!(p.revokes.load(std::sync::atomic::Ordering::SeqCst), 1);
    let rec = m.lookup(&lease.lease_id).await.unwrap();
    // Not irrevocable at once (as a permanent error is): scheduled on the retry policy.
    assert_eq!(rec.state, LeaseState::Revoking);
    assert_eq!(rec.revoke_attempts, 1);
    assert!(
        rec.due_at >= before + chrono::Duration::seconds(44),
        "{}",
        rec.due_at
    );
    assert!(rec.claimed_by.is_none());
    // Once max_attempts persistent failures are recorded, the lease is irrevocable.
    m.revoke(&lease.lease_id).await.unwrap_err();
    m.revoke(&lease.lease_id).await.unwrap_err();
    let rec = m.lookup(&lease.lease_id).await.unwrap();
    assert_eq!(rec.state, LeaseState::Irrevocable);
    assert_eq!(rec.revoke_attempts, 3);
    assert_eq!(p.revokes.load(std::sync::atomic::Ordering::SeqCst), 3);
    m.shutdown().await;
}

#[tokio::test]
async fn renew_is_capped_at_max_ttl_and_typed_errors_follow() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let m = manager(
        &store,
        vec![secret("renewing", Arc::new(provider.clone()), 60, 120)],
    )
    .await;
    let lease = m.issue("renewing", IssueRequest::new()).await.unwrap();
    let r = m
        .renew(&lease.lease_id, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(
        r.expires_at, lease.max_expires_at,
        "capped at issued_at + max_ttl"
    );
    assert_eq!(
        m.renew(&lease.lease_id, None).await.unwrap_err().kind(),
        ErrorKind::RenewLimitReached
    );
    assert_eq!(
        m.renew(&lease.lease_id, Some(Duration::ZERO))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    m.revoke(&lease.lease_id).await.unwrap();
    assert_eq!(
        m.renew(&lease.lease_id, None).await.unwrap_err().kind(),
        ErrorKind::LeaseNotFound
    );

    // An expired lease (worker off, so it is still there).
    let idle = LeaseManager::builder(Arc::new(store.clone()))
        .config(fast_config())
        .run_worker(false)
        .secret(secret("expiring", Arc::new(provider.clone()), 1, 10))
        .build()
        .await
        .unwrap();
    let short = idle.issue("expiring", IssueRequest::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        idle.renew(&short.lease_id, None).await.unwrap_err().kind(),
        ErrorKind::LeaseExpired
    );
    idle.revoke(&short.lease_id).await.unwrap();

    // A provider that cannot renew.
    let fixed = RecordingProvider::new().with_capabilities(Capabilities::new().renewable(false));
    let m2 = manager(&store, vec![secret("fixed", Arc::new(fixed), 60, 600)]).await;
    let l = m2.issue("fixed", IssueRequest::new()).await.unwrap();
    assert!(!l.renewable);
    assert_eq!(
        m2.renew(&l.lease_id, None).await.unwrap_err().kind(),
        ErrorKind::NotRenewable
    );
    m2.revoke(&l.lease_id).await.unwrap();
}

#[tokio::test]
async fn ttl_above_max_is_refused_or_clamped() {
    let store = MemoryStore::new();
    let provider = Arc::new(RecordingProvider::new());
    let clamped = DynamicSecret::builder("clamped", provider.clone())
        .default_ttl(Duration::from_secs(60))
        .max_ttl(Duration::from_secs(120))
        .ttl_over_max(TtlOverMax::Clamp)
        .build()
        .unwrap();
    let m = manager(
        &store,
        vec![secret("strict", provider.clone(), 60, 120), clamped],
    )
    .await;
    let err = m
        .issue("strict", IssueRequest::new().ttl(Duration::from_secs(7200)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TtlExceedsMax);
    assert!(
        err.to_string().contains("ttl 2h exceeds max_ttl 2m"),
        "{err}"
    );
    assert_eq!(provider.creates(), 0, "nothing is created");
    assert!(store.is_empty());
    let l = m
        .issue(
            "clamped",
            IssueRequest::new().ttl(Duration::from_secs(7200)),
        )
        .await
        .unwrap();
    assert!(l.expires_at <= l.max_expires_at);
    assert!((l.expires_at - l.issued_at).num_seconds() == 120);
    assert_eq!(
        m.issue("nope", IssueRequest::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::SecretNotFound
    );
}

#[tokio::test]
async fn issue_above_the_active_lease_limit_is_refused_and_creates_nothing() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let limited = DynamicSecret::builder("limited", Arc::new(provider.clone()))
        .max_active_leases(3)
        .build()
        .unwrap();
    let m = manager(&store, vec![limited]).await;
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(m.issue("limited", IssueRequest::new()).await.unwrap());
    }
    let err = m.issue("limited", IssueRequest::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(provider.creates(), 3);
    assert_eq!(store.len(), 3);
    m.revoke(&leases[0].lease_id).await.unwrap();
    m.issue("limited", IssueRequest::new())
        .await
        .expect("room again after a revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_issues_and_revokes_leave_nothing() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(1));
    let m = manager(
        &store,
        vec![secret("busy", Arc::new(provider.clone()), 300, 600)],
    )
    .await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let l = m.issue("busy", IssueRequest::new()).await.unwrap();
                m.revoke(&l.lease_id).await.unwrap();
                l.credentials.principal().to_string()
            })
        })
        .collect();
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1000, "every username is unique");
    assert!(store.is_empty());
    assert_eq!(provider.live_count(), 0);
    assert_eq!(provider.creates(), 1000);
    assert_eq!(provider.removed_count(), 1000);
    assert!(provider.removed_more_than_once().is_empty());
}

#[tokio::test]
async fn a_failed_create_is_compensated_by_name() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    let m = manager(
        &store,
        vec![secret("comp", Arc::new(faulty.clone()), 60, 600)],
    )
    .await;
    // The backend made the user, but the call reported failure.
    faulty.fail_next(
        Operation::Create,
        1,
        Fault::FailAfter {
            kind: ErrorKind::ProviderUnavailable,
        },
    );
    let err = m.issue("comp", IssueRequest::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProviderUnavailable);
    assert_eq!(provider.creates(), 1);
    assert_eq!(
        provider.live_count(),
        0,
        "the half-made credential was revoked by name"
    );
    assert!(store.is_empty());

    // Compensation itself fails: the record stays for the worker, which finishes the job.
    faulty.fail_next(
        Operation::Create,
        1,
        Fault::FailAfter {
            kind: ErrorKind::ProviderUnavailable,
        },
    );
    faulty.fail_next(Operation::Revoke, 1, Fault::unavailable());
    assert!(m.issue("comp", IssueRequest::new()).await.is_err());
    assert_eq!(store.len(), 1, "kept while the credential may exist");
    assert!(eventually(Duration::from_secs(10), || store.is_empty()).await);
    assert_eq!(provider.live_count(), 0);
}

#[tokio::test]
async fn a_caller_that_drops_the_issue_future_leaks_nothing() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    let m = manager(
        &store,
        vec![secret("dropped", Arc::new(faulty.clone()), 60, 600)],
    )
    .await;
    faulty.fail_next(
        Operation::Create,
        1,
        Fault::Delay(Duration::from_millis(300)),
    );
    let r = tokio::time::timeout(
        Duration::from_millis(50),
        m.issue("dropped", IssueRequest::new()),
    )
    .await;
    assert!(r.is_err(), "the caller gave up");
    assert_eq!(store.len(), 1, "the pending lease names the credential");
    assert!(
        eventually(Duration::from_secs(5), || provider.creates() == 1
            && provider.live_count() == 0
            && store.is_empty())
        .await,
        "the abandoned credential is revoked as soon as it exists"
    );
}

/// Runs a manager on its own runtime and kills the runtime mid-issue: the process dies with
/// the provider call in flight. A second manager on the same store must revoke the credential.
fn crash_during_issue(fault: Fault, same_instance: bool) {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    faulty.fault_nth(Operation::Create, 1, fault);
    let mut cfg = fast_config();
    cfg.issue_timeout = Duration::from_secs(2);
    let build = |cfg: ManagerConfig| {
        let b = LeaseManager::builder(Arc::new(store.clone()))
            .config(cfg)
            .secret(secret("crashy", Arc::new(faulty.clone()), 60, 600));
        if same_instance {
            b.instance_id("node-1")
        } else {
            b
        }
    };

    let rt1 = tokio::runtime::Runtime::new().unwrap();
    rt1.block_on(async {
        let m = build(cfg.clone()).build().await.unwrap();
        let r = tokio::time::timeout(
            Duration::from_millis(300),
            m.issue("crashy", IssueRequest::new()),
        )
        .await;
        assert!(r.is_err(), "the issue is stuck in the provider");
        std::mem::forget(m); // a crash runs no destructors
    });
    rt1.shutdown_background();
    assert_eq!(store.len(), 1, "the write-ahead record survives the crash");

    let rt2 = tokio::runtime::Runtime::new().unwrap();
    rt2.block_on(async {
        let _m = build(cfg.clone()).build().await.unwrap();
        let limit = if same_instance {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(8)
        };
        assert!(
            eventually(limit, || store.is_empty()).await,
            "the restarted manager revokes the stale pending lease"
        );
    });
    assert_eq!(provider.live_count(), 0, "no credential is orphaned");
}

#[test]
fn crash_before_the_provider_creates_anything() {
    crash_during_issue(Fault::Hang, true);
}

#[test]
fn crash_after_the_provider_created_the_credential() {
    crash_during_issue(Fault::HangAfter, true);
}

#[test]
fn crash_recovered_by_another_instance_after_the_issue_deadline() {
    crash_during_issue(Fault::HangAfter, false);
}

#[derive(Debug, Default)]
struct VecSink(Mutex<Vec<AuditEvent>>);

impl AuditSink for VecSink {
    fn record(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test]
async fn every_lifecycle_step_is_audited() {
    let store = MemoryStore::new();
    let sink = Arc::new(VecSink::default());
    let m = LeaseManager::builder(Arc::new(store.clone()))
        .config(fast_config())
        .audit_sink(sink.clone())
        .secret(secret("audited", Arc::new(RecordingProvider::new()), 1, 10))
        .build()
        .await
        .unwrap();
    let a = m
        .issue("audited", IssueRequest::new().identity("svc-a"))
        .await
        .unwrap();
    m.renew(&a.lease_id, None).await.unwrap();
    let b = m.issue("audited", IssueRequest::new()).await.unwrap();
    m.revoke(&b.lease_id).await.unwrap();
    let c = m.issue("audited", IssueRequest::new()).await.unwrap();
    m.force_forget(&c.lease_id).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || store.is_empty()).await);
    let events = sink.0.lock().unwrap().clone();
    let actions: Vec<AuditAction> = events.iter().map(|e| e.action).collect();
    for want in [
        AuditAction::Issue,
        AuditAction::Renew,
        AuditAction::Revoke,
        AuditAction::ForceForget,
        AuditAction::Expire,
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let first = &events[0];
    assert_eq!(first.identity.as_deref(), Some("svc-a"));
    assert_eq!(first.lease_id.as_ref(), Some(&a.lease_id));
    assert!(first.is_success());
}

#[tokio::test]
async fn revoke_secret_revokes_everything_it_issued() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let m = manager(
        &store,
        vec![
            secret("mass", Arc::new(provider.clone()), 300, 600),
            secret("other", Arc::new(provider.clone()), 300, 600),
        ],
    )
    .await;
    for _ in 0..120 {
        m.issue("mass", IssueRequest::new()).await.unwrap();
    }
    let keep = m.issue("other", IssueRequest::new()).await.unwrap();
    let mut last = (0, 0);
    let summary = m
        .revoke_secret_with_progress("mass", |done, total| last = (done, total))
        .await
        .unwrap();
    assert_eq!(summary.revoked, 120);
    assert!(summary.failed.is_empty());
    assert_eq!(last, (120, 120));
    assert_eq!(store.len(), 1);
    assert_eq!(
        provider.live_usernames(),
        vec![keep.credentials.principal().to_string()]
    );
}

#[tokio::test]
async fn reconcile_finds_and_removes_orphans_only_when_applied() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let m = manager(
        &store,
        vec![secret("rec", Arc::new(provider.clone()), 300, 600)],
    )
    .await;
    let leased = m.issue("rec", IssueRequest::new()).await.unwrap();
    let inst = m.installation_id().to_string();
    assert!(
        leased
            .credentials
            .principal()
            .starts_with(&format!("lh-{inst}-")),
        "the default username carries the installation mark"
    );
    let orphan = format!("lh-{inst}-orphan1");
    provider.insert_out_of_band(&orphan);
    provider.insert_out_of_band("lh-otherins-live1");
    provider.insert_out_of_band("lh-unmarked");
    provider.insert_out_of_band("someone-else");
    let dry = m.reconcile("rec", false).await.unwrap();
    assert_eq!(dry.installation, inst);
    assert_eq!(dry.found, 4);
    assert_eq!(dry.orphans.len(), 1);
    assert_eq!(dry.orphans[0].external.id, orphan);
    let mut foreign: Vec<_> = dry.foreign.iter().map(|c| c.external.id.as_str()).collect();
    foreign.sort();
    assert_eq!(foreign, ["lh-otherins-live1", "lh-unmarked"]);
    assert!(dry.removed.is_empty());
    assert!(provider.is_live(&orphan), "dry run removes nothing");
    let applied = m.reconcile("rec", true).await.unwrap();
    assert_eq!(applied.removed.len(), 1);
    assert!(!provider.is_live(&orphan));
    assert!(
        provider.is_live("lh-otherins-live1") && provider.is_live("lh-unmarked"),
        "another installation's users are never removed"
    );
    assert!(
        provider.is_live("someone-else"),
        "users without the prefix are left alone"
    );
    assert!(
        provider.authenticates(&leased.credentials),
        "leased users are left alone"
    );
}

#[tokio::test]
async fn no_secret_reaches_logs_debug_errors_or_the_store() {
    let logs = leasehold_testkit::capture_tracing();
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let faulty = FaultyProvider::new(Arc::new(provider.clone()));
    let m = manager(
        &store,
        vec![secret("leaky", Arc::new(faulty.clone()), 60, 600)],
    )
    .await;
    let lease = m
        .issue("leaky", IssueRequest::new().identity("svc"))
        .await
        .unwrap();
    m.renew(&lease.lease_id, None).await.unwrap();
    let rec = m.lookup(&lease.lease_id).await.unwrap();
    let stored = format!("{rec:?} {}", serde_json::to_string(&rec).unwrap());
    faulty.fail_next(Operation::Revoke, 1, Fault::unavailable());
    let err = m.revoke(&lease.lease_id).await.unwrap_err();
    m.revoke(&lease.lease_id).await.unwrap();
    let c = &lease.credentials;
    leasehold_testkit::assert_no_secret("IssuedLease Debug", &format!("{lease:?}"), c);
    leasehold_testkit::assert_no_secret("the lease record", &stored, c);
    leasehold_testkit::assert_no_secret("error text", &format!("{err} {err:?}"), c);
    leasehold_testkit::assert_no_secret("manager Debug", &format!("{m:?}"), c);
    let text = logs.contents();
    assert!(
        text.contains(lease.lease_id.as_str()),
        "the audit trail names the lease"
    );
    leasehold_testkit::assert_no_secret("TRACE logs", &text, c);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_any_provider_call() {
    let store = MemoryStore::new();
    let faulty = FaultyProvider::new(Arc::new(RecordingProvider::new()));
    let templated = DynamicSecret::builder("templ", Arc::new(faulty.clone()))
        .username_template("{{identity.name}}-{{random 4}}")
        .build()
        .unwrap();
    let m = manager(&store, vec![templated]).await;
    let calls_before = faulty.calls(Operation::Create);
    for req in [
        IssueRequest::new().identity("bad\u{7}name"),
        IssueRequest::new().identity(""),
        IssueRequest::new(), // the template needs an identity
        IssueRequest::new()
            .identity("x")
            .ttl(Duration::from_secs(10 * 24 * 3600)),
    ] {
        let err = m.issue("templ", req.clone()).await.unwrap_err();
        assert!(err.kind().is_invalid_input(), "{req:?}: {err}");
    }
    assert_eq!(faulty.calls(Operation::Create), calls_before);
    assert!(store.is_empty());
    // Bad definitions are refused at build time.
    let p: Arc<dyn DynamicSecretProvider> = Arc::new(RecordingProvider::new());
    assert!(DynamicSecret::builder("bad name", p.clone())
        .build()
        .is_err());
    assert!(DynamicSecret::builder("x", p.clone())
        .default_ttl(Duration::from_secs(100))
        .max_ttl(Duration::from_secs(10))
        .build()
        .is_err());
    assert!(DynamicSecret::builder("x", p.clone())
        .username_template("{{nope}}")
        .build()
        .is_err());
    assert!(DynamicSecret::builder("x", p)
        .username_template("a b {{random 3}}")
        .build()
        .is_err());
}

#[tokio::test]
async fn non_revocable_leases_just_close_at_expiry() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new().with_capabilities(
        Capabilities::new()
            .renewable(false)
            .revocable(false)
            .needs_password(false),
    );
    let m = manager(
        &store,
        vec![secret("sts-like", Arc::new(provider.clone()), 1, 10)],
    )
    .await;
    let l = m.issue("sts-like", IssueRequest::new()).await.unwrap();
    assert!(matches!(
        l.credentials,
        leasehold_core::Credentials::AwsKeys { .. }
    ));
    assert!(eventually(Duration::from_secs(5), || store.is_empty()).await);
    assert_eq!(provider.revoke_calls(), 0, "nothing to revoke");
}

#[tokio::test]
async fn managers_sharing_a_store_revoke_each_lease_once() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(2));
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(
            manager(
                &store,
                vec![secret("shared", Arc::new(provider.clone()), 1, 10)],
            )
            .await,
        );
    }
    for i in 0..150 {
        managers[i % 3]
            .issue("shared", IssueRequest::new())
            .await
            .unwrap();
    }
    drop(managers.pop()); // one instance goes away without shutdown
    assert!(eventually(Duration::from_secs(15), || store.is_empty()).await);
    assert_eq!(provider.live_count(), 0);
    assert_eq!(provider.removed_count(), 150);
    assert!(provider.removed_more_than_once().is_empty());
    for m in &managers {
        m.shutdown().await;
    }
}

mod props {
    use super::*;
    use leasehold_core::manager::renewed_expiry;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn renew_is_min_of_increment_and_max(inc in 1u64..1_000_000, max_after in 0i64..1_000_000) {
            let now = Utc::now();
            let max = now + chrono::Duration::seconds(max_after);
            let got = renewed_expiry(now, Duration::from_secs(inc), max);
            prop_assert!(got <= max);
            prop_assert!(got <= now + chrono::Duration::seconds(inc as i64));
            prop_assert!(got == max || got == now + chrono::Duration::seconds(inc as i64));
        }

        #[test]
        fn effective_ttl_respects_max(default in 1u64..10_000, extra in 0u64..10_000, req in proptest::option::of(1u64..30_000), clamp in any::<bool>()) {
            let max = default + extra;
            let s = DynamicSecret::builder("p", Arc::new(RecordingProvider::new()))
                .default_ttl(Duration::from_secs(default))
                .max_ttl(Duration::from_secs(max))
                .ttl_over_max(if clamp { TtlOverMax::Clamp } else { TtlOverMax::Error })
                .build()
                .unwrap();
            let want = req.unwrap_or(default);
            match s.effective_ttl(req.map(Duration::from_secs)) {
                Ok(ttl) => {
                    prop_assert!(ttl.as_secs() <= max);
                    prop_assert_eq!(ttl.as_secs(), want.min(max));
                    prop_assert!(want <= max || clamp);
                }
                Err(e) => {
                    prop_assert_eq!(e.kind(), ErrorKind::TtlExceedsMax);
                    prop_assert!(want > max && !clamp);
                }
            }
        }
    }
}

mod watching {
    use super::*;
    use leasehold_core::{WatchEvent, WatchOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_revokes_every_watched_credential_before_it_returns() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let m = manager(
            &store,
            vec![secret("w", Arc::new(provider.clone()), 60, 600)],
        )
        .await;
        let kept = m
            .watch("w", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap();
        // A watch dropped without close, and one only kept through a receiver.
        let dropped = m
            .watch("w", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap();
        let rx = m
            .watch("w", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap()
            .subscribe();
        drop(dropped);
        m.shutdown().await;
        assert_eq!(
            provider.live_count(),
            0,
            "shutdown revoked every watch's credential"
        );
        assert!(store.is_empty());
        assert!(!provider.authenticates(&rx.borrow().credentials));
        // close() after shutdown is a no-op, and no new watch starts.
        kept.close().await.unwrap();
        let e = m
            .watch("w", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Shutdown);
        assert_eq!(provider.live_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_leaves_the_old_credential_its_whole_grace() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let m = manager(
            &store,
            vec![secret("lead", Arc::new(provider.clone()), 2, 5)],
        )
        .await;
        let grace = Duration::from_millis(1000);
        let w = m
            .watch(
                "lead",
                IssueRequest::new(),
                WatchOptions::default().grace(grace),
            )
            .await
            .unwrap();
        let mut events = w.events();
        let mut leases = std::collections::HashMap::new();
        let first = w.current();
        leases.insert(first.lease_id.clone(), first.max_expires_at);
        let (mut rotated, mut retired, mut shortened) = (0, 0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < deadline {
            let c = w.current();
            leases.entry(c.lease_id.clone()).or_insert(c.max_expires_at);
            match tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
                Ok(Ok(WatchEvent::Rotated { old, .. })) => {
                    rotated += 1;
                    let left = leases[&old] - Utc::now();
                    assert!(
                        left >= chrono::Duration::milliseconds(900),
                        "rotated with only {left} left before the old lease's max expiry"
                    );
                }
                Ok(Ok(WatchEvent::RetiredRevoked { .. })) => retired += 1,
                Ok(Ok(WatchEvent::GraceShortened { .. })) => shortened += 1,
                _ => {}
            }
        }
        assert!(rotated >= 2, "rotated {rotated} times");
        assert!(retired + 1 >= rotated, "retired {retired} of {rotated}");
        assert_eq!(shortened, 0);
        w.close().await.unwrap();
        assert_eq!(provider.live_count(), 0);
    }

    #[tokio::test]
    async fn a_max_ttl_shorter_than_the_rotation_lead_is_refused() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let m = manager(
            &store,
            vec![secret("tiny", Arc::new(provider.clone()), 2, 5)],
        )
        .await;
        let e = m
            .watch("tiny", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("rotation lead"), "{e}");
        assert!(
            eventually(Duration::from_secs(2), || provider.live_count() == 0
                && store.is_empty())
            .await
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_from_subscribe_keeps_its_watch_alive() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let m = manager(
            &store,
            vec![secret("w", Arc::new(provider.clone()), 60, 600)],
        )
        .await;
        // The watch itself is a temporary: only the receiver is kept.
        let rx = m
            .watch("w", IssueRequest::new(), WatchOptions::default())
            .await
            .unwrap()
            .subscribe();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            provider.authenticates(&rx.borrow().credentials),
            "the credential stays live while a receiver holds the watch"
        );
        drop(rx);
        assert!(
            eventually(Duration::from_secs(5), || provider.live_count() == 0).await,
            "dropping the last receiver ends the watch and revokes"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watched_credential_renews_rotates_and_is_revoked_on_close() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let m = manager(
            &store,
            vec![secret("watched", Arc::new(provider.clone()), 2, 5)],
        )
        .await;
        let w = m
            .watch(
                "watched",
                IssueRequest::new(),
                WatchOptions::default().grace(Duration::from_millis(500)),
            )
            .await
            .unwrap();
        let mut events = w.events();
        let changes = w.subscribe();
        let first = w.current();
        let mut seen = vec![first.clone()];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < deadline {
            let c = w.current();
            assert!(
                provider.authenticates(&c.credentials),
                "current() always works"
            );
            if seen.last().unwrap().lease_id != c.lease_id {
                seen.push(c);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen.len() >= 3,
            "at least two rotations in 12 s with max_ttl 5 s: {}",
            seen.len()
        );
        assert!(
            changes.has_changed().unwrap(),
            "subscribers hear of rotations"
        );
        // Replaced credentials stop working once their grace is over.
        assert!(!provider.authenticates(&first.credentials));
        let mut renewed = 0;
        let mut rotated = 0;
        while let Ok(e) = events.try_recv() {
            match e {
                WatchEvent::Renewed { .. } => renewed += 1,
                WatchEvent::Rotated { .. } => rotated += 1,
                _ => {}
            }
        }
        assert!(
            renewed >= 1 && rotated >= 2,
            "renewed {renewed}, rotated {rotated}"
        );
        w.close().await.unwrap();
        assert_eq!(
            provider.live_count(),
            0,
            "close revokes everything the watch issued"
        );
        assert!(store.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renew_failures_are_retried_and_reported() {
        let store = MemoryStore::new();
        let provider = RecordingProvider::new();
        let faulty = FaultyProvider::new(Arc::new(provider.clone()));
        let m = manager(
            &store,
            vec![secret("wobbly", Arc::new(faulty.clone()), 3, 30)],
        )
        .await;
        faulty.fail_next(Operation::Renew, 2, Fault::unavailable());
        let w = m
            .watch(
                "wobbly",
                IssueRequest::new(),
                WatchOptions::default()
                    .retry_delay(Duration::from_millis(100))
                    .grace(Duration::from_secs(5))
                    .jitter(0.0),
            )
            .await
            .unwrap();
        let mut events = w.events();
        let mut failed = 0;
        let mut renewed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline && !renewed {
            match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Ok(WatchEvent::RefreshFailed { kind, .. })) => {
                    assert_eq!(kind, ErrorKind::ProviderUnavailable);
                    failed += 1;
                }
                Ok(Ok(WatchEvent::Renewed { .. })) => renewed = true,
                _ => {}
            }
            assert!(provider.authenticates(&w.current().credentials));
        }
        assert_eq!(failed, 2, "both failures were reported");
        assert!(renewed, "the third try renewed");
        drop(w); // dropping revokes too
        assert!(eventually(Duration::from_secs(5), || provider.live_count() == 0).await);
    }
}

#[tokio::test]
async fn a_name_taken_by_someone_else_is_never_revoked_by_a_refused_issue() {
    let store = MemoryStore::new();
    let provider = Arc::new(RecordingProvider::new());
    provider.insert_out_of_band("lh-taken");
    let fixed = DynamicSecret::builder("fixed", provider.clone())
        .username_template("{{identity.name}}")
        .build()
        .unwrap();
    let m = manager(&store, vec![fixed]).await;
    let err = m
        .issue("fixed", IssueRequest::new().identity("lh-taken"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(provider.is_live("lh-taken"), "the other user is untouched");
    assert_eq!(provider.removals_of("lh-taken"), 0);
    assert!(store.is_empty(), "the refused lease leaves no record");
    m.shutdown().await;
}

#[tokio::test]
async fn huge_or_hostile_names_are_refused_without_echoing_them_whole() {
    let store = MemoryStore::new();
    let m = manager(&store, vec![]).await;
    let huge = "x".repeat(10_000);
    let err = m.issue(&huge, IssueRequest::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SecretNotFound);
    assert!(
        format!("{err:?}").len() < 1_000,
        "the error repeats the name whole"
    );
    let err = format!("{huge}/abc")
        .parse::<leasehold_core::LeaseId>()
        .unwrap_err();
    assert!(format!("{err:?}").len() < 1_000);
    let p: Arc<dyn DynamicSecretProvider> = Arc::new(RecordingProvider::new());
    let err = DynamicSecret::builder("y".repeat(1_000_000), p)
        .build()
        .unwrap_err();
    assert!(format!("{err:?}").len() < 1_000);
    let err = LeaseManager::builder(Arc::new(store.clone()))
        .instance_id("a\nb")
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    m.shutdown().await;
}

#[tokio::test]
async fn shutdown_right_after_build_stops_the_worker() {
    // On a current-thread runtime the worker has not run yet when shutdown is called; the
    // stop must reach it anyway (a hang here is the failure).
    let store = MemoryStore::new();
    let m = manager(&store, vec![]).await;
    tokio::time::timeout(Duration::from_secs(30), m.shutdown())
        .await
        .expect("shutdown returned");
    drop(m);
    let m = manager(&store, vec![]).await;
    drop(m.clone());
    tokio::time::timeout(Duration::from_secs(30), m.shutdown())
        .await
        .expect("shutdown returned");
}

/// A backend whose create request hangs for the caller but lands on the "server" later, as a
/// request cut short by a timeout can.
#[derive(Debug, Default, Clone)]
struct LateLanding {
    live: Arc<Mutex<std::collections::HashSet<String>>>,
    revokes: Arc<std::sync::atomic::AtomicU32>,
}

#[async_trait::async_trait]
impl DynamicSecretProvider for LateLanding {
    fn kind(&self) -> &'static str {
        "late-landing"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    async fn validate(&self) -> leasehold_core::Result<()> {
        Ok(())
    }
    async fn create(
        &self,
        r: &leasehold_core::CreateRequest,
    ) -> leasehold_core::Result<leasehold_core::Created> {
        let live = self.live.clone();
        let name = r.username.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            live.lock().unwrap().insert(name);
        });
        std::future::pending().await
    }
    async fn revoke(&self, e: &leasehold_core::ExternalRef) -> leasehold_core::Result<()> {
        self.revokes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.live.lock().unwrap().remove(&e.id);
        Ok(())
    }
}

#[tokio::test]
async fn a_create_that_times_out_and_lands_later_is_revoked_after_the_grace() {
    let store = MemoryStore::new();
    let backend = LateLanding::default();
    let mut config = fast_config();
    // The create is cut after 200 ms; its request lands at 400 ms.
    config.issue_timeout = Duration::from_millis(1200);
    config.create_grace = Duration::from_secs(1);
    let m = LeaseManager::builder(Arc::new(store.clone()))
        .config(config)
        .secret(secret("late", Arc::new(backend.clone()), 60, 120))
        .build()
        .await
        .unwrap();
    let err = m.issue("late", IssueRequest::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // The lease is kept, waiting out the grace: not revoked by name before the request lands.
    let leases = m.list(&LeaseFilter::default()).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].state, LeaseState::Revoking);
    assert_eq!(backend.revokes.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        eventually(Duration::from_secs(5), || backend
            .live
            .lock()
            .unwrap()
            .len()
            == 1)
        .await,
        "the late request landed"
    );
    assert!(
        eventually(Duration::from_secs(10), || store.is_empty()).await,
        "the lease is revoked after the grace"
    );
    assert!(
        backend.live.lock().unwrap().is_empty(),
        "no credential left"
    );
    assert_eq!(backend.revokes.load(std::sync::atomic::Ordering::SeqCst), 1);
    m.shutdown().await;
}

#[tokio::test]
async fn revoke_during_the_workers_own_revocation_waits_instead_of_revoking_twice() {
    let store = MemoryStore::new();
    // Each revoke takes 300 ms, so the caller's revoke arrives while the worker's runs.
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(300));
    let m = manager(
        &store,
        vec![secret("race", Arc::new(provider.clone()), 1, 10)],
    )
    .await;
    let lease = m.issue("race", IssueRequest::new()).await.unwrap();
    // Wait until the worker has claimed the expired lease (its revoke then takes 300 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let l = store
            .get(&lease.lease_id)
            .await
            .unwrap()
            .expect("still recorded");
        if l.is_claimed_at(Utc::now()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker claims the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m.revoke(&lease.lease_id)
        .await
        .expect("revoke waits, then finds it revoked");
    assert!(store.is_empty());
    assert_eq!(provider.revoke_calls(), 1, "revoked once, not twice");
    assert!(provider.removed_more_than_once().is_empty());
    m.shutdown().await;
}

// ---------------------------------------------------------------- installations and lifecycle

#[tokio::test]
async fn two_installations_on_one_backend_reconcile_only_their_own() {
    let provider = RecordingProvider::new();
    let (store_a, store_b) = (MemoryStore::new(), MemoryStore::new());
    let a = manager(
        &store_a,
        vec![secret("s", Arc::new(provider.clone()), 300, 600)],
    )
    .await;
    let b = manager(
        &store_b,
        vec![secret("s", Arc::new(provider.clone()), 300, 600)],
    )
    .await;
    assert_ne!(a.installation_id(), b.installation_id());
    let live_a = a.issue("s", IssueRequest::new()).await.unwrap();
    let lost_b = b.issue("s", IssueRequest::new()).await.unwrap();
    // B loses its record of one lease: its user is B's orphan.
    let rec = store_b.get(&lost_b.lease_id).await.unwrap().unwrap();
    store_b.delete(&rec.id, rec.version).await.unwrap();
    let report = b.reconcile("s", true).await.unwrap();
    assert_eq!(
        report
            .removed
            .iter()
            .map(|c| c.external.id.as_str())
            .collect::<Vec<_>>(),
        [lost_b.credentials.principal()]
    );
    assert_eq!(report.foreign.len(), 1);
    assert_eq!(
        report.foreign[0].external.id,
        live_a.credentials.principal()
    );
    assert!(
        provider.authenticates(&live_a.credentials),
        "A's live user survives B's reconcile"
    );
    assert!(!provider.authenticates(&lost_b.credentials));
    // And the other way round: A sees nothing of its own to remove.
    let report = a.reconcile("s", true).await.unwrap();
    assert!(report.removed.is_empty() && report.orphans.is_empty());
    assert!(provider.authenticates(&live_a.credentials));
}

#[tokio::test]
async fn reconcile_apply_is_refused_when_the_template_drops_the_mark() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let s = DynamicSecret::builder("custom", Arc::new(provider.clone()))
        .default_ttl(Duration::from_secs(60))
        .max_ttl(Duration::from_secs(600))
        .username_template("app-{{random 10}}")
        .build()
        .unwrap();
    let m = manager(&store, vec![s]).await;
    provider.insert_out_of_band("lh-whatever");
    let e = m.reconcile("custom", true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("installation mark"), "{e}");
    assert!(provider.is_live("lh-whatever"));
    let dry = m.reconcile("custom", false).await.unwrap();
    assert!(dry.prefix_not_guaranteed);
}

#[tokio::test]
async fn a_secret_name_registered_twice_is_refused() {
    let store = MemoryStore::new();
    let provider: Arc<dyn DynamicSecretProvider> = Arc::new(RecordingProvider::new());
    let e = LeaseManager::builder(Arc::new(store.clone()))
        .secret(secret("twice", provider.clone(), 60, 600))
        .secret(secret("twice", provider.clone(), 60, 600))
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let m = manager(&store, vec![secret("once", provider.clone(), 60, 600)]).await;
    let e = m
        .register(secret("once", provider, 60, 600))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test]
async fn the_ttl_counts_from_activation_not_from_the_request() {
    let store = MemoryStore::new();
    // The provider takes 1.5 s to make a credential; the TTL is 2 s.
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(1500));
    let m = manager(
        &store,
        vec![secret("slow", Arc::new(provider.clone()), 2, 600)],
    )
    .await;
    let asked = Utc::now();
    let lease = m.issue("slow", IssueRequest::new()).await.unwrap();
    let returned = Utc::now();
    assert!(returned - asked >= chrono::Duration::milliseconds(1500));
    let left = lease.expires_at - returned;
    assert!(
        left > chrono::Duration::milliseconds(1800),
        "a 2 s lease must have about 2 s left when issue returns, had {left}"
    );
    assert_eq!(
        store
            .get(&lease.lease_id)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        lease.expires_at
    );
}

#[tokio::test]
async fn an_issue_whose_max_ttl_runs_out_while_waiting_fails_and_leaves_nothing() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(1500));
    let s = DynamicSecret::builder("short", Arc::new(provider.clone()))
        .default_ttl(Duration::from_secs(1))
        .max_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let m = manager(&store, vec![s]).await;
    let e = m.issue("short", IssueRequest::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LeaseExpired, "{e}");
    assert!(
        eventually(Duration::from_secs(5), || provider.live_count() == 0
            && store.is_empty())
        .await,
        "the credential is revoked and the record dropped"
    );
}

#[tokio::test]
async fn a_restart_with_the_same_instance_id_takes_back_claims_on_expired_leases_at_once() {
    let store = MemoryStore::new();
    let provider = RecordingProvider::new();
    let mut config = fast_config();
    config.claim_hold = Duration::from_secs(3600);
    let first = LeaseManager::builder(Arc::new(store.clone()))
        .config(config.clone())
        .instance_id("host-a")
        .run_worker(false)
        .secret(secret("s", Arc::new(provider.clone()), 1, 600))
        .build()
        .await
        .unwrap();
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(first.issue("s", IssueRequest::new()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The dead worker had claimed them (for an hour) and never revoked them.
    let claimed = store
        .claim_due(Utc::now(), "host-a", Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    drop(first);
    let _second = LeaseManager::builder(Arc::new(store.clone()))
        .config(config)
        .instance_id("host-a")
        .secret(secret("s", Arc::new(provider.clone()), 1, 600))
        .build()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || provider.live_count() == 0).await,
        "the restarted instance revokes its own claimed leases at once"
    );
    assert!(eventually(Duration::from_secs(2), || store.is_empty()).await);
}

#[test]
fn identities_with_invisible_formatting_are_refused_and_length_is_in_characters() {
    for bad in [
        "evil\u{202E}gpj.exe",
        "zero\u{200B}width",
        "bom\u{FEFF}",
        "iso\u{2066}late",
    ] {
        let e = IssueRequest::new().identity(bad).check().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert!(e.to_string().contains("invisible"), "{e}");
    }
    // 256 characters of three bytes each are fine; 257 are not, and the message counts chars.
    IssueRequest::new()
        .identity("é".repeat(256))
        .check()
        .unwrap();
    let e = IssueRequest::new()
        .identity("€".repeat(257))
        .check()
        .unwrap_err();
    assert!(e.to_string().contains("it has 257"), "{e}");
}

#[derive(Debug, Default, Clone)]
struct Collect(Arc<Mutex<Vec<leasehold_core::Alert>>>);

impl leasehold_core::AlertHook for Collect {
    fn alert(&self, alert: &leasehold_core::Alert) {
        self.0.lock().unwrap().push(alert.clone());
    }
}

#[tokio::test]
async fn alerts_fire_on_quota_refusals_repeated_revoke_failures_and_irrevocable_leases() {
    use leasehold_core::{AlertReason, Alerting};
    let store = MemoryStore::new();
    let faulty = FaultyProvider::new(Arc::new(RecordingProvider::new()));
    let hook = Collect::default();
    let s = DynamicSecret::builder("alerting", Arc::new(faulty.clone()))
        .default_ttl(Duration::from_secs(60))
        .max_ttl(Duration::from_secs(600))
        .max_active_leases(1)
        .build()
        .unwrap();
    let mut config = fast_config();
    config.retry =
        RetryPolicy::new(Duration::from_millis(20), 4).max_delay(Duration::from_millis(40));
    let m = LeaseManager::builder(store.clone())
        .config(config)
        .audit_sink(Arc::new(Alerting::new(hook.clone()).repeated_after(2)))
        .secret(s)
        .build()
        .await
        .unwrap();
    let lease = m.issue("alerting", IssueRequest::new()).await.unwrap();
    let e = m.issue("alerting", IssueRequest::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
    // Four temporary failures: attempts 1..3 are retries (alerts from the 2nd), the 4th gives up.
    faulty.fail_always(Operation::Revoke, Fault::unavailable());
    let _ = m.revoke(&lease.lease_id).await.unwrap_err();
    assert!(
        eventually(Duration::from_secs(5), || {
            hook.0
                .lock()
                .unwrap()
                .iter()
                .any(|a| a.reason == AlertReason::Irrevocable)
        })
        .await
    );
    let alerts = hook.0.lock().unwrap().clone();
    let reasons: Vec<AlertReason> = alerts.iter().map(|a| a.reason).collect();
    assert_eq!(
        reasons,
        [
            AlertReason::QuotaRefused,
            AlertReason::RepeatedRevokeFailures(2),
            AlertReason::RepeatedRevokeFailures(3),
            AlertReason::Irrevocable
        ]
    );
    let irrevocable = alerts.last().unwrap();
    assert_eq!(irrevocable.event.lease_id.as_ref(), Some(&lease.lease_id));
    assert_eq!(irrevocable.event.secret, "alerting");
    assert_eq!(
        irrevocable.event.principal.as_deref(),
        Some(lease.credentials.principal())
    );
    assert!(
        irrevocable.event.message.is_some(),
        "carries the last error"
    );
    assert_eq!(irrevocable.event.attempts, 4);
}
