//! The providers against the AWS emulator (plain moto: IAM and STS need no extension).
//!
//! moto's `DeleteUser` only refuses while policies are attached, so these tests check what
//! revoke removed with `GetUser` and the listings, not only that revoke returned `Ok`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use chrono::Utc;
use leasehold_core::template::random_lowercase;
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecret, DynamicSecretProvider, ErrorKind, ExternalRef,
    IssueRequest, LeaseId, LeaseManager, MemoryStore, Readiness,
};
use leasehold_iam::{
    AssumedRole, FederationToken, IamUserConfig, IamUserProvider, StsConfig, StsCredentialType,
    StsProvider, ATTR_ACCESS_KEY_ID,
};
use leasehold_testkit::conformance::Fixture;
use leasehold_testkit::servers::{AwsEmulator, FaultSpec};
use secrecy::ExposeSecret;

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#;
const SSH_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDi6RXWm+4vmoCUNiNVmFezpaq+zU04HndcUHFc1sWwVbDr41mjPKppwq/BIOJCyJcYCBA+Ex2X2rLq2arU8/co4trbMTK/2Z6ef+yedjFMsdYSOBtKih9QbJBaQOaeAztedXnKzVcKXR36Ot+nJYIjYofZqnDDrmE74r3EJmqYqZVtE/hew7CGZJ3nz7LzlrPtuuhvzximJdI2e5xBMiB+lNDffcVkQBH0uL4dqeSOZma8uFPJFMdYW61K5uC73+edWLsWhpWvGvVCucfaz4nk8ytUkfk0MdgqoiGDZqXfqKgn2Y9N9QhMLkIDx7irnst8uUwQjR7QdWzuz8vPtRW5 lh-test";

async fn emulator(test: &str) -> Option<(Arc<AwsEmulator>, SdkConfig)> {
    let emu = AwsEmulator::shared(test).await?;
    let sdk = emu.sdk_config().await;
    Some((emu, sdk))
}

fn sts_with(sdk: &SdkConfig, creds: &Credentials) -> aws_sdk_sts::Client {
    let Credentials::AwsKeys {
        access_key_id,
        secret_access_key,
        session_token,
        ..
    } = creds
    else {
        panic!("AWS keys expected");
    };
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(sdk)
            .credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key.expose_secret(),
                session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                None,
                "test",
            ))
            .build(),
    )
}

async fn caller(sdk: &SdkConfig, creds: &Credentials) -> String {
    sts_with(sdk, creds)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity")
        .arn()
        .unwrap_or_default()
        .to_string()
}

/// A group and a customer managed policy made out of band, removed on drop... by `cleanup`.
struct Fixtures {
    group: String,
    policy_arn: String,
}

async fn fixtures(iam: &aws_sdk_iam::Client) -> Fixtures {
    let group = format!("lh-test-{}", random_lowercase(10));
    iam.create_group()
        .group_name(&group)
        .send()
        .await
        .expect("CreateGroup");
    let policy = iam
        .create_policy()
        .policy_name(format!("lh-test-{}", random_lowercase(10)))
        .policy_document(POLICY)
        .send()
        .await
        .expect("CreatePolicy");
    let policy_arn = policy.policy().and_then(|p| p.arn()).unwrap().to_string();
    Fixtures { group, policy_arn }
}

async fn cleanup(iam: &aws_sdk_iam::Client, f: &Fixtures) {
    let _ = iam.delete_group().group_name(&f.group).send().await;
    let _ = iam.delete_policy().policy_arn(&f.policy_arn).send().await;
}

/// moto has no service-specific credentials (EMULATOR-NOTES); the mocked tests cover that step.
fn moto_config() -> IamUserConfig {
    IamUserConfig::new().sweep_service_specific_credentials(false)
}

fn config(f: &Fixtures, path: &str) -> IamUserConfig {
    moto_config()
        .path(path)
        .group(&f.group)
        .policy_arn(&f.policy_arn)
        .inline_policy(POLICY)
        .tag("suite", "leasehold-iam")
        .ready_timeout(Duration::from_secs(10))
        .absence_recheck_delay(Duration::from_millis(200))
}

fn username() -> String {
    format!("lh-it-{}", random_lowercase(16))
}

