//! IAM auth tokens for MemoryDB: the token equals botocore's presigned URL for the same
//! credentials and clock; `validate` against the emulator (IAM user in the cluster's ACL
//! accepted; password user, missing user, user outside the ACL refused); leases that end with
//! the token; a `CredentialWatch` that keeps handing out valid tokens; no secret in logs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType};
use aws_sdk_memorydb::Client;
use leasehold_aws::{AuthTokenBuilder, AuthTokenClock};
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecret, DynamicSecretProvider, ErrorKind, ExternalRef,
    IssueRequest, LeaseFilter, LeaseId, LeaseManager, MemoryStore, Readiness, WatchEvent,
    WatchOptions,
};
use leasehold_memorydb::{
    MemoryDbIamTokenConfig, MemoryDbIamTokenProvider, MemoryDbIamUser, IAM_TOKEN_KIND,
};
use leasehold_testkit::servers::{skip_or_panic, unique_name, AwsEmulator, TransitionKind};
use secrecy::ExposeSecret;

// ---------------------------------------------------------------- botocore reference

/// Signs the same request with botocore's `RequestSigner.generate_presigned_url`, its clock
/// pinned to `time`, and strips the scheme.
const BOTOCORE_SIGNER: &str = r#"
import sys, json, datetime
from urllib.parse import urlencode
import botocore.auth, botocore.session
from botocore.credentials import Credentials
from botocore.model import ServiceId
from botocore.signers import RequestSigner

a = json.loads(sys.stdin.read())
at = datetime.datetime.fromtimestamp(a["time"], datetime.timezone.utc).replace(tzinfo=None)
botocore.auth.get_current_datetime = lambda *args, **kw: at
creds = Credentials(a["access_key_id"], a["secret_access_key"], a.get("session_token"))
emitter = botocore.session.get_session().get_component("event_emitter")
signer = RequestSigner(ServiceId(a["service"]), a["region"], a["service"], "v4", creds, emitter)
query = {"Action": "connect", "User": a["user"]}
if a.get("serverless"):
    query["ResourceType"] = "ServerlessCache"
url = "http://" + a["resource"] + "/?" + urlencode(query)
signed = signer.generate_presigned_url(
    {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
    operation_name="connect", expires_in=a["expires_in"], region_name=a["region"])
assert signed.startswith("http://")
print(signed[len("http://"):])
"#;

fn python() -> PathBuf {
    std::env::var_os("LEASEHOLD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

/// botocore's token, or `None` (after skip_or_panic) when there is no Python with botocore.
fn botocore_token(test: &str, args: serde_json::Value) -> Option<String> {
    let py = python();
    let child = Command::new(&py)
        .arg("-c")
        .arg(BOTOCORE_SIGNER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            skip_or_panic(test, &format!("cannot run {}: {e}", py.display()));
            return None;
        }
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(args.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("No module named 'botocore'") {
            skip_or_panic(test, &format!("{} has no botocore", py.display()));
            return None;
        }
        panic!("botocore signer failed: {stderr}");
    }
    Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
}

fn fixed_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_718_000_123)
}

#[test]
fn memorydb_token_equals_botocore() {
    let session = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";
    for (session_token, expires_in) in [(None, 900u64), (Some(session), 300)] {
        let creds = aws_credential_types::Credentials::new(
            "ASIAEXAMPLEKEYID",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_string),
            None,
            "test",
        );
        let ours = AuthTokenBuilder::memorydb("eu-central-1", "orders-cluster", "orders-app")
            .expires_in(Duration::from_secs(expires_in))
            .clock(AuthTokenClock::fixed(fixed_time()))
            .sign(&creds)
            .unwrap();
        let Some(theirs) = botocore_token(
            "memorydb_token_equals_botocore",
            serde_json::json!({
                "time": 1_718_000_123u64,
                "access_key_id": "ASIAEXAMPLEKEYID",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "session_token": session_token,
                "service": "memorydb",
                "region": "eu-central-1",
                "resource": "orders-cluster",
                "user": "orders-app",
                "expires_in": expires_in,
            }),
        ) else {
            return;
        };
        assert_eq!(ours.token().expose_secret(), theirs);
        assert!(theirs.contains("%2Fmemorydb%2Faws4_request"));
        assert_eq!(
            theirs.contains("X-Amz-Security-Token="),
            session_token.is_some()
        );
    }
}

