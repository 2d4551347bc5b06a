//! Static role: rotate the password of one existing ElastiCache user on a period, with two
//! passwords valid during a grace period so no client is cut off mid-rotation.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_elasticache::types::AuthenticationType;
use aws_sdk_elasticache::Client;
use chrono::{DateTime, Utc};
use leasehold_aws::{error_code, map_sdk_error, wait_until, AwsConfig};
use leasehold_core::{Error, ErrorKind, NameRule, PasswordPolicy, Result};
use secrecy::{ExposeSecret, SecretString};

/// Settings of a [`StaticRoleRotator`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_elasticache::StaticRoleConfig;
///
/// let c = StaticRoleConfig::new("app-writer")
///     .rotation_period(Duration::from_secs(24 * 3600))
///     .grace_period(Duration::from_secs(600));
/// c.validate().unwrap();
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct StaticRoleConfig {
    /// AWS credentials, region, endpoint.
    pub aws: AwsConfig,
    /// The existing user whose password is rotated.
    pub user_id: String,
    /// How often the password changes (default 24 h).
    pub rotation_period: Duration,
    /// How long the previous password keeps working after a rotation (default 5 min);
    /// shorter than the period.
    pub grace_period: Duration,
    /// How passwords are generated (default [`PasswordPolicy::elasticache`]).
    pub password_policy: PasswordPolicy,
    /// How long a rotation waits, at most, for the user to be `active` (default 5 min).
    pub ready_timeout: Duration,
}

impl fmt::Debug for StaticRoleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRoleConfig")
            .field("aws", &self.aws)
            .field("user_id", &self.user_id)
            .field("rotation_period", &self.rotation_period)
            .field("grace_period", &self.grace_period)
            .field("ready_timeout", &self.ready_timeout)
            .finish_non_exhaustive()
    }
}

impl StaticRoleConfig {
    /// Defaults for `user_id`: rotate daily, 5 minute grace.
    pub fn new(user_id: impl Into<String>) -> Self {
        StaticRoleConfig {
            aws: AwsConfig::default(),
            user_id: user_id.into(),
            rotation_period: Duration::from_secs(24 * 3600),
            grace_period: Duration::from_secs(300),
            password_policy: PasswordPolicy::elasticache(),
            ready_timeout: Duration::from_secs(300),
        }
    }

    /// Sets the AWS settings.
    #[must_use]
    pub fn aws(mut self, aws: AwsConfig) -> Self {
        self.aws = aws;
        self
    }

    /// Sets the rotation period.
    #[must_use]
    pub fn rotation_period(mut self, d: Duration) -> Self {
        self.rotation_period = d;
        self
    }

    /// Sets the grace period.
    #[must_use]
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = d;
        self
    }

    /// Sets the password policy.
    #[must_use]
    pub fn password_policy(mut self, p: PasswordPolicy) -> Self {
        self.password_policy = p;
        self
    }

    /// Sets the readiness bound.
    #[must_use]
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// Checks every setting without a network call.
    pub fn validate(&self) -> Result<()> {
        self.aws.validate()?;
        let id = NameRule::ElastiCacheUserId.normalize(&self.user_id);
        if id == "default" {
            // `default` is reserved for dynamic names but may be rotated as a static role.
        } else {
            NameRule::ElastiCacheUserId
                .check(&id)
                .map_err(|e| Error::invalid_config(format!("user_id: {}", e.message())))?;
        }
        if self.rotation_period < Duration::from_secs(1) {
            return Err(Error::invalid_config(
                "rotation_period: must be at least 1s",
            ));
        }
        if self.grace_period >= self.rotation_period {
            return Err(Error::invalid_config(format!(
                "grace_period: {:?} must be shorter than rotation_period {:?} (the old password must be gone before the next rotation)",
                self.grace_period, self.rotation_period
            )));
        }
        if self.ready_timeout.is_zero() {
            return Err(Error::invalid_config("ready_timeout: must be positive"));
        }
        self.password_policy.validate()?;
        if !(16..=128).contains(&self.password_policy.length()) {
            return Err(Error::invalid_config(
                "password_policy: ElastiCache passwords have 16 to 128 characters",
            ));
        }
        Ok(())
    }
}

