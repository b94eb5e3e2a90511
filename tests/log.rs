//! `Log`: opaque payloads on the WAL machinery, recovered in order with
//! their sequence numbers, in a directory no key-value store opens.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config, segments};
use concordkv::testing::format::manifest::{DirKind, Manifest, MANIFEST_FILE};
use concordkv::testing::format::segment::{segment_file_name, SegmentHeader};
use concordkv::{Config, Entry, Error, Log, Seq, Store, SyncMode};

fn payload(i: u64) -> Vec<u8> {
    format!("payload-{i}-")
        .repeat((i % 7 + 1) as usize)
        .into_bytes()
}

/// Reopens `cfg`'s log, returning what it replayed.
async fn reopen(cfg: &Config) -> (Log, concordkv::LogRecovery, Vec<(Seq, Vec<u8>)>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let (log, recovery) = Log::open_replaying(cfg.clone(), move |seq, bytes| {
        sink.lock().expect("lock").push((seq, bytes.to_vec()));
    })
    .await
    .expect("reopen");
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    (log, recovery, seen)
}

#[actix_rt::test]
async fn payloads_come_back_in_order_with_their_sequence_numbers_in_every_sync_mode() {
    for mode in [
        SyncMode::Always,
        SyncMode::Batch,
        SyncMode::Interval,
        SyncMode::None,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), mode);
        cfg.wal.max_segment_bytes = 4096;
        let (log, recovery) = Log::open(cfg.clone()).await.expect("open");
        assert_eq!((recovery.first_seq, recovery.last_seq), (1, 0));
        assert_eq!((log.first_seq(), log.last_seq()), (1, 0));
        for i in 1..=300u64 {
            assert_eq!(log.append(payload(i)).await.expect("append"), i, "{mode:?}");
        }
        assert_eq!(log.append(Vec::new()).await.expect("empty payload"), 301);
        assert_eq!(log.last_seq(), 301);
        log.shutdown().await.expect("shutdown");
        assert!(segments(dir.path()).len() > 3, "the log rotated");

        let (log, recovery, seen) = reopen(&cfg).await;
        assert_eq!((recovery.first_seq, recovery.last_seq), (1, 301));
        assert_eq!(recovery.replayed, 301);
        let mut expected: Vec<(Seq, Vec<u8>)> = (1..=300).map(|i| (i, payload(i))).collect();
        expected.push((301, Vec::new()));
        assert_eq!(seen, expected, "{mode:?}");
        assert_eq!(log.last_seq(), 301);
        assert_eq!(log.append(b"next".to_vec()).await.expect("append"), 302);
        log.shutdown().await.expect("shutdown");
    }
}

