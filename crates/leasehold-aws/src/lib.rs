#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth_probe;
mod auth_token;
pub mod config;
mod iam_token;
pub mod membership;
mod service;
mod static_role;
mod static_user;
pub mod user_config;

pub use auth_probe::{AuthOutcome, AuthProbe, DEFAULT_PROBE_TIMEOUT};
pub use auth_token::{
    signing_parts, AuthToken, AuthTokenBuilder, AuthTokenClock, AUTH_TOKEN_MAX_EXPIRY,
};
pub use config::{AwsConfig, AwsCredentials};
pub use iam_token::{
    IamTokenConfig, IamTokenProvider, IamTokenTarget, ServiceClient, ATTR_TOKEN_EXPIRES_AT,
};
pub use service::CacheService;
pub use static_role::{check_password_policy, check_rotatable, SecretsManagerPublisher, UserAuth};
pub use static_user::{DescribedUser, StaticUserConfig, StaticUserTarget, UserService};

use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use leasehold_core::backoff::{Backoff, Jitter};
use leasehold_core::{Error, ErrorKind, Result};

use leasehold_core::settings::shorten;

/// Checks that `arn` looks like `arn:<partition>:<service>:<region>:<account>:<resource>`, and
/// that the service matches when given. `field` names the setting in the error.
pub fn validate_arn(field: &str, arn: &str, service: Option<&str>) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_config(format!(
            "{field}: {:?} is not a valid ARN ({why})",
            shorten(arn)
        )))
    };
    if arn.len() > 2048 {
        return bad("longer than 2048 characters");
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return bad("expected arn:partition:service:region:account:resource");
    }
    if !matches!(
        parts[1],
        "aws" | "aws-cn" | "aws-us-gov" | "aws-iso" | "aws-iso-b"
    ) {
        return bad("unknown partition");
    }
    if let Some(svc) = service {
        if parts[2] != svc {
            return bad(&format!("service must be {svc}"));
        }
    }
    let account = parts[4];
    let account_ok = account.is_empty()
        || account == "aws"
        || (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()));
    if !account_ok {
        return bad("account must be 12 digits");
    }
    if parts[5].is_empty()
        || parts[5]
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("empty or malformed resource");
    }
    Ok(())
}

/// The AWS error code of an SDK error (`Throttling`, `UserNotFound`, ...), if it has one.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Maps an error code and HTTP status to an [`ErrorKind`] and a temporary flag.
pub fn classify(code: Option<&str>, status: Option<u16>) -> (ErrorKind, bool) {
    let c = code.unwrap_or("");
    let lc = c.to_ascii_lowercase();
    if lc.contains("throttl")
        || matches!(
            c,
            "RequestLimitExceeded" | "TooManyRequestsException" | "SlowDown"
        )
        || status == Some(429)
    {
        return (ErrorKind::Throttled, true);
    }
    if lc.contains("accessdenied")
        || lc.contains("unauthorized")
        || matches!(
            c,
            "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
        )
        || status == Some(403)
    {
        return (ErrorKind::PermissionDenied, false);
    }
    if lc.starts_with("invalid") && lc.contains("state") {
        // InvalidUserState, InvalidUserGroupState, InvalidACLStateFault, InvalidClusterState:
        // the object is being modified; it passes.
        return (ErrorKind::Conflict, true);
    }
    if lc.contains("notfound") || c == "NoSuchEntity" || lc.contains("nosuch") {
        return (ErrorKind::NotFound, false);
    }
    if lc.contains("alreadyexists") || lc.contains("duplicate") || c == "EntityAlreadyExists" {
        return (ErrorKind::AlreadyExists, false);
    }
    if lc.contains("quotaexceeded") || lc.contains("limitexceeded") {
        return (ErrorKind::QuotaExceeded, false);
    }
    if c == "ConcurrentModification" || c == "ConcurrentModificationException" {
        return (ErrorKind::Conflict, true);
    }
    if lc.contains("invalidparameter")
        || lc.contains("validation")
        || lc.contains("malformed")
        || c == "InvalidInput"
    {
        return (ErrorKind::InvalidConfig, false);
    }
    if matches!(
        c,
        "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalFailure"
            | "InternalError"
            | "InternalServerError"
            | "ServiceFailure"
            | "RequestTimeout"
    ) || status.is_some_and(|s| s >= 500)
    {
        return (ErrorKind::ProviderUnavailable, true);
    }
    (ErrorKind::Unexpected, false)
}

