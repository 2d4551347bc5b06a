//! The conformance suites: every sentence of the traits' `# Behavior` sections, as code.
//!
//! Over 700 lines: one function per contract sentence, and a test checks that each is listed in
//! its macro and its one-call suite, which reads this file.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use leasehold_core::{
    CoordinationStore, CreateRequest, Created, Credentials, DynamicSecretProvider, ErrorKind,
    ExternalRef, LeaseFilter, LeaseId, LeaseRecord, LeaseState, LeaseStore, MemberEntry,
    MemberState,
};

pub use crate::fixture::{CoordinationFixture, Fixture, ProviderFixture, StoreFixture};

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

/// Fails unless `store` holds no record: every store function below starts from an empty
/// store and leaves it empty.
async fn assert_empty(store: &dyn LeaseStore, when: &str) {
    assert_eq!(
        store.count(&LeaseFilter::all()).await.expect("count"),
        0,
        "the store must be empty {when}"
    );
}

/// Deletes every record of the store (at their current versions).
async fn clear(store: &dyn LeaseStore) {
    for l in store.list(&LeaseFilter::all()).await.expect("list") {
        store.delete(&l.id, l.version).await.expect("delete");
    }
    assert_empty(store, "after a test").await;
}

fn ids(records: &[LeaseRecord]) -> Vec<LeaseId> {
    records.iter().map(|l| l.id.clone()).collect()
}

/// Runs every store function against `store`, which must be empty; it is empty again
/// afterwards. A store that offers [`LeaseStore::coordination`] also runs
/// [`coordination_conformance`] on it.
///
/// Stores must keep timestamps to at least millisecond precision; the suite uses
/// millisecond-truncated times. To see each behaviour as its own test, use
/// [`store_conformance_tests!`](crate::store_conformance_tests) instead. Not run here:
/// [`installation_ids_differ_between_stores`], which needs two stores.
///
/// ```no_run
/// # async fn f() {
/// let store = leasehold_core::MemoryStore::new();
/// leasehold_testkit::store_conformance(&store).await;
/// # }
/// ```
pub async fn store_conformance(store: &dyn LeaseStore) {
    an_empty_store_has_nothing_due(store).await;
    insert_stores_version_1_and_get_returns_every_field(store).await;
    insert_refuses_an_existing_id(store).await;
    get_of_an_unknown_id_is_none(store).await;
    update_is_a_compare_and_set_that_bumps_the_version(store).await;
    update_of_a_missing_record_is_lease_not_found(store).await;
    delete_is_a_compare_and_set_and_a_missing_record_is_lease_not_found(store).await;
    list_is_ordered_by_id_and_honours_the_filter_after_and_limit(store).await;
    count_counts_every_match_ignoring_limit(store).await;
    count_ignores_after(store).await;
    claim_due_takes_due_unclaimed_records_earliest_first_up_to_limit(store).await;
    claim_due_frees_ended_claims_for_any_owner(store).await;
    claim_due_takes_leases_due_exactly_now_and_claims_ending_now(store).await;
    concurrent_claim_due_callers_never_get_the_same_record(store).await;
    next_due_is_the_latest_of_due_at_and_claim_end_ignoring_revoked(store).await;
    installation_id_is_stable_and_not_empty(store).await;
    damaged_is_empty_and_remove_damaged_leaves_typed_records_alone(store).await;
    release_claims_ends_the_owners_claims_and_makes_them_due(store).await;
    insert_within_checks_the_secret_count_and_inserts(store).await;
    claim_for_revoke_claims_unless_someone_is_at_work(store).await;

    // A store that offers group coordination passes its suite too.
    if let Some(coordination) = store.coordination() {
        coordination_conformance(coordination.as_ref()).await;
    }
}

/// An empty store counts and lists nothing and has no `next_due`.
pub async fn an_empty_store_has_nothing_due(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    assert!(store.list(&LeaseFilter::all()).await.unwrap().is_empty());
    assert_eq!(
        store.next_due().await.expect("next_due"),
        None,
        "an empty store has no next_due"
    );
    assert!(store
        .claim_due(ms_now(), "nobody", Duration::from_secs(60), 10)
        .await
        .expect("claim_due")
        .is_empty());
}