// ---------------------------------------------------------------- emulator fixture

struct Fixture {
    sdk: SdkConfig,
    db: Client,
    cluster: String,
    iam_user: String,
    password_user: String,
    outsider: String,
}

async fn wait_acl_active(db: &Client, acl: &str) {
    for _ in 0..400 {
        let out = db.describe_acls().acl_name(acl).send().await.unwrap();
        if out.acls()[0].status() == Some("active") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("ACL {acl} did not become active");
}

async fn wait_user_active(db: &Client, user: &str) {
    for _ in 0..400 {
        let out = db.describe_users().user_name(user).send().await.unwrap();
        if out.users()[0].status() == Some("active") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("user {user} did not become active");
}

async fn create_user(db: &Client, name: &str, iam: bool) {
    let mode = if iam {
        AuthenticationMode::builder()
            .r#type(InputAuthenticationType::Iam)
            .build()
    } else {
        AuthenticationMode::builder()
            .r#type(InputAuthenticationType::Password)
            .passwords("a-long-enough-password-1")
            .build()
    };
    db.create_user()
        .user_name(name)
        .access_string("on ~app:* +@read")
        .authentication_mode(mode)
        .send()
        .await
        .expect("CreateUser");
    wait_user_active(db, name).await;
}

/// A cluster whose ACL holds an IAM user and a password user; a second IAM user outside it.
async fn fixture(test: &str) -> Option<Fixture> {
    let aws = AwsEmulator::shared(test).await?;
    let sdk = aws.sdk_config().await;
    let db = Client::new(&sdk);
    let acl = unique_name("iam-acl");
    let cluster = unique_name("iam-cl");
    let iam_user = unique_name("iam-u");
    let password_user = unique_name("pw-u");
    let outsider = unique_name("iam-out");
    aws.set_modifying(TransitionKind::Acl, Some(&acl), Duration::from_millis(100))
        .await;
    create_user(&db, &iam_user, true).await;
    create_user(&db, &password_user, false).await;
    create_user(&db, &outsider, true).await;
    db.create_acl()
        .acl_name(&acl)
        .user_names(&iam_user)
        .user_names(&password_user)
        .send()
        .await
        .expect("CreateACL");
    wait_acl_active(&db, &acl).await;
    db.create_cluster()
        .cluster_name(&cluster)
        .node_type("db.t4g.small")
        .acl_name(&acl)
        .tls_enabled(true)
        .send()
        .await
        .expect("CreateCluster");
    Some(Fixture {
        sdk,
        db,
        cluster,
        iam_user,
        password_user,
        outsider,
    })
}

impl Fixture {
    fn provider(&self, user: &str, expiry: Duration) -> MemoryDbIamTokenProvider {
        MemoryDbIamTokenProvider::from_sdk_config(
            MemoryDbIamTokenConfig::new(MemoryDbIamUser::new(&self.cluster, user))
                .token_expiry(expiry),
            &self.sdk,
        )
        .expect("provider")
    }

    /// The emulator's credentials, resolved as the provider resolves them.
    async fn credentials(&self) -> aws_credential_types::Credentials {
        use aws_credential_types::provider::ProvideCredentials;
        let provider: SharedCredentialsProvider = self.sdk.credentials_provider().unwrap();
        provider.provide_credentials().await.unwrap()
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

/// Checks that `token` is one the builder signs for its own `X-Amz-Date` (so: correctly
/// signed for this cluster and user) and that it has not expired at `now`.
fn assert_valid_token(
    builder: &AuthTokenBuilder,
    creds: &aws_credential_types::Credentials,
    token: &str,
    now: SystemTime,
) {
    let date = token
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Date="))
        .expect("token has X-Amz-Date");
    let signed_at = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .expect("X-Amz-Date parses")
        .and_utc();
    let signed_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at.timestamp()).unwrap());
    let expected = builder.sign_at(creds, signed_at).unwrap();
    assert_eq!(
        token,
        expected.token().expose_secret(),
        "token is not correctly signed"
    );
    let expires: u64 = token
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Expires="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        signed_at + Duration::from_secs(expires) > now,
        "token expired before it was used"
    );
}

// ---------------------------------------------------------------- validate

#[tokio::test]
async fn validate_accepts_an_iam_user_in_the_acl_and_refuses_the_rest() {
    let test = "validate_accepts_an_iam_user_in_the_acl_and_refuses_the_rest";
    let Some(f) = fixture(test).await else {
        return;
    };
    let expiry = Duration::from_secs(900);
    f.provider(&f.iam_user, expiry)
        .validate()
        .await
        .expect("an IAM user in the cluster's ACL is accepted");

    let e = f
        .provider(&f.password_user, expiry)
        .validate()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("not IAM"), "{e}");

    let e = f
        .provider(&f.outsider, expiry)
        .validate()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("is not in ACL"), "{e}");

    let e = f
        .provider(&unique_name("nobody"), expiry)
        .validate()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("not found"), "{e}");

    let other = MemoryDbIamTokenProvider::from_sdk_config(
        MemoryDbIamTokenConfig::new(MemoryDbIamUser::new(unique_name("no-cluster"), &f.iam_user)),
        &f.sdk,
    )
    .unwrap();
    let e = other.validate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("cluster"), "{e}");

    // A manager refuses to register the secret of a password user.
    let secret = DynamicSecret::builder(
        "pw",
        Arc::new(f.provider(&f.password_user, expiry)) as Arc<dyn DynamicSecretProvider>,
    )
    .default_ttl(expiry)
    .max_ttl(expiry)
    .build()
    .unwrap();
    let built = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await;
    assert!(built.is_err(), "the manager validated a password user");
    f.cleanup().await;
}

