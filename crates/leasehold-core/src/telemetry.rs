//! Metrics, recorded through the [`metrics`] facade: the library records, the application
//! installs an exporter (Prometheus, StatsD, ...). With no recorder installed each call costs
//! about one atomic load. Labels are bounded: a secret name, a provider kind, an operation, an
//! outcome or a state — never a lease id or a username. The table of names is in the crate
//! README ("Metrics").

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use crate::error::{Error, ErrorKind};
use crate::model::LeaseState;

/// `leasehold_issues_total{secret, outcome}`.
pub const ISSUES: &str = "leasehold_issues_total";
/// `leasehold_issue_duration_seconds{secret}`.
pub const ISSUE_DURATION: &str = "leasehold_issue_duration_seconds";
/// `leasehold_renewals_total{secret, outcome}`.
pub const RENEWALS: &str = "leasehold_renewals_total";
/// `leasehold_revocations_total{secret, reason, outcome}`; reason is `revoke` or `expire`.
pub const REVOCATIONS: &str = "leasehold_revocations_total";
/// `leasehold_revoke_duration_seconds{secret}`.
pub const REVOKE_DURATION: &str = "leasehold_revoke_duration_seconds";
/// `leasehold_revoke_retries_total{secret}`: failed revocations scheduled again.
pub const REVOKE_RETRIES: &str = "leasehold_revoke_retries_total";
/// `leasehold_irrevocable_total{secret}`: leases that became irrevocable.
pub const IRREVOCABLE: &str = "leasehold_irrevocable_total";
/// `leasehold_expiry_lag_seconds{secret}`: revoked_at minus expires_at, for expirations.
pub const EXPIRY_LAG: &str = "leasehold_expiry_lag_seconds";
/// `leasehold_provider_calls_total{provider, operation, outcome}`.
pub const PROVIDER_CALLS: &str = "leasehold_provider_calls_total";
/// `leasehold_provider_call_duration_seconds{provider, operation}`.
pub const PROVIDER_CALL_DURATION: &str = "leasehold_provider_call_duration_seconds";
/// `leasehold_leases{secret, state}`: leases in the store (gauge, refreshed by the worker).
pub const LEASES: &str = "leasehold_leases";
/// `leasehold_irrevocable_leases{secret}`: irrevocable leases in the store (gauge).
pub const IRREVOCABLE_LEASES: &str = "leasehold_irrevocable_leases";
/// `leasehold_drift_repairs_total{provider, action}`: credentials copied to, or removed from,
/// a part of the backend that drifted from the leases (action `copied`, `removed`, `failed`).
pub const DRIFT_REPAIRS: &str = "leasehold_drift_repairs_total";
/// `leasehold_membership_queue_depth{operation}`: additions waiting for the group change the
/// applier is about to send (`ModifyUserGroup`, `UpdateACL`), as the applier last saw them.
pub const MEMBERSHIP_QUEUE_DEPTH: &str = "leasehold_membership_queue_depth";
/// `leasehold_membership_batch_size{operation}`: users per group change sent.
pub const MEMBERSHIP_BATCH_SIZE: &str = "leasehold_membership_batch_size";
/// `leasehold_store_errors_total{operation}`: failed store calls of the worker.
pub const STORE_ERRORS: &str = "leasehold_store_errors_total";
/// `leasehold_worker_loops_total`: worker iterations (a stuck worker stops counting).
pub const WORKER_LOOPS: &str = "leasehold_worker_loops_total";

/// Describes every metric to the installed recorder (HELP lines and units in Prometheus).
/// The manager calls it when it is built; calling it again is harmless.
pub fn describe() {
    describe_counter!(ISSUES, "Issue calls by secret and outcome.");
    describe_histogram!(
        ISSUE_DURATION,
        Unit::Seconds,
        "Issue latency, readiness wait included."
    );
    describe_counter!(RENEWALS, "Renew calls by secret and outcome.");
    describe_counter!(
        REVOCATIONS,
        "Revocation attempts by secret, reason (revoke or expire) and outcome."
    );
    describe_histogram!(
        REVOKE_DURATION,
        Unit::Seconds,
        "One revocation: provider call and store write."
    );
    describe_counter!(REVOKE_RETRIES, "Failed revocations scheduled again.");
    describe_counter!(IRREVOCABLE, "Leases that became irrevocable.");
    describe_histogram!(
        EXPIRY_LAG,
        Unit::Seconds,
        "Revoked at minus expires_at, for expirations."
    );
    describe_counter!(
        PROVIDER_CALLS,
        "Backend calls by provider, operation and outcome."
    );
    describe_histogram!(
        PROVIDER_CALL_DURATION,
        Unit::Seconds,
        "Backend call latency."
    );
    describe_gauge!(LEASES, "Leases in the store by secret and state.");
    describe_gauge!(
        IRREVOCABLE_LEASES,
        "Irrevocable leases in the store: an operator must act."
    );
    describe_counter!(
        DRIFT_REPAIRS,
        "Credentials copied to or removed from a drifted part of the backend."
    );
    describe_gauge!(
        MEMBERSHIP_QUEUE_DEPTH,
        "Group additions waiting for the next change, as the applier last saw them."
    );
    describe_histogram!(
        MEMBERSHIP_BATCH_SIZE,
        "Users per group change sent (ModifyUserGroup, UpdateACL)."
    );
    describe_counter!(STORE_ERRORS, "Failed store calls of the expiry worker.");
    describe_counter!(
        WORKER_LOOPS,
        "Expiry worker passes; flat means the worker is stuck."
    );
}

