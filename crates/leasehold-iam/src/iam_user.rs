//! `iam_user`: an IAM user with an access key per lease.
//!
//! Over 700 lines because revoke's clean-up (keys, policies, groups, login profile, certificates,
//! service-specific credentials) must list everything create and others may attach, in one place.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use leasehold_aws::{tags, AwsConfig};
use leasehold_core::backoff::Backoff;
use leasehold_core::{
    Capabilities, CreateRequest, Created, Credentials, DynamicSecretProvider, Error, ErrorKind,
    ExternalRef, ManagedCredential, NameRule, Readiness, Result,
};
use secrecy::SecretString;

use crate::checks::{
    check_iam_name, check_path, check_policy_arn, check_policy_document, check_positive,
    check_tags, iam_error, is_no_such_entity, tag_value, to_chrono,
};
use crate::readiness::confirm_identity;

/// `ExternalRef` attribute: the lease's access key id.
pub const ATTR_ACCESS_KEY_ID: &str = "access_key_id";
/// `ExternalRef` attribute: when the provider saw `CreateUser` succeed (RFC 3339).
pub const ATTR_CREATED_AT: &str = "created_at";
/// `ExternalRef` attribute: the user's ARN.
pub const ATTR_USER_ARN: &str = "user_arn";

/// Value of the `leasehold:managed-by` tag.
pub const MANAGED_BY: &str = "leasehold";

/// How long this instance remembers users its own `DeleteUser` removed.
const RECENTLY_DELETED_FOR: Duration = Duration::from_secs(600);
const RECENTLY_DELETED_MAX: usize = 10_000;
/// Attempts of a call on a just-created user that meets `NoSuchEntity`.
const FRESH_USER_ATTEMPTS: u32 = 4;

/// Settings of an [`IamUserProvider`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_iam::IamUserConfig;
///
/// let config = IamUserConfig::new()
///     .path("/leasehold/")
///     .group("readers")
///     .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
///     .inline_policy(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}"#)
///     .tag("team", "payments")
///     .ready_timeout(Duration::from_secs(20));
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IamUserConfig {
    /// AWS credentials, region, endpoint of the account the users are made in.
    pub aws: AwsConfig,
    /// IAM path of the users (default `/`). A dedicated path such as `/leasehold/` lets the
    /// provider's own IAM policy be scoped to it.
    pub path: String,
    /// A managed policy ARN set as every user's permissions boundary.
    pub permissions_boundary: Option<String>,
    /// Extra tags on every user (the provider adds `leasehold:*` tags itself).
    pub tags: BTreeMap<String, String>,
    /// Groups every user is added to.
    pub groups: Vec<String>,
    /// Managed policies attached to every user.
    pub policy_arns: Vec<String>,
    /// An inline policy document (JSON) put on every user.
    pub inline_policy: Option<String>,
    /// The inline policy's name (default `leasehold`).
    pub inline_policy_name: String,
    /// How long `create` waits, at most, for the new key to be accepted by STS (default 30 s).
    pub ready_timeout: Duration,
    /// How old a lease must be before `NoSuchEntity` on revoke is believed (default 30 s).
    pub consistency_window: Duration,
    /// The pause between `DeleteUser`'s `NoSuchEntity` and the `GetUser` that confirms it, for
    /// a reference without a creation time (default 2 s).
    pub absence_recheck_delay: Duration,
    /// Whether revoke's `DeleteConflict` sweep lists and deletes service-specific credentials
    /// (CodeCommit, Keyspaces, Bedrock; default true). The sweep runs only when `DeleteUser`
    /// is refused, and a refused listing is a warning there, not a failed revoke; turning
    /// this off only spares that warning on endpoints that lack the operation (moto). On
    /// real IAM a leftover credential makes `DeleteUser` fail with `DeleteConflict` rather
    /// than leave anything behind.
    pub sweep_service_specific_credentials: bool,
}

impl Default for IamUserConfig {
    fn default() -> Self {
        IamUserConfig {
            aws: AwsConfig::default(),
            path: "/".into(),
            permissions_boundary: None,
            tags: BTreeMap::new(),
            groups: Vec::new(),
            policy_arns: Vec::new(),
            inline_policy: None,
            inline_policy_name: "leasehold".into(),
            ready_timeout: Duration::from_secs(30),
            consistency_window: Duration::from_secs(30),
            absence_recheck_delay: Duration::from_secs(2),
            sweep_service_specific_credentials: true,
        }
    }
}

