//! [`SqliteStore`]: the embedded, durable default.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

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
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    url: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &crate::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path.db`,
    /// `sqlite:path.db`, or `sqlite::memory:`) and runs the migrations.
    pub async fn open(url: &str) -> Result<Self> {
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
            .foreign_keys(true);
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
            })
            .connect_with(opts)
            .await
            .map_err(|e| crate::map_err("open", e))?;
        Self::from_pool_named(pool, url).await
    }

    /// Uses an existing pool (its database must allow writes) and runs the migrations.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        Self::from_pool_named(pool, "sqlite (pool)").await
    }

    async fn from_pool_named(pool: SqlitePool, url: &str) -> Result<Self> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| Error::new(ErrorKind::Store, format!("migrating the lease table: {e}")))?;
        Ok(SqliteStore {
            pool,
            url: url.to_string(),
        })
    }

    /// The pool, for host applications that keep other tables beside the leases.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

crate::impl_lease_store!(SqliteStore, sqlx::Sqlite, greatest = "MAX", lock = "");
