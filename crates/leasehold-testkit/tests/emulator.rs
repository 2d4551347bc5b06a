//! Acceptance tests of the AWS emulator, driven with the AWS SDK for Rust: user groups and ACLs
//! with their `modifying` windows, credentials that really authenticate on the cache's Redis
//! mirror and stop after revoke, and fault injection.

#![cfg(feature = "servers")]

use std::time::{Duration, Instant};

use aws_sdk_elasticache as elasticache;
use aws_sdk_memorydb as memorydb;
use leasehold_testkit::servers::{
    skip_or_panic, unique_name, AwsEmulator, FaultSpec, MirrorKind, TransitionKind,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const POLL: Duration = Duration::from_millis(50);
const PATIENCE: Duration = Duration::from_secs(20);

/// Send `AUTH user password` and `PING` on one connection and return both replies: a failed
/// AUTH leaves the connection as `default`, so the AUTH reply itself must be checked.
async fn auth_then_ping(port: u16, user: &str, password: &str) -> (String, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut cmd = Vec::new();
    for args in [vec!["AUTH", user, password], vec!["PING"]] {
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    write.write_all(&cmd).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let first = lines.next_line().await.unwrap().unwrap_or_default();
    let second = lines.next_line().await.unwrap().unwrap_or_default();
    (first, second)
}

async fn emulator_with_mirror(test: &str) -> Option<std::sync::Arc<AwsEmulator>> {
    let aws = AwsEmulator::shared(test).await?;
    if !aws.has_mirror().await {
        skip_or_panic(test, "the emulator found no redis-server for cache mirrors");
        return None;
    }
    Some(aws)
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

async fn group_status(ec: &elasticache::Client, id: &str) -> String {
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

async fn user_status(ec: &elasticache::Client, id: &str) -> Option<String> {
    match ec.describe_users().user_id(id).send().await {
        Ok(out) => Some(out.users()[0].status().unwrap_or_default().to_string()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_user_not_found_fault()) =>
        {
            None
        }
        Err(e) => panic!("DescribeUsers: {e:?}"),
    }
}

#[tokio::test]
async fn elasticache_user_group_modifying_then_active_and_mirror_follows() {
    let test = "elasticache_user_group_modifying_then_active_and_mirror_follows";
    let Some(aws) = emulator_with_mirror(test).await else {
        return;
    };
    let ec = elasticache::Client::new(&aws.sdk_config().await);
    let user_id = unique_name("ec-user");
    let user_name = unique_name("ec-name");
    let group_id = unique_name("ec-group");
    let rg_id = unique_name("ec-rg");
    let password = "correct-horse-battery-staple-1";
    aws.set_modifying(
        TransitionKind::UserGroup,
        Some(&group_id),
        Duration::from_millis(800),
    )
    .await;

    // Ids are lower-cased, as on AWS; new users start `creating`.
    let created = ec
        .create_user()
        .user_id(user_id.to_uppercase())
        .user_name(&user_name)
        .engine("redis")
        .passwords(password)
        .access_string("on ~* +@all")
        .send()
        .await
        .unwrap();
    assert_eq!(created.user_id(), Some(user_id.as_str()));
    assert_eq!(created.status(), Some("creating"));

    let group = ec
        .create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .user_ids("default")
        .send()
        .await
        .unwrap();
    assert_eq!(group.status(), Some("creating"));
    wait_for("group active", || async {
        group_status(&ec, &group_id).await == "active"
    })
    .await;
    wait_for("user active", || async {
        user_status(&ec, &user_id).await.as_deref() == Some("active")
    })
    .await;

    let rg = ec
        .create_replication_group()
        .replication_group_id(&rg_id)
        .replication_group_description("leasehold emulator test")
        .user_group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let endpoint = rg.replication_group().unwrap().node_groups()[0]
        .primary_endpoint()
        .unwrap()
        .clone();
    assert_eq!(endpoint.address(), Some("127.0.0.1"));
    let port = u16::try_from(endpoint.port().unwrap()).unwrap();
    let mirror = aws
        .mirror(MirrorKind::ReplicationGroup, &rg_id)
        .await
        .unwrap();
    assert_eq!(mirror.port, port);

    // Not a member yet: refused.
    let (auth, _) = auth_then_ping(port, &user_name, password).await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");

    let before = aws.call_count("ModifyUserGroup", Some(&group_id)).await;
    let modified = ec
        .modify_user_group()
        .user_group_id(&group_id)
        .user_ids_to_add(&user_id)
        .send()
        .await
        .unwrap();
    assert_eq!(modified.status(), Some("modifying"));
    assert_eq!(
        modified.pending_changes().unwrap().user_ids_to_add(),
        std::slice::from_ref(&user_id)
    );
    let second = ec
        .modify_user_group()
        .user_group_id(&group_id)
        .user_ids_to_remove(&user_id)
        .send()
        .await
        .unwrap_err();
    assert!(
        second
            .as_service_error()
            .is_some_and(|e| e.is_invalid_user_group_state_fault()),
        "{second:?}"
    );
    assert_eq!(group_status(&ec, &group_id).await, "modifying");
    wait_for("group active again", || async {
        group_status(&ec, &group_id).await == "active"
    })
    .await;
    assert_eq!(
        aws.call_count("ModifyUserGroup", Some(&group_id)).await,
        before + 2
    );
    let described = ec
        .describe_user_groups()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    assert!(described.user_groups()[0].user_ids().contains(&user_id));

    let (auth, ping) = auth_then_ping(port, &user_name, password).await;
    assert_eq!((auth.as_str(), ping.as_str()), ("+OK", "+PONG"));
    let (auth, _) = auth_then_ping(port, &user_name, "wrong-password-000000").await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");

    // Revoke: delete the user; once it is gone, AUTH is refused.
    let deleted = ec.delete_user().user_id(&user_id).send().await.unwrap();
    assert_eq!(deleted.status(), Some("deleting"));
    wait_for("user gone", || async {
        user_status(&ec, &user_id).await.is_none()
    })
    .await;
    let (auth, _) = auth_then_ping(port, &user_name, password).await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");

    // Unknown ids are AWS errors.
    let err = ec
        .modify_user_group()
        .user_group_id(unique_name("no-such-group"))
        .user_ids_to_add("default")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_user_group_not_found_fault()));

    ec.delete_replication_group()
        .replication_group_id(&rg_id)
        .send()
        .await
        .unwrap();
    ec.delete_user_group()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn elasticache_group_limits_are_enforced() {
    let test = "elasticache_group_limits_are_enforced";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    let ec = elasticache::Client::new(&aws.sdk_config().await);
    let group_id = unique_name("ec-nodefault");
    // A redis group must hold the default user.
    let err = ec
        .create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_default_user_required()),
        "{err:?}"
    );
    // An access string Redis' ACL parser refuses is refused at CreateUser.
    let err = ec
        .create_user()
        .user_id(unique_name("ec-bad"))
        .user_name(unique_name("ec-bad"))
        .engine("redis")
        .passwords("correct-horse-battery-staple-1")
        .access_string("on ~* +nosuchcommand")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception()),
        "{err:?}"
    );
    // At most 100 users in a group.
    let mut ids = vec!["default".to_string()];
    for _ in 0..100 {
        let id = unique_name("ec-many");
        ec.create_user()
            .user_id(&id)
            .user_name(&id)
            .engine("redis")
            .no_password_required(true)
            .access_string("off")
            .send()
            .await
            .unwrap();
        ids.push(id);
    }
    let err = ec
        .create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .set_user_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception()),
        "{err:?}"
    );
    ec.create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .set_user_ids(Some(ids[..100].to_vec()))
        .send()
        .await
        .unwrap();
    for id in &ids[1..] {
        wait_for("user active", || async {
            user_status(&ec, id).await.as_deref() == Some("active")
        })
        .await;
    }
    wait_for("group active", || async {
        group_status(&ec, &group_id).await == "active"
    })
    .await;
    ec.delete_user_group()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    for id in &ids[1..] {
        ec.delete_user().user_id(id).send().await.unwrap();
    }
}

