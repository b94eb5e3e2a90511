//! Compaction: rewriting the sealed segments down to the latest value of
//! each key.
//!
//! The output is a full snapshot at the last sealed sequence number, built
//! from the current snapshot chain and the sealed segments; the manifest
//! write that lists it unlists those segments and the snapshots it replaces.
//! A full snapshot holds nothing older than itself, so deletions are dropped
//! safely: no older record of the key remains to bring it back.
//!
//! **Redundant** counts the operations in the sealed segments (after the
//! snapshot chain) that the output drops: every operation a later sealed
//! operation on the same key overwrites or deletes, and every deletion that
//! is its key's last sealed operation. Automatic compaction starts when the
//! sealed operations reach `compaction.threshold` and the redundant fraction
//! of them reaches `compaction.ratio`.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::entry::{Op, Seq};
use crate::error::{Error, Result};
use crate::format::codec::decode_entry;
use crate::format::record::{read_frame, Frame};
use crate::format::segment::SEGMENT_HEADER_BYTES;
use crate::fs::FileSystem;
use crate::manifest::ManifestStore;
use crate::segment::started_segments;
use crate::snapshot::{select_chain, snapshot_path};

/// The sealed part of the log, as compaction sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SealedLog {
    /// The last sealed sequence number: what a compaction would cover.
    pub upto: Seq,
    /// Operations in sealed segments after the snapshot chain.
    pub ops: u64,
    /// Of those, the ones a compaction drops.
    pub redundant: u64,
    /// Bytes of the sealed segments and the chain's snapshots.
    pub bytes: u64,
    /// Entries in the chain's snapshots.
    pub snapshot_entries: u64,
}

impl SealedLog {
    /// Whether automatic compaction should start.
    pub fn due(&self, config: &Config) -> bool {
        self.ops >= config.compaction.threshold
            && self.ops > 0
            && self.redundant as f64 / self.ops as f64 >= config.compaction.ratio
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// The sequence number the output covers.
    pub upto: Seq,
    /// Operations and snapshot entries read.
    pub entries_before: u64,
    /// Keys written.
    pub entries_after: u64,
    /// Bytes of the segments and snapshots replaced.
    pub bytes_before: u64,
    /// Bytes of the output.
    pub bytes_after: u64,
}

/// Reads the sealed segments (every started segment but the newest) and
/// counts what a compaction would keep and drop.
pub(crate) fn analyze(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
) -> Result<SealedLog> {
    let dir = config.data_dir.as_path();
    let chain = select_chain(&manifest.snapshots());
    let covered = chain.last().map_or(0, |s| s.to_seq);
    let mut log = SealedLog {
        snapshot_entries: chain.iter().map(|s| s.entries).sum(),
        ..SealedLog::default()
    };
    for snapshot in &chain {
        let path = snapshot_path(dir, snapshot);
        log.bytes += fs
            .file_len(&path)
            .map_err(|e| Error::io("stat snapshot", &path, e))?;
    }
    let mut started = started_segments(fs, dir, &manifest.segments())?;
    let Some((_, _, active_first)) = started.pop() else {
        return Ok(log);
    };
    log.upto = active_first.saturating_sub(1).max(covered);
    let max_payload = usize::try_from(config.limits.max_record_bytes).unwrap_or(usize::MAX);
    // Per key: whether its last sealed operation is a set.
    let mut last_is_set: HashMap<Vec<u8>, bool> = HashMap::new();
    for (_, path, _) in &started {
        let bytes = fs
            .read(path)
            .map_err(|e| Error::io("read segment", path, e))?;
        log.bytes += bytes.len() as u64;
        let mut offset = SEGMENT_HEADER_BYTES;
        while let Frame::Record { seq, payload, size } = read_frame(&bytes[offset..], max_payload) {
            if seq > covered {
                let entry = decode_entry(payload).map_err(|reason| {
                    Error::Corruption(crate::error::Corruption {
                        file: path.clone(),
                        offset: offset as u64,
                        reason,
                    })
                })?;
                for op in entry.ops() {
                    log.ops += 1;
                    last_is_set.insert(op.key().to_vec(), matches!(op, Op::Set { .. }));
                }
            }
            offset += size;
        }
    }
    let kept = last_is_set.values().filter(|is_set| **is_set).count() as u64;
    log.redundant = log.ops - kept.min(log.ops);
    Ok(log)
}
