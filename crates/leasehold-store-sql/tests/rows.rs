//! Row-level behaviour on both backends: damaged rows are quarantined instead of stopping the
//! worker, and `release_claims` is one statement over exactly the owner's live claims.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use leasehold_core::{
    DynamicSecret, ErrorKind, LeaseFilter, LeaseManager, LeaseState, LeaseStore, ManagerConfig,
    RetryPolicy,
};
use leasehold_store_sql::{PostgresStore, SqliteStore};
use leasehold_testkit::servers::PostgresDb;
use leasehold_testkit::RecordingProvider;

/// The damaged rows every test writes: (id, state, external, whether `principal` is readable).
const DAMAGED: [(&str, &str, &str, bool); 3] = [
    (
        "cache/badstate1",
        "half-revoked",
        r#"{"id":"user-bad-state"}"#,
        true,
    ),
    ("cache/badjson1", "active", "not json {", false),
    (
        "../../etc/passwd/abc",
        "active",
        r#"{"id":"user-bad-id"}"#,
        true,
    ),
];

fn damaged_rows(due_ms: i64) -> Vec<RawLease<'static>> {
    DAMAGED
        .iter()
        .map(|(id, state, external, _)| RawLease {
            id,
            state,
            external,
            due_at_ms: due_ms,
        })
        .collect()
}

fn config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.retry = RetryPolicy::new(Duration::from_millis(50), 6).max_delay(Duration::from_millis(400));
    c.max_idle = Duration::from_millis(200);
    c.claim_hold = Duration::from_secs(3);
    c.revoke_concurrency = 32;
    c
}

/// 100 healthy leases already due, their credentials live in `provider`.
async fn healthy_due(store: &dyn LeaseStore, provider: &RecordingProvider) -> Vec<String> {
    let mut names = Vec::new();
    let due = chrono::Utc::now() - chrono::Duration::seconds(5);
    for _ in 0..100 {
        let mut l = lease("cache", LeaseState::Active, due);
        l.provider_kind = leasehold_core::DynamicSecretProvider::kind(provider).into();
        provider.insert_out_of_band(&l.external.id);
        names.push(l.external.id.clone());
        store.insert(&l).await.unwrap();
    }
    names
}