// ---------------------------------------------------------------- leases

#[tokio::test]
async fn a_lease_is_the_user_and_a_token_that_ends_it() {
    let test = "a_lease_is_the_user_and_a_token_that_ends_it";
    let Some(f) = fixture(test).await else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    let p = f.provider(&f.iam_user, Duration::from_secs(600));
    let caps = p.capabilities();
    assert!(!caps.renewable && !caps.revocable && !caps.needs_password);
    assert_eq!(caps.max_ttl, Some(Duration::from_secs(600)));
    assert_eq!(p.kind(), IAM_TOKEN_KIND);

    let before = SystemTime::now();
    let req = CreateRequest::new(
        LeaseId::generate("mdb-iam"),
        "lh-label",
        Duration::from_secs(600),
    );
    let created = p.create(&req).await.expect("create");
    let Credentials::UsernamePassword { username, password } = &created.credentials else {
        panic!("a username and password");
    };
    assert_eq!(
        username, &f.iam_user,
        "the credential is the configured user"
    );
    let token = password.expose_secret();
    assert!(token.starts_with(&format!(
        "{}/?Action=connect&User={}&",
        f.cluster, f.iam_user
    )));
    assert_valid_token(
        p.token_builder(),
        &f.credentials().await,
        token,
        SystemTime::now(),
    );
    assert_eq!(created.readiness, Readiness::Unchecked);
    let ends = created
        .expires_at
        .expect("the token's expiry ends the lease");
    let from_now = (ends - chrono::DateTime::<chrono::Utc>::from(before)).num_seconds();
    assert!((599..=601).contains(&from_now), "{from_now}");
    assert_eq!(created.external.id, f.iam_user);

    let e = p
        .renew(&created.external, chrono::Utc::now())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotRenewable);
    p.revoke(&created.external).await.expect("revoke closes");
    p.revoke(&created.external).await.expect("revoke again");
    p.revoke(&ExternalRef::new("lh-never"))
        .await
        .expect("revoke of a never-created lease");

    // Through a manager: the lease's expiry is the token's.
    let secret = DynamicSecret::builder("mdb-iam", Arc::new(p) as Arc<dyn DynamicSecretProvider>)
        .default_ttl(Duration::from_secs(600))
        .max_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let m = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .expect("manager validates");
    let lease = m.issue("mdb-iam", IssueRequest::new()).await.unwrap();
    assert!(!lease.renewable);
    assert!(lease.expires_at <= lease.issued_at + chrono::Duration::seconds(601));
    let stored = m.list(&LeaseFilter::all()).await.unwrap();
    let stored_text = format!("{stored:?}");
    leasehold_testkit::assert_no_secret("the lease store", &stored_text, &lease.credentials);
    leasehold_testkit::assert_no_secret(
        "Debug of the lease",
        &format!("{lease:?} {created:?}"),
        &lease.credentials,
    );
    m.revoke(&lease.lease_id).await.unwrap();

    // Neither the tokens nor the signing keys reach the logs.
    let text = logs.contents();
    leasehold_testkit::assert_no_secret("tracing", &text, &created.credentials);
    leasehold_testkit::assert_no_secret("tracing", &text, &lease.credentials);
    f.cleanup().await;
}

