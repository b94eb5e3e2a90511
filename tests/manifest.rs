//! The MANIFEST is the source of truth on open: files it does not list are
//! never replayed and are removed; damage to it fails the open by name.

mod common;

use std::path::Path;

use common::{config, fill_small_segments, started_segments};
use concordkv::testing::format::manifest::{Manifest, MANIFEST_FILE, MANIFEST_TEMP_FILE};
use concordkv::testing::format::record::encode_segment_record;
use concordkv::testing::format::segment::{segment_file_name, SegmentHeader};
use concordkv::{Entry, Op};
use concordkv::{Error, SyncMode};

async fn write_records(dir: &Path, n: u32) {
    let (store, _) = concordkv::testing::open_recording(config(dir, SyncMode::Always))
        .await
        .expect("open");
    for i in 0..n {
        store.set(format!("key-{i}"), "v").await.expect("set");
    }
    store.shutdown().await.expect("shutdown");
}

fn manifest(dir: &Path) -> Manifest {
    Manifest::decode(&std::fs::read(dir.join(MANIFEST_FILE)).expect("read manifest"))
        .expect("valid manifest")
}

#[actix_rt::test]
async fn an_unlisted_segment_is_never_replayed_and_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 5).await;
    // A well-formed segment continuing the log, as a crash between creating
    // a file and listing it could leave behind.
    let stray = dir.path().join(segment_file_name(500));
    let header = SegmentHeader::new(500, 6);
    let mut bytes = header.encode().to_vec();
    encode_segment_record(
        6,
        &Entry::Op(Op::Set {
            key: b"ghost".to_vec(),
            value: b"x".to_vec(),
        }),
        header.layout(),
        32,
        bytes.len() as u64,
        &mut bytes,
    );
    std::fs::write(&stray, &bytes).expect("write stray segment");
    std::fs::write(dir.path().join(MANIFEST_TEMP_FILE), b"half-written")
        .expect("write temp manifest");
    // A segment the rotator was still filling under its temporary name.
    let half_prepared = dir.path().join("3.wal.prep");
    std::fs::write(&half_prepared, [0u8; 512]).expect("write prepared segment");

    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("open");
    assert_eq!(
        recovery.records.len(),
        5,
        "the unlisted record is not replayed"
    );
    assert!(!stray.exists(), "the unlisted segment is removed");
    assert!(
        !dir.path().join(MANIFEST_TEMP_FILE).exists(),
        "the temporary manifest is removed"
    );
    assert!(
        !half_prepared.exists(),
        "a half-prepared segment is removed"
    );
    assert_eq!(store.set("next", "v").await.expect("set"), 6);
    store.shutdown().await.expect("shutdown");
    let listed = manifest(dir.path()).segments;
    assert!(!listed.contains(&500));
    for path in started_segments(dir.path()) {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(
            listed.iter().any(|id| segment_file_name(*id) == name),
            "{name} is listed"
        );
    }
}

#[actix_rt::test]
async fn a_missing_manifest_with_segments_present_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 3).await;
    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("remove manifest");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file.ends_with(MANIFEST_FILE)),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_damaged_manifest_fails_the_open_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 3).await;
    let path = dir.path().join(MANIFEST_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x04;
    std::fs::write(&path, &bytes).expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused");
    match &err {
        Error::Corruption(c) => {
            assert_eq!(c.file, path);
            assert!(c.reason.contains("checksum"), "{}", c.reason);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "a failed open changes nothing"
    );
}

#[actix_rt::test]
async fn a_listed_segment_that_is_missing_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = fill_small_segments(dir.path()).await;
    let victim = started_segments(dir.path()).remove(1);
    std::fs::remove_file(&victim).expect("remove");
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == victim && c.reason.contains("missing")),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_listed_segment_that_was_never_started_is_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 3).await;
    write_records(dir.path(), 1).await;
    // A segment the rotator prepared while the WAL restarted: listed, all
    // zeros, with a started segment after it.
    let mut m = manifest(dir.path());
    let first_started = m.segments[0];
    let zero_id = first_started + 1;
    assert!(
        !m.segments.contains(&zero_id) && m.segments[1] > zero_id,
        "{m:?}"
    );
    std::fs::write(dir.path().join(segment_file_name(zero_id)), vec![0u8; 8192])
        .expect("zero segment");
    m.segments.insert(1, zero_id);
    m.generation += 1;
    std::fs::write(dir.path().join(MANIFEST_FILE), m.encode()).expect("write manifest");

    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("open");
    assert_eq!(
        recovery.records.len(),
        4,
        "the segments around it are replayed"
    );
    assert_eq!(store.set("a", "b").await.expect("set"), 5);
    store.shutdown().await.expect("shutdown");
    assert!(!manifest(dir.path()).segments.contains(&zero_id));
    assert!(!dir.path().join(segment_file_name(zero_id)).exists());

    // Zeros in the header with data behind it are damage, not an unused segment.
    let mut m = manifest(dir.path());
    let mut bytes = vec![0u8; 8192];
    bytes[100] = 1;
    std::fs::write(dir.path().join(segment_file_name(zero_id)), bytes).expect("damaged segment");
    m.segments.insert(1, zero_id);
    m.generation += 1;
    std::fs::write(dir.path().join(MANIFEST_FILE), m.encode()).expect("write manifest");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file.ends_with(segment_file_name(zero_id))),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_missing_manifest_next_to_snapshots_fails_the_open_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.set("a", "1").await.expect("set");
    store.snapshot().await.expect("snapshot");
    store.shutdown().await.expect("shutdown");
    let before = names(dir.path());
    assert!(
        before.iter().any(|n| n.ends_with(".full.snap")),
        "{before:?}"
    );
    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("remove manifest");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file.ends_with(MANIFEST_FILE) && c.reason.contains("not empty")),
        "{err}"
    );
    let mut after = names(dir.path());
    after.push(MANIFEST_FILE.to_string());
    after.sort();
    assert_eq!(after, before, "every file is still there");
}

