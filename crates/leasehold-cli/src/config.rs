//! The TOML configuration: parsing and offline checks.
//!
//! A secret's table mixes the keys every secret has (`name`, `type`, TTLs, template) with the
//! keys of its provider. serde's `deny_unknown_fields` does not work through `flatten`, so the
//! table is split by key name first and each part is deserialized into a struct that refuses
//! unknown keys: a typo is an error naming the key, never silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use leasehold_core::{parse_duration, ErrorKind, TtlOverMax};
use secrecy::SecretString;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A configuration error: one line, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The provider types the CLI knows, as spelled in `type = "..."`.
pub const TYPES: &[&str] = &["aws-elasticache", "aws-memorydb", "aws-iam", "redis"];

/// The whole file, checked.
#[derive(Debug)]
pub struct Config {
    /// Where leases are kept.
    pub store: StoreConfig,
    /// Settings of the lease manager.
    pub manager: ManagerSettings,
    /// The secrets, in file order.
    pub secrets: Vec<SecretConfig>,
    /// `[metrics]`: what `run` exports.
    pub metrics: MetricsSettings,
    /// `[alerts]`: where `run` sends alerts besides stderr.
    pub alerts: AlertSettings,
    /// The static roles (`[[static_roles]]`), in file order.
    pub static_roles: Vec<crate::static_roles::StaticRoleConfig>,
}

/// `[metrics]` (optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    interval: Option<DurationText>,
}

/// `[metrics]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `run` serves `/metrics` and `/healthz` (`--metrics-listen` overrides).
    pub listen: Option<std::net::SocketAddr>,
    /// How often the worker refreshes the lease gauges from the store.
    pub interval: Option<Duration>,
}

/// `[alerts]` (optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    webhook: Option<String>,
    repeated_after: Option<u32>,
}

/// `[alerts]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertSettings {
    /// An `http://` URL that receives a JSON POST per alert.
    pub webhook: Option<crate::alerts::WebhookUrl>,
    /// Alert on a revocation's nth failed attempt and each one after it.
    pub repeated_after: Option<u32>,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory`, `sqlite://path`, or `postgres://...`.
    pub url: String,
}

/// `[manager]` (optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    instance_id: Option<String>,
    max_idle: Option<DurationText>,
    revoke_concurrency: Option<usize>,
    retry_initial_delay: Option<DurationText>,
    retry_max_attempts: Option<u32>,
    issue_timeout: Option<DurationText>,
    revoke_timeout: Option<DurationText>,
    create_grace: Option<DurationText>,
    claim_hold: Option<DurationText>,
}

/// Settings of the lease manager, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerSettings {
    /// A stable instance id (recommended for `run`).
    pub instance_id: Option<String>,
    /// Longest sleep of the worker between looks at the store.
    pub max_idle: Option<Duration>,
    /// Revocations at once.
    pub revoke_concurrency: Option<usize>,
    /// Delay after the first failed revocation.
    pub retry_initial_delay: Option<Duration>,
    /// Attempts before a lease becomes irrevocable.
    pub retry_max_attempts: Option<u32>,
    /// Longest time an issue may take.
    pub issue_timeout: Option<Duration>,
    /// Longest time one revoke or renew call may take.
    pub revoke_timeout: Option<Duration>,
    /// Pause before a timed-out create is revoked by name.
    pub create_grace: Option<Duration>,
    /// How long the worker's claim on a due lease holds.
    pub claim_hold: Option<Duration>,
}

/// One `[[secrets]]` entry, checked offline.
#[derive(Debug)]
pub struct SecretConfig {
    /// The secret's name.
    pub name: String,
    /// Default TTL.
    pub default_ttl: Duration,
    /// Max TTL.
    pub max_ttl: Duration,
    /// Username template, if set.
    pub username_template: Option<String>,
    /// Prefix of `randomUsername`, if set.
    pub username_prefix: Option<String>,
    /// Limit on active leases, if set.
    pub max_active_leases: Option<u64>,
    /// What a TTL above the max does.
    pub ttl_over_max: TtlOverMax,
    /// The provider's settings.
    pub provider: ProviderConfig,
}

