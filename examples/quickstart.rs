//! Quickstart: a dynamic Redis user under a lease — issue, use, renew, revoke.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Uses the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`; credentials in the URL are
//! used as the admin user). If none answers and `redis-server` is on the `PATH`, a private one
//! is started on a free port and stopped at the end.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use leasehold::redis::{RedisAclProvider, RedisConfig};
use leasehold::secrecy::ExposeSecret;
use leasehold::{Credentials, DynamicSecret, IssueRequest, LeaseManager, MemoryStore};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nquickstart failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    println!("leasehold quickstart: a Redis ACL user that lives under a lease\n");
    let redis = LocalRedis::find_or_start().await?;

    // 1. A provider for that Redis, a secret, and a manager on an in-memory lease store.
    let mut config = RedisConfig::new(&redis.url).acl_rules("~quickstart:* +@all -@dangerous");
    if let Some(password) = &redis.admin_password {
        let user = redis
            .admin_user
            .as_deref()
            .unwrap_or(leasehold::redis::DEFAULT_ADMIN_USERNAME);
        config = config.admin(user, password.clone().into());
    }
    let provider = RedisAclProvider::new(config).map_err(|e| e.to_string())?;
    let secret = DynamicSecret::builder("quickstart-cache", Arc::new(provider))
        .default_ttl(Duration::from_secs(5 * 60))
        .max_ttl(Duration::from_secs(60 * 60))
        .build()
        .map_err(|e| e.to_string())?;
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .map_err(|e| format!("the secret did not validate against {}: {e}", redis.url))?;
    step(
        1,
        "manager ready",
        &format!("secret \"quickstart-cache\" on {} (validated)", redis.url),
    );

    // 2. Issue.
    let lease = manager
        .issue(
            "quickstart-cache",
            IssueRequest::new().identity("quickstart"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let Credentials::UsernamePassword { username, password } = &lease.credentials else {
        return Err("expected a username and password".into());
    };
    step(2, "issued", &format!("lease {}", lease.lease_id));
    detail("username", username);
    detail(
        "password",
        &format!("{} characters (not shown)", password.expose_secret().len()),
    );
    detail("expires", &lease.expires_at.to_rfc3339());
    detail("max expiry", &lease.max_expires_at.to_rfc3339());
    detail("confirmed live", &lease.live().to_string());

    // 3. Use it: AUTH as the new user, then SET and GET.
    let mut conn = connect_as(&redis, username, password.expose_secret())
        .await
        .map_err(|e| format!("AUTH with the issued credential failed: {e}"))?;
    let _: () = redis::cmd("SET")
        .arg("quickstart:greeting")
        .arg("hello from a dynamic user")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("SET failed: {e}"))?;
    let value: String = redis::cmd("GET")
        .arg("quickstart:greeting")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    step(
        3,
        "AUTH ok",
        &format!("as {username}: SET/GET quickstart:greeting -> {value:?}"),
    );
    let _: i64 = redis::cmd("DEL")
        .arg("quickstart:greeting")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("DEL failed: {e}"))?;

    // 4. Renew: extends the lease (Redis users have no expiry of their own).
    let renewed = manager
        .renew(&lease.lease_id, Some(Duration::from_secs(30 * 60)))
        .await
        .map_err(|e| e.to_string())?;
    step(
        4,
        "renewed",
        &format!(
            "now expires {} (was {})",
            renewed.expires_at.to_rfc3339(),
            lease.expires_at.to_rfc3339()
        ),
    );

    // 5. Revoke: the user is deleted and its open connections are closed.
    manager
        .revoke(&lease.lease_id)
        .await
        .map_err(|e| e.to_string())?;
    step(5, "revoked", &format!("lease {}", lease.lease_id));

    // 6. The credential is dead: AUTH is refused and the open connection is gone.
    let refused = match connect_as(&redis, username, password.expose_secret()).await {
        Ok(_) => return Err("AUTH still works after revoke".into()),
        Err(e) => e,
    };
    step(6, "AUTH refused", &format!("as {username}: {refused}"));
    let old_conn = redis::cmd("PING").query_async::<String>(&mut conn).await;
    match old_conn {
        Ok(_) => return Err("the connection opened before revoke still works".into()),
        Err(e) => detail("open connection", &format!("closed by the server ({e})")),
    }
    // The exit path of every service: shutdown revokes whatever watches of this manager still
    // hold (bounded in time) and stops the expiry worker. A long-running service ends `main`
    // with `manager.shutdown_on_signal().await` instead (SIGINT/SIGTERM, then the same).
    manager.shutdown().await;
    println!("\ndone: the credential existed only while its lease did.");
    Ok(())
}

