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
}

/// A `redis-server` child process on a free loopback port with its own temp dir; persistence is
/// off (`--save "" --appendonly no`). Killed and its temp dir removed on `Drop`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
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
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let mut cmd = Command::new(&binary);
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--protected-mode", "no"])
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
