//! A private `redis-server` child process per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{free_port, skip_or_panic, which};

/// How to start a [`RedisServer`]. `RedisOptions::default()` is a plain, non-TLS primary.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Start as a replica of the (non-TLS) server on this loopback port (`--replicaof`).
    pub replica_of: Option<u16>,
    /// Listen with TLS only (`--port 0 --tls-port P`), with a CA and server certificate made by
    /// the `openssl` CLI in the server's temp dir; clients are not asked for a certificate.
    /// [`RedisServer::ca_cert_path`] is the CA to trust; the certificate is valid for
    /// `127.0.0.1` and `localhost`.
    pub tls: bool,
    /// Start with an (initially empty) `aclfile`, so `ACL SAVE` / `ACL LOAD` work;
    /// see [`RedisServer::acl_file_path`].
    pub acl_file: bool,
    /// Listen on this port instead of a free one (to bring a node back at the address of
    /// one that was stopped).
    pub port: Option<u16>,
    /// Start as a Redis Cluster node (`--cluster-enabled yes`); see
    /// [`RedisServer::start_cluster`], which also joins the nodes.
    pub cluster: bool,
}

/// A `redis-server` child process on a free loopback port with its own temp dir; persistence is
/// off (`--save "" --appendonly no`). Killed and its temp dir removed on `Drop`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    sentinel: bool,
    tls: bool,
    dir: tempfile::TempDir,
    acl_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Start a plain Redis server for `test`. `None` (after [`skip_or_panic`]) when
    /// `redis-server` is not installed or does not come up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::RedisServer;
    /// let Some(redis) = RedisServer::start("doc_example").await else { return };
    /// assert!(redis.url().starts_with("redis://127.0.0.1:"));
    /// # }
    /// ```
    pub async fn start(test: &str) -> Option<RedisServer> {
        Self::start_with(test, RedisOptions::default()).await
    }

    /// Start a Redis server for `test` with `opts` (replica, TLS, ACL file).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::{RedisOptions, RedisServer};
    /// let opts = RedisOptions { tls: true, ..Default::default() };
    /// let Some(redis) = RedisServer::start_with("doc_tls", opts).await else { return };
    /// assert!(redis.url().starts_with("rediss://"));
    /// let _ca = redis.ca_cert_path().unwrap();
    /// # }
    /// ```
    pub async fn start_with(test: &str, opts: RedisOptions) -> Option<RedisServer> {
        match Self::try_start(&opts).await {
            Ok(server) => Some(server),
            Err(reason) => {
                skip_or_panic(test, &reason);
                None
            }
        }
    }

    /// Start a primary and `replicas` replicas of it for `test`; the replicas are connected
    /// (the primary's `ROLE` lists them) when this returns. The primary comes first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::RedisServer;
    /// let Some(set) = RedisServer::start_replicated("doc_replicas", 2).await else { return };
    /// assert_eq!(set.len(), 3);
    /// # }
    /// ```
    pub async fn start_replicated(test: &str, replicas: usize) -> Option<Vec<RedisServer>> {
        let primary = Self::start(test).await?;
        let mut all = vec![primary];
        for _ in 0..replicas {
            let opts = RedisOptions {
                replica_of: Some(all[0].port),
                ..Default::default()
            };
            all.push(Self::start_with(test, opts).await?);
        }
        let want = replicas;
        let port = all[0].port;
        let ok = wait_until(Duration::from_secs(20), || {
            cli(port, &["INFO", "replication"])
                .map(|t| t.matches("state=online").count() == want)
                .unwrap_or(false)
        })
        .await;
        if !ok {
            skip_or_panic(test, "the replicas did not connect to the primary");
            return None;
        }
        Some(all)
    }

    /// Start a Redis Cluster of `primaries` primaries (at least 3) with `replicas_each`
    /// replicas per primary for `test`, joined with `redis-cli --cluster create`; returns
    /// when every node sees `cluster_state:ok` and every other node. Primaries come first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::RedisServer;
    /// let Some(nodes) = RedisServer::start_cluster("doc_cluster", 3, 0).await else { return };
    /// let seed = nodes[0].url();
    /// # let _ = seed;
    /// # }
    /// ```
    pub async fn start_cluster(
        test: &str,
        primaries: usize,
        replicas_each: usize,
    ) -> Option<Vec<RedisServer>> {
        let total = primaries * (1 + replicas_each);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            let opts = RedisOptions {
                cluster: true,
                ..Default::default()
            };
            nodes.push(Self::start_with(test, opts).await?);
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas_each.to_string(),
            "--cluster-yes".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = cli_raw(&refs) {
            skip_or_panic(test, &format!("redis-cli --cluster create failed: {e}"));
            return None;
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let ok = wait_until(Duration::from_secs(30), || {
            ports.iter().all(|p| {
                let info = cli(*p, &["CLUSTER", "INFO"]).unwrap_or_default();
                let list = cli(*p, &["CLUSTER", "NODES"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && list.lines().filter(|l| !l.trim().is_empty()).count() == total
                    && !list.contains("handshake")
            })
        })
        .await;
        if !ok {
            skip_or_panic(test, "the cluster did not reach cluster_state:ok");
            return None;
        }
        // redis-cli assigns primaries and replicas itself: list the primaries first.
        nodes.sort_by_key(|n| {
            let role = cli(n.port, &["ROLE"]).unwrap_or_default();
            !role.starts_with("master")
        });
        Some(nodes)
    }

    /// Start a Sentinel for `test` that monitors the primary on loopback port `primary_port`
    /// as `master_name` (quorum 1, down after 1 s, failover timeout 5 s). [`url`](Self::url)
    /// is `redis://` to the Sentinel port; [`sentinel_url`](Self::sentinel_url) is the seed
    /// form `sentinel://127.0.0.1:PORT/<master_name>`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// use leasehold_testkit::servers::RedisServer;
    /// let Some(primary) = RedisServer::start("doc_sentinel").await else { return };
    /// let Some(s) = RedisServer::start_sentinel("doc_sentinel", "main", primary.port()).await
    /// else { return };
    /// assert!(s.sentinel_url("main").starts_with("sentinel://"));
    /// # }
    /// ```
    pub async fn start_sentinel(
        test: &str,
        master_name: &str,
        primary_port: u16,
    ) -> Option<RedisServer> {
        match Self::try_start_sentinel(master_name, primary_port).await {
            Ok(s) => Some(s),
            Err(reason) => {
                skip_or_panic(test, &reason);
                None
            }
        }
    }

    async fn try_start_sentinel(master: &str, primary_port: u16) -> Result<RedisServer, String> {
        let binary = which("redis-server").ok_or("redis-server not found on PATH")?;
        let dir = tempfile::Builder::new()
            .prefix("leasehold-sentinel-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let conf = dir.path().join("sentinel.conf");
            // Sentinel rewrites its config file, so it must be writable and its own.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                     dir {dir}\nlogfile {dir}/redis.log\n\
                     sentinel monitor {master} 127.0.0.1 {primary_port} 1\n\
                     sentinel down-after-milliseconds {master} 1000\n\
                     sentinel failover-timeout {master} 5000\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir = dir.path().display()
                ),
            )
            .map_err(|e| format!("cannot write sentinel.conf: {e}"))?;
            let mut child = Command::new(&binary)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start redis-server --sentinel: {e}"))?;
            match wait_ready(&mut child, port, false, dir.path(), Duration::from_secs(10)).await {
                Ok(()) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        sentinel: true,
                        tls: false,
                        dir,
                        acl_file: None,
                    })
                }
                Err(e) => {
                    last_error = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(format!("redis sentinel did not come up: {last_error}"))
    }

    /// `sentinel://127.0.0.1:PORT/<master_name>`: this Sentinel as a provider seed.
    pub fn sentinel_url(&self, master_name: &str) -> String {
        format!("sentinel://127.0.0.1:{}/{master_name}", self.port)
    }

    /// Whether this is a Sentinel (started by [`start_sentinel`](Self::start_sentinel)).
    pub fn is_sentinel(&self) -> bool {
        self.sentinel
    }

    /// Runs one command on the server with `redis-cli` (as the `default` user, no TLS) and
    /// returns its raw output; for test setup such as `SENTINEL FAILOVER` or `REPLICAOF`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn t(s: &leasehold_testkit::servers::RedisServer) {
    /// let role = s.cli(&["ROLE"]).unwrap();
    /// # let _ = role;
    /// # }
    /// ```
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        cli(self.port, args)
    }

    async fn try_start(opts: &RedisOptions) -> Result<RedisServer, String> {
        let binary = which("redis-server").ok_or("redis-server not found on PATH")?;
        let dir = tempfile::Builder::new()
            .prefix("leasehold-redis-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        if opts.tls {
            make_certificates(dir.path())?;
        }
        let acl_file = if opts.acl_file {
            let path = dir.path().join("users.acl");
            std::fs::write(&path, "").map_err(|e| format!("cannot write the ACL file: {e}"))?;
            Some(path)
        } else {
            None
        };
        let mut last_error = String::new();
        // The port may be taken between probing and binding; a few tries make that harmless.
        let tries = if opts.port.is_some() { 1 } else { 5 };
        for _ in 0..tries {
            let port = match opts.port {
                Some(p) => p,
                None => free_port().map_err(|e| format!("no free port: {e}"))?,
            };
            let mut cmd = Command::new(&binary);
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                // Replicas sync at once instead of after the default 5 s.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"));
            if opts.tls {
                let d = dir.path();
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(d.join("server.crt"))
                    .arg("--tls-key-file")
                    .arg(d.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(d.join("ca.crt"))
                    .args(["--tls-auth-clients", "no"]);
            } else {
                cmd.args(["--port", &port.to_string()]);
            }
            if let Some(primary) = opts.replica_of {
                cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
            if let Some(acl) = &acl_file {
                cmd.arg("--aclfile").arg(acl);
            }
            if opts.cluster {
                cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .arg("--cluster-config-file")
                    .arg(dir.path().join("nodes.conf"));
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start redis-server: {e}"))?;
            match wait_ready(
                &mut child,
                port,
                opts.tls,
                dir.path(),
                Duration::from_secs(10),
            )
            .await
            {
                Ok(()) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        sentinel: false,
                        tls: opts.tls,
                        dir,
                        acl_file,
                    })
                }
                Err(e) => {
                    last_error = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(format!("redis-server did not come up: {last_error}"))
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` with TLS. The `default` user has
    /// no password.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on (the TLS port with TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server certificate; `None` without TLS.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// The `aclfile` the server was started with; `None` unless `RedisOptions::acl_file`.
    pub fn acl_file_path(&self) -> Option<PathBuf> {
        self.acl_file.clone()
    }

    /// The server's private working directory (log file `redis.log` is there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running (false after [`RedisServer::stop`]).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kill the server now (simulates a node that is down). The port stays reserved by no one.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `redis-cli` with `args` (no TLS, `default` user); its stdout, or why it failed.
fn cli_raw(args: &[&str]) -> Result<String, String> {
    let binary = which("redis-cli").ok_or("redis-cli not found on PATH")?;
    let out = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && !stdout.starts_with("ERR") && !stdout.starts_with("(error)") {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let p = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &p];
    all.extend_from_slice(args);
    cli_raw(&all)
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with the `openssl` CLI.
fn make_certificates(dir: &Path) -> Result<(), String> {
    let openssl = which("openssl").ok_or("openssl not found on PATH (needed for TLS)")?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| format!("cannot write server.ext: {e}"))?;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    // P-256 keys: quick to generate, and accepted by rustls and native-tls clients alike.
    run(&[
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=leasehold test CA",
    ])?;
    run(&[
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    Ok(())
}

async fn wait_ready(
    child: &mut Child,
    port: u16,
    tls: bool,
    dir: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(format!("exited with {status}: {}", tail.join(" | ")));
        }
        if answers(port, tls).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no answer on port {port} after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answers(port: u16, tls: bool) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if tls {
        // A TLS listener that accepts is ready; a handshake here would need a TLS client.
        return true;
    }
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}