/// Maps an SDK error into a [`leasehold_core::Error`]: throttling and 5xx are temporary, an
/// object being modified is a temporary `Conflict`, `*NotFound` is `NotFound`, and transport
/// failures are temporary `ProviderUnavailable`. `operation` (like `ModifyUserGroup`) is put
/// in the context.
pub fn map_sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, temporary, msg) = match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code();
            let status = se.raw().status().as_u16();
            let (kind, temp) = classify(code, Some(status));
            let msg = format!(
                "{operation} failed: {} ({})",
                se.err().message().unwrap_or("no message"),
                code.unwrap_or("no error code"),
            );
            (kind, temp, msg)
        }
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, true, format!("{operation} timed out")),
        SdkError::DispatchFailure(df) => (
            ErrorKind::ProviderUnavailable,
            true,
            format!(
                "{operation} could not reach AWS{}",
                if df.is_timeout() { " (timeout)" } else { "" }
            ),
        ),
        SdkError::ResponseError(_) => (
            ErrorKind::ProviderUnavailable,
            true,
            format!("{operation} got an unreadable response"),
        ),
        SdkError::ConstructionFailure(_) => (
            ErrorKind::InvalidConfig,
            false,
            format!("{operation} request could not be built"),
        ),
        _ => (ErrorKind::Unexpected, false, format!("{operation} failed")),
    };
    let e = Error::new(kind, msg)
        .with_context("operation", operation)
        .set_source(err);
    if temporary {
        e.temporary()
    } else {
        e.permanent()
    }
}

/// The output of a describe call, `Ok(None)` when the service answered with `not_found` (its
/// error code for a missing object, like `UserNotFound`), any other error mapped by
/// [`map_sdk_error`].
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: aws_sdk_secretsmanager::Client) -> leasehold_core::Result<()> {
/// let sent = client.describe_secret().secret_id("orders/app").send().await;
/// let out = leasehold_aws::found("DescribeSecret", "ResourceNotFoundException", sent)?;
/// println!("exists: {}", out.is_some());
/// # Ok(()) }
/// ```
pub fn found<T, E>(
    operation: &'static str,
    not_found: &str,
    sent: std::result::Result<T, SdkError<E, HttpResponse>>,
) -> Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sent {
        Ok(out) => Ok(Some(out)),
        Err(e) if error_code(&e) == Some(not_found) => Ok(None),
        Err(e) => Err(map_sdk_error(operation, e)),
    }
}

/// Checks that credentials work: `sts:GetCallerIdentity`. Returns the caller's ARN.
pub async fn caller_identity(sdk: &SdkConfig) -> Result<String> {
    let out = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| map_sdk_error("GetCallerIdentity", e))?;
    Ok(out.arn().unwrap_or_default().to_string())
}

/// Tag keys every AWS provider puts on the users it creates, so orphans can be found.
pub mod tags {
    /// The lease id.
    pub const LEASE_ID: &str = "leasehold:lease-id";
    /// The secret name.
    pub const SECRET: &str = "leasehold:secret";
    /// The lease's expiry (RFC 3339) at creation.
    pub const EXPIRES_AT: &str = "leasehold:expires-at";
    /// Marks a resource as created by leasehold.
    pub const MANAGED_BY: &str = "leasehold:managed-by";
    /// The installation (lease store) the resource belongs to; reconcile removes only its own.
    pub const INSTALLATION: &str = leasehold_core::INSTALLATION_TAG;
}