#[actix_rt::test]
async fn a_new_store_is_created_only_in_an_empty_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
    let err = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .err()
        .expect("a directory holding other files is refused");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        names(dir.path()),
        vec!["LOCK".to_string(), "notes.txt".to_string()]
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let fresh = empty.path().join("a").join("b");
    let (store, _) = concordkv::testing::open_recording(config(&fresh, SyncMode::Always))
        .await
        .expect("a new or empty directory becomes a store");
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn only_files_named_like_the_stores_own_are_ever_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(dir.path(), 3).await;
    let keep = [
        "backup.snap",
        "old.full.snap",
        "x.snap.tmp",
        "my.wal.prep",
        "notes.wal",
    ];
    for name in keep {
        std::fs::write(dir.path().join(name), b"user data").expect("write");
    }
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.shutdown().await.expect("shutdown");
    for name in keep {
        assert!(dir.path().join(name).exists(), "{name} was removed");
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[actix_rt::test]
async fn unlisted_snapshots_are_removed_and_listed_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
        .await
        .expect("open");
    store.set("a", "1").await.expect("set");
    store.snapshot().await.expect("snapshot");
    store.shutdown().await.expect("shutdown");
    let listed: Vec<String> = names(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".full.snap"))
        .collect();
    assert_eq!(listed.len(), 1);
    let strays = [
        "00000000000000000099.full.snap",
        "00000000000000000099.full.snap.tmp",
        "00000000000000000001-00000000000000000002.incr.snap",
    ];
    for stray in strays {
        std::fs::write(dir.path().join(stray), b"debris").expect("write");
    }
    let (store, recovery) =
        concordkv::testing::open_recording(config(dir.path(), SyncMode::Always))
            .await
            .expect("open");
    assert_eq!(recovery.snapshots, 1);
    store.shutdown().await.expect("shutdown");
    for stray in strays {
        assert!(!dir.path().join(stray).exists(), "{stray} was kept");
    }
    assert!(
        dir.path().join(&listed[0]).exists(),
        "the listed snapshot was removed"
    );
}

#[actix_rt::test]
async fn a_manifest_that_cannot_be_read_is_an_io_error_not_a_missing_one() {
    use concordkv::testing::sim_fs::{Call, Fault, SimFs};
    let fs = SimFs::new(3);
    let mut cfg = concordkv::Config::with_data_dir("/sim/db");
    cfg.compaction.threshold = u64::MAX;
    let (store, _) =
        concordkv::testing::open_recording_with_fs(cfg.clone(), std::sync::Arc::new(fs.clone()))
            .await
            .expect("open");
    store.shutdown().await.expect("shutdown");
    fs.inject(Fault {
        call: Call::Read,
        nth: 1,
        errno: libc::EIO,
        path_contains: Some(MANIFEST_FILE.into()),
        sticky: false,
    });
    let err = concordkv::testing::open_recording_with_fs(cfg, std::sync::Arc::new(fs.clone()))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Io { op, .. } if *op == "read manifest"),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_missing_newest_segment_is_named_before_the_one_before_it_is_judged() {
    // With the newest listed segment gone, the one before it is not the
    // newest: damage at its end is not a torn tail to cut, and the open
    // names what is really wrong, the missing file.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = fill_small_segments(dir.path()).await;
    let mut started = started_segments(dir.path());
    let newest = started.pop().expect("newest");
    let before = started.pop().expect("the one before");
    std::fs::remove_file(&newest).expect("remove");
    let last = common::frame_ranges(&before).pop().expect("a frame");
    let mut bytes = std::fs::read(&before).expect("read");
    bytes[last.start + (last.end - last.start) / 2..].fill(0);
    std::fs::write(&before, bytes).expect("write");
    let err = concordkv::testing::open_recording(cfg)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, Error::Corruption(c) if c.file == newest && c.reason.contains("missing")),
        "{err}"
    );
}
