//! ElastiCache benchmarks against the AWS emulator (moto plus the project's user-group
//! extension), each reported against a baseline measured in the same run.
//!
//! 1. Burst: 50 concurrent issues while the user group stays `modifying` for `T` after each
//!    change. The provider as shipped (its coordinator gathers concurrent issues into one
//!    `ModifyUserGroup`) against one-at-a-time, the way Infisical does it: for each issue
//!    `CreateUser`, wait until the group is `active`, `ModifyUserGroup` with that one user,
//!    wait until the group is `active` again. Goal: batched <= 2T wall, >= 20x faster than
//!    one-at-a-time; the `ModifyUserGroup` call counts of both are reported.
//! 2. Mass revoke: 1,000 leases issued through a `LeaseManager` (`MemoryStore`) over several
//!    user groups (a group holds at most 100 users, its `default` user included), then
//!    `revoke_secret` on each secret. Goal: >= 500 revocations/s with bounded concurrency; the
//!    emulator's raw `DeleteUser` rate at the same concurrency is measured as the baseline.
//!
//! Lines starting with `RESULT|` are collected by `scripts/bench` into BENCHMARKS.md.
//! `LEASEHOLD_BENCH_QUICK=1` runs smaller sizes (the one-at-a-time run covers 5 issues and is
//! extrapolated to 50; the mass revoke covers 200 leases). Without the emulator (no Python with
//! moto, no `redis-server`) the benchmarks print why and exit successfully, unless
//! `LEASEHOLD_REQUIRE_SERVERS=1`. The emulator needs `LEASEHOLD_PYTHON` (or `.venv`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_elasticache::Client;
use common::{authenticates, group_members, wait_for, Cache};
use criterion::Criterion;
use futures::StreamExt;
use leasehold_core::{
    DynamicSecret, IssueRequest, IssuedLease, LeaseManager, ManagerConfig, MemoryStore,
    PasswordPolicy, Readiness,
};
use leasehold_elasticache::{
    ElastiCacheConfig, ElastiCacheProvider, Engine, Target, MAX_USERS_PER_GROUP,
};
use leasehold_testkit::servers::{unique_name, AwsEmulator, TransitionKind};
use secrecy::{ExposeSecret, SecretString};

/// The emulator's default for how long a user stays `creating` / `deleting`.
const USER_TRANSITION_DEFAULT: Duration = Duration::from_millis(200);

/// How often the one-at-a-time strategy looks at the group. Shorter than the provider's
/// first poll (200 ms), so the comparison does not favour batching.
const SERIAL_POLL: Duration = Duration::from_millis(100);

