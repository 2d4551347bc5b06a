//! The deadpool pool over a `CredentialWatch` of the Redis provider: workers keep running
//! commands through many rotations without a failure, new connections use the current user,
//! connections of replaced users are retired, and none of a revoked user stays open.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use leasehold_core::secrecy::ExposeSecret;
use leasehold_core::{Credentials, ErrorKind, IssueRequest, WatchEvent, WatchOptions};
use leasehold_redis::pool::{self, PoolError};
use leasehold_redis::{RedisAclProvider, RedisConfig};
use leasehold_testkit::servers::RedisServer;
use leasehold_testkit::{assert_no_secret, capture_tracing, RecordingProvider};
use redis::aio::MultiplexedConnection;
use tokio::sync::broadcast::error::RecvError;

/// `(user, id)` of every client connection on the server, from `CLIENT LIST` as the admin.
async fn client_list(admin: &mut MultiplexedConnection) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            (field("user="), field("id="))
        })
        .collect()
}

fn username(creds: &Credentials) -> String {
    creds.principal().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_workers_run_through_rotations_without_a_failed_command() {
    let Some(server) = RedisServer::start("pooled_workers_run_through_rotations").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(server.url())).unwrap());
    // default TTL 2 s, max TTL 3 s, grace 500 ms: a renewal, then a rotation every ~2.4 s.
    let m = manager(
        "pooled",
        provider,
        Duration::from_secs(2),
        Duration::from_secs(3),
    )
    .await;
    let watch = m
        .watch(
            "pooled",
            IssueRequest::new(),
            WatchOptions::default().grace(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let mut events = watch.events();
    let pool = pool::builder(&watch, &server.url())
        .max_size(8)
        .wait_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Every lease the watch made current, with its user.
    let users: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    {
        let first = watch.current();
        users
            .lock()
            .unwrap()
            .insert(first.lease_id.to_string(), username(&first.credentials));
        let mut rx = watch.subscribe();
        let users = users.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let lease = rx.borrow_and_update().clone();
                users
                    .lock()
                    .unwrap()
                    .insert(lease.lease_id.to_string(), username(&lease.credentials));
            }
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let used: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4u32 {
        let (pool, stop, ok, failures, used) = (
            pool.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
            used.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut i, mut last_n, mut done) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let result: Result<u64, String> = async {
                    let mut conn = pool.get().await.map_err(|e| format!("get: {e}"))?;
                    used.lock()
                        .unwrap()
                        .insert(conn.lease_id().to_string(), conn.username().to_string());
                    let key = format!("pool:w{w}:k");
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(i)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("SET: {e}"))?;
                    let got: u64 = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("GET: {e}"))?;
                    if got != i {
                        return Err(format!("GET {key}: {got}, expected {i}"));
                    }
                    let n: u64 = redis::cmd("INCR")
                        .arg(format!("pool:w{w}:n"))
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("INCR: {e}"))?;
                    Ok(n)
                }
                .await;
                match result {
                    // One more than the last: no increment lost or counted twice.
                    Ok(n) if n == last_n + 1 => {
                        last_n = n;
                        done += 1;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(n) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("INCR: {n} after {last_n}"));
                        last_n = n;
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            done
        }));
    }

    let (mut rotations, mut revoked) = (0u32, Vec::new());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    while (rotations < 5 || revoked.len() < 5) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Err(_) => {}
            Ok(Ok(WatchEvent::Rotated { .. })) => rotations += 1,
            Ok(Ok(WatchEvent::RetiredRevoked { lease_id })) => revoked.push(lease_id.to_string()),
            Ok(Ok(WatchEvent::RefreshFailed { message, .. })) => {
                panic!("refresh failed against a healthy server: {message}")
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(n))) => panic!("missed {n} watch events"),
            Ok(Err(RecvError::Closed)) => panic!("the watch ended"),
        }
    }
    // Let the workers run a little past the last revocation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut per_worker = Vec::new();
    for w in workers {
        per_worker.push(w.await.unwrap());
    }

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(rotations >= 5, "rotations observed: {rotations}");
    assert!(
        revoked.len() >= 5,
        "revocations observed: {}",
        revoked.len()
    );
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "{ok} iterations, {rotations} rotations, {} revocations",
        revoked.len()
    );
    assert!(ok > 200, "successful iterations: {ok}");
    // The pool followed the rotations: new connections authenticated as each new user.
    let used = used.lock().unwrap().clone();
    assert!(used.len() >= 6, "leases the pool connected as: {used:?}");
    assert!(
        used.values().all(|u| u.starts_with("lh-")),
        "the pool connected as a user leasehold did not issue: {used:?}"
    );

    // No connection of a revoked user is open; the pool's current ones are.
    let mut users = users.lock().unwrap().clone();
    users.extend(used);
    let revoked_users: HashSet<&str> = revoked
        .iter()
        .map(|id| {
            users
                .get(id)
                .unwrap_or_else(|| panic!("revoked lease {id} was never current"))
                .as_str()
        })
        .collect();
    let mut admin = admin(&server).await;
    for (w, done) in per_worker.iter().enumerate() {
        let n: u64 = redis::cmd("GET")
            .arg(format!("pool:w{w}:n"))
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(
            n, *done,
            "worker {w}: the counter and the successful INCRs differ"
        );
    }
    let clients = client_list(&mut admin).await;
    let stale: Vec<_> = clients
        .iter()
        .filter(|(user, _)| revoked_users.contains(user.as_str()))
        .collect();
    assert!(stale.is_empty(), "connections of revoked users: {stale:?}");
    let current_user = username(&watch.current().credentials);
    assert!(
        clients.iter().any(|(user, _)| *user == current_user),
        "no pooled connection of the current user {current_user}: {clients:?}"
    );

    drop(pool);
    watch.close().await.unwrap();
    assert!(leasehold_users(&server).await.is_empty());
}

