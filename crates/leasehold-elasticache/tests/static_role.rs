//! The static role target against the emulator: the password of an existing user rotates
//! (through the fleet rotator of `leasehold_core::static_role`) with a two-password overlap,
//! checked by `AUTH` on the cache's Redis mirror.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{authenticates, group_members, user_status, wait_for, Cache};
use leasehold_core::static_role::{
    MemoryPublisher, RotationOutcome, RotationSchedule, Stage, StaticCredential, StaticRoleOptions,
    StaticRolePublisher, StaticRoleRotator, StaticRoleTarget,
};
use leasehold_core::{ErrorKind, LeaseStore, MemoryStore};
use leasehold_elasticache::ElastiCacheUserTarget;
use leasehold_testkit::servers::unique_name;
use secrecy::{ExposeSecret, SecretString};

/// Creates a password user in the cache's group, out of band (the static role's user).
async fn existing_user(cache: &Cache, password: &str) -> String {
    let id = unique_name("app-writer");
    cache
        .ec
        .create_user()
        .user_id(&id)
        .user_name(&id)
        .engine("redis")
        .passwords(password)
        .access_string("on ~* +@all")
        .send()
        .await
        .expect("CreateUser");
    wait_for("user active", || async {
        user_status(&cache.ec, &id).await.as_deref() == Some("active")
    })
    .await;
    cache
        .ec
        .modify_user_group()
        .user_group_id(&cache.group)
        .user_ids_to_add(&id)
        .send()
        .await
        .expect("ModifyUserGroup");
    wait_for("user in group", || async {
        group_members(&cache.ec, &cache.group).await.contains(&id)
    })
    .await;
    id
}

#[tokio::test]
async fn old_password_keeps_working_until_the_grace_period_ends() {
    let test = "old_password_keeps_working_until_the_grace_period_ends";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-static", Duration::from_millis(300)).await;
    let old = "Old-static-password-0123456789";
    let user = existing_user(&cache, old).await;
    assert!(authenticates(cache.port, &user, old).await);

    let sdk = aws.sdk_config().await;
    let target = ElastiCacheUserTarget::new(&sdk, &user)
        .unwrap()
        .readiness_endpoint(&format!("redis://127.0.0.1:{}", cache.port), None)
        .unwrap()
        .ready_timeout(Duration::from_secs(30));
    // The published secret starts with the password the user has now, so the first rotation
    // keeps it valid for the grace instead of cutting it off.
    let publisher = Arc::new(MemoryPublisher::new("ec-static"));
    publisher
        .put_pending("v0", &StaticCredential::new(&user, SecretString::from(old)))
        .await
        .unwrap();
    publisher.promote("v0").await.unwrap();
    let store = MemoryStore::new();
    let grace = Duration::from_secs(2);
    let options = StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(3600)))
        .grace(grace)
        .claim_hold(Duration::from_secs(3))
        .poll(Duration::from_millis(100))
        .test_timeout(Duration::from_secs(30));
    let rotator = |owner: &str| {
        Arc::new(
            StaticRoleRotator::new(
                "ec-static",
                Arc::new(target.clone()),
                publisher.clone(),
                store.coordination().unwrap(),
                owner,
                options.clone(),
            )
            .unwrap(),
        )
    };
    let first = rotator("instance-1");
    first.validate().await.expect("validate");

    // A client on the old password, checking until it is refused.
    let port = cache.port;
    let client_user = user.clone();
    let old_client = tokio::spawn(async move {
        loop {
            if !authenticates(port, &client_user, old).await {
                return Utc::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let asked = Utc::now();
    let outcome = first
        .rotate_now(Duration::from_secs(30))
        .await
        .expect("rotate");
    assert!(
        matches!(outcome, RotationOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    let current = publisher.get(Stage::Current).await.unwrap().unwrap();
    let new = current.credential.password.expose_secret().to_string();
    assert_ne!(new, old);
    assert_eq!(current.credential.username, user);
    assert!(current.credential.user_arn.is_some());
    // Both passwords work during the overlap.
    assert!(authenticates(cache.port, &user, &new).await, "new works");
    assert!(
        authenticates(cache.port, &user, old).await,
        "old still works"
    );

    let task = first.clone().start();
    let refused_at = tokio::time::timeout(Duration::from_secs(30), old_client)
        .await
        .expect("the old password is dropped after the grace period")
        .unwrap();
    let grace_ends = asked + chrono::Duration::from_std(grace).unwrap();
    assert!(
        refused_at >= grace_ends,
        "the old password stopped at {refused_at}, before its grace ended at {grace_ends}"
    );
    assert!(
        authenticates(cache.port, &user, &new).await,
        "new still works"
    );
    task.stop().await;

    // A restarted instance sharing the store and the publisher finds the rotation done: it
    // does not rotate again, and the fleet's password keeps working.
    let restarted = rotator("instance-2");
    // (The stopped task may have been waiting for the drop to settle; the next holder
    // finishes it.)
    let mut outcome = restarted.tick().await.expect("tick");
    if outcome == RotationOutcome::DroppedPrevious {
        outcome = restarted.tick().await.expect("tick");
    }
    assert!(
        matches!(outcome, RotationOutcome::Idle { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        publisher
            .get(Stage::Current)
            .await
            .unwrap()
            .unwrap()
            .version_id,
        current.version_id
    );
    assert!(authenticates(cache.port, &user, &new).await);

    let _ = cache.ec.delete_user().user_id(&user).send().await;
    cache.cleanup().await;
}

#[tokio::test]
async fn users_without_passwords_are_left_alone() {
    let test = "users_without_passwords_are_left_alone";
    let Some(aws) = leasehold_testkit::servers::AwsEmulator::shared(test).await else {
        return;
    };
    let ec = aws_sdk_elasticache::Client::new(&aws.sdk_config().await);
    let id = unique_name("ec-nopass");
    ec.create_user()
        .user_id(&id)
        .user_name(&id)
        .engine("redis")
        .no_password_required(true)
        .access_string("on ~* +@read")
        .send()
        .await
        .unwrap();
    let sdk = aws.sdk_config().await;
    let target = ElastiCacheUserTarget::new(&sdk, &id).unwrap();
    let err = target.validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    let missing = ElastiCacheUserTarget::new(&sdk, &unique_name("ec-missing")).unwrap();
    assert_eq!(
        missing.validate().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    wait_for("user active", || async {
        user_status(&ec, &id).await.as_deref() == Some("active")
    })
    .await;
    ec.delete_user().user_id(&id).send().await.unwrap();
}
