#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod errors;
mod provider;
mod rules;
mod static_role;

pub use config::{RedisConfig, RedisTls, MAX_ATTEMPTS, MAX_NODES};
pub use provider::{RedisAclProvider, ATTR_NODES, KIND};
pub use rules::{AclRules, DEFAULT_ACL_RULES, MAX_RULES_LEN};
pub use static_role::RedisUserTarget;
