//! MemoryDB access strings: the [`MemoryDb`](AclDialect::MemoryDb) dialect of the one Redis ACL
//! grammar in [`leasehold_core::acl`].
//!
//! MemoryDB hands the access string to the engine's ACL parser; a string the engine refuses
//! fails `CreateUser` only once the secret is in use. Parsing it when the secret is registered
//! makes that a configuration error up front. Passwords belong in `AuthenticationMode`, never in
//! the access string.

pub use leasehold_core::acl::AccessSummary;
use leasehold_core::acl::AclDialect;
use leasehold_core::Result;

/// Parses a MemoryDB access string (Redis ACL rules without password rules) and says what it
/// grants. The user must end up switched `on`: a leased credential that cannot log in is a
/// configuration mistake.
///
/// # Examples
///
/// ```
/// use leasehold_memorydb::check_access_string;
///
/// let s = check_access_string("on ~app:* &* +@read -keys").unwrap();
/// assert!(s.enabled && !s.all_keys && !s.all_commands);
/// assert!(check_access_string("on ~* +@all").unwrap().all_commands);
/// assert!(check_access_string("on ~* +@everything").is_err());
/// assert!(check_access_string("on >password ~* +@all").is_err());
/// assert!(check_access_string("off ~* +@all").is_err());
/// ```
pub fn check_access_string(access: &str) -> Result<AccessSummary> {
    Ok(AclDialect::MemoryDb.parse(access)?.summary())
}
