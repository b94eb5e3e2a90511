//! Reading the log back (`Store::read`) and following it
//! (`Store::subscribe`): records come from the segment files in sequence
//! order, across rotations, never past what the sync mode acknowledged;
//! records a snapshot or compaction retired answer `Purged`, damage answers
//! `Corruption`; memory stays bounded; a subscription delivers every record
//! once, in order, catches up after a pause, and ends at shutdown.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, frame_ranges, started_segments};
use concordkv::testing::sim_fs::{Call, Fault, SimFs};
use concordkv::{Config, Entry, Error, Op, Record, Seq, Store, SyncMode};

/// Small segments, so a few hundred records span many of them; no
/// automatic compaction, so only the test retires segments.
fn small(dir: &Path, mode: SyncMode) -> Config {
    let mut cfg = config(dir, mode);
    cfg.wal.max_segment_bytes = 4096;
    cfg.compaction.threshold = u64::MAX;
    cfg
}

/// The entry the `i`-th fill writes (`value_len` bytes of value).
fn entry(i: u64, value_len: usize) -> Entry {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(value_len.max(value.len()), b'x');
    Entry::Op(Op::Set {
        key: format!("key-{i}").into_bytes(),
        value,
    })
}

/// Appends `n` records, up to 512 in flight; returns them as the log holds
/// them.
async fn fill(store: &Store, first: u64, n: u64, value_len: usize) -> Vec<Record> {
    let mut pending = VecDeque::new();
    let mut written = Vec::with_capacity(n as usize);
    let mut answer = |seq: concordkv::Result<Seq>, i: u64| {
        written.push(Record {
            seq: seq.expect("append acknowledged"),
            entry: entry(i, value_len),
        });
    };
    for i in first..first + n {
        pending.push_back((store.submit(entry(i, value_len)).await.expect("submit"), i));
        if pending.len() >= 512 {
            if let Some((p, i)) = pending.pop_front() {
                answer(p.await, i);
            }
        }
    }
    for (p, i) in pending {
        answer(p.await, i);
    }
    written
}

fn read_all(store: &Store, range: impl std::ops::RangeBounds<Seq>) -> Vec<Record> {
    store
        .read(range)
        .expect("read")
        .collect::<concordkv::Result<Vec<_>>>()
        .expect("every record")
}

fn seqs(records: &[Record]) -> Vec<Seq> {
    records.iter().map(|r| r.seq).collect()
}

