//! IAM auth tokens for ElastiCache: the token equals botocore's presigned URL for the same
//! credentials and clock (replication group and serverless cache, with and without a session
//! token); `validate` against the emulator (IAM user in the cache's group accepted; password
//! user, user named unlike its id, user outside the group refused); leases that end with the
//! token; a `CredentialWatch` that keeps handing out valid tokens; no secret in logs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_elasticache::types::{AuthenticationMode, InputAuthenticationType};
use aws_sdk_elasticache::Client;
use leasehold_aws::{AuthTokenBuilder, AuthTokenClock};
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecret, DynamicSecretProvider, ErrorKind, ExternalRef,
    IssueRequest, LeaseFilter, LeaseId, LeaseManager, MemoryStore, Readiness, WatchEvent,
    WatchOptions,
};
use leasehold_elasticache::{
    ElastiCacheIamTokenConfig, ElastiCacheIamTokenProvider, ElastiCacheIamUser, Target,
    IAM_TOKEN_KIND,
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

#[test]
fn elasticache_tokens_equal_botocore() {
    let test = "elasticache_tokens_equal_botocore";
    let time = 1_718_000_123u64;
    let session = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";
    let cases = [
        (false, None, 900u64),
        (false, Some(session), 900),
        (true, None, 900),
        (true, Some(session), 120),
    ];
    for (serverless, session_token, expires_in) in cases {
        let creds = aws_credential_types::Credentials::new(
            "ASIAEXAMPLEKEYID",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_string),
            None,
            "test",
        );
        let target = if serverless {
            Target::ServerlessCache("orders-cache".into())
        } else {
            Target::ReplicationGroup("orders-cache".into())
        };
        // Through the provider's own builder, as leases get it.
        let provider = ElastiCacheIamTokenProvider::from_parts(
            ElastiCacheIamTokenConfig::new(ElastiCacheIamUser::new(target, "orders-app"))
                .token_expiry(Duration::from_secs(expires_in)),
            Client::from_conf(
                aws_sdk_elasticache::Config::builder()
                    .behavior_version(aws_sdk_elasticache::config::BehaviorVersion::latest())
                    .region(aws_sdk_elasticache::config::Region::new("ap-southeast-2"))
                    .build(),
            ),
            SharedCredentialsProvider::new(creds.clone()),
            "ap-southeast-2",
        )
        .unwrap()
        .with_clock(AuthTokenClock::fixed(
            UNIX_EPOCH + Duration::from_secs(time),
        ));
        let ours = provider.token_builder().sign(&creds).unwrap();
        let Some(theirs) = botocore_token(
            test,
            serde_json::json!({
                "time": time,
                "access_key_id": "ASIAEXAMPLEKEYID",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "session_token": session_token,
                "service": "elasticache",
                "region": "ap-southeast-2",
                "resource": "orders-cache",
                "user": "orders-app",
                "serverless": serverless,
                "expires_in": expires_in,
            }),
        ) else {
            return;
        };
        assert_eq!(
            ours.token().expose_secret(),
            theirs,
            "serverless={serverless} session={}",
            session_token.is_some()
        );
        assert_eq!(theirs.contains("ResourceType=ServerlessCache"), serverless);
        assert_eq!(
            theirs.contains("X-Amz-Security-Token="),
            session_token.is_some()
        );
    }
}

// ---------------------------------------------------------------- emulator fixture

struct Fixture {
    sdk: SdkConfig,
    ec: Client,
    cache: String,
    rg: String,
    iam_user: String,
    password_user: String,
    misnamed: String,
    outsider: String,
}

