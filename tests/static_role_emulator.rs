//! Static roles for a fleet against the AWS emulator: three rotator processes share one SQLite
//! lease store and rotate one ElastiCache user (`ModifyUser` with two passwords, a `modifying`
//! window) or one MemoryDB user (`UpdateUser`, the same) publishing to Secrets Manager (moto);
//! this process reads `AWSCURRENT` as every instance would and AUTHs on the cache's or
//! cluster's Redis mirror throughout. The holder is killed once. The child processes are this
//! test binary, running the ignored test `static_role_emulator_child`.
#![cfg(all(feature = "elasticache", feature = "memorydb", feature = "sqlite"))]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType};
use leasehold::aws::{AwsConfig, AwsCredentials, SecretsManagerPublisher};
use leasehold::core::static_role::StaticRoleTarget;
use leasehold::core::static_role::{
    ReaderOptions, RotationSchedule, StaticRoleOptions, StaticRoleReader, StaticRoleRotator,
};
use leasehold::core::LeaseStore;
use leasehold::elasticache::ElastiCacheUserTarget;
use leasehold::memorydb::MemoryDbUserTarget;
use leasehold::SqliteStore;
use leasehold_testkit::servers::{unique_name, AwsEmulator, MirrorKind, TransitionKind};
use secrecy::{ExposeSecret, SecretString};

const CHILD_ENV: &str = "LEASEHOLD_SR_EMU_CHILD";
const PERIOD: Duration = Duration::from_secs(3);

fn options() -> StaticRoleOptions {
    StaticRoleOptions::new(RotationSchedule::every(PERIOD))
        .grace(Duration::from_secs(1))
        .claim_hold(Duration::from_millis(1500))
        .poll(Duration::from_millis(100))
        .test_timeout(Duration::from_secs(10))
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap()
}

