//! No password leaks: not in `Debug`, `Display`, errors, tracing (captured at TRACE, SDK
//! included) or the lease store. Its own test binary, so the capture is the first subscriber.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Cache;
use leasehold_aws::{AwsConfig, AwsCredentials};
use leasehold_core::static_role::{
    MemoryPublisher, RotationSchedule, Stage, StaticCredential, StaticRoleOptions,
    StaticRolePublisher, StaticRoleRotator, StaticRoleTarget,
};
use leasehold_core::{
    Credentials, DynamicSecret, IssueRequest, LeaseFilter, LeaseManager, LeaseStore, MemoryStore,
    StatementTemplate,
};
use leasehold_elasticache::{
    ElastiCacheConfig, ElastiCacheUserTarget, Target, DEFAULT_CREATION_STATEMENT,
};
use leasehold_testkit::servers::FaultSpec;
use leasehold_testkit::{assert_no_secret, capture_tracing};
use secrecy::{ExposeSecret, SecretString};

#[tokio::test]
async fn secrets_stay_out_of_debug_errors_tracing_and_the_store() {
    let logs = capture_tracing();
    let test = "secrets_stay_out_of_debug_errors_tracing_and_the_store";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let cache = Cache::new(aws.clone(), "ec-leak", Duration::from_millis(200)).await;
    let provider = Arc::new(cache.provider().await);
    let store = Arc::new(MemoryStore::new());
    let manager = LeaseManager::builder(store.clone())
        .secret(
            DynamicSecret::builder("orders-cache", provider.clone())
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
    let creds = issued.credentials.clone();
    assert!(issued.readiness.is_live());

    // A failure after CreateUser (compensated) and its error text.
    aws.inject_fault(
        FaultSpec::fail("ModifyUserGroup", "InvalidParameterCombination")
            .resource(&cache.group)
            .times(1),
    )
    .await;
    let failed = manager
        .issue("orders-cache", IssueRequest::new())
        .await
        .unwrap_err();

    let records = store.list(&LeaseFilter::all()).await.unwrap();
    let stored = serde_json::to_string(&records).unwrap();
    let texts = [
        ("Debug of the issued lease", format!("{issued:?}")),
        ("Debug of the provider", format!("{provider:?}")),
        ("Debug of the manager", format!("{manager:?}")),
        ("the error", format!("{failed} {failed:?}")),
        ("the lease store", format!("{stored} {records:?}")),
    ];
    for (what, text) in &texts {
        assert_no_secret(what, text, &creds);
    }

    manager.revoke(&issued.lease_id).await.unwrap();
    manager.shutdown().await;

    // The statement's password appears in no error about the statement either.
    let pw = "Statement-secret-0123456789";
    let bad = DEFAULT_CREATION_STATEMENT
        .replace("{{password}}", pw)
        .replace("on ~* +@all", "on ~* +@nosuchcategory");
    let err = ElastiCacheConfig::new(Target::ServerlessCache("c".into()), "g")
        .creation_statement(StatementTemplate::parse(&bad).unwrap())
        .validate()
        .unwrap_err();
    let literal = Credentials::UsernamePassword {
        username: "x".into(),
        password: SecretString::from(pw),
    };
    assert_no_secret("a statement error", &format!("{err} {err:?}"), &literal);
    let short = DEFAULT_CREATION_STATEMENT.replace("{{password}}", "short-pw-1");
    let err = ElastiCacheConfig::new(Target::ServerlessCache("c".into()), "g")
        .creation_statement(StatementTemplate::parse(&short).unwrap())
        .validate()
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("short-pw-1"), "{err}");

    // AWS keys in the config, and the static role's passwords.
    let key = "wJalrXUtnFEMI-K7MDENG-leak-test-KEY";
    let config = cache
        .config()
        .aws(
            AwsConfig::new()
                .region("us-east-1")
                .credentials(AwsCredentials::from_keys(
                    "AKIDLEAKTEST",
                    SecretString::from(key),
                )),
        );
    assert!(!format!("{config:?}").contains(key));
    // The static role: a rotation through the fleet rotator, one refused `ModifyUser`, and
    // every password it handled.
    let static_pw = "Known-static-password-0123";
    let user = leasehold_testkit::servers::unique_name("ec-leak-static");
    cache
        .ec
        .create_user()
        .user_id(&user)
        .user_name(&user)
        .engine("redis")
        .passwords(static_pw)
        .access_string("on ~* +@all")
        .send()
        .await
        .expect("CreateUser");
    common::wait_for("static user active", || async {
        common::user_status(&cache.ec, &user).await.as_deref() == Some("active")
    })
    .await;
    let target = Arc::new(
        ElastiCacheUserTarget::new(&aws.sdk_config().await, &user)
            .unwrap()
            .ready_timeout(Duration::from_secs(30)),
    );
    let publisher = Arc::new(MemoryPublisher::new("leak-static"));
    publisher
        .put_pending(
            "v0",
            &StaticCredential::new(&user, SecretString::from(static_pw)),
        )
        .await
        .unwrap();
    publisher.promote("v0").await.unwrap();
    let rotator = StaticRoleRotator::new(
        "leak-static",
        target.clone(),
        publisher.clone(),
        store.coordination().unwrap(),
        "instance-1",
        StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(3600)))
            .poll(Duration::from_millis(100))
            .test_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    rotator
        .rotate_now(Duration::from_secs(30))
        .await
        .expect("rotate");
    let current = publisher.get(Stage::Current).await.unwrap().unwrap();
    aws.inject_fault(
        FaultSpec::fail("ModifyUser", "InvalidParameterValue")
            .resource(&user)
            .times(1),
    )
    .await;
    let refused = target
        .set_passwords(
            Some(&current.credential.password),
            &SecretString::from(static_pw),
        )
        .await
        .unwrap_err();
    let static_texts = [
        (
            "Debug of the static role",
            format!("{target:?} {rotator:?} {publisher:?}"),
        ),
        ("Debug of the published version", format!("{current:?}")),
        ("a refused ModifyUser", format!("{refused} {refused:?}")),
    ];
    let static_creds = [
        static_pw.to_string(),
        current.credential.password.expose_secret().to_string(),
    ]
    .map(|pw| Credentials::UsernamePassword {
        username: user.clone(),
        password: SecretString::from(pw),
    });
    for c in &static_creds {
        for (what, text) in &static_texts {
            assert_no_secret(what, text, c);
        }
    }

    let captured = logs.contents();
    assert!(
        captured.contains("ModifyUserGroup"),
        "the capture saw the provider's calls"
    );
    assert_no_secret("captured tracing", &captured, &creds);
    assert!(!captured.contains(creds.secret().expose_secret()));
    assert!(!captured.contains(key));
    assert!(
        captured.contains("static role password rotated"),
        "the capture saw the rotation"
    );
    for c in &static_creds {
        assert_no_secret("captured tracing of the static role", &captured, c);
    }
    let _ = cache.ec.delete_user().user_id(&user).send().await;
    cache.cleanup().await;
}