/// `insert` stores a new record with version 1 (the version passed in is ignored) and `get`
/// returns every field as stored.
pub async fn insert_stores_version_1_and_get_returns_every_field(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let mut a = record("conf-a", LeaseState::Active, far);
    a.claimed_by = Some("someone".into());
    a.claim_until = Some(far);
    a.revoke_attempts = 3;
    a.last_error = Some("ProviderUnavailable: injected".into());
    assert_eq!(a.version, 7, "the version passed in is not 1");
    let a = insert(store, &a).await;
    let got = store
        .get(&a.id)
        .await
        .expect("get")
        .expect("an inserted lease is found");
    assert_eq!(got, a, "get returns what insert stored, with version 1");
    let b = insert(store, &record("conf-a", LeaseState::Pending, far)).await;
    assert_eq!(store.get(&b.id).await.unwrap().as_ref(), Some(&b));
    clear(store).await;
}

/// `insert` of an id that exists fails with `AlreadyExists` and changes nothing.
pub async fn insert_refuses_an_existing_id(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-dup", LeaseState::Active, far)).await;
    let mut again = record("conf-dup", LeaseState::Revoking, far);
    again.id = a.id.clone();
    let dup = store
        .insert(&again)
        .await
        .expect_err("a duplicate insert must fail");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert_eq!(
        store.get(&a.id).await.unwrap().as_ref(),
        Some(&a),
        "a refused insert changes nothing"
    );
    assert_eq!(store.count(&LeaseFilter::all()).await.unwrap(), 1);
    clear(store).await;
}

/// `get` returns `None` for an unknown id.
pub async fn get_of_an_unknown_id_is_none(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    assert!(store
        .get(&LeaseId::generate("conf-unknown"))
        .await
        .expect("get")
        .is_none());
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-unknown", LeaseState::Active, far)).await;
    assert!(
        store
            .get(&LeaseId::generate("conf-unknown"))
            .await
            .expect("get")
            .is_none(),
        "another id of the same secret is unknown"
    );
    store.delete(&a.id, 1).await.unwrap();
}

/// `update` succeeds only at the stored version, stores the record with `version + 1` and
/// returns that version; another version is `Conflict` and changes nothing.
pub async fn update_is_a_compare_and_set_that_bumps_the_version(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-cas", LeaseState::Active, far)).await;
    let mut a2 = a.clone();
    a2.state = LeaseState::Revoking;
    a2.revoke_attempts = 2;
    a2.last_error = Some("ProviderUnavailable: injected".into());
    a2.identity = None;
    a2.claimed_by = Some("me".into());
    a2.claim_until = Some(far);
    let v = store
        .update(&a2)
        .await
        .expect("update with the current version");
    assert_eq!(v, 2, "update returns the new version");
    a2.version = 2;
    assert_eq!(
        store.get(&a.id).await.unwrap().unwrap(),
        a2,
        "every field is updated"
    );
    let stale = store
        .update(&a)
        .await
        .expect_err("an update at a stale version must fail");
    assert_eq!(stale.kind(), ErrorKind::Conflict, "{stale}");
    let mut ahead = a2.clone();
    ahead.version = 5;
    let e = store
        .update(&ahead)
        .await
        .expect_err("an update at a version ahead of the stored one must fail");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(
        store.get(&a.id).await.unwrap().unwrap(),
        a2,
        "a refused update changes nothing"
    );
    store.delete(&a.id, 2).await.unwrap();
}

/// `update` of a record that does not exist is `LeaseNotFound`, and stores nothing.
pub async fn update_of_a_missing_record_is_lease_not_found(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let mut ghost = record("conf-ghost", LeaseState::Active, far);
    ghost.version = 1;
    let missing = store
        .update(&ghost)
        .await
        .expect_err("an update of a missing lease fails");
    assert_eq!(missing.kind(), ErrorKind::LeaseNotFound, "{missing}");
    assert!(store.get(&ghost.id).await.unwrap().is_none());
    assert_empty(store, "after a test").await;
}

