//! The provider's state paths against mocked MemoryDB clients: issue (user `creating` then
//! `active`, ACL `modifying` then `active`), refusals and their error kinds, compensation after a
//! failure past `CreateUser`, the per-ACL limit, revoke's idempotence and retries, validate's
//! refusals, and list_managed's pagination and tag filter.

use std::time::Duration;

use aws_sdk_memorydb::operation::create_user::{CreateUserError, CreateUserOutput};
use aws_sdk_memorydb::operation::delete_user::{DeleteUserError, DeleteUserOutput};
use aws_sdk_memorydb::operation::describe_acls::{DescribeACLsError, DescribeAcLsOutput};
use aws_sdk_memorydb::operation::describe_clusters::{
    DescribeClustersError, DescribeClustersOutput,
};
use aws_sdk_memorydb::operation::describe_users::{DescribeUsersError, DescribeUsersOutput};
use aws_sdk_memorydb::operation::list_tags::ListTagsOutput;
use aws_sdk_memorydb::operation::update_acl::{UpdateACLError, UpdateAclOutput};
use aws_sdk_memorydb::types::{Acl, AclPendingChanges, Cluster, Tag, User};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use leasehold_core::{
    CreateRequest, DynamicSecretProvider, ErrorKind, ExternalRef, LeaseId, Readiness,
    StatementTemplate,
};
use leasehold_memorydb::{MemoryDbConfig, MemoryDbProvider, ATTR_ACL, ATTR_CLUSTER, TAG_ACL};
use secrecy::SecretString;

const USER: &str = "lh-mocked-user";
const ACL: &str = "orders-acl";
const CLUSTER: &str = "orders";
const PW: &str = "Mocked-password-0123456789-abcdefXYZ";

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("mocked failure")
        .build()
}

fn user(name: &str, status: &str) -> User {
    User::builder()
        .name(name)
        .status(status)
        .arn(format!(
            "arn:aws:memorydb:us-east-1:123456789012:user/{name}"
        ))
        .access_string("on ~* +@all")
        .build()
}

fn acl(status: &str, users: &[&str]) -> Acl {
    Acl::builder()
        .name(ACL)
        .status(status)
        .set_user_names(Some(users.iter().map(|u| u.to_string()).collect()))
        .build()
}

fn acls(a: Acl) -> DescribeAcLsOutput {
    DescribeAcLsOutput::builder().acls(a).build()
}

fn users(u: User) -> DescribeUsersOutput {
    DescribeUsersOutput::builder().users(u).build()
}

fn config() -> MemoryDbConfig {
    MemoryDbConfig::new(CLUSTER)
        .acl_name(ACL)
        .poll_interval(Duration::from_millis(5))
        .ready_timeout(Duration::from_secs(2))
        .user_state_wait(Duration::from_millis(300))
}

fn provider_with(config: MemoryDbConfig, rules: &[&Rule]) -> MemoryDbProvider {
    let client = mock_client!(aws_sdk_memorydb, RuleMode::MatchAny, rules);
    MemoryDbProvider::from_client(config, client).unwrap()
}

fn provider(rules: &[&Rule]) -> MemoryDbProvider {
    provider_with(config(), rules)
}

fn request() -> CreateRequest {
    CreateRequest::new(
        LeaseId::generate("orders-cache"),
        USER,
        Duration::from_secs(900),
    )
    .with_password(SecretString::from(PW))
}

/// The rules of an issue that goes well: the user is `creating` once, the ACL is `modifying`
/// once after `UpdateACL`.
struct Happy {
    create: Rule,
    user_state: Rule,
    acl_state: Rule,
    update: Rule,
    delete: Rule,
}

