//! I/O errors from the disk (`EIO`, `ENOSPC`), injected by the simulated
//! disk: a failed write or sync is never acknowledged, is reported naming
//! the file, stops the WAL until the store is reopened, and loses nothing
//! acknowledged; a snapshot or compaction that fails half-way leaves the
//! files in use as they were. A full disk and a failing disk are different
//! variants, both keeping the operating system's error.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
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
    concordkv::testing::open_recording_with_fs(config(), Arc::new(fs.clone()))
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
    let (store, recovery) =
        concordkv::testing::open_recording_with_fs(config(), Arc::new(fs.clone()))
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
    assert!(
        matches!(
            err,
            Error::Io {
                op: "sync segment",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("sync segment /sim/db/")
            && text.contains(".wal")
            && text.contains("os error 5"),
        "the error names the file and the cause: {text}"
    );
    // The retry would "succeed" (the fault fired once), but the WAL refuses
    // every write until it is reopened: the lost page is not in the disk.
    let refused = store.set("after", "y").await.unwrap_err();
    assert!(
        matches!(&refused, Error::WalFailed { cause } if matches!(**cause, Error::Io { .. })),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("sync segment"), "{refused}");
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

/// The errors of the append that meets a fault injected on the next
/// segment `call`, and of the append after it.
async fn failing_append(seed: u64, call: Call, errno: i32) -> (Error, Error) {
    let fs = SimFs::new(seed);
    let store = open(&fs).await;
    fill(&store, 0, 5).await;
    fs.inject(fault(call, errno, ".wal"));
    let first = store.set("hit", "x").await.unwrap_err();
    let later = store.set("refused", "y").await.unwrap_err();
    let _ = store.shutdown().await;
    (first, later)
}

/// Whether `path` is one of the store's segments.
fn is_segment(path: &Path) -> bool {
    path.starts_with("/sim/db") && path.extension().is_some_and(|e| e == "wal")
}

#[actix_rt::test]
async fn a_full_disk_and_a_failing_disk_are_different_errors_that_keep_the_os_error() {
    let cases = [
        (Call::Write, libc::ENOSPC, "write segment"),
        (Call::Write, libc::EDQUOT, "write segment"),
        (Call::Write, libc::EIO, "write segment"),
        (Call::SyncData, libc::ENOSPC, "sync segment"),
        (Call::SyncData, libc::EIO, "sync segment"),
    ];
    for (seed, (call, errno, expected_op)) in (20..).zip(cases) {
        let full = errno != libc::EIO;
        let (first, later) = failing_append(seed, call, errno).await;
        let case = format!("{call:?} failing with errno {errno}");

        // The append that met the fault gets the failure itself.
        let source = match (&first, full) {
            (Error::DiskFull { op, path, source }, true)
            | (Error::Io { op, path, source }, false) => {
                assert_eq!(*op, expected_op, "{case}");
                assert!(is_segment(path), "{case}: {}", path.display());
                source
            }
            _ => panic!("{case}: wrong variant: {first:?}"),
        };
        assert_eq!(source.raw_os_error(), Some(errno), "{case}");
        let expected_kind = match errno {
            libc::ENOSPC => Some(io::ErrorKind::StorageFull),
            libc::EDQUOT => Some(io::ErrorKind::QuotaExceeded),
            _ => None,
        };
        if let Some(kind) = expected_kind {
            assert_eq!(source.kind(), kind, "{case}");
        }
        assert_eq!(first.is_disk_full(), full, "{case}");
        // The standard source chain reaches the io::Error itself.
        let chained = std::error::Error::source(&first)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(chained, Some(errno), "{case}");

        // The append after it is refused, and says why: the same failure,
        // still matchable, still naming the file.
        let Error::WalFailed { cause } = &later else {
            panic!("{case}: the later append was not refused as after a failure: {later:?}");
        };
        match (cause.as_ref(), full) {
            (Error::DiskFull { path, .. }, true) | (Error::Io { path, .. }, false) => {
                assert!(is_segment(path), "{case}: {}", path.display());
            }
            _ => panic!("{case}: wrong cause: {cause:?}"),
        }
        assert_eq!(
            later.io_error().and_then(io::Error::raw_os_error),
            Some(errno),
            "{case}"
        );
        assert_eq!(later.is_disk_full(), full, "{case}");
        let text = later.to_string();
        assert!(
            text.contains("/sim/db/") && text.contains(".wal"),
            "{case}: {text}"
        );
        if errno == libc::ENOSPC {
            assert!(text.contains("No space left on device"), "{case}: {text}");
        }
    }
}

#[test]
fn opening_a_store_outside_an_actix_system_is_its_own_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(concordkv::testing::open_recording(Config::with_data_dir(
        &data_dir,
    )));
    assert!(
        matches!(outcome, Err(Error::NoActixSystem)),
        "{:?}",
        outcome.err()
    );
    assert!(!data_dir.exists(), "nothing was created");
}

#[actix_rt::test]
async fn a_read_after_a_failed_sync_names_the_failure_not_damage() {
    let fs = SimFs::new(3);
    let mut config = config();
    config.wal.sync_mode = SyncMode::Batch;
    config.wal.batch_size = 1000;
    let (store, _) = concordkv::testing::open_recording_with_fs(config, Arc::new(fs.clone()))
        .await
        .expect("open");
    // Acknowledged when written: none of these is synced yet.
    fill(&store, 0, 20).await;
    fs.inject(fault(Call::SyncData, libc::EIO, ".wal"));
    assert!(store.sync().await.is_err(), "the sync fails");
    // The failed sync cut the segment back to what is durable, and with it
    // the records acknowledged since (within batch mode's bound): a reader
    // hears why the log stopped, not that its files are damaged.
    let read: Vec<_> = store.read(1..).expect("read").collect();
    assert!(
        matches!(read.last(), Some(Err(Error::WalFailed { .. }))),
        "{:?}",
        read.last()
    );
    let _ = store.shutdown().await;
}
