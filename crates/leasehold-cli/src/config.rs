//! The TOML configuration: parsing and offline checks.
//!
//! `[store]`, `[manager]` and `[[secrets]]` are the library's own schema
//! ([`leasehold::config`]), read by the same code a service uses: each secret's provider keys
//! deserialize into the provider crate's config type. This module adds the CLI's sections
//! (`[metrics]`, `[alerts]`, `[[static_roles]]`) and reports every error on one line with the
//! file, the line and the key.

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use leasehold::config::{from_map, take_keys, ManagerSettings, SecretConfig, StoreConfig};
use leasehold_core::{DurationText, ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A configuration error: one line, naming the file and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

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

fn opt_duration(field: &str, v: &Option<DurationText>) -> Result<Option<Duration>, String> {
    DurationText::parse_opt(v, field).map_err(|e| e.message().to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: StoreConfig,
    #[serde(default)]
    manager: ManagerSettings,
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
    raw.manager
        .manager_config()
        .and_then(|_| raw.manager.instance_id().map(|_| ()))
        .map_err(|e| ConfigError(format!("{source}: {}", e.message())))?;
    if raw.manager.metrics_interval.is_some() && raw.metrics.interval.is_some() {
        return Err(ConfigError(format!(
            "{source}: metrics.interval: set either metrics.interval or manager.metrics_interval, not both"
        )));
    }
    let manager = raw.manager;
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
        let secret = to_map(table)
            .and_then(SecretConfig::from_map)
            .map_err(|m| ConfigError(format!("{label}: {m}")))?;
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

/// A TOML table as a JSON object, the form the library's config readers take (TOML has no
/// value JSON cannot hold but dates, which no key here takes).
pub(crate) fn to_map(table: toml::Table) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(table) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a table".into()),
        Err(e) => Err(e.to_string()),
    }
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
        let m = c.manager.manager_config().unwrap();
        assert_eq!(m.max_idle, Duration::from_secs(1));
        let text = GOOD.replace(
            "[store]",
            "[manager]\ncreate_grace = \"45s\"\nissue_timeout = \"2m\"\nrevoke_timeout = \"30s\"\n\n[store]",
        );
        let m = parse("t.toml", &text)
            .unwrap()
            .manager
            .manager_config()
            .unwrap();
        assert_eq!(m.create_grace, Duration::from_secs(45));
        assert_eq!(m.issue_timeout, Duration::from_secs(120));
        assert_eq!(m.revoke_timeout, Duration::from_secs(30));
        let text = GOOD.replace("[store]", "[manager]\ncreate_grace = \"soon\"\n\n[store]");
        assert!(err(&text).contains("create_grace"));
        let text = GOOD.replace("[store]", "[manager]\nclaim_hold = \"90s\"\n\n[store]");
        let m = parse("t.toml", &text)
            .unwrap()
            .manager
            .manager_config()
            .unwrap();
        assert_eq!(m.claim_hold, Duration::from_secs(90));
        for bad in ["\"0s\"", "\"2d\"", "\"x\""] {
            let text = GOOD.replace(
                "[store]",
                &format!("[manager]\nclaim_hold = {bad}\n\n[store]"),
            );
            assert!(err(&text).contains("manager.claim_hold"), "{bad}");
        }
    }
}
