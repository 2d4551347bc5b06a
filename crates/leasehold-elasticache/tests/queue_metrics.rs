//! The membership queue's metrics: queue depth and batch size per group change, recorded
//! through the `metrics` facade (a process-wide recorder: this test binary has one test).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Cache;
use leasehold_core::telemetry::{MEMBERSHIP_BATCH_SIZE, MEMBERSHIP_QUEUE_DEPTH};
use leasehold_core::{CreateRequest, DynamicSecretProvider, LeaseId, PasswordPolicy};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_and_queue_depth_are_recorded_per_group_change() {
    let test = "batch_size_and_queue_depth_are_recorded_per_group_change";
    let Some(aws) = common::emulator(test).await else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let cache = Cache::new(aws.clone(), "ec-metrics", Duration::from_secs(1)).await;
    let provider = Arc::new(cache.provider().await);
    provider.validate().await.expect("validate");
    let issues = (0..10).map(|i| {
        let provider = provider.clone();
        async move {
            let req = CreateRequest::new(
                LeaseId::generate("metrics"),
                format!(
                    "lh-qm-{i}-{}",
                    leasehold_core::template::random_lowercase(8)
                ),
                Duration::from_secs(900),
            )
            .with_password(PasswordPolicy::elasticache().generate().unwrap());
            provider.create(&req).await
        }
    });
    for r in futures::future::join_all(issues).await {
        r.expect("issued");
    }
    let snap = snapshotter.snapshot().into_vec();
    let mut batches = Vec::new();
    let mut depth_seen = false;
    for (key, _, _, value) in snap {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        assert!(
            labels
                .iter()
                .all(|(k, v)| k == "operation" && v == "ModifyUserGroup"),
            "bounded labels only: {labels:?}"
        );
        match (key.key().name(), value) {
            (n, DebugValue::Histogram(v)) if n == MEMBERSHIP_BATCH_SIZE => {
                batches.extend(v.iter().map(|x| x.into_inner()))
            }
            (n, DebugValue::Gauge(_)) if n == MEMBERSHIP_QUEUE_DEPTH => depth_seen = true,
            _ => {}
        }
    }
    assert!(depth_seen, "the queue depth gauge was set");
    assert_eq!(
        batches.iter().sum::<f64>(),
        10.0,
        "every user went in some batch: {batches:?}"
    );
    assert!(
        batches.len() <= 3,
        "10 concurrent issues in a few changes: {batches:?}"
    );
}
