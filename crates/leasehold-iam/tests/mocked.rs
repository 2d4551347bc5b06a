//! The providers' state machines against mocked SDK clients: the revoke sweep (every kind of
//! attachment, pagination, races), compensation, the consistency window, readiness, STS TTL
//! checks, and that no secret shows in Debug or errors.

use std::time::Duration;

use aws_sdk_iam::operation::add_user_to_group::AddUserToGroupOutput;
use aws_sdk_iam::operation::attach_user_policy::AttachUserPolicyOutput;
use aws_sdk_iam::operation::create_access_key::{CreateAccessKeyError, CreateAccessKeyOutput};
use aws_sdk_iam::operation::create_user::{CreateUserError, CreateUserOutput};
use aws_sdk_iam::operation::deactivate_mfa_device::DeactivateMfaDeviceOutput;
use aws_sdk_iam::operation::delete_access_key::DeleteAccessKeyOutput;
use aws_sdk_iam::operation::delete_login_profile::{
    DeleteLoginProfileError, DeleteLoginProfileOutput,
};
use aws_sdk_iam::operation::delete_service_specific_credential::DeleteServiceSpecificCredentialOutput;
use aws_sdk_iam::operation::delete_signing_certificate::DeleteSigningCertificateOutput;
use aws_sdk_iam::operation::delete_ssh_public_key::DeleteSshPublicKeyOutput;
use aws_sdk_iam::operation::delete_user::{DeleteUserError, DeleteUserOutput};
use aws_sdk_iam::operation::delete_user_policy::DeleteUserPolicyOutput;
use aws_sdk_iam::operation::delete_virtual_mfa_device::DeleteVirtualMfaDeviceOutput;
use aws_sdk_iam::operation::detach_user_policy::DetachUserPolicyOutput;
use aws_sdk_iam::operation::get_user::{GetUserError, GetUserOutput};
use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
use aws_sdk_iam::operation::list_attached_user_policies::ListAttachedUserPoliciesOutput;
use aws_sdk_iam::operation::list_groups_for_user::ListGroupsForUserOutput;
use aws_sdk_iam::operation::list_mfa_devices::ListMfaDevicesOutput;
use aws_sdk_iam::operation::list_service_specific_credentials::ListServiceSpecificCredentialsOutput;
use aws_sdk_iam::operation::list_signing_certificates::ListSigningCertificatesOutput;
use aws_sdk_iam::operation::list_ssh_public_keys::ListSshPublicKeysOutput;
use aws_sdk_iam::operation::list_user_policies::ListUserPoliciesOutput;
use aws_sdk_iam::operation::put_user_policy::PutUserPolicyOutput;
use aws_sdk_iam::types as iam;
use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use chrono::Utc;
use leasehold_core::{
    CreateRequest, Credentials, DynamicSecretProvider, ErrorKind, ExternalRef, LeaseId, Readiness,
};
use leasehold_iam::{
    AssumedRole, FederationToken, IamUserConfig, IamUserProvider, StsConfig, StsCredentialType,
    StsProvider, ATTR_ACCESS_KEY_ID, ATTR_CREATED_AT,
};
use secrecy::ExposeSecret;

const USER: &str = "lh-mocked-user";
const ARN: &str = "arn:aws:iam::123456789012:user/leasehold/lh-mocked-user";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;

fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("mocked failure")
        .build()
}

fn smithy_now() -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(Utc::now().timestamp())
}

fn user() -> iam::User {
    iam::User::builder()
        .path("/leasehold/")
        .user_name(USER)
        .user_id("AIDAMOCKED")
        .arn(ARN)
        .create_date(smithy_now())
        .build()
        .unwrap()
}

fn config() -> IamUserConfig {
    IamUserConfig::new()
        .path("/leasehold/")
        .permissions_boundary("arn:aws:iam::123456789012:policy/boundary")
        .group("readers")
        .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
        .inline_policy(POLICY)
        .tag("team", "payments")
        .ready_timeout(Duration::from_millis(600))
        .absence_recheck_delay(Duration::from_millis(10))
}

fn provider(iam_rules: &[&Rule], sts_rules: &[&Rule]) -> IamUserProvider {
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, iam_rules);
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, sts_rules);
    IamUserProvider::from_clients(config(), iam, sts).unwrap()
}

fn request() -> CreateRequest {
    CreateRequest::new(
        LeaseId::generate("reports"),
        USER,
        Duration::from_secs(3600),
    )
    .with_wait_ready(false)
}

/// Rules for a user that has one of everything, with listings split over two pages.
struct Full {
    get_user: Rule,
    keys_p1: Rule,
    keys_p2: Rule,
    del_key: Rule,
    del_login: Rule,
    mfa: Rule,
    deactivate: Rule,
    del_virtual: Rule,
    ssh: Rule,
    del_ssh: Rule,
    service: Rule,
    del_service: Rule,
    certs: Rule,
    del_cert: Rule,
    inline: Rule,
    del_inline: Rule,
    attached: Rule,
    detach: Rule,
    groups: Rule,
    remove_group: Rule,
    delete_user: Rule,
}

