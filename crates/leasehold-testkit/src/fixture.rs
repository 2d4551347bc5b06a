//! What the conformance test macros run against: the store, coordination store or provider a
//! test file's setup made, with what must live as long as it (a temporary directory, servers)
//! and an optional check to run after each test.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leasehold_core::{CoordinationStore, DynamicSecretProvider, LeaseStore};

use crate::CredentialProbe;

type After = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>>>;

/// One conformance test's subject: a [`LeaseStore`], a [`CoordinationStore`] or a
/// [`DynamicSecretProvider`], returned by the setup of
/// [`store_conformance_tests!`](crate::store_conformance_tests),
/// [`coordination_conformance_tests!`](crate::coordination_conformance_tests) or
/// [`provider_conformance_tests!`](crate::provider_conformance_tests).
///
/// ```
/// use leasehold_testkit::conformance::Fixture;
/// let dir = std::env::temp_dir();
/// let fixture = Fixture::store(leasehold_core::MemoryStore::new()).keep(dir);
/// # let _ = fixture;
/// ```
pub struct Fixture<T: ?Sized> {
    subject: Arc<T>,
    probe: Option<Arc<dyn CredentialProbe>>,
    kept: Vec<Box<dyn Any>>,
    after: Vec<After>,
}

/// The fixture of a store test.
pub type StoreFixture = Fixture<dyn LeaseStore>;
/// The fixture of a coordination-store test.
pub type CoordinationFixture = Fixture<dyn CoordinationStore>;
/// The fixture of a provider test.
pub type ProviderFixture = Fixture<dyn DynamicSecretProvider>;

impl<T: ?Sized> std::fmt::Debug for Fixture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("probe", &self.probe.is_some())
            .field("kept", &self.kept.len())
            .field("after", &self.after.len())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> Fixture<T> {
    fn of(subject: Arc<T>) -> Self {
        Fixture {
            subject,
            probe: None,
            kept: Vec::new(),
            after: Vec::new(),
        }
    }

    /// Keeps `guard` (a temporary directory, a server) alive until the test ends.
    pub fn keep(mut self, guard: impl Any) -> Self {
        self.kept.push(Box::new(guard));
        self
    }

    /// Runs `check` after the test function passed (for example: nothing is left on the
    /// servers), before the kept guards are dropped.
    pub fn after<F, Fut>(mut self, check: F) -> Self
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.after.push(Box::new(move || {
            Box::pin(check()) as Pin<Box<dyn Future<Output = ()>>>
        }));
        self
    }

    /// The subject under test.
    pub fn get(&self) -> &T {
        &self.subject
    }

    /// The credential probe, when one was given.
    pub fn probe(&self) -> Option<&dyn CredentialProbe> {
        self.probe.as_deref()
    }

    /// Runs the [`after`](Self::after) checks in order, then drops the subject and the guards.
    pub async fn finish(mut self) {
        for check in std::mem::take(&mut self.after) {
            check().await;
        }
    }
}

impl Fixture<dyn LeaseStore> {
    /// A store fixture.
    pub fn store(store: impl LeaseStore) -> Self {
        Self::of(Arc::new(store))
    }

    /// A store fixture from a store already behind `Arc<dyn LeaseStore>`.
    pub fn shared_store(store: Arc<dyn LeaseStore>) -> Self {
        Self::of(store)
    }
}

impl Fixture<dyn CoordinationStore> {
    /// A coordination-store fixture.
    pub fn coordination(store: Arc<dyn CoordinationStore>) -> Self {
        Self::of(store)
    }

    /// The coordination store `store` offers through [`LeaseStore::coordination`]; `store` is
    /// kept alive with it.
    ///
    /// # Panics
    ///
    /// When `store` offers none.
    pub fn coordination_of(store: impl LeaseStore) -> Self {
        let coordination = store
            .coordination()
            .expect("the store offers a coordination store");
        Self::of(coordination).keep(Arc::new(store) as Arc<dyn LeaseStore>)
    }
}

impl Fixture<dyn DynamicSecretProvider> {
    /// A provider fixture, without a probe.
    pub fn provider(provider: impl DynamicSecretProvider) -> Self {
        Self::of(Arc::new(provider))
    }

    /// A provider fixture from a provider already behind `Arc<dyn DynamicSecretProvider>`.
    pub fn shared_provider(provider: Arc<dyn DynamicSecretProvider>) -> Self {
        Self::of(provider)
    }

    /// Checks credentials against the real backend with `probe`.
    pub fn with_probe(mut self, probe: impl CredentialProbe + 'static) -> Self {
        self.probe = Some(Arc::new(probe));
        self
    }

    /// The provider, shared (for calling [`provider_conformance`](crate::provider_conformance)).
    pub fn shared(&self) -> Arc<dyn DynamicSecretProvider> {
        self.subject.clone()
    }
}
