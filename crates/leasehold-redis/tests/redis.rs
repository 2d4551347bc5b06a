//! The Redis provider against real `redis-server` processes: a primary with a replica, a TLS
//! node, nodes that are down or refuse, the conformance suite, reconcile, `ACL SAVE`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use leasehold_core::{
    CreateRequest, DynamicSecretProvider, ErrorKind, ExternalRef, IssueRequest, LeaseFilter,
    LeaseId,
};
use leasehold_redis::{RedisAclProvider, RedisConfig};
use leasehold_testkit::servers::{RedisOptions, RedisServer};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const HOUR: Duration = Duration::from_secs(3600);

async fn primary_and_replica(test: &str) -> Option<(RedisServer, RedisServer)> {
    let primary = RedisServer::start(test).await?;
    let opts = RedisOptions {
        replica_of: Some(primary.port()),
        ..Default::default()
    };
    let replica = RedisServer::start_with(test, opts).await?;
    Some((primary, replica))
}

fn provider_for(servers: &[&RedisServer]) -> RedisAclProvider {
    let mut config = RedisConfig::default();
    for s in servers {
        config = config.node(s.url());
    }
    if let Some(ca) = servers.iter().find_map(|s| s.ca_cert_path()) {
        config = config.ca_cert(ca);
    }
    RedisAclProvider::new(config).expect("provider")
}

#[tokio::test]
async fn issued_user_auths_on_primary_and_replica_and_revoke_removes_it_from_both() {
    let Some((primary, replica)) =
        primary_and_replica("issued_user_auths_on_primary_and_replica").await
    else {
        return;
    };
    let provider = Arc::new(provider_for(&[&primary, &replica]));
    let m = manager("orders-cache", provider, HOUR, HOUR).await;
    let lease = m.issue("orders-cache", IssueRequest::new()).await.unwrap();
    assert!(lease.live(), "readiness is confirmed by AUTH on every node");
    let user = lease.credentials.principal().to_string();
    assert!(user.starts_with("lh-"), "{user}");
    for s in [&primary, &replica] {
        assert!(acl_users(s).await.contains(&user), "user exists on {s:?}");
    }

    // Open connections on both nodes, and a SET/GET on the primary.
    let mut on_primary = connect_as(&primary, &lease.credentials)
        .await
        .expect("AUTH on primary");
    let mut on_replica = connect_as(&replica, &lease.credentials)
        .await
        .expect("AUTH on replica");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut on_primary)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut on_primary)
        .await
        .unwrap();
    assert_eq!(v, "v");
    let _: String = redis::cmd("PING")
        .query_async(&mut on_replica)
        .await
        .unwrap();

    m.revoke(&lease.lease_id).await.unwrap();
    for s in [&primary, &replica] {
        assert!(!acl_users(s).await.contains(&user), "user gone from {s:?}");
        assert!(!auths(s, &lease.credentials).await, "AUTH refused on {s:?}");
    }
    // The open connections were closed by the server.
    for conn in [&mut on_primary, &mut on_replica] {
        let mut closed = false;
        for _ in 0..40 {
            if redis::cmd("PING")
                .query_async::<String>(conn)
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed, "an open connection of the revoked user still works");
    }
    assert!(m.list(&LeaseFilter::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn expiry_revokes_on_every_node() {
    let Some((primary, replica)) = primary_and_replica("expiry_revokes_on_every_node").await else {
        return;
    };
    let provider = Arc::new(provider_for(&[&primary, &replica]));
    let m = manager("short", provider, Duration::from_secs(1), HOUR).await;
    let lease = m.issue("short", IssueRequest::new()).await.unwrap();
    let mut open = connect_as(&replica, &lease.credentials)
        .await
        .expect("AUTH on the replica");
    assert!(auths(&primary, &lease.credentials).await);
    // The expiry worker revokes at expiry; allow it a few seconds.
    let gone = eventually(200, || async {
        !auths(&primary, &lease.credentials).await && !auths(&replica, &lease.credentials).await
    })
    .await;
    assert!(gone, "expired credential still authenticates");
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut open)
            .await
            .is_err(),
        "a connection opened before expiry still works"
    );
    assert!(leasehold_users(&primary).await.is_empty());
    assert!(leasehold_users(&replica).await.is_empty());
    assert!(
        eventually(100, || async {
            m.list(&LeaseFilter::all()).await.unwrap().is_empty()
        })
        .await
    );
}

