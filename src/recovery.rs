//! Open-time recovery: replay every segment in id order, check every header,
//! frame, checksum and sequence number, and decide what damage means.
//!
//! Segments are preallocated with zeros and never reused, so an interrupted
//! write can only leave, at the end of the newest segment, a partial frame,
//! a checksum-failing frame, or zeros where a page never reached the disk.
//! That is a *torn tail*: cut off and reported. Damage anywhere else, or
//! damage followed by intact records with no lost (all-zero) sector between
//! them, is corruption: the open fails naming file, offset and reason,
//! unless `wal.recovery_mode` says otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, RecoveryMode};
use crate::entry::{Op, Record, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::all_zero;
use crate::format::codec::decode_entry;
use crate::format::record::{read_frame, Frame, FRAME_HEADER_BYTES};
use crate::format::segment::{segment_path, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::fs::FileSystem;
use crate::manifest::ManifestStore;
use crate::snapshot::load_base;

/// Granularity of a lost write on the device: a sector. A whole zero sector
/// inside a damaged span means data never reached the disk (a torn write),
/// which bit rot cannot produce.
const SECTOR_BYTES: usize = 512;
/// Granularity of the page cache's writeback: a page that never reached the
/// disk reads as zeros from where its unsynced part began to its end.
const PAGE_BYTES: usize = 4096;

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
    manifest.remove_unlisted()?;
    let base = load_base(fs, config, &manifest.snapshots())?;
    let mut ids = manifest.segments();

    // Trailing segments that begin with a whole page of zeros were prepared
    // ahead of time and never started: nothing in them was ever written.
    let mut retire = Vec::new();
    while let Some(&last) = ids.last() {
        let path = segment_path(dir, last);
        let head = read_listed(fs, &path, |fs, p| fs.read_prefix(p, PAGE_BYTES))?;
        if !all_zero(&head) {
            break;
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
    for (index, &id) in ids.iter().enumerate() {
        let newest = index + 1 == count;
        let path = segment_path(dir, id);
        let bytes = read_listed(fs, &path, |fs, p| fs.read(p))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(header) => header,
            // A rotator's segment prepared while the WAL restarted, never used.
            Err(HeaderError::Unwritten) if all_zero(&bytes) => {
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
                let max_payload =
                    usize::try_from(config.limits.max_record_bytes).unwrap_or(usize::MAX);
                let data_follows =
                    find_intact_frame(&bytes, SEGMENT_HEADER_BYTES, 0, max_payload).is_some();
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
            if header.first_seq != expected && config.wal.recovery_mode != RecoveryMode::SkipCorrupt
            {
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
        let scanned = scan_segment(
            &path,
            &bytes,
            header.first_seq,
            newest,
            config,
            &mut recovery,
        )?;
        expected = Some(
            recovery
                .records
                .last()
                .map_or(header.first_seq, |r| r.seq + 1),
        );
        recovery.segments += 1;
        if newest {
            seal_newest(fs, &path, &bytes, scanned.logical_end)?;
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
    Ok(RecoveredLog { recovery, retire })
}

/// Reads a segment the manifest lists; its absence is damage, not an empty log.
fn read_listed(
    fs: &dyn FileSystem,
    path: &Path,
    read: impl Fn(&dyn FileSystem, &Path) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    read(fs, path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            corruption(path, 0, "listed in MANIFEST but missing".to_string())
        } else {
            Error::io("read segment", path, e)
        }
    })
}

/// Scans the frames of one segment, appending its records to `recovery`.
fn scan_segment(
    path: &Path,
    bytes: &[u8],
    first_seq: Seq,
    newest: bool,
    config: &Config,
    recovery: &mut Recovery,
) -> Result<Scanned> {
    let max_payload = usize::try_from(config.limits.max_record_bytes).unwrap_or(usize::MAX);
    let mode = config.wal.recovery_mode;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_seq;
    loop {
        let damage = match read_frame(&bytes[offset..], max_payload) {
            Frame::Record { seq, payload, size } if seq == expected => {
                match decode_entry(payload) {
                    Ok(entry) => {
                        recovery.records.push(Record { seq, entry });
                        offset += size;
                        expected += 1;
                        continue;
                    }
                    Err(reason) => reason,
                }
            }
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

        let next_intact = find_intact_frame(bytes, offset + 1, expected, max_payload);
        let torn = newest
            && match next_intact {
                None => true,
                Some(next) => {
                    has_zero_sector(bytes, offset, next) || lost_page_tail(bytes, offset, next)
                }
            };
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
                match next_intact {
                    Some(next) => {
                        offset = next;
                        expected = frame_seq(&bytes[next..]);
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
                let reason = if newest
                    && next_intact.is_some()
                    && mode == RecoveryMode::TolerateTail
                {
                    format!("{damage}; intact records follow, so this is not an interrupted write")
                } else {
                    damage
                };
                return Err(corruption(path, offset as u64, reason));
            }
        }
    }
}

/// The first offset at or after `from` holding an intact frame with a
/// sequence number of at least `min_seq`.
fn find_intact_frame(bytes: &[u8], from: usize, min_seq: Seq, max_payload: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(FRAME_HEADER_BYTES)).find(|&at| {
        matches!(read_frame(&bytes[at..], max_payload),
            Frame::Record { seq, payload, .. } if seq >= min_seq && decode_entry(payload).is_ok())
    })
}

fn frame_seq(frame: &[u8]) -> Seq {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&frame[8..16]);
    Seq::from_le_bytes(seq)
}

/// Whether a whole, aligned, all-zero sector lies in `bytes[from..to]`.
fn has_zero_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let first = from.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    (first..to)
        .step_by(SECTOR_BYTES)
        .take_while(|start| start + SECTOR_BYTES <= to)
        .any(|start| all_zero(&bytes[start..start + SECTOR_BYTES]))
}

/// Whether the bytes from `from` to the end of its page are all zeros, with
/// the next intact record beyond that page: the page holding the start of
/// the damage never reached the disk while a later one did.
fn lost_page_tail(bytes: &[u8], from: usize, next: usize) -> bool {
    let page_end = (from / PAGE_BYTES + 1) * PAGE_BYTES;
    next >= page_end && all_zero(&bytes[from..page_end.min(bytes.len())])
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
fn seal_newest(fs: &dyn FileSystem, path: &Path, bytes: &[u8], logical_end: usize) -> Result<()> {
    let file = fs
        .open_writable(path)
        .map_err(|e| Error::io("open newest segment", path, e))?;
    if bytes.len() != logical_end {
        file.set_len(logical_end as u64)
            .map_err(|e| Error::io("truncate newest segment", path, e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io("sync newest segment", path, e))
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
    fn zero_sector_detection_needs_a_whole_aligned_sector() {
        let mut bytes = vec![1u8; 4096];
        assert!(!has_zero_sector(&bytes, 0, 4096));
        bytes[600..1024].fill(0);
        assert!(
            !has_zero_sector(&bytes, 0, 4096),
            "a partial sector is not enough"
        );
        bytes[512..1024].fill(0);
        assert!(has_zero_sector(&bytes, 0, 4096));
        assert!(
            !has_zero_sector(&bytes, 0, 1000),
            "the sector must end inside the span"
        );
    }

    #[test]
    fn a_lost_page_tail_needs_zeros_to_the_page_end_and_data_beyond() {
        let mut bytes = vec![1u8; 3 * PAGE_BYTES];
        bytes[4000..PAGE_BYTES].fill(0);
        assert!(lost_page_tail(&bytes, 4000, PAGE_BYTES + 100));
        assert!(
            !lost_page_tail(&bytes, 4000, 4090),
            "the next record must lie beyond the page"
        );
        bytes[4050] = 7;
        assert!(
            !lost_page_tail(&bytes, 4000, PAGE_BYTES + 100),
            "data inside the page is not a lost page"
        );
    }

    #[test]
    fn nonzero_extent_ignores_trailing_zeros() {
        assert_eq!(nonzero_extent(&[1, 2, 0, 3, 0, 0], 1), 3);
        assert_eq!(nonzero_extent(&[0, 0], 0), 0);
    }
}