#[tokio::test]
#[ignore = "child process of static_role_fleet_on_the_emulator"]
async fn static_role_emulator_child() {
    let Ok(owner) = std::env::var(CHILD_ENV) else {
        return;
    };
    let sdk = AwsConfig::new()
        .region("us-east-1")
        .endpoint_url(var("LEASEHOLD_SR_ENDPOINT"))
        .credentials(AwsCredentials::from_keys(
            "testing",
            SecretString::from("testing"),
        ))
        .load()
        .await
        .unwrap();
    let store = SqliteStore::open(&var("LEASEHOLD_SR_DB")).await.unwrap();
    let target: Arc<dyn StaticRoleTarget> = match var("LEASEHOLD_SR_KIND").as_str() {
        "memorydb" => Arc::new(
            MemoryDbUserTarget::new(&sdk, &var("LEASEHOLD_SR_USER"))
                .unwrap()
                .readiness_endpoint(&var("LEASEHOLD_SR_MIRROR"), None)
                .unwrap(),
        ),
        _ => Arc::new(
            ElastiCacheUserTarget::new(&sdk, &var("LEASEHOLD_SR_USER"))
                .unwrap()
                .readiness_endpoint(&var("LEASEHOLD_SR_MIRROR"), None)
                .unwrap(),
        ),
    };
    let rotator = Arc::new(
        StaticRoleRotator::new(
            "orders-cache",
            target,
            Arc::new(SecretsManagerPublisher::new(
                &sdk,
                var("LEASEHOLD_SR_SECRET"),
            )),
            store.coordination().unwrap(),
            owner,
            options(),
        )
        .unwrap(),
    );
    rotator.validate().await.unwrap();
    let _task = rotator.start();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

fn spawn(owner: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "static_role_emulator_child",
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
async fn static_role_fleet_on_the_emulator() {
    let test = "static_role_fleet_on_the_emulator";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    if !aws.has_mirror().await {
        leasehold_testkit::servers::skip_or_panic(test, "the emulator has no Redis mirror");
        return;
    }
    let ec = aws_sdk_elasticache::Client::new(&aws.sdk_config().await);
    let user = unique_name("sr-app");
    let default = unique_name("sr-def");
    let group = unique_name("sr-g");
    let cache = unique_name("sr-c");
    aws.set_modifying(TransitionKind::User, None, Duration::from_millis(300))
        .await;
    aws.set_modifying(
        TransitionKind::UserGroup,
        Some(&group),
        Duration::from_millis(200),
    )
    .await;
    for (id, name) in [(&default, "default"), (&user, user.as_str())] {
        ec.create_user()
            .user_id(id)
            .user_name(name)
            .engine("redis")
            .passwords("Initial-password-0123456789")
            .access_string(if name == "default" {
                "off -@all"
            } else {
                "on ~* +@all"
            })
            .send()
            .await
            .expect("CreateUser");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ec.create_user_group()
        .user_group_id(&group)
        .engine("redis")
        .user_ids(&default)
        .user_ids(&user)
        .send()
        .await
        .expect("CreateUserGroup");
    tokio::time::sleep(Duration::from_millis(600)).await;
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
        .expect("mirror")
        .url();

    run_fleet(&aws, "elasticache", "ModifyUser", &user, &mirror).await;
}

#[tokio::test]
async fn static_role_fleet_on_the_emulator_memorydb() {
    let test = "static_role_fleet_on_the_emulator_memorydb";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    if !aws.has_mirror().await {
        leasehold_testkit::servers::skip_or_panic(test, "the emulator has no Redis mirror");
        return;
    }
    let db = aws_sdk_memorydb::Client::new(&aws.sdk_config().await);
    let user = unique_name("sr-mdb");
    let acl = unique_name("sr-acl");
    let cluster = unique_name("sr-cl");
    aws.set_modifying(TransitionKind::User, None, Duration::from_millis(300))
        .await;
    db.create_user()
        .user_name(&user)
        .access_string("on ~* +@all")
        .authentication_mode(
            AuthenticationMode::builder()
                .r#type(InputAuthenticationType::Password)
                .passwords("Initial-password-0123456789")
                .build(),
        )
        .send()
        .await
        .expect("CreateUser");
    let started = Instant::now();
    loop {
        let out = db.describe_users().user_name(&user).send().await.unwrap();
        if out.users().first().and_then(|u| u.status()) == Some("active") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "user active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.create_acl()
        .acl_name(&acl)
        .user_names(&user)
        .send()
        .await
        .expect("CreateACL");
    let started = Instant::now();
    loop {
        let out = db.describe_acls().acl_name(&acl).send().await.unwrap();
        if out.acls().first().and_then(|a| a.status()) == Some("active") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ACL active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.create_cluster()
        .cluster_name(&cluster)
        .node_type("db.t4g.small")
        .acl_name(&acl)
        .tls_enabled(false)
        .send()
        .await
        .expect("CreateCluster");
    let mirror = aws
        .mirror(MirrorKind::MemoryDbCluster, &cluster)
        .await
        .expect("mirror")
        .url();
    run_fleet(&aws, "memorydb", "UpdateUser", &user, &mirror).await;
}

/// Three rotator processes for `user`, a reader here that AUTHs on `mirror` throughout, the
/// holder killed once; `operation` is the call that sets the user's passwords.
async fn run_fleet(aws: &AwsEmulator, kind: &str, operation: &str, user: &str, mirror: &str) {
    let user = user.to_string();
    let mirror = mirror.to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("leases.db").display()
    );
    let secret = unique_name("sr-secret");
    let store = SqliteStore::open(&db).await.unwrap();
    let coordination = store.coordination().unwrap();
    let env = [
        ("LEASEHOLD_SR_ENDPOINT", aws.endpoint_url()),
        ("LEASEHOLD_SR_DB", db.clone()),
        ("LEASEHOLD_SR_USER", user.clone()),
        ("LEASEHOLD_SR_MIRROR", mirror.clone()),
        ("LEASEHOLD_SR_SECRET", secret.clone()),
        ("LEASEHOLD_SR_KIND", kind.to_string()),
    ];
    let calls_before = aws.accepted_calls(operation, Some(&user)).await;
    let mut children: Vec<(String, Child)> = ["e1", "e2", "e3"]
        .iter()
        .map(|o| (o.to_string(), spawn(o, &env)))
        .collect();

    let publisher = Arc::new(SecretsManagerPublisher::new(
        &aws.sdk_config().await,
        &secret,
    ));
    let started = Instant::now();
    let reader = loop {
        match StaticRoleReader::start(
            publisher.clone(),
            ReaderOptions::default().refresh(Duration::from_millis(200)),
        )
        .await
        {
            Ok(r) => break r,
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("nothing published: {e}"),
        }
    };
    let first_at = Instant::now();
    let mut versions = BTreeSet::new();
    let mut failures = Vec::new();
    let mut checks = 0u32;
    let mut killed = false;
    let run_for = Duration::from_secs(16);
    while first_at.elapsed() < run_for {
        let v = reader.current();
        versions.insert(v.version_id.clone());
        checks += 1;
        if !auth_works(&mirror, &v.credential.username, &v.credential.password).await {
            failures.push(format!(
                "{:?}: version {}",
                first_at.elapsed(),
                v.version_id
            ));
        }
        if !killed && first_at.elapsed() > Duration::from_millis(6100) {
            let claim = coordination
                .group_claim("static-role/orders-cache")
                .await
                .unwrap();
            if let Some(pos) = claim.and_then(|c| children.iter().position(|(o, _)| *o == c.owner))
            {
                let (_, mut child) = children.remove(pos);
                child.kill().unwrap();
                child.wait().unwrap();
                killed = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    assert!(killed, "the holder was killed");
    let n = versions.len();
    // 16 s with a 3 s period: the first version and five more, one period of slack for the
    // takeover.
    assert!((5..=7).contains(&n), "{n} versions");
    // Each rotation is one ModifyUser / UpdateUser with two passwords and one dropping the old after the
    // grace (the first sets one password and drops nothing); a takeover may repeat a drop.
    let calls = aws.accepted_calls(operation, Some(&user)).await - calls_before;
    let rotations = versions.len() as u64 + 1; // the last one may have started after the reads
    assert!(
        calls <= 2 * rotations,
        "{calls} {operation} calls for {n} versions"
    );
    assert!(
        calls >= 2 * (n as u64 - 1) - 1,
        "{calls} {operation} calls for {n} versions"
    );
}
