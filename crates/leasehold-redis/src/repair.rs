//! Drift repair: leased users copied to nodes that lack them (by password hash), and this
//! installation's users that no lease names removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use leasehold_core::{
    Error, ExternalRef, LeaseFilter, LeaseManager, LeasePages, LeaseState, Result,
};
use redis::Value;

use crate::provider::{Member, RedisAclProvider, KIND};
use crate::topology::{pairs, text};

/// One user on one node that a repair acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairAction {
    /// The ACL user name.
    pub user: String,
    /// The node, `host:port`.
    pub node: String,
}

/// What one [`RedisAclProvider::repair`] pass did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RepairReport {
    /// The nodes compared.
    pub nodes: Vec<String>,
    /// Nodes that could not be read this pass (skipped).
    pub unreachable: Vec<String>,
    /// Leased users copied to a node that lacked them.
    pub copied: Vec<RepairAction>,
    /// Users of this installation that no lease names, deleted from a node.
    pub removed: Vec<RepairAction>,
    /// Users of this installation that no lease named for the first time: removed by the next
    /// pass if still unleased then (a lease written just after the list was read is not
    /// mistaken for none).
    pub held_back: Vec<String>,
    /// What failed; the next pass tries again.
    pub errors: Vec<(RepairAction, Error)>,
}

/// Unleased users seen by the previous pass.
#[derive(Default)]
pub(crate) struct RepairState {
    pass: u64,
    unleased: HashMap<String, u64>,
}

/// The rules that recreate a user as `ACL GETUSER` describes it: `reset`, its flags, its
/// password **hashes** (`#<sha256>`), keys, channels, commands and selectors. No password is
/// needed, and none is stored anywhere.
pub(crate) fn rules_from_getuser(reply: &Value) -> Option<Vec<String>> {
    let fields = pairs(reply);
    if fields.is_empty() {
        return None;
    }
    let mut args = vec!["reset".to_string()];
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(items) | Value::Set(items) => items.iter().filter_map(text).collect(),
            other => text(other)
                .map(|t| t.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        }
    };
    // Keys and channels are a string of rules on Redis 7 / Valkey, a list of patterns on 6.x.
    let patterns = |v: &Value, sigil: &str| -> Vec<String> {
        match v {
            Value::Array(items) => items
                .iter()
                .filter_map(text)
                .map(|p| format!("{sigil}{p}"))
                .collect(),
            other => list(other),
        }
    };
    let section = |fields: &[(String, &Value)], args: &mut Vec<String>| {
        for (k, v) in fields {
            match k.as_str() {
                "keys" => args.extend(patterns(v, "~")),
                "channels" => args.extend(patterns(v, "&")),
                "commands" => args.extend(list(v)),
                _ => {}
            }
        }
    };
    for (k, v) in &fields {
        match k.as_str() {
            "flags" => args.extend(list(v).into_iter().filter(|f| {
                matches!(
                    f.as_str(),
                    "on" | "off" | "nopass" | "skip-sanitize-payload" | "sanitize-payload"
                )
            })),
            "passwords" => args.extend(list(v).into_iter().map(|h| format!("#{h}"))),
            _ => {}
        }
    }
    section(&fields, &mut args);
    for (k, v) in &fields {
        if k == "selectors" {
            if let Value::Array(selectors) = v {
                for sel in selectors {
                    let mut inner = Vec::new();
                    section(&pairs(sel), &mut inner);
                    args.push(format!("({})", inner.join(" ")));
                }
            }
        }
    }
    Some(args)
}

impl RedisAclProvider {
    /// One repair pass for the leases of one installation:
    ///
    /// - a user that `leased` names and that exists on some nodes but not others is copied
    ///   to the others from `ACL GETUSER` (its rules and password hashes), so it works there
    ///   with its original password;
    /// - a user whose name starts with `mark` (this installation's, `<prefix><installation>-`)
    ///   that no entry of `leased` names is deleted from every node that has it — on the
    ///   second pass in a row that finds it unleased, so that a lease written while this pass
    ///   ran is not mistaken for none.
    ///
    /// `leased` must name every lease of the store (any state): read it fresh for each pass.
    /// Users of other installations, and names this provider is creating or revoked lately,
    /// are never touched. Each copy and removal is an audit event (`leasehold::audit`, action
    /// `redis_repair_copy` / `redis_repair_remove`) and counts in
    /// `leasehold_redis_repairs_total{action="copied"|"removed"}`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(p: leasehold_redis::RedisAclProvider, m: leasehold_core::LeaseManager) -> leasehold_core::Result<()> {
    /// use leasehold_core::LeaseFilter;
    /// let leased: Vec<_> = m.list(&LeaseFilter::all()).await?.into_iter().map(|l| l.external).collect();
    /// let mark = format!("lh-{}-", m.installation_id());
    /// let report = p.repair(&leased, &mark).await?;
    /// println!("copied {} removed {}", report.copied.len(), report.removed.len());
    /// # Ok(()) }
    /// ```
    pub async fn repair(&self, leased: &[ExternalRef], mark: &str) -> Result<RepairReport> {
        let leased: Vec<String> = leased.iter().map(|e| e.id.clone()).collect();
        self.repair_with(mark, || async move { Ok(leased) }).await
    }

