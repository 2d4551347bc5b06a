//! [`LeaseManager`]: issues, renews and revokes leases, and runs the expiry worker.
//!
//! The invariants it keeps (see the crate README):
//!
//! 1. **Write-ahead.** A `Pending` record naming the external credential is stored *before*
//!    the provider is called, so no code path can leave a credential that no record points at.
//! 2. **Cancellation-safe issue.** A caller that drops the `issue` future does not abandon a
//!    half-made credential: the provider call and what follows move into a task of their own,
//!    which finishes, sees nobody is waiting, and revokes what it made.
//! 3. **A record is deleted only after revoke succeeded** (or by an explicit, audited
//!    `force_forget`).
//! 4. **Exactly one revoker** among many managers sharing a store, through `claim_due`.

mod config;
mod issue;
mod reconcile;
mod renew;
mod revoke;
mod worker;

use worker::worker_loop;

pub use config::{ManagerConfig, RetryPolicy};
pub use issue::{IssueRequest, IssuedLease};
pub use reconcile::ReconcileReport;
pub use renew::renewed_expiry;
pub use revoke::RevokeSummary;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{fence, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::audit::{AuditAction, AuditEvent, AuditSink};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{LeaseId, LeaseRecord};
use crate::secret::DynamicSecret;
use crate::store::{LeaseFilter, LeaseStore};
use crate::telemetry;

struct SecretEntry {
    secret: DynamicSecret,
    /// The provider kind, shared by every lease of the secret.
    kind: Arc<str>,
}

pub(crate) struct Inner {
    store: Arc<dyn LeaseStore>,
    secrets: RwLock<HashMap<String, Arc<SecretEntry>>>,
    config: ManagerConfig,
    owner: Arc<str>,
    /// The store's installation id: the mark on everything this manager creates.
    installation: Arc<str>,
    audit: Option<Arc<dyn AuditSink>>,
    wake: Notify,
    /// When the worker plans to wake next (ms since the epoch); `i64::MAX` while it is awake
    /// and will read the store again before it sleeps. Lets a write skip waking the worker
    /// when the worker would look at the lease in time anyway.
    planned_wake_ms: AtomicI64,
    /// When the worker last finished a look at the store (ms since the epoch), for `health`.
    worker_alive_ms: AtomicI64,
    stop: watch::Sender<bool>,
    /// The time the worker's next revocation may start, under `revoke_rate`.
    next_revoke_slot: std::sync::Mutex<tokio::time::Instant>,
    /// Whether a drift-repair pass is running (one at a time).
    repairing: std::sync::atomic::AtomicBool,
    /// Running watches, ended (and their credentials revoked) by `shutdown`.
    pub(crate) watches: std::sync::Mutex<crate::watch::WatchRegistry>,
}

/// Stops the worker when the last user-facing handle is dropped.
struct StopOnDrop {
    inner: Arc<Inner>,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.inner.stop.send_replace(true);
    }
}

/// Issues, renews and revokes leases; runs the expiry worker.
///
/// Cheap to clone; all clones share one worker, which stops when the last clone is dropped
/// or [`shutdown`](Self::shutdown) is called. Leases stay in the store for the next start.
///
/// # Examples
///
/// ```no_run
/// # async fn f(provider: std::sync::Arc<dyn leasehold_core::DynamicSecretProvider>) -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_core::{DynamicSecret, IssueRequest, LeaseManager, MemoryStore};
///
/// let secret = DynamicSecret::builder("orders-cache", provider)
///     .default_ttl(Duration::from_secs(3600))
///     .build()?;
/// let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
///     .secret(secret)
///     .build()
///     .await?;
/// let lease = manager.issue("orders-cache", IssueRequest::new()).await?;
/// println!("{} until {}", lease.credentials.principal(), lease.expires_at);
/// manager.revoke(&lease.lease_id).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaseManager {
    inner: Arc<Inner>,
    guard: Arc<StopOnDrop>,
}