#[tokio::test]
async fn tls_node_issues_and_revokes() {
    let opts = RedisOptions {
        tls: true,
        ..Default::default()
    };
    let Some(server) = RedisServer::start_with("tls_node_issues_and_revokes", opts).await else {
        return;
    };
    let provider = Arc::new(provider_for(&[&server]));
    provider.validate().await.expect("validate over TLS");
    let m = manager("tls", provider, HOUR, HOUR).await;
    let lease = m.issue("tls", IssueRequest::new()).await.unwrap();
    assert!(lease.live());
    assert!(auths(&server, &lease.credentials).await);
    m.revoke(&lease.lease_id).await.unwrap();
    assert!(!auths(&server, &lease.credentials).await);

    // Without the CA the server's certificate is not trusted: a typed error, not a panic.
    let untrusted = RedisAclProvider::new(RedisConfig::new(server.url()).attempts(1)).unwrap();
    let e = untrusted.validate().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::InvalidConfig | ErrorKind::ProviderUnavailable
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_node_down_during_issue_is_a_temporary_error_and_leaves_no_user() {
    let test = "a_node_down_during_issue";
    let Some(a) = RedisServer::start(test).await else {
        return;
    };
    let Some(mut b) = RedisServer::start(test).await else {
        return;
    };
    let provider = Arc::new(
        RedisAclProvider::new(
            RedisConfig::new(a.url())
                .node(b.url())
                .retry_delay(Duration::from_millis(10)),
        )
        .unwrap(),
    );
    let m = manager("two-nodes", provider.clone(), HOUR, HOUR).await;
    b.stop();
    let e = m.issue("two-nodes", IssueRequest::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    // Tried `attempts` times on the node: persistent, retried later, not at once.
    assert!(e.is_persistent(), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", b.port())),
        "{e}"
    );
    assert!(
        leasehold_users(&a).await.is_empty(),
        "no user left on the live node"
    );

    // validate names the node that is down, as an error that may pass.
    let e = provider.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn a_node_that_refuses_setuser_gets_the_user_removed_from_the_others() {
    let test = "a_node_that_refuses_setuser";
    let Some(a) = RedisServer::start(test).await else {
        return;
    };
    let Some(b) = RedisServer::start(test).await else {
        return;
    };
    // The same admin on both nodes, but on b it may look users up and not create them.
    setuser(&a, &["lhadmin", "on", ">adminpw", "~*", "&*", "+@all"]).await;
    setuser(
        &b,
        &[
            "lhadmin",
            "on",
            ">adminpw",
            "~*",
            "&*",
            "+@all",
            "-acl|setuser",
        ],
    )
    .await;
    let provider = RedisAclProvider::new(
        RedisConfig::new(a.url())
            .node(b.url())
            .admin("lhadmin", SecretString::from("adminpw")),
    )
    .unwrap();
    let user = "lh-partial-1";
    let req = CreateRequest::new(LeaseId::generate("partial"), user, HOUR)
        .with_password(provider.password_policy().generate().unwrap());
    let e = provider.create(&req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.is_temporary());
    assert!(
        !acl_users(&a).await.contains(&user.to_string()),
        "compensated on a"
    );
    assert!(!acl_users(&b).await.contains(&user.to_string()));
}

#[tokio::test]
async fn validate_checks_rules_admin_and_leaves_nothing_behind() {
    let Some(s) = RedisServer::start("validate_checks_rules").await else {
        return;
    };
    let before = acl_users(&s).await;
    RedisAclProvider::new(RedisConfig::new(s.url()))
        .unwrap()
        .validate()
        .await
        .expect("default rules validate");

    // Rules that pass the offline check but the server refuses: the server's reason is quoted.
    let p =
        RedisAclProvider::new(RedisConfig::new(s.url()).acl_rules("~* +nosuchcommand")).unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("acl_rules"), "{e}");
    assert!(
        e.to_string().to_lowercase().contains("unknown command"),
        "{e}"
    );
    assert_eq!(acl_users(&s).await, before, "validate left a user behind");

    // A wrong admin password.
    setuser(&s, &["lhadmin", "on", ">right", "~*", "&*", "+@all"]).await;
    let p = RedisAclProvider::new(
        RedisConfig::new(s.url()).admin("lhadmin", SecretString::from("wrong")),
    )
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.to_string().contains("wrong\""), "{e}");

    // An admin that may not manage ACLs.
    setuser(&s, &["weak", "on", ">pw", "~*", "+@read", "+acl|whoami"]).await;
    let p =
        RedisAclProvider::new(RedisConfig::new(s.url()).admin("weak", SecretString::from("pw")))
            .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // The least-privilege admin of the README is enough.
    setuser(
        &s,
        &[
            "minimal",
            "on",
            ">pw",
            "+acl",
            "+role",
            "+info",
            "+cluster|nodes",
            "+ping",
            "+auth",
            "+hello",
        ],
    )
    .await;
    // Without +role / +info discovery cannot work: the error names what to grant.
    setuser(
        &s,
        &[
            "norole", "on", ">pw", "+acl", "+info", "+ping", "+auth", "+hello",
        ],
    )
    .await;
    let p =
        RedisAclProvider::new(RedisConfig::new(s.url()).admin("norole", SecretString::from("pw")))
            .unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("+role"), "{e}");
    setuser(
        &s,
        &[
            "noinfo", "on", ">pw", "+acl", "+role", "+ping", "+auth", "+hello",
        ],
    )
    .await;
    let p =
        RedisAclProvider::new(RedisConfig::new(s.url()).admin("noinfo", SecretString::from("pw")))
            .unwrap();
    let e = p.validate().await.unwrap_err();
    assert!(e.to_string().contains("+info"), "{e}");
    // ... unless discovery is off.
    let p = RedisAclProvider::new(
        RedisConfig::new(s.url())
            .admin("noinfo", SecretString::from("pw"))
            .discover(false),
    )
    .unwrap();
    p.validate().await.expect("discover = false needs no +info");
    setuser(
        &s,
        &[
            "nogetuser",
            "on",
            ">pw",
            "+acl",
            "-acl|getuser",
            "+role",
            "+info",
        ],
    )
    .await;
    let p = RedisAclProvider::new(
        RedisConfig::new(s.url()).admin("nogetuser", SecretString::from("pw")),
    )
    .unwrap();
    let e = p.validate().await.unwrap_err();
    assert!(e.to_string().contains("ACL GETUSER"), "{e}");

    let p =
        RedisAclProvider::new(RedisConfig::new(s.url()).admin("minimal", SecretString::from("pw")))
            .unwrap();
    p.validate()
        .await
        .expect("the README's admin ACL is enough");
    let users: Vec<String> = acl_users(&s).await;
    assert!(
        users.iter().all(|u| !u.starts_with("lh-validate")),
        "{users:?}"
    );
}

