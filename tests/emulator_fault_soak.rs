//! Fault soak through the real AWS providers: a `LeaseManager` issues, renews, revokes and lets
//! expire IAM users (`leasehold-iam`) and ElastiCache RBAC users (`leasehold-elasticache`) on
//! the AWS emulator while its fault endpoint makes about 30 % of their calls fail: throttling,
//! HTTP 500 and 503, latency longer than the manager's revoke timeout (a hang whose request
//! still lands afterwards), and a small share of permanent `AccessDenied` on `DeleteUser`.
//!
//! Then the faults are cleared, the manager finishes, and the emulator's own listings are held
//! against the lease store and the audit trail:
//!
//! - no credential exists without a lease record;
//! - every lease that is gone was revoked exactly once (one successful `revoke` / `expire`
//!   audit event, compensations of failed issues included);
//! - every lease still recorded is `Irrevocable`, its last error is the injected denial, and
//!   `manager.list` shows it; an operator's `revoke` then removes it.
//!
//! Sizes: 240 IAM and 120 ElastiCache lifecycles per soak (25 to 40 s each on 2 cores, the
//! four soaks about 90 s); `LEASEHOLD_LONG=1` makes them 10,000 and 1,000 (about 18 minutes,
//! bound by the emulator's ~250 IAM calls/s).
//! `LEASEHOLD_SOAK_SEED` replays the emulator's fault draws (the order of concurrent calls
//! still varies from run to run).
//!
//! A hang delays a call and then lets it through. Hangs here outlast the revoke timeout, and
//! on the create path they outlast the create timeout when two stack on one issue. The
//! `*_create_landing_after_its_compensation_leaks_no_user` tests make the hangs long enough
//! that a single `CreateUser` outlasts the create timeout: the request lands after the issue
//! has failed, and the manager's `create_grace` (a timed-out lease is revoked by name only
//! after it) must catch the user it makes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_iam::config::retry::RetryConfig;
use futures::StreamExt;
use leasehold::core::template::random_lowercase;
use leasehold::elasticache::{ElastiCacheConfig, ElastiCacheProvider, Engine, Target};
use leasehold::iam::{IamUserConfig, IamUserProvider};
use leasehold::store_sql::SqliteStore;
use leasehold::{
    AuditAction, AuditEvent, AuditSink, DynamicSecret, DynamicSecretProvider, ErrorKind,
    IssueRequest, LeaseFilter, LeaseManager, LeaseRecord, LeaseState, ManagerConfig, MemoryStore,
    RetryPolicy,
};
use leasehold_testkit::servers::{
    skip_or_panic, unique_name, AwsEmulator, FaultSpec, MirrorKind, TransitionKind,
};

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::soak/*"}]}"#;
/// The message of the injected permanent denial: the irrevocable leases' last error names it.
const DENIAL: &str = "soak: injected permanent denial";
const PATIENCE: Duration = Duration::from_secs(90);
static IAM_SOAK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static ELASTICACHE_SOAK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn long() -> bool {
    std::env::var("LEASEHOLD_LONG").is_ok_and(|v| v == "1")
}

fn run_seed() -> u64 {
    std::env::var("LEASEHOLD_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        >> 1
}

/// Every audit event, kept for counting.
#[derive(Debug, Default)]
struct Audit(Mutex<Vec<AuditEvent>>);

impl AuditSink for Audit {
    fn record(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Audit {
    fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// How the faults of one service are shaped. Each fault fires on its share of the calls that
/// reach it (they are tried in order), so together they hit about 30 % of all calls.
struct FaultMix {
    service: &'static str,
    /// How long a "hang" delays a call before the emulator lets it through.
    hang: Duration,
}

impl FaultMix {
    /// The faults, in the order the emulator tries them, with a label each.
    fn specs(&self, seed: u64) -> Vec<(&'static str, FaultSpec)> {
        let any = |spec: FaultSpec, p: f64, n: u64| {
            spec.service(self.service)
                .always()
                .probability(p)
                .seed(seed.wrapping_add(n))
        };
        vec![
            // Permanent: a few DeleteUser calls are refused; such leases end irrevocable.
            (
                "denied",
                any(
                    FaultSpec::fail("DeleteUser", "AccessDenied")
                        .status(403)
                        .message(DENIAL),
                    0.03,
                    1,
                ),
            ),
            ("throttled", any(FaultSpec::throttle("*"), 0.12, 2)),
            (
                "500",
                any(FaultSpec::fail("*", "InternalFailure").status(500), 0.08, 3),
            ),
            (
                "503",
                any(
                    FaultSpec::fail("*", "ServiceUnavailable").status(503),
                    0.07,
                    4,
                ),
            ),
            ("hang", any(FaultSpec::latency("*", self.hang), 0.04, 5)),
        ]
    }

    async fn arm(&self, aws: &AwsEmulator, seed: u64) {
        for (_, spec) in self.specs(seed) {
            aws.inject_fault(spec).await;
        }
    }

    /// Clears the service's faults; how many calls they saw and how often each fired.
    async fn disarm(&self, aws: &AwsEmulator, seed: u64) -> FaultTally {
        let taken = aws.take_faults(Some(self.service), None, None).await;
        let labels = self.specs(seed);
        let mut tally = FaultTally::default();
        for (label, spec) in &labels {
            let fault = taken
                .iter()
                .find(|f| {
                    f["operation"] == spec.operation.as_str()
                        && f["seed"].as_u64() == spec.seed
                        && f["service"] == self.service
                })
                .unwrap_or_else(|| panic!("fault {label} still armed: {taken:?}"));
            let fired = fault["fired"].as_u64().unwrap_or_default();
            tally.fired.push((label, fired));
            if spec.operation == "*" {
                tally.calls = tally
                    .calls
                    .max(fault["matched"].as_u64().unwrap_or_default());
            }
        }
        tally
    }
}

#[derive(Debug, Default)]
struct FaultTally {
    /// Calls of the service while the faults were armed.
    calls: u64,
    fired: Vec<(&'static str, u64)>,
}

impl FaultTally {
    fn total(&self) -> u64 {
        self.fired.iter().map(|(_, n)| n).sum()
    }

    fn of(&self, label: &str) -> u64 {
        self.fired
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, n)| *n)
            .unwrap_or_default()
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self.fired.iter().map(|(l, n)| format!("{l} {n}")).collect();
        format!(
            "{} faults fired in {} calls ({:.0} %: {})",
            self.total(),
            self.calls,
            100.0 * self.total() as f64 / self.calls.max(1) as f64,
            parts.join(", ")
        )
    }

    /// The soak cannot pass without faults: every kind fired, and about 30 % of all calls.
    fn assert_real(&self, what: &str) {
        for (label, n) in &self.fired {
            assert!(
                *n > 0,
                "{what}: no {label} fault fired ({})",
                self.summary()
            );
        }
        let share = self.total() as f64 / self.calls.max(1) as f64;
        assert!(
            (0.15..=0.45).contains(&share),
            "{what}: faults should hit about 30 % of the calls ({})",
            self.summary()
        );
    }
}

fn manager_config(revoke_timeout: Duration, issue_timeout: Duration) -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.retry = RetryPolicy::new(Duration::from_millis(50), 30)
        .max_delay(Duration::from_millis(400))
        .irrevocable_retry(Duration::from_secs(3600));
    c.revoke_timeout = revoke_timeout;
    c.issue_timeout = issue_timeout;
    c.claim_hold = Duration::from_secs(5);
    c.max_idle = Duration::from_millis(100);
    c.revoke_concurrency = 16;
    // Longer than any hang: a timed-out create is revoked by name only after it has landed.
    c.create_grace = Duration::from_secs(5);
    c
}

/// The emulator's SDK settings with the SDK's own retries kept short (standard mode, 3
/// attempts, 20 ms first backoff), so that the manager's timeouts, not seconds of backoff per
/// call, decide what a run sees.
macro_rules! fast_retry_sdk_config {
    ($aws:expr) => {
        $aws.sdk_config()
            .await
            .to_builder()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(20)),
            )
            .build()
    };
}

/// How many leases are pending, active or being revoked.
async fn open_leases(manager: &LeaseManager) -> u64 {
    manager
        .store()
        .count(&LeaseFilter::all().states([
            LeaseState::Pending,
            LeaseState::Active,
            LeaseState::Revoking,
        ]))
        .await
        .unwrap()
}

/// Issue, then revoke (a quarter), renew (a quarter) or leave to expire (the rest), `total`
/// times, `concurrency` at a time, holding back while `max_open` leases are open: revoking
/// costs the emulator several times the calls of issuing, and an unbounded backlog would
/// measure the emulator's queue rather than the manager. Returns the failed issues, by kind.
async fn drive(
    manager: &LeaseManager,
    secret: &str,
    total: usize,
    concurrency: usize,
    max_open: u64,
) -> FailedIssues {
    let failed: Vec<Option<ErrorKind>> = futures::stream::iter(0..total)
        .map(|i| {
            let m = manager.clone();
            let secret = secret.to_string();
            async move {
                while open_leases(&m).await >= max_open {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let lease = match m.issue(&secret, IssueRequest::new()).await {
                    Ok(lease) => lease,
                    Err(e) => return Some(e.kind()),
                };
                match i % 4 {
                    // A failed revoke stays scheduled for the worker.
                    0 => {
                        let _ = m.revoke(&lease.lease_id).await;
                    }
                    1 => {
                        let _ = m.renew(&lease.lease_id, None).await;
                    }
                    _ => {}
                }
                None
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut by_kind: HashMap<&'static str, usize> = HashMap::new();
    for kind in failed.into_iter().flatten() {
        *by_kind.entry(kind.as_str()).or_default() += 1;
    }
    FailedIssues(by_kind)
}

/// Issues that failed (a fault got through every retry, or a hang outlasted the create
/// timeout), by error kind.
struct FailedIssues(HashMap<&'static str, usize>);

impl std::fmt::Display for FailedIssues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<_> = self.0.iter().collect();
        kinds.sort();
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "{} issues failed", self.count())?;
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

impl FailedIssues {
    fn count(&self) -> usize {
        self.0.values().sum()
    }
}

/// Waits until no lease is pending, active or being revoked.
async fn settle(manager: &LeaseManager, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    // The leases still open are at most the driver's `max_open`: a bounded wait.
    loop {
        let open = manager
            .list(&LeaseFilter::all().states([
                LeaseState::Pending,
                LeaseState::Active,
                LeaseState::Revoking,
            ]))
            .await
            .unwrap();
        if open.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for l in open.iter().take(10) {
                eprintln!(
                    "{what}: open {} {:?} attempts={} due={} error={:?}",
                    l.id, l.state, l.revoke_attempts, l.due_at, l.last_error
                );
            }
            panic!("{what}: {} leases did not settle", open.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the soak left, checked against the backend's listing (`listed`: the credentials of
/// this run that the emulator still has, by the lease's principal).
struct Outcome {
    lifecycles: usize,
    irrevocable: Vec<LeaseRecord>,
    /// Failed revocation attempts that were retried, and how many of them timed out (hangs).
    retries: usize,
    timeouts: usize,
}

impl Outcome {
    fn summary(&self) -> String {
        format!(
            "{} revoke retries ({} timed out), {} irrevocable",
            self.retries,
            self.timeouts,
            self.irrevocable.len()
        )
    }
}

async fn check_outcome(
    what: &str,
    manager: &LeaseManager,
    audit: &Audit,
    listed: &HashSet<String>,
    tally: &FaultTally,
) -> Outcome {
    let remaining = manager.list(&LeaseFilter::all()).await.unwrap();
    let listed_irrevocable: HashSet<String> = manager
        .list(&LeaseFilter::all().state(LeaseState::Irrevocable))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id.to_string())
        .collect();
    for l in &remaining {
        assert_eq!(
            l.state,
            LeaseState::Irrevocable,
            "{what}: lease {} left {:?} ({:?})",
            l.id,
            l.state,
            l.last_error
        );
        let err = l.last_error.as_deref().unwrap_or_default();
        assert!(
            err.contains(DENIAL) && err.contains("AccessDenied"),
            "{what}: lease {} is irrevocable without the injected permanent fault: {err}",
            l.id
        );
        assert!(
            listed_irrevocable.contains(l.id.as_str()),
            "{what}: irrevocable lease {} is not listed by state",
            l.id
        );
    }
    assert!(
        remaining.len() as u64 <= tally.of("denied"),
        "{what}: {} irrevocable leases but only {} denials were injected",
        remaining.len(),
        tally.of("denied")
    );

    // No credential without a lease: what the emulator still has is what irrevocable leases
    // name (their DeleteUser was refused).
    let principals: HashSet<String> = remaining
        .iter()
        .map(|l| l.external.id.to_ascii_lowercase())
        .collect();
    let orphans: Vec<&String> = listed.difference(&principals).collect();
    let events = audit.events();
    if !orphans.is_empty() {
        // What the manager did with the leases that named them.
        for o in orphans.iter().take(5) {
            let trail: Vec<String> = events
                .iter()
                .filter(|e| {
                    e.principal.as_deref().map(str::to_ascii_lowercase).as_ref() == Some(*o)
                })
                .map(|e| {
                    format!(
                        "{}:{}",
                        e.action,
                        e.error.map(|k| k.as_str()).unwrap_or("ok")
                    )
                })
                .collect();
            eprintln!("{what}: orphan {o}: {}", trail.join(" "));
        }
    }
    assert!(
        orphans.is_empty(),
        "{what}: {} credentials exist with no lease: {:?}",
        orphans.len(),
        orphans.iter().take(10).collect::<Vec<_>>()
    );

    // Exactly one successful revocation for every lease that is gone, none for those left.
    let mut issued: HashSet<String> = HashSet::new();
    let mut revoked: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let Some(id) = e.lease_id.as_ref().map(|l| l.to_string()) else {
            continue;
        };
        match e.action {
            AuditAction::Issue => {
                issued.insert(id);
            }
            AuditAction::Revoke | AuditAction::Expire if e.is_success() => {
                *revoked.entry(id).or_default() += 1;
            }
            _ => {}
        }
    }
    let left: HashSet<String> = remaining.iter().map(|l| l.id.to_string()).collect();
    for id in &issued {
        let n = revoked.get(id).copied().unwrap_or_default();
        let expected = usize::from(!left.contains(id));
        if n != expected {
            let trail: Vec<String> = events
                .iter()
                .filter(|e| e.lease_id.as_ref().map(|l| l.as_str()) == Some(id.as_str()))
                .map(|e| {
                    format!(
                        "{} {}:{}",
                        e.at.format("%H:%M:%S%.3f"),
                        e.action,
                        e.error.map(|k| k.as_str()).unwrap_or("ok")
                    )
                })
                .collect();
            panic!(
                "{what}: lease {id} has {n} successful revocations, expected {expected}; its audit trail: {}",
                trail.join(", ")
            );
        }
    }
    for id in revoked.keys() {
        assert!(issued.contains(id), "{what}: revoked {id} was never issued");
    }
    let retries: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.action == AuditAction::RevokeRetry)
        .collect();
    Outcome {
        lifecycles: issued.len(),
        irrevocable: remaining,
        retries: retries.len(),
        timeouts: retries
            .iter()
            .filter(|e| e.error == Some(ErrorKind::Timeout))
            .count(),
    }
}

/// The operator's way out once the denial is lifted: revoke the irrevocable leases again.
async fn operator_revokes(
    what: &str,
    manager: &LeaseManager,
    audit: &Audit,
    leases: &[LeaseRecord],
) {
    for l in leases {
        manager
            .revoke(&l.id)
            .await
            .unwrap_or_else(|e| panic!("{what}: operator revoke of {} failed: {e}", l.id));
    }
    assert!(manager.list(&LeaseFilter::all()).await.unwrap().is_empty());
    let events = audit.events();
    for l in leases {
        let n = events
            .iter()
            .filter(|e| {
                e.lease_id.as_ref() == Some(&l.id)
                    && matches!(e.action, AuditAction::Revoke | AuditAction::Expire)
                    && e.is_success()
            })
            .count();
        assert_eq!(n, 1, "{what}: lease {} revoked {n} times", l.id);
    }
}

async fn iam_users(iam: &aws_sdk_iam::Client, path: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut pages = iam.list_users().path_prefix(path).into_paginator().send();
    while let Some(page) = pages.next().await {
        for u in page.expect("ListUsers").users() {
            if u.path() == path {
                out.insert(u.user_name().to_ascii_lowercase());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_user_lifecycles_under_thirty_percent_emulator_faults() {
    // Longer than the revoke timeout (1 s); two of them on one issue outlast the create
    // timeout (2 s), one alone lands within the provider's absence re-check after it.
    iam_soak(
        "iam_user_lifecycles_under_thirty_percent_emulator_faults",
        Duration::from_millis(1200),
    )
    .await;
}

/// `CreateUser` calls that hang past the create timeout and land after the issue failed: the
/// lease stays until `create_grace` has passed, then the user is revoked by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_create_landing_after_its_compensation_leaks_no_user() {
    iam_soak(
        "iam_create_landing_after_its_compensation_leaks_no_user",
        Duration::from_millis(3000),
    )
    .await;
}

async fn iam_soak(test: &str, hang: Duration) {
    // The faults are armed per service on the shared emulator: one soak per service at a time.
    let _one_at_a_time = IAM_SOAK.lock().await;
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    let (total, concurrency) = if long() { (10_000, 16) } else { (240, 16) };
    let seed = run_seed();
    let started = Instant::now();
    let sdk = fast_retry_sdk_config!(aws);
    let iam = aws_sdk_iam::Client::new(&aws.sdk_config().await);
    let path = format!("/{}/", unique_name("lh-soak"));
    // The provider's absence re-check (0.5 s) must stay within the revoke timeout, and moto
    // is consistent at once (1 s window).
    let provider = IamUserProvider::from_sdk_config(
        IamUserConfig::new()
            .sweep_service_specific_credentials(false)
            .path(&path)
            .inline_policy(POLICY)
            .ready_timeout(Duration::from_secs(2))
            .absence_recheck_delay(Duration::from_millis(500))
            .consistency_window(Duration::from_secs(1)),
        &sdk,
    )
    .unwrap();
    let mix = FaultMix {
        service: "iam",
        hang,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!(
        "sqlite://{}",
        dir.path().join("leases.db").display()
    ))
    .await
    .unwrap();
    let audit = Arc::new(Audit::default());
    // The TTL outlasts the longest issue (3 s; see the module docs).
    let secret = DynamicSecret::builder("soak-iam", Arc::new(provider))
        .default_ttl(Duration::from_secs(4))
        .max_ttl(Duration::from_secs(8))
        .build()
        .unwrap();
    let manager = LeaseManager::builder(Arc::new(store))
        .config(manager_config(
            Duration::from_secs(1),
            Duration::from_secs(3),
        ))
        .audit_sink(audit.clone())
        .secret(secret)
        .build()
        .await
        .unwrap();

    mix.arm(&aws, seed).await;
    let failed_issues = drive(&manager, "soak-iam", total, concurrency, 120).await;
    let tally = mix.disarm(&aws, seed).await;
    settle(&manager, "iam").await;
    // A hung call lands when its delay is over; give the last ones time to land.
    tokio::time::sleep(mix.hang + Duration::from_millis(500)).await;
    settle(&manager, "iam").await;

    tally.assert_real("iam");
    assert!(failed_issues.count() < total, "some issues succeeded");
    let listed = iam_users(&iam, &path).await;
    let outcome = check_outcome("iam", &manager, &audit, &listed, &tally).await;
    assert_eq!(outcome.lifecycles, total, "every issue left an audit event");
    eprintln!(
        "emulator fault soak [iam]: {} lifecycles ({failed_issues}), {}, {}, {:.1}s (LEASEHOLD_SOAK_SEED={seed})",
        outcome.lifecycles,
        tally.summary(),
        outcome.summary(),
        started.elapsed().as_secs_f64()
    );

    operator_revokes("iam", &manager, &audit, &outcome.irrevocable).await;
    let left = iam_users(&iam, &path).await;
    assert!(
        left.is_empty(),
        "iam: users left after the operator's revoke: {left:?}"
    );
    manager.shutdown().await;
}

/// A serverless cache whose user group holds a locked `default` user, as in production.
struct Cache {
    ec: aws_sdk_elasticache::Client,
    group: String,
    cache: String,
    default_user: String,
    port: u16,
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ec_user_status(ec: &aws_sdk_elasticache::Client, id: &str) -> Option<String> {
    match ec.describe_users().user_id(id).send().await {
        Ok(out) => out
            .users()
            .first()
            .map(|u| u.status().unwrap_or_default().to_string()),
        Err(e) if e.code() == Some("UserNotFound") => None,
        Err(e) => panic!("DescribeUsers: {e:?}"),
    }
}

async fn ec_group(ec: &aws_sdk_elasticache::Client, id: &str) -> (String, Vec<String>) {
    let out = ec
        .describe_user_groups()
        .user_group_id(id)
        .send()
        .await
        .expect("DescribeUserGroups");
    let g = &out.user_groups()[0];
    (
        g.status().unwrap_or_default().to_string(),
        g.user_ids()
            .iter()
            .map(|u| u.to_ascii_lowercase())
            .collect(),
    )
}

impl Cache {
    async fn new(aws: &AwsEmulator) -> Cache {
        let ec = aws_sdk_elasticache::Client::new(&aws.sdk_config().await);
        let group = unique_name("soak-g");
        let cache = unique_name("soak-c");
        let default_user = unique_name("soak-def");
        aws.set_modifying(
            TransitionKind::UserGroup,
            Some(&group),
            Duration::from_millis(300),
        )
        .await;
        ec.create_user()
            .user_id(&default_user)
            .user_name("default")
            .engine("redis")
            .passwords(format!("Dflt-{}", random_lowercase(24)))
            .access_string("off -@all")
            .send()
            .await
            .expect("CreateUser default");
        wait_for("default user active", || async {
            ec_user_status(&ec, &default_user).await.as_deref() == Some("active")
        })
        .await;
        ec.create_user_group()
            .user_group_id(&group)
            .engine("redis")
            .user_ids(&default_user)
            .send()
            .await
            .expect("CreateUserGroup");
        wait_for("group active", || async {
            ec_group(&ec, &group).await.0 == "active"
        })
        .await;
        ec.create_serverless_cache()
            .serverless_cache_name(&cache)
            .engine("redis")
            .user_group_id(&group)
            .send()
            .await
            .expect("CreateServerlessCache");
        let mirror = aws
            .mirror(MirrorKind::ServerlessCache, &cache)
            .await
            .expect("the serverless cache has a mirror");
        Cache {
            ec,
            group,
            cache,
            default_user,
            port: mirror.port,
        }
    }

    /// This run's users (`prefix`) that the emulator lists, and the group's members besides
    /// its `default` user.
    async fn listed(&self, prefix: &str) -> (HashSet<String>, HashSet<String>) {
        let mut users = HashSet::new();
        let mut pages = self.ec.describe_users().into_paginator().send();
        while let Some(page) = pages.next().await {
            for u in page.expect("DescribeUsers").users() {
                let id = u.user_id().unwrap_or_default().to_ascii_lowercase();
                if id.starts_with(prefix) {
                    users.insert(id);
                }
            }
        }
        let (_, members) = ec_group(&self.ec, &self.group).await;
        let members = members
            .into_iter()
            .filter(|m| *m != self.default_user)
            .collect();
        (users, members)
    }

    async fn cleanup(self) {
        let _ = self
            .ec
            .delete_serverless_cache()
            .serverless_cache_name(&self.cache)
            .send()
            .await;
        let (ec, cache, group) = (&self.ec, &self.cache, &self.group);
        wait_for("cache gone", || async {
            ec.describe_serverless_caches()
                .serverless_cache_name(cache)
                .send()
                .await
                .is_err()
        })
        .await;
        wait_for("group deletable", || async {
            match ec.delete_user_group().user_group_id(group).send().await {
                Ok(_) => true,
                Err(e) => e.code() == Some("UserGroupNotFound"),
            }
        })
        .await;
        let _ = ec.delete_user().user_id(&self.default_user).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_user_lifecycles_under_thirty_percent_emulator_faults() {
    // Longer than the revoke timeout (1.5 s); hangs that stack on one issue outlast the create
    // timeout (3 s), a single `CreateUser` does not.
    elasticache_soak(
        "elasticache_user_lifecycles_under_thirty_percent_emulator_faults",
        Duration::from_millis(1800),
    )
    .await;
}

/// `CreateUser` calls that hang past the create timeout and land after the issue failed: the
/// lease stays until `create_grace` has passed, then the user is revoked by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_create_landing_after_its_compensation_leaks_no_user() {
    elasticache_soak(
        "elasticache_create_landing_after_its_compensation_leaks_no_user",
        Duration::from_millis(3500),
    )
    .await;
}

async fn elasticache_soak(test: &str, hang: Duration) {
    // The faults are armed per service on the shared emulator: one soak per service at a time.
    let _one_at_a_time = ELASTICACHE_SOAK.lock().await;
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    if !aws.has_mirror().await {
        skip_or_panic(test, "the emulator found no redis-server for cache mirrors");
        return;
    }
    let (total, concurrency) = if long() { (1_000, 10) } else { (120, 10) };
    let seed = run_seed();
    let started = Instant::now();
    let cache = Cache::new(&aws).await;
    let prefix = format!("soak{}-", random_lowercase(6));
    let config = ElastiCacheConfig::new(Target::ServerlessCache(cache.cache.clone()), &cache.group)
        .engine(Engine::Redis)
        .readiness_endpoint(format!("redis://127.0.0.1:{}", cache.port), None)
        .ready_timeout(Duration::from_millis(2500))
        .revoke_wait(Duration::from_millis(500));
    let provider: Arc<dyn DynamicSecretProvider> = Arc::new(
        ElastiCacheProvider::from_sdk_config(config, &fast_retry_sdk_config!(aws)).unwrap(),
    );
    let mix = FaultMix {
        service: "elasticache",
        hang,
    };
    let audit = Arc::new(Audit::default());
    let secret = DynamicSecret::builder("soak-ec", provider)
        .username_prefix(&prefix)
        // The TTL outlasts the longest issue (4 s; see the module docs).
        .default_ttl(Duration::from_secs(5))
        .max_ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .config(manager_config(
            Duration::from_millis(1500),
            Duration::from_secs(4),
        ))
        .audit_sink(audit.clone())
        .secret(secret)
        .build()
        .await
        .unwrap();

    mix.arm(&aws, seed).await;
    // A user group holds at most 100 users; irrevocable ones stay in it.
    let failed_issues = drive(&manager, "soak-ec", total, concurrency, 40).await;
    let tally = mix.disarm(&aws, seed).await;
    settle(&manager, "elasticache").await;
    tokio::time::sleep(mix.hang + Duration::from_millis(500)).await;
    settle(&manager, "elasticache").await;
    // Deleted users leave `deleting` and the group leaves `modifying` by themselves.
    let ec = &cache.ec;
    let group = &cache.group;
    wait_for("group active", || async {
        ec_group(ec, group).await.0 == "active"
    })
    .await;

    tally.assert_real("elasticache");
    assert!(failed_issues.count() < total, "some issues succeeded");
    let (users, members) = cache.listed(&prefix).await;
    assert!(
        members.is_subset(&users),
        "elasticache: group members that DescribeUsers does not list: {:?}",
        members.difference(&users).collect::<Vec<_>>()
    );
    let outcome = check_outcome("elasticache", &manager, &audit, &users, &tally).await;
    assert_eq!(outcome.lifecycles, total, "every issue left an audit event");
    eprintln!(
        "emulator fault soak [elasticache]: {} lifecycles ({failed_issues}), {}, {}, {:.1}s (LEASEHOLD_SOAK_SEED={seed})",
        outcome.lifecycles,
        tally.summary(),
        outcome.summary(),
        started.elapsed().as_secs_f64()
    );

    operator_revokes("elasticache", &manager, &audit, &outcome.irrevocable).await;
    wait_for("the revoked users gone", || async {
        cache.listed(&prefix).await.0.is_empty()
    })
    .await;
    manager.shutdown().await;
    cache.cleanup().await;
}
