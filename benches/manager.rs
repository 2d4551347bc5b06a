//! Benchmarks of the lease manager, each reported as a ratio against a baseline measured in the
//! same run.
//!
//! 1. Manager overhead: issue + revoke lifecycles per second on one core (current-thread
//!    runtime) with a no-op provider and `MemoryStore`, against the bare work (render a name,
//!    generate a password, insert into and remove from a map).
//! 2. Expiry lag: 10k leases due in the same second; p50/p99 of (revoked_at - expires_at).
//! 3. Mass revoke: `revoke_secret` on 10k leases with a provider of realistic latency.
//! 4. Paced recovery: a manager starting with 10k leases already due clears them at its
//!    `revoke_rate`; p99 issue latency meanwhile against an idle manager.
//!
//! Memory per lease is in `benches/memory.rs`: its counting allocator would slow these down.
//!
//! Lines starting with `RESULT|` are collected by `scripts/bench` into BENCHMARKS.md.
//! Set `LEASEHOLD_BENCH_QUICK=1` for a fast smoke run (smaller sizes).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use leasehold::{IssueRequest, PasswordPolicy, TemplateVars, UsernameTemplate};
use support::{manager, quick, result, NoopProvider};

fn bare_lifecycle(
    t: &UsernameTemplate,
    p: &PasswordPolicy,
    map: &mut HashMap<String, secrecy::SecretString>,
) {
    let name = t
        .render(&TemplateVars {
            secret_name: "bench",
            secret_type: "noop",
            identity: None,
            prefix: "lh-",
        })
        .unwrap();
    let pw = p.generate().unwrap();
    map.insert(name.clone(), pw);
    map.remove(&name);
}

fn lifecycles(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = rt.block_on(manager(
        Arc::default(),
        1_000_000,
        Duration::from_secs(3600),
    ));
    let template = UsernameTemplate::parse("{{randomUsername}}").unwrap();
    let policy = PasswordPolicy::redis();

    let mut g = c.benchmark_group("lifecycle");
    g.bench_function("manager_issue_revoke", |b| {
        b.to_async(&rt).iter(|| async {
            let l = m.issue("bench", IssueRequest::new()).await.unwrap();
            m.revoke(&l.lease_id).await.unwrap();
        })
    });
    g.bench_function("bare_render_password_map", |b| {
        let mut map = HashMap::new();
        b.iter(|| bare_lifecycle(&template, &policy, &mut map))
    });
    g.finish();

    // The ratios, from timed runs in this process: current-thread, then a 2-worker
    // multi-thread runtime (what `#[tokio::main]` gives), both against the same bare work.
    let n = if quick() { 2_000 } else { 20_000 };
    let managed = rt.block_on(timed_lifecycles(&m, n));
    let bare = timed_bare(&template, &policy, n);
    drop(m);
    drop(rt);
    report_lifecycles("1 core, current-thread runtime", n, managed, bare);

    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let m = mt.block_on(manager(
        Arc::default(),
        1_000_000,
        Duration::from_secs(3600),
    ));
    // A service's handlers run in tasks on the workers; `main` itself runs in `block_on`.
    let spawned = {
        let m = m.clone();
        mt.block_on(async move {
            tokio::spawn(async move {
                timed_lifecycles(&m, n / 10).await;
                timed_lifecycles(&m, n).await
            })
            .await
            .unwrap()
        })
    };
    let in_main = mt.block_on(timed_lifecycles(&m, n));
    let bare = timed_bare(&template, &policy, n);
    let per_sec = n as f64 / in_main.as_secs_f64();
    println!("multi-thread, in block_on: {per_sec:.0} lifecycles/s");
    report_lifecycles(
        "2-worker multi-thread runtime, in a spawned task",
        n,
        spawned,
        bare,
    );
    result(
        "manager issue+revoke lifecycles/s, 2-worker multi-thread runtime, called from block_on (main)",
        format!(
            "{per_sec:.0}/s ({:.2}x bare work)",
            in_main.as_secs_f64() / bare.as_secs_f64()
        ),
        ">= 100000/s",
        per_sec >= 100_000.0,
    );
    mt.block_on(m.shutdown());
}

