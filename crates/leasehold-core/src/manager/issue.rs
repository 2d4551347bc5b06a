//! Issuing: [`IssueRequest`], [`IssuedLease`], the write-ahead `Pending` record and the
//! cancellation-safe provider call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{now, Inner, LeaseManager, SecretEntry};
use crate::audit::{AuditAction, AuditEvent};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Credentials, ExternalRef, LeaseId, LeaseRecord, LeaseState};
use crate::provider::{CreateRequest, Readiness};
use crate::store::{add_duration, LeaseFilter};
use crate::telemetry;

/// What to issue.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::IssueRequest;
///
/// let req = IssueRequest::new().ttl(Duration::from_secs(900)).identity("orders-api");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssueRequest {
    /// TTL; the secret's default when `None`.
    pub ttl: Option<Duration>,
    /// Who asks (audit, and `identity.name` in templates).
    pub identity: Option<String>,
    /// Skip the bounded wait until the credential is confirmed live.
    pub no_wait: bool,
}

impl IssueRequest {
    /// The secret's defaults, waiting for readiness.
    pub fn new() -> Self {
        IssueRequest::default()
    }

    /// Sets the TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the identity.
    #[must_use]
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Sets whether to wait for readiness (default true).
    #[must_use]
    pub fn wait(mut self, wait: bool) -> Self {
        self.no_wait = !wait;
        self
    }

    /// Checks what can be checked without the secret's definition: a TTL, if set, is
    /// positive; an identity, if set, is 1 to 256 characters without control characters.
    /// [`LeaseManager::issue`] does this too; call it to refuse a request before any other work.
    pub fn check(&self) -> Result<()> {
        if self.ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input("ttl must be positive"));
        }
        if let Some(id) = &self.identity {
            let chars = id.chars().count();
            if chars == 0 || chars > 256 {
                return Err(Error::invalid_input(format!(
                    "identity must be 1 to 256 characters, it has {chars}"
                )));
            }
            if id
                .chars()
                .any(|c| c.is_control() || crate::names::is_invisible_format(c))
            {
                return Err(Error::invalid_input(
                    "identity must not contain control or invisible formatting characters (such as bidi overrides)",
                ));
            }
        }
        Ok(())
    }
}

/// An issued lease and its credential. `Debug` redacts the secret parts.
#[derive(Clone)]
#[non_exhaustive]
pub struct IssuedLease {
    /// The lease id.
    pub lease_id: LeaseId,
    /// The secret.
    pub secret: String,
    /// The credential.
    pub credentials: Credentials,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it ends unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The latest renewals can reach.
    pub max_expires_at: DateTime<Utc>,
    /// Whether renew may extend it.
    pub renewable: bool,
    /// Whether the credential was confirmed live before it was returned.
    pub readiness: Readiness,
}

impl IssuedLease {
    /// Whether the credential was confirmed live.
    pub fn live(&self) -> bool {
        self.readiness.is_live()
    }
}

impl fmt::Debug for IssuedLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLease")
            .field("lease_id", &self.lease_id)
            .field("secret", &self.secret)
            .field("credentials", &self.credentials)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("max_expires_at", &self.max_expires_at)
            .field("renewable", &self.renewable)
            .field("readiness", &self.readiness)
            .finish()
    }
}

impl LeaseManager {
    /// Issues a lease of `secret`.
    ///
    /// Checks the request (TTL, identity, the active-lease limit) before anything else, renders
    /// the username and generates the password, writes a `Pending` lease, then calls the
    /// provider. If the provider fails, what it may have made is revoked by name and the lease
    /// is dropped (or kept for the worker to retry, if that revoke fails too).
    ///
    /// Dropping the returned future does not leak a credential: the provider call goes on in
    /// a task of its own, which revokes the credential when nobody is left to receive it.
    pub async fn issue(&self, secret: &str, request: IssueRequest) -> Result<IssuedLease> {
        let entry = self.inner.entry(secret).ok_or_else(|| {
            Error::new(
                ErrorKind::SecretNotFound,
                format!(
                    "no secret named {:?} is registered",
                    crate::settings::shorten(secret)
                ),
            )
            .with_context("secret", crate::settings::shorten(secret).escape_debug())
        })?;
        let started = std::time::Instant::now();
        let name = entry.secret.name_arc().clone();
        let result = async {
            let prepared = match self.inner.prepare_issue(&entry, &request).await {
                Ok(p) => p,
                Err(e) => {
                    // Refused before any lease existed. A caller's bad input is the caller's
                    // error, not an event; a quota refusal or a store failure is audited.
                    let callers_input = matches!(
                        e.kind(),
                        ErrorKind::InvalidInput
                            | ErrorKind::TtlExceedsMax
                            | ErrorKind::InvalidTemplate
                            | ErrorKind::InvalidConfig
                    );
                    if !callers_input {
                        let mut event = AuditEvent::new(AuditAction::Issue, &*name);
                        event.identity = request.identity.clone();
                        event.error = Some(e.kind());
                        event.message = Some(e.to_string());
                        self.inner.emit(event);
                    }
                    return Err(e);
                }
            };
            IssueTask::new(self.inner.clone(), entry, prepared).await
        }
        .await;
        telemetry::issue(&name, result.as_ref().map(|_| ()), started.elapsed());
        result
    }
}

