//! Two stores in one process keep their metrics apart by the `store`
//! label (the data directory's name, or `metrics.store`), and each one's
//! error counters exist at 0 from its open.

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
    // A snapshot drains the recorder's counters: take one, read it all.
    let snapshot = snapshotter.snapshot().into_vec();
    for (label, writes) in [("alpha", 5), ("beta", 3), ("sessions", 2)] {
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
