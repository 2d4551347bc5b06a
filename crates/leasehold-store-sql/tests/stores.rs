//! Both SQL stores against the store suite, the raw tables, and managers sharing them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    DynamicSecret, IssueRequest, LeaseFilter, LeaseManager, LeaseStore, ManagerConfig, RetryPolicy,
};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;
use leasehold_testkit::RecordingProvider;
use sqlx::Row;

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

#[tokio::test]
async fn sqlite_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&sqlite_url(&dir, "suite.db"))
        .await
        .unwrap();
    leasehold_testkit::store_conformance(&store).await;
    let shared: Arc<dyn LeaseStore> = Arc::new(store);
    leasehold_testkit::store_conformance(shared.as_ref()).await;
}

#[tokio::test]
async fn sqlite_in_memory_passes_the_store_suite() {
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    leasehold_testkit::store_conformance(&store).await;
}

#[tokio::test]
async fn postgres_passes_the_store_suite() {
    let Some(db) = PostgresDb::create("postgres_passes_the_store_suite").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    leasehold_testkit::store_conformance(&store).await;
    // A second store on the same database (another instance) sees the same table.
    let again = PostgresStore::connect(&db.url()).await.unwrap();
    leasehold_testkit::store_conformance(&again).await;
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    let e = PostgresStore::connect("mysql://x").await.unwrap_err();
    assert_eq!(e.kind(), leasehold_core::ErrorKind::InvalidConfig);
    let e = SqliteStore::open("postgres://x").await.unwrap_err();
    assert_eq!(e.kind(), leasehold_core::ErrorKind::InvalidConfig);
    for empty in ["sqlite://", "sqlite:", "sqlite://?mode=rwc"] {
        let e = SqliteStore::open(empty).await.unwrap_err();
        assert_eq!(
            e.kind(),
            leasehold_core::ErrorKind::InvalidConfig,
            "{empty}"
        );
    }
    assert!(SqliteStore::open("sqlite::memory:").await.is_ok());
    let debug = format!(
        "{:?}",
        leasehold_store_sql::redact_url("postgres://u:hunter2@h/db")
    );
    assert!(!debug.contains("hunter2"));
}

fn fast_config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.retry = RetryPolicy::new(Duration::from_millis(50), 6).max_delay(Duration::from_millis(400));
    c.max_idle = Duration::from_millis(200);
    c.claim_hold = Duration::from_secs(3);
    c.issue_timeout = Duration::from_secs(5);
    c.revoke_concurrency = 32;
    c
}

fn secret(provider: &RecordingProvider, ttl_ms: u64, max_active: u64) -> DynamicSecret {
    DynamicSecret::builder("cache", Arc::new(provider.clone()))
        .default_ttl(Duration::from_millis(ttl_ms).max(Duration::from_secs(1)))
        .max_ttl(Duration::from_secs(3600))
        .max_active_leases(max_active)
        .build()
        .unwrap()
}

/// Dumps every column of every row as text.
async fn dump_sqlite(store: &SqliteStore) -> String {
    let rows = sqlx::query("SELECT * FROM leasehold_leases")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut out = String::new();
    for r in rows {
        for i in 0..r.len() {
            let v: Option<String> = r
                .try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .or_else(|| {
                    r.try_get::<Option<i64>, _>(i)
                        .ok()
                        .flatten()
                        .map(|n| n.to_string())
                })
                .or_else(|| {
                    r.try_get::<Option<bool>, _>(i)
                        .ok()
                        .flatten()
                        .map(|b| b.to_string())
                });
            out.push_str(&v.unwrap_or_default());
            out.push('|');
        }
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn no_column_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&sqlite_url(&dir, "raw.db"))
        .await
        .unwrap();
    let provider = RecordingProvider::new();
    let m = LeaseManager::builder(Arc::new(store.clone()))
        .config(fast_config())
        .secret(secret(&provider, 60_000, 100))
        .build()
        .await
        .unwrap();
    let mut leases = Vec::new();
    for i in 0..5 {
        leases.push(
            m.issue("cache", IssueRequest::new().identity(format!("svc-{i}")))
                .await
                .unwrap(),
        );
    }
    let raw = dump_sqlite(&store).await;
    assert_eq!(raw.lines().count(), 5);
    for l in &leases {
        assert!(raw.contains(l.lease_id.as_str()), "the row is there");
        assert!(
            raw.contains(l.credentials.principal()),
            "the username is there"
        );
        leasehold_testkit::assert_no_secret("the raw lease table", &raw, &l.credentials);
    }
    // The database file itself (WAL included) holds no password either.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let file_text = String::from_utf8_lossy(&bytes);
    for l in &leases {
        leasehold_testkit::assert_no_secret("the SQLite files", &file_text, &l.credentials);
    }
    m.shutdown().await;
}

