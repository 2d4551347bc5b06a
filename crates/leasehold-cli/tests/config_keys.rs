//! Every key each provider crate documents loads through the CLI, and the CLI accepts no
//! provider key the crates do not document: the CLI's config types are the providers' own.
//!
//! The documented keys are read from each provider README's "Configuration" table, so a key
//! added to a provider's config type without a line in its README (or documented but not
//! read) fails here.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::Cli;

/// The backticked names in the first column of the first table under the README's
/// "Configuration" heading.
fn documented_keys(crate_dir: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("README.md");
    let text = std::fs::read_to_string(&path).expect("provider README");
    let mut lines = text.lines().skip_while(|l| {
        !(l.starts_with('#')
            && l.trim_start_matches('#')
                .trim()
                .starts_with("Configuration"))
    });
    assert!(
        lines.next().is_some(),
        "{crate_dir}: no Configuration heading"
    );
    let mut keys = BTreeSet::new();
    let table = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // header and separator
    for row in table {
        let first = row.split('|').nth(1).unwrap_or_default();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                keys.insert(part.to_string());
            }
        }
    }
    assert!(!keys.is_empty(), "{crate_dir}: an empty key table");
    keys
}

/// A throwaway self-signed certificate and its key, in one PEM file (both the CA and the
/// client certificate and key of the TLS keys), made with the `openssl` CLI.
fn self_signed_pem(path: &Path) {
    let dir = path.parent().expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=leasehold-config-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI (package openssl) makes the test certificate");
    assert!(out.status.success(), "openssl: {out:?}");
    let mut both = std::fs::read(&cert).expect("cert");
    both.extend(std::fs::read(&key).expect("key"));
    std::fs::write(path, both).expect("pem");
}

