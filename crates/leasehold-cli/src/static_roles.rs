//! Static roles (`[[static_roles]]`): the password of an existing user, rotated on a schedule by
//! one `run` process of all that share the store, published where every instance reads it.
//!
//! A role's table mixes the keys every static role has (`name`, `type`, the publisher and the
//! schedule), the AWS keys (credentials of AWS targets and of the Secrets Manager publisher)
//! and the keys of its target; as for secrets, each part refuses unknown keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::static_role::{
    FilePublisher, PublishedVersion, RotationOutcome, RotationSchedule, RotationTask, Stage,
    StaticRoleOptions, StaticRolePublisher, StaticRoleRotator, StaticRoleTarget,
};
use leasehold_core::{format_duration, CoordinationStore, Error, ErrorKind, Result};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::{from_map, take_keys, to_map, ManagerSettings};
use leasehold_aws::{AwsConfig, CacheService, StaticUserConfig};
use leasehold_core::DurationText;
use leasehold_elasticache::ElastiCacheUserTarget;
use leasehold_memorydb::MemoryDbUserTarget;

/// The target types, as spelled in `type = "..."`.
pub const STATIC_TYPES: &[&str] = &["aws-elasticache", "aws-memorydb", "redis"];

/// Keys every static role has.
const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "publisher",
    "secret_id",
    "path",
    "period",
    "schedule",
    "window",
    "grace",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSection {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    publisher: Option<String>,
    secret_id: Option<String>,
    path: Option<PathBuf>,
    period: Option<DurationText>,
    schedule: Option<String>,
    window: Option<DurationText>,
    grace: Option<DurationText>,
}

/// `type = "redis"`: the user, and the keys of the Redis provider's config that reach its
/// nodes ([`REDIS_KEYS`]), read by the provider's own [`RedisConfig`](leasehold_redis::RedisConfig).
#[derive(Debug)]
pub struct RedisUser {
    /// The user whose password rotates.
    pub username: String,
    /// Its nodes, admin, TLS files, timeouts and `acl_save`.
    pub config: leasehold_redis::RedisConfig,
}

/// The keys of a `redis` static role besides `username`: those of the Redis provider's config
/// that say how its nodes are reached (no discovery: the password is set on the listed nodes).
pub const REDIS_KEYS: &[&str] = &[
    "urls",
    "admin_username",
    "admin_password",
    "ca_cert",
    "client_cert",
    "client_key",
    "acl_save",
    "connect_timeout",
    "command_timeout",
];

/// The `username` key of a `redis` static role.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisUsername {
    username: String,
}

fn redis_user(mut table: serde_json::Map<String, serde_json::Value>) -> Result<RedisUser, String> {
    let RedisUsername { username } = from_map(take_keys(&mut table, &["username"]))?;
    if let Some(key) = table.keys().find(|k| !REDIS_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "{key}: not a key of a redis static role (it takes username, {})",
            REDIS_KEYS.join(", ")
        ));
    }
    Ok(RedisUser {
        username,
        config: from_map(table)?,
    })
}

/// The user of a static role.
#[derive(Debug)]
pub enum StaticTarget {
    /// `type = "aws-elasticache"` or `"aws-memorydb"`: the user and the readiness check, read
    /// by the AWS crate's own [`StaticUserConfig`].
    Aws(StaticUserConfig),
    /// `type = "redis"`.
    Redis(RedisUser),
}

/// Where the role's password is published.
#[derive(Debug, Clone)]
pub enum PublisherConfig {
    /// `publisher = "secretsmanager"` (the default), `secret_id = "..."`.
    SecretsManager(String),
    /// `publisher = "file"`, `path = "..."`.
    File(PathBuf),
}

/// One `[[static_roles]]` entry, checked offline.
#[derive(Debug)]
pub struct StaticRoleConfig {
    /// The role's name.
    pub name: String,
    /// The user.
    pub target: StaticTarget,
    /// The AWS settings (AWS targets and the Secrets Manager publisher).
    pub aws: AwsConfig,
    /// The publisher.
    pub publisher: PublisherConfig,
    /// Schedule and grace.
    pub options: StaticRoleOptions,
}

