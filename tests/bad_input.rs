//! Hostile input through the public API: durations, username templates, ACL rules and access
//! strings, JSON statements, names at and one past each limit, lease ids, identities, TTLs, IAM
//! policy documents, ARNs, regions and endpoint URLs.
//!
//! Every case must end in a typed error (its [`ErrorKind`] is checked), never a panic, and never
//! a network call: every provider points at a [`Tripwire`], a local listener that counts the
//! connections it receives, and every test ends by asserting that it received none. The manager
//! runs its providers behind [`FaultyProvider`], which counts the calls that reach them.

#![cfg(all(
    feature = "redis",
    feature = "elasticache",
    feature = "memorydb",
    feature = "iam"
))]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold::aws::{AwsConfig, AwsCredentials};
use leasehold::elasticache::acl::parse_access_string;
use leasehold::elasticache::{ElastiCacheConfig, ElastiCacheProvider, Target};
use leasehold::iam::{
    check_policy_document, AssumedRole, FederationToken, IamUserConfig, IamUserProvider, StsConfig,
    StsCredentialType, StsProvider,
};
use leasehold::memorydb::{check_access_string, MemoryDbConfig, MemoryDbProvider};
use leasehold::redis::{AclRules, RedisAclProvider, RedisConfig};
use leasehold::secrecy::SecretString;
use leasehold::{
    parse_duration, CreateRequest, DynamicSecret, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, IssueRequest, LeaseFilter, LeaseId, LeaseManager, MemoryStore, StatementTemplate,
    TtlOverMax,
};
use leasehold_testkit::{FaultyProvider, Operation, RecordingProvider};

// ---------------------------------------------------------------------------------------------
// Harness

/// A listener on a free loopback port that counts every connection it accepts. Providers point
/// at it; a test proves that bad input made no network call by finding the count unchanged.
struct Tripwire {
    port: u16,
    hits: Arc<AtomicUsize>,
    probes: AtomicUsize,
}

impl Tripwire {
    fn start() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                h.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Tripwire {
            port,
            hits,
            probes: AtomicUsize::new(0),
        }
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// AWS settings that would send every call to the tripwire (static keys and a region, so
    /// loading them reads no environment and asks no metadata service).
    fn aws(&self) -> AwsConfig {
        AwsConfig::new()
            .region("us-east-1")
            .endpoint_url(self.http_url())
            .credentials(AwsCredentials::from_keys(
                "AKIDEXAMPLE",
                SecretString::from("not-a-real-secret-key"),
            ))
    }

    /// Asserts that nothing but our own probes ever connected. The probe connects and waits
    /// until the listener has accepted and closed it: connections are accepted in order, so
    /// any earlier connection has been counted by then.
    fn assert_untouched(&self, what: &str) {
        let mut probe = TcpStream::connect(("127.0.0.1", self.port)).expect("probe connects");
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        let _ = probe.read(&mut buf);
        let probes = self.probes.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            probes,
            "{what}: bad input made a network call"
        );
    }
}

/// The error of `r`, which must be one of the caller's-fault kinds.
fn invalid<T>(what: &str, r: Result<T, Error>) -> Error {
    match r {
        Ok(_) => panic!("{what}: accepted, expected a typed invalid-input error"),
        Err(e) => {
            assert!(
                e.kind().is_invalid_input(),
                "{what}: expected an invalid-input kind, got {e}"
            );
            assert!(
                !e.is_temporary(),
                "{what}: a bad input is not temporary: {e}"
            );
            assert_short(what, &e);
            e
        }
    }
}

/// The error of `r`, which must be of `kind`.
fn kind<T>(what: &str, r: Result<T, Error>, kind: ErrorKind) -> Error {
    let e = kind_any_len(what, r, kind);
    assert_short(what, &e);
    e
}

/// Like [`kind`], for the few errors that quote the whole input back, however long.
fn kind_any_len<T>(what: &str, r: Result<T, Error>, kind: ErrorKind) -> Error {
    match r {
        Ok(_) => panic!("{what}: accepted, expected {kind}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            e
        }
    }
}

/// Huge inputs must not come back whole in the error text.
fn assert_short(what: &str, e: &Error) {
    let text = e.to_string();
    assert!(
        text.len() <= 4096,
        "{}: the error is {} bytes long; huge input must not be echoed",
        what.chars().take(60).collect::<String>(),
        text.len()
    );
}

