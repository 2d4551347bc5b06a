//! The user group as a [`GroupBackend`]: concurrent additions (of this process, or of every
//! instance sharing the lease store) are batched into few `ModifyUserGroup` calls by
//! [`leasehold_aws::membership`].

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_elasticache::types::UserGroup as SdkUserGroup;
use aws_sdk_elasticache::Client;
use leasehold_aws::membership::{GroupBackend, GroupSpec, GroupView, Refusal};
use leasehold_aws::{error_code, map_sdk_error, UserService};
use leasehold_core::{Error, ErrorKind, Result};

use crate::config::MAX_USERS_PER_GROUP;
use crate::users::ElastiCacheUsers;

/// One ElastiCache user group, by id.
#[derive(Debug)]
pub(crate) struct UserGroup {
    client: Client,
    group_id: String,
    spec: GroupSpec,
}

fn lower(ids: &[String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_ascii_lowercase()).collect()
}

impl UserGroup {
    pub(crate) fn new(client: Client, group_id: &str) -> Self {
        let group_id = group_id.to_ascii_lowercase();
        let region = client.config().region().map(|r| r.to_string());
        let names = ("user group", "user_group", "ModifyUserGroup");
        let spec = GroupSpec::new(
            names,
            "elasticache",
            region.as_deref(),
            &group_id,
            MAX_USERS_PER_GROUP,
        );
        UserGroup {
            client,
            group_id,
            spec,
        }
    }

    /// The group as ElastiCache describes it now.
    pub(crate) async fn describe_group(&self) -> Result<SdkUserGroup> {
        let out = self
            .client
            .describe_user_groups()
            .user_group_id(&self.group_id)
            .send()
            .await
            .map_err(|e| {
                map_sdk_error("DescribeUserGroups", e).with_context("user_group", &self.group_id)
            })?;
        let found = out.user_groups().iter().find(|g| {
            g.user_group_id()
                .is_some_and(|id| id.eq_ignore_ascii_case(&self.group_id))
        });
        found.cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("user group {:?} not found", self.group_id),
            )
        })
    }
}

#[async_trait]
impl GroupBackend for UserGroup {
    fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    fn normalize(&self, member: &str) -> String {
        member.to_ascii_lowercase()
    }

    async fn describe(&self) -> Result<GroupView> {
        let g = self.describe_group().await?;
        let pending = g.pending_changes();
        Ok(GroupView {
            active: g.status() == Some("active"),
            listed: lower(g.user_ids()),
            adding: pending
                .map(|p| lower(p.user_ids_to_add()))
                .unwrap_or_default(),
            removing: pending
                .map(|p| lower(p.user_ids_to_remove()))
                .unwrap_or_default(),
        })
    }

    async fn add(&self, members: &[String]) -> std::result::Result<(), (Refusal, Error)> {
        let sent = self
            .client
            .modify_user_group()
            .user_group_id(&self.group_id)
            .set_user_ids_to_add(Some(members.to_vec()))
            .send()
            .await;
        sent.map(|_| ()).map_err(|err| {
            let refusal = match error_code(&err) {
                Some("InvalidUserGroupState") => Refusal::Busy,
                Some("UserNotFound") => Refusal::MemberMissing,
                Some("InvalidParameterValue") => Refusal::OverLimit,
                Some("InvalidUserState") => Refusal::MemberBusy,
                _ => Refusal::Other,
            };
            let e = map_sdk_error("ModifyUserGroup", err);
            (refusal, e.with_context("user_group", &self.group_id))
        })
    }

    async fn member_exists(&self, member: &str) -> Result<bool> {
        Ok(ElastiCacheUsers::describe(&self.client, member)
            .await?
            .is_some())
    }
}
