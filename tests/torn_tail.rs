//! Damage on disk: a torn tail is cut and the intact prefix opens; damage
//! anywhere else fails the open with the file, offset and reason.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::{config, copy_dir, fill_small_segments, frame_ranges, started_segments};
use concordkv::testing::format::record::encode_segment_record;
use concordkv::testing::format::segment::SegmentHeader;
use concordkv::{Entry, Error, Op, RecoveryMode, SyncMode};

/// Writes `n` records (one batch among them) and shuts down cleanly.
async fn write_records(dir: &Path, n: u32) {
    let (store, _) = concordkv::testing::open_recording(config(dir, SyncMode::Always))
        .await
        .expect("open");
    for i in 0..n {
        store
            .set(format!("key-{i}"), format!("value-{i}"))
            .await
            .expect("set");
    }
    store.shutdown().await.expect("shutdown");
}

/// Writes `n` records in `none` mode, all queued before any is answered, so
/// no sync runs while they are written and none attests another; then shuts
/// down cleanly.
async fn write_unsynced(dir: &Path, n: u32) {
    let (store, _) = concordkv::testing::open_recording(config(dir, SyncMode::None))
        .await
        .expect("open");
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            store
                .submit(Entry::Op(Op::Set {
                    key: format!("key-{i}").into_bytes(),
                    value: format!("value-{i}").into_bytes(),
                }))
                .await
                .expect("submit"),
        );
    }
    for ack in acks {
        ack.await.expect("written");
    }
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn truncation_at_every_offset_of_the_last_three_records_opens_the_intact_prefix() {
    let source = tempfile::tempdir().expect("tempdir");
    write_records(source.path(), 20).await;
    let newest = started_segments(source.path())
        .pop()
        .expect("a started segment");
    let frames = frame_ranges(&newest);
    assert_eq!(frames.len(), 20);
    let first_cut = frames[frames.len() - 3].start;
    let end = frames[frames.len() - 1].end;
    let scratch = tempfile::tempdir().expect("tempdir");
    for (case, cut) in (first_cut..end).enumerate() {
        // Two shapes of torn write: a short file, and a preallocated file
        // whose unwritten rest reads as zeros.
        for zero_fill in [false, true] {
            let dir = scratch.path().join(format!("{case}-{zero_fill}"));
            copy_dir(source.path(), &dir);
            let segment = dir.join(newest.file_name().expect("name"));
            let file = OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("open segment");
            file.set_len(cut as u64).expect("truncate");
            if zero_fill {
                file.set_len(end as u64 + 4096).expect("extend with zeros");
            }
            drop(file);
            let intact = frames.iter().filter(|f| f.end <= cut).count();
            let (store, recovery) =
                concordkv::testing::open_recording(config(&dir, SyncMode::Always))
                    .await
                    .expect("torn tail opens");
            let seqs: Vec<u64> = recovery.records.iter().map(|r| r.seq).collect();
            assert_eq!(
                seqs,
                (1..=intact as u64).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            let torn = frames.iter().any(|f| f.start < cut && cut < f.end);
            assert_eq!(
                recovery.truncated.is_some(),
                torn,
                "cut at {cut}: torn tail reported iff a record was cut"
            );
            if let Some(tail) = &recovery.truncated {
                assert_eq!(tail.file, segment);
                assert_eq!(tail.offset, frames[intact].start as u64);
            }
            let next = store
                .set("after", "restart")
                .await
                .expect("append after recovery");
            assert_eq!(
                next,
                intact as u64 + 1,
                "sequence numbers continue after the cut"
            );
            store.shutdown().await.expect("shutdown");
        }
    }
}

#[actix_rt::test]
async fn a_flipped_byte_in_a_sealed_segment_fails_the_open_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for i in 0..300u32 {
        store
            .set(format!("key-{i}"), vec![b'x'; 40])
            .await
            .expect("set");
    }
    store.shutdown().await.expect("shutdown");
    let segments = started_segments(dir.path());
    assert!(segments.len() > 3);
    let victim = &segments[1];
    let frames = frame_ranges(victim);
    let offset = frames[frames.len() / 2].start + 20;
    let mut bytes = std::fs::read(victim).expect("read");
    bytes[offset] ^= 0x01;
    std::fs::write(victim, &bytes).expect("write");

    for mode in [RecoveryMode::TolerateTail, RecoveryMode::Absolute] {
        let mut cfg = cfg.clone();
        cfg.wal.recovery_mode = mode;
        let err = concordkv::testing::open_recording(cfg)
            .await
            .err()
            .expect("damaged sealed segment fails the open");
        match &err {
            Error::Corruption(c) => {
                assert_eq!(&c.file, victim);
                assert_eq!(c.offset, frames[frames.len() / 2].start as u64);
                assert!(c.reason.contains("checksum"), "{}", c.reason);
            }
            other => panic!("expected corruption, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&victim.display().to_string()) && text.contains("offset"),
            "{text}"
        );
    }
    let after = std::fs::read(victim).expect("read");
    assert_eq!(after, bytes, "a failed open changes nothing");

    let mut cfg = cfg.clone();
    cfg.wal.recovery_mode = RecoveryMode::SkipCorrupt;
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("skip_corrupt opens");
    assert_eq!(recovery.skipped.len(), 1);
    assert_eq!(
        recovery.records.len(),
        299,
        "only the damaged record is lost"
    );
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn damage_in_the_newest_segment_followed_by_intact_records_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 20).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[5].start + 18] ^= 0x80;
    std::fs::write(&newest, &bytes).expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("fails");
    let text = err.to_string();
    assert!(
        text.contains("so this is damage, not an interrupted write"),
        "{text}"
    );
    assert!(text.contains(&newest.display().to_string()), "{text}");
}

