//! The issue path's quota check (`count` of one secret) reads a per-secret count kept by
//! triggers, so its cost does not grow with the lease table.

mod common;

use common::*;
use leasehold_core::{LeaseFilter, LeaseState, LeaseStore};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;
use sqlx::Row;

const BIG: i64 = 10_000;

/// The count stays right through inserts, deletes, damage marks and removals.
async fn counts_follow_every_change(store: &dyn LeaseStore, mark_damaged: impl AsyncFnOnce(&str)) {
    let big = LeaseFilter::secret("big");
    assert_eq!(store.count(&big).await.unwrap(), BIG as u64);
    assert_eq!(
        store
            .count(&big.clone().state(LeaseState::Active))
            .await
            .unwrap(),
        BIG as u64,
        "the scanning path agrees"
    );
    assert_eq!(store.count(&LeaseFilter::secret("none")).await.unwrap(), 0);
    let now = chrono::Utc::now();
    let a = lease("small", LeaseState::Active, now);
    let b = lease("small", LeaseState::Active, now);
    store.insert(&a).await.unwrap();
    store.insert(&b).await.unwrap();
    assert!(
        store.insert(&b).await.is_err(),
        "a failed insert counts nothing"
    );
    assert_eq!(store.count(&LeaseFilter::secret("small")).await.unwrap(), 2);
    store.delete(&a.id, 1).await.unwrap();
    assert!(store.delete(&a.id, 1).await.is_err());
    assert_eq!(store.count(&LeaseFilter::secret("small")).await.unwrap(), 1);
    let mut b2 = store.get(&b.id).await.unwrap().unwrap();
    b2.state = LeaseState::Revoking;
    store.update(&b2).await.unwrap();
    assert_eq!(store.count(&LeaseFilter::secret("small")).await.unwrap(), 1);
    mark_damaged(b.id.as_str()).await;
    assert_eq!(
        store.count(&LeaseFilter::secret("small")).await.unwrap(),
        0,
        "a damaged row is not counted"
    );
    assert!(store.remove_damaged(b.id.as_str()).await.unwrap());
    assert_eq!(store.count(&LeaseFilter::secret("small")).await.unwrap(), 0);
    assert_eq!(store.count(&big).await.unwrap(), BIG as u64);
}

#[tokio::test]
async fn sqlite_secret_count_reads_no_lease_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("counts.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let table = store.table();
    sqlx::query(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BIG}) \
         INSERT INTO {table} (id, secret, provider_kind, identity, external, state, issued_at, \
         expires_at, max_expires_at, renewable, due_at, claimable_at, revoke_attempts, version) \
         SELECT 'big/r' || i, 'big', 'recording', NULL, '{{\"id\":\"u\"}}', 'active', 0, \
         4102444800000, 4102444800000, 1, 4102444800000, 4102444800000, 0, 1 FROM n"
    ))
    .execute(store.pool())
    .await
    .unwrap();

    let plan = |sql: String, binds: &'static [&'static str]| {
        let pool = store.pool().clone();
        async move {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(&explain);
            for b in binds {
                q = q.bind(*b);
            }
            let rows = q.fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let quota = plan(store.count_statement(&LeaseFilter::secret("big")), &["big"]).await;
    assert!(
        !quota.contains(&table),
        "the quota check reads lease rows:\n{quota}"
    );
    assert!(
        !quota
            .lines()
            .any(|l| l.starts_with("SCAN") && !l.contains("CONSTANT ROW")),
        "{quota}"
    );
    // Control: a filtered count does read the lease table, and the plan shows it.
    let filtered = plan(
        store.count_statement(&LeaseFilter::secret("big").state(LeaseState::Active)),
        &["big", "active"],
    )
    .await;
    assert!(filtered.contains(&table), "{filtered}");

    let pool = store.pool().clone();
    counts_follow_every_change(&store, async |id: &str| {
        sqlx::query(&format!(
            "UPDATE {table} SET damaged = 'test' WHERE id = $1"
        ))
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_secret_count_reads_no_lease_rows() {
    let Some(db) = PostgresDb::create("pg_secret_counts").await else {
        return;
    };
    // A schema too: the trigger must find its table whatever the session's search_path.
    let store = PostgresStore::builder(db.url())
        .schema("ops")
        .connect()
        .await
        .unwrap();
    let table = store.table();
    sqlx::query(&format!(
        "INSERT INTO {table} (id, secret, provider_kind, identity, external, state, issued_at, \
         expires_at, max_expires_at, renewable, due_at, claimable_at, revoke_attempts, version) \
         SELECT 'big/r' || i, 'big', 'recording', NULL, '{{\"id\":\"u\"}}', 'active', 0, \
         4102444800000, 4102444800000, TRUE, 4102444800000, 4102444800000, 0, 1 \
         FROM generate_series(1, {BIG}) AS i"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(store.pool())
        .await
        .unwrap();

    let plan = |sql: String, binds: &'static [&'static str]| {
        let pool = store.pool().clone();
        async move {
            let explain = format!("EXPLAIN {sql}");
            let mut q = sqlx::query(&explain);
            for b in binds {
                q = q.bind(*b);
            }
            let rows = q.fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let bare = "leasehold_leases";
    let quota = plan(store.count_statement(&LeaseFilter::secret("big")), &["big"]).await;
    assert!(
        !quota.contains(bare),
        "the quota check reads lease rows:\n{quota}"
    );
    let filtered = plan(
        store.count_statement(&LeaseFilter::secret("big").state(LeaseState::Active)),
        &["big", "active"],
    )
    .await;
    assert!(filtered.contains(bare), "{filtered}");

    let pool = store.pool().clone();
    counts_follow_every_change(&store, async |id: &str| {
        sqlx::query(&format!(
            "UPDATE {table} SET damaged = 'test' WHERE id = $1"
        ))
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    })
    .await;
}