impl IamUserConfig {
    /// Defaults: path `/`, no groups or policies, default AWS settings.
    pub fn new() -> Self {
        IamUserConfig::default()
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds a group.
    #[must_use]
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.groups.push(name.into());
        self
    }

    /// Adds a managed policy ARN.
    #[must_use]
    pub fn policy_arn(mut self, arn: impl Into<String>) -> Self {
        self.policy_arns.push(arn.into());
        self
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        self.checked_inline_policy().map(|_| ())
    }

    /// Validates and returns the compact inline policy.
    fn checked_inline_policy(&self) -> Result<Option<String>> {
        check_path(&self.path)?;
        if let Some(arn) = &self.permissions_boundary {
            check_policy_arn("permissions_boundary", arn)?;
        }
        check_tags(&self.tags)?;
        for (i, g) in self.groups.iter().enumerate() {
            check_iam_name("groups", g)?;
            if self.groups[..i].contains(g) {
                return Err(Error::invalid_config(format!(
                    "groups: {g:?} is listed twice"
                )));
            }
        }
        if self.policy_arns.len() > 20 {
            return Err(Error::invalid_config(
                "policy_arns: IAM attaches at most 20 managed policies to a user",
            ));
        }
        for (i, arn) in self.policy_arns.iter().enumerate() {
            check_policy_arn("policy_arns", arn)?;
            if self.policy_arns[..i].contains(arn) {
                return Err(Error::invalid_config(format!(
                    "policy_arns: {arn:?} is listed twice"
                )));
            }
        }
        check_iam_name("inline_policy_name", &self.inline_policy_name)?;
        check_positive("ready_timeout", self.ready_timeout)?;
        check_positive("absence_recheck_delay", self.absence_recheck_delay)?;
        self.inline_policy
            .as_deref()
            .map(|doc| check_policy_document("inline_policy", doc))
            .transpose()
    }
}

leasehold_core::setters! {
    IamUserConfig {
        /// Sets the AWS settings.
        aws: AwsConfig,
        /// Sets the readiness bound.
        ready_timeout: Duration,
        /// Sets the consistency window.
        consistency_window: Duration,
        /// Sets the pause between the two absence checks.
        absence_recheck_delay: Duration,
        /// Sets whether revoke sweeps service-specific credentials.
        sweep_service_specific_credentials: bool,
    }
}

leasehold_core::setters! {
    into IamUserConfig {
        /// Sets the IAM path.
        path: String,
        /// Sets the inline policy's name.
        inline_policy_name: String,
    }
}

leasehold_core::setters! {
    into Some IamUserConfig {
        /// Sets the permissions boundary.
        permissions_boundary: String,
        /// Sets the inline policy document.
        inline_policy: String,
    }
}

/// Issues an IAM user with an access key per lease (credential type `iam_user`, kind `aws-iam`).
///
/// `create` makes the user (path, permissions boundary, tags naming the lease), adds it to the
/// groups, attaches the managed policies, puts the inline policy, then creates the access key;
/// a failure after `CreateUser` deletes whatever was made. `revoke` deletes what the lease
/// made (its access key, the inline policy, the managed-policy attachments, the group
/// memberships), then the user; only if IAM answers `DeleteConflict` does it list and delete
/// every other kind of attachment (login profile, MFA devices, SSH keys, service-specific
/// credentials, signing certificates, other keys and policies) and try again. A listing IAM
/// refuses in that sweep is a warning, not a failed revoke: `DeleteUser` decides.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::{DynamicSecret, DynamicSecretProvider};
/// use leasehold_iam::{IamUserConfig, IamUserProvider};
///
/// let provider = IamUserProvider::new(
///     IamUserConfig::new()
///         .aws(AwsConfig::new().region("us-east-1"))
///         .path("/leasehold/")
///         .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess"),
/// )
/// .await?;
/// provider.validate().await?;
/// let secret = DynamicSecret::builder("reports-reader", Arc::new(provider)).build()?;
/// # Ok(()) }
/// ```
pub struct IamUserProvider {
    config: IamUserConfig,
    inline_policy: Option<String>,
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    /// Users this instance's own `DeleteUser` removed: a later `NoSuchEntity` for them is
    /// certain, not an eventual-consistency artefact.
    recently_deleted: Mutex<HashMap<String, Instant>>,
}