#[tokio::test]
async fn a_rotation_retires_idle_connections_and_a_closed_watch_is_refused_clearly() {
    let logs = capture_tracing();
    let Some(server) = RedisServer::start("a_rotation_retires_idle_connections").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(server.url())).unwrap());
    // max TTL 4 s, grace 2 s: a rotation about 1.8 s in; the old user lives 2 s after it.
    let m = manager(
        "retire",
        provider,
        Duration::from_secs(4),
        Duration::from_secs(4),
    )
    .await;
    let watch = m
        .watch(
            "retire",
            IssueRequest::new(),
            WatchOptions::default().grace(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let mut events = watch.events();
    let pool = pool::builder(&watch, &server.url())
        .max_size(1)
        .build()
        .unwrap();
    let first = watch.current();
    let old_user = username(&first.credentials);

    let mut conn = pool.get().await.unwrap();
    assert_eq!(conn.lease_id(), &first.lease_id);
    assert_eq!(conn.username(), old_user);
    let debug = format!("{conn:?} {pool:?} {:?}", pool.manager());
    assert_no_secret(
        "Debug of the pool and its connection",
        &debug,
        &first.credentials,
    );
    let old_id: u64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut admin = admin(&server).await;
    let clients = client_list(&mut admin).await;
    assert!(
        clients.contains(&(old_user.clone(), old_id.to_string())),
        "the pooled connection is not authenticated as {old_user}: {clients:?}"
    );
    drop(conn);

    let new = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a rotation within 10 s")
            .unwrap()
        {
            WatchEvent::Rotated { old, new } => {
                assert_eq!(old, first.lease_id);
                break new;
            }
            WatchEvent::RefreshFailed { message, .. } => panic!("refresh failed: {message}"),
            _ => {}
        }
    };
    // The pool hands out only the new user, and closes the idle connection of the old one
    // while that user still exists (its grace), not because the user was deleted.
    let conn = pool.get().await.unwrap();
    assert_eq!(conn.lease_id(), &new);
    assert_ne!(conn.username(), old_user);
    let closed = eventually(20, || {
        let admin = admin.clone();
        let old_id = old_id.to_string();
        async move {
            let mut admin = admin;
            !client_list(&mut admin)
                .await
                .iter()
                .any(|(_, id)| *id == old_id)
        }
    })
    .await;
    assert!(
        closed,
        "the replaced user's pooled connection is still open"
    );
    assert!(
        acl_users(&server).await.contains(&old_user),
        "the old user was revoked before its grace was over"
    );
    assert!(auths(&server, &first.credentials).await);
    drop(conn);

    // After close, everything is revoked: a new connection fails with the leased user named
    // and no password or admin hint in the message.
    let current = watch.current();
    watch.close().await.unwrap();
    let pool2 = pool::PoolBuilder::from_receiver(
        {
            let (_tx, rx) = tokio::sync::watch::channel(current.clone());
            rx
        },
        &server.url(),
    )
    .build()
    .unwrap();
    let err = match pool2.get().await {
        Err(PoolError::Backend(e)) => e,
        Err(other) => panic!("expected an AUTH failure, got {other}"),
        Ok(_) => panic!("a revoked user connected"),
    };
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains(&username(&current.credentials)), "{text}");
    assert!(!text.contains("admin"), "{text}");
    assert!(!text.contains(current.credentials.secret().expose_secret()));
    assert_no_secret(
        "the AUTH error",
        &format!("{err} {err:?}"),
        &current.credentials,
    );

    let logged = logs.contents();
    assert!(
        logged.contains("opened a pooled Redis connection") && logged.contains(&old_user),
        "the capture saw nothing of the pool"
    );
    for creds in [&first.credentials, &current.credentials] {
        assert_no_secret("tracing output", &logged, creds);
    }
}

