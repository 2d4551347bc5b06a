//! Configuration for services: build a [`LeaseManager`] from a section of your own config file.
//!
//! The schema is the CLI's (`leasehold --config leasehold.toml ...`): a `store`, an optional
//! `manager` table and a list of `secrets`. Each secret mixes the keys every secret has
//! ([`SecretConfig`]: `name`, `type`, TTLs, username template, quota) with its provider's keys,
//! which are the provider config type's own (`leasehold::redis::RedisConfig`,
//! `leasehold::elasticache::ElastiCacheConfig`, `leasehold::memorydb::MemoryDbConfig`,
//! `leasehold::iam::IamConfig`): one schema, read by the same code in the CLI and in a service.
//! Unknown keys are refused with the key named; durations are text (`"1h30m"`, `"250ms"`) or a
//! number of seconds; nothing touches the network until [`Config::build`].
//!
//! Over 700 lines: about 135 are its unit tests; the rest is the four sections of the schema
//! (store, manager, secret, provider), each with its checks and its key names in errors.
//!
//! Any serde format works (TOML, JSON, YAML). In TOML:
//!
//! ```
//! # #[cfg(feature = "redis")] {
//! use leasehold::config::Config;
//!
//! #[derive(serde::Deserialize)]
//! struct ServiceConfig {
//!     listen: String,
//!     leasehold: Config,
//! }
//!
//! let text = r#"
//!     listen = "0.0.0.0:8080"
//!
//!     [leasehold.store]
//!     url = "memory"
//!
//!     [leasehold.manager]
//!     revoke_concurrency = 8
//!
//!     [[leasehold.secrets]]
//!     name = "orders-cache"
//!     type = "redis"
//!     default_ttl = "15m"
//!     max_ttl = "1h"
//!     urls = ["redis://127.0.0.1:6379"]
//!     acl_rules = "on ~orders:* +@read +@write"
//! "#;
//! let service: ServiceConfig = toml::from_str(text).unwrap();
//! assert_eq!(service.leasehold.secrets[0].name, "orders-cache");
//! // Then, in an async context: `let manager = service.leasehold.build().await?;`
//! # }
//! ```
//!
//! The provider types' keys are listed in each provider crate's README; the CLI README lists
//! the whole file.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::settings::shorten;
use leasehold_core::{
    DurationText, DynamicSecret, DynamicSecretProvider, Error, LeaseManager, LeaseManagerBuilder,
    LeaseStore, ManagerConfig, MemoryStore, Result, RetryPolicy, TtlOverMax,
};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The whole `leasehold` section: where leases are kept, the manager's settings, the secrets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where leases are kept. Optional here so a service can hand [`Config::builder_with_store`]
    /// a store it opened itself; [`Config::build`] requires it.
    pub store: Option<StoreConfig>,
    /// Settings of the lease manager.
    #[serde(default)]
    pub manager: ManagerSettings,
    /// The secrets, in file order.
    #[serde(default)]
    pub secrets: Vec<SecretConfig>,
}

impl Config {
    /// Opens the store, builds every secret's provider and returns the running manager.
    ///
    /// Secrets are validated against their backends (as [`LeaseManager::register`] does);
    /// an error carries the failing secret's name as context `secret`.
    pub async fn build(self) -> Result<LeaseManager> {
        self.builder().await?.build().await
    }

    /// Like [`build`](Self::build), but returns the builder so the service can add an audit
    /// sink, a retry policy or run without the worker before building.
    pub async fn builder(self) -> Result<LeaseManagerBuilder> {
        let store = match &self.store {
            Some(s) => s.open().await?,
            None => return Err(Error::invalid_config(
                "store: missing; give [store] url = \"memory\", a sqlite:// or a postgres:// URL",
            )),
        };
        self.builder_with_store(store).await
    }

    /// Builds the secrets and a manager builder on `store` (the `store` table, if any, is
    /// ignored).
    pub async fn builder_with_store(
        self,
        store: Arc<dyn LeaseStore>,
    ) -> Result<LeaseManagerBuilder> {
        let mut b = self.manager.apply(LeaseManager::builder(store))?;
        for s in self.secrets {
            let name = s.name.clone();
            b = b.secret(
                s.into_secret()
                    .await
                    .map_err(|e| e.with_context("secret", &name))?,
            );
        }
        Ok(b)
    }
}

