//! [`MemoryDbProvider`]: a MemoryDB user per lease, added to the cluster's ACL.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_memorydb::types::{AuthenticationMode, InputAuthenticationType, Tag};
use aws_sdk_memorydb::Client;
use leasehold_aws::membership::{Joined, MembershipQueue, Pacing};
use leasehold_aws::{error_code, map_sdk_error, tags, UserService};
use leasehold_core::{
    Capabilities, CoordinationStore, CreateRequest, Created, Credentials, DynamicSecretProvider,
    Error, ErrorKind, ExternalRef, ManagedCredential, NameRule, PasswordPolicy, Readiness, Result,
    StatementVars,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::{MemoryDbConfig, OPEN_ACCESS_ACL};
use crate::membership::AclGroup;
use crate::statement::{delete_user_name, CreateUserInput};
use crate::users::MemoryDbUsers;
use leasehold_aws::AuthProbe;

/// The provider's [`kind`](DynamicSecretProvider::kind).
pub const KIND: &str = "aws-memorydb";
/// `ExternalRef` attribute: the ACL the user was added to.
pub const ATTR_ACL: &str = "acl";
/// `ExternalRef` attribute: the cluster the user is for.
pub const ATTR_CLUSTER: &str = "cluster";
/// Value of the `leasehold:managed-by` tag.
pub const MANAGED_BY: &str = "leasehold";
/// Tag naming the ACL a user was made for, so reconcile of one ACL leaves another's users be.
pub const TAG_ACL: &str = "leasehold:memorydb-acl";

/// Issues a MemoryDB user per lease (kind `aws-memorydb`).
///
/// `create` renders the creation statement into `CreateUser`, waits until the user is
/// `active`, adds it to the ACL with `UpdateACL` (batched with every other issue in flight for
/// that ACL), waits until the ACL is `active` again and, when an endpoint is configured,
/// until the credential passes `AUTH`. A failure after `CreateUser` deletes the user again.
/// `revoke` renders the revocation statement into `DeleteUser`, which also takes the user out
/// of every ACL; a user that is already gone is success.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use leasehold_aws::AwsConfig;
/// use leasehold_core::{DynamicSecret, DynamicSecretProvider};
/// use leasehold_memorydb::{MemoryDbConfig, MemoryDbProvider};
///
/// let provider = MemoryDbProvider::new(
///     MemoryDbConfig::new("orders").aws(AwsConfig::new().region("eu-west-1")),
/// )
/// .await?;
/// provider.validate().await?; // refuses a cluster on the open-access ACL
/// let secret = DynamicSecret::builder("orders-cache", Arc::new(provider)).build()?;
/// # let _ = secret;
/// # Ok(()) }
/// ```
pub struct MemoryDbProvider {
    config: MemoryDbConfig,
    client: Client,
    pacing: Pacing,
    queue: OnceCell<Arc<AclQueue>>,
    /// Set by `with_coordination`, or handed over by the manager at registration.
    coordination: std::sync::OnceLock<Arc<dyn CoordinationStore>>,
    probe: Option<AuthProbe>,
}

type AclQueue = MembershipQueue<AclGroup>;

/// The queue's timing for a poll interval: polls grow by half each round, up to eight times
/// the interval.
fn pacing(poll: std::time::Duration) -> Pacing {
    Pacing::default().poll(poll, poll * 8, 1.5)
}

impl fmt::Debug for MemoryDbProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDbProvider")
            .field("config", &self.config)
            .field("acl", &self.queue.get().map(|q| q.group().to_string()))
            .finish_non_exhaustive()
    }
}

/// Tag values keep to the characters AWS tags allow everywhere.
fn tag_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

