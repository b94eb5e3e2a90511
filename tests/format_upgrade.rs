//! Segments written by format version 1 (plain frames) are still read, and
//! the log continues after them in version-2 segments.

mod common;

use common::{config, started_segments};
use concordkv::testing::format::manifest::{Manifest, MANIFEST_FILE};
use concordkv::testing::format::record::{encode_record, Layout};
use concordkv::testing::format::segment::{segment_file_name, SegmentHeader};
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
