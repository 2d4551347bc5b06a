//! `run --metrics-listen`: Prometheus metrics and `/healthz` over HTTP, scraped while other
//! processes issue through the same store; alerts on stderr and to a webhook.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leasehold_testkit::servers::{PostgresDb, RedisServer};
use serde_json::Value;
use support::{signal, wait_exit, wait_until, Cli, Running};

/// One HTTP exchange on a fresh connection: `raw` is sent as is; returns status and body.
fn http_raw(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may answer (and close) before reading all of an oversized request.
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes(),
    )
}

/// The samples of a Prometheus text exposition: `name{labels}` (labels as written) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the sample named `name` whose labels include every `k="v"` of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).into_iter().find_map(|(k, v)| {
        let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
        let ok = n == name
            && labels
                .iter()
                .all(|(lk, lv)| rest.contains(&format!("{lk}=\"{lv}\"")));
        ok.then_some(v)
    })
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits for the `serving metrics on http://ADDR/metrics` line of `run`; returns ADDR.
fn metrics_addr(w: &Running) -> SocketAddr {
    let mut addr = None;
    wait_until("run to serve metrics", Duration::from_secs(60), || {
        let err = w.stderr();
        addr = err
            .split("serving metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        assert!(
            !err.contains("leasehold: cannot") && !err.contains("config error"),
            "{err}"
        );
        addr.is_some()
    });
    addr.unwrap()
}

fn active_in_store(cli: &Cli) -> usize {
    cli.ok(&["list", "--state", "active"])
        .as_array()
        .unwrap()
        .len()
}

