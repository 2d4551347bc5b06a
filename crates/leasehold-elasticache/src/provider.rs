//! [`ElastiCacheProvider`]: one RBAC user per lease, added to the cache's user group.
//!
//! Over 700 lines because the five trait methods share the user-group waits and the readiness
//! check they are written around; each piece is used by more than one method.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_elasticache::types::{AuthenticationType, Tag, User};
use aws_sdk_elasticache::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use leasehold_aws::membership::{Joined, MembershipQueue, Pacing};
use leasehold_aws::{
    caller_identity, error_code, found, map_sdk_error, tags, wait_until, UserService,
};
use leasehold_core::backoff::Backoff;
use leasehold_core::{
    Capabilities, CoordinationStore, CreateRequest, Created, Credentials, DynamicSecretProvider,
    Error, ErrorKind, ExternalRef, ManagedCredential, NameRule, PasswordPolicy, Readiness, Result,
    StatementVars,
};

use crate::acl::summarize_existing;
use crate::config::{CreateUserStatement, ElastiCacheConfig, Target};
use crate::membership::UserGroup;
use crate::users::ElastiCacheUsers;
use leasehold_aws::{AuthOutcome, AuthProbe};

/// The provider's [`kind`](DynamicSecretProvider::kind).
pub const KIND: &str = "aws-elasticache";

/// Value of the `leasehold:managed-by` tag.
pub const MANAGED_BY: &str = "leasehold";

/// Tag naming the user group a user was made for, so reconcile finds users that never
/// joined it (a failed create whose clean-up failed too).
pub const TAG_USER_GROUP: &str = "leasehold:user-group";

/// `ExternalRef` attribute: the user group the user was added to.
pub const ATTR_USER_GROUP: &str = "user_group";

/// `ExternalRef` attribute: the user name clients authenticate with.
pub const ATTR_USER_NAME: &str = "user_name";

/// How long revoke and compensation retry a user that is `creating` / `modifying`.
const BUSY_USER_BUDGET: Duration = Duration::from_secs(20);

/// Issues an ElastiCache RBAC user per lease (kind `aws-elasticache`).
///
/// `create` renders the creation statement, checks the group's quota, calls `CreateUser`
/// (tagged with the lease), waits until the user is `active`, adds it to the user group
/// (batched with concurrent issues, see the crate README), waits until the group is `active`
/// with the user in it and, when an endpoint is configured, confirms the credential with
/// `AUTH`. A failure after `CreateUser` deletes the user again. `revoke` calls `DeleteUser`,
/// which removes the user from every group.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::{DynamicSecret, DynamicSecretProvider};
/// use leasehold_elasticache::{ElastiCacheConfig, ElastiCacheProvider, Target};
///
/// let provider = ElastiCacheProvider::new(
///     ElastiCacheConfig::new(Target::ReplicationGroup("orders".into()), "orders-users")
///         .aws(AwsConfig::new().region("eu-west-1"))
///         .readiness_endpoint("rediss://master.orders.abc123.euw1.cache.amazonaws.com:6379", None),
/// )
/// .await?;
/// provider.validate().await?;
/// let secret = DynamicSecret::builder("orders-cache", Arc::new(provider)).build()?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
pub struct ElastiCacheProvider {
    config: ElastiCacheConfig,
    client: Client,
    sdk: Option<SdkConfig>,
    queue: MembershipQueue<UserGroup>,
    auth: Option<AuthProbe>,
    poll_initial: Duration,
}

impl fmt::Debug for ElastiCacheProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElastiCacheProvider")
            .field("config", &self.config)
            .field("auth_check", &self.auth)
            .finish_non_exhaustive()
    }
}

fn user_error(op: &'static str, user_id: &str, e: Error) -> Error {
    e.with_context("user_id", user_id)
        .with_context("operation", op)
}