async fn user_gone(iam: &aws_sdk_iam::Client, user: &str) -> bool {
    match iam.get_user().user_name(user).send().await {
        Ok(_) => false,
        Err(e) => leasehold_aws::error_code(&e) == Some("NoSuchEntity"),
    }
}

#[tokio::test]
async fn iam_user_is_made_works_and_is_removed() {
    let Some((_emu, sdk)) = emulator("iam_user_is_made_works_and_is_removed").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    let p = IamUserProvider::from_sdk_config(config(&f, "/leasehold-it/"), &sdk).unwrap();
    p.validate().await.expect("validate");
    let user = username();
    let req = CreateRequest::new(
        LeaseId::generate("reports"),
        &user,
        Duration::from_secs(3600),
    );
    let created = p.create(&req).await.expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    let key_id = created
        .external
        .attr(ATTR_ACCESS_KEY_ID)
        .unwrap()
        .to_string();

    // Everything exists in the emulator.
    let got = iam
        .get_user()
        .user_name(&user)
        .send()
        .await
        .expect("GetUser");
    let u = got.user().unwrap();
    assert_eq!(u.path(), "/leasehold-it/");
    let tags = iam
        .list_user_tags()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .tags()
        .to_vec();
    let tag = |k: &str| {
        tags.iter()
            .find(|t| t.key() == k)
            .map(|t| t.value().to_string())
    };
    assert_eq!(
        tag("leasehold:lease-id").as_deref(),
        Some(req.lease_id.as_str())
    );
    assert_eq!(tag("leasehold:managed-by").as_deref(), Some("leasehold"));
    assert_eq!(tag("suite").as_deref(), Some("leasehold-iam"));
    let groups = iam
        .list_groups_for_user()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(groups.groups().iter().any(|g| g.group_name() == f.group));
    let attached = iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(attached
        .attached_policies()
        .iter()
        .any(|a| a.policy_arn() == Some(f.policy_arn.as_str())));
    let inline = iam
        .get_user_policy()
        .user_name(&user)
        .policy_name("leasehold")
        .send()
        .await
        .expect("inline policy");
    assert!(
        inline.policy_document().contains("s3:GetObject")
            || inline.policy_document().contains("s3%3AGetObject")
    );
    let keys = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(keys
        .access_key_metadata()
        .iter()
        .any(|k| k.access_key_id() == Some(key_id.as_str())));
    assert!(caller(&sdk, &created.credentials)
        .await
        .ends_with(&format!("user/leasehold-it/{user}")));
    let listed = p.list_managed("lh-it-").await.expect("list_managed");
    let found = listed
        .iter()
        .find(|m| m.external.id == user)
        .expect("listed");
    assert_eq!(found.lease_id.as_deref(), Some(req.lease_id.as_str()));

    p.revoke(&created.external).await.expect("revoke");
    assert!(user_gone(&iam, &user).await, "user deleted");
    // The key no longer names the user (moto answers unknown keys with a default identity).
    assert!(!caller(&sdk, &created.credentials).await.contains(&user));
    assert!(
        p.list_managed("lh-it-")
            .await
            .unwrap()
            .iter()
            .all(|m| m.external.id != user),
        "not listed after revoke"
    );
    p.revoke(&created.external)
        .await
        .expect("revoke is idempotent");
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn attachments_made_out_of_band_are_swept() {
    let Some((emu, sdk)) = emulator("attachments_made_out_of_band_are_swept").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    let p = IamUserProvider::from_sdk_config(config(&f, "/"), &sdk).unwrap();
    let user = username();
    let created = p
        .create(
            &CreateRequest::new(LeaseId::generate("ops"), &user, Duration::from_secs(600))
                .with_wait_ready(false),
        )
        .await
        .expect("create");

    // Someone adds a console password, an SSH key, a second key, an MFA device and a
    // hand-made inline policy.
    iam.create_login_profile()
        .user_name(&user)
        .password("Sup3r-secret-Passw0rd!")
        .send()
        .await
        .expect("CreateLoginProfile");
    iam.upload_ssh_public_key()
        .user_name(&user)
        .ssh_public_key_body(SSH_KEY)
        .send()
        .await
        .expect("UploadSSHPublicKey");
    iam.create_access_key()
        .user_name(&user)
        .send()
        .await
        .expect("second key");
    let mfa = iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(&user)
        .send()
        .await
        .expect("CreateVirtualMFADevice");
    let serial = mfa
        .virtual_mfa_device()
        .unwrap()
        .serial_number()
        .to_string();
    iam.enable_mfa_device()
        .user_name(&user)
        .serial_number(&serial)
        .authentication_code1("123456")
        .authentication_code2("654321")
        .send()
        .await
        .expect("EnableMFADevice");
    iam.put_user_policy()
        .user_name(&user)
        .policy_name("by-hand")
        .policy_document(POLICY)
        .send()
        .await
        .expect("PutUserPolicy");

    // DeleteUser answers DeleteConflict before and after the sweep, as real IAM does while
    // anything hangs on the user, so the state the sweep leaves can be inspected: moto's own
    // DeleteUser would succeed regardless.
    emu.inject_fault(
        FaultSpec::fail("DeleteUser", "DeleteConflict")
            .status(409)
            .service("iam")
            .resource(&user)
            .times(2),
    )
    .await;
    let err = p
        .revoke(&created.external)
        .await
        .expect_err("DeleteUser refused twice");
    assert_eq!(err.context("operation"), Some("DeleteUser"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.is_temporary(), "the manager retries a DeleteConflict");
    for op in [
        "DeleteLoginProfile",
        "DeleteSSHPublicKey",
        "DeactivateMFADevice",
    ] {
        assert_eq!(
            emu.call_count_in(Some("iam"), op, Some(&user)).await,
            1,
            "{op}"
        );
    }
    assert_eq!(
        emu.call_count_in(Some("iam"), "DeleteAccessKey", Some(&user))
            .await,
        2
    );
    assert!(!user_gone(&iam, &user).await, "the user is still there");
    match iam.get_login_profile().user_name(&user).send().await {
        Err(e) => assert_eq!(leasehold_aws::error_code(&e), Some("NoSuchEntity")),
        Ok(_) => panic!("login profile left behind"),
    }
    let ssh = iam
        .list_ssh_public_keys()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(ssh.ssh_public_keys().is_empty(), "SSH key left behind");
    let keys = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(
        keys.access_key_metadata().is_empty(),
        "access keys left behind"
    );
    let devices = iam
        .list_mfa_devices()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(devices.mfa_devices().is_empty(), "MFA device left enabled");
    let virt = iam.list_virtual_mfa_devices().send().await.unwrap();
    assert!(
        virt.virtual_mfa_devices()
            .iter()
            .all(|d| d.serial_number() != serial),
        "virtual MFA device left behind"
    );
    let inline = iam
        .list_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(
        inline.policy_names().is_empty(),
        "inline policies left behind"
    );
    let attached = iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(
        attached.attached_policies().is_empty(),
        "managed policy left attached"
    );
    let groups = iam
        .list_groups_for_user()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(groups.groups().is_empty(), "group membership left behind");

    p.revoke(&created.external).await.expect("second revoke");
    assert!(user_gone(&iam, &user).await, "user deleted");
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn failed_access_key_leaves_no_user_behind() {
    let Some((emu, sdk)) = emulator("failed_access_key_leaves_no_user_behind").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    let p = IamUserProvider::from_sdk_config(config(&f, "/"), &sdk).unwrap();
    let user = username();
    emu.inject_fault(
        FaultSpec::fail("CreateAccessKey", "LimitExceeded")
            .status(409)
            .service("iam")
            .resource(&user),
    )
    .await;
    let err = p
        .create(&CreateRequest::new(
            LeaseId::generate("ops"),
            &user,
            Duration::from_secs(600),
        ))
        .await
        .expect_err("CreateAccessKey fails");
    assert_eq!(err.context("operation"), Some("CreateAccessKey"), "{err}");
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    // Compensation undid each step: group, managed policy, inline policy, then the user.
    for op in [
        "RemoveUserFromGroup",
        "DetachUserPolicy",
        "DeleteUserPolicy",
        "DeleteUser",
    ] {
        assert_eq!(
            emu.call_count_in(Some("iam"), op, Some(&user)).await,
            1,
            "{op}"
        );
    }
    assert!(
        user_gone(&iam, &user).await,
        "compensation deleted the user"
    );
    let members = iam.get_group().group_name(&f.group).send().await.unwrap();
    assert!(members.users().iter().all(|u| u.user_name() != user));
    // The manager's write-ahead revoke that follows a failed create succeeds.
    p.revoke(&ExternalRef::new(&user))
        .await
        .expect("revoke by name");
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn write_ahead_reference_of_a_user_never_made_revokes() {
    let Some((_emu, sdk)) = emulator("write_ahead_reference_of_a_user_never_made_revokes").await
    else {
        return;
    };
    let p = IamUserProvider::from_sdk_config(
        moto_config().absence_recheck_delay(Duration::from_millis(100)),
        &sdk,
    )
    .unwrap();
    p.revoke(&ExternalRef::new(username()))
        .await
        .expect("nothing to revoke");
}

async fn role(iam: &aws_sdk_iam::Client) -> (String, String) {
    let name = format!("lh-test-role-{}", random_lowercase(8));
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    let out = iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust)
        .max_session_duration(7200)
        .send()
        .await
        .expect("CreateRole");
    (name, out.role().unwrap().arn().to_string())
}

#[tokio::test]
async fn assumed_role_returns_a_working_session() {
    let Some((_emu, sdk)) = emulator("assumed_role_returns_a_working_session").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let (role_name, role_arn) = role(&iam).await;
    let p = StsProvider::from_sdk_config(
        StsConfig::new(StsCredentialType::AssumedRole(
            AssumedRole::new(&role_arn)
                .session_policy(POLICY)
                .external_id("lh-ext-id")
                .max_session_duration(Duration::from_secs(7200)),
        )),
        &sdk,
    )
    .unwrap();
    p.validate().await.expect("validate");
    let session = format!("lh-s-{}", random_lowercase(10));
    let req = CreateRequest::new(
        LeaseId::generate("sess"),
        &session,
        Duration::from_secs(1800),
    );
    let before = Utc::now();
    let created = p.create(&req).await.expect("AssumeRole");
    assert_eq!(created.readiness, Readiness::Confirmed);
    let arn = caller(&sdk, &created.credentials).await;
    assert!(
        arn.ends_with(&format!("assumed-role/{role_name}/{session}")),
        "{arn}"
    );
    let exp = created.expires_at.expect("STS expiry");
    let secs = (exp - before).num_seconds();
    assert!((1790..=1810).contains(&secs), "expiry {secs}s after issue");
    let err = p
        .renew(&created.external, Utc::now())
        .await
        .expect_err("renew");
    assert_eq!(err.kind(), ErrorKind::NotRenewable);
    let too_long = CreateRequest::new(
        LeaseId::generate("sess"),
        &session,
        Duration::from_secs(7201),
    );
    assert_eq!(
        p.create(&too_long).await.unwrap_err().kind(),
        ErrorKind::TtlExceedsMax
    );
    p.revoke(&created.external)
        .await
        .expect("revoke closes the lease");
    let _ = iam.delete_role().role_name(&role_name).send().await;
}

#[tokio::test]
async fn federation_and_session_tokens_are_issued() {
    let Some((_emu, sdk)) = emulator("federation_and_session_tokens_are_issued").await else {
        return;
    };
    let fed = StsProvider::from_sdk_config(
        StsConfig::new(StsCredentialType::FederationToken(
            FederationToken::with_policy(POLICY),
        )),
        &sdk,
    )
    .unwrap();
    fed.validate().await.expect("validate");
    let name = format!("lh-f-{}", random_lowercase(8));
    let created = fed
        .create(
            &CreateRequest::new(LeaseId::generate("fed"), &name, Duration::from_secs(7200))
                .with_wait_ready(false),
        )
        .await
        .expect("GetFederationToken");
    assert!(created
        .external
        .attr(leasehold_iam::ATTR_PRINCIPAL_ARN)
        .is_some_and(|a| a.ends_with(&format!("federated-user/{name}"))));
    let secs = (created.expires_at.unwrap() - Utc::now()).num_seconds();
    assert!((7100..=7210).contains(&secs), "{secs}");

    let st = StsProvider::from_sdk_config(StsConfig::new(StsCredentialType::SessionToken), &sdk)
        .unwrap();
    let created = st
        .create(&CreateRequest::new(
            LeaseId::generate("st"),
            "lh-st",
            Duration::from_secs(900),
        ))
        .await
        .expect("GetSessionToken");
    assert!(matches!(
        created.credentials,
        Credentials::AwsKeys {
            session_token: Some(_),
            ..
        }
    ));
    let secs = (created.expires_at.unwrap() - Utc::now()).num_seconds();
    assert!((800..=910).contains(&secs), "{secs}");
}

struct IamProbe(SdkConfig);

#[async_trait]
impl leasehold_testkit::CredentialProbe for IamProbe {
    async fn authenticates(&self, credentials: &Credentials) -> bool {
        // moto resolves unknown keys to user/moto; a live key names its own user.
        let arn = sts_with(&self.0, credentials)
            .get_caller_identity()
            .send()
            .await
            .ok()
            .and_then(|o| o.arn().map(str::to_string))
            .unwrap_or_default();
        arn.contains(":user/lh-conf") || arn.contains(":assumed-role/")
    }
}

// The provider suites, one test per behaviour: a credential works when STS names the user
// (or the assumed role) it belongs to.
leasehold_testkit::provider_conformance_tests!(iam_user, |test| async move {
    let (_emu, sdk) = emulator(test).await?;
    let p = IamUserProvider::from_sdk_config(
        moto_config()
            .inline_policy(POLICY)
            .absence_recheck_delay(Duration::from_millis(200)),
        &sdk,
    )
    .unwrap();
    Some(Fixture::provider(p).with_probe(IamProbe(sdk)))
});

leasehold_testkit::provider_conformance_tests!(sts_assumed_role, |test| async move {
    let (_emu, sdk) = emulator(test).await?;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let (role_name, role_arn) = role(&iam).await;
    let p = StsProvider::from_sdk_config(
        StsConfig::new(StsCredentialType::AssumedRole(AssumedRole::new(&role_arn))),
        &sdk,
    )
    .unwrap();
    Some(
        Fixture::provider(p)
            .with_probe(IamProbe(sdk))
            .after(move || async move {
                let _ = iam.delete_role().role_name(&role_name).send().await;
            }),
    )
});

#[tokio::test]
async fn secrets_stay_out_of_debug_errors_and_tracing() {
    let Some((_emu, sdk)) = emulator("secrets_stay_out_of_debug_errors_and_tracing").await else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    let p = IamUserProvider::from_sdk_config(config(&f, "/"), &sdk).unwrap();
    let user = username();
    let created = p
        .create(&CreateRequest::new(
            LeaseId::generate("leak"),
            &user,
            Duration::from_secs(900),
        ))
        .await
        .expect("create");
    // A duplicate and a failing revoke produce errors to inspect.
    let dup = p
        .create(&CreateRequest::new(
            LeaseId::generate("leak"),
            &user,
            Duration::from_secs(900),
        ))
        .await
        .expect_err("duplicate");
    let text = format!("{created:?} {p:?} {dup} {dup:?}");
    leasehold_testkit::assert_no_secret("Debug and errors", &text, &created.credentials);
    p.revoke(&created.external).await.expect("revoke");
    leasehold_testkit::assert_no_secret("tracing output", &logs.contents(), &created.credentials);
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn manager_issues_revokes_and_reconciles_iam_users() {
    let Some((_emu, sdk)) = emulator("manager_issues_revokes_and_reconciles_iam_users").await
    else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    // A path of its own, so reconcile sees only this test's users.
    let path = format!("/lh-mgr-{}/", random_lowercase(8));
    let provider = Arc::new(IamUserProvider::from_sdk_config(config(&f, &path), &sdk).unwrap());
    let secret = DynamicSecret::builder("iam-readers", provider.clone())
        .default_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .run_worker(false)
        .build()
        .await
        .expect("manager");
    let lease = manager
        .issue("iam-readers", IssueRequest::new())
        .await
        .expect("issue");
    assert!(lease.live(), "readiness confirmed");
    let arn = caller(&sdk, &lease.credentials).await;
    assert!(arn.contains(&format!("user{path}lh-")), "{arn}");
    let record = manager.lookup(&lease.lease_id).await.unwrap();
    let user = record.external.id.clone();
    assert!(record.external.attr(ATTR_ACCESS_KEY_ID).is_some());

    // An orphan: made by the provider, no lease points at it.
    let orphan = format!("lh-orphan-{}", random_lowercase(10));
    provider
        .create(
            &CreateRequest::new(
                LeaseId::generate("iam-readers"),
                &orphan,
                Duration::from_secs(600),
            )
            .with_wait_ready(false)
            .with_installation(Some(manager.installation_id().to_string())),
        )
        .await
        .expect("orphan");
    let dry = manager
        .reconcile("iam-readers", false)
        .await
        .expect("dry run");
    assert_eq!(dry.found, 2, "{dry:?}");
    assert_eq!(dry.orphans.len(), 1);
    assert_eq!(dry.orphans[0].external.id, orphan);
    assert!(!user_gone(&iam, &orphan).await, "a dry run removes nothing");
    let applied = manager.reconcile("iam-readers", true).await.expect("apply");
    assert_eq!(applied.removed.len(), 1, "{applied:?}");
    assert!(user_gone(&iam, &orphan).await, "orphan removed");
    assert!(!user_gone(&iam, &user).await, "the leased user stays");

    manager.revoke(&lease.lease_id).await.expect("revoke");
    assert!(user_gone(&iam, &user).await, "revoked user deleted");
    manager.shutdown().await;
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn manager_refuses_to_renew_sts_leases() {
    let Some((_emu, sdk)) = emulator("manager_refuses_to_renew_sts_leases").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let (role_name, role_arn) = role(&iam).await;
    let provider = StsProvider::from_sdk_config(
        StsConfig::new(StsCredentialType::AssumedRole(AssumedRole::new(&role_arn))),
        &sdk,
    )
    .unwrap();
    let secret = DynamicSecret::builder("role-session", Arc::new(provider))
        .default_ttl(Duration::from_secs(900))
        .max_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .run_worker(false)
        .build()
        .await
        .expect("manager");
    let lease = manager
        .issue("role-session", IssueRequest::new())
        .await
        .expect("issue");
    assert!(lease.live());
    assert!(!lease.renewable);
    assert!(caller(&sdk, &lease.credentials)
        .await
        .contains(&format!("assumed-role/{role_name}/")));
    let err = manager
        .renew(&lease.lease_id, None)
        .await
        .expect_err("not renewable");
    assert_eq!(err.kind(), ErrorKind::NotRenewable, "{err}");
    let err = manager
        .issue(
            "role-session",
            IssueRequest::new().ttl(Duration::from_secs(300)),
        )
        .await
        .expect_err("below STS minimum");
    assert!(err.kind().is_invalid_input(), "{err}");
    manager
        .revoke(&lease.lease_id)
        .await
        .expect("revoke closes the lease");
    manager.shutdown().await;
    let _ = iam.delete_role().role_name(&role_name).send().await;
}

#[tokio::test]
async fn validate_refuses_missing_groups_and_policies() {
    let Some((_emu, sdk)) = emulator("validate_refuses_missing_groups_and_policies").await else {
        return;
    };
    let missing = random_lowercase(10);
    for (cfg, field) in [
        (
            moto_config().group(format!("lh-missing-{missing}")),
            "groups:",
        ),
        (
            moto_config().policy_arn(format!(
                "arn:aws:iam::123456789012:policy/lh-missing-{missing}"
            )),
            "policy_arns:",
        ),
        (
            moto_config().permissions_boundary(format!(
                "arn:aws:iam::123456789012:policy/lh-missing-{missing}"
            )),
            "permissions_boundary:",
        ),
    ] {
        let p = IamUserProvider::from_sdk_config(cfg, &sdk).unwrap();
        let err = p.validate().await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(err.message().starts_with(field), "{err}");
    }
}

/// Lists the user's access keys, inline policies, attached policies and groups.
async fn attachments(iam: &aws_sdk_iam::Client, user: &str) -> (usize, usize, usize, usize) {
    let keys = iam.list_access_keys().user_name(user).send().await.unwrap();
    let inline = iam
        .list_user_policies()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let attached = iam
        .list_attached_user_policies()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let groups = iam
        .list_groups_for_user()
        .user_name(user)
        .send()
        .await
        .unwrap();
    (
        keys.access_key_metadata().len(),
        inline.policy_names().len(),
        attached.attached_policies().len(),
        groups.groups().len(),
    )
}

#[tokio::test]
async fn revoke_removes_what_the_lease_made_before_delete_user_without_listing() {
    let Some((emu, sdk)) =
        emulator("revoke_removes_what_the_lease_made_before_delete_user_without_listing").await
    else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let f = fixtures(&iam).await;
    // The default: the DeleteConflict sweep would list service-specific credentials too.
    let p = IamUserProvider::from_sdk_config(
        IamUserConfig::new()
            .group(&f.group)
            .policy_arn(&f.policy_arn)
            .inline_policy(POLICY),
        &sdk,
    )
    .unwrap();
    let user = username();
    let created = p
        .create(
            &CreateRequest::new(LeaseId::generate("ops"), &user, Duration::from_secs(600))
                .with_wait_ready(false),
        )
        .await
        .expect("create");
    assert_eq!(attachments(&iam, &user).await, (1, 1, 1, 1));

    // DeleteUser refused once (not a conflict): what the lease made is already gone, so the
    // state before DeleteUser can be inspected.
    emu.inject_fault(
        FaultSpec::fail("DeleteUser", "AccessDenied")
            .status(403)
            .service("iam")
            .resource(&user),
    )
    .await;
    let sweep_ops = [
        "ListAccessKeys",
        "ListUserPolicies",
        "ListAttachedUserPolicies",
        "ListGroupsForUser",
        "ListMFADevices",
        "ListSSHPublicKeys",
        "ListServiceSpecificCredentials",
        "ListSigningCertificates",
        "DeleteLoginProfile",
    ];
    let mut before = Vec::new();
    for op in sweep_ops {
        before.push(emu.call_count_in(Some("iam"), op, Some(&user)).await);
    }
    let err = p
        .revoke(&created.external)
        .await
        .expect_err("DeleteUser refused");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    for (op, n) in sweep_ops.iter().zip(before) {
        assert_eq!(
            emu.call_count_in(Some("iam"), op, Some(&user)).await,
            n,
            "{op}: a revoke without DeleteConflict lists nothing"
        );
    }
    assert!(!user_gone(&iam, &user).await);
    assert_eq!(
        attachments(&iam, &user).await,
        (0, 0, 0, 0),
        "key, inline policy, managed policy and group membership removed"
    );
    let members = iam.get_group().group_name(&f.group).send().await.unwrap();
    assert!(members.users().iter().all(|u| u.user_name() != user));

    p.revoke(&created.external).await.expect("second revoke");
    assert!(user_gone(&iam, &user).await, "user deleted");
    cleanup(&iam, &f).await;
}

#[tokio::test]
async fn delete_conflict_sweep_survives_an_endpoint_without_service_credentials() {
    let Some((emu, sdk)) =
        emulator("delete_conflict_sweep_survives_an_endpoint_without_service_credentials").await
    else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    let iam = aws_sdk_iam::Client::new(&sdk);
    // The default config: the sweep asks moto for ListServiceSpecificCredentials, which it
    // does not implement.
    let p =
        IamUserProvider::from_sdk_config(IamUserConfig::new().inline_policy(POLICY), &sdk).unwrap();
    let user = username();
    let created = p
        .create(
            &CreateRequest::new(LeaseId::generate("ops"), &user, Duration::from_secs(600))
                .with_wait_ready(false),
        )
        .await
        .expect("create");
    // A second key and an SSH key made by hand; DeleteUser refused once as real IAM would.
    iam.create_access_key()
        .user_name(&user)
        .send()
        .await
        .expect("second key");
    iam.upload_ssh_public_key()
        .user_name(&user)
        .ssh_public_key_body(SSH_KEY)
        .send()
        .await
        .expect("UploadSSHPublicKey");
    emu.inject_fault(
        FaultSpec::fail("DeleteUser", "DeleteConflict")
            .status(409)
            .service("iam")
            .resource(&user),
    )
    .await;
    p.revoke(&created.external)
        .await
        .expect("the refused listing is a warning, DeleteUser decides");
    assert!(user_gone(&iam, &user).await, "user deleted");
    assert_eq!(
        emu.call_count_in(Some("iam"), "DeleteAccessKey", Some(&user))
            .await,
        2,
        "the lease's key, then the hand-made one found by the sweep"
    );
    assert_eq!(
        emu.call_count_in(Some("iam"), "DeleteSSHPublicKey", Some(&user))
            .await,
        1
    );
    let warned = logs.contents().lines().any(|l| {
        l.contains("WARN") && l.contains("ListServiceSpecificCredentials") && l.contains(&user)
    });
    assert!(warned, "the missing operation is a warning");
}

/// Two installations (two stores, two managers) on one account and path: B's reconcile
/// removes B's own orphan and keeps A's live user, which still works.
#[tokio::test]
async fn two_installations_share_an_account_and_reconcile_only_their_own() {
    let Some((_emu, sdk)) =
        emulator("two_installations_share_an_account_and_reconcile_only_their_own").await
    else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&sdk);
    let path = format!("/lh-two-{}/", random_lowercase(8));
    let provider = Arc::new(
        IamUserProvider::from_sdk_config(
            moto_config()
                .path(&path)
                .inline_policy(POLICY)
                .ready_timeout(Duration::from_secs(10)),
            &sdk,
        )
        .unwrap(),
    );
    let store_a = Arc::new(MemoryStore::with_installation_id("iama").unwrap());
    let store_b = Arc::new(MemoryStore::with_installation_id("iamb").unwrap());
    let manager_on = |store: Arc<MemoryStore>| {
        let provider = provider.clone();
        async move {
            LeaseManager::builder(store)
                .secret(
                    DynamicSecret::builder("iam-shared", provider)
                        .default_ttl(Duration::from_secs(600))
                        .build()
                        .unwrap(),
                )
                .run_worker(false)
                .build()
                .await
                .expect("manager")
        }
    };
    let a = manager_on(store_a.clone()).await;
    let b = manager_on(store_b.clone()).await;

    let a_live = a.issue("iam-shared", IssueRequest::new()).await.unwrap();
    let b_live = b.issue("iam-shared", IssueRequest::new()).await.unwrap();
    let b_lost = b.issue("iam-shared", IssueRequest::new()).await.unwrap();
    for (lease, inst) in [(&a_live, "iama"), (&b_live, "iamb"), (&b_lost, "iamb")] {
        let user = a
            .lookup(&lease.lease_id)
            .await
            .or(b.lookup(&lease.lease_id).await)
            .unwrap()
            .external
            .id;
        assert!(user.starts_with(&format!("lh-{inst}-")), "{user}");
        assert!(
            user.len() <= 64,
            "IAM user names have at most 64 characters: {user}"
        );
        leasehold_core::NameRule::IamUserName.check(&user).unwrap();
        // The installation tag is on the user itself.
        let tags = iam
            .list_user_tags()
            .user_name(&user)
            .send()
            .await
            .unwrap()
            .tags()
            .to_vec();
        let tag = tags
            .iter()
            .find(|t| t.key() == leasehold_aws::tags::INSTALLATION)
            .map(|t| t.value().to_string());
        assert_eq!(tag.as_deref(), Some(inst), "{user}: {tags:?}");
        assert!(
            caller(&sdk, &lease.credentials).await.ends_with(&user),
            "{user} works"
        );
    }
    let a_user = a.lookup(&a_live.lease_id).await.unwrap().external.id;
    let b_user = b.lookup(&b_live.lease_id).await.unwrap().external.id;
    let lost = leasehold_core::LeaseStore::get(&*store_b, &b_lost.lease_id)
        .await
        .unwrap()
        .unwrap();
    let lost_user = lost.external.id.clone();
    leasehold_core::LeaseStore::delete(&*store_b, &lost.id, lost.version)
        .await
        .unwrap();

    let report = b.reconcile("iam-shared", true).await.expect("reconcile");
    let ids = |v: &[leasehold_core::ManagedCredential]| -> Vec<String> {
        v.iter().map(|c| c.external.id.clone()).collect()
    };
    assert_eq!(ids(&report.removed), vec![lost_user.clone()], "{report:?}");
    assert_eq!(ids(&report.foreign), vec![a_user.clone()], "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(user_gone(&iam, &lost_user).await, "B's orphan removed");
    assert!(!user_gone(&iam, &a_user).await, "A's live user kept");
    assert!(
        caller(&sdk, &a_live.credentials).await.ends_with(&a_user),
        "A's key still works"
    );

    let report = a.reconcile("iam-shared", true).await.expect("reconcile");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(ids(&report.foreign), vec![b_user.clone()], "{report:?}");

    a.revoke(&a_live.lease_id).await.unwrap();
    b.revoke(&b_live.lease_id).await.unwrap();
    assert!(user_gone(&iam, &a_user).await && user_gone(&iam, &b_user).await);
}