impl StaticRoleConfig {
    /// The `type` as written in the file.
    pub fn type_name(&self) -> &'static str {
        match &self.target {
            StaticTarget::Aws(u) => match u.service {
                CacheService::ElastiCache => "aws-elasticache",
                CacheService::MemoryDb => "aws-memorydb",
            },
            StaticTarget::Redis(_) => "redis",
        }
    }

    /// Where the password is published, for messages.
    pub fn location(&self) -> String {
        match &self.publisher {
            PublisherConfig::SecretsManager(id) => format!("secretsmanager:{id}"),
            PublisherConfig::File(p) => format!("file:{}", p.display()),
        }
    }

    /// The schedule as configured, for listings.
    pub fn schedule_text(&self) -> String {
        match &self.options.schedule {
            RotationSchedule::Every(d) => format!("every {}", format_duration(*d)),
            RotationSchedule::Cron {
                expression, window, ..
            } => match window {
                Some(w) => format!("cron({expression}) within {}", format_duration(*w)),
                None => format!("cron({expression})"),
            },
        }
    }
}

/// A Secrets Manager rotation expression (`cron(0 3 * * ? *)`, six fields with a year) or a
/// five-field cron expression, as the five fields the rotator reads.
fn cron_expression(text: &str) -> Result<String, String> {
    let t = text.trim();
    let inner = match t.strip_prefix("cron(") {
        Some(rest) => rest
            .strip_suffix(')')
            .ok_or_else(|| format!("schedule: {t:?} opens \"cron(\" without closing it"))?,
        None => t,
    };
    let mut fields: Vec<&str> = inner.split_whitespace().collect();
    if fields.len() == 6 {
        if fields[5] != "*" {
            return Err(format!(
                "schedule: {t:?} names a year ({}); only \"*\" is supported",
                fields[5]
            ));
        }
        fields.pop();
    }
    if fields.len() != 5 {
        return Err(format!(
            "schedule: {t:?} is not a cron expression: expected \"cron(minute hour day-of-month month day-of-week)\""
        ));
    }
    Ok(fields
        .iter()
        .map(|f| if *f == "?" { "*" } else { f })
        .collect::<Vec<_>>()
        .join(" "))
}

