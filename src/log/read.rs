//! Reading the log back: the records of the listed segments, from the
//! files, in sequence order, up to the last acknowledged one.
//!
//! A [`Cursor`] walks the segments with the one [`FrameReader`] and
//! [`walk_frames`] the rest of the log uses, through one buffer it keeps,
//! so a read of any length holds one read chunk (or the largest frame) and
//! one chunk of decoded records. It never reads past the bound it is given:
//! past it, the active segment may hold a write in progress, or (in
//! `always` mode) records whose `fdatasync` has not returned.
//!
//! Segments are never rewritten in place: a snapshot or a compaction
//! writes a snapshot file and retires whole segments (unlists them in the
//! manifest, then removes their files, possibly shrinking them first).
//! A record is handed out only if its segment was still listed after it
//! was read, which proves the read came before any removal; otherwise the
//! reader answers [`Error::Purged`]. So what a reader returns is always
//! what was appended, and a reader never trusts a file the manifest no
//! longer vouches for, even while it is still on disk.
//!
//! Bytes read ahead in one call may be stale in the next (the writer was
//! still appending behind them). An intact frame is never stale (a frame is
//! written once, at its final place), so only where the read-ahead bytes
//! stop looking like the next record is the file read again before the
//! reader decides it reached the end of a segment, or damage.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use crate::actors::wal::WalShared;
use crate::entry::{Record, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::codec::decode_entry;
use crate::format::manifest::DirKind;
use crate::format::record::MAX_PAYLOAD_BYTES;
use crate::format::segment::{segment_path, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::lifecycle::manifest::truncation_cap;
use crate::log::reader::{FrameReader, Position, READ_CHUNK_BYTES};
use crate::log::scan::{continues, listed_but_missing, walk_frames, Stop};

/// Records decoded per call of [`Cursor::read_chunk`], at most: enough to
/// make each call's fixed costs (a manifest check, for a subscription a
/// blocking task) vanish, few enough that a chunk is small next to the
/// read buffer.
const CHUNK_RECORDS: usize = 1024;

/// Payload bytes decoded per call, at most (a chunk of large records stops
/// here before [`CHUNK_RECORDS`]).
const CHUNK_BYTES: usize = 256 << 10;

/// Bytes read from the file at a time when fewer than [`CHUNK_RECORDS`]
/// records are wanted: a subscriber at the end of the log reads a few
/// records per wake-up, and a whole read chunk each time (mostly zeros past
/// the end) would cost it, and the appenders sharing the CPU, far more.
const TAIL_READ_BYTES: usize = 16 << 10;

/// The last record acknowledged under the sync mode: the most a reader may
/// see. The state applies each record just before its appender is answered
/// (in `always` mode after an `fdatasync` covers it, in the others once it
/// is written and within the mode's bound on what is unsynced).
pub(crate) fn acknowledged_upto(wal: &WalShared) -> Seq {
    wal.state.last_seq()
}

/// Waits until a record after `seq` is acknowledged; `false` once the
/// store has shut down.
pub(crate) async fn wait_past(wal: &WalShared, seq: Seq) -> bool {
    wal.state.wait_past(seq).await
}

/// Whether the store has shut down.
pub(crate) fn is_closed(wal: &WalShared) -> bool {
    wal.state.is_closed()
}

/// The segment a cursor is in.
struct Current {
    id: u64,
    path: PathBuf,
    /// The sequence number of the frame at `position`.
    frame_seq: Seq,
    position: Position,
    /// A log's truncation marks' limit on this segment: records after it
    /// were dropped, and the log goes on in the next segment.
    cap: Option<Seq>,
}

/// A place in the log and the buffer to read it through.
pub(crate) struct Cursor {
    wal: Arc<WalShared>,
    /// The next record to hand out.
    next_seq: Seq,
    /// Start at the first record still in the log, whatever `next_seq` says.
    from_first: bool,
    current: Option<Current>,
    /// The manifest generation at which `current` was last found listed.
    checked: Option<u64>,
    buf: Vec<u8>,
    /// Reading a [`Log`](crate::Log): its purge point and truncations
    /// are checked after each chunk.
    log: bool,
    /// The last of the log's truncations this cursor knows of: a later
    /// one may have dropped records it read (see `check_ends`).
    epoch: u64,
    /// A subscription's cursor: after a truncation that dropped nothing it
    /// handed out, it goes on with the log as it is now.
    follows: bool,
}

impl Cursor {
    /// A cursor at record `from` (at the first record the log holds, with
    /// `None`); nothing is read until it is used.
    pub fn new(wal: Arc<WalShared>, from: Option<Seq>) -> Cursor {
        let log = wal.manifest.kind() == DirKind::Log;
        let epoch = wal.manifest.truncation_epoch();
        Cursor {
            wal,
            next_seq: from.unwrap_or(1).max(1),
            from_first: from.is_none(),
            current: None,
            checked: None,
            buf: Vec::new(),
            log,
            epoch,
            follows: false,
        }
    }

    /// Makes this a subscription's cursor (see `follows`).
    pub fn following(mut self) -> Cursor {
        self.follows = true;
        self
    }

    /// The truncation marks' limit on segment `id` (a log's only).
    fn cap_of(&self, id: u64) -> Option<Seq> {
        if !self.log {
            return None;
        }
        truncation_cap(&self.wal.manifest.truncations(), id)
    }

    /// After a chunk of a log was read into `out` (from index `kept` on,
    /// starting at record `prior`, up to `upto`): records the log purged
    /// meanwhile answer [`Error::Purged`]; after a truncation made since
    /// this cursor began, records past it are dropped from `out` (they may
    /// be ones the truncation dropped), and a read that had handed out
    /// records past it, or would go past it with a bound from before it,
    /// answers [`Error::Truncated`]. A subscription that handed out nothing
    /// past it goes on from the record after it, in the log as it is now;
    /// then `true`: the chunk ends here, since `upto` was acknowledged
    /// before the truncation and may lie past the log's new end.
    fn check_ends(
        &mut self,
        out: &mut VecDeque<Record>,
        kept: usize,
        prior: Seq,
        upto: Seq,
    ) -> Result<bool> {
        if !self.log {
            return Ok(false);
        }
        let (purged, truncated, epoch) = self.wal.manifest.log_ends(self.epoch);
        if out.iter().skip(kept).any(|r| r.seq <= purged) {
            out.truncate(kept);
            return Err(Error::Purged { upto: purged });
        }
        let Some(after) = truncated else {
            return Ok(false);
        };
        while out.len() > kept && out.back().is_some_and(|r| r.seq > after) {
            out.pop_back();
        }
        if self.follows && prior <= after + 1 {
            self.epoch = epoch;
            self.next_seq = self.next_seq.min(after + 1);
            self.current = None;
            return Ok(true);
        }
        if prior > after + 1 || upto > after {
            self.next_seq = self.next_seq.min(after + 1);
            return Err(Error::Truncated { after });
        }
        Ok(false)
    }

    /// An error met finding the segment that holds the next record: where
    /// a truncation made since the cursor began explains it (the records it
    /// was bound to read were dropped, and the segment that will hold the
    /// new ones is not listed or not started yet), the truncation's answer
    /// instead (see `check_ends`), never a report of damage.
    fn unless_truncated(
        &mut self,
        error: Error,
        out: &mut VecDeque<Record>,
        kept: usize,
        prior: Seq,
        upto: Seq,
    ) -> Result<bool> {
        if !matches!(error, Error::Corruption(_) | Error::Purged { .. }) {
            return Err(error);
        }
        if self.check_ends(out, kept, prior, upto)? {
            return Ok(true);
        }
        Err(error)
    }

    /// For a subscription waiting at the end of a log: a truncation since
    /// it began that dropped records it handed out answers
    /// [`Error::Truncated`]; one that dropped none is taken in.
    pub fn check_waiting(&mut self) -> Result<()> {
        if !self.log {
            return Ok(());
        }
        let (_, truncated, epoch) = self.wal.manifest.log_ends(self.epoch);
        if let Some(after) = truncated {
            if self.next_seq > after + 1 {
                return Err(Error::Truncated { after });
            }
            self.epoch = epoch;
            self.current = None;
        }
        Ok(())
    }

    /// The next record the cursor hands out.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Bytes of file buffer the cursor holds.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads records from `next_seq` on, up to `upto` and at most a chunk,
    /// into `out`. Returns `Ok` having added at least one record unless
    /// `next_seq` is past `upto`, or a subscription's cursor took in a
    /// truncation (ask again with the bound acknowledged now). On an error
    /// the records added before it are still good: hand them out first.
    pub fn read_chunk(&mut self, upto: Seq, out: &mut VecDeque<Record>) -> Result<()> {
        let (entry_kept, entry_seq) = (out.len(), self.next_seq);
        let full = |out: &VecDeque<Record>, bytes: usize| {
            out.len() >= CHUNK_RECORDS || bytes >= CHUNK_BYTES
        };
        let mut bytes = 0usize;
        // Whether every byte the reader holds was read in this call, after
        // `upto` was acknowledged: then a record missing below `upto` is
        // really missing.
        let mut fresh = false;
        loop {
            if self.next_seq > upto || full(out, bytes) {
                return Ok(());
            }
            if self.current.is_none() {
                if let Err(e) = self.locate() {
                    if self.unless_truncated(e, out, entry_kept, entry_seq, upto)? {
                        return Ok(());
                    }
                }
                fresh = true;
                continue;
            }
            let Some(current) = self.current.as_mut() else {
                continue;
            };
            if current.cap.is_some_and(|cap| self.next_seq > cap) {
                // Past a truncation mark: the log goes on in the next segment.
                let (path, offset) = (current.path.clone(), current.position.offset());
                if let Err(e) = self.next_segment(&path, offset, self.next_seq) {
                    if self.unless_truncated(e, out, entry_kept, entry_seq, upto)? {
                        return Ok(());
                    }
                }
                continue;
            }
            let cap = current.cap.unwrap_or(Seq::MAX);
            let kept = out.len();
            let next_seq = self.next_seq;
            let mut reader = FrameReader::resume(
                self.wal.fs.as_ref(),
                &current.path,
                &mut self.buf,
                MAX_PAYLOAD_BYTES,
                current.position,
            );
            if upto - self.next_seq < CHUNK_RECORDS as u64 {
                reader.set_read_size(TAIL_READ_BYTES);
            } else {
                reader.set_read_size(READ_CHUNK_BYTES);
            }
            let walked = walk_frames(&mut reader, current.frame_seq, |seq, payload, _| {
                if seq > upto || seq > cap || full(out, bytes) {
                    return Ok(ControlFlow::Break(()));
                }
                if seq >= next_seq {
                    out.push_back(Record {
                        seq,
                        entry: decode_entry(payload)?,
                    });
                    bytes += payload.len();
                }
                Ok(ControlFlow::Continue(()))
            });
            current.position = reader.position();
            let (id, path) = (current.id, current.path.clone());
            let walk = match walked {
                Ok(walk) => walk,
                Err(_) if !self.still_listed(id) => {
                    if self.retired(out, kept, next_seq, upto)? {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    out.truncate(kept);
                    return Err(read_failed(&path, e));
                }
            };
            // Read before the check: if the segment is still listed, no
            // removal had begun when the frames were read.
            if !self.still_listed(id) {
                if self.retired(out, kept, next_seq, upto)? {
                    return Ok(());
                }
                continue;
            }
            if let Some(current) = self.current.as_mut() {
                current.frame_seq = walk.next_seq;
            }
            self.next_seq = self.next_seq.max(walk.next_seq);
            if self.check_ends(out, kept, next_seq, upto)? {
                return Ok(());
            }
            if walk.stop == Stop::Visitor || self.next_seq > upto {
                continue;
            }
            if !fresh {
                // The frames ran out in bytes read ahead earlier: read the
                // file again from there before judging.
                if let Some(current) = self.current.as_mut() {
                    current.position = Position::at(walk.offset, current.position.layout());
                }
                fresh = true;
                continue;
            }
            match walk.stop {
                Stop::End | Stop::Zeros => {
                    if let Err(e) = self.next_segment(&path, walk.offset, walk.next_seq) {
                        if self.unless_truncated(e, out, entry_kept, entry_seq, upto)? {
                            return Ok(());
                        }
                    }
                }
                Stop::Damaged(reason) => {
                    return Err(Error::Corruption(Corruption {
                        file: path,
                        offset: walk.offset,
                        reason,
                    }))
                }
                Stop::Visitor => {}
            }
        }
    }

    /// Finds the segment holding `next_seq` (or, `from_first`, the first
    /// record in the log): the last listed segment starting at or before
    /// it, by a binary search over their headers.
    pub fn locate(&mut self) -> Result<()> {
        'listing: loop {
            let ids = self.wal.manifest.segments();
            // ids[..lo] start at or before the target, ids[hi..] after it.
            let (mut lo, mut hi) = (0, ids.len());
            let mut found: Option<(usize, SegmentHeader)> = None;
            let mut first: Option<SegmentHeader> = None;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let Some(header) = self.header(&ids, mid)? else {
                    continue 'listing;
                };
                match header {
                    Some(h) if h.first_seq <= self.next_seq => {
                        found = Some((mid, h));
                        lo = mid + 1;
                    }
                    _ => hi = mid,
                }
            }
            if found.is_none() || self.from_first {
                // The first started segment: where the log begins.
                for index in 0..ids.len() {
                    let Some(header) = self.header(&ids, index)? else {
                        continue 'listing;
                    };
                    if let Some(h) = header {
                        first = Some(h);
                        break;
                    }
                }
            }
            let chosen = match (found, first) {
                (_, Some(first)) if self.from_first => {
                    self.next_seq = self.next_seq.max(first.first_seq);
                    self.from_first = false;
                    first
                }
                (Some((_, header)), _) => header,
                (None, Some(first)) => {
                    return Err(Error::Purged {
                        upto: first.first_seq - 1,
                    })
                }
                (None, None) => {
                    return Err(self.missing(
                        self.wal.config.data_dir.clone(),
                        0,
                        format!(
                            "record {} is acknowledged, but no listed segment holds a record",
                            self.next_seq
                        ),
                    ))
                }
            };
            self.current = Some(Current {
                id: chosen.id,
                path: segment_path(&self.wal.config.data_dir, chosen.id),
                frame_seq: chosen.first_seq,
                position: Position::at(SEGMENT_HEADER_BYTES as u64, chosen.layout()),
                cap: self.cap_of(chosen.id),
            });
            self.checked = None;
            return Ok(());
        }
    }

    /// The header of listed segment `ids[index]` (`Some(None)`: not started
    /// yet); `None` when the segment was retired meanwhile and the listing
    /// must be read again.
    fn header(&self, ids: &[u64], index: usize) -> Result<Option<Option<SegmentHeader>>> {
        let id = ids[index];
        let path = segment_path(&self.wal.config.data_dir, id);
        let head = match self.wal.fs.read_prefix(&path, SEGMENT_HEADER_BYTES) {
            Ok(head) => head,
            Err(e) => {
                return match self.wal.manifest.is_listed(id).0 {
                    false => Ok(None),
                    true if e.kind() == io::ErrorKind::NotFound => {
                        Err(Error::Corruption(listed_but_missing(&path)))
                    }
                    true => Err(Error::io("read segment header", &path, e)),
                };
            }
        };
        match SegmentHeader::decode(&head) {
            Ok(header) if header.id == id => Ok(Some(Some(header))),
            Ok(header) => Err(Error::Corruption(Corruption {
                file: path,
                offset: 16,
                reason: format!("header says segment {}, file name says {id}", header.id),
            })),
            // The newest listed segment may be prepared and not started, or
            // being started right now.
            Err(_) if index + 1 == ids.len() => Ok(Some(None)),
            Err(HeaderError::Unwritten) => Ok(Some(None)),
            Err(HeaderError::Damaged(reason)) => Err(Error::Corruption(Corruption {
                file: path,
                offset: 0,
                reason,
            })),
        }
    }

    /// Moves to the segment after the current one, which `path` ended at
    /// `offset` before record `seq`: the next listed segment must start
    /// with it.
    fn next_segment(&mut self, path: &std::path::Path, offset: u64, seq: Seq) -> Result<()> {
        let Some(current) = self.current.as_ref() else {
            return Ok(());
        };
        let missing = |reason: String| self.missing(path.to_path_buf(), offset, reason);
        let ids = self.wal.manifest.segments();
        let Some(index) = ids.iter().position(|id| *id > current.id) else {
            return Err(missing(format!(
                "record {seq} is acknowledged, but the segment ends here and no later one is listed"
            )));
        };
        let header = match self.header(&ids, index)? {
            Some(Some(header)) => header,
            // Retired meanwhile, and the current one with it (a purge
            // unlists from the first segment on; two segments may start at
            // the same record, the first of them empty, after an open).
            None => return self.relocate_unless_purged(),
            Some(None) => {
                return Err(missing(format!(
                    "record {seq} is acknowledged, but the segment ends here and the next one is not started"
                )))
            }
        };
        if header.first_seq != seq {
            let purged = self.wal.manifest.purged_through();
            if continues(seq, header.first_seq, purged) {
                // The records in between were purged (a log's purge may
                // reach past what a power cut kept; see `continues`).
                return Err(Error::Purged { upto: purged });
            }
            return Err(missing(format!(
                "the segment ends before record {seq}, but the next segment ({}) starts at {}",
                header.id, header.first_seq
            )));
        }
        self.current = Some(Current {
            id: header.id,
            path: segment_path(&self.wal.config.data_dir, header.id),
            frame_seq: header.first_seq,
            position: Position::at(SEGMENT_HEADER_BYTES as u64, header.layout()),
            cap: self.cap_of(header.id),
        });
        self.checked = None;
        Ok(())
    }

    /// Whether segment `id` is still listed; without the manifest's lock
    /// while the manifest has not changed since it last was.
    fn still_listed(&mut self, id: u64) -> bool {
        let generation = self.wal.manifest.generation();
        if self.checked == Some(generation) {
            return true;
        }
        let (listed, generation) = self.wal.manifest.is_listed(id);
        self.checked = listed.then_some(generation);
        listed
    }

    /// The segment the cursor reads was retired under it: the records read
    /// from it in this chunk (from index `kept` of `out`, starting at
    /// record `prior`, up to `upto`) are dropped, since its file may be
    /// going. A truncation since the cursor began answers as after any
    /// chunk (see `check_ends`). Otherwise, if the record it wants next
    /// went with the segment, the answer is [`Error::Purged`]; if not, the
    /// segment held only records before it (a log purged up to the
    /// segment's end while the cursor waited there), and the cursor reads
    /// on from the listing as it is now: it never answers `Purged` for a
    /// record still in the log. `true` as from `check_ends`.
    fn retired(
        &mut self,
        out: &mut VecDeque<Record>,
        kept: usize,
        prior: Seq,
        upto: Seq,
    ) -> Result<bool> {
        out.truncate(kept);
        if self.check_ends(out, kept, prior, upto)? {
            return Ok(true);
        }
        self.relocate_unless_purged().map(|()| false)
    }

    /// A segment the cursor is in, or moves to, was retired under it:
    /// [`Error::Purged`] if the record it wants next went with it;
    /// otherwise it reads on from the listing as it is now.
    fn relocate_unless_purged(&mut self) -> Result<()> {
        match self.purged() {
            Error::Purged { upto } if upto < self.next_seq => {
                self.current = None;
                self.checked = None;
                Ok(())
            }
            purged => Err(purged),
        }
    }

    /// An acknowledged record missing from the files: damage, unless the log
    /// failed. After a failed sync the log cuts its active segment back to
    /// what is durable (the page cache may hold bytes the disk does not),
    /// and with it records that `batch`, `interval` and `none` modes had
    /// acknowledged: the answer is then the failure that stopped the log,
    /// not a report of damage in a file that has none.
    fn missing(&self, file: PathBuf, offset: u64, reason: String) -> Error {
        match self.wal.worker.failure() {
            Some(cause) => Error::refused(&cause),
            None => Error::Corruption(Corruption {
                file,
                offset,
                reason,
            }),
        }
    }

    /// The answer for records no longer in the log: the log now starts
    /// after the last record of the segments retired.
    fn purged(&self) -> Error {
        let ids = self.wal.manifest.segments();
        // A log's purge point may lie inside its first segment.
        let purged = self.wal.manifest.purged_through();
        for index in 0..ids.len() {
            if let Ok(Some(Some(header))) = self.header(&ids, index) {
                return Error::Purged {
                    upto: (header.first_seq - 1).max(purged),
                };
            }
        }
        Error::Purged {
            upto: self.next_seq.saturating_sub(1),
        }
    }
}

/// A failed read of a listed segment: missing (damage), or an I/O error.
fn read_failed(path: &std::path::Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::Corruption(listed_but_missing(path))
    } else {
        Error::io("read segment", path, e)
    }
}

