//! The provider's state machines against mocked SDK clients: users `creating`, groups
//! `modifying`, throttling, not found, busy users on revoke, the quota check, compensation,
//! validate's refusals, and the static role target's two-password rotation. Time is paused, so the
//! waits cost nothing.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_elasticache::config::retry::RetryConfig;
use aws_sdk_elasticache::operation::create_user::{CreateUserError, CreateUserOutput};
use aws_sdk_elasticache::operation::delete_user::{DeleteUserError, DeleteUserOutput};
use aws_sdk_elasticache::operation::describe_serverless_caches::{
    DescribeServerlessCachesError, DescribeServerlessCachesOutput,
};
use aws_sdk_elasticache::operation::describe_user_groups::{
    DescribeUserGroupsError, DescribeUserGroupsOutput,
};
use aws_sdk_elasticache::operation::describe_users::{DescribeUsersError, DescribeUsersOutput};
use aws_sdk_elasticache::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_elasticache::operation::modify_user::{ModifyUserError, ModifyUserOutput};
use aws_sdk_elasticache::operation::modify_user_group::{
    ModifyUserGroupError, ModifyUserGroupOutput,
};
use aws_sdk_elasticache::types::{
    Authentication, AuthenticationType, ServerlessCache, Tag, User, UserGroup,
    UserGroupPendingChanges,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use leasehold_core::static_role::{
    MemoryPublisher, RotationOutcome, RotationSchedule, Stage, StaticCredential, StaticRoleOptions,
    StaticRolePublisher, StaticRoleRotator, StaticRoleTarget,
};
use leasehold_core::{
    CreateRequest, DynamicSecretProvider, ErrorKind, ExternalRef, LeaseId, PasswordPolicy,
    Readiness,
};
use leasehold_core::{LeaseStore, MemoryStore};
use leasehold_elasticache::{
    ElastiCacheConfig, ElastiCacheProvider, ElastiCacheUserTarget, Target, MAX_USERS_PER_GROUP,
};
use secrecy::{ExposeSecret, SecretString};

const GROUP: &str = "orders-users";
const CACHE: &str = "orders";
const USER: &str = "lh-mocked-user";

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("mocked failure")
        .build()
}

fn arn(id: &str) -> String {
    format!("arn:aws:elasticache:us-east-1:123456789012:user:{id}")
}

fn user(id: &str, name: &str, status: &str, auth: AuthenticationType, access: &str) -> User {
    User::builder()
        .user_id(id)
        .user_name(name)
        .status(status)
        .engine("redis")
        .access_string(access)
        .arn(arn(id))
        .authentication(Authentication::builder().r#type(auth).build())
        .build()
}

fn ours(status: &str) -> User {
    user(
        USER,
        USER,
        status,
        AuthenticationType::Password,
        "on ~* +@all",
    )
}

fn users_out(users: Vec<User>) -> DescribeUsersOutput {
    DescribeUsersOutput::builder()
        .set_users(Some(users))
        .build()
}

fn group(status: &str, members: &[&str], pending_add: &[&str]) -> UserGroup {
    let mut b = UserGroup::builder()
        .user_group_id(GROUP)
        .status(status)
        .engine("redis")
        .set_user_ids(Some(members.iter().map(|s| s.to_string()).collect()));
    if !pending_add.is_empty() {
        b = b.pending_changes(
            UserGroupPendingChanges::builder()
                .set_user_ids_to_add(Some(pending_add.iter().map(|s| s.to_string()).collect()))
                .build(),
        );
    }
    b.build()
}

fn groups_out(g: UserGroup) -> DescribeUserGroupsOutput {
    DescribeUserGroupsOutput::builder().user_groups(g).build()
}

fn config() -> ElastiCacheConfig {
    ElastiCacheConfig::new(Target::ServerlessCache(CACHE.into()), GROUP)
        .ready_timeout(Duration::from_secs(60))
        .revoke_wait(Duration::from_secs(10))
}

fn provider_with(config: ElastiCacheConfig, rules: &[&Rule]) -> ElastiCacheProvider {
    let client = mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::disabled()));
    ElastiCacheProvider::from_client(config, client).unwrap()
}