#[tokio::test]
async fn connections_older_than_max_age_are_replaced() {
    let Some(server) = RedisServer::start("connections_older_than_max_age").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(server.url())).unwrap());
    let m = manager(
        "aged",
        provider,
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
    .await;
    let watch = m
        .watch("aged", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap();
    let pool = pool::builder(&watch, &format!("{}/2", server.url()))
        .max_size(1)
        .max_age(Duration::from_millis(400))
        .build()
        .unwrap();
    let client_id = |pool: pool::Pool| async move {
        let mut conn = pool.get().await.unwrap();
        // The node URL's database is kept.
        let _: () = redis::cmd("SET")
            .arg("aged:k")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(redis::aio::ConnectionLike::get_db(&conn), 2);
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<u64>(&mut conn)
            .await
            .unwrap()
    };
    let a = client_id(pool.clone()).await;
    let b = client_id(pool.clone()).await;
    assert_eq!(a, b, "a young connection is reused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client_id(pool.clone()).await;
    assert_ne!(a, c, "a connection past max_age was handed out again");
    let mut admin = admin(&server).await;
    let _: () = redis::cmd("SELECT")
        .arg(2)
        .query_async(&mut admin)
        .await
        .unwrap();
    let v: Option<u32> = redis::cmd("GET")
        .arg("aged:k")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    drop(pool);
    watch.close().await.unwrap();
}

/// Bad settings are refused before any network call, without a password in the message.
#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    let m = manager(
        "recorded",
        Arc::new(RecordingProvider::new()),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
    .await;
    let watch = m
        .watch("recorded", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap();
    let password = watch
        .current()
        .credentials
        .secret()
        .expose_secret()
        .to_string();
    let refused = |b: pool::PoolBuilder| {
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        assert!(!e.to_string().contains(&password));
        e.message().to_string()
    };
    // Port 1 would refuse a connection; nothing connects at build.
    let node = "redis://127.0.0.1:1";
    assert!(refused(pool::builder(&watch, node).max_size(0)).contains("max_size"));
    assert!(refused(pool::builder(&watch, node).max_age(Duration::ZERO)).contains("max_age"));
    assert!(
        refused(pool::builder(&watch, node).connect_timeout(Duration::ZERO))
            .contains("connect_timeout")
    );
    let m = refused(pool::builder(&watch, "redis://u:hunter2@127.0.0.1:1"));
    assert!(
        m.contains("carries credentials") && !m.contains("hunter2"),
        "{m}"
    );
    assert!(refused(pool::builder(&watch, "redis+unix:///tmp/r.sock")).contains("TCP"));
    assert!(refused(pool::builder(&watch, "rediss://127.0.0.1:1/#insecure")).contains("verified"));
    #[cfg(not(feature = "tls"))]
    assert!(refused(pool::builder(&watch, "rediss://127.0.0.1:1")).contains("\"tls\""));
    #[cfg(feature = "tls")]
    assert!(
        refused(pool::builder(&watch, node).ca_cert("/nonexistent/ca.pem")).contains("rediss://")
    );

    let pool = pool::builder(&watch, node).max_size(2).build().unwrap();
    let debug = format!("{pool:?} {:?}", pool.manager());
    assert!(!debug.contains(&password), "{debug}");
    assert_eq!(pool.manager().node(), "127.0.0.1:1");
    assert_eq!(pool.status().max_size, 2);
    watch.close().await.unwrap();
}

/// The pool over TLS, with the CA of the node.
#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_node_is_reached_with_its_ca() {
    use leasehold_testkit::servers::RedisOptions;
    let Some(server) = RedisServer::start_with(
        "pool_a_tls_node",
        RedisOptions {
            tls: true,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let ca = server.ca_cert_path().unwrap();
    let provider =
        Arc::new(RedisAclProvider::new(RedisConfig::new(server.url()).ca_cert(&ca)).unwrap());
    let m = manager(
        "tls",
        provider,
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
    .await;
    let watch = m
        .watch("tls", IssueRequest::new(), WatchOptions::default())
        .await
        .unwrap();
    let pool = pool::builder(&watch, &server.url())
        .ca_cert(&ca)
        .build()
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);
    drop(pool);
    watch.close().await.unwrap();
}
