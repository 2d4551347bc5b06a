//! The conformance suites: every sentence of the traits' `# Behavior` sections, as code.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use leasehold_core::{
    CoordinationStore, CreateRequest, Created, Credentials, DynamicSecretProvider, ErrorKind,
    ExternalRef, LeaseFilter, LeaseId, LeaseRecord, LeaseState, LeaseStore, MemberEntry,
    MemberState,
};

/// Checks whether a credential works against the real backend (AUTH on Redis, an STS call
/// with an AWS key). Used by [`provider_conformance`].
#[async_trait]
pub trait CredentialProbe: Send + Sync {
    /// Whether `credentials` authenticate now. Implementations may retry briefly for backends
    /// that are eventually consistent.
    async fn authenticates(&self, credentials: &Credentials) -> bool;
}

fn ms_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn record(secret: &str, state: LeaseState, due_at: DateTime<Utc>) -> LeaseRecord {
    let t = ms_now();
    LeaseRecord {
        id: LeaseId::generate(secret),
        secret: secret.into(),
        provider_kind: "conformance".into(),
        identity: Some("conformance-identity".into()),
        external: ExternalRef::new(format!(
            "lh-{}",
            leasehold_core::template::random_lowercase(12)
        ))
        .with_attr("group", "g-1")
        .with_attr("access_key_id", "AKIAEXAMPLE"),
        state,
        issued_at: t,
        expires_at: t + chrono::Duration::seconds(3600),
        max_expires_at: t + chrono::Duration::seconds(7200),
        renewable: true,
        due_at: due_at.trunc_subsecs(3),
        revoke_attempts: 0,
        last_error: None,
        claimed_by: None,
        claim_until: None,
        version: 7,
    }
}

async fn insert(store: &dyn LeaseStore, r: &LeaseRecord) -> LeaseRecord {
    store.insert(r).await.expect("insert");
    let mut r = r.clone();
    r.version = 1;
    r
}

