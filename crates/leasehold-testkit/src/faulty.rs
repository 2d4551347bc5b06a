//! [`FaultyProvider`]: wraps any provider and fails, slows or hangs chosen calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leasehold_core::{
    Capabilities, CreateRequest, Created, DynamicSecretProvider, Error, ErrorKind, ExternalRef,
    ManagedCredential, NameRule, PasswordPolicy, Result,
};
use rand::Rng;

/// A provider operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `validate`.
    Validate,
    /// `create`.
    Create,
    /// `renew`.
    Renew,
    /// `revoke`.
    Revoke,
    /// `list_managed`.
    ListManaged,
}

/// What happens to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Return an error of this kind without calling the inner provider.
    Fail {
        /// The kind.
        kind: ErrorKind,
        /// Whether it is temporary.
        temporary: bool,
    },
    /// Call the inner provider, then return an error anyway (create: the credential exists
    /// but the caller is told it failed — the worst case for orphans).
    FailAfter {
        /// The kind.
        kind: ErrorKind,
    },
    /// Sleep, then call the inner provider.
    Delay(Duration),
    /// Never return (until the future is dropped).
    Hang,
    /// Call the inner provider, then never return: the credential exists but nobody hears of
    /// it (a process that dies mid-call).
    HangAfter,
}

impl Fault {
    /// A temporary `ProviderUnavailable` failure.
    pub fn unavailable() -> Fault {
        Fault::Fail {
            kind: ErrorKind::ProviderUnavailable,
            temporary: true,
        }
    }

    /// A permanent `PermissionDenied` failure.
    pub fn denied() -> Fault {
        Fault::Fail {
            kind: ErrorKind::PermissionDenied,
            temporary: false,
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    /// Faults for specific call numbers (1-based) per operation.
    nth: HashMap<(Operation, u64), Fault>,
    /// Faults for the next N calls per operation.
    next: HashMap<Operation, (u64, Fault)>,
    /// Faults for every call per operation.
    always: HashMap<Operation, Fault>,
    /// A random fault (drawn uniformly from the list) with this probability, per operation.
    random: HashMap<Operation, (f64, Vec<Fault>)>,
    calls: HashMap<Operation, u64>,
    injected: u64,
}

/// Wraps a provider and injects faults: fail, fail-after-success, delay or hang the Nth call,
/// the next N calls, or every call of an operation.
///
/// ```
/// use std::sync::Arc;
/// use leasehold_testkit::{Fault, FaultyProvider, Operation, RecordingProvider};
///
/// let faulty = FaultyProvider::new(Arc::new(RecordingProvider::new()));
/// faulty.fail_next(Operation::Revoke, 3, Fault::unavailable());
/// ```
#[derive(Debug, Clone)]
pub struct FaultyProvider {
    inner: Arc<dyn DynamicSecretProvider>,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyProvider {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: Arc<dyn DynamicSecretProvider>) -> Self {
        FaultyProvider {
            inner,
            plan: Arc::default(),
        }
    }

    /// Applies `fault` to call number `n` (1-based) of `op`.
    pub fn fault_nth(&self, op: Operation, n: u64, fault: Fault) {
        self.lock().nth.insert((op, n), fault);
    }

    /// Applies `fault` to the next `count` calls of `op`.
    pub fn fail_next(&self, op: Operation, count: u64, fault: Fault) {
        self.lock().next.insert(op, (count, fault));
    }

    /// Applies `fault` to every call of `op` until [`clear`](Self::clear).
    pub fn fail_always(&self, op: Operation, fault: Fault) {
        self.lock().always.insert(op, fault);
    }

    /// With probability `p` (0..=1), applies one of `faults` (chosen uniformly) to each call of
    /// `op`, until [`clear`](Self::clear). For soak tests.
    pub fn fail_randomly(&self, op: Operation, p: f64, faults: Vec<Fault>) {
        assert!((0.0..=1.0).contains(&p) && !faults.is_empty());
        self.lock().random.insert(op, (p, faults));
    }

    /// Removes every planned fault.
    pub fn clear(&self) {
        let mut p = self.lock();
        p.nth.clear();
        p.next.clear();
        p.always.clear();
        p.random.clear();
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Operation) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_fault(&self, op: Operation) -> Option<Fault> {
        let mut p = self.lock();
        let n = {
            let c = p.calls.entry(op).or_default();
            *c += 1;
            *c
        };
        let fault = if let Some(f) = p.nth.remove(&(op, n)) {
            Some(f)
        } else if let Some((left, f)) = p.next.get_mut(&op) {
            let f = f.clone();
            *left -= 1;
            if *left == 0 {
                p.next.remove(&op);
            }
            Some(f)
        } else if let Some(f) = p.always.get(&op) {
            Some(f.clone())
        } else if let Some((prob, faults)) = p.random.get(&op) {
            let mut rng = rand::rng();
            if rng.random_bool(*prob) {
                Some(faults[rng.random_range(0..faults.len())].clone())
            } else {
                None
            }
        } else {
            None
        };
        if fault.is_some() {
            p.injected += 1;
        }
        fault
    }

    async fn run<T, F>(&self, op: Operation, call: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        match self.take_fault(op) {
            None => call.await,
            Some(Fault::Fail { kind, temporary }) => {
                let e = Error::new(kind, format!("injected fault in {op:?}"));
                Err(if temporary {
                    e.temporary()
                } else {
                    e.permanent()
                })
            }
            Some(Fault::FailAfter { kind }) => {
                let _ = call.await;
                Err(Error::new(kind, format!("injected fault after {op:?}")).temporary())
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                call.await
            }
            Some(Fault::Hang) => futures::future::pending().await,
            Some(Fault::HangAfter) => {
                let _ = call.await;
                futures::future::pending().await
            }
        }
    }
}

#[async_trait]
impl DynamicSecretProvider for FaultyProvider {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn name_rule(&self) -> NameRule {
        self.inner.name_rule()
    }

    fn password_policy(&self) -> PasswordPolicy {
        self.inner.password_policy()
    }

    async fn validate(&self) -> Result<()> {
        self.run(Operation::Validate, self.inner.validate()).await
    }

    async fn create(&self, request: &CreateRequest) -> Result<Created> {
        self.run(Operation::Create, self.inner.create(request))
            .await
    }

    async fn renew(&self, external: &ExternalRef, expires_at: DateTime<Utc>) -> Result<()> {
        self.run(Operation::Renew, self.inner.renew(external, expires_at))
            .await
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        self.run(Operation::Revoke, self.inner.revoke(external))
            .await
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        self.run(Operation::ListManaged, self.inner.list_managed(prefix))
            .await
    }
}