impl fmt::Debug for LeaseManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<String> = self
            .inner
            .secrets
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("LeaseManager")
            .field("instance", &self.inner.owner)
            .field("secrets", &secrets)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LeaseManager`].
pub struct LeaseManagerBuilder {
    store: Arc<dyn LeaseStore>,
    secrets: Vec<DynamicSecret>,
    config: ManagerConfig,
    instance_id: Option<String>,
    audit: Option<Arc<dyn AuditSink>>,
    validate: bool,
}

impl fmt::Debug for LeaseManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseManagerBuilder")
            .field("secrets", &self.secrets)
            .field("config", &self.config)
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl LeaseManagerBuilder {
    /// Registers a secret (validated at `build` unless [`skip_validation`](Self::skip_validation)).
    pub fn secret(mut self, secret: DynamicSecret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// A stable id for this instance (say, the host name). With a stable id, a restarted
    /// instance takes back its own claims at once instead of waiting for them to expire, and so
    /// cleans up leases a crash left `Pending` immediately. Two live instances must never share
    /// an id. Default: a random id per process.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sends every audit event to `sink` as well as to tracing.
    pub fn audit_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Registers secrets without calling their providers' `validate`.
    pub fn skip_validation(mut self) -> Self {
        self.validate = false;
        self
    }

    /// Whether to run the expiry worker (default true). Without it, leases expire only when
    /// another instance's worker revokes them.
    pub fn run_worker(mut self, yes: bool) -> Self {
        self.config.run_worker = yes;
        self
    }

    /// Validates the secrets, takes back this instance's stale claims, and starts the worker.
    pub async fn build(self) -> Result<LeaseManager> {
        let c = &self.config;
        if c.revoke_concurrency == 0 || c.claim_batch == 0 || c.revoke_rate == Some(0) {
            return Err(Error::invalid_config(
                "revoke_concurrency, claim_batch and revoke_rate must be at least 1",
            ));
        }
        if c.retry.max_attempts == 0 {
            return Err(Error::invalid_config(
                "retry.max_attempts: must be at least 1",
            ));
        }
        if c.claim_hold.is_zero() || c.issue_timeout.is_zero() || c.max_idle.is_zero() {
            return Err(Error::invalid_config(
                "claim_hold, issue_timeout and max_idle must be positive",
            ));
        }
        let owner: Arc<str> = match &self.instance_id {
            Some(id)
                if id.is_empty()
                    || id.len() > 128
                    || id.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                return Err(Error::invalid_config(
                    "instance_id: must be 1 to 128 characters, without spaces or control characters",
                ))
            }
            Some(id) => id.as_str().into(),
            None => format!("lh-{}", crate::template::random_lowercase(16)).into(),
        };
        telemetry::describe();
        let installation = self.store.installation_id().await?;
        crate::store::check_installation_id(&installation)
            .map_err(|e| e.with_context("operation", "installation_id"))?;
        let mut seen = HashSet::new();
        for secret in &self.secrets {
            if !seen.insert(secret.name()) {
                return Err(duplicate_secret(secret.name()));
            }
        }
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store: self.store,
            secrets: RwLock::new(HashMap::new()),
            config: self.config,
            owner,
            installation,
            audit: self.audit,
            wake: Notify::new(),
            planned_wake_ms: AtomicI64::new(i64::MAX),
            worker_alive_ms: AtomicI64::new(now().timestamp_millis()),
            stop,
            next_revoke_slot: std::sync::Mutex::new(tokio::time::Instant::now()),
            watches: std::sync::Mutex::default(),
            repairing: std::sync::atomic::AtomicBool::new(false),
        });
        let manager = LeaseManager {
            guard: Arc::new(StopOnDrop {
                inner: inner.clone(),
                worker: std::sync::Mutex::new(None),
            }),
            inner,
        };
        for secret in self.secrets {
            manager.register_inner(secret, self.validate).await?;
        }
        if self.instance_id.is_some() {
            // Claims held under our id belong to a previous incarnation of this instance that
            // died: nobody is working on them, so they are due now, whatever their state.
            let released = manager
                .inner
                .store
                .release_claims(&manager.inner.owner, now())
                .await?;
            if released > 0 {
                tracing::info!(instance = %manager.inner.owner, released, "took back this instance's claims from its previous run");
            }
        }
        if manager.inner.config.run_worker {
            let inner = manager.inner.clone();
            let handle = tokio::spawn(worker_loop(inner));
            *manager
                .guard
                .worker
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        Ok(manager)
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn duplicate_secret(name: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("a secret named {name:?} is already registered; secret names must be unique"),
    )
    .with_context("secret", name)
}

fn lease_not_found(id: &LeaseId) -> Error {
    Error::new(ErrorKind::LeaseNotFound, "no lease with this id").with_context("lease_id", id)
}

impl LeaseManager {
    /// Starts building a manager on `store` (a store, an `Arc` of one, or an
    /// `Arc<dyn LeaseStore>`).
    pub fn builder(store: impl crate::store::IntoLeaseStore) -> LeaseManagerBuilder {
        LeaseManagerBuilder {
            store: store.into_lease_store(),
            secrets: Vec::new(),
            config: ManagerConfig::default(),
            instance_id: None,
            audit: None,
            validate: true,
        }
    }

    /// This instance's id (the owner of its claims).
    pub fn instance_id(&self) -> &str {
        &self.inner.owner
    }

    /// The store's installation id: every credential this manager creates carries it (as an
    /// AWS tag, and in the default username as `<prefix><installation>-<random>`), and
    /// [`reconcile`](Self::reconcile) removes only users that carry it.
    pub fn installation_id(&self) -> &str {
        &self.inner.installation
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.inner.store
    }

    /// Validates `secret`'s provider and registers it. A secret of the same name already
    /// registered is [`ErrorKind::AlreadyExists`].
    pub async fn register(&self, secret: DynamicSecret) -> Result<()> {
        self.register_inner(secret, true).await
    }

    async fn register_inner(&self, secret: DynamicSecret, validate: bool) -> Result<()> {
        if validate {
            secret.provider().validate().await.map_err(|e| {
                e.with_context("secret", secret.name())
                    .with_context("operation", "validate")
            })?;
        }
        if let Some(coordination) = self.inner.store.coordination() {
            secret.provider().attach_coordination(coordination);
        }
        let name = secret.name().to_string();
        let entry = Arc::new(SecretEntry {
            kind: secret.provider().kind().into(),
            secret,
        });
        let mut secrets = self
            .inner
            .secrets
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if secrets.contains_key(&name) {
            return Err(duplicate_secret(&name));
        }
        secrets.insert(name, entry);
        Ok(())
    }

    /// The registered secrets' names, sorted.
    pub fn secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// A registered secret.
    pub fn secret(&self, name: &str) -> Option<DynamicSecret> {
        self.inner.entry(name).map(|e| e.secret.clone())
    }

    /// One lease record.
    pub async fn lookup(&self, lease_id: &LeaseId) -> Result<LeaseRecord> {
        self.inner
            .store
            .get(lease_id)
            .await?
            .ok_or_else(|| lease_not_found(lease_id))
    }

    /// Lease records.
    pub async fn list(&self, filter: &LeaseFilter) -> Result<Vec<LeaseRecord>> {
        self.inner.store.list(filter).await
    }

    /// Ends every [`CredentialWatch`](crate::CredentialWatch) of this manager — revoking what
    /// each issued, bounded by `revoke_timeout` — then stops the worker and waits for it.
    /// Other leases stay in the store for the next start (or another instance's worker).
    ///
    /// The right last line of a service's `main`: a watch dropped without it may not live to
    /// revoke its credential when the runtime ends.
    pub async fn shutdown(&self) {
        crate::watch::end_all(&self.inner.watches, self.inner.config.revoke_timeout).await;
        self.inner.stop.send_replace(true);
        self.inner.wake.notify_one();
        let handle = self
            .guard
            .worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM, then [`shutdown`](Self::shutdown)s:
    /// the exit path of a service in one line.
    ///
    /// ```no_run
    /// # async fn f(manager: leasehold_core::LeaseManager) -> std::io::Result<()> {
    /// // ... spawn the service's work, holding watches of `manager` ...
    /// manager.shutdown_on_signal().await?; // revokes every watched credential, then returns
    /// # Ok(()) }
    /// ```
    pub async fn shutdown_on_signal(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        self.shutdown().await;
        Ok(())
    }

    /// Whether this instance is healthy: the store answers, and (when this instance runs the
    /// worker) the worker finished a look at the store recently (within three `max_idle`s plus
    /// `revoke_timeout`, so a long revocation batch is not mistaken for a stuck loop). For a
    /// `/healthz` endpoint.
    pub async fn health(&self) -> Result<()> {
        self.inner
            .store
            .next_due()
            .await
            .map_err(|e| e.with_context("operation", "health"))?;
        if self.inner.config.run_worker && !*self.inner.stop.borrow() {
            let alive = self.inner.worker_alive_ms.load(Ordering::Relaxed);
            let bound = self
                .inner
                .config
                .max_idle
                .saturating_mul(3)
                .saturating_add(self.inner.config.revoke_timeout);
            let quiet = Duration::from_millis(
                u64::try_from(now().timestamp_millis().saturating_sub(alive)).unwrap_or(0),
            );
            if quiet > bound {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "the expiry worker has not finished a pass for {}",
                        crate::duration::format_duration(quiet)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Wakes the worker now (it looks at the store again).
    pub fn wake_worker(&self) {
        self.inner.wake.notify_one();
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    /// Wakes the worker if a lease that just became due at `due` (written to the store
    /// before this call) would otherwise wait past the worker's planned wake-up.
    fn wake_for(&self, due: DateTime<Utc>) {
        // Pairs with the fence in `worker_loop`: either the worker's next store read sees the
        // write, or this load sees the worker's plan made without it (or `MAX`: it is awake).
        fence(Ordering::SeqCst);
        if due.timestamp_millis() < self.planned_wake_ms.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn entry(&self, name: &str) -> Option<Arc<SecretEntry>> {
        self.secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn audit(&self, action: AuditAction, lease: &LeaseRecord, error: Option<ErrorKind>) {
        tracing::info!(
            target: "leasehold::audit",
            action = action.as_str(),
            lease_id = lease.id.as_str(),
            secret = &*lease.secret,
            identity = lease.identity.as_deref().unwrap_or(""),
            principal = lease.external.id.as_str(),
            outcome = error.map(|k| k.as_str()).unwrap_or("ok"),
        );
        // The event is built only for a sink: issue and revoke stay allocation-light without one.
        if let Some(sink) = &self.audit {
            let mut event = AuditEvent::new(action, &*lease.secret);
            event.lease_id = Some(lease.id.clone());
            event.identity = lease.identity.as_deref().map(str::to_string);
            event.principal = Some(lease.external.id.clone());
            event.error = error;
            event.message = error.and(lease.last_error.clone());
            event.attempts = lease.revoke_attempts;
            sink.record(&event);
        }
    }

    fn emit(&self, event: AuditEvent) {
        let outcome = event.error.map(|k| k.as_str()).unwrap_or("ok");
        tracing::info!(
            target: "leasehold::audit",
            action = event.action.as_str(),
            lease_id = event.lease_id.as_ref().map(|l| l.as_str()).unwrap_or(""),
            secret = %event.secret,
            identity = event.identity.as_deref().unwrap_or(""),
            principal = event.principal.as_deref().unwrap_or(""),
            outcome,
        );
        if let Some(sink) = &self.audit {
            sink.record(&event);
        }
    }
}