#[tokio::test]
async fn existing_users_are_never_overwritten_or_deleted() {
    let Some(s) = RedisServer::start("existing_users_are_never_overwritten").await else {
        return;
    };
    setuser(&s, &["lh-taken", "on", ">theirs", "~*", "+@all"]).await;
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(s.url())).unwrap());
    let req = CreateRequest::new(LeaseId::generate("dup"), "lh-taken", HOUR)
        .with_password(provider.password_policy().generate().unwrap());
    let e = provider.create(&req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // The manager compensates a failed issue by revoking the name it wrote ahead; that must
    // not delete someone else's user.
    provider
        .revoke(&ExternalRef::new("lh-taken"))
        .await
        .unwrap();
    let theirs = leasehold_core::Credentials::UsernamePassword {
        username: "lh-taken".into(),
        password: "theirs".to_string().into(),
    };
    assert!(auths(&s, &theirs).await, "the existing user still works");
}

// The provider suite, one test per behaviour, on a primary with a replica: every credential
// must AUTH on both, and nothing is left on either after each test.
leasehold_testkit::provider_conformance_tests!(primary_and_replica, |test| async move {
    let (primary, replica) = super::primary_and_replica(test).await?;
    let provider = provider_for(&[&primary, &replica]);
    Some(Servers::new(vec![primary, replica]).fixture(provider))
});

