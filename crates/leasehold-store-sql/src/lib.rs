#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use chrono::{DateTime, TimeZone, Utc};
use leasehold_core::{Error, ErrorKind, ExternalRef, LeaseId, LeaseRecord, LeaseState, Result};

mod coordination;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use schema::DEFAULT_TABLE_PREFIX;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};

/// The sqlx this crate is built on (0.8). `from_pool`, `builder_for_pool` and `pool()` take and
/// return its pool types; name them as `leasehold_store_sql::sqlx::PgPool` (or
/// `leasehold::store_sql::sqlx::...`) so an application's pool is always of the version the
/// store speaks. An application on another sqlx major version opens the store from a URL
/// (`connect` / `open`) instead: the two pools then simply coexist.
pub use sqlx;

/// The lease table of a store with the default table prefix.
pub const TABLE: &str = "leasehold_leases";

/// One row, in the column types both backends share.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    secret: String,
    provider_kind: String,
    identity: Option<String>,
    external: String,
    state: String,
    issued_at: i64,
    expires_at: i64,
    max_expires_at: i64,
    renewable: bool,
    due_at: i64,
    revoke_attempts: i64,
    last_error: Option<String>,
    claimed_by: Option<String>,
    claim_until: Option<i64>,
    version: i64,
}

/// The values written for a record: timestamps as unix milliseconds, the reference as JSON.
struct Values {
    id: String,
    secret: String,
    provider_kind: String,
    identity: Option<String>,
    external: String,
    state: &'static str,
    issued_at: i64,
    expires_at: i64,
    max_expires_at: i64,
    renewable: bool,
    due_at: i64,
    claimable_at: i64,
    revoke_attempts: i64,
    last_error: Option<String>,
    claimed_by: Option<String>,
    claim_until: Option<i64>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| corrupt(format!("timestamp {v} is out of range")))
}

fn corrupt(msg: String) -> Error {
    Error::new(ErrorKind::Store, format!("lease row is corrupt: {msg}"))
}

/// The error `get` returns for a row marked damaged.
fn damaged_error(id: &LeaseId, reason: &str) -> Error {
    Error::new(
        ErrorKind::Store,
        format!(
            "lease row is damaged: {reason} (remove it with LeaseManager::forget_damaged or \
             `revoke --force`)"
        ),
    )
    .with_context("lease_id", id)
    .permanent()
}

impl Values {
    fn of(l: &LeaseRecord) -> Result<Values> {
        let claimable = l.claimable_at();
        Ok(Values {
            id: l.id.to_string(),
            secret: l.secret.to_string(),
            provider_kind: l.provider_kind.to_string(),
            identity: l.identity.as_deref().map(str::to_string),
            external: serde_json::to_string(&l.external).map_err(|e| {
                Error::unexpected(format!("external reference does not serialise: {e}"))
            })?,
            state: l.state.as_str(),
            issued_at: ms(l.issued_at),
            expires_at: ms(l.expires_at),
            max_expires_at: ms(l.max_expires_at),
            renewable: l.renewable,
            due_at: ms(l.due_at),
            claimable_at: ms(claimable),
            revoke_attempts: i64::from(l.revoke_attempts),
            last_error: l.last_error.clone(),
            claimed_by: l.claimed_by.as_deref().map(str::to_string),
            claim_until: l.claim_until.map(ms),
        })
    }
}

impl Row {
    /// The record, or why the row is not one.
    fn into_record(self) -> std::result::Result<LeaseRecord, String> {
        let reason = |e: Error| e.message().to_string();
        let id: LeaseId = self
            .id
            .parse()
            .map_err(|e: Error| format!("id: {}", e.message()))?;
        let state: LeaseState = self
            .state
            .parse()
            .map_err(|e: Error| format!("state: {}", e.message()))?;
        let external: ExternalRef =
            serde_json::from_str(&self.external).map_err(|e| format!("external reference: {e}"))?;
        Ok(LeaseRecord {
            id,
            secret: self.secret.into(),
            provider_kind: self.provider_kind.into(),
            identity: self.identity.map(Into::into),
            external,
            state,
            issued_at: from_ms(self.issued_at).map_err(reason)?,
            expires_at: from_ms(self.expires_at).map_err(reason)?,
            max_expires_at: from_ms(self.max_expires_at).map_err(reason)?,
            renewable: self.renewable,
            due_at: from_ms(self.due_at).map_err(reason)?,
            revoke_attempts: u32::try_from(self.revoke_attempts).unwrap_or(u32::MAX),
            last_error: self.last_error,
            claimed_by: self.claimed_by.map(Into::into),
            claim_until: self.claim_until.map(from_ms).transpose().map_err(reason)?,
            version: u64::try_from(self.version)
                .map_err(|_| format!("negative version {}", self.version))?,
        })
    }
}

