//! The store's life: appends of every kind across restarts, sequence
//! numbers, rotation, limits and the sync modes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{config, started_segments, state};
use concordkv::{Entry, Error, Op, Store, SyncMode};

#[actix_rt::test]
async fn set_delete_and_batch_survive_a_restart_and_sequence_numbers_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("open");
    assert!(recovery.records.is_empty());
    assert_eq!(store.set("a", "1").await.expect("set"), 1);
    assert_eq!(store.set("b", "2").await.expect("set"), 2);
    assert_eq!(store.delete("a").await.expect("delete"), 3);
    let batch = vec![
        Op::Set {
            key: b"c".to_vec(),
            value: b"3".to_vec(),
        },
        Op::Delete { key: b"b".to_vec() },
    ];
    assert_eq!(store.append_batch(batch.clone()).await.expect("batch"), 4);
    store.shutdown().await.expect("shutdown");
    assert!(matches!(store.set("x", "y").await, Err(Error::ShutDown)));

    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("reopen");
    let seqs: Vec<u64> = recovery.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(recovery.records[3].entry, Entry::Batch(batch));
    let map = state(&recovery.records);
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(b"c".as_slice()), Some(&b"3".to_vec()));
    assert_eq!(recovery.last_seq, 4);
    assert_eq!(store.set("d", "4").await.expect("set after restart"), 5);
    store.shutdown().await.expect("shutdown");

    let (_store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("reopen");
    assert_eq!(recovery.last_seq, 5);
    assert!(
        recovery.truncated.is_none(),
        "a clean shutdown leaves no torn tail"
    );
}

async fn concurrent_appenders(mode: SyncMode, dedicated_writer_thread: bool) {
    const WRITERS: usize = 64;
    const PER_WRITER: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), mode);
    cfg.wal.dedicated_writer_thread = dedicated_writer_thread;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            actix_rt::spawn(async move {
                let mut seqs = Vec::with_capacity(PER_WRITER);
                for i in 0..PER_WRITER {
                    let seq = store
                        .set(format!("w{w}-{i}"), vec![b'v'; 100])
                        .await
                        .expect("append acknowledged");
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("writer task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's sequence numbers increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=(WRITERS * PER_WRITER) as u64).collect();
    assert_eq!(all, expected, "sequence numbers are unique and gap-free");
    let stats = store.stats();
    assert_eq!(stats.records, (WRITERS * PER_WRITER) as u64);
    assert!(
        stats.rotations > 0,
        "100-byte records in 64 KiB segments must rotate"
    );
    store.shutdown().await.expect("shutdown");

    let (_store, recovery) = concordkv::testing::open_recording(config(dir.path(), mode))
        .await
        .expect("reopen");
    assert_eq!(recovery.records.len(), WRITERS * PER_WRITER);
    assert!(recovery.records.iter().zip(1..).all(|(r, s)| r.seq == s));
    assert!(recovery.segments > 1, "recovery spans many segments");
    let keys: HashSet<_> = state(&recovery.records).into_keys().collect();
    assert_eq!(keys.len(), WRITERS * PER_WRITER);
}

#[actix_rt::test]
async fn sixty_four_appenders_always_mode_all_acknowledged_and_recovered() {
    concurrent_appenders(SyncMode::Always, false).await;
}

#[actix_rt::test]
async fn sixty_four_appenders_always_mode_on_a_dedicated_writer_thread() {
    concurrent_appenders(SyncMode::Always, true).await;
}

#[actix_rt::test]
async fn sixty_four_appenders_none_mode_all_acknowledged_and_recovered() {
    concurrent_appenders(SyncMode::None, false).await;
}

#[actix_rt::test]
async fn rotation_spans_many_segments_in_sequence_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Batch);
    cfg.wal.max_segment_bytes = 4096;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for i in 0..500u32 {
        store
            .set(i.to_be_bytes().to_vec(), vec![7u8; 64])
            .await
            .expect("set");
    }
    // A record larger than a whole segment gets a segment of its own.
    store
        .set("big", vec![1u8; 10_000])
        .await
        .expect("oversized record");
    store.set("after", "x").await.expect("set after big");
    store.shutdown().await.expect("shutdown");
    let files = started_segments(dir.path());
    assert!(
        files.len() >= 10,
        "expected many segments, got {}",
        files.len()
    );
    for file in &files[..files.len() - 1] {
        let len = std::fs::metadata(file).expect("stat").len();
        assert!(
            len <= 4096 || len > 10_000,
            "sealed segment {} has {len} bytes",
            file.display()
        );
    }
    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.records.len(), 502);
    assert!(recovery.records.iter().zip(1..).all(|(r, s)| r.seq == s));
    assert_eq!(
        state(&recovery.records)
            .get(b"big".as_slice())
            .map(Vec::len),
        Some(10_000)
    );
}

#[actix_rt::test]
async fn invalid_requests_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.limits.max_key_bytes = 16;
    cfg.limits.max_value_bytes = 100;
    cfg.limits.max_record_bytes = 1024;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    let err = store.set("", "v").await.unwrap_err();
    assert!(err.to_string().contains("empty key"), "{err}");
    let err = store.set(vec![b'k'; 17], "v").await.unwrap_err();
    assert!(err.to_string().contains("limits.max_key_bytes"), "{err}");
    let err = store.set("k", vec![0u8; 101]).await.unwrap_err();
    assert!(err.to_string().contains("limits.max_value_bytes"), "{err}");
    let big_batch: Vec<Op> = (0..20)
        .map(|i| Op::Set {
            key: format!("k{i}").into_bytes(),
            value: vec![0; 90],
        })
        .collect();
    let err = store.append_batch(big_batch).await.unwrap_err();
    assert!(err.to_string().contains("limits.max_record_bytes"), "{err}");
    let err = store
        .append_batch(vec![Op::Delete { key: Vec::new() }])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)));
    assert_eq!(
        store.set("ok", "v").await.expect("valid set"),
        1,
        "refused requests use no sequence number"
    );
    store.shutdown().await.expect("shutdown");
    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.records.len(), 1);
}

