//! Walking a segment's frames and deciding what stopped the walk: the end of
//! the file, the preallocated zeros, or damage, and whether that damage is a
//! torn tail the open cuts or corruption it refuses.
//!
//! Recovery, `inspect`/`verify`, snapshots and compaction read segments
//! through here (and through the bounded [`FrameReader`] under it), so
//! `verify` says exactly what `open` would do with the same bytes. Nothing in
//! this module writes: cutting a torn tail is the caller's business.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::config::RecoveryMode;
use crate::entry::{Entry, Seq};
use crate::error::Corruption;
use crate::format::all_zero;
use crate::format::codec::decode_entry;
use crate::format::record::{Frame, Layout};
use crate::format::segment::{segment_path, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::fs::FileSystem;
use crate::log::reader::{FrameReader, READ_CHUNK_BYTES};
use crate::log::recovery::TruncatedTail;

/// Where a listed segment sits in the log: what damage in it can mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// The last started segment, never synced whole by an open: damage in
    /// it past everything its frames attest is an interrupted write.
    pub newest: bool,
    /// An earlier open synced it whole (`sealed_through` in the manifest):
    /// reading as zeros, it lost records.
    pub sealed: bool,
}

/// The listed segments, as recovery reads them.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The segments to read, in id order.
    pub read: Vec<u64>,
    /// Trailing segments of nothing but zeros: prepared, never started.
    pub unstarted: Vec<u64>,
    /// A trailing all-zero segment an earlier open had sealed: records were
    /// lost, and the open fails.
    pub sealed_but_zero: Option<PathBuf>,
    /// The first listed segment whose file is gone: which segment is the
    /// newest, and so whether damage may be a torn tail, depends on every
    /// listed one being there, so the open fails on it before judging any.
    pub missing: Option<PathBuf>,
    sealed_through: u64,
}

impl Plan {
    /// What damage in segment `id` can mean.
    pub fn place(&self, id: u64) -> Place {
        Place {
            newest: self.read.last() == Some(&id) && id > self.sealed_through,
            sealed: id <= self.sealed_through,
        }
    }
}

/// Splits the listed segments `ids` into those to read and the trailing
/// ones that were never started. The whole file is checked, not its first
/// page: user values hold zero pages, and media damage can zero a header
/// with records behind it, which the scan must see. A missing file ends the
/// trailing run; the first listed segment missing is named in the plan. A
/// failed read comes back with the file it was on.
pub(crate) fn plan(
    fs: &dyn FileSystem,
    dir: &Path,
    ids: &[u64],
    sealed_through: u64,
    buf: &mut Vec<u8>,
) -> Result<Plan, (PathBuf, io::Error)> {
    let mut plan = Plan {
        read: ids.to_vec(),
        sealed_through,
        ..Plan::default()
    };
    while let Some(&last) = plan.read.last() {
        let path = segment_path(dir, last);
        let mut reader = FrameReader::new(fs, &path, buf, 0);
        match rest_is_zero(&mut reader) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err((path, e)),
        }
        if last <= sealed_through {
            plan.sealed_but_zero = Some(path);
            break;
        }
        plan.unstarted.push(last);
        plan.read.pop();
    }
    for &id in &plan.read {
        let path = segment_path(dir, id);
        match fs.file_len(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                plan.missing = Some(path);
                break;
            }
            Err(e) => return Err((path, e)),
        }
    }
    Ok(plan)
}

/// How a segment begins.
#[derive(Debug)]
pub(crate) enum Start {
    /// An intact header; the reader is past it, in the segment's layout.
    Header(SegmentHeader),
    /// Zeros throughout: prepared and never used.
    Unstarted,
    /// The newest segment's header never reached the disk and nothing
    /// intact follows it: the open retires the segment.
    Torn(TruncatedTail),
    /// A damaged header the open refuses.
    Corrupt(Corruption),
}