/// The damaged rows (due before every healthy one) do not stop a manager revoking the rest;
/// they are reported and removed by id.
async fn manager_revokes_around_damaged_rows(
    store: Arc<dyn LeaseStore>,
    provider: RecordingProvider,
    names: Vec<String>,
) {
    assert_eq!(provider.live_count(), 100);
    let secret = DynamicSecret::builder("cache", Arc::new(provider.clone()))
        .default_ttl(Duration::from_secs(60))
        .max_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let m = LeaseManager::builder(store.clone())
        .config(config())
        .secret(secret)
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Revoked first, then the record is deleted: wait for both.
    while provider.live_count() > 0 || store.count(&LeaseFilter::all()).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} healthy leases were not revoked",
            provider.live_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &names {
        assert_eq!(provider.removals_of(n), 1, "{n}");
    }
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 0);
    assert!(store.list(&LeaseFilter::all()).await.unwrap().is_empty());

    let mut damaged = m.damaged().await.unwrap();
    damaged.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected: Vec<_> = DAMAGED.to_vec();
    expected.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(damaged.len(), 3, "{damaged:?}");
    for (d, (id, _, external, readable)) in damaged.iter().zip(&expected) {
        assert_eq!(d.id, *id, "the id as stored");
        assert_eq!(d.secret.as_deref(), Some("cache"));
        let principal = readable.then(|| {
            serde_json::from_str::<serde_json::Value>(external).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        });
        assert_eq!(d.principal, principal, "{d:?}");
        assert!(!d.reason.is_empty());
    }
    for (id, ..) in DAMAGED {
        assert!(m.forget_damaged(id).await.unwrap(), "{id}");
        assert!(!m.forget_damaged(id).await.unwrap(), "{id} is gone");
    }
    assert!(m.damaged().await.unwrap().is_empty());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_manager_revokes_every_healthy_lease_around_damaged_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("damaged.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    let provider = RecordingProvider::new();
    let names = healthy_due(&store, &provider).await;
    for r in damaged_rows(now_ms() - 3_600_000) {
        insert_sqlite(store.pool(), &store.table(), &r).await;
    }
    manager_revokes_around_damaged_rows(Arc::new(store), provider, names).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_manager_revokes_every_healthy_lease_around_damaged_rows() {
    let Some(db) = PostgresDb::create("pg_damaged_rows").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    let provider = RecordingProvider::new();
    let names = healthy_due(&store, &provider).await;
    for r in damaged_rows(now_ms() - 3_600_000) {
        insert_pg(store.pool(), &store.table(), &r).await;
    }
    manager_revokes_around_damaged_rows(Arc::new(store), provider, names).await;
}

/// What one store does with damaged rows: `claim_due` fills its limit from healthy rows and
/// releases the bad ones' claims, `list`/`count`/`next_due` leave them out, `get` names them.
async fn store_quarantines_damaged_rows(store: &dyn LeaseStore) {
    let now = chrono::Utc::now();
    let mut healthy = Vec::new();
    for _ in 0..2 {
        let l = lease(
            "cache",
            LeaseState::Active,
            now - chrono::Duration::seconds(10),
        );
        store.insert(&l).await.unwrap();
        healthy.push(l.id);
    }
    // The damaged rows are the earliest due: the first claim meets them first.
    assert_eq!(
        store.count(&LeaseFilter::all()).await.unwrap(),
        5,
        "not yet seen: counted"
    );
    let claimed = store
        .claim_due(now, "owner-1", Duration::from_secs(60), 2)
        .await
        .unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    healthy.sort();
    assert_eq!(ids, healthy, "the limit is filled with healthy rows");
    assert_eq!(store.damaged(10).await.unwrap().len(), 3);
    assert_eq!(
        store.damaged(1).await.unwrap().len(),
        1,
        "damaged honours limit"
    );
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 2);
    assert_eq!(store.count(&LeaseFilter::secret("cache")).await.unwrap(), 2);
    assert_eq!(store.list(&LeaseFilter::all()).await.unwrap().len(), 2);
    // Only the healthy rows' claims hold; nothing damaged is due.
    assert!(store.next_due().await.unwrap().unwrap() > now);
    assert!(store
        .claim_due(now, "owner-2", Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    let id: leasehold_core::LeaseId = "cache/badstate1".parse().unwrap();
    let e = store.get(&id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(e.to_string().contains("lease row is damaged"), "{e}");
    assert!(
        !store.remove_damaged(healthy[0].as_str()).await.unwrap(),
        "only damaged rows"
    );
    assert!(store.get(&healthy[0]).await.unwrap().is_some());
    for (id, ..) in DAMAGED {
        assert!(store.remove_damaged(id).await.unwrap());
    }
    assert!(store.damaged(10).await.unwrap().is_empty());
}

/// Damage found by `list` (and `get`) is marked too, and a page stays full.
async fn list_and_get_detect_damage(store: &dyn LeaseStore) {
    let now = chrono::Utc::now();
    for _ in 0..3 {
        store
            .insert(&lease(
                "cache",
                LeaseState::Active,
                now + chrono::Duration::seconds(600),
            ))
            .await
            .unwrap();
    }
    // "../../etc/passwd/abc" sorts before every "cache/..." id: the first page meets it.
    let page = store.list(&LeaseFilter::all().limit(3)).await.unwrap();
    assert_eq!(page.len(), 3, "the page is filled from healthy rows");
    assert!(!store.damaged(10).await.unwrap().is_empty());
    assert_eq!(store.list(&LeaseFilter::all()).await.unwrap().len(), 3);
    assert_eq!(
        store.damaged(10).await.unwrap().len(),
        3,
        "list marked them"
    );
    let id: leasehold_core::LeaseId = "cache/badjson1".parse().unwrap();
    assert_eq!(store.get(&id).await.unwrap_err().kind(), ErrorKind::Store);
}

#[tokio::test]
async fn sqlite_quarantines_damaged_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    for r in damaged_rows(now_ms() - 3_600_000) {
        insert_sqlite(store.pool(), &store.table(), &r).await;
    }
    store_quarantines_damaged_rows(&store).await;

    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    for r in damaged_rows(now_ms() + 3_600_000) {
        insert_sqlite(store.pool(), &store.table(), &r).await;
    }
    list_and_get_detect_damage(&store).await;
}

#[tokio::test]
async fn postgres_quarantines_damaged_rows() {
    let Some(db) = PostgresDb::create("pg_quarantine").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    for r in damaged_rows(now_ms() - 3_600_000) {
        insert_pg(store.pool(), &store.table(), &r).await;
    }
    store_quarantines_damaged_rows(&store).await;

    let store = PostgresStore::builder(db.url())
        .table_prefix("l_")
        .connect()
        .await
        .unwrap();
    for r in damaged_rows(now_ms() + 3_600_000) {
        insert_pg(store.pool(), &store.table(), &r).await;
    }
    list_and_get_detect_damage(&store).await;
}

/// `release_claims` frees exactly the owner's current claims on live, healthy rows.
async fn release_claims_frees_only_the_owners_claims(store: &dyn LeaseStore) {
    let now = chrono::Utc::now();
    let past = now - chrono::Duration::seconds(30);
    let future = now + chrono::Duration::seconds(600);
    let mut mine_due = lease("rel", LeaseState::Revoking, past);
    mine_due.claimed_by = Some("me".into());
    mine_due.claim_until = Some(future);
    let mut mine_later = lease("rel", LeaseState::Active, future);
    mine_later.claimed_by = Some("me".into());
    mine_later.claim_until = Some(now + chrono::Duration::seconds(60));
    let mut mine_ended = lease("rel", LeaseState::Active, future);
    mine_ended.claimed_by = Some("me".into());
    mine_ended.claim_until = Some(past);
    let mut mine_revoked = lease("rel", LeaseState::Revoked, past);
    mine_revoked.claimed_by = Some("me".into());
    mine_revoked.claim_until = Some(future);
    let mut theirs = lease("rel", LeaseState::Active, past);
    theirs.claimed_by = Some("them".into());
    theirs.claim_until = Some(future);
    for l in [&mine_due, &mine_later, &mine_ended, &mine_revoked, &theirs] {
        store.insert(l).await.unwrap();
    }

    assert_eq!(store.release_claims("me", now).await.unwrap(), 2);
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    let got = store.get(&mine_due.id).await.unwrap().unwrap();
    assert_eq!((got.claimed_by.clone(), got.claim_until), (None, None));
    assert_eq!(ms(got.due_at), ms(past), "an earlier due time is kept");
    assert_eq!(got.version, 2, "the version moves");
    let got = store.get(&mine_later.id).await.unwrap().unwrap();
    assert_eq!((got.claimed_by.clone(), got.claim_until), (None, None));
    assert_eq!(ms(got.due_at), ms(now), "due at once");
    for (l, why) in [
        (&mine_ended, "an ended claim"),
        (&mine_revoked, "a revoked lease"),
        (&theirs, "another owner's claim"),
    ] {
        let got = store.get(&l.id).await.unwrap().unwrap();
        assert_eq!(got.version, 1, "{why} is untouched");
        assert_eq!(got.claimed_by, l.claimed_by, "{why} is untouched");
    }
    // The released rows are claimable now (claimable_at was recomputed).
    let claimed = store
        .claim_due(now, "next", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    let mut expected = vec![mine_due.id.clone(), mine_later.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(store.release_claims("me", now).await.unwrap(), 0);
}

#[tokio::test]
async fn sqlite_release_claims_frees_only_the_owners_claims() {
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    release_claims_frees_only_the_owners_claims(&store).await;
}

#[tokio::test]
async fn postgres_release_claims_frees_only_the_owners_claims() {
    let Some(db) = PostgresDb::create("pg_release_claims").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url()).await.unwrap();
    release_claims_frees_only_the_owners_claims(&store).await;
}
