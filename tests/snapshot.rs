//! Snapshots: full and incremental ones recover the same state as the log
//! they replace, retire what they cover, and name themselves when damaged;
//! and a model test of everything that rewrites the log (rotation, full and
//! incremental snapshots, compaction, restarts) against a plain HashMap.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{config, segments, started_segments};
use concordkv::testing::format::snapshot::SnapshotKind;
use concordkv::{Config, Error, Op, Store, SyncMode};
use proptest::prelude::*;

fn small(dir: &Path) -> Config {
    let mut cfg = config(dir, SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    cfg
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

#[actix_rt::test]
async fn a_full_snapshot_recovers_the_same_state_and_retires_covered_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("open");
    let mut model = BTreeMap::new();
    for round in 0..20u32 {
        for k in 0..20u32 {
            let (key, value) = (
                format!("k{k}").into_bytes(),
                format!("{round}-{k}").into_bytes(),
            );
            store.set(key.clone(), value.clone()).await.expect("set");
            model.insert(key, value);
        }
    }
    store.delete("k3").await.expect("delete");
    model.remove(b"k3".as_slice());
    let segments_before = started_segments(dir.path()).len();
    let header = store
        .snapshot()
        .await
        .expect("snapshot")
        .expect("a new snapshot");
    assert_eq!(header.kind, SnapshotKind::Full);
    assert_eq!(header.to_seq, 401);
    assert_eq!(header.entries, 19, "one entry per live key, no deletions");
    let segments_after = started_segments(dir.path()).len();
    assert!(segments_before > 1);
    assert_eq!(
        segments_after, 1,
        "only the active segment outlives a full snapshot of everything"
    );
    assert!(
        store.snapshot().await.expect("snapshot").is_none(),
        "nothing new to cover"
    );
    store.set("after", "snap").await.expect("set");
    model.insert(b"after".to_vec(), b"snap".to_vec());
    store.shutdown().await.expect("shutdown");

    let (store, recovery) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("reopen");
    assert_eq!(recovery.base_seq, 401);
    assert_eq!(recovery.snapshots, 1);
    assert_eq!(
        recovery.records.first().map(|r| r.seq),
        Some(402),
        "only records after the snapshot"
    );
    assert_eq!(recovery.state(), model);
    assert_eq!(
        store.set("next", "x").await.expect("set"),
        403,
        "sequence numbers continue"
    );
    store.shutdown().await.expect("shutdown");
}

/// `SAVE`: its client waits for all of it, so the snapshot is written at
/// the disk's speed, not at `maintenance.write_bytes_per_sec`, and answered
/// once listed, while what it retired is still being removed, paced; a
/// shutdown meanwhile stops that removal, and the next open finishes it.
#[actix_rt::test]
async fn a_waited_snapshot_is_written_unpaced_and_answered_before_its_retired_files_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::None);
    cfg.wal.max_segment_bytes = 1 << 20;
    cfg.compaction.threshold = u64::MAX;
    // The slowest rates accepted: paced, the 8 MiB snapshot would take 8 s
    // to write and its retired segments as long again to remove.
    cfg.maintenance.write_bytes_per_sec = 1 << 20;
    cfg.maintenance.delete_bytes_per_sec = 1 << 20;
    let (store, _) = Store::open(cfg.clone()).await.expect("open");
    let value = |k: u32| vec![k as u8; 64 << 10];
    for k in 0..128u32 {
        store.set(format!("k{k}"), value(k)).await.expect("set");
    }
    let before = segments(dir.path()).len();
    assert!(before >= 8, "only {before} segments were written");

    let asked = Instant::now();
    let header = store
        .begin_snapshot_waited(SnapshotKind::Full)
        .expect("no snapshot under way")
        .await
        .expect("save")
        .expect("a snapshot");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the waited snapshot took {took:?}: written or answered at the maintenance pace"
    );
    assert_eq!(header.entries, 128);
    let left = segments(dir.path()).len();
    assert!(
        left > before / 2,
        "{left} of {before} segments left: the answer waited for the paced removal"
    );

    let stopping = Instant::now();
    store.shutdown().await.expect("shutdown");
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown waited {:?} for the paced removal instead of stopping it",
        stopping.elapsed()
    );
    let (store, recovery) = Store::open(cfg).await.expect("reopen");
    assert_eq!(recovery.keys, 128);
    for k in [0u32, 77, 127] {
        assert_eq!(
            store.state().get(format!("k{k}").as_bytes()),
            Some(value(k))
        );
    }
    let after = segments(dir.path()).len();
    assert!(
        after <= 3,
        "{after} segments after the reopen: the retired ones were not removed"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn incremental_snapshots_chain_onto_the_full_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("open");
    let mut model = BTreeMap::new();
    let mut write = |store: Store, key: String, value: Option<String>| {
        match &value {
            Some(v) => model.insert(key.clone().into_bytes(), v.clone().into_bytes()),
            None => model.remove(key.as_bytes()),
        };
        async move {
            match value {
                Some(v) => store.set(key, v).await.expect("set"),
                None => store.delete(key).await.expect("delete"),
            }
        }
    };
    for i in 0..50 {
        write(store.clone(), format!("a{i}"), Some(format!("v{i}"))).await;
    }
    store.snapshot().await.expect("full").expect("taken");
    for i in 0..10 {
        write(store.clone(), format!("a{i}"), None).await;
        write(store.clone(), format!("b{i}"), Some("new".into())).await;
    }
    let incr = store
        .snapshot_incremental()
        .await
        .expect("incremental")
        .expect("taken");
    assert_eq!(
        (incr.kind, incr.from_seq, incr.to_seq, incr.entries),
        (SnapshotKind::Incremental, 50, 70, 20)
    );
    write(store.clone(), "a20".into(), Some("changed".into())).await;
    store
        .snapshot_incremental()
        .await
        .expect("incremental")
        .expect("taken");
    write(store.clone(), "tail".into(), Some("t".into())).await;
    store.shutdown().await.expect("shutdown");

    let (store, recovery) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("reopen");
    assert_eq!(recovery.snapshots, 3);
    assert_eq!(recovery.base_seq, 71);
    assert_eq!(recovery.state(), model);
    // A new full snapshot replaces the chain.
    store.snapshot().await.expect("full").expect("taken");
    let files = snapshot_files(dir.path());
    assert!(
        files.iter().all(|f| f.ends_with(".full.snap")),
        "incrementals covered by a full one are removed: {files:?}"
    );
    assert_eq!(
        files.len(),
        2,
        "snapshot.keep = 2 full snapshots: {files:?}"
    );
    store.shutdown().await.expect("shutdown");
    let (_store, recovery) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("reopen");
    assert_eq!(recovery.state(), model);
}

