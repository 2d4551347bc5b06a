//! [`RecordingProvider`]: an in-process backend that remembers every credential it made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, ManagedCredential, NameRule, Readiness, Result,
};
use secrecy::{ExposeSecret, SecretString};

#[derive(Default)]
struct State {
    /// username -> password of credentials that exist.
    live: HashMap<String, Option<SecretString>>,
    /// username -> how many times a revoke removed it (must end at exactly 1).
    removed: HashMap<String, u32>,
    creates: u64,
    revoke_calls: u64,
    renew_calls: u64,
}

/// A provider whose "backend" is a map in memory. It counts creates and revocations, so tests
/// can prove that every credential was revoked exactly once and none is left.
///
/// ```
/// use leasehold_testkit::RecordingProvider;
///
/// let p = RecordingProvider::new();
/// assert_eq!(p.live_count(), 0);
/// ```
#[derive(Clone)]
pub struct RecordingProvider {
    state: Arc<Mutex<State>>,
    caps: Capabilities,
    latency: Duration,
    kind: &'static str,
}

impl std::fmt::Debug for RecordingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingProvider")
            .field("caps", &self.caps)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl Default for RecordingProvider {
    fn default() -> Self {
        RecordingProvider::new()
    }
}

impl RecordingProvider {
    /// Renewable, revocable, needs a password, lists its credentials; no latency.
    pub fn new() -> Self {
        RecordingProvider {
            state: Arc::default(),
            caps: Capabilities::new().lists_managed(true),
            latency: Duration::ZERO,
            kind: "recording",
        }
    }

    /// Replaces the capabilities.
    #[must_use]
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    /// Adds latency to every call (a realistic backend).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Credentials that exist now.
    pub fn live_count(&self) -> usize {
        self.lock().live.len()
    }

    /// Usernames that exist now.
    pub fn live_usernames(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().live.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `username` exists now.
    pub fn is_live(&self, username: &str) -> bool {
        self.lock().live.contains_key(username)
    }

    /// Whether `credentials` would authenticate now.
    pub fn authenticates(&self, credentials: &Credentials) -> bool {
        let s = self.lock();
        match s.live.get(credentials.principal()) {
            Some(Some(pw)) => pw.expose_secret() == credentials.secret().expose_secret(),
            Some(None) => true,
            None => false,
        }
    }

    /// Successful creates so far.
    pub fn creates(&self) -> u64 {
        self.lock().creates
    }

    /// Revoke calls so far (including no-op ones).
    pub fn revoke_calls(&self) -> u64 {
        self.lock().revoke_calls
    }

    /// Renew calls so far.
    pub fn renew_calls(&self) -> u64 {
        self.lock().renew_calls
    }

    /// How many times a revoke actually removed `username`.
    pub fn removals_of(&self, username: &str) -> u32 {
        self.lock().removed.get(username).copied().unwrap_or(0)
    }

    /// Usernames removed more than once (must be empty: a credential is revoked exactly once,
    /// a second revoke finds nothing to remove).
    pub fn removed_more_than_once(&self) -> Vec<String> {
        self.lock()
            .removed
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every username ever removed.
    pub fn removed_count(&self) -> usize {
        self.lock().removed.len()
    }

    /// Creates a credential out of band (an orphan, for reconcile tests).
    pub fn insert_out_of_band(&self, username: &str) {
        self.lock().live.insert(username.to_string(), None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl DynamicSecretProvider for RecordingProvider {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Any
    }

    async fn validate(&self) -> Result<()> {
        self.delay().await;
        Ok(())
    }

    async fn create(&self, request: &CreateRequest) -> Result<Created> {
        self.delay().await;
        let password = if self.caps.needs_password {
            Some(request.require_password(self.kind)?.clone())
        } else {
            None
        };
        let mut s = self.lock();
        if s.live.contains_key(&request.username) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("user {} exists", request.username),
            ));
        }
        s.live.insert(request.username.clone(), password.clone());
        s.creates += 1;
        let credentials = match password {
            Some(password) => Credentials::UsernamePassword {
                username: request.username.clone(),
                password,
            },
            None => Credentials::AwsKeys {
                access_key_id: request.username.clone(),
                secret_access_key: SecretString::from(leasehold_core::template::random_lowercase(
                    40,
                )),
                session_token: None,
            },
        };
        let readiness = if request.wait_ready {
            Readiness::Confirmed
        } else {
            Readiness::Unchecked
        };
        Ok(Created::new(
            ExternalRef::new(request.username.clone())
                .with_attr("lease_id", request.lease_id.as_str()),
            credentials,
            readiness,
        ))
    }

    async fn renew(&self, external: &ExternalRef, _expires_at: DateTime<Utc>) -> Result<()> {
        self.delay().await;
        let mut s = self.lock();
        s.renew_calls += 1;
        if !s.live.contains_key(&external.id) {
            return Err(Error::new(ErrorKind::NotFound, "credential is gone"));
        }
        Ok(())
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        self.delay().await;
        let mut s = self.lock();
        s.revoke_calls += 1;
        if s.live.remove(&external.id).is_some() {
            *s.removed.entry(external.id.clone()).or_default() += 1;
        }
        Ok(())
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        self.delay().await;
        Ok(self
            .lock()
            .live
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(|k| ManagedCredential::new(ExternalRef::new(k.clone())))
            .collect())
    }
}
