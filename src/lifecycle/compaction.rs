//! Compaction: rewriting the sealed segments down to the latest value of
//! each key.
//!
//! The output is a full snapshot at the last sealed sequence number, built
//! from the current snapshot chain and the sealed segments in one pass that
//! also measures what is redundant; the manifest write that lists it
//! unlists those segments and the snapshots it replaces.
//! A full snapshot holds nothing older than itself, so deletions are dropped
//! safely: no older record of the key remains to bring it back.
//!
//! **Redundant** counts the operations in the sealed segments (after the
//! snapshot chain) that the output drops: every operation a later sealed
//! operation on the same key overwrites or deletes, and every deletion that
//! is its key's last sealed operation. Automatic compaction starts when the
//! sealed operations reach `compaction.threshold` and the redundant fraction
//! of them reaches `compaction.ratio`.

use serde::Serialize;

use crate::config::Config;
use crate::crash::crash_point;
use crate::entry::Seq;
use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotKind;
use crate::fs::FileSystem;
use crate::lifecycle::background::Cancel;
use crate::lifecycle::manifest::ManifestStore;
use crate::lifecycle::snapshot::{build_snapshot, snapshot_path, write_built, Built, Written};
use crate::log::segment::started_segments;

/// The sealed part of the log, as compaction sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SealedLog {
    /// Operations in sealed segments after the snapshot chain.
    pub ops: u64,
    /// Of those, the ones a compaction drops.
    pub redundant: u64,
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

/// The last sealed sequence number: everything before the newest started
/// segment (or what the snapshots already cover).
fn sealed_upto(fs: &dyn FileSystem, manifest: &ManifestStore, config: &Config) -> Result<Seq> {
    let started = started_segments(fs, &config.data_dir, &manifest.segments())?;
    Ok(started
        .last()
        .map_or(0, |(_, _, active_first)| active_first.saturating_sub(1)))
}

/// Writes the sealed log compacted into a full snapshot, for the rotator to
/// list; an automatic compaction only writes its output if the sealed log is
/// due. `None`: nothing was written.
pub(crate) fn compact(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
    automatic: bool,
    cancel: &Cancel,
) -> Result<Option<(Written, CompactionReport)>> {
    cancel.check()?;
    let upto = sealed_upto(fs, manifest, config)?;
    let Some(built) = build_snapshot(fs, manifest, config, SnapshotKind::Full, upto, cancel)?
    else {
        return Ok(None);
    };
    let sealed = SealedLog {
        ops: built.log.ops,
        redundant: built.log.ops - built.live_from_log().min(built.log.ops),
    };
    if sealed.ops == 0 || (automatic && !sealed.due(config)) {
        built.discard(cancel);
        return Ok(None);
    }
    crash_point("compaction.after_build");
    let bytes_before = built.log.bytes + chain_bytes(fs, config, &built)?;
    let entries_before = sealed.ops + built.chain.iter().map(|s| s.entries).sum::<u64>();
    let written = write_built(
        fs,
        config,
        built,
        config.maintenance.write_bytes_per_sec,
        cancel,
    )?;
    let output = snapshot_path(&config.data_dir, &written.header);
    let bytes_after = fs
        .file_len(&output)
        .map_err(|e| Error::io("stat compaction output", &output, e))?;
    let report = CompactionReport {
        upto: written.header.to_seq,
        entries_before,
        entries_after: written.header.entries,
        bytes_before,
        bytes_after,
    };
    Ok(Some((written, report)))
}

/// Bytes of the snapshots a compaction's output replaces.
fn chain_bytes(fs: &dyn FileSystem, config: &Config, built: &Built) -> Result<u64> {
    built.chain.iter().try_fold(0, |total, snapshot| {
        let path = snapshot_path(&config.data_dir, snapshot);
        let len = fs
            .file_len(&path)
            .map_err(|e| Error::io("stat snapshot", &path, e))?;
        Ok(total + len)
    })
}