#[actix_rt::test]
async fn a_damaged_snapshot_fails_the_open_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(small(dir.path()))
        .await
        .expect("open");
    for i in 0..100u32 {
        store.set(format!("k{i}"), "v").await.expect("set");
    }
    let header = store.snapshot().await.expect("snapshot").expect("taken");
    store.shutdown().await.expect("shutdown");
    let path = dir.path().join(header.file_name());
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let err = concordkv::testing::open_recording(small(dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == path),
        "{err}"
    );
    assert!(err.to_string().contains("offset"), "{err}");
}

#[derive(Debug, Clone)]
enum Action {
    Set(u8, u8),
    Delete(u8),
    Batch(Vec<(u8, Option<u8>)>),
    /// A set with a deadline long past (`true`) or far ahead.
    Expiring(u8, u8, bool),
    Clear,
    Full,
    Incremental,
    Compact,
    Restart,
}

/// A deadline no run reaches: 2100-01-01, in milliseconds since the epoch.
const FAR_AHEAD_MS: u64 = 4_102_444_800_000;

/// Each key with its value and deadline.
type Model = HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// The keys a read sees: the deadlines are long past or far ahead, so
/// this does not depend on when it runs.
fn visible(model: impl IntoIterator<Item = (Vec<u8>, (Vec<u8>, Option<u64>))>) -> Model {
    let now = concordkv::unix_millis(std::time::SystemTime::now());
    model
        .into_iter()
        .filter(|(_, (_, at))| at.is_none_or(|at| at > now))
        .collect()
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Action::Set(k, v)),
        2 => (0u8..24).prop_map(Action::Delete),
        2 => (0u8..24, any::<u8>(), any::<bool>()).prop_map(|(k, v, past)| Action::Expiring(k, v, past)),
        1 => Just(Action::Clear),
        2 => proptest::collection::vec((0u8..24, proptest::option::of(any::<u8>())), 1..5).prop_map(Action::Batch),
        1 => Just(Action::Full),
        1 => Just(Action::Incremental),
        1 => Just(Action::Compact),
        1 => Just(Action::Restart),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn value(v: u8) -> Vec<u8> {
    vec![v; 40 + usize::from(v % 50)]
}

async fn run_model(dir: &Path, actions: Vec<Action>) {
    let cfg = small(dir);
    let mut model = Model::new();
    let (mut store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for action in actions {
        match action {
            Action::Set(k, v) => {
                store.set(key(k), value(v)).await.expect("set");
                model.insert(key(k), (value(v), None));
            }
            Action::Expiring(k, v, past) => {
                let at = if past {
                    1_000 + u64::from(v)
                } else {
                    FAR_AHEAD_MS + u64::from(v)
                };
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
                store
                    .set_expiring(key(k), value(v), when)
                    .await
                    .expect("set expiring");
                model.insert(key(k), (value(v), Some(at)));
            }
            Action::Clear => {
                store.clear().await.expect("clear");
                model.clear();
            }
            Action::Delete(k) => {
                store.delete(key(k)).await.expect("delete");
                model.remove(&key(k));
            }
            Action::Batch(ops) => {
                let ops: Vec<Op> = ops
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => Op::Set {
                            key: key(k),
                            value: value(v),
                        },
                        None => Op::Delete { key: key(k) },
                    })
                    .collect();
                for op in &ops {
                    match op {
                        Op::Set { key, value } => model.insert(key.clone(), (value.clone(), None)),
                        Op::Delete { key } => model.remove(key),
                        Op::SetExpiring { .. } | Op::Clear => unreachable!("not generated"),
                    };
                }
                store.append_batch(ops).await.expect("batch");
            }
            Action::Full => {
                store.snapshot().await.expect("full snapshot");
            }
            Action::Incremental => {
                store
                    .snapshot_incremental()
                    .await
                    .expect("incremental snapshot");
            }
            Action::Compact => {
                store.compact().await.expect("compaction");
            }
            Action::Restart => {
                store.shutdown().await.expect("shutdown");
                let (reopened, recovery) = concordkv::testing::open_recording(cfg.clone())
                    .await
                    .expect("reopen");
                let recovered = visible(recovery.keyspace());
                assert_eq!(recovered, visible(model.clone()), "state after restart");
                store = reopened;
            }
        }
    }
    store.shutdown().await.expect("shutdown");
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("final open");
    let recovered = visible(recovery.keyspace());
    assert_eq!(recovered, visible(model), "final state");
    store.shutdown().await.expect("shutdown");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn recovered_state_equals_a_hashmap_fed_the_same_operations(actions in proptest::collection::vec(action(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        actix_rt::System::new().block_on(run_model(dir.path(), actions));
    }
}