#[actix_rt::test]
async fn a_batch_gets_contiguous_sequence_numbers_among_concurrent_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    let mut tasks = Vec::new();
    for writer in 0..4u64 {
        let log = log.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut firsts = Vec::new();
            for round in 0..20u64 {
                let batch: Vec<Vec<u8>> = (0..5u64)
                    .map(|i| format!("w{writer}-r{round}-{i}").into_bytes())
                    .collect();
                let first = log.append_batch(batch).await.expect("batch");
                // A single append between batches, from the same writer.
                log.append(format!("w{writer}-single-{round}").into_bytes())
                    .await
                    .expect("append");
                firsts.push((writer, round, first));
            }
            firsts
        }));
    }
    let mut firsts = Vec::new();
    for task in tasks {
        firsts.extend(task.await.expect("task"));
    }
    assert!(matches!(
        log.append_batch(Vec::new()).await,
        Err(Error::InvalidRequest(_))
    ));
    log.shutdown().await.expect("shutdown");

    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!(recovery.last_seq, 4 * 20 * 6);
    for (writer, round, first) in firsts {
        for i in 0..5u64 {
            let (seq, bytes) = &seen[(first + i - 1) as usize];
            assert_eq!(*seq, first + i);
            assert_eq!(bytes, format!("w{writer}-r{round}-{i}").as_bytes());
        }
    }
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_store_and_a_log_refuse_each_others_directories() {
    let kv = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(config(kv.path(), SyncMode::Always))
        .await
        .expect("open store");
    store.set("k", "v").await.expect("set");
    store.shutdown().await.expect("shutdown");
    match Log::open(config(kv.path(), SyncMode::Always)).await {
        Err(e @ Error::WrongKind { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&kv.path().display().to_string()), "{text}");
            assert!(text.contains("holds a kv directory"), "{text}");
            assert!(text.contains("as a log"), "{text}");
        }
        other => panic!("a log opened a store's directory: {:?}", other.err()),
    }

    let log_dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Log::open(config(log_dir.path(), SyncMode::Always))
        .await
        .expect("open log");
    log.append(b"raw".to_vec()).await.expect("append");
    log.shutdown().await.expect("shutdown");
    match Store::open(config(log_dir.path(), SyncMode::Always)).await {
        Err(e @ Error::WrongKind { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&log_dir.path().display().to_string()),
                "{text}"
            );
            assert!(text.contains("holds a log directory"), "{text}");
            assert!(text.contains("as a kv"), "{text}");
        }
        other => panic!("a store opened a log's directory: {:?}", other.err()),
    }
    // Both directories are untouched by the refused opens.
    assert_eq!(manifest(kv.path()).kind, DirKind::Kv);
    assert_eq!(manifest(log_dir.path()).kind, DirKind::Log);
    let (store, recovery) = Store::open(config(kv.path(), SyncMode::Always))
        .await
        .expect("reopen store");
    assert_eq!(recovery.keys, 1);
    store.shutdown().await.expect("shutdown");
    let (log, recovery) = Log::open(config(log_dir.path(), SyncMode::Always))
        .await
        .expect("reopen log");
    assert_eq!(recovery.last_seq, 1);
    log.shutdown().await.expect("shutdown");
}

fn manifest(dir: &Path) -> Manifest {
    Manifest::decode(&std::fs::read(dir.join(MANIFEST_FILE)).expect("read manifest"))
        .expect("valid manifest")
}

