//! Hostile configurations and arguments through the `leasehold` binary: every one exits 2 with
//! one line on stderr that names the field, never panics, never touches the network, and a bad
//! configuration never creates the store.
//!
//! `config_errors.rs` covers the common mistakes (a typo, a missing key, a wrong type, an
//! unknown provider type); this file throws the corpus of `tests/bad_input.rs` at the binary:
//! durations, templates, ACL rules, statements, names at and past their limits, huge values,
//! control characters, broken TOML and broken files. Every provider points at a [`Tripwire`],
//! a loopback listener that counts the connections it receives; the count must stay 0.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{Cli, Outcome, BIN};

const MB: usize = 1024 * 1024;

/// A listener on a free loopback port that counts every connection it accepts.
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

    /// Asserts that nothing but our own probes connected. Connections are accepted in order,
    /// so once the probe has been accepted and closed, any earlier one has been counted.
    fn assert_untouched(&self) {
        let mut probe = TcpStream::connect(("127.0.0.1", self.port)).expect("probe connects");
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = probe.read(&mut [0u8; 1]);
        let probes = self.probes.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(
            self.hits.load(Ordering::SeqCst),
            probes,
            "bad input made a network call"
        );
    }
}

/// One secret of each provider type, every backend at the tripwire. `{port}` is the tripwire's,
/// `{dir}` the test's temp dir.
const BASE: &str = r#"
[store]
url = "sqlite://{dir}/leasehold.db"

[[secrets]]
name = "cache"
type = "redis"
default_ttl = "1h"
max_ttl = "24h"
urls = ["redis://127.0.0.1:{port}"]
connect_timeout = "1s"
attempts = 1

[[secrets]]
name = "sessions"
type = "aws-elasticache"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{port}"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret-key"
replication_group_id = "sessions"
user_group_id = "sessions-users"

[[secrets]]
name = "ledger"
type = "aws-memorydb"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{port}"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret-key"
cluster_name = "ledger"

[[secrets]]
name = "reports"
type = "aws-iam"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{port}"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "not-a-real-secret-key"
credential_type = "iam_user"
"#;

fn base(trip: &Tripwire) -> String {
    BASE.replace("{port}", &trip.port.to_string())
}

/// `text` as a TOML basic string, escapes included.
fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The base config with `line` added to the secret named `secret` (after its `name`).
fn with_key(trip: &Tripwire, secret: &str, line: &str) -> String {
    let anchor = format!("name = \"{secret}\"\n");
    let cfg = base(trip);
    assert!(cfg.contains(&anchor), "{secret}");
    cfg.replacen(&anchor, &format!("{anchor}{line}\n"), 1)
}

/// The base config with `key = value` of secret `secret` replaced by `line`.
fn replacing(trip: &Tripwire, from: &str, to: &str) -> String {
    let cfg = base(trip);
    assert!(cfg.contains(from), "{from}");
    cfg.replacen(from, to, 1)
}

