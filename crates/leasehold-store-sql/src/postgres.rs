//! [`PostgresStore`]: one lease table shared by many instances.

use std::fmt;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// A [`LeaseStore`](leasehold_core::LeaseStore) in PostgreSQL, for services that run as
/// several replicas. `claim_due` selects due rows `FOR UPDATE SKIP LOCKED` inside one
/// `UPDATE`, so concurrent instances never claim the same lease; a claim runs out after its
/// hold, so the leases of a crashed instance are picked up by the others.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use leasehold_store_sql::PostgresStore;
///
/// let store = Arc::new(PostgresStore::connect("postgres://leasehold@db/leasehold").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    url: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &crate::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host/db`) and runs the migrations (under
    /// sqlx's advisory lock, so instances starting together do not race).
    pub async fn connect(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "store url: {:?} is not a postgres:// URL",
                    crate::redact_url(url)
                ),
            ));
        }
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| crate::map_err("connect", e))?;
        Self::from_pool_named(pool, url).await
    }

    /// Uses an existing pool and runs the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Self::from_pool_named(pool, "postgres (pool)").await
    }

    async fn from_pool_named(pool: PgPool, url: &str) -> Result<Self> {
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::new(ErrorKind::Store, format!("migrating the lease table: {e}")))?;
        Ok(PostgresStore {
            pool,
            url: url.to_string(),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

crate::impl_lease_store!(
    PostgresStore,
    sqlx::Postgres,
    greatest = "GREATEST",
    lock = "FOR UPDATE SKIP LOCKED"
);