/// The audit's case: a record whose value holds whole zero sectors, synced
/// records after it, then one flipped byte in it. The zeros inside the value
/// once passed for a lost write, and every later record was cut.
#[actix_rt::test]
async fn damage_to_a_synced_record_full_of_zeros_fails_the_open_instead_of_cutting_later_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.set("a", vec![0u8; 2048]).await.expect("set a");
    store.set("b", "1").await.expect("set b");
    store.set("c", "2").await.expect("set c");
    store.shutdown().await.expect("shutdown");
    let newest = started_segments(dir.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    assert_eq!(frames.len(), 3);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[0].start + 40] ^= 0x01;
    std::fs::write(&newest, &bytes).expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("the open refuses: b and c were acknowledged after a sync");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == newest && c.offset == frames[0].start as u64),
        "{err}"
    );
    assert_eq!(std::fs::read(&newest).expect("read"), bytes, "nothing cut");
}

/// Records over a lowered `limits.max_record_bytes` were written under the
/// old limit: they are read by the format's own limit, never cut as torn.
#[actix_rt::test]
async fn lowering_the_record_limit_never_cuts_a_record_written_under_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.set("small", "v").await.expect("set");
    store
        .set("big", vec![7u8; 2 << 20])
        .await
        .expect("set a 2 MiB value");
    store.shutdown().await.expect("shutdown");
    let mut lowered = config(dir.path(), SyncMode::Always);
    lowered.limits.max_value_bytes = 512 << 10;
    lowered.limits.max_record_bytes = 1 << 20;
    let (store, recovery) = concordkv::testing::open_recording(lowered)
        .await
        .expect("opens with the lower limit");
    assert!(recovery.truncated.is_none(), "{:?}", recovery.truncated);
    assert_eq!(
        recovery.state().get(b"big".as_slice()),
        Some(&vec![7u8; 2 << 20])
    );
    store.shutdown().await.expect("shutdown");
    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("reopen on the defaults");
    assert_eq!(recovery.state().len(), 2, "still there on the defaults");
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn absolute_mode_refuses_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 5).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    let file = OpenOptions::new().write(true).open(&newest).expect("open");
    file.set_len(frames[4].start as u64 + 3).expect("truncate");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.recovery_mode = RecoveryMode::Absolute;
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("absolute refuses");
    assert!(
        matches!(err, Error::Corruption(ref c) if c.offset == frames[4].start as u64),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_damaged_segment_header_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = fill_small_segments(dir.path()).await;
    let first = started_segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[3] ^= 0xFF;
    std::fs::write(&first, &bytes).expect("write");
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("fails");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == first && c.offset == 0 && c.reason.contains("magic")),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_damaged_header_on_the_newest_segment_with_records_behind_it_fails_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 20).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let original = std::fs::read(&newest).expect("read");
    for (name, damage) in [("checksum", 0usize..1), ("zeroed header", 0..32)] {
        let mut bytes = original.clone();
        if name == "checksum" {
            bytes[13] ^= 0x01;
        } else {
            bytes[damage].fill(0);
        }
        std::fs::write(&newest, &bytes).expect("write");
        let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .err()
            .unwrap_or_else(|| {
                panic!("{name}: acknowledged records behind the header must not be dropped")
            });
        assert!(
            matches!(&err, Error::Corruption(c) if c.file == newest && c.offset == 0),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read(&newest).expect("still there"),
            bytes,
            "{name}: nothing deleted or cut"
        );
    }
}