/// `delete` removes the record only at its stored version (else `Conflict`), and a record that
/// is gone is `LeaseNotFound`.
pub async fn delete_is_a_compare_and_set_and_a_missing_record_is_lease_not_found(
    store: &dyn LeaseStore,
) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-del", LeaseState::Active, far)).await;
    let mut a2 = a.clone();
    a2.state = LeaseState::Revoking;
    store.update(&a2).await.unwrap();
    let e = store
        .delete(&a.id, 1)
        .await
        .expect_err("a stale delete must fail");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        store.get(&a.id).await.unwrap().is_some(),
        "a refused delete removes nothing"
    );
    store
        .delete(&a.id, 2)
        .await
        .expect("delete with the current version");
    assert!(store.get(&a.id).await.unwrap().is_none());
    let e = store
        .delete(&a.id, 2)
        .await
        .expect_err("a second delete must fail");
    assert_eq!(e.kind(), ErrorKind::LeaseNotFound, "{e}");
    let e = store
        .delete(&LeaseId::generate("conf-del"), 1)
        .await
        .expect_err("deleting an unknown id fails");
    assert_eq!(e.kind(), ErrorKind::LeaseNotFound, "{e}");
    assert_empty(store, "after a test").await;
}

/// Six records: secrets `conf-even` / `conf-odd` alternating, the first three `Active`, the
/// rest `Irrevocable`.
async fn six_records(store: &dyn LeaseStore) {
    let far = ms_now() + chrono::Duration::seconds(3600);
    for i in 0..6 {
        let secret = if i % 2 == 0 { "conf-even" } else { "conf-odd" };
        let state = if i < 3 {
            LeaseState::Active
        } else {
            LeaseState::Irrevocable
        };
        insert(store, &record(secret, state, far)).await;
    }
}

/// `list` returns the matching records ordered by id, filtered by secret and states, from
/// after `after` and at most `limit` of them.
pub async fn list_is_ordered_by_id_and_honours_the_filter_after_and_limit(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    six_records(store).await;
    let all = store.list(&LeaseFilter::all()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "list is ordered by id"
    );
    let even = store.list(&LeaseFilter::secret("conf-even")).await.unwrap();
    assert_eq!(even.len(), 3);
    assert!(even.iter().all(|l| &*l.secret == "conf-even"));
    let irrevocable = store
        .list(&LeaseFilter::all().state(LeaseState::Irrevocable))
        .await
        .unwrap();
    assert_eq!(irrevocable.len(), 3);
    assert!(irrevocable
        .iter()
        .all(|l| l.state == LeaseState::Irrevocable));
    let odd_active = store
        .list(&LeaseFilter::secret("conf-odd").state(LeaseState::Active))
        .await
        .unwrap();
    assert_eq!(odd_active.len(), 1, "secret and state filters combine");
    let page1 = store.list(&LeaseFilter::all().limit(4)).await.unwrap();
    assert_eq!(ids(&page1), ids(&all[..4]), "limit takes the first ids");
    let page2 = store
        .list(&LeaseFilter::all().after(Some(page1[3].id.clone())).limit(4))
        .await
        .unwrap();
    assert_eq!(
        ids(&page2),
        ids(&all[4..]),
        "after starts past the given id"
    );
    clear(store).await;
}

/// `count` counts the records the secret and state filters match, ignoring `limit`.
pub async fn count_counts_every_match_ignoring_limit(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    six_records(store).await;
    let count = |f: LeaseFilter| async move { store.count(&f).await.expect("count") };
    assert_eq!(count(LeaseFilter::all()).await, 6);
    assert_eq!(count(LeaseFilter::secret("conf-even")).await, 3);
    assert_eq!(count(LeaseFilter::secret("conf-none")).await, 0);
    assert_eq!(
        count(LeaseFilter::all().states([LeaseState::Active, LeaseState::Irrevocable])).await,
        6
    );
    assert_eq!(
        count(LeaseFilter::secret("conf-odd").state(LeaseState::Active)).await,
        1
    );
    assert_eq!(
        count(LeaseFilter::all().limit(1)).await,
        6,
        "count ignores limit"
    );
    clear(store).await;
}