/// A short label for a case, for assertion messages.
fn label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(60)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 60 {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

const MB: usize = 1024 * 1024;

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Durations

#[test]
fn hostile_durations_are_invalid_config_naming_the_field() {
    let huge = "9".repeat(MB);
    let cases: Vec<String> = [
        "",
        " ",
        "\t\n",
        "-1",
        "-5s",
        "-0s",
        "0",
        "0s",
        "0h0m",
        "500ms",
        "999ms",
        "9999999999999h",
        "99999999999999999999999",
        "18446744073709551616s",
        "1000000000000h",
        "101y",
        "1.5",
        "1h30",
        "+5s",
        "5s-",
        "1e3s",
        "NaN",
        "inf",
        "s",
        "h",
        "1 h 1",
        "P1D",
        "PT1H",
        "1_000s",
        "1,5h",
        "٣",
        "٣s",
        "１h",
        "１０",
        "1h\u{0}",
        "\u{0}",
        "1\u{0}h",
        "\u{202e}1h",
        "1h\u{202e}",
        "😀",
        "5 parsecs",
        "1h; rm -rf /",
        "1hh",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([huge, "1h".repeat(100), "1s ".repeat(40)])
    .collect();
    for s in &cases {
        let e = kind(
            &label(s),
            parse_duration("max_ttl", s),
            ErrorKind::InvalidConfig,
        );
        assert!(e.to_string().contains("max_ttl"), "{}: {e}", label(s));
        assert_eq!(e.context("field"), Some("max_ttl"), "{}", label(s));
    }
}

#[test]
fn edge_durations_that_are_accepted_mean_what_they_say() {
    // Documented forms at the edges: a bare number is seconds, a fraction of a unit is fine,
    // surrounding whitespace is trimmed, and the 100-year bound is inclusive.
    for (s, secs) in [
        ("1", 1),
        ("1s", 1),
        ("1.5h", 5400),
        (" 45s ", 45),
        ("1h 30m", 5400),
        ("36500d", 100 * 365 * 24 * 3600),
    ] {
        assert_eq!(
            parse_duration("ttl", s).unwrap(),
            Duration::from_secs(secs),
            "{s:?}"
        );
    }
    // One second over the bound is refused.
    assert!(parse_duration("ttl", "3153600001").is_err());
}

// ---------------------------------------------------------------------------------------------
// Username templates and secret definitions

fn recording() -> (Arc<FaultyProvider>, RecordingProvider) {
    let rec = RecordingProvider::new();
    (Arc::new(FaultyProvider::new(Arc::new(rec.clone()))), rec)
}

#[test]
fn hostile_username_templates_are_refused_when_the_secret_is_built() {
    let (provider, _) = recording();
    let deep = format!("{}x{}", "{{lowercase (".repeat(60), ")}}".repeat(60));
    let cases: Vec<String> = [
        "",
        "{{nosuchhelper 1}}",
        "{{nosuchvar}}",
        "{{identity.nope}}",
        "{{dynamicSecret.password}}",
        "{{password}}",
        "{{@root}}",
        "{{this}}",
        "{{../x}}",
        "{{randomUsername",
        "{{{randomUsername}}",
        "{{#if identity.name}}a{{/if}}",
        "{{#each x}}a{{/each}}",
        "{{#with identity}}{{name}}{{/with}}",
        "{{^identity.name}}a{{/identity.name}}",
        "{{> partial}}",
        "{{*decorator}}",
        "{{#*inline \"p\"}}x{{/inline}}",
        "{{{{raw}}}}x{{{{/raw}}}}",
        "{{random 0}}",
        "{{random 99999999}}",
        "{{random 257}}",
        "{{random -1}}",
        "{{random 1.5}}",
        "{{random 'x'}}",
        "{{random}}",
        "{{random 1 2}}",
        "{{random-0}}",
        "{{random-257}}",
        "{{random-99999999999999999999999}}",
        "{{truncate identity.name}}",
        "{{truncate identity.name -1}}",
        "{{truncate identity.name 'x'}}",
        "{{replace identity.name}}",
        "{{replace identity.name 'a'}}",
        "{{uppercase}}",
        "{{lowercase 1 2}}",
        "{{log 'x'}}",
        "{{lookup identity 'name'}}",
        "a b",
        "lh-\n{{random 8}}",
        "lh-\u{0}{{random 8}}",
        "lh-{{random 8}}\u{7f}",
        "{{random 200}}{{random 57}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        deep,
        "{{randomUsername}}".repeat(2000),
        format!("{{{{randomUsername}}}}{}", "a".repeat(MB)),
        "{{".repeat(10_000),
        "(".repeat(10_000),
    ])
    .collect();
    for t in &cases {
        invalid(
            &label(t),
            DynamicSecret::builder("orders", provider.clone())
                .username_template(t.as_str())
                .build(),
        );
    }
    assert_eq!(provider.calls(Operation::Create), 0);
    assert_eq!(provider.calls(Operation::Validate), 0);
}

#[test]
fn hostile_secret_definitions_are_invalid_config() {
    let (provider, _) = recording();
    let day = Duration::from_secs(86_400);
    let b = || DynamicSecret::builder("orders", provider.clone());
    let cases: Vec<(String, Result<DynamicSecret, Error>)> = vec![
        (
            "empty name".into(),
            DynamicSecret::builder("", provider.clone()).build(),
        ),
        (
            "name with a slash".into(),
            DynamicSecret::builder("a/b", provider.clone()).build(),
        ),
        (
            "name with a space".into(),
            DynamicSecret::builder("a b", provider.clone()).build(),
        ),
        (
            "name with a newline".into(),
            DynamicSecret::builder("a\nb", provider.clone()).build(),
        ),
        (
            "name with NUL".into(),
            DynamicSecret::builder("a\u{0}", provider.clone()).build(),
        ),
        (
            "unicode name".into(),
            DynamicSecret::builder("cafés", provider.clone()).build(),
        ),
        (
            "129-char name".into(),
            DynamicSecret::builder("a".repeat(129), provider.clone()).build(),
        ),
        (
            "1 MB name".into(),
            DynamicSecret::builder("a".repeat(MB), provider.clone()).build(),
        ),
        (
            "zero default_ttl".into(),
            b().default_ttl(Duration::ZERO).build(),
        ),
        ("zero max_ttl".into(), b().max_ttl(Duration::ZERO).build()),
        (
            "default over max".into(),
            b().default_ttl(2 * day).max_ttl(day).build(),
        ),
        (
            "zero max_active_leases".into(),
            b().max_active_leases(0).build(),
        ),
        (
            "prefix with a newline".into(),
            b().username_prefix("lh\n").build(),
        ),
        (
            "prefix with a space".into(),
            b().username_prefix("l h-").build(),
        ),
        (
            "1 MB prefix".into(),
            b().username_prefix("a".repeat(MB)).build(),
        ),
    ];
    for (what, r) in cases {
        kind_any_len(&what, r, ErrorKind::InvalidConfig);
    }
    // The 128-character name is the longest accepted.
    DynamicSecret::builder("a".repeat(128), provider.clone())
        .build()
        .unwrap();
    assert_eq!(provider.calls(Operation::Create), 0);
}

// ---------------------------------------------------------------------------------------------
// Names at and one past each target's limit

/// Builds a secret on `provider` whose usernames are `template`.
fn build_with(
    provider: Arc<dyn DynamicSecretProvider>,
    template: &str,
) -> Result<DynamicSecret, Error> {
    DynamicSecret::builder("limits", provider)
        .username_prefix("")
        .username_template(template)
        .default_ttl(Duration::from_secs(900))
        .max_ttl(Duration::from_secs(3600))
        .build()
}

/// `at` is accepted and `past` is refused as an invalid template, by `provider`'s name rule.
fn at_and_past(what: &str, provider: Arc<dyn DynamicSecretProvider>, at: &str, past: &str) {
    let secret = build_with(provider.clone(), at)
        .unwrap_or_else(|e| panic!("{what}: {at:?} should be accepted: {e}"));
    // Every render of the accepted template passes the rule (random parts vary).
    for _ in 0..32 {
        secret.render_username(Some("x")).unwrap();
    }
    let e = kind(
        &format!("{what}: {past}"),
        build_with(provider, past),
        ErrorKind::InvalidTemplate,
    );
    assert!(e.to_string().contains("characters"), "{what}: {e}");
}

#[tokio::test]
async fn names_at_and_one_past_each_limit() {
    let trip = Tripwire::start();
    let redis: Arc<dyn DynamicSecretProvider> =
        Arc::new(RedisAclProvider::new(RedisConfig::new(trip.redis_url())).unwrap());
    let elasticache: Arc<dyn DynamicSecretProvider> = Arc::new(
        ElastiCacheProvider::new(
            ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
                .aws(trip.aws()),
        )
        .await
        .unwrap(),
    );
    let memorydb: Arc<dyn DynamicSecretProvider> = Arc::new(
        MemoryDbProvider::new(MemoryDbConfig::new("ledger").aws(trip.aws()))
            .await
            .unwrap(),
    );
    let iam: Arc<dyn DynamicSecretProvider> = Arc::new(
        IamUserProvider::new(IamUserConfig::new().aws(trip.aws()))
            .await
            .unwrap(),
    );
    let sts_role: Arc<dyn DynamicSecretProvider> = Arc::new(
        StsProvider::new(
            StsConfig::new(StsCredentialType::AssumedRole(AssumedRole::new(
                "arn:aws:iam::123456789012:role/reader",
            )))
            .aws(trip.aws()),
        )
        .await
        .unwrap(),
    );
    let sts_fed: Arc<dyn DynamicSecretProvider> = Arc::new(
        StsProvider::new(
            StsConfig::new(StsCredentialType::FederationToken(FederationToken::with_policy(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#,
            )))
            .aws(trip.aws()),
        )
        .await
        .unwrap(),
    );

    // ElastiCache user id: 40 characters, a letter first.
    at_and_past(
        "ElastiCache user id",
        elasticache.clone(),
        "a{{random 39}}",
        "a{{random 40}}",
    );
    // MemoryDB user name: 40.
    at_and_past(
        "MemoryDB user name",
        memorydb.clone(),
        "a{{random 39}}",
        "a{{random 40}}",
    );
    // IAM user name: 64.
    at_and_past(
        "IAM user name",
        iam.clone(),
        "{{random 64}}",
        "{{random 65}}",
    );
    // STS role session name: 2 to 64.
    at_and_past(
        "STS session name (max)",
        sts_role.clone(),
        "{{random 64}}",
        "{{random 65}}",
    );
    at_and_past(
        "STS session name (min)",
        sts_role.clone(),
        "{{random 2}}",
        "{{random 1}}",
    );
    // STS federation token name: 2 to 32.
    at_and_past(
        "federation token name",
        sts_fed.clone(),
        "{{random 32}}",
        "{{random 33}}",
    );
    // Redis ACL user name: 128.
    at_and_past(
        "Redis ACL user name",
        redis.clone(),
        "{{random 128}}",
        "{{random 128}}x",
    );

    // Characters each rule refuses, and the reserved `default` user.
    for (what, provider, template) in [
        (
            "ElastiCache: uppercase is folded, underscore is not",
            elasticache.clone(),
            "lh_{{random 4}}",
        ),
        (
            "ElastiCache: digit first",
            elasticache.clone(),
            "1{{random 4}}",
        ),
        (
            "ElastiCache: double hyphen",
            elasticache.clone(),
            "lh--{{random 4}}",
        ),
        (
            "ElastiCache: trailing hyphen",
            elasticache.clone(),
            "lh-{{random 4}}-",
        ),
        ("ElastiCache: default", elasticache.clone(), "default"),
        (
            "ElastiCache: DEFAULT folds to default",
            elasticache.clone(),
            "DEFAULT",
        ),
        ("MemoryDB: default", memorydb.clone(), "default"),
        ("MemoryDB: dot", memorydb.clone(), "lh.{{random 4}}"),
        ("IAM: slash", iam.clone(), "lh/{{random 4}}"),
        ("IAM: unicode", iam.clone(), "lhé{{random 4}}"),
        ("STS: colon", sts_role.clone(), "lh:{{random 4}}"),
        ("Redis: default", redis.clone(), "default"),
        ("Redis: unicode", redis.clone(), "lh-ü{{random 4}}"),
    ] {
        let e = invalid(what, build_with(provider, template));
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{what}: {e}");
    }
    trip.assert_untouched("name limits");
}

// ---------------------------------------------------------------------------------------------
// The manager: issue, renew, revoke, lookup

async fn manager_on(
    provider: Arc<FaultyProvider>,
    template: &str,
    over_max: TtlOverMax,
) -> (LeaseManager, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let secret = DynamicSecret::builder("orders", provider)
        .username_template(template)
        .default_ttl(Duration::from_secs(3600))
        .max_ttl(Duration::from_secs(24 * 3600))
        .ttl_over_max(over_max)
        .build()
        .unwrap();
    let manager = LeaseManager::builder(store.clone())
        .secret(secret)
        .skip_validation()
        .run_worker(false)
        .build()
        .await
        .unwrap();
    (manager, store)
}

fn hostile_identities() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "\n",
        "orders\napi",
        "orders\rapi",
        "orders\u{0}api",
        "\u{7}bell",
        "tab\there",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "nel\u{85}",
        "\u{9f}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(257));
    v.push("a".repeat(10 * 1024));
    v.push("é".repeat(257)); // 257 characters (514 bytes): the limit counts characters
    v.push("evil\u{202E}gpj".to_string()); // a bidi override
    v.push("zero\u{200B}width".to_string());
    v.push("x".repeat(MB));
    v
}