impl fmt::Debug for IamUserProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamUserProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What removing a user found.
enum Swept {
    /// This instance's `DeleteUser` removed the user.
    Deleted,
    /// IAM says the user does not exist.
    Gone,
}

/// Sub-resources that vanished meanwhile are fine: the goal is their absence.
macro_rules! delete_ok {
    ($op:literal, $call:expr) => {
        match $call {
            Ok(_) => {}
            Err(e) if is_no_such_entity(&e) => {}
            Err(e) => return Err(iam_error($op, e)),
        }
    };
}

impl IamUserProvider {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: IamUserConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_sdk_config(config, &sdk)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used).
    pub fn from_sdk_config(config: IamUserConfig, sdk: &SdkConfig) -> Result<Self> {
        Self::from_clients(
            config,
            aws_sdk_iam::Client::new(sdk),
            aws_sdk_sts::Client::new(sdk),
        )
    }

    /// Uses the given clients (`config.aws` is then not used).
    pub fn from_clients(
        config: IamUserConfig,
        iam: aws_sdk_iam::Client,
        sts: aws_sdk_sts::Client,
    ) -> Result<Self> {
        let inline_policy = config.checked_inline_policy()?;
        Ok(IamUserProvider {
            config,
            inline_policy,
            iam,
            sts,
            recently_deleted: Mutex::new(HashMap::new()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &IamUserConfig {
        &self.config
    }

    fn remember_deleted(&self, user: &str) {
        let mut m = self
            .recently_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.retain(|_, at| at.elapsed() < RECENTLY_DELETED_FOR);
        if m.len() >= RECENTLY_DELETED_MAX {
            return;
        }
        m.insert(user.to_string(), Instant::now());
    }

    fn deleted_here(&self, user: &str) -> bool {
        let m = self
            .recently_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.get(user)
            .is_some_and(|at| at.elapsed() < RECENTLY_DELETED_FOR)
    }

    fn user_tags(&self, req: &CreateRequest) -> Result<Vec<aws_sdk_iam::types::Tag>> {
        let mut pairs: Vec<(String, String)> = vec![
            (tags::LEASE_ID.into(), tag_value(req.lease_id.as_str())),
            (tags::SECRET.into(), tag_value(&req.secret)),
            (
                tags::EXPIRES_AT.into(),
                req.expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            (tags::MANAGED_BY.into(), MANAGED_BY.into()),
        ];
        if let Some(inst) = &req.installation {
            pairs.push((tags::INSTALLATION.into(), tag_value(inst)));
        }
        pairs.extend(self.config.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        pairs
            .into_iter()
            .map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| Error::unexpected(format!("building an IAM tag: {e}")))
            })
            .collect()
    }

    /// Groups, policies, then the access key; the user exists already.
    async fn attach_and_key(&self, user: &str) -> Result<aws_sdk_iam::types::AccessKey> {
        for group in &self.config.groups {
            on_fresh_user("AddUserToGroup", || {
                self.iam
                    .add_user_to_group()
                    .group_name(group)
                    .user_name(user)
                    .send()
            })
            .await
            .map_err(|e| e.with_context("group", group))?;
        }
        for arn in &self.config.policy_arns {
            on_fresh_user("AttachUserPolicy", || {
                self.iam
                    .attach_user_policy()
                    .user_name(user)
                    .policy_arn(arn)
                    .send()
            })
            .await
            .map_err(|e| e.with_context("policy_arn", arn))?;
        }
        if let Some(doc) = &self.inline_policy {
            on_fresh_user("PutUserPolicy", || {
                self.iam
                    .put_user_policy()
                    .user_name(user)
                    .policy_name(&self.config.inline_policy_name)
                    .policy_document(doc)
                    .send()
            })
            .await?;
        }
        let out = on_fresh_user("CreateAccessKey", || {
            self.iam.create_access_key().user_name(user).send()
        })
        .await?;
        out.access_key
            .ok_or_else(|| Error::unexpected("CreateAccessKey returned no key"))
    }

    /// Removes the user. First what a lease made (its access key when known, the configured
    /// inline policy, managed policies and groups), then `DeleteUser`. Only when IAM answers
    /// `DeleteConflict` (something else hangs on the user) does it sweep every attachment
    /// kind and try `DeleteUser` again: the listings that sweep needs (login profile, MFA,
    /// SSH keys, service-specific credentials, signing certificates) need permissions a
    /// revoke rarely uses, which a least-privilege policy or an IAM-compatible endpoint may
    /// not grant.
    async fn remove(&self, user: &str, access_key_id: Option<&str>) -> Result<Swept> {
        if let Some(id) = access_key_id {
            delete_ok!(
                "DeleteAccessKey",
                self.iam
                    .delete_access_key()
                    .user_name(user)
                    .access_key_id(id)
                    .send()
                    .await
            );
        }
        if self.inline_policy.is_some() {
            delete_ok!(
                "DeleteUserPolicy",
                self.iam
                    .delete_user_policy()
                    .user_name(user)
                    .policy_name(&self.config.inline_policy_name)
                    .send()
                    .await
            );
        }
        for arn in &self.config.policy_arns {
            delete_ok!(
                "DetachUserPolicy",
                self.iam
                    .detach_user_policy()
                    .user_name(user)
                    .policy_arn(arn)
                    .send()
                    .await
            );
        }
        for group in &self.config.groups {
            delete_ok!(
                "RemoveUserFromGroup",
                self.iam
                    .remove_user_from_group()
                    .user_name(user)
                    .group_name(group)
                    .send()
                    .await
            );
        }
        match self.iam.delete_user().user_name(user).send().await {
            Ok(_) => {
                self.remember_deleted(user);
                return Ok(Swept::Deleted);
            }
            Err(e) if is_no_such_entity(&e) => return Ok(Swept::Gone),
            Err(e) if leasehold_aws::error_code(&e) == Some("DeleteConflict") => {
                tracing::debug!(
                    user,
                    "DeleteUser: DeleteConflict, sweeping every attachment kind"
                );
            }
            Err(e) => return Err(iam_error("DeleteUser", e)),
        }

        let mut unlisted = Vec::new();
        if !self.sweep(user, &mut unlisted).await? {
            return Ok(Swept::Gone);
        }
        match self.iam.delete_user().user_name(user).send().await {
            Ok(_) => {
                self.remember_deleted(user);
                Ok(Swept::Deleted)
            }
            Err(e) if is_no_such_entity(&e) => Ok(Swept::Gone),
            Err(e) => {
                let mut err = iam_error("DeleteUser", e);
                if !unlisted.is_empty() {
                    // What may still hang on the user, and which permission would find it.
                    err = err.with_context("not_listed", unlisted.join(", "));
                }
                Err(err)
            }
        }
    }

    /// Removes every attachment kind that blocks `DeleteUser`, following IAM's pagination
    /// markers. A listing IAM refuses (a missing permission, an endpoint without the
    /// operation) is skipped with a warning and noted in `unlisted`: the `DeleteUser` that
    /// follows says whether anything is really left. `Ok(false)` when the user is gone.
    async fn sweep(&self, user: &str, unlisted: &mut Vec<String>) -> Result<bool> {
        macro_rules! listed {
            ($op:literal, $call:expr) => {
                match $call {
                    Ok(v) => v,
                    Err(e) if is_no_such_entity(&e) => return Ok(false),
                    Err(e) => {
                        let e = iam_error($op, e);
                        tracing::warn!(
                            user,
                            operation = $op,
                            error = %e,
                            "revoke could not list an attachment kind; DeleteUser will tell whether anything is left"
                        );
                        unlisted.push(format!("{} ({})", $op, e.kind()));
                        Default::default()
                    }
                }
            };
        }

        let keys: Vec<_> = listed!(
            "ListAccessKeys",
            self.iam
                .list_access_keys()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for k in keys {
            if let Some(id) = k.access_key_id() {
                delete_ok!(
                    "DeleteAccessKey",
                    self.iam
                        .delete_access_key()
                        .user_name(user)
                        .access_key_id(id)
                        .send()
                        .await
                );
            }
        }

        // NoSuchEntity here means "no login profile"; a refusal is like a refused listing.
        match self.iam.delete_login_profile().user_name(user).send().await {
            Ok(_) => {}
            Err(e) if is_no_such_entity(&e) => {}
            Err(e) => {
                let e = iam_error("DeleteLoginProfile", e);
                tracing::warn!(user, operation = "DeleteLoginProfile", error = %e,
                    "revoke could not delete a login profile; DeleteUser will tell whether one is left");
                unlisted.push(format!("DeleteLoginProfile ({})", e.kind()));
            }
        }

        let mfa: Vec<_> = listed!(
            "ListMFADevices",
            self.iam
                .list_mfa_devices()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for d in mfa {
            let serial = d.serial_number();
            delete_ok!(
                "DeactivateMFADevice",
                self.iam
                    .deactivate_mfa_device()
                    .user_name(user)
                    .serial_number(serial)
                    .send()
                    .await
            );
            // Virtual devices are IAM objects (their serial is an ARN); hardware ones only
            // need deactivating.
            if serial.starts_with("arn:") && serial.contains(":mfa/") {
                delete_ok!(
                    "DeleteVirtualMFADevice",
                    self.iam
                        .delete_virtual_mfa_device()
                        .serial_number(serial)
                        .send()
                        .await
                );
            }
        }

        let ssh: Vec<_> = listed!(
            "ListSSHPublicKeys",
            self.iam
                .list_ssh_public_keys()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for k in ssh {
            delete_ok!(
                "DeleteSSHPublicKey",
                self.iam
                    .delete_ssh_public_key()
                    .user_name(user)
                    .ssh_public_key_id(k.ssh_public_key_id())
                    .send()
                    .await
            );
        }

        // Not paginated: IAM allows two per service, a handful in all.
        if self.config.sweep_service_specific_credentials {
            let service: Vec<_> = listed!(
                "ListServiceSpecificCredentials",
                self.iam
                    .list_service_specific_credentials()
                    .user_name(user)
                    .send()
                    .await
                    .map(|o| o.service_specific_credentials.unwrap_or_default())
            );
            for c in service {
                delete_ok!(
                    "DeleteServiceSpecificCredential",
                    self.iam
                        .delete_service_specific_credential()
                        .user_name(user)
                        .service_specific_credential_id(c.service_specific_credential_id())
                        .send()
                        .await
                );
            }
        }

        let certs: Vec<_> = listed!(
            "ListSigningCertificates",
            self.iam
                .list_signing_certificates()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for c in certs {
            delete_ok!(
                "DeleteSigningCertificate",
                self.iam
                    .delete_signing_certificate()
                    .user_name(user)
                    .certificate_id(c.certificate_id())
                    .send()
                    .await
            );
        }

        let inline: Vec<_> = listed!(
            "ListUserPolicies",
            self.iam
                .list_user_policies()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for name in inline {
            delete_ok!(
                "DeleteUserPolicy",
                self.iam
                    .delete_user_policy()
                    .user_name(user)
                    .policy_name(name)
                    .send()
                    .await
            );
        }

        let attached: Vec<_> = listed!(
            "ListAttachedUserPolicies",
            self.iam
                .list_attached_user_policies()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for p in attached {
            if let Some(arn) = p.policy_arn() {
                delete_ok!(
                    "DetachUserPolicy",
                    self.iam
                        .detach_user_policy()
                        .user_name(user)
                        .policy_arn(arn)
                        .send()
                        .await
                );
            }
        }

        let groups: Vec<_> = listed!(
            "ListGroupsForUser",
            self.iam
                .list_groups_for_user()
                .user_name(user)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
        );
        for g in groups {
            delete_ok!(
                "RemoveUserFromGroup",
                self.iam
                    .remove_user_from_group()
                    .user_name(user)
                    .group_name(g.group_name())
                    .send()
                    .await
            );
        }
        Ok(true)
    }

    /// Undoes a half-made user: removes it, retrying a few times over a few seconds, because
    /// the user was created moments ago and IAM may not show it (or its parts) to every
    /// reader yet. The access key is unknown here; if one was made after all, `DeleteUser`
    /// answers `DeleteConflict` and the sweep finds it.
    async fn compensate(&self, user: &str) {
        let mut delays = Backoff::new(Duration::from_millis(500), Duration::from_secs(4)).iter();
        for attempt in 1..=4 {
            match self.remove(user, None).await {
                Ok(Swept::Deleted) => return,
                Ok(Swept::Gone) => {
                    tracing::debug!(user, attempt, "user not visible yet while compensating")
                }
                Err(e) if e.is_temporary() => {
                    tracing::debug!(user, attempt, error = %e, "compensation failed, retrying")
                }
                Err(e) => {
                    tracing::warn!(user, error = %e, "could not remove a half-made IAM user; the lease's revoke will");
                    return;
                }
            }
            tokio::time::sleep(delays.next_delay()).await;
        }
        tracing::warn!(
            user,
            "could not remove a half-made IAM user; the lease's revoke will"
        );
    }

    /// Whether the user exists, by `GetUser`.
    async fn user_exists(&self, user: &str) -> Result<bool> {
        match self.iam.get_user().user_name(user).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_no_such_entity(&e) => Ok(false),
            Err(e) => Err(iam_error("GetUser", e)),
        }
    }

    /// IAM said the user does not exist. Whether to believe it (IAM is eventually consistent: a
    /// user created moments ago can be invisible to the reader that revoke hits).
    async fn decide_absent(&self, external: &ExternalRef) -> Result<()> {
        let user = external.id.as_str();
        if self.deleted_here(user) {
            return Ok(());
        }
        match external.attr(ATTR_CREATED_AT) {
            Some(at) => {
                let created = DateTime::parse_from_rfc3339(at)
                    .map_err(|_| {
                        Error::invalid_input(format!(
                            "external reference attribute {ATTR_CREATED_AT} is not RFC 3339"
                        ))
                    })?
                    .with_timezone(&Utc);
                let age = (Utc::now() - created).to_std().unwrap_or_default();
                if age >= self.config.consistency_window {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "IAM does not show user {user:?} yet, but it was created {}s ago (consistency window {}s); retry",
                            age.as_secs(),
                            self.config.consistency_window.as_secs()
                        ),
                    )
                    .temporary())
                }
            }
            // The manager's write-ahead reference (create never returned): DeleteUser said
            // missing; a GetUser a pause later decides. A user that shows up after
            // that is tagged and named with the prefix, so reconcile finds it.
            None => {
                tokio::time::sleep(self.config.absence_recheck_delay).await;
                if self.user_exists(user).await? {
                    match Box::pin(self.remove(user, external.attr(ATTR_ACCESS_KEY_ID))).await? {
                        Swept::Deleted | Swept::Gone => Ok(()),
                    }
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Runs a call on a user created moments ago. IAM is eventually consistent, so such a call can
/// meet `NoSuchEntity` for a short while; it is retried a few times (about 2 s in all) before
/// the error stands (then it most likely names a missing group or policy).
async fn on_fresh_user<T, E, F, Fut>(operation: &'static str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<
            T,
            aws_smithy_runtime_api::client::result::SdkError<
                E,
                aws_smithy_runtime_api::client::orchestrator::HttpResponse,
            >,
        >,
    >,
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let mut delays = Backoff::new(Duration::from_millis(250), Duration::from_secs(2)).iter();
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if is_no_such_entity(&e) && attempt < FRESH_USER_ATTEMPTS => {
                tracing::debug!(
                    operation,
                    attempt,
                    "NoSuchEntity right after CreateUser, retrying"
                );
                tokio::time::sleep(delays.next_delay()).await;
                attempt += 1;
            }
            Err(e) => return Err(iam_error(operation, e)),
        }
    }
}

fn exists_or_config_error<T, E>(
    r: std::result::Result<
        T,
        aws_smithy_runtime_api::client::result::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    >,
    operation: &'static str,
    field: &str,
    name: &str,
) -> Result<()>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_no_such_entity(&e) => Err(Error::invalid_config(format!(
            "{field}: {name:?} does not exist"
        ))),
        Err(e) => {
            let e = iam_error(operation, e);
            if e.kind() == ErrorKind::PermissionDenied {
                tracing::warn!(field, name, "cannot check that it exists: {e}");
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

#[async_trait]
impl DynamicSecretProvider for IamUserProvider {
    fn kind(&self) -> &'static str {
        "aws-iam"
    }

    fn capabilities(&self) -> Capabilities {
        // Renewal is lease-only: an IAM user has no expiry of its own.
        Capabilities::new()
            .renewable(true)
            .revocable(true)
            .needs_password(false)
            .lists_managed(true)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::IamUserName
    }

    /// Checks the settings, that the credentials work (`GetCallerIdentity`), and that the
    /// groups, managed policies and boundary exist, so a typo fails at registration rather
    /// than on every issue. Where the provider may not read a group or policy
    /// (`AccessDenied`), that check is skipped with a warning.
    async fn validate(&self) -> Result<()> {
        self.config.checked_inline_policy()?;
        self.sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| leasehold_aws::map_sdk_error("GetCallerIdentity", e))?;
        for group in &self.config.groups {
            let r = self
                .iam
                .get_group()
                .group_name(group)
                .max_items(1)
                .send()
                .await;
            exists_or_config_error(r, "GetGroup", "groups", group)?;
        }
        let policies = self
            .config
            .policy_arns
            .iter()
            .map(|a| ("policy_arns", a))
            .chain(
                self.config
                    .permissions_boundary
                    .iter()
                    .map(|a| ("permissions_boundary", a)),
            );
        for (field, arn) in policies {
            let r = self.iam.get_policy().policy_arn(arn).send().await;
            exists_or_config_error(r, "GetPolicy", field, arn)?;
        }
        Ok(())
    }

    async fn create(&self, req: &CreateRequest) -> Result<Created> {
        let user = req.username.as_str();
        let ctx = |e: Error| {
            e.with_context("user", user)
                .with_context("lease_id", &req.lease_id)
        };
        NameRule::IamUserName.check(user).map_err(ctx)?;
        let tags = self.user_tags(req)?;
        let out = self
            .iam
            .create_user()
            .user_name(user)
            .path(&self.config.path)
            .set_permissions_boundary(self.config.permissions_boundary.clone())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| ctx(iam_error("CreateUser", e)))?;
        let created_at = Utc::now();
        let user_arn = out.user().map(|u| u.arn().to_string()).unwrap_or_default();

        let key = match self.attach_and_key(user).await {
            Ok(k) => k,
            Err(e) => {
                self.compensate(user).await;
                return Err(ctx(e));
            }
        };
        let access_key_id = key.access_key_id().to_string();
        let secret_access_key = SecretString::from(key.secret_access_key().to_string());
        drop(key);

        let readiness = if req.wait_ready && !user_arn.is_empty() {
            confirm_identity(
                &self.sts,
                &access_key_id,
                &secret_access_key,
                None,
                &user_arn,
                self.config.ready_timeout,
            )
            .await
        } else {
            Readiness::Unchecked
        };
        let mut external = ExternalRef::new(user)
            .with_attr(ATTR_ACCESS_KEY_ID, access_key_id.clone())
            .with_attr(
                ATTR_CREATED_AT,
                created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        if !user_arn.is_empty() {
            external = external.with_attr(ATTR_USER_ARN, user_arn);
        }
        Ok(Created::new(
            external,
            Credentials::AwsKeys {
                access_key_id,
                secret_access_key,
                session_token: None,
            },
            readiness,
        ))
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        let user = external.id.as_str();
        let ctx = |e: Error| e.with_context("user", user);
        NameRule::IamUserName.check(user).map_err(|e| {
            ctx(Error::invalid_input(format!(
                "cannot revoke: {}",
                e.message()
            )))
        })?;
        match self
            .remove(user, external.attr(ATTR_ACCESS_KEY_ID))
            .await
            .map_err(ctx)?
        {
            Swept::Deleted => Ok(()),
            Swept::Gone => self.decide_absent(external).await.map_err(ctx),
        }
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        let users = self
            .iam
            .list_users()
            .path_prefix(&self.config.path)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| iam_error("ListUsers", e))?;
        let mut found = Vec::new();
        for u in users {
            // A path prefix also matches deeper paths; only this provider's path counts.
            if !u.user_name().starts_with(prefix) || u.path() != self.config.path {
                continue;
            }
            let tags = match self
                .iam
                .list_user_tags()
                .user_name(u.user_name())
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
            {
                Ok(t) => t,
                Err(e) if is_no_such_entity(&e) => continue,
                Err(e) => return Err(iam_error("ListUserTags", e)),
            };
            let tag = |k: &str| tags.iter().find(|t| t.key() == k).map(|t| t.value());
            // Only users this library made: a same-prefixed user without the tag is someone's.
            if tag(tags::MANAGED_BY) != Some(MANAGED_BY) {
                continue;
            }
            let mut external = ExternalRef::new(u.user_name());
            if let Some(at) = to_chrono(u.create_date()) {
                external = external.with_attr(
                    ATTR_CREATED_AT,
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            }
            found.push(
                ManagedCredential::new(external)
                    .with_lease_id(tag(tags::LEASE_ID).map(str::to_string))
                    .with_installation(tag(tags::INSTALLATION).map(str::to_string)),
            );
        }
        Ok(found)
    }
}
