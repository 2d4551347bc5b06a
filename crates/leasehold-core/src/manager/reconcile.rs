//! Finding and removing orphaned credentials.

use std::collections::HashSet;

use super::LeaseManager;
use crate::audit::{AuditAction, AuditEvent};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::ManagedCredential;
use crate::store::{LeaseFilter, LeasePages};

/// The outcome of [`LeaseManager::reconcile`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// The installation whose orphans this report covers (the store's id).
    pub installation: String,
    /// Credentials the provider listed under the secret's prefix.
    pub found: usize,
    /// This installation's credentials that no lease points at.
    pub orphans: Vec<ManagedCredential>,
    /// Credentials with the prefix that belong to another installation (another store), or
    /// that carry no installation mark: never removed.
    pub foreign: Vec<ManagedCredential>,
    /// Orphans removed (only when applied).
    pub removed: Vec<ManagedCredential>,
    /// Orphans that could not be removed.
    pub errors: Vec<(ManagedCredential, Error)>,
    /// Whether the secret's username template drops the prefix (orphans may be missed).
    pub prefix_not_guaranteed: bool,
}

impl LeaseManager {
    /// Finds credentials of `secret`'s provider that carry this installation's mark and that no
    /// lease points at; removes them when `apply` is true (dry run otherwise).
    ///
    /// A credential belongs to this installation when its `leasehold:installation` tag names
    /// this store's [`installation_id`](Self::installation_id), or, on backends without tags
    /// (Redis), when its name starts with `<prefix><installation>-`. Anything else with the
    /// prefix is reported in [`ReconcileReport::foreign`] and never removed. A secret whose
    /// username template does not start with `{{randomUsername}}` drops the mark: `apply` is
    /// then refused with [`ErrorKind::InvalidConfig`].
    pub async fn reconcile(&self, secret: &str, apply: bool) -> Result<ReconcileReport> {
        let entry = self.inner.entry(secret).ok_or_else(|| {
            Error::new(
                ErrorKind::SecretNotFound,
                format!(
                    "no secret named {:?} is registered",
                    crate::settings::shorten(secret)
                ),
            )
        })?;
        let provider = entry.secret.provider().clone();
        let prefix = entry.secret.username_prefix();
        if prefix.is_empty() {
            return Err(Error::invalid_config(
                "username_prefix is empty: reconcile would treat every user as the library's",
            )
            .with_context("secret", secret));
        }
        let keeps_mark = entry.secret.username_template().keeps_prefix();
        if apply && !keeps_mark {
            return Err(Error::invalid_config(
                "the username template does not start with {{randomUsername}}, so this secret's users carry no installation mark: reconcile cannot tell them from other installations' users and will not remove any (run it without apply to list them)",
            )
            .with_context("secret", secret));
        }
        let installation = &*self.inner.installation;
        let mark = crate::secret::installation_prefix(prefix, installation);
        let found = provider.list_managed(prefix).await?;
        // Leases of every secret on the same provider kind count: two secrets may share a
        // backend and a prefix.
        let mut known: HashSet<String> = HashSet::new();
        let mut pages = LeasePages::new(&*self.inner.store, LeaseFilter::all(), 1000);
        while let Some(page) = pages.next_page().await? {
            known.extend(page.into_iter().map(|l| l.external.id));
        }
        let mut report = ReconcileReport {
            installation: installation.to_string(),
            found: found.len(),
            prefix_not_guaranteed: !keeps_mark,
            ..ReconcileReport::default()
        };
        if report.prefix_not_guaranteed {
            tracing::warn!(
                secret,
                "username template drops the prefix: reconcile may miss this secret's users"
            );
        }
        for cred in found {
            if known.contains(&cred.external.id) {
                continue;
            }
            let ours = match &cred.installation {
                Some(tagged) => tagged.eq_ignore_ascii_case(installation),
                None => cred
                    .external
                    .id
                    .get(..mark.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(&mark)),
            };
            if !ours {
                report.foreign.push(cred);
                continue;
            }
            report.orphans.push(cred.clone());
            if apply {
                match provider.revoke(&cred.external).await {
                    Ok(()) => {
                        let mut event = AuditEvent::new(AuditAction::ReconcileRemove, secret);
                        event.principal = Some(cred.external.id.clone());
                        self.inner.emit(event);
                        report.removed.push(cred);
                    }
                    Err(e) => report.errors.push((cred, e)),
                }
            }
        }
        Ok(report)
    }
}
