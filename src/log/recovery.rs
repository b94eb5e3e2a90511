//! Open-time recovery: replay every segment in id order, check every header,
//! frame, checksum and sequence number, and decide what damage means.
//!
//! Segments are preallocated with zeros and never reused, so an interrupted
//! write can only leave, in the newest segment and past the last point a
//! sync made durable, partial frames, checksum-failing frames, or zeros
//! where pages never reached the disk, in any order. That is a *torn tail*:
//! cut off and reported. Every format-2 frame carries the offset up to which
//! its segment was durable when it was written, so damage below what any
//! intact later frame attests is known to be damage, not a lost write. Damage
//! anywhere else (a sealed segment, or attested data) is corruption: the open
//! fails naming file, offset and reason, unless `wal.recovery_mode` says
//! otherwise. Frames are judged by the format's own size limit, never by the
//! current configuration's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, RecoveryMode};
use crate::entry::{Record, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::record::MAX_PAYLOAD_BYTES;
use crate::format::segment::segment_path;
use crate::fs::FileSystem;
use crate::lifecycle::manifest::{truncation_cap, ManifestStore};
use crate::lifecycle::snapshot::load_base;
use crate::log::reader::FrameReader;
use crate::log::scan::{self, End, Start};
use crate::log::sync_failure;
use crate::state::Tree;

/// What recovery found. The state itself goes straight into the store's
/// [`State`](crate::State), and each replayed record to the caller of
/// [`Store::open_replaying`](crate::Store::open_replaying): the log is never
/// held in memory as a whole.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// The last sequence number the snapshots cover, or a
    /// [`Log`](crate::Log) purged (0: none).
    pub base_seq: Seq,
    /// Snapshots loaded (the newest full one and its incrementals).
    pub snapshots: usize,
    /// Records replayed after `base_seq`.
    pub replayed: u64,
    /// Keys in the recovered state.
    pub keys: usize,
    /// The last recovered sequence number (0 for an empty log).
    pub last_seq: Seq,
    /// The torn tail that was cut, if any.
    pub truncated: Option<TruncatedTail>,
    /// Damaged regions passed over (only in `skip_corrupt` mode).
    pub skipped: Vec<Corruption>,
    /// Segments replayed.
    pub segments: usize,
    /// Time the replay took.
    pub elapsed: Duration,
}

/// A torn tail of the newest segment: bytes from `offset` on that were
/// never known to be on the disk, which the open cuts (and `verify` reports
/// as what the open would cut).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruncatedTail {
    /// The segment file.
    #[serde(serialize_with = "scan::serialize_path")]
    pub file: PathBuf,
    /// Where the cut is: just past the last intact record (0: a torn header,
    /// and the whole segment is retired).
    pub offset: u64,
    /// Bytes from `offset` to the last non-zero byte: what the cut removes,
    /// the preallocated zeros aside.
    pub bytes: u64,
    /// What is wrong at `offset`.
    pub reason: String,
}

/// The recovered log, and the segments to retire before writing resumes.
pub(crate) struct RecoveredLog {
    pub recovery: Recovery,
    /// The snapshots' state with every replayed record applied.
    pub state: Tree,
    /// Listed segments that hold nothing: prepared but never started, or
    /// started by a write that never reached the disk (a torn header).
    pub retire: Vec<u64>,
    /// The newest segment recovery read, now synced whole: from here on,
    /// damage in it is never an interrupted write, even if it stays the
    /// last started segment (a crash before the next one's header is
    /// durable).
    pub sealed_through: u64,
}

/// What recovery does with files the manifest does not list (never read
/// either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Debris {
    /// Removes them: at open, nothing else is writing into the directory.
    Remove,
    /// Leaves them for the next open: after the WAL died the other actors
    /// go on, and a snapshot being written is unlisted until it is done.
    Keep,
}