/// Parses one `[[static_roles]]` table. `manager` supplies the claim hold.
pub fn parse(table: toml::Table, manager: &ManagerSettings) -> Result<StaticRoleConfig, String> {
    let mut table = to_map(table)?;
    let common: CommonSection = from_map(take_keys(&mut table, COMMON_KEYS))?;
    leasehold::config::check_name(&common.name)?;
    let aws: AwsConfig = from_map(take_keys(&mut table, AwsConfig::KEYS))?;
    let target = match common.kind.as_str() {
        "aws-elasticache" => StaticTarget::Aws(aws_user(CacheService::ElastiCache, table)?),
        "aws-memorydb" => StaticTarget::Aws(aws_user(CacheService::MemoryDb, table)?),
        "redis" => StaticTarget::Redis(redis_user(table)?),
        other => {
            return Err(format!(
                "type: unknown type {other:?}; expected one of {}",
                STATIC_TYPES.join(", ")
            ))
        }
    };
    let publisher = match common.publisher.as_deref().unwrap_or("secretsmanager") {
        "secretsmanager" => {
            if common.path.is_some() {
                return Err(
                    "path: not used by publisher \"secretsmanager\" (set secret_id)".into(),
                );
            }
            match common.secret_id {
                Some(id) if !id.trim().is_empty() => PublisherConfig::SecretsManager(id),
                _ => {
                    return Err(
                        "secret_id: required by publisher \"secretsmanager\" (the default)".into(),
                    )
                }
            }
        }
        "file" => {
            if common.secret_id.is_some() {
                return Err("secret_id: not used by publisher \"file\" (set path)".into());
            }
            match common.path {
                Some(p) if !p.as_os_str().is_empty() => PublisherConfig::File(p),
                _ => return Err("path: required by publisher \"file\"".into()),
            }
        }
        other => {
            return Err(format!(
                "publisher: unknown publisher {other:?}; expected \"secretsmanager\" or \"file\""
            ))
        }
    };
    let window = common
        .window
        .as_ref()
        .map(|w| w.parse("window").map_err(|e| e.message().to_string()))
        .transpose()?;
    let schedule = match (&common.period, &common.schedule) {
        (Some(_), Some(_)) => {
            return Err("schedule: set either period or schedule, not both".into())
        }
        (Some(p), None) => {
            if window.is_some() {
                return Err("window: only used with schedule = \"cron(...)\"".into());
            }
            RotationSchedule::every(p.parse("period").map_err(|e| e.message().to_string())?)
        }
        (None, Some(s)) => RotationSchedule::cron(&cron_expression(s)?, window).map_err(|e| {
            format!(
                "schedule: {}",
                e.message().trim_start_matches("rotation_schedule: ")
            )
        })?,
        (None, None) => return Err("period: required (or schedule = \"cron(...)\")".into()),
    };
    let mut options = StaticRoleOptions::new(schedule);
    if let Some(g) = &common.grace {
        options = options.grace(g.parse("grace").map_err(|e| e.message().to_string())?);
    }
    // A short schedule (tests, demos) needs quicker looks than the default 5 s.
    if let Some(every) = options.schedule.min_interval(chrono::Utc::now()) {
        let poll = (every / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
        options = options.poll(poll);
    }
    if let Some(hold) = DurationText::parse_opt(&manager.claim_hold, "claim_hold")
        .map_err(|e| e.message().to_string())?
    {
        let poll = options.poll;
        options = options.claim_hold(hold.max(poll * 3));
    }
    options.validate().map_err(|e| {
        let m = e.message();
        m.strip_prefix("rotation_period: ")
            .map(|rest| format!("period: {rest}"))
            .unwrap_or_else(|| m.to_string())
    })?;
    Ok(StaticRoleConfig {
        name: common.name,
        target,
        aws,
        publisher,
        options,
    })
}

fn aws_user(
    service: CacheService,
    table: serde_json::Map<String, serde_json::Value>,
) -> Result<StaticUserConfig, String> {
    StaticUserConfig::from_table(service, table).map_err(|e| e.message().to_string())
}

/// The role's user.
pub async fn target(role: &StaticRoleConfig) -> Result<Arc<dyn StaticRoleTarget>> {
    Ok(match &role.target {
        StaticTarget::Aws(u) => {
            let sdk = role.aws.load().await?;
            match u.service {
                CacheService::ElastiCache => Arc::new(ElastiCacheUserTarget::from_config(&sdk, u)?),
                CacheService::MemoryDb => Arc::new(MemoryDbUserTarget::from_config(&sdk, u)?),
            }
        }
        StaticTarget::Redis(u) => Arc::new(leasehold_redis::RedisUserTarget::from_config(
            &u.username,
            &u.config,
        )?),
    })
}

/// Where the role's password is published.
pub async fn publisher(role: &StaticRoleConfig) -> Result<Arc<dyn StaticRolePublisher>> {
    Ok(match &role.publisher {
        PublisherConfig::SecretsManager(id) => Arc::new(
            leasehold_aws::SecretsManagerPublisher::new(&role.aws.load().await?, id.clone()),
        ),
        PublisherConfig::File(p) => Arc::new(FilePublisher::new(p.clone())),
    })
}

/// A rotator for `role`, acting as `owner`.
pub async fn rotator(
    role: &StaticRoleConfig,
    coordination: Arc<dyn CoordinationStore>,
    owner: &str,
) -> Result<Arc<StaticRoleRotator>> {
    Ok(Arc::new(StaticRoleRotator::new(
        &role.name,
        target(role).await?,
        publisher(role).await?,
        coordination,
        owner,
        role.options.clone(),
    )?))
}

/// The store's coordination, or an error saying the store cannot elect a rotator.
pub fn coordination(store: &dyn leasehold_core::LeaseStore) -> Result<Arc<dyn CoordinationStore>> {
    store.coordination().ok_or_else(|| {
        Error::invalid_config(
            "store.url: this store cannot elect a static role's rotator (no coordination)",
        )
    })
}

/// An owner id for a process that has no configured instance id.
pub fn process_owner(manager: &ManagerSettings) -> String {
    match &manager.instance_id {
        Some(id) => id.clone(),
        None => format!(
            "cli-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ),
    }
}

/// What `rotate` did, as JSON and as table rows.
pub fn outcome_json(name: &str, o: &RotationOutcome) -> (serde_json::Value, Vec<(String, String)>) {
    let (v, rows) = match o {
        RotationOutcome::Rotated {
            version_id,
            resumed,
        } => (
            serde_json::json!({
                "static_role": name, "rotated": true, "version_id": version_id, "resumed": resumed,
            }),
            vec![
                ("static_role".to_string(), name.to_string()),
                ("rotated".into(), "yes".into()),
                ("version_id".into(), version_id.clone()),
                ("resumed".into(), resumed.to_string()),
            ],
        ),
        other => (
            serde_json::json!({ "static_role": name, "rotated": false, "outcome": format!("{other:?}") }),
            vec![
                ("static_role".to_string(), name.to_string()),
                ("rotated".into(), "no".into()),
                ("outcome".into(), format!("{other:?}")),
            ],
        ),
    };
    (v, rows)
}

/// The current credential of `role`, as JSON and as table rows. The only output with its
/// password.
pub fn current_json(
    name: &str,
    v: &PublishedVersion,
) -> (serde_json::Value, Vec<(String, String)>) {
    let c = &v.credential;
    let created = v.created_at.map(crate::output::time);
    (
        serde_json::json!({
            "static_role": name,
            "username": c.username,
            "password": c.password.expose_secret(),
            "user_arn": c.user_arn,
            "version_id": v.version_id,
            "created_at": created,
        }),
        vec![
            ("static_role".to_string(), name.to_string()),
            ("username".into(), c.username.clone()),
            ("password".into(), c.password.expose_secret().to_string()),
            ("version_id".into(), v.version_id.clone()),
            ("created_at".into(), created.unwrap_or_else(|| "-".into())),
        ],
    )
}

/// The current published version of `role`.
pub async fn read(role: &StaticRoleConfig) -> Result<PublishedVersion> {
    let p = publisher(role).await?;
    p.get(Stage::Current).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "static role {:?}: nothing is published at {} yet; `leasehold rotate {}` sets the first password",
                role.name,
                p.location(),
                role.name
            ),
        )
    })
}