/// The keys of the `[[secrets]]` tables of `toml` that are not common to every secret.
fn provider_keys_used(toml: &str) -> BTreeSet<String> {
    let common = leasehold::config::COMMON_KEYS;
    let v: toml::Table = toml::from_str(toml).expect("test TOML");
    v["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .flat_map(|s| s.as_table().expect("table").keys().cloned())
        .filter(|k| !common.contains(&k.as_str()))
        .collect()
}

const AWS_KEYS: &str = r#"
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:9"
access_key_id = "AKIAEXAMPLEKEY"
secret_access_key = "example-secret-access-key"
session_token = "example-session-token"
assume_role_arn = "arn:aws:iam::123456789012:role/leasehold"
assume_role_external_id = "ext-1"
assume_role_session_name = "leasehold-test"
max_attempts = 4
attempt_timeout = "5s"
"#;

fn secret(name: &str, kind: &str, keys: &str) -> String {
    format!(
        "\n[[secrets]]\nname = \"{name}\"\ntype = \"{kind}\"\ndefault_ttl = \"20m\"\nmax_ttl = \"1h\"\nusername_template = \"{{{{randomUsername}}}}\"\nusername_prefix = \"lh-\"\nmax_active_leases = 50\nttl_over_max = \"clamp\"\n{keys}"
    )
}

fn check_every_key_loads(crate_dirs: &[&str], secrets: &[String]) {
    let cli_dir = tempfile::tempdir().expect("tempdir");
    let pem = cli_dir.path().join("ca.pem");
    self_signed_pem(&pem);
    let body = secrets
        .join("\n")
        .replace("{pem}", &pem.display().to_string());
    let toml = format!("[store]\nurl = \"memory\"\n{body}");
    let mut documented = BTreeSet::new();
    for dir in crate_dirs {
        documented.extend(documented_keys(dir));
    }
    assert_eq!(
        provider_keys_used(&toml),
        documented,
        "the test sets exactly the documented keys of {crate_dirs:?}"
    );
    let cli = Cli::new(&toml);
    let v = cli.ok(&["secrets"]);
    let listed = v.as_array().expect("a list").len();
    assert_eq!(listed, secrets.len(), "{v}");
    // Nothing secret in what the CLI prints about the configuration.
    assert!(!v.to_string().contains("example-secret-access-key"), "{v}");
}

#[test]
fn every_documented_redis_key_loads_through_the_cli() {
    let keys = r#"
urls = ["rediss://10.0.0.5:6380", "rediss://10.0.0.6:6380"]
discover = false
refresh_interval = "45s"
admin_username = "leasehold-admin"
admin_password = "admin-password-1"
acl_rules = "~orders:* +@read +@write"
ca_cert = "{pem}"
client_cert = "{pem}"
client_key = "{pem}"
acl_save = true
connect_timeout = "1500ms"
command_timeout = "3s"
attempts = 2
retry_delay = "50ms"
"#;
    check_every_key_loads(
        &["leasehold-redis"],
        &[secret("orders-cache", "redis", keys)],
    );
}

#[test]
fn every_documented_elasticache_key_loads_through_the_cli() {
    let a = format!(
        r#"replication_group_id = "sessions"
user_group_id = "sessions-users"
engine = "valkey"
creation_statement = '{{"UserId":"{{{{username}}}}","UserName":"{{{{username}}}}","Engine":"valkey","Passwords":["{{{{password}}}}"],"AccessString":"on ~sess:* +@read"}}'
revocation_statement = '{{"UserId":"{{{{username}}}}"}}'
tags = {{ team = "payments" }}
readiness_endpoint = "rediss://sessions.example:6379"
readiness_ca_pem = "{{pem}}"
ready_timeout = "2m"
allow_open_default_user = true
revoke_wait = "0"
{AWS_KEYS}"#
    );
    let b = "serverless_cache_name = \"carts\"\nuser_group_id = \"carts-users\"\nregion = \"eu-west-1\"\n";
    check_every_key_loads(
        &["leasehold-elasticache", "leasehold-aws"],
        &[
            secret("sessions", "aws-elasticache", &a),
            secret("carts", "aws-elasticache", b),
        ],
    );
}

#[test]
fn every_documented_memorydb_key_loads_through_the_cli() {
    let keys = format!(
        r#"cluster_name = "ledger"
acl_name = "ledger-acl"
creation_statement = '{{"UserName":"{{{{username}}}}","AccessString":"on ~ledger:* +@read","AuthenticationMode":{{"Type":"password","Passwords":["{{{{password}}}}"]}}}}'
revocation_statement = '{{"UserName":"{{{{username}}}}"}}'
tags = {{ team = "ledger" }}
readiness_endpoint = "rediss://ledger.example:6379"
readiness_ca_pem = "{{pem}}"
ready_timeout = "3m"
user_state_wait = "45s"
{AWS_KEYS}"#
    );
    check_every_key_loads(
        &["leasehold-memorydb", "leasehold-aws"],
        &[secret("ledger", "aws-memorydb", &keys)],
    );
}

#[test]
fn every_documented_iam_key_loads_through_the_cli() {
    let policy = r#"policy_document = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'"#;
    let user = format!(
        r#"credential_type = "iam_user"
{policy}
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
path = "/leasehold/"
permissions_boundary = "arn:aws:iam::123456789012:policy/boundary"
groups = ["readers"]
tags = {{ team = "reports" }}
inline_policy_name = "reports"
consistency_window = "20s"
sweep_service_specific_credentials = false
ready_timeout = "40s"
{AWS_KEYS}"#
    );
    let role = format!(
        r#"credential_type = "assumed_role"
role_arn = "arn:aws:iam::123456789012:role/reports-reader"
external_id = "ext-2"
max_session_duration = "2h"
{policy}
region = "eu-west-1"
"#
    );
    let federation =
        format!("credential_type = \"federation_token\"\n{policy}\nregion = \"eu-west-1\"\n");
    let session = "credential_type = \"session_token\"\nregion = \"eu-west-1\"\n";
    check_every_key_loads(
        &["leasehold-iam", "leasehold-aws"],
        &[
            secret("reports-user", "aws-iam", &user),
            secret("reports-role", "aws-iam", &role),
            secret("reports-fed", "aws-iam", &federation),
            secret("reports-session", "aws-iam", session),
        ],
    );
}

#[test]
fn an_undocumented_key_is_refused_for_every_type() {
    for (kind, keys) in [
        ("redis", "urls = [\"redis://10.0.0.5:6379\"]\n"),
        (
            "aws-elasticache",
            "replication_group_id = \"a\"\nuser_group_id = \"b\"\nregion = \"eu-west-1\"\n",
        ),
        (
            "aws-memorydb",
            "cluster_name = \"a\"\nregion = \"eu-west-1\"\n",
        ),
        (
            "aws-iam",
            "credential_type = \"session_token\"\nregion = \"eu-west-1\"\n",
        ),
    ] {
        let toml = format!(
            "[store]\nurl = \"memory\"\n{}",
            secret("s", kind, &format!("{keys}revoke_timout = \"5s\"\n"))
        );
        let out = Cli::new(&toml).run(&["secrets"]);
        assert_eq!(out.code, 2, "{kind}: {out:?}");
        assert!(
            out.stderr.contains("unknown field `revoke_timout`"),
            "{kind}: {}",
            out.stderr
        );
    }
}