/// A row that could not be decoded: its id when that much could be read, and why.
struct Damage {
    id: Option<String>,
    reason: String,
}

/// Decodes one row, never failing the whole read: a bad row comes back as [`Damage`].
fn decode<'r, R>(r: &'r R) -> std::result::Result<LeaseRecord, Damage>
where
    R: sqlx::Row,
    Row: sqlx::FromRow<'r, R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let decoded = <Row as sqlx::FromRow<'r, R>>::from_row(r)
        .map_err(|e| format!("undecodable column: {e}"))
        .and_then(Row::into_record);
    decoded.map_err(|reason| Damage {
        id: r.try_get::<String, _>("id").ok(),
        reason,
    })
}

/// What `damaged()` reports for one marked row.
fn damaged_lease<'r, R>(r: &'r R) -> leasehold_core::DamagedLease
where
    R: sqlx::Row,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let text = |col: &'static str| r.try_get::<Option<String>, _>(col).ok().flatten();
    let principal = text("external").and_then(|ext| {
        serde_json::from_str::<serde_json::Value>(&ext)
            .ok()?
            .get("id")?
            .as_str()
            .map(str::to_string)
    });
    leasehold_core::DamagedLease::new(
        text("id").unwrap_or_default(),
        text("damaged").unwrap_or_default(),
    )
    .with_secret(text("secret"))
    .with_principal(principal)
}

/// Maps a sqlx error: unique violations are `AlreadyExists`; pool timeouts, I/O, busy
/// databases, serialization failures and deadlocks are temporary `Store` errors.
fn map_err(op: &'static str, e: sqlx::Error) -> Error {
    let (kind, temporary, msg) = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if db.is_unique_violation() {
                (
                    ErrorKind::AlreadyExists,
                    false,
                    "a lease with this id exists".to_string(),
                )
            } else {
                // SQLite: 5 BUSY, 6 LOCKED (and their extended codes, low byte 5/6);
                // PostgreSQL: 40001 serialization failure, 40P01 deadlock, 57P03 cannot connect now.
                let busy = code
                    .parse::<i64>()
                    .map(|c| matches!(c & 0xff, 5 | 6))
                    .unwrap_or(false);
                let retry = busy || matches!(code.as_str(), "40001" | "40P01" | "57P03" | "53300");
                (
                    ErrorKind::Store,
                    retry,
                    format!("database error {code}: {}", db.message()),
                )
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            (ErrorKind::Store, true, e.to_string())
        }
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => (ErrorKind::Store, true, e.to_string()),
        _ => (ErrorKind::Store, false, e.to_string()),
    };
    let err = Error::new(kind, format!("{op}: {msg}")).with_context("operation", op);
    if temporary {
        err.temporary()
    } else {
        err.permanent()
    }
}

fn not_found(id: &LeaseId) -> Error {
    Error::new(ErrorKind::LeaseNotFound, "no lease with this id").with_context("lease_id", id)
}

fn conflict(id: &LeaseId, expected: u64, found: i64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("lease was changed concurrently (expected version {expected}, found {found})"),
    )
    .with_context("lease_id", id)
}

/// Removes the password from a database URL (`user:password@` and a `password=` query
/// parameter), for `Debug` and messages.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => {
                let (userinfo, host) = rest.split_at(at);
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:[REDACTED]{host}"),
                    None => base.to_string(),
                }
            }
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=[REDACTED]"),
                _ => p.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// The SQL dialect differences the shared statements need.
struct Dialect {
    greatest: &'static str,
    least: &'static str,
    /// Row lock for the claim sub-select.
    lock: &'static str,
}

