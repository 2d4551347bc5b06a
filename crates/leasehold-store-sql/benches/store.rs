//! Store benchmarks, each reported against a baseline measured in the same run.
//!
//! 1. Issue + revoke lifecycles per second through a `LeaseManager` on SQLite (a file in WAL
//!    mode) and on PostgreSQL, against the same loop on `MemoryStore`.
//! 2. Start-up with 1M leases in SQLite: from opening the file to the worker having revoked a
//!    lease that was already due, against the same on an empty database. Goal: < 3 s.
//!
//! Lines starting with `RESULT|` are collected by `scripts/bench` into BENCHMARKS.md.
//! `LEASEHOLD_BENCH_QUICK=1` runs smaller sizes. PostgreSQL is skipped (with a line saying so)
//! when no server answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use leasehold_core::{
    DynamicSecret, IssueRequest, LeaseManager, LeaseStore, ManagerConfig, MemoryStore,
};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;
use leasehold_testkit::RecordingProvider;

fn quick() -> bool {
    std::env::var("LEASEHOLD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn result(name: &str, value: String, goal: &str, met: bool) {
    println!(
        "RESULT|{name}|{value}|{goal}|{}",
        if met { "met" } else { "MISSED" }
    );
}

fn config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.max_idle = Duration::from_millis(50);
    c
}

async fn manager(store: Arc<dyn LeaseStore>, provider: Arc<RecordingProvider>) -> LeaseManager {
    let secret = DynamicSecret::builder("bench", provider)
        .default_ttl(Duration::from_secs(3600))
        .max_ttl(Duration::from_secs(3600))
        .max_active_leases(2_000_000)
        .build()
        .unwrap();
    LeaseManager::builder(store)
        .config(config())
        .secret(secret)
        .build()
        .await
        .unwrap()
}

/// Lifecycles per second: `n` sequential issue + revoke pairs, after a short warm-up.
async fn lifecycles_per_sec(store: Arc<dyn LeaseStore>, n: usize) -> f64 {
    let m = manager(store, Arc::new(RecordingProvider::new())).await;
    for _ in 0..n / 10 + 1 {
        let l = m.issue("bench", IssueRequest::new()).await.unwrap();
        m.revoke(&l.lease_id).await.unwrap();
    }
    let start = Instant::now();
    for _ in 0..n {
        let l = m.issue("bench", IssueRequest::new()).await.unwrap();
        m.revoke(&l.lease_id).await.unwrap();
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    m.shutdown().await;
    per_sec
}

fn throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = if quick() { 300 } else { 3_000 };
    rt.block_on(async {
        let memory = lifecycles_per_sec(Arc::new(MemoryStore::new()), n * 10).await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let sqlite = lifecycles_per_sec(Arc::new(SqliteStore::open(&url).await.unwrap()), n).await;
        result(
            "SQLite store: issue + revoke lifecycles/s (vs MemoryStore)",
            format!(
                "{sqlite:.0}/s ({:.1}% of {memory:.0}/s in memory)",
                sqlite / memory * 100.0
            ),
            "measured (no goal)",
            true,
        );
        match PostgresDb::create("bench_store_throughput").await {
            Some(db) => {
                let store = Arc::new(PostgresStore::connect(&db.url()).await.unwrap());
                let pg = lifecycles_per_sec(store, n).await;
                result(
                    "PostgreSQL store: issue + revoke lifecycles/s (vs MemoryStore)",
                    format!(
                        "{pg:.0}/s ({:.1}% of {memory:.0}/s in memory)",
                        pg / memory * 100.0
                    ),
                    "measured (no goal)",
                    true,
                );
            }
            None => println!("PostgreSQL did not answer: its throughput is not measured"),
        }
    });
}

/// Fills the table with `n` active leases (expiring in an hour) by copying one real row, plus
/// the row itself moved to be due now.
async fn fill(url: &str, n: u64) -> Duration {
    let start = Instant::now();
    let store = Arc::new(SqliteStore::open(url).await.unwrap());
    let provider = Arc::new(RecordingProvider::new());
    let m = manager(store.clone(), provider).await;
    let l = m.issue("bench", IssueRequest::new()).await.unwrap();
    m.shutdown().await;
    let template = l.lease_id.to_string();
    sqlx::query(
        "INSERT INTO leasehold_leases \
         WITH RECURSIVE cnt(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM cnt WHERE n < ?1) \
         SELECT 'bench/' || printf('%024d', n), secret, provider_kind, identity, external, state, \
                issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                revoke_attempts, last_error, claimed_by, claim_until, version \
         FROM leasehold_leases, cnt WHERE id = ?2",
    )
    .bind(n as i64)
    .bind(&template)
    .execute(store.pool())
    .await
    .unwrap();
    // The template lease is due now: the worker of the next manager must revoke it.
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query("UPDATE leasehold_leases SET due_at = ?1, claimable_at = ?1 WHERE id = ?2")
        .bind(now)
        .bind(&template)
        .execute(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
    start.elapsed()
}

/// From opening the file to the worker having revoked the due lease.
async fn startup(url: &str) -> Duration {
    let start = Instant::now();
    let store = Arc::new(SqliteStore::open(url).await.unwrap());
    let provider = Arc::new(RecordingProvider::new());
    let m = manager(store.clone(), provider.clone()).await;
    while provider.revoke_calls() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    m.shutdown().await;
    took
}

fn restart() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n: u64 = if quick() { 100_000 } else { 1_000_000 };
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let empty = format!("sqlite://{}", dir.path().join("empty.db").display());
        let full = format!("sqlite://{}", dir.path().join("full.db").display());
        fill(&empty, 0).await;
        let filled = fill(&full, n).await;
        println!("filled {n} leases in {filled:?}");
        let base = startup(&empty).await;
        let took = startup(&full).await;
        result(
            &format!("start-up with {n} leases in SQLite until the worker revokes (vs empty)"),
            format!(
                "{:.1} ms (empty: {:.1} ms); the worker reads the due index, it loads no leases",
                took.as_secs_f64() * 1e3,
                base.as_secs_f64() * 1e3
            ),
            "< 3 s",
            took < Duration::from_secs(3),
        );
    });
}

fn criterion_sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("criterion.db").display());
    let m = rt.block_on(async {
        manager(
            Arc::new(SqliteStore::open(&url).await.unwrap()),
            Arc::new(RecordingProvider::new()),
        )
        .await
    });
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    g.bench_function("sqlite issue+revoke", |b| {
        b.iter(|| {
            rt.block_on(async {
                let l = m.issue("bench", IssueRequest::new()).await.unwrap();
                m.revoke(&l.lease_id).await.unwrap();
            })
        })
    });
    g.finish();
    rt.block_on(m.shutdown());
}

criterion_group!(benches, criterion_sqlite);

fn main() {
    throughput();
    restart();
    if !quick() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