fn provider(rules: &[&Rule]) -> ElastiCacheProvider {
    provider_with(config(), rules)
}

fn request() -> CreateRequest {
    CreateRequest::new(
        LeaseId::generate("orders-cache"),
        USER,
        Duration::from_secs(900),
    )
    .with_password(PasswordPolicy::elasticache().generate().unwrap())
}

fn create_ok() -> Rule {
    mock!(aws_sdk_elasticache::Client::create_user).then_output(|| {
        CreateUserOutput::builder()
            .user_id(USER)
            .status("creating")
            .build()
    })
}

fn modify_group_ok() -> Rule {
    mock!(aws_sdk_elasticache::Client::modify_user_group).then_output(|| {
        ModifyUserGroupOutput::builder()
            .user_group_id(GROUP)
            .status("modifying")
            .build()
    })
}

fn delete_ok() -> Rule {
    mock!(aws_sdk_elasticache::Client::delete_user).then_output(|| {
        DeleteUserOutput::builder()
            .user_id(USER)
            .status("deleting")
            .build()
    })
}

fn user_gone() -> Rule {
    mock!(aws_sdk_elasticache::Client::describe_users)
        .then_error(|| DescribeUsersError::generic(meta("UserNotFound")))
}

#[tokio::test(start_paused = true)]
async fn create_waits_for_the_user_and_the_group_then_confirms() {
    let create = create_ok();
    // creating, creating, active.
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .sequence()
        .output(|| users_out(vec![ours("creating")]))
        .times(2)
        .output(|| users_out(vec![ours("active")]))
        .repeatedly()
        .build();
    // Quota check and the driver's first look: active; then modifying with the user pending;
    // then active with the user.
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .sequence()
        .output(|| groups_out(group("active", &["default"], &[])))
        .times(2)
        .output(|| groups_out(group("modifying", &["default"], &[USER])))
        .times(3)
        .output(|| groups_out(group("active", &["default", USER], &[])))
        .repeatedly()
        .build();
    let modify = modify_group_ok();
    let p = provider(&[&create, &describe_user, &describe_group, &modify]);
    let created = p.create(&request()).await.expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(created.external.id, USER);
    assert_eq!(create.num_calls(), 1);
    assert_eq!(modify.num_calls(), 1);
    assert!(describe_user.num_calls() >= 3);
    assert!(describe_group.num_calls() >= 6);
}