async fn timed_lifecycles(m: &leasehold::LeaseManager, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let l = m.issue("bench", IssueRequest::new()).await.unwrap();
        m.revoke(&l.lease_id).await.unwrap();
    }
    start.elapsed()
}

fn timed_bare(template: &UsernameTemplate, policy: &PasswordPolicy, n: usize) -> Duration {
    let mut map = HashMap::new();
    let start = Instant::now();
    for _ in 0..n {
        bare_lifecycle(template, policy, &mut map);
    }
    start.elapsed()
}

fn report_lifecycles(runtime: &str, n: usize, managed: Duration, bare: Duration) {
    let per_sec = n as f64 / managed.as_secs_f64();
    let ratio = managed.as_secs_f64() / bare.as_secs_f64();
    result(
        &format!("manager issue+revoke lifecycles/s ({runtime}, no-op provider, MemoryStore)"),
        format!("{per_sec:.0}/s"),
        ">= 100000/s",
        per_sec >= 100_000.0,
    );
    result(
        &format!("manager lifecycle cost / bare work (render + password + map), {runtime}"),
        format!(
            "{ratio:.2}x ({:.2} us vs {:.2} us)",
            managed.as_secs_f64() * 1e6 / n as f64,
            bare.as_secs_f64() * 1e6 / n as f64
        ),
        "<= 3x",
        ratio <= 3.0,
    );
}