impl MemoryDbProvider {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: MemoryDbConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_sdk_config(config, &sdk)
    }

    /// Uses an SDK configuration built elsewhere (`config.aws` is then not used).
    pub fn from_sdk_config(config: MemoryDbConfig, sdk: &SdkConfig) -> Result<Self> {
        Self::from_client(config, Client::new(sdk))
    }

    /// Uses the given client (`config.aws` is then not used). Checks `config` offline and
    /// reads the readiness CA file.
    pub fn from_client(config: MemoryDbConfig, client: Client) -> Result<Self> {
        config.validate()?;
        let probe = config
            .readiness_endpoint
            .as_deref()
            .map(|url| AuthProbe::new(url, config.readiness_ca_pem.as_deref()))
            .transpose()?;
        Ok(MemoryDbProvider {
            pacing: pacing(config.poll_interval),
            config,
            client,
            queue: OnceCell::new(),
            coordination: std::sync::OnceLock::new(),
            probe,
        })
    }

    /// Batches ACL additions with every instance that shares `store` (the lease store's
    /// [`coordination`](leasehold_core::LeaseStore::coordination)), not only with this
    /// process's own issues. `claim_hold` is how long the fleet takes to notice a dead
    /// applier (`None`: the default, 15 s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> leasehold_core::Result<()> {
    /// use leasehold_core::{LeaseStore, MemoryStore};
    /// use leasehold_memorydb::{MemoryDbConfig, MemoryDbProvider};
    ///
    /// // Any LeaseStore: SqliteStore for processes on one host, PostgresStore for a fleet.
    /// let store = MemoryStore::new();
    /// let provider = MemoryDbProvider::new(MemoryDbConfig::new("orders"))
    ///     .await?
    ///     .with_coordination(store.coordination(), None);
    /// # let _ = provider;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_coordination(
        mut self,
        store: Option<Arc<dyn CoordinationStore>>,
        claim_hold: Option<std::time::Duration>,
    ) -> Self {
        self.coordination = match store {
            Some(s) => std::sync::OnceLock::from(s),
            None => std::sync::OnceLock::new(),
        };
        if let Some(hold) = claim_hold {
            self.pacing = self.pacing.claim_hold(hold);
        }
        self.queue = OnceCell::new();
        self
    }

    /// The settings.
    pub fn config(&self) -> &MemoryDbConfig {
        &self.config
    }

    async fn describe_cluster(&self) -> Result<aws_sdk_memorydb::types::Cluster> {
        let out = self
            .client
            .describe_clusters()
            .cluster_name(&self.config.cluster_name)
            .send()
            .await;
        let not_found = || {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "cluster_name: MemoryDB cluster {:?} not found",
                    self.config.cluster_name
                ),
            )
        };
        match out {
            Ok(o) => o
                .clusters()
                .iter()
                .find(|c| c.name() == Some(self.config.cluster_name.as_str()))
                .cloned()
                .ok_or_else(not_found),
            Err(e) if error_code(&e) == Some("ClusterNotFoundFault") => Err(not_found()),
            Err(e) => Err(map_sdk_error("DescribeClusters", e)),
        }
        .map_err(|e| e.with_context("cluster", &self.config.cluster_name))
    }

    /// The ACL to add users to: the configured one, or the cluster's. Never `open-access`.
    async fn resolve_acl(&self) -> Result<String> {
        if let Some(acl) = &self.config.acl_name {
            return Ok(acl.clone());
        }
        let cluster = self.describe_cluster().await?;
        match cluster.acl_name() {
            Some(acl) if acl != OPEN_ACCESS_ACL => Ok(acl.to_string()),
            _ => Err(open_access_error(&self.config.cluster_name)),
        }
    }

    async fn queue(&self) -> Result<Arc<AclQueue>> {
        self.queue
            .get_or_try_init(|| async {
                let acl = self.resolve_acl().await?;
                let group = AclGroup::new(self.client.clone(), acl);
                let coordination = self.coordination.get().cloned();
                Ok::<_, Error>(Arc::new(AclQueue::new(group, coordination, self.pacing)))
            })
            .await
            .cloned()
    }

    fn user_tags(&self, req: &CreateRequest, input: &CreateUserInput, acl: &str) -> Vec<Tag> {
        let mut all: BTreeMap<String, String> = input.tags.iter().cloned().collect();
        all.extend(self.config.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        all.insert(tags::LEASE_ID.into(), tag_value(req.lease_id.as_str()));
        all.insert(tags::SECRET.into(), tag_value(&req.secret));
        all.insert(
            tags::EXPIRES_AT.into(),
            req.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        all.insert(tags::MANAGED_BY.into(), MANAGED_BY.into());
        if let Some(inst) = &req.installation {
            all.insert(tags::INSTALLATION.into(), tag_value(inst));
        }
        all.insert(TAG_ACL.into(), acl.to_string());
        all.into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    /// Polls `DescribeUsers` until the user is `active`. False when the deadline passed.
    async fn wait_user_active(&self, user: &str, deadline: Instant) -> Result<bool> {
        let budget = deadline.saturating_duration_since(Instant::now());
        leasehold_aws::wait_until(budget, self.pacing.poll, self.pacing.poll_max, || async {
            // Just created: a reader may not see it yet.
            let user = MemoryDbUsers::describe(&self.client, user).await?;
            Ok(user.is_some_and(|u| u.is_active()))
        })
        .await
    }

    /// Everything after `CreateUser`: user active, ACL membership, readiness.
    async fn finish(
        &self,
        req: &CreateRequest,
        password: &SecretString,
        queue: &Arc<AclQueue>,
        deadline: Instant,
    ) -> Result<Readiness> {
        let user = req.username.as_str();
        if !self.wait_user_active(user, deadline).await? {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "user {user:?} was not active within {:?}; it cannot join the ACL before",
                    self.config.ready_timeout
                ),
            ));
        }
        let joined = match queue.join(user, req.wait_ready, deadline).await {
            Ok(j) => j,
            Err(e) if e.kind() != ErrorKind::Timeout => return Err(e),
            Err(_) => {
                if queue.withdraw(user).await.unwrap_or(true) {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "ACL {:?} did not take a change within {:?} (it stayed modifying)",
                            queue.group(),
                            self.config.ready_timeout
                        ),
                    ));
                }
                // An UpdateACL carries the user; the ACL is not active again yet.
                return Ok(Readiness::TimedOut);
            }
        };
        if !req.wait_ready || joined == Joined::Accepted {
            return Ok(Readiness::Unchecked);
        }
        let Some(probe) = &self.probe else {
            return Ok(Readiness::Confirmed);
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        let checked =
            leasehold_aws::wait_until(budget, self.pacing.poll, self.pacing.poll_max, || {
                probe.authenticates(user, password)
            })
            .await;
        Ok(match checked {
            Ok(true) => Readiness::Confirmed,
            Ok(false) => Readiness::TimedOut,
            Err(e) => {
                tracing::warn!(user, error = %e, "readiness AUTH check failed; the credential is not confirmed");
                Readiness::TimedOut
            }
        })
    }

    /// `DeleteUser`, riding out `InvalidUserStateFault` (the user is `creating` or
    /// `modifying`) until `deadline`. `Ok(true)`: deleted now; `Ok(false)`: it was gone.
    async fn delete_user(&self, user: &str, deadline: Instant) -> Result<bool> {
        let mut round = 0;
        loop {
            match self.client.delete_user().user_name(user).send().await {
                Ok(_) => return Ok(true),
                Err(e) => match error_code(&e) {
                    Some("UserNotFoundFault") => return Ok(false),
                    Some("InvalidUserStateFault") if Instant::now() < deadline => {
                        tracing::debug!(user, "user is not active yet, DeleteUser retries");
                        let pause = self.pacing.delay(round);
                        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
                        round += 1;
                    }
                    // Still busy at the deadline, after the rounds above: the manager retries
                    // later, not at once.
                    Some("InvalidUserStateFault") => {
                        return Err(map_sdk_error("DeleteUser", e).temporary().persist())
                    }
                    _ => return Err(map_sdk_error("DeleteUser", e)),
                },
            }
        }
    }

    /// Waits, until `deadline`, for a deleted user to disappear. Deletion is under way either
    /// way; this only narrows the time the credential may still work.
    async fn wait_gone(&self, user: &str, deadline: Instant) {
        let budget = deadline.saturating_duration_since(Instant::now());
        let gone =
            leasehold_aws::wait_until(budget, self.pacing.poll, self.pacing.poll_max, || async {
                Ok(MemoryDbUsers::describe(&self.client, user).await?.is_none())
            })
            .await;
        if !matches!(gone, Ok(true)) {
            tracing::debug!(user, "user still deleting when revoke returned");
        }
    }

    /// Undoes a half-made user.
    async fn compensate(&self, queue: &AclQueue, user: &str) {
        if let Err(e) = queue.withdraw(user).await {
            tracing::debug!(user, error = %e, "could not withdraw the queued ACL addition");
        }
        let deadline = Instant::now() + self.config.user_state_wait;
        match self.delete_user(user, deadline).await {
            Ok(_) => {
                queue.forget(user);
                tracing::debug!(user, "removed a half-made MemoryDB user");
            }
            Err(e) => tracing::warn!(
                user,
                error = %e,
                "could not remove a half-made MemoryDB user; the lease's revoke will"
            ),
        }
    }

    async fn managed_tags(&self, arn: &str) -> Result<Option<Vec<Tag>>> {
        match self.client.list_tags().resource_arn(arn).send().await {
            Ok(out) => Ok(Some(out.tag_list().to_vec())),
            Err(e) if error_code(&e) == Some("UserNotFoundFault") => Ok(None),
            Err(e) => Err(map_sdk_error("ListTags", e)),
        }
    }
}