/// A password handed out by a rotation (to [`StaticRoleRotator::on_rotate`] callbacks).
#[derive(Clone)]
#[non_exhaustive]
pub struct RotatedPassword {
    /// The user id.
    pub user_id: String,
    /// The user name clients authenticate with.
    pub user_name: String,
    /// The new password.
    pub password: SecretString,
    /// When the rotation finished.
    pub rotated_at: DateTime<Utc>,
    /// When the previous password stops working.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// When the next rotation is due.
    pub next_rotation_at: DateTime<Utc>,
}

impl fmt::Debug for RotatedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatedPassword")
            .field("user_id", &self.user_id)
            .field("user_name", &self.user_name)
            .field("password", &"[REDACTED]")
            .field("rotated_at", &self.rotated_at)
            .field("previous_valid_until", &self.previous_valid_until)
            .field("next_rotation_at", &self.next_rotation_at)
            .finish_non_exhaustive()
    }
}

/// What a read of the static role gives: the current password and the time to the next
/// rotation.
#[derive(Clone)]
#[non_exhaustive]
pub struct StaticRoleStatus {
    /// The user name clients authenticate with.
    pub user_name: String,
    /// The current password.
    pub password: SecretString,
    /// When it was set.
    pub rotated_at: DateTime<Utc>,
    /// Time until the next rotation (zero when overdue).
    pub next_rotation_in: Duration,
}

impl fmt::Debug for StaticRoleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRoleStatus")
            .field("user_name", &self.user_name)
            .field("password", &"[REDACTED]")
            .field("rotated_at", &self.rotated_at)
            .field("next_rotation_in", &self.next_rotation_in)
            .finish_non_exhaustive()
    }
}

type Callback = Arc<dyn Fn(&RotatedPassword) + Send + Sync>;

#[derive(Default)]
struct State {
    user_name: Option<String>,
    current: Option<SecretString>,
    previous: Option<SecretString>,
    rotated_at: Option<DateTime<Utc>>,
    next_rotation_at: Option<DateTime<Utc>>,
}

/// Rotates the password of one existing ElastiCache user (the static role of Vault's
/// Redis ElastiCache plugin), with a two-password overlap.
///
/// A rotation sets the user's passwords to `[previous, new]` with `ModifyUser`, waits until
/// the user is `active`, publishes the new password (in memory and to the `on_rotate`
/// callbacks), and after the grace period sets them to `[new]`. The password lives only in
/// memory: a restarted process rotates again at once. Seed it with
/// [`with_known_password`](Self::with_known_password) to keep the overlap across a restart.
/// Users that are IAM-enabled or need no password are refused: there is nothing to rotate.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::{StaticRoleConfig, StaticRoleRotator};
///
/// let rotator = StaticRoleRotator::new(
///     StaticRoleConfig::new("app-writer")
///         .aws(AwsConfig::new().region("eu-west-1"))
///         .rotation_period(Duration::from_secs(6 * 3600)),
/// )
/// .await?
/// .on_rotate(|p| println!("{} has a new password until {}", p.user_name, p.next_rotation_at));
/// rotator.validate().await?;
/// let rotator = Arc::new(rotator);
/// let task = rotator.clone().start();
/// // ... later
/// if let Some(status) = rotator.read() {
///     println!("next rotation in {:?}", status.next_rotation_in);
/// }
/// task.stop();
/// # Ok(()) }
/// ```
pub struct StaticRoleRotator {
    config: StaticRoleConfig,
    user_id: String,
    client: Client,
    state: Mutex<State>,
    callbacks: Vec<Callback>,
    rotating: tokio::sync::Mutex<()>,
    poll_initial: Duration,
}