/// Reads the header of segment `id` at `path`. A segment's header is synced
/// before any record is written behind it, so a bad header with an intact
/// record behind it was damaged after the fact: corruption, never a torn
/// start.
pub(crate) fn read_start(
    reader: &mut FrameReader<'_>,
    path: &Path,
    id: u64,
    place: Place,
    mode: RecoveryMode,
) -> io::Result<Start> {
    let decoded = SegmentHeader::decode(reader.peek(SEGMENT_HEADER_BYTES)?);
    let reason = match decoded {
        Ok(header) => {
            reader.consume(SEGMENT_HEADER_BYTES);
            reader.set_layout(header.layout());
            return Ok(Start::Header(header));
        }
        Err(HeaderError::Unwritten) if rest_is_zero(reader)? => {
            return Ok(if place.sealed {
                Start::Corrupt(sealed_but_zero(path))
            } else {
                Start::Unstarted
            });
        }
        Err(HeaderError::Unwritten) => {
            "segment header is all zeros but records follow it".to_string()
        }
        Err(HeaderError::Damaged(reason)) => reason,
    };
    // Either format: the header that would say which is damaged.
    let mut data_follows = false;
    for layout in [Layout::Segment { segment: id as u32 }, Layout::Plain] {
        let from = SEGMENT_HEADER_BYTES as u64;
        data_follows |= intact_after(reader, from, layout, 0, true)?.first.is_some();
    }
    if !place.newest || data_follows || mode == RecoveryMode::Absolute {
        return Ok(Start::Corrupt(corruption(path, 0, reason)));
    }
    Ok(Start::Torn(TruncatedTail {
        file: path.to_path_buf(),
        offset: 0,
        bytes: nonzero_extent(reader, 0)?,
        reason,
    }))
}

/// What stopped a walk over frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The end of the file.
    End,
    /// A frame header of zeros: the preallocated rest, or a hole with data
    /// after it ([`rest_is_zero`] tells).
    Zeros,
    /// Not an intact frame, a decode failure, or the wrong sequence number.
    Damaged(String),
    /// The visitor asked to stop before this frame.
    Visitor,
}

/// Where a walk stopped.
#[derive(Debug)]
pub(crate) struct Walk {
    /// The offset of the frame that stopped it: just past the last frame
    /// visited.
    pub offset: u64,
    /// The sequence number the next frame had to carry.
    pub next_seq: Seq,
    /// What stopped it.
    pub stop: Stop,
}

/// Walks the intact frames from the reader's position, which must carry
/// `expected` and the ones after it, handing each to `visit` (sequence
/// number, payload, offset). `visit` breaks to stop before a frame, and
/// fails with a reason to make the frame damage (a payload that does not
/// decode). The reader is left at the frame that stopped the walk.
pub(crate) fn walk_frames(
    reader: &mut FrameReader<'_>,
    mut expected: Seq,
    mut visit: impl FnMut(Seq, &[u8], u64) -> Result<ControlFlow<()>, String>,
) -> io::Result<Walk> {
    loop {
        let offset = reader.offset();
        let stopped = |stop| Walk {
            offset,
            next_seq: expected,
            stop,
        };
        if reader.at_end()? {
            return Ok(stopped(Stop::End));
        }
        let size = match reader.frame()? {
            Frame::Record {
                seq, payload, size, ..
            } if seq == expected => match visit(seq, payload, offset) {
                Ok(ControlFlow::Continue(())) => size,
                Ok(ControlFlow::Break(())) => return Ok(stopped(Stop::Visitor)),
                Err(reason) => return Ok(stopped(Stop::Damaged(reason))),
            },
            Frame::Record { seq, .. } => {
                let reason = format!("sequence number {seq}, expected {expected}");
                return Ok(stopped(Stop::Damaged(reason)));
            }
            Frame::Unwritten => return Ok(stopped(Stop::Zeros)),
            Frame::Damaged(reason) => return Ok(stopped(Stop::Damaged(reason))),
        };
        reader.consume(size);
        expected += 1;
    }
}

/// How the frames of a segment ended.
#[derive(Debug)]
pub(crate) enum End {
    /// At the end of the file or the preallocated zeros (in `skip_corrupt`,
    /// possibly after skipped damage).
    Clean,
    /// A torn tail of the newest segment, which the open cuts.
    Torn(TruncatedTail),
    /// Damage the open refuses.
    Corrupt(Corruption),
}

