//! Confirming that a new key works: STS `GetCallerIdentity` signed with it.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use leasehold_core::Readiness;
use secrecy::{ExposeSecret, SecretString};

/// First delay between readiness checks; doubles (jittered) up to [`READY_MAX_DELAY`].
pub const READY_INITIAL_DELAY: Duration = Duration::from_millis(250);
/// Longest delay between readiness checks.
pub const READY_MAX_DELAY: Duration = Duration::from_secs(3);

/// Polls `GetCallerIdentity` signed with the new credentials until the caller it names is
/// `expected` (an ARN), for at most `budget`.
///
/// Every failure counts as "not yet": a fresh IAM key is refused with `InvalidClientTokenId`
/// until it has propagated, which is exactly what is being waited for. The name is compared
/// too, because some STS implementations (moto) answer an unknown key with a default identity.
pub async fn confirm_identity(
    base: &aws_sdk_sts::Client,
    access_key_id: &str,
    secret_access_key: &SecretString,
    session_token: Option<&SecretString>,
    expected: &str,
    budget: Duration,
) -> Readiness {
    let creds = aws_credential_types::Credentials::new(
        access_key_id,
        secret_access_key.expose_secret(),
        session_token.map(|t| t.expose_secret().to_string()),
        None,
        "leasehold-readiness",
    );
    // Retries are this loop's job; the SDK's would multiply the bound.
    let client = aws_sdk_sts::Client::from_conf(
        base.config()
            .to_builder()
            .credentials_provider(creds)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let checked = leasehold_aws::wait_until(budget, READY_INITIAL_DELAY, READY_MAX_DELAY, || {
        let client = client.clone();
        async move {
            match client.get_caller_identity().send().await {
                Ok(out) => {
                    let arn = out.arn().unwrap_or_default();
                    if arn == expected {
                        Ok(true)
                    } else {
                        tracing::debug!(caller = arn, expected, "new key not live yet");
                        Ok(false)
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        code = leasehold_aws::error_code(&e).unwrap_or("none"),
                        "new key not accepted yet"
                    );
                    Ok(false)
                }
            }
        }
    })
    .await;
    match checked {
        Ok(true) => Readiness::Confirmed,
        _ => Readiness::TimedOut,
    }
}