impl fmt::Debug for StaticRoleRotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("StaticRoleRotator")
            .field("config", &self.config)
            .field("rotated_at", &st.rotated_at)
            .field("next_rotation_at", &st.next_rotation_at)
            .field("overlap", &st.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl StaticRoleRotator {
    /// Validates `config` (offline) and loads its AWS settings.
    pub async fn new(config: StaticRoleConfig) -> Result<Self> {
        config.validate()?;
        let sdk = config.aws.load().await?;
        Self::from_client(config, Client::new(&sdk))
    }

    /// Uses an SDK configuration built elsewhere.
    pub fn from_sdk_config(config: StaticRoleConfig, sdk: &SdkConfig) -> Result<Self> {
        Self::from_client(config, Client::new(sdk))
    }

    /// Uses a ready client.
    pub fn from_client(config: StaticRoleConfig, client: Client) -> Result<Self> {
        config.validate()?;
        Ok(StaticRoleRotator {
            user_id: NameRule::ElastiCacheUserId.normalize(&config.user_id),
            config,
            client,
            state: Mutex::new(State::default()),
            callbacks: Vec::new(),
            rotating: tokio::sync::Mutex::new(()),
            poll_initial: Duration::from_millis(200),
        })
    }

    /// Adds a callback that receives every new password. Keep it quick; it runs on the
    /// rotating task.
    #[must_use]
    pub fn on_rotate(mut self, f: impl Fn(&RotatedPassword) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }

    /// Seeds the password the user has now (from the host's own store), so the first
    /// rotation keeps it valid for the grace period instead of cutting it off.
    #[must_use]
    pub fn with_known_password(self, password: SecretString) -> Self {
        self.lock().current = Some(password);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn describe(&self) -> Result<aws_sdk_elasticache::types::User> {
        let out = self
            .client
            .describe_users()
            .user_id(&self.user_id)
            .send()
            .await
            .map_err(|e| {
                map_sdk_error("DescribeUsers", e).with_context("user_id", &self.user_id)
            })?;
        out.users()
            .iter()
            .find(|u| {
                u.user_id()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&self.user_id))
            })
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("user {:?} not found", self.user_id),
                )
            })
    }

    /// Checks that the user exists and authenticates with passwords.
    pub async fn validate(&self) -> Result<()> {
        let user = self.describe().await?;
        match user.authentication().and_then(|a| a.r#type()) {
            Some(AuthenticationType::Password) => {}
            Some(AuthenticationType::Iam) => {
                return Err(Error::invalid_config(format!(
                    "user_id: {:?} authenticates with IAM; it has no password to rotate",
                    self.user_id
                )))
            }
            Some(AuthenticationType::NoPassword) => {
                return Err(Error::invalid_config(format!(
                    "user_id: {:?} needs no password; rotating would change how every client logs in, so it is left alone",
                    self.user_id
                )))
            }
            _ => {
                return Err(Error::invalid_config(format!(
                    "user_id: {:?} has an unknown authentication type",
                    self.user_id
                )))
            }
        }
        self.lock().user_name = user.user_name().map(str::to_string);
        Ok(())
    }

    async fn modify_passwords(&self, passwords: &[&SecretString]) -> Result<()> {
        let budget = self.config.ready_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let mut delay = self.poll_initial;
        loop {
            let mut call = self.client.modify_user().user_id(&self.user_id);
            for p in passwords {
                call = call.passwords(p.expose_secret());
            }
            match call.send().await {
                Ok(_) => break,
                Err(e) => {
                    let busy = error_code(&e) == Some("InvalidUserState");
                    let err = map_sdk_error("ModifyUser", e).with_context("user_id", &self.user_id);
                    if !(busy || err.is_temporary())
                        || tokio::time::Instant::now() + delay > deadline
                    {
                        return Err(err);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let active = wait_until(
            remaining,
            self.poll_initial,
            Duration::from_secs(2),
            || async { Ok(self.describe().await?.status() == Some("active")) },
        )
        .await?;
        if active {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "user {:?} did not become active within {budget:?} after ModifyUser",
                    self.user_id
                ),
            ))
        }
    }

    /// Rotates now: `[previous, new]`, wait `active`, publish. The previous password stays
    /// valid until [`drop_previous`](Self::drop_previous) (the running task calls it after
    /// the grace period).
    pub async fn rotate_now(&self) -> Result<RotatedPassword> {
        let _one_at_a_time = self.rotating.lock().await;
        let known = self.lock().user_name.clone();
        let user_name = match known {
            Some(n) => n,
            None => {
                self.validate().await?;
                let name = self.lock().user_name.clone();
                name.unwrap_or_else(|| self.user_id.clone())
            }
        };
        let new = self.config.password_policy.generate()?;
        let old = self.lock().current.clone();
        match &old {
            Some(old) => self.modify_passwords(&[old, &new]).await?,
            None => self.modify_passwords(&[&new]).await?,
        }
        let now = Utc::now();
        let period = chrono::Duration::from_std(self.config.rotation_period)
            .unwrap_or(chrono::Duration::MAX);
        let grace = chrono::Duration::from_std(self.config.grace_period)
            .unwrap_or(chrono::Duration::zero());
        let rotated = RotatedPassword {
            user_id: self.user_id.clone(),
            user_name,
            password: new.clone(),
            rotated_at: now,
            previous_valid_until: old.as_ref().map(|_| now + grace),
            next_rotation_at: now + period,
        };
        {
            let mut st = self.lock();
            st.previous = old;
            st.current = Some(new);
            st.rotated_at = Some(now);
            st.next_rotation_at = Some(rotated.next_rotation_at);
        }
        tracing::info!(user_id = %self.user_id, next_rotation_at = %rotated.next_rotation_at, "static role password rotated");
        for cb in &self.callbacks {
            cb(&rotated);
        }
        Ok(rotated)
    }

    /// Ends the overlap: the user keeps only the current password.
    pub async fn drop_previous(&self) -> Result<()> {
        let _one_at_a_time = self.rotating.lock().await;
        let (current, had_previous) = {
            let st = self.lock();
            (st.current.clone(), st.previous.is_some())
        };
        let (Some(current), true) = (current, had_previous) else {
            return Ok(());
        };
        self.modify_passwords(&[&current]).await?;
        self.lock().previous = None;
        tracing::info!(user_id = %self.user_id, "previous static role password dropped");
        Ok(())
    }

    /// The current password and the time to the next rotation; `None` before the first
    /// rotation of this process.
    pub fn read(&self) -> Option<StaticRoleStatus> {
        let st = self.lock();
        let password = st.current.clone()?;
        let rotated_at = st.rotated_at?;
        let next = st.next_rotation_at?;
        Some(StaticRoleStatus {
            user_name: st.user_name.clone().unwrap_or_else(|| self.user_id.clone()),
            password,
            rotated_at,
            next_rotation_in: (next - Utc::now()).to_std().unwrap_or(Duration::ZERO),
        })
    }

    /// Starts the rotation task: rotate at once (a restart rotates again), drop the previous
    /// password after the grace period, rotate again each period. Failures are logged and
    /// retried with backoff.
    pub fn start(self: Arc<Self>) -> RotationTask {
        let me = self;
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                match me.rotate_now().await {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        let wait = retry_delay(failures, me.config.rotation_period);
                        tracing::warn!(user_id = %me.user_id, error = %e, retry_in = ?wait, "static role rotation failed");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                tokio::time::sleep(me.config.grace_period).await;
                let mut drop_failures = 0u32;
                while let Err(e) = me.drop_previous().await {
                    drop_failures += 1;
                    let wait = retry_delay(drop_failures, me.config.rotation_period);
                    tracing::warn!(user_id = %me.user_id, error = %e, retry_in = ?wait, "dropping the previous password failed");
                    tokio::time::sleep(wait).await;
                }
                let next_in = me.read().map(|s| s.next_rotation_in).unwrap_or_default();
                tokio::time::sleep(next_in).await;
            }
        });
        RotationTask { handle }
    }
}