/// What [`scan_frames`] found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Just past the last intact record: where the open cuts the newest
    /// segment.
    pub logical_end: u64,
    /// The sequence number after the last record visited.
    pub next_seq: Seq,
    /// How the frames ended.
    pub end: End,
    /// Damaged regions passed over (only in `skip_corrupt`).
    pub skipped: Vec<Corruption>,
}

/// Scans the frames of the segment whose `header` the reader has just read
/// (see [`read_start`]), handing each decoded record to `visit`, and decides
/// what stops it, as the open does in `mode`.
///
/// Damage at X is a torn tail only in the newest segment, and only if no
/// intact later frame says the segment was durable beyond X (format 2), or
/// (format 1, whose frames carry no such offset) no intact record follows
/// at all: unsynced pages may reach the disk in any order, so a lost page
/// can lie before intact ones, but never before a frame that was written
/// after a sync covering it.
pub(crate) fn scan_frames(
    reader: &mut FrameReader<'_>,
    path: &Path,
    header: &SegmentHeader,
    place: Place,
    mode: RecoveryMode,
    mut visit: impl FnMut(Seq, Entry),
) -> io::Result<Scanned> {
    let layout = header.layout();
    let mut expected = header.first_seq;
    let mut skipped = Vec::new();
    loop {
        let walk = walk_frames(reader, expected, |seq, payload, _| {
            visit(seq, decode_entry(payload)?);
            Ok(ControlFlow::Continue(()))
        })?;
        let offset = walk.offset;
        expected = walk.next_seq;
        let clean = |skipped| Scanned {
            logical_end: offset,
            next_seq: expected,
            end: End::Clean,
            skipped,
        };
        let damage = match walk.stop {
            Stop::End | Stop::Visitor => return Ok(clean(skipped)),
            Stop::Zeros if rest_is_zero(reader)? => return Ok(clean(skipped)),
            Stop::Zeros => "zeros where a record should be, with data after them".to_string(),
            Stop::Damaged(reason) => reason,
        };

        let later = intact_after(reader, offset + 1, layout, expected, false)?;
        let attested = match layout {
            Layout::Segment { .. } => later.attested > offset,
            Layout::Plain => later.first.is_some(),
        };
        let torn = place.newest && !attested;
        let end = match mode {
            RecoveryMode::TolerateTail | RecoveryMode::SkipCorrupt if torn => {
                End::Torn(TruncatedTail {
                    file: path.to_path_buf(),
                    offset,
                    bytes: nonzero_extent(reader, offset)?,
                    reason: damage,
                })
            }
            RecoveryMode::SkipCorrupt => {
                skipped.push(corruption(path, offset, damage));
                match later.first {
                    Some((next, seq)) => {
                        reader.set_layout(layout);
                        reader.seek(next);
                        expected = seq;
                        continue;
                    }
                    None => return Ok(clean(skipped)),
                }
            }
            RecoveryMode::TolerateTail | RecoveryMode::Absolute => {
                let reason = match layout {
                    _ if !place.newest || mode == RecoveryMode::Absolute => damage,
                    Layout::Segment { .. } if attested => format!(
                        "{damage}; a later record shows the segment was durable up to byte {}, so this is damage, not an interrupted write",
                        later.attested
                    ),
                    Layout::Plain if attested => format!(
                        "{damage}; intact records follow, so this is not an interrupted write"
                    ),
                    _ => damage,
                };
                End::Corrupt(corruption(path, offset, reason))
            }
        };
        return Ok(Scanned {
            logical_end: offset,
            next_seq: expected,
            end,
            skipped,
        });
    }
}

/// What intact frames lie after a damaged one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Later {
    /// The first intact frame: its offset and sequence number.
    pub first: Option<(u64, Seq)>,
    /// The highest durable offset an intact frame carries (format 2).
    pub attested: u64,
}