#[tokio::test]
async fn reconcile_removes_prefixed_users_without_a_lease() {
    let Some((primary, replica)) = primary_and_replica("reconcile_removes_prefixed").await else {
        return;
    };
    let provider = Arc::new(provider_for(&[&primary, &replica]));
    let m = manager("rec", provider.clone(), HOUR, HOUR).await;
    let kept = m.issue("rec", IssueRequest::new()).await.unwrap();
    // Default usernames carry the installation: `lh-<installation>-<random>`.
    let mark = format!("lh-{}-", m.installation_id());
    assert!(kept.credentials.principal().starts_with(&mark));
    // An orphan of this installation on one node only (say, left by a crash before a replica
    // was added), a prefixed user of another installation, and an unprefixed one.
    let orphan = format!("{mark}orphan");
    setuser(&replica, &[&orphan, "on", ">x", "~*", "+get"]).await;
    setuser(&primary, &["lh-otherinst-user", "on", ">x", "~*", "+get"]).await;
    setuser(&primary, &["someone-else", "on", ">x", "~*", "+get"]).await;
    let listed = provider.list_managed("lh-").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|c| c.external.id.as_str()).collect();
    assert!(names.contains(&orphan.as_str()) && names.contains(&kept.credentials.principal()));
    assert!(!names.contains(&"someone-else"));

    let dry = m.reconcile("rec", false).await.unwrap();
    assert_eq!(dry.orphans.len(), 1, "{dry:?}");
    assert_eq!(dry.orphans[0].external.id, orphan, "{dry:?}");
    assert_eq!(dry.foreign.len(), 1, "{dry:?}");
    assert_eq!(dry.foreign[0].external.id, "lh-otherinst-user", "{dry:?}");
    assert!(acl_users(&replica).await.contains(&orphan));
    let applied = m.reconcile("rec", true).await.unwrap();
    assert_eq!(applied.removed.len(), 1, "{applied:?}");
    assert!(!acl_users(&replica).await.contains(&orphan));
    let left = acl_users(&primary).await;
    assert!(left.contains(&"someone-else".to_string()));
    assert!(
        left.contains(&"lh-otherinst-user".to_string()),
        "another installation's user is never removed"
    );
    assert!(
        auths(&primary, &kept.credentials).await,
        "the leased user is kept"
    );
    m.revoke(&kept.lease_id).await.unwrap();
}

#[tokio::test]
async fn acl_save_writes_the_acl_file() {
    let opts = RedisOptions {
        acl_file: true,
        ..Default::default()
    };
    let Some(s) = RedisServer::start_with("acl_save_writes_the_acl_file", opts).await else {
        return;
    };
    let file = s.acl_file_path().unwrap();
    let provider =
        Arc::new(RedisAclProvider::new(RedisConfig::new(s.url()).acl_save(true)).unwrap());
    let m = manager("saved", provider, HOUR, HOUR).await;
    let lease = m.issue("saved", IssueRequest::new()).await.unwrap();
    let user = lease.credentials.principal().to_string();
    assert!(
        read(&file).contains(&format!("user {user} ")),
        "{}",
        read(&file)
    );
    m.revoke(&lease.lease_id).await.unwrap();
    assert!(!read(&file).contains(&user));

    // acl_save on a server without an aclfile is refused at validate, with the reason.
    let Some(plain) = RedisServer::start("acl_save_without_file").await else {
        return;
    };
    let p = RedisAclProvider::new(RedisConfig::new(plain.url()).acl_save(true)).unwrap();
    let e = p.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("acl_save"), "{e}");
}