/// Runs the store suite against `store`, which must be empty; it is empty again afterwards.
///
/// Stores must keep timestamps to at least millisecond precision; the suite uses
/// millisecond-truncated times.
///
/// ```no_run
/// # async fn f() {
/// let store = leasehold_core::MemoryStore::new();
/// leasehold_testkit::store_conformance(&store).await;
/// # }
/// ```
pub async fn store_conformance(store: &dyn LeaseStore) {
    assert_eq!(
        store.count(&LeaseFilter::all()).await.expect("count"),
        0,
        "store_conformance needs an empty store"
    );
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "empty store has no next_due"
    );

    // insert stores with version 1 and refuses duplicates; get round-trips every field.
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = record("conf-a", LeaseState::Active, far);
    let a = insert(store, &a).await;
    let got = store
        .get(&a.id)
        .await
        .expect("get")
        .expect("inserted lease is found");
    assert_eq!(got, a, "get returns what insert stored, with version 1");
    let dup = store
        .insert(&a)
        .await
        .expect_err("duplicate insert must fail");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    assert!(store
        .get(&LeaseId::generate("conf-a"))
        .await
        .expect("get")
        .is_none());

    // update is compare-and-set.
    let mut a2 = a.clone();
    a2.state = LeaseState::Revoking;
    a2.revoke_attempts = 2;
    a2.last_error = Some("ProviderUnavailable: injected".into());
    a2.identity = None;
    let v = store
        .update(&a2)
        .await
        .expect("update with current version");
    assert_eq!(v, 2);
    a2.version = 2;
    assert_eq!(store.get(&a.id).await.unwrap().unwrap(), a2);
    let stale = store.update(&a).await.expect_err("stale update must fail");
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    let ghost = record("conf-a", LeaseState::Active, far);
    let missing = store
        .update(&ghost)
        .await
        .expect_err("update of a missing lease fails");
    assert_eq!(missing.kind(), ErrorKind::LeaseNotFound);

    // delete is compare-and-set too.
    let e = store
        .delete(&a.id, 1)
        .await
        .expect_err("stale delete must fail");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    store
        .delete(&a.id, 2)
        .await
        .expect("delete with current version");
    let e = store
        .delete(&a.id, 2)
        .await
        .expect_err("second delete must fail");
    assert_eq!(e.kind(), ErrorKind::LeaseNotFound);
    assert!(store.get(&a.id).await.unwrap().is_none());

    // list and count: ordered by id, filters, paging.
    let mut ids = Vec::new();
    for i in 0..6 {
        let secret = if i % 2 == 0 { "conf-even" } else { "conf-odd" };
        let state = if i < 3 {
            LeaseState::Active
        } else {
            LeaseState::Irrevocable
        };
        let r = insert(store, &record(secret, state, far)).await;
        ids.push(r.id);
    }
    let all = store.list(&LeaseFilter::all()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "list is ordered by id"
    );
    assert_eq!(
        store
            .count(&LeaseFilter::secret("conf-even"))
            .await
            .unwrap(),
        3
    );
    let irrevocable = store
        .list(&LeaseFilter::all().state(LeaseState::Irrevocable))
        .await
        .unwrap();
    assert_eq!(irrevocable.len(), 3);
    assert!(irrevocable
        .iter()
        .all(|l| l.state == LeaseState::Irrevocable));
    let two_states = LeaseFilter::all().states([LeaseState::Active, LeaseState::Irrevocable]);
    assert_eq!(store.count(&two_states).await.unwrap(), 6);
    assert_eq!(
        store
            .count(&LeaseFilter::secret("conf-odd").state(LeaseState::Active))
            .await
            .unwrap(),
        1
    );
    let page1 = store.list(&LeaseFilter::all().limit(4)).await.unwrap();
    assert_eq!(page1.len(), 4);
    let page2 = store
        .list(&LeaseFilter::all().after(Some(page1[3].id.clone())).limit(4))
        .await
        .unwrap();
    assert_eq!(page2.len(), 2);
    assert!(page2[0].id > page1[3].id);
    assert_eq!(
        store.count(&LeaseFilter::all().limit(1)).await.unwrap(),
        6,
        "count ignores limit"
    );
    for l in store.list(&LeaseFilter::all()).await.unwrap() {
        store.delete(&l.id, l.version).await.unwrap();
    }

    // claim_due: due and unclaimed only, earliest first, limit, claims expire.
    let now = ms_now();
    let past = |s: i64| now - chrono::Duration::seconds(s);
    let d1 = insert(store, &record("conf-due", LeaseState::Active, past(30))).await;
    let d2 = insert(store, &record("conf-due", LeaseState::Revoking, past(20))).await;
    let d3 = insert(store, &record("conf-due", LeaseState::Pending, past(10))).await;
    let future = insert(
        store,
        &record(
            "conf-due",
            LeaseState::Active,
            now + chrono::Duration::seconds(600),
        ),
    )
    .await;
    let revoked = insert(store, &record("conf-due", LeaseState::Revoked, past(40))).await;
    let mut claimed_elsewhere = record("conf-due", LeaseState::Active, past(50));
    claimed_elsewhere.claimed_by = Some("other".into());
    claimed_elsewhere.claim_until = Some(now + chrono::Duration::seconds(300));
    let claimed_elsewhere = insert(store, &claimed_elsewhere).await;

    assert_eq!(
        store.next_due().await.unwrap(),
        Some(d1.due_at),
        "next_due is the earliest claimable time, ignoring revoked and claimed leases"
    );
    let hold = Duration::from_secs(60);
    let first = store.claim_due(now, "owner-1", hold, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![d1.id.clone(), d2.id.clone()],
        "claim_due returns the earliest due first and honours limit"
    );
    for l in &first {
        assert_eq!(l.claimed_by.as_deref(), Some("owner-1"));
        assert_eq!(l.claim_until, Some(now + chrono::Duration::seconds(60)));
        assert_eq!(l.version, 2, "claiming bumps the version");
        assert_eq!(
            store.get(&l.id).await.unwrap().as_ref(),
            Some(l),
            "claim is stored"
        );
    }
    let second = store.claim_due(now, "owner-2", hold, 10).await.unwrap();
    assert_eq!(
        second.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![d3.id.clone()],
        "claimed, future, revoked and elsewhere-claimed leases are not claimed again"
    );
    assert!(store
        .claim_due(now, "owner-3", hold, 10)
        .await
        .unwrap()
        .is_empty());
    // After the hold, claims come free: the other owner's lease too.
    let later = now + chrono::Duration::seconds(301);
    let third = store.claim_due(later, "owner-3", hold, 10).await.unwrap();
    let mut third_ids: Vec<_> = third.iter().map(|l| l.id.clone()).collect();
    third_ids.sort();
    let mut expect = vec![
        d1.id.clone(),
        d2.id.clone(),
        d3.id.clone(),
        claimed_elsewhere.id.clone(),
    ];
    expect.sort();
    assert_eq!(third_ids, expect, "expired claims are claimable by anyone");
    assert!(third
        .iter()
        .all(|l| l.claimed_by.as_deref() == Some("owner-3")));
    let _ = (future, revoked);
    for l in store.list(&LeaseFilter::all()).await.unwrap() {
        store.delete(&l.id, l.version).await.unwrap();
    }

    // Concurrent claimers never get the same lease.
    let now = ms_now();
    let mut due_ids = Vec::new();
    for _ in 0..60 {
        due_ids.push(
            insert(
                store,
                &record(
                    "conf-race",
                    LeaseState::Active,
                    now - chrono::Duration::seconds(1),
                ),
            )
            .await
            .id,
        );
    }
    let claimers = (0..6).map(|i| {
        let owner = format!("racer-{i}");
        async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_due(now, &owner, Duration::from_secs(60), 7)
                    .await
                    .expect("claim_due");
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|l| l.id));
            }
            mine
        }
    });
    let results = futures::future::join_all(claimers).await;
    let mut all_claimed: Vec<LeaseId> = results.into_iter().flatten().collect();
    let total = all_claimed.len();
    all_claimed.sort();
    all_claimed.dedup();
    assert_eq!(
        total,
        all_claimed.len(),
        "a lease was claimed by two owners"
    );
    due_ids.sort();
    assert_eq!(all_claimed, due_ids, "every due lease was claimed");
    for l in store.list(&LeaseFilter::all()).await.unwrap() {
        store.delete(&l.id, l.version).await.unwrap();
    }
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 0);
    assert_eq!(store.next_due().await.unwrap(), None);

    insert_within_checks_the_secret_count_and_inserts(store).await;
    claim_for_revoke_claims_unless_someone_is_at_work(store).await;
    count_ignores_after(store).await;
    claim_due_takes_leases_due_exactly_now_and_claims_ending_now(store).await;

    // A store that offers group coordination passes its suite too.
    if let Some(coordination) = store.coordination() {
        coordination_conformance(coordination.as_ref()).await;
    }
}