#[actix_rt::test]
async fn ranges_across_rotated_segments_read_back_what_was_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(small(dir.path(), SyncMode::None))
        .await
        .expect("open");
    let written = fill(&store, 1, 1000, 60).await;
    assert!(
        store.stats().rotations >= 10,
        "{} rotations",
        store.stats().rotations
    );
    assert!(started_segments(dir.path()).len() >= 10);

    assert_eq!(read_all(&store, 1..=1000), written);
    assert_eq!(read_all(&store, ..), written);
    assert_eq!(read_all(&store, 250..750), written[249..749]);
    // Every start, whatever segment it falls in, and across each boundary.
    for from in (1..=1000).step_by(37) {
        let got = read_all(&store, from..from + 50);
        let want: Vec<Record> = written
            .iter()
            .filter(|r| r.seq >= from && r.seq < from + 50)
            .cloned()
            .collect();
        assert_eq!(got, want, "from {from}");
    }
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn bounds_empty_ranges_and_ranges_past_the_end() {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(small(dir.path(), SyncMode::None))
        .await
        .expect("open");
    assert!(
        read_all(&store, ..).is_empty(),
        "an empty log reads as nothing"
    );
    let written = fill(&store, 1, 120, 40).await;
    let last = written.len() as Seq;

    assert!(read_all(&store, 5..5).is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 10..=3;
    assert!(read_all(&store, reversed).is_empty());
    assert!(
        read_all(&store, last + 1..).is_empty(),
        "from just past the last"
    );
    assert!(read_all(&store, last + 100..=last + 200).is_empty());
    assert!(read_all(&store, (Excluded(last), Unbounded)).is_empty());
    assert!(read_all(&store, ..1).is_empty());
    assert_eq!(
        seqs(&read_all(&store, 110..=5000)),
        (110..=last).collect::<Vec<_>>(),
        "a range past the end stops at the last record"
    );
    assert_eq!(
        seqs(&read_all(&store, (Excluded(10), Included(12)))),
        [11, 12]
    );
    assert_eq!(seqs(&read_all(&store, 0..=3)), [1, 2, 3], "0 is before 1");
    assert_eq!(read_all(&store, last..=last), written[written.len() - 1..]);

    // The end is the last record when the read began: later appends are
    // not in it, even for an open range.
    let mut read = store.read(100..).expect("read");
    assert_eq!(read.end(), last);
    fill(&store, 1000, 50, 40).await;
    assert_eq!(read.next().expect("a record").expect("intact").seq, 100);
    assert_eq!(read.count(), (last - 100) as usize);
    store.shutdown().await.expect("shutdown");
}

/// A read begun before a snapshot or compaction that retires its segments
/// answers `Purged` (after the records it had already read, which are the
/// ones appended), never other data and never a panic; a read that starts
/// among retired records answers it at once; one that starts after them
/// works.
#[actix_rt::test]
async fn a_read_begun_before_a_snapshot_or_compaction_answers_purged() {
    for compaction in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), SyncMode::None);
        cfg.compaction.threshold = u64::MAX;
        // Shrink retired files before removing them, as by default: the
        // reader must tell that from damage.
        cfg.maintenance.delete_bytes_per_sec = 1 << 30;
        let (store, _) = Store::open(cfg).await.expect("open");
        // Values large enough that one chunk of the reader holds a small
        // part of the log.
        let written = fill(&store, 1, 600, 3000).await;
        let mut read = store.read(1..).expect("read");
        let first: Vec<Record> = read
            .by_ref()
            .take(10)
            .collect::<concordkv::Result<_>>()
            .expect("first records");
        assert_eq!(first, written[..10]);

        let retired_upto = if compaction {
            store
                .compact()
                .await
                .expect("compact")
                .expect("compacted")
                .upto
        } else {
            store
                .snapshot()
                .await
                .expect("snapshot")
                .expect("taken")
                .to_seq
        };
        let mut delivered = first.len();
        let upto = loop {
            match read.next() {
                Some(Ok(record)) => {
                    assert_eq!(record, written[delivered], "compaction: {compaction}");
                    delivered += 1;
                }
                Some(Err(Error::Purged { upto })) => break upto,
                other => panic!("expected Purged, got {other:?}"),
            }
        };
        assert!(
            upto >= delivered as Seq && upto <= retired_upto,
            "upto {upto}, delivered {delivered}, retired up to {retired_upto}"
        );
        assert!(read.next().is_none(), "the read ends after the error");
        let text = Error::Purged { upto }.to_string();
        assert!(
            text.contains(&format!("resume from {}", upto + 1)),
            "{text}"
        );

        match store.read(1..) {
            Err(Error::Purged { upto: again }) => assert_eq!(again, upto),
            other => panic!("expected Purged at once, got {other:?}"),
        }
        let rest = read_all(&store, upto + 1..);
        assert_eq!(rest, written[upto as usize..], "the log goes on after it");
        assert_eq!(
            read_all(&store, ..),
            rest,
            "an open start is the log's first record"
        );

        // A subscription behind the retired records learns it the same way.
        let mut behind = store.subscribe(1);
        match behind.next().await {
            Some(Err(Error::Purged { upto: again })) => assert_eq!(again, upto),
            other => panic!("expected Purged, got {other:?}"),
        }
        assert!(behind.next().await.is_none());
        store.shutdown().await.expect("shutdown");
    }
}

/// A retired segment whose file is still on disk (its removal failed, or
/// was under way) is not read: what the manifest no longer lists answers
/// `Purged`, whether the file is intact or already shrunk, never records
/// from it nor damage.
#[actix_rt::test]
async fn a_retired_segment_left_on_disk_is_not_read() {
    for shrunk in [false, true] {
        let fs = SimFs::new(3);
        let mut cfg = small(&PathBuf::from("/sim/db"), SyncMode::None);
        // Shrunk to nothing before the failed unlink, or left whole.
        cfg.maintenance.delete_bytes_per_sec = if shrunk { 1 << 30 } else { 0 };
        let (store, _) = concordkv::testing::open_with_fs(cfg, Arc::new(fs.clone()), |_| {})
            .await
            .expect("open");
        // Three records a segment, many segments to a chunk of the reader.
        let written = fill(&store, 1, 600, 1000).await;
        // In the first segment (which the shrinking empties), or further on.
        let from = if shrunk { 1 } else { 30 };
        let mut read = store.read(from..).expect("read");
        let mut delivered = vec![read.next().expect("a record").expect("intact")];
        // Removing the first retired file fails, which leaves every retired
        // file where it is.
        fs.inject(Fault {
            call: Call::Remove,
            nth: 1,
            errno: libc::EIO,
            path_contains: Some("/00000000000000000001.wal".into()),
            sticky: false,
        });
        store.snapshot().await.expect("snapshot").expect("taken");
        let error = loop {
            match read.next() {
                Some(Ok(record)) => delivered.push(record),
                Some(Err(e)) => break e,
                None => panic!("read records from retired files (shrunk: {shrunk})"),
            }
        };
        assert!(matches!(error, Error::Purged { .. }), "{error:?}");
        let first = (from - 1) as usize;
        assert_eq!(delivered, written[first..first + delivered.len()]);
        assert!(delivered.len() < 600 - first, "shrunk: {shrunk}");
        store.shutdown().await.expect("shutdown");
    }
}

