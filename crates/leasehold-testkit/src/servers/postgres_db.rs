//! A throwaway database on the local PostgreSQL server.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

use super::{skip_or_panic, unique_name};

/// The server URL used when `LEASEHOLD_TEST_PG_URL` is not set.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, uniquely named database on the PostgreSQL server at `LEASEHOLD_TEST_PG_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`; that user must be allowed to
/// `CREATE DATABASE`). Dropped with `DROP DATABASE ... WITH (FORCE)` on `Drop`, best effort.
pub struct PostgresDb {
    pub(super) admin_url: String,
    name: String,
    url: String,
}

impl std::fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only the database name.
        f.debug_struct("PostgresDb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PostgresDb {
    /// Create a database for `test`. `None` (after [`skip_or_panic`]) when the server does not
    /// answer within a few seconds or refuses `CREATE DATABASE`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::PostgresDb;
    /// let Some(db) = PostgresDb::create("doc_example").await else { return };
    /// let url = db.url(); // postgres://postgres@127.0.0.1:5432/lh_doc_example_...
    /// # let _ = url;
    /// # }
    /// ```
    pub async fn create(test: &str) -> Option<PostgresDb> {
        let admin_url = std::env::var("LEASEHOLD_TEST_PG_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string());
        // Database names are identifiers of at most 63 bytes; unique_name keeps well under.
        let name = format!("lh_{}", unique_name(test).replace('-', "_"));
        let url = match database_url(&admin_url, &name) {
            Some(url) => url,
            None => {
                skip_or_panic(test, "LEASEHOLD_TEST_PG_URL is not a postgres:// URL");
                return None;
            }
        };
        let created = async {
            let mut conn =
                tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url))
                    .await
                    .map_err(|_| "timed out connecting".to_string())?
                    .map_err(|e| e.to_string())?;
            conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .map_err(|e| format!("CREATE DATABASE failed: {e}"))?;
            let _ = conn.close().await;
            Ok::<(), String>(())
        }
        .await;
        match created {
            Ok(()) => Some(PostgresDb {
                admin_url,
                name,
                url,
            }),
            Err(e) => {
                skip_or_panic(
                    test,
                    &format!("PostgreSQL at LEASEHOLD_TEST_PG_URL (or {DEFAULT_ADMIN_URL}) unavailable: {e}"),
                );
                None
            }
        }
    }

    /// The URL of this database (the server URL with the database name replaced).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop may run inside a runtime: do the async work on a thread with its own runtime.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let connect =
                    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url));
                if let Ok(Ok(mut conn)) = connect.await {
                    let _ = conn.execute(sql.as_str()).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// `admin_url` with its database path replaced by `name`; query parameters are kept.
fn database_url(admin_url: &str, name: &str) -> Option<String> {
    let rest_at = admin_url.find("://")? + 3;
    let (scheme, rest) = admin_url.split_at(rest_at);
    if !scheme.starts_with("postgres") {
        return None;
    }
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    Some(format!("{scheme}{authority}/{name}{query}"))
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_path() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x").as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/x")
        );
        assert_eq!(
            database_url("postgresql://u:p@h/db?sslmode=disable", "x").as_deref(),
            Some("postgresql://u:p@h/x?sslmode=disable")
        );
        assert_eq!(
            database_url("postgres://h:1", "x").as_deref(),
            Some("postgres://h:1/x")
        );
        assert_eq!(database_url("mysql://h/db", "x"), None);
    }
}
