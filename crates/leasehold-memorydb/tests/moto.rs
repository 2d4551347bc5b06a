//! The provider against the AWS emulator: moto plus the project's extension, which adds
//! MemoryDB ACLs with lasting `modifying` states and mirrors each cluster's ACL onto a real
//! Redis, so leased credentials are checked with `AUTH` (see `tests/aws-emulator/README.md`).
//!
//! Every test makes its own ACL and cluster (unique names) and scopes faults and call counters
//! to them; the emulator is shared by the whole test binary.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType};
use aws_sdk_memorydb::Client;
use futures::future::join_all;
use leasehold_core::template::random_lowercase;
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecret, DynamicSecretProvider, ErrorKind, ExternalRef,
    IssueRequest, LeaseId, LeaseManager, MemoryStore, Readiness, StatementTemplate,
};
use leasehold_memorydb::{MemoryDbConfig, MemoryDbProvider, ATTR_ACL, MAX_USERS_PER_ACL, TAG_ACL};
use leasehold_testkit::servers::{
    skip_or_panic, unique_name, AwsEmulator, FaultSpec, MirrorKind, TransitionKind,
};
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long the test ACLs stay `modifying` after each change.
const ACL_MODIFYING: Duration = Duration::from_millis(400);

/// A cluster on its own ACL, with the Redis that mirrors it.
struct Fixture {
    aws: Arc<AwsEmulator>,
    sdk: SdkConfig,
    db: Client,
    acl: String,
    cluster: String,
    port: u16,
}

async fn fixture(test: &str) -> Option<Fixture> {
    let aws = AwsEmulator::shared(test).await?;
    if !aws.has_mirror().await {
        skip_or_panic(
            test,
            "the emulator found no redis-server for cluster mirrors",
        );
        return None;
    }
    let sdk = aws.sdk_config().await;
    let db = Client::new(&sdk);
    let acl = unique_name("mdb-acl");
    let cluster = unique_name("mdb-cl");
    aws.set_modifying(TransitionKind::Acl, Some(&acl), ACL_MODIFYING)
        .await;
    db.create_acl()
        .acl_name(&acl)
        .send()
        .await
        .expect("CreateACL");
    wait_acl_active(&db, &acl).await;
    let out = db
        .create_cluster()
        .cluster_name(&cluster)
        .node_type("db.t4g.small")
        .acl_name(&acl)
        .tls_enabled(false)
        .send()
        .await
        .expect("CreateCluster");
    let port = u16::try_from(out.cluster().unwrap().cluster_endpoint().unwrap().port()).unwrap();
    let mirror = aws
        .mirror(MirrorKind::MemoryDbCluster, &cluster)
        .await
        .expect("the cluster has a mirror");
    assert_eq!(mirror.port, port, "the cluster endpoint is its mirror");
    Some(Fixture {
        aws,
        sdk,
        db,
        acl,
        cluster,
        port,
    })
}

impl Fixture {
    fn config(&self) -> MemoryDbConfig {
        MemoryDbConfig::new(&self.cluster)
            .readiness_endpoint(format!("redis://127.0.0.1:{}", self.port), None)
            .ready_timeout(Duration::from_secs(30))
            .user_state_wait(Duration::from_secs(10))
            .poll_interval(Duration::from_millis(50))
            .tag("team", "payments")
    }

    fn provider(&self, config: MemoryDbConfig) -> MemoryDbProvider {
        MemoryDbProvider::from_sdk_config(config, &self.sdk).expect("provider")
    }

    async fn acl_users(&self) -> Vec<String> {
        let out = self
            .db
            .describe_acls()
            .acl_name(&self.acl)
            .send()
            .await
            .expect("DescribeACLs");
        out.acls()[0].user_names().to_vec()
    }

    async fn cleanup(&self) {
        let _ = self
            .db
            .delete_cluster()
            .cluster_name(&self.cluster)
            .send()
            .await;
    }
}