/// Every statement a store runs, built once per store for its table names, so the hot path
/// does not format SQL.
struct Statements {
    /// `SELECT * FROM leases WHERE damaged IS NULL`: `list` adds its filter.
    select_live: String,
    /// `SELECT COUNT(*) ... WHERE damaged IS NULL`: `count` adds its filter.
    count_live: String,
    /// The issue path's quota check: one row of the per-secret count, kept by triggers.
    count_secret: String,
    insert: String,
    /// The issue path's quota check and write-ahead insert in one statement.
    insert_within: String,
    /// Revoke's read and claim in one statement.
    claim_for_revoke: String,
    get: String,
    update: String,
    delete: String,
    version_of: String,
    claim_due: String,
    next_due: String,
    release_claims: String,
    mark_damaged: String,
    damaged: String,
    remove_damaged: String,
    meta_insert: String,
    meta_select: String,
}

impl Statements {
    /// `leases` and `meta` are the (possibly schema-qualified) table names.
    fn new(leases: &str, meta: &str, counts: &str, d: &Dialect) -> Statements {
        let Dialect {
            greatest,
            least,
            lock,
        } = d;
        Statements {
            select_live: format!("SELECT * FROM {leases} WHERE damaged IS NULL"),
            count_live: format!("SELECT COUNT(*) FROM {leases} WHERE damaged IS NULL"),
            count_secret: format!(
                "SELECT COALESCE((SELECT leases FROM {counts} WHERE secret = $1), 0)"
            ),
            insert: format!(
                "INSERT INTO {leases} (id, secret, provider_kind, identity, external, state, \
                 issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                 revoke_attempts, last_error, claimed_by, claim_until, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1)"
            ),
            // The count row is read in the statement that inserts (and whose trigger bumps it).
            insert_within: format!(
                "INSERT INTO {leases} (id, secret, provider_kind, identity, external, state, \
                 issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                 revoke_attempts, last_error, claimed_by, claim_until, version) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1 \
                 WHERE COALESCE((SELECT leases FROM {counts} WHERE secret = $2), 0) < $17"
            ),
            // The condition is LeaseRecord::revocable_by; the assignments are
            // LeaseRecord::claim_for_revoke.
            claim_for_revoke: format!(
                "UPDATE {leases} SET \
                 state = CASE WHEN state = 'irrevocable' THEN state ELSE 'revoking' END, \
                 claimed_by = $1, claim_until = $2, due_at = $3, \
                 claimable_at = {greatest}($2, $3), version = version + 1 \
                 WHERE id = $4 AND damaged IS NULL \
                 AND NOT (COALESCE(claim_until, $3) > $3 \
                   AND (state IN ('pending', 'revoking') OR COALESCE(claimed_by, '') = $1)) \
                 RETURNING *"
            ),
            get: format!("SELECT * FROM {leases} WHERE id = $1"),
            update: format!(
                "UPDATE {leases} SET secret = $1, provider_kind = $2, identity = $3, \
                 external = $4, state = $5, issued_at = $6, expires_at = $7, max_expires_at = $8, \
                 renewable = $9, due_at = $10, claimable_at = $11, revoke_attempts = $12, \
                 last_error = $13, claimed_by = $14, claim_until = $15, version = version + 1 \
                 WHERE id = $16 AND version = $17 AND damaged IS NULL"
            ),
            delete: format!("DELETE FROM {leases} WHERE id = $1 AND version = $2"),
            version_of: format!("SELECT version FROM {leases} WHERE id = $1"),
            claim_due: if lock.is_empty() {
                // SQLite evaluates the IN list once, and serialises writers.
                format!(
                    "UPDATE {leases} SET claimed_by = $1, claim_until = $2, \
                     claimable_at = {greatest}(due_at, $2), version = version + 1 \
                     WHERE id IN (SELECT id FROM {leases} \
                       WHERE state <> 'revoked' AND damaged IS NULL AND claimable_at <= $3 \
                       ORDER BY claimable_at LIMIT $4) \
                     AND state <> 'revoked' AND damaged IS NULL AND claimable_at <= $3 \
                     RETURNING *"
                )
            } else {
                // A materialised CTE locks the chosen rows once: PostgreSQL may run an
                // `IN (SELECT .. LIMIT n SKIP LOCKED)` more than once and claim more than n.
                format!(
                    "WITH due AS MATERIALIZED (SELECT id FROM {leases} \
                       WHERE state <> 'revoked' AND damaged IS NULL AND claimable_at <= $3 \
                       ORDER BY claimable_at LIMIT $4 {lock}) \
                     UPDATE {leases} AS l SET claimed_by = $1, claim_until = $2, \
                     claimable_at = {greatest}(l.due_at, $2), version = l.version + 1 \
                     FROM due WHERE l.id = due.id \
                     AND l.state <> 'revoked' AND l.damaged IS NULL AND l.claimable_at <= $3 \
                     RETURNING l.*"
                )
            },
            next_due: format!(
                "SELECT MIN(claimable_at) FROM {leases} \
                 WHERE state <> 'revoked' AND damaged IS NULL"
            ),
            release_claims: format!(
                "UPDATE {leases} SET claimed_by = NULL, claim_until = NULL, \
                 due_at = {least}(due_at, $2), claimable_at = {least}(due_at, $2), \
                 version = version + 1 \
                 WHERE claimed_by = $1 AND claim_until > $2 \
                 AND state <> 'revoked' AND damaged IS NULL"
            ),
            // A damaged row gives up its claim, so no instance waits on it.
            mark_damaged: format!(
                "UPDATE {leases} SET damaged = $1, claimed_by = NULL, claim_until = NULL, \
                 version = version + 1 WHERE id = $2 AND damaged IS NULL"
            ),
            damaged: format!(
                "SELECT id, secret, external, damaged FROM {leases} \
                 WHERE damaged IS NOT NULL ORDER BY id LIMIT $1"
            ),
            remove_damaged: format!("DELETE FROM {leases} WHERE id = $1 AND damaged IS NOT NULL"),
            meta_insert: format!(
                "INSERT INTO {meta} (key, value) VALUES ('installation_id', $1) \
                 ON CONFLICT (key) DO NOTHING"
            ),
            meta_select: format!("SELECT value FROM {meta} WHERE key = 'installation_id'"),
        }
    }
}