#[tokio::test(start_paused = true)]
async fn create_without_waiting_returns_once_the_change_is_accepted() {
    let create = create_ok();
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("active")]));
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .sequence()
        .output(|| groups_out(group("active", &["default"], &[])))
        .times(2)
        .output(|| groups_out(group("modifying", &["default"], &[USER])))
        .repeatedly()
        .build();
    let modify = modify_group_ok();
    let p = provider(&[&create, &describe_user, &describe_group, &modify]);
    let created = p
        .create(&request().with_wait_ready(false))
        .await
        .expect("create");
    assert_eq!(created.readiness, Readiness::Unchecked);
    assert_eq!(modify.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_busy_group_is_waited_out_not_refused() {
    let create = create_ok();
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("active")]));
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .sequence()
        .output(|| groups_out(group("active", &["default"], &[])))
        .times(1)
        // Someone else's change is in flight.
        .output(|| groups_out(group("modifying", &["default"], &["someone"])))
        .times(3)
        .output(|| groups_out(group("active", &["default", "someone"], &[])))
        .times(1)
        .output(|| groups_out(group("active", &["default", "someone", USER], &[])))
        .repeatedly()
        .build();
    // The group went modifying again between Describe and Modify once.
    let modify = mock!(aws_sdk_elasticache::Client::modify_user_group)
        .sequence()
        .error(|| ModifyUserGroupError::generic(meta("InvalidUserGroupState")))
        .times(1)
        .output(|| ModifyUserGroupOutput::builder().status("modifying").build())
        .repeatedly()
        .build();
    let p = provider(&[&create, &describe_user, &describe_group, &modify]);
    let created = p.create(&request()).await.expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(modify.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_server_errors_are_temporary() {
    for (code, kind) in [
        ("Throttling", ErrorKind::Throttled),
        ("ServiceUnavailable", ErrorKind::ProviderUnavailable),
    ] {
        let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
            .then_output(|| groups_out(group("active", &["default"], &[])));
        let create = mock!(aws_sdk_elasticache::Client::create_user)
            .then_error(move || CreateUserError::generic(meta(code)));
        // A server error may have created the user: it is deleted (not found: never made).
        let delete = mock!(aws_sdk_elasticache::Client::delete_user)
            .then_error(|| DeleteUserError::generic(meta("UserNotFound")));
        let p = provider(&[&describe_group, &create, &delete]);
        let err = p.create(&request()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{code}: {err}");
        assert!(err.is_temporary(), "{code}: {err}");
        assert_eq!(err.context("operation"), Some("CreateUser"));
        assert_eq!(
            delete.num_calls(),
            usize::from(code == "ServiceUnavailable"),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_group_is_refused_before_create_user() {
    let mut members: Vec<String> = vec!["default".into()];
    members.extend((1..MAX_USERS_PER_GROUP).map(|i| format!("member-{i}")));
    let describe_group =
        mock!(aws_sdk_elasticache::Client::describe_user_groups).then_output(move || {
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            groups_out(group("active", &refs, &[]))
        });
    let create = create_ok();
    let p = provider(&[&describe_group, &create]);
    let err = p.create(&request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    assert_eq!(create.num_calls(), 0, "no CreateUser");
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_create_user_deletes_the_user() {
    let create = create_ok();
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("active")]));
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_output(|| groups_out(group("active", &["default"], &[])));
    let modify = mock!(aws_sdk_elasticache::Client::modify_user_group)
        .then_error(|| ModifyUserGroupError::generic(meta("AccessDenied")));
    let delete = delete_ok();
    let p = provider(&[&create, &describe_user, &describe_group, &modify, &delete]);
    let err = p.create(&request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(delete.num_calls(), 1, "the new user is deleted again");
    assert_eq!(err.context("compensation"), None, "compensation succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_user_that_never_becomes_active_is_deleted_with_a_timeout() {
    let create = create_ok();
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("creating")]));
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_output(|| groups_out(group("active", &["default"], &[])));
    let delete = mock!(aws_sdk_elasticache::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("InvalidUserState")))
        .times(2)
        .output(|| DeleteUserOutput::builder().status("deleting").build())
        .repeatedly()
        .build();
    let p = provider_with(
        config().ready_timeout(Duration::from_secs(5)),
        &[&create, &describe_user, &describe_group, &delete],
    );
    let err = p.create(&request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(
        delete.num_calls(),
        3,
        "retried while creating, then deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn someone_elses_user_is_never_touched_but_our_own_retry_continues() {
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .sequence()
        .output(|| groups_out(group("active", &["default"], &[])))
        .times(2)
        .output(|| groups_out(group("active", &["default", USER], &[])))
        .repeatedly()
        .build();
    let exists = mock!(aws_sdk_elasticache::Client::create_user)
        .then_error(|| CreateUserError::generic(meta("UserAlreadyExists")));
    let describe_user = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("active")]));
    let delete = delete_ok();
    let modify = modify_group_ok();

    // Tagged with another lease: someone else's.
    let other_tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource).then_output(|| {
        ListTagsForResourceOutput::builder()
            .tag_list(
                Tag::builder()
                    .key("leasehold:lease-id")
                    .value("orders-cache/SomeoneElse0000000000000")
                    .build(),
            )
            .build()
    });
    let p = provider(&[
        &describe_group,
        &exists,
        &describe_user,
        &other_tags,
        &delete,
        &modify,
    ]);
    let err = p.create(&request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(delete.num_calls(), 0);
    assert_eq!(modify.num_calls(), 0);

    // Tagged with this very lease: an SDK retry found the user its first attempt made.
    let req = request();
    let lease = req.lease_id.to_string();
    let own_tags =
        mock!(aws_sdk_elasticache::Client::list_tags_for_resource).then_output(move || {
            ListTagsForResourceOutput::builder()
                .tag_list(
                    Tag::builder()
                        .key("leasehold:lease-id")
                        .value(&lease)
                        .build(),
                )
                .build()
        });
    let describe_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .sequence()
        .output(|| groups_out(group("active", &["default"], &[])))
        .times(2)
        .output(|| groups_out(group("active", &["default", USER], &[])))
        .repeatedly()
        .build();
    let p = provider(&[
        &describe_group,
        &exists,
        &describe_user,
        &own_tags,
        &delete,
        &modify,
    ]);
    let created = p.create(&req).await.expect("continues with its own user");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(delete.num_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn revoke_treats_not_found_as_success_and_waits_out_a_busy_user() {
    let gone = mock!(aws_sdk_elasticache::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("UserNotFound")));
    let describe = user_gone();
    let p = provider(&[&gone, &describe]);
    p.revoke(&ExternalRef::new(USER))
        .await
        .expect("not found is success");

    // Modifying twice, then accepted; DescribeUsers says modifying, then gone.
    let delete = mock!(aws_sdk_elasticache::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("InvalidUserState")))
        .times(2)
        .output(|| DeleteUserOutput::builder().status("deleting").build())
        .repeatedly()
        .build();
    let describe = mock!(aws_sdk_elasticache::Client::describe_users)
        .sequence()
        .output(|| users_out(vec![ours("modifying")]))
        .times(2)
        .output(|| users_out(vec![ours("deleting")]))
        .times(2)
        .error(|| DescribeUsersError::generic(meta("UserNotFound")))
        .repeatedly()
        .build();
    let p = provider(&[&delete, &describe]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(delete.num_calls(), 3);
    assert_eq!(describe.num_calls(), 5, "two busy looks, then until gone");

    // Already deleting (a second revoke): success without another DeleteUser.
    let delete = mock!(aws_sdk_elasticache::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("InvalidUserState")));
    let describe = mock!(aws_sdk_elasticache::Client::describe_users)
        .sequence()
        .output(|| users_out(vec![ours("deleting")]))
        .times(1)
        .error(|| DescribeUsersError::generic(meta("UserNotFound")))
        .repeatedly()
        .build();
    let p = provider(&[&delete, &describe]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(delete.num_calls(), 1);

    // Busy for longer than revoke's patience: the loop retried it already, so the error is
    // persistent (not temporary): the manager retries it on its schedule, not at once.
    let busy = mock!(aws_sdk_elasticache::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("InvalidUserState")));
    let describe = mock!(aws_sdk_elasticache::Client::describe_users)
        .then_output(|| users_out(vec![ours("modifying")]));
    let p = provider(&[&busy, &describe]);
    let err = p.revoke(&ExternalRef::new(USER)).await.unwrap_err();
    assert!(err.is_persistent() && !err.is_temporary(), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    // Permission problems are permanent.
    let denied = mock!(aws_sdk_elasticache::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("AccessDenied")));
    let p = provider(&[&denied]);
    let err = p.revoke(&ExternalRef::new(USER)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(!err.is_temporary());

    // A reference that cannot be an ElastiCache user is refused before any call.
    let p = provider(&[]);
    let err = p
        .revoke(&ExternalRef::new("not a user id"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

fn serverless(group: Option<&str>) -> Rule {
    let group = group.map(str::to_string);
    mock!(aws_sdk_elasticache::Client::describe_serverless_caches).then_output(move || {
        DescribeServerlessCachesOutput::builder()
            .serverless_caches(
                ServerlessCache::builder()
                    .serverless_cache_name(CACHE)
                    .set_user_group_id(group.clone())
                    .status("available")
                    .build(),
            )
            .build()
    })
}

fn default_members(default: User) -> Rule {
    mock!(aws_sdk_elasticache::Client::describe_users).then_output(move || {
        users_out(vec![
            default.clone(),
            user(
                "someone",
                "someone",
                "active",
                AuthenticationType::Iam,
                "on ~* +@all",
            ),
        ])
    })
}

#[tokio::test(start_paused = true)]
async fn validate_checks_attachment_default_user_and_engine() {
    let attached = serverless(Some(GROUP));
    let g = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_output(|| groups_out(group("active", &["default-locked", "someone"], &[])));
    let locked = default_members(user(
        "default-locked",
        "default",
        "active",
        AuthenticationType::Password,
        "off -@all",
    ));
    provider(&[&attached, &g, &locked])
        .validate()
        .await
        .expect("a locked default user passes");

    // The open default user: refused unless allowed.
    let g_open = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_output(|| groups_out(group("active", &["default"], &[])));
    let open = default_members(user(
        "default",
        "default",
        "active",
        AuthenticationType::NoPassword,
        "on ~* +@all",
    ));
    let err = provider(&[&attached, &g_open, &open])
        .validate()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("allow_open_default_user"), "{err}");
    provider_with(
        config().allow_open_default_user(true),
        &[&attached, &g_open, &open],
    )
    .validate()
    .await
    .expect("allowed explicitly");
    // No-password but restricted: fine.
    let narrow = default_members(user(
        "default",
        "default",
        "active",
        AuthenticationType::NoPassword,
        "on ~public:* +get",
    ));
    provider(&[&attached, &g_open, &narrow])
        .validate()
        .await
        .expect("a restricted default user passes");

    // No member named default.
    let g_nodefault = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_output(|| groups_out(group("active", &["someone"], &[])));
    let err = provider(&[&attached, &g_nodefault, &locked])
        .validate()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no member"), "{err}");

    // Another group attached, or none.
    let elsewhere = serverless(Some("other-group"));
    let err = provider(&[&elsewhere]).validate().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("other-group"), "{err}");
    let none = serverless(None);
    let err = provider(&[&none]).validate().await.unwrap_err();
    assert!(err.to_string().contains("none"), "{err}");

    // Engine mismatch.
    let valkey = mock!(aws_sdk_elasticache::Client::describe_user_groups).then_output(|| {
        let mut g = group("active", &["default-locked"], &[]);
        g = UserGroup::builder()
            .user_group_id(g.user_group_id().unwrap())
            .status("active")
            .engine("valkey")
            .set_user_ids(Some(g.user_ids().to_vec()))
            .build();
        groups_out(g)
    });
    let err = provider(&[&attached, &valkey, &locked])
        .validate()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("engine"), "{err}");

    // Missing cache, missing group, no permission.
    let missing = mock!(aws_sdk_elasticache::Client::describe_serverless_caches).then_error(|| {
        DescribeServerlessCachesError::generic(meta("ServerlessCacheNotFoundFault"))
    });
    assert_eq!(
        provider(&[&missing]).validate().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let no_group = mock!(aws_sdk_elasticache::Client::describe_user_groups)
        .then_error(|| DescribeUserGroupsError::generic(meta("UserGroupNotFound")));
    assert_eq!(
        provider(&[&attached, &no_group])
            .validate()
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let denied = mock!(aws_sdk_elasticache::Client::describe_serverless_caches)
        .then_error(|| DescribeServerlessCachesError::generic(meta("AccessDenied")));
    assert_eq!(
        provider(&[&denied]).validate().await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_before_any_call() {
    // No password in the request.
    let p = provider(&[]);
    let req = CreateRequest::new(
        LeaseId::generate("orders-cache"),
        USER,
        Duration::from_secs(60),
    );
    assert_eq!(
        p.create(&req).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // A username ElastiCache refuses.
    let req = CreateRequest::new(
        LeaseId::generate("orders-cache"),
        "lh--bad-",
        Duration::from_secs(60),
    )
    .with_password(SecretString::from("Password-long-enough-01"));
    assert_eq!(
        p.create(&req).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // A config that is wrong offline never builds a provider.
    let client = mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, &[] as &[&Rule]);
    let err = ElastiCacheProvider::from_client(
        ElastiCacheConfig::new(Target::ReplicationGroup("1-bad".into()), GROUP),
        client,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test(start_paused = true)]
async fn static_role_sets_two_passwords_then_one() {
    let old = "Old-static-password-0123456789";
    let describe = mock!(aws_sdk_elasticache::Client::describe_users).then_output(|| {
        users_out(vec![user(
            "app-writer",
            "app-writer",
            "active",
            AuthenticationType::Password,
            "on ~* +@all",
        )])
    });
    let busy_once = mock!(aws_sdk_elasticache::Client::modify_user)
        .match_requests(|r| r.passwords().len() == 2 && r.access_string().is_none())
        .sequence()
        .error(|| ModifyUserError::generic(meta("InvalidUserState")))
        .times(1)
        .output(|| ModifyUserOutput::builder().status("modifying").build())
        .repeatedly()
        .build();
    let single = mock!(aws_sdk_elasticache::Client::modify_user)
        .match_requests(|r| r.passwords().len() == 1 && r.access_string().is_none())
        .then_output(|| ModifyUserOutput::builder().status("modifying").build());
    let client = mock_client!(
        aws_sdk_elasticache,
        RuleMode::MatchAny,
        &[&describe, &busy_once, &single],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let target = Arc::new(ElastiCacheUserTarget::from_client(client, "App-Writer").unwrap());
    target.validate().await.expect("a password user");
    // The fleet's published secret holds the user's current password.
    let publisher = Arc::new(MemoryPublisher::new("app-writer"));
    publisher
        .put_pending(
            "v0",
            &StaticCredential::new("app-writer", SecretString::from(old)),
        )
        .await
        .unwrap();
    publisher.promote("v0").await.unwrap();
    let store = MemoryStore::new();
    let rotator = StaticRoleRotator::new(
        "app-writer",
        target.clone(),
        publisher.clone(),
        store.coordination().unwrap(),
        "instance-1",
        StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(24 * 3600)))
            .grace(Duration::from_secs(600)),
    )
    .unwrap();
    let outcome = rotator
        .rotate_now(Duration::from_secs(60))
        .await
        .expect("rotate");
    assert!(
        matches!(outcome, RotationOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    assert_eq!(busy_once.num_calls(), 2, "InvalidUserState is retried");
    assert_eq!(
        single.num_calls(),
        0,
        "the old password stays during the grace"
    );
    let current = publisher.get(Stage::Current).await.unwrap().unwrap();
    let previous = publisher.get(Stage::Previous).await.unwrap().unwrap();
    assert_ne!(current.credential.password.expose_secret(), old);
    assert_eq!(previous.credential.password.expose_secret(), old);
    assert!(
        matches!(rotator.tick().await.unwrap(), RotationOutcome::Idle { .. }),
        "nothing more until the grace ends"
    );
    // After the grace: one password.
    target
        .drop_password(&previous.credential.password, &current.credential.password)
        .await
        .expect("drop");
    assert_eq!(single.num_calls(), 1);
    assert!(!format!("{target:?} {rotator:?}").contains("static-password"));

    // IAM users have nothing to rotate.
    let iam = mock!(aws_sdk_elasticache::Client::describe_users).then_output(|| {
        users_out(vec![user(
            "app-writer",
            "app-writer",
            "active",
            AuthenticationType::Iam,
            "on ~* +@all",
        )])
    });
    let client = mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, &[&iam]);
    let target = ElastiCacheUserTarget::from_client(client, "app-writer").unwrap();
    assert_eq!(
        target.validate().await.unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
}

#[test]
fn a_password_outside_passwords_is_refused_at_validation() {
    let statement = leasehold_core::StatementTemplate::parse(
        r#"{"UserId":"{{username}}","UserName":"{{username}}","Engine":"redis","Passwords":["{{password}}"],"AccessString":"on ~* +{{password}}"}"#,
    )
    .unwrap();
    let config = leasehold_elasticache::ElastiCacheConfig::new(
        leasehold_elasticache::Target::ServerlessCache("c".into()),
        "g",
    )
    .creation_statement(statement);
    let err = config.validate().unwrap_err();
    assert!(
        err.to_string().contains("may appear only in Passwords"),
        "{err}"
    );
}
