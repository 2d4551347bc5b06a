//! What the manager and memory benches share: the no-op provider, a manager over
//! `MemoryStore`, the quick switch and the `RESULT|` lines `scripts/bench` collects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leasehold::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecret, DynamicSecretProvider,
    ExternalRef, LeaseManager, ManagerConfig, MemoryStore, Readiness, Result,
};

pub fn quick() -> bool {
    std::env::var("LEASEHOLD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

pub fn result(name: &str, value: String, goal: &str, met: bool) {
    println!(
        "RESULT|{name}|{value}|{goal}|{}",
        if met { "met" } else { "MISSED" }
    );
}

/// Creates nothing; answers at once (or after `latency`), recording revoke times.
#[derive(Debug, Default)]
pub struct NoopProvider {
    pub latency: Duration,
    pub revoked_at: Mutex<HashMap<String, DateTime<Utc>>>,
    pub record: bool,
}

#[async_trait]
impl DynamicSecretProvider for NoopProvider {
    fn kind(&self) -> &'static str {
        "noop"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    async fn validate(&self) -> Result<()> {
        Ok(())
    }
    async fn create(&self, r: &CreateRequest) -> Result<Created> {
        Ok(Created::new(
            ExternalRef::new(r.username.clone()),
            Credentials::UsernamePassword {
                username: r.username.clone(),
                password: r.password.clone().unwrap_or_default(),
            },
            Readiness::Unchecked,
        ))
    }
    async fn revoke(&self, e: &ExternalRef) -> Result<()> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.record {
            self.revoked_at
                .lock()
                .unwrap()
                .insert(e.id.clone(), Utc::now());
        }
        Ok(())
    }
}

pub fn config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.max_idle = Duration::from_millis(100);
    c
}

pub async fn manager(provider: Arc<NoopProvider>, max_active: u64, ttl: Duration) -> LeaseManager {
    let secret = DynamicSecret::builder("bench", provider)
        .default_ttl(ttl)
        .max_ttl(ttl.max(Duration::from_secs(3600)))
        .max_active_leases(max_active)
        .build()
        .unwrap();
    LeaseManager::builder(Arc::new(MemoryStore::new()))
        .config(config())
        .secret(secret)
        .build()
        .await
        .unwrap()
}