/// Unsynced pages may reach the disk in any order: a lost page with intact
/// records after it is a torn tail while no later record says the lost page
/// had been synced (here: nothing was synced while they were written).
#[actix_rt::test]
async fn a_lost_unsynced_page_before_intact_records_is_a_torn_tail() {
    let source = tempfile::tempdir().expect("tempdir");
    write_unsynced(source.path(), 300).await;
    let newest = started_segments(source.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    let lost = frames
        .iter()
        .position(|f| f.start > 4096 - 500 && f.start < 4096 - 20)
        .expect("a record near the end of the first page");
    assert!(
        frames.last().expect("frames").end > 8192,
        "records continue past the lost page"
    );
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[lost].start..4096].fill(0);

    // Written in one unsynced run: nothing after the page attests it.
    let unsynced = tempfile::tempdir().expect("tempdir");
    copy_dir(source.path(), unsynced.path());
    let copy = unsynced.path().join(newest.file_name().expect("name"));
    std::fs::write(&copy, &bytes).expect("write");
    let (store, recovery) =
        concordkv::testing::open_recording(config(unsynced.path(), SyncMode::Always))
            .await
            .expect("a lost page opens");
    assert_eq!(
        recovery.records.len(),
        lost,
        "the records before the lost page survive"
    );
    let tail = recovery
        .truncated
        .as_ref()
        .expect("reported as a torn tail");
    assert_eq!(tail.offset, frames[lost].start as u64);
    store.shutdown().await.expect("shutdown");
}

/// The same lost page, where every record was synced before the next was
/// written (`always`, one appender): later records attest it was durable.
#[actix_rt::test]
async fn a_lost_page_that_later_records_attest_was_synced_is_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 300).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    let lost = frames
        .iter()
        .position(|f| f.start > 4096 - 500 && f.start < 4096 - 20)
        .expect("a record near the end of the first page");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[lost].start..4096].fill(0);
    std::fs::write(&newest, &bytes).expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == newest && c.offset == frames[lost].start as u64),
        "{err}"
    );
}

#[actix_rt::test]
async fn skip_corrupt_refuses_a_segment_that_starts_before_the_previous_one_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = fill_small_segments(dir.path()).await;
    let third = started_segments(dir.path()).remove(2);
    let mut bytes = std::fs::read(&third).expect("read");
    let header = SegmentHeader::decode(&bytes).expect("header");
    let earlier = SegmentHeader {
        first_seq: header.first_seq - 1,
        ..header
    };
    bytes[..32].copy_from_slice(&earlier.encode());
    std::fs::write(&third, &bytes).expect("write");
    let mut cfg = cfg.clone();
    cfg.wal.recovery_mode = RecoveryMode::SkipCorrupt;
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("a sequence number twice is never accepted");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == third && c.offset == 24),
        "{err}"
    );
}