/// Finds the intact frames at or after `from` with a sequence number of at
/// least `min_seq` (only the first with `first_only`, and always in the
/// plain layout, whose frames attest nothing). Intact frames are stepped
/// over whole (a frame a value happens to contain is not looked at),
/// anything else a byte at a time; runs of zeros are skipped at once, since
/// no frame header is all zeros.
fn intact_after(
    reader: &mut FrameReader<'_>,
    from: u64,
    layout: Layout,
    min_seq: Seq,
    first_only: bool,
) -> io::Result<Later> {
    let header_bytes = layout.header_bytes();
    let first_only = first_only || layout == Layout::Plain;
    let mut later = Later::default();
    reader.set_layout(layout);
    reader.seek(from);
    loop {
        let at = reader.offset();
        // Skip zeros, keeping the last `header_bytes - 1` of a run: a frame
        // header may start among them.
        let nonzero = loop {
            let chunk = reader.peek(READ_CHUNK_BYTES)?;
            match chunk.iter().position(|b| *b != 0) {
                Some(p) => break reader.offset() + p as u64,
                None if chunk.len() < READ_CHUNK_BYTES => return Ok(later),
                None => reader.consume(READ_CHUNK_BYTES - (header_bytes - 1)),
            }
        };
        let target = nonzero.saturating_sub(header_bytes as u64 - 1).max(at);
        if target < reader.offset() {
            reader.seek(target);
        } else {
            let skip = (target - reader.offset()) as usize;
            reader.consume(skip);
        }
        if reader.peek(header_bytes)?.len() < header_bytes {
            return Ok(later);
        }
        let step = match reader.frame()? {
            Frame::Record {
                seq,
                payload,
                size,
                durable,
            } if seq >= min_seq && decode_entry(payload).is_ok() => {
                later.first.get_or_insert((target, seq));
                later.attested = later.attested.max(durable);
                if first_only {
                    return Ok(later);
                }
                size
            }
            _ => 1,
        };
        reader.consume(step);
    }
}

