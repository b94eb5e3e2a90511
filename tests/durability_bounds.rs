//! What a sync mode promises, held under a slow disk and after a failed
//! sync: `batch` and `interval` acknowledge only within their loss bound
//! while an `fdatasync` drags on, and an open whose sync failed leaves the
//! directory refused until the next boot.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::WrappingFs;
use concordkv::testing::fs::WritableFile;
use concordkv::testing::sim_fs::{Call, Fault, SimFs};
use concordkv::{Config, Entry, Error, Op, Store, SyncMode};

/// A file whose every `fdatasync` takes `delay` longer once armed.
struct SlowSyncFile {
    inner: Arc<dyn WritableFile>,
    armed: Arc<AtomicBool>,
    delay: Duration,
}

impl WritableFile for SlowSyncFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            std::thread::sleep(self.delay);
        }
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

/// Opens a store on a disk whose syncs take `delay` once the open is done.
async fn open_slow(
    dir: &Path,
    mode: SyncMode,
    delay: Duration,
    tune: impl FnOnce(&mut Config),
) -> Store {
    let mut cfg = common::config(dir, mode);
    tune(&mut cfg);
    let armed = Arc::new(AtomicBool::new(false));
    let slow = Arc::clone(&armed);
    let fs = WrappingFs(move |_: &Path, inner: Arc<dyn WritableFile>| {
        Arc::new(SlowSyncFile {
            inner,
            armed: Arc::clone(&slow),
            delay,
        }) as Arc<dyn WritableFile>
    });
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg, Arc::new(fs))
        .await
        .expect("open");
    armed.store(true, Ordering::SeqCst);
    store
}

/// Submits `n` appends and counts their acknowledgements as they come.
async fn submit_counted(store: &Store, n: u32) -> Arc<AtomicU64> {
    let acked = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let pending = store
            .submit(Entry::Op(Op::Set {
                key: format!("k{i}").into_bytes(),
                value: vec![1; 32],
            }))
            .await
            .expect("submit");
        let acked = Arc::clone(&acked);
        actix_rt::spawn(async move {
            if pending.await.is_ok() {
                acked.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    acked
}

#[actix_rt::test]
async fn batch_mode_never_acknowledges_more_than_a_batch_ahead_of_a_slow_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_slow(
        dir.path(),
        SyncMode::Batch,
        Duration::from_millis(300),
        |c| {
            c.wal.batch_size = 10;
            c.wal.max_segment_bytes = 64 << 20;
        },
    )
    .await;
    let acked = submit_counted(&store, 100).await;
    let mut samples = 0;
    for _ in 0..40 {
        actix_rt::time::sleep(Duration::from_millis(25)).await;
        // Acknowledgements first: the durable point read after them can only be higher.
        let a = acked.load(Ordering::SeqCst);
        let durable = store.stats().durable_seq;
        assert!(
            a <= durable + 10,
            "{a} acknowledged while only {durable} are durable (batch_size 10)"
        );
        samples += 1;
    }
    assert!(samples > 0);
    store.shutdown().await.expect("shutdown");
    assert_eq!(
        acked.load(Ordering::SeqCst),
        100,
        "all acknowledged in the end"
    );
}

#[actix_rt::test]
async fn interval_mode_stops_acknowledging_once_the_unsynced_writes_are_an_interval_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_slow(
        dir.path(),
        SyncMode::Interval,
        Duration::from_millis(1500),
        |c| {
            c.wal.sync_interval_ms = 50;
            // No rotation, whose seal would wait for the slow sync anyway.
            c.wal.max_segment_bytes = 64 << 20;
        },
    )
    .await;
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let store = store.clone();
        let acked = Arc::clone(&acked);
        actix_rt::spawn(async move {
            for i in 0..100_000u32 {
                if store.set(format!("k{i}"), "v").await.is_err() {
                    break;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The first sync starts at the first tick and hangs for 1.5 s.
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let (a1, d1) = (acked.load(Ordering::SeqCst), store.stats().durable_seq);
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let (a2, d2) = (acked.load(Ordering::SeqCst), store.stats().durable_seq);
    assert!(
        a1 > 0,
        "appends younger than the interval are acknowledged before any sync"
    );
    assert_eq!(d1, d2, "the sync is still in flight");
    assert_eq!(
        a1, a2,
        "nothing is acknowledged while the oldest unsynced write is older than the interval"
    );
    writer.abort();
    store.shutdown().await.expect("shutdown");
}

fn sim_config() -> Config {
    let mut config = Config::with_data_dir(PathBuf::from("/sim/db"));
    config.wal.sync_mode = SyncMode::None;
    config.compaction.threshold = u64::MAX;
    config
}

#[actix_rt::test]
async fn an_open_whose_sync_failed_leaves_the_directory_refused_until_a_reboot() {
    let fs = SimFs::new(7);
    let (store, _) = concordkv::testing::open_recording_with_fs(sim_config(), Arc::new(fs.clone()))
        .await
        .expect("open");
    for i in 0..20u32 {
        store.set(format!("k{i}"), "v").await.expect("set");
    }
    store.shutdown().await.expect("shutdown");
    // The next open's sync of the newest segment fails: from then on the
    // page cache may show records the disk does not hold.
    fs.inject(Fault {
        call: Call::SyncAll,
        nth: 1,
        errno: libc::EIO,
        path_contains: Some(".wal".into()),
        sticky: false,
    });
    let err = concordkv::testing::open_recording_with_fs(sim_config(), Arc::new(fs.clone()))
        .await
        .err()
        .expect("the sealing sync fails");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = concordkv::testing::open_recording_with_fs(sim_config(), Arc::new(fs.clone()))
        .await
        .err()
        .expect("the same boot does not trust the page cache again");
    assert!(
        matches!(&err, Error::Untrusted(reason) if reason.contains("SYNC_FAILED")),
        "{err}"
    );
    let (rebooted, _) = fs.reboot(8);
    let (store, recovery) =
        concordkv::testing::open_recording_with_fs(sim_config(), Arc::new(rebooted))
            .await
            .expect("a new boot opens what the disk holds");
    assert!(recovery.last_seq <= 20);
    store.shutdown().await.expect("shutdown");
}
