//! The append latency histogram counts each acknowledged append once, in
//! every sync mode: the latency is recorded where appends are
//! acknowledged, a group at a time, not by the appender.

mod common;

use common::config;
use concordkv::{Op, Store, SyncMode};

const MODES: [SyncMode; 4] = [
    SyncMode::Always,
    SyncMode::Batch,
    SyncMode::Interval,
    SyncMode::None,
];

fn appends(report: &concordkv::StatsReport) -> u64 {
    report
        .kinds
        .iter()
        .find(|k| k.kind == "append")
        .map_or(0, |k| k.count)
}

#[actix_rt::test]
async fn every_acknowledged_append_is_one_latency_sample_in_every_sync_mode() {
    for mode in MODES {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(config(dir.path(), mode)).await.expect("open");
        for i in 0..40 {
            store.set(format!("k{i}"), "v").await.expect("set");
        }
        // In flight together, and one whose appender never waits.
        let pending: Vec<_> = submit_sets(&store, 8).await;
        for p in pending {
            p.await.expect("acknowledged");
        }
        drop(
            store
                .submit(concordkv::Entry::Op(Op::Set {
                    key: b"dropped".to_vec(),
                    value: b"v".to_vec(),
                }))
                .await
                .expect("queued"),
        );
        store
            .append_batch(vec![
                Op::Set {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                },
                Op::Delete { key: b"b".to_vec() },
            ])
            .await
            .expect("batch");
        // A sync is not an append.
        store.sync().await.expect("sync");
        let report = store.stats_report().await.expect("stats");
        assert_eq!(appends(&report), 40 + 8 + 1 + 1, "{mode:?}");
        store.shutdown().await.expect("shutdown");
    }
}

/// Queues `n` sets at once, before awaiting any.
async fn submit_sets(store: &Store, n: usize) -> Vec<concordkv::Pending> {
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let entry = concordkv::Entry::Op(Op::Set {
            key: format!("p{i}").into_bytes(),
            value: b"v".to_vec(),
        });
        pending.push(store.submit(entry).await.expect("queued"));
    }
    pending
}
