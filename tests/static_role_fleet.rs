//! Static roles for a fleet, end to end: three rotator processes share one SQLite lease store
//! and rotate one Redis user on two real nodes; this process reads the published secret the
//! way every instance would and AUTHs with it, on both nodes, all the time. The holder is
//! killed (SIGKILL) twice along the way.
//!
//! Publisher: [`FilePublisher`] (a JSON file the processes share) — the Redis-only setup
//! needs no AWS. The child processes are this test binary, running the ignored test
//! `static_role_rotator_child`.
#![cfg(all(feature = "redis", feature = "sqlite"))]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::core::static_role::{
    FilePublisher, ReaderOptions, RotationSchedule, StaticRoleOptions, StaticRoleReader,
    StaticRoleRotator,
};
use leasehold::core::LeaseStore;
use leasehold::redis::RedisUserTarget;
use leasehold::SqliteStore;
use leasehold_testkit::servers::RedisServer;
use secrecy::{ExposeSecret, SecretString};

const CHILD_ENV: &str = "LEASEHOLD_STATIC_ROLE_CHILD";
const USER: &str = "app-static";
const PERIOD: Duration = Duration::from_secs(2);

fn options() -> StaticRoleOptions {
    StaticRoleOptions::new(RotationSchedule::every(PERIOD))
        .grace(Duration::from_secs(1))
        .claim_hold(Duration::from_millis(1500))
        .poll(Duration::from_millis(100))
        .test_timeout(Duration::from_secs(5))
}

#[tokio::test]
#[ignore = "child process of static_role_fleet_on_two_redis_nodes"]
async fn static_role_rotator_child() {
    let Ok(owner) = std::env::var(CHILD_ENV) else {
        return;
    };
    let nodes: Vec<String> = std::env::var("LEASEHOLD_SR_NODES")
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let store = SqliteStore::open(&std::env::var("LEASEHOLD_SR_DB").unwrap())
        .await
        .unwrap();
    let rotator = Arc::new(
        StaticRoleRotator::new(
            "orders-cache",
            Arc::new(RedisUserTarget::new(USER, nodes).expect("node URLs")),
            Arc::new(FilePublisher::new(
                std::env::var("LEASEHOLD_SR_PUBLISH").unwrap(),
            )),
            store.coordination().expect("sqlite coordinates"),
            owner,
            options(),
        )
        .unwrap(),
    );
    rotator.validate().await.unwrap();
    let _task = rotator.start();
    // Runs until killed.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

fn spawn(owner: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "static_role_rotator_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, owner)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// `AUTH` and `PING` on one connection; true only when both succeed.
async fn auth_works(url: &str, user: &str, password: &SecretString) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let mut pipe = redis::pipe();
    pipe.cmd("AUTH")
        .arg(user)
        .arg(password.expose_secret())
        .cmd("PING");
    let reply: redis::RedisResult<(String, String)> = pipe.query_async(&mut conn).await;
    matches!(reply, Ok((ok, pong)) if ok == "OK" && pong == "PONG")
}

#[tokio::test]
async fn static_role_fleet_on_two_redis_nodes() {
    let test = "static_role_fleet_on_two_redis_nodes";
    let (Some(a), Some(b)) = (
        RedisServer::start(test).await,
        RedisServer::start(test).await,
    ) else {
        return;
    };
    let nodes = [a.url(), b.url()];
    for url in &nodes {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER",
                    USER,
                    "on",
                    ">initial-password-0000",
                    "~*",
                    "+@all",
                ][..],
            )
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("leases.db").display()
    );
    let publish = dir.path().join("orders-cache.json");
    let store = SqliteStore::open(&db).await.unwrap();
    let coordination = store.coordination().unwrap();
    let env = [
        ("LEASEHOLD_SR_NODES", nodes.join(",")),
        ("LEASEHOLD_SR_DB", db.clone()),
        ("LEASEHOLD_SR_PUBLISH", publish.display().to_string()),
    ];
    let mut children: Vec<(String, Child)> = ["r1", "r2", "r3"]
        .iter()
        .map(|o| (o.to_string(), spawn(o, &env)))
        .collect();

    // The first rotation publishes the first version.
    let publisher = Arc::new(FilePublisher::new(&publish));
    let started = Instant::now();
    let reader = loop {
        match StaticRoleReader::start(
            publisher.clone(),
            ReaderOptions::default().refresh(Duration::from_millis(100)),
        )
        .await
        {
            Ok(r) => break r,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("nothing published: {e}"),
        }
    };
    let first_at = Instant::now();
    let mut versions = BTreeSet::new();
    let mut checks = 0u32;
    let mut failures = Vec::new();
    let mut kills = 0;
    let run_for = Duration::from_secs(13);
    while first_at.elapsed() < run_for {
        let v = reader.current();
        versions.insert(v.version_id.clone());
        for url in &nodes {
            checks += 1;
            if !auth_works(url, &v.credential.username, &v.credential.password).await {
                failures.push(format!(
                    "{:?}: version {} refused on {url}",
                    first_at.elapsed(),
                    v.version_id
                ));
            }
        }
        // Kill the holder, at whatever point of its work it is, twice.
        let due_kill = (kills == 0 && first_at.elapsed() > Duration::from_millis(4300))
            || (kills == 1 && first_at.elapsed() > Duration::from_millis(8900));
        if due_kill {
            let claim = coordination
                .group_claim("static-role/orders-cache")
                .await
                .unwrap();
            if let Some(pos) = claim.and_then(|c| children.iter().position(|(o, _)| *o == c.owner))
            {
                let (owner, mut child) = children.remove(pos);
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                let replacement = format!("{owner}-restarted");
                children.push((replacement.clone(), spawn(&replacement, &env)));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, mut c) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} AUTHs failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(kills, 2, "the holder was killed twice");
    // One rotation per period across three (then restarted) processes: 13 s / 2 s, plus the
    // first version, with one period of slack for the takeovers.
    let n = versions.len();
    assert!(
        (6..=8).contains(&n),
        "{n} versions in {run_for:?} with a {PERIOD:?} period"
    );
    // The grace ended for every old password: only the current one and at most one previous
    // work.
    let current = reader.current();
    assert!(auth_works(&nodes[0], USER, &current.credential.password).await);
}
