//! `CredentialWatch` over the Redis provider: a client that always uses `current()` keeps
//! working across renewals and rotations with short TTLs; replaced users stop working after
//! their grace; `close()` leaves no user behind.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use leasehold_core::{Credentials, IssueRequest, LeaseFilter, WatchEvent, WatchOptions};
use leasehold_redis::{RedisAclProvider, RedisConfig};
use leasehold_testkit::servers::RedisServer;
use tokio::sync::broadcast::error::TryRecvError;

#[tokio::test]
async fn a_watched_credential_keeps_working_across_rotations() {
    let Some(server) = RedisServer::start("a_watched_credential_keeps_working").await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(server.url())).unwrap());
    // default TTL 2 s, max TTL 5 s: renewals every ~1.3 s, a rotation every ~4.7 s.
    let m = manager(
        "watched",
        provider,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
    let watch = m
        .watch(
            "watched",
            IssueRequest::new(),
            WatchOptions::default().grace(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let mut events = watch.events();

    let mut seen: HashMap<String, Credentials> = HashMap::new();
    let (mut renewals, mut rotations, mut retired_checked, mut commands) = (0, 0, 0, 0u32);
    // The client runs for 15 s, and longer only if the rotations it must see are late.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(25);
    while (started.elapsed() < Duration::from_secs(15)
        || rotations < 2
        || renewals < 2
        || retired_checked < 1)
        && Instant::now() < deadline
    {
        // The client: always the current credential, a fresh connection, a SET and a GET.
        let lease = watch.current();
        seen.insert(lease.lease_id.to_string(), lease.credentials.clone());
        let mut conn = connect_as(&server, &lease.credentials)
            .await
            .unwrap_or_else(|| panic!("current() credential {} refused", lease.lease_id));
        let key = format!("k{commands}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(commands)
            .query_async(&mut conn)
            .await
            .expect("SET with the current credential");
        let got: u32 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("GET with the current credential");
        assert_eq!(got, commands);
        commands += 1;

        loop {
            match events.try_recv() {
                Ok(WatchEvent::Renewed { .. }) => renewals += 1,
                Ok(WatchEvent::Rotated { .. }) => rotations += 1,
                Ok(WatchEvent::RetiredRevoked { lease_id }) => {
                    // A replaced credential stops working once its grace is over.
                    let old = seen
                        .get(lease_id.as_str())
                        .expect("the retired lease was current once");
                    assert!(!auths(&server, old).await, "retired credential still works");
                    retired_checked += 1;
                }
                Ok(WatchEvent::RefreshFailed { message, .. }) => {
                    panic!("refresh failed against a healthy server: {message}")
                }
                Ok(other) => panic!("unexpected watch event {other:?}"),
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("events: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotations >= 2, "rotations: {rotations}");
    assert!(renewals >= 2, "renewals: {renewals}");
    assert!(retired_checked >= 1, "no retired credential was checked");
    assert!(seen.len() >= 3, "distinct credentials used: {}", seen.len());
    assert!(commands > 20, "commands: {commands}");

    watch.close().await.unwrap();
    assert!(
        leasehold_users(&server).await.is_empty(),
        "close() left users: {:?}",
        leasehold_users(&server).await
    );
    for creds in seen.values() {
        assert!(!auths(&server, creds).await);
    }
    assert!(m.list(&LeaseFilter::all()).await.unwrap().is_empty());
}