#[tokio::test]
async fn leases_written_by_one_manager_are_revoked_on_time_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "restart.db");
    let provider = RecordingProvider::new();
    let (first_expiry, names) = {
        let store = Arc::new(SqliteStore::open(&url).await.unwrap());
        let m = LeaseManager::builder(store)
            .config(fast_config())
            .secret(secret(&provider, 2_000, 100))
            .build()
            .await
            .unwrap();
        let mut names = Vec::new();
        let mut expiry = None;
        for _ in 0..20 {
            let l = m.issue("cache", IssueRequest::new()).await.unwrap();
            expiry.get_or_insert(l.expires_at);
            names.push(l.credentials.principal().to_string());
        }
        m.shutdown().await; // the process goes away; the leases stay on disk
        (expiry.unwrap(), names)
    };
    assert_eq!(provider.live_count(), 20);
    // A second manager starts later on the same file.
    let store = Arc::new(SqliteStore::open(&url).await.unwrap());
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 20);
    let m = LeaseManager::builder(store.clone())
        .config(fast_config())
        .secret(secret(&provider, 2_000, 100))
        .build()
        .await
        .unwrap();
    let wait = (first_expiry - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1500)).await;
    assert_eq!(
        provider.live_count(),
        0,
        "revoked on time by the new manager"
    );
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 0);
    for n in names {
        assert_eq!(provider.removals_of(&n), 1);
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_on_postgres_revoke_every_lease_exactly_once() {
    let Some(db) = PostgresDb::create("three_managers_on_postgres").await else {
        return;
    };
    let total = 2_000usize;
    let provider = RecordingProvider::new().with_latency(Duration::from_millis(1));
    let mut managers = Vec::new();
    for _ in 0..3 {
        let store = Arc::new(PostgresStore::connect(&db.url()).await.unwrap());
        managers.push(
            LeaseManager::builder(store)
                .config(fast_config())
                .secret(secret(&provider, 1_000, total as u64 + 10))
                .build()
                .await
                .unwrap(),
        );
    }
    let mut issued = HashSet::new();
    for wave in 0..(total / 200) {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let m = managers[i % managers.len()].clone();
                tokio::spawn(async move {
                    m.issue("cache", IssueRequest::new())
                        .await
                        .unwrap()
                        .credentials
                        .principal()
                        .to_string()
                })
            })
            .collect();
        for t in tasks {
            issued.insert(t.await.unwrap());
        }
        if wave == total / 400 {
            // One instance goes away mid-run, without shutdown: its claims must come free.
            drop(managers.remove(0));
        }
    }
    assert_eq!(issued.len(), total);
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while store.count(&LeaseFilter::all()).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "leases left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(provider.live_count(), 0, "every credential is gone");
    assert_eq!(provider.removed_count(), total);
    assert!(
        provider.removed_more_than_once().is_empty(),
        "a credential was revoked twice"
    );
    for n in &issued {
        assert_eq!(provider.removals_of(n), 1);
    }
    for m in &managers {
        m.shutdown().await;
    }
}
