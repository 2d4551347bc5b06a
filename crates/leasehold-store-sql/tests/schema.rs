//! Schema bookkeeping: leasehold's migrations live in its own version table beside an
//! application that migrates the same database with sqlx, take no lock that outlives them,
//! run once when processes start together, and adopt databases of the earlier layout.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use leasehold_core::{ErrorKind, LeaseFilter, LeaseId, LeaseStore};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;

type SqlxRows = Vec<(i64, String, Vec<u8>, bool)>;

async fn pg_sqlx_rows(pool: &sqlx::PgPool) -> Option<SqlxRows> {
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap();
    if !exists {
        return None;
    }
    Some(
        sqlx::query_as(
            "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    )
}

async fn sqlite_sqlx_rows(pool: &sqlx::SqlitePool) -> Option<SqlxRows> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    if n == 0 {
        return None;
    }
    Some(
        sqlx::query_as(
            "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    )
}

/// Advisory locks held by anyone in this database.
async fn advisory_locks(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    n
}

async fn pg_versions(pool: &sqlx::PgPool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(&format!(
        "SELECT version, description FROM {table} ORDER BY version, description"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn sqlite_versions(pool: &sqlx::SqlitePool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(&format!(
        "SELECT version, description FROM {table} ORDER BY version, description"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A store that works: insert, read back, count.
async fn smoke(store: &dyn LeaseStore, secret: &str) {
    let lease = lease(
        secret,
        leasehold_core::LeaseState::Active,
        chrono::Utc::now() + chrono::Duration::seconds(60),
    );
    let id = lease.id.clone();
    store.insert(&lease).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    assert!(store.count(&LeaseFilter::secret(secret)).await.unwrap() >= 1);
}

#[tokio::test]
async fn postgres_app_migrations_then_leasehold() {
    let Some(db) = PostgresDb::create("pg_app_then_leasehold").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let app = app_migrations();
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    let before = pg_sqlx_rows(&pool).await.unwrap();
    assert_eq!(before.len(), 2);

    let store = PostgresStore::connect(&db.url()).await.unwrap();
    smoke(&store, "cache").await;
    assert_eq!(
        pg_sqlx_rows(&pool).await.unwrap(),
        before,
        "leasehold never writes to the app's _sqlx_migrations"
    );
    assert_eq!(
        pg_versions(&pool, "leasehold_schema_version").await.len(),
        shipped_migrations("postgres")
    );
    // The app's next start: its migrator still sees only its own migrations.
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    // And leasehold's next start.
    PostgresStore::connect(&db.url()).await.unwrap();
    assert_eq!(pg_sqlx_rows(&pool).await.unwrap(), before);
    assert_eq!(advisory_locks(&pool).await, 0, "no advisory lock is left");
}

#[tokio::test]
async fn postgres_leasehold_then_app_migrations() {
    let Some(db) = PostgresDb::create("pg_leasehold_then_app").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    assert_eq!(
        pg_sqlx_rows(&pool).await,
        None,
        "leasehold creates no _sqlx_migrations"
    );
    assert_eq!(advisory_locks(&pool).await, 0, "no advisory lock is left");

    let app = app_migrations();
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    let rows = pg_sqlx_rows(&pool).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["app users", "app orders"]
    );
    PostgresStore::connect(&db.url()).await.unwrap();
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    assert_eq!(pg_sqlx_rows(&pool).await.unwrap(), rows);
    smoke(&store, "cache").await;
    assert_eq!(advisory_locks(&pool).await, 0, "no advisory lock is left");
}

#[tokio::test]
async fn postgres_failed_migration_is_a_store_error_and_leaves_no_lock() {
    let Some(db) = PostgresDb::create("pg_failed_migration").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    // Something of the application's already has the lease table's name.
    sqlx::query("CREATE VIEW leasehold_leases AS SELECT 1 AS id")
        .execute(&pool)
        .await
        .unwrap();
    let e = PostgresStore::connect(&db.url()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert!(e.to_string().contains("migration 0001 leases"), "{e}");
    assert_eq!(
        advisory_locks(&pool).await,
        0,
        "the failure released the lock"
    );
    let (meta, version): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('leasehold_meta') IS NOT NULL, \
                to_regclass('leasehold_schema_version') IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!meta && !version, "the failed migration changed nothing");
    // Fixed, the next start migrates at once (nothing waits on a stale lock).
    sqlx::query("DROP VIEW leasehold_leases")
        .execute(&pool)
        .await
        .unwrap();
    let store = tokio::time::timeout(Duration::from_secs(10), PostgresStore::connect(&db.url()))
        .await
        .expect("the next start does not hang")
        .unwrap();
    smoke(&store, "cache").await;
    assert_eq!(advisory_locks(&pool).await, 0);
}

#[tokio::test]
async fn postgres_upgrade_from_the_sqlx_migrations_layout() {
    let Some(db) = PostgresDb::create("pg_upgrade_layout").await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    // What the earlier release did: sqlx's migrator over its own files.
    let old = tempfile::tempdir().unwrap();
    write(
        old.path(),
        "0001_leases.sql",
        include_str!("../migrations/postgres/0001_leases.sql"),
    );
    write(
        old.path(),
        "0002_meta.sql",
        include_str!("../migrations/postgres/0002_meta.sql"),
    );
    app_migrator(old.path()).await.run(&pool).await.unwrap();
    let due = now_ms() - 1_000;
    insert_pg(
        &pool,
        "leasehold_leases",
        &RawLease::active("cache/kept1", due),
    )
    .await;
    sqlx::query("INSERT INTO leasehold_meta (key, value) VALUES ('installation_id', 'oldinst1')")
        .execute(&pool)
        .await
        .unwrap();
    // The application worked around the clash with ignore_missing.
    let app = tempfile::tempdir().unwrap();
    write(
        app.path(),
        "20240101000000_app.sql",
        "CREATE TABLE app_things (id BIGINT PRIMARY KEY);",
    );
    let mut lenient = app_migrator(app.path()).await;
    lenient.set_ignore_missing(true);
    lenient.run(&pool).await.unwrap();
    assert_eq!(pg_sqlx_rows(&pool).await.unwrap().len(), 3);

    let store = PostgresStore::connect(&db.url()).await.unwrap();
    let id: LeaseId = "cache/kept1".parse().unwrap();
    assert!(
        store.get(&id).await.unwrap().is_some(),
        "the lease survived"
    );
    assert_eq!(&*store.installation_id().await.unwrap(), "oldinst1");
    let rows = pg_sqlx_rows(&pool).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [20240101000000],
        "only leasehold's own rows left _sqlx_migrations"
    );
    let versions = pg_versions(&pool, "leasehold_schema_version").await;
    assert_eq!(versions.len(), shipped_migrations("postgres"));
    assert_eq!(versions[0], (1, "leases".to_string()));
    // The app's strict migrator works again.
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    PostgresStore::connect(&db.url()).await.unwrap();
    assert_eq!(advisory_locks(&pool).await, 0);
}

#[tokio::test]
async fn postgres_prefix_and_schema_keep_stores_apart() {
    let Some(db) = PostgresDb::create("pg_prefix_schema").await else {
        return;
    };
    let plain = PostgresStore::connect(&db.url()).await.unwrap();
    let prefixed = PostgresStore::builder(db.url())
        .table_prefix("svc_")
        .connect()
        .await
        .unwrap();
    let schema = PostgresStore::builder(db.url())
        .schema("ops")
        .connect()
        .await
        .unwrap();
    assert_eq!(prefixed.table(), "svc_leases");
    assert_eq!(schema.table(), "ops.leasehold_leases");
    leasehold_testkit::store_conformance(&prefixed).await;
    leasehold_testkit::store_conformance(&schema).await;
    smoke(&prefixed, "only-prefixed").await;
    assert_eq!(
        plain
            .count(&LeaseFilter::secret("only-prefixed"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        schema
            .count(&LeaseFilter::secret("only-prefixed"))
            .await
            .unwrap(),
        0
    );
    let ids = [
        plain.installation_id().await.unwrap(),
        prefixed.installation_id().await.unwrap(),
        schema.installation_id().await.unwrap(),
    ];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let pool = plain.pool();
    assert_eq!(
        pg_versions(pool, "svc_schema_version").await.len(),
        shipped_migrations("postgres")
    );
    assert_eq!(
        pg_versions(pool, "ops.leasehold_schema_version")
            .await
            .len(),
        shipped_migrations("postgres")
    );
    let e = PostgresStore::builder(db.url())
        .table_prefix("bad-prefix")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = PostgresStore::builder(db.url())
        .schema("Ops; DROP")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert_eq!(advisory_locks(pool).await, 0);
}

#[tokio::test]
async fn sqlite_app_migrations_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_migrations();
    // App first, then leasehold.
    let url = format!("sqlite://{}", dir.path().join("app-first.db").display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    let before = sqlite_sqlx_rows(&pool).await.unwrap();
    let store = SqliteStore::open(&url).await.unwrap();
    smoke(&store, "cache").await;
    assert_eq!(sqlite_sqlx_rows(&pool).await.unwrap(), before);
    app_migrator(app.path()).await.run(&pool).await.unwrap();
    SqliteStore::open(&url).await.unwrap();
    assert_eq!(sqlite_sqlx_rows(&pool).await.unwrap(), before);
    // Leasehold first, then the app.
    let url = format!(
        "sqlite://{}",
        dir.path().join("leasehold-first.db").display()
    );
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(sqlite_sqlx_rows(store.pool()).await, None);
    app_migrator(app.path())
        .await
        .run(store.pool())
        .await
        .unwrap();
    let rows = sqlite_sqlx_rows(store.pool()).await.unwrap();
    assert_eq!(rows.len(), 2);
    SqliteStore::open(&url).await.unwrap();
    app_migrator(app.path())
        .await
        .run(store.pool())
        .await
        .unwrap();
    assert_eq!(sqlite_sqlx_rows(store.pool()).await.unwrap(), rows);
    assert_eq!(
        sqlite_versions(store.pool(), "leasehold_schema_version")
            .await
            .len(),
        shipped_migrations("sqlite")
    );
    smoke(&store, "cache").await;
}

#[tokio::test]
async fn sqlite_failed_migration_is_a_store_error_and_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conflict.db").display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query("CREATE VIEW leasehold_leases AS SELECT 1 AS id")
        .execute(&pool)
        .await
        .unwrap();
    let e = SqliteStore::open(&url).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store, "{e}");
    assert!(e.to_string().contains("migration 0001 leases"), "{e}");
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('leasehold_meta', 'leasehold_schema_version')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 0, "the failed migration changed nothing");
    // The write lock went with the transaction: another writer gets in at once.
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("CREATE TABLE app_x (id INTEGER)").execute(&pool),
    )
    .await
    .expect("no lock is left")
    .unwrap();
    sqlx::query("DROP VIEW leasehold_leases")
        .execute(&pool)
        .await
        .unwrap();
    let store = SqliteStore::open(&url).await.unwrap();
    smoke(&store, "cache").await;
}

#[tokio::test]
async fn sqlite_upgrade_from_the_sqlx_migrations_layout() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    let old = tempfile::tempdir().unwrap();
    // The oldest release shipped only 0001: 0002 and later must still be applied.
    write(
        old.path(),
        "0001_leases.sql",
        include_str!("../migrations/sqlite/0001_leases.sql"),
    );
    app_migrator(old.path()).await.run(&pool).await.unwrap();
    insert_sqlite(
        &pool,
        "leasehold_leases",
        &RawLease::active("cache/kept1", now_ms()),
    )
    .await;
    pool.close().await;

    let store = SqliteStore::open(&url).await.unwrap();
    let id: LeaseId = "cache/kept1".parse().unwrap();
    assert!(
        store.get(&id).await.unwrap().is_some(),
        "the lease survived"
    );
    assert_eq!(
        sqlite_sqlx_rows(store.pool()).await.unwrap(),
        vec![],
        "leasehold's row left _sqlx_migrations"
    );
    assert_eq!(
        sqlite_versions(store.pool(), "leasehold_schema_version")
            .await
            .len(),
        shipped_migrations("sqlite")
    );
    store.installation_id().await.unwrap();
    smoke(&store, "cache").await;
}

#[tokio::test]
async fn sqlite_prefixed_store_is_separate() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("prefix.db").display());
    let plain = SqliteStore::open(&url).await.unwrap();
    let prefixed = SqliteStore::builder(url.as_str())
        .table_prefix("svc_")
        .open()
        .await
        .unwrap();
    assert_eq!(prefixed.table(), "svc_leases");
    leasehold_testkit::store_conformance(&prefixed).await;
    smoke(&prefixed, "only-prefixed").await;
    assert_eq!(
        plain
            .count(&LeaseFilter::secret("only-prefixed"))
            .await
            .unwrap(),
        0
    );
    assert_ne!(
        plain.installation_id().await.unwrap(),
        prefixed.installation_id().await.unwrap()
    );
    let e = SqliteStore::builder(url.as_str())
        .table_prefix("x\"; DROP TABLE y; --")
        .open()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

const CHILD_URL: &str = "LEASEHOLD_SQL_TEST_CHILD_URL";
const CHILD_START: &str = "LEASEHOLD_SQL_TEST_CHILD_START_MS";

/// Not a test of its own: the body of the child processes of the `*_start_together` tests
/// (it does nothing unless they set its environment).
#[tokio::test]
async fn child_process_opens_the_store() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let start: i64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let wait = start - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let id = if url.starts_with("sqlite:") {
        let store = SqliteStore::open(&url).await.unwrap();
        store.installation_id().await.unwrap()
    } else {
        let store = PostgresStore::connect(&url).await.unwrap();
        store.installation_id().await.unwrap()
    };
    // The harness prints "test ... " before it; the trailing space ends the id.
    println!("INSTALLATION={id} ");
}

/// Starts three processes that open `url` at the same moment; returns the installation ids.
fn open_in_three_processes(url: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let start = now_ms() + 1_500;
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_opens_the_store",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_URL, url)
                .env(CHILD_START, start.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "a child failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
                .lines()
                .find_map(|l| l.split("INSTALLATION=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .expect("the child printed its installation id")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_processes_that_start_together_migrate_once() {
    let Some(db) = PostgresDb::create("pg_start_together").await else {
        return;
    };
    let url = db.url();
    let ids = tokio::task::spawn_blocking(move || open_in_three_processes(&url))
        .await
        .unwrap();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one installation: {ids:?}"
    );
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    assert_eq!(
        pg_versions(&pool, "leasehold_schema_version").await.len(),
        shipped_migrations("postgres"),
        "each migration recorded once"
    );
    assert_eq!(pg_sqlx_rows(&pool).await, None);
    assert_eq!(advisory_locks(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_that_start_together_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("together.db").display());
    let u = url.clone();
    let ids = tokio::task::spawn_blocking(move || open_in_three_processes(&u))
        .await
        .unwrap();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one installation: {ids:?}"
    );
    let store = SqliteStore::open(&url).await.unwrap();
    assert_eq!(
        sqlite_versions(store.pool(), "leasehold_schema_version")
            .await
            .len(),
        shipped_migrations("sqlite")
    );
}