    /// A repair pass that reads the lease list after the nodes (`leased` is called once the
    /// nodes' users are known): a user created meanwhile has its lease written ahead, so it
    /// is in the list.
    pub(crate) async fn repair_with<F, Fut>(&self, mark: &str, leased: F) -> Result<RepairReport>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<String>>>,
    {
        if mark.is_empty() {
            return Err(Error::invalid_config(
                "repair: the installation mark is empty; it would treat every user as leased",
            ));
        }
        let mut state = self.repair_state.lock().await;
        state.pass += 1;
        let pass = state.pass;
        let topo = self.topology().await?;
        let mut report = RepairReport {
            nodes: topo.labels(),
            ..RepairReport::default()
        };

        let listed = join_all(topo.members.iter().map(|m| async move {
            let mut cmd = redis::cmd("ACL");
            cmd.arg("USERS");
            self.exec_on::<Vec<String>>(m, &cmd, "ACL USERS", None)
                .await
        }))
        .await;
        let mut on: Vec<(&Member, HashSet<String>)> = Vec::new();
        for (m, r) in topo.members.iter().zip(listed) {
            match r {
                Ok(users) => on.push((m, users.into_iter().collect())),
                Err(e) => {
                    self.mark_dirty();
                    tracing::warn!(node = %m.node.addr.label, error = %e, "repair skips a node");
                    report.unreachable.push(m.node.addr.label.clone());
                }
            }
        }
        let leased: HashSet<String> = leased().await?.into_iter().collect();
        let skip: HashSet<String> = {
            let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            busy.keys().chain(revoked.keys()).cloned().collect()
        };

        // Every user seen anywhere, with the nodes that have it.
        let mut seen: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (_, users)) in on.iter().enumerate() {
            for u in users {
                seen.entry(u.as_str()).or_default().push(i);
            }
        }
        let mark_lower = mark.to_ascii_lowercase();
        let mut still_unleased = BTreeSet::new();
        for (user, have) in &seen {
            if skip.contains(*user) {
                continue;
            }
            if leased.contains(*user) {
                if have.len() < on.len() {
                    let lack: Vec<&Member> = (0..on.len())
                        .filter(|i| !have.contains(i))
                        .map(|i| on[i].0)
                        .collect();
                    self.copy_user(user, on[have[0]].0, &lack, &mut report)
                        .await;
                }
                continue;
            }
            let ours = user
                .get(..mark.len())
                .is_some_and(|h| h.to_ascii_lowercase() == mark_lower);
            if !ours || *user == "default" {
                continue;
            }
            still_unleased.insert(user.to_string());
            match state.unleased.get(*user) {
                Some(first) if *first < pass => {
                    for i in have {
                        let m = on[*i].0;
                        let action = RepairAction {
                            user: user.to_string(),
                            node: m.node.addr.label.clone(),
                        };
                        match self.delete_user(m, user).await {
                            Ok(()) => {
                                audit("redis_repair_remove", &action, None);
                                metrics::counter!("leasehold_redis_repairs_total", "action" => "removed")
                                    .increment(1);
                                report.removed.push(action);
                            }
                            Err(e) => report.errors.push((action, e)),
                        }
                    }
                }
                Some(_) => report.held_back.push(user.to_string()),
                None => {
                    state.unleased.insert(user.to_string(), pass);
                    report.held_back.push(user.to_string());
                }
            }
        }
        state.unleased.retain(|u, _| still_unleased.contains(u));
        for a in &report.removed {
            state.unleased.remove(&a.user);
        }
        if !report.copied.is_empty() || !report.removed.is_empty() {
            tracing::info!(
                copied = report.copied.len(),
                removed = report.removed.len(),
                "redis repair pass changed nodes"
            );
        }
        Ok(report)
    }

    async fn copy_user(
        &self,
        user: &str,
        source: &Member,
        lack: &[&Member],
        report: &mut RepairReport,
    ) {
        let mut get = redis::cmd("ACL");
        get.arg("GETUSER").arg(user);
        let reply: Value = match self.exec_on(source, &get, "ACL GETUSER", None).await {
            Ok(v) => v,
            Err(e) => {
                for m in lack {
                    report.errors.push((
                        RepairAction {
                            user: user.to_string(),
                            node: m.node.addr.label.clone(),
                        },
                        Error::new(e.kind(), e.message().to_string()),
                    ));
                }
                return;
            }
        };
        // Gone from the source since the scan: revoked meanwhile; nothing to copy.
        let Some(rules) = rules_from_getuser(&reply) else {
            return;
        };
        let mut done = Vec::new();
        for m in lack {
            let action = RepairAction {
                user: user.to_string(),
                node: m.node.addr.label.clone(),
            };
            let mut set = redis::cmd("ACL");
            set.arg("SETUSER").arg(user).arg(&rules);
            let r = match self.exec_on::<()>(m, &set, "ACL SETUSER", None).await {
                Ok(()) => self.save(m).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => done.push((*m, action)),
                Err(e) => report.errors.push((action, e)),
            }
        }
        // A revoke that deleted the user from the source while it was copied must not leave
        // the copies behind.
        let again: Option<Value> = self.exec_on(source, &get, "ACL GETUSER", None).await.ok();
        if matches!(again, Some(Value::Nil)) {
            for (m, _) in &done {
                let _ = self.delete_user(m, user).await;
            }
            return;
        }
        for (_, action) in done {
            audit("redis_repair_copy", &action, Some(&source.node.addr.label));
            metrics::counter!("leasehold_redis_repairs_total", "action" => "copied").increment(1);
            report.copied.push(action);
        }
    }

    /// Starts a task that runs [`repair`](Self::repair) for `secret`'s leases every `every`,
    /// and at once when the topology changes. The lease list is read from `manager` after
    /// the nodes each pass; the mark is `<username_prefix><installation>-`. The task ends
    /// when the returned [`RepairTask`] is dropped or stopped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(p: std::sync::Arc<leasehold_redis::RedisAclProvider>, m: leasehold_core::LeaseManager) -> leasehold_core::Result<()> {
    /// let repair = p.spawn_repair(m.clone(), "orders-cache", std::time::Duration::from_secs(30))?;
    /// // ... the service runs ...
    /// repair.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn spawn_repair(
        self: &Arc<Self>,
        manager: LeaseManager,
        secret: &str,
        every: Duration,
    ) -> Result<RepairTask> {
        let Some(s) = manager.secret(secret) else {
            return Err(Error::invalid_config(format!(
                "repair: no secret named {secret:?} is registered"
            )));
        };
        if s.username_prefix().is_empty() {
            return Err(Error::invalid_config(
                "repair: the secret's username_prefix is empty; its users carry no mark",
            ));
        }
        if every.is_zero() {
            return Err(Error::invalid_config(
                "repair: the interval must be positive",
            ));
        }
        let mark = leasehold_core::secret::installation_prefix(
            s.username_prefix(),
            manager.installation_id(),
        );
        let provider = Arc::clone(self);
        let secret = secret.to_string();
        let handle = tokio::spawn(async move {
            loop {
                let changed = provider.topology_changed.notified();
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = changed => {}
                }
                let m = manager.clone();
                let r = provider
                    .repair_with(&mark, || async move { leased_names(&m).await })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(secret = %secret, error = %e, "redis repair pass failed");
                }
            }
        });
        Ok(RepairTask {
            handle: Some(handle),
        })
    }
}

