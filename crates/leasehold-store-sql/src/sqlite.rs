//! [`SqliteStore`]: the embedded, durable default.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use log::LevelFilter;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::ConnectOptions;

use crate::schema::{self, Tables};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A [`LeaseStore`](leasehold_core::LeaseStore) in a SQLite file: WAL mode, created on first
/// use, migrated on open. SQLite serialises writers, so `claim_due` is one atomic
/// `UPDATE ... RETURNING`; several processes may share the file on one host.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use leasehold_store_sql::SqliteStore;
///
/// let store = Arc::new(SqliteStore::open("sqlite://leasehold.db").await?);
/// // In an application's own database, under other table names:
/// let store = SqliteStore::builder("sqlite://app.db").table_prefix("svc_").open().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    pub(crate) sql: Arc<crate::Statements>,
    url: String,
    tables: Tables,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &crate::redact_url(&self.url))
            .field("table", &self.tables.table("leases"))
            .finish_non_exhaustive()
    }
}

enum Source {
    Url(String),
    Pool(SqlitePool),
}

/// Options for a [`SqliteStore`]: the table prefix.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_store_sql::SqliteStore;
///
/// let store = SqliteStore::builder("sqlite://app.db")
///     .table_prefix("svc_") // svc_leases, svc_meta, svc_schema_version
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
pub struct SqliteStoreBuilder {
    source: Source,
    prefix: String,
}

