//! [`MemoryDbUsers`]: MemoryDB's user calls, `DescribeUsers` and `UpdateUser`. The provider,
//! its ACL queue, the static-role target and the IAM token provider's check all describe users
//! here.

use aws_config::SdkConfig;
use aws_sdk_memorydb::types::{AuthenticationMode, AuthenticationType, InputAuthenticationType};
use aws_sdk_memorydb::Client;
use leasehold_aws::{found, map_sdk_error, CacheService, DescribedUser, UserService};
use leasehold_core::{async_trait, Result};
use secrecy::{ExposeSecret, SecretString};

/// MemoryDB's user calls, for a [`MemoryDbUserTarget`](crate::MemoryDbUserTarget) and the
/// crate's own lookups.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryDbUsers;

#[async_trait]
impl UserService for MemoryDbUsers {
    type Client = Client;
    const SERVICE: CacheService = CacheService::MemoryDb;

    fn client(sdk: &SdkConfig) -> Client {
        Client::new(sdk)
    }

    /// `DescribeUsers` for the user name.
    async fn describe(client: &Client, user_name: &str) -> Result<Option<DescribedUser>> {
        let sent = client.describe_users().user_name(user_name).send().await;
        let out = found("DescribeUsers", "UserNotFoundFault", sent)
            .map_err(|e| e.with_context("user_name", user_name))?;
        let users = out.as_ref().map_or(&[][..], |out| out.users());
        Ok(users.iter().find(|u| u.name() == Some(user_name)).map(|u| {
            let auth = u.authentication().and_then(|a| a.r#type());
            let auth = auth.map(AuthenticationType::as_str);
            DescribedUser::new(u.name(), u.arn(), u.status(), auth)
        }))
    }

    async fn set_passwords(
        client: &Client,
        user_name: &str,
        passwords: &[&SecretString],
    ) -> Result<()> {
        let mut mode = AuthenticationMode::builder().r#type(InputAuthenticationType::Password);
        for p in passwords {
            mode = mode.passwords(p.expose_secret());
        }
        client
            .update_user()
            .user_name(user_name)
            .authentication_mode(mode.build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_error("UpdateUser", e).with_context("user_name", user_name))
    }
}