/// The provider part of a secret.
#[derive(Debug)]
pub enum ProviderConfig {
    /// `type = "aws-iam"`.
    AwsIam(Box<IamSection>, AwsSection),
    /// `type = "aws-elasticache"`.
    AwsElastiCache(Box<ElastiCacheSection>, AwsSection),
    /// `type = "aws-memorydb"`.
    AwsMemoryDb(Box<MemoryDbSection>, AwsSection),
    /// `type = "redis"`.
    Redis(Box<RedisSection>),
}

impl ProviderConfig {
    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::AwsIam(..) => "aws-iam",
            ProviderConfig::AwsElastiCache(..) => "aws-elasticache",
            ProviderConfig::AwsMemoryDb(..) => "aws-memorydb",
            ProviderConfig::Redis(..) => "redis",
        }
    }
}

/// Keys every secret has.
const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "default_ttl",
    "max_ttl",
    "username_template",
    "username_prefix",
    "max_active_leases",
    "ttl_over_max",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSection {
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

/// Keys every AWS secret has.
pub(crate) const AWS_KEYS: &[&str] = &[
    "region",
    "endpoint_url",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "assume_role_arn",
    "assume_role_external_id",
    "max_attempts",
];

/// The AWS settings of a secret: region, endpoint, credentials.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// The region (else the environment's).
    pub region: Option<String>,
    /// Endpoint override.
    pub endpoint_url: Option<String>,
    /// Static access key id (else the default chain).
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<SecretString>,
    /// Session token of static temporary keys.
    pub session_token: Option<SecretString>,
    /// A role to assume with the credentials above (or the default chain).
    pub assume_role_arn: Option<String>,
    /// The external id the role requires.
    pub assume_role_external_id: Option<String>,
    /// Attempts per SDK call.
    pub max_attempts: Option<u32>,
}

impl fmt::Debug for AwsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSection")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("assume_role_arn", &self.assume_role_arn)
            .finish_non_exhaustive()
    }
}

/// The keys of `type = "aws-iam"` besides the AWS ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamSection {
    /// `iam_user`, `assumed_role`, `federation_token` or `session_token`.
    pub credential_type: String,
    /// The inline policy (`iam_user`), session policy (`assumed_role`) or federated user's
    /// policy (`federation_token`).
    pub policy_document: Option<String>,
    /// Managed policies.
    #[serde(default)]
    pub policy_arns: Vec<String>,
    /// `iam_user`: IAM path.
    pub path: Option<String>,
    /// `iam_user`: permissions boundary ARN.
    pub permissions_boundary: Option<String>,
    /// `iam_user`: groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `iam_user`: extra tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `iam_user`: inline policy name.
    pub inline_policy_name: Option<String>,
    /// `iam_user`: how old a lease must be before `NoSuchEntity` on revoke is believed.
    pub consistency_window: Option<DurationText>,
    /// `iam_user`: whether revoke sweeps service-specific credentials.
    pub sweep_service_specific_credentials: Option<bool>,
    /// `assumed_role`: the role.
    pub role_arn: Option<String>,
    /// `assumed_role`: the external id.
    pub external_id: Option<String>,
    /// `assumed_role`: the role's max session duration.
    pub max_session_duration: Option<DurationText>,
    /// How long issue waits, at most, for the credential to work.
    pub ready_timeout: Option<DurationText>,
}

/// The keys of `type = "aws-elasticache"` besides the AWS ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElastiCacheSection {
    /// The replication group (node-based cache); or `serverless_cache_name`.
    pub replication_group_id: Option<String>,
    /// The serverless cache; or `replication_group_id`.
    pub serverless_cache_name: Option<String>,
    /// The user group every user joins.
    pub user_group_id: String,
    /// `redis` (default) or `valkey`.
    pub engine: Option<String>,
    /// `CreateUser` input as a JSON template.
    pub creation_statement: Option<String>,
    /// `DeleteUser` input as a JSON template.
    pub revocation_statement: Option<String>,
    /// Extra tags on every user.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `rediss://host:port` to confirm new credentials with `AUTH`.
    pub readiness_endpoint: Option<String>,
    /// The CA (PEM file) of the readiness endpoint.
    pub readiness_ca_pem: Option<std::path::PathBuf>,
    /// How long issue waits, at most, for the credential to work.
    pub ready_timeout: Option<DurationText>,
    /// Accept a group whose `default` user is open.
    pub allow_open_default_user: Option<bool>,
}