/// `[store]`: where leases are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory`, `sqlite://path` (feature `sqlite`) or `postgres://...` (feature `postgres`).
    pub url: String,
}

impl StoreConfig {
    /// Opens the store the URL names.
    pub async fn open(&self) -> Result<Arc<dyn LeaseStore>> {
        let url = self.url.as_str();
        if url == "memory" {
            return Ok(Arc::new(MemoryStore::new()));
        }
        if url.starts_with("sqlite:") {
            #[cfg(feature = "sqlite")]
            return Ok(Arc::new(crate::SqliteStore::open(url).await?));
            #[cfg(not(feature = "sqlite"))]
            return Err(Error::invalid_config(
                "store.url: a sqlite: URL needs the `sqlite` feature of leasehold",
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return Ok(Arc::new(crate::PostgresStore::connect(url).await?));
            #[cfg(not(feature = "postgres"))]
            return Err(Error::invalid_config(
                "store.url: a postgres:// URL needs the `postgres` feature of leasehold",
            ));
        }
        Err(Error::invalid_config(
            "store.url: must be \"memory\", a sqlite:// URL or a postgres:// URL",
        ))
    }
}

/// Shortest and longest `claim_hold`: a shorter hold lets another instance take a lease this
/// one is still revoking; a longer one leaves a crashed instance's leases unrevoked that long.
const CLAIM_HOLD_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// `[manager]`: the lease manager's settings, each optional (unset keeps the
/// [`ManagerConfig`] / [`RetryPolicy`] default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ManagerSettings {
    /// A stable instance id: a restart with the same id takes its claims back at once.
    pub instance_id: Option<String>,
    /// Longest sleep of the worker between looks at the store.
    pub max_idle: Option<DurationText>,
    /// Revocations at once.
    pub revoke_concurrency: Option<usize>,
    /// Leases claimed per look at the store.
    pub claim_batch: Option<usize>,
    /// At most this many revocations per second by the worker.
    pub revoke_rate: Option<u32>,
    /// Delay after the first failed revocation.
    pub retry_initial_delay: Option<DurationText>,
    /// Longest delay between revocation attempts.
    pub retry_max_delay: Option<DurationText>,
    /// Attempts before a lease becomes irrevocable.
    pub retry_max_attempts: Option<u32>,
    /// How often irrevocable leases are tried again.
    pub irrevocable_retry: Option<DurationText>,
    /// Longest time an issue may take.
    pub issue_timeout: Option<DurationText>,
    /// Longest time one revoke or renew call may take.
    pub revoke_timeout: Option<DurationText>,
    /// Pause before a timed-out create is revoked by name.
    pub create_grace: Option<DurationText>,
    /// How long a claim on a due lease holds (1 s to 1 day).
    pub claim_hold: Option<DurationText>,
    /// How often the worker refreshes the lease gauges.
    pub metrics_interval: Option<DurationText>,
    /// How often the worker asks providers to repair drift.
    pub repair_interval: Option<DurationText>,
    /// Whether this instance runs the expiry worker (default true).
    pub run_worker: Option<bool>,
}

impl ManagerSettings {
    /// The checked [`ManagerConfig`]; errors name the key (`manager.claim_hold: ...`).
    pub fn manager_config(&self) -> Result<ManagerConfig> {
        let d = |field: &str, v: &Option<DurationText>| {
            DurationText::parse_opt(v, field).map_err(|e| in_table("manager", e))
        };
        let at_least_one = |field: &str, v: Option<u64>| match v {
            Some(0) => Err(Error::invalid_config(format!(
                "manager.{field}: must be at least 1"
            ))),
            _ => Ok(()),
        };
        at_least_one(
            "revoke_concurrency",
            self.revoke_concurrency.map(|n| n as u64),
        )?;
        at_least_one("claim_batch", self.claim_batch.map(|n| n as u64))?;
        at_least_one("revoke_rate", self.revoke_rate.map(u64::from))?;
        at_least_one("retry_max_attempts", self.retry_max_attempts.map(u64::from))?;
        let mut c = ManagerConfig::default();
        if let Some(n) = self.revoke_concurrency {
            c.revoke_concurrency = n;
        }
        if let Some(n) = self.claim_batch {
            c.claim_batch = n;
        }
        c.revoke_rate = self.revoke_rate.or(c.revoke_rate);
        if let Some(h) = d("claim_hold", &self.claim_hold)? {
            if !CLAIM_HOLD_RANGE.contains(&h) {
                return Err(Error::invalid_config(format!(
                    "manager.claim_hold: {} is outside 1s..1day: a shorter hold lets another \
                     instance take a lease this one is still revoking, a longer one leaves a \
                     crashed instance's leases unrevoked for that long",
                    leasehold_core::format_duration(h)
                )));
            }
            c.claim_hold = h;
        }
        let set = |slot: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut c.max_idle, d("max_idle", &self.max_idle)?);
        set(
            &mut c.issue_timeout,
            d("issue_timeout", &self.issue_timeout)?,
        );
        set(
            &mut c.revoke_timeout,
            d("revoke_timeout", &self.revoke_timeout)?,
        );
        set(&mut c.create_grace, d("create_grace", &self.create_grace)?);
        set(
            &mut c.metrics_interval,
            d("metrics_interval", &self.metrics_interval)?,
        );
        set(
            &mut c.repair_interval,
            d("repair_interval", &self.repair_interval)?,
        );
        let mut retry = RetryPolicy::default();
        set(
            &mut retry.initial_delay,
            d("retry_initial_delay", &self.retry_initial_delay)?,
        );
        set(
            &mut retry.max_delay,
            d("retry_max_delay", &self.retry_max_delay)?,
        );
        if self.retry_max_delay.is_none() {
            // A first delay above the default cap raises the cap rather than being cut.
            retry.max_delay = retry.max_delay.max(retry.initial_delay);
        } else if retry.max_delay < retry.initial_delay {
            return Err(Error::invalid_config(
                "manager.retry_max_delay: is shorter than retry_initial_delay",
            ));
        }
        set(
            &mut retry.irrevocable_retry,
            d("irrevocable_retry", &self.irrevocable_retry)?,
        );
        if let Some(n) = self.retry_max_attempts {
            retry.max_attempts = n;
        }
        c.retry = retry;
        if let Some(w) = self.run_worker {
            c.run_worker = w;
        }
        Ok(c)
    }