fn step(n: u32, what: &str, text: &str) {
    println!("[{n}] {what:<14} {text}");
}

fn detail(what: &str, text: &str) {
    println!("    {what:<14} {text}");
}

/// Connects as `username` (AUTH happens while connecting).
async fn connect_as(
    redis: &LocalRedis,
    username: &str,
    password: &str,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let settings = RedisConnectionInfo::default()
        .set_skip_set_lib_name()
        .set_username(username)
        .set_password(password);
    let info = redis
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

/// The Redis the quickstart talks to: `REDIS_URL`, or a private `redis-server`.
struct LocalRedis {
    /// Without credentials.
    url: String,
    admin_user: Option<String>,
    admin_password: Option<String>,
    child: Option<Child>,
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            println!("(stopped the private redis-server)");
        }
    }
}

impl LocalRedis {
    async fn find_or_start() -> Result<LocalRedis, String> {
        let configured = std::env::var("REDIS_URL").ok().filter(|s| !s.is_empty());
        let url = configured
            .clone()
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("REDIS_URL is not a Redis URL: {e}"))?;
        let (scheme, host, port) = match info.addr() {
            ConnectionAddr::Tcp(h, p) => ("redis", h.clone(), *p),
            ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.clone(), *port),
            _ => return Err("REDIS_URL must be a redis:// or rediss:// URL".into()),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let found = LocalRedis {
            url: format!("{scheme}://{host}:{port}"),
            admin_user: info.redis_settings().username().map(str::to_string),
            admin_password: info.redis_settings().password().map(str::to_string),
            child: None,
        };
        let answer = ping(&url).await;
        if answer.is_ok() {
            let from = if configured.is_some() {
                "REDIS_URL"
            } else {
                "the default; set REDIS_URL for another"
            };
            println!("using the Redis at {} ({from})", found.url);
            return Ok(found);
        }
        let why = answer.unwrap_err();
        println!("no Redis answered at {} ({why})", found.url);
        if configured.is_some() && !why.contains("refused") && !why.contains("timed out") {
            return Err(format!(
                "the Redis at REDIS_URL answered but could not be used: {why}"
            ));
        }
        Self::start_private()
            .await
            .map_err(|e| format!("{e}\n\n{}", how_to_get_redis()))
    }

    async fn start_private() -> Result<LocalRedis, String> {
        let binary =
            find_on_path("redis-server").ok_or("redis-server is not installed (not on PATH)")?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let redis = LocalRedis {
            url: format!("redis://127.0.0.1:{port}"),
            admin_user: None,
            admin_password: None,
            child: Some(child),
        };
        for _ in 0..100 {
            if ping(&redis.url).await.is_ok() {
                println!("started a private redis-server at {}", redis.url);
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the private redis-server on port {port} did not answer"
        ))
    }
}

async fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let attempt = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn how_to_get_redis() -> &'static str {
    "The quickstart needs a Redis (or Valkey) server. Either:
  - install one, and the quickstart starts a private one by itself:
      Debian/Ubuntu: sudo apt-get install redis-server
      macOS:         brew install redis
  - or start one and point REDIS_URL at it:
      docker run --rm -p 6379:6379 redis:7
      REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart"
}
