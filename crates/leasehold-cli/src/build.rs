//! From checked configuration to a store, providers, secrets and a [`LeaseManager`].
//!
//! The library does the work ([`leasehold::config`]): the same code builds a service's manager
//! from its own config file. A new provider type is wired there, not here.

use std::sync::Arc;

use leasehold::config::{SecretConfig, StoreConfig};
use leasehold_core::{DynamicSecret, LeaseManager, LeaseStore, Result};

use crate::config::Config;

/// Opens the store named by `store.url`.
pub async fn store(url: &str) -> Result<Arc<dyn LeaseStore>> {
    StoreConfig {
        url: url.to_string(),
    }
    .open()
    .await
}

/// The secret definition (provider included), checked offline.
pub async fn secret(s: &SecretConfig) -> Result<DynamicSecret> {
    s.clone().into_secret().await
}

/// How a command wants its manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One-shot commands: no worker.
    OneShot,
    /// `run`: the expiry worker.
    Worker,
}

/// Builds every secret of `config` (errors carry the secret's name) and the manager.
pub async fn manager(
    config: &Config,
    mode: Mode,
    audit: Option<Arc<dyn leasehold_core::AuditSink>>,
) -> Result<LeaseManager> {
    let mut secrets = Vec::with_capacity(config.secrets.len());
    for s in &config.secrets {
        secrets.push(
            secret(s)
                .await
                .map_err(|e| e.with_context("secret", &s.name))?,
        );
    }
    let store = store(&config.store.url).await?;
    let mut mc = config.manager.manager_config()?;
    if let Some(d) = config.metrics.interval {
        mc.metrics_interval = d;
    }
    mc.run_worker = mode == Mode::Worker;
    let mut b = LeaseManager::builder(store).config(mc).skip_validation();
    if mode == Mode::Worker {
        if let Some(id) = config.manager.instance_id()? {
            b = b.instance_id(id);
        }
    }
    if let Some(sink) = audit {
        b = b.audit_sink(sink);
    }
    for s in secrets {
        b = b.secret(s);
    }
    b.build().await
}
