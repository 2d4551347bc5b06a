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

/// The highest `$n` of a statement.
fn params(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A plan line that reads lease rows other than by one key: a scan of the table, or an index
/// search on anything but the id.
fn grows_with_table(line: &str, table: &str) -> bool {
    let l = line.to_ascii_lowercase();
    let table = table.to_ascii_lowercase();
    (l.contains("scan") && l.contains(&table) && !l.contains("index"))
        || (l.starts_with("scan") && !l.contains("constant row"))
        || l.contains("seq scan")
        || (l.contains(&table)
            && l.contains("using index")
            && !l.contains("(id=?)")
            && !l.contains("autoindex"))
}

#[tokio::test]
async fn sqlite_issue_and_revoke_statements_do_not_grow_with_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plans.db").display());
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
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    let mut statements = store.issue_statements();
    statements.extend(store.revoke_statements());
    assert_eq!(statements.len(), 4, "two statements an issue, two a revoke");
    // Control: a count by state reads every lease row of the secret, and is caught.
    statements.push((
        "control",
        store.count_statement(&LeaseFilter::secret("big").state(LeaseState::Active)),
    ));
    for (name, sql) in statements {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        for _ in 0..params(&sql) {
            q = q.bind(None::<String>);
        }
        let rows = q.fetch_all(store.pool()).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        assert_eq!(
            plan.iter().any(|l| grows_with_table(l, &table)),
            name == "control",
            "{name} reads lease rows other than by id:\n{}",
            plan.join("\n")
        );
    }
}

#[tokio::test]
async fn postgres_issue_and_revoke_statements_do_not_grow_with_the_table() {
    let Some(db) = PostgresDb::create("pg_issue_plans").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
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
    let mut statements = store.issue_statements();
    statements.extend(store.revoke_statements());
    assert_eq!(statements.len(), 4, "two statements an issue, two a revoke");
    statements.push((
        "control",
        store.count_statement(&LeaseFilter::secret("big").state(LeaseState::Active)),
    ));
    // The generic plan: what the prepared statement runs whatever its values.
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (i, (name, sql)) in statements.into_iter().enumerate() {
        sqlx::raw_sql(&format!("PREPARE plan_{i} AS {sql}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let nulls = vec!["NULL"; params(&sql)].join(", ");
        let rows = sqlx::raw_sql(&format!("EXPLAIN EXECUTE plan_{i}({nulls})"))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        assert!(
            plan.iter().any(|l| l.contains("leasehold_leases")),
            "{name}: the plan names the table:\n{}",
            plan.join("\n")
        );
        assert_eq!(
            plan.iter()
                .any(|l| l.contains("Seq Scan on leasehold_leases")
                    || l.contains("Bitmap Heap Scan on leasehold_leases")
                    || l.contains("leasehold_leases_secret")),
            name == "control",
            "{name} reads lease rows other than by id:\n{}",
            plan.join("\n")
        );
    }
}
