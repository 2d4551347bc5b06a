//! Discovery: from the seeds to every node users must exist on.
//!
//! - a data node: `ROLE` gives a primary's replicas, or a replica's primary (walked in turn);
//!   `INFO cluster` tells a Redis Cluster node, whose `CLUSTER NODES` lists every node;
//! - a Sentinel seed: `SENTINEL GET-MASTER-ADDR-BY-NAME` and `SENTINEL REPLICAS`.
//!
//! Replicas announce the address their primary sees (or `replica-announce-ip`): a loopback
//! address reported by a node that was reached on another host means "that host", so it is
//! replaced by the reporter's host. Every discovered node is reached like the seed (same TLS
//! setting, same admin credentials).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::{Error, ErrorKind, Result};
use redis::{RedisConnectionInfo, Value};

use crate::config::NodeAddr;
use crate::provider::{Member, Node, RedisAclProvider, Topology};

/// How long a node nothing reports any more is still written to while it answers.
const STALE_KEEP: Duration = Duration::from_secs(60);

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The address to reach a node at that `reporter` announced as `host:port`.
pub(crate) fn reported(host: &str, port: u16, reporter: &NodeAddr) -> NodeAddr {
    let host = if host.is_empty() || (is_loopback(host) && !is_loopback(&reporter.host)) {
        reporter.host.as_str()
    } else {
        host
    };
    NodeAddr::data(host, port, reporter.tls)
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `key value key value` reply (RESP2) or a map (RESP3) as pairs.
pub(crate) fn pairs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => text(k).map(|k| (k, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| text(k).map(|k| (k, v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The replicas a `ROLE` reply of a primary lists.
pub(crate) fn role_replicas(role: &Value, reporter: &NodeAddr) -> Vec<NodeAddr> {
    let Value::Array(items) = role else {
        return Vec::new();
    };
    if items.first().and_then(text).as_deref() != Some("master") {
        return Vec::new();
    }
    let Some(Value::Array(replicas)) = items.get(2) else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter_map(|r| match r {
            Value::Array(parts) => {
                let host = parts.first().and_then(text)?;
                let port = parts.get(1).and_then(text)?.parse().ok()?;
                Some(reported(&host, port, reporter))
            }
            _ => None,
        })
        .collect()
}

/// The primary a `ROLE` reply of a replica names.
fn role_primary(role: &Value, reporter: &NodeAddr) -> Option<NodeAddr> {
    let Value::Array(items) = role else {
        return None;
    };
    if items.first().and_then(text).as_deref() != Some("slave") {
        return None;
    }
    let host = items.get(1).and_then(text)?;
    let port = items.get(2).and_then(text)?.parse().ok()?;
    Some(reported(&host, port, reporter))
}

/// The nodes of a `CLUSTER NODES` reply: `(address, is_primary)`; nodes flagged `fail`,
/// `noaddr` or `handshake` are left out (down or not yet members).
pub(crate) fn cluster_nodes(reply: &str, reporter: &NodeAddr) -> Vec<(NodeAddr, bool)> {
    let mut out = Vec::new();
    for line in reply.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if flags
            .iter()
            .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
        {
            continue;
        }
        // ip:port@cport[,hostname]
        let addr = fields[1].split(['@', ',']).next().unwrap_or("");
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if port == 0 {
            continue;
        }
        let node = if flags.contains(&"myself") && host.is_empty() {
            reporter.clone()
        } else {
            reported(host, port, reporter)
        };
        out.push((node, flags.contains(&"master")));
    }
    out
}

/// The replicas (`slaveN:ip=…,port=…`) and the primary (`master_host` / `master_port`) an
/// `INFO replication` reply names.
pub(crate) fn info_replication(
    reply: &str,
    reporter: &NodeAddr,
) -> (Vec<NodeAddr>, Option<NodeAddr>) {
    let mut replicas = Vec::new();
    let (mut host, mut port) = (None, None);
    for line in reply.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("master_host:") {
            host = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("master_port:") {
            port = v.parse::<u16>().ok();
        } else if line.starts_with("slave") && line.contains(":ip=") {
            let fields: HashMap<&str, &str> = line
                .split_once(':')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            if let (Some(ip), Some(p)) = (
                fields.get("ip"),
                fields.get("port").and_then(|p| p.parse::<u16>().ok()),
            ) {
                replicas.push(reported(ip, p, reporter));
            }
        }
    }
    let primary = match (host, port) {
        (Some(h), Some(p)) if p != 0 => Some(reported(&h, p, reporter)),
        _ => None,
    };
    (replicas, primary)
}

impl RedisAclProvider {
    /// On the first reachable node: whether it is a Redis Cluster node (`INFO cluster`), and
    /// if so every node `CLUSTER NODES` lists, handed to `add`.
    async fn ask_cluster(
        &self,
        node: &Node,
        addr: &NodeAddr,
        asked: &mut bool,
        cluster: &mut bool,
    ) -> Vec<(NodeAddr, bool)> {
        if *asked {
            return Vec::new();
        }
        *asked = true;
        let mut info = redis::cmd("INFO");
        info.arg("cluster");
        let enabled = self
            .ask(node, &info, "INFO")
            .await
            .ok()
            .and_then(|v| text(&v))
            .is_some_and(|t| t.contains("cluster_enabled:1"));
        if !enabled {
            return Vec::new();
        }
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        match self.ask(node, &nodes, "CLUSTER NODES").await {
            Ok(v) => {
                *cluster = true;
                cluster_nodes(&text(&v).unwrap_or_default(), addr)
            }
            Err(e) => {
                *asked = false;
                tracing::warn!(node = %addr.label, error = %e, "cannot list the cluster's nodes");
                Vec::new()
            }
        }
    }

    /// One command on a node (discovery must not stall on a node that is down).
    async fn ask(&self, node: &Node, cmd: &redis::Cmd, op: &str) -> Result<Value> {
        self.run_tries::<Value>(node, cmd, op, None, true)
            .await?
            .map_err(|e| crate::errors::map(&e, &node.addr.label, op, None))
    }

    /// Asks the Sentinels of `master` (in order) for its primary and replicas.
    async fn ask_sentinels(
        &self,
        master: &str,
        sentinels: &[&NodeAddr],
    ) -> Result<Vec<(NodeAddr, bool)>> {
        let mut last = None;
        for s in sentinels {
            let info = RedisConnectionInfo::default();
            let mut conn = match self.dialer.dial(s, &info, None).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut get = redis::cmd("SENTINEL");
            get.arg("GET-MASTER-ADDR-BY-NAME").arg(master);
            let addr: Value = match get.query_async(&mut conn).await {
                Ok(v) => v,
                Err(e) => {
                    last = Some(crate::errors::map(&e, &s.label, "SENTINEL", None));
                    continue;
                }
            };
            let primary = match &addr {
                Value::Array(parts) if parts.len() == 2 => {
                    let host = text(&parts[0]).unwrap_or_default();
                    let port = text(&parts[1]).and_then(|p| p.parse().ok()).unwrap_or(0);
                    reported(&host, port, s)
                }
                _ => {
                    last = Some(Error::invalid_config(format!(
                        "sentinel {}: knows no master named {master:?}",
                        s.label
                    )));
                    continue;
                }
            };
            let mut found = vec![(primary, true)];
            let mut replicas = redis::cmd("SENTINEL");
            replicas.arg("REPLICAS").arg(master);
            if let Ok(Value::Array(list)) = replicas.query_async::<Value>(&mut conn).await {
                for r in &list {
                    let kv: HashMap<String, String> = pairs(r)
                        .into_iter()
                        .filter_map(|(k, v)| text(v).map(|v| (k, v)))
                        .collect();
                    let flags = kv.get("flags").map(String::as_str).unwrap_or("");
                    if flags.contains("s_down")
                        || flags.contains("o_down")
                        || flags.contains("disconnected")
                    {
                        continue;
                    }
                    let (Some(host), Some(port)) = (
                        kv.get("ip"),
                        kv.get("port").and_then(|p| p.parse::<u16>().ok()),
                    ) else {
                        continue;
                    };
                    found.push((reported(host, port, s), false));
                }
            }
            return Ok(found);
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::ProviderUnavailable,
                format!("no sentinel answered for master {master:?}"),
            )
        }))
    }

    /// Finds every node from the seeds. Configured data nodes are always members (required);
    /// nodes that are found are members only while something reports them.
    pub(crate) async fn discover_topology(&self, previous: &Topology) -> Result<Topology> {
        let reuse: HashMap<&str, &Arc<Node>> = previous
            .members
            .iter()
            .map(|m| (m.node.addr.label.as_str(), &m.node))
            .collect();
        let handle = |addr: &NodeAddr| -> Arc<Node> {
            match reuse.get(addr.label.as_str()) {
                Some(n) if n.addr == *addr => Arc::clone(n),
                _ => Arc::new(Node::new(addr.clone())),
            }
        };
        // label -> (address, required)
        let mut found: BTreeMap<String, (NodeAddr, bool)> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut add = |found: &mut BTreeMap<String, (NodeAddr, bool)>,
                       addr: NodeAddr,
                       required: bool|
         -> bool {
            match found.get_mut(&addr.label) {
                Some(entry) => {
                    entry.1 |= required;
                    false
                }
                None => {
                    order.push(addr.label.clone());
                    found.insert(addr.label.clone(), (addr, required));
                    true
                }
            }
        };
        let mut queue: VecDeque<NodeAddr> = VecDeque::new();
        for seed in self.seeds.iter().filter(|s| s.sentinel_master.is_none()) {
            if add(&mut found, seed.clone(), true) {
                queue.push_back(seed.clone());
            }
        }
        let mut masters: BTreeMap<&str, Vec<&NodeAddr>> = BTreeMap::new();
        for s in &self.seeds {
            if let Some(m) = &s.sentinel_master {
                masters.entry(m.as_str()).or_default().push(s);
            }
        }
        for (master, sentinels) in masters {
            match self.ask_sentinels(master, &sentinels).await {
                Ok(nodes) => {
                    for (addr, required) in nodes {
                        if add(&mut found, addr.clone(), required) {
                            queue.push_back(addr);
                        }
                    }
                }
                Err(e) if previous.at.is_some() => {
                    tracing::warn!(master, error = %e,
                        "no sentinel answered; keeping the nodes found before");
                    for m in &previous.members {
                        if add(&mut found, m.node.addr.clone(), m.required) {
                            queue.push_back(m.node.addr.clone());
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }

        let mut cluster = false;
        let mut unreachable: Vec<String> = Vec::new();
        // Nodes found before that nothing reported this time (mid-failover, a promoted
        // replica is briefly nobody's): asked again themselves, kept while they answer, for
        // at most STALE_KEEP.
        let mut carried: HashMap<String, Instant> = HashMap::new();
        if self.discover {
            let mut asked_cluster = false;
            loop {
                let Some(addr) = queue.pop_front() else {
                    if !carried.is_empty() {
                        break;
                    }
                    for m in &previous.members {
                        if add(&mut found, m.node.addr.clone(), false) {
                            carried.insert(m.node.addr.label.clone(), m.reported_at);
                            queue.push_back(m.node.addr.clone());
                        }
                    }
                    if carried.is_empty() {
                        break;
                    }
                    // Marks the second round as started even when every node is found.
                    carried.insert(String::new(), Instant::now());
                    continue;
                };
                let node = handle(&addr);
                // INFO replication lists replicas that are still syncing too (ROLE shows only
                // those online); ROLE is the fallback for an admin without +info.
                let mut info = redis::cmd("INFO");
                info.arg("replication");
                let replication = match self.ask(&node, &info, "INFO").await {
                    Ok(v) => text(&v).map(|t| info_replication(&t, &addr)),
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => None,
                    Err(e) => {
                        tracing::debug!(node = %addr.label, error = %e, "node not reachable");
                        unreachable.push(addr.label.clone());
                        continue;
                    }
                };
                if let Some((replicas, primary)) = replication {
                    for r in replicas {
                        if add(&mut found, r.clone(), false) {
                            queue.push_back(r);
                        }
                    }
                    if let Some(p) = primary {
                        if add(&mut found, p.clone(), true) {
                            queue.push_back(p);
                        }
                    }
                    for (n, primary) in self
                        .ask_cluster(&node, &addr, &mut asked_cluster, &mut cluster)
                        .await
                    {
                        if add(&mut found, n.clone(), primary) {
                            queue.push_back(n);
                        }
                    }
                    continue;
                }
                let role = match self.ask(&node, &redis::cmd("ROLE"), "ROLE").await {
                    Ok(v) => v,
                    Err(e) => {
                        if e.kind() == ErrorKind::PermissionDenied {
                            tracing::warn!(node = %addr.label, error = %e,
                                "discovery cannot run ROLE: grant the admin +role +info (+cluster|nodes)");
                        } else {
                            tracing::debug!(node = %addr.label, error = %e, "node not reachable");
                            unreachable.push(addr.label.clone());
                        }
                        continue;
                    }
                };
                for r in role_replicas(&role, &addr) {
                    if add(&mut found, r.clone(), false) {
                        queue.push_back(r);
                    }
                }
                if let Some(p) = role_primary(&role, &addr) {
                    if add(&mut found, p.clone(), true) {
                        queue.push_back(p);
                    }
                }
                for (n, primary) in self
                    .ask_cluster(&node, &addr, &mut asked_cluster, &mut cluster)
                    .await
                {
                    if add(&mut found, n.clone(), primary) {
                        queue.push_back(n);
                    }
                }
            }
        }
        let members = order
            .into_iter()
            .filter_map(|label| found.remove(&label))
            // A replica nobody reaches is left out until it answers again; configured nodes
            // and primaries stay (a call on them fails, which is what should happen).
            .filter(|(addr, required)| *required || !unreachable.contains(&addr.label))
            .filter_map(|(addr, required)| {
                let reported_at = match carried.get(&addr.label) {
                    Some(at) if at.elapsed() >= STALE_KEEP => return None,
                    Some(at) => *at,
                    None => Instant::now(),
                };
                Some(Member {
                    node: handle(&addr),
                    required,
                    reported_at,
                })
            })
            .collect();
        Ok(Topology {
            members,
            cluster,
            at: Some(Instant::now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> NodeAddr {
        NodeAddr::data(host, port, false)
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn loopback_reported_by_a_remote_node_means_that_node() {
        let remote = addr("10.0.0.5", 6379);
        assert_eq!(reported("127.0.0.1", 6380, &remote).label, "10.0.0.5:6380");
        assert_eq!(reported("", 6380, &remote).label, "10.0.0.5:6380");
        assert_eq!(reported("10.0.0.6", 6380, &remote).label, "10.0.0.6:6380");
        let local = addr("127.0.0.1", 6379);
        assert_eq!(reported("127.0.0.1", 6380, &local).label, "127.0.0.1:6380");
        let tls = NodeAddr::data("cache", 6379, true);
        assert!(
            reported("10.0.0.7", 1, &tls).tls,
            "the seed's TLS setting carries over"
        );
    }

    #[test]
    fn role_replies_parse() {
        let master = Value::Array(vec![
            bulk("master"),
            Value::Int(10),
            Value::Array(vec![
                Value::Array(vec![bulk("127.0.0.1"), bulk("7001"), bulk("10")]),
                Value::Array(vec![bulk("10.1.1.1"), bulk("7002"), bulk("10")]),
            ]),
        ]);
        let seed = addr("10.0.0.5", 7000);
        let r = role_replicas(&master, &seed);
        assert_eq!(r[0].label, "10.0.0.5:7001");
        assert_eq!(r[1].label, "10.1.1.1:7002");
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("10.0.0.5"),
            Value::Int(7000),
            bulk("connected"),
            Value::Int(10),
        ]);
        assert_eq!(
            role_primary(&replica, &addr("10.0.0.6", 7001))
                .unwrap()
                .label,
            "10.0.0.5:7000"
        );
        assert!(role_replicas(&replica, &seed).is_empty());
    }

    #[test]
    fn info_replication_parses() {
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=wait_bgsave,offset=0,lag=0\r\n\
            slave1:ip=10.1.1.1,port=7002,state=online,offset=10,lag=1\r\nmaster_failover_state:no-failover\r\n";
        let (r, p) = info_replication(primary, &addr("10.0.0.5", 7000));
        let labels: Vec<&str> = r.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, vec!["10.0.0.5:7001", "10.1.1.1:7002"]);
        assert!(p.is_none());
        let replica = "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\n";
        let (r, p) = info_replication(replica, &addr("127.0.0.1", 7001));
        assert!(r.is_empty());
        assert_eq!(p.unwrap().label, "127.0.0.1:7000");
    }

    #[test]
    fn cluster_nodes_parse_skipping_failed_nodes() {
        let reply = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:30003@40003 slave a1 0 0 1 connected
d4 127.0.0.1:30004@40004 master,fail - 0 0 3 disconnected
e5 :0@0 master,noaddr - 0 0 0 disconnected
";
        let n = cluster_nodes(reply, &addr("127.0.0.1", 30001));
        let labels: Vec<(&str, bool)> = n.iter().map(|(a, p)| (a.label.as_str(), *p)).collect();
        assert_eq!(
            labels,
            vec![
                ("127.0.0.1:30001", true),
                ("127.0.0.1:30002", true),
                ("127.0.0.1:30003", false)
            ]
        );
    }
}
