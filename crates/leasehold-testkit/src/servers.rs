//! Real servers for integration tests: private Redis servers, throwaway PostgreSQL databases
//! and the AWS emulator (moto plus the leasehold extension, see `tests/aws-emulator/README.md`).
//!
//! Every helper takes the test's name. When a server cannot be had (the binary is missing, the
//! database does not answer), it calls [`skip_or_panic`] and returns `None`, so a test writes:
//!
//! ```no_run
//! # async fn t() {
//! use leasehold_testkit::servers::RedisServer;
//! let Some(redis) = RedisServer::start("my_test").await else { return };
//! let url = redis.url(); // redis://127.0.0.1:PORT, default user, no password
//! # let _ = url;
//! # }
//! ```
//!
//! With `LEASEHOLD_REQUIRE_SERVERS=1` (set by `scripts/test`) a missing server fails the test
//! instead. Servers listen on free loopback ports and are stopped and cleaned up on `Drop`.

mod aws;
mod http;
mod postgres_db;
mod redis_server;

pub use aws::{
    AwsEmulator, FaultSpec, MirrorEndpoint, MirrorKind, TransitionKind, EMULATOR_REGION,
};
pub use postgres_db::PostgresDb;
pub use redis_server::{RedisOptions, RedisServer};

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a missing server must fail the test instead of skipping it
/// (`LEASEHOLD_REQUIRE_SERVERS=1`, set by `scripts/test`).
///
/// # Examples
///
/// ```
/// let _strict = leasehold_testkit::servers::servers_required();
/// ```
pub fn servers_required() -> bool {
    matches!(
        std::env::var("LEASEHOLD_REQUIRE_SERVERS").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Report that `test` cannot run because of `reason`: prints `skipping {test}: {reason}` to
/// stderr, or panics when [`servers_required`] is true.
///
/// # Examples
///
/// ```no_run
/// leasehold_testkit::servers::skip_or_panic("my_test", "redis-server not found");
/// ```
pub fn skip_or_panic(test: &str, reason: &str) {
    if servers_required() {
        panic!("{test}: required server unavailable (LEASEHOLD_REQUIRE_SERVERS=1): {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

/// A name that is unique for this process run: `prefix` (lower-cased, only `[a-z0-9-]`), the
/// process id and a counter. Use it for users, groups, databases created by a test.
///
/// # Examples
///
/// ```
/// let a = leasehold_testkit::servers::unique_name("My_Test");
/// let b = leasehold_testkit::servers::unique_name("My_Test");
/// assert_ne!(a, b);
/// assert!(a.starts_with("my-test-"));
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let clean: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .take(24)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // A random tail keeps names apart across runs that reuse a pid (a shared PostgreSQL).
    let tail: u32 = rand::random::<u32>() & 0xffff;
    format!("{clean}-{}-{n}-{tail:04x}", std::process::id())
}

/// A loopback port that was free a moment ago. Callers retry on the rare collision.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `program` can be found on `PATH` (or is an existing path).
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redis::AsyncCommands;

    async fn connection(url: &str) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn redis_server_answers_and_stops() {
        let Some(mut server) = RedisServer::start("redis_server_answers_and_stops").await else {
            return;
        };
        let mut conn = connection(&server.url()).await;
        let _: () = conn.set("k", "v").await.unwrap();
        let v: String = conn.get("k").await.unwrap();
        assert_eq!(v, "v");
        assert!(server.is_running());
        server.stop();
        assert!(!server.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    }

    #[tokio::test]
    async fn redis_replica_follows_its_primary() {
        let test = "redis_replica_follows_its_primary";
        let Some(primary) = RedisServer::start(test).await else {
            return;
        };
        let opts = RedisOptions {
            replica_of: Some(primary.port()),
            ..Default::default()
        };
        let Some(replica) = RedisServer::start_with(test, opts).await else {
            return;
        };
        let mut p = connection(&primary.url()).await;
        let _: () = p.set("replicated", "yes").await.unwrap();
        let mut r = connection(&replica.url()).await;
        let mut seen = None;
        for _ in 0..200 {
            seen = r.get::<_, Option<String>>("replicated").await.unwrap();
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(seen.as_deref(), Some("yes"));
        let role: Vec<::redis::Value> = ::redis::cmd("ROLE").query_async(&mut r).await.unwrap();
        assert_eq!(role[0], ::redis::Value::BulkString(b"slave".to_vec()));
    }

    #[tokio::test]
    async fn redis_acl_file_is_writable() {
        let opts = RedisOptions {
            acl_file: true,
            ..Default::default()
        };
        let Some(server) = RedisServer::start_with("redis_acl_file_is_writable", opts).await else {
            return;
        };
        let mut conn = connection(&server.url()).await;
        let _: () = ::redis::cmd("ACL")
            .arg(&["SETUSER", "alice", "on", ">pw", "~*", "+get"])
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = ::redis::cmd("ACL")
            .arg("SAVE")
            .query_async(&mut conn)
            .await
            .unwrap();
        let saved = std::fs::read_to_string(server.acl_file_path().unwrap()).unwrap();
        assert!(saved.contains("user alice"), "{saved}");
    }

    #[tokio::test]
    async fn redis_tls_accepts_a_client_that_trusts_the_ca() {
        let opts = RedisOptions {
            tls: true,
            ..Default::default()
        };
        let Some(server) =
            RedisServer::start_with("redis_tls_accepts_a_client_that_trusts_the_ca", opts).await
        else {
            return;
        };
        assert!(server.url().starts_with("rediss://127.0.0.1:"));
        let ca = std::fs::read(server.ca_cert_path().unwrap()).unwrap();
        let client = ::redis::Client::build_with_tls(
            server.url(),
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )
        .unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = ::redis::cmd("PING").query_async(&mut conn).await.unwrap();
        assert_eq!(pong, "PONG");
        // Plain TCP on the TLS port gets no Redis reply.
        let plain = format!("redis://127.0.0.1:{}", server.port());
        let attempt = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let mut c = ::redis::Client::open(plain)
                .unwrap()
                .get_multiplexed_async_connection()
                .await?;
            ::redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await;
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "plain text reached a TLS-only server"
        );
    }

    #[tokio::test]
    async fn postgres_db_is_created_and_dropped() {
        use sqlx::{Connection, Row};
        let Some(db) = PostgresDb::create("postgres_db_is_created_and_dropped").await else {
            return;
        };
        let name = db.name().to_string();
        let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        let row = sqlx::query("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), name);
        conn.close().await.unwrap();
        let admin = db.admin_url.clone();
        drop(db);
        let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
        let left: i64 = sqlx::query("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }

    #[test]
    fn unique_names_differ_and_are_clean() {
        let a = unique_name("Some Test::name");
        let b = unique_name("Some Test::name");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
