#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use leasehold_core::*;

/// Shared AWS settings (credentials, region, endpoint), for the AWS providers.
#[cfg(any(feature = "elasticache", feature = "memorydb", feature = "iam"))]
pub use leasehold_aws as aws;

/// AWS ElastiCache (Valkey / Redis OSS RBAC) users, static roles and IAM auth tokens.
#[cfg(feature = "elasticache")]
pub use leasehold_elasticache as elasticache;

/// AWS MemoryDB users.
#[cfg(feature = "memorydb")]
pub use leasehold_memorydb as memorydb;

/// AWS IAM users and STS temporary credentials.
#[cfg(feature = "iam")]
pub use leasehold_iam as iam;

/// Self-hosted Redis / Valkey ACL users on every node.
#[cfg(feature = "redis")]
pub use leasehold_redis as redis;

/// SQLite and PostgreSQL lease stores.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use leasehold_store_sql as store_sql;
