//! Static roles through the CLI against a private redis-server with a SQLite store: `rotate`
//! then `read` gives a password that AUTHs, two `run` processes rotate a role once per period,
//! and bad `[[static_roles]]` entries exit 2 with one line naming the key.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use leasehold_testkit::servers::{unique_name, RedisServer};
use support::{auth, signal, wait_exit, Cli};

/// One command on a fresh connection as `default`; the first line of the reply (bulk replies:
/// the whole payload).
fn command(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    s.write_all(&cmd).unwrap();
    let mut r = BufReader::new(s);
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    if let Some(n) = first.strip_prefix('$') {
        let n: usize = n.trim().parse().unwrap();
        let mut body = vec![0u8; n + 2];
        r.read_exact(&mut body).unwrap();
        return String::from_utf8_lossy(&body[..n]).into_owned();
    }
    first.trim_end().to_string()
}

/// How many `ACL SETUSER` calls the server has run.
fn setuser_calls(port: u16) -> u64 {
    let info = command(port, &["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_acl|setuser:calls="))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

/// `AUTH user password` and a `GET` on one connection: both replies must be what a working
/// credential gets.
fn auth_works(port: u16, user: &str, password: &str) -> bool {
    let (a, get) = auth(port, user, password);
    if a == "+OK" {
        assert_eq!(get, "$-1", "the GET after AUTH runs as the user");
        true
    } else {
        false
    }
}

fn config(url: &str, user: &str, period: &str, grace: &str) -> String {
    format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[manager]
max_idle = "1s"
claim_hold = "2s"

[[static_roles]]
name = "orders-admin"
type = "redis"
username = "{user}"
urls = ["{url}"]
publisher = "file"
path = "{{dir}}/orders-admin.json"
period = "{period}"
grace = "{grace}"
"#
    )
}