/// `count` ignores `after` (and `limit`): it counts every lease the filter matches.
pub async fn count_ignores_after(store: &dyn LeaseStore) {
    let far = ms_now() + chrono::Duration::seconds(3600);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert(store, &record("conf-after", LeaseState::Active, far)).await);
    }
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    let filter = LeaseFilter::secret("conf-after").after(Some(ids[0].id.clone()));
    assert_eq!(
        store.count(&filter).await.unwrap(),
        3,
        "count ignores after"
    );
    assert_eq!(
        store.list(&filter).await.unwrap().len(),
        2,
        "list honours after"
    );
    for l in ids {
        store.delete(&l.id, l.version).await.unwrap();
    }
}

/// The `<=` edges of `claim_due`: a lease due exactly at `now` is claimed, one due a
/// millisecond later is not, and a claim whose hold ends exactly at `now` is free again.
pub async fn claim_due_takes_leases_due_exactly_now_and_claims_ending_now(store: &dyn LeaseStore) {
    let now = ms_now();
    let ms = chrono::Duration::milliseconds(1);
    let at_now = insert(store, &record("conf-edge", LeaseState::Active, now)).await;
    let after = insert(store, &record("conf-edge", LeaseState::Active, now + ms)).await;
    let hold = Duration::from_secs(60);
    let got = store.claim_due(now, "edge-1", hold, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![at_now.id.clone()],
        "claim_due takes a lease due exactly at now, and not one due after it"
    );
    let until = now + chrono::Duration::seconds(60);
    let before_end = store
        .claim_due(until - ms, "edge-2", hold, 10)
        .await
        .unwrap();
    assert!(
        !before_end.iter().any(|l| l.id == at_now.id),
        "a claim holds until its end"
    );
    let at_end = store.claim_due(until, "edge-3", hold, 10).await.unwrap();
    assert!(
        at_end.iter().any(|l| l.id == at_now.id),
        "a claim whose hold ends exactly at now is free"
    );
    let _ = after;
    for l in store.list(&LeaseFilter::secret("conf-edge")).await.unwrap() {
        store.delete(&l.id, l.version).await.unwrap();
    }
}

/// `insert_within(lease, limit)` inserts only while the secret has fewer than `limit` records,
/// and writes nothing when it is full.
pub async fn insert_within_checks_the_secret_count_and_inserts(store: &dyn LeaseStore) {
    let secret = format!(
        "conf-quota-{}",
        leasehold_core::template::random_lowercase(6)
    );
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = record(&secret, LeaseState::Pending, far);
    assert!(store.insert_within(&a, 2).await.expect("insert_within"));
    let stored = store.get(&a.id).await.expect("get").expect("inserted");
    assert_eq!(stored.version, 1, "insert_within stores version 1");
    let b = record(&secret, LeaseState::Pending, far);
    assert!(store.insert_within(&b, 2).await.expect("insert_within"));
    let c = record(&secret, LeaseState::Pending, far);
    assert!(
        !store.insert_within(&c, 2).await.expect("insert_within"),
        "a full secret refuses"
    );
    assert!(
        store.get(&c.id).await.expect("get").is_none(),
        "nothing written"
    );
    let dup = store.insert_within(&a, 10).await.expect_err("duplicate");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        store
            .count(&LeaseFilter::secret(&secret))
            .await
            .expect("count"),
        2
    );
    for id in [&a.id, &b.id] {
        store.delete(id, 1).await.expect("delete");
    }
}