fn open_access_error(cluster: &str) -> Error {
    Error::invalid_config(format!(
        "cluster {cluster:?} uses the open-access ACL: every connection gets in as the default user without a password, so leased users would protect nothing. Create an ACL (aws memorydb create-acl), attach it to the cluster (aws memorydb update-cluster --acl-name), then register the secret"
    ))
    .with_context("cluster", cluster)
}

#[async_trait]
impl DynamicSecretProvider for MemoryDbProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn attach_coordination(&self, coordination: Arc<dyn CoordinationStore>) {
        // An explicit with_coordination wins; the queue, if already made, adopts it too.
        if self.coordination.set(coordination.clone()).is_ok() {
            if let Some(queue) = self.queue.get() {
                queue.adopt(coordination);
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        // Renewable (lease-only: a MemoryDB user has no expiry of its own), revocable, with a
        // password the manager makes: the defaults.
        Capabilities::new().lists_managed(true)
    }

    fn name_rule(&self) -> NameRule {
        NameRule::MemoryDbUserName
    }

    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::memorydb()
    }

    /// Checks the settings offline, then that the cluster exists and is not on the
    /// `open-access` ACL, that the configured ACL is the cluster's, and that the ACL exists.
    /// The calls also prove the credentials work.
    async fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let cluster = self.describe_cluster().await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::invalid_config(e.message().to_string())
                    .with_context("cluster", &self.config.cluster_name)
            } else {
                e
            }
        })?;
        let cluster_acl = match cluster.acl_name() {
            Some(acl) if acl != OPEN_ACCESS_ACL => acl.to_string(),
            _ => return Err(open_access_error(&self.config.cluster_name)),
        };
        if let Some(acl) = &self.config.acl_name {
            if *acl != cluster_acl {
                return Err(Error::invalid_config(format!(
                    "acl_name: {acl:?} is not the ACL of cluster {:?} (it uses {cluster_acl:?}); users added to it could not log in",
                    self.config.cluster_name
                )));
            }
        }
        let queue = self.queue().await?;
        queue.backend().describe_acl().await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound || e.message().contains("ACLNotFoundFault") {
                Error::invalid_config(format!("acl_name: ACL {:?} not found", queue.group()))
            } else {
                e
            }
        })?;
        Ok(())
    }

    async fn create(&self, req: &CreateRequest) -> Result<Created> {
        let user = req.username.as_str();
        let ctx = |e: Error| {
            e.with_context("user", user)
                .with_context("lease_id", &req.lease_id)
        };
        let rule = NameRule::MemoryDbUserName;
        rule.check(user)
            .map_err(|e| ctx(Error::invalid_input(e.message().to_string())))?;
        if rule.normalize(user) != user {
            return Err(ctx(Error::invalid_input(
                "a MemoryDB user name is lower-case (MemoryDB stores it so)",
            )));
        }
        let password = req.require_password(KIND).map_err(ctx)?;
        let rendered = self
            .config
            .creation_statement
            .render(&StatementVars {
                username: user,
                password: Some(password),
                expiration: Some(req.expires_at),
            })
            .map_err(ctx)?;
        let input = CreateUserInput::from_json(rendered.expose_json(), "creation_statement")
            .map_err(ctx)?;
        drop(rendered);
        if input.user_name != user || !input.has_password(password) {
            return Err(ctx(Error::new(
                ErrorKind::InvalidTemplate,
                "creation_statement: its UserName and Passwords must be {{username}} and {{password}}",
            )));
        }

        let queue = self.queue().await.map_err(ctx)?;
        let entry_deadline =
            leasehold_core::store::add_duration(chrono::Utc::now(), self.config.ready_timeout);
        queue.reserve(user, entry_deadline).await.map_err(ctx)?;
        let mode = AuthenticationMode::builder()
            .r#type(InputAuthenticationType::Password)
            .set_passwords(Some(
                input
                    .passwords
                    .iter()
                    .map(|p| p.expose_secret().to_string())
                    .collect(),
            ))
            .build();
        let created = self
            .client
            .create_user()
            .user_name(user)
            .access_string(&input.access_string)
            .authentication_mode(mode)
            .set_tags(Some(self.user_tags(req, &input, queue.group())))
            .send()
            .await;
        if let Err(e) = created {
            // Never created: only the quota entry is to undo.
            let _ = queue.withdraw(user).await;
            return Err(ctx(map_sdk_error("CreateUser", e)));
        }
        tracing::debug!(user, acl = queue.group(), "MemoryDB user created");

        let deadline = Instant::now() + self.config.ready_timeout;
        let readiness = match self.finish(req, password, &queue, deadline).await {
            Ok(r) => r,
            Err(e) => {
                self.compensate(&queue, user).await;
                return Err(ctx(e));
            }
        };
        let external = ExternalRef::new(user)
            .with_attr(ATTR_ACL, queue.group())
            .with_attr(ATTR_CLUSTER, &self.config.cluster_name);
        Ok(Created::new(
            external,
            Credentials::UsernamePassword {
                username: user.to_string(),
                password: password.clone(),
            },
            readiness,
        ))
    }

    async fn revoke(&self, external: &ExternalRef) -> Result<()> {
        let ctx = |e: Error| e.with_context("user", &external.id);
        NameRule::MemoryDbUserName
            .check(&external.id)
            .map_err(|e| {
                ctx(Error::invalid_input(format!(
                    "cannot revoke: {}",
                    e.message()
                )))
            })?;
        let rendered = self
            .config
            .revocation_statement
            .render(&StatementVars {
                username: &external.id,
                password: None,
                expiration: None,
            })
            .map_err(ctx)?;
        let user = delete_user_name(rendered.expose_json(), "revocation_statement").map_err(ctx)?;
        // An issue of this instance still queued for the ACL must not add a deleted user.
        if let Some(q) = self.queue.get() {
            let _ = q.withdraw(&user).await;
        }
        let deadline = Instant::now() + self.config.user_state_wait;
        let deleted = self.delete_user(&user, deadline).await.map_err(ctx)?;
        if let Some(q) = self.queue.get() {
            q.forget(&user);
        }
        if deleted {
            self.wait_gone(&user, deadline).await;
            tracing::debug!(user = %user, "MemoryDB user deleted");
        }
        Ok(())
    }

    async fn list_managed(&self, prefix: &str) -> Result<Vec<ManagedCredential>> {
        let acl = self.queue().await?.group().to_string();
        let mut users = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_users()
                .max_results(100)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| map_sdk_error("DescribeUsers", e))?;
            users.extend(out.users().iter().cloned());
            match out.next_token() {
                Some(next) if !next.is_empty() && Some(next) != token.as_deref() => {
                    token = Some(next.to_string())
                }
                _ => break,
            }
        }
        let mut found = Vec::new();
        for u in users {
            let (Some(name), Some(arn)) = (u.name(), u.arn()) else {
                continue;
            };
            if !name.starts_with(prefix) || u.status() == Some("deleting") {
                continue;
            }
            let Some(user_tags) = self.managed_tags(arn).await? else {
                continue;
            };
            let tag = |k: &str| {
                user_tags
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            };
            // Only users this library made, for this ACL: a same-prefixed user without the
            // tag is someone else's.
            if tag(tags::MANAGED_BY) != Some(MANAGED_BY) {
                continue;
            }
            if tag(TAG_ACL).is_some_and(|a| a != acl) {
                continue;
            }
            found.push(
                ManagedCredential::new(
                    ExternalRef::new(name)
                        .with_attr(ATTR_ACL, &acl)
                        .with_attr(ATTR_CLUSTER, &self.config.cluster_name),
                )
                .with_lease_id(tag(tags::LEASE_ID).map(str::to_string))
                .with_installation(tag(tags::INSTALLATION).map(str::to_string)),
            );
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_keep_to_allowed_characters() {
        assert_eq!(tag_value("orders/AbC123"), "orders/AbC123");
        assert_eq!(tag_value("a#b,c"), "a_b_c");
        assert_eq!(tag_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn pacing_grows_to_eight_times_the_poll() {
        use std::time::Duration;
        let p = pacing(Duration::from_millis(100));
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(50), Duration::from_millis(800));
    }
}
