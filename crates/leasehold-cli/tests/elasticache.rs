//! The CLI against the AWS emulator's ElastiCache: a serverless cache whose user group has a
//! locked `default` user; leased users AUTH on the cache's Redis mirror until revoked.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_elasticache::Client;
use leasehold_testkit::servers::{
    skip_or_panic, unique_name, AwsEmulator, MirrorKind, TransitionKind,
};
use support::{suffix, Cli};

/// `AUTH` then `PING` on one connection; true when both succeed.
fn authenticates(port: u16, user: &str, password: &str) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = Vec::new();
    for args in [vec!["AUTH", user, password], vec!["PING"]] {
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    s.write_all(&cmd).unwrap();
    let mut r = BufReader::new(s);
    let (mut a, mut p) = (String::new(), String::new());
    r.read_line(&mut a).unwrap();
    r.read_line(&mut p).unwrap();
    a.trim_end() == "+OK" && p.trim_end() == "+PONG"
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn user_status(ec: &Client, id: &str) -> Option<String> {
    match ec.describe_users().user_id(id).send().await {
        Ok(out) => out
            .users()
            .first()
            .and_then(|u| u.status())
            .map(str::to_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_user_not_found_fault()) =>
        {
            None
        }
        Err(e) => panic!("DescribeUsers: {e:?}"),
    }
}

async fn group_status(ec: &Client, id: &str) -> String {
    let out = ec
        .describe_user_groups()
        .user_group_id(id)
        .send()
        .await
        .unwrap();
    out.user_groups()[0]
        .status()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_and_revoke_against_elasticache() {
    let test = "cli_issue_and_revoke_against_elasticache";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    if !aws.has_mirror().await {
        skip_or_panic(test, "the emulator found no redis-server for cache mirrors");
        return;
    }
    let ec = Client::new(&aws.sdk_config().await);
    let group = unique_name("cli-g");
    let cache = unique_name("cli-c");
    aws.set_modifying(
        TransitionKind::UserGroup,
        Some(&group),
        Duration::from_millis(300),
    )
    .await;
    // A `default` member that is switched off: only leased users get in.
    let default_user = unique_name("cli-def");
    ec.create_user()
        .user_id(&default_user)
        .user_name("default")
        .engine("redis")
        .passwords(format!("Dflt-{}{}", suffix(), suffix()))
        .access_string("off -@all")
        .send()
        .await
        .expect("CreateUser default");
    wait_for("default user active", || async {
        user_status(&ec, &default_user).await.as_deref() == Some("active")
    })
    .await;
    ec.create_user_group()
        .user_group_id(&group)
        .engine("redis")
        .user_ids(&default_user)
        .send()
        .await
        .expect("CreateUserGroup");
    wait_for("group active", || async {
        group_status(&ec, &group).await == "active"
    })
    .await;
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
        .expect("the serverless cache has a mirror");

    let cli = Cli::new(&format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[[secrets]]
name = "sessions"
type = "aws-elasticache"
default_ttl = "30m"
max_ttl = "2h"
region = "us-east-1"
endpoint_url = "{endpoint}"
access_key_id = "testing"
secret_access_key = "testing"
serverless_cache_name = "{cache}"
user_group_id = "{group}"
readiness_endpoint = "redis://127.0.0.1:{port}"
ready_timeout = "30s"
"#,
        endpoint = aws.endpoint_url(),
        port = mirror.port,
    ));
    assert_eq!(cli.ok(&["validate"])[0]["ok"], true);

    let issued = cli.ok(&["issue", "sessions", "--identity", "web"]);
    assert_eq!(issued["live"], true, "{issued}");
    let lease_id = issued["lease_id"].as_str().unwrap().to_string();
    let user = issued["credentials"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let password = issued["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(authenticates(mirror.port, &user, &password));
    let listed = cli.ok(&["list", "--secret", "sessions"]);
    assert_eq!(listed[0]["type"], "aws-elasticache");
    assert_eq!(listed[0]["principal"], user.as_str());

    cli.ok(&["renew", &lease_id, "--increment", "1h"]);
    assert_eq!(cli.ok(&["revoke", &lease_id])["revoked"], 1);
    assert!(
        !authenticates(mirror.port, &user, &password),
        "AUTH after revoke"
    );
    assert_eq!(user_status(&ec, &user).await, None, "the user is deleted");
    cli.assert_secret_absent(&password);

    let _ = ec
        .delete_serverless_cache()
        .serverless_cache_name(&cache)
        .send()
        .await;
}