#[tokio::test]
async fn session_tokens_stay_out_of_logs() {
    let logs = leasehold_testkit::capture_tracing();
    let session = "FQoGZXIvYXdzSESSIONTOKENNEVERLOGGED";
    let creds = aws_credential_types::Credentials::new(
        "ASIAEXAMPLE",
        "SECRETKEYNEVERLOGGED",
        Some(session.into()),
        None,
        "t",
    );
    let t = AuthTokenBuilder::memorydb("us-east-1", "c", "u")
        .sign(&creds)
        .unwrap();
    tracing::info!(token = ?t, "signed");
    let text = logs.contents();
    assert!(text.contains("signed"), "capture works");
    assert!(!text.contains("SESSIONTOKENNEVERLOGGED"));
    assert!(!text.contains("SECRETKEYNEVERLOGGED"));
    assert!(!text.contains(t.token().expose_secret()));
}

// ---------------------------------------------------------------- watcher

#[tokio::test]
async fn a_watch_keeps_handing_out_valid_tokens() {
    let test = "a_watch_keeps_handing_out_valid_tokens";
    let Some(f) = fixture(test).await else {
        return;
    };
    // Refreshes at half the lifetime: a new token about every 1.5 s, each signed in a
    // different second (X-Amz-Date has whole seconds).
    let expiry = Duration::from_secs(3);
    let p = f.provider(&f.iam_user, expiry);
    let builder = p.token_builder().clone();
    let creds = f.credentials().await;
    let secret = DynamicSecret::builder("mdb-watch", Arc::new(p) as Arc<dyn DynamicSecretProvider>)
        .default_ttl(expiry)
        .max_ttl(expiry)
        .build()
        .unwrap();
    let m = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .expect("manager validates");
    let watch = m
        .watch(
            "mdb-watch",
            IssueRequest::new(),
            WatchOptions::default()
                .refresh_at(0.5)
                .jitter(0.0)
                .grace(Duration::ZERO)
                .retry_delay(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let mut events = watch.events();
    let mut tokens = std::collections::HashSet::new();
    let mut rotations = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rotations < 3 && tokio::time::Instant::now() < deadline {
        let lease = watch.current();
        let Credentials::UsernamePassword { username, password } = &lease.credentials else {
            panic!("a username and password");
        };
        assert_eq!(username, &f.iam_user);
        assert!(
            lease.expires_at > chrono::Utc::now(),
            "current() is expired"
        );
        assert_valid_token(
            &builder,
            &creds,
            password.expose_secret(),
            SystemTime::now(),
        );
        tokens.insert(password.expose_secret().to_string());
        while let Ok(ev) = events.try_recv() {
            match ev {
                WatchEvent::Rotated { .. } => rotations += 1,
                WatchEvent::RefreshFailed { message, .. } => panic!("refresh failed: {message}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotations >= 2, "rotations: {rotations}");
    assert!(tokens.len() >= 3, "distinct tokens: {}", tokens.len());
    watch.close().await.unwrap();
    f.cleanup().await;
}

/// The cluster and IAM user the conformance tests share: made once per process (the token
/// provider only signs tokens and changes nothing), left to the emulator's end.
static CONFORMANCE_FIXTURE: tokio::sync::OnceCell<(String, String)> =
    tokio::sync::OnceCell::const_new();

// The provider suite, one test per behaviour.
leasehold_testkit::provider_conformance_tests!(cluster_token, |test| async move {
    let aws = AwsEmulator::shared(test).await?;
    let (cluster, user) = CONFORMANCE_FIXTURE
        .get_or_init(|| async {
            let f = fixture(test).await.expect("the emulator answered");
            (f.cluster.clone(), f.iam_user.clone())
        })
        .await
        .clone();
    let provider = MemoryDbIamTokenProvider::from_sdk_config(
        MemoryDbIamTokenConfig::new(MemoryDbIamUser::new(&cluster, &user))
            .token_expiry(Duration::from_secs(900)),
        &aws.sdk_config().await,
    )
    .expect("provider");
    Some(leasehold_testkit::conformance::Fixture::provider(provider))
});