impl ElastiCacheProvider {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: ElastiCacheConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        let mut p = Self::from_client(config, Client::new(&sdk))?;
        p.sdk = Some(sdk);
        Ok(p)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used).
    pub fn from_sdk_config(config: ElastiCacheConfig, sdk: &SdkConfig) -> Result<Self> {
        let mut p = Self::from_client(config, Client::new(sdk))?;
        p.sdk = Some(sdk.clone());
        Ok(p)
    }

    /// Uses a ready client (tests hand in mocked ones). `validate` then skips the STS
    /// credentials check, which needs an SDK configuration.
    pub fn from_client(config: ElastiCacheConfig, client: Client) -> Result<Self> {
        config.validate()?;
        let auth = config
            .readiness_endpoint
            .as_deref()
            .map(|url| AuthProbe::new(url, config.readiness_ca_pem.as_deref()))
            .transpose()?;
        let queue = MembershipQueue::new(
            UserGroup::new(client.clone(), &config.user_group_id),
            None,
            Pacing::default(),
        );
        Ok(ElastiCacheProvider {
            config,
            client,
            sdk: None,
            queue,
            auth,
            poll_initial: Duration::from_millis(200),
        })
    }

    /// Batches user-group additions with every instance that shares `store` (the lease
    /// store's [`coordination`](leasehold_core::LeaseStore::coordination)), not only with this
    /// process's own issues. `pacing` tunes the queue (`None`: the defaults).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(config: leasehold_elasticache::ElastiCacheConfig) -> leasehold_core::Result<()> {
    /// use leasehold_core::{LeaseStore, MemoryStore};
    /// use leasehold_elasticache::ElastiCacheProvider;
    ///
    /// // Any LeaseStore: SqliteStore for processes on one host, PostgresStore for a fleet.
    /// let store = MemoryStore::new();
    /// let provider = ElastiCacheProvider::new(config)
    ///     .await?
    ///     .with_coordination(store.coordination(), None);
    /// # let _ = provider;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_coordination(
        mut self,
        store: Option<Arc<dyn CoordinationStore>>,
        pacing: Option<Pacing>,
    ) -> Self {
        self.queue = MembershipQueue::new(
            UserGroup::new(self.client.clone(), &self.config.user_group_id),
            store,
            pacing.unwrap_or_default(),
        );
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ElastiCacheConfig {
        &self.config
    }

    fn group_id(&self) -> String {
        self.config.user_group_id.to_ascii_lowercase()
    }

    /// Every user of the account and region (`DescribeUsers`, all pages).
    async fn all_users(&self) -> Result<Vec<User>> {
        let mut users: Vec<User> = Vec::new();
        let mut pages = self.client.describe_users().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_error("DescribeUsers", e))?;
            users.extend(page.users().iter().cloned());
        }
        Ok(users)
    }

    /// Waits until the user is `active`. `Ok(false)` when the budget ran out.
    async fn wait_user_active(&self, user_id: &str, budget: Duration) -> Result<bool> {
        wait_until(
            budget,
            self.poll_initial,
            Duration::from_secs(2),
            || async {
                match ElastiCacheUsers::describe(&self.client, user_id).await? {
                    Some(u) => Ok(u.is_active()),
                    // DescribeUsers may lag CreateUser for a moment.
                    None => Ok(false),
                }
            },
        )
        .await
    }

    /// Deletes the user, retrying while it is `creating` / `modifying`. Gone or already
    /// `deleting` is success.
    async fn delete_user(&self, user_id: &str, budget: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut delays = Backoff::new(self.poll_initial, Duration::from_secs(2)).iter();
        loop {
            match self.client.delete_user().user_id(user_id).send().await {
                Ok(_) => {
                    self.queue.forget(user_id);
                    return Ok(());
                }
                Err(e) => {
                    let code = error_code(&e).map(str::to_string);
                    let err = user_error("DeleteUser", user_id, map_sdk_error("DeleteUser", e));
                    match code.as_deref() {
                        Some("UserNotFound") => {
                            self.queue.forget(user_id);
                            return Ok(());
                        }
                        Some("InvalidUserState") => {
                            match ElastiCacheUsers::describe(&self.client, user_id).await {
                                // Already on its way out (a second revoke), or gone meanwhile.
                                Ok(None) => {
                                    self.queue.forget(user_id);
                                    return Ok(());
                                }
                                Ok(Some(u)) if u.status.as_deref() == Some("deleting") => {
                                    self.queue.forget(user_id);
                                    return Ok(());
                                }
                                // `creating` / `modifying`: it passes; retry.
                                _ => {}
                            }
                        }
                        _ if err.is_temporary() => {}
                        _ => return Err(err),
                    }
                    let delay = delays.next_delay();
                    if tokio::time::Instant::now() + delay > deadline {
                        // Retried until the budget: the manager retries later, not at once.
                        return Err(err.temporary().persist());
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Removes a user this `create` made, after a later step failed. Best effort: the
    /// manager revokes by the written-ahead name if this fails too.
    async fn compensate(&self, user_id: &str, cause: Error) -> Error {
        if let Err(e) = self.queue.withdraw(user_id).await {
            tracing::debug!(user_id, error = %e, "could not withdraw the queued group addition");
        }
        match self.delete_user(user_id, BUSY_USER_BUDGET).await {
            Ok(()) => cause,
            Err(e) => {
                tracing::warn!(user_id, error = %e, "could not delete the user after a failed create; the lease's revoke will retry");
                cause.with_context("compensation", "failed")
            }
        }
    }

    fn render_create(&self, request: &CreateRequest, user_id: &str) -> Result<CreateUserStatement> {
        let password = request.require_password(KIND)?;
        let rendered = self.config.creation_statement.render(&StatementVars {
            username: user_id,
            password: Some(password),
            expiration: Some(request.expires_at),
        })?;
        let stmt = CreateUserStatement::from_rendered(rendered.expose_json(), self.config.engine)?;
        if stmt.user_id != user_id {
            return Err(Error::invalid_config(
                "creation_statement: UserId must render to the lease's username",
            ));
        }
        Ok(stmt)
    }

    fn revoke_user_id(&self, external: &ExternalRef) -> Result<String> {
        let id = NameRule::ElastiCacheUserId.normalize(&external.id);
        NameRule::ElastiCacheUserId
            .check(&id)
            .map_err(|e| Error::invalid_input(format!("revoke: {}", e.message())))?;
        let rendered = self.config.revocation_statement.render(&StatementVars {
            username: &id,
            password: None,
            expiration: None,
        })?;
        let user_id = rendered.expose_json()["UserId"]
            .as_str()
            .map(|s| NameRule::ElastiCacheUserId.normalize(s))
            .ok_or_else(|| {
                Error::invalid_config("revocation_statement: UserId must be a string")
            })?;
        NameRule::ElastiCacheUserId
            .check(&user_id)
            .map_err(|e| Error::invalid_input(format!("revoke: {}", e.message())))?;
        Ok(user_id)
    }

    async fn confirm_auth(
        &self,
        checker: &AuthProbe,
        user_name: &str,
        password: &secrecy::SecretString,
        budget: Duration,
    ) -> Result<bool> {
        wait_until(
            budget,
            self.poll_initial,
            Duration::from_secs(2),
            || async { Ok(checker.check(user_name, password).await? == AuthOutcome::Accepted) },
        )
        .await
    }

    /// Whether `user_id` exists and carries the lease id tag of `request`.
    async fn made_for(&self, user_id: &str, request: &CreateRequest) -> bool {
        let Ok(Some(user)) = ElastiCacheUsers::describe(&self.client, user_id).await else {
            return false;
        };
        let Some(arn) = user.arn.as_deref() else {
            return false;
        };
        self.tags_of(arn).await.is_ok_and(|tags| {
            tags.iter()
                .any(|(k, v)| k == tags::LEASE_ID && v == request.lease_id.as_str())
        })
    }

    async fn tags_of(&self, arn: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .client
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .map_err(|e| map_sdk_error("ListTagsForResource", e))?;
        Ok(out
            .tag_list()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect())
    }
}

#[async_trait]
impl DynamicSecretProvider for ElastiCacheProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn attach_coordination(&self, coordination: Arc<dyn CoordinationStore>) {
        // An explicit with_coordination wins (the queue keeps the first store it has).
        self.queue.adopt(coordination);
    }

    fn capabilities(&self) -> Capabilities {
        // Renewable, revocable, with a password the manager makes (the defaults).
        Capabilities::new().lists_managed(true)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::ElastiCacheUserId
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::elasticache()
    }

    async fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if let Some(sdk) = &self.sdk {
            caller_identity(sdk).await?;
        }
        let group_id = self.group_id();
        let target = &self.config.target;
        let attached = attached_user_groups(&self.client, target)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{target} not found")))?;
        if !attached.iter().any(|g| g.eq_ignore_ascii_case(&group_id)) {
            return Err(Error::invalid_config(format!(
                "user_group_id: {group_id:?} is not attached to {} (attached: {}); attach it with ModifyReplicationGroup / ModifyServerlessCache",
                self.config.target,
                if attached.is_empty() { "none".to_string() } else { attached.join(", ") }
            )));
        }
        let group = self.queue.backend().describe_group().await?;
        if let Some(engine) = group.engine() {
            if !engine.eq_ignore_ascii_case(self.config.engine.as_str()) {
                return Err(Error::invalid_config(format!(
                    "engine: the user group's engine is {engine:?}, the configuration says {:?}",
                    self.config.engine.as_str()
                )));
            }
        }
        // The group's `default` member: the user every unauthenticated connection runs as.
        let members: Vec<String> = group
            .user_ids()
            .iter()
            .map(|u| u.to_ascii_lowercase())
            .collect();
        let default_user = self
            .all_users()
            .await?
            .into_iter()
            .filter(|u| {
                u.user_id()
                    .is_some_and(|id| members.contains(&id.to_ascii_lowercase()))
            })
            .find(|u| u.user_name() == Some("default"));
        let Some(default_user) = default_user else {
            return Err(Error::invalid_config(format!(
                "user group {group_id:?} has no member with the user name \"default\"; ElastiCache requires one (add a default user that is \"off\" or has a password)"
            )));
        };
        let no_password = default_user
            .authentication()
            .and_then(|a| a.r#type())
            .is_some_and(|t| *t == AuthenticationType::NoPassword);
        let access = summarize_existing(default_user.access_string().unwrap_or(""));
        if no_password && access.is_full_access() {
            if self.config.allow_open_default_user {
                tracing::warn!(user_group = %group_id, "the group's default user needs no password and may do everything; leased credentials add no protection");
            } else {
                return Err(Error::invalid_config(format!(
                    "user group {group_id:?}: its default user ({:?}) needs no password and has \"on ~* +@all\", so anyone can connect without a leased credential; give it a password or switch it off (\"off -@all\"), or set allow_open_default_user",
                    default_user.user_id().unwrap_or("default")
                )));
            }
        }
        Ok(())
    }

    async fn create(&self, request: &CreateRequest) -> Result<Created> {
        let user_id = NameRule::ElastiCacheUserId.normalize(&request.username);
        NameRule::ElastiCacheUserId
            .check(&user_id)
            .map_err(|e| Error::invalid_input(e.message().to_string()))?;
        let stmt = self.render_create(request, &user_id)?;
        let started = tokio::time::Instant::now();
        let budget = self.config.ready_timeout;
        let remaining = move || budget.saturating_sub(started.elapsed());

        // The quota check comes before CreateUser: a user that cannot join is never made.
        let deadline = leasehold_core::store::add_duration(Utc::now(), budget);
        self.queue.reserve(&user_id, deadline).await?;

        let mut tag_list: Vec<Tag> = Vec::new();
        let mut push = |k: &str, v: &str| {
            tag_list.push(Tag::builder().key(k).value(v).build());
        };
        for (k, v) in &stmt.tags {
            push(k, v);
        }
        for (k, v) in &self.config.tags {
            push(k, v);
        }
        push(tags::LEASE_ID, request.lease_id.as_str());
        push(tags::SECRET, &request.secret);
        push(tags::EXPIRES_AT, &request.expires_at.to_rfc3339());
        push(tags::MANAGED_BY, MANAGED_BY);
        if let Some(inst) = &request.installation {
            push(tags::INSTALLATION, inst);
        }
        push(TAG_USER_GROUP, &self.group_id());

        let mut call = self
            .client
            .create_user()
            .user_id(&stmt.user_id)
            .user_name(&stmt.user_name)
            .engine(&stmt.engine)
            .access_string(&stmt.access_string)
            .set_tags(Some(tag_list));
        for pw in &stmt.passwords {
            call = call.passwords(secrecy::ExposeSecret::expose_secret(pw));
        }
        if let Err(e) = call.send().await {
            let err = user_error("CreateUser", &user_id, map_sdk_error("CreateUser", e));
            match err.kind() {
                // A timeout or 5xx may have created the user after all; it is ours (the name
                // is fresh), so remove it.
                ErrorKind::Timeout | ErrorKind::ProviderUnavailable => {
                    return Err(self.compensate(&user_id, err).await);
                }
                // The SDK retries a call whose answer was lost; the retry then finds the user
                // the first attempt made. Only a user tagged with this lease is ours to keep
                // going with; anyone else's is never touched.
                ErrorKind::AlreadyExists if self.made_for(&user_id, request).await => {
                    tracing::debug!(
                        user_id,
                        "CreateUser answered AlreadyExists for this lease's own user"
                    );
                }
                _ => {
                    // Never created: only the quota entry is to undo.
                    let _ = self.queue.withdraw(&user_id).await;
                    return Err(err);
                }
            }
        }

        match self.wait_user_active(&user_id, remaining()).await {
            Ok(true) => {}
            Ok(false) => {
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!("user {user_id:?} did not become active within {budget:?}"),
                );
                return Err(self.compensate(&user_id, e).await);
            }
            Err(e) => return Err(self.compensate(&user_id, e).await),
        }

        let until = tokio::time::Instant::now() + remaining();
        let joined = match self.queue.join(&user_id, request.wait_ready, until).await {
            Ok(j) => Some(j),
            Err(e) if e.kind() != ErrorKind::Timeout => {
                return Err(self.compensate(&user_id, e).await)
            }
            Err(_elapsed) => {
                if self.queue.withdraw(&user_id).await.unwrap_or(true) {
                    let e = Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "user group {:?} did not accept a change within {budget:?}",
                            self.group_id()
                        ),
                    );
                    return Err(self.compensate(&user_id, e).await);
                }
                // ModifyUserGroup took the user; the group is still modifying.
                None
            }
        };

        let password = request.require_password(KIND)?;
        let readiness = match joined {
            None => Readiness::TimedOut,
            Some(Joined::Accepted) => Readiness::Unchecked,
            Some(Joined::Active) => match &self.auth {
                None => Readiness::Confirmed,
                Some(checker) => {
                    match self
                        .confirm_auth(checker, &stmt.user_name, password, remaining())
                        .await
                    {
                        Ok(true) => Readiness::Confirmed,
                        Ok(false) => Readiness::TimedOut,
                        Err(e) => {
                            tracing::warn!(user_id, error = %e, "readiness AUTH check failed");
                            Readiness::TimedOut
                        }
                    }
                }
            },
        };
        let external = ExternalRef::new(&user_id)
            .with_attr(ATTR_USER_GROUP, self.group_id())
            .with_attr(ATTR_USER_NAME, &stmt.user_name);
        Ok(Created::new(
            external,
            Credentials::UsernamePassword {
                username: stmt.user_name.clone(),
                password: password.clone(),
            },
            readiness,
        ))
    }

    async fn renew(&self, _external: &ExternalRef, _expires_at: DateTime<Utc>) -> Result<()> {
        // ElastiCache users have no expiry of their own: the lease alone ends them.
        Ok(())
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        let user_id = self.revoke_user_id(external)?;
        self.delete_user(&user_id, Duration::from_secs(5))
            .await
            .map_err(|e| e.with_context("operation", "revoke"))?;
        // A `deleting` user still logs in; wait (bounded) until it is gone so a revoked lease
        // means a dead credential.
        let wait = self.config.revoke_wait;
        if !wait.is_zero() {
            let gone = wait_until(wait, self.poll_initial, Duration::from_secs(2), || async {
                Ok(ElastiCacheUsers::describe(&self.client, &user_id)
                    .await?
                    .is_none())
            })
            .await;
            match gone {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(
                        user_id,
                        "user still deleting after revoke_wait; DeleteUser was accepted"
                    )
                }
                Err(e) => {
                    tracing::debug!(user_id, error = %e, "could not confirm the user is gone; DeleteUser was accepted")
                }
            }
        }
        Ok(())
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        let prefix = prefix.to_ascii_lowercase();
        let group_id = self.group_id();
        let pending: Vec<String> = match self.queue.backend().describe_group().await {
            Ok(g) => g
                .pending_changes()
                .map(|p| {
                    p.user_ids_to_add()
                        .iter()
                        .map(|s| s.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => return Err(e.with_context("operation", "list_managed")),
        };
        // Only users that belong to this provider's group are candidates: members (or pending
        // additions) of the group, and users in no group that were tagged for it. A user with
        // the prefix in another group belongs to another secret's group, and reconcile must
        // never remove it from here.
        let candidates: Vec<(User, bool)> = self
            .all_users()
            .await?
            .into_iter()
            .filter(|u| u.status() != Some("deleting"))
            .filter(|u| u.user_name() != Some("default") && u.user_id() != Some("default"))
            .filter_map(|u| {
                let id = u.user_id()?.to_ascii_lowercase();
                let in_group = u
                    .user_group_ids()
                    .iter()
                    .any(|g| g.eq_ignore_ascii_case(&group_id))
                    || pending.contains(&id);
                (in_group || u.user_group_ids().is_empty()).then_some((u, in_group))
            })
            .collect();
        let looked_up = futures::stream::iter(candidates)
            .map(|(u, in_group)| async move {
                let tags = match u.arn() {
                    Some(arn) => self.tags_of(arn).await,
                    None => Ok(Vec::new()),
                };
                (u, in_group, tags)
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut found = Vec::new();
        for (u, in_group, tags_result) in looked_up {
            let Some(id) = u.user_id() else { continue };
            let tag_pairs = match tags_result {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::debug!(user_id = id, error = %e, "could not read the user's tags");
                    Vec::new()
                }
            };
            let tag = |key: &str| {
                tag_pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let prefixed = !prefix.is_empty() && id.to_ascii_lowercase().starts_with(&prefix);
            let managed = tag(tags::MANAGED_BY) == Some(MANAGED_BY);
            let tagged_for_group =
                tag(TAG_USER_GROUP).is_some_and(|g| g.eq_ignore_ascii_case(&group_id));
            let ours = if in_group {
                prefixed || managed
            } else {
                // In no group at all: only what this provider tagged for this group.
                managed && tagged_for_group
            };
            if !ours {
                continue;
            }
            let mut external = ExternalRef::new(id).with_attr(ATTR_USER_GROUP, &group_id);
            if let Some(name) = u.user_name() {
                external = external.with_attr(ATTR_USER_NAME, name);
            }
            found.push(
                ManagedCredential::new(external)
                    .with_lease_id(tag(tags::LEASE_ID).map(str::to_string))
                    .with_installation(tag(tags::INSTALLATION).map(str::to_string)),
            );
        }
        found.sort_by(|a, b| a.external.id.cmp(&b.external.id));
        Ok(found)
    }
}

/// The user groups attached to `target` (`DescribeReplicationGroups` or
/// `DescribeServerlessCaches`); `None` when there is no such cache.
pub(crate) async fn attached_user_groups(
    client: &Client,
    target: &Target,
) -> Result<Option<Vec<String>>> {
    Ok(match target {
        Target::ReplicationGroup(id) => {
            let sent = client
                .describe_replication_groups()
                .replication_group_id(id)
                .send()
                .await;
            found(
                "DescribeReplicationGroups",
                "ReplicationGroupNotFoundFault",
                sent,
            )?
            .and_then(|out| out.replication_groups().first().cloned())
            .map(|rg| rg.user_group_ids().to_vec())
        }
        Target::ServerlessCache(name) => {
            let sent = client
                .describe_serverless_caches()
                .serverless_cache_name(name)
                .send()
                .await;
            found(
                "DescribeServerlessCaches",
                "ServerlessCacheNotFoundFault",
                sent,
            )?
            .and_then(|out| out.serverless_caches().first().cloned())
            .map(|sc| sc.user_group_id().map(str::to_string).into_iter().collect())
        }
    })
}