#[tokio::test]
async fn hostile_issue_requests_never_reach_the_provider() {
    let (provider, rec) = recording();
    let (manager, store) =
        manager_on(provider.clone(), "{{randomUsername}}", TtlOverMax::Error).await;
    let day = Duration::from_secs(86_400);

    kind(
        "ttl 0",
        manager
            .issue("orders", IssueRequest::new().ttl(Duration::ZERO))
            .await,
        ErrorKind::InvalidInput,
    );
    for ttl in [
        day + Duration::from_secs(1),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ] {
        kind(
            &format!("ttl {ttl:?}"),
            manager.issue("orders", IssueRequest::new().ttl(ttl)).await,
            ErrorKind::TtlExceedsMax,
        );
    }
    for id in hostile_identities() {
        kind(
            &label(&id),
            manager
                .issue("orders", IssueRequest::new().identity(id.clone()))
                .await,
            ErrorKind::InvalidInput,
        );
    }
    for name in ["nope", "", "orders\n", "ORDERS", "orders/x", "\u{0}"]
        .iter()
        .map(|s| s.to_string())
        .chain(["o".repeat(10 * 1024)])
    {
        kind_any_len(
            &label(&name),
            manager.issue(&name, IssueRequest::new()).await,
            ErrorKind::SecretNotFound,
        );
    }
    assert_eq!(provider.calls(Operation::Create), 0);
    assert_eq!(rec.creates(), 0);
    assert!(
        store.is_empty(),
        "a refused issue must leave no lease record"
    );
}

#[tokio::test]
async fn clamped_ttls_do_not_overflow() {
    let (provider, _) = recording();
    let (manager, _store) =
        manager_on(provider.clone(), "{{randomUsername}}", TtlOverMax::Clamp).await;
    for ttl in [Duration::from_secs(u64::MAX), Duration::MAX] {
        let lease = manager
            .issue("orders", IssueRequest::new().ttl(ttl))
            .await
            .unwrap();
        assert_eq!(
            lease.expires_at, lease.max_expires_at,
            "{ttl:?} clamps to max_ttl"
        );
    }
    assert_eq!(provider.calls(Operation::Create), 2);
}

#[tokio::test]
async fn identities_that_render_invalid_names_are_refused_before_the_provider() {
    let trip = Tripwire::start();
    // Real name rules, with the network side counted twice: by the wrapper and by the tripwire.
    let redis = Arc::new(FaultyProvider::new(Arc::new(
        RedisAclProvider::new(RedisConfig::new(trip.redis_url())).unwrap(),
    )));
    let elasticache = Arc::new(FaultyProvider::new(Arc::new(
        ElastiCacheProvider::new(
            ElastiCacheConfig::new(Target::ServerlessCache("orders".into()), "orders-users")
                .aws(trip.aws()),
        )
        .await
        .unwrap(),
    )));
    let iam = Arc::new(FaultyProvider::new(Arc::new(
        IamUserProvider::new(IamUserConfig::new().aws(trip.aws()))
            .await
            .unwrap(),
    )));
    for (what, provider, identity) in [
        ("Redis: space", redis.clone(), "orders api"),
        ("Redis: unicode", redis.clone(), "cafés"),
        ("Redis: 128 + prefix", redis.clone(), &*"a".repeat(128)),
        ("ElastiCache: dot", elasticache.clone(), "orders.api"),
        (
            "ElastiCache: too long",
            elasticache.clone(),
            &*"a".repeat(40),
        ),
        ("ElastiCache: double hyphen", elasticache.clone(), "-x"),
        ("IAM: slash", iam.clone(), "orders/api"),
        ("IAM: too long", iam.clone(), &*"a".repeat(62)),
    ] {
        let (manager, store) =
            manager_on(provider.clone(), "lh-{{identity.name}}", TtlOverMax::Error).await;
        kind(
            what,
            manager
                .issue("orders", IssueRequest::new().identity(identity))
                .await,
            ErrorKind::InvalidTemplate,
        );
        assert_eq!(provider.calls(Operation::Create), 0, "{what}");
        assert!(store.is_empty(), "{what}");
    }
    trip.assert_untouched("identities");
}

