//! A worker with a stable `instance_id` is killed with SIGKILL while it holds claims on expired
//! leases (its revocations hang: the Redis server is stopped with SIGSTOP). The restarted
//! worker, with the same id, takes its claims back at start and revokes them at once, instead
//! of waiting for the claims (held for an hour here) to run out.
//!
//! The worker is this test binary itself, running the ignored test `restart_child`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leasehold::redis::{RedisAclProvider, RedisConfig};
use leasehold::{
    DynamicSecret, IssueRequest, LeaseFilter, LeaseManager, LeaseStore, ManagerConfig, SqliteStore,
};
use leasehold_testkit::servers::RedisServer;

const CHILD_ENV: &str = "LEASEHOLD_RESTART_CHILD";
const INSTANCE: &str = "host-a";
const LEASES: usize = 5;

fn config() -> ManagerConfig {
    ManagerConfig::default()
        .claim_hold(Duration::from_secs(3600))
        .revoke_timeout(Duration::from_secs(600))
        .max_idle(Duration::from_millis(100))
}

async fn manager(db: &str, redis: &str) -> LeaseManager {
    let provider = RedisAclProvider::new(
        RedisConfig::new(redis)
            .discover(false)
            .command_timeout(Duration::from_secs(600)),
    )
    .unwrap();
    let secret = DynamicSecret::builder("restart", provider)
        .default_ttl(Duration::from_secs(1))
        .max_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    LeaseManager::builder(SqliteStore::open(db).await.unwrap())
        .config(config())
        .instance_id(INSTANCE)
        .secret(secret)
        .skip_validation()
        .build()
        .await
        .unwrap()
}

/// The worker: `issue` mode issues the leases, then runs the worker until killed; `resume`
/// mode just runs the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_restarted_worker_takes_back_its_claims_at_once"]
async fn restart_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = std::env::var("LH_RESTART_DB").unwrap();
    let redis = std::env::var("LH_RESTART_REDIS").unwrap();
    let m = manager(&db, &redis).await;
    if mode == "issue" {
        for _ in 0..LEASES {
            m.issue("restart", IssueRequest::new()).await.unwrap();
        }
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

fn spawn(mode: &str, db: &str, redis: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "restart_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env("LH_RESTART_DB", db)
        .env("LH_RESTART_REDIS", redis)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the worker")
}

/// The pid of the redis-server listening on `port`.
fn redis_pid(port: u16) -> String {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let is_redis = args.first().is_some_and(|a| a.contains("redis-server"));
        let on_port = args
            .windows(2)
            .any(|w| w[0] == "--port" && w[1] == port.to_string())
            || args.iter().any(|a| a.ends_with(&format!(":{port}")));
        if is_redis && on_port {
            return name;
        }
    }
    panic!("no redis-server on port {port}");
}

fn signal(pid: &str, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn leased_users(url: &str) -> Vec<String> {
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
async fn a_restarted_worker_takes_back_its_claims_at_once() {
    let Some(server) = RedisServer::start("restart_claims").await else {
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/leases.db", dir.path().display());
    let store = SqliteStore::open(&db).await.unwrap();

    // 1. A worker issues five one-second leases; Redis is then frozen so the worker's
    //    revocations of them hang with the claims held.
    let mut first = spawn("issue", &db, &url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.count(&LeaseFilter::all()).await.unwrap() < LEASES as u64
        || leased_users(&url).await.len() < LEASES
    {
        assert!(
            Instant::now() < deadline,
            "the worker did not issue its leases"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = redis_pid(server.port());
    signal(&pid, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = store.list(&LeaseFilter::all()).await.unwrap();
        let claimed = leases
            .iter()
            .filter(|l| {
                l.claimed_by.as_deref() == Some(INSTANCE) && l.expires_at < chrono::Utc::now()
            })
            .count();
        if claimed == LEASES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not claim its expired leases: {:?}",
            leases
                .iter()
                .map(|l| (l.state, l.claimed_by.clone(), l.expires_at, l.claim_until))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2. SIGKILL it mid-revocation; Redis comes back.
    first.kill().unwrap();
    first.wait().unwrap();
    signal(&pid, "-CONT");
    // The dead worker's ACL DELUSER commands may still be in Redis's input buffers and run now;
    // its lease records, claimed for an hour, are what only a take-back clears in time.
    assert_eq!(
        store.count(&LeaseFilter::all()).await.unwrap(),
        LEASES as u64
    );

    // 3. The restarted worker (same instance id) revokes them within a second of starting,
    //    although the claims it left hold for an hour.
    let mut second = spawn("resume", &db, &url);
    let started = Instant::now();
    while !leased_users(&url).await.is_empty()
        || store.count(&LeaseFilter::all()).await.unwrap() > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the restarted worker did not revoke its claimed leases"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    second.kill().unwrap();
    second.wait().unwrap();
    println!("revoked {LEASES} claimed leases {took:?} after the restart (process start included)");
    // Process start, SQLite open and the worker's first pass: about a second on a loaded
    // machine; a claim that had to run out would take an hour.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