/// Every lease of the store that names a Redis user (any state but `Revoked`).
async fn leased_names(manager: &LeaseManager) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pages = LeasePages::new(&**manager.store(), LeaseFilter::all(), 1000);
    while let Some(page) = pages.next_page().await? {
        out.extend(
            page.into_iter()
                .filter(|l| &*l.provider_kind == KIND && l.state != LeaseState::Revoked)
                .map(|l| l.external.id),
        );
    }
    Ok(out)
}

fn audit(action: &str, a: &RepairAction, source: Option<&str>) {
    tracing::info!(
        target: "leasehold::audit",
        action,
        principal = a.user.as_str(),
        node = a.node.as_str(),
        source = source.unwrap_or(""),
        outcome = "ok",
    );
}

/// The background repair started by [`RedisAclProvider::spawn_repair`]; dropping it stops it.
#[derive(Debug)]
pub struct RepairTask {
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl RepairTask {
    /// Stops the task and waits until it has ended.
    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for RepairTask {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn getuser_of_redis_7_becomes_setuser_rules() {
        let reply = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on"), bulk("sanitize-payload")]),
            bulk("passwords"),
            Value::Array(vec![bulk("abc123")]),
            bulk("commands"),
            bulk("+@all -@dangerous"),
            bulk("keys"),
            bulk("~cache:* %R~ro:*"),
            bulk("channels"),
            bulk("&*"),
            bulk("selectors"),
            Value::Array(vec![Value::Array(vec![
                bulk("commands"),
                bulk("-@all +get"),
                bulk("keys"),
                bulk("~x"),
                bulk("channels"),
                bulk(""),
            ])]),
        ]);
        assert_eq!(
            rules_from_getuser(&reply).unwrap(),
            vec![
                "reset",
                "on",
                "sanitize-payload",
                "#abc123",
                "+@all",
                "-@dangerous",
                "~cache:*",
                "%R~ro:*",
                "&*",
                "(-@all +get ~x)"
            ]
        );
        assert!(rules_from_getuser(&Value::Nil).is_none());
    }

    #[test]
    fn getuser_of_redis_6_lists_patterns() {
        let reply = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on"), bulk("allchannels")]),
            bulk("passwords"),
            Value::Array(vec![]),
            bulk("commands"),
            bulk("+@all"),
            bulk("keys"),
            Value::Array(vec![bulk("a:*"), bulk("b:*")]),
            bulk("channels"),
            Value::Array(vec![bulk("*")]),
        ]);
        let rules = rules_from_getuser(&reply).unwrap();
        assert_eq!(rules, vec!["reset", "on", "+@all", "~a:*", "~b:*", "&*"]);
    }
}
