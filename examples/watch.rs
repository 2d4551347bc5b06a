//! A Redis connection pool that keeps working while its credential rotates underneath it.
//!
//! ```text
//! cargo run --example watch            # WATCH_SECONDS=15 by default
//! ```
//!
//! `manager.watch(...)` issues a Redis ACL user and keeps it fresh: it renews the lease before
//! it expires and, when renewal reaches the max TTL, issues a new user, publishes it, and
//! revokes the old one after a grace period. The pool below subscribes to the watch and
//! rebuilds its redis-rs `ConnectionManager` with each new credential; four workers keep
//! running `INCR` through the pool the whole time. TTLs are short (2 s, max 5 s) so rotations
//! happen every few seconds.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`) or starts a private `redis-server`.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::redis::{RedisAclProvider, RedisConfig};
use leasehold::secrecy::ExposeSecret;
use leasehold::{
    Credentials, DynamicSecret, IssueRequest, IssuedLease, LeaseManager, MemoryStore, WatchEvent,
    WatchOptions,
};
use redis::aio::ConnectionManager;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::sync::RwLock;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
const WORKERS: usize = 4;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("\nwatch example failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The pool: a `ConnectionManager` (multiplexed, reconnecting) for the current credential.
struct Pool {
    redis: Arc<LocalRedis>,
    current: RwLock<(String, ConnectionManager)>,
}

impl Pool {
    async fn new(redis: Arc<LocalRedis>, lease: &IssuedLease) -> Result<Pool, String> {
        let conn = connect(&redis, lease).await?;
        Ok(Pool {
            redis,
            current: RwLock::new((lease.credentials.principal().to_string(), conn)),
        })
    }

    /// A handle for one command; cheap (the manager is multiplexed).
    async fn get(&self) -> ConnectionManager {
        self.current.read().await.1.clone()
    }

    /// Swaps in connections for a new credential.
    async fn rebuild(&self, lease: &IssuedLease) -> Result<(), String> {
        let conn = connect(&self.redis, lease).await?;
        *self.current.write().await = (lease.credentials.principal().to_string(), conn);
        Ok(())
    }
}

async fn connect(redis: &LocalRedis, lease: &IssuedLease) -> Result<ConnectionManager, String> {
    let Credentials::UsernamePassword { username, password } = &lease.credentials else {
        return Err("expected a username and password".into());
    };
    let settings = RedisConnectionInfo::default()
        .set_username(username)
        .set_password(password.expose_secret());
    let info = redis
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    ConnectionManager::new(client)
        .await
        .map_err(|e| format!("connecting as {username}: {e}"))
}

async fn run() -> Result<(), String> {
    let seconds: u64 = std::env::var("WATCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    println!("leasehold watch: a connection pool that follows a rotating credential\n");
    let redis = Arc::new(LocalRedis::find_or_start().await?);

    let mut config = RedisConfig::new(&redis.url).acl_rules("~watch:* +@all -@dangerous");
    if let Some(password) = &redis.admin_password {
        let user = redis
            .admin_user
            .as_deref()
            .unwrap_or(leasehold::redis::DEFAULT_ADMIN_USERNAME);
        config = config.admin(user, password.clone().into());
    }
    let provider = RedisAclProvider::new(config).map_err(|e| e.to_string())?;
    let secret = DynamicSecret::builder("watched-cache", Arc::new(provider))
        .default_ttl(Duration::from_secs(2))
        .max_ttl(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let manager = LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .map_err(|e| format!("the secret did not validate against {}: {e}", redis.url))?;

    let watch = manager
        .watch(
            "watched-cache",
            IssueRequest::new().identity("watch-example"),
            WatchOptions::default().grace(Duration::from_secs(1)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let first = watch.current();
    println!(
        "{:>5.1}s issued   {} (lease {}, expires {})",
        0.0,
        first.credentials.principal(),
        first.lease_id,
        first.expires_at.format("%H:%M:%S%.3f")
    );
    let pool = Arc::new(Pool::new(redis.clone(), &first).await?);

    // Rebuild the pool whenever the watch publishes a new credential.
    let mut changes = watch.subscribe();
    let rebuilder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let lease = changes.borrow_and_update().clone();
                match pool.rebuild(&lease).await {
                    Ok(()) => println!(
                        "{:>5.1}s pool     now connects as {}",
                        start.elapsed().as_secs_f64(),
                        lease.credentials.principal()
                    ),
                    Err(e) => eprintln!("pool rebuild failed: {e}"),
                }
            }
        })
    };

    // Report what the watch does.
    let mut events = watch.events();
    let rotations = Arc::new(AtomicU64::new(0));
    let reporter = {
        let rotations = rotations.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                let t = start.elapsed().as_secs_f64();
                match event {
                    WatchEvent::Renewed { expires_at, .. } => println!(
                        "{t:>5.1}s renewed  until {}",
                        expires_at.format("%H:%M:%S%.3f")
                    ),
                    WatchEvent::Rotated { old, new } => {
                        rotations.fetch_add(1, Ordering::Relaxed);
                        println!("{t:>5.1}s rotated  {old} -> {new}");
                    }
                    WatchEvent::RetiredRevoked { lease_id } => {
                        println!("{t:>5.1}s retired  {lease_id} revoked after its grace")
                    }
                    WatchEvent::RefreshFailed { message, .. } => {
                        println!("{t:>5.1}s failed   {message} (retrying)")
                    }
                    WatchEvent::ExpiringWithoutReplacement { lease_id, .. } => {
                        println!(
                            "{t:>5.1}s WARNING  {lease_id} expires before a replacement exists"
                        )
                    }
                    other => println!("{t:>5.1}s {other:?}"),
                }
            }
        })
    };

    // The application: workers running INCR through the pool.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (pool, ok, failed) = (pool.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut conn = pool.get().await;
                match redis::cmd("INCR")
                    .arg("watch:counter")
                    .query_async::<i64>(&mut conn)
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("command failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }

    let last_user = pool.current.read().await.0.clone();
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg("watch:counter")
        .query_async(&mut pool.get().await)
        .await;
    watch.close().await.map_err(|e| e.to_string())?;
    rebuilder.abort();
    reporter.abort();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let rotations = rotations.load(Ordering::Relaxed);
    println!(
        "\n{seconds} s, {WORKERS} workers: {ok} commands ok, {failed} failed, {rotations} rotations; \
         watch closed (last user {last_user} revoked)"
    );
    manager.shutdown().await;
    if failed > 0 {
        return Err(format!("{failed} commands failed"));
    }
    if rotations == 0 && seconds >= 6 {
        return Err("no rotation happened".into());
    }
    Ok(())
}

/// The Redis the example talks to: `REDIS_URL`, or a private `redis-server`.
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
    "The example needs a Redis (or Valkey) server. Either:
  - install one, and the example starts a private one by itself:
      Debian/Ubuntu: sudo apt-get install redis-server
      macOS:         brew install redis
  - or start one and point REDIS_URL at it:
      docker run --rm -p 6379:6379 redis:7
      REDIS_URL=redis://127.0.0.1:6379 cargo run --example watch"
}