type BoxedWork = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The second half of an issue (provider call, then activation or compensation), polled in the
/// caller's task. If the caller drops it before it finished, the rest moves into a task of its
/// own, which finishes the work, finds nobody to hand the credential to, and revokes it: the
/// provider call is never abandoned half-way. Running it in the caller's task in the usual
/// case saves a task spawn and two cross-thread wake-ups per issue on a multi-thread runtime.
struct IssueTask {
    work: Option<BoxedWork>,
    rx: Option<oneshot::Receiver<Result<IssuedLease>>>,
}

impl IssueTask {
    fn new(inner: Arc<Inner>, entry: Arc<SecretEntry>, prepared: PreparedIssue) -> Self {
        let (tx, rx) = oneshot::channel();
        let work = Box::pin(async move {
            if let Err(e) = inner.finish_issue(entry, prepared, tx).await {
                tracing::debug!(error = %e, "issue task ended with an error");
            }
        });
        IssueTask {
            work: Some(work),
            rx: Some(rx),
        }
    }
}

impl Future for IssueTask {
    type Output = Result<IssuedLease>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(work) = self.work.as_mut() {
            if work.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.work = None;
        }
        let answer = self.rx.take().map(|mut rx| rx.try_recv());
        Poll::Ready(match answer {
            Some(Ok(r)) => r,
            _ => Err(Error::unexpected("the issue task ended without an answer")),
        })
    }
}

impl Drop for IssueTask {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        // The receiver goes first, so the moved work cannot hand the credential to it.
        drop(self.rx.take());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(work);
            }
            Err(_) => tracing::warn!(
                "an issue was dropped outside a Tokio runtime; its Pending lease stays in the store and the worker revokes it after issue_timeout"
            ),
        }
    }
}

struct PreparedIssue {
    lease: LeaseRecord,
    username: String,
    password: Option<secrecy::SecretString>,
    ttl: Duration,
    wait: bool,
}