#[tokio::test]
async fn no_wait_issues_unchecked_and_rules_apply() {
    let Some(s) = RedisServer::start("no_wait_issues_unchecked").await else {
        return;
    };
    let provider = Arc::new(
        RedisAclProvider::new(RedisConfig::new(s.url()).acl_rules("~app:* +get +set +ping"))
            .unwrap(),
    );
    let m = manager("narrow", provider, HOUR, HOUR).await;
    let lease = m
        .issue("narrow", IssueRequest::new().wait(false))
        .await
        .unwrap();
    assert!(!lease.live());
    let mut c = connect_as(&s, &lease.credentials).await.expect("AUTH");
    let _: () = redis::cmd("SET")
        .arg("app:1")
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    let denied = redis::cmd("SET")
        .arg("other:1")
        .arg("x")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("NOPERM"), "{denied}");
    let denied = redis::cmd("DEL")
        .arg("app:1")
        .query_async::<i64>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("NOPERM"), "{denied}");
    m.revoke(&lease.lease_id).await.unwrap();
}

#[tokio::test]
async fn secrets_do_not_leak_into_debug_errors_or_tracing() {
    let logs = leasehold_testkit::capture_tracing();
    let Some(s) = RedisServer::start("secrets_do_not_leak").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(s.url())).unwrap());
    let m = manager("leaky", provider.clone(), HOUR, HOUR).await;
    let lease = m.issue("leaky", IssueRequest::new()).await.unwrap();
    let user = lease.credentials.principal().to_string();
    // A duplicate create with the live password yields an error to inspect.
    let dup = provider
        .create(
            &CreateRequest::new(LeaseId::generate("leaky"), &user, HOUR)
                .with_password(lease.credentials.secret().clone()),
        )
        .await
        .unwrap_err();
    let records = m.list(&LeaseFilter::all()).await.unwrap();
    let text = format!("{lease:?} {provider:?} {dup} {dup:?} {records:?} {m:?}");
    leasehold_testkit::assert_no_secret(
        "Debug, errors and lease records",
        &text,
        &lease.credentials,
    );
    m.revoke(&lease.lease_id).await.unwrap();
    leasehold_testkit::assert_no_secret("tracing output", &logs.contents(), &lease.credentials);
    assert!(
        logs.contents().contains(&user),
        "tracing saw the provider's events"
    );
}

