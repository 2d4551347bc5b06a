//! The `LeaseStore` implementation both SQL stores share, as a macro over the pool type: the
//! statements are the same text, and sqlx's query types differ per database.

/// Binds a record's columns after `id`, in table order: `insert` and `insert_within` bind `id`
/// before them, `update` after them (its `WHERE`).
macro_rules! bind_columns {
    ($query:expr, $v:ident) => {
        $query
            .bind($v.secret)
            .bind($v.provider_kind)
            .bind($v.identity)
            .bind($v.external)
            .bind($v.state)
            .bind($v.issued_at)
            .bind($v.expires_at)
            .bind($v.max_expires_at)
            .bind($v.renewable)
            .bind($v.due_at)
            .bind($v.claimable_at)
            .bind($v.revoke_attempts)
            .bind($v.last_error)
            .bind($v.claimed_by)
            .bind($v.claim_until)
    };
}

/// Implements `LeaseStore` for a pool type. The store has `pool` and `sql: Arc<Statements>`.
macro_rules! impl_lease_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl leasehold_core::LeaseStore for $store {
            async fn insert(&self, lease: &leasehold_core::LeaseRecord) -> leasehold_core::Result<()> {
                let v = crate::Values::of(lease)?;
                crate::bind_columns!(sqlx::query(&self.sql.insert).bind(v.id), v)
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
                let done = crate::bind_columns!(sqlx::query(&self.sql.insert_within).bind(v.id), v)
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
                let done = crate::bind_columns!(sqlx::query(&self.sql.update), v)
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
pub(crate) use bind_columns;
pub(crate) use impl_lease_store;