impl Happy {
    fn new() -> Self {
        Happy {
            create: mock!(aws_sdk_memorydb::Client::create_user)
                .match_requests(|r| {
                    r.user_name() == Some(USER)
                        && r.access_string() == Some("on ~* +@all")
                        && r.authentication_mode()
                            .is_some_and(|m| m.passwords() == [PW])
                        && r.tags()
                            .iter()
                            .any(|t| t.key() == Some(TAG_ACL) && t.value() == Some(ACL))
                        && r.tags()
                            .iter()
                            .any(|t| t.key() == Some("leasehold:lease-id"))
                })
                .then_output(|| {
                    CreateUserOutput::builder()
                        .user(user(USER, "creating"))
                        .build()
                }),
            user_state: mock!(aws_sdk_memorydb::Client::describe_users)
                .sequence()
                .output(|| users(user(USER, "creating")))
                .output(|| users(user(USER, "active")))
                .repeatedly()
                .build(),
            acl_state: mock!(aws_sdk_memorydb::Client::describe_acls)
                .sequence()
                .output(|| acls(acl("active", &["default"])))
                .times(2)
                .output(|| {
                    let mut a = acl("modifying", &["default"]);
                    a.pending_changes =
                        Some(AclPendingChanges::builder().user_names_to_add(USER).build());
                    acls(a)
                })
                .output(|| acls(acl("active", &["default", USER])))
                .repeatedly()
                .build(),
            update: mock!(aws_sdk_memorydb::Client::update_acl)
                .match_requests(|r| r.acl_name() == Some(ACL) && r.user_names_to_add() == [USER])
                .then_output(|| UpdateAclOutput::builder().build()),
            delete: mock!(aws_sdk_memorydb::Client::delete_user)
                .then_output(|| DeleteUserOutput::builder().build()),
        }
    }

    fn rules<'a>(&'a self, extra: &[&'a Rule]) -> Vec<&'a Rule> {
        let mut v = extra.to_vec();
        v.extend([
            &self.create,
            &self.user_state,
            &self.acl_state,
            &self.update,
            &self.delete,
        ]);
        v
    }
}

#[tokio::test]
async fn issue_waits_for_the_user_and_the_acl_to_be_active() {
    let h = Happy::new();
    let p = provider(&h.rules(&[]));
    let created = p.create(&request()).await.expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(created.external.id, USER);
    assert_eq!(created.external.attr(ATTR_ACL), Some(ACL));
    assert_eq!(created.external.attr(ATTR_CLUSTER), Some(CLUSTER));
    assert_eq!(h.create.num_calls(), 1);
    assert_eq!(h.update.num_calls(), 1);
    assert!(h.user_state.num_calls() >= 2, "waited out `creating`");
    assert!(h.acl_state.num_calls() >= 4, "waited out `modifying`");
    assert_eq!(h.delete.num_calls(), 0);
    let shown = format!("{created:?} {p:?}");
    assert!(!shown.contains(PW), "{shown}");
}

#[tokio::test]
async fn without_waiting_the_result_is_unchecked() {
    let h = Happy::new();
    let p = provider(&h.rules(&[]));
    let created = p
        .create(&request().with_wait_ready(false))
        .await
        .expect("create");
    assert_eq!(created.readiness, Readiness::Unchecked);
    assert_eq!(h.update.num_calls(), 1, "the user still joins the ACL");
}

#[tokio::test]
async fn create_user_refusals_map_to_kinds_and_leave_nothing_to_undo() {
    for (code, kind, temporary) in [
        ("UserAlreadyExistsFault", ErrorKind::AlreadyExists, false),
        ("DuplicateUserNameFault", ErrorKind::AlreadyExists, false),
        ("UserQuotaExceededFault", ErrorKind::QuotaExceeded, false),
        (
            "InvalidParameterValueException",
            ErrorKind::InvalidConfig,
            false,
        ),
        ("AccessDeniedException", ErrorKind::PermissionDenied, false),
        ("ThrottlingException", ErrorKind::Throttled, true),
        (
            "ServiceUnavailableException",
            ErrorKind::ProviderUnavailable,
            true,
        ),
    ] {
        let refuse = mock!(aws_sdk_memorydb::Client::create_user)
            .then_error(move || CreateUserError::generic(meta(code)));
        let h = Happy::new();
        let p = provider(&h.rules(&[&refuse]));
        let e = p.create(&request()).await.expect_err(code);
        assert_eq!(e.kind(), kind, "{code}: {e}");
        assert_eq!(e.is_temporary(), temporary, "{code}: {e}");
        assert_eq!(e.context("user"), Some(USER));
        assert_eq!(h.update.num_calls(), 0, "{code}");
        assert_eq!(
            h.delete.num_calls(),
            0,
            "{code}: nothing was made, nothing is deleted"
        );
    }
}

#[tokio::test]
async fn a_busy_acl_is_waited_for_not_refused() {
    let busy = mock!(aws_sdk_memorydb::Client::update_acl)
        .sequence()
        .error(|| UpdateACLError::generic(meta("InvalidACLStateFault")))
        .times(2)
        .output(|| UpdateAclOutput::builder().build())
        .build();
    let h = Happy::new();
    let p = provider(&h.rules(&[&busy]));
    let created = p.create(&request()).await.expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(busy.num_calls(), 3);
    assert_eq!(h.delete.num_calls(), 0);
}

#[tokio::test]
async fn a_failed_update_acl_deletes_the_user_riding_out_its_state() {
    let refuse = mock!(aws_sdk_memorydb::Client::update_acl)
        .then_error(|| UpdateACLError::generic(meta("InvalidParameterValueException")));
    // The user is still settling when compensation deletes it.
    let delete = mock!(aws_sdk_memorydb::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("InvalidUserStateFault")))
        .output(|| DeleteUserOutput::builder().build())
        .build();
    let h = Happy::new();
    let p = provider(&h.rules(&[&refuse, &delete]));
    let e = p.create(&request()).await.expect_err("UpdateACL refused");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert_eq!(e.context("operation"), Some("UpdateACL"));
    assert_eq!(delete.num_calls(), 2, "compensation retried DeleteUser");
    assert!(!e.to_string().contains(PW));
}