fn quick() -> bool {
    std::env::var("LEASEHOLD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

fn result(name: &str, value: String, goal: &str, met: bool) {
    println!(
        "RESULT|{name}|{value}|{goal}|{}",
        if met { "met" } else { "MISSED" }
    );
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn password_of(l: &IssuedLease) -> String {
    l.credentials.secret().expose_secret().to_string()
}

// ------------------------------------------------------------------------------------------
// One at a time (Infisical's way), on the raw SDK client: the bench's rival strategy.

/// Adds users to a group one by one, each waiting out the group's `modifying` window.
struct OneAtATime {
    ec: Client,
    group: String,
}

impl OneAtATime {
    /// `CreateUser`; wait until the group is `active`; `ModifyUserGroup` with this one user;
    /// wait until the group is `active` again and lists the user.
    async fn issue(&self, user_id: &str, password: &SecretString) -> Result<(), String> {
        self.ec
            .create_user()
            .user_id(user_id)
            .user_name(user_id)
            .engine("redis")
            .passwords(password.expose_secret())
            .access_string("on ~* +@all")
            .send()
            .await
            .map_err(|e| format!("CreateUser {user_id}: {e:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        self.wait_group(None, deadline).await?;
        loop {
            match self
                .ec
                .modify_user_group()
                .user_group_id(&self.group)
                .user_ids_to_add(user_id)
                .send()
                .await
            {
                Ok(_) => break,
                // The Describe may have raced the end of the last change: look again.
                Err(e) if leasehold_aws::error_code(&e) == Some("InvalidUserGroupState") => {
                    if Instant::now() > deadline {
                        return Err(format!("group {} stayed modifying", self.group));
                    }
                    tokio::time::sleep(SERIAL_POLL).await;
                }
                Err(e) => return Err(format!("ModifyUserGroup {user_id}: {e:?}")),
            }
        }
        self.wait_group(Some(user_id), deadline).await
    }

    /// Polls until the group is `active` (and lists `member`, if given).
    async fn wait_group(&self, member: Option<&str>, deadline: Instant) -> Result<(), String> {
        loop {
            let out = self
                .ec
                .describe_user_groups()
                .user_group_id(&self.group)
                .send()
                .await
                .map_err(|e| format!("DescribeUserGroups: {e:?}"))?;
            let g = out
                .user_groups()
                .first()
                .ok_or_else(|| format!("group {} not found", self.group))?;
            let listed = member.is_none_or(|m| g.user_ids().iter().any(|u| u == m));
            if g.status() == Some("active") && listed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("group {} not active in time", self.group));
            }
            tokio::time::sleep(SERIAL_POLL).await;
        }
    }
}

/// Deletes users (best effort, bounded concurrency) and waits until they are gone.
async fn delete_users(ec: &Client, ids: &[String]) {
    futures::stream::iter(ids.iter().map(|id| async move {
        let _ = ec.delete_user().user_id(id).send().await;
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for id in ids {
        wait_for("user deleted", || async {
            common::user_status(ec, id).await.is_none()
        })
        .await;
    }
}

// ------------------------------------------------------------------------------------------
// 1. Burst

/// One batched burst: what it took and how.
struct Batched {
    wall: Duration,
    modify_calls: u64,
    /// When the (first) `ModifyUserGroup` went out, from the start of the burst.
    modify_sent: Option<Duration>,
    /// ElastiCache calls the emulator answered during the burst.
    emulator_calls: u64,
}

/// The ElastiCache operations an issue makes.
const ISSUE_OPERATIONS: &[&str] = &[
    "CreateUser",
    "DescribeUsers",
    "DescribeUserGroups",
    "ModifyUserGroup",
    "ListTagsForResource",
    "DeleteUser",
];

/// How many calls of [`ISSUE_OPERATIONS`] the emulator has answered so far.
async fn issue_calls(aws: &AwsEmulator) -> u64 {
    let mut total = 0;
    for op in ISSUE_OPERATIONS {
        total += aws.call_count_in(Some("elasticache"), op, None).await;
    }
    total
}

/// `n` concurrent issues through a `LeaseManager` on the provider as shipped, with its `AUTH`
/// readiness check on the cache's mirror (an issue returns once the credential logs in).
async fn batched_burst(aws: &Arc<AwsEmulator>, n: usize, t: Duration) -> Batched {
    let cache = Cache::new(aws.clone(), "bench-burst-b", t).await;
    let provider = Arc::new(cache.provider_with(cache.config()).await);
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(
            DynamicSecret::builder("burst", provider)
                .default_ttl(Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .build()
        .await
        .expect("manager (validates the provider)");
    let calls_before = issue_calls(aws).await;
    let before = aws.call_count("ModifyUserGroup", Some(&cache.group)).await;
    let started = Instant::now();
    // Notes when the first ModifyUserGroup arrives (the control endpoint does not reach moto).
    let watcher = {
        let aws = aws.clone();
        let group = cache.group.clone();
        tokio::spawn(async move {
            while aws.call_count("ModifyUserGroup", Some(&group)).await == before {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            started.elapsed()
        })
    };
    let issued =
        futures::future::join_all((0..n).map(|_| manager.issue("burst", IssueRequest::new())))
            .await;
    let wall = started.elapsed();
    let modify_calls = aws.call_count("ModifyUserGroup", Some(&cache.group)).await - before;
    let emulator_calls = issue_calls(aws).await - calls_before;
    let modify_sent = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .ok()
        .and_then(Result::ok);
    let issued: Vec<IssuedLease> = issued
        .into_iter()
        .map(|r| r.expect("every concurrent issue succeeds"))
        .collect();
    let confirmed = issued
        .iter()
        .filter(|l| l.readiness == Readiness::Confirmed)
        .count();
    assert_eq!(
        confirmed, n,
        "every batched credential is confirmed by AUTH"
    );
    let last = &issued[n - 1];
    assert!(authenticates(cache.port, last.credentials.principal(), &password_of(last)).await);
    let summary = manager.revoke_secret("burst").await.unwrap();
    assert_eq!(summary.revoked, n, "{:?}", summary.failed);
    manager.shutdown().await;
    cache.cleanup().await;
    Batched {
        wall,
        modify_calls,
        modify_sent,
        emulator_calls,
    }
}

/// `n` issues one at a time (Infisical's way); returns the time taken and the
/// `ModifyUserGroup` calls made. Checks that every user ended up in the group and that the last
/// one logs in.
async fn serial_burst(
    aws: &Arc<AwsEmulator>,
    n: usize,
    t: Duration,
) -> Result<(Duration, u64), String> {
    let cache = Cache::new(aws.clone(), "bench-burst-s", t).await;
    let serial = OneAtATime {
        ec: cache.ec.clone(),
        group: cache.group.clone(),
    };
    let users: Vec<(String, SecretString)> = (0..n)
        .map(|_| {
            (
                unique_name("lh-serial"),
                PasswordPolicy::elasticache().generate().unwrap(),
            )
        })
        .collect();
    let before = aws.call_count("ModifyUserGroup", Some(&cache.group)).await;
    let started = Instant::now();
    let mut made = Vec::new();
    let mut outcome = Ok(());
    for (id, pw) in &users {
        made.push(id.clone());
        outcome = serial.issue(id, pw).await;
        if outcome.is_err() {
            break;
        }
    }
    let took = started.elapsed();
    let calls = aws.call_count("ModifyUserGroup", Some(&cache.group)).await - before;
    if outcome.is_ok() {
        let members = group_members(&cache.ec, &cache.group).await;
        assert!(users.iter().all(|(id, _)| members.contains(id)));
        let (id, pw) = &users[n - 1];
        assert!(authenticates(cache.port, id, pw.expose_secret()).await);
    }
    delete_users(&cache.ec, &made).await;
    cache.cleanup().await;
    outcome.map(|()| (took, calls))
}

fn describe_batched(b: &Batched, t: Duration) -> String {
    let sent = b
        .modify_sent
        .map(|s| format!(", sent at {:.2} s", secs(s)))
        .unwrap_or_default();
    format!(
        "{:.2} s = {:.2} T wall at T = {:.0} s ({} ModifyUserGroup call(s){sent}; {} emulator calls in all, {:.0}/s)",
        secs(b.wall),
        secs(b.wall) / secs(t),
        secs(t),
        b.modify_calls,
        b.emulator_calls,
        b.emulator_calls as f64 / secs(b.wall)
    )
}

async fn burst(aws: &Arc<AwsEmulator>) {
    let n = 50usize;
    // T = 2 s keeps the one-at-a-time run under 2 minutes (about 50 T); T = 1 s is measured
    // for the batched run too, to show the fixed cost that does not scale with T.
    let t = Duration::from_secs(2);
    let short_t = Duration::from_secs(1);
    let serial_n = if quick() { 5 } else { n };

    let (serial_took, serial_calls) = match serial_burst(aws, serial_n, t).await {
        Ok(r) => r,
        Err(e) => {
            println!("one-at-a-time burst failed, no comparison: {e}");
            return;
        }
    };
    let batched = batched_burst(aws, n, t).await;
    let batched_short = batched_burst(aws, n, short_t).await;

    let per_issue = serial_took / u32::try_from(serial_n).unwrap_or(1);
    let serial_total = per_issue * u32::try_from(n).unwrap_or(1);
    let speedup = secs(serial_total) / secs(batched.wall);
    let in_t = secs(batched.wall) / secs(t);
    let how = if serial_n == n {
        format!(
            "{:.1} s = {:.1} T measured",
            secs(serial_total),
            secs(serial_total) / secs(t)
        )
    } else {
        format!(
            "{:.1} s = {:.1} T, extrapolated from {serial_n} issues in {:.1} s",
            secs(serial_total),
            secs(serial_total) / secs(t),
            secs(serial_took)
        )
    };
    result(
        &format!("ElastiCache burst: {n} concurrent issues, batched, group modifying for T after each change (emulator)"),
        format!(
            "{}; also at T = 1 s: {:.2} s = {:.2} T",
            describe_batched(&batched, t),
            secs(batched_short.wall),
            secs(batched_short.wall) / secs(short_t)
        ),
        "<= 2T",
        in_t <= 2.0,
    );
    result(
        &format!("ElastiCache burst: batched vs one-at-a-time (Infisical's way), {n} issues, T = {:.0} s", secs(t)),
        format!("{speedup:.1}x faster (one-at-a-time {how}; batched {:.2} s)", secs(batched.wall)),
        ">= 20x",
        speedup >= 20.0,
    );
    let serial_calls_n = if serial_n == n {
        format!("{serial_calls}")
    } else {
        format!("{serial_calls} for {serial_n} issues (one per issue)")
    };
    result(
        &format!("ElastiCache burst: ModifyUserGroup calls for {n} issues"),
        format!(
            "batched {} (at T = 1 s: {}), one-at-a-time {serial_calls_n}",
            batched.modify_calls, batched_short.modify_calls
        ),
        "batched: one or a few",
        batched.modify_calls <= 3 && batched_short.modify_calls <= 3,
    );
}

// ------------------------------------------------------------------------------------------
// 2. Mass revoke

/// A cache whose group changes without a `modifying` delay, and a provider on it.
async fn mass_cache(aws: &Arc<AwsEmulator>) -> (Cache, Arc<ElastiCacheProvider>) {
    let cache = Cache::new(aws.clone(), "bench-mass", Duration::ZERO).await;
    let config = ElastiCacheConfig::new(Target::ServerlessCache(cache.cache.clone()), &cache.group)
        .engine(Engine::Redis)
        .ready_timeout(Duration::from_secs(120));
    let provider = Arc::new(cache.provider_with(config).await);
    (cache, provider)
}

/// Raw `DeleteUser` of `n` members of one group, `concurrency` at a time: what the emulator
/// can do at most, measured on the same kind of user the revoke deletes.
async fn raw_delete_rate(aws: &Arc<AwsEmulator>, n: usize, concurrency: usize) -> f64 {
    let cache = Cache::new(aws.clone(), "bench-raw", Duration::ZERO).await;
    let ids: Vec<String> = (0..n).map(|_| unique_name("lh-raw")).collect();
    let ec = &cache.ec;
    futures::stream::iter(ids.iter().map(|id| async move {
        let pw = PasswordPolicy::elasticache().generate().unwrap();
        ec.create_user()
            .user_id(id)
            .user_name(id)
            .engine("redis")
            .passwords(pw.expose_secret())
            .access_string("on ~* +@all")
            .send()
            .await
            .expect("CreateUser");
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    ec.modify_user_group()
        .user_group_id(&cache.group)
        .set_user_ids_to_add(Some(ids.clone()))
        .send()
        .await
        .expect("ModifyUserGroup");
    wait_for("raw users in the group", || async {
        group_members(ec, &cache.group).await.len() == n + 1
    })
    .await;
    let started = Instant::now();
    futures::stream::iter(ids.iter().map(|id| async move {
        ec.delete_user()
            .user_id(id)
            .send()
            .await
            .expect("DeleteUser");
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    let rate = n as f64 / secs(started.elapsed());
    delete_users(ec, &ids).await;
    cache.cleanup().await;
    rate
}

async fn mass_revoke(aws: &Arc<AwsEmulator>) {
    let n: usize = if quick() { 200 } else { 1_000 };
    // One place in each group is the `default` user's.
    let per_group = MAX_USERS_PER_GROUP - 1;
    let groups = n.div_ceil(per_group);
    // "No modifying delay": users are `active` / gone at once (restored at the end).
    aws.set_modifying(TransitionKind::User, None, Duration::ZERO)
        .await;

    let mut caches = Vec::new();
    let mut builder = LeaseManager::builder(Arc::new(MemoryStore::new()));
    for g in 0..groups {
        let (cache, provider) = mass_cache(aws).await;
        builder = builder.secret(
            DynamicSecret::builder(format!("mass-{g}"), provider)
                .default_ttl(Duration::from_secs(3600))
                .build()
                .unwrap(),
        );
        caches.push(cache);
    }
    let config = ManagerConfig::default();
    let concurrency = config.revoke_concurrency;
    let manager = builder.config(config).build().await.expect("manager");

    let started = Instant::now();
    let issued: Vec<_> = futures::stream::iter((0..n).map(|i| {
        let m = manager.clone();
        async move {
            m.issue(&format!("mass-{}", i % groups), IssueRequest::new())
                .await
        }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    let issue_took = started.elapsed();
    let failed_issues = issued.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = issued.iter().find(|r| r.is_err()) {
        println!("mass revoke: {failed_issues} of {n} issues failed, e.g. {e}");
    }
    let leases = n - failed_issues;

    let baseline = raw_delete_rate(aws, per_group, concurrency).await;

    let calls = || async {
        aws.call_count_in(Some("elasticache"), "DeleteUser", None)
            .await
            + aws
                .call_count_in(Some("elasticache"), "DescribeUsers", None)
                .await
    };
    let calls_before = calls().await;
    let started = Instant::now();
    let mut revoked = 0;
    let mut failed = 0;
    for g in 0..groups {
        let s = manager.revoke_secret(&format!("mass-{g}")).await.unwrap();
        revoked += s.revoked;
        failed += s.failed.len();
    }
    let took = started.elapsed();
    let rate = revoked as f64 / secs(took);
    let revoke_calls = calls().await - calls_before;
    let calls_rate = revoke_calls as f64 / secs(took);
    let per_lease = revoke_calls as f64 / (revoked.max(1) as f64);
    manager.shutdown().await;
    for cache in caches {
        let left = group_members(&cache.ec, &cache.group).await;
        assert_eq!(
            left,
            vec![cache.default_user.clone()],
            "every leased user deleted"
        );
        cache.cleanup().await;
    }
    aws.set_modifying(TransitionKind::User, None, USER_TRANSITION_DEFAULT)
        .await;

    // The emulator (one Python process) answers calls one after another: when the revoke
    // keeps it as busy as the raw DeleteUser loop did, the emulator is the limit.
    let bound = if rate < 500.0 && calls_rate >= baseline * 0.8 {
        ", the emulator's limit: the bottleneck"
    } else {
        ""
    };
    result(
        &format!("ElastiCache mass revoke: revoke_secret on {leases} leases over {groups} user groups, concurrency {concurrency} (emulator, no transition delays)"),
        format!(
            "{rate:.0} revocations/s ({revoked} revoked, {failed} failed, {:.1} s); each revoke is DeleteUser + DescribeUsers until gone: {calls_rate:.0} emulator calls/s vs its raw DeleteUser rate of {baseline:.0}/s at the same concurrency in this run{bound}",
            secs(took),
        ),
        ">= 500/s",
        rate >= 500.0 && failed == 0 && failed_issues == 0,
    );
    // AWS throttles per account: the calls a mass revoke makes per lease are what counts there.
    result(
        "ElastiCache mass revoke: AWS calls (DeleteUser + DescribeUsers) per revoked lease",
        format!("{per_lease:.2} ({revoke_calls} calls for {revoked} leases)"),
        "<= 1.2",
        per_lease <= 1.2,
    );
    println!(
        "mass revoke: issuing {leases} leases over {groups} groups took {:.1} s",
        secs(issue_took)
    );
}

// ------------------------------------------------------------------------------------------

/// The poll both strategies pay per look at the group: one `DescribeUserGroups` round trip.
fn criterion_describe(c: &mut Criterion, rt: &tokio::runtime::Runtime, aws: &Arc<AwsEmulator>) {
    let cache = rt.block_on(Cache::new(aws.clone(), "bench-describe", Duration::ZERO));
    let mut g = c.benchmark_group("emulator");
    g.sample_size(20);
    g.bench_function("DescribeUserGroups round trip", |b| {
        b.iter(|| rt.block_on(group_members(&cache.ec, &cache.group)))
    });
    g.finish();
    rt.block_on(cache.cleanup());
}

/// Says so if any user but the emulator's built-in `default` outlived the benchmarks.
async fn report_leftovers(aws: &AwsEmulator) {
    let ec = Client::new(&aws.sdk_config().await);
    let users = ec.describe_users().send().await.expect("DescribeUsers");
    let left: Vec<&str> = users
        .users()
        .iter()
        .filter_map(|u| u.user_id())
        .filter(|id| *id != "default")
        .collect();
    if !left.is_empty() {
        println!(
            "cleanup: {} user(s) left on the emulator, e.g. {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` / `--all-targets` runs this binary
    // without it (or with `--test`). Those get nothing here: the crate's emulator tests cover
    // the same paths, and a three-minute run does not belong in a test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("burst: run with `cargo bench` (which passes --bench) to measure");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(aws) = rt.block_on(common::emulator("elasticache_benches")) else {
        println!(
            "AWS emulator not available (see the skip reason above): the ElastiCache burst and mass-revoke benchmarks are not measured"
        );
        return;
    };
    rt.block_on(burst(&aws));
    rt.block_on(mass_revoke(&aws));
    rt.block_on(report_leftovers(&aws));
    if !quick() {
        let mut c = Criterion::default().configure_from_args();
        criterion_describe(&mut c, &rt, &aws);
        c.final_summary();
    }
}