#[actix_rt::test]
async fn reading_100k_records_keeps_one_bounded_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::None);
    cfg.wal.max_segment_bytes = 4 << 20;
    cfg.compaction.threshold = u64::MAX;
    let (store, _) = Store::open(cfg).await.expect("open");
    let n = 100_000u64;
    fill(&store, 1, n, 100).await;
    let on_disk: u64 = started_segments(dir.path())
        .iter()
        .map(|p| frame_ranges(p).last().map_or(0, |r| r.end as u64))
        .sum();
    let bound = 2 << 20;
    assert!(
        on_disk > 4 * bound as u64,
        "the log ({on_disk} bytes) is much larger than the buffer"
    );

    let mut read = store.read(1..=n).expect("read");
    let mut expected = 1;
    let mut largest = 0;
    while let Some(record) = read.next() {
        let record = record.expect("intact");
        assert_eq!(record.seq, expected);
        expected += 1;
        largest = largest.max(read.buffer_capacity());
    }
    assert_eq!(expected, n + 1);
    assert!(
        largest > 0 && largest <= bound,
        "the read buffer grew to {largest} bytes"
    );
    store.shutdown().await.expect("shutdown");
}

/// Waits until `check` holds, or panics after a few seconds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether the subscription hands out a record within `wait`.
async fn delivers_within(sub: &mut concordkv::Subscription, wait: Duration) -> Option<Record> {
    match tokio::time::timeout(wait, sub.next()).await {
        Ok(Some(record)) => Some(record.expect("intact")),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => None,
    }
}

/// In `always` mode a record is read or delivered only once an
/// `fdatasync` covers it: not while its sync is slow, and never if the
/// sync fails.
#[actix_rt::test]
async fn always_mode_never_shows_a_record_before_its_sync() {
    let fs = SimFs::new(7);
    let cfg = small(&PathBuf::from("/sim/db"), SyncMode::Always);
    let (store, _) = concordkv::testing::open_with_fs(cfg, Arc::new(fs.clone()), |_| {})
        .await
        .expect("open");
    let written = fill(&store, 1, 5, 40).await;
    let mut sub = store.subscribe(1);
    for want in &written {
        assert_eq!(
            delivers_within(&mut sub, Duration::from_secs(5))
                .await
                .as_ref(),
            Some(want)
        );
    }

    // A slow sync: the record is written, its sync not done.
    fs.slow_syncs(Some(Duration::from_millis(400)));
    let pending = store.submit(entry(6, 40)).await.expect("submit");
    eventually("the write", || store.stats().last_seq == 6).await;
    assert_eq!(store.stats().durable_seq, 5);
    // Record 6 may show only once its sync is done: on a loaded machine the
    // slow sync can end while the read runs, and then 6 is rightly there.
    let seen = seqs(&read_all(&store, ..));
    let durable = store.stats().durable_seq;
    assert_eq!(seen[..5], [1, 2, 3, 4, 5]);
    assert!(
        seen.len() == 5 || durable == 6,
        "read {seen:?} while durable up to {durable}"
    );
    let mut delivered = false;
    if durable == 5 {
        if let Some(early) = delivers_within(&mut sub, Duration::from_millis(100)).await {
            assert_eq!(store.stats().durable_seq, 6, "delivered before its sync");
            assert_eq!(early.seq, 6);
            delivered = true;
        }
    }
    assert_eq!(pending.await.expect("synced"), 6);
    if !delivered {
        assert_eq!(
            delivers_within(&mut sub, Duration::from_secs(5))
                .await
                .map(|r| r.seq),
            Some(6)
        );
    }

    // A failed sync: the record is written, then its sync fails.
    fs.inject(Fault {
        call: Call::SyncData,
        nth: 1,
        errno: libc::EIO,
        path_contains: Some(".wal".into()),
        sticky: false,
    });
    let pending = store.submit(entry(7, 40)).await.expect("submit");
    eventually("the write", || store.stats().last_seq == 7).await;
    assert_eq!(seqs(&read_all(&store, 6..)), [6]);
    let mut from_seven = store.subscribe(7);
    assert_eq!(
        delivers_within(&mut sub, Duration::from_millis(100)).await,
        None
    );
    assert!(pending.await.is_err(), "the failed sync is reported");
    assert_eq!(seqs(&read_all(&store, 6..)), [6]);
    assert_eq!(
        delivers_within(&mut sub, Duration::from_millis(200)).await,
        None
    );
    assert_eq!(
        delivers_within(&mut from_seven, Duration::from_millis(200)).await,
        None
    );
    fs.slow_syncs(None);
    let _ = store.shutdown().await;
}

