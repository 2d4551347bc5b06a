//! The CLI against a private redis-server with a SQLite store: issued credentials AUTH, and
//! stop working after revoke or expiry.

mod support;

use std::time::Duration;

use leasehold_testkit::servers::RedisServer;
use support::{auth_ok, signal, ts, wait_exit, wait_until, Cli};

fn config(url: &str) -> String {
    format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[manager]
max_idle = "1s"

[[secrets]]
name = "orders-cache"
type = "redis"
default_ttl = "1h"
max_ttl = "24h"
username_template = "{{{{randomUsername}}}}"
urls = ["{url}"]
acl_rules = "~orders:* +@read +@write"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_list_renew_revoke_against_redis() {
    let Some(redis) = RedisServer::start("cli_issue_list_renew_revoke_against_redis").await else {
        return;
    };
    let cli = Cli::new(&config(&redis.url()));
    assert_eq!(cli.ok(&["validate", "orders-cache"])[0]["ok"], true);

    let issued = cli.ok(&[
        "issue",
        "orders-cache",
        "--ttl",
        "30m",
        "--identity",
        "orders-api",
    ]);
    let lease_id = issued["lease_id"].as_str().unwrap().to_string();
    let user = issued["credentials"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let password = issued["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user.starts_with("lh-"), "{issued}");
    assert!(password.len() >= 16);
    assert_eq!(issued["live"], true, "{issued}");
    assert_eq!(issued["renewable"], true);
    assert!(ts(&issued["expires_at"]) < ts(&issued["max_expires_at"]));
    assert!(auth_ok(redis.port(), &user, &password));

    let list = cli.ok(&["list", "--secret", "orders-cache"]);
    assert_eq!(list[0]["lease_id"], lease_id.as_str());
    assert_eq!(list[0]["principal"], user.as_str());
    assert_eq!(list[0]["identity"], "orders-api");
    let looked = cli.ok(&["lookup", &lease_id]);
    assert_eq!(looked["state"], "active");
    assert_eq!(looked["type"], "redis");

    let renewed = cli.ok(&["renew", &lease_id, "--increment", "2h"]);
    assert!(ts(&renewed["expires_at"]) > ts(&issued["expires_at"]));
    assert!(
        auth_ok(redis.port(), &user, &password),
        "renew keeps the credential"
    );

    assert_eq!(cli.ok(&["revoke", &lease_id])["revoked"], 1);
    assert!(
        !auth_ok(redis.port(), &user, &password),
        "AUTH must fail after revoke"
    );
    assert_eq!(cli.run(&["lookup", &lease_id]).code, 1);
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 0);

    // The expiry worker revokes a lease whose TTL ran out.
    let short = cli.ok(&["issue", "orders-cache", "--ttl", "1s"]);
    let short_id = short["lease_id"].as_str().unwrap().to_string();
    let (su, sp) = (
        short["credentials"]["username"]
            .as_str()
            .unwrap()
            .to_string(),
        short["credentials"]["password"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let mut worker = cli.spawn(&["run"]);
    wait_until(
        "the worker to revoke the expired lease",
        Duration::from_secs(30),
        || cli.run(&["lookup", &short_id]).code == 1,
    );
    assert!(
        !auth_ok(redis.port(), &su, &sp),
        "AUTH must fail after expiry"
    );
    signal(&worker.child, "TERM");
    assert_eq!(wait_exit(&mut worker.child, Duration::from_secs(30)), 0);
    wait_until("the worker's last output", Duration::from_secs(5), || {
        worker.stderr().contains("stopped")
    });
    cli.seen_stderr.lock().unwrap().push_str(&worker.stderr());
    cli.seen_stdout_without_issue
        .lock()
        .unwrap()
        .push_str(&worker.stdout());
    assert!(
        worker.stdout().contains("\"expire\""),
        "{}",
        worker.stdout()
    );

    cli.assert_secret_absent(&password);
    cli.assert_secret_absent(&sp);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_secret_revokes_every_lease() {
    let Some(redis) = RedisServer::start("cli_revoke_secret_revokes_every_lease").await else {
        return;
    };
    let cli = Cli::new(&config(&redis.url()));
    let mut creds = Vec::new();
    for _ in 0..5 {
        let v = cli.ok(&["issue", "orders-cache"]);
        creds.push((
            v["credentials"]["username"].as_str().unwrap().to_string(),
            v["credentials"]["password"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        cli.ok(&["list", "--state", "active"])
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let v = cli.ok(&["revoke", "--secret", "orders-cache"]);
    assert_eq!(v["revoked"], 5, "{v}");
    for (u, p) in &creds {
        assert!(!auth_ok(redis.port(), u, p));
    }
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 0);
    // Nothing left for reconcile either.
    let r = cli.ok(&["reconcile"]);
    assert_eq!(r[0]["orphans"].as_array().unwrap().len(), 0, "{r}");
    for (_, p) in &creds {
        cli.assert_secret_absent(p);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_for_people() {
    let Some(redis) = RedisServer::start("cli_tables_for_people").await else {
        return;
    };
    let cli = Cli::new(&config(&redis.url()));
    let out = cli.run(&["--table", "secrets"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DEFAULT TTL"),
        "{out:?}"
    );
    assert!(
        lines[1].starts_with("orders-cache") && lines[1].contains("redis"),
        "{out:?}"
    );

    let out = cli.run(&["--table", "issue", "orders-cache"]);
    assert_eq!(out.code, 0, "{out:?}");
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {:?}", out.stdout))
    };
    let lease_id = field("lease_id");
    let (user, password) = (field("username"), field("password"));
    assert!(auth_ok(redis.port(), &user, &password));

    let out = cli.run(&["--table", "list"]);
    assert!(out.stdout.starts_with("LEASE ID"), "{out:?}");
    assert!(
        out.stdout.contains(&lease_id) && out.stdout.contains(&user),
        "{out:?}"
    );
    let out = cli.run(&["--table", "revoke", &lease_id]);
    assert_eq!(out.stdout.trim(), "revoked 1 lease(s)", "{out:?}");
    let out = cli.run(&["--table", "list"]);
    assert!(out.stdout.contains("(no leases)"), "{out:?}");
    assert!(!auth_ok(redis.port(), &user, &password));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_secret_shows_progress_on_a_terminal() {
    let test = "cli_revoke_secret_shows_progress_on_a_terminal";
    // `script` (util-linux) runs the CLI on a pseudo-terminal.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        leasehold_testkit::servers::skip_or_panic(test, "no `script` command for a pty");
        return;
    }
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let cli = Cli::new(&config(&redis.url()));
    for _ in 0..4 {
        cli.ok(&["issue", "orders-cache", "--no-wait"]);
    }
    let cmd = format!(
        "{} --config {} revoke --secret orders-cache",
        support::BIN,
        cli.config.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\rrevoking leases of orders-cache: 4/4"),
        "{text:?}"
    );
    // On a terminal the result is prose, not JSON.
    assert!(text.contains("revoked 4 lease(s)"), "{text:?}");
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 0);
}
