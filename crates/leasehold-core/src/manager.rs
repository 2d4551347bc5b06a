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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::audit::{AuditAction, AuditEvent, AuditSink};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Credentials, ExternalRef, LeaseId, LeaseRecord, LeaseState};
use crate::provider::{CreateRequest, ManagedCredential, Readiness};
use crate::secret::DynamicSecret;
use crate::store::{add_duration, LeaseFilter, LeaseStore, RevokeClaim};
use crate::telemetry;

/// How failed revocations are retried.
///
/// The defaults follow Vault's spirit: 6 attempts over about 10 minutes (10 s, 20 s, 40 s,
/// 80 s, 160 s, 320 s, each with ±25 % jitter), then the lease is `Irrevocable` and retried
/// once a day. A permanent error (say, `PermissionDenied`) makes the lease irrevocable at once:
/// it will not fix itself in minutes, and an operator is told sooner.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Attempts before the lease becomes irrevocable.
    pub max_attempts: u32,
    /// How often irrevocable leases are tried again.
    pub irrevocable_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
            max_attempts: 6,
            irrevocable_retry: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given first delay and attempt count, other values default.
    pub fn new(initial_delay: Duration, max_attempts: u32) -> Self {
        RetryPolicy {
            initial_delay,
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// Sets the longest delay.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets the irrevocable retry interval.
    #[must_use]
    pub fn irrevocable_retry(mut self, d: Duration) -> Self {
        self.irrevocable_retry = d;
        self
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures (1-based), jittered.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        base.mul_f64(rand::rng().random_range(0.75..1.25))
    }
}

/// Settings of a [`LeaseManager`].
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::ManagerConfig;
///
/// let config = ManagerConfig::default()
///     .claim_hold(Duration::from_secs(30))
///     .revoke_concurrency(8);
/// assert_eq!(config.claim_hold, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Revocations run at once, by the worker and by `revoke_secret` (default 16).
    pub revoke_concurrency: usize,
    /// Leases claimed per `claim_due` call (default 256).
    pub claim_batch: usize,
    /// At most this many revocations per second by the expiry worker (default `None`: as fast
    /// as `revoke_concurrency` allows). Paces the clean-up of a backlog, such as the leases that
    /// fell due while every instance was down, so that it neither storms the backend nor starves
    /// new issues of the store. The worker then claims no more than it revokes in half a
    /// `claim_hold`, so its claims never run out while they wait their turn.
    pub revoke_rate: Option<u32>,
    /// How long a claim holds (default 60 s). The worker's claims on due leases hold this plus
    /// `revoke_timeout`, so a revocation in flight never outlives its claim. A crashed instance's
    /// claims come free after that (a restart with the same `instance_id` takes them back at once).
    pub claim_hold: Duration,
    /// Longest time an issue may take, readiness wait included (default 10 min). A `Pending`
    /// lease older than this is considered abandoned and revoked by the worker.
    pub issue_timeout: Duration,
    /// Longest time one revoke or renew call to the provider may take (default 2 min).
    pub revoke_timeout: Duration,
    /// Longest sleep of the worker between looks at the store (default 5 s): leases written by
    /// other instances are noticed at least this often.
    pub max_idle: Duration,
    /// Retry policy for failed revocations.
    pub retry: RetryPolicy,
    /// After a provider `create` that timed out, how long to wait before revoking by name
    /// (default 30 s): a request cut short may still be in flight and create the credential
    /// later, so revoking at once could run before it lands. The lease stays in the store,
    /// `Revoking`, until the worker has revoked it after this grace.
    pub create_grace: Duration,
    /// Whether to run the expiry worker (default true).
    pub run_worker: bool,
    /// How often the worker refreshes the lease-count gauges (`leasehold_leases`,
    /// `leasehold_irrevocable_leases`) from the store (default 15 s): a few `count` calls per
    /// registered secret each time.
    pub metrics_interval: Duration,
    /// How often the worker asks providers that can ([`Capabilities::repairs_drift`], e.g.
    /// self-hosted Redis) to repair drift between the backend and the leases (default 60 s).
    ///
    /// [`Capabilities::repairs_drift`]: crate::Capabilities::repairs_drift
    pub repair_interval: Duration,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl ManagerConfig {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`revoke_concurrency`](Self::revoke_concurrency).
    revoke_concurrency: usize;
    /// Sets [`claim_batch`](Self::claim_batch).
    claim_batch: usize;
    /// Sets [`revoke_rate`](Self::revoke_rate).
    revoke_rate: Option<u32>;
    /// Sets [`claim_hold`](Self::claim_hold).
    claim_hold: Duration;
    /// Sets [`issue_timeout`](Self::issue_timeout).
    issue_timeout: Duration;
    /// Sets [`revoke_timeout`](Self::revoke_timeout).
    revoke_timeout: Duration;
    /// Sets [`max_idle`](Self::max_idle).
    max_idle: Duration;
    /// Sets [`retry`](Self::retry).
    retry: RetryPolicy;
    /// Sets [`create_grace`](Self::create_grace).
    create_grace: Duration;
    /// Sets [`run_worker`](Self::run_worker).
    run_worker: bool;
    /// Sets [`metrics_interval`](Self::metrics_interval).
    metrics_interval: Duration;
    /// Sets [`repair_interval`](Self::repair_interval).
    repair_interval: Duration;
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            revoke_concurrency: 16,
            claim_batch: 256,
            revoke_rate: None,
            claim_hold: Duration::from_secs(60),
            issue_timeout: Duration::from_secs(600),
            revoke_timeout: Duration::from_secs(120),
            max_idle: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            create_grace: Duration::from_secs(30),
            run_worker: true,
            metrics_interval: Duration::from_secs(15),
            repair_interval: Duration::from_secs(60),
        }
    }
}

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