    /// The checked instance id, if set.
    pub fn instance_id(&self) -> Result<Option<&str>> {
        match self.instance_id.as_deref() {
            Some(id)
                if id.is_empty()
                    || id.len() > 128
                    || id.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                Err(Error::invalid_config(
                    "manager.instance_id: must be 1 to 128 characters, without spaces or control characters",
                ))
            }
            other => Ok(other),
        }
    }

    /// Applies these settings to a manager builder.
    pub fn apply(&self, builder: LeaseManagerBuilder) -> Result<LeaseManagerBuilder> {
        let mut b = builder.config(self.manager_config()?);
        if let Some(id) = self.instance_id()? {
            b = b.instance_id(id);
        }
        Ok(b)
    }
}

fn in_table(table: &str, e: Error) -> Error {
    Error::invalid_config(format!("{table}.{}", e.message()))
}

/// The provider types, as spelled in `type = "..."`, with the feature each needs.
pub const TYPES: &[(&str, &str)] = &[
    ("aws-elasticache", "elasticache"),
    ("aws-memorydb", "memorydb"),
    ("aws-iam", "iam"),
    ("redis", "redis"),
];

/// The keys every secret has; the others belong to its provider.
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "default_ttl",
    "max_ttl",
    "username_template",
    "username_prefix",
    "max_active_leases",
    "ttl_over_max",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonKeys {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    default_ttl: Option<DurationText>,
    max_ttl: Option<DurationText>,
    username_template: Option<String>,
    username_prefix: Option<String>,
    max_active_leases: Option<u64>,
    ttl_over_max: Option<String>,
}