/// Polls `check` until it returns `Ok(true)`, with jittered exponential backoff between
/// `initial` and `max_delay` (doubling, [`Jitter::Equal`]), for at most `budget`. Returns
/// whether the check passed; a permanent or [persistent](Error::persist) error ends the wait
/// early with that error, temporary errors are retried.
pub async fn wait_until<F, Fut>(
    budget: Duration,
    initial: Duration,
    max_delay: Duration,
    mut check: F,
) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut delays = Backoff::new(initial, max_delay.max(initial))
        .jitter(Jitter::Equal)
        .iter();
    loop {
        match check().await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if e.is_temporary() => {
                tracing::debug!(error = %e, "readiness check failed, retrying");
            }
            Err(e) => return Err(e),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(delays.next_delay().min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn classifies_codes() {
        assert_eq!(
            classify(Some("Throttling"), Some(400)),
            (ErrorKind::Throttled, true)
        );
        assert_eq!(
            classify(Some("UserNotFound"), Some(404)),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(Some("NoSuchEntity"), Some(404)),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(Some("InvalidUserGroupState"), Some(400)),
            (ErrorKind::Conflict, true)
        );
        assert_eq!(
            classify(Some("InvalidACLStateFault"), Some(400)),
            (ErrorKind::Conflict, true)
        );
        assert_eq!(
            classify(Some("AccessDenied"), Some(403)),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(Some("UserAlreadyExists"), Some(400)),
            (ErrorKind::AlreadyExists, false)
        );
        assert_eq!(
            classify(Some("UserQuotaExceeded"), Some(400)),
            (ErrorKind::QuotaExceeded, false)
        );
        assert_eq!(
            classify(None, Some(503)),
            (ErrorKind::ProviderUnavailable, true)
        );
        assert_eq!(
            classify(Some("InvalidParameterValue"), Some(400)),
            (ErrorKind::InvalidConfig, false)
        );
    }

    #[test]
    fn validates_offline() {
        assert!(AwsConfig::new().region("us-east-1").validate().is_ok());
        assert!(AwsConfig::new().region("US East").validate().is_err());
        assert!(AwsConfig::new().endpoint_url("ftp://x").validate().is_err());
        let c = AwsCredentials::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/x".into(),
            external_id: Some("ext".into()),
            session_name: None,
            source: Box::new(AwsCredentials::DefaultChain),
        };
        assert!(AwsConfig::new().credentials(c).validate().is_ok());
        assert!(validate_arn("role_arn", "arn:aws:iam::12:role/x", Some("iam")).is_err());
        assert!(validate_arn("role_arn", "nope", None).is_err());
        assert!(validate_arn(
            "policy_arns",
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            Some("iam")
        )
        .is_ok());
    }

    #[test]
    fn debug_redacts_keys() {
        let c = AwsCredentials::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG"),
            session_token: Some(SecretString::from("FwoGZXIvYXdzEXAMPLE")),
        };
        let s = format!("{:?}", AwsConfig::new().credentials(c));
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalr") && !s.contains("FwoG"));
    }

    #[tokio::test]
    async fn wait_until_gives_up_after_budget() {
        let mut n = 0;
        let ok = wait_until(
            Duration::from_millis(50),
            Duration::from_millis(5),
            Duration::from_millis(10),
            || {
                n += 1;
                async { Ok(false) }
            },
        )
        .await
        .unwrap();
        assert!(!ok);
        assert!(n >= 2);
    }

    #[tokio::test]
    async fn wait_until_retries_temporary_errors_but_not_persistent_ones() {
        // A temporary error is retried until the check passes.
        let mut n = 0;
        let ok = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            Duration::from_millis(2),
            || {
                n += 1;
                let r = if n < 3 {
                    Err(Error::new(ErrorKind::Throttled, "slow down"))
                } else {
                    Ok(true)
                };
                async move { r }
            },
        )
        .await
        .unwrap();
        assert!(ok);
        assert_eq!(n, 3);
        // A persistent one (the check's own retries are exhausted) ends the wait at once.
        let mut n = 0;
        let err = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            Duration::from_millis(2),
            || {
                n += 1;
                async { Err::<bool, _>(Error::new(ErrorKind::Throttled, "slow down").persist()) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(n, 1);
        assert!(err.is_persistent());
    }

    #[test]
    fn copied_errors_keep_their_retry_status() {
        use crate::membership::copy_error;
        let t = Error::new(ErrorKind::Throttled, "slow down");
        assert!(copy_error(&t).is_temporary());
        assert!(copy_error(&t.persist()).is_persistent());
        let p = Error::new(ErrorKind::PermissionDenied, "no");
        let c = copy_error(&p);
        assert!(!c.is_temporary() && !c.is_persistent());
    }
}