async fn wait_acl_active(db: &Client, acl: &str) {
    for _ in 0..200 {
        let out = db.describe_acls().acl_name(acl).send().await.unwrap();
        if out.acls()[0].status() == Some("active") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ACL {acl} did not become active");
}

async fn user_exists(db: &Client, user: &str) -> bool {
    match db.describe_users().user_name(user).send().await {
        Ok(out) => !out.users().is_empty(),
        Err(e) => {
            assert!(
                e.as_service_error()
                    .is_some_and(|e| e.is_user_not_found_fault()),
                "{e:?}"
            );
            false
        }
    }
}

/// Deletes a user made by a test itself, waiting out its `creating` state.
async fn delete_out_of_band(db: &Client, user: &str) {
    for _ in 0..100 {
        match db.delete_user().user_name(user).send().await {
            Ok(_) => return,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_invalid_user_state_fault()) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("DeleteUser {user}: {e:?}"),
        }
    }
    panic!("user {user} stayed busy");
}

/// `AUTH user password` and `PING` on one raw connection; both replies.
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

async fn works(port: u16, creds: &Credentials) -> bool {
    let Credentials::UsernamePassword { username, password } = creds else {
        panic!("a username and password expected");
    };
    let (auth, ping) = auth_then_ping(port, username, password.expose_secret()).await;
    auth == "+OK" && ping == "+PONG"
}

fn username() -> String {
    format!("lh-test-{}", random_lowercase(12))
}

fn request(user: &str) -> CreateRequest {
    CreateRequest::new(LeaseId::generate("mdb"), user, Duration::from_secs(900)).with_password(
        leasehold_core::PasswordPolicy::memorydb()
            .generate()
            .unwrap(),
    )
}