/// One `[[secrets]]` entry: the keys every secret has, and its provider's config.
#[derive(Clone)]
#[non_exhaustive]
pub struct SecretConfig {
    /// The secret's name (`orders-cache`): the first part of its lease ids.
    pub name: String,
    /// TTL of a lease when the request names none (default 1 h).
    pub default_ttl: Duration,
    /// Longest life of a lease, renewals included (default 24 h).
    pub max_ttl: Duration,
    /// Username template, if set.
    pub username_template: Option<String>,
    /// Username prefix, if set.
    pub username_prefix: Option<String>,
    /// Most leases live at once, if limited.
    pub max_active_leases: Option<u64>,
    /// What a requested TTL above `max_ttl` does: `error` (default) or `clamp`.
    pub ttl_over_max: TtlOverMax,
    /// The provider and its settings.
    pub provider: ProviderConfig,
}

impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretConfig")
            .field("name", &self.name)
            .field("type", &self.provider.type_name())
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("username_template", &self.username_template)
            .field("username_prefix", &self.username_prefix)
            .field("max_active_leases", &self.max_active_leases)
            .field("ttl_over_max", &self.ttl_over_max)
            .field("provider", &self.provider)
            .finish()
    }
}

/// A secret's provider and its config (the provider crate's own type).
#[derive(Clone)]
#[non_exhaustive]
pub enum ProviderConfig {
    /// `type = "redis"`.
    #[cfg(feature = "redis")]
    Redis(Box<leasehold_redis::RedisConfig>),
    /// `type = "aws-elasticache"`.
    #[cfg(feature = "elasticache")]
    ElastiCache(Box<leasehold_elasticache::ElastiCacheConfig>),
    /// `type = "aws-memorydb"`.
    #[cfg(feature = "memorydb")]
    MemoryDb(Box<leasehold_memorydb::MemoryDbConfig>),
    /// `type = "aws-iam"`.
    #[cfg(feature = "iam")]
    Iam(Box<leasehold_iam::IamConfig>),
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each provider type writes its own Debug, with secrets redacted.
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "redis")]
            ProviderConfig::Redis(c) => c.fmt(f),
            #[cfg(feature = "elasticache")]
            ProviderConfig::ElastiCache(c) => c.fmt(f),
            #[cfg(feature = "memorydb")]
            ProviderConfig::MemoryDb(c) => c.fmt(f),
            #[cfg(feature = "iam")]
            ProviderConfig::Iam(c) => c.fmt(f),
            _ => f.write_str("ProviderConfig"),
        }
    }
}