/// The outcome label of a call: `success`, `throttled`, `timeout`, `refused` (the backend or
/// the library said no, and asking again will not help) or `error`.
pub fn outcome(result: Result<(), &Error>) -> &'static str {
    match result {
        Ok(()) => "success",
        Err(e) => match e.kind() {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PermissionDenied
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidConfig
            | ErrorKind::AlreadyExists
            | ErrorKind::QuotaExceeded
            | ErrorKind::TtlExceedsMax
            | ErrorKind::NotRenewable
            | ErrorKind::RenewLimitReached
            | ErrorKind::LeaseExpired
            | ErrorKind::LeaseRevoked
            | ErrorKind::LeaseNotFound
            | ErrorKind::SecretNotFound
            | ErrorKind::Unsupported => "refused",
            _ => "error",
        },
    }
}

pub(crate) fn issue(secret: &Arc<str>, result: Result<(), &Error>, took: Duration) {
    counter!(ISSUES, "secret" => secret.clone(), "outcome" => outcome(result)).increment(1);
    histogram!(ISSUE_DURATION, "secret" => secret.clone()).record(took.as_secs_f64());
}

pub(crate) fn renew(secret: &Arc<str>, result: Result<(), &Error>) {
    counter!(RENEWALS, "secret" => secret.clone(), "outcome" => outcome(result)).increment(1);
}

pub(crate) fn revocation(
    secret: &Arc<str>,
    reason: &'static str,
    result: Result<(), &Error>,
    took: Duration,
) {
    counter!(REVOCATIONS, "secret" => secret.clone(), "reason" => reason, "outcome" => outcome(result))
        .increment(1);
    histogram!(REVOKE_DURATION, "secret" => secret.clone()).record(took.as_secs_f64());
}

pub(crate) fn revoke_retry(secret: &Arc<str>) {
    counter!(REVOKE_RETRIES, "secret" => secret.clone()).increment(1);
}

pub(crate) fn irrevocable(secret: &Arc<str>) {
    counter!(IRREVOCABLE, "secret" => secret.clone()).increment(1);
}

pub(crate) fn expiry_lag(secret: &Arc<str>, lag: chrono::Duration) {
    let secs = lag.num_milliseconds().max(0) as f64 / 1000.0;
    histogram!(EXPIRY_LAG, "secret" => secret.clone()).record(secs);
}

pub(crate) fn provider_call(
    provider: &Arc<str>,
    operation: &'static str,
    result: Result<(), &Error>,
    took: Duration,
) {
    counter!(PROVIDER_CALLS, "provider" => provider.clone(), "operation" => operation, "outcome" => outcome(result))
        .increment(1);
    histogram!(PROVIDER_CALL_DURATION, "provider" => provider.clone(), "operation" => operation)
        .record(took.as_secs_f64());
}

pub(crate) fn lease_gauge(secret: &Arc<str>, state: LeaseState, n: u64) {
    gauge!(LEASES, "secret" => secret.clone(), "state" => state.as_str()).set(n as f64);
    if state == LeaseState::Irrevocable {
        gauge!(IRREVOCABLE_LEASES, "secret" => secret.clone()).set(n as f64);
    }
}

pub(crate) fn drift(provider: &Arc<str>, report: &crate::provider::DriftReport) {
    for (action, n) in [
        ("copied", report.copied),
        ("removed", report.removed),
        ("failed", report.failed),
    ] {
        counter!(DRIFT_REPAIRS, "provider" => provider.clone(), "action" => action)
            .increment(n as u64);
    }
}

pub(crate) fn store_error(operation: &'static str) {
    counter!(STORE_ERRORS, "operation" => operation).increment(1);
}

pub(crate) fn worker_loop() {
    counter!(WORKER_LOOPS).increment(1);
}