#[tokio::test]
async fn a_user_that_never_gets_active_times_out_and_is_deleted() {
    let stuck = mock!(aws_sdk_memorydb::Client::describe_users)
        .then_output(|| users(user(USER, "creating")));
    let h = Happy::new();
    let p = provider_with(
        config().ready_timeout(Duration::from_millis(100)),
        &h.rules(&[&stuck]),
    );
    let e = p.create(&request()).await.expect_err("never active");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_temporary());
    assert_eq!(
        h.update.num_calls(),
        0,
        "a user that is not active never joins"
    );
    assert_eq!(h.delete.num_calls(), 1, "and is deleted");
}

#[tokio::test]
async fn an_acl_that_stays_modifying_times_out_and_the_user_is_deleted() {
    let stuck = mock!(aws_sdk_memorydb::Client::describe_acls)
        .then_output(|| acls(acl("modifying", &["default"])));
    let h = Happy::new();
    let p = provider_with(
        config().ready_timeout(Duration::from_millis(200)),
        &h.rules(&[&stuck]),
    );
    let e = p.create(&request()).await.expect_err("ACL never active");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("stayed modifying"), "{e}");
    assert_eq!(h.update.num_calls(), 0);
    assert_eq!(h.delete.num_calls(), 1);
}

#[tokio::test]
async fn a_full_acl_is_refused_before_create_user() {
    let names: Vec<String> = (0..100).map(|i| format!("member-{i}")).collect();
    let full = mock!(aws_sdk_memorydb::Client::describe_acls).then_output(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        acls(acl("active", &refs))
    });
    let h = Happy::new();
    let p = provider(&h.rules(&[&full]));
    let e = p.create(&request()).await.expect_err("full");
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert_eq!(e.context("acl"), Some(ACL));
    assert_eq!(h.create.num_calls(), 0);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_call() {
    let h = Happy::new();
    let p = provider(&h.rules(&[]));
    for name in ["LH-Upper", "lh-", "1abc", "default", "lh_x"] {
        let req = CreateRequest::new(LeaseId::generate("s"), name, Duration::from_secs(60))
            .with_password(SecretString::from(PW));
        let e = p.create(&req).await.expect_err(name);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
    }
    let no_pw = CreateRequest::new(LeaseId::generate("s"), USER, Duration::from_secs(60));
    assert_eq!(
        p.create(&no_pw).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // A password the statement's checks refuse (too short) is named, not quoted.
    let short = request().with_password(SecretString::from("short-pw"));
    let e = p.create(&short).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{e}");
    assert!(!e.to_string().contains("short-pw"), "{e}");
    let e = p.revoke(&ExternalRef::new("Not Valid")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        h.create.num_calls() + h.delete.num_calls() + h.acl_state.num_calls(),
        0
    );
}

#[tokio::test]
async fn revoke_is_idempotent_and_rides_out_a_busy_user() {
    let gone = mock!(aws_sdk_memorydb::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("UserNotFoundFault")));
    let p = provider(&[&gone]);
    p.revoke(&ExternalRef::new(USER))
        .await
        .expect("a missing user is revoked");
    assert_eq!(gone.num_calls(), 1);

    let busy_then_ok = mock!(aws_sdk_memorydb::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("InvalidUserStateFault")))
        .times(3)
        .output(|| DeleteUserOutput::builder().build())
        .build();
    let vanished = mock!(aws_sdk_memorydb::Client::describe_users)
        .sequence()
        .output(|| users(user(USER, "deleting")))
        .error(|| DescribeUsersError::generic(meta("UserNotFoundFault")))
        .repeatedly()
        .build();
    let p = provider(&[&busy_then_ok, &vanished]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(busy_then_ok.num_calls(), 4);
    assert_eq!(vanished.num_calls(), 2, "waited for `deleting` to end");

    let always_busy = mock!(aws_sdk_memorydb::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("InvalidUserStateFault")));
    let p = provider(&[&always_busy]);
    let e = p
        .revoke(&ExternalRef::new(USER))
        .await
        .expect_err("still busy");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    // Retried until revoke_timeout already: persistent, so the manager retries it later on
    // its schedule, not at once.
    assert!(
        e.is_persistent() && !e.is_temporary(),
        "the manager retries later: {e}"
    );
    assert!(always_busy.num_calls() >= 2);
}