fn retry_delay(failures: u32, period: Duration) -> Duration {
    let base = Duration::from_secs(1) * 2u32.saturating_pow(failures.min(8));
    base.min(period / 4).max(Duration::from_millis(100))
}

/// The running rotation; stops when [`stop`](Self::stop)ped or dropped.
#[derive(Debug)]
pub struct RotationTask {
    handle: tokio::task::JoinHandle<()>,
}

impl RotationTask {
    /// Stops rotating.
    pub fn stop(self) {
        self.handle.abort();
    }
}

impl Drop for RotationTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        StaticRoleConfig::new("app-writer").validate().unwrap();
        assert!(StaticRoleConfig::new("app--writer").validate().is_err());
        assert!(StaticRoleConfig::new("w")
            .rotation_period(Duration::from_secs(60))
            .grace_period(Duration::from_secs(60))
            .validate()
            .is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let p = RotatedPassword {
            user_id: "u".into(),
            user_name: "u".into(),
            password: SecretString::from("Sup3r-secret-rotated-pw"),
            rotated_at: Utc::now(),
            previous_valid_until: None,
            next_rotation_at: Utc::now(),
        };
        assert!(!format!("{p:?}").contains("Sup3r"));
        let s = StaticRoleStatus {
            user_name: "u".into(),
            password: SecretString::from("Sup3r-secret-rotated-pw"),
            rotated_at: Utc::now(),
            next_rotation_in: Duration::ZERO,
        };
        assert!(!format!("{s:?}").contains("Sup3r"));
    }
}

