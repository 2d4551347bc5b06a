//! When a static role rotates: every period, or at the times of a cron expression within a
//! window.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::store::add_duration;

/// When a static role rotates.
///
/// - [`every`](Self::every): a period after the last rotation (Vault's `rotation_period`);
/// - [`cron`](Self::cron): at the times of a five-field cron expression, UTC (Vault's
///   `rotation_schedule`); with a `window` (Vault's `rotation_window`, Secrets Manager's
///   schedule duration) a time that passed more than `window` ago without a rotation is
///   skipped and the next one is waited for, so rotations never happen outside the window.
///
/// A role that was never rotated rotates at once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_core::static_role::RotationSchedule;
///
/// let daily = RotationSchedule::every(Duration::from_secs(24 * 3600));
/// let nightly = RotationSchedule::cron("0 3 * * *", Some(Duration::from_secs(3600))).unwrap();
/// assert!(RotationSchedule::cron("not cron", None).is_err());
/// ```
#[derive(Clone)]
pub enum RotationSchedule {
    /// A fixed period.
    Every(Duration),
    /// A cron expression and an optional window.
    Cron {
        /// The expression as given.
        expression: String,
        /// The parsed expression.
        cron: Box<croner::Cron>,
        /// How long after a scheduled time a rotation may still start.
        window: Option<Duration>,
    },
}

impl fmt::Debug for RotationSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotationSchedule::Every(d) => f.debug_tuple("Every").field(d).finish(),
            RotationSchedule::Cron {
                expression, window, ..
            } => f
                .debug_struct("Cron")
                .field("expression", expression)
                .field("window", window)
                .finish(),
        }
    }
}

impl RotationSchedule {
    /// Every `period`.
    pub fn every(period: Duration) -> Self {
        RotationSchedule::Every(period)
    }

    /// At the times of `expression` (minute hour day-of-month month day-of-week, UTC), within
    /// `window` of each.
    pub fn cron(expression: &str, window: Option<Duration>) -> Result<Self> {
        let cron = croner::Cron::from_str(expression.trim()).map_err(|e| {
            Error::invalid_config(format!(
                "rotation_schedule: {expression:?} is not a cron expression: {e}"
            ))
        })?;
        if window.is_some_and(|w| w.is_zero()) {
            return Err(Error::invalid_config("rotation_window: must be positive"));
        }
        Ok(RotationSchedule::Cron {
            expression: expression.trim().to_string(),
            cron: Box::new(cron),
            window,
        })
    }

    /// The shortest time between two rotations, for checks against the grace (a cron
    /// schedule: the gap between its next two times).
    pub fn min_interval(&self, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            RotationSchedule::Every(d) => Some(*d),
            RotationSchedule::Cron { cron, .. } => {
                let a = cron.find_next_occurrence(&now, false).ok()?;
                let b = cron.find_next_occurrence(&a, false).ok()?;
                (b - a).to_std().ok()
            }
        }
    }

    /// When the next rotation is due, given the last one (`None`: never rotated, due now).
    pub fn next_due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let Some(last) = last else {
            return now;
        };
        match self {
            RotationSchedule::Every(d) => add_duration(last, *d),
            RotationSchedule::Cron { cron, window, .. } => {
                let Ok(mut t) = cron.find_next_occurrence(&last, false) else {
                    return DateTime::<Utc>::MAX_UTC;
                };
                if let Some(w) = window {
                    if add_duration(t, *w) <= now {
                        // Missed the window: wait for the next time whose window is still open.
                        let from = now - chrono::Duration::from_std(*w).unwrap_or_default();
                        t = cron
                            .find_next_occurrence(&from, false)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    }
                }
                t
            }
        }
    }

    /// Whether a rotation is due now.
    pub fn is_due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        self.next_due(last, now) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn period_and_never_rotated() {
        let s = RotationSchedule::every(Duration::from_secs(60));
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        assert!(s.is_due(None, t0));
        assert!(!s.is_due(Some(t0), t0 + chrono::Duration::seconds(59)));
        assert!(s.is_due(Some(t0), t0 + chrono::Duration::seconds(60)));
    }

    #[test]
    fn cron_with_window_skips_a_missed_time() {
        let s = RotationSchedule::cron("0 3 * * *", Some(Duration::from_secs(3600))).unwrap();
        let last = Utc.with_ymd_and_hms(2025, 1, 1, 3, 0, 5).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2025, 1, 2, h, m, 0).unwrap();
        assert!(!s.is_due(Some(last), at(2, 59)));
        assert!(s.is_due(Some(last), at(3, 30)));
        // 04:30 is outside the window of 03:00: wait for tomorrow's 03:00.
        assert!(!s.is_due(Some(last), at(4, 30)));
        assert_eq!(
            s.next_due(Some(last), at(4, 30)),
            Utc.with_ymd_and_hms(2025, 1, 3, 3, 0, 0).unwrap()
        );
        // Without a window a missed time is caught up.
        let s = RotationSchedule::cron("0 3 * * *", None).unwrap();
        assert!(s.is_due(Some(last), at(4, 30)));
        assert_eq!(
            s.min_interval(at(0, 0)),
            Some(Duration::from_secs(24 * 3600))
        );
    }
}
