//! Drives the `leasehold` binary as a subprocess.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// What one invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn from(out: Output) -> Outcome {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// A config file in a temp dir and every output the CLI produced with it, for leak checks.
pub struct Cli {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub seen_stderr: std::sync::Mutex<String>,
    pub seen_stdout_without_issue: std::sync::Mutex<String>,
}

impl Cli {
    /// Writes `toml` (with `{dir}` replaced by the temp dir) as the config.
    pub fn new(toml: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("leasehold.toml");
        let text = toml.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config, text).unwrap();
        Cli {
            dir,
            config,
            seen_stderr: Default::default(),
            seen_stdout_without_issue: Default::default(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            // Everything our crates log, at debug, goes to stderr: it must hold no secret.
            .env("RUST_LOG", "warn,leasehold=debug,leasehold_core=debug,leasehold_iam=debug,leasehold_aws=debug,leasehold_store_sql=debug,leasehold_redis=debug,leasehold_elasticache=debug,leasehold_memorydb=debug")
            .env_remove("LEASEHOLD_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `leasehold --config <config> args...` with stdout piped (so: JSON output).
    pub fn run(&self, args: &[&str]) -> Outcome {
        let out = Outcome::from(self.command(args).output().expect("run leasehold"));
        self.seen_stderr.lock().unwrap().push_str(&out.stderr);
        if args.first() != Some(&"issue") {
            self.seen_stdout_without_issue
                .lock()
                .unwrap()
                .push_str(&out.stdout);
        }
        out
    }

    /// Runs and expects exit 0; returns stdout as JSON.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert_eq!(out.code, 0, "leasehold {args:?} failed: {out:?}");
        out.json()
    }

    /// Starts a long-running command; its stdout and stderr are collected as they come.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_with(args, Stdio::null())
    }

    /// Like [`spawn`](Self::spawn), with stdin a pipe the test holds (`child.stdin`).
    pub fn spawn_with_stdin(&self, args: &[&str]) -> Running {
        self.spawn_with(args, Stdio::piped())
    }

    fn spawn_with(&self, args: &[&str], stdin: Stdio) -> Running {
        let mut child = self
            .command(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leasehold");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Asserts that `secret` appears in no stderr, no non-issue stdout, and no file in the
    /// temp dir (the SQLite database, its WAL and shared-memory files).
    pub fn assert_secret_absent(&self, secret: &str) {
        assert!(secret.len() >= 8, "a leak check needs a real secret");
        assert!(
            !self.seen_stderr.lock().unwrap().contains(secret),
            "a secret leaked into stderr"
        );
        assert!(
            !self
                .seen_stdout_without_issue
                .lock()
                .unwrap()
                .contains(secret),
            "a secret leaked into the output of a command other than issue"
        );
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = entry.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret leaked into {}",
                p.display()
            );
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A running `leasehold` process.
pub struct Running {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first JSON document on stdout, once it is complete.
    pub fn stdout_json(&self) -> Option<Value> {
        let text = self.stdout();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

/// Sends SIGTERM (or SIGINT) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for `child` to exit, at most `limit`; kills it and panics when it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("leasehold did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 200 ms until it holds, at most `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Parses an RFC 3339 timestamp of the CLI's output.
pub fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp string"))
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// A lowercase random suffix for resource names.
pub fn suffix() -> String {
    leasehold_core::template::random_lowercase(10)
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Sends `AUTH user password` then `GET orders:probe` on one connection and returns both
/// replies: a failed AUTH leaves the connection as `default`, so the AUTH reply itself is what
/// counts (`redis-cli --user --pass` would fall back to `default` silently).
pub fn auth(port: u16, user: &str, password: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = Vec::new();
    for args in [vec!["AUTH", user, password], vec!["GET", "orders:probe"]] {
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    s.write_all(&cmd).unwrap();
    let mut r = BufReader::new(s);
    let mut first = String::new();
    let mut second = String::new();
    r.read_line(&mut first).unwrap();
    r.read_line(&mut second).unwrap();
    (first.trim_end().into(), second.trim_end().into())
}

/// Whether `user` / `password` AUTHs; when it does, the GET after it must be allowed (a nil
/// reply: the key pattern and command categories of the test configs allow the read).
pub fn auth_ok(port: u16, user: &str, password: &str) -> bool {
    let (a, p) = auth(port, user, password);
    if a == "+OK" {
        assert_eq!(p, "$-1");
        true
    } else {
        assert!(a.starts_with("-WRONGPASS"), "unexpected AUTH reply {a:?}");
        false
    }
}