/// The keys of `type = "aws-memorydb"` besides the AWS ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryDbSection {
    /// The cluster.
    pub cluster_name: String,
    /// The ACL users join (default: the cluster's).
    pub acl_name: Option<String>,
    /// `CreateUser` input as a JSON template.
    pub creation_statement: Option<String>,
    /// `DeleteUser` input as a JSON template.
    pub revocation_statement: Option<String>,
    /// Extra tags on every user.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `rediss://host:port` to confirm new credentials with `AUTH`.
    pub readiness_endpoint: Option<String>,
    /// The CA (PEM file) of the readiness endpoint.
    pub readiness_ca_pem: Option<std::path::PathBuf>,
    /// How long issue waits, at most, for the credential to work.
    pub ready_timeout: Option<DurationText>,
    /// How long revoke rides out a user that is changing.
    pub revoke_timeout: Option<DurationText>,
}

/// The keys of `type = "redis"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// Every node the users must exist on (primary and replicas).
    pub urls: Vec<String>,
    /// Rules of every issued user.
    pub acl_rules: Option<String>,
    /// The admin user the provider connects as (default: `default`).
    pub username: Option<String>,
    /// The admin user's password.
    pub password: Option<SecretString>,
    /// CA certificate for `rediss://` nodes.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate, for mutual TLS.
    pub client_cert: Option<std::path::PathBuf>,
    /// Client key, for mutual TLS.
    pub client_key: Option<std::path::PathBuf>,
    /// Run `ACL SAVE` after every change.
    pub acl_save: Option<bool>,
    /// How long connecting may take.
    pub connect_timeout: Option<DurationText>,
    /// How long one command may take.
    pub command_timeout: Option<DurationText>,
    /// Tries per command and node.
    pub attempts: Option<u32>,
    /// First pause between tries.
    pub retry_delay: Option<DurationText>,
    /// Find replicas, cluster nodes and Sentinel-managed sets from the listed nodes (default
    /// true); false limits the provider to the listed nodes.
    pub discover: Option<bool>,
    /// How often the topology is read again (default 30 s).
    pub refresh_interval: Option<DurationText>,
}

impl fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSection")
            .field("urls", &self.urls)
            .field("acl_rules", &self.acl_rules)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// A duration as written: a string such as `"1h30m"` or a number of seconds. Parsed (with the
/// field's name in the error) by [`leasehold_core::parse_duration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"30s\", \"15m\", \"1h30m\", \"2d\" or a number of seconds",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl DurationText {
    /// Parses the text; `field` names the setting in the error.
    pub fn parse(&self, field: &str) -> Result<Duration, String> {
        parse_duration(field, &self.0).map_err(|e| e.message().to_string())
    }
}

