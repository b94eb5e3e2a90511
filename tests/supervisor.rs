//! A WAL actor that panics is noticed and restarted; the appenders waiting on
//! it get an error, never a hang and never a false acknowledgement.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, state, WrappingFs};
use concordkv::testing::fs::{FileSystem, WritableFile};
use concordkv::{Error, SyncMode};

/// The real disk, whose segment writes (or syncs) panic once armed. Only
/// segments (created as `<n>.wal.prep`, then renamed), which only the WAL
/// actor writes; not the manifest or snapshots.
fn panicking_fs(armed: &Arc<AtomicBool>, sync_armed: &Arc<AtomicBool>) -> Arc<dyn FileSystem> {
    let (armed, sync_armed) = (Arc::clone(armed), Arc::clone(sync_armed));
    Arc::new(WrappingFs(
        move |path: &Path, inner: Arc<dyn WritableFile>| {
            if !path.to_string_lossy().contains(".wal") {
                return inner;
            }
            Arc::new(PanickingFile {
                inner,
                armed: Arc::clone(&armed),
                sync_armed: Arc::clone(&sync_armed),
            }) as Arc<dyn WritableFile>
        },
    ))
}

struct PanickingFile {
    inner: Arc<dyn WritableFile>,
    armed: Arc<AtomicBool>,
    sync_armed: Arc<AtomicBool>,
}

impl WritableFile for PanickingFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Only the WAL's writes: the rotator's zero fill of the next
        // segment, on a thread of its own, writes nothing but zeros.
        let wal_write = buf.iter().any(|&b| b != 0);
        if wal_write && self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the WAL writer");
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.sync_armed.load(Ordering::SeqCst) {
            panic!("injected panic in the sync thread");
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
async fn a_panicking_wal_actor_is_restarted_and_its_waiters_get_an_error() {
    panic_and_restart(false).await;
}

#[actix_rt::test]
async fn a_panicking_wal_actor_on_its_own_thread_is_restarted() {
    panic_and_restart(true).await;
}

async fn panic_and_restart(dedicated_writer_thread: bool) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let armed = Arc::new(AtomicBool::new(false));
    let fs = panicking_fs(&armed, &Arc::new(AtomicBool::new(false)));
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.dedicated_writer_thread = dedicated_writer_thread;
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg.clone(), fs)
        .await
        .expect("open");
    store
        .set("before", "1")
        .await
        .expect("set before the panic");

    armed.store(true, Ordering::SeqCst);
    let outcome = actix_rt::time::timeout(Duration::from_secs(10), store.set("doomed", "2"))
        .await
        .expect("the waiter is answered, not left hanging");
    assert!(matches!(outcome, Err(Error::ActorDied)), "{outcome:?}");

    // The supervisor re-validates the files and starts a new actor; appends
    // work again once it is up.
    let mut acknowledged = None;
    for _ in 0..500 {
        let attempt =
            actix_rt::time::timeout(Duration::from_secs(10), store.set("after", "3")).await;
        match attempt.expect("an append after the restart is answered") {
            Ok(seq) => {
                acknowledged = Some(seq);
                break;
            }
            Err(Error::ActorDied) => actix_rt::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("unexpected error while restarting: {other}"),
        }
    }
    let seq = acknowledged.expect("appends resume after the restart");
    assert_eq!(
        seq, 2,
        "the record that died unwritten used no sequence number"
    );
    actix_rt::time::timeout(Duration::from_secs(10), store.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("shutdown");

    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    let map = state(&recovery.records);
    assert_eq!(map.get(b"before".as_slice()), Some(&b"1".to_vec()));
    assert_eq!(map.get(b"after".as_slice()), Some(&b"3".to_vec()));
    assert!(
        !map.contains_key(b"doomed".as_slice()),
        "the panicking write never reached the file"
    );
}

#[actix_rt::test]
async fn a_panicking_sync_thread_fails_its_waiters_instead_of_hanging_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sync_armed = Arc::new(AtomicBool::new(false));
    let fs = panicking_fs(&Arc::new(AtomicBool::new(false)), &sync_armed);
    let (store, _) =
        concordkv::testing::open_recording_with_fs(config(dir.path(), SyncMode::Always), fs)
            .await
            .expect("open");
    store
        .set("before", "1")
        .await
        .expect("set before the panic");
    sync_armed.store(true, Ordering::SeqCst);
    let outcome = actix_rt::time::timeout(Duration::from_secs(10), store.set("doomed", "2"))
        .await
        .expect("the waiter is answered, not left hanging");
    assert!(
        matches!(outcome, Err(Error::Panicked { what }) if what.contains("sync thread")),
        "an append whose sync panicked is not acknowledged, and learns why: {outcome:?}"
    );
    let later = actix_rt::time::timeout(Duration::from_secs(10), store.set("later", "3"))
        .await
        .expect("answered");
    assert!(
        matches!(&later, Err(Error::WalFailed { cause }) if matches!(**cause, Error::Panicked { .. })),
        "{later:?}"
    );
    let stopped = actix_rt::time::timeout(Duration::from_secs(10), store.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(stopped.is_err(), "shutdown reports that the log failed");
}