#[tokio::test]
async fn bad_input_is_a_typed_error_without_a_network_call() {
    // Nothing listens here: any network call would be ProviderUnavailable instead.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p =
        RedisAclProvider::new(RedisConfig::new(format!("redis://127.0.0.1:{port}")).attempts(1))
            .unwrap();
    let pw = p.password_policy().generate().unwrap();
    for bad in ["", "has space", "default", "tab\there", "ünï"] {
        let req = CreateRequest::new(LeaseId::generate("bad"), bad, HOUR).with_password(pw.clone());
        let e = p.create(&req).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
        let e = p.revoke(&ExternalRef::new(bad)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    let no_pw = CreateRequest::new(LeaseId::generate("bad"), "lh-ok", HOUR);
    assert_eq!(
        p.create(&no_pw).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let spaced = CreateRequest::new(LeaseId::generate("bad"), "lh-ok", HOUR)
        .with_password("two words".to_string().into());
    let e = p.create(&spaced).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains("two words"));

    for (config, field) in [
        (
            RedisConfig::new("redis://127.0.0.1").acl_rules("+@all nopass"),
            "acl_rules",
        ),
        (
            RedisConfig::new("redis://127.0.0.1").acl_rules("+@all >pw"),
            "acl_rules",
        ),
        (
            RedisConfig::new("redis://127.0.0.1").acl_rules("+@all resetpass"),
            "acl_rules",
        ),
        (RedisConfig::new("redis://u:pw@127.0.0.1"), "urls[0]"),
        (RedisConfig::new("ftp://127.0.0.1"), "urls[0]"),
        (RedisConfig::default(), "urls"),
    ] {
        let e = RedisAclProvider::new(config).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(e.message().starts_with(field), "{e}");
    }
    // And the node really is unreachable: the same provider fails with a network error.
    assert_eq!(
        p.validate().await.unwrap_err().kind(),
        ErrorKind::ProviderUnavailable
    );
}

#[tokio::test]
async fn a_dropped_admin_connection_is_retried_transparently() {
    let Some(s) = RedisServer::start("a_dropped_admin_connection").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(s.url())).unwrap());
    provider.validate().await.unwrap(); // opens and keeps the admin connection
                                        // Drop every other client's connection (the provider's included).
    let mut killer = admin(&s).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut killer)
        .await
        .unwrap();
    assert!(killed >= 1);
    let m = manager("retry", provider, HOUR, HOUR).await;
    let lease = m
        .issue("retry", IssueRequest::new())
        .await
        .expect("issue after a dropped connection");
    assert!(auths(&s, &lease.credentials).await);
    m.revoke(&lease.lease_id).await.unwrap();
}

/// Writes `args` as one RESP command.
async fn send(stream: &mut tokio::net::tcp::OwnedWriteHalf, args: &[&str]) -> std::io::Result<()> {
    let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    stream.write_all(&cmd).await
}

/// `ACL DELUSER` closes the deleted user's connections (Redis 6.0+), so revoke needs no
/// `CLIENT KILL USER`: with an admin that may not run it, revoke succeeds without a warning
/// and a connection authenticated as the leased user is closed.
#[tokio::test]
async fn revoke_closes_the_users_open_connections_without_client_kill() {
    let Some(s) = RedisServer::start("revoke_closes_open_connections").await else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    // The README's admin: no +client|kill.
    setuser(
        &s,
        &[
            "lhadmin",
            "on",
            ">adminpw",
            "+acl",
            "+role",
            "+info",
            "+cluster|nodes",
            "+ping",
            "+auth",
            "+hello",
        ],
    )
    .await;
    let provider = Arc::new(
        RedisAclProvider::new(
            RedisConfig::new(s.url()).admin("lhadmin", SecretString::from("adminpw")),
        )
        .unwrap(),
    );
    let m = manager("conns", provider, HOUR, HOUR).await;
    let lease = m.issue("conns", IssueRequest::new()).await.unwrap();
    let leasehold_core::Credentials::UsernamePassword { username, password } = &lease.credentials
    else {
        panic!("a username and password expected");
    };

    // AUTH and a command on one connection: both replies count (a refused AUTH would leave
    // the connection as `default`).
    let stream = TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let pw = secrecy::ExposeSecret::expose_secret(password);
    send(&mut write, &["AUTH", username, pw]).await.unwrap();
    send(&mut write, &["PING"]).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+PONG"));

    m.revoke(&lease.lease_id).await.expect("revoke succeeds");
    assert!(!acl_users(&s).await.contains(username));

    // The next command on that connection fails: the server closed it.
    let _ = send(&mut write, &["PING"]).await;
    let next = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("the connection answers or closes");
    assert!(
        matches!(next, Ok(None) | Err(_)),
        "the revoked user's connection still answers: {next:?}"
    );

    let warnings: Vec<String> = logs
        .contents()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(username.as_str()))
        .map(str::to_string)
        .collect();
    assert!(warnings.is_empty(), "revoke warned: {warnings:?}");
}

