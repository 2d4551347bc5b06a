#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checks;
mod config;
mod iam_user;
mod readiness;
mod sts;

pub use checks::{check_policy_document, MAX_POLICY_CHARS};
pub use config::{IamConfig, CREDENTIAL_TYPES};
pub use iam_user::{
    IamUserConfig, IamUserProvider, ATTR_ACCESS_KEY_ID, ATTR_CREATED_AT, ATTR_USER_ARN, MANAGED_BY,
};
pub use sts::{
    AssumedRole, FederationToken, StsConfig, StsCredentialType, StsProvider,
    ASSUME_ROLE_DEFAULT_MAX_TTL, ASSUME_ROLE_MAX_TTL, ATTR_EXPIRES_AT, ATTR_PRINCIPAL_ARN,
    STS_MIN_TTL, TOKEN_MAX_TTL,
};
