//! The provider against the AWS emulator (moto plus the project's user-group extension), with
//! credentials checked by `AUTH` on the cache's Redis mirror.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{authenticates, group_members, user_status, wait_for, Cache, MirrorProbe};
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecret, DynamicSecretProvider, ErrorKind, ExternalRef,
    IssueRequest, LeaseId, LeaseManager, MemoryStore, PasswordPolicy, Readiness,
};
use leasehold_elasticache::{ElastiCacheConfig, Target, ATTR_USER_GROUP, MAX_USERS_PER_GROUP};
use leasehold_testkit::conformance::Fixture;
use leasehold_testkit::servers::{unique_name, FaultSpec, TransitionKind};
use secrecy::ExposeSecret;

fn username(tag: &str) -> String {
    format!(
        "lh-{tag}-{}",
        leasehold_core::template::random_lowercase(12)
    )
}

fn request(user: &str) -> CreateRequest {
    CreateRequest::new(
        LeaseId::generate("orders-cache"),
        user,
        Duration::from_secs(900),
    )
    .with_password(PasswordPolicy::elasticache().generate().unwrap())
}

fn password_of(c: &Credentials) -> String {
    c.secret().expose_secret().to_string()
}

#[tokio::test]
async fn lease_lifecycle_authenticates_then_is_refused_after_revoke() {
    let test = "lease_lifecycle_authenticates_then_is_refused_after_revoke";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-life", Duration::from_millis(500)).await;
    let provider = Arc::new(cache.provider().await);
    provider.validate().await.expect("validate");
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(
            DynamicSecret::builder("orders-cache", provider.clone())
                .default_ttl(Duration::from_secs(600))
                .build()
                .unwrap(),
        )
        .build()
        .await
        .unwrap();

    let issued = manager
        .issue("orders-cache", IssueRequest::new())
        .await
        .expect("issue");
    assert_eq!(issued.readiness, Readiness::Confirmed, "AUTH check passed");
    let user = issued.credentials.principal().to_string();
    assert!(user.starts_with("lh-"), "{user}");
    let password = password_of(&issued.credentials);
    assert!(
        authenticates(cache.port, &user, &password).await,
        "the issued credential logs in on the cache"
    );
    assert!(!authenticates(cache.port, &user, "not-the-password-0123").await);
    assert!(group_members(&cache.ec, &cache.group).await.contains(&user));
    let lease = manager.lookup(&issued.lease_id).await.unwrap();
    assert_eq!(lease.external.id, user);
    assert_eq!(
        lease.external.attr(ATTR_USER_GROUP),
        Some(cache.group.as_str())
    );

    manager
        .renew(&issued.lease_id, Some(Duration::from_secs(900)))
        .await
        .expect("renew");
    manager.revoke(&issued.lease_id).await.expect("revoke");
    assert!(
        !authenticates(cache.port, &user, &password).await,
        "a revoked credential no longer logs in"
    );
    assert_eq!(user_status(&cache.ec, &user).await, None, "user deleted");
    assert!(!group_members(&cache.ec, &cache.group).await.contains(&user));
    manager.shutdown().await;
    cache.cleanup().await;
}