/// `AUTH user password` then `PING` on one connection; both replies.
async fn auth_then_ping(s: &RedisServer, creds: &leasehold_core::Credentials) -> (String, String) {
    let leasehold_core::Credentials::UsernamePassword { username, password } = creds else {
        panic!("a username and password expected");
    };
    let stream = TcpStream::connect(("127.0.0.1", s.port())).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let pw = secrecy::ExposeSecret::expose_secret(password);
    send(&mut write, &["AUTH", username, pw]).await.unwrap();
    send(&mut write, &["PING"]).await.unwrap();
    let first = lines.next_line().await.unwrap().unwrap_or_default();
    let second = lines.next_line().await.unwrap().unwrap_or_default();
    (first, second)
}

/// Two installations (two stores, two managers) issue from one Redis: B's reconcile removes
/// B's own orphan and leaves A's live user alone, which still authenticates.
#[tokio::test]
async fn two_installations_share_one_server_and_reconcile_only_their_own() {
    let Some(s) = RedisServer::start("two_installations_share_one_server").await else {
        return;
    };
    let provider = Arc::new(provider_for(&[&s]));
    let store_a = Arc::new(leasehold_core::MemoryStore::with_installation_id("insta").unwrap());
    let store_b = Arc::new(leasehold_core::MemoryStore::with_installation_id("instb").unwrap());
    let on = |store: Arc<leasehold_core::MemoryStore>| {
        let provider = provider.clone();
        async move {
            leasehold_core::LeaseManager::builder(store)
                .secret(
                    leasehold_core::DynamicSecret::builder("shared", provider)
                        .default_ttl(HOUR)
                        .build()
                        .unwrap(),
                )
                .run_worker(false)
                .build()
                .await
                .expect("manager")
        }
    };
    let a = on(store_a.clone()).await;
    let b = on(store_b.clone()).await;
    assert_eq!(a.installation_id(), "insta");
    assert_eq!(b.installation_id(), "instb");

    let a_live = a.issue("shared", IssueRequest::new()).await.unwrap();
    let b_live = b.issue("shared", IssueRequest::new()).await.unwrap();
    let b_lost = b.issue("shared", IssueRequest::new()).await.unwrap();
    for (lease, inst) in [(&a_live, "insta"), (&b_live, "instb"), (&b_lost, "instb")] {
        let name = lease.credentials.principal();
        assert!(name.starts_with(&format!("lh-{inst}-")), "{name}");
        leasehold_core::NameRule::RedisAclUser
            .check(name)
            .expect("a valid ACL user name");
    }
    // B loses the record of one lease: its user is now B's orphan.
    let record = leasehold_core::LeaseStore::get(&*store_b, &b_lost.lease_id)
        .await
        .unwrap()
        .unwrap();
    leasehold_core::LeaseStore::delete(&*store_b, &b_lost.lease_id, record.version)
        .await
        .unwrap();

    let report = b.reconcile("shared", true).await.expect("reconcile");
    let ids = |v: &[leasehold_core::ManagedCredential]| -> Vec<String> {
        v.iter().map(|c| c.external.id.clone()).collect()
    };
    assert_eq!(report.installation, "instb");
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

    // A's user is untouched and works: AUTH and a command on one connection.
    assert_eq!(
        auth_then_ping(&s, &a_live.credentials).await,
        ("+OK".to_string(), "+PONG".to_string()),
        "A's live user still authenticates"
    );
    assert_eq!(
        auth_then_ping(&s, &b_live.credentials).await,
        ("+OK".to_string(), "+PONG".to_string())
    );
    let (auth, _) = auth_then_ping(&s, &b_lost.credentials).await;
    assert!(auth.starts_with("-WRONGPASS"), "B's orphan is gone: {auth}");

    // A's reconcile sees B's live user as foreign and has no orphans.
    let report = a.reconcile("shared", true).await.expect("reconcile");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(
        ids(&report.foreign),
        vec![b_live.credentials.principal().to_string()]
    );

    a.revoke(&a_live.lease_id).await.unwrap();
    b.revoke(&b_live.lease_id).await.unwrap();
    assert!(leasehold_users(&s).await.is_empty());
}
