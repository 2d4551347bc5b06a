//! What an operator relies on, against a private redis-server: no credential without a durable
//! record unless `--ephemeral`; `run` prints every audit line before the change is done and
//! handles signals from its first moments; failed and repeated revokes; several installations
//! on one Redis; damaged rows in the store.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold_core::{LeaseId, LeaseStore};
use leasehold_store_sql::SqliteStore;
use leasehold_testkit::servers::{skip_or_panic, RedisServer};
use serde_json::Value;
use support::{auth, auth_ok, signal, wait_exit, wait_until, Cli, Outcome};

/// A config with one Redis secret; `store` is the `[store] url`, `manager` extra
/// `[manager]` lines.
fn config(store: &str, redis_url: &str, manager: &str) -> String {
    format!(
        r#"
[store]
url = "{store}"

[manager]
max_idle = "1s"
{manager}

[[secrets]]
name = "orders-cache"
type = "redis"
default_ttl = "1h"
max_ttl = "24h"
urls = ["{redis_url}"]
acl_rules = "~orders:* +@read +@write"
connect_timeout = "1s"
attempts = 1
"#
    )
}

fn sqlite(cli_dir: &str) -> String {
    format!("sqlite://{cli_dir}/leasehold.db")
}

/// Whether `line` is a log line (the tests turn debug logging on): `2026-01-01T...`.
fn is_log(line: &str) -> bool {
    line.get(4..5) == Some("-") && line.get(10..11) == Some("T")
}

/// Exit `code`, and stderr is exactly one `leasehold: ` line (besides log lines) holding every
/// needle.
fn assert_one_line(what: &str, out: &Outcome, code: i32, needles: &[&str]) {
    assert_eq!(out.code, code, "{what}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !is_log(l)).collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr: {out:?}");
    assert!(lines[0].starts_with("leasehold: "), "{what}: {out:?}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{what}: {:?} should say {n:?}",
            lines[0]
        );
    }
}

fn field(v: &Value, path: &[&str]) -> String {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("no {path:?} in {v}"))
        .to_string()
}