/// The running rotators of `run`.
pub struct Running(Vec<RotationTask>);

impl Running {
    /// Stops every rotator and gives up its claim.
    pub async fn stop(self) {
        for t in self.0 {
            t.stop().await;
        }
    }
}

/// Starts one rotator per role (each acts only while it holds the role's claim).
pub async fn start_all(
    roles: &[StaticRoleConfig],
    coordination: Option<Arc<dyn CoordinationStore>>,
    owner: &str,
) -> Result<Running> {
    let mut tasks = Vec::new();
    if roles.is_empty() {
        return Ok(Running(tasks));
    }
    let coordination = coordination.ok_or_else(|| {
        Error::invalid_config(
            "store.url: this store cannot elect a static role's rotator (no coordination)",
        )
    })?;
    for role in roles {
        let r = rotator(role, coordination.clone(), owner)
            .await
            .map_err(|e| e.with_context("static_role", &role.name))?;
        tasks.push(r.start());
    }
    Ok(Running(tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_in_both_spellings() {
        assert_eq!(cron_expression("cron(0 3 * * ? *)").unwrap(), "0 3 * * *");
        assert_eq!(cron_expression("0 3 * * 1").unwrap(), "0 3 * * 1");
        assert!(cron_expression("cron(0 3 * * ? 2030)").is_err());
        assert!(cron_expression("cron(0 3 * *").is_err());
        assert!(cron_expression("daily").is_err());
    }

    #[test]
    fn both_aws_types_take_the_same_readiness_keys() {
        let role = |kind: &str, user: &str| {
            let table: toml::Table = toml::from_str(&format!(
                r#"name = "writer"
type = "{kind}"
secret_id = "prod/writer"
period = "30d"
{user}
readiness_endpoint = "rediss://cache.example:6379"
readiness_ca_pem = "/etc/ssl/cache-ca.pem"
ready_timeout = "2m"
region = "eu-west-1"
"#
            ))
            .unwrap();
            parse(table, &ManagerSettings::default())
        };
        for (kind, user_key, other_key, service) in [
            (
                "aws-elasticache",
                "user_id",
                "user_name",
                CacheService::ElastiCache,
            ),
            (
                "aws-memorydb",
                "user_name",
                "user_id",
                CacheService::MemoryDb,
            ),
        ] {
            let role_of = role(kind, &format!("{user_key} = \"App-Writer\"")).unwrap();
            assert_eq!(role_of.type_name(), kind);
            let StaticTarget::Aws(u) = &role_of.target else {
                unreachable!()
            };
            let expected = StaticUserConfig::new(service, "App-Writer")
                .readiness_endpoint("rediss://cache.example:6379")
                .readiness_ca_pem("/etc/ssl/cache-ca.pem")
                .ready_timeout(Duration::from_secs(120));
            assert_eq!(u, &expected, "{kind}");
            // The other service's user key is refused by name, and so is a bad user name,
            // before any network call.
            let e = role(kind, &format!("{other_key} = \"app-writer\"")).unwrap_err();
            assert!(e.starts_with(&format!("{other_key}: not a key")), "{e}");
            let e = role(kind, &format!("{user_key} = \"two--hyphens\"")).unwrap_err();
            assert!(e.starts_with(&format!("{user_key}: ")), "{e}");
            let e = role(kind, "").unwrap_err();
            assert!(e.starts_with(&format!("{user_key}: required")), "{e}");
        }
    }

    #[test]
    fn a_redis_role_reads_the_provider_keys_that_reach_its_nodes() {
        let role = |extra: &str| {
            let table: toml::Table = toml::from_str(&format!(
                r#"name = "sessions"
type = "redis"
publisher = "file"
path = "/run/leasehold/sessions.json"
period = "1d"
username = "sessions-app"
urls = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]
{extra}"#
            ))
            .unwrap();
            parse(table, &ManagerSettings::default())
        };
        let r = role(
            "admin_username = \"rotator\"\nadmin_password = \"admin-pw-1\"\nacl_save = true\nconnect_timeout = \"2s\"",
        )
        .unwrap();
        let StaticTarget::Redis(u) = &r.target else {
            unreachable!()
        };
        assert_eq!(u.username, "sessions-app");
        assert_eq!(u.config.urls.len(), 2);
        assert!(u.config.acl_save && u.config.admin_username == "rotator");
        assert!(!format!("{r:?}").contains("admin-pw-1"));
        // Keys of the provider that do not apply to a static role are refused by name.
        for key in ["acl_rules = \"+@all\"", "discover = false", "attempts = 2"] {
            let e = role(key).unwrap_err();
            let name = key.split(' ').next().unwrap();
            assert!(
                e.starts_with(&format!("{name}: not a key of a redis static role")),
                "{e}"
            );
        }
        let e = role("admin_username = \"rotator\"").unwrap_err();
        assert!(e.starts_with("admin_password:"), "{e}");
    }
}