fn existing_user(redis: &RedisServer, initial: &str) -> String {
    let user = unique_name("sr-cli");
    let reply = command(
        redis.port(),
        &[
            "ACL",
            "SETUSER",
            &user,
            "on",
            &format!(">{initial}"),
            "~orders:*",
            "+@read",
        ],
    );
    assert_eq!(reply, "+OK");
    user
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_then_read_gives_a_password_that_auths() {
    let Some(redis) = RedisServer::start("cli_rotate_then_read_gives_a_password_that_auths").await
    else {
        return;
    };
    let initial = "Initial-static-password-0123";
    let user = existing_user(&redis, initial);
    let cli = Cli::new(&config(&redis.url(), &user, "1h", "1m"));
    let v = cli.ok(&["validate", "orders-admin"]);
    assert_eq!(v[0]["static_role"], "orders-admin", "{v}");
    assert_eq!(v[0]["ok"], true, "{v}");

    // Nothing published yet: read says so, exit 1, one line.
    let none = cli.run(&["read", "orders-admin"]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(
        none.stderr.contains("leasehold rotate orders-admin"),
        "{none:?}"
    );

    let rotated = cli.ok(&["rotate", "orders-admin"]);
    assert_eq!(rotated["rotated"], true, "{rotated}");
    let first = cli.ok(&["read", "orders-admin"]);
    assert_eq!(first["username"], user.as_str());
    assert_eq!(first["version_id"], rotated["version_id"]);
    let first_pw = first["password"].as_str().unwrap().to_string();
    assert!(first_pw.len() >= 16);
    assert!(auth_works(redis.port(), &user, &first_pw));

    // A second rotation keeps the previous password for the grace.
    let again = cli.ok(&["rotate", "orders-admin"]);
    assert_ne!(again["version_id"], rotated["version_id"]);
    let second = cli.ok(&["read", "orders-admin"]);
    let second_pw = second["password"].as_str().unwrap().to_string();
    assert_ne!(second_pw, first_pw);
    assert!(auth_works(redis.port(), &user, &second_pw));
    assert!(
        auth_works(redis.port(), &user, &first_pw),
        "the previous password works during the grace"
    );

    // Only `read` prints a password: not `rotate`, not `validate`, not the logs.
    for pw in [&first_pw, &second_pw] {
        assert!(!cli.seen_stderr.lock().unwrap().contains(pw.as_str()));
        assert!(!rotated.to_string().contains(pw.as_str()));
        assert!(!again.to_string().contains(pw.as_str()));
    }
    let unknown = cli.run(&["read", "no-such-role"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("orders-admin"), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_run_processes_rotate_once_per_period() {
    let Some(redis) = RedisServer::start("cli_two_run_processes_rotate_once_per_period").await
    else {
        return;
    };
    let user = existing_user(&redis, "Initial-static-password-0123");
    let cli = Cli::new(&config(&redis.url(), &user, "2s", "1s"));
    let calls_before = setuser_calls(redis.port());
    let mut runs = vec![cli.spawn(&["run"]), cli.spawn(&["run"])];

    // The first password is published by whichever process takes the claim first.
    let started = Instant::now();
    let mut versions = BTreeSet::new();
    let mut failures = Vec::new();
    let mut first_at = None;
    while first_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(10)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was published: {}",
            runs[0].stderr()
        );
        let out = cli.run(&["read", "orders-admin"]);
        if out.code == 0 {
            first_at.get_or_insert_with(Instant::now);
            let v = out.json();
            versions.insert(v["version_id"].as_str().unwrap().to_string());
            if !auth_works(redis.port(), &user, v["password"].as_str().unwrap()) {
                failures.push(v["version_id"].to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = setuser_calls(redis.port()) - calls_before;
    for r in &mut runs {
        signal(&r.child, "TERM");
        assert_eq!(wait_exit(&mut r.child, Duration::from_secs(20)), 0);
    }
    assert!(
        failures.is_empty(),
        "published passwords refused: {failures:?}"
    );
    // 10 s with a 2 s period: the first version and about five more.
    let n = versions.len() as u64;
    assert!((5..=8).contains(&n), "{n} versions in 10 s");
    // One ACL SETUSER adds each new password and one drops the previous after the grace: two
    // rotators each rotating on their own would double it.
    assert!(
        calls <= 2 * (n + 1),
        "{calls} ACL SETUSER calls for {n} versions"
    );
    assert!(
        calls >= 2 * (n - 1) - 1,
        "{calls} ACL SETUSER calls for {n} versions"
    );
}

const BAD_BASE: &str = r#"
[store]
url = "sqlite://{dir}/leasehold.db"

[[static_roles]]
name = "orders-admin"
type = "aws-elasticache"
user_id = "app-writer"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
secret_id = "prod/orders-admin"
period = "30d"
grace = "10m"
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
fn bad_static_roles_exit_2_naming_the_key() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            BAD_BASE.replace("type = \"aws-elasticache\"", "type = \"aws-dynamo\""),
            vec!["static_roles[0]", "type", "aws-dynamo", "aws-memorydb"],
        ),
        (
            BAD_BASE.replace("secret_id = \"prod/orders-admin\"\n", ""),
            vec!["static_roles[0]", "secret_id", "required"],
        ),
        (
            BAD_BASE.replace("user_id", "user_di"),
            vec!["unknown field `user_di`"],
        ),
        // The user's keys are checked offline too: its name, the other service's key, the
        // readiness endpoint and its CA (endpoint_url points nowhere; nothing is called).
        (
            BAD_BASE.replace("\"app-writer\"", "\"app--writer\""),
            vec!["static_roles[0]", "user_id", "app--writer"],
        ),
        (
            BAD_BASE.replace("user_id", "user_name"),
            vec!["static_roles[0]", "user_name: not a key", "user_id"],
        ),
        (
            BAD_BASE.replace(
                "period",
                "readiness_endpoint = \"https://cache:6379\"\nperiod",
            ),
            vec!["static_roles[0]", "readiness_endpoint", "rediss://"],
        ),
        (
            BAD_BASE.replace("period", "readiness_ca_pem = \"/etc/ssl/ca.pem\"\nperiod"),
            vec!["static_roles[0]", "readiness_ca_pem", "readiness_endpoint"],
        ),
        (
            BAD_BASE.replace("period = \"30d\"", "period = \"monthly\""),
            vec!["period", "monthly"],
        ),
        (
            BAD_BASE.replace("grace = \"10m\"", "grace = \"31d\""),
            vec!["grace", "shorter"],
        ),
        (
            BAD_BASE.replace(
                "period = \"30d\"",
                "schedule = \"cron(0 3 * * ? *)\"\nperiod = \"1d\"",
            ),
            vec!["schedule", "not both"],
        ),
        (
            BAD_BASE.replace("period = \"30d\"", "schedule = \"every night\""),
            vec!["schedule", "cron"],
        ),
        (
            BAD_BASE.replace("period = \"30d\"", "period = \"30d\"\nwindow = \"1h\""),
            vec!["window"],
        ),
        (
            BAD_BASE.replace("secret_id = \"prod/orders-admin\"", "publisher = \"vault\""),
            vec!["publisher", "vault"],
        ),
        (
            BAD_BASE.replace(
                "secret_id = \"prod/orders-admin\"",
                "publisher = \"file\"\nsecret_id = \"x\"",
            ),
            vec!["secret_id", "file"],
        ),
        (
            format!(
                "{BAD_BASE}{}",
                &BAD_BASE[BAD_BASE.find("[[static_roles]]").unwrap()..]
            ),
            vec!["static_roles[1]", "earlier static role"],
        ),
    ];
    for (toml, needles) in cases {
        expect_usage_error(&toml, &["validate"], &needles);
    }
    // A cron schedule with a window is accepted, and a Redis role needs its urls.
    let cron = BAD_BASE.replace(
        "period = \"30d\"",
        "schedule = \"cron(0 3 * * ? *)\"\nwindow = \"1h\"",
    );
    let out = Cli::new(&cron).run(&["rotate", "no-such-role"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no static role named"), "{out:?}");
    let redis = r#"
[store]
url = "sqlite://{dir}/leasehold.db"

[[static_roles]]
name = "cache"
type = "redis"
username = "app"
urls = []
publisher = "file"
path = "{dir}/cache.json"
period = "1d"
"#;
    expect_usage_error(redis, &["read", "cache"], &["urls"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_then_read_against_elasticache_and_secrets_manager() {
    use leasehold_testkit::servers::{skip_or_panic, AwsEmulator, MirrorKind, TransitionKind};
    let test = "cli_rotate_then_read_against_elasticache_and_secrets_manager";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    if !aws.has_mirror().await {
        skip_or_panic(test, "the emulator has no Redis mirror");
        return;
    }
    let ec = aws_sdk_elasticache::Client::new(&aws.sdk_config().await);
    let user = unique_name("sr-cli-ec");
    let default = unique_name("sr-cli-def");
    let group = unique_name("sr-cli-g");
    let cache = unique_name("sr-cli-c");
    aws.set_modifying(
        TransitionKind::User,
        Some(&user),
        Duration::from_millis(300),
    )
    .await;
    for (id, name, access) in [
        (&default, "default", "off -@all"),
        (&user, user.as_str(), "on ~orders:* +@read"),
    ] {
        ec.create_user()
            .user_id(id)
            .user_name(name)
            .engine("redis")
            .passwords("Initial-password-0123456789")
            .access_string(access)
            .send()
            .await
            .expect("CreateUser");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    ec.create_user_group()
        .user_group_id(&group)
        .engine("redis")
        .user_ids(&default)
        .user_ids(&user)
        .send()
        .await
        .expect("CreateUserGroup");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ec.create_serverless_cache()
        .serverless_cache_name(&cache)
        .engine("redis")
        .user_group_id(&group)
        .send()
        .await
        .expect("CreateServerlessCache");
    let mirror = aws
        .mirror(MirrorKind::ServerlessCache, &cache)
        .await
        .expect("mirror");
    let secret = unique_name("sr-cli-secret");
    let cli = Cli::new(&format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[[static_roles]]
name = "orders-admin"
type = "aws-elasticache"
user_id = "{user}"
readiness_endpoint = "{url}"
ready_timeout = "30s"
region = "us-east-1"
endpoint_url = "{endpoint}"
access_key_id = "testing"
secret_access_key = "testing"
secret_id = "{secret}"
period = "1h"
grace = "1m"
"#,
        url = mirror.url(),
        endpoint = aws.endpoint_url(),
    ));
    let v = cli.ok(&["validate"]);
    assert_eq!(v[0]["ok"], true, "{v}");
    let rotated = cli.ok(&["rotate", "orders-admin"]);
    assert_eq!(rotated["rotated"], true, "{rotated}");
    let current = cli.ok(&["read", "orders-admin"]);
    assert_eq!(current["username"], user.as_str());
    assert!(current["user_arn"].as_str().is_some(), "{current}");
    let pw = current["password"].as_str().unwrap();
    assert!(auth_works(mirror.port, &user, pw));
    assert!(!auth_works(
        mirror.port,
        &user,
        "Initial-password-0123456789"
    ));
    assert!(!cli.seen_stderr.lock().unwrap().contains(pw));
    // A user that does not exist fails validate (exit 1), naming it.
    let missing = Cli::new(
        &std::fs::read_to_string(&cli.config)
            .unwrap()
            .replace(&user, "sr-nobody"),
    );
    let out = missing.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("sr-nobody"), "{out:?}");
    let _ = ec
        .delete_serverless_cache()
        .serverless_cache_name(&cache)
        .send()
        .await;
}
