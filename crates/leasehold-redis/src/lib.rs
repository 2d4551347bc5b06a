#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
mod config;
mod connect;
mod errors;
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub mod pool;
mod provider;
mod repair;
mod rules;
mod static_role;
mod topology;

pub use config::{RedisConfig, DEFAULT_ADMIN_USERNAME, MAX_ATTEMPTS, MAX_NODES, MIN_REFRESH_GAP};
pub use provider::{RedisAclProvider, ATTR_NODES, KIND};
pub use repair::{RepairAction, RepairReport, RepairTask};
pub use rules::{AclRules, DEFAULT_ACL_RULES, MAX_RULES_LEN};
pub use static_role::RedisUserTarget;