/// Whether everything from the reader's position to the end of the file is
/// zeros; read a chunk at a time, and consumed.
pub(crate) fn rest_is_zero(reader: &mut FrameReader<'_>) -> io::Result<bool> {
    loop {
        let chunk = reader.peek(READ_CHUNK_BYTES)?;
        if chunk.is_empty() {
            return Ok(true);
        }
        if !all_zero(chunk) {
            return Ok(false);
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// Bytes from `from` to the last non-zero byte of the file: what a cut at
/// `from` removes, the preallocated zeros aside.
fn nonzero_extent(reader: &mut FrameReader<'_>, from: u64) -> io::Result<u64> {
    reader.seek(from);
    let mut end = from;
    loop {
        let at = reader.offset();
        let chunk = reader.peek(READ_CHUNK_BYTES)?;
        if chunk.is_empty() {
            return Ok(end - from);
        }
        if let Some(last) = chunk.iter().rposition(|b| *b != 0) {
            end = at + last as u64 + 1;
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// Whether a segment starting at `first_seq` continues the log after one
/// that ended before `expected`, when everything up to `covered` is in the
/// snapshots or a log's purged prefix: it starts at `expected`, or later
/// only over records that are all covered. A log's purge may reach past
/// the last record a power cut kept (purging writes no record, so it syncs
/// none); the open then goes on after the purge point, past that gap.
pub(crate) fn continues(expected: Seq, first_seq: Seq, covered: Seq) -> bool {
    first_seq == expected || (first_seq > expected && first_seq <= covered + 1)
}

/// A segment the manifest lists is gone.
pub(crate) fn listed_but_missing(path: &Path) -> Corruption {
    corruption(path, 0, "listed in MANIFEST but missing".to_string())
}

/// A segment an earlier open sealed reads as zeros: it held records.
pub(crate) fn sealed_but_zero(path: &Path) -> Corruption {
    corruption(
        path,
        0,
        "the segment reads as all zeros, but an earlier open synced records in it".to_string(),
    )
}

fn corruption(path: &Path, offset: u64, reason: String) -> Corruption {
    Corruption {
        file: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Serializes a path as a string (lossily where it is not UTF-8), for the
/// JSON reports.
pub(crate) fn serialize_path<S: serde::Serializer>(
    path: &Path,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sim_fs::SimFs;

    fn file_of(fs: &SimFs, path: &Path, bytes: &[u8]) {
        fs.create_dir_all(Path::new("/d")).expect("dir");
        let file = fs.create(path, 0).expect("create");
        file.write_at(bytes, 0).expect("write");
    }

    #[test]
    fn nonzero_extent_ignores_trailing_zeros() {
        let fs = SimFs::new(1);
        let path = Path::new("/d/f");
        file_of(&fs, path, &[1, 2, 0, 3, 0, 0]);
        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, 0);
        assert_eq!(nonzero_extent(&mut reader, 1).expect("extent"), 3);
        assert_eq!(nonzero_extent(&mut reader, 4).expect("extent"), 0);
    }

    #[test]
    fn zeros_across_chunks_are_zeros_to_the_end() {
        let fs = SimFs::new(1);
        let path = Path::new("/d/z");
        let mut bytes = vec![0u8; 2 * READ_CHUNK_BYTES + 10];
        file_of(&fs, path, &bytes);
        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, 0);
        assert!(rest_is_zero(&mut reader).expect("zeros"));
        bytes[2 * READ_CHUNK_BYTES + 3] = 1;
        let path = Path::new("/d/nz");
        file_of(&fs, path, &bytes);
        let mut reader = FrameReader::new(&fs, path, &mut buf, 0);
        assert!(!rest_is_zero(&mut reader).expect("not zeros"));
    }

    /// Runs of zeros longer than a read chunk are skipped without losing a
    /// frame that starts right after them, and every later frame's durable
    /// offset counts.
    #[test]
    fn intact_frames_after_long_zero_runs_are_found() {
        use crate::entry::Op;
        use crate::format::record::{encode_segment_record, MAX_PAYLOAD_BYTES};
        let fs = SimFs::new(1);
        let path = Path::new("/d/s");
        let layout = Layout::Segment { segment: 1 };
        let entry = Entry::Op(Op::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        });
        let mut bytes = vec![0u8; 3 * READ_CHUNK_BYTES];
        let first = 64 + READ_CHUNK_BYTES + 5;
        let mut frame = Vec::new();
        let size = encode_segment_record(7, &entry, layout, 100, first as u64, &mut frame);
        bytes[first..first + size].copy_from_slice(&frame);
        let second = first + size + 2 * READ_CHUNK_BYTES / 3;
        frame.clear();
        let size = encode_segment_record(8, &entry, layout, 900, second as u64, &mut frame);
        bytes[second..second + size].copy_from_slice(&frame);
        bytes[40] = 0xff;
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, MAX_PAYLOAD_BYTES);
        let later = intact_after(&mut reader, 40, layout, 7, false).expect("scan");
        assert_eq!(later.first, Some((first as u64, 7)));
        assert_eq!(later.attested, 900);
        let later = intact_after(&mut reader, 40, layout, 8, false).expect("scan");
        assert_eq!(
            later.first,
            Some((second as u64, 8)),
            "older frames are passed over"
        );
        let later = intact_after(&mut reader, first as u64 + 1, layout, 0, true).expect("scan");
        assert_eq!(later.first, Some((second as u64, 8)));
    }

    /// A frame whose header begins with a zero byte (a 256-byte payload's
    /// length), right after a whole chunk of zeros: the bytes kept from
    /// before the first nonzero one are what find its start.
    #[test]
    fn a_frame_starting_with_zeros_after_a_chunk_of_zeros_is_found() {
        use crate::entry::Op;
        use crate::format::record::{encode_segment_record, MAX_PAYLOAD_BYTES};
        let fs = SimFs::new(1);
        let path = Path::new("/d/edge");
        let layout = Layout::Segment { segment: 1 };
        // Encodes to 256 bytes: the length field reads 00 01 00 00.
        let entry = Entry::Op(Op::Set {
            key: b"kk".to_vec(),
            value: vec![b'v'; 250],
        });
        let damaged = 40;
        // The scan starts a byte after the damage: its first chunk of zeros
        // ends where the frame starts.
        let start = damaged + 1 + READ_CHUNK_BYTES;
        let mut bytes = vec![0u8; start + 4096];
        let mut frame = Vec::new();
        let size = encode_segment_record(5, &entry, layout, 77, start as u64, &mut frame);
        assert_eq!(frame[0], 0, "the header starts with a zero byte");
        bytes[start..start + size].copy_from_slice(&frame);
        bytes[damaged] = 0xff;
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, MAX_PAYLOAD_BYTES);
        let later = intact_after(&mut reader, damaged as u64 + 1, layout, 0, false).expect("scan");
        assert_eq!(later.first, Some((start as u64, 5)));
        assert_eq!(later.attested, 77);
    }
}
