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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, RecoveryMode};
use crate::entry::{Op, Record, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::all_zero;
use crate::format::codec::decode_entry;
use crate::format::record::{read_frame_at, Frame, Layout, MAX_PAYLOAD_BYTES};
use crate::format::segment::{segment_path, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::fs::FileSystem;
use crate::lifecycle::manifest::ManifestStore;
use crate::lifecycle::snapshot::load_base;
use crate::log::sync_failure;

/// How much of a segment is checked for zeros at a time.
const ZERO_CHECK_BYTES: usize = 1 << 20;

/// What recovery found and returned: the state the snapshot chain holds
/// (`base`, as of `base_seq`), then every record after it.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every live key and its value at `base_seq`, from the snapshots.
    pub base: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The last sequence number the snapshots cover (0: none).
    pub base_seq: Seq,
    /// Snapshots loaded (the newest full one and its incrementals).
    pub snapshots: usize,
    /// Every intact record after `base_seq`, in sequence order.
    pub records: Vec<Record>,
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

impl Recovery {
    /// The recovered key-value state: `base` with `records` applied.
    pub fn state(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = self.base.clone();
        for record in &self.records {
            for op in record.entry.ops() {
                match op {
                    Op::Set { key, value } => {
                        state.insert(key.clone(), value.clone());
                    }
                    Op::Delete { key } => {
                        state.remove(key);
                    }
                }
            }
        }
        state
    }
}

/// A torn tail cut off the newest segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// The recovered log, and the segments to retire before writing resumes.
pub(crate) struct RecoveredLog {
    pub recovery: Recovery,
    /// Listed segments that hold nothing: prepared but never started, or
    /// started by a write that never reached the disk (a torn header).
    pub retire: Vec<u64>,
    /// The newest segment recovery read, now synced whole: from here on,
    /// damage in it is never an interrupted write, even if it stays the
    /// last started segment (a crash before the next one's header is
    /// durable).
    pub sealed_through: u64,
}

/// How one segment's scan ended.
struct Scanned {
    /// Offset just past the last intact record.
    logical_end: usize,
    /// A cut torn tail (newest segment only).
    torn: Option<TruncatedTail>,
}

/// Replays the segments the manifest lists, in id order; cuts a torn tail;
/// says which listed segments hold nothing. Files the manifest does not
/// list are removed first and never read.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
) -> Result<RecoveredLog> {
    let started_at = Instant::now();
    let dir = config.data_dir.as_path();
    sync_failure::check(fs, dir)?;
    manifest.remove_unlisted()?;
    let base = load_base(fs, config, &manifest.snapshots())?;
    let mut ids = manifest.segments();

    // Trailing segments of nothing but zeros were prepared ahead of time and
    // never started. The whole file is checked, not its first page: user
    // values hold zero pages, and media damage can zero a header with
    // records behind it, which the scan below must see.
    let sealed_through = manifest.sealed_through();
    let mut retire = Vec::new();
    while let Some(&last) = ids.last() {
        let path = segment_path(dir, last);
        if !all_zero_file(fs, &path)? {
            break;
        }
        if last <= sealed_through {
            return Err(sealed_but_zero(&path));
        }
        retire.push(last);
        ids.pop();
    }

    let mut recovery = Recovery {
        base: base.state,
        base_seq: base.covered,
        snapshots: base.snapshots,
        ..Recovery::default()
    };
    let mut expected: Option<Seq> = None;
    let count = ids.len();
    let mut newest_read = 0;
    for (index, &id) in ids.iter().enumerate() {
        let newest = index + 1 == count && id > sealed_through;
        let path = segment_path(dir, id);
        let bytes = fs.read(&path).map_err(|e| listed_read_error(&path, e))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(header) => header,
            // A rotator's segment prepared while the WAL restarted, never used.
            Err(HeaderError::Unwritten) if all_zero(&bytes) => {
                if id <= sealed_through {
                    return Err(sealed_but_zero(&path));
                }
                retire.push(id);
                continue;
            }
            Err(err) => {
                let reason = match err {
                    HeaderError::Unwritten => {
                        "segment header is all zeros but records follow it".to_string()
                    }
                    HeaderError::Damaged(reason) => reason,
                };
                // A segment's header is synced before any record is written
                // behind it, so a header that never reached the disk leaves
                // no intact record behind it. If one follows, the header was
                // damaged after the fact and the segment holds real data:
                // that is corruption, and nothing is deleted.
                // Either format: the header that would say which is damaged.
                let data_follows = [Layout::Segment { segment: id as u32 }, Layout::Plain]
                    .into_iter()
                    .any(|layout| {
                        intact_after(&bytes, SEGMENT_HEADER_BYTES, layout, 0)
                            .first
                            .is_some()
                    });
                let torn_start =
                    newest && !data_follows && config.wal.recovery_mode != RecoveryMode::Absolute;
                if !torn_start {
                    return Err(corruption(&path, 0, reason));
                }
                recovery.truncated = Some(TruncatedTail {
                    file: path.clone(),
                    offset: 0,
                    bytes: nonzero_extent(&bytes, 0),
                    reason,
                });
                retire.push(id);
                continue;
            }
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
                    "the log starts at sequence {}, but the snapshots end at {}: records are missing",
                    header.first_seq, recovery.base_seq
                ),
            ));
        }
        if let Some(expected) = expected {
            // `skip_corrupt` may have lost records at the end of the previous
            // segment, so a later start is a gap it reports; an earlier one
            // would replay sequence numbers twice, which no mode accepts.
            let gap_allowed = config.wal.recovery_mode == RecoveryMode::SkipCorrupt
                && header.first_seq > expected;
            if header.first_seq != expected && !gap_allowed {
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
        if let Some(expected) = expected.filter(|e| header.first_seq > *e) {
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
        let scanned = scan_segment(&path, &bytes, &header, newest, config, &mut recovery)?;
        expected = Some(
            recovery
                .records
                .last()
                .map_or(header.first_seq, |r| r.seq + 1),
        );
        recovery.segments += 1;
        newest_read = id;
        if newest {
            seal_newest(fs, dir, &path, &bytes, scanned.logical_end)?;
            recovery.truncated = scanned.torn;
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
    let base_seq = recovery.base_seq;
    recovery.records.retain(|r| r.seq > base_seq);
    recovery.last_seq = expected.map_or(0, |next| next - 1).max(base_seq);
    recovery.elapsed = started_at.elapsed();
    Ok(RecoveredLog {
        recovery,
        retire,
        sealed_through: newest_read,
    })
}

/// Whether a listed segment holds nothing but zeros, read a piece at a time.
fn all_zero_file(fs: &dyn FileSystem, path: &Path) -> Result<bool> {
    let mut buf = vec![0u8; ZERO_CHECK_BYTES];
    let mut offset = 0u64;
    loop {
        let n = fs
            .read_at(path, offset, &mut buf)
            .map_err(|e| listed_read_error(path, e))?;
        if !all_zero(&buf[..n]) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
        offset += n as u64;
    }
}

/// A failed read of a segment the manifest lists; its absence is damage, not an empty log.
fn listed_read_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        corruption(path, 0, "listed in MANIFEST but missing".to_string())
    } else {
        Error::io("read segment", path, e)
    }
}

/// Scans the frames of one segment, appending its records to `recovery`.
fn scan_segment(
    path: &Path,
    bytes: &[u8],
    header: &SegmentHeader,
    newest: bool,
    config: &Config,
    recovery: &mut Recovery,
) -> Result<Scanned> {
    let mode = config.wal.recovery_mode;
    let layout = header.layout();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = header.first_seq;
    loop {
        let damage = match read_frame_at(&bytes[offset..], layout, offset as u64, MAX_PAYLOAD_BYTES)
        {
            Frame::Record {
                seq, payload, size, ..
            } if seq == expected => match decode_entry(payload) {
                Ok(entry) => {
                    recovery.records.push(Record { seq, entry });
                    offset += size;
                    expected += 1;
                    continue;
                }
                Err(reason) => reason,
            },
            Frame::Record { seq, .. } => format!("sequence number {seq}, expected {expected}"),
            Frame::Unwritten if all_zero(&bytes[offset..]) => {
                return Ok(Scanned {
                    logical_end: offset,
                    torn: None,
                });
            }
            Frame::Unwritten => "zeros where a record should be, with data after them".to_string(),
            Frame::Damaged(reason) => reason,
        };

        let later = intact_after(bytes, offset + 1, layout, expected);
        // Format 2: every frame says how far the segment was durable when
        // it was written, so damage below what a later intact frame
        // attests was on the disk already: it is not an interrupted write,
        // whatever the bytes look like. Format 1 frames carry no such
        // offset: any intact record after the damage makes it corruption.
        let attested = match layout {
            Layout::Segment { .. } => later.attested > offset as u64,
            Layout::Plain => later.first.is_some(),
        };
        let torn = newest && !attested;
        match mode {
            RecoveryMode::TolerateTail | RecoveryMode::SkipCorrupt if torn => {
                return Ok(Scanned {
                    logical_end: offset,
                    torn: Some(TruncatedTail {
                        file: path.to_path_buf(),
                        offset: offset as u64,
                        bytes: nonzero_extent(bytes, offset),
                        reason: damage,
                    }),
                });
            }
            RecoveryMode::SkipCorrupt => {
                recovery.skipped.push(Corruption {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    reason: damage,
                });
                match later.first {
                    Some((next, seq)) => {
                        offset = next;
                        expected = seq;
                    }
                    None => {
                        return Ok(Scanned {
                            logical_end: offset,
                            torn: None,
                        })
                    }
                }
            }
            RecoveryMode::TolerateTail | RecoveryMode::Absolute => {
                let reason = match layout {
                    _ if !newest || mode == RecoveryMode::Absolute => damage,
                    Layout::Segment { .. } if attested => format!(
                        "{damage}; a later record shows the segment was durable up to byte {}, so this is damage, not an interrupted write",
                        later.attested
                    ),
                    Layout::Plain if attested => format!(
                        "{damage}; intact records follow, so this is not an interrupted write"
                    ),
                    _ => damage,
                };
                return Err(corruption(path, offset as u64, reason));
            }
        }
    }
}

/// What intact frames lie after a damaged one.
#[derive(Debug, Default, PartialEq, Eq)]
struct Later {
    /// The first intact frame: its offset and sequence number.
    first: Option<(usize, Seq)>,
    /// The highest durable offset an intact frame carries (format 2).
    attested: u64,
}

/// Finds the intact frames at or after `from` with a sequence number of at
/// least `min_seq`. Intact frames are stepped over whole (a frame a value
/// happens to contain is not looked at), anything else a byte at a time;
/// runs of zeros are skipped at once, since no frame header is all zeros.
fn intact_after(bytes: &[u8], from: usize, layout: Layout, min_seq: Seq) -> Later {
    let header_bytes = layout.header_bytes();
    let mut later = Later::default();
    let mut at = from;
    while at + header_bytes <= bytes.len() {
        let Some(nonzero) = bytes[at..].iter().position(|b| *b != 0) else {
            break;
        };
        at = (at + nonzero).saturating_sub(header_bytes - 1).max(at);
        match read_frame_at(&bytes[at..], layout, at as u64, MAX_PAYLOAD_BYTES) {
            Frame::Record {
                seq,
                payload,
                size,
                durable,
            } if seq >= min_seq && decode_entry(payload).is_ok() => {
                later.first.get_or_insert((at, seq));
                later.attested = later.attested.max(durable);
                if layout == Layout::Plain {
                    break;
                }
                at += size;
            }
            _ => at += 1,
        }
    }
    later
}

/// Bytes from `from` to the last non-zero byte of the file.
fn nonzero_extent(bytes: &[u8], from: usize) -> u64 {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    end.saturating_sub(from) as u64
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
fn seal_newest(
    fs: &dyn FileSystem,
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    logical_end: usize,
) -> Result<()> {
    let file = fs
        .open_writable(path)
        .map_err(|e| Error::io("open newest segment", path, e))?;
    if bytes.len() != logical_end {
        file.set_len(logical_end as u64)
            .map_err(|e| Error::io("truncate newest segment", path, e))?;
    }
    file.sync_all().map_err(|e| {
        sync_failure::mark(fs, dir, path, &e);
        Error::io("sync newest segment", path, e)
    })
}

/// A segment an earlier open sealed reads as zeros: it held records.
fn sealed_but_zero(path: &Path) -> Error {
    corruption(
        path,
        0,
        "the segment reads as all zeros, but an earlier open synced records in it".to_string(),
    )
}

fn corruption(path: &Path, offset: u64, reason: String) -> Error {
    Error::Corruption(Corruption {
        file: path.to_path_buf(),
        offset,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_extent_ignores_trailing_zeros() {
        assert_eq!(nonzero_extent(&[1, 2, 0, 3, 0, 0], 1), 3);
        assert_eq!(nonzero_extent(&[0, 0], 0), 0);
    }
}