impl Full {
    fn new() -> Self {
        let key = |id: &str| {
            iam::AccessKeyMetadata::builder()
                .user_name(USER)
                .access_key_id(id)
                .build()
        };
        Full {
            get_user: mock!(aws_sdk_iam::Client::get_user)
                .then_output(|| GetUserOutput::builder().user(user()).build()),
            keys_p1: mock!(aws_sdk_iam::Client::list_access_keys)
                .match_requests(|r| r.marker().is_none())
                .then_output(move || {
                    ListAccessKeysOutput::builder()
                        .access_key_metadata(key("AKIAPAGEONE"))
                        .is_truncated(true)
                        .marker("page-2")
                        .build()
                        .unwrap()
                }),
            keys_p2: mock!(aws_sdk_iam::Client::list_access_keys)
                .match_requests(|r| r.marker() == Some("page-2"))
                .then_output(move || {
                    ListAccessKeysOutput::builder()
                        .access_key_metadata(key("AKIAPAGETWO"))
                        .is_truncated(false)
                        .build()
                        .unwrap()
                }),
            del_key: mock!(aws_sdk_iam::Client::delete_access_key)
                .then_output(|| DeleteAccessKeyOutput::builder().build()),
            del_login: mock!(aws_sdk_iam::Client::delete_login_profile)
                .then_output(|| DeleteLoginProfileOutput::builder().build()),
            mfa: mock!(aws_sdk_iam::Client::list_mfa_devices).then_output(|| {
                let dev = |serial: &str| {
                    iam::MfaDevice::builder()
                        .user_name(USER)
                        .serial_number(serial)
                        .enable_date(smithy_now())
                        .build()
                        .unwrap()
                };
                ListMfaDevicesOutput::builder()
                    .mfa_devices(dev("arn:aws:iam::123456789012:mfa/lh-mocked-user"))
                    .mfa_devices(dev("GAHT12345678"))
                    .build()
                    .unwrap()
            }),
            deactivate: mock!(aws_sdk_iam::Client::deactivate_mfa_device)
                .then_output(|| DeactivateMfaDeviceOutput::builder().build()),
            del_virtual: mock!(aws_sdk_iam::Client::delete_virtual_mfa_device)
                .match_requests(|r| {
                    r.serial_number() == Some("arn:aws:iam::123456789012:mfa/lh-mocked-user")
                })
                .then_output(|| DeleteVirtualMfaDeviceOutput::builder().build()),
            ssh: mock!(aws_sdk_iam::Client::list_ssh_public_keys).then_output(|| {
                ListSshPublicKeysOutput::builder()
                    .ssh_public_keys(
                        iam::SshPublicKeyMetadata::builder()
                            .user_name(USER)
                            .ssh_public_key_id("APKAMOCKED")
                            .status(iam::StatusType::Active)
                            .upload_date(smithy_now())
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
            del_ssh: mock!(aws_sdk_iam::Client::delete_ssh_public_key)
                .match_requests(|r| r.ssh_public_key_id() == Some("APKAMOCKED"))
                .then_output(|| DeleteSshPublicKeyOutput::builder().build()),
            service: mock!(aws_sdk_iam::Client::list_service_specific_credentials).then_output(
                || {
                    ListServiceSpecificCredentialsOutput::builder()
                        .service_specific_credentials(
                            iam::ServiceSpecificCredentialMetadata::builder()
                                .user_name(USER)
                                .status(iam::StatusType::Active)
                                .service_user_name("lh-mocked-user-at-123")
                                .create_date(smithy_now())
                                .service_specific_credential_id("ACCAMOCKED")
                                .service_name("codecommit.amazonaws.com")
                                .build()
                                .unwrap(),
                        )
                        .build()
                },
            ),
            del_service: mock!(aws_sdk_iam::Client::delete_service_specific_credential)
                .match_requests(|r| r.service_specific_credential_id() == Some("ACCAMOCKED"))
                .then_output(|| DeleteServiceSpecificCredentialOutput::builder().build()),
            certs: mock!(aws_sdk_iam::Client::list_signing_certificates).then_output(|| {
                ListSigningCertificatesOutput::builder()
                    .certificates(
                        iam::SigningCertificate::builder()
                            .user_name(USER)
                            .certificate_id("CERTMOCKED")
                            .certificate_body("-----BEGIN CERTIFICATE-----")
                            .status(iam::StatusType::Active)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            }),
            del_cert: mock!(aws_sdk_iam::Client::delete_signing_certificate)
                .match_requests(|r| r.certificate_id() == Some("CERTMOCKED"))
                .then_output(|| DeleteSigningCertificateOutput::builder().build()),
            inline: mock!(aws_sdk_iam::Client::list_user_policies).then_output(|| {
                ListUserPoliciesOutput::builder()
                    .policy_names("leasehold")
                    .policy_names("added-by-hand")
                    .build()
                    .unwrap()
            }),
            del_inline: mock!(aws_sdk_iam::Client::delete_user_policy)
                .then_output(|| DeleteUserPolicyOutput::builder().build()),
            attached: mock!(aws_sdk_iam::Client::list_attached_user_policies).then_output(|| {
                ListAttachedUserPoliciesOutput::builder()
                    .attached_policies(
                        iam::AttachedPolicy::builder()
                            .policy_name("ReadOnlyAccess")
                            .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
                            .build(),
                    )
                    .build()
            }),
            detach: mock!(aws_sdk_iam::Client::detach_user_policy)
                .then_output(|| DetachUserPolicyOutput::builder().build()),
            groups: mock!(aws_sdk_iam::Client::list_groups_for_user).then_output(|| {
                ListGroupsForUserOutput::builder()
                    .groups(
                        iam::Group::builder()
                            .path("/")
                            .group_name("readers")
                            .group_id("AGPAMOCKED")
                            .arn("arn:aws:iam::123456789012:group/readers")
                            .create_date(smithy_now())
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            }),
            remove_group: mock!(aws_sdk_iam::Client::remove_user_from_group).then_output(|| {
                aws_sdk_iam::operation::remove_user_from_group::RemoveUserFromGroupOutput::builder()
                    .build()
            }),
            delete_user: mock!(aws_sdk_iam::Client::delete_user)
                .then_output(|| DeleteUserOutput::builder().build()),
        }
    }

    /// Every rule, `extra` first so it wins over the defaults.
    fn rules<'a>(&'a self, extra: &[&'a Rule]) -> Vec<&'a Rule> {
        let mut v: Vec<&Rule> = extra.to_vec();
        v.extend([
            &self.get_user,
            &self.keys_p1,
            &self.keys_p2,
            &self.del_key,
            &self.del_login,
            &self.mfa,
            &self.deactivate,
            &self.del_virtual,
            &self.ssh,
            &self.del_ssh,
            &self.service,
            &self.del_service,
            &self.certs,
            &self.del_cert,
            &self.inline,
            &self.del_inline,
            &self.attached,
            &self.detach,
            &self.groups,
            &self.remove_group,
            &self.delete_user,
        ]);
        v
    }

    /// The lease-made deletes ran, `DeleteUser` was refused once, and the sweep removed one of
    /// everything: the configured inline policy, managed policy and group are removed once
    /// before `DeleteUser` and once more by the sweep.
    fn assert_swept(&self) {
        assert_eq!(self.keys_p1.num_calls(), 1, "first page of keys listed");
        assert_eq!(self.keys_p2.num_calls(), 1, "second page of keys listed");
        assert_eq!(self.del_key.num_calls(), 2, "keys of both pages deleted");
        assert_eq!(self.del_login.num_calls(), 1, "login profile deleted");
        assert_eq!(
            self.deactivate.num_calls(),
            2,
            "both MFA devices deactivated"
        );
        assert_eq!(
            self.del_virtual.num_calls(),
            1,
            "the virtual MFA device deleted"
        );
        assert_eq!(self.del_ssh.num_calls(), 1, "SSH key deleted");
        assert_eq!(
            self.del_service.num_calls(),
            1,
            "service credential deleted"
        );
        assert_eq!(self.del_cert.num_calls(), 1, "signing certificate deleted");
        assert_eq!(self.del_inline.num_calls(), 3, "inline policies deleted");
        assert_eq!(self.detach.num_calls(), 2, "managed policy detached");
        assert_eq!(self.remove_group.num_calls(), 2, "removed from its group");
        assert_eq!(self.delete_user.num_calls(), 1, "user deleted");
    }

    /// No listing and no delete of an attachment kind the lease did not make.
    fn assert_nothing_listed(&self) {
        for (rule, what) in [
            (&self.get_user, "GetUser"),
            (&self.keys_p1, "ListAccessKeys"),
            (&self.keys_p2, "ListAccessKeys"),
            (&self.del_login, "DeleteLoginProfile"),
            (&self.mfa, "ListMFADevices"),
            (&self.ssh, "ListSSHPublicKeys"),
            (&self.service, "ListServiceSpecificCredentials"),
            (&self.certs, "ListSigningCertificates"),
            (&self.inline, "ListUserPolicies"),
            (&self.attached, "ListAttachedUserPolicies"),
            (&self.groups, "ListGroupsForUser"),
        ] {
            assert_eq!(rule.num_calls(), 0, "{what} was called");
        }
    }
}

/// `DeleteUser` answers `DeleteConflict` once, as IAM does while something hangs on the user.
fn delete_conflict_once() -> Rule {
    mock!(aws_sdk_iam::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("DeleteConflict")))
        .times(1)
        .build()
}

fn create_rules() -> (Rule, Rule, Rule, Rule) {
    let create_user = mock!(aws_sdk_iam::Client::create_user)
        .match_requests(|r| {
            let tags = r.tags();
            let tag = |k: &str| tags.iter().find(|t| t.key() == k).map(|t| t.value());
            r.user_name() == Some(USER)
                && r.path() == Some("/leasehold/")
                && r.permissions_boundary() == Some("arn:aws:iam::123456789012:policy/boundary")
                && tag("leasehold:lease-id").is_some_and(|v| v.starts_with("reports/"))
                && tag("leasehold:secret") == Some("reports")
                && tag("leasehold:expires-at").is_some()
                && tag("leasehold:managed-by") == Some("leasehold")
                && tag("team") == Some("payments")
        })
        .then_output(|| CreateUserOutput::builder().user(user()).build());
    let add_group = mock!(aws_sdk_iam::Client::add_user_to_group)
        .match_requests(|r| r.group_name() == Some("readers") && r.user_name() == Some(USER))
        .then_output(|| AddUserToGroupOutput::builder().build());
    let attach = mock!(aws_sdk_iam::Client::attach_user_policy)
        .match_requests(|r| r.policy_arn() == Some("arn:aws:iam::aws:policy/ReadOnlyAccess"))
        .then_output(|| AttachUserPolicyOutput::builder().build());
    let put = mock!(aws_sdk_iam::Client::put_user_policy)
        .match_requests(|r| {
            r.policy_name() == Some("leasehold")
                && r.policy_document()
                    .is_some_and(|d| d.contains("s3:GetObject"))
        })
        .then_output(|| PutUserPolicyOutput::builder().build());
    (create_user, add_group, attach, put)
}

fn access_key_rule() -> Rule {
    mock!(aws_sdk_iam::Client::create_access_key).then_output(|| {
        CreateAccessKeyOutput::builder()
            .access_key(
                iam::AccessKey::builder()
                    .user_name(USER)
                    .access_key_id("AKIAMOCKEDNEWKEY")
                    .status(iam::StatusType::Active)
                    .secret_access_key(SECRET_KEY)
                    .build()
                    .unwrap(),
            )
            .build()
    })
}

fn caller_is(arn: &'static str) -> Rule {
    mock!(aws_sdk_sts::Client::get_caller_identity).then_output(move || {
        GetCallerIdentityOutput::builder()
            .arn(arn)
            .account("123456789012")
            .user_id("AIDAMOCKED")
            .build()
    })
}

#[tokio::test]
async fn create_makes_user_groups_policies_key_in_order() {
    let (create_user, add_group, attach, put) = create_rules();
    let key = access_key_rule();
    let p = provider(&[&create_user, &add_group, &attach, &put, &key], &[]);
    let req = request();
    let created = p.create(&req).await.expect("create");
    for r in [&create_user, &add_group, &attach, &put, &key] {
        assert_eq!(r.num_calls(), 1);
    }
    assert_eq!(created.readiness, Readiness::Unchecked);
    assert_eq!(created.external.id, USER);
    assert_eq!(
        created.external.attr(ATTR_ACCESS_KEY_ID),
        Some("AKIAMOCKEDNEWKEY")
    );
    assert!(created.external.attr(ATTR_CREATED_AT).is_some());
    let Credentials::AwsKeys {
        access_key_id,
        secret_access_key,
        session_token,
    } = &created.credentials
    else {
        panic!("AWS keys expected");
    };
    assert_eq!(access_key_id, "AKIAMOCKEDNEWKEY");
    assert_eq!(secret_access_key.expose_secret(), SECRET_KEY);
    assert!(session_token.is_none());
    let shown = format!("{created:?} {p:?} {:?}", created.external);
    assert!(!shown.contains(SECRET_KEY), "{shown}");
    assert!(shown.contains("AKIAMOCKEDNEWKEY"));
}

#[tokio::test]
async fn readiness_waits_for_sts_to_name_the_new_user() {
    let (create_user, add_group, attach, put) = create_rules();
    let key = access_key_rule();
    // First the key is refused (not propagated), then it names the user.
    let sts = mock!(aws_sdk_sts::Client::get_caller_identity)
        .sequence()
        .error(|| {
            aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError::generic(meta(
                "InvalidClientTokenId",
            ))
        })
        .times(2)
        .output(|| {
            GetCallerIdentityOutput::builder()
                .arn(ARN)
                .account("123456789012")
                .build()
        })
        .build();
    let p = provider(&[&create_user, &add_group, &attach, &put, &key], &[&sts]);
    let created = p
        .create(&request().with_wait_ready(true))
        .await
        .expect("create");
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(sts.num_calls(), 3);
}

#[tokio::test]
async fn readiness_does_not_trust_a_default_identity() {
    let (create_user, add_group, attach, put) = create_rules();
    let key = access_key_rule();
    // moto answers an unknown key with user/moto: that is not the new user.
    let sts = caller_is("arn:aws:sts::123456789012:user/moto");
    let p = provider(&[&create_user, &add_group, &attach, &put, &key], &[&sts]);
    let created = p
        .create(&request().with_wait_ready(true))
        .await
        .expect("create");
    assert_eq!(created.readiness, Readiness::TimedOut);
    assert!(sts.num_calls() >= 2, "polled more than once");
}

#[tokio::test]
async fn failed_access_key_compensates_by_removing_what_was_made() {
    let (create_user, add_group, attach, put) = create_rules();
    let key_fails = mock!(aws_sdk_iam::Client::create_access_key)
        .then_error(|| CreateAccessKeyError::generic(meta("LimitExceeded")));
    let full = Full::new();
    let mut rules = full.rules(&[]);
    rules.extend([&create_user, &add_group, &attach, &put, &key_fails]);
    let p = provider(&rules, &[]);
    let err = p.create(&request()).await.expect_err("create fails");
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
    assert_eq!(err.context("operation"), Some("CreateAccessKey"));
    assert_eq!(err.context("user"), Some(USER));
    assert_eq!(full.del_inline.num_calls(), 1, "inline policy deleted");
    assert_eq!(full.detach.num_calls(), 1, "managed policy detached");
    assert_eq!(full.remove_group.num_calls(), 1, "removed from its group");
    assert_eq!(full.delete_user.num_calls(), 1, "user deleted");
    full.assert_nothing_listed();
}

#[tokio::test]
async fn failed_access_key_whose_key_was_made_after_all_is_swept() {
    let (create_user, add_group, attach, put) = create_rules();
    let key_fails = mock!(aws_sdk_iam::Client::create_access_key)
        .then_error(|| CreateAccessKeyError::generic(meta("ServiceFailure")));
    // The key exists although the answer was lost: IAM refuses DeleteUser because of it.
    let conflict = delete_conflict_once();
    let full = Full::new();
    let mut rules = full.rules(&[&conflict]);
    rules.extend([&create_user, &add_group, &attach, &put, &key_fails]);
    let p = provider(&rules, &[]);
    p.create(&request()).await.expect_err("create fails");
    assert_eq!(conflict.num_calls(), 1);
    full.assert_swept();
}

#[tokio::test]
async fn compensation_retries_while_the_new_user_is_invisible() {
    let (create_user, add_group, attach, put) = create_rules();
    let key_fails = mock!(aws_sdk_iam::Client::create_access_key)
        .then_error(|| CreateAccessKeyError::generic(meta("ServiceFailure")));
    // The reader compensation hits has not seen the new user yet.
    let delete_lags = mock!(aws_sdk_iam::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("NoSuchEntity")))
        .times(1)
        .build();
    let full = Full::new();
    let mut rules = full.rules(&[&delete_lags]);
    rules.extend([&create_user, &add_group, &attach, &put, &key_fails]);
    let p = provider(&rules, &[]);
    let err = p.create(&request()).await.expect_err("create fails");
    assert!(err.is_temporary(), "{err}");
    assert_eq!(delete_lags.num_calls(), 1);
    assert_eq!(full.delete_user.num_calls(), 1, "deleted on the second try");
}

#[tokio::test]
async fn existing_user_is_already_exists_and_is_not_touched() {
    let exists = mock!(aws_sdk_iam::Client::create_user)
        .then_error(|| CreateUserError::generic(meta("EntityAlreadyExists")));
    let full = Full::new();
    let mut rules = full.rules(&[]);
    rules.push(&exists);
    let p = provider(&rules, &[]);
    let err = p.create(&request()).await.expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        full.get_user.num_calls(),
        0,
        "someone else's user is left alone"
    );
    assert_eq!(full.delete_user.num_calls(), 0);
}

/// Every listing of the sweep, refused with `code`.
fn refused_listings(code: &'static str) -> Vec<Rule> {
    use aws_sdk_iam::operation::{
        delete_login_profile::DeleteLoginProfileError as Login,
        list_access_keys::ListAccessKeysError as Keys,
        list_attached_user_policies::ListAttachedUserPoliciesError as Attached,
        list_groups_for_user::ListGroupsForUserError as Groups,
        list_mfa_devices::ListMFADevicesError as Mfa,
        list_service_specific_credentials::ListServiceSpecificCredentialsError as Service,
        list_signing_certificates::ListSigningCertificatesError as Certs,
        list_ssh_public_keys::ListSSHPublicKeysError as Ssh,
        list_user_policies::ListUserPoliciesError as Inline,
    };
    vec![
        mock!(aws_sdk_iam::Client::list_access_keys).then_error(move || Keys::generic(meta(code))),
        mock!(aws_sdk_iam::Client::delete_login_profile)
            .then_error(move || Login::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_mfa_devices).then_error(move || Mfa::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_ssh_public_keys)
            .then_error(move || Ssh::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_service_specific_credentials)
            .then_error(move || Service::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_signing_certificates)
            .then_error(move || Certs::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_user_policies)
            .then_error(move || Inline::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_attached_user_policies)
            .then_error(move || Attached::generic(meta(code))),
        mock!(aws_sdk_iam::Client::list_groups_for_user)
            .then_error(move || Groups::generic(meta(code))),
    ]
}

#[tokio::test]
async fn revoke_deletes_what_the_lease_made_then_the_user_without_listing() {
    // Every listing is refused: a revoke that DeleteUser accepts needs none of them.
    let refused = refused_listings("AccessDenied");
    let lease_key = mock!(aws_sdk_iam::Client::delete_access_key)
        .match_requests(|r| {
            r.access_key_id() == Some("AKIALEASEKEY") && r.user_name() == Some(USER)
        })
        .then_output(|| DeleteAccessKeyOutput::builder().build());
    let full = Full::new();
    let mut extra: Vec<&Rule> = refused.iter().collect();
    extra.push(&lease_key);
    let p = provider(&full.rules(&extra), &[]);
    let ext = ExternalRef::new(USER)
        .with_attr(ATTR_ACCESS_KEY_ID, "AKIALEASEKEY")
        .with_attr(ATTR_CREATED_AT, Utc::now().to_rfc3339());
    p.revoke(&ext).await.expect("revoke");
    assert_eq!(lease_key.num_calls(), 1, "the lease's key deleted");
    assert_eq!(full.del_key.num_calls(), 0, "no other key touched");
    assert_eq!(full.del_inline.num_calls(), 1, "the inline policy deleted");
    assert_eq!(full.detach.num_calls(), 1, "the managed policy detached");
    assert_eq!(full.remove_group.num_calls(), 1, "removed from the group");
    assert_eq!(full.delete_user.num_calls(), 1, "user deleted");
    assert!(refused.iter().all(|r| r.num_calls() == 0), "nothing listed");
    full.assert_nothing_listed();
}

#[tokio::test]
async fn delete_conflict_sweeps_every_attachment_kind_then_deletes_the_user() {
    let conflict = delete_conflict_once();
    let full = Full::new();
    let p = provider(&full.rules(&[&conflict]), &[]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(conflict.num_calls(), 1);
    full.assert_swept();
}

#[tokio::test]
async fn a_refused_service_credential_listing_does_not_fail_the_revoke() {
    let logs = leasehold_testkit::capture_tracing();
    let conflict = delete_conflict_once();
    let refused = mock!(aws_sdk_iam::Client::list_service_specific_credentials).then_error(|| {
        aws_sdk_iam::operation::list_service_specific_credentials::ListServiceSpecificCredentialsError::generic(meta("AccessDenied"))
    });
    let full = Full::new();
    let p = provider(&full.rules(&[&conflict, &refused]), &[]);
    p.revoke(&ExternalRef::new(USER))
        .await
        .expect("a refused optional listing is not a failed revoke");
    assert_eq!(refused.num_calls(), 1);
    assert_eq!(full.del_service.num_calls(), 0);
    assert_eq!(full.del_ssh.num_calls(), 1, "the rest of the sweep ran");
    assert_eq!(full.delete_user.num_calls(), 1, "user deleted");
    let warned = logs.contents().lines().any(|l| {
        l.contains("WARN") && l.contains("ListServiceSpecificCredentials") && l.contains(USER)
    });
    assert!(warned, "the refused listing is a warning");
}

#[tokio::test]
async fn every_listing_refused_and_delete_user_refused_is_a_conflict_naming_them() {
    let refused = refused_listings("AccessDenied");
    let conflict = mock!(aws_sdk_iam::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("DeleteConflict")));
    let full = Full::new();
    let mut extra: Vec<&Rule> = refused.iter().collect();
    extra.push(&conflict);
    let p = provider(&full.rules(&extra), &[]);
    let err = p
        .revoke(&ExternalRef::new(USER))
        .await
        .expect_err("something still hangs on the user");
    assert_eq!(
        conflict.num_calls(),
        2,
        "DeleteUser before and after the sweep"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.is_temporary(), "{err}");
    let not_listed = err
        .context("not_listed")
        .expect("names the refused listings");
    for op in [
        "ListServiceSpecificCredentials",
        "ListSSHPublicKeys",
        "DeleteLoginProfile",
    ] {
        assert!(not_listed.contains(op), "{not_listed}");
    }
    assert!(refused.iter().all(|r| r.num_calls() == 1));
}

#[tokio::test]
async fn an_endpoint_without_a_listing_operation_still_revokes() {
    // What an IAM-compatible endpoint without the operation answers (moto: a 500 page).
    let conflict = delete_conflict_once();
    let missing =
        mock!(aws_sdk_iam::Client::list_service_specific_credentials).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
                aws_smithy_types::body::SdkBody::from("<html>not implemented</html>"),
            )
        });
    let full = Full::new();
    let p = provider(&full.rules(&[&conflict, &missing]), &[]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert!(missing.num_calls() >= 1);
    assert_eq!(full.delete_user.num_calls(), 1, "user deleted");
}

#[tokio::test]
async fn revoke_without_login_profile_goes_on() {
    let conflict = delete_conflict_once();
    let no_profile = mock!(aws_sdk_iam::Client::delete_login_profile)
        .then_error(|| DeleteLoginProfileError::generic(meta("NoSuchEntity")));
    let full = Full::new();
    let p = provider(&full.rules(&[&conflict, &no_profile]), &[]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(no_profile.num_calls(), 1);
    assert_eq!(full.delete_user.num_calls(), 1);
}

fn gone_rules() -> Rule {
    mock!(aws_sdk_iam::Client::delete_user)
        .then_error(|| DeleteUserError::generic(meta("NoSuchEntity")))
}

#[tokio::test]
async fn no_such_entity_is_believed_once_the_lease_is_old_enough() {
    let gone = gone_rules();
    let full = Full::new();
    let p = provider(&full.rules(&[&gone]), &[]);
    let old = (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    p.revoke(&ExternalRef::new(USER).with_attr(ATTR_CREATED_AT, old))
        .await
        .expect("old and gone is revoked");
    assert_eq!(gone.num_calls(), 1);
    assert_eq!(full.get_user.num_calls(), 0);
    assert_eq!(full.delete_user.num_calls(), 0);
}

#[tokio::test]
async fn no_such_entity_for_a_young_lease_is_retried() {
    let gone = gone_rules();
    let full = Full::new();
    let p = provider(&full.rules(&[&gone]), &[]);
    let young = Utc::now().to_rfc3339();
    let err = p
        .revoke(&ExternalRef::new(USER).with_attr(ATTR_CREATED_AT, young))
        .await
        .expect_err("too young to believe");
    assert!(err.is_temporary(), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn write_ahead_reference_confirms_absence_with_get_user() {
    let gone = gone_rules();
    let missing = mock!(aws_sdk_iam::Client::get_user)
        .then_error(|| GetUserError::generic(meta("NoSuchEntity")));
    let full = Full::new();
    let p = provider(&full.rules(&[&gone, &missing]), &[]);
    p.revoke(&ExternalRef::new(USER))
        .await
        .expect("never created is revoked");
    assert_eq!(gone.num_calls(), 1, "DeleteUser said missing");
    assert_eq!(missing.num_calls(), 1, "one GetUser a pause later");
}

#[tokio::test]
async fn write_ahead_reference_removes_a_user_that_shows_up_late() {
    let late = mock!(aws_sdk_iam::Client::delete_user)
        .sequence()
        .error(|| DeleteUserError::generic(meta("NoSuchEntity")))
        .times(1)
        .build();
    let full = Full::new();
    let p = provider(&full.rules(&[&late]), &[]);
    p.revoke(&ExternalRef::new(USER)).await.expect("revoke");
    assert_eq!(late.num_calls(), 1);
    assert_eq!(full.get_user.num_calls(), 1, "the recheck found the user");
    assert_eq!(full.delete_user.num_calls(), 1, "then it was deleted");
}

#[tokio::test]
async fn revoking_twice_is_idempotent_right_after_create() {
    // The user exists for the first revoke, then IAM says it is gone.
    let then_gone = mock!(aws_sdk_iam::Client::delete_user)
        .sequence()
        .output(|| DeleteUserOutput::builder().build())
        .error(|| DeleteUserError::generic(meta("NoSuchEntity")))
        .repeatedly()
        .build();
    let full = Full::new();
    let p = provider(&full.rules(&[&then_gone]), &[]);
    let ext = ExternalRef::new(USER).with_attr(ATTR_CREATED_AT, Utc::now().to_rfc3339());
    p.revoke(&ext).await.expect("first revoke");
    // Young lease, NoSuchEntity: believed only because this instance deleted the user itself.
    p.revoke(&ext).await.expect("second revoke");
    assert_eq!(then_gone.num_calls(), 2);
    assert_eq!(full.get_user.num_calls(), 0);
}

#[tokio::test]
async fn revoke_errors_are_classified() {
    for (code, kind, temporary) in [
        ("DeleteConflict", ErrorKind::Conflict, true),
        ("Throttling", ErrorKind::Throttled, true),
        ("AccessDenied", ErrorKind::PermissionDenied, false),
        ("ServiceFailure", ErrorKind::ProviderUnavailable, true),
    ] {
        let failing = mock!(aws_sdk_iam::Client::delete_user)
            .then_error(move || DeleteUserError::generic(meta(code)));
        let full = Full::new();
        let p = provider(&full.rules(&[&failing]), &[]);
        let err = p
            .revoke(&ExternalRef::new(USER))
            .await
            .expect_err("delete fails");
        assert_eq!(err.kind(), kind, "{code}: {err}");
        assert_eq!(err.is_temporary(), temporary, "{code}: {err}");
        assert_eq!(err.context("user"), Some(USER));
    }
}

#[tokio::test]
async fn bad_configuration_is_refused_before_any_call() {
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &Vec::<&Rule>::new());
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, &Vec::<&Rule>::new());
    for (cfg, field) in [
        (
            IamUserConfig::new().inline_policy("{not json"),
            "inline_policy",
        ),
        (
            IamUserConfig::new().inline_policy(r#"{"Version":"2012-10-17"}"#),
            "inline_policy",
        ),
        (IamUserConfig::new().path("leasehold"), "path"),
        (
            IamUserConfig::new().permissions_boundary("arn:aws:iam::1:policy/x"),
            "permissions_boundary",
        ),
        (
            IamUserConfig::new().policy_arn("ReadOnlyAccess"),
            "policy_arns",
        ),
        (IamUserConfig::new().group("a group"), "groups"),
        (IamUserConfig::new().tag("aws:reserved", "x"), "tags"),
    ] {
        let err =
            IamUserProvider::from_clients(cfg, iam.clone(), sts.clone()).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().starts_with(field), "{field}: {err}");
    }
    let p = IamUserProvider::from_clients(IamUserConfig::new(), iam, sts).unwrap();
    let err = p
        .create(&CreateRequest::new(
            LeaseId::generate("s"),
            "bad/name",
            Duration::from_secs(60),
        ))
        .await
        .expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::InvalidTemplate);
}

fn sts_provider(ty: StsCredentialType, rules: &[&Rule]) -> StsProvider {
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, rules);
    StsProvider::from_client(StsConfig::new(ty), sts).unwrap()
}

#[tokio::test]
async fn sts_ttl_is_checked_before_any_call() {
    let assume =
        mock!(aws_sdk_sts::Client::assume_role).then_output(|| AssumeRoleOutput::builder().build());
    let role = || {
        StsCredentialType::AssumedRole(AssumedRole::new("arn:aws:iam::123456789012:role/reader"))
    };
    let p = sts_provider(role(), &[&assume]);
    let caps = p.capabilities();
    assert!(!caps.renewable && !caps.revocable && !caps.needs_password);
    assert_eq!(caps.max_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(caps.min_ttl, Some(Duration::from_secs(900)));
    for (ttl, kind) in [
        (3601, ErrorKind::TtlExceedsMax),
        (899, ErrorKind::InvalidInput),
    ] {
        let req = CreateRequest::new(
            LeaseId::generate("s"),
            "lh-session",
            Duration::from_secs(ttl),
        );
        let err = p.create(&req).await.expect_err("out of range");
        assert_eq!(err.kind(), kind, "{ttl}: {err}");
    }
    let fed = sts_provider(
        StsCredentialType::FederationToken(FederationToken::with_policy(POLICY)),
        &[],
    );
    assert_eq!(
        fed.capabilities().max_ttl,
        Some(Duration::from_secs(36 * 3600))
    );
    let req = CreateRequest::new(
        LeaseId::generate("s"),
        "lh-fed",
        Duration::from_secs(36 * 3600 + 1),
    );
    assert_eq!(
        fed.create(&req).await.unwrap_err().kind(),
        ErrorKind::TtlExceedsMax
    );
    let long_name = CreateRequest::new(
        LeaseId::generate("s"),
        "lh-".repeat(11),
        Duration::from_secs(900),
    );
    assert_eq!(
        fed.create(&long_name).await.unwrap_err().kind(),
        ErrorKind::InvalidTemplate,
        "federation names are at most 32 characters"
    );
    assert_eq!(assume.num_calls(), 0);
}

#[tokio::test]
async fn assumed_role_returns_temporary_keys_with_the_sts_expiry() {
    let expiry = Utc::now() + chrono::Duration::seconds(900);
    let assume = mock!(aws_sdk_sts::Client::assume_role)
        .match_requests(|r| {
            r.role_session_name() == Some("lh-session")
                && r.duration_seconds() == Some(900)
                && r.external_id() == Some("ext-123")
                && r.policy().is_some_and(|p| p.contains("s3:GetObject"))
        })
        .then_output(move || {
            AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id("ASIAMOCKED")
                        .secret_access_key(SECRET_KEY)
                        .session_token("FwoGZXIvYXdzEMOCKEDTOKEN")
                        .expiration(aws_smithy_types::DateTime::from_secs(expiry.timestamp()))
                        .build()
                        .unwrap(),
                )
                .assumed_role_user(
                    aws_sdk_sts::types::AssumedRoleUser::builder()
                        .assumed_role_id("AROAMOCKED:lh-session")
                        .arn("arn:aws:sts::123456789012:assumed-role/reader/lh-session")
                        .build()
                        .unwrap(),
                )
                .build()
        });
    let who = caller_is("arn:aws:sts::123456789012:assumed-role/reader/lh-session");
    let p = sts_provider(
        StsCredentialType::AssumedRole(
            AssumedRole::new("arn:aws:iam::123456789012:role/reader")
                .session_policy(POLICY)
                .external_id("ext-123"),
        ),
        &[&assume, &who],
    );
    let req = CreateRequest::new(
        LeaseId::generate("s"),
        "lh-session",
        Duration::from_secs(900),
    );
    let created = p.create(&req).await.expect("assume role");
    assert_eq!(assume.num_calls(), 1);
    assert_eq!(created.readiness, Readiness::Confirmed);
    assert_eq!(
        created.expires_at.map(|t| t.timestamp()),
        Some(expiry.timestamp())
    );
    assert!(matches!(
        &created.credentials,
        Credentials::AwsKeys {
            session_token: Some(_),
            ..
        }
    ));
    let shown = format!("{created:?} {p:?}");
    for s in [SECRET_KEY, "FwoGZXIvYXdzEMOCKEDTOKEN", "ext-123"] {
        assert!(!shown.contains(s), "{s} in {shown}");
    }
    let err = p
        .renew(&created.external, Utc::now())
        .await
        .expect_err("not renewable");
    assert_eq!(err.kind(), ErrorKind::NotRenewable);
    p.revoke(&created.external)
        .await
        .expect("revoke is a no-op");
    assert_eq!(assume.num_calls(), 1);
}

#[test]
fn sts_configuration_is_checked_offline() {
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, &Vec::<&Rule>::new());
    for ty in [
        StsCredentialType::AssumedRole(AssumedRole::new("arn:aws:iam::123456789012:user/x")),
        StsCredentialType::AssumedRole(AssumedRole::new("not-an-arn")),
        StsCredentialType::AssumedRole(
            AssumedRole::new("arn:aws:iam::123456789012:role/x")
                .max_session_duration(Duration::from_secs(13 * 3600)),
        ),
        StsCredentialType::AssumedRole(
            AssumedRole::new("arn:aws:iam::123456789012:role/x").session_policy("[]"),
        ),
        StsCredentialType::FederationToken(FederationToken::default()),
        StsCredentialType::FederationToken(FederationToken::with_policy("{}")),
    ] {
        let err =
            StsProvider::from_client(StsConfig::new(ty.clone()), sts.clone()).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{ty:?}");
    }
}