/// `skip_corrupt` resynchronises on intact frames only where they are: a
/// frame a value contains (copied from another place) is not one.
#[actix_rt::test]
async fn skip_corrupt_does_not_take_a_frame_inside_a_value_for_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.set("first", "1").await.expect("set");
    let newest = started_segments(dir.path()).pop().expect("segment");
    let layout = SegmentHeader::decode(&std::fs::read(&newest).expect("read"))
        .expect("header")
        .layout();
    // A well-formed frame for the next sequence number, as a client could
    // copy it out of another segment file.
    let mut forged = Vec::new();
    encode_segment_record(
        3,
        &Entry::Op(Op::Set {
            key: b"forged".to_vec(),
            value: b"x".to_vec(),
        }),
        layout,
        32,
        4096,
        &mut forged,
    );
    store.set("carrier", forged).await.expect("set");
    store.set("last", "3").await.expect("set");
    store.shutdown().await.expect("shutdown");
    let frames = frame_ranges(&newest);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[frames[1].start + 4] ^= 0x01; // the carrier's CRC
    std::fs::write(&newest, &bytes).expect("write");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.recovery_mode = RecoveryMode::SkipCorrupt;
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("skip_corrupt opens");
    let state = recovery.state();
    assert!(!state.contains_key(b"forged".as_slice()), "{state:?}");
    assert!(state.contains_key(b"last".as_slice()));
    assert_eq!(recovery.skipped.len(), 1);
    store.shutdown().await.expect("shutdown");
}

/// A zeroed first sector (header and first records) of a segment with
/// records behind it is damage, never a segment that was never started.
#[actix_rt::test]
async fn a_zeroed_header_sector_with_records_behind_it_is_not_a_never_started_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 300).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[..4096].fill(0);
    std::fs::write(&newest, &bytes).expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused, not retired");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == newest && c.offset == 0),
        "{err}"
    );
    assert_eq!(std::fs::read(&newest).expect("still there"), bytes);
}

/// An open syncs the newest segment whole and records that in the
/// MANIFEST: if a crash later leaves that segment the last one started
/// again, damage in it is still damage, not an interrupted write.
#[actix_rt::test]
async fn a_segment_an_earlier_open_sealed_is_never_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), SyncMode::None);
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for i in 0..50u32 {
        store.set(format!("key-{i}"), "v").await.expect("set");
    }
    store.shutdown().await.expect("shutdown");
    let written = started_segments(dir.path()).pop().expect("segment");
    // This open seals `written` and starts the next segment.
    let (store, recovery) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("reopen");
    assert_eq!(recovery.last_seq, 50);
    store.shutdown().await.expect("shutdown");
    let manifest = concordkv::testing::format::manifest::Manifest::decode(
        &std::fs::read(dir.path().join("MANIFEST")).expect("read manifest"),
    )
    .expect("manifest");
    let sealed_id = concordkv::testing::format::segment::parse_segment_file_name(
        &written.file_name().expect("name").to_string_lossy(),
    )
    .expect("id");
    assert_eq!(manifest.sealed_through, sealed_id);

    // The next segment's start is lost (all zeros), and a record of the
    // sealed one, attested by no later frame (nothing was synced while
    // they were written), is damaged.
    let next = started_segments(dir.path()).pop().expect("next segment");
    assert_ne!(next, written);
    let len = std::fs::metadata(&next).expect("stat").len();
    std::fs::write(&next, vec![0u8; len as usize]).expect("zero");
    let frames = frame_ranges(&written);
    let mut bytes = std::fs::read(&written).expect("read");
    bytes[frames[25].start + 4] ^= 0x01;
    std::fs::write(&written, &bytes).expect("write");
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("refused, not cut");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == written && c.offset == frames[25].start as u64),
        "{err}"
    );
}

