//! [`SecretsManagerPublisher`]: a static role's password in AWS Secrets Manager, with the
//! staging labels and JSON format of AWS's own ElastiCache user rotation.

use std::fmt;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use leasehold_core::static_role::{PublishedVersion, Stage, StaticCredential, StaticRolePublisher};
use leasehold_core::{Error, ErrorKind, Result};

use crate::{error_code, map_sdk_error};

/// Publishes a static role's password to one Secrets Manager secret.
///
/// Versions carry `AWSPENDING` while a rotation runs, `AWSCURRENT` once it is promoted and
/// `AWSPREVIOUS` for the one before, exactly as a Secrets Manager rotation function leaves
/// them; the value is `{"username": ..., "password": ..., "user_arn": ...}` as AWS's
/// ElastiCache user rotation stores it, so readers written for that keep working. A missing
/// secret is created (without a value) on the first rotation. Seed an existing secret with the
/// user's present password to keep it valid through the first rotation's grace.
///
/// IAM: `secretsmanager:GetSecretValue`, `DescribeSecret`, `PutSecretValue`,
/// `UpdateSecretVersionStage` on the secret, and `CreateSecret` unless it exists.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::{AwsConfig, SecretsManagerPublisher};
/// let sdk = AwsConfig::new().region("eu-west-1").load().await?;
/// let publisher = SecretsManagerPublisher::new(&sdk, "prod/orders-cache/app-writer");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SecretsManagerPublisher {
    client: Client,
    secret_id: String,
}

impl fmt::Debug for SecretsManagerPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerPublisher")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

fn not_found(code: Option<&str>) -> bool {
    code == Some("ResourceNotFoundException")
}

impl SecretsManagerPublisher {
    /// A publisher for `secret_id` (a name or an ARN).
    pub fn new(sdk: &SdkConfig, secret_id: impl Into<String>) -> Self {
        Self::from_client(Client::new(sdk), secret_id)
    }

    /// Uses a ready client.
    pub fn from_client(client: Client, secret_id: impl Into<String>) -> Self {
        SecretsManagerPublisher {
            client,
            secret_id: secret_id.into(),
        }
    }

    /// The version carrying `AWSCURRENT`, from `DescribeSecret`.
    async fn current_version_id(&self) -> Result<Option<String>> {
        let out = self
            .client
            .describe_secret()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                map_sdk_error("DescribeSecret", e).with_context("secret_id", &self.secret_id)
            })?;
        Ok(out.version_ids_to_stages().and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == Stage::Current.as_str()))
                .map(|(id, _)| id.clone())
        }))
    }
}

#[async_trait]
impl StaticRolePublisher for SecretsManagerPublisher {
    fn location(&self) -> String {
        format!("secretsmanager:{}", self.secret_id)
    }

    async fn validate(&self) -> Result<()> {
        match self
            .client
            .describe_secret()
            .secret_id(&self.secret_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(error_code(&e)) => Ok(()), // created on the first rotation
            Err(e) => {
                Err(map_sdk_error("DescribeSecret", e).with_context("secret_id", &self.secret_id))
            }
        }
    }

