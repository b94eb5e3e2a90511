//! Entry points for the fuzz targets (`fuzz/`) and their regression tests
//! (`tests/fuzz_regressions.rs`). Each hands arbitrary bytes to the code the
//! store runs on a real file of that kind, through a simulated disk, and
//! must return (an error is a fine answer) without panicking, hanging, or
//! allocating what a corrupt length claims.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, RecoveryMode};
use crate::format::manifest::{DirKind, Manifest, MANIFEST_FILE};
use crate::format::segment::segment_path;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::FileSystem;
use crate::lifecycle::manifest::ManifestStore;
use crate::lifecycle::snapshot::snapshot_path;
use crate::log::recovery::{recover, Debris};
use crate::testing::sim_fs::SimFs;

const DIR: &str = "/fuzz";

/// A simulated directory holding `files`, recovered in every recovery mode.
fn recover_files(files: &[(&Path, &[u8])]) {
    for mode in [
        RecoveryMode::TolerateTail,
        RecoveryMode::Absolute,
        RecoveryMode::SkipCorrupt,
    ] {
        let fs = SimFs::new(0);
        let written = fs.create_dir_all(Path::new(DIR)).and_then(|()| {
            files.iter().try_for_each(|(path, bytes)| {
                fs.create(path, 0).and_then(|file| file.write_at(bytes, 0))
            })
        });
        if written.is_err() {
            return;
        }
        let mut config = Config::with_data_dir(DIR);
        config.wal.recovery_mode = mode;
        let fs: Arc<dyn FileSystem> = Arc::new(fs);
        if let Ok(manifest) = ManifestStore::open(Arc::clone(&fs), Path::new(DIR), DirKind::Kv) {
            let _ = recover(fs.as_ref(), &manifest, &config, Debris::Remove, &mut |_| {});
        }
    }
}

/// `data` as the only segment the manifest lists.
pub fn segment(data: &[u8]) {
    let manifest = Manifest {
        generation: 1,
        next_segment_id: 2,
        segments: vec![1],
        snapshots: Vec::new(),
        sealed_through: 0,
        ..Manifest::default()
    }
    .encode();
    let segment = segment_path(Path::new(DIR), 1);
    recover_files(&[
        (&Path::new(DIR).join(MANIFEST_FILE), &manifest),
        (&segment, data),
    ]);
}

/// `data` as a snapshot the manifest lists with the header `data` starts
/// with (or a plausible one), so the entries behind it are read.
pub fn snapshot(data: &[u8]) {
    let header = SnapshotHeader::decode(data).unwrap_or(SnapshotHeader {
        kind: SnapshotKind::Full,
        from_seq: 0,
        to_seq: 1,
        entries: 1,
    });
    let manifest = Manifest {
        generation: 1,
        next_segment_id: 1,
        segments: Vec::new(),
        snapshots: vec![header],
        sealed_through: 0,
        ..Manifest::default()
    }
    .encode();
    let path = snapshot_path(Path::new(DIR), &header);
    recover_files(&[
        (&Path::new(DIR).join(MANIFEST_FILE), &manifest),
        (&path, data),
    ]);
}

/// `data` as the manifest of an otherwise empty directory.
pub fn manifest(data: &[u8]) {
    recover_files(&[(&Path::new(DIR).join(MANIFEST_FILE), data)]);
}

/// Runs `run` on every input in `dir` (a target's `fuzz/regressions/`
/// folder: its seeds and every input a fuzz run ever crashed on), and on
/// prefixes of each (the torn versions of a file). Panics, naming the
/// input, if `run` panics on a whole input, or if `dir` holds none.
pub fn replay_regressions(dir: &Path, run: fn(&[u8])) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("regression inputs in {}: {e}", dir.display()));
    let mut inputs = 0;
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .path();
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        for cut in (0..data.len()).step_by(data.len().div_ceil(64).max(1)) {
            run(&data[..cut]);
        }
        inputs += 1;
    }
    assert!(inputs > 0, "no inputs in {}", dir.display());
}
