#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use chrono::{DateTime, TimeZone, Utc};
use leasehold_core::{Error, ErrorKind, ExternalRef, LeaseId, LeaseRecord, LeaseState, Result};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The table every store uses.
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
    fn into_record(self) -> Result<LeaseRecord> {
        let id: LeaseId = self
            .id
            .parse()
            .map_err(|e: Error| corrupt(e.message().to_string()))?;
        let state: LeaseState = self
            .state
            .parse()
            .map_err(|e: Error| corrupt(e.message().to_string()))?;
        let external: ExternalRef = serde_json::from_str(&self.external)
            .map_err(|e| corrupt(format!("external reference: {e}")))?;
        Ok(LeaseRecord {
            id,
            secret: self.secret.into(),
            provider_kind: self.provider_kind.into(),
            identity: self.identity.map(Into::into),
            external,
            state,
            issued_at: from_ms(self.issued_at)?,
            expires_at: from_ms(self.expires_at)?,
            max_expires_at: from_ms(self.max_expires_at)?,
            renewable: self.renewable,
            due_at: from_ms(self.due_at)?,
            revoke_attempts: u32::try_from(self.revoke_attempts).unwrap_or(u32::MAX),
            last_error: self.last_error,
            claimed_by: self.claimed_by.map(Into::into),
            claim_until: self.claim_until.map(from_ms).transpose()?,
            version: u64::try_from(self.version)
                .map_err(|_| corrupt(format!("negative version {}", self.version)))?,
        })
    }
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

/// Removes the password from a database URL, for `Debug` and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[REDACTED]{host}"),
        None => url.to_string(),
    }
}

/// Implements `LeaseStore` for a pool type, with the backend's SQL dialect.
macro_rules! impl_lease_store {
    ($store:ty, $db:ty, greatest = $greatest:literal, lock = $lock:literal) => {
        #[async_trait::async_trait]
        impl leasehold_core::LeaseStore for $store {
            async fn insert(&self, lease: &leasehold_core::LeaseRecord) -> leasehold_core::Result<()> {
                let v = crate::Values::of(lease)?;
                sqlx::query(
                    "INSERT INTO leasehold_leases (id, secret, provider_kind, identity, external, state, \
                     issued_at, expires_at, max_expires_at, renewable, due_at, claimable_at, \
                     revoke_attempts, last_error, claimed_by, claim_until, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1)",
                )
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

            async fn get(
                &self,
                id: &leasehold_core::LeaseId,
            ) -> leasehold_core::Result<Option<leasehold_core::LeaseRecord>> {
                let row: Option<crate::Row> =
                    sqlx::query_as("SELECT * FROM leasehold_leases WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| crate::map_err("get", e))?;
                row.map(crate::Row::into_record).transpose()
            }

            async fn update(&self, lease: &leasehold_core::LeaseRecord) -> leasehold_core::Result<u64> {
                let v = crate::Values::of(lease)?;
                let expected = i64::try_from(lease.version).unwrap_or(i64::MAX);
                let done = sqlx::query(
                    "UPDATE leasehold_leases SET secret = $1, provider_kind = $2, identity = $3, \
                     external = $4, state = $5, issued_at = $6, expires_at = $7, max_expires_at = $8, \
                     renewable = $9, due_at = $10, claimable_at = $11, revoke_attempts = $12, \
                     last_error = $13, claimed_by = $14, claim_until = $15, version = version + 1 \
                     WHERE id = $16 AND version = $17",
                )
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
                let done = sqlx::query("DELETE FROM leasehold_leases WHERE id = $1 AND version = $2")
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
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM leasehold_leases");
                crate::push_filter(&mut q, filter, true);
                q.push(" ORDER BY id");
                if let Some(limit) = filter.limit {
                    q.push(" LIMIT ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
                }
                let rows: Vec<crate::Row> = q
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("list", e))?;
                rows.into_iter().map(crate::Row::into_record).collect()
            }

            async fn count(&self, filter: &leasehold_core::LeaseFilter) -> leasehold_core::Result<u64> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM leasehold_leases");
                crate::push_filter(&mut q, filter, false);
                let (n,): (i64,) = q
                    .build_query_as()
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("count", e))?;
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
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let sql = format!(
                    "UPDATE leasehold_leases SET claimed_by = $1, claim_until = $2, \
                     claimable_at = {greatest}(due_at, $2), version = version + 1 \
                     WHERE id IN (SELECT id FROM leasehold_leases \
                       WHERE state <> 'revoked' AND claimable_at <= $3 \
                       ORDER BY claimable_at LIMIT $4 {lock}) \
                     AND state <> 'revoked' AND claimable_at <= $3 \
                     RETURNING *",
                    greatest = $greatest,
                    lock = $lock,
                );
                let rows: Vec<crate::Row> = sqlx::query_as(&sql)
                    .bind(owner)
                    .bind(until)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| crate::map_err("claim_due", e))?;
                let mut leases = rows
                    .into_iter()
                    .map(crate::Row::into_record)
                    .collect::<leasehold_core::Result<Vec<_>>>()?;
                leases.sort_by(|a, b| a.due_at.cmp(&b.due_at).then_with(|| a.id.cmp(&b.id)));
                Ok(leases)
            }

            async fn next_due(&self) -> leasehold_core::Result<Option<chrono::DateTime<chrono::Utc>>> {
                let (min,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MIN(claimable_at) FROM leasehold_leases WHERE state <> 'revoked'",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(|e| crate::map_err("next_due", e))?;
                min.map(crate::from_ms).transpose()
            }

            async fn installation_id(&self) -> leasehold_core::Result<std::sync::Arc<str>> {
                // The first instance to ask creates it; every later one (in any process) reads it.
                sqlx::query(
                    "INSERT INTO leasehold_meta (key, value) VALUES ('installation_id', $1) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(leasehold_core::new_installation_id())
                .execute(&self.pool)
                .await
                .map_err(|e| crate::map_err("installation_id", e))?;
                let (id,): (String,) =
                    sqlx::query_as("SELECT value FROM leasehold_meta WHERE key = 'installation_id'")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| crate::map_err("installation_id", e))?;
                leasehold_core::check_installation_id(&id)
                    .map_err(|_| crate::corrupt(format!("installation id {:?} is malformed", id.escape_debug().to_string())))?;
                Ok(id.into())
            }
        }

        impl $store {
            /// Tells a missed compare-and-set apart: another version, or no row at all.
            async fn cas_failure(&self, id: &leasehold_core::LeaseId, expected: u64) -> leasehold_core::Error {
                let found: Result<Option<(i64,)>, sqlx::Error> =
                    sqlx::query_as("SELECT version FROM leasehold_leases WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&self.pool)
                        .await;
                match found {
                    Ok(Some((v,))) => crate::conflict(id, expected, v),
                    Ok(None) => crate::not_found(id),
                    Err(e) => crate::map_err("compare-and-set", e),
                }
            }
        }
    };
}
pub(crate) use impl_lease_store;

fn push_filter<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    filter: &'a leasehold_core::LeaseFilter,
    paged: bool,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut sep = " WHERE ";
    if let Some(secret) = &filter.secret {
        q.push(sep).push("secret = ").push_bind(secret.as_str());
        sep = " AND ";
    }
    if !filter.states.is_empty() {
        q.push(sep).push("state IN (");
        let mut s = q.separated(", ");
        for st in &filter.states {
            s.push_bind(st.as_str());
        }
        s.push_unseparated(")");
        sep = " AND ";
    }
    if paged {
        if let Some(after) = &filter.after {
            q.push(sep).push("id > ").push_bind(after.as_str());
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
    }
}