/// `inspect` judges a directory with the scan the open runs: for every
/// shape of damage, what it reports as a torn tail is exactly what the open
/// cuts, and what it reports as damage is what fails the open; it changes
/// nothing either way.
#[actix_rt::test]
async fn inspect_predicts_what_open_cuts_and_what_it_refuses() {
    let source = tempfile::tempdir().expect("tempdir");
    write_unsynced(source.path(), 300).await;
    let attested = tempfile::tempdir().expect("tempdir");
    write_records(attested.path(), 300).await;
    let sealed = tempfile::tempdir().expect("tempdir");
    fill_small_segments(sealed.path()).await;

    type Damage = fn(&mut Vec<u8>, &[std::ops::Range<usize>]);
    let shapes: [(&str, &Path, bool, Damage); 7] = [
        ("zeros from mid-record", source.path(), true, |b, f| {
            let last = f.last().expect("frames");
            b[(last.start + last.end) / 2..].fill(0);
        }),
        ("short file", source.path(), true, |b, f| {
            let last = f.last().expect("frames");
            b.truncate(last.start + 7);
        }),
        ("unsynced lost page", source.path(), true, |b, f| {
            let lost = f.iter().find(|r| r.start > 3600 && r.start < 4076);
            let lost = lost.expect("a record near the end of the first page");
            b[lost.start..4096].fill(0);
        }),
        ("attested lost page", attested.path(), true, |b, f| {
            let lost = f.iter().find(|r| r.start > 3600 && r.start < 4076);
            let lost = lost.expect("a record near the end of the first page");
            b[lost.start..4096].fill(0);
        }),
        ("attested flipped byte", attested.path(), true, |b, f| {
            b[f[5].start + 18] ^= 0x80;
        }),
        (
            "flipped byte in a sealed segment",
            sealed.path(),
            false,
            |b, f| {
                b[f[f.len() / 2].start + 20] ^= 0x01;
            },
        ),
        ("zeroed header", source.path(), true, |b, _| {
            b[..32].fill(0);
        }),
    ];
    let scratch = tempfile::tempdir().expect("tempdir");
    let (mut cut, mut refused) = (0, 0);
    for (case, (name, from, newest, damage)) in shapes.into_iter().enumerate() {
        let dir = scratch.path().join(case.to_string());
        copy_dir(from, &dir);
        let started = started_segments(&dir);
        let victim = if newest {
            started.last().expect("segment").clone()
        } else {
            started[1].clone()
        };
        let frames = frame_ranges(&victim);
        let mut bytes = std::fs::read(&victim).expect("read");
        damage(&mut bytes, &frames);
        std::fs::write(&victim, &bytes).expect("write");

        let found = concordkv::inspect(&dir).expect("inspect");
        assert_eq!(std::fs::read(&victim).expect("read"), bytes, "{name}");
        let mut cfg = config(&dir, SyncMode::Always);
        cfg.wal.max_segment_bytes = 4096;
        match concordkv::testing::open_recording(cfg).await {
            Ok((store, recovery)) => {
                assert!(found.damage.is_empty(), "{name}: {:?}", found.damage);
                assert_eq!(found.torn_tail, recovery.truncated, "{name}");
                cut += usize::from(recovery.truncated.is_some());
                store.shutdown().await.expect("shutdown");
                let after = concordkv::inspect(&dir).expect("inspect");
                assert!(
                    after.torn_tail.is_none() && after.damage.is_empty(),
                    "{name}: the open cut it"
                );
            }
            Err(Error::Corruption(c)) => {
                assert!(found.torn_tail.is_none(), "{name}: {:?}", found.torn_tail);
                assert!(
                    found.damage.contains(&c),
                    "{name}: {c} not in {:?}",
                    found.damage
                );
                refused += 1;
            }
            Err(other) => panic!("{name}: {other}"),
        }
    }
    assert_eq!((cut, refused), (3, 4), "torn tails cut, damage refused");
}

/// Records of one group commit carry the same durable offset: where the
/// first of them starts. Damage to that first record with the next one
/// intact (pages written back out of order) is still an interrupted write:
/// nothing attests the damaged bytes were durable.
#[actix_rt::test]
async fn damage_a_later_record_of_the_same_group_commit_cannot_attest_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 300).await;
    let newest = started_segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&newest).expect("read");
    let layout = SegmentHeader::decode(&bytes).expect("header").layout();
    let frames = frame_ranges(&newest);
    assert!(frames.len() >= 3, "the newest segment holds a few records");
    // The last two records, rewritten as one group commit.
    let first = frames[frames.len() - 2].start;
    let mut group = Vec::new();
    for (seq, key) in [(299u64, "a"), (300, "b")] {
        let offset = (first + group.len()) as u64;
        let entry = Entry::Op(Op::Set {
            key: key.into(),
            value: b"value".to_vec(),
        });
        encode_segment_record(seq, &entry, layout, first as u64, offset, &mut group);
    }
    bytes[first..].fill(0);
    bytes[first..first + group.len()].copy_from_slice(&group);
    bytes[first + 26] ^= 0xFF; // in the first record's payload
    std::fs::write(&newest, &bytes).expect("write");
    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("a torn group commit opens");
    assert_eq!(recovery.last_seq, 298, "the whole torn group is cut");
    let tail = recovery
        .truncated
        .as_ref()
        .expect("reported as a torn tail");
    assert_eq!(tail.offset, first as u64);
    store.shutdown().await.expect("shutdown");
}
