//! The ACL as a [`GroupBackend`]: concurrent issues (of this process, or of every instance
//! sharing the lease store) are batched into few `UpdateACL` calls by
//! [`leasehold_aws::membership`], which also refuses an issue that would take the ACL past
//! [`MAX_USERS_PER_ACL`] before `CreateUser`.

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_memorydb::types::Acl;
use aws_sdk_memorydb::Client;
use leasehold_aws::membership::{GroupBackend, GroupSpec, GroupView, Refusal};
use leasehold_aws::{error_code, map_sdk_error, UserService};
use leasehold_core::{Error, ErrorKind, Result};

use crate::config::MAX_USERS_PER_ACL;
use crate::users::MemoryDbUsers;

/// One MemoryDB ACL, by name.
#[derive(Debug)]
pub(crate) struct AclGroup {
    client: Client,
    acl: String,
    spec: GroupSpec,
}

impl AclGroup {
    pub(crate) fn new(client: Client, acl: String) -> Self {
        let region = client.config().region().map(|r| r.to_string());
        let spec = GroupSpec::new(
            ("ACL", "acl", "UpdateACL"),
            "memorydb",
            region.as_deref(),
            &acl,
            MAX_USERS_PER_ACL,
        );
        AclGroup { client, acl, spec }
    }

    /// The ACL as MemoryDB describes it now.
    pub(crate) async fn describe_acl(&self) -> Result<Acl> {
        let out = self.client.describe_acls().acl_name(&self.acl).send().await;
        let out =
            out.map_err(|e| map_sdk_error("DescribeACLs", e).with_context("acl", &self.acl))?;
        let not_found = || {
            Error::new(ErrorKind::NotFound, format!("ACL {:?} not found", self.acl))
                .with_context("acl", &self.acl)
        };
        let mut acls = out.acls().iter();
        acls.find(|a| a.name() == Some(self.acl.as_str()))
            .cloned()
            .ok_or_else(not_found)
    }
}

#[async_trait]
impl GroupBackend for AclGroup {
    fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    async fn describe(&self) -> Result<GroupView> {
        let acl = self.describe_acl().await?;
        let set = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
        let changes = acl.pending_changes();
        Ok(GroupView {
            active: acl.status() == Some("active"),
            listed: set(acl.user_names()),
            adding: changes.map_or_else(HashSet::new, |p| set(p.user_names_to_add())),
            removing: changes.map_or_else(HashSet::new, |p| set(p.user_names_to_remove())),
        })
    }

    async fn add(&self, members: &[String]) -> std::result::Result<(), (Refusal, Error)> {
        let mut names = members.to_vec();
        names.sort();
        names.dedup();
        let call = self.client.update_acl().acl_name(&self.acl);
        match call.set_user_names_to_add(Some(names)).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let refusal = match error_code(&err) {
                    Some("InvalidACLStateFault") => Refusal::Busy,
                    Some("UserNotFoundFault") => Refusal::MemberMissing,
                    Some("InvalidParameterValueException") => Refusal::OverLimit,
                    Some("InvalidUserStateFault") => Refusal::MemberBusy,
                    _ => Refusal::Other,
                };
                let e = map_sdk_error("UpdateACL", err).with_context("acl", &self.acl);
                Err((refusal, e))
            }
        }
    }

    async fn member_exists(&self, member: &str) -> Result<bool> {
        Ok(MemoryDbUsers::describe(&self.client, member)
            .await?
            .is_some())
    }
}
