//! [`StaticRoleRotator`]: one rotator per static role across every instance sharing a lease
//! store, with resumable steps.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::ExposeSecret;

use super::{
    PublishedVersion, RotationSchedule, Stage, StaticCredential, StaticRolePublisher,
    StaticRoleTarget,
};
use crate::backoff::{Backoff, Jitter};
use crate::coordination::{CoordinationStore, MemberEntry, MemberState};
use crate::error::{Error, ErrorKind, Result};
use crate::store::add_duration;

/// The bookkeeping entry of a role in the [`CoordinationStore`]: its state says where the
/// last rotation stands and its deadline when it was promoted. No secret.
const ROTATION: &str = "rotation";
/// An operator's rotate-now request; its deadline is the time it was made.
const REQUEST: &str = "rotate-now";

/// Settings of a [`StaticRoleRotator`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::static_role::{RotationSchedule, StaticRoleOptions};
///
/// let o = StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(24 * 3600)))
///     .grace(Duration::from_secs(600));
/// o.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StaticRoleOptions {
    /// When to rotate.
    pub schedule: RotationSchedule,
    /// How long the previous password keeps working after a rotation (default 5 min). Readers
    /// must refresh faster than this.
    pub grace: Duration,
    /// How long the rotator's claim lasts unless renewed: how soon another instance takes
    /// over from a dead rotator (default 30 s).
    pub claim_hold: Duration,
    /// How often an instance checks whether it should act (default 5 s).
    pub poll: Duration,
    /// How long the test step retries before the rotation is left pending (default 5 min).
    pub test_timeout: Duration,
}

impl StaticRoleOptions {
    /// Defaults with `schedule`.
    pub fn new(schedule: RotationSchedule) -> Self {
        StaticRoleOptions {
            schedule,
            grace: Duration::from_secs(300),
            claim_hold: Duration::from_secs(30),
            poll: Duration::from_secs(5),
            test_timeout: Duration::from_secs(300),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if let Some(every) = self.schedule.min_interval(Utc::now()) {
            if every < Duration::from_secs(1) {
                return Err(Error::invalid_config(
                    "rotation_period: must be at least 1s",
                ));
            }
            if self.grace >= every {
                return Err(Error::invalid_config(format!(
                    "grace: {} must be shorter than the time between rotations ({}): a user holds at most two passwords",
                    crate::format_duration(self.grace),
                    crate::format_duration(every)
                )));
            }
        }
        if self.claim_hold < Duration::from_millis(100) {
            return Err(Error::invalid_config("claim_hold: must be at least 100ms"));
        }
        if self.poll.is_zero() || self.poll >= self.claim_hold {
            return Err(Error::invalid_config(
                "poll: must be positive and shorter than claim_hold (the holder renews its claim as it polls)",
            ));
        }
        if self.test_timeout.is_zero() {
            return Err(Error::invalid_config("test_timeout: must be positive"));
        }
        Ok(())
    }
}

crate::setters! {
    StaticRoleOptions {
        /// Sets the grace.
        grace: Duration,
        /// Sets the claim hold.
        claim_hold: Duration,
        /// Sets the poll interval.
        poll: Duration,
        /// Sets the test timeout.
        test_timeout: Duration,
    }
}

/// What one pass of the rotator did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationOutcome {
    /// Another instance holds the role's claim.
    NotHolder {
        /// The holder, when known.
        holder: Option<String>,
    },
    /// Nothing was due.
    Idle {
        /// When the next rotation is due.
        next_due: DateTime<Utc>,
    },
    /// A new password is current.
    Rotated {
        /// Its published version.
        version_id: String,
        /// Whether an interrupted rotation was finished (rather than a new one started).
        resumed: bool,
    },
    /// The grace ended and the previous password was dropped.
    DroppedPrevious,
    /// A rotate-now request was recorded for the holder to carry out.
    Requested {
        /// The holder.
        holder: Option<String>,
    },
}