async fn wait_active(what: &str, mut status: impl AsyncFnMut() -> Option<String>) {
    for _ in 0..400 {
        if status().await.as_deref() == Some("active") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not become active");
}

async fn user_status(ec: &Client, id: &str) -> Option<String> {
    let out = ec.describe_users().user_id(id).send().await.ok()?;
    out.users()
        .first()
        .and_then(|u| u.status())
        .map(str::to_string)
}

async fn create_user(ec: &Client, id: &str, name: &str, iam: bool) {
    let req = ec
        .create_user()
        .user_id(id)
        .user_name(name)
        .engine("redis")
        .access_string("on ~app:* +@read");
    let req = if iam {
        req.authentication_mode(
            AuthenticationMode::builder()
                .r#type(InputAuthenticationType::Iam)
                .build(),
        )
    } else {
        req.passwords("a-long-enough-password-1")
    };
    req.send().await.expect("CreateUser");
    wait_active(&format!("user {id}"), async || user_status(ec, id).await).await;
}

/// A serverless cache and a replication group sharing one user group, which holds the
/// built-in `default` user, an IAM user, a password user and an IAM user whose name differs
/// from its id; a second IAM user outside the group.
async fn fixture(test: &str) -> Option<Fixture> {
    let aws = AwsEmulator::shared(test).await?;
    let sdk = aws.sdk_config().await;
    let ec = Client::new(&sdk);
    let group = unique_name("iam-g");
    let iam_user = unique_name("iam-u");
    let password_user = unique_name("pw-u");
    let misnamed = unique_name("iam-m");
    let outsider = unique_name("iam-out");
    aws.set_modifying(
        TransitionKind::UserGroup,
        Some(&group),
        Duration::from_millis(100),
    )
    .await;
    create_user(&ec, &iam_user, &iam_user, true).await;
    create_user(&ec, &password_user, &password_user, false).await;
    create_user(&ec, &misnamed, &format!("{misnamed}-name"), true).await;
    create_user(&ec, &outsider, &outsider, true).await;
    ec.create_user_group()
        .user_group_id(&group)
        .engine("redis")
        .user_ids("default")
        .user_ids(&iam_user)
        .user_ids(&password_user)
        .user_ids(&misnamed)
        .send()
        .await
        .expect("CreateUserGroup");
    wait_active(&format!("group {group}"), async || {
        let out = ec
            .describe_user_groups()
            .user_group_id(&group)
            .send()
            .await
            .ok()?;
        out.user_groups()
            .first()
            .and_then(|g| g.status())
            .map(str::to_string)
    })
    .await;
    let cache = unique_name("iam-sc");
    ec.create_serverless_cache()
        .serverless_cache_name(&cache)
        .engine("redis")
        .user_group_id(&group)
        .send()
        .await
        .expect("CreateServerlessCache");
    let rg = unique_name("iam-rg");
    ec.create_replication_group()
        .replication_group_id(&rg)
        .replication_group_description("leasehold IAM token test")
        .engine("redis")
        .user_group_ids(&group)
        .send()
        .await
        .expect("CreateReplicationGroup");
    Some(Fixture {
        sdk,
        ec,
        cache,
        rg,
        iam_user,
        password_user,
        misnamed,
        outsider,
    })
}

impl Fixture {
    fn provider(
        &self,
        target: Target,
        user: &str,
        expiry: Duration,
    ) -> ElastiCacheIamTokenProvider {
        ElastiCacheIamTokenProvider::from_sdk_config(
            ElastiCacheIamTokenConfig::new(ElastiCacheIamUser::new(target, user))
                .token_expiry(expiry),
            &self.sdk,
        )
        .expect("provider")
    }

    fn serverless(&self) -> Target {
        Target::ServerlessCache(self.cache.clone())
    }

    /// The emulator's credentials, resolved as the provider resolves them.
    async fn credentials(&self) -> aws_credential_types::Credentials {
        let provider = self.sdk.credentials_provider().unwrap();
        provider.provide_credentials().await.unwrap()
    }

    async fn cleanup(&self) {
        let _ = self
            .ec
            .delete_serverless_cache()
            .serverless_cache_name(&self.cache)
            .send()
            .await;
        let _ = self
            .ec
            .delete_replication_group()
            .replication_group_id(&self.rg)
            .send()
            .await;
    }
}

/// Checks that `token` is one the builder signs for its own `X-Amz-Date` (so: correctly
/// signed for this cache and user) and that it has not expired at `now`.
fn assert_valid_token(
    builder: &AuthTokenBuilder,
    creds: &aws_credential_types::Credentials,
    token: &str,
    now: SystemTime,
) {
    let param = |name: &str| {
        token
            .split('&')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or_else(|| panic!("token has no {name}"))
    };
    let signed_at = chrono::NaiveDateTime::parse_from_str(param("X-Amz-Date="), "%Y%m%dT%H%M%SZ")
        .expect("X-Amz-Date parses")
        .and_utc();
    let signed_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at.timestamp()).unwrap());
    let expected = builder.sign_at(creds, signed_at).unwrap();
    assert_eq!(
        token,
        expected.token().expose_secret(),
        "token is not correctly signed"
    );
    let expires: u64 = param("X-Amz-Expires=").parse().unwrap();
    assert!(
        signed_at + Duration::from_secs(expires) > now,
        "token expired before it was used"
    );
}

// ---------------------------------------------------------------- validate

