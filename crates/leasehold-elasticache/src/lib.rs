#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod acl;
mod config;
mod iam_token;
mod membership;
mod provider;
mod static_role;
mod users;

pub use config::{
    ElastiCacheConfig, Engine, Target, DEFAULT_CREATION_STATEMENT, DEFAULT_REVOCATION_STATEMENT,
    MAX_USERS_PER_GROUP,
};
pub use iam_token::{
    ElastiCacheIamTokenConfig, ElastiCacheIamTokenProvider, ElastiCacheIamUser, IAM_TOKEN_KIND,
};
pub use provider::{
    ElastiCacheProvider, ATTR_USER_GROUP, ATTR_USER_NAME, KIND, MANAGED_BY, TAG_USER_GROUP,
};
pub use static_role::ElastiCacheUserTarget;
pub use users::ElastiCacheUsers;