#[tokio::test]
async fn fifty_concurrent_issues_are_batched_into_few_modify_user_group_calls() {
    let test = "fifty_concurrent_issues_are_batched_into_few_modify_user_group_calls";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let window = Duration::from_secs(2);
    let cache = Cache::new(aws.clone(), "ec-batch", window).await;
    let provider = Arc::new(cache.provider().await);
    provider.validate().await.expect("validate");
    let before = aws.call_count("ModifyUserGroup", Some(&cache.group)).await;
    let describes_before = aws
        .call_count("DescribeUserGroups", Some(&cache.group))
        .await;

    let started = Instant::now();
    let users: Vec<String> = (0..50).map(|_| username("batch")).collect();
    let results = futures::future::join_all(users.iter().map(|u| {
        let provider = provider.clone();
        let req = request(u);
        async move { provider.create(&req).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let calls = aws.call_count("ModifyUserGroup", Some(&cache.group)).await - before;
    let describes = aws
        .call_count("DescribeUserGroups", Some(&cache.group))
        .await
        - describes_before;

    let created: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every concurrent issue succeeds (queued, not refused)"))
        .collect();
    assert!(created.iter().all(|c| c.readiness == Readiness::Confirmed));
    println!(
        "50 concurrent issues: {calls} ModifyUserGroup call(s), {describes} DescribeUserGroups, {:.2} s = {:.2} modifying windows of {:?}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / window.as_secs_f64(),
        window
    );
    assert!(
        (1..=3).contains(&calls),
        "50 concurrent issues used {calls} ModifyUserGroup calls; at most 3 expected"
    );
    // One read of the members for the whole burst, then the polls of the modifying group:
    // not one read per concurrent first issue.
    assert!(
        describes < 25,
        "50 concurrent issues made {describes} DescribeUserGroups calls"
    );
    let members = group_members(&cache.ec, &cache.group).await;
    for u in &users {
        assert!(members.contains(u), "{u} is a member");
    }
    for c in created.iter().take(5) {
        assert!(
            authenticates(
                cache.port,
                c.credentials.principal(),
                &password_of(&c.credentials)
            )
            .await
        );
    }

    // Revokes run concurrently too; DeleteUser needs no group change.
    let revoked = futures::future::join_all(created.iter().map(|c| {
        let provider = provider.clone();
        let ext = c.external.clone();
        async move { provider.revoke(&ext).await }
    }))
    .await;
    assert!(revoked.iter().all(Result::is_ok), "{revoked:?}");
    assert_eq!(
        aws.call_count("ModifyUserGroup", Some(&cache.group)).await - before,
        calls
    );
    let members = group_members(&cache.ec, &cache.group).await;
    assert_eq!(members, vec![cache.default_user.clone()]);
    cache.cleanup().await;
}

#[tokio::test]
async fn a_full_group_is_refused_before_create_user() {
    let test = "a_full_group_is_refused_before_create_user";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-full", Duration::from_millis(200)).await;
    // Fill the group to 100 members out of band: the default user and 99 locked users.
    let fillers: Vec<String> = (0..MAX_USERS_PER_GROUP - 1)
        .map(|_| unique_name("ec-fill"))
        .collect();
    futures::future::join_all(fillers.iter().map(|id| {
        cache
            .ec
            .create_user()
            .user_id(id)
            .user_name(id)
            .engine("redis")
            .no_password_required(true)
            .access_string("off")
            .send()
    }))
    .await
    .into_iter()
    .for_each(|r| {
        r.expect("CreateUser filler");
    });
    for id in &fillers {
        wait_for("filler active", || async {
            user_status(&cache.ec, id).await.as_deref() == Some("active")
        })
        .await;
    }
    cache
        .ec
        .modify_user_group()
        .user_group_id(&cache.group)
        .set_user_ids_to_add(Some(fillers.clone()))
        .send()
        .await
        .expect("ModifyUserGroup fillers");
    wait_for("group holds 100", || async {
        group_members(&cache.ec, &cache.group).await.len() == MAX_USERS_PER_GROUP
    })
    .await;

    let provider = cache.provider().await;
    let user = username("full");
    let err = provider.create(&request(&user)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    assert_eq!(
        aws.call_count("CreateUser", Some(&user)).await,
        0,
        "no CreateUser for a user that could not join"
    );

    cache
        .ec
        .modify_user_group()
        .user_group_id(&cache.group)
        .set_user_ids_to_remove(Some(fillers.clone()))
        .send()
        .await
        .unwrap();
    wait_for("group emptied", || async {
        group_members(&cache.ec, &cache.group).await.len() == 1
    })
    .await;
    for id in &fillers {
        let _ = cache.ec.delete_user().user_id(id).send().await;
    }
    cache.cleanup().await;
}

#[tokio::test]
async fn validate_refuses_an_open_default_user_and_unattached_groups() {
    let test = "validate_refuses_an_open_default_user_and_unattached_groups";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    // The emulator's built-in `default` user: no password, "on ~* +@all".
    let open = Cache::with_default(aws.clone(), "ec-open", Duration::from_millis(100), true).await;
    let provider = open.provider().await;
    let err = provider.validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("needs no password"), "{err}");
    // Anyone gets in without a credential: that is what validate refused.
    assert_eq!(common::ping_without_auth(open.port).await, "+PONG");
    let allowed = open
        .provider_with(open.config().allow_open_default_user(true))
        .await;
    allowed.validate().await.expect("explicitly allowed");

    // A group that is not the one attached to the cache.
    let locked = Cache::new(aws.clone(), "ec-attached", Duration::from_millis(100)).await;
    let wrong = locked
        .provider_with(
            ElastiCacheConfig::new(Target::ServerlessCache(locked.cache.clone()), &open.group)
                .allow_open_default_user(true),
        )
        .await;
    let err = wrong.validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("not attached"), "{err}");
    // A cache that does not exist.
    let missing = locked
        .provider_with(ElastiCacheConfig::new(
            Target::ServerlessCache(unique_name("ec-nope")),
            &locked.group,
        ))
        .await;
    let err = missing.validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // The locked group passes.
    locked
        .provider()
        .await
        .validate()
        .await
        .expect("locked default");
    open.cleanup().await;
    locked.cleanup().await;
}

#[tokio::test]
async fn validate_accepts_a_replication_group_target() {
    let test = "validate_accepts_a_replication_group_target";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-rgt", Duration::from_millis(100)).await;
    let rg = unique_name("ec-rg");
    cache
        .ec
        .create_replication_group()
        .replication_group_id(&rg)
        .replication_group_description("leasehold elasticache test")
        .engine("redis")
        .user_group_ids(&cache.group)
        .send()
        .await
        .expect("CreateReplicationGroup");
    let provider = cache
        .provider_with(ElastiCacheConfig::new(
            Target::ReplicationGroup(rg.clone()),
            &cache.group,
        ))
        .await;
    provider.validate().await.expect("validate");
    let user = username("rg");
    let created = provider
        .create(&request(&user).with_wait_ready(false))
        .await
        .expect("create without waiting");
    assert_eq!(created.readiness, Readiness::Unchecked);
    provider.revoke(&created.external).await.expect("revoke");
    let _ = cache
        .ec
        .delete_replication_group()
        .replication_group_id(&rg)
        .send()
        .await;
    // moto leaves deleted replication groups `deleting` (and the group attached): the
    // group and cache of this fixture are left to the emulator's end.
}

#[tokio::test]
async fn throttled_calls_are_retried_and_late_failures_delete_the_user() {
    let test = "throttled_calls_are_retried_and_late_failures_delete_the_user";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-fault", Duration::from_millis(300)).await;
    let provider = cache.provider().await;

    // A throttled CreateUser is retried (by the SDK's standard retry) and succeeds.
    let user = username("thr");
    aws.inject_fault(FaultSpec::throttle("CreateUser").resource(&user).times(1))
        .await;
    let created = provider.create(&request(&user)).await.expect("create");
    assert_eq!(aws.call_count("CreateUser", Some(&user)).await, 2);
    assert_eq!(created.readiness, Readiness::Confirmed);
    provider.revoke(&created.external).await.unwrap();

    // A throttled ModifyUserGroup is retried too.
    let user = username("thr");
    let before = aws.call_count("ModifyUserGroup", Some(&cache.group)).await;
    aws.inject_fault(
        FaultSpec::throttle("ModifyUserGroup")
            .resource(&cache.group)
            .times(1),
    )
    .await;
    let created = provider.create(&request(&user)).await.expect("create");
    assert_eq!(
        aws.call_count("ModifyUserGroup", Some(&cache.group)).await - before,
        2
    );
    provider.revoke(&created.external).await.unwrap();

    // A group that is modifying (someone else's change) makes the issue wait, not fail.
    cache
        .aws
        .set_modifying(
            TransitionKind::UserGroup,
            Some(&cache.group),
            Duration::from_secs(1),
        )
        .await;
    let other = unique_name("ec-other");
    cache
        .ec
        .create_user()
        .user_id(&other)
        .user_name(&other)
        .engine("redis")
        .no_password_required(true)
        .access_string("off")
        .send()
        .await
        .unwrap();
    wait_for("other active", || async {
        user_status(&cache.ec, &other).await.as_deref() == Some("active")
    })
    .await;
    cache
        .ec
        .modify_user_group()
        .user_group_id(&cache.group)
        .user_ids_to_add(&other)
        .send()
        .await
        .unwrap();
    let user = username("busy");
    let created = provider
        .create(&request(&user))
        .await
        .expect("create waits out the other change");
    provider.revoke(&created.external).await.unwrap();

    // A permanent ModifyUserGroup failure after CreateUser: the user is deleted again.
    let user = username("comp");
    aws.inject_fault(
        FaultSpec::fail("ModifyUserGroup", "InvalidParameterCombination")
            .resource(&cache.group)
            .times(1),
    )
    .await;
    let err = provider.create(&request(&user)).await.unwrap_err();
    assert!(!err.is_temporary(), "{err}");
    assert_eq!(aws.call_count("CreateUser", Some(&user)).await, 1);
    assert_eq!(aws.call_count("DeleteUser", Some(&user)).await, 1);
    wait_for("compensated user gone", || async {
        user_status(&cache.ec, &user).await.is_none()
    })
    .await;

    // Revoke of a user that is `modifying` waits it out; revoke of a missing user succeeds.
    let user = username("mod");
    let created = provider.create(&request(&user)).await.unwrap();
    aws.set_modifying(
        TransitionKind::User,
        Some(&user),
        Duration::from_millis(800),
    )
    .await;
    cache
        .ec
        .modify_user()
        .user_id(&user)
        .access_string("on ~* +@read")
        .send()
        .await
        .unwrap();
    assert_eq!(
        user_status(&cache.ec, &user).await.as_deref(),
        Some("modifying")
    );
    provider
        .revoke(&created.external)
        .await
        .expect("revoke waits for the user");
    assert!(aws.call_count("DeleteUser", Some(&user)).await >= 2);
    assert_eq!(user_status(&cache.ec, &user).await, None);
    provider
        .revoke(&ExternalRef::new(username("never")))
        .await
        .expect("revoking a user that never existed succeeds");

    let _ = cache.ec.delete_user().user_id(&other).send().await;
    cache.cleanup().await;
}

// The provider suite, one test per behaviour, each on its own user group and serverless cache
// (the emulator is shared by the process): credentials must AUTH on the cache's mirror.
leasehold_testkit::provider_conformance_tests!(serverless_cache, |test| async move {
    let aws = common::emulator(test).await?;
    let cache = Cache::new(aws, "ec-conf", Duration::from_millis(300)).await;
    let provider = cache.provider().await;
    let probe = MirrorProbe { port: cache.port };
    Some(
        Fixture::provider(provider)
            .with_probe(probe)
            .after(move || cache.cleanup()),
    )
});

#[tokio::test]
async fn reconcile_removes_users_of_the_group_without_a_lease() {
    let test = "reconcile_removes_users_of_the_group_without_a_lease";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-rec", Duration::from_millis(300)).await;
    let provider = Arc::new(cache.provider().await);
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(
            DynamicSecret::builder("orders-cache", provider.clone())
                .build()
                .unwrap(),
        )
        .build()
        .await
        .unwrap();
    let kept = manager
        .issue("orders-cache", IssueRequest::new())
        .await
        .unwrap();
    // An orphan: made by the provider, its lease lost (a crash after create, a wiped store).
    let orphan_name = username("orphan");
    let orphan = provider
        .create(
            &request(&orphan_name).with_installation(Some(manager.installation_id().to_string())),
        )
        .await
        .unwrap();
    // Not ours: a prefixed user outside the group, and an unprefixed member.
    let stranger = username("stranger");
    cache
        .ec
        .create_user()
        .user_id(&stranger)
        .user_name(&stranger)
        .engine("redis")
        .no_password_required(true)
        .access_string("off")
        .send()
        .await
        .unwrap();

    let listed = provider.list_managed("lh-").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.external.id.as_str()).collect();
    assert!(ids.contains(&orphan_name.as_str()), "{ids:?}");
    assert!(ids.contains(&kept.credentials.principal()), "{ids:?}");
    assert!(!ids.contains(&stranger.as_str()), "{ids:?}");
    assert!(!ids.contains(&cache.default_user.as_str()), "{ids:?}");
    let tagged = listed
        .iter()
        .find(|m| m.external.id == orphan_name)
        .unwrap();
    assert!(tagged
        .lease_id
        .as_deref()
        .is_some_and(|l| l.starts_with("orders-cache/")));

    let dry = manager.reconcile("orders-cache", false).await.unwrap();
    assert_eq!(dry.orphans.len(), 1, "{dry:?}");
    assert!(dry.removed.is_empty());
    assert!(authenticates(cache.port, &orphan_name, &password_of(&orphan.credentials)).await);
    let applied = manager.reconcile("orders-cache", true).await.unwrap();
    assert_eq!(applied.removed.len(), 1, "{applied:?}");
    assert_eq!(user_status(&cache.ec, &orphan_name).await, None);
    assert!(user_status(&cache.ec, kept.credentials.principal())
        .await
        .is_some());
    assert!(user_status(&cache.ec, &stranger).await.is_some());

    manager.revoke(&kept.lease_id).await.unwrap();
    manager.shutdown().await;
    let _ = cache.ec.delete_user().user_id(&stranger).send().await;
    cache.cleanup().await;
}

/// A manager for `secret` on `provider` with its own store of installation `installation`.
async fn manager_of(
    installation: &str,
    secret: &str,
    provider: Arc<leasehold_elasticache::ElastiCacheProvider>,
    ttl: Duration,
    run_worker: bool,
) -> LeaseManager {
    LeaseManager::builder(Arc::new(
        MemoryStore::with_installation_id(installation).unwrap(),
    ))
    .secret(
        DynamicSecret::builder(secret, provider)
            .default_ttl(ttl)
            .max_ttl(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .run_worker(run_worker)
    .build()
    .await
    .expect("manager")
}

/// Ids of the emulator's users whose id starts with `prefix`.
async fn user_ids_with_prefix(ec: &aws_sdk_elasticache::Client, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut marker = None;
    loop {
        let out = ec
            .describe_users()
            .set_marker(marker.clone())
            .send()
            .await
            .expect("DescribeUsers");
        ids.extend(
            out.users()
                .iter()
                .filter_map(|u| u.user_id())
                .filter(|id| id.starts_with(prefix))
                .map(str::to_string),
        );
        marker = out.marker().map(str::to_string);
        if marker.is_none() {
            return ids;
        }
    }
}

/// Two installations (two stores, two managers, two provider instances) issue into one user
/// group: B's reconcile removes B's own orphan and keeps A's live user, which still AUTHs.
#[tokio::test]
async fn two_installations_share_a_user_group_and_reconcile_only_their_own() {
    let test = "two_installations_share_a_user_group_and_reconcile_only_their_own";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-two", Duration::from_millis(300)).await;
    let inst_a = format!("a{}", leasehold_core::template::random_lowercase(7));
    let inst_b = format!("b{}", leasehold_core::template::random_lowercase(7));
    let hour = Duration::from_secs(3600);
    let a = manager_of(
        &inst_a,
        "shared",
        Arc::new(cache.provider().await),
        hour,
        false,
    )
    .await;
    let b = manager_of(
        &inst_b,
        "shared",
        Arc::new(cache.provider().await),
        hour,
        false,
    )
    .await;

    let a_live = a
        .issue("shared", IssueRequest::new())
        .await
        .expect("A issues");
    let b_live = b
        .issue("shared", IssueRequest::new())
        .await
        .expect("B issues");
    let b_lost = b
        .issue("shared", IssueRequest::new())
        .await
        .expect("B issues");
    for (lease, inst) in [(&a_live, &inst_a), (&b_live, &inst_b), (&b_lost, &inst_b)] {
        let id = lease.credentials.principal();
        assert!(id.starts_with(&format!("lh-{inst}-")), "{id}");
        assert!(
            id.len() <= 40,
            "an ElastiCache user id has at most 40 characters: {id}"
        );
        leasehold_core::NameRule::ElastiCacheUserId
            .check(id)
            .expect("a valid user id");
        // The installation tag is on the user itself.
        let arn = cache
            .ec
            .describe_users()
            .user_id(id)
            .send()
            .await
            .unwrap()
            .users()[0]
            .arn()
            .expect("a user ARN")
            .to_string();
        let tags = cache
            .ec
            .list_tags_for_resource()
            .resource_name(&arn)
            .send()
            .await
            .expect("ListTagsForResource")
            .tag_list()
            .to_vec();
        let tag = tags
            .iter()
            .find(|t| t.key() == Some(leasehold_aws::tags::INSTALLATION))
            .and_then(|t| t.value());
        assert_eq!(tag, Some(inst.as_str()), "{id}: {tags:?}");
    }
    let members = group_members(&cache.ec, &cache.group).await;
    for lease in [&a_live, &b_live, &b_lost] {
        assert!(members.contains(&lease.credentials.principal().to_string()));
    }

    // B loses the record of one lease: that user is now B's orphan.
    let lost = b.lookup(&b_lost.lease_id).await.unwrap();
    b.store()
        .delete(&lost.id, lost.version)
        .await
        .expect("delete B's record");

    let report = b.reconcile("shared", true).await.expect("B reconciles");
    let ids = |v: &[leasehold_core::ManagedCredential]| -> Vec<String> {
        v.iter().map(|c| c.external.id.clone()).collect()
    };
    assert_eq!(report.installation, inst_b);
    assert_eq!(
        ids(&report.removed),
        vec![b_lost.credentials.principal().to_string()],
        "{report:?}"
    );
    assert_eq!(
        ids(&report.foreign),
        vec![a_live.credentials.principal().to_string()],
        "{report:?}"
    );
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        user_status(&cache.ec, b_lost.credentials.principal()).await,
        None
    );
    wait_for("B's orphan refused on the mirror", || async {
        !authenticates(
            cache.port,
            b_lost.credentials.principal(),
            &password_of(&b_lost.credentials),
        )
        .await
    })
    .await;
    // A's user: AUTH and a command on one connection, both replies checked.
    for lease in [&a_live, &b_live] {
        let (auth, ping) = common::auth_then_ping(
            cache.port,
            lease.credentials.principal(),
            &password_of(&lease.credentials),
        )
        .await;
        assert_eq!((auth.as_str(), ping.as_str()), ("+OK", "+PONG"));
    }

    let report = a.reconcile("shared", true).await.expect("A reconciles");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(
        ids(&report.foreign),
        vec![b_live.credentials.principal().to_string()]
    );

    a.revoke(&a_live.lease_id).await.unwrap();
    b.revoke(&b_live.lease_id).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
    cache.cleanup().await;
}

/// The TTL counts from activation: with the user group `modifying` for longer than the TTL,
/// concurrent issues (some arriving while the group is already busy) still return credentials
/// with at least `ttl` to live, or fail and leave nothing behind.
#[tokio::test]
async fn credentials_issued_through_a_long_modifying_window_are_not_expired_on_arrival() {
    let test = "credentials_issued_through_a_long_modifying_window_are_not_expired_on_arrival";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let window = Duration::from_secs(5);
    let ttl = Duration::from_secs(3);
    let margin = chrono::Duration::milliseconds(1000);
    let cache = Cache::new(aws.clone(), "ec-ttl", window).await;
    let installation = format!("t{}", leasehold_core::template::random_lowercase(7));
    let manager = Arc::new(
        manager_of(
            &installation,
            "short",
            Arc::new(cache.provider().await),
            ttl,
            true,
        )
        .await,
    );

    // Three issues at once, three more while the group is modifying for the first ones.
    let issue = |delay: Duration| {
        let manager = manager.clone();
        async move {
            tokio::time::sleep(delay).await;
            let started = chrono::Utc::now();
            let r = manager.issue("short", IssueRequest::new()).await;
            (started, chrono::Utc::now(), r)
        }
    };
    let results = futures::future::join_all(
        [0u64, 0, 0, 1500, 1500, 1500]
            .into_iter()
            .map(|ms| issue(Duration::from_millis(ms))),
    )
    .await;

    let mut issued = 0;
    for (started, returned, r) in &results {
        match r {
            Ok(lease) => {
                issued += 1;
                let waited = (*returned - *started).to_std().unwrap();
                println!(
                    "issue waited {:.1} s; expires {:.1} s after it returned",
                    waited.as_secs_f64(),
                    (lease.expires_at - *returned).num_milliseconds() as f64 / 1000.0
                );
                assert!(
                    waited > ttl,
                    "the test needs issues that wait longer than the TTL ({waited:?})"
                );
                assert!(
                    lease.expires_at > *returned,
                    "expired on arrival: expires_at {} is before issue returned at {returned}",
                    lease.expires_at
                );
                let left = lease.expires_at - *returned;
                assert!(
                    left >= chrono::Duration::from_std(ttl).unwrap() - margin,
                    "only {} ms of a {} ms TTL left on arrival",
                    left.num_milliseconds(),
                    ttl.as_millis()
                );
                assert!(lease.live(), "{:?}", lease.readiness);
            }
            Err(e) => println!("an issue failed: {e}"),
        }
    }
    assert!(issued >= 1, "no issue succeeded: {results:?}");

    // Every lease expires and the worker revokes it; nothing of this installation is left,
    // including whatever a failed issue may have created.
    let mark = format!("lh-{installation}-");
    wait_for("every user of the installation deleted", || async {
        user_ids_with_prefix(&cache.ec, &mark).await.is_empty()
    })
    .await;
    wait_for("only the default user left in the group", || async {
        group_members(&cache.ec, &cache.group).await == vec![cache.default_user.clone()]
    })
    .await;
    wait_for("no lease records left", || async {
        manager
            .list(&leasehold_core::LeaseFilter::all())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    manager.shutdown().await;
    cache.cleanup().await;
}