    async fn get(&self, stage: Stage) -> Result<Option<PublishedVersion>> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage.as_str())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if not_found(error_code(&e)) => return Ok(None),
            Err(e) => {
                return Err(
                    map_sdk_error("GetSecretValue", e).with_context("secret_id", &self.secret_id)
                )
            }
        };
        let doc = out.secret_string().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "secret {:?} has a binary value; a static role needs a JSON string",
                    self.secret_id
                ),
            )
        })?;
        let credential = StaticCredential::from_json(doc)
            .map_err(|e| e.with_context("secret_id", &self.secret_id))?;
        let created_at = out.created_date().and_then(|d| {
            leasehold_core::chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos())
        });
        Ok(Some(PublishedVersion::new(
            out.version_id().unwrap_or_default(),
            credential,
            created_at,
        )))
    }

    async fn put_pending(&self, version_id: &str, credential: &StaticCredential) -> Result<()> {
        let doc = credential.to_json();
        for attempt in 0..2 {
            match self
                .client
                .put_secret_value()
                .secret_id(&self.secret_id)
                .client_request_token(version_id)
                .secret_string(&doc)
                .version_stages(Stage::Pending.as_str())
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && not_found(error_code(&e)) => {
                    match self
                        .client
                        .create_secret()
                        .name(&self.secret_id)
                        .description("leasehold static role (rotated; do not edit by hand)")
                        .send()
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if error_code(&e) == Some("ResourceExistsException") => {}
                        Err(e) => {
                            return Err(map_sdk_error("CreateSecret", e)
                                .with_context("secret_id", &self.secret_id))
                        }
                    }
                }
                Err(e) => {
                    return Err(map_sdk_error("PutSecretValue", e)
                        .with_context("secret_id", &self.secret_id))
                }
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("secret {:?} could not be created", self.secret_id),
        ))
    }

    async fn promote(&self, version_id: &str) -> Result<()> {
        let current = self.current_version_id().await?;
        if current.as_deref() != Some(version_id) {
            let mut call = self
                .client
                .update_secret_version_stage()
                .secret_id(&self.secret_id)
                .version_stage(Stage::Current.as_str())
                .move_to_version_id(version_id);
            if let Some(c) = &current {
                call = call.remove_from_version_id(c);
            }
            // Secrets Manager labels the version that loses AWSCURRENT AWSPREVIOUS itself.
            call.send().await.map_err(|e| {
                map_sdk_error("UpdateSecretVersionStage", e)
                    .with_context("secret_id", &self.secret_id)
            })?;
        }
        match self
            .client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(Stage::Pending.as_str())
            .remove_from_version_id(version_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already removed (a repeated promote).
            Err(e) if error_code(&e) == Some("InvalidParameterException") => Ok(()),
            Err(e) => Err(map_sdk_error("UpdateSecretVersionStage", e)
                .with_context("secret_id", &self.secret_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_secret_only() {
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let p = SecretsManagerPublisher::new(&sdk, "prod/app");
        assert!(format!("{p:?}").contains("prod/app"));
        assert_eq!(p.location(), "secretsmanager:prod/app");
    }
}

/// How an existing ElastiCache or MemoryDB user logs in, as far as a static role cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAuth {
    /// Passwords: the user can be rotated.
    Password,
    /// IAM auth tokens: no password to rotate.
    Iam,
    /// No password at all: rotating would change how every client logs in.
    NoPassword,
    /// A type this version does not know.
    Unknown,
}

/// Refuses a static role on a user that does not log in with passwords; `field` names the
/// config key (`user_id`, `user_name`) in the error.
pub fn check_rotatable(field: &str, user: &str, auth: UserAuth) -> Result<()> {
    match auth {
        UserAuth::Password => Ok(()),
        UserAuth::Iam => Err(Error::invalid_config(format!(
            "{field}: {user:?} authenticates with IAM; it has no password to rotate"
        ))),
        UserAuth::NoPassword => Err(Error::invalid_config(format!(
            "{field}: {user:?} needs no password; rotating would change how every client logs in, so it is left alone"
        ))),
        UserAuth::Unknown => Err(Error::invalid_config(format!(
            "{field}: {user:?} has an unknown authentication type"
        ))),
    }
}

/// Checks a static role's password policy against the 16 to 128 characters ElastiCache and
/// MemoryDB accept; `service` names the service in the error.
pub fn check_password_policy(
    service: &str,
    p: leasehold_core::PasswordPolicy,
) -> Result<leasehold_core::PasswordPolicy> {
    p.validate()?;
    if !(16..=128).contains(&p.length()) {
        return Err(Error::invalid_config(format!(
            "password_policy: {service} passwords have 16 to 128 characters"
        )));
    }
    Ok(p)
}