fn opt_duration(field: &str, v: &Option<DurationText>) -> Result<Option<Duration>, String> {
    v.as_ref().map(|d| d.parse(field)).transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: StoreConfig,
    #[serde(default)]
    manager: RawManager,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    secrets: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    static_roles: Vec<toml::Spanned<toml::Table>>,
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key whose value starts at `pos` (`store.url`), for errors that do not name it.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[start..pos].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// Bounds of `[manager] claim_hold`.
const MIN_CLAIM_HOLD: Duration = Duration::from_secs(1);
const MAX_CLAIM_HOLD: Duration = Duration::from_secs(24 * 3600);

/// The largest configuration file read. A real one is a few kilobytes; the limit keeps
/// `--config /dev/zero` (or a log file named by mistake) from being read into memory.
pub const MAX_CONFIG_BYTES: u64 = 2 * 1024 * 1024;

/// Longest path shown in a message; a longer one is cut in the middle.
const MAX_SHOWN_PATH: usize = 80;

/// `path` for a message: control and invisible characters escaped, at most
/// [`MAX_SHOWN_PATH`] characters (the start and the end, which name the file, are kept).
pub fn shown_path(path: &Path) -> String {
    let text = crate::output::escape(&path.display().to_string());
    let n = text.chars().count();
    if n <= MAX_SHOWN_PATH {
        return text;
    }
    let head: String = text.chars().take(40).collect();
    let tail: String = text.chars().skip(n - 30).collect();
    format!("{head}…{tail} ({n} characters)")
}

/// Reads and checks the file at `path`: at most [`MAX_CONFIG_BYTES`] are read.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let shown = shown_path(path);
    let cannot = |e: &dyn fmt::Display| {
        ConfigError(format!(
            "{shown}: cannot read the configuration file: {e} (use --config PATH)"
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "{shown}: the configuration file is larger than {} MiB; is it the right file? (use --config PATH)",
            MAX_CONFIG_BYTES / (1024 * 1024)
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| cannot(&"stream did not contain valid UTF-8"))?;
    parse(&shown, &text)
}

/// Parses and checks configuration `text`; `source` names it in errors.
pub fn parse(source: &str, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // One line, always: TOML syntax errors come on several.
        let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let msg = msg.as_str();
        let Some(span) = e.span() else {
            return ConfigError(format!("{source}: {msg}"));
        };
        let line = line_of(text, span.start);
        match key_at(text, span.start).filter(|_| !msg.contains("field `")) {
            Some(key) => ConfigError(format!("{source}:{line}: {key}: {msg}")),
            None => ConfigError(format!("{source}:{line}: {msg}")),
        }
    })?;
    if raw.store.url.trim().is_empty() {
        return Err(ConfigError(format!(
            "{source}: store.url: must not be empty"
        )));
    }
    let manager =
        check_manager(&raw.manager).map_err(|m| ConfigError(format!("{source}: manager.{m}")))?;
    let metrics =
        check_metrics(&raw.metrics).map_err(|m| ConfigError(format!("{source}: metrics.{m}")))?;
    let alerts =
        check_alerts(&raw.alerts).map_err(|m| ConfigError(format!("{source}: alerts.{m}")))?;
    let mut secrets: Vec<SecretConfig> = Vec::with_capacity(raw.secrets.len());
    for (i, spanned) in raw.secrets.into_iter().enumerate() {
        let line = line_of(text, spanned.span().start);
        let table = spanned.into_inner();
        // The name is quoted once, here, and shortened; messages below do not repeat it.
        let label = match table.get("name").and_then(|v| v.as_str()) {
            Some(n) if n.chars().count() > 64 => {
                let head: String = n.chars().take(48).collect();
                format!(
                    "{source}:{line}: secrets[{i}] ({head:?}… {} characters)",
                    n.chars().count()
                )
            }
            Some(n) => format!("{source}:{line}: secrets[{i}] ({n:?})"),
            None => format!("{source}:{line}: secrets[{i}]"),
        };
        let secret = parse_secret(table).map_err(|m| ConfigError(format!("{label}: {m}")))?;
        if secrets.iter().any(|s| s.name == secret.name) {
            return Err(ConfigError(format!(
                "{label}: name: {:?} is used by an earlier secret",
                secret.name
            )));
        }
        secrets.push(secret);
    }
    let mut static_roles: Vec<crate::static_roles::StaticRoleConfig> = Vec::new();
    for (i, spanned) in raw.static_roles.into_iter().enumerate() {
        let line = line_of(text, spanned.span().start);
        let table = spanned.into_inner();
        let label = match table.get("name").and_then(|v| v.as_str()) {
            Some(n) => format!(
                "{source}:{line}: static_roles[{i}] ({:?})",
                n.chars().take(64).collect::<String>()
            ),
            None => format!("{source}:{line}: static_roles[{i}]"),
        };
        let role = crate::static_roles::parse(table, &manager)
            .map_err(|m| ConfigError(format!("{label}: {m}")))?;
        if static_roles.iter().any(|r| r.name == role.name) {
            return Err(ConfigError(format!(
                "{label}: name: {:?} is used by an earlier static role",
                role.name
            )));
        }
        static_roles.push(role);
    }
    Ok(Config {
        store: raw.store,
        manager,
        secrets,
        metrics,
        alerts,
        static_roles,
    })
}