/// An existing ElastiCache user as the target of a fleet-wide static role
/// ([`leasehold_core::static_role::StaticRoleRotator`]): `ModifyUser` with two passwords
/// (`AuthenticationMode` `password`, never touching the access string), then one; a test by
/// `AUTH` on a readiness endpoint when configured, otherwise by the user being `active`.
///
/// IAM: `elasticache:DescribeUsers` and `elasticache:ModifyUser` on the user.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::ElastiCacheUserTarget;
/// let sdk = AwsConfig::new().region("eu-west-1").load().await?;
/// let target = ElastiCacheUserTarget::new(&sdk, "app-writer")?
///     .readiness_endpoint("rediss://my-cache.xxxxxx.use1.cache.amazonaws.com:6379")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ElastiCacheUserTarget {
    client: Client,
    user_id: String,
    ready_timeout: Duration,
    password_policy: PasswordPolicy,
    checker: Option<crate::auth_check::AuthChecker>,
}

impl fmt::Debug for ElastiCacheUserTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElastiCacheUserTarget")
            .field("user_id", &self.user_id)
            .field("ready_timeout", &self.ready_timeout)
            .field("readiness", &self.checker)
            .finish_non_exhaustive()
    }
}

impl ElastiCacheUserTarget {
    /// The user `user_id`.
    pub fn new(sdk: &SdkConfig, user_id: &str) -> Result<Self> {
        Self::from_client(Client::new(sdk), user_id)
    }

    /// Uses a ready client.
    pub fn from_client(client: Client, user_id: &str) -> Result<Self> {
        let id = NameRule::ElastiCacheUserId.normalize(user_id);
        if id != "default" {
            NameRule::ElastiCacheUserId
                .check(&id)
                .map_err(|e| Error::invalid_config(format!("user_id: {}", e.message())))?;
        }
        Ok(ElastiCacheUserTarget {
            client,
            user_id: id,
            ready_timeout: Duration::from_secs(300),
            password_policy: PasswordPolicy::elasticache(),
            checker: None,
        })
    }

    /// Tests new passwords with `AUTH` on this endpoint (`redis://` or `rediss://`).
    pub fn readiness_endpoint(mut self, url: &str) -> Result<Self> {
        self.checker = Some(crate::auth_check::AuthChecker::new(url, None)?);
        Ok(self)
    }

    /// Sets how long a change may take to settle (default 5 min).
    #[must_use]
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// Sets the password policy (16 to 128 characters).
    pub fn password_policy(mut self, p: PasswordPolicy) -> Result<Self> {
        p.validate()?;
        if !(16..=128).contains(&p.length()) {
            return Err(Error::invalid_config(
                "password_policy: ElastiCache passwords have 16 to 128 characters",
            ));
        }
        self.password_policy = p;
        Ok(self)
    }

    fn rotator(&self) -> StaticRoleRotator {
        let mut r = StaticRoleRotator::from_client(
            StaticRoleConfig::new(&self.user_id).ready_timeout(self.ready_timeout),
            self.client.clone(),
        )
        .expect("the user id was checked");
        r.poll_initial = Duration::from_millis(200);
        r
    }
}

#[leasehold_core::async_trait]
impl leasehold_core::static_role::StaticRoleTarget for ElastiCacheUserTarget {
    fn kind(&self) -> &'static str {
        "aws-elasticache-static"
    }

    fn password_policy(&self) -> PasswordPolicy {
        self.password_policy.clone()
    }

    async fn validate(&self) -> Result<()> {
        self.rotator().validate().await
    }

    async fn user(&self) -> Result<leasehold_core::static_role::StaticUser> {
        let u = self.rotator().describe().await?;
        Ok(leasehold_core::static_role::StaticUser::new(
            u.user_name().unwrap_or(&self.user_id),
            u.arn().map(str::to_string),
        ))
    }

    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        let r = self.rotator();
        match old {
            Some(old) if old.expose_secret() != new.expose_secret() => {
                r.modify_passwords(&[old, new]).await
            }
            _ => r.modify_passwords(&[new]).await,
        }
    }

    async fn drop_password(&self, _old: &SecretString, current: &SecretString) -> Result<()> {
        self.rotator().modify_passwords(&[current]).await
    }

    async fn test(&self, username: &str, password: &SecretString) -> Result<()> {
        if self.rotator().describe().await?.status() != Some("active") {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("user {:?} is not active yet", self.user_id),
            )
            .temporary());
        }
        match &self.checker {
            None => Ok(()),
            Some(c) => match c.check(username, password).await? {
                crate::auth_check::AuthOutcome::Accepted => Ok(()),
                crate::auth_check::AuthOutcome::Refused => Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "the new password of {username:?} is refused by the readiness endpoint"
                    ),
                )
                .temporary()),
            },
        }
    }
}
