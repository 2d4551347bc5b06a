//! The manager's settings: [`ManagerConfig`] and the revocation [`RetryPolicy`].

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::error::Error;

/// How failed revocations are retried.
///
/// The defaults follow Vault's spirit: 6 attempts over about 10 minutes (10 s, 20 s, 40 s,
/// 80 s, 160 s, 320 s, each with ±25 % jitter), then the lease is `Irrevocable` and retried
/// once a day. A permanent error (say, `PermissionDenied`) makes the lease irrevocable at once:
/// it will not fix itself in minutes, and an operator is told sooner. A
/// [persistent](crate::Error::persist) error (a provider already retried it until its own
/// bound) counts as one failed attempt and is retried on this schedule like a temporary one,
/// never at once. The schedule is a [`Backoff`] ([`backoff`](Self::backoff)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Attempts before the lease becomes irrevocable.
    pub max_attempts: u32,
    /// How often irrevocable leases are tried again.
    pub irrevocable_retry: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
            max_attempts: 6,
            irrevocable_retry: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given first delay and attempt count, other values default.
    pub fn new(initial_delay: Duration, max_attempts: u32) -> Self {
        RetryPolicy {
            initial_delay,
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// The schedule: from `initial_delay`, doubling up to `max_delay`, each delay ±25 %.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial_delay, self.max_delay).jitter(Jitter::Spread(0.25))
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures (1-based), jittered.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt.saturating_sub(1))
    }

    /// The decision after the `attempts`th failed revocation with `error`: the delay before the
    /// next attempt, or `None` to give up (the lease becomes `Irrevocable`). A permanent error
    /// gives up at once; a temporary or persistent one is retried until `max_attempts`.
    pub(crate) fn next_attempt(&self, error: &Error, attempts: u32) -> Option<Duration> {
        (error.is_retryable() && attempts < self.max_attempts).then(|| self.delay_after(attempts))
    }
}

crate::setters! {
    RetryPolicy {
        /// Sets the longest delay.
        max_delay: Duration,
        /// Sets the irrevocable retry interval.
        irrevocable_retry: Duration,
    }
}

/// Settings of a [`LeaseManager`](crate::LeaseManager).
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::ManagerConfig;
///
/// let config = ManagerConfig::default()
///     .claim_hold(Duration::from_secs(30))
///     .revoke_concurrency(8);
/// assert_eq!(config.claim_hold, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Revocations run at once, by the worker and by `revoke_secret` (default 16).
    pub revoke_concurrency: usize,
    /// Leases claimed per `claim_due` call (default 256).
    pub claim_batch: usize,
    /// At most this many revocations per second by the expiry worker (default `None`: as fast
    /// as `revoke_concurrency` allows). Paces the clean-up of a backlog, such as the leases that
    /// fell due while every instance was down, so that it neither storms the backend nor starves
    /// new issues of the store. The worker then claims no more than it revokes in half a
    /// `claim_hold`, so its claims never run out while they wait their turn.
    pub revoke_rate: Option<u32>,
    /// How long a claim holds (default 60 s). The worker's claims on due leases hold this plus
    /// `revoke_timeout`, so a revocation in flight never outlives its claim. A crashed instance's
    /// claims come free after that (a restart with the same `instance_id` takes them back at once).
    pub claim_hold: Duration,
    /// Longest time an issue may take, readiness wait included (default 10 min). A `Pending`
    /// lease older than this is considered abandoned and revoked by the worker.
    pub issue_timeout: Duration,
    /// Longest time one revoke or renew call to the provider may take (default 2 min).
    pub revoke_timeout: Duration,
    /// Longest sleep of the worker between looks at the store (default 5 s): leases written by
    /// other instances are noticed at least this often.
    pub max_idle: Duration,
    /// Retry policy for failed revocations.
    pub retry: RetryPolicy,
    /// After a provider `create` that timed out, how long to wait before revoking by name
    /// (default 30 s): a request cut short may still be in flight and create the credential
    /// later, so revoking at once could run before it lands. The lease stays in the store,
    /// `Revoking`, until the worker has revoked it after this grace.
    pub create_grace: Duration,
    /// Whether to run the expiry worker (default true).
    pub run_worker: bool,
    /// How often the worker refreshes the lease-count gauges (`leasehold_leases`,
    /// `leasehold_irrevocable_leases`) from the store (default 15 s): a few `count` calls per
    /// registered secret each time.
    pub metrics_interval: Duration,
    /// How often the worker asks providers that can ([`Capabilities::repairs_drift`], e.g.
    /// self-hosted Redis) to repair drift between the backend and the leases (default 60 s).
    ///
    /// [`Capabilities::repairs_drift`]: crate::Capabilities::repairs_drift
    pub repair_interval: Duration,
}

crate::setters! {
    ManagerConfig {
        /// Sets [`revoke_concurrency`](Self::revoke_concurrency).
        revoke_concurrency: usize,
        /// Sets [`claim_batch`](Self::claim_batch).
        claim_batch: usize,
        /// Sets [`revoke_rate`](Self::revoke_rate).
        revoke_rate: Option<u32>,
        /// Sets [`claim_hold`](Self::claim_hold).
        claim_hold: Duration,
        /// Sets [`issue_timeout`](Self::issue_timeout).
        issue_timeout: Duration,
        /// Sets [`revoke_timeout`](Self::revoke_timeout).
        revoke_timeout: Duration,
        /// Sets [`max_idle`](Self::max_idle).
        max_idle: Duration,
        /// Sets [`retry`](Self::retry).
        retry: RetryPolicy,
        /// Sets [`create_grace`](Self::create_grace).
        create_grace: Duration,
        /// Sets [`run_worker`](Self::run_worker).
        run_worker: bool,
        /// Sets [`metrics_interval`](Self::metrics_interval).
        metrics_interval: Duration,
        /// Sets [`repair_interval`](Self::repair_interval).
        repair_interval: Duration,
    }
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            revoke_concurrency: 16,
            claim_batch: 256,
            revoke_rate: None,
            claim_hold: Duration::from_secs(60),
            issue_timeout: Duration::from_secs(600),
            revoke_timeout: Duration::from_secs(120),
            max_idle: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            create_grace: Duration::from_secs(30),
            run_worker: true,
            metrics_interval: Duration::from_secs(15),
            repair_interval: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        let p = RetryPolicy::default();
        let d1 = p.delay_after(1);
        assert!(d1 >= Duration::from_millis(7500) && d1 <= Duration::from_millis(12500));
        let d6 = p.delay_after(6);
        assert!(d6 >= Duration::from_secs(240) && d6 <= Duration::from_secs(400));
        let d30 = p.delay_after(30);
        assert!(d30 <= Duration::from_secs(750));
        // Total over the default six attempts is about ten minutes.
        let total: f64 = (1..=6).map(|a| p.delay_after(a).as_secs_f64()).sum();
        assert!((450.0..=800.0).contains(&total), "{total}");
    }

    #[test]
    fn persistent_errors_wait_for_the_schedule_permanent_ones_give_up() {
        use crate::error::ErrorKind;
        let p = RetryPolicy::default();
        let throttled = || Error::new(ErrorKind::Throttled, "slow down");
        let later = p.next_attempt(&throttled().persist(), 1).unwrap();
        assert!(later >= Duration::from_millis(7500), "{later:?}");
        assert!(p.next_attempt(&throttled(), 1).is_some());
        assert!(p.next_attempt(&throttled().persist(), 6).is_none());
        let denied = Error::new(ErrorKind::PermissionDenied, "no");
        assert!(p.next_attempt(&denied, 1).is_none());
    }
}
