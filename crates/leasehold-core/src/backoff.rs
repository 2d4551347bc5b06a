//! The one backoff schedule of leasehold: how long to wait before the next attempt.
//!
//! [`Backoff`] is only the *schedule* (initial delay, growth factor, cap, jitter). Whether to
//! try again at all is the *decision*, made by the caller: the manager's
//! [`RetryPolicy`](crate::RetryPolicy) (attempts, then `Irrevocable`), a provider's wait loop
//! (its deadline, and [`Error::is_temporary`](crate::Error::is_temporary)). The split is that of
//! tower's `retry::backoff` and `retry::Policy`. The schedule is written here rather than taken
//! from the `backon` crate: the manager computes a delay from the attempt count stored in the
//! lease record (`delay(attempt)`, not an iterator living in one process), and the jitter kinds
//! below are not all among backon's (it adds a random share on top of the delay only).
//!
//! # Retries
//!
//! A failure is retried by up to three layers, each bounded:
//!
//! 1. the AWS SDK: `max_attempts` calls per operation (default 3, standard retry mode);
//! 2. a provider's own loop around one operation, such as ElastiCache's `DeleteUser` while the
//!    user is `modifying`, until a deadline; when it gives up on an error that is still
//!    temporary it marks it [persistent](crate::Error::persist), so no outer loop re-runs it
//!    at once;
//! 3. the manager: a failed revocation is tried again on the [`RetryPolicy`](crate::RetryPolicy)
//!    schedule, `max_attempts` times (default 6, over about ten minutes), then once a day as
//!    `Irrevocable`.
//!
//! So one throttled ElastiCache revoke makes at most, with the defaults: 3 SDK attempts per
//! `DeleteUser` × 6 `DeleteUser` calls in its 5 s loop (sleeping 0.2, 0.4, 0.8, 1.6 and 2 s
//! between them) × 6 manager attempts = **108 requests** before the lease is `Irrevocable`,
//! then at most 18 a day. MemoryDB's `DeleteUser` loop retries only a busy user (until its
//! `revoke_timeout`), not throttling, so a throttled MemoryDB revoke makes 3 × 1 × 6 = 18.

use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// How a delay is spread, so that many clients failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniformly within `±fraction` of the delay (`fraction` in `[0, 1)`).
    Spread(f64),
    /// Uniformly between half the delay and the delay ("equal jitter").
    Equal,
}

impl Jitter {
    /// `d`, jittered.
    pub fn apply(self, d: Duration) -> Duration {
        match self {
            Jitter::None => d,
            Jitter::Spread(f) if f > 0.0 => d.mul_f64(rand::rng().random_range(1.0 - f..1.0 + f)),
            Jitter::Spread(_) => d,
            Jitter::Equal => d.mul_f64(rand::rng().random_range(0.5..=1.0)),
        }
    }
}

/// An exponential backoff schedule: `initial × factor^n`, capped at `max`, then jittered.
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::backoff::{Backoff, Jitter};
///
/// let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
/// let delays: Vec<Duration> = b.iter().take(6).collect();
/// assert_eq!(delays[0], Duration::from_millis(200));
/// assert_eq!(delays[3], Duration::from_millis(1600));
/// assert_eq!(delays[5], Duration::from_secs(2)); // capped
///
/// let spread = b.jitter(Jitter::Spread(0.25));
/// let d = spread.delay(1);
/// assert!(d >= Duration::from_millis(300) && d <= Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Growth per attempt (at least 1; 2 doubles).
    pub factor: f64,
    /// The longest delay, before jitter.
    pub max: Duration,
    /// How each delay is spread.
    pub jitter: Jitter,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, without jitter.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            factor: 2.0,
            max,
            jitter: Jitter::None,
        }
    }

    /// Checks the schedule: a finite factor of at least 1, `max` not below `initial`, a spread
    /// in `[0, 1)`.
    pub fn check(&self) -> Result<()> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(Error::invalid_config(format!(
                "backoff factor must be a finite number of at least 1, it is {}",
                self.factor
            )));
        }
        if self.max < self.initial {
            return Err(Error::invalid_config(
                "backoff: the longest delay must not be shorter than the first",
            ));
        }
        if let Jitter::Spread(f) = self.jitter {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::invalid_config(format!(
                    "backoff jitter spread must be in [0, 1), it is {f}"
                )));
            }
        }
        Ok(())
    }

    /// The delay before retry `n` (0-based: `base(0)` is `initial`), capped, without jitter.
    pub fn base(&self, n: u32) -> Duration {
        if self.factor <= 1.0 || n == 0 {
            return self.initial.min(self.max);
        }
        let exp = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(secs).min(self.max)
    }

    /// The delay before retry `n` (0-based), capped, then jittered.
    pub fn delay(&self, n: u32) -> Duration {
        self.jitter.apply(self.base(n))
    }

    /// The delays of retries 0, 1, 2, ... (endless: the caller decides when to stop).
    pub fn iter(&self) -> Delays {
        Delays {
            backoff: *self,
            n: 0,
        }
    }
}

crate::setters! {
    const Backoff {
        /// Sets the growth factor.
        factor: f64,
        /// Sets the jitter.
        jitter: Jitter,
    }
}

/// The delays of a [`Backoff`], one per retry; see [`Backoff::iter`].
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    n: u32,
}

impl Delays {
    /// The next delay (the iterator never ends, so this is never missing).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.n);
        self.n = self.n.saturating_add(1);
        d
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_by_the_factor_and_stops_at_the_cap() {
        let b = Backoff::new(MS(100), MS(1000));
        let got: Vec<u64> = b.iter().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000]);
        let b = Backoff::new(MS(200), MS(2000)).factor(1.5);
        assert_eq!(b.base(1), MS(300));
        assert_eq!(b.base(2), MS(450));
        assert_eq!(b.base(20), MS(2000));
        // Huge exponents and factors saturate at the cap instead of overflowing.
        assert_eq!(b.base(u32::MAX), MS(2000));
        assert_eq!(Backoff::new(MS(1), MS(5)).factor(1e300).base(3), MS(5));
        // A factor of 1 is a constant interval.
        assert_eq!(Backoff::new(MS(70), MS(500)).factor(1.0).base(9), MS(70));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let base = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
        let spread = base.jitter(Jitter::Spread(0.25));
        let equal = base.jitter(Jitter::Equal);
        let (mut spread_seen, mut equal_seen) = (Vec::new(), Vec::new());
        for _ in 0..500 {
            let d = spread.delay(0);
            assert!(d >= MS(7500) && d <= MS(12500), "{d:?}");
            spread_seen.push(d);
            let d = equal.delay(0);
            assert!(d >= MS(5000) && d <= MS(10000), "{d:?}");
            equal_seen.push(d);
            // Jitter applies after the cap: at most 25 % above it.
            assert!(spread.delay(40) <= MS(750_000));
        }
        // It does spread: not every draw is the same.
        spread_seen.dedup();
        equal_seen.dedup();
        assert!(spread_seen.len() > 1 && equal_seen.len() > 1);
        assert_eq!(base.delay(0), Duration::from_secs(10));
    }

    #[test]
    fn check_refuses_schedules_that_shrink_or_spread_too_far() {
        let ok = Backoff::new(MS(100), MS(1000));
        ok.check().unwrap();
        for bad in [
            ok.factor(0.5),
            ok.factor(f64::NAN),
            Backoff::new(MS(1000), MS(100)),
            ok.jitter(Jitter::Spread(1.0)),
            ok.jitter(Jitter::Spread(-0.1)),
        ] {
            let e = bad.check().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidConfig, "{bad:?}");
        }
    }
}
