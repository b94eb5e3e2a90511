//! Two stores in one process keep their metrics apart by the `store`
//! label (the data directory's name, or `metrics.store`), and each one's
//! error counters exist at 0 from its open. Every latency reaches the
//! recorder through the `MetricsActor`, and `Stats` counts the same samples.

use concordkv::{Config, Store};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use metrics_util::MetricKind;

type Metric = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

/// How many samples histogram `name` labelled `store` (and `kind`, if
/// given) holds in `snapshot`, if it exists.
fn samples(snapshot: &[Metric], name: &str, store: &str, kind: Option<&str>) -> Option<u64> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let has = |k: &str, v: &str| key.key().labels().any(|l| l.key() == k && l.value() == v);
        let labelled = has("store", store) && kind.is_none_or(|kind| has("kind", kind));
        match value {
            DebugValue::Histogram(values) if key.key().name() == name && labelled => {
                Some(values.len() as u64)
            }
            _ => None,
        }
    })
}

/// The value of counter `name` labelled `store` in `snapshot`, if it
/// exists.
fn counter(snapshot: &[Metric], name: &str, store: &str) -> Option<u64> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let labelled = key
            .key()
            .labels()
            .any(|l| l.key() == "store" && l.value() == store);
        match *value {
            DebugValue::Counter(n)
                if key.kind() == MetricKind::Counter && key.key().name() == name && labelled =>
            {
                Some(n)
            }
            _ => None,
        }
    })
}

#[actix_rt::test]
async fn two_stores_in_one_process_keep_their_metrics_apart() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test process");
    let root = tempfile::tempdir().expect("tempdir");
    let (alpha, _) = Store::open(Config::with_data_dir(root.path().join("alpha")))
        .await
        .expect("open alpha");
    let (beta, _) = Store::open(Config::with_data_dir(root.path().join("beta")))
        .await
        .expect("open beta");
    let mut named = Config::with_data_dir(root.path().join("gamma"));
    named.metrics.store = "sessions".into();
    let (gamma, _) = Store::open(named).await.expect("open gamma");
    for (store, writes) in [(&alpha, 5), (&beta, 3), (&gamma, 2)] {
        for i in 0..writes {
            store.set(format!("k{i}"), "v").await.expect("set");
        }
    }
    alpha.compact().await.expect("compaction").expect("done");
    alpha.set("after", "v").await.expect("set");
    alpha.snapshot().await.expect("snapshot").expect("taken");
    // Publishes what is pending to the recorder too, from the same samples.
    let report = alpha.stats_report().await.expect("stats");
    let count = |kind: &str| {
        report
            .kinds
            .iter()
            .find(|k| k.kind == kind)
            .map(|k| k.count)
            .unwrap_or_else(|| panic!("no {kind} in the stats"))
    };
    // A snapshot drains the recorder: take one, read it all.
    let snapshot = snapshotter.snapshot().into_vec();
    for (name, kind, stats) in [
        ("concordkv_wal_append_seconds", None, "append"),
        ("concordkv_wal_sync_seconds", None, "sync"),
        ("concordkv_compaction_seconds", None, "compaction"),
        ("concordkv_snapshot_seconds", Some("full"), "snapshot"),
        ("concordkv_recovery_seconds", None, "recovery"),
    ] {
        let published = samples(&snapshot, name, "alpha", kind);
        assert_eq!(
            published,
            Some(count(stats)),
            "{name} holds what Stats counts as {stats}"
        );
        assert_ne!(published, Some(0), "{name} was published");
    }
    assert_eq!(count("append"), 6);
    assert_eq!(
        samples(&snapshot, "concordkv_wal_sync_batch_records", "alpha", None),
        Some(count("sync")),
        "one group-commit size per sync"
    );
    for (label, writes) in [("alpha", 6), ("beta", 3), ("sessions", 2)] {
        assert_eq!(
            counter(&snapshot, "concordkv_wal_records_total", label),
            Some(writes),
            "records of {label}"
        );
        assert_eq!(
            counter(&snapshot, "concordkv_wal_sync_errors_total", label),
            Some(0),
            "the sync error counter of {label} exists at 0"
        );
    }
    assert_eq!(
        counter(&snapshot, "concordkv_wal_records_total", "gamma"),
        None,
        "metrics.store names the store instead of its directory"
    );
    for store in [alpha, beta, gamma] {
        store.shutdown().await.expect("shutdown");
    }
}