/// Whether `user` exists on the server: `ACL GETUSER`, asked as `default`, answers a null array
/// for a user that does not.
fn user_exists(port: u16, user: &str) -> bool {
    use std::io::{BufRead, BufReader};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cmd = format!(
        "*3\r\n$3\r\nACL\r\n$7\r\nGETUSER\r\n${}\r\n{user}\r\n",
        user.len()
    );
    s.write_all(cmd.as_bytes()).unwrap();
    let mut first = String::new();
    BufReader::new(s).read_line(&mut first).unwrap();
    match first.trim_end() {
        "*-1" | "$-1" | "_" => false,
        l if l.starts_with('*') || l.starts_with('%') => true,
        other => panic!("unexpected ACL GETUSER reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_on_a_store_that_dies_with_the_process_needs_ephemeral() {
    // Exit 2 before any backend call: the Redis URL points at a port nobody listens on.
    for store in [
        "memory",
        "sqlite::memory:",
        "sqlite://:memory:",
        "sqlite:file::memory:?cache=shared",
        "sqlite://file.db?mode=memory",
    ] {
        let cli = Cli::new(&config(store, "redis://127.0.0.1:1", ""));
        let out = cli.run(&["issue", "orders-cache"]);
        assert_one_line(
            store,
            &out,
            2,
            &[
                "orders-cache",
                "outlive the only record of it",
                "--ephemeral",
            ],
        );
        assert!(out.stdout.is_empty(), "{store}: {out:?}");
    }
    // A durable store is not refused for that reason (it fails later, at the dead backend).
    let cli = Cli::new(&config(&sqlite("{dir}"), "redis://127.0.0.1:1", ""));
    let out = cli.run(&["issue", "orders-cache"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("--ephemeral"), "{out:?}");
}

/// Starts `issue orders-cache --ephemeral` and waits for its credential.
fn start_ephemeral(cli: &Cli, extra: &[&str]) -> (support::Running, String, String, String) {
    let mut args = vec!["issue", "orders-cache", "--ephemeral"];
    args.extend_from_slice(extra);
    let mut running = cli.spawn_with_stdin(&args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.stdout_json().is_none() {
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!(
                "exited ({status}) without a credential: {}",
                running.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no credential: {}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = running.stdout_json().unwrap();
    (
        running,
        field(&v, &["lease_id"]),
        field(&v, &["credentials", "username"]),
        field(&v, &["credentials", "password"]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_issue_lives_until_sigterm_then_is_revoked() {
    let Some(redis) = RedisServer::start("cli_ephemeral_issue_lives_until_sigterm").await else {
        return;
    };
    let cli = Cli::new(&config("memory", &redis.url(), ""));
    let (mut running, lease_id, user, password) = start_ephemeral(&cli, &["--ttl", "10m"]);
    assert!(lease_id.starts_with("orders-cache/"), "{lease_id}");
    // It lives while the process runs...
    std::thread::sleep(Duration::from_millis(500));
    assert!(running.child.try_wait().unwrap().is_none(), "exited early");
    assert!(auth_ok(redis.port(), &user, &password));
    assert!(user_exists(redis.port(), &user));
    wait_until("the holding line", Duration::from_secs(5), || {
        running.stderr().contains("holding lease")
    });
    // ...and is gone once it is told to stop.
    signal(&running.child, "TERM");
    assert_eq!(wait_exit(&mut running.child, Duration::from_secs(30)), 0);
    wait_until("the last line", Duration::from_secs(5), || {
        running.stderr().contains("SIGTERM: revoked lease")
    });
    assert!(!auth_ok(redis.port(), &user, &password));
    assert!(!user_exists(redis.port(), &user));
    assert!(running.stderr().contains(&lease_id), "{}", running.stderr());
    assert!(!running.stderr().contains(&password));
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_issue_is_revoked_when_stdin_closes_or_on_sighup_or_sigint() {
    let Some(redis) = RedisServer::start("cli_ephemeral_issue_stdin_sigint").await else {
        return;
    };
    // On a durable store as well: --ephemeral is about the credential's life, not the store.
    let cli = Cli::new(&config(&sqlite("{dir}"), &redis.url(), ""));
    let (mut running, lease_id, user, password) = start_ephemeral(&cli, &[]);
    assert!(auth_ok(redis.port(), &user, &password));
    // The parent going away closes the pipe.
    drop(running.child.stdin.take());
    assert_eq!(wait_exit(&mut running.child, Duration::from_secs(30)), 0);
    assert!(!auth_ok(redis.port(), &user, &password));
    wait_until("the last line", Duration::from_secs(5), || {
        running.stderr().contains("end of stdin: revoked lease")
    });
    assert_eq!(cli.run(&["lookup", &lease_id]).code, 1);

    // A closed terminal (SIGHUP) and Ctrl-C (SIGINT) end it too.
    for sig in ["HUP", "INT"] {
        let (mut running, _, user, password) = start_ephemeral(&cli, &[]);
        assert!(auth_ok(redis.port(), &user, &password));
        signal(&running.child, sig);
        assert_eq!(wait_exit(&mut running.child, Duration::from_secs(30)), 0);
        assert!(!auth_ok(redis.port(), &user, &password), "SIG{sig}");
    }
    assert_eq!(cli.ok(&["list"]), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_prints_every_audit_line_before_a_kill_9() {
    let Some(redis) = RedisServer::start("cli_run_prints_every_audit_line").await else {
        return;
    };
    // One revocation at a time, so that the kill lands while the worker is mid-way.
    let cli = Cli::new(&config(
        &sqlite("{dir}"),
        &redis.url(),
        "revoke_concurrency = 1",
    ));
    let mut ids = Vec::new();
    for _ in 0..30 {
        let v = cli.ok(&["issue", "orders-cache", "--ttl", "1s", "--no-wait"]);
        ids.push(field(&v, &["lease_id"]));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mut worker = cli.spawn(&["run"]);
    wait_until("a few revocations", Duration::from_secs(60), || {
        cli.ok(&["list"]).as_array().unwrap().len() < ids.len() - 3
    });
    worker.child.kill().unwrap(); // SIGKILL: no handler, no flush at exit.
    worker.child.wait().unwrap();
    // The pipe is closed; give the reader thread a moment to take the last bytes.
    std::thread::sleep(Duration::from_millis(300));
    let printed = worker.stdout();
    let left: Vec<String> = cli
        .ok(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| field(l, &["lease_id"]))
        .collect();
    let mut revoked = 0;
    for id in &ids {
        if left.contains(id) {
            continue;
        }
        revoked += 1;
        let line = printed
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("lease {id} is gone but its audit line is not printed"));
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["action"], "expire", "{line}");
    }
    assert!(revoked > 3, "{revoked}");
    // Every printed line is whole.
    for l in printed.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
    }
}

/// A listener that accepts connections and never answers: a database that hangs.
fn silent_listener() -> (u16, Arc<Mutex<Vec<std::net::TcpStream>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    (port, held)
}

#[test]
fn run_handles_a_signal_in_its_first_moments() {
    // The store never answers, so `run` is still starting when the signal comes.
    let (port, _held) = silent_listener();
    for (sig, after_ms) in [("TERM", 100), ("INT", 100), ("TERM", 300)] {
        let cli = Cli::new(&config(
            &format!("postgres://leasehold@127.0.0.1:{port}/leasehold"),
            "redis://127.0.0.1:1",
            "",
        ));
        let mut worker = cli.spawn(&["run"]);
        std::thread::sleep(Duration::from_millis(after_ms));
        let sent = Instant::now();
        signal(&worker.child, sig);
        let code = wait_exit(&mut worker.child, Duration::from_secs(20));
        assert_eq!(
            code,
            0,
            "SIG{sig} after {after_ms} ms: not a clean exit: {}",
            worker.stderr()
        );
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{:?}",
            sent.elapsed()
        );
        wait_until("the last line", Duration::from_secs(5), || {
            worker.stderr().contains("received while starting")
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_says_a_stable_instance_takes_back_its_claims() {
    let Some(redis) = RedisServer::start("cli_run_stable_instance").await else {
        return;
    };
    let cli = Cli::new(&config(
        &sqlite("{dir}"),
        &redis.url(),
        "instance_id = \"worker-a\"\nclaim_hold = \"30s\"",
    ));
    let mut worker = cli.spawn(&["run"]);
    wait_until("the worker", Duration::from_secs(30), || {
        worker.stderr().contains("expiry worker running")
    });
    let line = worker.stderr();
    assert!(
        line.contains("instance worker-a, stable: claims of its previous run taken back"),
        "{line}"
    );
    signal(&worker.child, "TERM");
    assert_eq!(wait_exit(&mut worker.child, Duration::from_secs(30)), 0);

    // claim_hold is checked.
    for bad in ["\"0s\"", "\"500ms\"", "\"2d\"", "\"soon\""] {
        let cli = Cli::new(&config(
            &sqlite("{dir}"),
            &redis.url(),
            &format!("claim_hold = {bad}"),
        ));
        let out = cli.run(&["run"]);
        assert_one_line(bad, &out, 2, &["manager.claim_hold"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_revoke_is_one_line_on_stderr_and_a_repeated_one_succeeds() {
    let Some(redis) = RedisServer::start("cli_failed_revoke_one_line").await else {
        return;
    };
    let good = config(&sqlite("{dir}"), &redis.url(), "");
    let cli = Cli::new(&good);
    let v = cli.ok(&["issue", "orders-cache"]);
    let lease_id = field(&v, &["lease_id"]);
    let (user, password) = (
        field(&v, &["credentials", "username"]),
        field(&v, &["credentials", "password"]),
    );
    // The backend goes away.
    let dead = good.replace(&redis.url(), "redis://127.0.0.1:1");
    std::fs::write(
        &cli.config,
        dead.replace("{dir}", &cli.dir.path().display().to_string()),
    )
    .unwrap();
    let out = cli.run(&["revoke", &lease_id]);
    assert_one_line(
        "failed revoke",
        &out,
        1,
        &["revoke", lease_id.as_str(), "failed"],
    );
    assert_eq!(out.json()["failed"][0]["lease_id"], lease_id.as_str());
    assert!(auth_ok(redis.port(), &user, &password));
    // It comes back: the revoke goes through; a second one finds nothing to do.
    std::fs::write(
        &cli.config,
        good.replace("{dir}", &cli.dir.path().display().to_string()),
    )
    .unwrap();
    let mut out = cli.run(&["revoke", &lease_id]);
    let deadline = Instant::now() + Duration::from_secs(180);
    // The failed attempt holds a claim until its revoke timeout; a retry may be refused
    // (another instance's claim) until then.
    while out.code != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        out = cli.run(&["revoke", &lease_id]);
    }
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["revoked"], 1, "{out:?}");
    assert!(!auth_ok(redis.port(), &user, &password));
    let out = cli.run(&["revoke", &lease_id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(out.json()["already_gone"][0], lease_id.as_str());
    let out = cli.run(&["--table", "revoke", &lease_id]);
    assert!(out.stdout.contains("already gone"), "{out:?}");
    cli.assert_secret_absent(&password);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_installations_on_one_redis_reconcile_only_their_own_users() {
    let Some(redis) = RedisServer::start("cli_two_installations_on_one_redis").await else {
        return;
    };
    let a = Cli::new(&config(&sqlite("{dir}"), &redis.url(), ""));
    let b = Cli::new(&config(&sqlite("{dir}"), &redis.url(), ""));
    let inst = |cli: &Cli| field(&cli.ok(&["secrets"])[0], &["installation"]);
    let (ia, ib) = (inst(&a), inst(&b));
    assert_ne!(ia, ib);
    let va = a.ok(&["issue", "orders-cache"]);
    let (ua, pa) = (
        field(&va, &["credentials", "username"]),
        field(&va, &["credentials", "password"]),
    );
    assert_eq!(
        field(
            &a.ok(&["lookup", &field(&va, &["lease_id"])]),
            &["installation"]
        ),
        ia
    );
    let vb = b.ok(&["issue", "orders-cache"]);
    let (ub, pb) = (
        field(&vb, &["credentials", "username"]),
        field(&vb, &["credentials", "password"]),
    );
    assert!(ua.contains(&ia) && ub.contains(&ib), "{ua} {ub}");

    // B loses the record of its lease (a restore from an old backup, a row deleted by hand).
    let store = SqliteStore::open(&format!("sqlite://{}", b.path("leasehold.db").display()))
        .await
        .unwrap();
    let id: LeaseId = field(&vb, &["lease_id"]).parse().unwrap();
    let rec = store.get(&id).await.unwrap().unwrap();
    store.delete(&id, rec.version).await.unwrap();
    drop(store);

    let dry = b.ok(&["reconcile"]);
    assert_eq!(dry[0]["installation"], ib.as_str(), "{dry}");
    assert_eq!(dry[0]["orphans"], serde_json::json!([ub]), "{dry}");
    assert_eq!(dry[0]["foreign"], serde_json::json!([ua]), "{dry}");
    let table = b.run(&["--table", "reconcile"]);
    assert!(
        table.stdout.contains(&format!("installation {ib}")),
        "{table:?}"
    );
    assert!(
        table
            .stdout
            .contains(&format!("foreign orders-cache: {ua}")),
        "{table:?}"
    );
    assert!(auth_ok(redis.port(), &ub, &pb), "a dry run removes nothing");

    let applied = b.ok(&["reconcile", "--apply"]);
    assert_eq!(applied[0]["removed"], serde_json::json!([ub]), "{applied}");
    assert_eq!(applied[0]["foreign"], serde_json::json!([ua]), "{applied}");
    // A's user still works: AUTH and a command on one connection, both replies checked.
    assert_eq!(auth(redis.port(), &ua, &pa), ("+OK".into(), "$-1".into()));
    assert!(!auth_ok(redis.port(), &ub, &pb));
    // From A's side, B's users are foreign and nothing is an orphan.
    let ra = a.ok(&["reconcile", "--apply"]);
    assert_eq!(ra[0]["orphans"], serde_json::json!([]), "{ra}");
    assert_eq!(ra[0]["installation"], ia.as_str(), "{ra}");
    assert!(auth_ok(redis.port(), &ua, &pa));
    a.assert_secret_absent(&pa);
    b.assert_secret_absent(&pb);
}

/// Runs one SQL statement on a SQLite file with whatever client the machine has.
fn sql(db: &std::path::Path, statement: &str) -> bool {
    if let Ok(o) = Command::new("sqlite3").arg(db).arg(statement).output() {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        return true;
    }
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()\n";
    Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .arg(statement)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_rows_are_listed_and_removed_with_force() {
    let test = "cli_damaged_rows_are_listed_and_removed_with_force";
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let cli = Cli::new(&config(&sqlite("{dir}"), &redis.url(), ""));
    let v1 = cli.ok(&["issue", "orders-cache"]);
    let v2 = cli.ok(&["issue", "orders-cache"]);
    let v3 = cli.ok(&["issue", "orders-cache"]);
    let (id1, id2) = (field(&v1, &["lease_id"]), field(&v2, &["lease_id"]));
    let id3 = field(&v3, &["lease_id"]);
    let (u1, p1) = (
        field(&v1, &["credentials", "username"]),
        field(&v1, &["credentials", "password"]),
    );
    // Two rows edited by hand: one keeps its id, one gets an id no lease id can be.
    let weird = "orders-cache/../\u{202e}x y";
    let db = cli.path("leasehold.db");
    let edited = sql(
        &db,
        &format!(
            "UPDATE leasehold_leases SET damaged = 'state: not a lease state' WHERE id = '{id2}'; \
             UPDATE leasehold_leases SET damaged = 'edited by hand', id = '{weird}' WHERE id = '{id1}'; \
             UPDATE leasehold_leases SET identity = 'evil\u{202e}txt.exe' WHERE id = '{id3}';"
        ),
    );
    if !edited {
        skip_or_panic(test, "neither sqlite3 nor python3 to edit the store");
        return;
    }
    let list = cli.ok(&["list"]);
    let damaged: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "damaged")
        .collect();
    assert_eq!(damaged.len(), 2, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // An identity written by another program with a bidi override: JSON carries it as it is,
    // tables escape it.
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|l| l["identity"] == "evil\u{202e}txt.exe"),
        "{list}"
    );
    let looked = cli.run(&["--table", "lookup", &id3]);
    assert!(looked.stdout.contains("evil\\u{202e}txt.exe"), "{looked:?}");
    assert!(!looked.stdout.contains('\u{202e}'), "{looked:?}");
    assert!(damaged.iter().all(|d| d["damaged"] == true), "{list}");
    assert!(
        damaged.iter().any(|d| d["lease_id"] == weird
            && d["reason"] == "edited by hand"
            && d["principal"] == u1.as_str()),
        "{list}"
    );
    let only = cli.ok(&["list", "--state", "damaged"]);
    assert_eq!(only.as_array().unwrap().len(), 2, "{only}");
    assert_eq!(
        cli.ok(&["list", "--state", "active"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let table = cli.run(&["--table", "list"]);
    assert!(table.stdout.contains("DAMAGED"), "{table:?}");
    assert!(table.stdout.contains("edited by hand"), "{table:?}");
    assert!(
        !table.stdout.contains('\u{202e}'),
        "raw bidi override: {table:?}"
    );
    assert!(table.stdout.contains("evil\\u{202e}txt.exe"), "{table:?}");

    // Without --force: the well-formed id fails (exit 1, one line); the other is malformed.
    let out = cli.run(&["revoke", &id2]);
    assert_one_line(
        "damaged without --force",
        &out,
        1,
        &["revoke", &id2, "failed"],
    );
    let out = cli.run(&["revoke", weird]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = cli.run(&["lookup", &id2]);
    assert_one_line("lookup damaged", &out, 1, &["damaged", "revoke --force"]);

    // With --force: both rows go, by their ids as stored.
    let out = cli.run(&["revoke", "--force", &id2, weird]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json()["damaged_removed"],
        serde_json::json!([id2, weird]),
        "{out:?}"
    );
    assert_eq!(cli.ok(&["revoke", &id3])["revoked"], 1);
    assert_eq!(cli.ok(&["list"]), serde_json::json!([]));
    let out = cli.run(&["revoke", "--force", weird]);
    assert_eq!(out.code, 2, "no such row any more: {out:?}");
    // The credentials they pointed at are orphans now; reconcile removes them.
    assert!(auth_ok(redis.port(), &u1, &p1));
    let r = cli.ok(&["reconcile", "--apply"]);
    assert_eq!(r[0]["removed"].as_array().unwrap().len(), 2, "{r}");
    assert!(!auth_ok(redis.port(), &u1, &p1));
    std::io::stdout().flush().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_waits_for_revocations_in_flight_unless_signalled_twice() {
    let Some(redis) = RedisServer::start("cli_run_signalled_twice").await else {
        return;
    };
    let good = config(&sqlite("{dir}"), &redis.url(), "");
    let cli = Cli::new(&good);
    cli.ok(&["issue", "orders-cache", "--ttl", "1s"]);
    // The node stops answering: the worker's revocation hangs.
    let (port, _held) = silent_listener();
    let hung = good
        .replace(&redis.url(), &format!("redis://127.0.0.1:{port}"))
        .replace(
            "connect_timeout = \"1s\"",
            "connect_timeout = \"5m\"\ncommand_timeout = \"5m\"",
        )
        .replace("{dir}", &cli.dir.path().display().to_string());
    std::fs::write(&cli.config, hung).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let mut worker = cli.spawn(&["run"]);
    wait_until("the worker", Duration::from_secs(30), || {
        worker.stderr().contains("expiry worker running")
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(&worker.child, "TERM");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker left a revocation in flight: {}",
        worker.stderr()
    );
    signal(&worker.child, "TERM");
    assert_eq!(wait_exit(&mut worker.child, Duration::from_secs(10)), 1);
    wait_until("the last line", Duration::from_secs(5), || {
        worker.stderr().contains("received again")
    });
}