#[actix_rt::test]
async fn a_store_refuses_raw_payloads_and_a_log_refuses_oversized_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(config(dir.path(), SyncMode::Always))
        .await
        .expect("open store");
    assert!(matches!(
        store.submit(Entry::Raw(b"x".to_vec())).await,
        Err(Error::InvalidRequest(_))
    ));
    store.shutdown().await.expect("shutdown");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.limits.max_key_bytes = 16;
    cfg.limits.max_value_bytes = 1024;
    cfg.limits.max_record_bytes = 4096;
    let (log, _) = Log::open(cfg).await.expect("open log");
    assert!(matches!(
        log.append(vec![0; 4096]).await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        log.append_batch(vec![vec![1], vec![0; 4096]]).await,
        Err(Error::InvalidRequest(_))
    ));
    // Nothing of the refused batch was written.
    assert_eq!(log.append(vec![0; 1000]).await.expect("append"), 1);
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_log_never_compacts_or_snapshots_its_payloads_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    // Settings that would compact a store after every sealed segment.
    cfg.compaction.threshold = 1;
    cfg.compaction.ratio = 0.0;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=400u64 {
        log.append(b"same bytes every time".to_vec())
            .await
            .expect("append");
        if i % 100 == 0 {
            // Time for a background compaction to run, if one started.
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log.shutdown().await.expect("shutdown");
    let listed = manifest(dir.path());
    assert!(listed.snapshots.is_empty(), "{listed:?}");
    assert!(listed.segments.len() > 3);
    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!(recovery.last_seq, 400);
    assert_eq!(seen.len(), 400);
    assert_eq!(seen.first().map(|r| r.0), Some(1));
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn purge_before_drops_the_prefix_and_its_whole_segments_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=300u64 {
        log.append(payload(i)).await.expect("append");
    }
    let before = manifest(dir.path()).segments;
    log.purge_before(150).await.expect("purge");
    assert_eq!(log.first_seq(), 150);
    let after = manifest(dir.path());
    assert_eq!(after.purged_through, 149);
    assert!(after.segments.len() < before.len(), "whole segments went");
    // Exactly the unlisted files were removed.
    assert_eq!(segments(dir.path()).len(), after.segments.len());
    // Going back changes nothing; going past the end is refused.
    log.purge_before(10).await.expect("purge below is a no-op");
    assert_eq!(log.first_seq(), 150);
    assert!(matches!(
        log.purge_before(302).await,
        Err(Error::InvalidRequest(_))
    ));
    log.shutdown().await.expect("shutdown");
    let found = concordkv::inspect(dir.path()).expect("inspect");
    assert!(
        found.damage.is_empty(),
        "verify accepts a purged log: {:?}",
        found.damage
    );

    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (150, 300));
    let expected: Vec<(Seq, Vec<u8>)> = (150..=300).map(|i| (i, payload(i))).collect();
    assert_eq!(seen, expected, "the replay starts exactly at the purge");
    assert_eq!(log.first_seq(), 150);
    assert_eq!(log.append(payload(301)).await.expect("append"), 301);
    // Purging everything leaves an empty log that continues where it was.
    log.purge_before(302).await.expect("purge all");
    assert_eq!((log.first_seq(), log.last_seq()), (302, 301));
    log.shutdown().await.expect("shutdown");

    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (302, 301));
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(log.append(payload(302)).await.expect("append"), 302);
    log.shutdown().await.expect("shutdown");
    let (log, _, seen) = reopen(&cfg).await;
    assert_eq!(seen, vec![(302, payload(302))]);
    assert_eq!(
        manifest(dir.path()).segments.len(),
        segments(dir.path()).len()
    );
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn metadata_is_durable_replaced_whole_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), SyncMode::Always);
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    assert_eq!(log.metadata(), None);
    log.set_metadata(b"term 1, voted for 3".to_vec())
        .await
        .expect("set");
    assert_eq!(log.metadata().as_deref(), Some(&b"term 1, voted for 3"[..]));
    // Durable as soon as it returns: on the disk before any shutdown.
    assert_eq!(
        manifest(dir.path()).metadata.as_deref(),
        Some(&b"term 1, voted for 3"[..])
    );
    log.set_metadata(vec![7; 64 << 10]).await.expect("64 KiB");
    assert!(matches!(
        log.set_metadata(vec![7; (64 << 10) + 1]).await,
        Err(Error::InvalidRequest(_))
    ));
    log.set_metadata(b"term 2".to_vec()).await.expect("set");
    log.append(b"entry".to_vec()).await.expect("append");
    log.shutdown().await.expect("shutdown");
    let (log, _) = Log::open(cfg).await.expect("reopen");
    assert_eq!(log.metadata().as_deref(), Some(&b"term 2"[..]));
    log.shutdown().await.expect("shutdown");
}

/// The first sequence number of each listed segment that was started.
fn segment_starts(dir: &Path) -> Vec<Seq> {
    manifest(dir)
        .segments
        .iter()
        .filter_map(|id| {
            let bytes = std::fs::read(dir.join(segment_file_name(*id))).ok()?;
            SegmentHeader::decode(&bytes).ok().map(|h| h.first_seq)
        })
        .collect()
}

#[actix_rt::test]
async fn purge_keeps_a_segment_whose_last_record_is_the_purge_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=300u64 {
        log.append(payload(i)).await.expect("append");
    }
    let starts = segment_starts(dir.path());
    assert!(starts.len() > 4, "{starts:?}");
    // Just before the third segment: the second segment holds the first
    // record kept, so it stays.
    let boundary = starts[2];
    log.purge_before(boundary - 1).await.expect("purge");
    assert_eq!(segment_starts(dir.path()).first(), Some(&starts[1]));
    // At the boundary: the second segment goes.
    log.purge_before(boundary).await.expect("purge");
    assert_eq!(segment_starts(dir.path()).first(), Some(&boundary));
    log.shutdown().await.expect("shutdown");
    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!(recovery.first_seq, boundary);
    assert_eq!(seen.first().map(|r| r.0), Some(boundary));
    assert_eq!(seen.len() as u64, 300 - boundary + 1);
    log.shutdown().await.expect("shutdown");
}

