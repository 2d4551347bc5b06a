//! Both SQL stores against the store suite, the raw tables, and managers sharing them.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    DynamicSecret, IssueRequest, LeaseFilter, LeaseManager, LeaseStore, ManagerConfig, RetryPolicy,
};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::conformance::Fixture;
use leasehold_testkit::servers::{unique_name, PostgresDb};
use leasehold_testkit::RecordingProvider;
use sqlx::Row;

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

// The store and coordination suites, one test per behaviour and backend:
// `sqlite::claim_due_frees_ended_claims_for_any_owner`, `postgres::...`, ...
leasehold_testkit::store_conformance_tests!(sqlite, |_test| async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&sqlite_url(&dir, "suite.db"))
        .await
        .unwrap();
    Fixture::store(store).keep(dir)
});
leasehold_testkit::store_conformance_tests!(sqlite_in_memory, |_test| async {
    Fixture::store(SqliteStore::open("sqlite::memory:").await.unwrap())
});
leasehold_testkit::store_conformance_tests!(postgres, |test| async move {
    let (store, db) = postgres_store(test).await?;
    Some(Fixture::store(store).keep(db))
});
leasehold_testkit::coordination_conformance_tests!(sqlite_coordination, |_test| async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&sqlite_url(&dir, "coordination.db"))
        .await
        .unwrap();
    Fixture::coordination_of(store).keep(dir)
});
leasehold_testkit::coordination_conformance_tests!(sqlite_in_memory_coordination, |_test| async {
    Fixture::coordination_of(SqliteStore::open("sqlite::memory:").await.unwrap())
});
leasehold_testkit::coordination_conformance_tests!(postgres_coordination, |test| async move {
    let (store, db) = postgres_store(test).await?;
    Some(Fixture::coordination_of(store).keep(db))
});

/// A PostgreSQL store on its own schema of a database shared by the tests running at the same
/// time (creating a database per test costs more than the test): the database is dropped when
/// the last test holding it ends.
async fn postgres_store(test: &str) -> Option<(PostgresStore, Arc<PostgresDb>)> {
    static SHARED: tokio::sync::Mutex<std::sync::Weak<PostgresDb>> =
        tokio::sync::Mutex::const_new(std::sync::Weak::new());
    let db = {
        let mut shared = SHARED.lock().await;
        match shared.upgrade() {
            Some(db) => db,
            None => {
                let db = Arc::new(PostgresDb::create(test).await?);
                *shared = Arc::downgrade(&db);
                db
            }
        }
    };
    let schema = format!("s_{}", unique_name(test).replace('-', "_"));
    let store = PostgresStore::builder(db.url())
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    Some((store, db))
}

/// Another store on the same data (another instance, a restarted process) sees the same
/// records and the same installation id.
#[tokio::test]
async fn a_second_sqlite_store_on_one_file_shares_records_and_installation_id() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "again.db");
    let first = SqliteStore::open(&url).await.unwrap();
    let again = SqliteStore::open(&url).await.unwrap();
    same_data(&first, &again).await;
}

/// As for SQLite: a second PostgreSQL store on one database sees the same table.
#[tokio::test]
async fn a_second_postgres_store_on_one_database_shares_records_and_installation_id() {
    let Some(db) = PostgresDb::create("a_second_postgres_store_on_one_database").await else {
        return;
    };
    let first = PostgresStore::connect(&db.url()).await.unwrap();
    let again = PostgresStore::connect(&db.url()).await.unwrap();
    same_data(&first, &again).await;
}

async fn same_data(first: &dyn LeaseStore, again: &dyn LeaseStore) {
    let id = first.installation_id().await.unwrap();
    assert_eq!(again.installation_id().await.unwrap(), id);
    let lease = common::lease(
        "shared",
        leasehold_core::LeaseState::Active,
        chrono::Utc::now() + chrono::Duration::seconds(600),
    );
    first.insert(&lease).await.unwrap();
    let seen = again
        .get(&lease.id)
        .await
        .unwrap()
        .expect("seen by the other store");
    assert_eq!(seen.version, 1);
    again.delete(&lease.id, 1).await.unwrap();
    assert!(first.get(&lease.id).await.unwrap().is_none());
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