#[tokio::test]
async fn hostile_lease_ids_are_typed_errors() {
    let (provider, _) = recording();
    let (manager, _store) =
        manager_on(provider.clone(), "{{randomUsername}}", TtlOverMax::Error).await;
    let issued = manager.issue("orders", IssueRequest::new()).await.unwrap();
    assert_eq!(provider.calls(Operation::Create), 1);
    let random = issued
        .lease_id
        .as_str()
        .rsplit_once('/')
        .unwrap()
        .1
        .to_string();

    // Malformed: refused when parsed, before the manager sees them.
    let malformed: Vec<String> = [
        "",
        "/",
        "orders",
        "orders/",
        "/abc",
        "orders/abc def",
        "orders/abc\n",
        "orders/abc\u{0}",
        "orders/ab-c",
        "orders/ab.c",
        "orders/äbc",
        "orders/abc/",
        "or\nders/abc",
        "or ders/abc",
        "orders\u{7f}/abc",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("orders/{}", "a".repeat(10 * 1024)),
        format!("{}/abc", "o".repeat(10 * 1024)),
        "/".repeat(10 * 1024),
    ])
    .collect();
    for s in &malformed {
        kind_any_len(&label(s), s.parse::<LeaseId>(), ErrorKind::InvalidInput);
        // Through serde too (a store row or a JSON request).
        let json = json_str(s);
        assert!(
            serde_json::from_str::<LeaseId>(&json).is_err(),
            "{}",
            label(s)
        );
    }

    // A secret part that is no secret name (a path) is malformed, not unknown.
    for s in [format!("../orders/{random}"), format!("a/b/{random}")] {
        kind(&s, s.parse::<LeaseId>(), ErrorKind::InvalidInput);
    }

    // Well-formed but unknown: the right random part under the wrong secret, a secret that is
    // not registered, an id of the right shape that was never issued.
    for s in [
        format!("other/{random}"),
        format!("orders-x/{random}"),
        format!("orders/{}", "A".repeat(24)),
        format!("orders/{}", "a".repeat(400)),
    ] {
        let id: LeaseId = s.parse().unwrap();
        kind(&s, manager.lookup(&id).await, ErrorKind::LeaseNotFound);
        kind(&s, manager.renew(&id, None).await, ErrorKind::LeaseNotFound);
        // Revoke is idempotent: a lease with no record has nothing left to revoke.
        manager.revoke(&id).await.unwrap();
        kind(
            &s,
            manager.force_forget(&id).await,
            ErrorKind::LeaseNotFound,
        );
    }

    // A zero increment is refused before the store is read.
    kind(
        "renew by 0",
        manager.renew(&issued.lease_id, Some(Duration::ZERO)).await,
        ErrorKind::InvalidInput,
    );
    // Huge increments are capped at max TTL, never overflow.
    let lease = manager
        .renew(&issued.lease_id, Some(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(lease.expires_at, lease.max_expires_at);
    kind(
        "renew past max",
        manager.renew(&issued.lease_id, None).await,
        ErrorKind::RenewLimitReached,
    );
    assert_eq!(provider.calls(Operation::Revoke), 0);
    assert_eq!(provider.calls(Operation::Create), 1);
    // The real lease is untouched by all of the above.
    manager.lookup(&issued.lease_id).await.unwrap();
    manager.revoke(&issued.lease_id).await.unwrap();
    assert_eq!(provider.calls(Operation::Revoke), 1);
    assert!(manager.list(&LeaseFilter::all()).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Redis: node URLs, the admin user, ACL rules

/// ACL rule strings that must be refused: password changes, `nopass`, switching the user off,
/// things that are not rules, control characters, and sizes.
fn hostile_acl_rules() -> Vec<String> {
    let mut v: Vec<String> = [
        "nopass",
        "NoPass",
        "~* +@all nopass",
        "~* +@all\nnopass",
        "~* +@all\r\nnopass",
        "~* +@all\tnopass",
        "~* >pw",
        "~*\n>pw",
        ">",
        "<pw",
        "#0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "!hash",
        "resetpass",
        "RESETPASS",
        "reset",
        "off",
        "(~* nopass)",
        "(~* >pw)",
        "(~*\n>pw)",
        "(~*\tnopass)",
        "(~* resetpass)",
        "(~* on)",
        "(~* clearselectors)",
        "()",
        "(~a",
        "~a)",
        "(~a (+get))",
        "x(~a)",
        "bogus",
        "~",
        "+",
        "-",
        "&",
        "%R",
        "\"~*\"",
        "'~*'",
        "user evil on nopass ~* +@all",
        "~a\u{0}",
        "~a\u{7}",
        "+get\u{1b}",
        "~a\u{85}",
        "ü",
        "+@all ü",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("+get ".repeat(3000));
    v.push(format!("~{}", "a".repeat(MB)));
    v.push("nopass ".repeat(MB / 7));
    v
}

#[test]
fn hostile_acl_rules_are_refused() {
    for r in hostile_acl_rules() {
        let e = kind(&label(&r), AclRules::parse(&r), ErrorKind::InvalidConfig);
        assert!(e.message().starts_with("acl_rules:"), "{}: {e}", label(&r));
        assert!(
            !e.to_string().contains(">pw"),
            "a refused password is not quoted: {e}"
        );
    }
}

#[test]
fn acl_rules_with_quotes_newlines_and_unicode_in_patterns_stay_rules() {
    // Quotes and non-ASCII are fine inside key patterns; newlines and tabs separate rules. None
    // of them can smuggle a password token in.
    for (r, args) in [
        ("~\"quoted\" +get", &["~\"quoted\"", "+get"][..]),
        ("~it's +get", &["~it's", "+get"][..]),
        ("~café:* +get", &["~café:*", "+get"][..]),
        ("~a\n+get\t+set", &["~a", "+get", "+set"][..]),
        ("~a>pw", &["~a>pw"][..]),
    ] {
        assert_eq!(AclRules::parse(r).unwrap().args(), args, "{r:?}");
    }
}

#[test]
fn hostile_redis_configs_are_invalid_config() {
    let trip = Tripwire::start();
    let url = trip.redis_url();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    let port = trip.port;

    let mut cases: Vec<(String, RedisConfig)> = Vec::new();
    let mut case = |what: &str, c: RedisConfig| cases.push((what.to_string(), c));
    for bad_url in [
        String::new(),
        " ".into(),
        "127.0.0.1:6379".into(),
        "http://127.0.0.1:6379".into(),
        "redis://".into(),
        "redis:///".into(),
        format!("redis://admin:pw@127.0.0.1:{port}"),
        format!("redis://:pw@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}#insecure"),
        "rediss://127.0.0.1:6379/#insecure".into(),
        "redis://0.0.0.0:6379".into(),
        "redis://[::]:6379".into(),
        "redis://[::1:6379".into(),
        "redis://127.0.0.1:99999".into(),
        "redis://127.0.0.1:-1".into(),
        "redis+unix:///tmp/redis.sock".into(),
        "unix:///tmp/redis.sock".into(),
    ] {
        case(
            &format!("url {}", label(&bad_url)),
            RedisConfig::new(bad_url),
        );
    }
    case("no nodes", {
        let mut c = RedisConfig::new(&url);
        c.urls.clear();
        c
    });
    case("65 nodes", {
        let mut c = RedisConfig::new(&url);
        c.urls = (0..65)
            .map(|i| format!("redis://127.0.0.1:{}", 7000 + i))
            .collect();
        c
    });
    case("a node twice", RedisConfig::new(&url).node(&url));
    case(
        "the same node spelled twice",
        RedisConfig::new(format!("redis://127.0.0.1:{port}"))
            .node(format!("redis://127.0.0.1:{port}/0")),
    );
    for user in ["", "ad min", "admin\n", "admin\u{0}", "\t"] {
        case(
            &format!("admin user {}", label(user)),
            RedisConfig::new(&url).admin(user, SecretString::from("pw")),
        );
    }
    case(
        "empty admin password",
        RedisConfig::new(&url).admin("admin", SecretString::from("")),
    );
    case("admin without password", {
        let mut c = RedisConfig::new(&url);
        c.admin_username = "admin".into();
        c
    });
    for rules in hostile_acl_rules() {
        case(
            &format!("acl_rules {}", label(&rules)),
            RedisConfig::new(&url).acl_rules(rules),
        );
    }
    case(
        "zero connect_timeout",
        RedisConfig::new(&url).connect_timeout(Duration::ZERO),
    );
    case(
        "zero command_timeout",
        RedisConfig::new(&url).command_timeout(Duration::ZERO),
    );
    case(
        "zero retry_delay",
        RedisConfig::new(&url).retry_delay(Duration::ZERO),
    );
    case("0 attempts", RedisConfig::new(&url).attempts(0));
    case("11 attempts", RedisConfig::new(&url).attempts(11));
    case("CA on redis://", RedisConfig::new(&url).ca_cert(&not_pem));
    case("client cert without key", {
        let mut c = RedisConfig::new(format!("rediss://127.0.0.1:{port}"));
        c.client_cert = Some(not_pem.clone());
        c
    });
    case(
        "missing CA file",
        RedisConfig::new(format!("rediss://127.0.0.1:{port}")).ca_cert(&missing),
    );
    case(
        "CA that is not PEM",
        RedisConfig::new(format!("rediss://127.0.0.1:{port}")).ca_cert(&not_pem),
    );
    case(
        "client files that are not PEM",
        RedisConfig::new(format!("rediss://127.0.0.1:{port}")).client_cert(&not_pem, &not_pem),
    );

    for (what, config) in cases {
        let e = kind(&what, config.validate(), ErrorKind::InvalidConfig);
        let e2 = kind(
            &what,
            RedisAclProvider::new(config),
            ErrorKind::InvalidConfig,
        );
        assert_eq!(e.message(), e2.message(), "{what}");
    }
    trip.assert_untouched("redis configs");
}

#[tokio::test]
async fn redis_create_and_revoke_check_names_before_the_network() {
    let trip = Tripwire::start();
    let provider = RedisAclProvider::new(RedisConfig::new(trip.redis_url())).unwrap();
    let pw = SecretString::from("a-good-long-password-0123456789abcdef");
    for name in [
        "",
        "default",
        "a b",
        "a\nb",
        "a\u{0}",
        "ü",
        &"a".repeat(129),
        &"a".repeat(MB),
    ] {
        let req = CreateRequest::new(LeaseId::generate("orders"), name, Duration::from_secs(60))
            .with_password(pw.clone());
        invalid(&label(name), provider.create(&req).await);
        invalid(&label(name), provider.revoke(&ExternalRef::new(name)).await);
    }
    // No password, or one the ACL syntax cannot carry.
    let req = CreateRequest::new(
        LeaseId::generate("orders"),
        "lh-abc",
        Duration::from_secs(60),
    );
    invalid("no password", provider.create(&req).await);
    for bad_pw in ["has space", "new\nline", ""] {
        let req = CreateRequest::new(
            LeaseId::generate("orders"),
            "lh-abc",
            Duration::from_secs(60),
        )
        .with_password(SecretString::from(bad_pw));
        let e = match provider.create(&req).await {
            Ok(_) => panic!("{bad_pw:?}: accepted"),
            Err(e) => e,
        };
        assert!(!e.kind().is_temporary_by_default(), "{bad_pw:?}: {e}");
    }
    trip.assert_untouched("redis create/revoke");
}

// ---------------------------------------------------------------------------------------------
// Regions, endpoints, credentials, ARNs (shared by the AWS providers)

fn hostile_aws_configs(trip: &Tripwire) -> Vec<(String, AwsConfig)> {
    let mut v = Vec::new();
    for region in [
        "",
        "Mars 1",
        "US-EAST-1",
        "us_east_1",
        "-us-east-1",
        "us-east-1-",
        "us-east-1\n",
        "us-east-1\u{0}",
        "üs-east-1",
        &"a".repeat(33),
        &"a".repeat(MB),
    ] {
        v.push((
            format!("region {}", label(region)),
            trip.aws().region(region),
        ));
    }
    for url in [
        "",
        "127.0.0.1:4566",
        "localhost",
        "ftp://127.0.0.1",
        "file:///etc/passwd",
        "redis://127.0.0.1:6379",
        "http://127.0.0.1:1 /",
        "http://127.0.0.1:1\n",
        "http://127.0.0.1:1\u{0}",
        "javascript:alert(1)",
        &format!("http://{}", "a".repeat(2048)),
        &format!("http://{}", "a".repeat(MB)),
    ] {
        v.push((
            format!("endpoint_url {}", label(url)),
            trip.aws().endpoint_url(url),
        ));
    }
    v.push(("max_attempts 0".into(), trip.aws().max_attempts(0)));
    for (what, key, secret) in [
        ("empty key id", "", "secret"),
        ("key id with a space", "AKID EXAMPLE", "secret"),
        ("key id with a newline", "AKID\n", "secret"),
        ("unicode key id", "AKIDÉ", "secret"),
        ("129-char key id", &*"A".repeat(129), "secret"),
        ("empty secret key", "AKIDEXAMPLE", ""),
    ] {
        v.push((
            what.to_string(),
            trip.aws().credentials(AwsCredentials::from_keys(
                key,
                SecretString::from(secret.to_string()),
            )),
        ));
    }
    for (what, arn, session) in [
        ("role ARN that is no ARN", "not-an-arn", None),
        ("role ARN of s3", "arn:aws:s3:::bucket", None),
        (
            "role ARN with a bad partition",
            "arn:aws-mars:iam::123456789012:role/x",
            None,
        ),
        (
            "role ARN with a short account",
            "arn:aws:iam::12345:role/x",
            None,
        ),
        (
            "role ARN with an empty resource",
            "arn:aws:iam::123456789012:",
            None,
        ),
        (
            "role ARN with a newline",
            "arn:aws:iam::123456789012:role/x\n",
            None,
        ),
        (
            "huge role ARN",
            &*format!("arn:aws:iam::123456789012:role/{}", "x".repeat(MB)),
            None,
        ),
        (
            "1-char session name",
            "arn:aws:iam::123456789012:role/x",
            Some("a"),
        ),
        (
            "65-char session name",
            "arn:aws:iam::123456789012:role/x",
            Some(&*"a".repeat(65)),
        ),
        (
            "session name with a slash",
            "arn:aws:iam::123456789012:role/x",
            Some("a/b"),
        ),
    ] {
        v.push((
            what.to_string(),
            trip.aws().credentials(AwsCredentials::AssumeRole {
                role_arn: arn.to_string(),
                external_id: None,
                session_name: session.map(str::to_string),
                source: Box::new(AwsCredentials::from_keys(
                    "AKIDEXAMPLE",
                    SecretString::from("secret"),
                )),
            }),
        ));
    }
    v
}

#[tokio::test]
async fn hostile_aws_settings_are_refused_by_every_aws_provider() {
    let trip = Tripwire::start();
    for (what, aws) in hostile_aws_configs(&trip) {
        kind(&what, aws.validate(), ErrorKind::InvalidConfig);
        kind(&what, aws.load().await, ErrorKind::InvalidConfig);
        kind(
            &what,
            ElastiCacheProvider::new(
                ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
                    .aws(aws.clone()),
            )
            .await,
            ErrorKind::InvalidConfig,
        );
        kind(
            &what,
            MemoryDbProvider::new(MemoryDbConfig::new("ledger").aws(aws.clone())).await,
            ErrorKind::InvalidConfig,
        );
        kind(
            &what,
            IamUserProvider::new(IamUserConfig::new().aws(aws.clone())).await,
            ErrorKind::InvalidConfig,
        );
        kind(
            &what,
            StsProvider::new(StsConfig::new(StsCredentialType::SessionToken).aws(aws)).await,
            ErrorKind::InvalidConfig,
        );
    }
    trip.assert_untouched("aws settings");
}

// ---------------------------------------------------------------------------------------------
// ElastiCache: identifiers, access strings, creation / revocation statements

/// Access strings that must be refused, by the ElastiCache and the MemoryDB checker alike.
fn hostile_access_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " \n\t",
        "~* +@all",
        "off ~* +@all",
        "on off ~* +@all",
        "on ~* +@all nopass",
        "on ~* +@all\nnopass",
        "on ~* +@all\r\nnopass",
        "on\tnopass ~* +@all",
        "on ~* +@all NOPASS",
        "on >pw ~* +@all",
        "on ~* +@all\n>pw",
        "on <pw ~* +@all",
        "on #0123456789abcdef ~* +@all",
        "on !hash ~* +@all",
        "on resetpass ~* +@all",
        "on reset ~* +@all",
        "on ~* +@all (~x +get)",
        "on ~ +@all",
        "on ~* +",
        "on ~* +@bogus",
        "on ~* +get|set|x",
        "on %X~* +@all",
        "on ~* +@all blah",
        "on ~* +@all \"nopass\"",
        "on ~* '+@all'",
        "on ~ü +@all",
        "on ~* +gét",
        "on ~*\u{0} +@all",
        "on\u{a0}~* +@all",
        "on ~* +@all\u{85}",
        "on ~* +@all\u{2028}nopass",
        "user evil on nopass ~* +@all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("on ~{} +@all", "a".repeat(MB)));
    v.push(format!("on {}", "~a ".repeat(3000)));
    v
}

#[test]
fn hostile_access_strings_are_refused_by_both_checkers() {
    for s in hostile_access_strings() {
        let e = kind(
            &format!("ElastiCache {}", label(&s)),
            parse_access_string(&s),
            ErrorKind::InvalidConfig,
        );
        assert!(!e.to_string().contains(">pw"), "{e}");
        kind(
            &format!("MemoryDB {}", label(&s)),
            check_access_string(&s),
            ErrorKind::InvalidConfig,
        );
    }
}

/// An ElastiCache creation statement whose access string is `access`.
fn ec_creation(access: &str) -> String {
    format!(
        r#"{{"UserId":"{{{{username}}}}","UserName":"{{{{username}}}}","Engine":"redis","Passwords":["{{{{password}}}}"],"AccessString":{}}}"#,
        json_str(access)
    )
}

/// Hostile ElastiCache creation statements: anything that does not parse, is not CreateUser
/// input, names another user, or leaves the user without leasehold's password.
fn hostile_ec_statements() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "null",
        "[]",
        "\"x\"",
        "{",
        "{}",
        "{\"UserId\":\"{{username}}\"",
        "{'UserId':'{{username}}'}",
        "{\"UserId\":\"{{username}}\",}",
        // Unknown keys, at the top and nested.
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Evil":1}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"],"Extra":{"a":{"b":1}}}}"#,
        // Wrong types.
        r#"{"UserId":{"nested":"{{username}}"},"UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":"{{password}}","AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":[["{{password}}"]],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":["on"]}"#,
        // Another user, no user, the default user.
        r#"{"UserId":"someone-else","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"default","UserName":"default","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}x\"y","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}} x","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}\n","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        // Passwords: none, not leasehold's, too many, no-password users.
        r#"{"UserId":"{{username}}","UserName":"{{username}}","AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":[],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["short"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}","{{password}}","{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"NoPasswordRequired":true,"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"iam"}}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"no-password-required"}}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Engine":"memcached"}"#,
        // Handlebars that is not allowed in a statement, or breaks it.
        r#"{"UserId":"{{{username}}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Tags":[{"Key":"{{nosuchvar}}"}]}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Tags":"x"}"#,
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":[{{password}}],"AccessString":"on ~* +@all"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for access in hostile_access_strings() {
        v.push(ec_creation(&access));
    }
    v.push(format!(
        r#"{{"UserId":"{{{{username}}}}","UserName":"{{{{username}}}}","Passwords":["{{{{password}}}}"],"AccessString":"on ~* +@all","Tags":[{{"Key":"k","Value":"{}"}}]}}"#,
        "v".repeat(MB)
    ));
    v.push(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
    v
}

