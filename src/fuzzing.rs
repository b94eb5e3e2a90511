//! Entry points for the fuzz targets (`fuzz/`) and their regression tests
//! (`tests/fuzz_regressions.rs`). Each hands arbitrary bytes to the code the
//! store runs on a real file of that kind, through a simulated disk, and
//! must return (an error is a fine answer) without panicking, hanging, or
//! allocating what a corrupt length claims.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;

use crate::config::{Config, RecoveryMode};
use crate::format::manifest::{Manifest, MANIFEST_FILE};
use crate::format::segment::segment_path;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::FileSystem;
use crate::manifest::ManifestStore;
use crate::recovery::recover;
use crate::server::request::RequestParser;
use crate::sim_fs::SimFs;
use crate::snapshot::snapshot_path;

const DIR: &str = "/fuzz";
/// The request limit the RESP target parses with (the default's order).
const MAX_REQUEST_BYTES: usize = 1 << 20;

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
        if let Ok(manifest) = ManifestStore::open(Arc::clone(&fs), Path::new(DIR)) {
            let _ = recover(fs.as_ref(), &manifest, &config);
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

/// `data` as bytes from a client: every request parsed off it in turn, once
/// with all of it there and once arriving in pieces (sizes taken from the
/// data itself), and both must parse the same requests.
pub fn request(data: &[u8]) {
    let whole = parse_arriving(data, data.len().max(1));
    let piece = usize::from(data.first().copied().unwrap_or(1) % 16) + 1;
    let pieces = parse_arriving(data, piece);
    assert_eq!(
        whole, pieces,
        "the same bytes in pieces of {piece} parse differently"
    );
}

/// The requests parsed off `data` arriving `piece` bytes at a time, up to
/// the first error (`None` in the list), or what is left incomplete.
fn parse_arriving(data: &[u8], piece: usize) -> Vec<Option<Vec<bytes::Bytes>>> {
    let mut parser = RequestParser::new(MAX_REQUEST_BYTES);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(request)) => {
                    assert!(
                        buf.len() < before,
                        "a request was taken without consuming input"
                    );
                    out.push(Some(request.args));
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(None);
                    return out;
                }
            }
        }
    }
    out
}
