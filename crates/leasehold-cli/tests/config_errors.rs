//! Bad configurations exit 2 with one line on stderr that names the field, before any
//! network call.

mod support;

use support::Cli;

const BASE: &str = r#"
[store]
url = "sqlite://{dir}/leasehold.db"

[[secrets]]
name = "reports"
type = "aws-iam"
default_ttl = "1h"
max_ttl = "24h"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
credential_type = "iam_user"
"#;

fn expect_usage_error(toml: &str, command: &[&str], needles: &[&str]) {
    let cli = Cli::new(toml);
    let out = cli.run(command);
    assert_eq!(out.code, 2, "{command:?} should exit 2: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let line = out.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {line:?}");
    for n in needles {
        assert!(line.contains(n), "{line:?} should mention {n:?}");
    }
    assert!(
        !cli.path("leasehold.db").exists(),
        "a bad config must not touch the store"
    );
}

#[test]
fn a_good_config_lists_its_secrets() {
    let cli = Cli::new(BASE);
    let v = cli.ok(&["secrets"]);
    assert_eq!(v[0]["name"], "reports");
    assert_eq!(v[0]["type"], "aws-iam");
    assert_eq!(v[0]["default_ttl"], "1h");
    assert_eq!(v[0]["max_ttl"], "1day");
}

#[test]
fn unknown_type() {
    expect_usage_error(
        &BASE.replace("type = \"aws-iam\"", "type = \"aws-dynamo\""),
        &["list"],
        &[
            "config error",
            "secrets[0]",
            "type",
            "aws-dynamo",
            "aws-iam",
        ],
    );
}

#[test]
fn bad_duration() {
    expect_usage_error(
        &BASE.replace("\"1h\"", "\"an hour\""),
        &["list"],
        &["default_ttl", "an hour", "not a valid duration"],
    );
    expect_usage_error(
        &BASE.replace("max_ttl = \"24h\"", "max_ttl = \"0s\""),
        &["secrets"],
        &["max_ttl"],
    );
}

#[test]
fn default_above_max() {
    expect_usage_error(
        &BASE.replace("\"1h\"", "\"2d\""),
        &["issue", "reports"],
        &["default_ttl", "max_ttl", "exceeds"],
    );
}

#[test]
fn missing_field() {
    expect_usage_error(
        &BASE.replace("name = \"reports\"\n", ""),
        &["list"],
        &["missing field", "name"],
    );
    expect_usage_error(
        &BASE.replace("credential_type = \"iam_user\"\n", ""),
        &["list"],
        &["missing field", "credential_type"],
    );
    expect_usage_error(
        &BASE.replace("[store]\nurl = \"sqlite://{dir}/leasehold.db\"\n", ""),
        &["list"],
        &["missing field", "store"],
    );
}

#[test]
fn unknown_key() {
    expect_usage_error(
        &BASE.replace("region =", "regoin ="),
        &["list"],
        &["unknown field", "regoin"],
    );
    expect_usage_error(
        &BASE.replace("[store]\n", "[store]\npool_size = 4\n"),
        &["list"],
        &["unknown field", "pool_size"],
    );
    expect_usage_error(
        &format!("{BASE}\n[workers]\ncount = 2\n"),
        &["list"],
        &["unknown field", "workers"],
    );
}

#[test]
fn wrong_value_type_names_the_key() {
    expect_usage_error(
        &BASE.replace("max_ttl = \"24h\"", "max_ttl = true"),
        &["list"],
        &["max_ttl", "invalid type"],
    );
    expect_usage_error(
        &BASE.replace("url = \"sqlite://{dir}/leasehold.db\"", "url = 5"),
        &["list"],
        &["store.url", "invalid type"],
    );
}

