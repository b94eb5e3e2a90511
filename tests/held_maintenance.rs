//! Maintenance held at a pause point, so that a test can act while it runs:
//! a compaction thread still writing into the directory ends before the
//! lock is released, so another process cannot open the directory while
//! this one still writes into it; and a compaction (in the idle class)
//! gives way to a `SAVE` queued behind it.
//! (Its own test binary: it arms a pause point for the whole process.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config;
use concordkv::SyncMode;

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// The tests find the threads they wait for by name in the process, so
/// they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every maintenance thread waits 800 ms before its job, so that the tests
/// can act while one is held there.
fn hold_maintenance() {
    std::env::set_var("CONCORDKV_PAUSE_POINT", "maintenance.before_job:800");
}

/// Waits until a thread whose name starts with `prefix` runs.
async fn started(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_named(prefix) == 0 {
        assert!(Instant::now() < deadline, "{prefix} never started");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn shutdown_releases_the_lock_only_after_a_running_compaction_ends() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Shutdown is asked for while the compaction is held.
    hold_maintenance();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for k in 0..200u32 {
        store.set(format!("k{k}"), "v").await.expect("set");
    }
    let compaction = actix_rt::spawn({
        let store = store.clone();
        async move { store.compact().await }
    });
    // The thread name is cut to 15 bytes by the kernel.
    started("concordkv-comp").await;
    store.shutdown().await.expect("shutdown");
    // The job has ended; its thread may take a moment more to exit. Were
    // the lock released early, the thread would still be held for most of
    // the 800 ms pause.
    let exited = Instant::now() + Duration::from_millis(300);
    while threads_named("concordkv-comp") > 0 {
        assert!(
            Instant::now() < exited,
            "the directory was released while the compaction thread still ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (reopened, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("the directory is free");
    assert_eq!(recovery.state().len(), 200);
    reopened.shutdown().await.expect("shutdown");
    let _ = compaction.await;
}

/// A compaction runs in the idle class, which an unprivileged process cannot
/// raise back: a `SAVE` queued behind it would wait for as long as other
/// processes keep the CPU busy. The compaction stops for it instead, and is
/// run again after it.
#[actix_rt::test]
async fn a_waited_snapshot_overtakes_a_compaction_queued_ahead_of_it() {
    let _alone = ONE_AT_A_TIME.lock().await;
    hold_maintenance();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for k in 0..200u32 {
        store.set(format!("k{k}"), "v").await.expect("set");
    }
    let finished = Arc::new(Mutex::new(Vec::new()));
    let compaction = actix_rt::spawn({
        let (store, finished) = (store.clone(), Arc::clone(&finished));
        async move {
            let outcome = store.compact().await;
            finished.lock().expect("lock").push("compaction");
            outcome
        }
    });
    started("concordkv-comp").await;
    store
        .set("after", "the compaction started")
        .await
        .expect("set");
    let save = store
        .begin_snapshot_waited(concordkv::SnapshotKind::Full)
        .expect("no snapshot runs");
    let header = save.await.expect("save").expect("a snapshot was written");
    finished.lock().expect("lock").push("save");
    assert_eq!(
        header.to_seq, 201,
        "the snapshot covers the write before it"
    );
    compaction
        .await
        .expect("compaction task")
        .expect("the compaction ran after the save");
    assert_eq!(
        *finished.lock().expect("lock"),
        ["save", "compaction"],
        "the save waited for the compaction queued ahead of it"
    );
    store.shutdown().await.expect("shutdown");
    let (reopened, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.state().len(), 201);
    reopened.shutdown().await.expect("shutdown");
}