fn second(i: u64) -> Vec<u8> {
    format!("second-{i}").into_bytes()
}

/// A log of 2 MiB segments, six of them full, whose removals are paced at
/// the slowest rate allowed (1 MiB/s: 2 s a segment).
async fn slow_to_remove(dir: &Path) -> (Config, Log) {
    let mut cfg = config(dir, SyncMode::None);
    cfg.wal.max_segment_bytes = 2 << 20;
    cfg.maintenance.delete_bytes_per_sec = 1 << 20;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for _ in 0..12 * 16 {
        log.append(vec![7u8; 64 << 10]).await.expect("append");
    }
    assert!(segments(dir).len() >= 6, "the log rotated");
    (cfg, log)
}

/// Segment file sizes, to see whether anything still shrinks them.
fn sizes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    segments(dir)
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len())))
        .collect()
}

/// Shuts `log` down while a paced removal runs: shutdown must stop it, not
/// wait for it, and nothing may shrink a file once the directory lock is
/// released. Returns the segment files left.
async fn shut_down_before_the_removal_ends(
    log: &Log,
    dir: &Path,
) -> Vec<(std::path::PathBuf, u64)> {
    let asked = Instant::now();
    log.shutdown().await.expect("shutdown");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "shutdown waited {took:?} for a removal it should have stopped"
    );
    let left = sizes(dir);
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sizes(dir), left, "nothing removes files after shutdown");
    left
}

#[actix_rt::test]
async fn shutdown_stops_a_purge_s_removal_and_the_next_open_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, log) = slow_to_remove(dir.path()).await;
    let last = log.last_seq();
    let purging = actix_rt::spawn({
        let log = log.clone();
        async move { log.purge_before(last).await }
    });
    // Listed at once; the removal then takes about 2 s a file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while manifest(dir.path()).purged_through < last - 1 {
        assert!(Instant::now() < deadline, "the purge was never listed");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let left = shut_down_before_the_removal_ends(&log, dir.path()).await;
    purging
        .await
        .expect("task")
        .expect("a purge is done once listed, whatever shutdown left to remove");
    assert!(
        left.len() > manifest(dir.path()).segments.len(),
        "shutdown stopped the removal before its end"
    );

    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (last, last));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        segments(dir.path()).len(),
        manifest(dir.path()).segments.len(),
        "the reopen removed what the purge left"
    );
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn shutdown_stops_a_truncation_s_removal_and_the_next_open_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, log) = slow_to_remove(dir.path()).await;
    log.truncate_after(1).await.expect("truncate");
    shut_down_before_the_removal_ends(&log, dir.path()).await;

    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (1, 1));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        segments(dir.path()).len(),
        manifest(dir.path()).segments.len(),
        "the reopen removed what the truncation left"
    );
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn truncate_after_drops_the_suffix_for_good_in_every_sync_mode() {
    for mode in [
        SyncMode::Always,
        SyncMode::Batch,
        SyncMode::Interval,
        SyncMode::None,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), mode);
        cfg.wal.max_segment_bytes = 4096;
        let (log, _) = Log::open(cfg.clone()).await.expect("open");
        for i in 1..=300u64 {
            log.append(payload(i)).await.expect("append");
        }
        // Nothing to drop: a no-op.
        log.truncate_after(300).await.expect("truncate at the end");
        log.truncate_after(1000)
            .await
            .expect("truncate past the end");
        assert_eq!(log.last_seq(), 300);
        let before = manifest(dir.path()).segments.len();
        log.truncate_after(200).await.expect("truncate");
        assert_eq!(log.last_seq(), 200, "{mode:?}");
        assert_eq!(log.stats().last_seq, 200, "{mode:?}");
        // Moved back, not kept at the old end: it must not vouch for the
        // records that reuse the dropped numbers.
        assert_eq!(log.stats().durable_seq, 200, "{mode:?}");
        for i in 201..=220u64 {
            assert_eq!(log.append(second(i)).await.expect("append"), i, "{mode:?}");
        }
        // Far back, across segments: the ones holding only dropped
        // records are unlisted and removed.
        log.truncate_after(50).await.expect("truncate far back");
        let after = manifest(dir.path());
        assert!(after.segments.len() < before, "{mode:?}");
        for i in 51..=60u64 {
            assert_eq!(log.append(second(i)).await.expect("append"), i, "{mode:?}");
        }
        log.sync().await.expect("sync");
        log.shutdown().await.expect("shutdown");
        let found = concordkv::inspect(dir.path()).expect("inspect");
        assert!(found.damage.is_empty(), "{mode:?}: {:?}", found.damage);
        assert!(
            found
                .report()
                .contains("log: purged through 0, truncation marks"),
            "{}",
            found.report()
        );

        let (log, recovery, seen) = reopen(&cfg).await;
        let mut expected: Vec<(Seq, Vec<u8>)> = (1..=50).map(|i| (i, payload(i))).collect();
        expected.extend((51..=60).map(|i| (i, second(i))));
        assert_eq!(seen, expected, "{mode:?}");
        assert_eq!(recovery.last_seq, 60);
        assert_eq!(log.append(b"next".to_vec()).await.expect("append"), 61);
        log.shutdown().await.expect("shutdown");
        // Segment files the truncations unlisted are gone (by the open at
        // the latest).
        assert_eq!(
            segments(dir.path()).len(),
            manifest(dir.path()).segments.len()
        );
    }
}

