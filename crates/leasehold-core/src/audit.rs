//! Audit events: every issue, renew, revoke, expiry and force-forget.

use std::fmt;
use std::sync::Arc;

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
    /// The error's message on failure (the lease's last revocation error for `Irrevocable`).
    /// Never holds secret material: no error does.
    pub message: Option<String>,
    /// Failed revocation attempts of the lease so far.
    pub attempts: u32,
}

impl AuditEvent {
    /// An event for `action` on `secret`, now, with nothing else known yet.
    pub fn new(action: AuditAction, secret: impl Into<String>) -> Self {
        AuditEvent {
            at: Utc::now(),
            action,
            lease_id: None,
            secret: secret.into(),
            identity: None,
            principal: None,
            error: None,
            message: None,
            attempts: 0,
        }
    }

    /// Whether the action succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

/// Why an [`Alert`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertReason {
    /// A lease became irrevocable: its credential may still exist and nothing retries it soon.
    Irrevocable,
    /// A lease's revocation failed this many times in a row (and is still retried).
    RepeatedRevokeFailures(u32),
    /// An issue was refused because the secret reached its `max_active_leases`.
    QuotaRefused,
}

/// What an operator needs to act on: the reason and the audit event (lease id, secret,
/// principal, last error).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Alert {
    /// Why it fired.
    pub reason: AlertReason,
    /// The event that made it fire.
    pub event: AuditEvent,
}

/// Receives alerts from an [`Alerting`] sink (page someone, post to a webhook, open a ticket).
/// Called inline on the manager's path: hand slow work to a task or a channel.
pub trait AlertHook: Send + Sync + fmt::Debug + 'static {
    /// One alert.
    fn alert(&self, alert: &Alert);
}

/// An [`AuditSink`] that fires an [`AlertHook`] on irrevocable leases, on repeated revoke
/// failures (from `repeated_after` failed attempts, default 3) and on quota refusals, and
/// passes every event on to an inner sink if there is one.
///
/// ```
/// use std::sync::Arc;
/// use leasehold_core::{Alert, AlertHook, Alerting};
///
/// #[derive(Debug)]
/// struct Pager;
/// impl AlertHook for Pager {
///     fn alert(&self, alert: &Alert) {
///         eprintln!("ALERT {:?}: {:?} {}", alert.reason, alert.event.lease_id, alert.event.secret);
///     }
/// }
/// let sink = Alerting::new(Pager).repeated_after(5);
/// # let _ = sink;
/// ```
#[derive(Debug)]
pub struct Alerting<H> {
    hook: H,
    repeated_after: u32,
    inner: Option<Arc<dyn AuditSink>>,
}

impl<H: AlertHook> Alerting<H> {
    /// Alerts through `hook`.
    pub fn new(hook: H) -> Self {
        Alerting {
            hook,
            repeated_after: 3,
            inner: None,
        }
    }

    /// Alerts on a revocation's `n`th failed attempt and each one after it.
    #[must_use]
    pub fn repeated_after(mut self, n: u32) -> Self {
        self.repeated_after = n.max(1);
        self
    }

    /// Passes every event on to `sink` as well.
    #[must_use]
    pub fn forward_to(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.inner = Some(sink);
        self
    }

    /// The alert `event` raises, if any.
    pub fn reason(&self, event: &AuditEvent) -> Option<AlertReason> {
        match (event.action, event.error) {
            (AuditAction::Irrevocable, _) => Some(AlertReason::Irrevocable),
            (AuditAction::RevokeRetry, Some(_)) if event.attempts >= self.repeated_after => {
                Some(AlertReason::RepeatedRevokeFailures(event.attempts))
            }
            (AuditAction::Issue, Some(ErrorKind::QuotaExceeded)) => Some(AlertReason::QuotaRefused),
            _ => None,
        }
    }
}

impl<H: AlertHook> AuditSink for Alerting<H> {
    fn record(&self, event: &AuditEvent) {
        if let Some(inner) = &self.inner {
            inner.record(event);
        }
        if let Some(reason) = self.reason(event) {
            self.hook.alert(&Alert {
                reason,
                event: event.clone(),
            });
        }
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