fn expiry_lag() {
    let n = if quick() { 2_000 } else { 10_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (p50, p99, max) = rt.block_on(async {
        let provider = Arc::new(NoopProvider {
            record: true,
            ..NoopProvider::default()
        });
        let m = manager(provider.clone(), n as u64 + 10, Duration::from_secs(2)).await;
        let mut expiries = HashMap::new();
        // Issue all within well under a second so they fall due in the same second.
        for _ in 0..n {
            let l = m.issue("bench", IssueRequest::new()).await.unwrap();
            expiries.insert(l.credentials.principal().to_string(), l.expires_at);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while provider.revoked_at.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let revoked = provider.revoked_at.lock().unwrap().clone();
        let mut lags: Vec<f64> = expiries
            .iter()
            .map(|(k, exp)| match revoked.get(k) {
                Some(at) => (*at - *exp).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                None => f64::INFINITY,
            })
            .collect();
        lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
        m.shutdown().await;
        (pct(0.5), pct(0.99), *lags.last().unwrap())
    });
    result(
        &format!("expiry lag, {n} leases due in the same second (revoked_at - expires_at)"),
        format!("p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms"),
        "p99 < 250 ms",
        p99 < 250.0,
    );
}

fn mass_revoke() {
    let n = if quick() { 2_000 } else { 10_000 };
    let latency = Duration::from_millis(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (rate, serial_rate) = rt.block_on(async {
        let provider = Arc::new(NoopProvider {
            latency,
            ..NoopProvider::default()
        });
        let m = manager(provider, n as u64 + 10, Duration::from_secs(3600)).await;
        for _ in 0..n {
            m.issue("bench", IssueRequest::new()).await.unwrap();
        }
        let start = Instant::now();
        let summary = m.revoke_secret("bench").await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(summary.revoked, n);
        m.shutdown().await;
        // Baseline: one at a time, as a loop over revoke would do.
        let serial = 1.0 / latency.as_secs_f64();
        (n as f64 / elapsed.as_secs_f64(), serial)
    });
    result(
        &format!("revoke_secret on {n} leases, provider latency 20 ms, concurrency 16"),
        format!(
            "{rate:.0} revocations/s ({:.1}x one-at-a-time)",
            rate / serial_rate
        ),
        ">= 500/s",
        rate >= 500.0,
    );
}

/// p99 of issue+revoke latencies, in ms.
fn p99_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[(v.len() - 1) * 99 / 100].as_secs_f64() * 1e3
}

/// Issue + revoke in a loop until `done`, recording each issue's latency.
async fn issue_latencies(m: &leasehold::LeaseManager, done: impl Fn() -> bool) -> Vec<Duration> {
    let mut lat = Vec::new();
    while !done() {
        let start = Instant::now();
        let l = m.issue("live", IssueRequest::new()).await.unwrap();
        lat.push(start.elapsed());
        m.revoke(&l.lease_id).await.unwrap();
        // A service issues now and then, not in a tight loop.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    lat
}

/// A manager starting on a store with `n` leases already due (written by an earlier instance
/// whose worker did not run), at a configured `revoke_rate`: the time to clear them, and the
/// p99 issue latency meanwhile against the same loop on an idle manager.
fn paced_recovery() {
    let n = if quick() { 2_000 } else { 10_000 };
    let rate = if quick() { 1_000 } else { 2_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cleared, p99, base_p99) = rt.block_on(async {
        let provider = Arc::new(NoopProvider {
            record: true,
            ..NoopProvider::default()
        });
        let store = Arc::new(leasehold::MemoryStore::new());
        let build = |worker: bool, ttl: Duration| {
            let secret = leasehold::DynamicSecret::builder("bench", provider.clone())
                .default_ttl(ttl)
                .max_ttl(Duration::from_secs(3600))
                .max_active_leases(n as u64 + 100)
                .build()
                .unwrap();
            // The issue loop's own leases go through a provider that records nothing.
            let live = leasehold::DynamicSecret::builder("live", Arc::new(NoopProvider::default()))
                .default_ttl(Duration::from_secs(3600))
                .build()
                .unwrap();
            leasehold::LeaseManager::builder(store.clone())
                .secret(live)
                .config(
                    support::config()
                        .run_worker(worker)
                        .revoke_rate(Some(rate))
                        .revoke_concurrency(16),
                )
                .secret(secret)
                .build()
        };
        // Baseline: the same issue loop with no backlog.
        let idle = build(true, Duration::from_secs(3600)).await.unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        let base = issue_latencies(&idle, || Instant::now() > until).await;
        idle.shutdown().await;
        // The backlog: leases whose TTL ran out while no worker ran.
        let earlier = build(false, Duration::from_secs(1)).await.unwrap();
        for _ in 0..n {
            earlier.issue("bench", IssueRequest::new()).await.unwrap();
        }
        earlier.shutdown().await;
        drop(earlier);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let revoked_before = provider.revoked_at.lock().unwrap().len();
        let start = Instant::now();
        let m = build(true, Duration::from_secs(3600)).await.unwrap();
        let deadline = start + Duration::from_secs(120);
        let revoked = || provider.revoked_at.lock().unwrap().len() - revoked_before;
        let lat = issue_latencies(&m, || revoked() >= n || Instant::now() > deadline).await;
        let cleared = start.elapsed();
        assert!(revoked() >= n, "the backlog was not cleared in time");
        m.shutdown().await;
        (cleared, p99_ms(lat), p99_ms(base))
    });
    let floor = n as f64 / rate as f64;
    result(
        &format!("paced recovery: {n} leases due at start, revoke_rate {rate}/s, concurrency 16"),
        format!(
            "cleared in {:.2} s (the rate allows {floor:.1} s); issue p99 {p99:.2} ms meanwhile (idle manager: {base_p99:.2} ms)",
            cleared.as_secs_f64()
        ),
        "at the set rate (within 25 %), issue p99 < 10 ms",
        cleared.as_secs_f64() <= floor * 1.25 && cleared.as_secs_f64() >= floor * 0.9 && p99 < 10.0,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lifecycles
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) measures; `cargo test --benches` and
    // `--list` return at once.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    benches();
    expiry_lag();
    mass_revoke();
    paced_recovery();
    Criterion::default().configure_from_args().final_summary();
}