/// The server URL the testkit's PostgreSQL databases are created on.
fn pg_admin_url() -> String {
    std::env::var("LEASEHOLD_TEST_PG_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn drop_database(name: &str) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    conn.execute(format!("DROP DATABASE \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap();
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_lease_metrics_and_health_over_http() {
    let test = "cli_run_serves_lease_metrics_and_health_over_http";
    let Some(redis) = RedisServer::start(test).await else {
        return;
    };
    let Some(db) = PostgresDb::create(test).await else {
        return;
    };
    let cli = Cli::new(&format!(
        r#"
[store]
url = "{}"

[manager]
max_idle = "1s"

[metrics]
interval = "1s"

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["{}"]
"#,
        db.url(),
        redis.url()
    ));
    let mut w = cli.spawn(&["run", "--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&w);

    // HELP lines come from the descriptions; the worker has looped at least once.
    let text = scrape(addr);
    assert!(
        text.contains("# HELP leasehold_worker_loops_total "),
        "{text}"
    );
    let loops = sample(&text, "leasehold_worker_loops_total", &[]).unwrap();
    assert!(loops >= 1.0, "{text}");

    // Leases issued by other processes show in the gauge, refreshed from the store.
    for _ in 0..3 {
        cli.ok(&["issue", "orders-cache", "--ttl", "10m"]);
    }
    assert_eq!(active_in_store(&cli), 3);
    let mut text = String::new();
    wait_until(
        "the active gauge to reach 3",
        Duration::from_secs(30),
        || {
            text = scrape(addr);
            sample(
                &text,
                "leasehold_leases",
                &[("secret", "orders-cache"), ("state", "active")],
            ) == Some(active_in_store(&cli) as f64)
        },
    );
    assert!(
        text.contains("# HELP leasehold_leases Leases in the store"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "leasehold_irrevocable_leases",
            &[("secret", "orders-cache")]
        ),
        Some(0.0),
        "{text}"
    );
    // The issues happened in the other processes: this process counted none.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("leasehold_issues_total{")),
        "{text}"
    );
    let later = sample(&text, "leasehold_worker_loops_total", &[]).unwrap();
    assert!(
        later > loops,
        "the worker keeps looping: {loops} then {later}"
    );

    // An expiry in this process: the revocation counter and the lag histogram.
    let short = cli.ok(&["issue", "orders-cache", "--ttl", "2s"]);
    let short_id = short["lease_id"].as_str().unwrap().to_string();
    wait_until(
        "the worker to revoke the expired lease",
        Duration::from_secs(30),
        || cli.run(&["lookup", &short_id]).code == 1,
    );
    wait_until(
        "the gauge to drop back to 3",
        Duration::from_secs(30),
        || {
            text = scrape(addr);
            sample(
                &text,
                "leasehold_leases",
                &[("secret", "orders-cache"), ("state", "active")],
            ) == Some(3.0)
        },
    );
    let expire = [
        ("secret", "orders-cache"),
        ("reason", "expire"),
        ("outcome", "success"),
    ];
    assert_eq!(
        sample(&text, "leasehold_revocations_total", &expire),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "leasehold_expiry_lag_seconds_count",
            &[("secret", "orders-cache")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("leasehold_expiry_lag_seconds_bucket{"),
        "histograms are exported with buckets: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "leasehold_provider_calls_total",
            &[
                ("provider", "redis"),
                ("operation", "revoke"),
                ("outcome", "success")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("leasehold_")) {
        assert!(!line.contains(&short_id), "a lease id in a label: {line}");
    }

    let (status, body) = get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // Garbage gets a 4xx and the server keeps serving, while a silent client holds a
    // connection open.
    let mut silent = TcpStream::connect(addr).unwrap();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /nothing-here HTTP/1.1\r\n\r\n".to_vec(), 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            405,
        ),
        (b"\x00\xff\x13garbage\r\n\r\n".to_vec(), 400),
        (b"GET /metrics\r\n\r\n".to_vec(), 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x".to_vec(), 400),
        (
            format!(
                "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .into_bytes(),
            431,
        ),
    ];
    for (raw, want) in &cases {
        let (status, body) = if raw.ends_with(b"Host: x") {
            // A head that never ends: the client stops sending (half-close).
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(raw).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            (out.split_whitespace().nth(1).unwrap().parse().unwrap(), out)
        } else {
            http_raw(addr, raw)
        };
        assert_eq!(status, *want, "{:?}: {body}", String::from_utf8_lossy(raw));
        assert_eq!(get(addr, "/metrics").0, 200);
    }
    let (status, _) = get(addr, "/healthz?from=probe");
    assert_eq!(status, 200);
    // The silent client is cut off after the read timeout with a 408.
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = String::new();
    let _ = silent.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");

    // The store goes away: /healthz turns 503 with the reason, /metrics still answers.
    drop_database(db.name()).await;
    let mut last = (0, String::new());
    wait_until("/healthz to fail", Duration::from_secs(60), || {
        last = get(addr, "/healthz");
        last.0 == 503
    });
    assert!(
        !last.1.trim().is_empty() && last.1.lines().count() == 1,
        "{last:?}"
    );
    assert_eq!(get(addr, "/metrics").0, 200);

    signal(&w.child, "TERM");
    let _ = wait_exit(&mut w.child, Duration::from_secs(60));
}

/// A one-shot HTTP receiver: accepts POSTs, answers 204, sends each JSON body on.
fn webhook_receiver() -> (SocketAddr, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut r = BufReader::new(stream);
            let mut request_line = String::new();
            if r.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let v: Value = serde_json::from_slice(&body).unwrap();
            if tx.send((request_line.trim_end().to_string(), v)).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn irrevocable_lease_alerts_on_stderr_and_webhook() {
    let test = "cli_irrevocable_lease_alerts_on_stderr_and_webhook";
    let Some(mut redis) = RedisServer::start(test).await else {
        return;
    };
    let (hook, received) = webhook_receiver();
    let cli = Cli::new(&format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[manager]
max_idle = "1s"
retry_max_attempts = 1

[metrics]
interval = "1s"

[alerts]
webhook = "http://{hook}/hooks/leasehold"

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["{}"]
connect_timeout = "1s"
command_timeout = "1s"
"#,
        redis.url()
    ));
    let issued = cli.ok(&[
        "issue",
        "orders-cache",
        "--ttl",
        "3s",
        "--identity",
        "orders-api",
    ]);
    let id = issued["lease_id"].as_str().unwrap().to_string();
    let user = issued["credentials"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    // The node is gone when the lease expires: one failed attempt makes it irrevocable.
    redis.stop();
    let mut w = cli.spawn(&["run", "--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&w);

    let (request_line, body) = received
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no webhook POST; stderr: {}", w.stderr()));
    assert_eq!(request_line, "POST /hooks/leasehold HTTP/1.1");
    assert_eq!(body["alert"], "irrevocable", "{body}");
    assert_eq!(body["lease_id"], id.as_str(), "{body}");
    assert_eq!(body["secret"], "orders-cache", "{body}");
    assert_eq!(body["principal"], user.as_str(), "{body}");
    assert_eq!(body["identity"], "orders-api", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the last error travels with the alert: {body}"
    );

    let line = w
        .stderr()
        .lines()
        .find(|l| l.starts_with("ALERT "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no ALERT line: {}", w.stderr()));
    assert!(
        line.starts_with(&format!(
            "ALERT irrevocable lease={id} secret=orders-cache principal={user} identity=orders-api error="
        )),
        "{line}"
    );
    assert_eq!(cli.ok(&["lookup", &id])["state"], "irrevocable");

    let mut text = String::new();
    wait_until("the irrevocable gauge", Duration::from_secs(30), || {
        text = scrape(addr);
        sample(
            &text,
            "leasehold_irrevocable_leases",
            &[("secret", "orders-cache")],
        ) == Some(1.0)
    });
    assert_eq!(
        sample(
            &text,
            "leasehold_irrevocable_total",
            &[("secret", "orders-cache")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "leasehold_revocations_total",
            &[("secret", "orders-cache"), ("reason", "expire")]
        )
        .map(|v| v >= 1.0),
        Some(true),
        "{text}"
    );

    signal(&w.child, "TERM");
    assert_eq!(wait_exit(&mut w.child, Duration::from_secs(60)), 0);
    // The alert went out once.
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(
        w.stderr()
            .lines()
            .filter(|l| l.starts_with("ALERT "))
            .count(),
        1,
        "{}",
        w.stderr()
    );
}

#[test]
fn metrics_and_alerts_settings_are_checked() {
    let base = r#"
[store]
url = "sqlite://{dir}/leasehold.db"

SECTION

[[secrets]]
name = "orders-cache"
type = "redis"
urls = ["redis://127.0.0.1:1"]
"#;
    for (section, want) in [
        ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
        ("[metrics]\nlisten = \"127.0.0.1:99999\"", "metrics.listen"),
        ("[metrics]\ninterval = \"0s\"", "metrics.interval"),
        ("[metrics]\ninterval = \"2h\"", "metrics.interval"),
        ("[metrics]\ninterval = \"soon\"", "interval"),
        ("[metrics]\nlisen = \"127.0.0.1:9464\"", "lisen"),
        (
            "[alerts]\nwebhook = \"https://hooks.example/x\"",
            "https is not supported",
        ),
        ("[alerts]\nwebhook = \"hooks.example/x\"", "alerts.webhook"),
        ("[alerts]\nrepeated_after = 0", "alerts.repeated_after"),
    ] {
        let cli = Cli::new(&base.replace("SECTION", section));
        let out = cli.run(&["run"]);
        assert_eq!(out.code, 2, "{section}: {out:?}");
        assert!(out.stderr.contains(want), "{section}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{section}: {out:?}");
    }
}

#[test]
fn a_taken_metrics_port_fails_at_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cli = Cli::new(
        r#"
[store]
url = "sqlite://{dir}/leasehold.db"
"#,
    );
    let started = Instant::now();
    let out = cli.run(&["run", "--metrics-listen", &addr.to_string()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot listen for metrics on {addr}")),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let out = cli.run(&["run", "--metrics-listen", "not-an-address"]);
    assert_eq!(out.code, 2, "{out:?}");
}