#[actix_rt::test]
async fn appends_in_flight_are_answered_before_a_truncation_and_later_ones_follow_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=100u64 {
        log.append(payload(i)).await.expect("append");
    }
    let before: Vec<_> = (101..=150u64).map(|i| log.submit(payload(i))).collect();
    let mut queued = Vec::new();
    for submit in before {
        queued.push(submit.await.expect("submit"));
    }
    let before = queued;
    let truncation = {
        let log = log.clone();
        actix_rt::spawn(async move { log.truncate_after(120).await })
    };
    // Queued after the truncation: these follow it.
    actix_rt::task::yield_now().await;
    for (n, pending) in before.into_iter().enumerate() {
        assert_eq!(pending.await.expect("acknowledged"), 101 + n as u64);
    }
    truncation.await.expect("task").expect("truncate");
    let next = log.append(second(121)).await.expect("append");
    assert_eq!(next, 121);
    log.shutdown().await.expect("shutdown");
    let (log, _, seen) = reopen(&cfg).await;
    let mut expected: Vec<(Seq, Vec<u8>)> = (1..=120).map(|i| (i, payload(i))).collect();
    expected.push((121, second(121)));
    assert_eq!(seen, expected);
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn truncations_and_purges_together_reopen_to_the_kept_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let mut model: std::collections::BTreeMap<Seq, Vec<u8>> = Default::default();
    let mut first = 1;
    for round in 0..6u64 {
        let (log, recovery, seen) = reopen(&cfg).await;
        assert_eq!(recovery.first_seq, first, "round {round}");
        let expected: Vec<(Seq, Vec<u8>)> =
            model.range(first..).map(|(s, p)| (*s, p.clone())).collect();
        assert_eq!(seen, expected, "round {round}");
        for _ in 0..150 {
            let seq = log.last_seq() + 1;
            let bytes = format!("r{round}-{seq}").into_bytes();
            assert_eq!(log.append(bytes.clone()).await.expect("append"), seq);
            model.insert(seq, bytes);
        }
        let last = log.last_seq();
        let keep = last - 40 - round * 7;
        log.truncate_after(keep).await.expect("truncate");
        model.retain(|s, _| *s <= keep);
        first = keep - 60;
        log.purge_before(first).await.expect("purge");
        assert!(matches!(
            log.truncate_after(first - 2).await,
            Err(Error::InvalidRequest(_))
        ));
        log.shutdown().await.expect("shutdown");
        let marks = manifest(dir.path()).truncations.len();
        assert!(marks <= 2, "old marks are forgotten: {marks}");
    }
}