/// `claim_for_revoke` claims a record nobody is at work on, and leaves alone a record being
/// issued, being revoked by another instance, or already claimed by the caller.
pub async fn claim_for_revoke_claims_unless_someone_is_at_work(store: &dyn LeaseStore) {
    use leasehold_core::store::RevokeClaim;
    let now = ms_now();
    let until = now + chrono::Duration::seconds(60);
    let far = now + chrono::Duration::seconds(3600);
    let claim = |id: LeaseId, owner: &'static str| async move {
        store
            .claim_for_revoke(&id, owner, now, until)
            .await
            .expect("claim_for_revoke")
    };
    assert_eq!(
        claim(LeaseId::generate("conf-rv"), "me").await,
        RevokeClaim::Gone
    );

    // Active and unclaimed: claimed, Revoking, due now, held until `until`.
    let a = insert(store, &record("conf-rv", LeaseState::Active, far)).await;
    let RevokeClaim::Claimed(got) = claim(a.id.clone(), "me").await else {
        panic!("an unclaimed active lease is claimed")
    };
    assert_eq!(got.state, LeaseState::Revoking);
    assert_eq!(got.claimed_by.as_deref(), Some("me"));
    assert_eq!(got.claim_until, Some(until));
    assert_eq!(got.due_at, now);
    assert_eq!(got.version, 2);
    assert_eq!(store.get(&a.id).await.unwrap().unwrap(), got, "as stored");
    assert_eq!(store.next_due().await.unwrap(), Some(until));
    // Being revoked (by the caller, or by another instance): left alone.
    assert!(matches!(claim(a.id.clone(), "me").await, RevokeClaim::Busy(l) if l == got));
    assert!(matches!(claim(a.id.clone(), "other").await, RevokeClaim::Busy(l) if l == got));

    // Pending, claimed by its issuer: left alone, whoever asks.
    let mut p = record("conf-rv", LeaseState::Pending, far);
    p.claimed_by = Some("issuer".into());
    p.claim_until = Some(far);
    let p = insert(store, &p).await;
    assert!(matches!(
        claim(p.id.clone(), "me").await,
        RevokeClaim::Busy(_)
    ));
    assert!(matches!(
        claim(p.id.clone(), "issuer").await,
        RevokeClaim::Busy(_)
    ));

    // Active with another instance's live claim (its worker found it due): claimed.
    // Irrevocable stays Irrevocable.
    let mut i = record("conf-rv", LeaseState::Irrevocable, now);
    i.claimed_by = Some("worker".into());
    i.claim_until = Some(far);
    let i = insert(store, &i).await;
    let RevokeClaim::Claimed(got_i) = claim(i.id.clone(), "me").await else {
        panic!("another instance's claim on an irrevocable lease does not stop a revoke")
    };
    assert_eq!(got_i.state, LeaseState::Irrevocable);
    assert_eq!(got_i.claimed_by.as_deref(), Some("me"));

    // An ended claim is no claim: a Revoking lease whose revoker died is claimed.
    let mut r = record("conf-rv", LeaseState::Revoking, now);
    r.claimed_by = Some("dead".into());
    r.claim_until = Some(now - chrono::Duration::seconds(1));
    let r = insert(store, &r).await;
    assert!(matches!(
        claim(r.id.clone(), "me").await,
        RevokeClaim::Claimed(_)
    ));

    for l in store.list(&LeaseFilter::secret("conf-rv")).await.unwrap() {
        store.delete(&l.id, l.version).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// CoordinationStore: one function per sentence of its `# Behavior` section.

/// A group key no other run uses.
fn fresh_group() -> String {
    format!(
        "conformance:test:{}",
        leasehold_core::template::random_lowercase(10)
    )
}

fn member_entry(group: &str, member: &str, state: MemberState) -> MemberEntry {
    MemberEntry::new(
        group,
        member,
        state,
        "conf-owner",
        ms_now() + chrono::Duration::seconds(600),
    )
}

/// Runs every [`CoordinationStore`] check. [`store_conformance`] calls it for stores whose
/// [`LeaseStore::coordination`] is `Some`.
pub async fn coordination_conformance(store: &dyn CoordinationStore) {
    put_member_stores_and_replaces(store).await;
    member_of_unknown_is_none(store).await;
    members_lists_one_group_ordered_by_member(store).await;
    set_state_moves_only_entries_in_from(store).await;
    withdraw_removes_and_returns_the_old_state(store).await;
    claim_group_is_exclusive_until_it_ends(store).await;
    claim_group_is_renewed_by_its_holder(store).await;
    concurrent_claims_elect_one_holder(store).await;
    release_group_ends_only_the_holders_claim(store).await;
    changed_returns_within_its_bound(store).await;
}

/// `put_member` stores the entry, replacing any entry of the same `(group, member)`.
pub async fn put_member_stores_and_replaces(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let e = member_entry(&g, "u-1", MemberState::Reserved);
    store.put_member(&e).await.expect("put_member");
    assert_eq!(
        store.member(&g, "u-1").await.expect("member"),
        Some(e.clone())
    );
    let mut failed = member_entry(&g, "u-1", MemberState::Failed);
    failed.owner = "other-owner".into();
    failed.error_kind = Some("QuotaExceeded".into());
    failed.error = Some("full".into());
    store
        .put_member(&failed)
        .await
        .expect("put_member replaces");
    assert_eq!(
        store.member(&g, "u-1").await.expect("member"),
        Some(failed),
        "the second put replaces every field"
    );
    assert_eq!(store.members(&g).await.expect("members").len(), 1);
    store.withdraw(&g, "u-1").await.expect("withdraw");
}

/// `member` returns `None` for an unknown `(group, member)`.
pub async fn member_of_unknown_is_none(store: &dyn CoordinationStore) {
    let g = fresh_group();
    assert_eq!(store.member(&g, "nobody").await.expect("member"), None);
    assert!(store.members(&g).await.expect("members").is_empty());
}

/// `members` returns every entry of the group, and no other group's, ordered by member.
pub async fn members_lists_one_group_ordered_by_member(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let other = fresh_group();
    for m in ["u-c", "u-a", "u-b"] {
        store
            .put_member(&member_entry(&g, m, MemberState::Pending))
            .await
            .expect("put_member");
    }
    store
        .put_member(&member_entry(&other, "u-0", MemberState::Pending))
        .await
        .expect("put_member");
    let names: Vec<String> = store
        .members(&g)
        .await
        .expect("members")
        .into_iter()
        .map(|e| e.member)
        .collect();
    assert_eq!(names, ["u-a", "u-b", "u-c"]);
    for m in ["u-a", "u-b", "u-c"] {
        store.withdraw(&g, m).await.expect("withdraw");
    }
    store.withdraw(&other, "u-0").await.expect("withdraw");
}

/// `set_state` moves the listed entries whose state is in `from`, records or clears the
/// error, returns those it moved, and leaves the others alone.
pub async fn set_state_moves_only_entries_in_from(store: &dyn CoordinationStore) {
    let g = fresh_group();
    store
        .put_member(&member_entry(&g, "u-1", MemberState::Pending))
        .await
        .unwrap();
    store
        .put_member(&member_entry(&g, "u-2", MemberState::Accepted))
        .await
        .unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let moved = store
        .set_state(
            &g,
            &names(&["u-1", "u-2", "u-missing"]),
            &[MemberState::Pending],
            MemberState::Applying,
            None,
        )
        .await
        .expect("set_state");
    assert_eq!(moved, names(&["u-1"]), "only the pending entry moves");
    let e2 = store.member(&g, "u-2").await.unwrap().unwrap();
    assert_eq!(
        e2.state,
        MemberState::Accepted,
        "another state is left alone"
    );
    assert!(store.member(&g, "u-missing").await.unwrap().is_none());

    let err = leasehold_core::Error::new(ErrorKind::QuotaExceeded, "group is full");
    let moved = store
        .set_state(
            &g,
            &names(&["u-1"]),
            &[MemberState::Applying, MemberState::Pending],
            MemberState::Failed,
            Some(&err),
        )
        .await
        .unwrap();
    assert_eq!(moved, names(&["u-1"]));
    let e1 = store.member(&g, "u-1").await.unwrap().unwrap();
    assert_eq!(e1.state, MemberState::Failed);
    assert_eq!(e1.error_kind.as_deref(), Some("QuotaExceeded"));
    assert_eq!(e1.error.as_deref(), Some("group is full"));
    assert_eq!(e1.failure().kind(), ErrorKind::QuotaExceeded);
    let moved = store
        .set_state(
            &g,
            &names(&["u-1"]),
            &[MemberState::Failed],
            MemberState::Pending,
            None,
        )
        .await
        .unwrap();
    assert_eq!(moved.len(), 1);
    let e1 = store.member(&g, "u-1").await.unwrap().unwrap();
    assert_eq!(
        (e1.error_kind, e1.error),
        (None, None),
        "no error clears it"
    );
    store.withdraw(&g, "u-1").await.unwrap();
    store.withdraw(&g, "u-2").await.unwrap();
}

/// `withdraw` removes the entry and returns the state it had; `None` when there was none.
pub async fn withdraw_removes_and_returns_the_old_state(store: &dyn CoordinationStore) {
    let g = fresh_group();
    store
        .put_member(&member_entry(&g, "u-1", MemberState::Applying))
        .await
        .unwrap();
    assert_eq!(
        store.withdraw(&g, "u-1").await.expect("withdraw"),
        Some(MemberState::Applying)
    );
    assert_eq!(store.member(&g, "u-1").await.unwrap(), None);
    assert_eq!(store.withdraw(&g, "u-1").await.expect("withdraw"), None);
}

/// `claim_group` takes a free group, refuses another owner while the claim lasts, and lets
/// anyone take it over once `until <= now`.
pub async fn claim_group_is_exclusive_until_it_ends(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let now = ms_now();
    let hold = Duration::from_secs(30);
    assert!(store.claim_group(&g, "a", now, hold).await.expect("claim"));
    let claim = store.group_claim(&g).await.expect("group_claim").unwrap();
    assert_eq!(claim.owner, "a");
    assert_eq!(claim.until, now + chrono::Duration::seconds(30));
    assert!(!store.claim_group(&g, "b", now, hold).await.unwrap());
    let later = now + chrono::Duration::seconds(29);
    assert!(!store.claim_group(&g, "b", later, hold).await.unwrap());
    assert_eq!(store.group_claim(&g).await.unwrap().unwrap().owner, "a");
    let ended = now + chrono::Duration::seconds(30);
    assert!(
        store.claim_group(&g, "b", ended, hold).await.unwrap(),
        "a claim that ended is taken over"
    );
    assert_eq!(store.group_claim(&g).await.unwrap().unwrap().owner, "b");
    assert!(store.release_group(&g, "b").await.unwrap());
}

/// `claim_group` by the holder renews the claim from `now`.
pub async fn claim_group_is_renewed_by_its_holder(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let now = ms_now();
    assert!(store
        .claim_group(&g, "a", now, Duration::from_secs(10))
        .await
        .unwrap());
    let later = now + chrono::Duration::seconds(5);
    assert!(store
        .claim_group(&g, "a", later, Duration::from_secs(10))
        .await
        .unwrap());
    assert_eq!(
        store.group_claim(&g).await.unwrap().unwrap().until,
        later + chrono::Duration::seconds(10)
    );
    assert!(store.release_group(&g, "a").await.unwrap());
}

/// Among concurrent callers at most one holds a claim at a time.
pub async fn concurrent_claims_elect_one_holder(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let now = ms_now();
    let tries = (0..8).map(|i| {
        let g = g.clone();
        async move {
            store
                .claim_group(&g, &format!("owner-{i}"), now, Duration::from_secs(30))
                .await
                .expect("claim_group")
        }
    });
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(
        won, 1,
        "exactly one of the concurrent callers holds the claim"
    );
    let holder = store.group_claim(&g).await.unwrap().unwrap().owner;
    assert!(store.release_group(&g, &holder).await.unwrap());
}

/// `release_group` ends the holder's claim; another owner's release changes nothing.
pub async fn release_group_ends_only_the_holders_claim(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let now = ms_now();
    assert!(store
        .claim_group(&g, "a", now, Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!store.release_group(&g, "b").await.unwrap());
    assert_eq!(store.group_claim(&g).await.unwrap().unwrap().owner, "a");
    assert!(store.release_group(&g, "a").await.unwrap());
    assert_eq!(store.group_claim(&g).await.unwrap(), None);
    assert!(
        store
            .claim_group(&g, "b", now, Duration::from_secs(30))
            .await
            .unwrap(),
        "a released group is free at once"
    );
    assert!(store.release_group(&g, "b").await.unwrap());
    assert!(!store.release_group(&g, "b").await.unwrap());
}

/// `changed` returns after at most `within`.
pub async fn changed_returns_within_its_bound(store: &dyn CoordinationStore) {
    let g = fresh_group();
    let started = std::time::Instant::now();
    store.changed(&g, Duration::from_millis(50)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "changed waited far past its bound"
    );
}

fn fresh_username(provider: &dyn DynamicSecretProvider) -> String {
    let rule = provider.name_rule();
    let name = rule.normalize(&format!(
        "lh-conf{}",
        leasehold_core::template::random_lowercase(10)
    ));
    rule.check(&name)
        .expect("the suite's usernames satisfy the provider's rule");
    name
}

fn request_for(provider: &dyn DynamicSecretProvider, username: &str) -> CreateRequest {
    let caps = provider.capabilities();
    let mut ttl = Duration::from_secs(900);
    if let Some(min) = caps.min_ttl {
        ttl = ttl.max(min);
    }
    if let Some(max) = caps.max_ttl {
        ttl = ttl.min(max);
    }
    let mut req = CreateRequest::new(LeaseId::generate("conformance"), username, ttl)
        .with_identity(Some("conformance".into()));
    if caps.needs_password {
        req = req.with_password(
            provider
                .password_policy()
                .generate()
                .expect("policy generates"),
        );
    }
    req
}

/// Runs the provider suite against a configured, reachable provider: every function below,
/// one per sentence of [`DynamicSecretProvider`]'s `# Behavior`, that the provider's
/// capabilities allow. `probe`, when given, checks credentials against the real backend.
///
/// Not run here: [`revoke_failure_while_unreachable_is_temporary`], which needs a provider
/// whose backend is down; call it where a test can arrange that.
///
/// ```no_run
/// # async fn f() {
/// use std::sync::Arc;
/// let provider = Arc::new(leasehold_testkit::RecordingProvider::new());
/// leasehold_testkit::provider_conformance(provider, None).await;
/// # }
/// ```
pub async fn provider_conformance(
    provider: Arc<dyn DynamicSecretProvider>,
    probe: Option<&dyn CredentialProbe>,
) {
    let p = provider.as_ref();
    kind_is_stable_and_not_empty(p).await;
    validate_succeeds_and_leaves_nothing_behind(p).await;
    create_returns_a_working_credential(p, probe).await;
    create_refuses_an_existing_username(p, probe).await;
    failed_create_leaves_nothing_behind(p).await;
    renew_extends_a_live_credential(p).await;
    revoke_removes_the_credential(p, probe).await;
    revoke_by_the_reference_written_ahead_removes_the_credential(p, probe).await;
    revoke_is_idempotent(p).await;
}

/// Whether `list_managed` (when supported) lists `username`; `None` when unsupported.
async fn listed(p: &dyn DynamicSecretProvider, username: &str) -> Option<bool> {
    if !p.capabilities().lists_managed {
        return None;
    }
    let all = p.list_managed("lh-conf").await.expect("list_managed");
    Some(all.iter().any(|m| m.external.id == username))
}

/// `kind` is not empty and stable; the default password policy is valid.
pub async fn kind_is_stable_and_not_empty(p: &dyn DynamicSecretProvider) {
    assert!(!p.kind().is_empty(), "kind is not empty");
    assert_eq!(p.kind(), p.kind(), "kind is stable");
    if p.capabilities().needs_password {
        p.password_policy()
            .validate()
            .expect("the default password policy is valid");
    }
}

/// `validate` succeeds on a good configuration and leaves nothing behind (checked through
/// `list_managed` where the provider lists its credentials).
pub async fn validate_succeeds_and_leaves_nothing_behind(p: &dyn DynamicSecretProvider) {
    let before = if p.capabilities().lists_managed {
        let mut ids: Vec<String> = p
            .list_managed("lh-conf")
            .await
            .expect("list_managed")
            .into_iter()
            .map(|m| m.external.id)
            .collect();
        ids.sort();
        Some(ids)
    } else {
        None
    };
    p.validate()
        .await
        .expect("validate succeeds on a good configuration");
    if let Some(before) = before {
        let mut after: Vec<String> = p
            .list_managed("lh-conf")
            .await
            .expect("list_managed")
            .into_iter()
            .map(|m| m.external.id)
            .collect();
        after.sort();
        assert_eq!(after, before, "validate leaves nothing behind");
    }
}

/// `create` returns a working credential for the requested username and password, whose
/// `Debug` holds no secret, that `list_managed` finds.
pub async fn create_returns_a_working_credential(
    p: &dyn DynamicSecretProvider,
    probe: Option<&dyn CredentialProbe>,
) {
    let caps = p.capabilities();
    let username = fresh_username(p);
    let req = request_for(p, &username);
    let created = p.create(&req).await.expect("create succeeds");
    assert!(
        !created.external.id.is_empty(),
        "create returns a reference"
    );
    // A provider that generates no password (an IAM auth token) always speaks for its one
    // configured user; every other one makes the user it was asked for.
    if let Credentials::UsernamePassword { username: u, .. } = &created.credentials {
        if caps.needs_password {
            assert_eq!(
                u, &username,
                "the credential carries the requested username"
            );
        }
    }
    if let Some(pw) = &req.password {
        if let Credentials::UsernamePassword { password, .. } = &created.credentials {
            use secrecy::ExposeSecret;
            assert_eq!(
                password.expose_secret(),
                pw.expose_secret(),
                "the requested password is used"
            );
        }
    }
    let debug = format!("{created:?} {req:?}");
    crate::assert_no_secret(
        "Debug of Created/CreateRequest",
        &debug,
        &created.credentials,
    );
    if let Some(probe) = probe {
        assert!(
            probe.authenticates(&created.credentials).await,
            "a created credential works"
        );
    }

    if caps.lists_managed {
        assert_eq!(
            listed(p, &created.external.id).await,
            Some(true),
            "list_managed finds the created credential"
        );
    }
    p.revoke(&created.external).await.expect("revoke succeeds");
}

/// `create` of a username that already exists fails with `AlreadyExists` and leaves the
/// first credential working (revocable providers: the others speak for one fixed user).
pub async fn create_refuses_an_existing_username(
    p: &dyn DynamicSecretProvider,
    probe: Option<&dyn CredentialProbe>,
) {
    if !p.capabilities().revocable {
        return;
    }
    let username = fresh_username(p);
    let created = p
        .create(&request_for(p, &username))
        .await
        .expect("create succeeds");
    let mut again = request_for(p, &username);
    again.lease_id = LeaseId::generate("conformance");
    let err = p
        .create(&again)
        .await
        .expect_err("creating an existing username fails");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    if let Some(probe) = probe {
        assert!(
            probe.authenticates(&created.credentials).await,
            "a refused duplicate create leaves the first credential working"
        );
    }
    p.revoke(&created.external).await.expect("revoke succeeds");
}

/// A failed `create` leaves nothing behind: a request the provider must refuse (no password,
/// for a provider that needs one) creates no credential `list_managed` could find, and the
/// revoke the manager then sends by the name written ahead succeeds.
pub async fn failed_create_leaves_nothing_behind(p: &dyn DynamicSecretProvider) {
    if !p.capabilities().needs_password {
        return;
    }
    let username = fresh_username(p);
    let mut req = request_for(p, &username);
    req.password = None;
    p.create(&req)
        .await
        .expect_err("create without the password it needs fails");
    assert_ne!(
        listed(p, &username).await,
        Some(true),
        "a failed create leaves no credential"
    );
    p.revoke(&ExternalRef::new(&username))
        .await
        .expect("revoking by the name written ahead after a failed create succeeds");
}

/// `renew` extends a live credential (renewable providers).
pub async fn renew_extends_a_live_credential(p: &dyn DynamicSecretProvider) {
    if !p.capabilities().renewable {
        return;
    }
    let username = fresh_username(p);
    let created = p
        .create(&request_for(p, &username))
        .await
        .expect("create succeeds");
    p.renew(
        &created.external,
        Utc::now() + chrono::Duration::seconds(1800),
    )
    .await
    .expect("renew succeeds on a live credential");
    p.revoke(&created.external).await.expect("revoke succeeds");
}

/// `revoke` with the reference `create` returned removes the credential: it no longer
/// authenticates and `list_managed` no longer finds it.
pub async fn revoke_removes_the_credential(
    p: &dyn DynamicSecretProvider,
    probe: Option<&dyn CredentialProbe>,
) {
    let username = fresh_username(p);
    let created = p
        .create(&request_for(p, &username))
        .await
        .expect("create succeeds");
    p.revoke(&created.external).await.expect("revoke succeeds");
    assert_gone(p, probe, &created, "a revoked credential").await;
}

/// The library's no-orphans promise: `revoke` with only the reference the manager wrote ahead
/// (the username, no attributes), while the credential exists, removes it.
pub async fn revoke_by_the_reference_written_ahead_removes_the_credential(
    p: &dyn DynamicSecretProvider,
    probe: Option<&dyn CredentialProbe>,
) {
    let username = fresh_username(p);
    let created = p
        .create(&request_for(p, &username))
        .await
        .expect("create succeeds");
    p.revoke(&ExternalRef::new(&username))
        .await
        .expect("revoke by the name written ahead succeeds");
    assert_gone(
        p,
        probe,
        &created,
        "a credential revoked by its written-ahead name",
    )
    .await;
    // Whatever the returned reference adds (an access key id) is gone too.
    p.revoke(&created.external)
        .await
        .expect("revoke by the returned reference succeeds afterwards");
}

async fn assert_gone(
    p: &dyn DynamicSecretProvider,
    probe: Option<&dyn CredentialProbe>,
    created: &Created,
    what: &str,
) {
    if !p.capabilities().revocable {
        return;
    }
    if let Some(probe) = probe {
        assert!(
            !probe.authenticates(&created.credentials).await,
            "{what} no longer works"
        );
    }
    assert_ne!(
        listed(p, &created.external.id).await,
        Some(true),
        "list_managed no longer finds {what}"
    );
}

/// `revoke` is idempotent: a second revoke, and a revoke of a credential that never existed,
/// succeed.
pub async fn revoke_is_idempotent(p: &dyn DynamicSecretProvider) {
    let username = fresh_username(p);
    let created = p
        .create(&request_for(p, &username))
        .await
        .expect("create succeeds");
    p.revoke(&created.external).await.expect("revoke succeeds");
    p.revoke(&created.external)
        .await
        .expect("revoke is idempotent");
    // The write-ahead reference of a credential that was never created.
    let never = ExternalRef::new(fresh_username(p));
    p.revoke(&never)
        .await
        .expect("revoking a credential that never existed succeeds");
}

/// A `revoke` that fails because the backend is unreachable returns an error marked
/// temporary, so the manager retries it. `unreachable` is a provider whose backend is down.
pub async fn revoke_failure_while_unreachable_is_temporary(
    unreachable: &dyn DynamicSecretProvider,
) {
    let e = unreachable
        .revoke(&ExternalRef::new(fresh_username(unreachable)))
        .await
        .expect_err("revoke cannot succeed while the backend is unreachable");
    assert!(
        e.is_temporary(),
        "a temporary revoke failure is marked temporary: {e}"
    );
}
