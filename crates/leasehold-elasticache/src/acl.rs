//! ElastiCache access strings: the [`ElastiCache`](AclDialect::ElastiCache) dialect of the one
//! Redis ACL grammar in [`leasehold_core::acl`].
//!
//! ElastiCache passes the access string to the engine's `ACL SETUSER`; a string the engine
//! refuses makes `CreateUser` fail only after the secret is in use. Parsing it when the secret
//! is registered turns that into an [`ErrorKind::InvalidConfig`](leasehold_core::ErrorKind) up
//! front. Passwords never belong in an access string (ElastiCache takes them in `Passwords`).

use leasehold_core::acl::AclDialect;
pub use leasehold_core::acl::{summarize_existing, AccessSummary};
use leasehold_core::Result;

/// Parses `access` as an ElastiCache access string and summarises it.
///
/// # Examples
///
/// ```
/// use leasehold_elasticache::acl::parse_access_string;
///
/// let s = parse_access_string("on ~app:* +@read -keys").unwrap();
/// assert!(s.enabled && !s.all_keys && !s.all_commands);
/// assert!(parse_access_string("on ~* +@all").unwrap().is_full_access());
/// assert!(parse_access_string("on ~* +@bogus").is_err());
/// assert!(parse_access_string("on >secret ~* +@all").is_err());
/// ```
pub fn parse_access_string(access: &str) -> Result<AccessSummary> {
    Ok(AclDialect::ElastiCache.parse(access)?.summary())
}