fn short(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(70)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.len() > 70 {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

/// Never a panic, whatever the exit code.
fn assert_no_panic(what: &str, out: &Outcome) {
    assert_ne!(
        out.code,
        101,
        "{what}: exit 101 is a panic: {}",
        short(&out.stderr)
    );
    assert!(
        !out.stderr.contains("panicked"),
        "{what}: panicked: {}",
        short(&out.stderr)
    );
    assert!(
        out.code >= 0,
        "{what}: killed by a signal (stack overflow?): {}",
        short(&out.stderr)
    );
}

/// Exit 2, nothing on stdout, one `leasehold: ` line on stderr that mentions every needle.
fn assert_usage_error(what: &str, out: &Outcome, needles: &[&str]) {
    assert_no_panic(what, out);
    assert_eq!(
        out.code,
        2,
        "{what}: expected exit 2: {}",
        short(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout: {}",
        short(&out.stdout)
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line: {:?}", short(&out.stderr));
    assert!(
        lines[0].starts_with("leasehold: "),
        "{what}: {}",
        short(lines[0])
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{what}: {} should mention {n:?}",
            short(&out.stderr)
        );
    }
}

/// Exit 2, nothing on stdout, stderr starts with `leasehold: config error` and mentions every
/// needle. (A TOML syntax error adds a second line, the parser's hint.)
fn assert_config_error(what: &str, out: &Outcome, needles: &[&str]) {
    assert_no_panic(what, out);
    assert_eq!(
        out.code,
        2,
        "{what}: expected exit 2: {}",
        short(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout: {}",
        short(&out.stdout)
    );
    assert!(
        out.stderr.starts_with("leasehold: config error"),
        "{what}: {}",
        short(&out.stderr)
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{what}: {} should mention {n:?}",
            short(&out.stderr)
        );
    }
}

/// Runs `issue sessions` on `toml`: had the config been accepted, it would have opened the
/// store and called a backend. It must be a usage error naming the needles, and the store must
/// not exist afterwards.
fn assert_config_refused(what: &str, toml: &str, needles: &[&str]) {
    let cli = Cli::new(toml);
    let out = cli.run(&["issue", "sessions", "--no-wait"]);
    assert_usage_error(what, &out, needles);
    assert!(
        out.stderr.starts_with("leasehold: config error"),
        "{what}: {}",
        short(&out.stderr)
    );
    assert!(
        !cli.path("leasehold.db").exists(),
        "{what}: a bad config must not create the store"
    );
}

#[test]
fn the_base_config_is_good() {
    let trip = Tripwire::start();
    let cli = Cli::new(&base(&trip));
    let v = cli.ok(&["secrets"]);
    assert_eq!(v.as_array().unwrap().len(), 4, "{v}");
    trip.assert_untouched();
}

#[test]
fn hostile_common_keys() {
    let trip = Tripwire::start();
    let mut cases: Vec<(String, String, Vec<&str>)> = Vec::new();
    for name in [
        "a/b",
        "",
        "a b",
        "caché",
        "a\nb",
        "a\u{0}b",
        "\u{1b}[31mred",
        &"a".repeat(129),
    ] {
        cases.push((
            format!("name {}", short(name)),
            replacing(
                &trip,
                "name = \"cache\"",
                &format!("name = {}", toml_str(name)),
            ),
            vec!["name"],
        ));
    }
    cases.push((
        "two secrets with one name".into(),
        replacing(&trip, "name = \"ledger\"", "name = \"cache\""),
        vec!["cache"],
    ));
    for d in [
        "",
        " ",
        "-1h",
        "0s",
        "500ms",
        "1.5",
        "1h30",
        "9999999999999h",
        "18446744073709551616",
        "101y",
        "１h",
        "٣s",
        "1h\u{0}",
        "\u{202e}1h",
        "NaN",
        &"9".repeat(10_000),
    ] {
        cases.push((
            format!("default_ttl {}", short(d)),
            replacing(
                &trip,
                "default_ttl = \"1h\"",
                &format!("default_ttl = {}", toml_str(d)),
            ),
            vec!["default_ttl"],
        ));
        cases.push((
            format!("max_ttl {}", short(d)),
            replacing(
                &trip,
                "max_ttl = \"24h\"",
                &format!("max_ttl = {}", toml_str(d)),
            ),
            vec!["max_ttl"],
        ));
    }
    for v in ["-5", "1.5", "[]", "{}", "true", "99999999999999999999"] {
        cases.push((
            format!("default_ttl = {v}"),
            replacing(&trip, "default_ttl = \"1h\"", &format!("default_ttl = {v}")),
            vec!["default_ttl"],
        ));
    }
    for t in [
        "",
        "{{random 0}}",
        "{{random 99999999}}",
        "{{random-0}}",
        "{{nosuchhelper 1}}",
        "{{nosuchvar}}",
        "{{#if identity.name}}x{{/if}}",
        "{{> partial}}",
        "{{",
        "lh-{{random 128}}",
        "lh-\n{{random 8}}",
        "default",
        &"{{randomUsername}}".repeat(2000),
        &format!("lh-{}", "a".repeat(MB)),
    ] {
        cases.push((
            format!("username_template {}", short(t)),
            with_key(
                &trip,
                "cache",
                &format!("username_template = {}", toml_str(t)),
            ),
            vec!["username_template"],
        ));
    }
    for p in ["lh\n", "l h", "ü", &"p".repeat(200)] {
        cases.push((
            format!("username_prefix {}", short(p)),
            with_key(
                &trip,
                "cache",
                &format!("username_prefix = {}", toml_str(p)),
            ),
            vec!["username_prefix"],
        ));
    }
    for v in ["0", "-1", "1.5", "\"10\"", "99999999999999999999"] {
        cases.push((
            format!("max_active_leases = {v}"),
            with_key(&trip, "cache", &format!("max_active_leases = {v}")),
            vec!["max_active_leases"],
        ));
    }
    for v in ["\"sometimes\"", "\"\"", "1", "\"Clamp\\n\""] {
        cases.push((
            format!("ttl_over_max = {v}"),
            with_key(&trip, "cache", &format!("ttl_over_max = {v}")),
            vec!["ttl_over_max"],
        ));
    }
    for (what, toml, needles) in &cases {
        assert_config_refused(what, toml, needles);
    }
    trip.assert_untouched();
}

#[test]
fn hostile_redis_settings() {
    let trip = Tripwire::start();
    let port = trip.port;
    let urls_line = format!("urls = [\"redis://127.0.0.1:{port}\"]");
    let mut cases: Vec<(String, String, Vec<&str>)> = Vec::new();
    for urls in [
        format!("[\"redis://admin:hunter2-secret@127.0.0.1:{port}\"]"),
        format!("[\"redis://127.0.0.1:{port}#insecure\"]"),
        "[\"http://127.0.0.1:6379\"]".into(),
        "[\"redis://0.0.0.0:6379\"]".into(),
        "[\"redis://\"]".into(),
        "[\"\"]".into(),
        "[\"127.0.0.1:6379\"]".into(),
        format!("[\"redis://127.0.0.1:{port}\", \"redis://127.0.0.1:{port}\"]"),
        format!(
            "[{}]",
            (0..65)
                .map(|i| format!("\"redis://127.0.0.1:{}\"", 7000 + i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "\"redis://127.0.0.1:6379\"".into(),
        "[1]".into(),
    ] {
        // The message names the secret and the field (`urls[0]: ...`).
        cases.push((
            format!("urls {}", short(&urls)),
            replacing(&trip, &urls_line, &format!("urls = {urls}")),
            vec!["cache", "urls"],
        ));
    }
    for rules in [
        ">hunter2-secret",
        "~* +@all nopass",
        "~* +@all\nnopass",
        "~* +@all\tnopass",
        "resetpass",
        "reset",
        "off",
        "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        "(~* nopass)",
        "(~* >hunter2-secret)",
        "(~a",
        "bogus",
        "~a\u{0}",
        "~a\u{1b}",
        "user evil on nopass ~* +@all",
        &"+get ".repeat(3000),
        &format!("~{}", "a".repeat(MB)),
    ] {
        cases.push((
            format!("acl_rules {}", short(rules)),
            with_key(&trip, "cache", &format!("acl_rules = {}", toml_str(rules))),
            vec!["acl_rules"],
        ));
    }
    for (line, needle) in [
        (
            "admin_username = \"ad min\"\nadmin_password = \"pw\"",
            "admin_username",
        ),
        (
            "admin_username = \"admin\\n\"\nadmin_password = \"pw\"",
            "admin_username",
        ),
        (
            "admin_username = \"admin\"\nadmin_password = \"\"",
            "admin_password",
        ),
        ("admin_username = \"admin\"", "admin_password"),
        ("ca_cert = \"/nonexistent/ca.pem\"", "ca_cert"),
        ("command_timeout = \"0s\"", "command_timeout"),
        ("retry_delay = \"-1s\"", "retry_delay"),
        ("acl_save = \"yes\"", "acl_save"),
    ] {
        cases.push((
            format!("redis {}", short(line)),
            with_key(&trip, "cache", line),
            vec![needle],
        ));
    }
    for (from, to, needle) in [
        ("attempts = 1", "attempts = 0", "attempts"),
        ("attempts = 1", "attempts = 11", "attempts"),
        ("attempts = 1", "attempts = -1", "attempts"),
        ("attempts = 1", "attempts = 4294967296", "attempts"),
        (
            "connect_timeout = \"1s\"",
            "connect_timeout = \"0s\"",
            "connect_timeout",
        ),
    ] {
        cases.push((
            format!("redis {to}"),
            replacing(&trip, from, to),
            vec![needle],
        ));
    }
    for (what, toml, needles) in &cases {
        assert_config_refused(what, toml, needles);
    }
    // A password in a refused rule or URL is never quoted back.
    let cli = Cli::new(&with_key(
        &trip,
        "cache",
        "acl_rules = \"~* >hunter2-secret\"",
    ));
    let out = cli.run(&["-vv", "validate"]);
    assert_usage_error("password rule", &out, &["acl_rules"]);
    assert!(!out.stderr.contains("hunter2-secret"), "{}", out.stderr);
    let cli = Cli::new(&replacing(
        &trip,
        &urls_line,
        &format!("urls = [\"redis://admin:hunter2-secret@127.0.0.1:{port}\"]"),
    ));
    let out = cli.run(&["-vv", "validate"]);
    assert_usage_error("password in URL", &out, &["cache"]);
    assert!(!out.stderr.contains("hunter2-secret"), "{}", out.stderr);
    trip.assert_untouched();
}

/// An ElastiCache creation statement with `access` as its access string, as a TOML value.
fn ec_statement(access: &str) -> String {
    let json = format!(
        r#"{{"UserId":"{{{{username}}}}","UserName":"{{{{username}}}}","Passwords":["{{{{password}}}}"],"AccessString":{}}}"#,
        serde_json::Value::String(access.into())
    );
    toml_str(&json)
}

#[test]
fn hostile_aws_settings() {
    let trip = Tripwire::start();
    let mut cases: Vec<(String, String, Vec<&str>)> = Vec::new();
    let endpoint = format!("endpoint_url = \"http://127.0.0.1:{}\"", trip.port);
    // The AWS keys every AWS type shares, on each AWS secret.
    for secret in ["sessions", "ledger", "reports"] {
        for (line, needle) in [
            ("region = \"\"", "region"),
            ("region = \"Mars 1\"", "region"),
            ("region = \"us-east-1\\n\"", "region"),
            ("region = \"US-EAST-1\"", "region"),
            ("endpoint_url = \"ftp://127.0.0.1\"", "endpoint_url"),
            ("endpoint_url = \"127.0.0.1:4566\"", "endpoint_url"),
            ("endpoint_url = \"http://127.0.0.1:1 /\"", "endpoint_url"),
            ("access_key_id = \"AKID\\nEXAMPLE\"", "access_key_id"),
            ("access_key_id = \"\"", "access_key_id"),
            ("secret_access_key = \"\"", "secret_access_key"),
            ("max_attempts = 0", "max_attempts"),
            ("max_attempts = -1", "max_attempts"),
            ("assume_role_arn = \"not-an-arn\"", "role_arn"),
            ("assume_role_arn = \"arn:aws:s3:::bucket\"", "role_arn"),
        ] {
            let key = line.split(" = ").next().unwrap();
            let toml = if base(&trip).contains(&format!("\n{key} = ")) && key != "max_attempts" {
                // Replace this secret's own value of the key.
                let cfg = base(&trip);
                let start = cfg.find(&format!("name = \"{secret}\"")).unwrap();
                let at = start + cfg[start..].find(&format!("\n{key} = ")).unwrap() + 1;
                let end = at + cfg[at..].find('\n').unwrap();
                format!("{}{line}{}", &cfg[..at], &cfg[end..])
            } else {
                with_key(&trip, secret, line)
            };
            cases.push((format!("{secret}: {line}"), toml, vec![needle, secret]));
        }
        cases.push((
            format!("{secret}: huge endpoint"),
            replacing(
                &trip,
                &endpoint,
                &format!("endpoint_url = \"http://{}\"", "a".repeat(MB)),
            ),
            vec!["endpoint_url"],
        ));
    }

    // ElastiCache.
    for (line, needle) in [
        (
            "serverless_cache_name = \"x\"".to_string(),
            "serverless_cache_name",
        ),
        ("engine = \"memcached\"".to_string(), "engine"),
        ("engine = 5".to_string(), "engine"),
        (
            format!("creation_statement = {}", toml_str("{not json")),
            "creation_statement",
        ),
        (
            format!(
                "creation_statement = {}",
                toml_str(r#"{"UserId":"{{username}}"}"#)
            ),
            "creation_statement",
        ),
        (
            format!(
                "creation_statement = {}",
                ec_statement("on ~* +@all nopass")
            ),
            "access string",
        ),
        (
            format!(
                "creation_statement = {}",
                ec_statement("on ~* +@all\nnopass")
            ),
            "access string",
        ),
        (
            format!(
                "creation_statement = {}",
                ec_statement("on >hunter2-secret ~* +@all")
            ),
            "access string",
        ),
        (
            format!(
                "creation_statement = {}",
                ec_statement("on ~\"x\" +@all \"")
            ),
            "access string",
        ),
        (
            format!("creation_statement = {}", ec_statement("on ~ü +@all")),
            "access string",
        ),
        (
            format!(
                "creation_statement = {}",
                ec_statement(&format!("on ~{} +@all", "a".repeat(MB)))
            ),
            "creation_statement",
        ),
        (
            format!(
                "creation_statement = {}",
                toml_str(
                    r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","NoPasswordRequired":true}"#
                )
            ),
            "NoPasswordRequired",
        ),
        (
            format!(
                "creation_statement = {}",
                toml_str(
                    r#"{"UserId":"{{username}}","UserName":"{{username}}","Passwords":["{{password}}"],"AccessString":"on ~* +@all","Extra":{"a":{"b":[1]}}}"#
                )
            ),
            "Extra",
        ),
        (
            format!(
                "revocation_statement = {}",
                toml_str(r#"{"UserId":"someone-else"}"#)
            ),
            "revocation_statement",
        ),
        (
            "readiness_endpoint = \"http://cache:6379\"".to_string(),
            "readiness_endpoint",
        ),
        (
            "readiness_ca_pem = \"/etc/ssl/ca.pem\"".to_string(),
            "readiness_ca_pem",
        ),
        ("tags = { \"aws:owner\" = \"x\" }".to_string(), "tags"),
        ("tags = \"x\"".to_string(), "tags"),
        ("ready_timeout = \"0s\"".to_string(), "ready_timeout"),
        (
            "allow_open_default_user = \"yes\"".to_string(),
            "allow_open_default_user",
        ),
    ] {
        cases.push((
            format!("elasticache {}", short(&line)),
            with_key(&trip, "sessions", &line),
            vec![needle],
        ));
    }
    for (from, to, needle) in [
        (
            "replication_group_id = \"sessions\"",
            format!("replication_group_id = \"{}\"", "a".repeat(41)),
            "replication group",
        ),
        (
            "replication_group_id = \"sessions\"",
            "replication_group_id = \"1sessions\"".to_string(),
            "replication group",
        ),
        (
            "user_group_id = \"sessions-users\"",
            "user_group_id = \"sessions--users\"".to_string(),
            "user_group_id",
        ),
        (
            "user_group_id = \"sessions-users\"",
            format!("user_group_id = \"{}\"", "u".repeat(MB)),
            "user_group_id",
        ),
    ] {
        cases.push((
            format!("elasticache {}", short(&to)),
            replacing(&trip, from, &to),
            vec![needle],
        ));
    }

    // MemoryDB.
    for (line, needle) in [
        ("acl_name = \"a--b\"", "acl_name"),
        ("acl_name = \"open-access\"", "acl_name"),
        (
            r#"creation_statement = '{"UserName":"{{username}}","AccessString":"on ~* +@all"}'"#,
            "AuthenticationMode",
        ),
        (
            r#"creation_statement = '{"UserName":"{{username}}","AccessString":"on ~* +@all","AuthenticationMode":{"Type":"iam"}}'"#,
            "AuthenticationMode",
        ),
        (
            r#"creation_statement = '{"UserName":"{{username}}","AccessString":"on ~* +@all nopass","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]}}'"#,
            "AccessString",
        ),
        (
            r#"revocation_statement = '{"UserName":"other"}'"#,
            "revocation_statement",
        ),
        ("user_state_wait = \"0s\"", "user_state_wait"),
    ] {
        cases.push((
            format!("memorydb {}", short(line)),
            with_key(&trip, "ledger", line),
            vec![needle],
        ));
    }
    for to in [
        "cluster_name = \"ledger-\"",
        "cluster_name = \"\"",
        "cluster_name = \"lédger\"",
    ] {
        cases.push((
            format!("memorydb {to}"),
            replacing(&trip, "cluster_name = \"ledger\"", to),
            vec!["cluster_name"],
        ));
    }

    // IAM and STS.
    let big_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"{}"}}]}}"#,
        "x".repeat(MB)
    );
    for (line, needle) in [
        ("path = \"nope\"".to_string(), "path"),
        ("path = \"/a//b/\"".to_string(), "path"),
        (
            "policy_arns = [\"arn:aws:s3:::bucket\"]".to_string(),
            "policy_arns",
        ),
        ("policy_arns = [\"\"]".to_string(), "policy_arns"),
        (
            "permissions_boundary = \"not-an-arn\"".to_string(),
            "permissions_boundary",
        ),
        ("groups = [\"a b\"]".to_string(), "groups"),
        ("groups = [\"ops\", \"ops\"]".to_string(), "groups"),
        ("tags = { \"aws:x\" = \"y\" }".to_string(), "tags"),
        (
            "tags = { \"leasehold:lease-id\" = \"y\" }".to_string(),
            "tags",
        ),
        (
            "inline_policy_name = \"a/b\"".to_string(),
            "inline_policy_name",
        ),
        ("policy_document = \"\"".to_string(), "policy"),
        ("policy_document = \"[]\"".to_string(), "policy"),
        (
            format!("policy_document = {}", toml_str(r#"{"Statement":[]}"#)),
            "policy",
        ),
        (
            format!(
                "policy_document = {}",
                toml_str(r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#)
            ),
            "Effect",
        ),
        (
            format!("policy_document = {}", toml_str(&big_policy)),
            "policy",
        ),
        (
            "consistency_window = \"-1s\"".to_string(),
            "consistency_window",
        ),
        (
            "max_session_duration = \"1h\"".to_string(),
            "max_session_duration",
        ),
        ("external_id = \"abc\"".to_string(), "external_id"),
    ] {
        cases.push((
            format!("iam {}", short(&line)),
            with_key(&trip, "reports", &line),
            vec![needle],
        ));
    }
    for (lines, needle) in [
        (
            "credential_type = \"assumed_role\"\nrole_arn = \"arn:aws:iam::123456789012:user/x\"",
            "role_arn",
        ),
        (
            "credential_type = \"assumed_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nexternal_id = \"x\"",
            "external_id",
        ),
        (
            "credential_type = \"assumed_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nmax_session_duration = \"13h\"",
            "max_session_duration",
        ),
        (
            "credential_type = \"assumed_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\npolicy_document = \"{\"",
            "policy",
        ),
        ("credential_type = \"federation_token\"", "federation_token"),
        (
            "credential_type = \"session_token\"\npolicy_document = '{\"Statement\":[{\"Effect\":\"Allow\"}]}'",
            "policy_document",
        ),
        ("credential_type = \"\"", "credential_type"),
        ("credential_type = \"iam_user\\n\"", "credential_type"),
    ] {
        cases.push((
            format!("sts {}", short(lines)),
            replacing(&trip, "credential_type = \"iam_user\"", lines),
            vec![needle],
        ));
    }

    for (what, toml, needles) in &cases {
        assert_config_refused(what, toml, needles);
    }
    trip.assert_untouched();
}

#[test]
fn hostile_manager_and_store_sections() {
    let trip = Tripwire::start();
    let mut cases: Vec<(String, String, Vec<&str>)> = Vec::new();
    for (line, needle) in [
        ("revoke_concurrency = 0", "revoke_concurrency"),
        ("revoke_concurrency = -1", "revoke_concurrency"),
        ("retry_max_attempts = 0", "retry_max_attempts"),
        ("retry_max_attempts = 99999999999", "retry_max_attempts"),
        ("max_idle = \"0s\"", "max_idle"),
        ("max_idle = \"forever\"", "max_idle"),
        ("retry_initial_delay = \"-1s\"", "retry_initial_delay"),
        ("instance_id = \"\"", "instance_id"),
        ("claim_hold = \"0s\"", "claim_hold"),
        ("claim_hold = \"999ms\"", "claim_hold"),
        ("claim_hold = \"25h\"", "claim_hold"),
        ("claim_hold = -1", "claim_hold"),
        ("claim_hold = \"a while\"", "claim_hold"),
    ] {
        cases.push((
            format!("[manager] {line}"),
            base(&trip).replacen("[store]", &format!("[manager]\n{line}\n\n[store]"), 1),
            vec![needle],
        ));
    }
    cases.push((
        "[manager] 10 KB instance_id".into(),
        base(&trip).replacen(
            "[store]",
            &format!(
                "[manager]\ninstance_id = \"{}\"\n\n[store]",
                "i".repeat(10 * 1024)
            ),
            1,
        ),
        vec!["instance_id"],
    ));
    for url in ["", "memory\n", "mysql://db/leases", "file:///tmp/x.db"] {
        cases.push((
            format!("store url {}", short(url)),
            replacing(
                &trip,
                "url = \"sqlite://{dir}/leasehold.db\"",
                &format!("url = {}", toml_str(url)),
            ),
            vec!["store"],
        ));
    }
    for (what, toml, needles) in &cases {
        assert_config_refused(what, toml, needles);
    }
    trip.assert_untouched();
}

#[test]
fn broken_toml_and_broken_files() {
    let trip = Tripwire::start();
    let good = base(&trip);
    for (what, toml) in [
        ("unclosed string", good.replacen("\"cache\"", "\"cache", 1)),
        (
            "bad table header",
            good.replacen("[[secrets]]", "[[secrets]", 1),
        ),
        (
            "duplicate key",
            good.replacen("name = \"cache\"", "name = \"cache\"\nname = \"cache2\"", 1),
        ),
        (
            "duplicate table",
            format!("{good}\n[store]\nurl = \"memory\"\n"),
        ),
        ("a bare key", format!("{good}\nhello\n")),
        (
            "an invalid escape",
            good.replacen("\"cache\"", "\"ca\\qche\"", 1),
        ),
        (
            "a control character",
            good.replacen("\"cache\"", "\"ca\u{7}che\"", 1),
        ),
        (
            "secrets as a table",
            good.replace("[[secrets]]", "[secrets]"),
        ),
        ("empty file", String::new()),
        ("only comments", "# nothing here\n".repeat(1000)),
        (
            "deeply nested arrays",
            format!(
                "{good}\nx = {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        (
            "deeply nested inline tables",
            format!(
                "{good}\nx = {}1{}\n",
                "{a = ".repeat(100_000),
                "}".repeat(100_000)
            ),
        ),
        ("1 MB of garbage", "\u{1}".repeat(MB)),
        ("a huge key", format!("{good}\n{} = 1\n", "k".repeat(MB))),
    ] {
        let cli = Cli::new(&toml);
        let out = cli.run(&["issue", "sessions", "--no-wait"]);
        assert_config_error(what, &out, &["leasehold.toml"]);
        assert!(!cli.path("leasehold.db").exists(), "{what}");
    }
    // Bytes that are not UTF-8, a directory, a FIFO-like special file.
    let cli = Cli::new(&good);
    let mut bytes = good.clone().into_bytes();
    bytes.extend_from_slice(b"\n# \xff\xfe\xc0\x80\n");
    std::fs::write(&cli.config, bytes).unwrap();
    assert_config_error("not UTF-8", &cli.run(&["list"]), &["leasehold.toml"]);
    std::fs::remove_file(&cli.config).unwrap();
    std::fs::create_dir(&cli.config).unwrap();
    assert_config_error("a directory", &cli.run(&["list"]), &["leasehold.toml"]);
    for path in ["/dev/null", "/proc/self/status"] {
        let out = std::process::Command::new(BIN)
            .args(["--config", path, "list"])
            .env_remove("LEASEHOLD_CONFIG")
            .current_dir(cli.dir.path())
            .output()
            .unwrap();
        let out = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_config_error(path, &out, &[path]);
    }
    assert!(!cli.path("leasehold.db").exists());
    trip.assert_untouched();
}

fn run_with_config(config: &std::ffi::OsStr, args: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LEASEHOLD_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn an_endless_or_huge_config_is_refused_without_reading_it_all() {
    // /dev/zero never ends: the CLI must stop at its limit, quickly, with one line.
    let started = std::time::Instant::now();
    let out = run_with_config("/dev/zero".as_ref(), &["list"]);
    assert_usage_error("/dev/zero", &out, &["/dev/zero", "larger than 2 MiB"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // A regular file just over the limit: a valid config padded with a comment.
    let trip = Tripwire::start();
    let cli = Cli::new(&format!("{}\n# {}\n", base(&trip), "x".repeat(2 * MB)));
    let out = cli.run(&["list"]);
    assert_usage_error(
        "3 MB config",
        &out,
        &["leasehold.toml", "larger than 2 MiB"],
    );
    assert!(!cli.path("leasehold.db").exists());
    // Just under the limit is read.
    std::fs::write(
        &cli.config,
        format!("{}\n# {}\n", base(&trip), "x".repeat(2 * MB - 4096)),
    )
    .unwrap();
    cli.ok(&["secrets"]);
    trip.assert_untouched();
}

#[test]
fn a_long_config_path_is_shortened_in_messages() {
    for path in [
        format!("/nonexistent/{}", "p".repeat(10 * 1024)),
        format!("/nonexistent/{}/x.toml", "d/".repeat(5 * 1024)),
        "/nonexistent/\u{202e}lmot.toml".to_string(),
    ] {
        let out = run_with_config(path.as_ref(), &["list"]);
        assert_usage_error(&short(&path), &out, &["config error", "/nonexistent/"]);
        assert!(
            out.stderr.chars().count() < 300,
            "the path is echoed whole: {}",
            short(&out.stderr)
        );
        assert!(!out.stderr.contains('\u{202e}'), "{}", short(&out.stderr));
    }
    let out = run_with_config(
        format!("/nonexistent/{}", "p".repeat(10 * 1024)).as_ref(),
        &["list"],
    );
    assert!(out.stderr.contains("10253 characters"), "{}", out.stderr);
}

#[test]
fn identity_length_is_counted_in_characters() {
    let trip = Tripwire::start();
    let cli = Cli::new(&base(&trip));
    for (identity, needle) in [
        ("i".repeat(300), "identity: 300 characters; at most 256"),
        ("é".repeat(300), "identity: 300 characters; at most 256"),
        ("日".repeat(257), "identity: 257 characters; at most 256"),
        // Within 256 characters but above the 256 bytes the store keeps: said in both units.
        (
            "é".repeat(200),
            "identity: 200 characters take 400 bytes in UTF-8",
        ),
        ("x\u{202e}y".to_string(), "identity: character 2 is U+202E"),
    ] {
        let out = cli.run(&["issue", "cache", "--identity", &identity, "--no-wait"]);
        assert_usage_error(&short(&identity), &out, &[needle]);
    }
    assert!(!cli.path("leasehold.db").exists());
    trip.assert_untouched();
}

#[test]
fn hostile_arguments() {
    let trip = Tripwire::start();
    let cli = Cli::new(&base(&trip));

    // Checked before the store is opened.
    let mut early: Vec<(Vec<String>, &str)> = Vec::new();
    for d in [
        "",
        " ",
        "-1h",
        "0s",
        "500ms",
        "9999999999999h",
        "１h",
        "\u{202e}1h",
        "1h30",
        &"9".repeat(10_000),
    ] {
        // `--ttl=-1h`: a value that starts with '-' must be attached to its flag.
        early.push((
            vec!["issue".into(), "cache".into(), format!("--ttl={d}")],
            "--ttl",
        ));
        early.push((
            vec![
                "renew".into(),
                "cache/abc".into(),
                format!("--increment={d}"),
            ],
            "--increment",
        ));
    }
    for id in [
        "",
        "/",
        "cache",
        "cache/",
        "/abc",
        "cache/ab c",
        "cache/ab\nc",
        "cache/ab-c",
        "cache/äbc",
        "cache/abc\u{7f}",
        "ca che/abc",
        "../../etc/passwd",
        "../../etc/passwd/abc",
        "cache/../abc",
        &format!("cache/{}", "a".repeat(10 * 1024)),
    ] {
        for cmd in ["lookup", "renew", "revoke"] {
            early.push((vec![cmd.into(), id.into()], "lease id"));
        }
        early.push((
            vec!["revoke".into(), "cache/abc".into(), id.into()],
            "lease id",
        ));
    }
    for name in [
        "nope",
        "",
        "cache\n",
        "CACHE",
        "cache/x",
        &"c".repeat(10 * 1024),
    ] {
        early.push((vec!["issue".into(), name.into()], "no secret named"));
        early.push((vec!["validate".into(), name.into()], "no secret named"));
    }
    for name in ["nope", "CACHE", &"c".repeat(10 * 1024)] {
        early.push((
            vec!["list".into(), "--secret".into(), name.into()],
            "no secret named",
        ));
        early.push((
            vec!["reconcile".into(), "--secret".into(), name.into()],
            "no secret named",
        ));
    }
    for state in ["", "ACTIVE ", "gone", "active\n", "pending,active"] {
        early.push((
            vec!["list".into(), "--state".into(), state.into()],
            "lease state",
        ));
    }
    // A bad identity is refused before the store is opened: control characters, and the
    // invisible ones that reorder or hide text (bidi overrides and isolates, zero-width
    // characters, the BOM, tag characters, other `Cf`).
    for identity in [
        "",
        "a\nb",
        "a\rb",
        "\u{1b}[31mred",
        "admin\u{202e}nimda",
        "\u{2066}x\u{2069}",
        "a\u{2067}b",
        "a\u{2068}b",
        "a\u{200b}b",
        "a\u{200c}b",
        "a\u{200d}b",
        "a\u{200e}b",
        "a\u{200f}b",
        "\u{feff}bom",
        "a\u{ad}b",
        "a\u{2060}b",
        "tag\u{e0041}",
        "a\u{2028}b",
        &"i".repeat(257),
        &"é".repeat(257),
        &"i".repeat(10 * 1024),
    ] {
        for secret in ["cache", "sessions", "ledger", "reports"] {
            early.push((
                vec![
                    "issue".into(),
                    secret.into(),
                    "--identity".into(),
                    identity.into(),
                    "--no-wait".into(),
                ],
                "identity",
            ));
        }
    }
    for (args, needle) in &early {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let what = format!("{:?}", args.iter().map(|a| short(a)).collect::<Vec<_>>());
        assert_usage_error(&what, &cli.run(&args), &[needle]);
        assert!(
            !cli.path("leasehold.db").exists(),
            "{what}: a refused argument must not create the store"
        );
    }

    // Checked by the manager, after the store is opened, before any backend call.
    let mut late: Vec<(Vec<String>, &str)> = Vec::new();
    for (secret, ttl) in [("cache", "25h"), ("cache", "36500d"), ("sessions", "2d")] {
        late.push((
            vec!["issue".into(), secret.into(), "--ttl".into(), ttl.into()],
            "exceeds max_ttl",
        ));
    }
    for (args, needle) in &late {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let what = format!("{:?}", args.iter().map(|a| short(a)).collect::<Vec<_>>());
        let out = cli.run(&args);
        assert_usage_error(&what, &out, &[needle]);
    }
    // Nothing was issued, not even a pending record.
    let v = cli.ok(&["list"]);
    assert_eq!(v, serde_json::json!([]), "{v}");

    // A lease id of the right shape that does not exist: not found (exit 1), no backend call.
    for id in ["cache/abc", "other/abc"] {
        for cmd in ["lookup", "renew"] {
            let out = cli.run(&[cmd, id]);
            assert_no_panic(id, &out);
            assert_eq!(out.code, 1, "{cmd} {id}: {}", out.stderr);
            assert!(out.stderr.contains("LeaseNotFound"), "{cmd} {id}: {out:?}");
        }
        // Revoking is idempotent: a lease that is not there is already revoked.
        let out = cli.run(&["revoke", id]);
        assert_no_panic(id, &out);
        assert_eq!(out.code, 0, "revoke {id}: {out:?}");
        let v = out.json();
        assert_eq!(v["revoked"], 0, "{v}");
        assert_eq!(v["already_gone"], serde_json::json!([id]), "{v}");
        let out = cli.run(&["--table", "revoke", id]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("{id}: already gone")),
            "{out:?}"
        );
    }

    // Arguments that are not UTF-8, and clap-level garbage.
    let bad = std::ffi::OsStr::from_bytes(b"cache\xff");
    for args in [
        vec![std::ffi::OsStr::new("issue"), bad],
        vec![std::ffi::OsStr::new("lookup"), bad],
        vec![
            std::ffi::OsStr::new("issue"),
            std::ffi::OsStr::new("cache"),
            std::ffi::OsStr::new("--ttl"),
            bad,
        ],
    ] {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&cli.config)
            .args(&args)
            .output()
            .unwrap();
        let out = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_no_panic("not UTF-8", &out);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    for args in [
        &["issue"][..],
        &["issue", "cache", "--ttl"][..],
        &["issue", "cache", "--bogus"][..],
        &["revoke", "cache/abc", "--secret", "cache"][..],
        &["list", "--json", "--table"][..],
        &[
            "-vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
            "nope",
        ][..],
    ] {
        let out = cli.run(args);
        assert_no_panic(&format!("{args:?}"), &out);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    trip.assert_untouched();
}

#[test]
fn a_bad_secret_name_is_escaped_once() {
    let trip = Tripwire::start();
    let cfg = replacing(
        &trip,
        "name = \"cache\"",
        &format!("name = {}", toml_str("a\u{202e}b\\c")),
    );
    let cli = Cli::new(&cfg);
    let out = cli.run(&["list"]);
    assert_usage_error("bidi name", &out, &["name"]);
    // Quoted once, as Rust's debug quoting writes it: the override escaped, the backslash
    // doubled; never `\\u{202e}` (escaped twice) nor the raw character.
    assert_eq!(
        out.stderr.matches(r#""a\u{202e}b\\c""#).count(),
        1,
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(r"\\u{202e}"), "{}", out.stderr);
    assert!(!out.stderr.contains('\u{202e}'), "{}", out.stderr);
    trip.assert_untouched();
}