#[tokio::test]
async fn validate_accepts_an_iam_user_in_the_group_and_refuses_a_password_user() {
    let test = "validate_accepts_an_iam_user_in_the_group_and_refuses_a_password_user";
    let Some(f) = fixture(test).await else {
        return;
    };
    let expiry = Duration::from_secs(900);
    for target in [f.serverless(), Target::ReplicationGroup(f.rg.clone())] {
        f.provider(target.clone(), &f.iam_user, expiry)
            .validate()
            .await
            .unwrap_or_else(|e| panic!("an IAM user in the group of {target} is accepted: {e}"));
    }

    let refused = async |user: &str, target: Target, says: &str| {
        let e = f
            .provider(target, user, expiry)
            .validate()
            .await
            .expect_err("validate refuses");
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    };
    refused(&f.password_user, f.serverless(), "not IAM").await;
    refused(
        &f.password_user,
        Target::ReplicationGroup(f.rg.clone()),
        "not IAM",
    )
    .await;
    refused(
        &f.misnamed,
        f.serverless(),
        "user name to equal the user id",
    )
    .await;
    refused(&f.outsider, f.serverless(), "is not in the user group").await;
    refused(&unique_name("nobody"), f.serverless(), "not found").await;
    refused(
        &f.iam_user,
        Target::ServerlessCache(unique_name("no-cache")),
        "not found",
    )
    .await;
    refused(
        &f.iam_user,
        Target::ReplicationGroup(unique_name("no-rg")),
        "not found",
    )
    .await;

    // A manager refuses to register the secret of a password user.
    let secret = DynamicSecret::builder(
        "pw",
        Arc::new(f.provider(f.serverless(), &f.password_user, expiry))
            as Arc<dyn DynamicSecretProvider>,
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
async fn a_lease_is_the_user_id_and_a_token_that_ends_it() {
    let test = "a_lease_is_the_user_id_and_a_token_that_ends_it";
    let Some(f) = fixture(test).await else {
        return;
    };
    let logs = leasehold_testkit::capture_tracing();
    let p = f.provider(f.serverless(), &f.iam_user, Duration::from_secs(600));
    let caps = p.capabilities();
    assert!(!caps.renewable && !caps.revocable && !caps.needs_password);
    assert_eq!(caps.max_ttl, Some(Duration::from_secs(600)));
    assert_eq!(p.kind(), IAM_TOKEN_KIND);
    assert!(!format!("{p:?}").contains("testing"), "{p:?}");

    let before = chrono::Utc::now();
    let req = CreateRequest::new(
        LeaseId::generate("ec-iam"),
        "lh-label",
        Duration::from_secs(600),
    );
    let created = p.create(&req).await.expect("create");
    let Credentials::UsernamePassword { username, password } = &created.credentials else {
        panic!("a username and password");
    };
    assert_eq!(
        username, &f.iam_user,
        "the credential is the configured user id"
    );
    let token = password.expose_secret();
    assert!(
        token.starts_with(&format!(
            "{}/?Action=connect&User={}&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&",
            f.cache, f.iam_user
        )),
        "token layout"
    );
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
    assert!((599..=601).contains(&(ends - before).num_seconds()));
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
    let secret = DynamicSecret::builder("ec-iam", Arc::new(p) as Arc<dyn DynamicSecretProvider>)
        .default_ttl(Duration::from_secs(600))
        .max_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let m = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .expect("manager validates");
    let lease = m.issue("ec-iam", IssueRequest::new()).await.unwrap();
    assert!(!lease.renewable);
    assert!(lease.expires_at <= lease.issued_at + chrono::Duration::seconds(601));
    let stored = format!("{:?}", m.list(&LeaseFilter::all()).await.unwrap());
    leasehold_testkit::assert_no_secret("the lease store", &stored, &lease.credentials);
    leasehold_testkit::assert_no_secret(
        "Debug of the lease",
        &format!("{lease:?} {created:?}"),
        &lease.credentials,
    );
    let e = m.renew(&lease.lease_id, None).await.unwrap_err();
    leasehold_testkit::assert_no_secret("a renew error", &e.to_string(), &lease.credentials);
    m.revoke(&lease.lease_id).await.unwrap();

    let text = logs.contents();
    leasehold_testkit::assert_no_secret("tracing", &text, &created.credentials);
    leasehold_testkit::assert_no_secret("tracing", &text, &lease.credentials);
    f.cleanup().await;
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
    let p = f.provider(f.serverless(), &f.iam_user, expiry);
    let builder = p.token_builder().clone();
    let creds = f.credentials().await;
    let secret = DynamicSecret::builder("ec-watch", Arc::new(p) as Arc<dyn DynamicSecretProvider>)
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
            "ec-watch",
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

/// The serverless cache and IAM user the conformance tests share: made once per process (the
/// token provider only signs tokens and changes nothing), left to the emulator's end.
static CONFORMANCE_FIXTURE: tokio::sync::OnceCell<(String, String)> =
    tokio::sync::OnceCell::const_new();

// The provider suite, one test per behaviour.
leasehold_testkit::provider_conformance_tests!(serverless_cache_token, |test| async move {
    let aws = AwsEmulator::shared(test).await?;
    let (cache, user) = CONFORMANCE_FIXTURE
        .get_or_init(|| async {
            let f = fixture(test).await.expect("the emulator answered");
            (f.cache.clone(), f.iam_user.clone())
        })
        .await
        .clone();
    let provider = ElastiCacheIamTokenProvider::from_sdk_config(
        ElastiCacheIamTokenConfig::new(ElastiCacheIamUser::new(
            Target::ServerlessCache(cache),
            &user,
        ))
        .token_expiry(Duration::from_secs(900)),
        &aws.sdk_config().await,
    )
    .expect("provider");
    Some(leasehold_testkit::conformance::Fixture::provider(provider))
});