impl ProviderConfig {
    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "redis")]
            ProviderConfig::Redis(_) => "redis",
            #[cfg(feature = "elasticache")]
            ProviderConfig::ElastiCache(_) => "aws-elasticache",
            #[cfg(feature = "memorydb")]
            ProviderConfig::MemoryDb(_) => "aws-memorydb",
            #[cfg(feature = "iam")]
            ProviderConfig::Iam(_) => "aws-iam",
            _ => "",
        }
    }

    /// Reads the provider keys of a secret of type `kind` (the common keys already taken off).
    pub fn from_map(kind: &str, keys: Map<String, Value>) -> std::result::Result<Self, String> {
        let _ = &keys; // unused when no provider feature is on
        match kind {
            #[cfg(feature = "redis")]
            "redis" => from_map(keys).map(|c| ProviderConfig::Redis(Box::new(c))),
            #[cfg(feature = "elasticache")]
            "aws-elasticache" => from_map(keys).map(|c| ProviderConfig::ElastiCache(Box::new(c))),
            #[cfg(feature = "memorydb")]
            "aws-memorydb" => from_map(keys).map(|c| ProviderConfig::MemoryDb(Box::new(c))),
            #[cfg(feature = "iam")]
            "aws-iam" => from_map(keys).map(|c| ProviderConfig::Iam(Box::new(c))),
            other => Err(match TYPES.iter().find(|(t, _)| *t == other) {
                Some((t, feature)) => {
                    format!("type: {t:?} needs the `{feature}` feature of the leasehold crate")
                }
                None => format!(
                    "type: unknown type {:?}; expected one of {}",
                    shorten(other),
                    TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// Builds the provider (AWS providers load their SDK config; nothing is called yet).
    pub async fn into_provider(self) -> Result<Arc<dyn DynamicSecretProvider>> {
        #[allow(unreachable_patterns)]
        match self {
            #[cfg(feature = "redis")]
            ProviderConfig::Redis(c) => Ok(Arc::new(leasehold_redis::RedisAclProvider::new(*c)?)),
            #[cfg(feature = "elasticache")]
            ProviderConfig::ElastiCache(c) => Ok(Arc::new(
                leasehold_elasticache::ElastiCacheProvider::new(*c).await?,
            )),
            #[cfg(feature = "memorydb")]
            ProviderConfig::MemoryDb(c) => Ok(Arc::new(
                leasehold_memorydb::MemoryDbProvider::new(*c).await?,
            )),
            #[cfg(feature = "iam")]
            ProviderConfig::Iam(c) => c.into_provider().await,
            _ => Err(Error::invalid_config("no provider feature is enabled")),
        }
    }
}

impl SecretConfig {
    /// Reads one secret from its table: the common keys, then the provider's keys by `type`.
    /// Errors name the key (`max_ttl: ...`, `unknown field \`urls2\``), not the secret: the
    /// caller knows where the table came from.
    pub fn from_map(mut table: Map<String, Value>) -> std::result::Result<Self, String> {
        let common: CommonKeys = from_map(take_keys(&mut table, COMMON_KEYS))?;
        check_name(&common.name)?;
        let msg = |e: Error| e.message().to_string();
        let default_ttl = DurationText::parse_opt(&common.default_ttl, "default_ttl")
            .map_err(msg)?
            .unwrap_or(Duration::from_secs(3600));
        let max_ttl = DurationText::parse_opt(&common.max_ttl, "max_ttl")
            .map_err(msg)?
            .unwrap_or(Duration::from_secs(24 * 3600));
        leasehold_core::duration::check_default_within_max(
            "default_ttl",
            default_ttl,
            "max_ttl",
            max_ttl,
        )
        .map_err(msg)?;
        let ttl_over_max = match common.ttl_over_max.as_deref() {
            None | Some("error") => TtlOverMax::Error,
            Some("clamp") => TtlOverMax::Clamp,
            Some(other) => {
                return Err(format!(
                    "ttl_over_max: {:?} is not one of \"error\", \"clamp\"",
                    shorten(other)
                ))
            }
        };
        let provider = ProviderConfig::from_map(&common.kind, table)?;
        Ok(SecretConfig {
            name: common.name,
            default_ttl,
            max_ttl,
            username_template: common.username_template,
            username_prefix: common.username_prefix,
            max_active_leases: common.max_active_leases,
            ttl_over_max,
            provider,
        })
    }

    /// Builds the provider and the [`DynamicSecret`] (checked offline; the manager validates
    /// it against the backend when it is registered).
    pub async fn into_secret(self) -> Result<DynamicSecret> {
        let provider = self.provider.into_provider().await?;
        let mut b = DynamicSecret::builder(&self.name, provider)
            .default_ttl(self.default_ttl)
            .max_ttl(self.max_ttl)
            .ttl_over_max(self.ttl_over_max);
        if let Some(t) = &self.username_template {
            b = b.username_template(t);
        }
        if let Some(p) = &self.username_prefix {
            b = b.username_prefix(p);
        }
        if let Some(n) = self.max_active_leases {
            b = b.max_active_leases(n);
        }
        b.build()
    }
}

impl<'de> Deserialize<'de> for SecretConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = Map::<String, Value>::deserialize(d)?;
        let label = match table.get("name").and_then(Value::as_str) {
            Some(n) => format!("secret {:?}", shorten(n)),
            None => "secret".to_string(),
        };
        SecretConfig::from_map(table).map_err(|m| de::Error::custom(format!("{label}: {m}")))
    }
}

pub use leasehold_core::settings::{from_map, take_keys};

/// Checks a secret's (or a static role's) `name`: 1 to 128 characters from letters, digits,
/// `-`, `_` and `.`, since it starts every lease id and labels metrics.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(
            "name: must be 1 to 128 characters from letters, digits, '-', '_' and '.'".into(),
        );
    }
    Ok(())
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    const SECTION: &str = r#"
        [store]
        url = "memory"

        [manager]
        instance_id = "svc-a"
        revoke_concurrency = 4
        claim_hold = "90s"
        retry_initial_delay = "20s"
        retry_max_attempts = 3

        [[secrets]]
        name = "orders-cache"
        type = "redis"
        default_ttl = "15m"
        max_ttl = 7200
        ttl_over_max = "clamp"
        urls = ["redis://127.0.0.1:6379"]
        admin_username = "ops"
        admin_password = "hunter2-admin"
        acl_rules = "on ~orders:* +@read"
    "#;

    fn load(text: &str) -> std::result::Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_toml_section_reads_into_the_library_types() {
        let c = load(SECTION).unwrap();
        assert_eq!(c.store.as_ref().unwrap().url, "memory");
        let m = c.manager.manager_config().unwrap();
        assert_eq!(m.revoke_concurrency, 4);
        assert_eq!(m.claim_hold, Duration::from_secs(90));
        assert_eq!(m.retry.initial_delay, Duration::from_secs(20));
        assert_eq!(m.retry.max_attempts, 3);
        assert_eq!(c.manager.instance_id().unwrap(), Some("svc-a"));
        let s = &c.secrets[0];
        assert_eq!(s.name, "orders-cache");
        assert_eq!(s.default_ttl, Duration::from_secs(900));
        assert_eq!(s.max_ttl, Duration::from_secs(7200));
        assert_eq!(s.ttl_over_max, TtlOverMax::Clamp);
        assert_eq!(s.provider.type_name(), "redis");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn json_reads_the_same_schema() {
        let json = serde_json::json!({
            "store": {"url": "memory"},
            "secrets": [{
                "name": "orders-cache", "type": "redis",
                "urls": ["redis://127.0.0.1:6379"], "command_timeout": "250ms"
            }]
        });
        let c: Config = serde_json::from_value(json).unwrap();
        assert_eq!(c.secrets.len(), 1);
        assert!(c.manager == ManagerSettings::default());
    }

    #[test]
    fn errors_name_the_secret_and_the_key() {
        let cases = [
            (
                SECTION.replace("acl_rules", "acl_ruls"),
                "unknown field `acl_ruls`",
            ),
            (SECTION.replace("\"15m\"", "\"15x\""), "default_ttl:"),
            (
                SECTION.replace("\"15m\"", "\"3h\""),
                "default_ttl 3h exceeds max_ttl 2h",
            ),
            (
                SECTION.replace("type = \"redis\"", "type = \"mongo\""),
                "unknown type \"mongo\"",
            ),
            (
                SECTION.replace("max_ttl = 7200", "max_ttl = true"),
                "max_ttl: invalid type",
            ),
            (SECTION.replace("\"clamp\"", "\"wrap\""), "ttl_over_max"),
            (SECTION.replace("\"90s\"", "\"2d\""), "manager.claim_hold"),
        ];
        for (text, want) in cases {
            let e = match load(&text) {
                Ok(c) => c
                    .manager
                    .manager_config()
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.message().to_string()),
                Err(e) => e,
            };
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        let e =
            load(&SECTION.replace("url = \"memory\"", "url = \"memory\"\npath = 1")).unwrap_err();
        assert!(e.contains("unknown field `path`"), "{e}");
        let e = load(&SECTION.replace("acl_rules", "acl_ruls")).unwrap_err();
        assert!(e.contains("secret \"orders-cache\""), "{e}");
    }

    #[test]
    fn a_secret_value_never_reaches_an_error() {
        let text = SECTION.replace("\"hunter2-admin\"", "987654321");
        let e = load(&text).unwrap_err();
        assert!(e.contains("admin_password"), "{e}");
        assert!(!e.contains("987654321"), "{e}");
    }

    #[tokio::test]
    async fn build_runs_a_manager_on_the_configured_store() {
        let c = load(&SECTION.replace("\"svc-a\"", "\"svc-b\"")).unwrap();
        // No Redis needed: the builder skips validation, and nothing is issued.
        let manager = c
            .builder()
            .await
            .unwrap()
            .skip_validation()
            .run_worker(false)
            .build()
            .await
            .unwrap();
        assert_eq!(manager.secrets(), vec!["orders-cache".to_string()]);
        assert_eq!(manager.instance_id(), "svc-b");
        manager.shutdown().await;
        let mut no_store = load(SECTION).unwrap();
        no_store.store = None;
        let e = no_store.builder().await.err().unwrap();
        assert!(e.message().contains("store: missing"), "{e}");
    }
}
