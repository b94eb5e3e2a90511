//! An open segment file: created preallocated and durable before it is
//! listed in the manifest, started by writing its header, then appended to
//! in place by the WAL actor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::entry::Seq;
use crate::error::{Error, Result};
use crate::format::segment::{segment_path, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::fs::{FileSystem, WritableFile};

/// A segment file open for writing.
pub(crate) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub file: Arc<dyn WritableFile>,
    /// Where the next record goes.
    pub offset: u64,
    /// Records written to it.
    pub records: u64,
}

impl Segment {
    /// Creates segment `id` in `dir`, preallocated to `size` bytes, and makes
    /// the file and its directory entry durable.
    pub fn create(fs: &dyn FileSystem, dir: &Path, id: u64, size: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = fs
            .create(&path, size)
            .map_err(|e| Error::io("create segment", &path, e))?;
        file.sync_all()
            .map_err(|e| Error::io("sync new segment", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(Segment {
            id,
            path,
            file,
            offset: 0,
            records: 0,
        })
    }

    /// Writes the header that makes a prepared segment the active one; it
    /// becomes durable with the segment's first sync.
    pub fn start(&mut self, first_seq: Seq) -> Result<()> {
        let header = SegmentHeader {
            id: self.id,
            first_seq,
        };
        self.file
            .write_at(&header.encode(), 0)
            .map_err(|e| Error::io("write segment header", &self.path, e))?;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }
}

/// The started segments among `ids` (in their order), with where each
/// starts: what rotation left behind, read from the headers alone.
/// Prepared segments that never started are left out.
pub(crate) fn started_segments(
    fs: &dyn FileSystem,
    dir: &Path,
    ids: &[u64],
) -> Result<Vec<(u64, PathBuf, Seq)>> {
    let mut started = Vec::with_capacity(ids.len());
    for &id in ids {
        let path = segment_path(dir, id);
        let head = fs
            .read_prefix(&path, SEGMENT_HEADER_BYTES)
            .map_err(|e| Error::io("read segment header", &path, e))?;
        if let Ok(header) = SegmentHeader::decode(&head) {
            started.push((id, path, header.first_seq));
        }
    }
    Ok(started)
}
