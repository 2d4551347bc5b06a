#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod config;
mod iam_token;
mod membership;
mod provider;
mod statement;
mod static_role;
mod users;

pub use access::{check_access_string, AccessSummary};
pub use config::{
    MemoryDbConfig, DEFAULT_CREATION_STATEMENT, DEFAULT_REVOCATION_STATEMENT, MAX_USERS_PER_ACL,
    OPEN_ACCESS_ACL,
};
pub use iam_token::{
    MemoryDbIamTokenConfig, MemoryDbIamTokenProvider, MemoryDbIamUser, ATTR_TOKEN_EXPIRES_AT,
    IAM_TOKEN_KIND,
};
pub use provider::{MemoryDbProvider, ATTR_ACL, ATTR_CLUSTER, KIND, MANAGED_BY, TAG_ACL};
pub use static_role::MemoryDbUserTarget;
pub use users::MemoryDbUsers;