/// The records of a range of the log, read from the segment files; see
/// [`Store::read`](crate::Store::read).
///
/// Reads the files on the thread that calls `next`: inside an async
/// runtime, iterate it in a blocking task (or use a
/// [`Subscription`](crate::Subscription), which does).
pub struct LogRead {
    cursor: Cursor,
    /// The last record to return.
    end: Seq,
    ready: VecDeque<Record>,
    failed: Option<Error>,
    done: bool,
}

impl LogRead {
    pub(crate) fn new(cursor: Cursor, end: Seq) -> LogRead {
        LogRead {
            cursor,
            end,
            ready: VecDeque::new(),
            failed: None,
            done: false,
        }
    }

    /// The last sequence number this read returns, at most: the end of the
    /// range, or the last record acknowledged when the read began.
    pub fn end(&self) -> Seq {
        self.end
    }

    /// Bytes of buffer the reader holds for file data: one read chunk, or
    /// the largest record read if that is larger, whatever the range's
    /// length.
    pub fn buffer_capacity(&self) -> usize {
        self.cursor.buffer_capacity()
    }
}

impl Iterator for LogRead {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(Ok(record));
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some(Err(e));
            }
            if self.done || self.cursor.next_seq() > self.end {
                return None;
            }
            if let Err(e) = self.cursor.read_chunk(self.end, &mut self.ready) {
                self.failed = Some(e);
            }
        }
    }
}

impl std::iter::FusedIterator for LogRead {}

impl std::fmt::Debug for LogRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRead")
            .field("next_seq", &self.cursor.next_seq())
            .field("end", &self.end)
            .finish()
    }
}
