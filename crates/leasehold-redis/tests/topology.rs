//! Discovery and drift repair against real servers: a primary with replicas, a Redis Cluster,
//! a Sentinel-managed set. Only a seed is configured each time; AUTH is checked on every node
//! with `AUTH` and a command on one connection (both replies count).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use leasehold_core::{Credentials, DynamicSecretProvider, ExternalRef, IssueRequest, IssuedLease};
use leasehold_redis::{RedisAclProvider, RedisConfig};
use leasehold_testkit::servers::{RedisOptions, RedisServer};
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const HOUR: Duration = Duration::from_secs(3600);

/// `AUTH user pw` then `PING` on one raw connection to `port`: true only if AUTH answers
/// `+OK` and PING `+PONG` (a refused AUTH would leave the connection as `default`).
async fn auths_on(port: u16, creds: &Credentials) -> bool {
    let Credentials::UsernamePassword { username, password } = creds else {
        panic!("a username and password expected");
    };
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut cmd = Vec::new();
    for args in [
        vec!["AUTH", username.as_str(), password.expose_secret()],
        vec!["PING"],
    ] {
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    if write.write_all(&cmd).await.is_err() {
        return false;
    }
    let mut replies = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
            Ok(Ok(Some(l))) => replies.push(l),
            _ => return false,
        }
    }
    replies[0] == "+OK" && replies[1] == "+PONG"
}

async fn auths_everywhere(servers: &[RedisServer], creds: &Credentials) -> Vec<bool> {
    let mut out = Vec::new();
    for s in servers {
        out.push(auths_on(s.port(), creds).await);
    }
    out
}

fn ports(servers: &[RedisServer]) -> Vec<String> {
    let mut v: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn replicas_of_a_configured_primary_get_every_user_and_lose_it_on_revoke() {
    let test = "replicas_of_a_configured_primary";
    let Some(set) = RedisServer::start_replicated(test, 2).await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(set[0].url())).unwrap());
    let m = manager("replicated", provider.clone(), HOUR, HOUR).await;
    let mut found = provider.nodes();
    found.sort();
    assert_eq!(
        found,
        ports(&set),
        "every replica is found from the primary"
    );

    let lease = m.issue("replicated", IssueRequest::new()).await.unwrap();
    assert!(lease.live(), "AUTH confirmed on every node");
    assert_eq!(
        auths_everywhere(&set, &lease.credentials).await,
        vec![true; 3]
    );
    m.revoke(&lease.lease_id).await.unwrap();
    assert_eq!(
        auths_everywhere(&set, &lease.credentials).await,
        vec![false; 3]
    );
    for s in &set {
        assert!(leasehold_users(s).await.is_empty());
    }

    // discover = false: the listed node only.
    let only = RedisAclProvider::new(RedisConfig::new(set[0].url()).discover(false)).unwrap();
    assert_eq!(only.refresh_topology().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_replica_seed_leads_to_its_primary_and_siblings() {
    let test = "a_replica_seed_leads_to_its_primary";
    let Some(set) = RedisServer::start_replicated(test, 2).await else {
        return;
    };
    let provider = RedisAclProvider::new(RedisConfig::new(set[2].url())).unwrap();
    let mut found = provider.refresh_topology().await.unwrap();
    found.sort();
    assert_eq!(found, ports(&set));
}

#[tokio::test]
async fn a_cluster_seeded_by_one_node_gets_users_on_every_node() {
    let test = "a_cluster_seeded_by_one_node";
    let Some(nodes) = RedisServer::start_cluster(test, 3, 1).await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(nodes[1].url())).unwrap());
    let m = manager("cluster", provider.clone(), HOUR, HOUR).await;
    let mut found = provider.nodes();
    found.sort();
    assert_eq!(found, ports(&nodes), "every primary and replica is found");
    let lease = m.issue("cluster", IssueRequest::new()).await.unwrap();
    assert!(lease.live());
    assert_eq!(
        auths_everywhere(&nodes, &lease.credentials).await,
        vec![true; nodes.len()]
    );
    m.revoke(&lease.lease_id).await.unwrap();
    assert_eq!(
        auths_everywhere(&nodes, &lease.credentials).await,
        vec![false; nodes.len()]
    );

    let probe = AuthProbe(nodes.iter().collect());
    leasehold_testkit::provider_conformance(provider, Some(&probe)).await;
    for n in &nodes {
        assert!(leasehold_users(n).await.is_empty());
    }
}

