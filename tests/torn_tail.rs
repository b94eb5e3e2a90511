//! Damage on disk: a torn tail is cut and the intact prefix opens; damage
//! anywhere else fails the open with the file, offset and reason.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::{config, copy_dir, fill_small_segments, frame_ranges, started_segments};
use concordkv::{Error, RecoveryMode, Store, SyncMode};

/// Writes `n` records (one batch among them) and shuts down cleanly.
async fn write_records(dir: &Path, n: u32) {
    let (store, _) = Store::open(config(dir, SyncMode::Always))
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
            let (store, recovery) = Store::open(config(&dir, SyncMode::Always))
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
    let (store, _) = Store::open(cfg.clone()).await.expect("open");
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
        let err = Store::open(cfg)
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
    let (store, recovery) = Store::open(cfg).await.expect("skip_corrupt opens");
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
    let err = Store::open(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("fails");
    let text = err.to_string();
    assert!(text.contains("intact records follow"), "{text}");
    assert!(text.contains(&newest.display().to_string()), "{text}");
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
    let err = Store::open(cfg).await.err().expect("absolute refuses");
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
    let err = Store::open(cfg).await.err().expect("fails");
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
        let err = Store::open(config(dir.path(), SyncMode::Always))
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

#[actix_rt::test]
async fn a_lost_page_before_intact_records_is_a_torn_tail() {
    let source = tempfile::tempdir().expect("tempdir");
    write_records(source.path(), 300).await;
    let newest = started_segments(source.path()).pop().expect("segment");
    let frames = frame_ranges(&newest);
    // A record starting in the last 512 bytes of the first page: zeros from
    // there to the page end hold no whole zero sector.
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
    std::fs::write(&newest, &bytes).expect("write");
    let (store, recovery) = Store::open(config(source.path(), SyncMode::Always))
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
