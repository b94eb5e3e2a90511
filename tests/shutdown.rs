//! Shutdown and the directory lock: a snapshot or compaction thread still
//! writing into the directory ends before the lock is released, so another
//! process cannot open the directory while this one still writes into it.
//! (Its own test binary: it arms a pause point for the whole process.)

mod common;

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

#[actix_rt::test]
async fn shutdown_releases_the_lock_only_after_a_running_compaction_ends() {
    // Every maintenance thread waits 800 ms before its job: shutdown is
    // asked for while the compaction is held there.
    std::env::set_var("CONCORDKV_PAUSE_POINT", "maintenance.before_job:800");
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
    let deadline = Instant::now() + Duration::from_secs(10);
    // The thread name is cut to 15 bytes by the kernel.
    while threads_named("concordkv-comp") == 0 {
        assert!(Instant::now() < deadline, "the compaction never started");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
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