// The provider suite, one test per behaviour, on a primary with two replicas where only the
// primary is configured: every credential must AUTH on all three.
leasehold_testkit::provider_conformance_tests!(
    replicated_set_seeded_by_the_primary,
    |test| async move {
        let set = RedisServer::start_replicated(test, 2).await?;
        let provider = RedisAclProvider::new(RedisConfig::new(set[0].url())).unwrap();
        Some(Servers::new(set).fixture(provider))
    }
);

#[tokio::test]
async fn a_replaced_replica_gets_every_leased_user_back_with_its_password() {
    let test = "a_replaced_replica_gets_users";
    let Some(mut set) = RedisServer::start_replicated(test, 2).await else {
        return;
    };
    let provider = Arc::new(
        RedisAclProvider::new(
            RedisConfig::new(set[0].url())
                .refresh_interval(Duration::from_millis(500))
                .retry_delay(Duration::from_millis(10)),
        )
        .unwrap(),
    );
    let m = manager("drift", provider.clone(), HOUR, HOUR).await;
    let repair = provider
        .spawn_repair(m.clone(), "drift", Duration::from_millis(300))
        .unwrap();
    let gone_port = set[2].port();
    set[2].stop();

    let mut leases: Vec<IssuedLease> = Vec::new();
    for _ in 0..5 {
        leases.push(m.issue("drift", IssueRequest::new()).await.unwrap());
    }
    for l in &leases {
        assert!(auths_on(set[0].port(), &l.credentials).await);
        assert!(auths_on(set[1].port(), &l.credentials).await);
    }

    // A fresh, empty replica at the same address.
    let opts = RedisOptions {
        replica_of: Some(set[0].port()),
        port: Some(gone_port),
        ..Default::default()
    };
    let fresh = RedisServer::start_with(test, opts).await.unwrap();
    assert!(
        leasehold_users(&fresh).await.is_empty(),
        "starts without users"
    );
    let all_back = eventually(200, || async {
        for l in &leases {
            if !auths_on(fresh.port(), &l.credentials).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        all_back,
        "every leased user AUTHs on the new replica with its password"
    );
    repair.stop().await;
    for l in &leases {
        m.revoke(&l.lease_id).await.unwrap();
    }
    assert!(leasehold_users(&fresh).await.is_empty());
}

#[tokio::test]
async fn a_user_left_behind_by_a_missed_revoke_is_removed_and_foreign_users_are_kept() {
    let test = "a_user_left_behind";
    let Some(set) = RedisServer::start_replicated(test, 1).await else {
        return;
    };
    let provider = Arc::new(RedisAclProvider::new(RedisConfig::new(set[0].url())).unwrap());
    let m = manager("leftover", provider.clone(), HOUR, HOUR).await;
    let kept = m.issue("leftover", IssueRequest::new()).await.unwrap();
    let mark = format!("lh-{}-", m.installation_id());
    let orphan = format!("{mark}missedrevoke");
    let foreign = "lh-otherinstallation-x".to_string();
    // What a revoke that missed a down replica leaves: the user on that replica only.
    setuser(&set[1], &[&orphan, "on", ">pw", "~*", "+@all"]).await;
    setuser(&set[1], &[&foreign, "on", ">pw", "~*", "+@all"]).await;

    let leased: Vec<ExternalRef> = m
        .list(&leasehold_core::LeaseFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.external)
        .collect();
    let first = provider.repair(&leased, &mark).await.unwrap();
    assert!(first.removed.is_empty(), "held back on the first pass");
    assert_eq!(first.held_back, vec![orphan.clone()]);
    let second = provider.repair(&leased, &mark).await.unwrap();
    assert_eq!(second.removed.len(), 1, "{second:?}");
    assert_eq!(second.removed[0].user, orphan);
    let users = acl_users(&set[1]).await;
    assert!(!users.contains(&orphan), "{users:?}");
    assert!(
        users.contains(&foreign),
        "another installation's user is kept"
    );
    let user = kept.credentials.principal().to_string();
    assert!(users.contains(&user), "the leased user is kept");

    // The background task does the same within its interval.
    let again = format!("{mark}missedagain");
    setuser(&set[0], &[&again, "on", ">pw"]).await;
    let task = provider
        .spawn_repair(m.clone(), "leftover", Duration::from_millis(200))
        .unwrap();
    let removed = eventually(100, || async { !acl_users(&set[0]).await.contains(&again) }).await;
    assert!(removed, "the background repair removes an unleased user");
    task.stop().await;
    m.revoke(&kept.lease_id).await.unwrap();
}

#[tokio::test]
async fn a_sentinel_failover_during_a_burst_of_issues_loses_no_user_on_the_new_primary() {
    let test = "a_sentinel_failover_during_a_burst";
    let Some(set) = RedisServer::start_replicated(test, 2).await else {
        return;
    };
    let Some(sentinel) = RedisServer::start_sentinel(test, "main", set[0].port()).await else {
        return;
    };
    // The Sentinel learns the replicas from the primary's INFO.
    let knows = eventually(300, || async {
        sentinel
            .cli(&["SENTINEL", "REPLICAS", "main"])
            .map(|t| t.matches("slave").count() >= 2)
            .unwrap_or(false)
    })
    .await;
    assert!(knows, "the sentinel found both replicas");
    let provider = Arc::new(
        RedisAclProvider::new(
            RedisConfig::new(sentinel.sentinel_url("main"))
                .refresh_interval(Duration::from_millis(500))
                .retry_delay(Duration::from_millis(20)),
        )
        .unwrap(),
    );
    let m = manager("sentinel", provider.clone(), HOUR, HOUR).await;
    let mut found = provider.nodes();
    found.sort();
    assert_eq!(found, ports(&set), "the sentinel's primary and replicas");

    let burst = {
        let m = m.clone();
        tokio::spawn(async move {
            let mut leases = Vec::new();
            for _ in 0..30 {
                leases.push(m.issue("sentinel", IssueRequest::new()).await.unwrap());
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            leases
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sentinel
        .cli(&["SENTINEL", "FAILOVER", "main"])
        .expect("failover starts");
    let leases = burst.await.unwrap();
    let old = format!("{}", set[0].port());
    let moved = eventually(300, || async {
        sentinel
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main"])
            .map(|t| !t.contains(&old))
            .unwrap_or(false)
    })
    .await;
    assert!(moved, "the failover completed");
    let addr = sentinel
        .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main"])
        .unwrap();
    let new_port: u16 = addr.lines().nth(1).unwrap().trim().parse().unwrap();
    let primary = set.iter().find(|s| s.port() == new_port).unwrap();
    for l in &leases {
        let user = l.credentials.principal().to_string();
        assert!(
            auths_on(new_port, &l.credentials).await,
            "{user} issued during the failover does not AUTH on the new primary (it has {:?})",
            acl_users(primary).await.contains(&user)
        );
    }
    // Issues after the failover reach every node too.
    let after = m.issue("sentinel", IssueRequest::new()).await.unwrap();
    assert_eq!(
        auths_everywhere(&set, &after.credentials).await,
        vec![true; 3]
    );
    for l in leases.iter().chain([&after]) {
        m.revoke(&l.lease_id).await.unwrap();
    }
    for s in &set {
        assert!(leasehold_users(s).await.is_empty());
    }
    let _ = provider.validate().await;
}

/// The manager's worker runs the repair on its own (`repair_interval`): no wiring in the app.
#[tokio::test]
async fn the_managers_worker_repairs_a_replaced_replica_without_wiring() {
    let test = "worker_repairs_replica";
    let Some(mut set) = RedisServer::start_replicated(test, 1).await else {
        return;
    };
    let provider = Arc::new(
        RedisAclProvider::new(
            RedisConfig::new(set[0].url())
                .refresh_interval(Duration::from_millis(500))
                .retry_delay(Duration::from_millis(10)),
        )
        .unwrap(),
    );
    let secret = leasehold_core::DynamicSecret::builder("worker-drift", provider.clone())
        .default_ttl(HOUR)
        .max_ttl(HOUR)
        .build()
        .unwrap();
    let m = leasehold_core::LeaseManager::builder(leasehold_core::MemoryStore::new())
        .config(
            leasehold_core::ManagerConfig::default()
                .repair_interval(Duration::from_millis(300))
                .max_idle(Duration::from_millis(100)),
        )
        .secret(secret)
        .build()
        .await
        .unwrap();
    let gone_port = set[1].port();
    set[1].stop();
    let mut leases: Vec<IssuedLease> = Vec::new();
    for _ in 0..3 {
        leases.push(m.issue("worker-drift", IssueRequest::new()).await.unwrap());
    }
    let opts = RedisOptions {
        replica_of: Some(set[0].port()),
        port: Some(gone_port),
        ..Default::default()
    };
    let fresh = RedisServer::start_with(test, opts).await.unwrap();
    let all_back = eventually(200, || async {
        for l in &leases {
            if !auths_on(fresh.port(), &l.credentials).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        all_back,
        "the worker copied every leased user to the new replica"
    );
    for l in &leases {
        m.revoke(&l.lease_id).await.unwrap();
    }
    m.shutdown().await;
    assert!(leasehold_users(&fresh).await.is_empty());
}
