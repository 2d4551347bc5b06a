//! The Grafana dashboard in `dashboards/leasehold.json` is valid JSON and queries only the
//! metrics the library records, under their exported names.

use std::collections::BTreeSet;
use std::path::PathBuf;

use leasehold_core::telemetry;
use serde_json::Value;

const COUNTERS: &[&str] = &[
    telemetry::ISSUES,
    telemetry::RENEWALS,
    telemetry::REVOCATIONS,
    telemetry::REVOKE_RETRIES,
    telemetry::IRREVOCABLE,
    telemetry::PROVIDER_CALLS,
    telemetry::STORE_ERRORS,
    telemetry::WORKER_LOOPS,
    telemetry::DRIFT_REPAIRS,
];
const GAUGES: &[&str] = &[
    telemetry::LEASES,
    telemetry::IRREVOCABLE_LEASES,
    telemetry::MEMBERSHIP_QUEUE_DEPTH,
];
const HISTOGRAMS: &[&str] = &[
    telemetry::ISSUE_DURATION,
    telemetry::REVOKE_DURATION,
    telemetry::EXPIRY_LAG,
    telemetry::PROVIDER_CALL_DURATION,
    telemetry::MEMBERSHIP_BATCH_SIZE,
];

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/leasehold.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every `expr` of every panel, nested rows included.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `leasehold_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leasehold_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_queries_only_recorded_metrics() {
    let d = dashboard();
    assert_eq!(d["title"], "leasehold");
    let mut all = Vec::new();
    exprs(&d["panels"], &mut all);
    assert!(all.len() >= 10, "{all:?}");
    let mut used = BTreeSet::new();
    for expr in &all {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query without a leasehold metric: {expr}"
        );
        for name in names {
            let base = if let Some(h) = name.strip_suffix("_bucket") {
                assert!(HISTOGRAMS.contains(&h), "{name} is not a histogram: {expr}");
                h.to_string()
            } else if let Some(h) = name
                .strip_suffix("_count")
                .or_else(|| name.strip_suffix("_sum"))
                .filter(|h| HISTOGRAMS.contains(h))
            {
                h.to_string()
            } else {
                assert!(
                    COUNTERS.contains(&name.as_str()) || GAUGES.contains(&name.as_str()),
                    "{name} is not a metric of leasehold_core::telemetry: {expr}"
                );
                name.clone()
            };
            if COUNTERS.contains(&base.as_str()) {
                assert!(
                    expr.contains("rate(") || expr.contains("increase("),
                    "counter {base} graphed without rate: {expr}"
                );
            }
            if HISTOGRAMS.contains(&base.as_str()) && name.ends_with("_bucket") {
                assert!(expr.contains("histogram_quantile("), "{expr}");
                assert!(expr.contains("le"), "buckets summed without le: {expr}");
            }
            used.insert(base);
        }
    }
    for m in COUNTERS.iter().chain(GAUGES).chain(HISTOGRAMS) {
        assert!(used.contains(*m), "{m} is on no panel");
    }
}

#[test]
fn dashboard_panels_are_well_formed() {
    let d = dashboard();
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("a numeric panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} overflows the grid", p["title"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "secret"]);
}