async fn acl_status(db: &memorydb::Client, name: &str) -> String {
    let out = db.describe_acls().acl_name(name).send().await.unwrap();
    out.acls()[0].status().unwrap_or_default().to_string()
}

#[tokio::test]
async fn memorydb_acl_modifying_then_active_and_mirror_follows() {
    let test = "memorydb_acl_modifying_then_active_and_mirror_follows";
    let Some(aws) = emulator_with_mirror(test).await else {
        return;
    };
    let db = memorydb::Client::new(&aws.sdk_config().await);
    let user = unique_name("mdb-user");
    let acl = unique_name("mdb-acl");
    let cluster = unique_name("mdb-cluster");
    let password = "correct-horse-battery-staple-2";
    aws.set_modifying(TransitionKind::Acl, Some(&acl), Duration::from_millis(800))
        .await;

    db.create_user()
        .user_name(&user)
        .access_string("on ~* &* +@all")
        .authentication_mode(
            memorydb::types::AuthenticationMode::builder()
                .r#type(memorydb::types::InputAuthenticationType::Password)
                .passwords(password)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let created = db.create_acl().acl_name(&acl).send().await.unwrap();
    assert_eq!(created.acl().unwrap().status(), Some("creating"));
    wait_for("acl active", || async {
        acl_status(&db, &acl).await == "active"
    })
    .await;

    // A cluster without TLS still keeps the ACL it asked for (moto would force open-access).
    let out = db
        .create_cluster()
        .cluster_name(&cluster)
        .node_type("db.t4g.small")
        .acl_name(&acl)
        .tls_enabled(false)
        .send()
        .await
        .unwrap();
    let c = out.cluster().unwrap();
    assert_eq!(c.acl_name(), Some(acl.as_str()));
    let port = u16::try_from(c.cluster_endpoint().unwrap().port()).unwrap();
    let (auth, _) = auth_then_ping(port, &user, password).await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");

    let before = aws.call_count("UpdateACL", Some(&acl)).await;
    let updated = db
        .update_acl()
        .acl_name(&acl)
        .user_names_to_add(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.acl().unwrap().status(), Some("modifying"));
    let second = db
        .update_acl()
        .acl_name(&acl)
        .user_names_to_remove(&user)
        .send()
        .await
        .unwrap_err();
    assert!(
        second
            .as_service_error()
            .is_some_and(|e| e.is_invalid_acl_state_fault()),
        "{second:?}"
    );
    wait_for("acl active again", || async {
        acl_status(&db, &acl).await == "active"
    })
    .await;
    assert_eq!(aws.call_count("UpdateACL", Some(&acl)).await, before + 2);

    let (auth, ping) = auth_then_ping(port, &user, password).await;
    assert_eq!((auth.as_str(), ping.as_str()), ("+OK", "+PONG"));

    db.delete_user().user_name(&user).send().await.unwrap();
    let (auth, ping) = auth_then_ping(port, &user, password).await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");
    // The ACL has no default user: the connection stays unauthenticated.
    assert!(ping.starts_with("-NOAUTH"), "{ping}");

    let err = db
        .describe_acls()
        .acl_name(unique_name("no-such-acl"))
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_acl_not_found_fault()));

    db.delete_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    db.delete_acl().acl_name(&acl).send().await.unwrap();
}