fn limit_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Implements `LeaseStore` for a pool type. The store has `pool` and `sql: Arc<Statements>`.
macro_rules! impl_lease_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl leasehold_core::LeaseStore for $store {
            async fn insert(&self, lease: &leasehold_core::LeaseRecord) -> leasehold_core::Result<()> {
                let v = crate::Values::of(lease)?;
                sqlx::query(&self.sql.insert)
                    .bind(v.id)
                    .bind(v.secret)
                    .bind(v.provider_kind)
                    .bind(v.identity)
                    .bind(v.external)
                    .bind(v.state)
                    .bind(v.issued_at)
                    .bind(v.expires_at)
                    .bind(v.max_expires_at)
                    .bind(v.renewable)
                    .bind(v.due_at)
                    .bind(v.claimable_at)
                    .bind(v.revoke_attempts)
                    .bind(v.last_error)
                    .bind(v.claimed_by)
                    .bind(v.claim_until)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("insert", e).with_context("lease_id", &lease.id))?;
                Ok(())
            }

            async fn insert_within(
                &self,
                lease: &leasehold_core::LeaseRecord,
                limit: u64,
            ) -> leasehold_core::Result<bool> {
                let v = crate::Values::of(lease)?;
                let done = sqlx::query(&self.sql.insert_within)
                    .bind(v.id)
                    .bind(v.secret)
                    .bind(v.provider_kind)
                    .bind(v.identity)
                    .bind(v.external)
                    .bind(v.state)
                    .bind(v.issued_at)
                    .bind(v.expires_at)
                    .bind(v.max_expires_at)
                    .bind(v.renewable)
                    .bind(v.due_at)
                    .bind(v.claimable_at)
                    .bind(v.revoke_attempts)
                    .bind(v.last_error)
                    .bind(v.claimed_by)
                    .bind(v.claim_until)
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("insert", e).with_context("lease_id", &lease.id))?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_for_revoke(
                &self,
                id: &leasehold_core::LeaseId,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> leasehold_core::Result<leasehold_core::store::RevokeClaim> {
                use leasehold_core::store::RevokeClaim;
                let row = sqlx::query(&self.sql.claim_for_revoke)
                    .bind(owner)
                    .bind(crate::ms(until))
                    .bind(crate::ms(now))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("claim_for_revoke", e).with_context("lease_id", id))?;
                if let Some(row) = row {
                    return match crate::decode(&row) {
                        Ok(lease) => Ok(RevokeClaim::Claimed(lease)),
                        Err(damage) => {
                            self.mark_damaged(&damage).await?;
                            Err(crate::damaged_error(id, &damage.reason))
                        }
                    };
                }
                // Not claimed: tell why (the rare path reads the row).
                match self.get(id).await? {
                    None => Ok(RevokeClaim::Gone),
                    // Its claim ended since the statement ran: the caller tries again.
                    Some(lease) if lease.revocable_by(owner, now) => Err(leasehold_core::Error::new(
                        leasehold_core::ErrorKind::Conflict,
                        "the lease changed while claiming it",
                    )
                    .with_context("lease_id", id)),
                    Some(lease) => Ok(RevokeClaim::Busy(lease)),
                }
            }

            async fn get(
                &self,
                id: &leasehold_core::LeaseId,
            ) -> leasehold_core::Result<Option<leasehold_core::LeaseRecord>> {
                use sqlx::Row as _;
                let row = sqlx::query(&self.sql.get)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("get", e))?;
                let Some(row) = row else { return Ok(None) };
                if let Ok(Some(reason)) = row.try_get::<Option<String>, _>("damaged") {
                    return Err(crate::damaged_error(id, &reason));
                }
                match crate::decode(&row) {
                    Ok(lease) => Ok(Some(lease)),
                    Err(damage) => {
                        self.mark_damaged(&damage).await?;
                        Err(crate::damaged_error(id, &damage.reason))
                    }
                }
            }

            async fn update(&self, lease: &leasehold_core::LeaseRecord) -> leasehold_core::Result<u64> {
                let v = crate::Values::of(lease)?;
                let expected = i64::try_from(lease.version).unwrap_or(i64::MAX);
                let done = sqlx::query(&self.sql.update)
                    .bind(v.secret)
                    .bind(v.provider_kind)
                    .bind(v.identity)
                    .bind(v.external)
                    .bind(v.state)
                    .bind(v.issued_at)
                    .bind(v.expires_at)
                    .bind(v.max_expires_at)
                    .bind(v.renewable)
                    .bind(v.due_at)
                    .bind(v.claimable_at)
                    .bind(v.revoke_attempts)
                    .bind(v.last_error)
                    .bind(v.claimed_by)
                    .bind(v.claim_until)
                    .bind(v.id)
                    .bind(expected)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("update", e).with_context("lease_id", &lease.id))?;
                if done.rows_affected() == 1 {
                    return Ok(lease.version + 1);
                }
                Err(self.cas_failure(&lease.id, lease.version).await)
            }

            async fn delete(&self, id: &leasehold_core::LeaseId, version: u64) -> leasehold_core::Result<()> {
                let expected = i64::try_from(version).unwrap_or(i64::MAX);
                let done = sqlx::query(&self.sql.delete)
                    .bind(id.as_str())
                    .bind(expected)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("delete", e).with_context("lease_id", id))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                Err(self.cas_failure(id, version).await)
            }

            async fn list(
                &self,
                filter: &leasehold_core::LeaseFilter,
            ) -> leasehold_core::Result<Vec<leasehold_core::LeaseRecord>> {
                loop {
                    let mut q = sqlx::QueryBuilder::<$db>::new(&self.sql.select_live);
                    crate::push_filter(&mut q, filter, true);
                    q.push(" ORDER BY id");
                    if let Some(limit) = filter.limit {
                        q.push(" LIMIT ").push_bind(crate::limit_i64(limit));
                    }
                    let rows = q
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| crate::map_err("list", e))?;
                    let mut leases = Vec::with_capacity(rows.len());
                    let mut marked = false;
                    for row in &rows {
                        match crate::decode(row) {
                            Ok(lease) => leases.push(lease),
                            Err(damage) => marked |= self.mark_damaged(&damage).await?,
                        }
                    }
                    // A marked row is now excluded: read again so a page stays full.
                    if !marked {
                        return Ok(leases);
                    }
                }
            }

            async fn count(&self, filter: &leasehold_core::LeaseFilter) -> leasehold_core::Result<u64> {
                let counted: Result<(i64,), sqlx::Error> = match crate::secret_only(filter) {
                    // The issue path's quota check: one row, prepared once per connection.
                    Some(secret) => {
                        sqlx::query_as(&self.sql.count_secret)
                            .bind(secret)
                            .fetch_one(&self.pool)
                            .await
                    }
                    None => {
                        let mut q = sqlx::QueryBuilder::<$db>::new(&self.sql.count_live);
                        crate::push_filter(&mut q, filter, false);
                        q.build_query_as().fetch_one(&self.pool).await
                    }
                };
                let (n,) = counted.map_err(|e| crate::map_err("count", e))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn claim_due(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                owner: &str,
                hold: std::time::Duration,
                limit: usize,
            ) -> leasehold_core::Result<Vec<leasehold_core::LeaseRecord>> {
                let now_ms = crate::ms(now);
                let until = crate::ms(leasehold_core::store::add_duration(now, hold));
                let mut leases = Vec::new();
                let mut want = limit;
                while want > 0 {
                    let rows = sqlx::query(&self.sql.claim_due)
                        .bind(owner)
                        .bind(until)
                        .bind(now_ms)
                        .bind(crate::limit_i64(want))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| crate::map_err("claim_due", e))?;
                    let got = rows.len();
                    let mut marked = false;
                    for row in &rows {
                        match crate::decode(row) {
                            Ok(lease) => leases.push(lease),
                            // Marking also releases the claim just taken.
                            Err(damage) => marked |= self.mark_damaged(&damage).await?,
                        }
                    }
                    // Claim again only to replace rows that turned out damaged.
                    if !marked || got < want {
                        break;
                    }
                    want = limit - leases.len();
                }
                leases.sort_by(|a, b| a.due_at.cmp(&b.due_at).then_with(|| a.id.cmp(&b.id)));
                Ok(leases)
            }

            async fn next_due(&self) -> leasehold_core::Result<Option<chrono::DateTime<chrono::Utc>>> {
                let (min,): (Option<i64>,) = sqlx::query_as(&self.sql.next_due)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("next_due", e))?;
                min.map(crate::from_ms).transpose()
            }

            async fn installation_id(&self) -> leasehold_core::Result<std::sync::Arc<str>> {
                // The first instance to ask creates it; every later one (in any process) reads it.
                sqlx::query(&self.sql.meta_insert)
                    .bind(leasehold_core::new_installation_id())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("installation_id", e))?;
                let (id,): (String,) = sqlx::query_as(&self.sql.meta_select)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("installation_id", e))?;
                leasehold_core::check_installation_id(&id)
                    .map_err(|_| crate::corrupt(format!("installation id {:?} is malformed", id.escape_debug().to_string())))?;
                Ok(id.into())
            }

            fn coordination(&self) -> Option<std::sync::Arc<dyn leasehold_core::CoordinationStore>> { Some(crate::coordination::CoordinationPool::coordination(&self.pool, &self.tables)) }

            async fn release_claims(
                &self,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> leasehold_core::Result<u64> {
                let done = sqlx::query(&self.sql.release_claims)
                    .bind(owner)
                    .bind(crate::ms(now))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("release_claims", e))?;
                Ok(done.rows_affected())
            }

            async fn damaged(
                &self,
                limit: usize,
            ) -> leasehold_core::Result<Vec<leasehold_core::DamagedLease>> {
                let rows = sqlx::query(&self.sql.damaged)
                    .bind(crate::limit_i64(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("damaged", e))?;
                Ok(rows.iter().map(crate::damaged_lease).collect())
            }

            async fn remove_damaged(&self, id: &str) -> leasehold_core::Result<bool> {
                let done = sqlx::query(&self.sql.remove_damaged)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("remove_damaged", e))?;
                Ok(done.rows_affected() > 0)
            }
        }

        impl $store {
            /// Every statement an issue runs with its bind values (the quota check and
            /// write-ahead insert, then the activation), for tests that check their query
            /// plans.
            #[doc(hidden)]
            pub fn issue_statements(&self) -> Vec<(&'static str, String)> {
                vec![
                    ("insert_within", self.sql.insert_within.clone()),
                    ("update", self.sql.update.clone()),
                ]
            }

            /// The statements a revoke runs on its usual path (claim, then delete).
            #[doc(hidden)]
            pub fn revoke_statements(&self) -> Vec<(&'static str, String)> {
                vec![
                    ("claim_for_revoke", self.sql.claim_for_revoke.clone()),
                    ("delete", self.sql.delete.clone()),
                ]
            }

            /// The SQL `count` runs for `filter`, for tests that check its query plan.
            #[doc(hidden)]
            pub fn count_statement(&self, filter: &leasehold_core::LeaseFilter) -> String {
                match crate::secret_only(filter) {
                    Some(_) => self.sql.count_secret.clone(),
                    None => {
                        let mut q = sqlx::QueryBuilder::<$db>::new(&self.sql.count_live);
                        crate::push_filter(&mut q, filter, false);
                        q.sql().to_string()
                    }
                }
            }

            /// Tells a missed compare-and-set apart: another version, or no row at all.
            async fn cas_failure(&self, id: &leasehold_core::LeaseId, expected: u64) -> leasehold_core::Error {
                let found: Result<Option<(i64,)>, sqlx::Error> = sqlx::query_as(&self.sql.version_of)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await;
                match found {
                    Ok(Some((v,))) => crate::conflict(id, expected, v),
                    Ok(None) => crate::not_found(id),
                    Err(e) => crate::map_err("compare-and-set", e),
                }
            }

            /// Marks a row that cannot be decoded (and drops its claim); logs it once, when
            /// this call is the one that marked it. `false` when nothing was marked.
            async fn mark_damaged(&self, damage: &crate::Damage) -> leasehold_core::Result<bool> {
                let Some(id) = &damage.id else {
                    tracing::error!(reason = %damage.reason, "a lease row without a readable id cannot be decoded; it is skipped");
                    return Ok(false);
                };
                let done = sqlx::query(&self.sql.mark_damaged)
                    .bind(&damage.reason)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("mark_damaged", e))?;
                let marked = done.rows_affected() > 0;
                if marked {
                    tracing::error!(
                        lease_id = %id.escape_debug(),
                        reason = %damage.reason,
                        "lease row is damaged: it is skipped by the worker and listed by damaged() until removed"
                    );
                }
                Ok(marked)
            }
        }
    };
}
pub(crate) use impl_lease_store;