/// Bounds of `[metrics] interval`: each refresh counts leases per secret and state.
const MIN_METRICS_INTERVAL: Duration = Duration::from_secs(1);
const MAX_METRICS_INTERVAL: Duration = Duration::from_secs(3600);

fn check_metrics(m: &RawMetrics) -> Result<MetricsSettings, String> {
    let listen = m
        .listen
        .as_deref()
        .map(|l| {
            l.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                format!(
                    "listen: {:?} is not a socket address (such as \"127.0.0.1:9464\" or \"[::1]:9464\")",
                    crate::output::escape(l)
                )
            })
        })
        .transpose()?;
    let interval = opt_duration("interval", &m.interval)?;
    if let Some(i) = interval {
        if !(MIN_METRICS_INTERVAL..=MAX_METRICS_INTERVAL).contains(&i) {
            return Err(format!(
                "interval: {} is outside 1s..1h",
                leasehold_core::format_duration(i)
            ));
        }
    }
    Ok(MetricsSettings { listen, interval })
}

fn check_alerts(a: &RawAlerts) -> Result<AlertSettings, String> {
    if a.repeated_after == Some(0) {
        return Err("repeated_after: must be at least 1".into());
    }
    let webhook = a
        .webhook
        .as_deref()
        .map(|w| crate::alerts::WebhookUrl::parse(w.trim()).map_err(|e| format!("webhook: {e}")))
        .transpose()?;
    Ok(AlertSettings {
        webhook,
        repeated_after: a.repeated_after,
    })
}

fn check_manager(m: &RawManager) -> Result<ManagerSettings, String> {
    if m.revoke_concurrency == Some(0) {
        return Err("revoke_concurrency: must be at least 1".into());
    }
    if m.retry_max_attempts == Some(0) {
        return Err("retry_max_attempts: must be at least 1".into());
    }
    if let Some(id) = &m.instance_id {
        if id.is_empty() || id.len() > 128 {
            return Err("instance_id: must be 1 to 128 characters".into());
        }
    }
    let claim_hold = opt_duration("claim_hold", &m.claim_hold)?;
    if let Some(h) = claim_hold {
        if h < MIN_CLAIM_HOLD || h > MAX_CLAIM_HOLD {
            return Err(format!(
                "claim_hold: {} is outside 1s..1day: a shorter hold lets another instance take \
                 a lease this one is still revoking, a longer one leaves a crashed instance's \
                 leases unrevoked for that long",
                leasehold_core::format_duration(h)
            ));
        }
    }
    Ok(ManagerSettings {
        instance_id: m.instance_id.clone(),
        max_idle: opt_duration("max_idle", &m.max_idle)?,
        revoke_concurrency: m.revoke_concurrency,
        retry_initial_delay: opt_duration("retry_initial_delay", &m.retry_initial_delay)?,
        retry_max_attempts: m.retry_max_attempts,
        issue_timeout: opt_duration("issue_timeout", &m.issue_timeout)?,
        revoke_timeout: opt_duration("revoke_timeout", &m.revoke_timeout)?,
        create_grace: opt_duration("create_grace", &m.create_grace)?,
        claim_hold,
    })
}

/// Removes `keys` from `table` and returns them as a table of their own.
pub(crate) fn take_keys(table: &mut toml::Table, keys: &[&str]) -> toml::Table {
    let mut out = toml::Table::new();
    for k in keys {
        if let Some(v) = table.remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out
}

fn try_table<T: de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim_end().to_string())
}