/// The outcome of [`LeaseManager::revoke_secret`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RevokeSummary {
    /// Leases revoked.
    pub revoked: usize,
    /// Leases that could not be revoked now (they stay scheduled for retry).
    pub failed: Vec<(LeaseId, Error)>,
}

/// The outcome of [`LeaseManager::reconcile`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// The installation whose orphans this report covers (the store's id).
    pub installation: String,
    /// Credentials the provider listed under the secret's prefix.
    pub found: usize,
    /// This installation's credentials that no lease points at.
    pub orphans: Vec<ManagedCredential>,
    /// Credentials with the prefix that belong to another installation (another store), or
    /// that carry no installation mark: never removed.
    pub foreign: Vec<ManagedCredential>,
    /// Orphans removed (only when applied).
    pub removed: Vec<ManagedCredential>,
    /// Orphans that could not be removed.
    pub errors: Vec<(ManagedCredential, Error)>,
    /// Whether the secret's username template drops the prefix (orphans may be missed).
    pub prefix_not_guaranteed: bool,
}

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
                    crate::model::shorten(secret)
                ),
            )
            .with_context("secret", crate::model::shorten(secret).escape_debug())
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

    /// Renews a lease: `expires_at = min(now + increment, issued_at + max_ttl)`; `increment`
    /// defaults to the secret's default TTL.
    pub async fn renew(
        &self,
        lease_id: &LeaseId,
        increment: Option<Duration>,
    ) -> Result<LeaseRecord> {
        let ctx = |e: Error| {
            e.with_context("lease_id", lease_id)
                .with_context("operation", "renew")
        };
        if increment.is_some_and(|d| d.is_zero()) {
            return Err(ctx(Error::invalid_input("increment must be positive")));
        }
        // A concurrent claim (the worker looking at a lease due now) can win the CAS; re-read
        // and try again a few times.
        for _ in 0..4 {
            let mut lease = self
                .inner
                .store
                .get(lease_id)
                .await?
                .ok_or_else(|| lease_not_found(lease_id))?;
            let t = now();
            check_renewable(&lease, t).map_err(ctx)?;
            let entry = self.inner.entry(&lease.secret).ok_or_else(|| {
                ctx(Error::new(
                    ErrorKind::SecretNotFound,
                    format!(
                        "the lease's secret {:?} is not registered with this manager",
                        &*lease.secret
                    ),
                ))
            })?;
            let caps = entry.secret.provider().capabilities();
            if !caps.renewable {
                return Err(ctx(Error::new(
                    ErrorKind::NotRenewable,
                    format!(
                        "{} credentials cannot be renewed",
                        entry.secret.provider().kind()
                    ),
                )));
            }
            let increment = increment.unwrap_or(entry.secret.default_ttl());
            let new_expiry = renewed_expiry(t, increment, lease.max_expires_at);
            let renewing = entry.secret.provider().renew(&lease.external, new_expiry);
            let called = std::time::Instant::now();
            let r = match tokio::time::timeout(self.inner.config.revoke_timeout, renewing).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    "the provider did not renew in time",
                )),
            };
            telemetry::provider_call(&entry.kind, "renew", r.as_ref().copied(), called.elapsed());
            if let Err(e) = r {
                telemetry::renew(&lease.secret, Err(&e));
                return Err(ctx(e));
            }
            let old_expiry = lease.expires_at;
            lease.expires_at = new_expiry;
            lease.due_at = new_expiry;
            match self.inner.store.update(&lease).await {
                Ok(v) => {
                    lease.version = v;
                    if new_expiry < old_expiry {
                        self.inner.wake_for(new_expiry);
                    }
                    self.inner.audit(AuditAction::Renew, &lease, None);
                    telemetry::renew(&lease.secret, Ok(()));
                    return Ok(lease);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(ctx(e)),
            }
        }
        Err(ctx(Error::new(
            ErrorKind::Conflict,
            "the lease kept changing while renewing; try again",
        )))
    }

    /// Revokes a lease now. Also the operator's way to retry an `Irrevocable` lease.
    ///
    /// Idempotent: a lease whose record is gone (revoked already, by this call or any other
    /// instance, or by the worker at expiry) is `Ok`. The store keeps no record of revoked
    /// leases, so an id that never existed is `Ok` too; use [`lookup`](Self::lookup) to tell.
    ///
    /// On failure the lease stays, scheduled for retry by the worker, and the error is returned.
    pub async fn revoke(&self, lease_id: &LeaseId) -> Result<()> {
        let ctx = |e: Error| {
            e.with_context("lease_id", lease_id)
                .with_context("operation", "revoke")
        };
        let mut conflicts = 0;
        // Set while waiting for this instance's own revocation of the lease to finish.
        let mut waiting_until: Option<DateTime<Utc>> = None;
        let owner = &*self.inner.owner;
        while conflicts < 4 {
            let t = now();
            // Claimed so that no worker revokes it at the same time; one store call reads and
            // claims. Due now, held by the claim: if this instance dies mid-revoke, the next
            // one to start with its id takes the lease at once, any other one when the claim
            // ends.
            let until = add_duration(t, self.inner.config.revoke_timeout);
            let lease = match self
                .inner
                .store
                .claim_for_revoke(lease_id, owner, t, until)
                .await
            {
                Ok(RevokeClaim::Claimed(lease)) => lease,
                // Revoked already (or by the revocation we waited for): the credential is gone.
                Ok(RevokeClaim::Gone) => return Ok(()),
                Ok(RevokeClaim::Busy(lease)) => {
                    if lease.state != LeaseState::Pending
                        && lease.claimed_by.as_deref() == Some(owner)
                    {
                        // The worker (or another call) here is revoking it now: revoking it a
                        // second time in parallel would revoke it twice. Wait for that one.
                        let until = *waiting_until.get_or_insert(until);
                        if t > until {
                            return Err(ctx(Error::new(
                                ErrorKind::Conflict,
                                "the lease is still being revoked by this instance; try again",
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let message = match lease.state {
                        LeaseState::Pending if lease.claimed_by.as_deref() != Some(owner) => {
                            "the lease is still being issued by another instance; try again shortly"
                        }
                        LeaseState::Pending => "the lease is still being issued; try again shortly",
                        LeaseState::Revoking => "the lease is being revoked by another instance",
                        // Its claim ended since the store looked: look again.
                        _ => {
                            conflicts += 1;
                            continue;
                        }
                    };
                    return Err(ctx(Error::new(ErrorKind::Conflict, message)));
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    conflicts += 1;
                    continue;
                }
                Err(e) => return Err(ctx(e)),
            };
            return self
                .inner
                .revoke_claimed(lease, AuditAction::Revoke)
                .await
                .map_err(ctx);
        }
        Err(ctx(Error::new(
            ErrorKind::Conflict,
            "the lease kept changing while revoking; try again",
        )))
    }

    /// Revokes every lease of `secret`, `revoke_concurrency` at a time.
    pub async fn revoke_secret(&self, secret: &str) -> Result<RevokeSummary> {
        self.revoke_secret_with_progress(secret, |_, _| {}).await
    }

    /// Like [`revoke_secret`](Self::revoke_secret), calling `progress(done, total)` as it goes.
    pub async fn revoke_secret_with_progress(
        &self,
        secret: &str,
        mut progress: impl FnMut(usize, usize) + Send,
    ) -> Result<RevokeSummary> {
        let total = self.inner.store.count(&LeaseFilter::secret(secret)).await? as usize;
        let mut summary = RevokeSummary::default();
        let mut after = None;
        let mut done = 0usize;
        loop {
            let page = self
                .inner
                .store
                .list(&LeaseFilter::secret(secret).after(after.clone()).limit(500))
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let mut results = stream::iter(page.into_iter().map(|l| {
                let m = self.clone();
                async move {
                    let r = m.revoke(&l.id).await;
                    (l.id, r)
                }
            }))
            .buffer_unordered(self.inner.config.revoke_concurrency);
            while let Some((id, r)) = results.next().await {
                match r {
                    Ok(()) => summary.revoked += 1,
                    Err(e) if e.kind() == ErrorKind::LeaseNotFound => summary.revoked += 1,
                    Err(e) => summary.failed.push((id, e)),
                }
                done += 1;
                progress(done, total.max(done));
            }
        }
        Ok(summary)
    }

    /// Removes a lease record without revoking its credential: the operator's escape hatch
    /// for a credential removed by hand. Audited, and logged at WARN.
    pub async fn force_forget(&self, lease_id: &LeaseId) -> Result<LeaseRecord> {
        for _ in 0..4 {
            let lease = match self.inner.store.get(lease_id).await {
                Ok(Some(l)) => l,
                Ok(None) => return Err(lease_not_found(lease_id)),
                Err(e) if e.kind() == ErrorKind::Store => {
                    // A row that cannot be read: forget_damaged removes it.
                    if self.forget_damaged(lease_id.as_str()).await? {
                        return Err(Error::new(
                            ErrorKind::LeaseNotFound,
                            "the lease's row was damaged; it was removed without revoking",
                        )
                        .with_context("lease_id", lease_id));
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.inner.store.delete(&lease.id, lease.version).await {
                Ok(()) => {
                    tracing::warn!(
                        lease_id = %lease.id,
                        secret = %lease.secret,
                        principal = %lease.external.id,
                        state = %lease.state,
                        "lease forgotten without revoking its credential"
                    );
                    self.inner.audit(AuditAction::ForceForget, &lease, None);
                    return Ok(lease);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(
            Error::new(ErrorKind::Conflict, "the lease kept changing; try again")
                .with_context("lease_id", lease_id),
        )
    }

    /// Removes a damaged row (one the store cannot decode, see [`LeaseStore::damaged`]) by its
    /// id as stored, without revoking anything: the operator's way out of a row edited by hand.
    /// Audited and logged at WARN with what could be read of the row. `false` when the store
    /// has no damaged row with that id.
    pub async fn forget_damaged(&self, id: &str) -> Result<bool> {
        let known = self
            .inner
            .store
            .damaged(usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.id == id);
        if !self.inner.store.remove_damaged(id).await? {
            return Ok(false);
        }
        let d = known.unwrap_or_else(|| crate::store::DamagedLease::new(id, "unknown"));
        tracing::warn!(
            lease_id = %crate::model::shorten(id).escape_debug(),
            secret = d.secret.as_deref().unwrap_or(""),
            principal = d.principal.as_deref().unwrap_or(""),
            reason = %d.reason,
            "damaged lease row forgotten without revoking its credential"
        );
        let mut event = AuditEvent::new(AuditAction::ForceForget, d.secret.unwrap_or_default());
        event.lease_id = id.parse().ok();
        event.principal = d.principal;
        event.error = Some(ErrorKind::Store);
        event.message = Some(format!("damaged row: {}", d.reason));
        self.inner.emit(event);
        Ok(true)
    }

    /// Rows the store cannot decode (see [`LeaseStore::damaged`]).
    pub async fn damaged(&self) -> Result<Vec<crate::store::DamagedLease>> {
        self.inner.store.damaged(usize::MAX).await
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

    /// Finds credentials of `secret`'s provider that carry this installation's mark and that no
    /// lease points at; removes them when `apply` is true (dry run otherwise).
    ///
    /// A credential belongs to this installation when its `leasehold:installation` tag names
    /// this store's [`installation_id`](Self::installation_id), or, on backends without tags
    /// (Redis), when its name starts with `<prefix><installation>-`. Anything else with the
    /// prefix is reported in [`ReconcileReport::foreign`] and never removed. A secret whose
    /// username template does not start with `{{randomUsername}}` drops the mark: `apply` is
    /// then refused with [`ErrorKind::InvalidConfig`].
    pub async fn reconcile(&self, secret: &str, apply: bool) -> Result<ReconcileReport> {
        let entry = self.inner.entry(secret).ok_or_else(|| {
            Error::new(
                ErrorKind::SecretNotFound,
                format!(
                    "no secret named {:?} is registered",
                    crate::model::shorten(secret)
                ),
            )
        })?;
        let provider = entry.secret.provider().clone();
        let prefix = entry.secret.username_prefix();
        if prefix.is_empty() {
            return Err(Error::invalid_config(
                "username_prefix is empty: reconcile would treat every user as the library's",
            )
            .with_context("secret", secret));
        }
        let keeps_mark = entry.secret.username_template().keeps_prefix();
        if apply && !keeps_mark {
            return Err(Error::invalid_config(
                "the username template does not start with {{randomUsername}}, so this secret's users carry no installation mark: reconcile cannot tell them from other installations' users and will not remove any (run it without apply to list them)",
            )
            .with_context("secret", secret));
        }
        let installation = &*self.inner.installation;
        let mark = crate::secret::installation_prefix(prefix, installation);
        let found = provider.list_managed(prefix).await?;
        // Leases of every secret on the same provider kind count: two secrets may share a
        // backend and a prefix.
        let mut known: HashSet<String> = HashSet::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list(&LeaseFilter::all().after(after.clone()).limit(1000))
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for l in page {
                known.insert(l.external.id.clone());
            }
        }
        let mut report = ReconcileReport {
            installation: installation.to_string(),
            found: found.len(),
            prefix_not_guaranteed: !keeps_mark,
            ..ReconcileReport::default()
        };
        if report.prefix_not_guaranteed {
            tracing::warn!(
                secret,
                "username template drops the prefix: reconcile may miss this secret's users"
            );
        }
        for cred in found {
            if known.contains(&cred.external.id) {
                continue;
            }
            let ours = match &cred.installation {
                Some(tagged) => tagged.eq_ignore_ascii_case(installation),
                None => cred
                    .external
                    .id
                    .get(..mark.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(&mark)),
            };
            if !ours {
                report.foreign.push(cred);
                continue;
            }
            report.orphans.push(cred.clone());
            if apply {
                match provider.revoke(&cred.external).await {
                    Ok(()) => {
                        let mut event = AuditEvent::new(AuditAction::ReconcileRemove, secret);
                        event.principal = Some(cred.external.id.clone());
                        self.inner.emit(event);
                        report.removed.push(cred);
                    }
                    Err(e) => report.errors.push((cred, e)),
                }
            }
        }
        Ok(report)
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

fn check_renewable(lease: &LeaseRecord, t: DateTime<Utc>) -> Result<()> {
    match lease.state {
        LeaseState::Active => {}
        LeaseState::Pending => {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the lease is still being issued",
            ))
        }
        LeaseState::Revoking | LeaseState::Revoked | LeaseState::Irrevocable => {
            return Err(Error::new(
                ErrorKind::LeaseRevoked,
                format!("the lease is {} and cannot be renewed", lease.state),
            ))
        }
    }
    if lease.expires_at <= t {
        return Err(Error::new(ErrorKind::LeaseExpired, "the lease has expired"));
    }
    if !lease.renewable {
        return Err(Error::new(
            ErrorKind::NotRenewable,
            "the lease is not renewable",
        ));
    }
    if lease.expires_at >= lease.max_expires_at {
        return Err(Error::new(
            ErrorKind::RenewLimitReached,
            format!(
                "the lease already lasts until its max TTL ({}); issue a new one",
                lease.max_expires_at.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// `min(now + increment, max_expires_at)`.
pub fn renewed_expiry(
    now: DateTime<Utc>,
    increment: Duration,
    max_expires_at: DateTime<Utc>,
) -> DateTime<Utc> {
    add_duration(now, increment).min(max_expires_at)
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
                    lease.state = LeaseState::Revoking;
                    lease.last_error = Some(e.to_string());
                    lease.claimed_by = None;
                    lease.claim_until = None;
                    lease.due_at = add_duration(now(), self.config.create_grace);
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
        lease.state = LeaseState::Active;
        lease.external = created.external;
        lease.expires_at = add_duration(activated, p.ttl).min(lease.max_expires_at);
        if let Some(backend_expiry) = created.expires_at {
            lease.expires_at = lease.expires_at.min(backend_expiry);
            lease.max_expires_at = lease.max_expires_at.min(backend_expiry);
        }
        lease.due_at = lease.expires_at;
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
        lease.claimed_by = None;
        lease.claim_until = None;
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

    /// Claims `lease` (whose version is current) for revocation and revokes it.
    async fn revoke_now(&self, mut lease: LeaseRecord, action: AuditAction) -> Result<()> {
        let t = now();
        if lease.state != LeaseState::Irrevocable {
            lease.state = LeaseState::Revoking;
        }
        lease.claimed_by = Some(self.owner.clone());
        lease.claim_until = Some(add_duration(t, self.config.revoke_timeout));
        lease.due_at = t;
        lease.version = self.store.update(&lease).await?;
        self.revoke_claimed(lease, action).await
    }

    /// Revokes a lease this instance holds a claim on; deletes it on success, schedules a retry
    /// (or marks it irrevocable) on failure.
    async fn revoke_claimed(&self, mut lease: LeaseRecord, action: AuditAction) -> Result<()> {
        let Some(entry) = self.entry(&lease.secret) else {
            return Err(Error::new(
                ErrorKind::SecretNotFound,
                format!(
                    "the lease's secret {:?} is not registered with this manager",
                    &*lease.secret
                ),
            ));
        };
        let provider = entry.secret.provider();
        if lease.state != LeaseState::Revoking && lease.state != LeaseState::Irrevocable {
            lease.state = LeaseState::Revoking;
            lease.version = self.store.update(&lease).await?;
        }
        let reason = if action == AuditAction::Expire {
            "expire"
        } else {
            "revoke"
        };
        let started = std::time::Instant::now();
        let result = if provider.capabilities().revocable {
            let r = match tokio::time::timeout(
                self.config.revoke_timeout,
                provider.revoke(&lease.external),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    "the provider did not revoke in time",
                )),
            };
            telemetry::provider_call(
                &entry.kind,
                "revoke",
                r.as_ref().copied(),
                started.elapsed(),
            );
            r
        } else {
            // Nothing to revoke: the credential ends by itself at its expiry.
            Ok(())
        };
        match result {
            Ok(()) => {
                // The audit line goes out before the record does: a crash between the two
                // leaves a record that is revoked again (idempotent), never a revocation
                // without its line.
                let mut gone = lease.clone();
                gone.state = LeaseState::Revoked;
                self.audit(action, &gone, None);
                match self.store.delete(&lease.id, lease.version).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::LeaseNotFound => {
                        // Someone else ended the lease (force_forget, or a revocation that
                        // finished first) and recorded it: not a second revocation.
                        tracing::debug!(lease_id = %lease.id, "the lease record was already gone after revoking");
                        return Ok(());
                    }
                    Err(e) => {
                        // The credential is gone; the record will be revoked again (idempotent)
                        // and deleted by whoever holds it next.
                        tracing::warn!(lease_id = %lease.id, error = %e, "revoked, but could not delete the lease record");
                        return Err(e);
                    }
                }
                lease.state = LeaseState::Revoked;
                telemetry::revocation(&lease.secret, reason, Ok(()), started.elapsed());
                if action == AuditAction::Expire {
                    telemetry::expiry_lag(&lease.secret, now() - lease.expires_at);
                }
                Ok(())
            }
            Err(e) => {
                let e = e
                    .with_context("lease_id", &lease.id)
                    .with_context("secret", &*lease.secret);
                let t = now();
                lease.revoke_attempts = lease.revoke_attempts.saturating_add(1);
                lease.last_error = Some(e.to_string());
                let retry = &self.config.retry;
                let give_up = !e.is_temporary() || lease.revoke_attempts >= retry.max_attempts;
                if give_up || lease.state == LeaseState::Irrevocable {
                    lease.state = LeaseState::Irrevocable;
                    lease.due_at = add_duration(t, retry.irrevocable_retry);
                } else {
                    lease.due_at = add_duration(t, retry.delay_after(lease.revoke_attempts));
                }
                lease.claimed_by = None;
                lease.claim_until = None;
                let state = lease.state;
                if let Err(se) = self.store.update(&lease).await {
                    tracing::warn!(lease_id = %lease.id, error = %se, "could not record the failed revocation");
                }
                telemetry::revocation(&lease.secret, reason, Err(&e), started.elapsed());
                if state == LeaseState::Irrevocable {
                    telemetry::irrevocable(&lease.secret);
                    tracing::error!(lease_id = %lease.id, secret = %lease.secret, principal = %lease.external.id, attempts = lease.revoke_attempts, error = %e, "lease is irrevocable: an operator must retry or force-forget it");
                    self.audit(AuditAction::Irrevocable, &lease, Some(e.kind()));
                } else {
                    telemetry::revoke_retry(&lease.secret);
                    self.audit(AuditAction::RevokeRetry, &lease, Some(e.kind()));
                }
                self.wake_for(lease.due_at);
                Err(e)
            }
        }
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

    async fn process_due(self: &Arc<Self>, lease: LeaseRecord) {
        if self.entry(&lease.secret).is_none() {
            // Another instance may know this secret; leave the claim to run out.
            tracing::debug!(lease_id = %lease.id, secret = %lease.secret, "due lease of a secret this instance does not know");
            return;
        }
        let action = if lease.state == LeaseState::Active {
            AuditAction::Expire
        } else {
            AuditAction::Revoke
        };
        if let Err(e) = self.revoke_claimed(lease, action).await {
            tracing::debug!(error = %e, "revocation by the worker failed; scheduled for retry");
        }
    }
}

impl Inner {
    /// Leases to claim at once: `claim_batch`, and under `revoke_rate` no more than the worker
    /// revokes in half a `claim_hold`.
    fn claim_batch(&self) -> usize {
        let c = &self.config;
        match c.revoke_rate {
            Some(rate) => {
                let in_half_hold = (f64::from(rate) * c.claim_hold.as_secs_f64() / 2.0) as usize;
                c.claim_batch.min(in_half_hold.max(1))
            }
            None => c.claim_batch,
        }
    }

    /// Waits for the next revocation slot under `revoke_rate`. Without one, still gives the
    /// runtime a chance to run other tasks (issues) between revocations: with a store and a
    /// provider that answer at once, a backlog would otherwise hold the thread for a whole batch.
    async fn pace(&self) {
        let Some(rate) = self.config.revoke_rate else {
            tokio::task::consume_budget().await;
            return;
        };
        let gap = Duration::from_secs(1) / rate.max(1);
        let slot = {
            let mut next = self
                .next_revoke_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// One drift-repair pass over every secret whose provider repairs drift.
    async fn repair_drift(&self) {
        let entries: Vec<Arc<SecretEntry>> = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.secret.provider().capabilities().repairs_drift)
            .cloned()
            .collect();
        for entry in entries {
            let name = entry.secret.name();
            // Every lease of the backend's kind counts: secrets may share one (and a prefix).
            let mut leased = Vec::new();
            let mut after = None;
            loop {
                let page = match self
                    .store
                    .list(&LeaseFilter::all().after(after.clone()).limit(1000))
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        telemetry::store_error("list");
                        tracing::warn!(secret = name, error = %e, "drift repair could not read the leases");
                        return;
                    }
                };
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                leased.extend(
                    page.into_iter()
                        .filter(|l| *l.provider_kind == *entry.kind)
                        .map(|l| l.external),
                );
            }
            let mark = crate::secret::installation_prefix(
                entry.secret.username_prefix(),
                &self.installation,
            );
            let repair = entry.secret.provider().repair_drift(&leased, &mark);
            match tokio::time::timeout(self.config.revoke_timeout, repair).await {
                Ok(Ok(r)) => {
                    telemetry::drift(&entry.kind, &r);
                    if r.copied + r.removed + r.failed > 0 {
                        tracing::info!(target: "leasehold::audit", action = "repair_drift", secret = name, copied = r.copied, removed = r.removed, failed = r.failed);
                    }
                }
                Ok(Err(e)) => tracing::warn!(secret = name, error = %e, "drift repair failed"),
                Err(_) => tracing::warn!(
                    secret = name,
                    "drift repair did not finish in revoke_timeout"
                ),
            }
        }
    }

    /// Refreshes the lease-count gauges of every registered secret from the store.
    async fn refresh_gauges(&self) {
        let secrets: Vec<Arc<str>> = self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.secret.name_arc().clone())
            .collect();
        for secret in secrets {
            for state in [
                LeaseState::Pending,
                LeaseState::Active,
                LeaseState::Revoking,
                LeaseState::Irrevocable,
            ] {
                match self
                    .store
                    .count(&LeaseFilter::secret(&*secret).state(state))
                    .await
                {
                    Ok(n) => telemetry::lease_gauge(&secret, state, n),
                    Err(e) => {
                        telemetry::store_error("count");
                        tracing::debug!(error = %e, "could not count leases for the metrics");
                        return;
                    }
                }
            }
        }
    }
}

async fn worker_loop(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    tracing::debug!(instance = %inner.owner, "expiry worker started");
    let mut gauges_at: Option<tokio::time::Instant> = None;
    let mut repair_at: Option<tokio::time::Instant> = None;
    // Revocations run in tasks of their own, at most revoke_concurrency at once; the loop goes
    // on claiming while there is room, so one revocation hanging on a slow backend holds up
    // one slot, not the expiry of every lease that falls due after it.
    let slots = Arc::new(tokio::sync::Semaphore::new(inner.config.revoke_concurrency));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        telemetry::worker_loop();
        inner
            .worker_alive_ms
            .store(now().timestamp_millis(), Ordering::Relaxed);
        if gauges_at.is_none_or(|at| at.elapsed() >= inner.config.metrics_interval) {
            gauges_at = Some(tokio::time::Instant::now());
            inner.refresh_gauges().await;
        }
        if repair_at.is_none_or(|at| at.elapsed() >= inner.config.repair_interval) {
            repair_at = Some(tokio::time::Instant::now());
            // In a task of its own: a slow backend must not hold up expiry.
            if !inner.repairing.swap(true, Ordering::SeqCst) {
                let inner = inner.clone();
                tokio::spawn(async move {
                    inner.repair_drift().await;
                    inner.repairing.store(false, Ordering::SeqCst);
                });
            }
        }
        // Awake: every write from now on is seen by the reads below, or wakes the worker.
        inner.planned_wake_ms.store(i64::MAX, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let t = now();
        let batch = inner.claim_batch().min(free);
        // Revocations run while the loop goes on claiming: a claim must outlive the revocation
        // it covers (paced for at most half a claim_hold, then bounded by revoke_timeout), or
        // this worker, or another, would claim the lease again and revoke it twice.
        let hold = inner
            .config
            .claim_hold
            .saturating_add(inner.config.revoke_timeout);
        let claimed = match inner.store.claim_due(t, &inner.owner, hold, batch).await {
            Ok(c) => c,
            Err(e) => {
                telemetry::store_error("claim_due");
                tracing::warn!(error = %e, "expiry worker could not claim due leases");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let full = claimed.len() >= batch;
        for lease in claimed {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Not reached: no more were claimed than there were free slots.
                break;
            };
            let inner = inner.clone();
            running.spawn(async move {
                inner.pace().await;
                inner.process_due(lease).await;
                drop(slot);
            });
        }
        if full {
            continue;
        }
        let next = inner.store.next_due().await.ok().flatten();
        let idle = inner.config.max_idle;
        let sleep_for = match next {
            Some(at) => (at - now()).to_std().unwrap_or(Duration::ZERO).min(idle),
            None => idle,
        };
        if sleep_for.is_zero() {
            // Due now but claimed elsewhere: yield briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // The timer starts a little after this, so the worker wakes no earlier than planned.
        let planned = add_duration(now(), sleep_for).timestamp_millis();
        inner.planned_wake_ms.store(planned, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = inner.wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
    // Revocations under way finish (each bounded by revoke_timeout) before the worker stops.
    while running.join_next().await.is_some() {}
    tracing::debug!(instance = %inner.owner, "expiry worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        let p = RetryPolicy::default();
        let d1 = p.delay_after(1);
        assert!(d1 >= Duration::from_millis(7500) && d1 <= Duration::from_millis(12500));
        let d6 = p.delay_after(6);
        assert!(d6 >= Duration::from_secs(240) && d6 <= Duration::from_secs(400));
        let d30 = p.delay_after(30);
        assert!(d30 <= Duration::from_secs(750));
        // Total over the default six attempts is about ten minutes.
        let total: f64 = (1..=6).map(|a| p.delay_after(a).as_secs_f64()).sum();
        assert!((450.0..=800.0).contains(&total), "{total}");
    }

    #[test]
    fn renew_caps_at_max() {
        let t = Utc::now();
        let max = t + chrono::Duration::seconds(100);
        assert_eq!(
            renewed_expiry(t, Duration::from_secs(50), max),
            t + chrono::Duration::seconds(50)
        );
        assert_eq!(renewed_expiry(t, Duration::from_secs(500), max), max);
    }
}