/// Rotates one static role's password for a whole fleet.
///
/// Every instance of a service can run one; they elect a single rotator through the lease
/// store's [`CoordinationStore`] claim (group `static-role/<name>`), held while it works and
/// taken over `claim_hold` after its holder dies. A rotation is four resumable steps:
///
/// 1. **create** — a new password from the target's policy, stored as a version labelled
///    `AWSPENDING` by the publisher;
/// 2. **set** — the target accepts both the current and the pending password;
/// 3. **test** — the pending password works (`AUTH` through a readiness endpoint when the
///    target has one);
/// 4. **promote** — the pending version becomes `AWSCURRENT`, the old one `AWSPREVIOUS`.
///
/// After the grace the previous password is dropped from the user. A holder that dies mid-way
/// leaves `AWSPENDING` behind and the current password still working; the next holder finishes
/// from step 2. The store keeps only the claim and the phase/time of the last promotion.
///
/// # Examples
///
/// ```no_run
/// # async fn f(target: std::sync::Arc<dyn leasehold_core::static_role::StaticRoleTarget>) -> leasehold_core::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_core::static_role::*;
/// use leasehold_core::{LeaseStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// let rotator = Arc::new(StaticRoleRotator::new(
///     "orders-cache",
///     target,
///     Arc::new(MemoryPublisher::new("orders-cache")),
///     store.coordination().unwrap(),
///     "instance-1",
///     StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(24 * 3600))),
/// )?);
/// rotator.validate().await?;
/// let task = rotator.clone().start();
/// # Ok(()) }
/// ```
pub struct StaticRoleRotator {
    name: String,
    group: String,
    target: Arc<dyn StaticRoleTarget>,
    publisher: Arc<dyn StaticRolePublisher>,
    coordination: Arc<dyn CoordinationStore>,
    owner: String,
    options: StaticRoleOptions,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl fmt::Debug for StaticRoleRotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRoleRotator")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("target", &self.target)
            .field("publisher", &self.publisher)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What the bookkeeping entry says.
struct Phase {
    /// When the current password was promoted (or a safe stand-in).
    last: Option<DateTime<Utc>>,
    /// Whether the previous password may still be on the user.
    in_grace: bool,
}

impl StaticRoleRotator {
    /// A rotator for the static role `name`, acting as `owner` (unique per instance).
    pub fn new(
        name: impl Into<String>,
        target: Arc<dyn StaticRoleTarget>,
        publisher: Arc<dyn StaticRolePublisher>,
        coordination: Arc<dyn CoordinationStore>,
        owner: impl Into<String>,
        options: StaticRoleOptions,
    ) -> Result<Self> {
        options.validate()?;
        let name = name.into();
        if name.is_empty() {
            return Err(Error::invalid_config("static role name: must not be empty"));
        }
        Ok(StaticRoleRotator {
            group: format!("static-role/{name}"),
            name,
            target,
            publisher,
            coordination,
            owner: owner.into(),
            options,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn options(&self) -> &StaticRoleOptions {
        &self.options
    }

    /// The publisher readers follow.
    pub fn publisher(&self) -> Arc<dyn StaticRolePublisher> {
        self.publisher.clone()
    }

    /// Checks the target (the user exists and has a password to rotate) and the publisher.
    pub async fn validate(&self) -> Result<()> {
        self.target.validate().await?;
        self.publisher.validate().await
    }

    /// The instance holding the role's claim, if any.
    pub async fn holder(&self) -> Result<Option<String>> {
        let now = Utc::now();
        Ok(self
            .coordination
            .group_claim(&self.group)
            .await?
            .filter(|c| c.until > now)
            .map(|c| c.owner))
    }

    /// One pass: take or renew the claim and, when held, do what is due.
    pub async fn tick(&self) -> Result<RotationOutcome> {
        self.pass(false).await
    }

    async fn pass(&self, force: bool) -> Result<RotationOutcome> {
        let _one = self.one_at_a_time.lock().await;
        let held = self
            .coordination
            .claim_group(
                &self.group,
                &self.owner,
                Utc::now(),
                self.options.claim_hold,
            )
            .await?;
        if !held {
            return Ok(RotationOutcome::NotHolder {
                holder: self.holder().await?,
            });
        }
        self.while_held(self.step(force)).await
    }

    /// Ends this instance's claim (so another takes over at once).
    pub async fn release(&self) -> Result<bool> {
        self.coordination
            .release_group(&self.group, &self.owner)
            .await
    }

    /// Rotates now. When this instance gets the claim it rotates itself; otherwise it records
    /// a request that the holder carries out, and waits up to `wait` for it.
    pub async fn rotate_now(&self, wait: Duration) -> Result<RotationOutcome> {
        let asked = Utc::now();
        match self.pass(true).await? {
            RotationOutcome::NotHolder { holder } => {
                self.coordination
                    .put_member(&MemberEntry::new(
                        &self.group,
                        REQUEST,
                        MemberState::Pending,
                        &self.owner,
                        asked,
                    ))
                    .await?;
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if let Some(e) = self.coordination.member(&self.group, ROTATION).await? {
                        if matches!(e.state, MemberState::Accepted | MemberState::Applied)
                            && e.deadline >= asked
                        {
                            let version_id = self
                                .publisher
                                .get(Stage::Current)
                                .await?
                                .map(|v| v.version_id)
                                .unwrap_or_default();
                            return Ok(RotationOutcome::Rotated {
                                version_id,
                                resumed: false,
                            });
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(RotationOutcome::Requested { holder });
                    }
                    self.coordination
                        .changed(&self.group, self.options.poll.min(Duration::from_secs(1)))
                        .await;
                }
            }
            other => Ok(other),
        }
    }

    /// Runs `fut` while renewing the claim; a lost claim stops it (every step is resumable).
    async fn while_held<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let renew = async {
            loop {
                tokio::time::sleep(self.options.claim_hold / 3).await;
                match self
                    .coordination
                    .claim_group(&self.group, &self.owner, Utc::now(), self.options.claim_hold)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "static role {:?}: another instance took the rotator's claim; it finishes the rotation",
                                self.name
                            ),
                        )
                    }
                    Err(e) => tracing::warn!(role = %self.name, error = %e, "renewing the static role claim failed"),
                }
            }
        };
        tokio::select! {
            r = fut => r,
            e = renew => Err(e),
        }
    }

    async fn record(&self, state: MemberState, at: DateTime<Utc>) -> Result<()> {
        self.coordination
            .put_member(&MemberEntry::new(
                &self.group,
                ROTATION,
                state,
                &self.owner,
                at,
            ))
            .await
    }

    async fn phase(&self, current: Option<&PublishedVersion>) -> Result<Phase> {
        let entry = self.coordination.member(&self.group, ROTATION).await?;
        let now = Utc::now();
        Ok(match entry {
            Some(e) => match e.state {
                MemberState::Applied => Phase {
                    last: Some(e.deadline),
                    in_grace: false,
                },
                MemberState::Pending => {
                    // A rotation started at `deadline` and no AWSPENDING is left: either it was
                    // promoted before the holder could record it, or its version was never
                    // stored.
                    let promoted = current
                        .and_then(|c| c.created_at)
                        .is_some_and(|t| t >= e.deadline);
                    if promoted {
                        self.record(MemberState::Accepted, now).await?;
                        Phase {
                            last: Some(now),
                            in_grace: true,
                        }
                    } else {
                        Phase {
                            last: None,
                            in_grace: true,
                        }
                    }
                }
                _ => Phase {
                    last: Some(e.deadline),
                    in_grace: true,
                },
            },
            // A store that never saw this role: time it from the published version.
            None => Phase {
                last: current.and_then(|c| c.created_at),
                in_grace: current.is_some(),
            },
        })
    }

    async fn step(&self, force: bool) -> Result<RotationOutcome> {
        if let Some(pending) = self.publisher.get(Stage::Pending).await? {
            return self.finish(pending, true).await;
        }
        let current = self.publisher.get(Stage::Current).await?;
        let phase = self.phase(current.as_ref()).await?;
        let now = Utc::now();
        let requested = self
            .coordination
            .member(&self.group, REQUEST)
            .await?
            .is_some_and(|r| phase.last.is_none_or(|last| r.deadline > last));
        let due = force
            || requested
            || current.is_none()
            || self.options.schedule.is_due(phase.last, now);
        let grace_over = phase
            .last
            .is_none_or(|last| add_duration(last, self.options.grace) <= now);
        if phase.in_grace && (due || grace_over) {
            // A user holds at most two passwords: the previous one goes before a new one comes.
            if let (Some(prev), Some(cur)) = (self.publisher.get(Stage::Previous).await?, &current)
            {
                if prev.credential.password.expose_secret()
                    != cur.credential.password.expose_secret()
                {
                    self.target
                        .drop_password(&prev.credential.password, &cur.credential.password)
                        .await?;
                }
            }
            self.record(MemberState::Applied, phase.last.unwrap_or(now))
                .await?;
            tracing::info!(role = %self.name, "previous static role password dropped");
            if !due {
                return Ok(RotationOutcome::DroppedPrevious);
            }
        }
        if !due {
            let mut next_due = self.options.schedule.next_due(phase.last, now);
            if phase.in_grace {
                if let Some(last) = phase.last {
                    next_due = next_due.min(add_duration(last, self.options.grace));
                }
            }
            return Ok(RotationOutcome::Idle { next_due });
        }
        // Step 1: create the pending version.
        let user = self.target.user().await?;
        let password = self.target.password_policy().generate()?;
        let version_id = new_version_id();
        self.record(MemberState::Pending, Utc::now()).await?;
        let credential = StaticCredential::new(user.username, password).user_arn(user.user_arn);
        let first = current.is_none();
        if first {
            // A secret's first version is current at once (Secrets Manager's rule): readers
            // must not see it before the user accepts it, so the user comes first here.
            self.target
                .set_passwords(None, &credential.password)
                .await?;
            self.test_until_accepted(&credential).await?;
        }
        self.publisher.put_pending(&version_id, &credential).await?;
        tracing::info!(role = %self.name, version_id = %version_id, "static role rotation started");
        let pending = PublishedVersion {
            version_id,
            credential,
            created_at: None,
        };
        if first {
            return self.promote(pending, false, Utc::now()).await;
        }
        self.finish(pending, false).await
    }

    /// Steps 2 to 4 for `pending`.
    async fn finish(&self, pending: PublishedVersion, resumed: bool) -> Result<RotationOutcome> {
        let started = Utc::now();
        let current = self
            .publisher
            .get(Stage::Current)
            .await?
            .filter(|c| c.version_id != pending.version_id);
        if resumed {
            tracing::info!(role = %self.name, version_id = %pending.version_id, "finishing an interrupted static role rotation");
        }
        // Step 2: both passwords valid.
        self.target
            .set_passwords(
                current.as_ref().map(|c| &c.credential.password),
                &pending.credential.password,
            )
            .await?;
        // Step 3: the new one works.
        self.test_until_accepted(&pending.credential).await?;
        self.promote(pending, resumed, started).await
    }

    async fn test_until_accepted(&self, credential: &StaticCredential) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.options.test_timeout;
        let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).iter();
        loop {
            let delay = delays.next_delay();
            match self
                .target
                .test(&credential.username, &credential.password)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(role = %self.name, error = %e, "new static role password not accepted yet");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e.with_context("static_role", &self.name)),
            }
        }
    }

    async fn promote(
        &self,
        pending: PublishedVersion,
        resumed: bool,
        started: DateTime<Utc>,
    ) -> Result<RotationOutcome> {
        // Step 4: promote.
        self.publisher.promote(&pending.version_id).await?;
        let now = Utc::now();
        self.record(MemberState::Accepted, now).await?;
        if let Some(r) = self.coordination.member(&self.group, REQUEST).await? {
            if r.deadline <= started {
                self.coordination.withdraw(&self.group, REQUEST).await?;
            }
        }
        tracing::info!(role = %self.name, version_id = %pending.version_id, "static role password rotated");
        Ok(RotationOutcome::Rotated {
            version_id: pending.version_id,
            resumed,
        })
    }

    /// Starts rotating in the background: every instance may call it; the one holding the
    /// claim acts.
    pub fn start(self: Arc<Self>) -> RotationTask {
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let wait = match me.tick().await {
                    Ok(RotationOutcome::Idle { next_due }) => {
                        failures = 0;
                        (next_due - Utc::now())
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(me.options.poll)
                    }
                    Ok(RotationOutcome::Rotated { .. } | RotationOutcome::DroppedPrevious) => {
                        failures = 0;
                        Duration::ZERO
                    }
                    Ok(_) => {
                        failures = 0;
                        POLL_JITTER.apply(me.options.poll)
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = failure_backoff(me.options.poll).base(failures.min(6));
                        tracing::warn!(role = %me.name, error = %e, retry_in = ?wait, "static role rotation failed");
                        POLL_JITTER.apply(wait)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        RotationTask {
            handle: Some(handle),
            rotator: self,
        }
    }
}

/// Polls and retries of the rotation task are spread by ±20 %.
const POLL_JITTER: Jitter = Jitter::Spread(0.2);

/// After `n` failed rotations in a row the task waits `poll × 2^min(n, 6)`, at most 5 min.
fn failure_backoff(poll: Duration) -> Backoff {
    Backoff::new(poll, Duration::from_secs(300))
}

/// A Secrets Manager style version id (a UUID v4, 36 characters).
fn new_version_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        8 | (b[8] & 0x3),
        &h[17..20],
        &h[20..32]
    )
}

/// The running rotator of [`StaticRoleRotator::start`]; stops when stopped or dropped.
pub struct RotationTask {
    handle: Option<tokio::task::JoinHandle<()>>,
    rotator: Arc<StaticRoleRotator>,
}

impl fmt::Debug for RotationTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationTask")
            .field("role", &self.rotator.name)
            .finish_non_exhaustive()
    }
}

impl RotationTask {
    /// Stops rotating and gives up the claim so another instance takes over at once. A
    /// rotation in flight stops where it is; the next holder finishes it.
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
            let _ = h.await;
        }
        if let Err(e) = self.rotator.release().await {
            tracing::warn!(role = %self.rotator.name, error = %e, "releasing the static role claim failed");
        }
    }
}

impl Drop for RotationTask {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests;
