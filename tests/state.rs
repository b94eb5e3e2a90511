//! The readable state shows a write when the sync mode acknowledges it and
//! never earlier: in `always`, not while its `fdatasync` runs, never when
//! that sync fails; an atomic batch appears whole to readers on other
//! threads.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::WrappingFs;
use concordkv::testing::fs::WritableFile;
use concordkv::testing::sim_fs::{Call, Fault, SimFs};
use concordkv::{Entry, Op, SyncMode};

/// A file whose `fdatasync`, once armed, says it began and then waits for
/// the test to let it go on.
struct GatedSyncFile {
    inner: Arc<dyn WritableFile>,
    gate: Arc<Gate>,
}

struct Gate {
    armed: AtomicBool,
    began: Mutex<Sender<()>>,
    go: Mutex<Receiver<()>>,
}

impl WritableFile for GatedSyncFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.gate.armed.load(Ordering::SeqCst) {
            let _ = self.gate.began.lock().expect("gate").send(());
            let _ = self.gate.go.lock().expect("gate").recv();
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

#[actix_rt::test]
async fn always_shows_a_write_only_once_its_fdatasync_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (began_tx, began) = channel();
    let (go, go_rx) = channel();
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(false),
        began: Mutex::new(began_tx),
        go: Mutex::new(go_rx),
    });
    let wrapped = Arc::clone(&gate);
    let fs = WrappingFs(move |_: &Path, inner: Arc<dyn WritableFile>| {
        Arc::new(GatedSyncFile {
            inner,
            gate: Arc::clone(&wrapped),
        }) as Arc<dyn WritableFile>
    });
    let cfg = common::config(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg, Arc::new(fs))
        .await
        .expect("open");
    store.set("before", "1").await.expect("set");
    let state = store.state();
    gate.armed.store(true, Ordering::SeqCst);

    let pending = store
        .submit(Entry::Op(Op::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }))
        .await
        .expect("submit");
    // Wait (off the event loop) until the sync covering it is under way.
    let began =
        actix_rt::task::spawn_blocking(move || began.recv_timeout(Duration::from_secs(30)).is_ok())
            .await
            .expect("join");
    assert!(began, "the sync never began");
    assert!(store.stats().last_seq >= 2, "the record is written");
    assert_eq!(state.get(b"k"), None, "visible while its fdatasync runs");
    assert!(!state.contains(b"k"));
    assert_eq!(state.last_seq(), 1);
    assert_eq!(state.get(b"before").as_deref(), Some(&b"1"[..]));

    gate.armed.store(false, Ordering::SeqCst);
    go.send(()).expect("release the sync");
    let seq = pending.await.expect("acknowledged");
    assert_eq!(state.get(b"k").as_deref(), Some(&b"v"[..]));
    assert_eq!(state.last_seq(), seq);
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_write_whose_sync_fails_never_becomes_visible() {
    let fs = SimFs::new(7);
    let mut cfg = concordkv::Config::with_data_dir("/sim/db");
    cfg.wal.sync_mode = SyncMode::Always;
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg, Arc::new(fs.clone()))
        .await
        .expect("open");
    let state = store.state();
    store.set("kept", "1").await.expect("set");
    fs.inject(Fault {
        call: Call::SyncData,
        nth: 1,
        errno: libc::EIO,
        path_contains: Some(".wal".into()),
        sticky: false,
    });
    store.set("lost", "2").await.expect_err("the sync failed");
    assert_eq!(state.get(b"lost"), None);
    assert_eq!(state.get(b"kept").as_deref(), Some(&b"1"[..]));
    assert_eq!(state.len(), 1);
    let _ = store.shutdown().await;
}

#[actix_rt::test]
async fn a_batch_appears_whole_to_readers_on_other_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::config(dir.path(), SyncMode::None);
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    let state = store.state();
    let keys = ["a", "b", "c"];
    let batch = |i: u32| {
        keys.iter()
            .map(|k| Op::Set {
                key: k.as_bytes().to_vec(),
                value: i.to_string().into_bytes(),
            })
            .collect::<Vec<_>>()
    };
    store.append_batch(batch(0)).await.expect("batch");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (state, stop) = (state.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // One scan chunk is read under one lock: a batch is in it whole or not at all.
                let values: Vec<Vec<u8>> = state.iter().map(|(_, v)| v).collect();
                assert_eq!(values.len(), 3);
                assert!(
                    values.iter().all(|v| *v == values[0]),
                    "a batch showed in part: {values:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=2000 {
        store.append_batch(batch(i)).await.expect("batch");
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader saw every batch whole");
    assert!(reads > 0);
    assert_eq!(state.get(b"c").as_deref(), Some(&b"2000"[..]));
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn the_state_is_what_a_reopen_recovers_and_stays_readable_after_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = common::config(dir.path(), SyncMode::Batch);
    cfg.wal.max_segment_bytes = 4096;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for i in 0..300u32 {
        store
            .set(format!("user:{i:03}"), format!("v{i}"))
            .await
            .expect("set");
        if i % 3 == 0 {
            store
                .delete(format!("user:{:03}", i / 2))
                .await
                .expect("del");
        }
        if i == 150 {
            store.snapshot().await.expect("snapshot");
        }
    }
    let state = store.state();
    let before: Vec<(Vec<u8>, Vec<u8>)> = state.prefix(b"user:").collect();
    store.shutdown().await.expect("shutdown");
    assert_eq!(
        state.iter().count(),
        before.len(),
        "readable after shutdown"
    );
    // The reopen's state is checked against the snapshots and the replayed
    // records by `open_recording`, and here against what was acknowledged.
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.keys, before.len());
    let after: Vec<(Vec<u8>, Vec<u8>)> = store.state().prefix(b"user:").collect();
    assert_eq!(after, before);
    store.shutdown().await.expect("shutdown");
}