#[test]
fn provider_settings_are_checked_offline() {
    expect_usage_error(
        &BASE.replace("us-east-1", "Mars 1"),
        &["list"],
        &["region", "reports"],
    );
    expect_usage_error(
        &BASE.replace(
            "credential_type = \"iam_user\"",
            "credential_type = \"root\"",
        ),
        &["list"],
        &["credential_type", "root"],
    );
    expect_usage_error(
        &BASE.replace(
            "credential_type = \"iam_user\"",
            "credential_type = \"iam_user\"\npolicy_document = \"{not json\"",
        ),
        &["list"],
        &["policy"],
    );
    expect_usage_error(
        &BASE.replace(
            "credential_type = \"iam_user\"",
            "credential_type = \"iam_user\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"",
        ),
        &["list"],
        &["role_arn", "iam_user"],
    );
    expect_usage_error(
        &BASE.replace(
            "region = \"us-east-1\"",
            "region = \"us-east-1\"\naccess_key_id = \"AKIAEXAMPLE\"",
        ),
        &["list"],
        &["secret_access_key"],
    );
    expect_usage_error(
        &BASE.replace("sqlite://{dir}/leasehold.db", "mysql://db/leases"),
        &["list"],
        &["store.url"],
    );
}

#[test]
fn bad_arguments_exit_2() {
    let cli = Cli::new(BASE);
    for (args, needle) in [
        (&["issue", "nope"][..], "no secret named \"nope\""),
        (&["issue", "reports", "--ttl", "soon"][..], "--ttl"),
        (&["lookup", "not-a-lease-id"][..], "lease id"),
        (&["list", "--state", "gone"][..], "unknown lease state"),
        (&["revoke"][..], "required"),
        (&["frobnicate"][..], "unrecognized subcommand"),
    ] {
        let out = cli.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {:?}", out.stderr);
    }
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let cli = Cli::new(BASE);
    std::fs::remove_file(&cli.config).unwrap();
    let out = cli.run(&["list"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot read the configuration file"));
}

#[test]
fn the_issues_example_config_is_accepted_verbatim() {
    let cli = Cli::new(
        r#"
[store]
url = "sqlite://leasehold.db"   # or "memory", or "postgres://..."
[[secrets]]
name = "orders-cache"
type = "redis"                  # "aws-elasticache" | "aws-memorydb" | "aws-iam" | "redis"
default_ttl = "1h"
max_ttl = "24h"
username_template = "{{randomUsername}}"   # optional
urls = ["redis://127.0.0.1:6379"]          # provider keys sit beside the common ones
acl_rules = "on ~* +@all"
"#,
    );
    let v = cli.ok(&["secrets"]);
    assert_eq!(v[0]["name"], "orders-cache");
    assert_eq!(v[0]["type"], "redis");
}

const EVERY_TYPE: &str = r#"
[store]
url = "memory"

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["redis://10.0.0.5:6379", "redis://10.0.0.6:6379"]
acl_rules = "~orders:* +@read +@write"
admin_username = "leasehold-admin"
admin_password = "admin-password-1"

[[secrets]]
name = "sessions"
type = "aws-elasticache"
region = "eu-west-1"
replication_group_id = "sessions"
user_group_id = "sessions-users"
engine = "valkey"
creation_statement = '{"UserId":"{{username}}","UserName":"{{username}}","Engine":"valkey","Passwords":["{{password}}"],"AccessString":"on ~sess:* +@read"}'
ready_timeout = "2m"

[[secrets]]
name = "ledger"
type = "aws-memorydb"
region = "eu-west-1"
cluster_name = "ledger"
acl_name = "ledger-acl"
default_ttl = "30m"
max_ttl = "8h"

[[secrets]]
name = "reports-role"
type = "aws-iam"
region = "eu-west-1"
credential_type = "assumed_role"
role_arn = "arn:aws:iam::123456789012:role/reports-reader"
default_ttl = "15m"
max_ttl = "1h"

[[secrets]]
name = "ci-token"
type = "aws-iam"
region = "eu-west-1"
credential_type = "federation_token"
policy_document = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'
default_ttl = "15m"
max_ttl = "1h"
"#;

#[test]
fn every_provider_type_is_wired() {
    let cli = Cli::new(EVERY_TYPE);
    let v = cli.ok(&["secrets"]);
    let types: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("orders-cache", "redis"),
            ("sessions", "aws-elasticache"),
            ("ledger", "aws-memorydb"),
            ("reports-role", "aws-sts"),
            ("ci-token", "aws-sts"),
        ]
    );
    // STS credentials end by themselves: not renewable, nothing to revoke.
    assert_eq!(v[3]["renewable"], false);
    // The admin password in the file never shows.
    let out = cli.run(&["-vv", "secrets"]);
    assert!(!out.stdout.contains("admin-password-1") && !out.stderr.contains("admin-password-1"));
}

