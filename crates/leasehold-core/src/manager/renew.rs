//! Renewing a lease.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{lease_not_found, now, LeaseManager};
use crate::audit::AuditAction;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{LeaseId, LeaseRecord, LeaseState};
use crate::store::add_duration;
use crate::telemetry;

impl LeaseManager {
    /// Renews a lease: `expires_at = min(now + increment, issued_at + max_ttl)`; `increment`
    /// defaults to the secret's default TTL.
    pub async fn renew(
        &self,
        lease_id: &LeaseId,
        increment: Option<Duration>,
    ) -> Result<LeaseRecord> {
        let ctx = |e: Error| {
            e.with_context("lease_id", lease_id)
                .with_context("operation", "renew")
        };
        if increment.is_some_and(|d| d.is_zero()) {
            return Err(ctx(Error::invalid_input("increment must be positive")));
        }
        // A concurrent claim (the worker looking at a lease due now) can win the CAS; re-read
        // and try again a few times.
        for _ in 0..4 {
            let mut lease = self
                .inner
                .store
                .get(lease_id)
                .await?
                .ok_or_else(|| lease_not_found(lease_id))?;
            let t = now();
            check_renewable(&lease, t).map_err(ctx)?;
            let entry = self.inner.entry(&lease.secret).ok_or_else(|| {
                ctx(Error::new(
                    ErrorKind::SecretNotFound,
                    format!(
                        "the lease's secret {:?} is not registered with this manager",
                        &*lease.secret
                    ),
                ))
            })?;
            let caps = entry.secret.provider().capabilities();
            if !caps.renewable {
                return Err(ctx(Error::new(
                    ErrorKind::NotRenewable,
                    format!(
                        "{} credentials cannot be renewed",
                        entry.secret.provider().kind()
                    ),
                )));
            }
            let increment = increment.unwrap_or(entry.secret.default_ttl());
            let new_expiry = renewed_expiry(t, increment, lease.max_expires_at);
            let renewing = entry.secret.provider().renew(&lease.external, new_expiry);
            let called = std::time::Instant::now();
            let r = match tokio::time::timeout(self.inner.config.revoke_timeout, renewing).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    "the provider did not renew in time",
                )),
            };
            telemetry::provider_call(&entry.kind, "renew", r.as_ref().copied(), called.elapsed());
            if let Err(e) = r {
                telemetry::renew(&lease.secret, Err(&e));
                return Err(ctx(e));
            }
            let old_expiry = lease.expires_at;
            lease.extend(new_expiry);
            match self.inner.store.update(&lease).await {
                Ok(v) => {
                    lease.version = v;
                    if new_expiry < old_expiry {
                        self.inner.wake_for(new_expiry);
                    }
                    self.inner.audit(AuditAction::Renew, &lease, None);
                    telemetry::renew(&lease.secret, Ok(()));
                    return Ok(lease);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(ctx(e)),
            }
        }
        Err(ctx(Error::new(
            ErrorKind::Conflict,
            "the lease kept changing while renewing; try again",
        )))
    }
}

fn check_renewable(lease: &LeaseRecord, t: DateTime<Utc>) -> Result<()> {
    match lease.state {
        LeaseState::Active => {}
        LeaseState::Pending => {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the lease is still being issued",
            ))
        }
        LeaseState::Revoking | LeaseState::Revoked | LeaseState::Irrevocable => {
            return Err(Error::new(
                ErrorKind::LeaseRevoked,
                format!("the lease is {} and cannot be renewed", lease.state),
            ))
        }
    }
    if lease.expires_at <= t {
        return Err(Error::new(ErrorKind::LeaseExpired, "the lease has expired"));
    }
    if !lease.renewable {
        return Err(Error::new(
            ErrorKind::NotRenewable,
            "the lease is not renewable",
        ));
    }
    if lease.expires_at >= lease.max_expires_at {
        return Err(Error::new(
            ErrorKind::RenewLimitReached,
            format!(
                "the lease already lasts until its max TTL ({}); issue a new one",
                lease.max_expires_at.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// `min(now + increment, max_expires_at)`.
pub fn renewed_expiry(
    now: DateTime<Utc>,
    increment: Duration,
    max_expires_at: DateTime<Utc>,
) -> DateTime<Utc> {
    add_duration(now, increment).min(max_expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_caps_at_max() {
        let t = Utc::now();
        let max = t + chrono::Duration::seconds(100);
        assert_eq!(
            renewed_expiry(t, Duration::from_secs(50), max),
            t + chrono::Duration::seconds(50)
        );
        assert_eq!(renewed_expiry(t, Duration::from_secs(500), max), max);
    }
}