#[tokio::test]
async fn hostile_elasticache_configs_are_refused_offline() {
    let trip = Tripwire::start();
    let base = || {
        ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
            .aws(trip.aws())
    };
    let mut cases: Vec<(String, Result<ElastiCacheConfig, Error>)> = Vec::new();
    for id in [
        "",
        "1orders",
        "orders-",
        "or--ders",
        "or_ders",
        "or ders",
        "orders\n",
        "ördérs",
        &"a".repeat(41),
    ] {
        cases.push((
            format!("replication group {}", label(id)),
            Ok(
                ElastiCacheConfig::new(Target::ReplicationGroup(id.into()), "orders-users")
                    .aws(trip.aws()),
            ),
        ));
        cases.push((
            format!("serverless cache {}", label(id)),
            Ok(
                ElastiCacheConfig::new(Target::ServerlessCache(id.into()), "orders-users")
                    .aws(trip.aws()),
            ),
        ));
        cases.push((
            format!("user group {}", label(id)),
            Ok(
                ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), id)
                    .aws(trip.aws()),
            ),
        ));
    }
    for s in hostile_ec_statements() {
        cases.push((
            format!("creation_statement {}", label(&s)),
            StatementTemplate::parse(&s).map(|t| base().creation_statement(t)),
        ));
    }
    for s in [
        "{}",
        r#"{"UserId":"someone-else"}"#,
        r#"{"UserId":"{{username}}","UserGroupId":"x"}"#,
        r#"{"UserId":{"a":"{{username}}"}}"#,
        r#"{"UserId":"{{password}}"}"#,
        "{\"UserId\":\"{{username}}\"\n",
    ] {
        cases.push((
            format!("revocation_statement {}", label(s)),
            StatementTemplate::parse(s).map(|t| base().revocation_statement(t)),
        ));
    }
    for (k, v) in [
        ("aws:owner", "x"),
        ("leasehold:lease-id", "x"),
        ("", "x"),
        (&*"k".repeat(129), "x"),
        ("k", &*"v".repeat(MB)),
    ] {
        cases.push((format!("tag {}", label(k)), Ok(base().tag(k, v))));
    }
    cases.push(("60 tags".into(), {
        let mut c = base();
        for i in 0..60 {
            c = c.tag(format!("k{i}"), "v");
        }
        Ok(c)
    }));
    for url in [
        "",
        "http://cache:6379",
        "rediss://user:pw@cache:6379",
        "rediss://",
        "rediss://cache:6379 x",
        "rediss://cache\n:6379",
        &format!("rediss://{}:6379", "a".repeat(MB)),
    ] {
        cases.push((
            format!("readiness_endpoint {}", label(url)),
            Ok(base().readiness_endpoint(url, None)),
        ));
    }
    cases.push(("CA without endpoint".into(), {
        let mut c = base();
        c.readiness_ca_pem = Some("/etc/ssl/ca.pem".into());
        Ok(c)
    }));
    cases.push((
        "zero ready_timeout".into(),
        Ok(base().ready_timeout(Duration::ZERO)),
    ));

    for (what, config) in cases {
        let config = match config {
            // The template itself did not parse: that is the typed error.
            Err(e) => {
                invalid(&what, Err::<(), _>(e));
                continue;
            }
            Ok(c) => c,
        };
        invalid(&what, config.validate());
        invalid(&what, ElastiCacheProvider::new(config).await);
    }
    // 1 MB identifiers. The cache id comes back whole in the message.
    let huge = "a".repeat(MB);
    for target in [
        Target::ReplicationGroup(huge.clone()),
        Target::ServerlessCache(huge.clone()),
    ] {
        let c = ElastiCacheConfig::new(target, "orders-users").aws(trip.aws());
        kind_any_len("1 MB cache id", c.validate(), ErrorKind::InvalidConfig);
    }
    kind(
        "1 MB user group id",
        ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), huge)
            .aws(trip.aws())
            .validate(),
        ErrorKind::InvalidConfig,
    );
    trip.assert_untouched("elasticache configs");
}

