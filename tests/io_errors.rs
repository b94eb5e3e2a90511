//! I/O errors from the disk (`EIO`, `ENOSPC`), injected by the simulated
//! disk: a failed write or sync is never acknowledged, is reported naming
//! the file, stops the WAL until the store is reopened, and loses nothing
//! acknowledged; a snapshot or compaction that fails half-way leaves the
//! files in use as they were.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use concordkv::testing::sim_fs::{Call, Fault, SimFs};
use concordkv::{Config, Error, Store, SyncMode};

fn config() -> Config {
    let mut config = Config::with_data_dir(PathBuf::from("/sim/db"));
    config.wal.sync_mode = SyncMode::Always;
    config.wal.max_segment_bytes = 4096;
    config.compaction.threshold = u64::MAX;
    config
}

fn fault(call: Call, errno: i32, path_contains: &str) -> Fault {
    Fault {
        call,
        nth: 1,
        errno,
        path_contains: Some(path_contains.into()),
        sticky: false,
    }
}

async fn open(fs: &SimFs) -> Store {
    concordkv::testing::open_with_fs(config(), Arc::new(fs.clone()))
        .await
        .expect("open")
        .0
}

/// Writes `n` keys starting at `from`, all acknowledged; returns them.
async fn fill(store: &Store, from: u32, n: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut written = BTreeMap::new();
    for i in from..from + n {
        let (key, value) = (format!("key-{i:04}").into_bytes(), vec![b'v'; 60]);
        store
            .set(key.clone(), value.clone())
            .await
            .expect("set acknowledged");
        written.insert(key, value);
    }
    written
}

/// The state a fresh open of `fs` recovers.
async fn recovered(fs: &SimFs) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let (store, recovery) = concordkv::testing::open_with_fs(config(), Arc::new(fs.clone()))
        .await
        .expect("reopen");
    store.shutdown().await.expect("shutdown");
    recovery.state()
}

#[actix_rt::test]
async fn a_failed_fdatasync_is_never_acknowledged_or_retried() {
    let fs = SimFs::new(1);
    let store = open(&fs).await;
    let acked = fill(&store, 0, 20).await;
    fs.inject(fault(Call::SyncData, libc::EIO, ".wal"));
    let err = store.set("lost", "x").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::WalFailed(_)), "{err:?}");
    assert!(
        text.contains("sync of /sim/db/") && text.contains(".wal") && text.contains("os error 5"),
        "the error names the file and the cause: {text}"
    );
    // The retry would "succeed" (the fault fired once), but the WAL refuses
    // every write until it is reopened: the lost page is not in the disk.
    let refused = store.set("after", "y").await.unwrap_err();
    assert!(refused.to_string().contains("sync of"), "{refused}");
    let _ = store.shutdown().await;

    // A reopen in the same boot sees exactly what is durable: the failed
    // record was cut back from the page cache too.
    assert_eq!(recovered(&fs).await, acked);
    let (after_cut, _) = fs.reboot(2);
    assert_eq!(recovered(&after_cut).await, acked);

    // After the reopen, writes go on in a fresh segment.
    let store = open(&after_cut).await;
    let mut expected = acked;
    expected.extend(fill(&store, 100, 5).await);
    store.shutdown().await.expect("shutdown");
    assert_eq!(recovered(&after_cut.reboot(3).0).await, expected);
}

#[actix_rt::test]
async fn a_full_disk_fails_the_write_and_the_store_refuses_until_reopened() {
    let fs = SimFs::new(4);
    let store = open(&fs).await;
    let acked = fill(&store, 0, 10).await;
    fs.inject(fault(Call::Write, libc::ENOSPC, ".wal"));
    let err = store.set("nospace", "x").await.unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(store.set("later", "y").await.is_err(), "writes are refused");
    let _ = store.shutdown().await;
    let (fs, _) = fs.reboot(5);
    assert_eq!(recovered(&fs).await, acked);
}

#[actix_rt::test]
async fn a_snapshot_that_runs_out_of_space_leaves_the_log_in_use() {
    let fs = SimFs::new(6);
    let store = open(&fs).await;
    let mut acked = fill(&store, 0, 200).await;
    let segments = store.persistence_info().segments;
    assert!(segments > 3, "the log spans several segments");
    fs.inject(fault(Call::Write, libc::ENOSPC, ".snap"));
    let err = store.snapshot().await.unwrap_err();
    assert!(
        err.to_string().contains(".snap") && err.to_string().contains("No space left"),
        "{err}"
    );
    assert!(store.snapshots().is_empty(), "nothing was listed");
    assert!(store.persistence_info().segments >= segments);
    // Appends never depended on it.
    acked.extend(fill(&store, 1000, 10).await);
    store.shutdown().await.expect("shutdown");
    let (fs, _) = fs.reboot(7);
    assert_eq!(recovered(&fs).await, acked);
}

#[actix_rt::test]
async fn a_compaction_that_fails_half_way_changes_nothing() {
    // A manifest that cannot be replaced also stops the rotation that
    // starts a compaction, so that fault is sticky.
    for (call, errno, at, sticky) in [
        (Call::SyncAll, libc::EIO, ".snap", false),
        (Call::Rename, libc::ENOSPC, ".snap", false),
        (Call::Rename, libc::EIO, "MANIFEST", true),
    ] {
        let fs = SimFs::new(8);
        let store = open(&fs).await;
        let mut acked = fill(&store, 0, 150).await;
        acked.extend(fill(&store, 0, 150).await);
        let before = store.persistence_info();
        fs.inject(Fault {
            sticky,
            ..fault(call, errno, at)
        });
        let outcome = store.compact().await;
        let Err(err) = outcome else {
            panic!("{call:?} at {at}: the compaction succeeded: {outcome:?}");
        };
        assert!(err.to_string().contains("os error"), "{call:?}: {err}");
        let after = store.persistence_info();
        assert!(store.snapshots().is_empty(), "{call:?}: nothing was listed");
        assert!(
            after.segments >= before.segments,
            "{call:?}: no segment was retired ({} -> {})",
            before.segments,
            after.segments
        );
        let _ = store.shutdown().await;
        let (fs, _) = fs.reboot(9);
        assert_eq!(recovered(&fs).await, acked, "{call:?} at {at}");
    }
}
