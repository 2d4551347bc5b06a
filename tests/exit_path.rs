//! The exit path of a service: a process that holds watched credentials and returns from
//! `main` after `manager.shutdown().await` leaves no user behind, run after run.
//!
//! Each child is this test binary itself, running the ignored test `exit_child` in its own
//! process and runtime against a private Redis: it opens a watch the usual way, one kept only
//! through `subscribe()`, and one dropped without `close()`, then returns after shutdown.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use leasehold::redis::{RedisAclProvider, RedisConfig};
use leasehold::{DynamicSecret, IssueRequest, LeaseManager, MemoryStore, WatchOptions};
use leasehold_testkit::servers::RedisServer;

const CHILD_ENV: &str = "LEASEHOLD_EXIT_CHILD";
const RUNS: usize = 20;

#[tokio::test]
#[ignore = "the child process of a_service_that_shuts_down_leaves_no_user_behind"]
async fn exit_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let provider = RedisAclProvider::new(RedisConfig::new(&url)).unwrap();
    let secret = DynamicSecret::builder("exit", Arc::new(provider))
        .default_ttl(Duration::from_secs(600))
        .max_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .unwrap();
    let watch = manager
        .watch("exit", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap();
    let rx = manager
        .watch("exit", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap()
        .subscribe();
    let dropped = manager
        .watch("exit", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap();
    drop(dropped);
    println!(
        "users {} {}",
        watch.current().credentials.principal(),
        rx.borrow().credentials.principal()
    );
    // The end of a service's main: shutdown, then return (the runtime ends with the test).
    manager.shutdown().await;
}

async fn leased_users(url: &str) -> HashSet<String> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut c)
        .await
        .unwrap();
    users.into_iter().filter(|u| u.starts_with("lh-")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_shuts_down_leaves_no_user_behind() {
    let Some(redis) = RedisServer::start("exit_path").await else {
        return;
    };
    let url = redis.url();
    for run in 0..RUNS {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "exit_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &url)
            .stdin(Stdio::null())
            .output()
            .expect("spawn the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("users lh-"),
            "run {run}: the child issued: {stdout}"
        );
        let left = leased_users(&url).await;
        assert!(
            left.is_empty(),
            "run {run}: users left after exit: {left:?}"
        );
    }
}