/// Deserializes `table` into `T`. serde names the key in "unknown field" and "missing field"
/// errors but not in type errors ("invalid type: boolean `true`, expected ..."); for those the
/// key whose removal changes the error is the culprit, and the message is prefixed with it.
pub(crate) fn from_table<T: de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    let msg = match try_table::<T>(table.clone()) {
        Ok(v) => return Ok(v),
        Err(m) => m,
    };
    if msg.contains("field `") {
        return Err(msg);
    }
    for key in table.keys() {
        let mut without = table.clone();
        without.remove(key);
        match try_table::<T>(without) {
            Err(m) if m == msg => continue,
            _ => return Err(format!("{key}: {msg}")),
        }
    }
    Err(msg)
}

fn parse_secret(mut table: toml::Table) -> Result<SecretConfig, String> {
    let common: CommonSection = from_table(take_keys(&mut table, COMMON_KEYS))?;
    if common.name.is_empty()
        || common.name.len() > 128
        || !common
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(
            "name: must be 1 to 128 characters from letters, digits, '-', '_' and '.'".into(),
        );
    }
    let default_ttl = common
        .default_ttl
        .as_ref()
        .map(|d| d.parse("default_ttl"))
        .transpose()?
        .unwrap_or(Duration::from_secs(3600));
    let max_ttl = common
        .max_ttl
        .as_ref()
        .map(|d| d.parse("max_ttl"))
        .transpose()?
        .unwrap_or(Duration::from_secs(24 * 3600));
    leasehold_core::duration::check_default_within_max(
        "default_ttl",
        default_ttl,
        "max_ttl",
        max_ttl,
    )
    .map_err(|e| e.message().to_string())?;
    let ttl_over_max = match common.ttl_over_max.as_deref() {
        None | Some("error") => TtlOverMax::Error,
        Some("clamp") => TtlOverMax::Clamp,
        Some(other) => {
            return Err(format!(
                "ttl_over_max: {other:?} is not one of \"error\", \"clamp\""
            ))
        }
    };
    let provider = match common.kind.as_str() {
        "aws-iam" => {
            let aws: AwsSection = from_table(take_keys(&mut table, AWS_KEYS))?;
            let iam: IamSection = from_table(table)?;
            ProviderConfig::AwsIam(Box::new(iam), aws)
        }
        "aws-elasticache" => {
            let aws: AwsSection = from_table(take_keys(&mut table, AWS_KEYS))?;
            ProviderConfig::AwsElastiCache(Box::new(from_table(table)?), aws)
        }
        "aws-memorydb" => {
            let aws: AwsSection = from_table(take_keys(&mut table, AWS_KEYS))?;
            ProviderConfig::AwsMemoryDb(Box::new(from_table(table)?), aws)
        }
        "redis" => ProviderConfig::Redis(Box::new(from_table(table)?)),
        other => {
            return Err(format!(
                "type: unknown type {other:?}; expected one of {}",
                TYPES.join(", ")
            ))
        }
    };
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

