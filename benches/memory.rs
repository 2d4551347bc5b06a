//! Memory per active lease at 1M leases: heap bytes held by `MemoryStore` and the worker,
//! counted by an instrumenting allocator, and the RSS delta; against a bare map of
//! username -> password for the same number of entries.
//!
//! A binary of its own: its counting global allocator adds two atomic operations to every
//! allocation, which must not weigh on the speed measurements in `benches/manager.rs`.
//!
//! Lines starting with `RESULT|` are collected by `scripts/bench` into BENCHMARKS.md.
//! Set `LEASEHOLD_BENCH_QUICK=1` for a fast smoke run (100k leases).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leasehold::{IssueRequest, PasswordPolicy, TemplateVars, UsernameTemplate};
use support::{manager, quick, result};

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes requested from the allocator and not yet freed (allocator overhead excluded).
fn live_heap_bytes() -> i64 {
    let s = GLOBAL.stats();
    // realloc growth and shrinkage are already counted in these two.
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory_per_lease() {
    let n: u64 = if quick() { 100_000 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (heap_per, rss_per, base_per, breakdown) = rt.block_on(async {
        let m = manager(Arc::default(), n + 10, Duration::from_secs(3600)).await;
        for _ in 0..1000 {
            let l = m.issue("bench", IssueRequest::new()).await.unwrap();
            m.revoke(&l.lease_id).await.unwrap();
        }
        let heap_before = live_heap_bytes();
        let rss_before = rss_bytes();
        for _ in 0..n {
            // Only the store and the worker keep anything; the issued credential is dropped.
            m.issue("bench", IssueRequest::new()).await.unwrap();
        }
        let heap = (live_heap_bytes() - heap_before) as f64 / n as f64;
        let rss = rss_bytes().saturating_sub(rss_before) as f64 / n as f64;
        // Where the bytes go: the boxed record, the id's Arc, the external name, and the rest
        // (the id map's and the due index's B-tree nodes, each holding the id's pointer).
        let one = m
            .list(&leasehold::LeaseFilter::all().limit(1))
            .await
            .unwrap()
            .remove(0);
        let record = std::mem::size_of::<leasehold::LeaseRecord>();
        let id = (16 + one.id.as_str().len()).next_multiple_of(8);
        let name = one.external.id.len();
        println!(
            "per lease: record {record} B, id {id} B, external name {name} B, indexes and \
             node slack {:.0} B",
            heap - (record + id + name) as f64
        );
        let breakdown = format!(
            "record {record} B + id {id} B + name {name} B + indexes {:.0} B",
            heap - (record + id + name) as f64
        );
        m.shutdown().await;
        drop(m);
        // Baseline: a bare map of username -> 64-character password for the same n.
        let before = live_heap_bytes();
        let mut map: HashMap<String, secrecy::SecretString> = HashMap::new();
        let t = UsernameTemplate::parse("{{randomUsername}}").unwrap();
        let p = PasswordPolicy::redis();
        for _ in 0..n {
            let name = t
                .render(&TemplateVars {
                    secret_name: "bench",
                    secret_type: "noop",
                    identity: None,
                    prefix: "lh-",
                })
                .unwrap();
            map.insert(name, p.generate().unwrap());
        }
        let base = (live_heap_bytes() - before) as f64 / n as f64;
        drop(map);
        (heap, rss, base, breakdown)
    });
    result(
        &format!("memory per active lease at {n} leases (heap bytes held by store + worker)"),
        format!(
            "{heap_per:.0} B heap ({breakdown}), {rss_per:.0} B RSS delta ({:.1}x a bare name->password map at {base_per:.0} B)",
            heap_per / base_per.max(1.0)
        ),
        "<= 300 B",
        heap_per <= 300.0,
    );
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    memory_per_lease();
}