#[tokio::test]
async fn validate_checks_groups_and_policies_exist() {
    let who = caller_is("arn:aws:iam::123456789012:user/leasehold-admin");
    let missing_group = mock!(aws_sdk_iam::Client::get_group).then_error(|| {
        aws_sdk_iam::operation::get_group::GetGroupError::generic(meta("NoSuchEntity"))
    });
    let policy = mock!(aws_sdk_iam::Client::get_policy)
        .then_output(|| aws_sdk_iam::operation::get_policy::GetPolicyOutput::builder().build());
    let p = provider(&[&missing_group, &policy], &[&who]);
    let err = p.validate().await.expect_err("missing group");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().starts_with("groups: \"readers\""), "{err}");

    // Least privilege may leave out iam:GetGroup: the check is skipped, not failed.
    let denied_group = mock!(aws_sdk_iam::Client::get_group).then_error(|| {
        aws_sdk_iam::operation::get_group::GetGroupError::generic(meta("AccessDenied"))
    });
    let p = provider(&[&denied_group, &policy], &[&who]);
    p.validate().await.expect("validate");
    assert_eq!(
        policy.num_calls(),
        2,
        "the managed policy and the boundary were checked"
    );

    let bad_creds = mock!(aws_sdk_sts::Client::get_caller_identity).then_error(|| {
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError::generic(meta(
            "InvalidClientTokenId",
        ))
    });
    let p = provider(&[], &[&bad_creds]);
    let err = p.validate().await.expect_err("bad credentials");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test]