#[tokio::test]
async fn injected_faults_throttle_fail_and_delay_calls() {
    let test = "injected_faults_throttle_fail_and_delay_calls";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    let ec = elasticache::Client::new(&aws.sdk_config().await);
    let group_id = unique_name("ec-faults");
    aws.set_modifying(TransitionKind::UserGroup, Some(&group_id), Duration::ZERO)
        .await;
    ec.create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .user_ids("default")
        .send()
        .await
        .unwrap();

    // Two throttled answers: the SDK's standard retry (3 attempts) gets through.
    let before = aws.call_count("DescribeUserGroups", Some(&group_id)).await;
    aws.inject_fault(
        FaultSpec::throttle("DescribeUserGroups")
            .resource(&group_id)
            .times(2),
    )
    .await;
    ec.describe_user_groups()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        aws.call_count("DescribeUserGroups", Some(&group_id)).await,
        before + 3
    );

    // A permanent error comes back as the typed SDK error and is not retried.
    aws.inject_fault(
        FaultSpec::fail("ModifyUserGroup", "InvalidParameterValue")
            .resource(&group_id)
            .message("injected"),
    )
    .await;
    let before = aws.call_count("ModifyUserGroup", Some(&group_id)).await;
    let err = ec
        .modify_user_group()
        .user_group_id(&group_id)
        .user_ids_to_remove("default")
        .send()
        .await
        .unwrap_err();
    let service = err.as_service_error().expect("a service error");
    assert!(service.is_invalid_parameter_value_exception(), "{err:?}");
    assert_eq!(
        aws.call_count("ModifyUserGroup", Some(&group_id)).await,
        before + 1
    );

    // Latency, scoped to this group only.
    aws.inject_fault(
        FaultSpec::latency("DescribeUserGroups", Duration::from_millis(400)).resource(&group_id),
    )
    .await;
    let started = Instant::now();
    ec.describe_user_groups()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A fault left pending can be listed and cleared.
    aws.inject_fault(
        FaultSpec::fail("DeleteUserGroup", "InternalFailure")
            .status(500)
            .resource(&group_id)
            .always(),
    )
    .await;
    let pending = aws.pending_faults().await;
    assert!(pending.iter().any(|f| f["resource"] == group_id.as_str()));
    assert_eq!(
        aws.clear_faults(Some("DeleteUserGroup"), Some(&group_id))
            .await,
        1
    );
    ec.delete_user_group()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();

    // MemoryDB speaks JSON: the injected code still maps to the typed error.
    let db = memorydb::Client::new(&aws.sdk_config().await);
    let acl = unique_name("mdb-faults");
    aws.inject_fault(
        FaultSpec::fail("UpdateACL", "InvalidACLStateFault")
            .service("memorydb")
            .resource(&acl),
    )
    .await;
    let err = db
        .update_acl()
        .acl_name(&acl)
        .user_names_to_add("default")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_acl_state_fault()),
        "{err:?}"
    );
}

