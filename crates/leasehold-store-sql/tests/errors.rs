//! What a user sees when something is wrong: messages that name the file or server and the
//! cause, no password, no sqlx slow-statement noise, one ERROR per damaged row.

mod common;

use std::time::{Duration, Instant};

use common::*;
use leasehold_core::{ErrorKind, LeaseFilter, LeaseStore};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;
use sqlx::{Connection, Executor};

#[tokio::test]
async fn sqlite_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let file = missing.join("leases.db");
    let e = SqliteStore::open(&format!("sqlite://{}", file.display()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store);
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("directory {} does not exist", missing.display())),
        "{msg}"
    );
    assert!(!missing.exists(), "nothing was created");
}

#[tokio::test]
async fn postgres_unreachable_names_the_server_and_the_cause() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = "postgres://app:hunter2@127.0.0.1:1/leases?password=hunter2";
    let started = Instant::now();
    let e = PostgresStore::builder(url)
        .acquire_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the timeout"
    );
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(e.is_temporary(), "a server that is down may come back");
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "the cause: {msg}");
    assert!(!msg.contains("pool timed out"), "{msg}");
    for text in [msg, format!("{e:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    let builder = PostgresStore::builder(url);
    assert!(!format!("{builder:?}").contains("hunter2"));
}

/// Lines of sqlx's slow-statement WARN that name `needle`.
fn slow_lines(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("slow statement") && l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_waiting_for_a_lock_logs_no_slow_statement_warning() {
    let capture = leasehold_testkit::capture_tracing();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slow.db").display());
    let store = SqliteStore::builder(url.as_str())
        .table_prefix("slowcheck_")
        .open()
        .await
        .unwrap();
    let control = sqlx::SqlitePool::connect(&url).await.unwrap();
    control
        .execute("CREATE TABLE control_slow (id INTEGER)")
        .await
        .unwrap();

    // Another process holds the write lock for longer than sqlx's 1 s threshold.
    let hold = |url: String| async move {
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        other.execute("BEGIN IMMEDIATE").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        other.execute("COMMIT").await.unwrap();
    };
    let holder = tokio::spawn(hold(url.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let l = lease(
        "cache",
        leasehold_core::LeaseState::Active,
        chrono::Utc::now(),
    );
    store.insert(&l).await.unwrap();
    holder.await.unwrap();
    // The same wait through a pool with sqlx's defaults does log it: the capture works.
    let holder = tokio::spawn(hold(url.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    control
        .execute("INSERT INTO control_slow VALUES (1)")
        .await
        .unwrap();
    holder.await.unwrap();

    let log = capture.contents();
    assert!(
        slow_lines(&log, "control_slow") > 0,
        "the control was logged"
    );
    assert_eq!(
        slow_lines(&log, "slowcheck_"),
        0,
        "the store's wait was not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiting_for_a_lock_logs_no_slow_statement_warning() {
    let Some(db) = PostgresDb::create("pg_slow_statement").await else {
        return;
    };
    let capture = leasehold_testkit::capture_tracing();
    let store = PostgresStore::builder(db.url())
        .table_prefix("slowcheck_")
        .connect()
        .await
        .unwrap();
    let control = sqlx::PgPool::connect(&db.url()).await.unwrap();
    control
        .execute("CREATE TABLE control_slow (id BIGINT)")
        .await
        .unwrap();
    let hold = |url: String, table: &'static str| async move {
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        other.execute("BEGIN").await.unwrap();
        other
            .execute(format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE").as_str())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        other.execute("COMMIT").await.unwrap();
    };
    let holder = tokio::spawn(hold(db.url(), "slowcheck_leases"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let l = lease(
        "cache",
        leasehold_core::LeaseState::Active,
        chrono::Utc::now(),
    );
    store.insert(&l).await.unwrap();
    holder.await.unwrap();
    let holder = tokio::spawn(hold(db.url(), "control_slow"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    control
        .execute("INSERT INTO control_slow VALUES (1)")
        .await
        .unwrap();
    holder.await.unwrap();

    let log = capture.contents();
    assert!(
        slow_lines(&log, "control_slow") > 0,
        "the control was logged"
    );
    assert_eq!(
        slow_lines(&log, "slowcheck_"),
        0,
        "the store's wait was not"
    );
}

#[tokio::test]
async fn a_damaged_row_is_logged_once_with_its_id() {
    let capture = leasehold_testkit::capture_tracing();
    let store = SqliteStore::builder("sqlite::memory:")
        .table_prefix("logonce_")
        .open()
        .await
        .unwrap();
    let raw = RawLease {
        id: "cache/logonce1",
        state: "no-such-state",
        external: r#"{"id":"user-logonce"}"#,
        due_at_ms: now_ms() - 60_000,
    };
    insert_sqlite(store.pool(), &store.table(), &raw).await;
    for _ in 0..3 {
        store.list(&LeaseFilter::all()).await.unwrap();
        store
            .claim_due(chrono::Utc::now(), "me", Duration::from_secs(30), 10)
            .await
            .unwrap();
        let id = "cache/logonce1".parse().unwrap();
        assert_eq!(store.get(&id).await.unwrap_err().kind(), ErrorKind::Store);
    }
    let log = capture.contents();
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cache/logonce1"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("lease row is damaged"), "{}", lines[0]);
    assert!(lines[0].contains("state"), "the reason: {}", lines[0]);
}