async fn calls_on_a_fresh_user_ride_out_no_such_entity() {
    let (create_user, _, attach, put) = create_rules();
    let key = access_key_rule();
    // IAM has not caught up with CreateUser yet for the first call.
    let lagging_group = mock!(aws_sdk_iam::Client::add_user_to_group)
        .sequence()
        .error(|| {
            aws_sdk_iam::operation::add_user_to_group::AddUserToGroupError::generic(meta(
                "NoSuchEntity",
            ))
        })
        .output(|| AddUserToGroupOutput::builder().build())
        .build();
    let p = provider(&[&create_user, &lagging_group, &attach, &put, &key], &[]);
    p.create(&request()).await.expect("create");
    assert_eq!(lagging_group.num_calls(), 2);

    // A group that does not exist: the error stands after a few tries, and the user goes.
    let (create_user, _, attach, put) = create_rules();
    let missing_group = mock!(aws_sdk_iam::Client::add_user_to_group).then_error(|| {
        aws_sdk_iam::operation::add_user_to_group::AddUserToGroupError::generic(meta(
            "NoSuchEntity",
        ))
    });
    let full = Full::new();
    let mut rules = full.rules(&[]);
    rules.extend([&create_user, &missing_group, &attach, &put, &key]);
    let p = provider(&rules, &[]);
    let err = p.create(&request()).await.expect_err("missing group");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context("group"), Some("readers"));
    assert_eq!(missing_group.num_calls(), 4);
    assert_eq!(full.delete_user.num_calls(), 1, "compensated");
}

#[test]
fn provider_debug_hides_its_own_aws_secret() {
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &Vec::<&Rule>::new());
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, &Vec::<&Rule>::new());
    let aws =
        leasehold_aws::AwsConfig::new().credentials(leasehold_aws::AwsCredentials::from_keys(
            "AKIAPROVIDERKEY",
            secrecy::SecretString::from(SECRET_KEY),
        ));
    let p = IamUserProvider::from_clients(IamUserConfig::new().aws(aws.clone()), iam, sts.clone())
        .unwrap();
    let s = StsProvider::from_client(
        StsConfig::new(StsCredentialType::SessionToken).aws(aws),
        sts,
    )
    .unwrap();
    let shown = format!("{p:?} {s:?} {:?}", p.config());
    assert!(shown.contains("AKIAPROVIDERKEY"), "{shown}");
    assert!(!shown.contains(SECRET_KEY), "{shown}");
}