/// `n` calls of `DescribeUserGroups` on `group_id`, one after the other; `true` where the
/// injected error answered.
async fn describe_outcomes(ec: &elasticache::Client, group_id: &str, n: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match ec
            .describe_user_groups()
            .user_group_id(group_id)
            .send()
            .await
        {
            Ok(_) => out.push(false),
            Err(e) => {
                use elasticache::error::ProvideErrorMetadata;
                assert_eq!(e.code(), Some("InvalidParameterValue"), "{e:?}");
                out.push(true);
            }
        }
    }
    out
}

#[tokio::test]
async fn probabilistic_faults_fire_on_a_seeded_share_of_the_calls() {
    let test = "probabilistic_faults_fire_on_a_seeded_share_of_the_calls";
    let Some(aws) = AwsEmulator::shared(test).await else {
        return;
    };
    let ec = elasticache::Client::new(&aws.sdk_config().await);
    let group_id = unique_name("ec-prob");
    aws.set_modifying(TransitionKind::UserGroup, Some(&group_id), Duration::ZERO)
        .await;
    ec.create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .user_ids("default")
        .send()
        .await
        .unwrap();
    // A code the SDK does not retry: one call, one draw.
    let spec = || {
        FaultSpec::fail("DescribeUserGroups", "InvalidParameterValue")
            .resource(&group_id)
            .always()
            .probability(0.3)
    };

    // p = 0.3 over 200 calls: about 60 fire (30..90 is more than four standard deviations).
    aws.inject_fault(spec().seed(42)).await;
    let first = describe_outcomes(&ec, &group_id, 200).await;
    let taken = aws
        .take_faults(None, Some("DescribeUserGroups"), Some(&group_id))
        .await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    let fired = first.iter().filter(|f| **f).count();
    assert!((30..=90).contains(&fired), "{fired} of 200 fired");
    assert_eq!(taken[0]["fired"].as_u64(), Some(fired as u64));
    assert_eq!(taken[0]["matched"].as_u64(), Some(200));
    assert_eq!(taken[0]["probability"].as_f64(), Some(0.3));

    // The same seed fires on the same calls again; another seed on others.
    aws.inject_fault(spec().seed(42)).await;
    let again = describe_outcomes(&ec, &group_id, 200).await;
    aws.clear_faults(Some("DescribeUserGroups"), Some(&group_id))
        .await;
    assert_eq!(first, again);
    aws.inject_fault(spec().seed(7)).await;
    let other = describe_outcomes(&ec, &group_id, 200).await;
    aws.clear_faults(Some("DescribeUserGroups"), Some(&group_id))
        .await;
    assert_ne!(first, other);

    // With `times`, a probabilistic fault fires on at most that many calls, then is gone.
    aws.inject_fault(spec().times(5).seed(1)).await;
    let limited = describe_outcomes(&ec, &group_id, 200).await;
    assert_eq!(limited.iter().filter(|f| **f).count(), 5);
    assert!(!aws
        .pending_faults()
        .await
        .iter()
        .any(|f| f["resource"] == group_id.as_str()));

    // Without a probability nothing changed: the next `count` calls, every one of them.
    aws.inject_fault(
        FaultSpec::fail("DescribeUserGroups", "InvalidParameterValue")
            .resource(&group_id)
            .times(3),
    )
    .await;
    let plain = describe_outcomes(&ec, &group_id, 5).await;
    assert_eq!(plain, [true, true, true, false, false]);

    // "*" matches every operation of the service (scoped here to this group).
    aws.inject_fault(
        FaultSpec::fail("*", "InvalidParameterValue")
            .service("elasticache")
            .resource(&group_id)
            .times(2),
    )
    .await;
    let err = ec
        .modify_user_group()
        .user_group_id(&group_id)
        .user_ids_to_add("default")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception()),
        "{err:?}"
    );
    assert_eq!(describe_outcomes(&ec, &group_id, 2).await, [true, false]);

    // Specs the emulator cannot use are refused with a message naming the field.
    let refused = [
        (spec().probability(0.0), "probability"),
        (spec().probability(1.5), "probability"),
        (
            FaultSpec::fail("DescribeUserGroups", "InvalidParameterValue").seed(3),
            "seed needs probability",
        ),
        (
            FaultSpec::throttle("*").resource(&group_id),
            "needs a service",
        ),
    ];
    for (bad, needle) in refused {
        let err = aws.try_inject_fault(bad.clone()).await.unwrap_err();
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
    assert!(!aws
        .pending_faults()
        .await
        .iter()
        .any(|f| f["resource"] == group_id.as_str()));

    ec.delete_user_group()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn elasticache_modify_user_rotates_the_password_on_a_serverless_cache() {
    let test = "elasticache_modify_user_rotates_the_password_on_a_serverless_cache";
    let Some(aws) = emulator_with_mirror(test).await else {
        return;
    };
    let ec = elasticache::Client::new(&aws.sdk_config().await);
    let user_id = unique_name("ec-rot");
    let group_id = unique_name("ec-rot-group");
    let cache = unique_name("ec-rot-cache");
    let (old, new) = ("old-password-0123456789", "new-password-0123456789");
    aws.set_modifying(TransitionKind::UserGroup, Some(&group_id), Duration::ZERO)
        .await;
    ec.create_user()
        .user_id(&user_id)
        .user_name(&user_id)
        .engine("redis")
        .passwords(old)
        .access_string("on ~* +@all")
        .send()
        .await
        .unwrap();
    ec.create_user_group()
        .user_group_id(&group_id)
        .engine("redis")
        .user_ids("default")
        .user_ids(&user_id)
        .send()
        .await
        .unwrap();
    wait_for("group active", || async {
        group_status(&ec, &group_id).await == "active"
    })
    .await;
    let created = ec
        .create_serverless_cache()
        .serverless_cache_name(&cache)
        .engine("redis")
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    let endpoint = created.serverless_cache().unwrap().endpoint().unwrap();
    assert_eq!(endpoint.address(), Some("127.0.0.1"));
    let port = u16::try_from(endpoint.port().unwrap()).unwrap();
    let (auth, ping) = auth_then_ping(port, &user_id, old).await;
    assert_eq!((auth.as_str(), ping.as_str()), ("+OK", "+PONG"));

    wait_for("user active", || async {
        user_status(&ec, &user_id).await.as_deref() == Some("active")
    })
    .await;
    let modified = ec
        .modify_user()
        .user_id(&user_id)
        .passwords(new)
        .send()
        .await
        .unwrap();
    assert_eq!(modified.status(), Some("modifying"));
    // A user that is modifying cannot be modified again.
    let err = ec
        .modify_user()
        .user_id(&user_id)
        .passwords(old)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_user_state_fault()),
        "{err:?}"
    );
    wait_for("user active again", || async {
        user_status(&ec, &user_id).await.as_deref() == Some("active")
    })
    .await;
    let (auth, _) = auth_then_ping(port, &user_id, old).await;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");
    let (auth, ping) = auth_then_ping(port, &user_id, new).await;
    assert_eq!((auth.as_str(), ping.as_str()), ("+OK", "+PONG"));

    ec.delete_serverless_cache()
        .serverless_cache_name(&cache)
        .send()
        .await
        .unwrap();
    wait_for("cache gone", || async {
        ec.describe_serverless_caches()
            .serverless_cache_name(&cache)
            .send()
            .await
            .is_err()
    })
    .await;
    ec.delete_user_group()
        .user_group_id(&group_id)
        .send()
        .await
        .unwrap();
    ec.delete_user().user_id(&user_id).send().await.unwrap();
}