/// Waits (bounded) until every written record is durable; false on timeout.
async fn durable_within(store: &Store, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let s = store.stats();
        if s.durable_seq == s.last_seq {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Waits (bounded) until `durable_seq` reaches `seq`; false on timeout.
async fn durable_reaches(store: &Store, seq: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if store.stats().durable_seq >= seq {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[actix_rt::test]
async fn batch_mode_syncs_every_batch_size_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Batch);
    cfg.wal.batch_size = 10;
    cfg.wal.batch_max_delay_ms = 60_000;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    for i in 0..95u32 {
        store.set(i.to_be_bytes().to_vec(), "v").await.expect("set");
    }
    assert_eq!(store.stats().last_seq, 95);
    assert!(
        durable_reaches(&store, 90, Duration::from_secs(5)).await,
        "9 full batches are synced"
    );
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.stats().durable_seq,
        90,
        "a partial batch waits for its size or its delay"
    );
    assert_eq!(store.sync().await.expect("sync"), 95);
    assert_eq!(store.stats().durable_seq, 95);
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn batch_mode_syncs_a_partial_batch_after_the_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Batch);
    cfg.wal.batch_size = 1000;
    cfg.wal.batch_max_delay_ms = 20;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    for i in 0..5u32 {
        store.set(i.to_be_bytes().to_vec(), "v").await.expect("set");
    }
    assert!(
        durable_within(&store, Duration::from_secs(5)).await,
        "the timer syncs a partial batch"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn interval_mode_syncs_on_the_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Interval);
    cfg.wal.sync_interval_ms = 50;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    let before = store.stats().syncs;
    store.set("k", "v").await.expect("set");
    assert!(durable_within(&store, Duration::from_secs(5)).await);
    assert!(store.stats().syncs > before);
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn none_mode_syncs_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::None))
        .await
        .expect("open");
    for i in 0..50u32 {
        store.set(i.to_be_bytes().to_vec(), "v").await.expect("set");
    }
    assert_eq!(
        store.stats().syncs,
        0,
        "none mode leaves flushing to the OS"
    );
    assert_eq!(store.sync().await.expect("sync"), 50);
    let stats = store.stats();
    assert_eq!(stats.durable_seq, 50);
    assert_eq!(stats.synced_records, 50);
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("second open fails");
    assert!(err.to_string().contains("in use"), "{err}");
    store.shutdown().await.expect("shutdown");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open after shutdown");
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn an_invalid_config_opens_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cfg = config(&data, SyncMode::Always);
    cfg.wal.max_segment_bytes = 10;
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("wal.max_segment_bytes"), "{err}");
    assert!(
        !data.exists(),
        "nothing is created for a refused configuration"
    );
}

#[actix_rt::test]
async fn shutdown_lets_go_of_everything_the_store_held() {
    let fs: std::sync::Arc<dyn concordkv::testing::fs::FileSystem> =
        std::sync::Arc::new(concordkv::testing::sim_fs::SimFs::new(1));
    let mut cfg = concordkv::Config::with_data_dir("/sim/released");
    cfg.wal.sync_mode = SyncMode::Always;
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg, std::sync::Arc::clone(&fs))
        .await
        .expect("open");
    store.set("k", "v").await.expect("set");
    store.shutdown().await.expect("shutdown");
    drop(store);
    // Every actor and thread of the store drops its handle on the files
    // (the metrics actor at its next tick, within a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::sync::Arc::strong_count(&fs) > 1 {
        assert!(
            Instant::now() < deadline,
            "{} holders of the store's files remain after shutdown",
            std::sync::Arc::strong_count(&fs) - 1
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn a_store_dropped_without_shutdown_syncs_what_it_acknowledged() {
    let sim = concordkv::testing::sim_fs::SimFs::new(3);
    let fs: std::sync::Arc<dyn concordkv::testing::fs::FileSystem> =
        std::sync::Arc::new(sim.clone());
    let mut cfg = concordkv::Config::with_data_dir("/sim/dropped");
    // Acknowledged once written: only a sync at close makes them durable.
    cfg.wal.sync_mode = SyncMode::Batch;
    cfg.wal.batch_size = 1_000_000;
    cfg.wal.batch_max_delay_ms = 60_000;
    let (store, _) =
        concordkv::testing::open_recording_with_fs(cfg.clone(), std::sync::Arc::clone(&fs))
            .await
            .expect("open");
    for i in 0..50u32 {
        store.set(format!("k{i}"), "v").await.expect("set");
    }
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::sync::Arc::strong_count(&fs) > 1 {
        assert!(
            Instant::now() < deadline,
            "{} holders of the store's files remain after the store was dropped",
            std::sync::Arc::strong_count(&fs) - 1
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // The power goes: only what was synced is left.
    let (rebooted, _) = sim.reboot(4);
    let (store, recovery) =
        concordkv::testing::open_recording_with_fs(cfg, std::sync::Arc::new(rebooted))
            .await
            .expect("open after the power cut");
    assert_eq!(recovery.last_seq, 50, "acknowledged appends were lost");
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_dropped_store_lets_the_same_process_open_its_directory_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::config(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    store.set("k", "v").await.expect("set");
    drop(store);
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("open again right after the drop");
    assert_eq!(recovery.last_seq, 1);
    store.shutdown().await.expect("shutdown");
}
