//! Crash consistency: a manager on SQLite, issuing and revoking real credentials on a private
//! Redis and on the AWS emulator's IAM, is killed with SIGKILL at random points, again and
//! again, and restarted. The servers' own listings are then compared with the lease store:
//!
//! - after every kill, every credential on a server has a lease record (none is orphaned, the
//!   write-ahead record comes first);
//! - at the end, a manager started on the same file revokes everything that expired or was
//!   abandoned mid-issue: no lease is left, no credential is left, every lease reported issued
//!   was revoked.
//!
//! The child process is this test binary itself, running the ignored test `crash_child`.
//! 100 kills per run; `LEASEHOLD_LONG=1` (scripts/test --long) makes it 500.
//! `LEASEHOLD_CRASH_SEED` replays a run (the seed is printed).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::iam::{IamUserConfig, IamUserProvider};
use leasehold::redis::{RedisAclProvider, RedisConfig};
use leasehold::store_sql::SqliteStore;
use leasehold::{
    DynamicSecret, IssueRequest, LeaseFilter, LeaseManager, LeaseStore, ManagerConfig, RetryPolicy,
};
use leasehold_testkit::servers::{AwsEmulator, RedisServer};

const CHILD_ENV: &str = "LEASEHOLD_CRASH_CHILD";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::crash/*"}]}"#;

/// A small, seedable generator: the run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("LEASEHOLD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn child_config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    // A killed instance's claims and abandoned issues come free quickly.
    c.claim_hold = Duration::from_secs(2);
    c.issue_timeout = Duration::from_secs(4);
    c.revoke_timeout = Duration::from_secs(10);
    c.max_idle = Duration::from_millis(200);
    c.retry = RetryPolicy::new(Duration::from_millis(100), 20).max_delay(Duration::from_secs(1));
    c
}

struct Env {
    db: String,
    redis_url: String,
    iam_path: String,
    log: PathBuf,
    instance: String,
    drain: bool,
}

impl Env {
    fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set"));
        Env {
            db: var("LH_CRASH_DB"),
            redis_url: var("LH_CRASH_REDIS"),
            iam_path: var("LH_CRASH_IAM_PATH"),
            log: var("LH_CRASH_LOG").into(),
            instance: var("LH_CRASH_INSTANCE"),
            drain: std::env::var("LH_CRASH_DRAIN").is_ok(),
        }
    }
}

async fn child_manager(env: &Env) -> LeaseManager {
    let aws = AwsEmulator::shared("crash_child").await.expect("emulator");
    let sdk = aws.sdk_config().await;
    let iam = IamUserProvider::from_sdk_config(
        IamUserConfig::new()
            .sweep_service_specific_credentials(false)
            .path(&env.iam_path)
            .inline_policy(POLICY)
            .ready_timeout(Duration::from_secs(5))
            // The emulator is consistent at once; a kill between DeleteUser and the record's
            // delete must not wait out AWS's 30 s window before "not found" counts as gone.
            .consistency_window(Duration::from_secs(2)),
        &sdk,
    )
    .unwrap();
    let redis = RedisAclProvider::new(RedisConfig::new(&env.redis_url)).unwrap();
    let store = Arc::new(SqliteStore::open(&env.db).await.unwrap());
    let secret = |name: &str, p: Arc<dyn leasehold::DynamicSecretProvider>| {
        DynamicSecret::builder(name, p)
            .default_ttl(Duration::from_secs(2))
            .max_ttl(Duration::from_secs(6))
            .build()
            .unwrap()
    };
    LeaseManager::builder(store)
        .config(child_config())
        .instance_id(&env.instance)
        .secret(secret("crash-redis", Arc::new(redis)))
        .secret(secret("crash-iam", Arc::new(iam)))
        .build()
        .await
        .unwrap()
}

/// The child: issue, renew and revoke on both secrets from four tasks until killed; or, in
/// drain mode, wait until the store is empty and exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of crash_harness_sigkill_during_issue_and_revoke"]
async fn crash_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let env = Env::from_process();
    if env.drain {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "leasehold_core=debug,leasehold_iam=debug,leasehold_redis=debug",
            ))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let m = child_manager(&env).await;
    if env.drain {
        let deadline = Instant::now() + Duration::from_secs(90);
        while m.store().count(&LeaseFilter::all()).await.unwrap() > 0 {
            if Instant::now() > deadline {
                let left = m.store().list(&LeaseFilter::all()).await.unwrap();
                for l in &left {
                    eprintln!(
                        "left: {} {:?} attempts={} due={} claimed_by={:?} error={:?}",
                        l.id, l.state, l.revoke_attempts, l.due_at, l.claimed_by, l.last_error
                    );
                }
                panic!("the store did not drain: {} leases left", left.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        m.shutdown().await;
        return;
    }
    let log = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&env.log)
            .unwrap(),
    ));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let m = m.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed() ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            loop {
                let secret = if rng.below(2) == 0 {
                    "crash-redis"
                } else {
                    "crash-iam"
                };
                let lease = match m.issue(secret, IssueRequest::new()).await {
                    Ok(l) => l,
                    Err(e) => panic!("issue failed: {e}"),
                };
                writeln!(
                    log.lock().unwrap(),
                    "issued {} {}",
                    lease.lease_id,
                    lease.credentials.principal()
                )
                .unwrap();
                match rng.below(3) {
                    0 => m.revoke(&lease.lease_id).await.unwrap(),
                    1 => {
                        let _ = m.renew(&lease.lease_id, None).await;
                    }
                    _ => {} // left to expire
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn spawn_child(env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the child")
}

async fn redis_users(url: &str) -> HashSet<String> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut c)
        .await
        .unwrap();
    users.into_iter().filter(|u| u.starts_with("lh-")).collect()
}

async fn iam_users(iam: &aws_sdk_iam::Client, path: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut pages = iam.list_users().path_prefix(path).into_paginator().send();
    while let Some(page) = pages.next().await {
        for u in page.expect("ListUsers").users() {
            out.insert(u.user_name().to_string());
        }
    }
    out
}

/// Every lease record's principal (external id), by lease id.
async fn store_principals(db: &str) -> HashMap<String, String> {
    let store = SqliteStore::open(db).await.unwrap();
    let out = store
        .list(&LeaseFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.id.to_string(), l.external.id.clone()))
        .collect();
    store.pool().close().await;
    out
}

fn issued_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            (parts.next() == Some("issued")).then(|| {
                (
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness_sigkill_during_issue_and_revoke() {
    let test = "crash_harness_sigkill_during_issue_and_revoke";
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&aws.sdk_config().await);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("leases.db").display());
    let log = dir.path().join("issued.log");
    let iam_path = format!("/{}/", leasehold_testkit::servers::unique_name("lh-crash"));
    let kills = if std::env::var("LEASEHOLD_LONG").is_ok_and(|v| v == "1") {
        500
    } else {
        100
    };
    let seed = seed();
    println!("crash harness: {kills} kills, LEASEHOLD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let env = |instance: &str, drain: bool, n: u64| {
        let mut e = vec![
            ("LH_CRASH_DB", db.clone()),
            ("LH_CRASH_REDIS", redis.url()),
            ("LH_CRASH_IAM_PATH", iam_path.clone()),
            ("LH_CRASH_LOG", log.display().to_string()),
            ("LH_CRASH_INSTANCE", instance.to_string()),
            ("LEASEHOLD_AWS_EMULATOR_URL", aws.endpoint_url()),
            (
                "LEASEHOLD_CRASH_SEED",
                rng_seed_for_child(seed ^ n, instance),
            ),
        ];
        if drain {
            e.push(("LH_CRASH_DRAIN", "1".to_string()));
        }
        e
    };

    let started = Instant::now();
    let mut max_live = 0usize;
    let mut killed_with_pending = 0usize;
    for kill in 0..kills as u64 {
        // Two instance ids: a restart either takes back its own claims at start-up or waits
        // for the other's to expire.
        let instance = format!("crash-{}", rng.below(2));
        let mut child = spawn_child(&env(&instance, false, kill));
        let wait = Duration::from_millis(150 + rng.below(650));
        tokio::time::sleep(wait).await;
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("child {kill} exited on its own ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // No credential without a lease record, at every kill.
        let leases = store_principals(&db).await;
        let principals: HashSet<&String> = leases.values().collect();
        let on_redis = redis_users(&redis.url()).await;
        let on_iam = iam_users(&iam, &iam_path).await;
        for user in on_redis.iter().chain(on_iam.iter()) {
            assert!(
                principals.contains(user),
                "kill {kill}: credential {user} exists with no lease record (seed {seed})"
            );
        }
        max_live = max_live.max(on_redis.len() + on_iam.len());
        if leases.len() > on_redis.len() + on_iam.len() {
            killed_with_pending += 1;
        }
    }

    println!("crash harness: kills done after {:?}", started.elapsed());
    // A manager started on the same file cleans everything up.
    let child = spawn_child(&env("crash-drain", true, 0));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the draining manager failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    println!("crash harness: drained after {:?}", started.elapsed());
    let leases = store_principals(&db).await;
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let on_redis = redis_users(&redis.url()).await;
    let on_iam = iam_users(&iam, &iam_path).await;
    assert!(on_redis.is_empty(), "Redis users left: {on_redis:?}");
    assert!(on_iam.is_empty(), "IAM users left: {on_iam:?}");

    let issued = issued_log(&log);
    let redis_issued = issued
        .iter()
        .filter(|(id, _)| id.starts_with("crash-redis/"))
        .count();
    let iam_issued = issued.len() - redis_issued;
    println!(
        "crash harness: {kills} kills, {} leases issued ({redis_issued} Redis, {iam_issued} IAM), \
         at most {max_live} live credentials at a kill, {killed_with_pending} kills left a lease \
         without its credential (in flight)",
        issued.len()
    );
    assert!(
        redis_issued > 0 && iam_issued > 0,
        "the children issued on both targets"
    );
    assert!(max_live > 0, "kills happened while credentials were live");
}

/// Each child gets its own stream, derived from the run's seed.
fn rng_seed_for_child(seed: u64, instance: &str) -> String {
    let mut h = seed;
    for b in instance.bytes() {
        h = h.rotate_left(7) ^ u64::from(b);
    }
    (h | 1).to_string()
}