#[tokio::test]
async fn elasticache_create_and_revoke_check_names_before_the_network() {
    let trip = Tripwire::start();
    let provider = ElastiCacheProvider::new(
        ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
            .aws(trip.aws()),
    )
    .await
    .unwrap();
    let pw = SecretString::from("a-good-long-password-0123456789abcdef");
    for name in [
        "",
        "default",
        "lh_x",
        "1abc",
        "lh--x",
        "lh-",
        "a b",
        "a\nb",
        "ü",
        &"a".repeat(41),
        &"a".repeat(MB),
    ] {
        let req = CreateRequest::new(LeaseId::generate("orders"), name, Duration::from_secs(60))
            .with_password(pw.clone());
        invalid(&label(name), provider.create(&req).await);
        invalid(&label(name), provider.revoke(&ExternalRef::new(name)).await);
    }
    let req = CreateRequest::new(
        LeaseId::generate("orders"),
        "lh-abc",
        Duration::from_secs(60),
    );
    invalid("no password", provider.create(&req).await);
    trip.assert_untouched("elasticache create/revoke");
}

// ---------------------------------------------------------------------------------------------
// MemoryDB: names, statements

/// A MemoryDB creation statement whose access string is `access`.
fn mdb_creation(access: &str) -> String {
    format!(
        r#"{{"UserName":"{{{{username}}}}","AccessString":{},"AuthenticationMode":{{"Type":"password","Passwords":["{{{{password}}}}"]}}}}"#,
        json_str(access)
    )
}