/// Replays the snapshots and then the segments the manifest lists, in id
/// order, into the state, handing each record after the snapshots to
/// `on_record` as it goes; cuts a torn tail; says which listed segments hold
/// nothing. Files the manifest does not list are removed first with
/// [`Debris::Remove`]. Which damage is a torn tail is decided in [`crate::log::scan`],
/// which `verify` shares.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
    debris: Debris,
    on_record: &mut dyn FnMut(&Record),
) -> Result<RecoveredLog> {
    let started_at = Instant::now();
    let dir = config.data_dir.as_path();
    let mode = config.wal.recovery_mode;
    sync_failure::check(fs, dir)?;
    if debris == Debris::Remove {
        manifest.remove_unlisted(config.archive.enabled())?;
    }
    let base = load_base(fs, config, &manifest.snapshots())?;
    let mut buf = Vec::new();
    let plan = scan::plan(
        fs,
        dir,
        &manifest.segments(),
        manifest.sealed_through(),
        &mut buf,
    )
    .map_err(|(path, e)| listed_read_error(&path, e))?;
    if let Some(path) = &plan.missing {
        return Err(Error::Corruption(scan::listed_but_missing(path)));
    }
    if let Some(path) = &plan.sealed_but_zero {
        return Err(Error::Corruption(scan::sealed_but_zero(path)));
    }
    let mut retire = plan.unstarted.clone();
    let marks = manifest.truncations();

    let mut recovery = Recovery {
        // A log's purged records are not replayed, and its first segment
        // may start anywhere up to one past them, as after a snapshot.
        base_seq: base.covered.max(manifest.purged_through()),
        snapshots: base.snapshots,
        ..Recovery::default()
    };
    let mut state = base.state;
    let mut expected: Option<Seq> = None;
    let mut newest_read = 0;
    for &id in &plan.read {
        let place = plan.place(id);
        let path = segment_path(dir, id);
        let read_error = |e| listed_read_error(&path, e);
        let mut reader = FrameReader::new(fs, &path, &mut buf, MAX_PAYLOAD_BYTES);
        let header =
            match scan::read_start(&mut reader, &path, id, place, mode).map_err(read_error)? {
                Start::Header(header) => header,
                // A rotator's segment prepared while the WAL restarted, never used.
                Start::Unstarted => {
                    retire.push(id);
                    continue;
                }
                Start::Torn(tail) => {
                    recovery.truncated = Some(tail);
                    retire.push(id);
                    continue;
                }
                Start::Corrupt(c) => return Err(Error::Corruption(c)),
            };
        if header.id != id {
            return Err(corruption(
                &path,
                16,
                format!("header says segment {}, file name says {id}", header.id),
            ));
        }
        if expected.is_none() && header.first_seq > recovery.base_seq + 1 {
            return Err(corruption(
                &path,
                24,
                format!(
                    "the log starts at sequence {}, but the snapshots (or a log's purge) end at {}: records are missing",
                    header.first_seq, recovery.base_seq
                ),
            ));
        }
        if let Some(expected) = expected {
            // `skip_corrupt` may have lost records at the end of the previous
            // segment, so a later start is a gap it reports; an earlier one
            // would replay sequence numbers twice, which no mode accepts.
            let gap_allowed = mode == RecoveryMode::SkipCorrupt && header.first_seq > expected;
            if !scan::continues(expected, header.first_seq, recovery.base_seq) && !gap_allowed {
                return Err(corruption(
                    &path,
                    24,
                    format!(
                        "segment starts at sequence {}, the previous segment ends before {expected}",
                        header.first_seq
                    ),
                ));
            }
        }
        if let Some(expected) =
            expected.filter(|e| !scan::continues(*e, header.first_seq, recovery.base_seq))
        {
            recovery.skipped.push(Corruption {
                file: path.clone(),
                offset: 24,
                reason: format!(
                    "segment starts at sequence {}, the previous segment ends before {expected}: records {expected} to {} are missing",
                    header.first_seq,
                    header.first_seq - 1
                ),
            });
        }
        let base_seq = recovery.base_seq;
        // Records a log truncated away are skipped, never returned.
        let cap = truncation_cap(&marks, id).unwrap_or(Seq::MAX);
        let replayed = &mut recovery.replayed;
        let scanned = scan::scan_frames(&mut reader, &path, &header, place, mode, |seq, entry| {
            // Records a snapshot covers are already in the state.
            if seq > base_seq && seq <= cap {
                let record = Record { seq, entry };
                on_record(&record);
                state.apply_entry(&record.entry);
                drop(state.take_discarded());
                *replayed += 1;
            }
        })
        .map_err(read_error)?;
        recovery.skipped.extend(scanned.skipped);
        let torn = match scanned.end {
            End::Clean => None,
            End::Torn(tail) => Some(tail),
            End::Corrupt(c) => return Err(Error::Corruption(c)),
        };
        // After a truncation the next segment continues from the mark.
        expected = Some(scanned.next_seq.min(cap.saturating_add(1)));
        recovery.segments += 1;
        newest_read = id;
        if place.newest {
            seal_newest(fs, dir, &path, scanned.logical_end)?;
            recovery.truncated = torn;
        }
    }

    if let Some(tail) = &recovery.truncated {
        tracing::warn!(
            file = %tail.file.display(),
            offset = tail.offset,
            bytes = tail.bytes,
            reason = %tail.reason,
            "cut a torn tail off the newest segment"
        );
    }
    for skipped in &recovery.skipped {
        tracing::error!(%skipped, "skipped a damaged region (recovery_mode = skip_corrupt)");
    }
    recovery.last_seq = expected.map_or(0, |next| next - 1).max(recovery.base_seq);
    recovery.keys = state.live_len();
    recovery.elapsed = started_at.elapsed();
    Ok(RecoveredLog {
        recovery,
        state,
        retire,
        sealed_through: newest_read,
    })
}

/// A failed read of a segment the manifest lists; its absence is damage, not an empty log.
fn listed_read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Corruption(scan::listed_but_missing(path))
    } else {
        Error::io("read segment", path, e)
    }
}

/// Cuts the newest segment to its intact records and makes that durable, so
/// it can be sealed: the writer continues in a new segment, and data the
/// page cache held but the disk may not (a previous writer's unsynced tail)
/// is synced before anything after it is written.
///
/// If that sync fails, the page cache may show records the disk does not
/// hold, and a second open in the same boot would get a successful sync of
/// them (the error was already reported): the directory is marked so that
/// no open trusts it again before a reboot.
fn seal_newest(fs: &dyn FileSystem, dir: &Path, path: &Path, logical_end: u64) -> Result<()> {
    let file = fs
        .open_writable(path)
        .map_err(|e| Error::io("open newest segment", path, e))?;
    let len = fs
        .file_len(path)
        .map_err(|e| Error::io("read newest segment", path, e))?;
    if len != logical_end {
        file.set_len(logical_end)
            .map_err(|e| Error::io("truncate newest segment", path, e))?;
    }
    file.sync_all().map_err(|e| {
        sync_failure::mark(fs, dir, path, &e);
        Error::io("sync newest segment", path, e)
    })
}

fn corruption(path: &Path, offset: u64, reason: String) -> Error {
    Error::Corruption(Corruption {
        file: path.to_path_buf(),
        offset,
        reason,
    })
}
