//! The static role against the emulator: the password of an existing user rotates with a
//! two-password overlap, checked by `AUTH` on the cache's Redis mirror.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{authenticates, group_members, user_status, wait_for, Cache};
use leasehold_core::ErrorKind;
use leasehold_elasticache::{RotatedPassword, StaticRoleConfig, StaticRoleRotator};
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

    let grace = Duration::from_secs(2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RotatedPassword>();
    let rotator = Arc::new(
        StaticRoleRotator::from_sdk_config(
            StaticRoleConfig::new(&user)
                .rotation_period(Duration::from_secs(3600))
                .grace_period(grace)
                .ready_timeout(Duration::from_secs(30)),
            &aws.sdk_config().await,
        )
        .unwrap()
        .with_known_password(SecretString::from(old))
        .on_rotate(move |p| {
            let _ = tx.send(p.clone());
        }),
    );
    rotator.validate().await.expect("validate");
    assert!(
        rotator.read().is_none(),
        "nothing handed out before the first rotation"
    );

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

    let task = rotator.clone().start();
    let rotated = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a rotation within 30 s")
        .expect("callback");
    let new = rotated.password.expose_secret().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated.user_name, user);
    let valid_until = rotated
        .previous_valid_until
        .expect("the old password has a grace period");
    // Both passwords work during the overlap.
    assert!(authenticates(cache.port, &user, &new).await, "new works");
    assert!(
        authenticates(cache.port, &user, old).await,
        "old still works"
    );
    let status = rotator.read().expect("status after rotation");
    assert_eq!(status.password.expose_secret(), new);
    assert!(status.next_rotation_in > Duration::from_secs(3500));
    assert!(status.next_rotation_in <= Duration::from_secs(3600));

    let refused_at = tokio::time::timeout(Duration::from_secs(30), old_client)
        .await
        .expect("the old password is dropped after the grace period")
        .unwrap();
    assert!(
        refused_at >= valid_until,
        "the old password stopped at {refused_at}, before its grace ended at {valid_until}"
    );
    assert!(
        authenticates(cache.port, &user, &new).await,
        "new still works"
    );
    task.stop();

    // A restarted process (no known password) rotates again at once; the previous
    // process's password stops working.
    let restarted = StaticRoleRotator::from_sdk_config(
        StaticRoleConfig::new(&user).grace_period(Duration::from_secs(1)),
        &aws.sdk_config().await,
    )
    .unwrap();
    let again = restarted.rotate_now().await.expect("rotate");
    assert!(again.previous_valid_until.is_none());
    let newest = again.password.expose_secret().to_string();
    wait_for("newest works", || async {
        authenticates(cache.port, &user, &newest).await
    })
    .await;
    assert!(!authenticates(cache.port, &user, &new).await);
    restarted.drop_previous().await.expect("nothing to drop");

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
    let rotator =
        StaticRoleRotator::from_sdk_config(StaticRoleConfig::new(&id), &aws.sdk_config().await)
            .unwrap();
    let err = rotator.validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    let err = rotator.rotate_now().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    let missing = StaticRoleRotator::from_sdk_config(
        StaticRoleConfig::new(unique_name("ec-missing")),
        &aws.sdk_config().await,
    )
    .unwrap();
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