#[tokio::test]
async fn hostile_memorydb_configs_are_refused_offline() {
    let trip = Tripwire::start();
    let base = || MemoryDbConfig::new("ledger").aws(trip.aws());
    let mut cases: Vec<(String, Result<MemoryDbConfig, Error>)> = Vec::new();
    for id in [
        "",
        "1ledger",
        "ledger-",
        "led--ger",
        "led_ger",
        "ledger\n",
        "lédger",
        &"a".repeat(41),
        &"a".repeat(MB),
    ] {
        cases.push((
            format!("cluster {}", label(id)),
            Ok(MemoryDbConfig::new(id).aws(trip.aws())),
        ));
        cases.push((format!("acl {}", label(id)), Ok(base().acl_name(id))));
    }
    cases.push(("open-access ACL".into(), Ok(base().acl_name("open-access"))));
    let mut statements: Vec<String> = [
        "",
        "{",
        "[]",
        "{}",
        "{\"UserName\":\"{{username}}\"\n",
        // Missing or wrong authentication.
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all"}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":"password"}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"iam"}}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Passwords":["{{password}}"]}}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["not-the-generated-one"]}}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":[{"nested":"{{password}}"}]}}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"],"Extra":true}}"#,
        // Unknown keys, the wrong user, the default user.
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"ACLName":"x"}"#,
        r#"{"UserName":"someone-else","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
        r#"{"UserName":"default","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
        r#"{"UserName":"{{username}}\"x","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
        r#"{"UserName":["{{username}}"],"AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}"#,
        // Tags leasehold sets itself, or that are no tags.
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Tags":[{"Key":"leasehold:lease-id","Value":"x"}]}"#,
        r#"{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Tags":{"Key":"k"}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for access in hostile_access_strings() {
        statements.push(mdb_creation(&access));
    }
    for s in &statements {
        cases.push((
            format!("creation_statement {}", label(s)),
            StatementTemplate::parse(s).map(|t| base().creation_statement(t)),
        ));
    }
    for s in [
        "{}",
        r#"{"UserName":"someone-else"}"#,
        r#"{"UserName":"{{username}}","ACLName":"x"}"#,
        r#"{"UserName":"default"}"#,
    ] {
        cases.push((
            format!("revocation_statement {}", label(s)),
            StatementTemplate::parse(s).map(|t| base().revocation_statement(t)),
        ));
    }
    for (k, v) in [
        ("aws:x", "v"),
        ("leasehold:acl", "v"),
        ("", "v"),
        (&*"k".repeat(129), "v"),
    ] {
        cases.push((format!("tag {}", label(k)), Ok(base().tag(k, v))));
    }
    for url in [
        "",
        "http://ledger:6379",
        "rediss://u:p@ledger:6379",
        "rediss://ledger /x",
    ] {
        cases.push((
            format!("readiness_endpoint {}", label(url)),
            Ok(base().readiness_endpoint(url, None)),
        ));
    }
    for (what, c) in [
        ("zero ready_timeout", base().ready_timeout(Duration::ZERO)),
        (
            "zero user_state_wait",
            base().user_state_wait(Duration::ZERO),
        ),
        ("zero poll_interval", base().poll_interval(Duration::ZERO)),
    ] {
        cases.push((what.into(), Ok(c)));
    }

    for (what, config) in cases {
        let config = match config {
            Err(e) => {
                invalid(&what, Err::<(), _>(e));
                continue;
            }
            Ok(c) => c,
        };
        invalid(&what, config.validate());
        invalid(&what, MemoryDbProvider::new(config).await);
    }
    trip.assert_untouched("memorydb configs");
}

#[tokio::test]
async fn memorydb_create_and_revoke_check_names_before_the_network() {
    let trip = Tripwire::start();
    let provider = MemoryDbProvider::new(MemoryDbConfig::new("ledger").aws(trip.aws()))
        .await
        .unwrap();
    let pw = SecretString::from("a-good-long-password-0123456789abcdef");
    for name in [
        "",
        "default",
        "lh_x",
        "1abc",
        "lh--x",
        "a\nb",
        "ü",
        &"a".repeat(41),
    ] {
        let req = CreateRequest::new(LeaseId::generate("ledger"), name, Duration::from_secs(60))
            .with_password(pw.clone());
        invalid(&label(name), provider.create(&req).await);
        invalid(&label(name), provider.revoke(&ExternalRef::new(name)).await);
    }
    let req = CreateRequest::new(
        LeaseId::generate("ledger"),
        "lh-abc",
        Duration::from_secs(60),
    );
    invalid("no password", provider.create(&req).await);
    trip.assert_untouched("memorydb create/revoke");
}

// ---------------------------------------------------------------------------------------------
// IAM and STS: policy documents, ARNs, paths, names, tags

fn hostile_policy_documents() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "not json",
        "{not json",
        "{\"Version\":\"2012-10-17\"",
        "null",
        "[]",
        "\"policy\"",
        "42",
        "{}",
        r#"{"Version":"2012-10-17"}"#,
        r#"{"Version":"2012-10-17","Statement":[]}"#,
        r#"{"Version":"2012-10-17","Statement":"allow all"}"#,
        r#"{"Version":"2012-10-17","Statement":[42]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Action":"*","Resource":"*"}]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"*","Resource":"*"}]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
        r#"{"Version":"2020-01-01","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        r#"{"Version":2012,"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\u{0}\"}]}",
        "\u{feff}{\"Statement\":[{\"Effect\":\"Allow\"}]}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Over the 2,048-character limit once compacted, and 1 MB.
    v.push(format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"{}"}}]}}"#,
        "x".repeat(2100)
    ));
    v.push(format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"{}"}}]}}"#,
        "x".repeat(MB)
    ));
    v.push(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
    v
}

fn hostile_policy_arns() -> Vec<String> {
    [
        "",
        "not-an-arn",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::123456789012:role/x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:iam::12345:policy/x",
        "arn:aws-mars:iam::123456789012:policy/x",
        "arn:aws:iam::123456789012:",
        "arn:aws:iam::123456789012:policy/x y",
        "arn:aws:iam::123456789012:policy/x\n",
        "arn:aws:iam:::policy/\u{0}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("arn:aws:iam::aws:policy/{}", "x".repeat(MB))])
    .collect()
}

#[test]
fn hostile_policy_documents_are_invalid_config() {
    for doc in hostile_policy_documents() {
        let e = kind(
            &label(&doc),
            check_policy_document("inline_policy", &doc),
            ErrorKind::InvalidConfig,
        );
        assert!(e.to_string().contains("inline_policy"), "{e}");
    }
    // The largest document accepted is exactly the limit, compacted.
    let filler = 2048 - r#"{"Statement":[{"Effect":"Allow","Resource":""}]}"#.len();
    let at = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Resource":"{}"}}]}}"#,
        "x".repeat(filler)
    );
    assert_eq!(check_policy_document("p", &at).unwrap().len(), 2048);
    let past = at.replacen("xx", "xxx", 1);
    kind(
        "2049",
        check_policy_document("p", &past),
        ErrorKind::InvalidConfig,
    );
}

