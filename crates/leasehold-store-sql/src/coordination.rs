//! [`CoordinationStore`] for the SQL stores: pending group additions in `<prefix>memberships`,
//! the applier's claim in `<prefix>group_claims` (migration 0004).
//!
//! Every statement is one atomic row operation, so SQLite (processes on one host) and
//! PostgreSQL (a fleet) need no explicit locks: the claim is an upsert that only takes a row
//! that is free, run out, or already the caller's. Waiters poll; a group's traffic is a few
//! small reads a second.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::chrono::{DateTime, Utc};
use leasehold_core::store::add_duration;
use leasehold_core::{CoordinationStore, Error, GroupClaim, MemberEntry, MemberState, Result};

use crate::schema::Tables;

/// The statements, built once for a store's table names.
#[derive(Debug)]
struct Sql {
    put: String,
    get: String,
    list: String,
    set_state: String,
    withdraw: String,
    claim: String,
    release: String,
    claim_of: String,
}

impl Sql {
    fn new(tables: &Tables) -> Sql {
        let m = tables.table("memberships");
        let c = tables.table("group_claims");
        let cols = "group_key, member, state, owner, deadline, error_kind, error";
        Sql {
            put: format!(
                "INSERT INTO {m} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (group_key, member) DO UPDATE SET state = excluded.state, \
                 owner = excluded.owner, deadline = excluded.deadline, \
                 error_kind = excluded.error_kind, error = excluded.error"
            ),
            get: format!("SELECT {cols} FROM {m} WHERE group_key = $1 AND member = $2"),
            list: format!("SELECT {cols} FROM {m} WHERE group_key = $1 ORDER BY member"),
            // `{from}` is filled per call with quoted state names (fixed, never user input).
            set_state: format!(
                "UPDATE {m} SET state = $1, error_kind = $2, error = $3 \
                 WHERE group_key = $4 AND member = $5 AND state IN ({{from}}) RETURNING member"
            ),
            withdraw: format!(
                "DELETE FROM {m} WHERE group_key = $1 AND member = $2 RETURNING state"
            ),
            claim: format!(
                "INSERT INTO {c} AS c (group_key, owner, claim_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_key) DO UPDATE SET owner = excluded.owner, \
                 claim_until = excluded.claim_until \
                 WHERE c.owner = excluded.owner OR c.claim_until <= $4 RETURNING owner"
            ),
            release: format!("DELETE FROM {c} WHERE group_key = $1 AND owner = $2"),
            claim_of: format!("SELECT owner, claim_until FROM {c} WHERE group_key = $1"),
        }
    }
}

type EntryRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
);

fn entry(row: EntryRow) -> Result<MemberEntry> {
    let (group, member, state, owner, deadline, error_kind, error) = row;
    let mut e = MemberEntry::new(
        group,
        member,
        MemberState::parse(&state)?,
        owner,
        crate::from_ms(deadline)?,
    );
    e.error_kind = error_kind;
    e.error = error;
    Ok(e)
}

fn states(from: &[MemberState]) -> String {
    if from.is_empty() {
        return "NULL".to_string();
    }
    from.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pool type that can carry the coordination tables.
pub(crate) trait CoordinationPool {
    /// The store's coordination, over this pool and these tables.
    fn coordination(&self, tables: &Tables) -> Arc<dyn CoordinationStore>;
}

macro_rules! impl_coordination {
    ($name:ident, $pool:ty, $doc:literal) => {
        #[doc = $doc]
        pub(crate) struct $name {
            pool: $pool,
            sql: Sql,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl CoordinationPool for $pool {
            fn coordination(&self, tables: &Tables) -> Arc<dyn CoordinationStore> {
                Arc::new($name {
                    pool: self.clone(),
                    sql: Sql::new(tables),
                })
            }
        }

        #[async_trait::async_trait]
        impl CoordinationStore for $name {
            async fn put_member(&self, e: &MemberEntry) -> Result<()> {
                sqlx::query(&self.sql.put)
                    .bind(&e.group)
                    .bind(&e.member)
                    .bind(e.state.as_str())
                    .bind(&e.owner)
                    .bind(crate::ms(e.deadline))
                    .bind(e.error_kind.as_deref())
                    .bind(e.error.as_deref())
                    .execute(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("put_member", err))?;
                Ok(())
            }

            async fn member(&self, group: &str, member: &str) -> Result<Option<MemberEntry>> {
                let row: Option<EntryRow> = sqlx::query_as(&self.sql.get)
                    .bind(group)
                    .bind(member)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("member", err))?;
                row.map(entry).transpose()
            }

            async fn members(&self, group: &str) -> Result<Vec<MemberEntry>> {
                let rows: Vec<EntryRow> = sqlx::query_as(&self.sql.list)
                    .bind(group)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("members", err))?;
                rows.into_iter().map(entry).collect()
            }

            async fn set_state(
                &self,
                group: &str,
                members: &[String],
                from: &[MemberState],
                to: MemberState,
                error: Option<&Error>,
            ) -> Result<Vec<String>> {
                let sql = self.sql.set_state.replace("{from}", &states(from));
                let kind = error.map(|e| e.kind().as_str());
                let message = error.map(|e| e.message().to_string());
                let mut changed = Vec::new();
                for m in members {
                    let row: Option<(String,)> = sqlx::query_as(&sql)
                        .bind(to.as_str())
                        .bind(kind)
                        .bind(message.as_deref())
                        .bind(group)
                        .bind(m)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|err| crate::map_err("set_state", err))?;
                    changed.extend(row.map(|(m,)| m));
                }
                Ok(changed)
            }

            async fn withdraw(&self, group: &str, member: &str) -> Result<Option<MemberState>> {
                let row: Option<(String,)> = sqlx::query_as(&self.sql.withdraw)
                    .bind(group)
                    .bind(member)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("withdraw", err))?;
                row.map(|(s,)| MemberState::parse(&s)).transpose()
            }

            async fn claim_group(
                &self,
                group: &str,
                owner: &str,
                now: DateTime<Utc>,
                hold: Duration,
            ) -> Result<bool> {
                let row: Option<(String,)> = sqlx::query_as(&self.sql.claim)
                    .bind(group)
                    .bind(owner)
                    .bind(crate::ms(add_duration(now, hold)))
                    .bind(crate::ms(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("claim_group", err))?;
                Ok(row.is_some_and(|(o,)| o == owner))
            }

            async fn release_group(&self, group: &str, owner: &str) -> Result<bool> {
                let done = sqlx::query(&self.sql.release)
                    .bind(group)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("release_group", err))?;
                Ok(done.rows_affected() > 0)
            }

            async fn group_claim(&self, group: &str) -> Result<Option<GroupClaim>> {
                let row: Option<(String, i64)> = sqlx::query_as(&self.sql.claim_of)
                    .bind(group)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|err| crate::map_err("group_claim", err))?;
                row.map(|(owner, until)| Ok(GroupClaim::new(owner, crate::from_ms(until)?)))
                    .transpose()
            }
        }
    };
}

#[cfg(feature = "sqlite")]
impl_coordination!(
    SqliteCoordination,
    sqlx::SqlitePool,
    "Group coordination in a SQLite file (processes on one host)."
);
#[cfg(feature = "postgres")]
impl_coordination!(
    PostgresCoordination,
    sqlx::PgPool,
    "Group coordination in PostgreSQL (a fleet)."
);