impl fmt::Debug for SqliteStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(u) => crate::redact_url(u),
            Source::Pool(_) => "sqlite (pool)".to_string(),
        };
        f.debug_struct("SqliteStoreBuilder")
            .field("source", &source)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SqliteStoreBuilder {
    /// Names the tables `<prefix>leases`, `<prefix>meta` and `<prefix>schema_version`
    /// (default `leasehold_`). Lowercase letters, digits and underscores.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Opens the database (or takes the pool) and brings the tables up to date.
    pub async fn open(self) -> Result<SqliteStore> {
        schema::check_prefix(&self.prefix)?;
        let tables = Tables::new(&self.prefix, None);
        let (pool, url) = match self.source {
            Source::Pool(pool) => (pool, "sqlite (pool)".to_string()),
            Source::Url(url) => (open_pool(&url).await?, url),
        };
        migrate(&pool, &tables).await?;
        let sql = crate::Statements::new(
            &tables.table("leases"),
            &tables.table("meta"),
            &tables.table("secret_counts"),
            &crate::Dialect {
                greatest: "MAX",
                least: "MIN",
                lock: "",
            },
        );
        Ok(SqliteStore {
            pool,
            sql: Arc::new(sql),
            url,
            tables,
        })
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path.db`,
    /// `sqlite:path.db`, or `sqlite::memory:`) and brings the tables up to date.
    pub async fn open(url: &str) -> Result<Self> {
        Self::builder(url).open().await
    }

    /// Uses an existing pool (its database must allow writes) and brings the tables up to date.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        Self::builder_for_pool(pool).open().await
    }

    /// Options for a store at `url`; finish with [`SqliteStoreBuilder::open`].
    pub fn builder(url: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            source: Source::Url(url.into()),
            prefix: schema::DEFAULT_TABLE_PREFIX.to_string(),
        }
    }

    /// Options for a store on an existing pool.
    pub fn builder_for_pool(pool: SqlitePool) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            source: Source::Pool(pool),
            prefix: schema::DEFAULT_TABLE_PREFIX.to_string(),
        }
    }

    /// The pool, for host applications that keep other tables beside the leases.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The lease table's name (`leasehold_leases` with the default prefix).
    pub fn table(&self) -> String {
        self.tables.table("leases")
    }
}

async fn open_pool(url: &str) -> Result<SqlitePool> {
    if !url.starts_with("sqlite:") {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "store url: {:?} is not a sqlite: URL",
                crate::redact_url(url)
            ),
        ));
    }
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    if path.is_empty() || path.split('?').next().unwrap_or_default().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "store url: the sqlite: URL names no file (sqlite://path.db, or sqlite::memory:)",
        ));
    }
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "store url: {:?} is not a SQLite URL: {e}",
                    crate::redact_url(url)
                ),
            )
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: a committed lease survives a process crash; only an OS crash can
        // lose the last transactions, and then at worst a lease is issued twice-cleaned.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Waiting for another process's write is normal; sqlx's multi-line WARN is noise.
        .log_slow_statements(LevelFilter::Off, Duration::from_secs(1))
        .log_statements(LevelFilter::Trace);
    let file = opts.get_filename().to_path_buf();
    let in_memory = url.contains(":memory:");
    let pool = SqlitePoolOptions::new()
        // An in-memory database lives in one connection.
        .max_connections(if in_memory { 1 } else { 8 })
        .min_connections(if in_memory { 1 } else { 0 })
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(600))
        })
        .max_lifetime(if in_memory {
            None
        } else {
            Some(Duration::from_secs(3600))
        });
    // Switching a new file to WAL takes an exclusive lock that SQLite does not wait for (the
    // busy timeout does not apply), so processes opening one new file together can be told
    // "database is locked": try again, for as long as the busy timeout would have waited.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match pool.clone().connect_with(opts.clone()).await {
            Ok(p) => return Ok(p),
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(open_error(&file, e)),
        }
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED (or one of their extended codes): another connection holds the
/// lock.
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        || e.to_string().contains("database is locked")
}

/// Names the file, and the missing directory when that is the cause (SQLite says only
/// "unable to open database file").
fn open_error(file: &Path, e: sqlx::Error) -> Error {
    let missing_dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists());
    let msg = match missing_dir {
        Some(dir) => format!(
            "opening SQLite database {}: directory {} does not exist (create it first)",
            file.display(),
            dir.display()
        ),
        None => format!("opening SQLite database {}: {e}", file.display()),
    };
    let err = crate::map_err("open", e);
    Error::new(err.kind(), msg)
        .with_context("operation", "open")
        .permanent()
}

/// Applies the pending migrations in one `BEGIN IMMEDIATE` transaction: it takes SQLite's
/// write lock first, so processes opening the file together migrate once.
async fn migrate(pool: &SqlitePool, tables: &Tables) -> Result<()> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| schema::migrate_error("starting the transaction", e))?;
    match migrate_in(&mut tx, tables).await {
        Ok(()) => tx
            .commit()
            .await
            .map_err(|e| schema::migrate_error("committing", e)),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(conn: &mut SqliteConnection, tables: &Tables) -> Result<()> {
    let prefix = tables.prefix.as_str();
    sqlx::raw_sql(&schema::create_version_table(prefix))
        .execute(&mut *conn)
        .await
        .map_err(|e| schema::migrate_error("creating the version table", e))?;
    let rows: Vec<(i64, String)> = sqlx::query_as(&schema::select_versions(prefix))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| schema::migrate_error("reading the version table", e))?;
    let mut applied: HashSet<(i64, String)> = rows.into_iter().collect();
    if tables.is_legacy_layout() {
        adopt_legacy(conn, prefix, &mut applied).await?;
    }
    for m in schema::pending(&MIGRATIONS, &applied, prefix) {
        let step = format!("migration {:04} {}", m.version, m.description);
        sqlx::raw_sql(&m.sql)
            .execute(&mut *conn)
            .await
            .map_err(|e| schema::migrate_error(&step, e))?;
        record(conn, prefix, m.version, &m.description, &m.checksum)
            .await
            .map_err(|e| schema::migrate_error(&step, e))?;
    }
    Ok(())
}

async fn record(
    conn: &mut SqliteConnection,
    prefix: &str,
    version: i64,
    description: &str,
    checksum: &str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(&schema::insert_version(prefix))
        .bind(version)
        .bind(description)
        .bind(checksum)
        .bind(schema::now_ms())
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Earlier releases recorded their migrations in `_sqlx_migrations`. Records those as ours
/// and deletes exactly those rows, so the application's own sqlx migrator works again.
async fn adopt_legacy(
    conn: &mut SqliteConnection,
    prefix: &str,
    applied: &mut HashSet<(i64, String)>,
) -> Result<()> {
    let step = "adopting the tables of an earlier release";
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
         AND name IN ('_sqlx_migrations', 'leasehold_leases')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| schema::migrate_error(step, e))?;
    if n != 2 {
        return Ok(());
    }
    let rows: Vec<(i64, String, Vec<u8>)> =
        sqlx::query_as("SELECT version, description, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| schema::migrate_error(step, e))?;
    for m in schema::legacy_rows(&MIGRATIONS, &rows) {
        record(
            conn,
            prefix,
            m.version,
            &m.description,
            &schema::hex(&m.checksum),
        )
        .await
        .map_err(|e| schema::migrate_error(step, e))?;
        sqlx::query(
            "DELETE FROM _sqlx_migrations WHERE version = $1 AND description = $2 AND checksum = $3",
        )
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(m.checksum.as_ref())
        .execute(&mut *conn)
        .await
        .map_err(|e| schema::migrate_error(step, e))?;
        tracing::info!(
            version = m.version,
            description = %m.description,
            "moved leasehold's migration record out of _sqlx_migrations"
        );
        applied.insert((m.version, m.description.to_string()));
    }
    Ok(())
}

crate::impl_lease_store!(SqliteStore, sqlx::Sqlite);