#[actix_rt::test]
async fn a_batch_larger_than_the_pending_bound_goes_alone_and_gives_its_room_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.limits.max_pending_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    let batch: Vec<Vec<u8>> = (0..40u64).map(|i| vec![i as u8; 500]).collect();
    let concurrent = {
        let log = log.clone();
        actix_rt::spawn(async move {
            for i in 0..50u64 {
                log.append(payload(i)).await.expect("append");
            }
        })
    };
    let first = log.append_batch(batch.clone()).await.expect("batch");
    concurrent.await.expect("task");
    assert_eq!(log.stats().pending_bytes, 0, "every share went back");
    log.shutdown().await.expect("shutdown");
    let (log, _, seen) = reopen(&cfg).await;
    let got: Vec<Vec<u8>> = seen[(first - 1) as usize..(first - 1 + 40) as usize]
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(got, batch, "contiguous and whole");
    log.shutdown().await.expect("shutdown");
}

fn read_all(log: &Log, range: impl std::ops::RangeBounds<Seq>) -> Vec<(Seq, Vec<u8>)> {
    log.read(range)
        .expect("read")
        .collect::<Result<Vec<_>, _>>()
        .expect("records")
}

#[actix_rt::test]
async fn reads_return_exactly_the_kept_records_after_purges_and_truncations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=300u64 {
        log.append(payload(i)).await.expect("append");
    }
    let all: Vec<(Seq, Vec<u8>)> = (1..=300).map(|i| (i, payload(i))).collect();
    assert_eq!(read_all(&log, ..), all);
    assert_eq!(read_all(&log, 10..=12), all[9..12].to_vec());

    log.purge_before(100).await.expect("purge");
    assert_eq!(
        read_all(&log, ..),
        all[99..].to_vec(),
        "an open start is first_seq"
    );
    assert!(matches!(log.read(50..), Err(Error::Purged { upto: 99 })));
    assert!(matches!(log.read(99..=99), Err(Error::Purged { upto: 99 })));

    log.truncate_after(200).await.expect("truncate");
    for i in 201..=210u64 {
        log.append(second(i)).await.expect("append");
    }
    let mut kept = all[99..200].to_vec();
    kept.extend((201..=210).map(|i| (i, second(i))));
    assert_eq!(read_all(&log, ..), kept, "no dropped record is read");
    assert_eq!(read_all(&log, 195..=205), kept[95..106].to_vec());

    // A subscription from the middle sees the same, then follows.
    let mut follow = log.subscribe(150);
    for expected in &kept[50..] {
        let got = follow.next().await.expect("open").expect("record");
        assert_eq!(&got, expected);
    }
    log.append(second(211)).await.expect("append");
    assert_eq!(
        follow.next().await.expect("open").expect("record"),
        (211, second(211))
    );
    log.shutdown().await.expect("shutdown");
    assert!(follow.next().await.is_none(), "ends with the log");

    // The same after a reopen.
    let (log, _, _) = reopen(&cfg).await;
    kept.push((211, second(211)));
    assert_eq!(read_all(&log, ..), kept);
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn readers_in_flight_past_a_truncation_end_with_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=300u64 {
        log.append(payload(i)).await.expect("append");
    }
    // A read and a subscription that have handed out records up to 250.
    let mut read = log.read(1..).expect("read");
    let mut follow = log.subscribe(1);
    for i in 1..=250u64 {
        assert_eq!(read.next().expect("more").expect("record").0, i);
        assert_eq!(follow.next().await.expect("open").expect("record").0, i);
    }
    // A read that has not got there yet.
    let mut behind = log.read(1..).expect("read");
    for i in 1..=100u64 {
        assert_eq!(behind.next().expect("more").expect("record").0, i);
    }
    log.truncate_after(200).await.expect("truncate");
    for i in 201..=260u64 {
        log.append(second(i)).await.expect("append");
    }
    assert!(matches!(
        read.next(),
        Some(Err(Error::Truncated { after: 200 }))
    ));
    assert!(read.next().is_none(), "ends after the error");
    assert!(matches!(
        follow.next().await,
        Some(Err(Error::Truncated { after: 200 }))
    ));
    // The one behind hands out what was kept, then stops at the mark:
    // never a dropped record, and never a new one its bound did not cover.
    for i in 101..=200u64 {
        assert_eq!(
            behind.next().expect("more").expect("record"),
            (i, payload(i))
        );
    }
    assert!(matches!(
        behind.next(),
        Some(Err(Error::Truncated { after: 200 }))
    ));
    // Reading again from after the mark gets the new records.
    let again = read_all(&log, 201..);
    assert_eq!(
        again,
        (201..=260).map(|i| (i, second(i))).collect::<Vec<_>>()
    );
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_subscriber_at_the_end_of_a_purged_segment_goes_on_to_the_next_record() {
    // Where the third segment starts, as the same appends lay it out.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(scratch.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=300u64 {
        log.append(payload(i)).await.expect("append");
    }
    let boundary = segment_starts(scratch.path())[2];
    log.shutdown().await.expect("shutdown");

    let dir = tempfile::tempdir().expect("tempdir");
    cfg.data_dir = dir.path().to_path_buf();
    let (log, _) = Log::open(cfg).await.expect("open");
    for i in 1..boundary {
        log.append(payload(i)).await.expect("append");
    }
    // The subscriber has every record of the second segment: it waits at
    // that segment's end for the next one.
    let mut follow = log.subscribe(1);
    for i in 1..boundary {
        assert_eq!(follow.next().await.expect("open").expect("record").0, i);
    }
    log.append(payload(boundary)).await.expect("append");
    assert_eq!(segment_starts(dir.path())[2], boundary);
    // Purging up to that end retires the segment the subscriber is in,
    // but not the record it wants next.
    log.purge_before(boundary).await.expect("purge");
    let next = follow.next().await.expect("open");
    assert_eq!(next.expect("not purged"), (boundary, payload(boundary)));
    log.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_log_purged_past_what_a_cut_kept_opens_again_and_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for i in 1..=100u64 {
        log.append(payload(i)).await.expect("append");
    }
    log.purge_before(101).await.expect("purge");
    log.shutdown().await.expect("shutdown");
    // The last records never reached the disk, as after a power cut in a
    // mode that had not synced them yet: the purge writes no record, so it
    // syncs none.
    let newest = common::started_segments(dir.path())
        .pop()
        .expect("a segment");
    let frames = common::frame_ranges(&newest);
    assert!(frames.len() > 3, "{frames:?}");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[frames.len() - 3].start..].fill(0);
    std::fs::write(&newest, bytes).expect("write");
    // The open goes on after the purge point, leaving the segment that
    // ends before it listed...
    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (101, 100));
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(log.append(payload(101)).await.expect("append"), 101);
    log.shutdown().await.expect("shutdown");
    // ...and the next open goes over the gap the purge covers.
    let (log, recovery, seen) = reopen(&cfg).await;
    assert_eq!((recovery.first_seq, recovery.last_seq), (101, 101));
    assert_eq!(seen, vec![(101, payload(101))]);
    // A reader in that gap hears that it was purged, not of damage.
    let mut follow = log.subscribe(99);
    assert!(
        matches!(follow.next().await, Some(Err(Error::Purged { upto: 100 }))),
        "a purged record"
    );
    log.shutdown().await.expect("shutdown");
    // `verify` agrees.
    let found = concordkv::inspect(dir.path()).expect("inspect");
    assert!(found.damage.is_empty(), "{:?}", found.damage);
}
