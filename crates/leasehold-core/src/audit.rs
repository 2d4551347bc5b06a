//! Audit events: every issue, renew, revoke, expiry and force-forget.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::ErrorKind;
use crate::model::LeaseId;

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditAction {
    /// A lease was issued (or issuing failed).
    Issue,
    /// A lease was renewed (or renewing failed).
    Renew,
    /// A lease was revoked on request.
    Revoke,
    /// A lease was revoked by the expiry worker.
    Expire,
    /// A revocation attempt failed and will be retried.
    RevokeRetry,
    /// Revocation failed too often; the lease is irrevocable.
    Irrevocable,
    /// An operator removed a lease record without revoking the credential.
    ForceForget,
    /// Reconcile removed a credential that had no lease.
    ReconcileRemove,
}

impl AuditAction {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Issue => "issue",
            AuditAction::Renew => "renew",
            AuditAction::Revoke => "revoke",
            AuditAction::Expire => "expire",
            AuditAction::RevokeRetry => "revoke_retry",
            AuditAction::Irrevocable => "irrevocable",
            AuditAction::ForceForget => "force_forget",
            AuditAction::ReconcileRemove => "reconcile_remove",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event. Holds no secret material.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: AuditAction,
    /// The lease, when there is one.
    pub lease_id: Option<LeaseId>,
    /// The secret.
    pub secret: String,
    /// The identity that asked, if known.
    pub identity: Option<String>,
    /// The external credential's name (username), if known.
    pub principal: Option<String>,
    /// `None` on success, else the error kind.
    pub error: Option<ErrorKind>,
}

impl AuditEvent {
    /// Whether the action succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

/// Where the host application wants audit events to go (a log pipeline, a table, a channel).
///
/// `record` is called inline on the manager's path: keep it quick and non-blocking (send to
/// a channel if the sink does I/O).
pub trait AuditSink: Send + Sync + fmt::Debug + 'static {
    /// Records one event.
    fn record(&self, event: &AuditEvent);
}
