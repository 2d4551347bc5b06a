//! Leasehold's own schema bookkeeping: which of the numbered files under
//! `migrations/<backend>/` a database has, recorded in `<prefix>schema_version`.
//!
//! Never the application's `_sqlx_migrations`: an app that migrates the same database with
//! sqlx would otherwise see leasehold's rows as migrations it is missing (or leasehold would
//! see the app's). sqlx's `migrate!` is used only to embed the files; the runner is ours, so
//! the lock it takes is a transaction lock that any failure releases.

use std::collections::HashSet;

use leasehold_core::{Error, ErrorKind, Result};
use sqlx::migrate::Migrator;

/// The table prefix a store uses unless told otherwise (`leasehold_leases`, ...).
pub const DEFAULT_TABLE_PREFIX: &str = "leasehold_";

/// The prefix the migration files are written with; replaced by the configured one.
const FILE_PREFIX: &str = "leasehold_";

/// The longest prefix: PostgreSQL identifiers are at most 63 bytes and the longest name
/// leasehold derives from a prefix adds 23.
const MAX_PREFIX: usize = 40;

/// Checks a table prefix or schema name: a lowercase SQL identifier that needs no quoting.
pub(crate) fn check_identifier(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{what} {name:?}: use 1 to {max} lowercase ASCII letters, digits and underscores, \
                 not starting with a digit"
            ),
        ))
    }
}

pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    check_identifier("table prefix", prefix, MAX_PREFIX)
}

/// Table names of one store, qualified by its schema when it has one.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub prefix: String,
    /// `schema.` or empty.
    pub qualifier: String,
}

impl Tables {
    pub fn new(prefix: &str, schema: Option<&str>) -> Tables {
        Tables {
            prefix: prefix.to_string(),
            qualifier: schema.map(|s| format!("{s}.")).unwrap_or_default(),
        }
    }

    /// `name` (such as `leases`) with the prefix and schema.
    pub fn table(&self, name: &str) -> String {
        format!("{}{}{name}", self.qualifier, self.prefix)
    }

    /// Whether these are the names the earlier releases used (they ran sqlx's migrator).
    pub fn is_legacy_layout(&self) -> bool {
        self.prefix == DEFAULT_TABLE_PREFIX && self.qualifier.is_empty()
    }
}

/// The version table (unqualified: migrations run with the store's schema first on the path).
pub(crate) fn version_table(prefix: &str) -> String {
    format!("{prefix}schema_version")
}

pub(crate) fn create_version_table(prefix: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
            version     BIGINT NOT NULL, \
            description TEXT   NOT NULL, \
            checksum    TEXT   NOT NULL, \
            applied_at  BIGINT NOT NULL, \
            PRIMARY KEY (version, description))",
        version_table(prefix)
    )
}

pub(crate) fn insert_version(prefix: &str) -> String {
    format!(
        "INSERT INTO {} (version, description, checksum, applied_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (version, description) DO NOTHING",
        version_table(prefix)
    )
}

pub(crate) fn select_versions(prefix: &str) -> String {
    format!("SELECT version, description FROM {}", version_table(prefix))
}

/// One migration a database still needs, its SQL rewritten for the store's prefix.
pub(crate) struct Pending {
    pub version: i64,
    pub description: String,
    pub checksum: String,
    pub sql: String,
}

/// The migrations of `files` not in `applied`, in order of version then name (two files may
/// share a number).
pub(crate) fn pending(
    files: &Migrator,
    applied: &HashSet<(i64, String)>,
    prefix: &str,
) -> Vec<Pending> {
    let mut out: Vec<Pending> = files
        .iter()
        .filter(|m| !applied.contains(&(m.version, m.description.to_string())))
        .map(|m| Pending {
            version: m.version,
            description: m.description.to_string(),
            checksum: hex(&m.checksum),
            sql: m.sql.replace(FILE_PREFIX, prefix),
        })
        .collect();
    out.sort_by(|a, b| (a.version, &a.description).cmp(&(b.version, &b.description)));
    out
}

/// The rows an earlier release left in `_sqlx_migrations`: exactly leasehold's own files
/// (same version, description and checksum), nothing of the application's.
pub(crate) fn legacy_rows<'a>(
    files: &'a Migrator,
    in_sqlx_table: &[(i64, String, Vec<u8>)],
) -> Vec<&'a sqlx::migrate::Migration> {
    files
        .iter()
        .filter(|m| {
            in_sqlx_table.iter().any(|(v, d, c)| {
                *v == m.version && *d == *m.description && c.as_slice() == &*m.checksum
            })
        })
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The error a failed migration returns (the transaction is rolled back).
pub(crate) fn migrate_error(step: &str, e: sqlx::Error) -> Error {
    let cause = match &e {
        sqlx::Error::Database(db) => format!(
            "database error {}: {}",
            db.code().unwrap_or_default(),
            db.message()
        ),
        other => other.to_string(),
    };
    Error::new(
        ErrorKind::Store,
        format!("migrating the lease tables: {step}: {cause} (nothing was changed)"),
    )
    .with_context("operation", "migrate")
    .permanent()
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_plain_identifiers() {
        for ok in ["leasehold_", "svc_", "a", "_x1"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Svc_", "1x", "a-b", "a.b", "x\"; drop", &"a".repeat(41)] {
            let e = check_prefix(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn table_names_take_prefix_and_schema() {
        assert_eq!(Tables::new("svc_", None).table("leases"), "svc_leases");
        assert_eq!(
            Tables::new("svc_", Some("ops")).table("leases"),
            "ops.svc_leases"
        );
        assert!(Tables::new(DEFAULT_TABLE_PREFIX, None).is_legacy_layout());
        assert!(!Tables::new(DEFAULT_TABLE_PREFIX, Some("ops")).is_legacy_layout());
    }
}