#[tokio::test]
async fn revoke_errors_are_classified() {
    for (code, kind, temporary) in [
        ("AccessDeniedException", ErrorKind::PermissionDenied, false),
        ("ThrottlingException", ErrorKind::Throttled, true),
        (
            "InvalidParameterValueException",
            ErrorKind::InvalidConfig,
            false,
        ),
        ("InternalServerError", ErrorKind::ProviderUnavailable, true),
    ] {
        let failing = mock!(aws_sdk_memorydb::Client::delete_user)
            .then_error(move || DeleteUserError::generic(meta(code)));
        let p = provider(&[&failing]);
        let e = p.revoke(&ExternalRef::new(USER)).await.expect_err(code);
        assert_eq!(e.kind(), kind, "{code}: {e}");
        assert_eq!(e.is_temporary(), temporary, "{code}: {e}");
        assert_eq!(e.context("user"), Some(USER));
    }
}

#[tokio::test]
async fn revoke_uses_the_revocation_statement() {
    let delete = mock!(aws_sdk_memorydb::Client::delete_user)
        .match_requests(|r| r.user_name() == Some(USER))
        .then_output(|| DeleteUserOutput::builder().build());
    let gone = mock!(aws_sdk_memorydb::Client::describe_users)
        .then_error(|| DescribeUsersError::generic(meta("UserNotFoundFault")));
    let statement = StatementTemplate::parse(r#"{"UserName":"{{lowercase username}}"}"#).unwrap();
    let p = provider_with(config().revocation_statement(statement), &[&delete, &gone]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(delete.num_calls(), 1);
}

fn cluster(acl_name: &str) -> DescribeClustersOutput {
    DescribeClustersOutput::builder()
        .clusters(Cluster::builder().name(CLUSTER).acl_name(acl_name).build())
        .build()
}

#[tokio::test]
async fn validate_refuses_open_access_missing_and_mismatched() {
    let open =
        mock!(aws_sdk_memorydb::Client::describe_clusters).then_output(|| cluster("open-access"));
    let p = provider_with(MemoryDbConfig::new(CLUSTER), &[&open]);
    let e = p.validate().await.expect_err("open-access");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.to_string().contains("open-access"), "{e}");

    let missing = mock!(aws_sdk_memorydb::Client::describe_clusters)
        .then_error(|| DescribeClustersError::generic(meta("ClusterNotFoundFault")));
    let e = provider(&[&missing])
        .validate()
        .await
        .expect_err("no cluster");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("not found"), "{e}");

    let other =
        mock!(aws_sdk_memorydb::Client::describe_clusters).then_output(|| cluster("other-acl"));
    let e = provider(&[&other]).validate().await.expect_err("mismatch");
    assert!(e.to_string().contains("other-acl"), "{e}");

    let ours = mock!(aws_sdk_memorydb::Client::describe_clusters).then_output(|| cluster(ACL));
    let no_acl = mock!(aws_sdk_memorydb::Client::describe_acls)
        .then_error(|| DescribeACLsError::generic(meta("ACLNotFoundFault")));
    let e = provider(&[&ours, &no_acl])
        .validate()
        .await
        .expect_err("no ACL");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");

    let denied = mock!(aws_sdk_memorydb::Client::describe_clusters)
        .then_error(|| DescribeClustersError::generic(meta("AccessDeniedException")));
    let e = provider(&[&denied])
        .validate()
        .await
        .expect_err("bad credentials");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    let acl_ok = mock!(aws_sdk_memorydb::Client::describe_acls)
        .then_output(|| acls(acl("active", &["default"])));
    // The ACL is taken from the cluster when not configured.
    let p = provider_with(MemoryDbConfig::new(CLUSTER), &[&ours, &acl_ok]);
    p.validate().await.expect("valid");
    assert!(format!("{p:?}").contains(ACL));
}