/// `claim_due` takes up to `limit` records that are due, not `Revoked` and not claimed, earliest
/// due first; it sets the owner and `claim_until = now + hold`, bumps the version and stores the
/// claim.
pub async fn claim_due_takes_due_unclaimed_records_earliest_first_up_to_limit(
    store: &dyn LeaseStore,
) {
    assert_empty(store, "before a test").await;
    let now = ms_now();
    let past = |s: i64| now - chrono::Duration::seconds(s);
    let d1 = insert(store, &record("conf-due", LeaseState::Active, past(30))).await;
    let d2 = insert(store, &record("conf-due", LeaseState::Revoking, past(20))).await;
    let d3 = insert(store, &record("conf-due", LeaseState::Pending, past(10))).await;
    let future = record(
        "conf-due",
        LeaseState::Active,
        now + chrono::Duration::seconds(600),
    );
    insert(store, &future).await;
    insert(store, &record("conf-due", LeaseState::Revoked, past(40))).await;
    let mut claimed_elsewhere = record("conf-due", LeaseState::Active, past(50));
    claimed_elsewhere.claimed_by = Some("other".into());
    claimed_elsewhere.claim_until = Some(now + chrono::Duration::seconds(300));
    insert(store, &claimed_elsewhere).await;

    let hold = Duration::from_secs(60);
    let first = store.claim_due(now, "owner-1", hold, 2).await.unwrap();
    assert_eq!(
        ids(&first),
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
            "the claim is stored"
        );
    }
    let second = store.claim_due(now, "owner-2", hold, 10).await.unwrap();
    assert_eq!(
        ids(&second),
        vec![d3.id.clone()],
        "claimed, future, revoked and elsewhere-claimed leases are not claimed again"
    );
    assert!(store
        .claim_due(now, "owner-3", hold, 10)
        .await
        .unwrap()
        .is_empty());
    clear(store).await;
}

/// Once a claim ended (`claim_until <= now`), `claim_due` hands the record to any owner,
/// whoever held it.
pub async fn claim_due_frees_ended_claims_for_any_owner(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let now = ms_now();
    let past = |s: i64| now - chrono::Duration::seconds(s);
    let d1 = insert(store, &record("conf-free", LeaseState::Active, past(30))).await;
    let d2 = insert(store, &record("conf-free", LeaseState::Revoking, past(20))).await;
    let mut elsewhere = record("conf-free", LeaseState::Active, past(50));
    elsewhere.claimed_by = Some("other".into());
    elsewhere.claim_until = Some(now + chrono::Duration::seconds(300));
    let elsewhere = insert(store, &elsewhere).await;
    insert(store, &record("conf-free", LeaseState::Revoked, past(40))).await;
    let hold = Duration::from_secs(60);
    let first = store.claim_due(now, "owner-1", hold, 10).await.unwrap();
    assert_eq!(ids(&first), vec![d1.id.clone(), d2.id.clone()]);
    let later = now + chrono::Duration::seconds(301);
    let third = store.claim_due(later, "owner-3", hold, 10).await.unwrap();
    let mut got = ids(&third);
    got.sort();
    let mut expect = vec![d1.id.clone(), d2.id.clone(), elsewhere.id.clone()];
    expect.sort();
    assert_eq!(
        got, expect,
        "ended claims are claimable by anyone; revoked never"
    );
    assert!(third
        .iter()
        .all(|l| l.claimed_by.as_deref() == Some("owner-3")
            && l.claim_until == Some(later + chrono::Duration::seconds(60))));
    clear(store).await;
}