/// Whether an error of this kind is the caller's (exit code 2) rather than a failed operation.
pub fn is_usage_error(kind: ErrorKind) -> bool {
    kind.is_invalid_input() || kind == ErrorKind::SecretNotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[store]
url = "memory"

[[secrets]]
name = "reports"
type = "aws-iam"
default_ttl = "15m"
max_ttl = 7200
region = "us-east-1"
credential_type = "iam_user"
"#;

    fn err(text: &str) -> String {
        parse("t.toml", text).unwrap_err().0
    }

    #[test]
    fn good_config_parses() {
        let c = parse("t.toml", GOOD).unwrap();
        assert_eq!(c.store.url, "memory");
        assert_eq!(c.secrets.len(), 1);
        let s = &c.secrets[0];
        assert_eq!(s.name, "reports");
        assert_eq!(s.default_ttl, Duration::from_secs(900));
        assert_eq!(s.max_ttl, Duration::from_secs(7200));
        assert_eq!(s.provider.type_name(), "aws-iam");
    }

    #[test]
    fn errors_name_the_field_on_one_line() {
        let cases = [
            (
                GOOD.replace("aws-iam", "aws-foo"),
                "type: unknown type \"aws-foo\"",
            ),
            (GOOD.replace("\"15m\"", "\"15x\""), "default_ttl:"),
            (
                GOOD.replace("\"15m\"", "\"3h\""),
                "default_ttl 3h exceeds max_ttl 2h",
            ),
            (
                GOOD.replace("name = \"reports\"\n", ""),
                "missing field `name`",
            ),
            (
                GOOD.replace("credential_type", "credentail_type"),
                "unknown field `credentail_type`",
            ),
            (
                GOOD.replace("[store]\n", "[store]\npath = 1\n"),
                "unknown field `path`",
            ),
            (GOOD.replace("region", "regoin"), "unknown field `regoin`"),
            (format!("{GOOD}\n[worker]\n"), "unknown field `worker`"),
            (
                GOOD.replace("max_ttl = 7200", "max_ttl = true"),
                "max_ttl: invalid type",
            ),
            (
                GOOD.replace("url = \"memory\"", "url = 5"),
                "t.toml:3: store.url: invalid type",
            ),
            (
                GOOD.replace("[store]\nurl = \"memory\"\n", ""),
                "missing field `store`",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(!e.contains('\n'), "{e:?} is more than one line");
            assert!(e.starts_with("t.toml:"), "{e:?}");
        }
    }

    #[test]
    fn secret_errors_carry_the_line_and_name() {
        let e = err(&GOOD.replace("\"15m\"", "\"15x\""));
        assert!(
            e.starts_with("t.toml:5: secrets[0] (\"reports\"): default_ttl:"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_name_is_quoted_once() {
        let e = err(&GOOD.replace("\"reports\"", "\"a\\u202eb\\\\x\""));
        assert_eq!(
            e,
            "t.toml:5: secrets[0] (\"a\\u{202e}b\\\\x\"): name: must be 1 to 128 characters from letters, digits, '-', '_' and '.'"
        );
        let e = err(&GOOD.replace("\"reports\"", &format!("\"{}\"", "n".repeat(10_000))));
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("10000 characters"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dup = format!("{GOOD}{}", &GOOD[GOOD.find("[[secrets]]").unwrap()..]);
        assert!(err(&dup).contains("used by an earlier secret"));
    }

    #[test]
    fn aws_debug_redacts_the_secret_key() {
        let c = parse(
            "t.toml",
            &GOOD.replace(
                "region = \"us-east-1\"",
                "region = \"us-east-1\"\naccess_key_id = \"AKIAX\"\nsecret_access_key = \"wJalrXUtnFEMI-sekrit\"",
            ),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIAX"));
        assert!(!shown.contains("sekrit"), "{shown}");
    }

    #[test]
    fn manager_section_is_checked() {
        let text = GOOD.replace(
            "[store]",
            "[manager]\nmax_idle = \"1s\"\nrevoke_concurrency = 0\n\n[store]",
        );
        assert!(err(&text).contains("manager.revoke_concurrency"));
        let text = GOOD.replace("[store]", "[manager]\nmax_idle = \"1s\"\n\n[store]");
        let c = parse("t.toml", &text).unwrap();
        assert_eq!(c.manager.max_idle, Some(Duration::from_secs(1)));
        let text = GOOD.replace(
            "[store]",
            "[manager]\ncreate_grace = \"45s\"\nissue_timeout = \"2m\"\nrevoke_timeout = \"30s\"\n\n[store]",
        );
        let c = parse("t.toml", &text).unwrap();
        assert_eq!(c.manager.create_grace, Some(Duration::from_secs(45)));
        assert_eq!(c.manager.issue_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.manager.revoke_timeout, Some(Duration::from_secs(30)));
        let text = GOOD.replace("[store]", "[manager]\ncreate_grace = \"soon\"\n\n[store]");
        assert!(err(&text).contains("create_grace"));
        let text = GOOD.replace("[store]", "[manager]\nclaim_hold = \"90s\"\n\n[store]");
        let c = parse("t.toml", &text).unwrap();
        assert_eq!(c.manager.claim_hold, Some(Duration::from_secs(90)));
        for bad in ["\"0s\"", "\"2d\"", "\"x\""] {
            let text = GOOD.replace(
                "[store]",
                &format!("[manager]\nclaim_hold = {bad}\n\n[store]"),
            );
            assert!(err(&text).contains("manager.claim_hold"), "{bad}");
        }
    }
}
