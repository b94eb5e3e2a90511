//! Files earlier releases wrote are still read: segments of format version
//! 1 (plain frames) and 2, and snapshots of version 1; the log continues
//! after them in the current versions.

mod common;

use common::{config, started_segments};
use concordkv::testing::format::manifest::{Manifest, MANIFEST_FILE};
use std::time::{Duration, UNIX_EPOCH};

use concordkv::testing::format::record::{encode_record, encode_segment_record, Layout};
use concordkv::testing::format::segment::{segment_file_name, SegmentHeader};
use concordkv::testing::format::snapshot::{SnapshotHeader, SnapshotKind};
use concordkv::SyncMode;
use concordkv::{Entry, Op};

#[actix_rt::test]
async fn a_version_1_log_opens_and_continues_in_version_2_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = SegmentHeader {
        version: 1,
        ..SegmentHeader::new(1, 1)
    };
    let mut bytes = old.encode().to_vec();
    for seq in 1..=10u64 {
        encode_record(
            seq,
            &Entry::Op(Op::Set {
                key: format!("k{seq}").into_bytes(),
                value: vec![0; 600],
            }),
            &mut bytes,
        );
    }
    std::fs::write(dir.path().join(segment_file_name(1)), &bytes).expect("write segment");
    let manifest = Manifest {
        generation: 1,
        next_segment_id: 2,
        segments: vec![1],
        snapshots: Vec::new(),
        sealed_through: 0,
        ..Manifest::default()
    };
    std::fs::write(dir.path().join(MANIFEST_FILE), manifest.encode()).expect("write manifest");

    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("a version 1 log opens");
    assert_eq!(recovery.last_seq, 10);
    assert!(recovery.truncated.is_none());
    store.set("k11", "new").await.expect("append after it");
    store.shutdown().await.expect("shutdown");

    let segments = started_segments(dir.path());
    let layouts: Vec<Layout> = segments
        .iter()
        .map(|p| {
            SegmentHeader::decode(&std::fs::read(p).expect("read"))
                .expect("header")
                .layout()
        })
        .collect();
    assert_eq!(layouts.first(), Some(&Layout::Plain));
    assert!(matches!(layouts.last(), Some(Layout::Segment { .. })));
    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("reopen");
    assert_eq!(recovery.last_seq, 11);
    assert_eq!(recovery.state().len(), 11);
    store.shutdown().await.expect("shutdown");
}

/// A full snapshot file as format version 1 wrote it (the header by hand,
/// from FORMAT.md), holding `keys` set at sequence numbers 1 to n.
fn version_1_snapshot(keys: &[&str]) -> (SnapshotHeader, Vec<u8>) {
    let header = SnapshotHeader {
        kind: SnapshotKind::Full,
        from_seq: 0,
        to_seq: keys.len() as u64,
        entries: keys.len() as u64,
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"CKVSNAP\n");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&header.from_seq.to_le_bytes());
    bytes.extend_from_slice(&header.to_seq.to_le_bytes());
    bytes.extend_from_slice(&header.entries.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[0..12]);
    crc.update(&bytes[16..48]);
    bytes[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    for (seq, key) in (1u64..).zip(keys) {
        let op = Op::Set {
            key: key.as_bytes().to_vec(),
            value: b"old".to_vec(),
        };
        encode_record(seq, &Entry::Op(op), &mut bytes);
    }
    (header, bytes)
}

fn segment_versions(dir: &std::path::Path) -> Vec<u32> {
    started_segments(dir)
        .iter()
        .map(|p| {
            SegmentHeader::decode(&std::fs::read(p).expect("read"))
                .expect("header")
                .version
        })
        .collect()
}

/// A directory the previous release wrote (a version-1 snapshot, a
/// version-2 segment) opens; keys that expire and a clear are then written
/// in version-3 segments and a version-2 snapshot, and read back.
#[actix_rt::test]
async fn a_previous_release_s_directory_opens_and_takes_deadlines_and_clears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (snapshot, bytes) = version_1_snapshot(&["a", "b", "c"]);
    std::fs::write(dir.path().join(snapshot.file_name()), &bytes).expect("write snapshot");
    let mut segment = SegmentHeader {
        version: 2,
        ..SegmentHeader::new(1, 4)
    }
    .encode()
    .to_vec();
    let layout = SegmentHeader::new(1, 4).layout();
    assert!(matches!(layout, Layout::Segment { .. }));
    for (seq, key) in [(4u64, "d"), (5, "e")] {
        let op = Op::Set {
            key: key.into(),
            value: b"old".to_vec(),
        };
        let offset = segment.len() as u64;
        encode_segment_record(seq, &Entry::Op(op), layout, offset, offset, &mut segment);
    }
    std::fs::write(dir.path().join(segment_file_name(1)), &segment).expect("write segment");
    let manifest = Manifest {
        generation: 1,
        next_segment_id: 2,
        segments: vec![1],
        snapshots: vec![snapshot],
        sealed_through: 0,
        ..Manifest::default()
    };
    std::fs::write(dir.path().join(MANIFEST_FILE), manifest.encode()).expect("write manifest");

    let cfg = config(dir.path(), SyncMode::Always);
    let (store, recovery) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("the previous release's directory opens");
    assert_eq!((recovery.base_seq, recovery.last_seq), (3, 5));
    assert_eq!(recovery.state().len(), 5);
    let far = UNIX_EPOCH + Duration::from_millis(4_102_444_800_000);
    store.set_expiring("far", "v", far).await.expect("far");
    store
        .set_expiring("past", "v", UNIX_EPOCH + Duration::from_secs(1))
        .await
        .expect("past");
    store.shutdown().await.expect("shutdown");
    assert_eq!(segment_versions(dir.path()), [2, 3]);

    let (store, recovery) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("reopen");
    let state = store.state();
    assert_eq!(state.expires_at(b"far"), Some(Some(4_102_444_800_000)));
    assert_eq!(state.get(b"past"), None, "expired while stored");
    assert_eq!(state.expires_at(b"a"), Some(None));
    assert_eq!(recovery.state().len(), 6);
    store.clear().await.expect("clear");
    store.set("after", "1").await.expect("set after the clear");
    store
        .snapshot_incremental()
        .await
        .expect("incremental snapshot");
    store.shutdown().await.expect("shutdown");

    let (store, recovery) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("reopen from the incremental snapshot with its clear");
    assert_eq!(recovery.state().keys().collect::<Vec<_>>(), [b"after"]);
    store.set_expiring("later", "v", far).await.expect("set");
    store.snapshot().await.expect("full snapshot");
    store.shutdown().await.expect("shutdown");
    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen from the new full snapshot");
    assert_eq!(recovery.state().len(), 2);
    assert_eq!(
        store.state().expires_at(b"later"),
        Some(Some(4_102_444_800_000))
    );
    store.shutdown().await.expect("shutdown");
}