/// Among concurrent `claim_due` callers a record is returned to exactly one.
pub async fn concurrent_claim_due_callers_never_get_the_same_record(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let now = ms_now();
    let mut due_ids = Vec::new();
    for _ in 0..60 {
        let due = now - chrono::Duration::seconds(1);
        due_ids.push(
            insert(store, &record("conf-race", LeaseState::Active, due))
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
    clear(store).await;
}

/// `next_due` is the minimum over non-`Revoked` records of `max(due_at, claim_until)`, and
/// `None` again once the store is empty.
pub async fn next_due_is_the_latest_of_due_at_and_claim_end_ignoring_revoked(
    store: &dyn LeaseStore,
) {
    assert_empty(store, "before a test").await;
    assert_eq!(store.next_due().await.unwrap(), None);
    let now = ms_now();
    let at = |s: i64| now + chrono::Duration::seconds(s);
    insert(store, &record("conf-next", LeaseState::Revoked, at(-100))).await;
    assert_eq!(
        store.next_due().await.unwrap(),
        None,
        "revoked records are never due"
    );
    let late = insert(store, &record("conf-next", LeaseState::Active, at(50))).await;
    assert_eq!(store.next_due().await.unwrap(), Some(late.due_at));
    // Due earlier, but claimed until later than `late` is due: `late` is still first.
    let mut claimed = record("conf-next", LeaseState::Active, at(-30));
    claimed.claimed_by = Some("other".into());
    claimed.claim_until = Some(at(80));
    insert(store, &claimed).await;
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(late.due_at),
        "a claimed record is due when its claim ends"
    );
    // Claimed until before `late` is due: the claim end is the earliest.
    let mut short = record("conf-next", LeaseState::Revoking, at(-30));
    short.claimed_by = Some("other".into());
    short.claim_until = Some(at(20));
    insert(store, &short).await;
    assert_eq!(store.next_due().await.unwrap(), Some(at(20)));
    // An ended claim does not delay its record.
    let mut ended = record("conf-next", LeaseState::Active, at(10));
    ended.claimed_by = Some("dead".into());
    ended.claim_until = Some(at(-5));
    insert(store, &ended).await;
    assert_eq!(store.next_due().await.unwrap(), Some(at(10)));
    clear(store).await;
    assert_eq!(store.next_due().await.unwrap(), None);
}

/// `installation_id` is not empty and returns the same id on every call, records or none.
pub async fn installation_id_is_stable_and_not_empty(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let first = store.installation_id().await.expect("installation_id");
    assert!(!first.is_empty(), "the installation id is not empty");
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-inst", LeaseState::Active, far)).await;
    assert_eq!(store.installation_id().await.unwrap(), first);
    store.delete(&a.id, 1).await.unwrap();
    assert_eq!(
        store.installation_id().await.unwrap(),
        first,
        "the installation id does not change with the records"
    );
}

/// Two stores with their own data never share an installation id. `a` and `b` must be
/// separate stores (another database or file), not two handles on one.
pub async fn installation_ids_differ_between_stores(a: &dyn LeaseStore, b: &dyn LeaseStore) {
    let ia = a.installation_id().await.expect("installation_id");
    let ib = b.installation_id().await.expect("installation_id");
    assert_ne!(ia, ib, "two stores share an installation id");
}

/// A store of typed records reports no damaged row, and `remove_damaged` removes only damaged
/// rows: for the id of a typed record it returns false and leaves the record.
pub async fn damaged_is_empty_and_remove_damaged_leaves_typed_records_alone(
    store: &dyn LeaseStore,
) {
    assert_empty(store, "before a test").await;
    let far = ms_now() + chrono::Duration::seconds(3600);
    let a = insert(store, &record("conf-dmg", LeaseState::Active, far)).await;
    assert!(store.damaged(10).await.expect("damaged").is_empty());
    assert!(
        !store
            .remove_damaged(a.id.as_str())
            .await
            .expect("remove_damaged"),
        "remove_damaged does not remove a typed record"
    );
    assert_eq!(store.get(&a.id).await.unwrap().as_ref(), Some(&a));
    assert!(!store.remove_damaged("no-such-row").await.unwrap());
    clear(store).await;
}

/// `release_claims(owner, now)` ends every claim `owner` holds at `now`, makes each record due
/// at once (`due_at = min(due_at, now)`), returns how many it released, and leaves others'
/// claims and ended claims alone.
pub async fn release_claims_ends_the_owners_claims_and_makes_them_due(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
    let now = ms_now();
    let at = |s: i64| now + chrono::Duration::seconds(s);
    let claimed = |state: LeaseState, due: i64, owner: &str, until: i64| {
        let mut r = record("conf-release", state, at(due));
        r.claimed_by = Some(owner.into());
        r.claim_until = Some(at(until));
        r
    };
    let mine_late = insert(store, &claimed(LeaseState::Active, 600, "me", 60)).await;
    let mine_early = insert(store, &claimed(LeaseState::Revoking, -30, "me", 60)).await;
    let theirs = insert(store, &claimed(LeaseState::Active, 600, "other", 60)).await;
    let mine_ended = insert(store, &claimed(LeaseState::Active, 600, "me", -1)).await;

    assert_eq!(
        store
            .release_claims("me", now)
            .await
            .expect("release_claims"),
        2,
        "the two live claims of the owner are released"
    );
    let get = |id: LeaseId| async move { store.get(&id).await.unwrap().unwrap() };
    let l = get(mine_late.id.clone()).await;
    assert_eq!((l.claimed_by.as_deref(), l.claim_until), (None, None));
    assert_eq!(l.due_at, now, "a released record is due at once");
    assert!(l.version > mine_late.version, "a release bumps the version");
    let l = get(mine_early.id.clone()).await;
    assert_eq!((l.claimed_by.as_deref(), l.claim_until), (None, None));
    assert_eq!(l.due_at, mine_early.due_at, "an earlier due time is kept");
    assert_eq!(l.state, LeaseState::Revoking, "the state is kept");
    assert_eq!(
        get(theirs.id.clone()).await,
        theirs,
        "another owner's claim is kept"
    );
    assert_eq!(
        get(mine_ended.id.clone()).await,
        mine_ended,
        "an ended claim is left alone"
    );
    let due = store
        .claim_due(now, "next", Duration::from_secs(60), 10)
        .await
        .unwrap();
    let mut got = ids(&due);
    got.sort();
    let mut expect = vec![mine_late.id.clone(), mine_early.id.clone()];
    expect.sort();
    assert_eq!(got, expect, "released records are claimable at once");
    assert_eq!(store.release_claims("nobody", now).await.unwrap(), 0);
    clear(store).await;
}

/// `count` ignores `after` (and `limit`): it counts every lease the filter matches.
pub async fn count_ignores_after(store: &dyn LeaseStore) {
    assert_empty(store, "before a test").await;
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
    assert_empty(store, "before a test").await;
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
    assert_empty(store, "before a test").await;
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
    assert_empty(store, "before a test").await;
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
    group_claim_returns_the_holder_and_end_or_none(store).await;
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

/// `group_claim` returns `None` for a group nobody claimed, the holder and the end of its
/// claim while it is held, and `None` again once the holder released it.
pub async fn group_claim_returns_the_holder_and_end_or_none(store: &dyn CoordinationStore) {
    let g = fresh_group();
    assert_eq!(store.group_claim(&g).await.expect("group_claim"), None);
    let now = ms_now();
    assert!(store
        .claim_group(&g, "holder", now, Duration::from_secs(45))
        .await
        .unwrap());
    let claim = store
        .group_claim(&g)
        .await
        .expect("group_claim")
        .expect("a claimed group has a claim");
    assert_eq!(claim.owner, "holder");
    assert_eq!(claim.until, now + chrono::Duration::seconds(45));
    let other = fresh_group();
    assert_eq!(
        store.group_claim(&other).await.unwrap(),
        None,
        "another group's claim is not this one's"
    );
    assert!(store.release_group(&g, "holder").await.unwrap());
    assert_eq!(store.group_claim(&g).await.unwrap(), None);
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

/// Says on stderr that `test` does not apply to `p` and why (a capability it lacks).
fn skipped(p: &dyn DynamicSecretProvider, test: &str, why: &str) {
    eprintln!("{test}: not checked for provider {:?}: {why}", p.kind());
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
        skipped(
            p,
            "create_refuses_an_existing_username",
            "its credentials are not revocable: it speaks for one fixed user",
        );
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
        skipped(
            p,
            "failed_create_leaves_nothing_behind",
            "it needs no password, so the suite has no request it must refuse",
        );
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
        skipped(
            p,
            "renew_extends_a_live_credential",
            "its leases are not renewable",
        );
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
/// temporary (or persistent: temporary, with the provider's own tries used up), so the manager
/// retries it. `unreachable` is a provider whose backend is down.
pub async fn revoke_failure_while_unreachable_is_temporary(
    unreachable: &dyn DynamicSecretProvider,
) {
    let e = unreachable
        .revoke(&ExternalRef::new(fresh_username(unreachable)))
        .await
        .expect_err("revoke cannot succeed while the backend is unreachable");
    assert!(
        e.is_retryable(),
        "a temporary revoke failure is marked temporary or persistent: {e}"
    );
}
