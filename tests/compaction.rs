//! Compaction: sealed segments are rewritten down to the latest value of
//! each key, by itself when enough is redundant and on request, without
//! changing what recovery returns.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{config, frame_ranges, started_segments};
use concordkv::testing::format::segment::SEGMENT_HEADER_BYTES;
use concordkv::{Config, SyncMode};

fn compacting(dir: &Path, mode: SyncMode) -> Config {
    let mut cfg = config(dir, mode);
    cfg.compaction.threshold = 1000;
    cfg.compaction.ratio = 0.3;
    cfg.snapshot.keep = 1;
    cfg
}

/// Bytes the store's files hold: snapshots whole, segments up to their last
/// record (not the preallocated zeros after it).
fn stored_bytes(dir: &Path) -> u64 {
    let snapshots: u64 = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    let segments: u64 = started_segments(dir)
        .iter()
        .map(|p| {
            frame_ranges(p)
                .last()
                .map_or(SEGMENT_HEADER_BYTES, |r| r.end) as u64
        })
        .sum();
    snapshots + segments
}

fn snapshot_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "snap")
        })
        .count()
}

#[actix_rt::test]
async fn overwriting_1000_keys_100_times_compacts_to_within_10_percent_of_the_live_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = compacting(dir.path(), SyncMode::None);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    let mut model = BTreeMap::new();
    let writers: Vec<_> = (0..10u32)
        .map(|w| {
            let store = store.clone();
            actix_rt::spawn(async move {
                for round in 0..100u32 {
                    for k in (w * 100)..(w * 100 + 100) {
                        let value = vec![(round % 251) as u8; 500];
                        store.set(format!("key-{k:04}"), value).await.expect("set");
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    for k in 0..1000u32 {
        model.insert(format!("key-{k:04}").into_bytes(), vec![99u8; 500]);
    }
    // The rotation compact() asks for seals a segment, which may start an
    // automatic compaction that covers everything first; then compact()
    // finds nothing left and says so. Either way the log is compacted.
    match store.compact().await.expect("compact") {
        Some(report) => {
            assert_eq!(report.upto, 100_000);
            assert_eq!(report.entries_after, 1000);
            assert!(report.bytes_after < report.bytes_before, "{report:?}");
        }
        None => {
            let newest = store.snapshots().iter().map(|s| s.to_seq).max();
            assert_eq!(newest, Some(100_000), "a compaction covered every record");
        }
    }
    let live: u64 = model.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    let stored = stored_bytes(dir.path());
    eprintln!(
        "after compaction: {stored} bytes stored for {live} bytes of live data ({:.3}x)",
        stored as f64 / live as f64
    );
    assert!(
        stored as f64 <= 1.1 * live as f64,
        "stored {stored} bytes for {live} bytes of live data ({:.3}x)",
        stored as f64 / live as f64
    );
    store.shutdown().await.expect("shutdown");
    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.state(), model);
    assert_eq!(recovery.last_seq, 100_000);
}

#[actix_rt::test]
async fn compaction_starts_by_itself_when_enough_is_redundant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = compacting(dir.path(), SyncMode::None);
    cfg.compaction.threshold = 200;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for round in 0..40u32 {
        for k in 0..50u32 {
            store
                .set(format!("k{k}"), vec![round as u8; 200])
                .await
                .expect("set");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshot_count(dir.path()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no automatic compaction happened"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    store.shutdown().await.expect("shutdown");
    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert!(recovery.snapshots >= 1);
    let state = recovery.state();
    assert_eq!(state.len(), 50);
    assert!(state.values().all(|v| v == &vec![39u8; 200]));
}

#[actix_rt::test]
async fn nothing_redundant_means_no_automatic_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = compacting(dir.path(), SyncMode::None);
    cfg.compaction.threshold = 100;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    for k in 0..3000u32 {
        store
            .set(format!("unique-{k}"), vec![1u8; 200])
            .await
            .expect("set");
    }
    let rotations = store.stats().rotations;
    assert!(rotations >= 5, "the workload seals segments ({rotations})");
    // Give a wrongly started compaction time to show itself.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        snapshot_count(dir.path()),
        0,
        "unique keys leave nothing to compact"
    );
    assert!(
        started_segments(dir.path()).len() as u64 > rotations,
        "no segment was retired"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn compaction_keeps_deletions_out_and_state_intact_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = compacting(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for k in 0..100u32 {
        store.set(format!("k{k}"), "v").await.expect("set");
    }
    for k in 0..50u32 {
        store.delete(format!("k{k}")).await.expect("delete");
    }
    let report = store.compact().await.expect("compact").expect("compacted");
    assert_eq!(
        report.entries_after, 50,
        "deleted keys are dropped from the output"
    );
    assert!(
        store.compact().await.expect("compact again").is_none(),
        "nothing new to compact"
    );
    store.set("k0", "back").await.expect("set");
    store.shutdown().await.expect("shutdown");
    let (_store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    let state = recovery.state();
    assert_eq!(state.len(), 51);
    assert_eq!(state.get(b"k0".as_slice()), Some(&b"back".to_vec()));
    assert!(!state.contains_key(b"k1".as_slice()));
}

#[actix_rt::test]
async fn a_compaction_asked_for_while_one_runs_is_refused_without_rotating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = compacting(dir.path(), SyncMode::Always);
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    for k in 0..100u32 {
        store.set(format!("k{k}"), "v").await.expect("set");
    }
    let segments_before = started_segments(dir.path()).len();
    let first = store.begin_compaction().expect("the first starts");
    for _ in 0..100 {
        assert!(
            matches!(
                store.begin_compaction(),
                Err(concordkv::Error::InProgress(_))
            ),
            "a second compaction is refused while the first runs"
        );
    }
    assert!(matches!(
        store.compact().await,
        Err(concordkv::Error::InProgress(_))
    ));
    assert_eq!(
        started_segments(dir.path()).len(),
        segments_before,
        "a refused compaction rotates nothing"
    );
    first.await.expect("first compaction").expect("compacted");
    assert!(
        store.compact().await.is_ok(),
        "once it ended, the next one runs"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn shutdown_cancels_a_running_compaction_instead_of_waiting_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), SyncMode::None);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    let value = |k: u32| format!("{k:01024}");
    for k in 0..8000u32 {
        store.set(format!("k{k}"), value(k)).await.expect("set");
    }
    store.shutdown().await.expect("shutdown");
    // Reopened with the slowest write rate: the 8 MB snapshot takes about
    // 8 s to write, so a shutdown that waited for it would too.
    let mut slow = cfg.clone();
    slow.maintenance.write_bytes_per_sec = 1 << 20;
    let (store, _) = concordkv::testing::open_recording(slow)
        .await
        .expect("reopen");
    let compaction = actix_rt::spawn({
        let store = store.clone();
        async move { store.compact().await }
    });
    let writing = || {
        std::fs::read_dir(dir.path()).expect("read dir").any(|e| {
            e.expect("entry")
                .path()
                .to_string_lossy()
                .ends_with(".snap.tmp")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !writing() {
        assert!(Instant::now() < deadline, "the compaction never wrote");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = Instant::now();
    store.shutdown().await.expect("shutdown");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "shutdown waited {took:?} for a compaction it should have cancelled"
    );
    assert!(
        matches!(
            compaction.await.expect("task"),
            Err(concordkv::Error::ShutDown)
        ),
        "the cancelled compaction says why it ended"
    );
    assert!(
        !writing(),
        "the cancelled snapshot's temporary file is gone"
    );
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    let state = recovery.state();
    assert_eq!(state.len(), 8000);
    assert!(
        (0..8000u32).all(|k| state.get(format!("k{k}").as_bytes()) == Some(&value(k).into_bytes()))
    );
    assert!(
        store.compact().await.expect("compact").is_some(),
        "the next open compacts what the cancelled one did not"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn segments_sealed_during_an_automatic_compaction_are_compacted_when_it_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = compacting(dir.path(), SyncMode::None);
    cfg.wal.max_segment_bytes = 1 << 20;
    cfg.compaction.threshold = 100;
    // The slowest rate: a compaction of 300 values of 16 KiB writes for
    // about 5 s, longer than the writes below take.
    cfg.maintenance.write_bytes_per_sec = 1 << 20;
    let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
    let value = |round: u32| format!("{round:016384}");
    let quiet = || async {
        while store.persistence_info().compacting {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for k in 0..300u32 {
        store.set(format!("k{k}"), value(0)).await.expect("set");
    }
    quiet().await;
    for round in 1..=3u32 {
        for k in 0..300u32 {
            store.set(format!("k{k}"), value(round)).await.expect("set");
        }
    }
    assert!(
        store.persistence_info().compacting,
        "a compaction runs as the writes end (else this tests nothing)"
    );
    let last = store.stats().last_seq;
    // No write after this: only the end of that compaction can start the
    // next. The segment still active (64 records of 1 MiB) is never
    // compacted, nor the one sealed last if it holds fewer records than
    // the threshold.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let covered = store.persistence_info().last_snapshot_seq;
        if covered + 2 * 64 >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compactions stopped at {covered} of {last} records, though the sealed rest is redundant"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    store.shutdown().await.expect("shutdown");
}