impl Inner {
    async fn prepare_issue(
        &self,
        entry: &Arc<SecretEntry>,
        request: &IssueRequest,
    ) -> Result<PreparedIssue> {
        let secret = &entry.secret;
        let ctx = |e: Error| {
            e.with_context("secret", secret.name())
                .with_context("operation", "issue")
        };
        request.check().map_err(ctx)?;
        let ttl = secret.effective_ttl(request.ttl).map_err(ctx)?;
        let username = secret
            .render_username_in(request.identity.as_deref(), Some(&self.installation))
            .map_err(ctx)?;
        let caps = secret.provider().capabilities();
        let password = if caps.needs_password {
            Some(secret.password_policy().generate().map_err(ctx)?)
        } else {
            None
        };
        let t = now();
        let expires_at = add_duration(t, ttl);
        let max_expires_at = add_duration(t, secret.max_ttl()).max(expires_at);
        let issue_deadline = add_duration(t, self.config.issue_timeout);
        let lease = LeaseRecord {
            id: LeaseId::generate(secret.name()),
            secret: secret.name_arc().clone(),
            provider_kind: entry.kind.clone(),
            identity: request.identity.as_deref().map(Into::into),
            external: ExternalRef::new(username.clone()),
            state: LeaseState::Pending,
            issued_at: t,
            expires_at,
            max_expires_at,
            renewable: caps.renewable,
            due_at: issue_deadline,
            revoke_attempts: 0,
            last_error: None,
            claimed_by: Some(self.owner.clone()),
            claim_until: Some(issue_deadline),
            version: 1,
        };
        // The store checks the active-lease limit and inserts in one call, so concurrent issues
        // (of this instance and of every other one sharing the store) are counted once each.
        // Counting this instance's issues under way as well would count an issue whose insert
        // has landed twice, and refuse spuriously near the limit.
        let max = secret.max_active_leases();
        let limit = max;
        let inserted = self.store.insert_within(&lease, limit).await.map_err(ctx)?;
        if !inserted {
            // Only for the message: the refusal itself was decided by the store.
            let stored = self
                .store
                .count(&LeaseFilter::secret(secret.name()))
                .await
                .unwrap_or(limit);
            return Err(ctx(Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "secret {:?} has {} active leases, its max_active_leases is {max}",
                    secret.name(),
                    stored,
                ),
            )));
        }
        Ok(PreparedIssue {
            lease,
            username,
            password,
            ttl,
            wait: !request.no_wait,
        })
    }

    /// The provider call, then Active (or compensation); see [`IssueTask`].
    async fn finish_issue(
        self: Arc<Self>,
        entry: Arc<SecretEntry>,
        p: PreparedIssue,
        tx: oneshot::Sender<Result<IssuedLease>>,
    ) -> Result<()> {
        let secret = &entry.secret;
        let mut lease = p.lease;
        let mut req = CreateRequest::new(lease.id.clone(), p.username, p.ttl)
            .with_identity(lease.identity.as_deref().map(str::to_string))
            .with_expires_at(lease.expires_at)
            .with_wait_ready(p.wait)
            .with_installation(Some(self.installation.to_string()));
        req.password = p.password;
        let timeout = self
            .config
            .issue_timeout
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let called = std::time::Instant::now();
        let created = match tokio::time::timeout(timeout, secret.provider().create(&req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "the provider did not create the credential in time",
            )),
        };
        telemetry::provider_call(
            &entry.kind,
            "create",
            created.as_ref().map(|_| ()),
            called.elapsed(),
        );
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                let e = e
                    .with_context("secret", secret.name())
                    .with_context("lease_id", &lease.id)
                    .with_context("operation", "issue");
                self.audit(AuditAction::Issue, &lease, Some(e.kind()));
                if e.kind() == ErrorKind::Timeout {
                    // The call was cut short: a request may still be in flight and create the
                    // credential after a revoke by name. The worker revokes it after a grace.
                    lease
                        .defer_revoke(e.to_string(), add_duration(now(), self.config.create_grace));
                    match self.store.update(&lease).await {
                        Ok(_) => self.wake_for(lease.due_at),
                        // Still Pending and claimed until the issue deadline: the worker
                        // revokes it then.
                        Err(se) => {
                            tracing::warn!(lease_id = %lease.id, error = %se, "could not schedule the revocation of a timed-out issue; the worker will revoke it after the issue deadline")
                        }
                    }
                } else if e.kind() == ErrorKind::AlreadyExists {
                    // The name belongs to a credential this lease did not make: it must not be
                    // revoked by that name. Only the record goes.
                    if let Err(de) = self.store.delete(&lease.id, lease.version).await {
                        tracing::warn!(lease_id = %lease.id, error = %de, "could not drop the record of a refused issue; the worker will");
                    }
                } else {
                    // Whatever the provider may have made is removed by the name written ahead.
                    self.compensate(lease).await;
                }
                let _ = tx.send(Err(e));
                return Ok(());
            }
        };
        // The lease's life starts when its credential works: the TTL counts from now, capped
        // by the max TTL measured from the request.
        let activated = now();
        let mut expires_at = add_duration(activated, p.ttl).min(lease.max_expires_at);
        let mut max_expires_at = lease.max_expires_at;
        if let Some(backend_expiry) = created.expires_at {
            expires_at = expires_at.min(backend_expiry);
            max_expires_at = max_expires_at.min(backend_expiry);
        }
        lease.activate(created.external, expires_at, max_expires_at);
        if lease.expires_at <= activated {
            // The max TTL (or the backend's own expiry) ran out while the credential was made:
            // nobody may get a credential that is already expired.
            let e = Error::new(
                ErrorKind::LeaseExpired,
                "the lease's max TTL ran out before the credential was ready; it was revoked",
            )
            .with_context("secret", secret.name())
            .with_context("lease_id", &lease.id)
            .with_context("operation", "issue");
            self.audit(AuditAction::Issue, &lease, Some(e.kind()));
            self.compensate(lease).await;
            let _ = tx.send(Err(e));
            return Ok(());
        }
        match self.store.update(&lease).await {
            Ok(v) => lease.version = v,
            Err(e) => {
                // The record changed under us (the issue took longer than issue_timeout and a
                // worker claimed it) or the store failed: nobody must get this credential.
                tracing::warn!(lease_id = %lease.id, error = %e, "could not activate lease; revoking the new credential");
                self.audit(AuditAction::Issue, &lease, Some(e.kind()));
                if let Ok(Some(current)) = self.store.get(&lease.id).await {
                    lease.version = current.version;
                    lease.claimed_by = current.claimed_by;
                    lease.claim_until = current.claim_until;
                }
                self.compensate(lease).await;
                let _ = tx.send(Err(e.with_context("operation", "issue")));
                return Ok(());
            }
        }
        self.wake_for(lease.due_at);
        let issued = IssuedLease {
            lease_id: lease.id.clone(),
            secret: secret.name().to_string(),
            credentials: created.credentials,
            issued_at: lease.issued_at,
            expires_at: lease.expires_at,
            max_expires_at: lease.max_expires_at,
            renewable: lease.renewable,
            readiness: created.readiness,
        };
        self.audit(AuditAction::Issue, &lease, None);
        if tx.send(Ok(issued)).is_err() {
            // The caller went away: nobody holds this credential, so it goes at once.
            tracing::debug!(lease_id = %lease.id, "issue abandoned by the caller; revoking");
            let _ = Box::pin(self.revoke_now(lease, AuditAction::Revoke)).await;
        }
        Ok(())
    }

    /// Revokes a lease whose issue failed. Keeps the record for the worker when that fails.
    async fn compensate(&self, lease: LeaseRecord) {
        // Boxed: the rare paths must not grow every issue task by a whole revocation.
        let _ = Box::pin(self.revoke_now(lease, AuditAction::Revoke)).await;
    }
}
