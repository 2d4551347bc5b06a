//! [`CacheService`]: what differs between ElastiCache and MemoryDB besides their SDK calls, in
//! one table — names, keys, naming rules and kinds — so each service's crate keeps only its
//! calls.

use std::fmt;

use leasehold_core::NameRule;

/// One of the two AWS services whose users are Redis ACL users (Valkey / Redis OSS):
/// ElastiCache or MemoryDB. The static-role target ([`UserService::SERVICE`](crate::UserService::SERVICE)),
/// the IAM token provider and the token signer read the service's names from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheService {
    /// ElastiCache: users are named by a **user id** (`ModifyUser`; tokens signed for
    /// `elasticache` with the replication group id or serverless cache name).
    ElastiCache,
    /// MemoryDB: users are named by a **user name** (`UpdateUser`; tokens signed for
    /// `memorydb` with the cluster name).
    MemoryDb,
}

impl CacheService {
    /// The service as its documentation writes it: `ElastiCache`, `MemoryDB`.
    pub const fn name(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "ElastiCache",
            CacheService::MemoryDb => "MemoryDB",
        }
    }

    /// The SigV4 signing name: `elasticache` or `memorydb`.
    pub const fn signing_name(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "elasticache",
            CacheService::MemoryDb => "memorydb",
        }
    }

    /// The key that names a user in configs and messages: `user_id`, `user_name`.
    pub const fn user_key(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "user_id",
            CacheService::MemoryDb => "user_name",
        }
    }

    /// The rule the service's user names follow.
    pub const fn name_rule(self) -> NameRule {
        match self {
            CacheService::ElastiCache => NameRule::ElastiCacheUserId,
            CacheService::MemoryDb => NameRule::MemoryDbUserName,
        }
    }

    /// The call that sets a user's passwords: `ModifyUser`, `UpdateUser`.
    pub const fn set_passwords_operation(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "ModifyUser",
            CacheService::MemoryDb => "UpdateUser",
        }
    }

    /// The [`kind`](leasehold_core::static_role::StaticRoleTarget::kind) of the service's
    /// static-role target.
    pub const fn static_role_kind(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "aws-elasticache-static",
            CacheService::MemoryDb => "aws-memorydb-static",
        }
    }

    /// The public name of the service's static-role target, for `Debug`.
    pub const fn static_role_type(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "ElastiCacheUserTarget",
            CacheService::MemoryDb => "MemoryDbUserTarget",
        }
    }

    /// The [`kind`](leasehold_core::DynamicSecretProvider::kind) of the service's IAM token
    /// provider.
    pub const fn iam_token_kind(self) -> &'static str {
        match self {
            CacheService::ElastiCache => "aws-elasticache-iam-token",
            CacheService::MemoryDb => "aws-memorydb-iam-token",
        }
    }
}

impl fmt::Display for CacheService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_per_service() {
        let e = CacheService::ElastiCache;
        let m = CacheService::MemoryDb;
        assert_eq!(
            (e.to_string(), m.to_string()),
            ("ElastiCache".into(), "MemoryDB".into())
        );
        assert_eq!((e.user_key(), m.user_key()), ("user_id", "user_name"));
        assert_eq!(
            (e.set_passwords_operation(), m.set_passwords_operation()),
            ("ModifyUser", "UpdateUser")
        );
        assert_eq!(e.name_rule(), NameRule::ElastiCacheUserId);
        assert_eq!(m.name_rule(), NameRule::MemoryDbUserName);
        assert_ne!(e.static_role_kind(), m.static_role_kind());
        assert_ne!(e.iam_token_kind(), m.iam_token_kind());
    }
}