#[actix_rt::test]
async fn a_subscription_delivers_every_record_once_in_order_while_8_writers_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = small(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 16 << 10;
    let (store, _) = Store::open(cfg).await.expect("open");
    let (writers, per_writer) = (8u64, 250u64);
    let total = writers * per_writer;
    let mut sub = store.subscribe(1);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            actix_rt::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..per_writer {
                    let e = entry(w * 1_000_000 + i, 50);
                    let seq = store
                        .submit(e.clone())
                        .await
                        .expect("submit")
                        .await
                        .expect("set");
                    acked.push(Record { seq, entry: e });
                }
                acked
            })
        })
        .collect();
    let mut delivered = Vec::new();
    while (delivered.len() as u64) < total {
        let record = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("a record within the timeout")
            .expect("not ended")
            .expect("intact");
        assert!(
            record.seq <= store.stats().durable_seq,
            "record {} delivered before it was durable",
            record.seq
        );
        delivered.push(record);
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer"));
    }
    acked.sort_by_key(|r| r.seq);
    assert_eq!(
        seqs(&delivered),
        (1..=total).collect::<Vec<_>>(),
        "in order, no gap, no duplicate"
    );
    assert_eq!(delivered, acked, "each record as appended");
    assert!(store.stats().rotations > 3);
    store.shutdown().await.expect("shutdown");
}

/// A subscriber that stops polling holds nothing up; when it polls again
/// it catches up from the files, across the segments rotated meanwhile.
/// Dropping `next` half-way (a timeout, a `select!`) loses nothing.
#[actix_rt::test]
async fn a_subscriber_that_pauses_catches_up_and_cancelled_polls_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(small(dir.path(), SyncMode::Batch))
        .await
        .expect("open");
    let mut written = fill(&store, 1, 20, 80).await;
    let mut sub = store.subscribe(1);
    for want in &written[..5] {
        assert_eq!(
            delivers_within(&mut sub, Duration::from_secs(5))
                .await
                .as_ref(),
            Some(want)
        );
    }
    let rotations = store.stats().rotations;
    written.extend(fill(&store, 21, 3000, 80).await);
    assert!(store.stats().rotations > rotations + 20);

    let mut got = Vec::new();
    let mut cancelled = 0;
    while got.len() < written.len() - 5 {
        // Polled once, then dropped unless it was ready at once.
        match tokio::time::timeout(Duration::ZERO, sub.next()).await {
            Ok(record) => got.push(record.expect("not ended").expect("intact")),
            Err(_) => {
                cancelled += 1;
                actix_rt::task::yield_now().await;
            }
        }
    }
    assert!(cancelled > 0, "some polls were cancelled mid-read");
    assert_eq!(got, written[5..]);
    assert_eq!(
        delivers_within(&mut sub, Duration::from_millis(50)).await,
        None
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_subscription_ends_when_the_store_shuts_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(small(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    fill(&store, 1, 3, 20).await;
    let mut sub = store.subscribe(1);
    let waiting = actix_rt::spawn(async move {
        let mut seen = Vec::new();
        while let Some(record) = sub.next().await {
            seen.push(record.expect("intact").seq);
        }
        seen
    });
    eventually("the subscriber to wait", || {
        store.stats().durable_seq == 3 && !waiting.is_finished()
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    store.shutdown().await.expect("shutdown");
    let seen = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the subscription ended")
        .expect("subscriber");
    assert_eq!(seen, [1, 2, 3]);
    let mut late = store.subscribe(1);
    assert!(
        late.next().await.is_none(),
        "a shut-down store has no records to follow"
    );
}

/// A damaged record read back is `Corruption` naming the file and the
/// offset of the frame, after the intact records before it.
#[actix_rt::test]
async fn damage_read_back_names_the_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(small(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    let written = fill(&store, 1, 200, 40).await;
    let sealed = started_segments(dir.path())[2].clone();
    let frame = frame_ranges(&sealed)[3].clone();
    let mut bytes = std::fs::read(&sealed).expect("read segment");
    bytes[frame.end - 2] ^= 0x55;
    std::fs::write(&sealed, &bytes).expect("damage the segment");

    let mut good = Vec::new();
    let mut read = store.read(..).expect("read");
    let error = loop {
        match read.next() {
            Some(Ok(record)) => good.push(record),
            Some(Err(e)) => break e,
            None => panic!("the damage was skipped"),
        }
    };
    match &error {
        Error::Corruption(c) => {
            assert_eq!(c.file, sealed);
            assert_eq!(c.offset, frame.start as u64);
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    assert_eq!(good, written[..good.len()]);
    assert!(!good.is_empty());
    let mut sub = store.subscribe(good.len() as Seq + 1);
    assert!(matches!(sub.next().await, Some(Err(Error::Corruption(_)))));
    assert!(sub.next().await.is_none());
    store.shutdown().await.expect("shutdown");
}