#[tokio::test]
async fn hostile_iam_user_configs_are_refused_offline() {
    let trip = Tripwire::start();
    let base = || IamUserConfig::new().aws(trip.aws());
    let mut cases: Vec<(String, IamUserConfig)> = Vec::new();
    for doc in hostile_policy_documents() {
        cases.push((
            format!("inline policy {}", label(&doc)),
            base().inline_policy(doc),
        ));
    }
    for arn in hostile_policy_arns() {
        cases.push((
            format!("policy arn {}", label(&arn)),
            base().policy_arn(arn.clone()),
        ));
        cases.push((
            format!("boundary {}", label(&arn)),
            base().permissions_boundary(arn),
        ));
    }
    cases.push(("21 policy arns".into(), {
        let mut c = base();
        for i in 0..21 {
            c = c.policy_arn(format!("arn:aws:iam::123456789012:policy/p{i}"));
        }
        c
    }));
    cases.push((
        "the same policy twice".into(),
        base()
            .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
            .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess"),
    ));
    for path in [
        "",
        "team",
        "/team",
        "team/",
        "/a//b/",
        "/tëam/",
        "/te am/",
        "/a\n/",
        &format!("/{}/", "a".repeat(511)),
    ] {
        cases.push((format!("path {}", label(path)), base().path(path)));
    }
    for group in ["", "a b", "a/b", "grüppe", "a\n", &"g".repeat(129)] {
        cases.push((format!("group {}", label(group)), base().group(group)));
    }
    cases.push(("a group twice".into(), base().group("ops").group("ops")));
    for name in ["", "a b", "a/b", &"n".repeat(129)] {
        cases.push((format!("inline_policy_name {}", label(name)), {
            let mut c = base();
            c.inline_policy_name = name.to_string();
            c
        }));
    }
    for (k, v) in [
        ("aws:createdBy", "x"),
        ("AWS:x", "x"),
        ("leasehold:lease-id", "x"),
        ("", "x"),
        ("k\n", "x"),
        ("k", "v\u{0}"),
        ("k", "v;"),
        (&*"k".repeat(129), "x"),
        ("k", &*"v".repeat(257)),
    ] {
        cases.push((format!("tag {}", label(k)), base().tag(k, v)));
    }
    cases.push(("47 tags".into(), {
        let mut c = base();
        for i in 0..47 {
            c = c.tag(format!("k{i}"), "v");
        }
        c
    }));
    cases.push((
        "zero ready_timeout".into(),
        base().ready_timeout(Duration::ZERO),
    ));

    for (what, config) in cases {
        kind(&what, config.validate(), ErrorKind::InvalidConfig);
        kind(
            &what,
            IamUserProvider::new(config).await,
            ErrorKind::InvalidConfig,
        );
    }
    trip.assert_untouched("iam user configs");
}

#[tokio::test]
async fn hostile_sts_configs_are_refused_offline() {
    let trip = Tripwire::start();
    let sts = |t: StsCredentialType| StsConfig::new(t).aws(trip.aws());
    let role = |arn: &str| AssumedRole::new(arn);
    let good_role = "arn:aws:iam::123456789012:role/reader";
    let mut cases: Vec<(String, StsConfig)> = Vec::new();
    for arn in [
        "",
        "not-an-arn",
        "arn:aws:iam::123456789012:user/reader",
        "arn:aws:iam::123456789012:policy/reader",
        "arn:aws:s3:::reader",
        "arn:aws:iam::1234:role/reader",
        "arn:aws:iam::123456789012:role/reader\n",
        &format!("arn:aws:iam::123456789012:role/{}", "r".repeat(MB)),
    ] {
        cases.push((
            format!("role_arn {}", label(arn)),
            sts(StsCredentialType::AssumedRole(role(arn))),
        ));
    }
    for id in ["x", "has space", "new\nline", "ünicode", &"e".repeat(1225)] {
        cases.push((
            format!("external_id {}", label(id)),
            sts(StsCredentialType::AssumedRole(
                role(good_role).external_id(id),
            )),
        ));
    }
    for d in [
        Duration::ZERO,
        Duration::from_secs(899),
        Duration::from_secs(12 * 3600 + 1),
        Duration::MAX,
    ] {
        cases.push((
            format!("max_session_duration {d:?}"),
            sts(StsCredentialType::AssumedRole(
                role(good_role).max_session_duration(d),
            )),
        ));
    }
    for doc in hostile_policy_documents() {
        cases.push((
            format!("session policy {}", label(&doc)),
            sts(StsCredentialType::AssumedRole(
                role(good_role).session_policy(doc.clone()),
            )),
        ));
        cases.push((
            format!("federation policy {}", label(&doc)),
            sts(StsCredentialType::FederationToken(
                FederationToken::with_policy(doc),
            )),
        ));
    }
    for arn in hostile_policy_arns() {
        cases.push((
            format!("session policy arn {}", label(&arn)),
            sts(StsCredentialType::AssumedRole(
                role(good_role).policy_arn(arn),
            )),
        ));
    }
    cases.push(("11 session policy arns".into(), {
        let mut r = role(good_role);
        for i in 0..11 {
            r = r.policy_arn(format!("arn:aws:iam::123456789012:policy/p{i}"));
        }
        sts(StsCredentialType::AssumedRole(r))
    }));
    cases.push(("federation token without a policy".into(), {
        let mut t = FederationToken::with_policy("{}");
        t.policy = None;
        sts(StsCredentialType::FederationToken(t))
    }));
    cases.push((
        "zero ready_timeout".into(),
        sts(StsCredentialType::SessionToken).ready_timeout(Duration::ZERO),
    ));

    for (what, config) in cases {
        kind(&what, config.validate(), ErrorKind::InvalidConfig);
        kind(
            &what,
            StsProvider::new(config).await,
            ErrorKind::InvalidConfig,
        );
    }
    trip.assert_untouched("sts configs");
}

#[tokio::test]
async fn sts_ttls_outside_the_aws_range_are_refused_when_the_secret_is_built() {
    let trip = Tripwire::start();
    let provider: Arc<dyn DynamicSecretProvider> = Arc::new(
        StsProvider::new(
            StsConfig::new(StsCredentialType::AssumedRole(AssumedRole::new(
                "arn:aws:iam::123456789012:role/reader",
            )))
            .aws(trip.aws()),
        )
        .await
        .unwrap(),
    );
    let b = || DynamicSecret::builder("role", provider.clone());
    // The role's max session is 1 h by default; STS's minimum is 15 min.
    for (what, r) in [
        (
            "max_ttl over the role's max session",
            b().default_ttl(Duration::from_secs(900))
                .max_ttl(Duration::from_secs(3601))
                .build(),
        ),
        (
            "default_ttl under STS's minimum",
            b().default_ttl(Duration::from_secs(899))
                .max_ttl(Duration::from_secs(3600))
                .build(),
        ),
    ] {
        kind(what, r, ErrorKind::InvalidConfig);
    }
    // A request under the minimum is refused at issue.
    let secret = b()
        .default_ttl(Duration::from_secs(900))
        .max_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let faulty = Arc::new(FaultyProvider::new(provider.clone()));
    let store = Arc::new(MemoryStore::new());
    let manager = LeaseManager::builder(store.clone())
        .secret(
            DynamicSecret::builder("role", faulty.clone())
                .default_ttl(secret.default_ttl())
                .max_ttl(secret.max_ttl())
                .build()
                .unwrap(),
        )
        .skip_validation()
        .run_worker(false)
        .build()
        .await
        .unwrap();
    kind(
        "ttl 1s",
        manager
            .issue("role", IssueRequest::new().ttl(Duration::from_secs(1)))
            .await,
        ErrorKind::InvalidInput,
    );
    kind(
        "ttl 2h",
        manager
            .issue("role", IssueRequest::new().ttl(Duration::from_secs(7200)))
            .await,
        ErrorKind::TtlExceedsMax,
    );
    assert_eq!(faulty.calls(Operation::Create), 0);
    assert!(store.is_empty());
    trip.assert_untouched("sts ttls");
}

#[test]
fn maps_of_tags_are_checked_even_when_built_by_hand() {
    // The public `tags` field bypasses the builder: validation still sees it.
    let mut c = IamUserConfig::new().aws(AwsConfig::new().region("us-east-1"));
    c.tags = BTreeMap::from([("aws:x".to_string(), "v".to_string())]);
    kind("aws: tag", c.validate(), ErrorKind::InvalidConfig);
}
