#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use chrono::{DateTime, TimeZone, Utc};
use leasehold_core::{Error, ErrorKind, ExternalRef, LeaseId, LeaseRecord, LeaseState, Result};

mod coordination;
mod lease_store;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

pub(crate) use lease_store::{bind_columns, impl_lease_store};
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