#[test]
fn provider_specific_errors_name_the_key() {
    for (from, to, needles) in [
        (
            "acl_rules = \"~orders:* +@read +@write\"",
            "acl_rules = \"~* +@all nopass\"",
            &["acl_rules"][..],
        ),
        (
            "urls = [\"redis://10.0.0.5:6379\", \"redis://10.0.0.6:6379\"]",
            "urls = []",
            &["urls"][..],
        ),
        (
            "engine = \"valkey\"",
            "engine = \"memcached\"",
            &["engine", "memcached"][..],
        ),
        (
            "replication_group_id = \"sessions\"\n",
            "",
            &["replication_group_id"][..],
        ),
        (
            "cluster_name = \"ledger\"\n",
            "",
            &["missing field", "cluster_name"][..],
        ),
        (
            "acl_name = \"ledger-acl\"",
            "acl_name = \"open-access\"",
            &["acl_name", "open-access"][..],
        ),
        (
            "role_arn = \"arn:aws:iam::123456789012:role/reports-reader\"\n",
            "",
            &["role_arn"][..],
        ),
        (
            "ready_timeout = \"2m\"",
            "ready_timeout = \"soon\"",
            &["ready_timeout"][..],
        ),
    ] {
        assert!(EVERY_TYPE.contains(from), "{from}");
        let cli = Cli::new(&EVERY_TYPE.replacen(from, to, 1));
        let out = cli.run(&["secrets"]);
        assert_eq!(out.code, 2, "{to}: {out:?}");
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:?}");
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "{to}: {:?} should mention {n:?}",
                out.stderr
            );
        }
    }
}

#[test]
fn an_unreachable_backend_is_exit_1() {
    let cli = Cli::new(
        r#"
[store]
url = "sqlite://{dir}/leasehold.db"

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["redis://127.0.0.1:9"]
connect_timeout = "1s"
attempts = 1
"#,
    );
    let out = cli.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    let v = out.json();
    assert_eq!(v[0]["secret"], "orders-cache");
    assert_eq!(v[0]["ok"], false);
    assert!(v[0]["error"]["kind"].is_string(), "{v}");

    let out = cli.run(&["issue", "orders-cache", "--no-wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("leasehold: "))
        .collect();
    assert_eq!(errors.len(), 1, "{:?}", out.stderr);
}

#[test]
fn the_config_path_comes_from_the_flag_then_leasehold_config_then_the_default() {
    let cli = Cli::new(BASE);
    let secrets = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = std::process::Command::new(support::BIN);
        c.args(args)
            .arg("secrets")
            .current_dir(cli.dir.path())
            .env_remove("LEASEHOLD_CONFIG");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let config = cli.config.to_str().unwrap();
    // An empty variable counts as unset: the flag still works, and the default applies.
    let out = secrets(&[("LEASEHOLD_CONFIG", "")], &["--config", config]);
    assert!(out.status.success(), "{out:?}");
    let out = secrets(&[("LEASEHOLD_CONFIG", config)], &[]);
    assert!(out.status.success(), "{out:?}");
    let out = secrets(
        &[("LEASEHOLD_CONFIG", "/nonexistent.toml")],
        &["-c", config],
    );
    assert!(out.status.success(), "the flag wins: {out:?}");
    assert!(cli.config.ends_with("leasehold.toml"));
    let out = secrets(&[("LEASEHOLD_CONFIG", "")], &[]);
    assert!(out.status.success(), "./leasehold.toml by default: {out:?}");
    std::fs::remove_file(&cli.config).unwrap();
    let out = secrets(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("leasehold.toml"), "{stderr}");
}

#[test]
fn redis_discovery_keys_are_read_and_checked() {
    let redis = |extra: &str| {
        format!(
            r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[[secrets]]
name = "cache"
type = "redis"
default_ttl = "1h"
max_ttl = "24h"
urls = ["redis://127.0.0.1:9"]
{extra}
"#
        )
    };
    let cli = Cli::new(&redis("discover = false\nrefresh_interval = \"10s\""));
    let out = cli.run(&["secrets"]);
    assert_eq!(out.code, 0, "{out:?}");
    expect_usage_error(
        &redis("refresh_interval = \"soon\""),
        &["secrets"],
        &["refresh_interval"],
    );
    expect_usage_error(&redis("discover = \"yes\""), &["secrets"], &["discover"]);
}
