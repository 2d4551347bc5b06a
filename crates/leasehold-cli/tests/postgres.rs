//! The CLI with a PostgreSQL store shared by two `run` workers: every expired lease is revoked
//! by exactly one of them.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use leasehold_testkit::servers::{PostgresDb, RedisServer};
use serde_json::Value;
use support::{signal, wait_exit, wait_until, Cli};

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_postgres_store() {
    let test = "cli_two_workers_share_a_postgres_store";
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let Some(db) = PostgresDb::create(test).await else {
        return;
    };
    let toml = |instance: &str| {
        format!(
            r#"
[store]
url = "{}"

[manager]
instance_id = "{instance}"
max_idle = "1s"

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["{}"]
"#,
            db.url(),
            redis.url()
        )
    };
    let a = Cli::new(&toml("worker-a"));
    let b = Cli::new(&toml("worker-b"));

    // issue / list / revoke through the shared store, from either side.
    let v = a.ok(&["issue", "orders-cache", "--ttl", "10m"]);
    let id = v["lease_id"].as_str().unwrap().to_string();
    assert_eq!(b.ok(&["lookup", &id])["state"], "active");
    assert_eq!(b.ok(&["list"]).as_array().unwrap().len(), 1);
    b.ok(&["renew", &id, "--increment", "20m"]);
    b.ok(&["revoke", &id]);
    assert_eq!(a.run(&["lookup", &id]).code, 1);

    let mut ids = HashSet::new();
    for _ in 0..6 {
        let v = a.ok(&["issue", "orders-cache", "--ttl", "2s", "--no-wait"]);
        ids.insert(v["lease_id"].as_str().unwrap().to_string());
    }
    let mut wa = a.spawn(&["run"]);
    let mut wb = b.spawn(&["run"]);
    wait_until(
        "both workers to revoke every lease",
        Duration::from_secs(60),
        || a.ok(&["list"]).as_array().unwrap().is_empty(),
    );
    for w in [&mut wa, &mut wb] {
        signal(&w.child, "TERM");
        assert_eq!(wait_exit(&mut w.child, Duration::from_secs(30)), 0);
        wait_until("the worker's last output", Duration::from_secs(5), || {
            w.stderr().contains("stopped")
        });
    }
    let mut expired = Vec::new();
    for w in [&wa, &wb] {
        for line in w.stdout().lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            if e["action"] == "expire" {
                assert!(e["error"].is_null(), "{e}");
                expired.push(e["lease_id"].as_str().unwrap().to_string());
            }
        }
    }
    expired.sort();
    let mut want: Vec<String> = ids.into_iter().collect();
    want.sort();
    assert_eq!(expired, want, "each lease expired exactly once");
}
