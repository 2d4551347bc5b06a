//! [`PostgresStore`]: one lease table shared by many instances.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use log::LevelFilter;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::schema::{self, Tables};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// First key of the migration lock (`pg_advisory_xact_lock(class, hashtext(tables))`):
/// "leas" in ASCII, so it is recognisable in `pg_locks`.
const LOCK_CLASS: i32 = 0x6c65_6173;

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
/// // Or beside an application's tables, under its own names:
/// let store = PostgresStore::builder("postgres://app@db/app")
///     .schema("ops")
///     .table_prefix("svc_")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<crate::Statements>,
    url: String,
    tables: Tables,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &crate::redact_url(&self.url))
            .field("table", &self.tables.table("leases"))
            .finish_non_exhaustive()
    }
}

enum Source {
    Url(String),
    Pool(PgPool),
}

/// Options for a [`PostgresStore`]: table prefix, schema, pool timeouts.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_store_sql::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://app@db/app")
///     .table_prefix("svc_") // svc_leases, svc_meta, svc_schema_version
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct PostgresStoreBuilder {
    source: Source,
    prefix: String,
    schema: Option<String>,
    acquire_timeout: Duration,
    max_connections: u32,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Url(u) => crate::redact_url(u),
            Source::Pool(_) => "postgres (pool)".to_string(),
        };
        f.debug_struct("PostgresStoreBuilder")
            .field("source", &source)
            .field("prefix", &self.prefix)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// Names the tables `<prefix>leases`, `<prefix>meta` and `<prefix>schema_version`
    /// (default `leasehold_`). Lowercase letters, digits and underscores.
    #[must_use]
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Puts the tables in this schema (created if missing) instead of the first schema on
    /// the connection's `search_path`.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Pool size when connecting by URL (default 10).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Connects (or takes the pool) and brings the tables up to date.
    pub async fn connect(self) -> Result<PostgresStore> {
        schema::check_prefix(&self.prefix)?;
        if let Some(s) = &self.schema {
            schema::check_identifier("schema", s, 63)?;
        }
        let tables = Tables::new(&self.prefix, self.schema.as_deref());
        let (pool, url) = match self.source {
            Source::Pool(pool) => (pool, "postgres (pool)".to_string()),
            Source::Url(url) => {
                let pool = open_pool(&url, self.acquire_timeout, self.max_connections).await?;
                (pool, url)
            }
        };
        migrate(&pool, &tables).await?;
        let sql = crate::Statements::new(
            &tables.table("leases"),
            &tables.table("meta"),
            &tables.table("secret_counts"),
            &crate::Dialect {
                greatest: "GREATEST",
                least: "LEAST",
                lock: "FOR UPDATE SKIP LOCKED",
            },
        );
        Ok(PostgresStore {
            pool,
            sql: Arc::new(sql),
            url,
            tables,
        })
    }
}

leasehold_core::setters! {
    PostgresStoreBuilder {
        /// How long to wait for a pooled connection (default 10 s); also how long `connect` keeps
        /// trying an unreachable server.
        acquire_timeout: Duration,
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host/db`) with the default options and
    /// brings the tables up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// Uses an existing pool and brings the tables up to date.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Self::builder_for_pool(pool).connect().await
    }

    /// Options for a store at `url`; finish with [`PostgresStoreBuilder::connect`].
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(Source::Url(url.into()))
    }

    /// Options for a store on an existing pool.
    pub fn builder_for_pool(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(Source::Pool(pool))
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lease table's name, schema-qualified when a schema was set (`leasehold_leases`).
    pub fn table(&self) -> String {
        self.tables.table("leases")
    }
}

impl PostgresStoreBuilder {
    fn new(source: Source) -> Self {
        PostgresStoreBuilder {
            source,
            prefix: schema::DEFAULT_TABLE_PREFIX.to_string(),
            schema: None,
            acquire_timeout: Duration::from_secs(10),
            max_connections: 10,
        }
    }
}

async fn open_pool(url: &str, acquire_timeout: Duration, max: u32) -> Result<PgPool> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "store url: {:?} is not a postgres:// URL",
                crate::redact_url(url)
            ),
        ));
    }
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "store url: {:?} is not a PostgreSQL URL: {e}",
                    crate::redact_url(url)
                ),
            )
        })?
        // A statement that waits on a lock is normal here; sqlx's multi-line WARN is noise.
        .log_slow_statements(LevelFilter::Off, Duration::from_secs(1))
        .log_statements(LevelFilter::Trace);
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .connect_with(opts.clone())
        .await;
    match pool {
        Ok(pool) => Ok(pool),
        Err(e) => Err(connect_error(url, &opts, e).await),
    }
}

/// Says which server could not be reached and why: the pool reports only "timed out", so
/// one direct connection fetches the real cause.
async fn connect_error(url: &str, opts: &PgConnectOptions, e: sqlx::Error) -> Error {
    let cause = match e {
        sqlx::Error::PoolTimedOut => {
            match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(opts))
                .await
            {
                Ok(Err(direct)) => direct.to_string(),
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    "timed out waiting for a connection (the server answers now)".to_string()
                }
                Err(_) => "the server did not answer within 5s".to_string(),
            }
        }
        other => other.to_string(),
    };
    Error::new(
        ErrorKind::Store,
        format!(
            "connecting to PostgreSQL at {}:{} ({}): {cause}",
            opts.get_host(),
            opts.get_port(),
            crate::redact_url(url)
        ),
    )
    .with_context("operation", "connect")
    .temporary()
}

/// Applies the pending migrations in one transaction under a transaction-scoped advisory
/// lock: instances starting together migrate once, and a failure or crash releases the lock.
async fn migrate(pool: &PgPool, tables: &Tables) -> Result<()> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| schema::migrate_error("starting the transaction", e))?;
    match migrate_in(&mut tx, tables).await {
        Ok(()) => tx
            .commit()
            .await
            .map_err(|e| schema::migrate_error("committing", e)),
        Err(e) => {
            // Explicitly, so the lock goes now and not when the pool next uses the connection.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(conn: &mut PgConnection, tables: &Tables) -> Result<()> {
    let prefix = tables.prefix.as_str();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(format!("{}{prefix}", tables.qualifier))
        .execute(&mut *conn)
        .await
        .map_err(|e| schema::migrate_error("taking the migration lock", e))?;
    if let Some(s) = tables.qualifier.strip_suffix('.') {
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET LOCAL search_path TO {s}"
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| schema::migrate_error("creating the schema", e))?;
    }
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
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
    prefix: &str,
    applied: &mut HashSet<(i64, String)>,
) -> Result<()> {
    let step = "adopting the tables of an earlier release";
    let (sqlx_table, leases): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL, \
                to_regclass('leasehold_leases') IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| schema::migrate_error(step, e))?;
    if !(sqlx_table && leases) {
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

crate::impl_lease_store!(PostgresStore, sqlx::Postgres);