#[tokio::test]
async fn lifecycle_auths_on_the_mirror_and_is_refused_after_revoke() {
    let Some(f) = fixture("lifecycle_auths_on_the_mirror_and_is_refused_after_revoke").await else {
        return;
    };
    let provider = Arc::new(f.provider(f.config()));
    let secret = DynamicSecret::builder("orders-cache", provider.clone())
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
        .issue("orders-cache", IssueRequest::new())
        .await
        .expect("issue");
    assert!(lease.live(), "the AUTH check confirmed the credential");
    let user = lease.credentials.principal().to_string();
    assert!(user.starts_with("lh-"), "{user}");
    assert!(
        works(f.port, &lease.credentials).await,
        "AUTH works after issue"
    );
    assert!(f.acl_users().await.contains(&user));

    let record = manager.lookup(&lease.lease_id).await.unwrap();
    assert_eq!(record.external.id, user);
    assert_eq!(record.external.attr(ATTR_ACL), Some(f.acl.as_str()));
    let arn =
        f.db.describe_users()
            .user_name(&user)
            .send()
            .await
            .unwrap()
            .users()[0]
            .arn()
            .unwrap()
            .to_string();
    let tags = f.db.list_tags().resource_arn(&arn).send().await.unwrap();
    let tag = |k: &str| {
        tags.tag_list()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(
        tag("leasehold:lease-id").as_deref(),
        Some(lease.lease_id.as_str())
    );
    assert_eq!(tag("leasehold:secret").as_deref(), Some("orders-cache"));
    assert_eq!(tag(TAG_ACL).as_deref(), Some(f.acl.as_str()));
    assert_eq!(tag("team").as_deref(), Some("payments"));
    assert!(tag("leasehold:expires-at").is_some());

    manager.revoke(&lease.lease_id).await.expect("revoke");
    let Credentials::UsernamePassword { password, .. } = &lease.credentials else {
        unreachable!()
    };
    let (auth, ping) = auth_then_ping(f.port, &user, password.expose_secret()).await;
    assert!(
        auth.starts_with("-WRONGPASS"),
        "AUTH refused after revoke: {auth}"
    );
    assert!(
        ping.starts_with("-NOAUTH"),
        "nothing runs unauthenticated: {ping}"
    );
    assert!(!user_exists(&f.db, &user).await, "the user is deleted");
    assert!(!f.acl_users().await.contains(&user), "and out of the ACL");
    manager.shutdown().await;
    f.cleanup().await;
}

#[tokio::test]
async fn validate_refuses_open_access_and_mismatched_or_missing_acls() {
    let test = "validate_refuses_open_access_and_mismatched_or_missing_acls";
    let Some(f) = fixture(test).await else {
        return;
    };
    f.provider(f.config())
        .validate()
        .await
        .expect("a good cluster validates");
    f.provider(f.config().acl_name(&f.acl))
        .validate()
        .await
        .expect("naming the cluster's own ACL validates");

    let open = unique_name("mdb-open");
    f.db.create_cluster()
        .cluster_name(&open)
        .node_type("db.t4g.small")
        .acl_name("open-access")
        .tls_enabled(false)
        .send()
        .await
        .unwrap();
    let p = f.provider(MemoryDbConfig::new(&open));
    let e = p.validate().await.expect_err("open-access is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("open-access"), "{e}");
    assert!(e.to_string().contains("attach it to the cluster"), "{e}");
    // Issuing against it is refused the same way, before any user is made.
    // The manager validates at registration and refuses the secret.
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .run_worker(false)
        .build()
        .await
        .unwrap();
    let secret = DynamicSecret::builder(
        "open-cache",
        Arc::new(f.provider(MemoryDbConfig::new(&open))),
    )
    .build()
    .unwrap();
    let e = manager
        .register(secret)
        .await
        .expect_err("registration refused");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    manager.shutdown().await;
    let refused = username();
    let e = p
        .create(&request(&refused))
        .await
        .expect_err("no issue on open-access");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert_eq!(
        f.aws
            .call_count_in(Some("memorydb"), "CreateUser", Some(&refused))
            .await,
        0,
        "refused before CreateUser"
    );

    let other = unique_name("mdb-other");
    f.db.create_acl().acl_name(&other).send().await.unwrap();
    let e = f
        .provider(f.config().acl_name(&other))
        .validate()
        .await
        .expect_err("an ACL the cluster does not use");
    assert!(e.to_string().contains("is not the ACL of cluster"), "{e}");

    let e = f
        .provider(MemoryDbConfig::new(unique_name("mdb-none")))
        .validate()
        .await
        .expect_err("missing cluster");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("not found"), "{e}");

    let _ = f.db.delete_cluster().cluster_name(&open).send().await;
    f.cleanup().await;
}

#[tokio::test]
async fn fifty_concurrent_issues_are_batched_into_few_update_acl_calls() {
    let Some(f) = fixture("fifty_concurrent_issues_are_batched_into_few_update_acl_calls").await
    else {
        return;
    };
    let provider = Arc::new(f.provider(f.config()));
    let before = f
        .aws
        .call_count_in(Some("memorydb"), "UpdateACL", Some(&f.acl))
        .await;
    let requests: Vec<CreateRequest> = (0..50).map(|_| request(&username())).collect();
    let results = join_all(requests.iter().map(|r| provider.create(r))).await;
    let created: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every concurrent issue succeeds"))
        .collect();
    let calls = f
        .aws
        .call_count_in(Some("memorydb"), "UpdateACL", Some(&f.acl))
        .await
        - before;
    eprintln!("50 concurrent issues used {calls} UpdateACL call(s)");
    assert!(calls >= 1);
    assert!(calls <= 10, "50 issues took {calls} UpdateACL calls");
    let members = f.acl_users().await;
    for c in &created {
        assert_eq!(c.readiness, Readiness::Confirmed);
        assert!(members.contains(&c.external.id));
    }
    for c in created.iter().step_by(10) {
        assert!(works(f.port, &c.credentials).await);
    }
    let revoked = join_all(created.iter().map(|c| provider.revoke(&c.external))).await;
    assert!(revoked.iter().all(Result::is_ok), "{revoked:?}");
    assert!(f.acl_users().await.is_empty(), "every user left the ACL");
    f.cleanup().await;
}

struct MirrorProbe(u16);

#[async_trait]
impl leasehold_testkit::CredentialProbe for MirrorProbe {
    async fn authenticates(&self, credentials: &Credentials) -> bool {
        works(self.0, credentials).await
    }
}

// The provider suite, one test per behaviour, each on its own ACL and cluster (the emulator
// is shared by the process): credentials must AUTH on the cluster's mirror.
leasehold_testkit::provider_conformance_tests!(cluster, |test| async move {
    let f = fixture(test).await?;
    let provider = f.provider(f.config());
    let probe = MirrorProbe(f.port);
    Some(
        leasehold_testkit::conformance::Fixture::provider(provider)
            .with_probe(probe)
            .after(move || async move { f.cleanup().await }),
    )
});

#[tokio::test]
async fn secrets_stay_out_of_debug_errors_and_tracing() {
    let Some(f) = fixture("secrets_stay_out_of_debug_errors_and_tracing").await else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    let p = f.provider(f.config());
    let user = username();
    let req = request(&user);
    let created = p.create(&req).await.expect("create");
    let dup = p.create(&request(&user)).await.expect_err("duplicate");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    // A failing revoke produces an error to inspect too.
    f.aws
        .inject_fault(
            FaultSpec::fail("DeleteUser", "InternalServerErrorException")
                .status(500)
                .service("memorydb")
                .resource(&user)
                .times(3),
        )
        .await;
    let failed = p.revoke(&created.external).await.expect_err("injected 500");
    assert!(failed.is_temporary(), "{failed}");
    let text = format!("{created:?} {req:?} {p:?} {dup} {dup:?} {failed} {failed:?}");
    leasehold_testkit::assert_no_secret("Debug and errors", &text, &created.credentials);
    f.aws.clear_faults(Some("DeleteUser"), Some(&user)).await;
    p.revoke(&created.external).await.expect("revoke");
    leasehold_testkit::assert_no_secret("tracing output", &logs.contents(), &created.credentials);
    f.cleanup().await;
}

#[tokio::test]
async fn a_failed_update_acl_deletes_the_new_user() {
    let Some(f) = fixture("a_failed_update_acl_deletes_the_new_user").await else {
        return;
    };
    let p = f.provider(f.config());
    let user = username();
    f.aws
        .inject_fault(
            FaultSpec::fail("UpdateACL", "InvalidParameterValueException")
                .service("memorydb")
                .resource(&f.acl),
        )
        .await;
    let e = p
        .create(&request(&user))
        .await
        .expect_err("UpdateACL fails");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert_eq!(e.context("user"), Some(user.as_str()));
    assert!(
        !user_exists(&f.db, &user).await,
        "compensation deleted the user"
    );
    assert_eq!(
        f.aws
            .call_count_in(Some("memorydb"), "DeleteUser", Some(&user))
            .await,
        1
    );
    // A throttled UpdateACL is retried, not fatal.
    f.aws
        .inject_fault(
            FaultSpec::throttle("UpdateACL")
                .service("memorydb")
                .resource(&f.acl)
                .times(2),
        )
        .await;
    let ok = p
        .create(&request(&username()))
        .await
        .expect("throttling is ridden out");
    p.revoke(&ok.external).await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn revoke_rides_out_a_busy_user_and_treats_a_missing_one_as_done() {
    let Some(f) = fixture("revoke_rides_out_a_busy_user_and_treats_a_missing_one_as_done").await
    else {
        return;
    };
    let p = f.provider(f.config());
    let created = p.create(&request(&username())).await.expect("create");
    let user = created.external.id.clone();
    f.aws
        .inject_fault(
            FaultSpec::fail("DeleteUser", "InvalidUserStateFault")
                .service("memorydb")
                .resource(&user)
                .times(2),
        )
        .await;
    p.revoke(&created.external)
        .await
        .expect("revoke after two refusals");
    assert_eq!(
        f.aws
            .call_count_in(Some("memorydb"), "DeleteUser", Some(&user))
            .await,
        3
    );
    assert!(!user_exists(&f.db, &user).await);
    // Already gone, and a name the provider never made: both fine.
    p.revoke(&created.external).await.expect("idempotent");
    p.revoke(&ExternalRef::new(username()))
        .await
        .expect("never created");

    // A user that stays busy past the bound: a temporary error, the user is kept for a retry.
    let p = f.provider(f.config().user_state_wait(Duration::from_millis(300)));
    let created = p.create(&request(&username())).await.expect("create");
    let user = created.external.id.clone();
    f.aws
        .inject_fault(
            FaultSpec::fail("DeleteUser", "InvalidUserStateFault")
                .service("memorydb")
                .resource(&user)
                .always(),
        )
        .await;
    let e = p.revoke(&created.external).await.expect_err("still busy");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.is_persistent(), "{e}");
    f.aws.clear_faults(Some("DeleteUser"), Some(&user)).await;
    p.revoke(&created.external)
        .await
        .expect("revoke once it settles");
    f.cleanup().await;
}

#[tokio::test]
async fn the_acl_user_limit_is_a_typed_error_before_create_user() {
    let Some(f) = fixture("the_acl_user_limit_is_a_typed_error_before_create_user").await else {
        return;
    };
    // Fill the ACL to one short of the limit, out of band.
    let filler: Vec<String> = (1..MAX_USERS_PER_ACL).map(|_| username()).collect();
    let made = join_all(filler.iter().map(|u| {
        f.db.create_user()
            .user_name(u)
            .access_string("on ~* +@all")
            .authentication_mode(
                AuthenticationMode::builder()
                    .r#type(InputAuthenticationType::Password)
                    .passwords("filler-password-0123456789")
                    .build(),
            )
            .send()
    }))
    .await;
    assert!(made.iter().all(Result::is_ok));
    f.db.update_acl()
        .acl_name(&f.acl)
        .set_user_names_to_add(Some(filler.clone()))
        .send()
        .await
        .expect("fill the ACL");
    wait_acl_active(&f.db, &f.acl).await;

    let p = f.provider(f.config());
    let last = p
        .create(&request(&username()))
        .await
        .expect("the 100th user fits");
    let over = username();
    let e = p
        .create(&request(&over))
        .await
        .expect_err("the 101st does not");
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert!(!e.is_temporary());
    assert_eq!(
        f.aws
            .call_count_in(Some("memorydb"), "CreateUser", Some(&over))
            .await,
        0,
        "refused before CreateUser"
    );
    p.revoke(&last.external).await.unwrap();
    for u in &filler {
        delete_out_of_band(&f.db, u).await;
    }
    f.cleanup().await;
}

#[tokio::test]
async fn manager_reconciles_orphans_of_its_own_acl_only() {
    let Some(f) = fixture("manager_reconciles_orphans_of_its_own_acl_only").await else {
        return;
    };
    let provider = Arc::new(f.provider(f.config()));
    let secret = DynamicSecret::builder("mdb-reconcile", provider.clone())
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
        .issue("mdb-reconcile", IssueRequest::new())
        .await
        .expect("issue");
    let leased = lease.credentials.principal().to_string();
    // An orphan: made by the provider, no lease points at it.
    let orphan = provider
        .create(
            &request(&username())
                .with_wait_ready(false)
                .with_installation(Some(manager.installation_id().to_string())),
        )
        .await
        .expect("orphan");
    assert_eq!(orphan.readiness, Readiness::Unchecked);
    // A same-prefixed user made by hand is not the library's.
    let by_hand = username();
    f.db.create_user()
        .user_name(&by_hand)
        .access_string("on ~* +@all")
        .authentication_mode(
            AuthenticationMode::builder()
                .r#type(InputAuthenticationType::Password)
                .passwords("by-hand-password-0123456789")
                .build(),
        )
        .send()
        .await
        .unwrap();

    let dry = manager
        .reconcile("mdb-reconcile", false)
        .await
        .expect("dry run");
    assert_eq!(dry.found, 2, "{dry:?}");
    assert_eq!(dry.orphans.len(), 1, "{dry:?}");
    assert_eq!(dry.orphans[0].external.id, orphan.external.id);
    assert!(
        user_exists(&f.db, &orphan.external.id).await,
        "a dry run removes nothing"
    );
    let applied = manager
        .reconcile("mdb-reconcile", true)
        .await
        .expect("apply");
    assert_eq!(applied.removed.len(), 1, "{applied:?}");
    assert!(
        !user_exists(&f.db, &orphan.external.id).await,
        "orphan removed"
    );
    assert!(user_exists(&f.db, &leased).await, "the leased user stays");
    assert!(
        user_exists(&f.db, &by_hand).await,
        "the hand-made user stays"
    );

    manager.revoke(&lease.lease_id).await.expect("revoke");
    assert!(!user_exists(&f.db, &leased).await);
    delete_out_of_band(&f.db, &by_hand).await;
    manager.shutdown().await;
    f.cleanup().await;
}

#[tokio::test]
async fn statements_shape_the_user() {
    let Some(f) = fixture("statements_shape_the_user").await else {
        return;
    };
    let statement = StatementTemplate::parse(
        r#"{"UserName":"{{username}}","AccessString":"on ~app:* +@read +ping","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Tags":[{"Key":"expires","Value":"{{expiration}}"}]}"#,
    )
    .unwrap();
    let p = f.provider(f.config().creation_statement(statement));
    let created = p.create(&request(&username())).await.expect("create");
    let user = &created.external.id;
    let out = f.db.describe_users().user_name(user).send().await.unwrap();
    assert_eq!(
        out.users()[0].access_string(),
        Some("on ~app:* +@read +ping")
    );
    assert!(works(f.port, &created.credentials).await);
    p.revoke(&created.external).await.unwrap();
    f.cleanup().await;
}

/// Two installations (two stores, two managers, two provider instances) issue onto one ACL:
/// B's reconcile removes B's own orphan and keeps A's live user, which still AUTHs.
#[tokio::test]
async fn two_installations_share_an_acl_and_reconcile_only_their_own() {
    let Some(f) = fixture("two_installations_share_an_acl_and_reconcile_only_their_own").await
    else {
        return;
    };
    let inst_a = format!("a{}", random_lowercase(7));
    let inst_b = format!("b{}", random_lowercase(7));
    let manager_of = |installation: &str| {
        let store = Arc::new(MemoryStore::with_installation_id(installation).unwrap());
        let provider = Arc::new(f.provider(f.config()));
        async move {
            LeaseManager::builder(store)
                .secret(
                    DynamicSecret::builder("shared", provider)
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
    let a = manager_of(&inst_a).await;
    let b = manager_of(&inst_b).await;

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
        let name = lease.credentials.principal();
        assert!(name.starts_with(&format!("lh-{inst}-")), "{name}");
        assert!(
            name.len() <= 40,
            "a MemoryDB user name has at most 40 characters: {name}"
        );
        leasehold_core::NameRule::MemoryDbUserName
            .check(name)
            .expect("a valid user name");
        // The installation tag is on the user itself.
        let arn =
            f.db.describe_users()
                .user_name(name)
                .send()
                .await
                .unwrap()
                .users()[0]
                .arn()
                .expect("a user ARN")
                .to_string();
        let tags =
            f.db.list_tags()
                .resource_arn(&arn)
                .send()
                .await
                .expect("ListTags")
                .tag_list()
                .to_vec();
        let tag = tags
            .iter()
            .find(|t| t.key() == Some(leasehold_aws::tags::INSTALLATION))
            .and_then(|t| t.value());
        assert_eq!(tag, Some(inst.as_str()), "{name}: {tags:?}");
        assert!(f.acl_users().await.contains(&name.to_string()));
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
    assert!(!user_exists(&f.db, b_lost.credentials.principal()).await);
    let mut refused = false;
    for _ in 0..200 {
        if !works(f.port, &b_lost.credentials).await {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "B's orphan no longer authenticates on the mirror");
    // AUTH and a command on one connection, both replies checked.
    for lease in [&a_live, &b_live] {
        let Credentials::UsernamePassword { username, password } = &lease.credentials else {
            panic!("a username and password expected");
        };
        let (auth, ping) = auth_then_ping(f.port, username, password.expose_secret()).await;
        assert_eq!(
            (auth.as_str(), ping.as_str()),
            ("+OK", "+PONG"),
            "{username}"
        );
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
    f.cleanup().await;
}
