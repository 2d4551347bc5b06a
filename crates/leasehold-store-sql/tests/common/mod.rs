//! Helpers the SQL store tests share: raw rows, an application's own sqlx migrations.

#![allow(dead_code)]

use std::path::Path;

/// A lease row written with plain SQL (so a test can write what the store never would).
pub struct RawLease<'a> {
    pub id: &'a str,
    pub state: &'a str,
    pub external: &'a str,
    pub due_at_ms: i64,
}

impl<'a> RawLease<'a> {
    pub fn active(id: &'a str, due_at_ms: i64) -> Self {
        RawLease {
            id,
            state: "active",
            external: r#"{"id":"user-raw"}"#,
            due_at_ms,
        }
    }
}

fn insert_sql(table: &str, renewable: &str) -> String {
    format!(
        "INSERT INTO {table} (id, secret, provider_kind, identity, external, state, issued_at, \
         expires_at, max_expires_at, renewable, due_at, claimable_at, revoke_attempts, last_error, \
         claimed_by, claim_until, version) \
         VALUES ($1, 'cache', 'recording', NULL, $2, $3, $4, $4, $4, {renewable}, $4, $4, 0, NULL, NULL, NULL, 1)"
    )
}

pub async fn insert_sqlite(pool: &sqlx::SqlitePool, table: &str, l: &RawLease<'_>) {
    sqlx::query(&insert_sql(table, "1"))
        .bind(l.id)
        .bind(l.external)
        .bind(l.state)
        .bind(l.due_at_ms)
        .execute(pool)
        .await
        .unwrap();
}

pub async fn insert_pg(pool: &sqlx::PgPool, table: &str, l: &RawLease<'_>) {
    sqlx::query(&insert_sql(table, "TRUE"))
        .bind(l.id)
        .bind(l.external)
        .bind(l.state)
        .bind(l.due_at_ms)
        .execute(pool)
        .await
        .unwrap();
}

/// An application's own migrations, numbered 1 and 2 like leasehold's files: the clash the
/// shared `_sqlx_migrations` table used to cause.
pub fn app_migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "0001_app_users.sql",
        "CREATE TABLE app_users (id BIGINT PRIMARY KEY);",
    );
    write(
        dir.path(),
        "0002_app_orders.sql",
        "CREATE TABLE app_orders (id BIGINT PRIMARY KEY);",
    );
    dir
}

pub fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

pub async fn app_migrator(dir: &Path) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator::new(dir.to_path_buf())
        .await
        .unwrap()
}

/// The migration files of a backend, as the crate ships them.
pub fn shipped_migrations(backend: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A typed lease record of `secret`, due at `due_at`.
pub fn lease(
    secret: &str,
    state: leasehold_core::LeaseState,
    due_at: chrono::DateTime<chrono::Utc>,
) -> leasehold_core::LeaseRecord {
    use chrono::SubsecRound;
    let now = chrono::Utc::now().trunc_subsecs(3);
    leasehold_core::LeaseRecord {
        id: leasehold_core::LeaseId::generate(secret),
        secret: secret.into(),
        provider_kind: "recording".into(),
        identity: None,
        external: leasehold_core::ExternalRef::new(format!(
            "user-{}",
            leasehold_core::template::random_lowercase(10)
        )),
        state,
        issued_at: now,
        expires_at: now + chrono::Duration::seconds(3600),
        max_expires_at: now + chrono::Duration::seconds(7200),
        renewable: true,
        due_at: due_at.trunc_subsecs(3),
        revoke_attempts: 0,
        last_error: None,
        claimed_by: None,
        claim_until: None,
        version: 1,
    }
}