#[tokio::test]
async fn list_managed_pages_and_keeps_only_this_acls_users() {
    let page1 = mock!(aws_sdk_memorydb::Client::describe_users)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            DescribeUsersOutput::builder()
                .users(user("lh-ours-1", "active"))
                .users(user("lh-by-hand", "active"))
                .users(user("default", "active"))
                .next_token("page-2")
                .build()
        });
    let page2 = mock!(aws_sdk_memorydb::Client::describe_users)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            DescribeUsersOutput::builder()
                .users(user("lh-ours-2", "active"))
                .users(user("lh-other-acl", "active"))
                .users(user("lh-leaving", "deleting"))
                .build()
        });
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let tags = mock!(aws_sdk_memorydb::Client::list_tags).then_compute_output(move |r| {
        let arn = r.resource_arn().unwrap_or_default();
        let mut out = ListTagsOutput::builder();
        if arn.ends_with("/lh-ours-1")
            || arn.ends_with("/lh-ours-2")
            || arn.ends_with("/lh-other-acl")
        {
            out = out
                .tag_list(tag("leasehold:managed-by", "leasehold"))
                .tag_list(tag("leasehold:lease-id", "orders-cache/abc"));
            let acl_name = if arn.ends_with("/lh-other-acl") {
                "another-acl"
            } else {
                ACL
            };
            out = out.tag_list(tag(TAG_ACL, acl_name));
        }
        out.build()
    });
    let p = provider(&[&page1, &page2, &tags]);
    let found = p.list_managed("lh-").await.expect("list");
    let mut names: Vec<&str> = found.iter().map(|m| m.external.id.as_str()).collect();
    names.sort();
    assert_eq!(names, ["lh-ours-1", "lh-ours-2"]);
    assert!(found
        .iter()
        .all(|m| m.lease_id.as_deref() == Some("orders-cache/abc")));
    assert_eq!(page2.num_calls(), 1);
    assert_eq!(
        tags.num_calls(),
        4,
        "tags read for prefixed, non-deleting users only"
    );
}
