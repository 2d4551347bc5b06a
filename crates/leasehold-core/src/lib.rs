#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod acl;
pub mod audit;
pub mod backoff;
pub mod coordination;
pub mod duration;
pub mod error;
pub mod manager;
pub mod memory;
pub mod model;
pub mod names;
pub mod password;
pub mod provider;
pub mod secret;
mod setters;
pub mod settings;
pub mod static_role;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod watch;

pub use audit::{Alert, AlertHook, AlertReason, Alerting, AuditAction, AuditEvent, AuditSink};
pub use backoff::{Backoff, Jitter};
pub use coordination::{
    CoordinationStore, GroupClaim, MemberEntry, MemberState, MemoryCoordination, SharedCoordination,
};
pub use duration::{format_duration, parse_duration, DurationText};
pub use error::{Error, ErrorKind, Result};
pub use manager::{
    IssueRequest, IssuedLease, LeaseManager, LeaseManagerBuilder, ManagerConfig, ReconcileReport,
    RetryPolicy, RevokeSummary,
};
pub use memory::MemoryStore;
pub use model::{Credentials, ExternalRef, LeaseId, LeaseRecord, LeaseState};
pub use names::{NameRule, DEFAULT_USERNAME_PREFIX};
pub use password::PasswordPolicy;
pub use provider::{
    Capabilities, CreateRequest, Created, DriftReport, DynamicSecretProvider, IntoProvider,
    ManagedCredential, Readiness, INSTALLATION_TAG,
};
pub use secret::{DynamicSecret, DynamicSecretBuilder, TtlOverMax};
pub use static_role::{StaticRoleReader, StaticRoleRotator};
pub use store::{
    check_installation_id, new_installation_id, DamagedLease, IntoLeaseStore, LeaseFilter,
    LeasePages, LeaseStore, INSTALLATION_ID_LEN,
};
pub use template::{
    RenderedStatement, StatementTemplate, StatementVars, TemplateVars, UsernameTemplate,
};
pub use watch::{CredentialWatch, WatchEvent, WatchOptions};

// Re-exported so providers and hosts name the same versions.
pub use async_trait::async_trait;
pub use chrono;
pub use secrecy;
