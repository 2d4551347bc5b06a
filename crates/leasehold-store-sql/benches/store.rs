//! Store benchmarks, each reported against a baseline measured in the same run.
//!
//! 1. Issue + revoke lifecycles per second through a `LeaseManager` on SQLite (a file in WAL
//!    mode) and on PostgreSQL, against a raw sqlx loop of the same four writes on the same
//!    table, on an empty table and with 10,000 live leases of the secret; and the store calls
//!    (statements) per lifecycle.
//! 2. Start-up with 1M leases in SQLite: from opening the file to the worker having revoked a
//!    lease that was already due, against the same on an empty database. Goal: < 3 s.
//!
//! Lines starting with `RESULT|` are collected by `scripts/bench` into BENCHMARKS.md.
//! `LEASEHOLD_BENCH_QUICK=1` runs smaller sizes. PostgreSQL is skipped (with a line saying so)
//! when no server answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use criterion::{criterion_group, Criterion};
use leasehold_core::store::RevokeClaim;
use leasehold_core::{
    DynamicSecret, IssueRequest, LeaseFilter, LeaseId, LeaseManager, LeaseRecord, LeaseStore,
    ManagerConfig, Result,
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

async fn manager(
    store: Arc<dyn LeaseStore>,
    provider: Arc<RecordingProvider>,
    worker: bool,
) -> LeaseManager {
    let secret = DynamicSecret::builder("bench", provider)
        .default_ttl(Duration::from_secs(3600))
        .max_ttl(Duration::from_secs(3600))
        .max_active_leases(2_000_000)
        .build()
        .unwrap();
    LeaseManager::builder(store)
        .config(config().run_worker(worker))
        .secret(secret)
        .build()
        .await
        .unwrap()
}

/// Counts the calls the manager makes to its store (each is one statement on the SQL stores).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn LeaseStore>,
    calls: AtomicU64,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl LeaseStore for Counting {
    async fn insert(&self, l: &LeaseRecord) -> Result<()> {
        self.tick();
        self.inner.insert(l).await
    }
    async fn insert_within(&self, l: &LeaseRecord, limit: u64) -> Result<bool> {
        self.tick();
        self.inner.insert_within(l, limit).await
    }
    async fn get(&self, id: &LeaseId) -> Result<Option<LeaseRecord>> {
        self.tick();
        self.inner.get(id).await
    }
    async fn update(&self, l: &LeaseRecord) -> Result<u64> {
        self.tick();
        self.inner.update(l).await
    }
    async fn claim_for_revoke(
        &self,
        id: &LeaseId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<RevokeClaim> {
        self.tick();
        self.inner.claim_for_revoke(id, owner, now, until).await
    }
    async fn delete(&self, id: &LeaseId, version: u64) -> Result<()> {
        self.tick();
        self.inner.delete(id, version).await
    }
    async fn list(&self, f: &LeaseFilter) -> Result<Vec<LeaseRecord>> {
        self.tick();
        self.inner.list(f).await
    }
    async fn count(&self, f: &LeaseFilter) -> Result<u64> {
        self.tick();
        self.inner.count(f).await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<LeaseRecord>> {
        self.tick();
        self.inner.claim_due(now, owner, hold, limit).await
    }
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        self.tick();
        self.inner.next_due().await
    }
    async fn installation_id(&self) -> Result<Arc<str>> {
        self.inner.installation_id().await
    }
}

/// `n` sequential issue + revoke pairs through a manager without a worker; returns the time
/// and the store calls per lifecycle.
async fn managed(m: &LeaseManager, store: &Counting, n: usize) -> (Duration, f64) {
    let before = store.calls.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..n {
        let l = m.issue("bench", IssueRequest::new()).await.unwrap();
        m.revoke(&l.lease_id).await.unwrap();
    }
    let took = start.elapsed();
    let calls = store.calls.load(Ordering::Relaxed) - before;
    (took, calls as f64 / n as f64)
}

/// The same four writes with plain sqlx statements on the same table: insert, activate,
/// claim, delete.
macro_rules! raw_loop {
    ($pool:expr, $n:expr) => {{
        let pool = $pool;
        let start = Instant::now();
        for i in 0..$n {
            let id = format!("bench/raw{:020}{}", i, rand_suffix());
            let now = Utc::now().timestamp_millis();
            sqlx::query(
                "INSERT INTO leasehold_leases (id, secret, provider_kind, identity, external, \
                 state, issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                 revoke_attempts, last_error, claimed_by, claim_until, version) \
                 VALUES ($1, 'bench', 'recording', NULL, $2, 'pending', $3, $4, $4, $5, $4, $4, \
                 0, NULL, 'raw', $4, 1)",
            )
            .bind(&id)
            .bind(r#"{"id":"lh-raw-user-name-0000000000"}"#)
            .bind(now)
            .bind(now + 600_000)
            .bind(true)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "UPDATE leasehold_leases SET state = 'active', expires_at = $1, due_at = $1, \
                 claimable_at = $1, claimed_by = NULL, claim_until = NULL, \
                 version = version + 1 WHERE id = $2 AND version = 1",
            )
            .bind(now + 3_600_000)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "UPDATE leasehold_leases SET state = 'revoking', claimed_by = 'raw', \
                 claim_until = $1, due_at = $2, claimable_at = $1, version = version + 1 \
                 WHERE id = $3 AND version = 2",
            )
            .bind(now + 120_000)
            .bind(now)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query("DELETE FROM leasehold_leases WHERE id = $1 AND version = 3")
                .bind(&id)
                .execute(pool)
                .await
                .unwrap();
        }
        start.elapsed()
    }};
}

fn rand_suffix() -> String {
    leasehold_core::template::random_lowercase(8)
}

/// Adds `n` active leases of the secret `bench` with plain SQL.
macro_rules! fill_secret {
    ($pool:expr, $n:expr, $renewable:expr) => {{
        for chunk in 0..($n / 500) {
            let mut q = String::from(
                "INSERT INTO leasehold_leases (id, secret, provider_kind, identity, external, \
                 state, issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                 revoke_attempts, version) VALUES ",
            );
            for i in 0..500 {
                if i > 0 {
                    q.push_str(", ");
                }
                q.push_str(&format!(
                    "('bench/live{chunk:05}{i:05}', 'bench', 'recording', NULL, \
                     '{{\"id\":\"u\"}}', 'active', 0, 4102444800000, 4102444800000, {}, \
                     4102444800000, 4102444800000, 0, 1)",
                    $renewable
                ));
            }
            sqlx::query(&q).execute($pool).await.unwrap();
        }
    }};
}

/// One row: store lifecycles against the raw loop, interleaved in halves so that load from
/// elsewhere on the machine falls on both alike.
fn store_row(backend: &str, live: u64, n: usize, store: (Duration, f64), raw: Duration) {
    let (took, calls) = store;
    let per_sec = n as f64 / took.as_secs_f64();
    let raw_per_sec = n as f64 / raw.as_secs_f64();
    let ratio = per_sec / raw_per_sec;
    result(
        &format!(
            "{backend} store: issue + revoke lifecycles/s with {live} live leases of the secret (vs a raw sqlx loop of the same 4 writes)"
        ),
        format!(
            "{per_sec:.0}/s = {ratio:.2} of raw {raw_per_sec:.0}/s; {calls:.2} statements per lifecycle"
        ),
        ">= 0.7 of raw, <= 4 statements",
        ratio >= 0.7 && calls <= 4.0,
    );
}

macro_rules! compare {
    ($backend:expr, $store:expr, $pool:expr, $renewable:expr, $n:expr) => {{
        let counting = Arc::new(Counting {
            inner: $store,
            calls: AtomicU64::new(0),
        });
        let m = manager(counting.clone(), Arc::new(RecordingProvider::new()), false).await;
        for live in [0u64, 10_000] {
            if live > 0 {
                fill_secret!($pool, live, $renewable);
            }
            // Warm-up: connections open, statements prepared.
            managed(&m, &counting, $n / 10 + 1).await;
            let _ = raw_loop!($pool, $n / 10 + 1);
            let mut store_took = Duration::ZERO;
            let mut calls = 0.0;
            let mut raw_took = Duration::ZERO;
            for _ in 0..2 {
                raw_took += raw_loop!($pool, $n / 2);
                let (t, c) = managed(&m, &counting, $n / 2).await;
                store_took += t;
                calls = c;
            }
            store_row($backend, live, $n / 2 * 2, (store_took, calls), raw_took);
        }
        m.shutdown().await;
    }};
}

fn throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = if quick() { 300 } else { 3_000 };
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let sqlite = Arc::new(SqliteStore::open(&url).await.unwrap());
        compare!("SQLite", sqlite.clone(), sqlite.pool(), 1, n);
        match PostgresDb::create("bench_store_throughput").await {
            Some(db) => {
                let pg = Arc::new(PostgresStore::connect(&db.url()).await.unwrap());
                compare!("PostgreSQL", pg.clone(), pg.pool(), "TRUE", n);
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
    let m = manager(store.clone(), provider, true).await;
    let l = m.issue("bench", IssueRequest::new()).await.unwrap();
    m.shutdown().await;
    let template = l.lease_id.to_string();
    sqlx::query(
        "INSERT INTO leasehold_leases (id, secret, provider_kind, identity, external, state, \
         issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
         revoke_attempts, last_error, claimed_by, claim_until, version) \
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
    let m = manager(store.clone(), provider.clone(), true).await;
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
            true,
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
    // Only `cargo bench` (which passes `--bench`) measures; `cargo test --benches` and
    // `--list` return at once.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    throughput();
    restart();
    if !quick() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
