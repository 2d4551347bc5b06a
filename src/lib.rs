#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The core, by name: no glob, so `use leasehold::*` brings in no module that shadows a
// well-known crate (the Redis provider lives at `leasehold::redis`, not in a glob).
pub use leasehold_core::{
    async_trait, check_installation_id, chrono, format_duration, new_installation_id,
    parse_duration, secrecy, Alert, AlertHook, AlertReason, Alerting, AuditAction, AuditEvent,
    AuditSink, Capabilities, CreateRequest, Created, CredentialWatch, Credentials, DamagedLease,
    DynamicSecret, DynamicSecretBuilder, DynamicSecretProvider, Error, ErrorKind, ExternalRef,
    IntoLeaseStore, IntoProvider, IssueRequest, IssuedLease, LeaseFilter, LeaseId, LeaseManager,
    LeaseManagerBuilder, LeaseRecord, LeaseState, LeaseStore, ManagedCredential, ManagerConfig,
    MemoryStore, NameRule, PasswordPolicy, Readiness, ReconcileReport, RenderedStatement, Result,
    RetryPolicy, RevokeSummary, StatementTemplate, StatementVars, TemplateVars, TtlOverMax,
    UsernameTemplate, WatchEvent, WatchOptions, DEFAULT_USERNAME_PREFIX, INSTALLATION_TAG,
};

pub mod config;

/// Everything else of the core crate (templates, statements, the coordination store, metric
/// names), as `leasehold::core::...`.
pub use leasehold_core as core;

/// The names a service uses every day, safe to glob-import: `use leasehold::prelude::*;`.
pub mod prelude {
    pub use leasehold_core::secrecy::{ExposeSecret, SecretString};
    pub use leasehold_core::{
        CredentialWatch, Credentials, DynamicSecret, Error, ErrorKind, IssueRequest, IssuedLease,
        LeaseId, LeaseManager, ManagerConfig, MemoryStore, WatchOptions,
    };

    #[cfg(feature = "postgres")]
    pub use leasehold_store_sql::PostgresStore;
    #[cfg(feature = "sqlite")]
    pub use leasehold_store_sql::SqliteStore;
}

/// SQLite lease store: one host, durable. Also at `leasehold::store_sql::SqliteStore`.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use leasehold_store_sql::SqliteStore;

/// PostgreSQL lease store: a fleet of instances sharing leases.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use leasehold_store_sql::PostgresStore;

/// Shared AWS settings (credentials, region, endpoint), for the AWS providers.
#[cfg(any(feature = "elasticache", feature = "memorydb", feature = "iam"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "elasticache", feature = "memorydb", feature = "iam")))
)]
pub use leasehold_aws as aws;

/// AWS ElastiCache (Valkey / Redis OSS RBAC) users, static roles and IAM auth tokens.
#[cfg(feature = "elasticache")]
#[cfg_attr(docsrs, doc(cfg(feature = "elasticache")))]
pub use leasehold_elasticache as elasticache;

/// AWS MemoryDB users.
#[cfg(feature = "memorydb")]
#[cfg_attr(docsrs, doc(cfg(feature = "memorydb")))]
pub use leasehold_memorydb as memorydb;

/// AWS IAM users and STS temporary credentials.
#[cfg(feature = "iam")]
#[cfg_attr(docsrs, doc(cfg(feature = "iam")))]
pub use leasehold_iam as iam;

/// Self-hosted Redis / Valkey ACL users on every node; `redis::client` hands a lease to
/// redis-rs, and with the `redis-deadpool` feature `redis::pool` is a connection pool that
/// follows a `CredentialWatch`.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use leasehold_redis as redis;

/// SQLite and PostgreSQL lease stores (builders, table prefixes).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use leasehold_store_sql as store_sql;