/// The secret of a filter that selects exactly one secret's leases (what `count` can answer
/// from the per-secret count; `after` and `limit` do not apply to `count`).
fn secret_only(filter: &leasehold_core::LeaseFilter) -> Option<&str> {
    match &filter.secret {
        Some(secret) if filter.states.is_empty() => Some(secret.as_str()),
        _ => None,
    }
}

/// Appends the filter to a statement that already has a `WHERE` clause.
fn push_filter<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    filter: &'a leasehold_core::LeaseFilter,
    paged: bool,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(secret) = &filter.secret {
        q.push(" AND secret = ").push_bind(secret.as_str());
    }
    if !filter.states.is_empty() {
        q.push(" AND state IN (");
        let mut s = q.separated(", ");
        for st in &filter.states {
            s.push_bind(st.as_str());
        }
        s.push_unseparated(")");
    }
    if paged {
        if let Some(after) = &filter.after {
            q.push(" AND id > ").push_bind(after.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/leases"),
            "postgres://app:[REDACTED]@db:5432/leases"
        );
        assert_eq!(
            redact_url("postgres://app@db/leases"),
            "postgres://app@db/leases"
        );
        assert_eq!(redact_url("sqlite://leases.db"), "sqlite://leases.db");
        assert_eq!(
            redact_url("postgres://db/leases?user=app&password=s3cret&sslmode=require"),
            "postgres://db/leases?user=app&password=[REDACTED]&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app:s3cret@db/x?password=s3cret"),
            "postgres://app:[REDACTED]@db/x?password=[REDACTED]"
        );
    }
}
