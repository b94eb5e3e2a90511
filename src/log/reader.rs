//! Reading a file's frames front to back through one bounded buffer: every
//! segment and snapshot read (recovery, `verify`, snapshots, compaction)
//! goes through it, and [`crate::log::scan`] walks segments with it.
//!
//! Snapshots and compactions read whole segments and snapshots while the
//! WAL is appending. Reading each file into fresh memory, and freeing it
//! afterwards, stalled the appenders: measured under a 16-writer `always`
//! load on 2 cores, the tens of milliseconds after a compaction freed its
//! 64 MiB read buffer had appends at a 1 ms median against 0.2 ms, the
//! memory being handed back by a low-priority thread. Read a piece at a
//! time, a file costs one reused buffer of [`READ_CHUNK_BYTES`] (or of the
//! largest frame in it), whatever its size.

use std::io;
use std::path::Path;

use crate::format::record::{read_frame_at, Frame, Layout};
use crate::fs::FileSystem;

/// Bytes read from the file at a time.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// Where a [`FrameReader`] stood: its offset, its layout, and what of its
/// buffer was read ahead and not yet consumed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    start: usize,
    end: usize,
    base: u64,
    at_eof: bool,
    layout: Layout,
    file_len: Option<u64>,
    read_size: usize,
}

impl Position {
    /// At file offset `offset`, reading frames in `layout`, with nothing
    /// read ahead.
    pub fn at(offset: u64, layout: Layout) -> Position {
        Position {
            start: 0,
            end: 0,
            base: offset,
            at_eof: false,
            layout,
            file_len: None,
            read_size: READ_CHUNK_BYTES,
        }
    }

    /// The frames' layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The file offset of the next unconsumed byte.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }
}

/// A cursor over one file; `buf[start..end]` is the part read but not yet
/// consumed. The buffer's length only grows (zeroed once), so reading many
/// small files through it costs no memset each.
pub(crate) struct FrameReader<'a> {
    fs: &'a dyn FileSystem,
    path: &'a Path,
    buf: &'a mut Vec<u8>,
    /// Where the unconsumed part of `buf` starts.
    start: usize,
    /// Where the bytes read end.
    end: usize,
    /// The file offset of `buf[0]`.
    base: u64,
    at_eof: bool,
    max_payload: usize,
    layout: Layout,
    /// The file's length, asked for once, the first time a frame claims
    /// more than one read.
    file_len: Option<u64>,
    /// Bytes read from the file at a time (more only for a larger frame).
    read_size: usize,
}

impl<'a> FrameReader<'a> {
    /// A reader at the start of `path`, reusing `buf` (its old content is
    /// ignored, its allocation kept). Frames with payloads over
    /// `max_payload` are damage.
    pub fn new(
        fs: &'a dyn FileSystem,
        path: &'a Path,
        buf: &'a mut Vec<u8>,
        max_payload: usize,
    ) -> FrameReader<'a> {
        FrameReader {
            fs,
            path,
            buf,
            start: 0,
            end: 0,
            base: 0,
            at_eof: false,
            max_payload,
            layout: Layout::Plain,
            file_len: None,
            read_size: READ_CHUNK_BYTES,
        }
    }

    /// A reader that goes on where [`FrameReader::position`] left one, with
    /// the bytes it had read ahead: `buf` must be the buffer it used,
    /// untouched since. How a log reader keeps its place between calls
    /// without reading the same bytes twice.
    pub fn resume(
        fs: &'a dyn FileSystem,
        path: &'a Path,
        buf: &'a mut Vec<u8>,
        max_payload: usize,
        at: Position,
    ) -> FrameReader<'a> {
        // A position from another buffer must not index past this one.
        let end = at.end.min(buf.len());
        FrameReader {
            fs,
            path,
            buf,
            start: at.start.min(end),
            end,
            base: at.base,
            at_eof: at.at_eof,
            max_payload,
            layout: at.layout,
            file_len: at.file_len,
            read_size: at.read_size,
        }
    }

    /// Where this reader stands, for [`FrameReader::resume`].
    pub fn position(&self) -> Position {
        Position {
            start: self.start,
            end: self.end,
            base: self.base,
            at_eof: self.at_eof,
            layout: self.layout,
            file_len: self.file_len,
            read_size: self.read_size,
        }
    }

    /// Reads `bytes` at a time from here on (at least what a frame needs,
    /// at most [`READ_CHUNK_BYTES`]): a reader that follows the end of the
    /// log wants a few records at a time, and reading a whole chunk for
    /// them (mostly the preallocated zeros past the end) costs more than
    /// the records.
    pub fn set_read_size(&mut self, bytes: usize) {
        self.read_size = bytes.clamp(1, READ_CHUNK_BYTES);
    }

    /// Reads the frames from here on in `layout` (a segment's, once its
    /// header has been read); plain until then.
    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = layout;
    }

    /// Moves to file offset `offset`, dropping what was read ahead: how a
    /// scan goes back over a damaged region, or skips to a frame beyond it.
    pub fn seek(&mut self, offset: u64) {
        self.start = 0;
        self.end = 0;
        self.base = offset;
        self.at_eof = false;
    }

    /// The file offset of the next unconsumed byte.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Up to `len` unconsumed bytes (fewer only at the end of the file).
    pub fn peek(&mut self, len: usize) -> io::Result<&[u8]> {
        self.fill(len)?;
        let end = self.end.min(self.start + len);
        Ok(&self.buf[self.start..end])
    }

    /// Whether everything has been consumed.
    pub fn at_end(&mut self) -> io::Result<bool> {
        self.fill(1)?;
        Ok(self.start == self.end)
    }

    /// The frame at the current offset; [`FrameReader::consume`] its size to
    /// move past it. At the end of the file: `Frame::Unwritten`.
    pub fn frame(&mut self) -> io::Result<Frame<'_>> {
        let header_bytes = self.layout.header_bytes();
        self.fill(header_bytes)?;
        let rest = &self.buf[self.start..self.end];
        if rest.len() >= header_bytes {
            let payload = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if payload <= self.max_payload && self.may_hold(header_bytes + payload)? {
                self.fill(header_bytes + payload)?;
            }
        }
        let offset = self.offset();
        Ok(read_frame_at(
            &self.buf[self.start..self.end],
            self.layout,
            offset,
            self.max_payload,
        ))
    }

    /// Whether the file could hold `len` bytes from the current offset. A
    /// damaged or torn length field may claim up to `max_payload` (1 GiB for
    /// segments): asking the file first keeps such a claim from growing the
    /// buffer beyond the file. Only asked for frames larger than one read,
    /// so ordinary frames cost nothing; the files read (preallocated
    /// segments, finished snapshots) do not change length while read.
    fn may_hold(&mut self, len: usize) -> io::Result<bool> {
        if len <= READ_CHUNK_BYTES {
            return Ok(true);
        }
        let file_len = match self.file_len {
            Some(known) => known,
            None => *self.file_len.insert(self.fs.file_len(self.path)?),
        };
        Ok(self.offset().saturating_add(len as u64) <= file_len)
    }

    /// Moves past `len` bytes (at most what [`FrameReader::peek`] or
    /// [`FrameReader::frame`] showed).
    pub fn consume(&mut self, len: usize) {
        self.start = (self.start + len).min(self.end);
    }

    /// Makes at least `len` unconsumed bytes available, unless the file ends
    /// first; the consumed part is dropped to make room.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        if self.at_eof || self.end - self.start >= len {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.base += self.start as u64;
        self.end -= self.start;
        self.start = 0;
        while !self.at_eof && self.end < len {
            let wanted = self.read_size.max(len - self.end);
            if self.buf.len() < self.end + wanted {
                self.buf.resize(self.end + wanted, 0);
            }
            let at = self.base + self.end as u64;
            let n = self
                .fs
                .read_at(self.path, at, &mut self.buf[self.end..self.end + wanted])?;
            self.end += n;
            self.at_eof = n < wanted;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, Op};
    use crate::format::record::encode_record;
    use crate::testing::sim_fs::SimFs;

    fn file_of(fs: &SimFs, path: &Path, bytes: &[u8]) {
        let file = fs.create(path, 0).expect("create");
        file.write_at(bytes, 0).expect("write");
    }

    #[test]
    fn frames_spanning_chunk_boundaries_are_read_whole() {
        let fs = SimFs::new(1);
        let path = Path::new("/d/frames");
        fs.create_dir_all(Path::new("/d")).expect("dir");
        let mut bytes = b"HEADER".to_vec();
        let values: Vec<usize> = vec![10, READ_CHUNK_BYTES - 40, 3, 2 * READ_CHUNK_BYTES, 7];
        for (i, len) in values.iter().enumerate() {
            let op = Op::Set {
                key: vec![b'k'; 4],
                value: vec![i as u8; *len],
            };
            encode_record(i as u64 + 1, &Entry::Op(op), &mut bytes);
        }
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, 4 * READ_CHUNK_BYTES);
        assert_eq!(reader.peek(6).expect("peek"), b"HEADER");
        reader.consume(6);
        let mut seen = Vec::new();
        loop {
            let at = reader.offset();
            let size = match reader.frame().expect("frame") {
                Frame::Record { seq, size, .. } => {
                    seen.push((seq, at));
                    size
                }
                Frame::Unwritten => break,
                Frame::Damaged(reason) => panic!("damaged at {at}: {reason}"),
            };
            reader.consume(size);
        }
        assert_eq!(seen.len(), values.len());
        assert_eq!(seen[0], (1, 6));
        assert!(reader.at_end().expect("at end"));
        assert_eq!(reader.offset(), bytes.len() as u64);
    }

    #[test]
    fn a_frame_cut_by_the_end_of_the_file_is_damage() {
        let fs = SimFs::new(1);
        let path = Path::new("/d/cut");
        fs.create_dir_all(Path::new("/d")).expect("dir");
        let mut bytes = Vec::new();
        let op = Op::Set {
            key: b"key".to_vec(),
            value: vec![1; READ_CHUNK_BYTES + 100],
        };
        encode_record(1, &Entry::Op(op), &mut bytes);
        bytes.truncate(bytes.len() - 50);
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        let mut reader = FrameReader::new(&fs, path, &mut buf, 2 * READ_CHUNK_BYTES);
        match reader.frame().expect("frame") {
            Frame::Damaged(reason) => assert!(reason.contains("runs past the end"), "{reason}"),
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn an_oversized_length_is_not_read_ahead() {
        let fs = SimFs::new(1);
        let path = Path::new("/d/huge");
        fs.create_dir_all(Path::new("/d")).expect("dir");
        let mut bytes = vec![0xff; crate::format::record::FRAME_HEADER_BYTES];
        bytes.extend_from_slice(&[1; 100]);
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        {
            let mut reader = FrameReader::new(&fs, path, &mut buf, 1 << 16);
            assert!(matches!(reader.frame().expect("frame"), Frame::Damaged(_)));
        }
        assert!(buf.capacity() <= 2 * READ_CHUNK_BYTES);
    }

    #[test]
    fn a_length_longer_than_the_file_is_not_read_ahead() {
        // A torn or damaged length field claiming 512 MiB, within the
        // payload limit, in a file longer than one read (as a segment is).
        let fs = SimFs::new(1);
        let path = Path::new("/d/claims");
        fs.create_dir_all(Path::new("/d")).expect("dir");
        let mut bytes = (512u32 << 20).to_le_bytes().to_vec();
        bytes.resize(3 * READ_CHUNK_BYTES, 7);
        file_of(&fs, path, &bytes);

        let mut buf = Vec::new();
        {
            let mut reader = FrameReader::new(&fs, path, &mut buf, 1 << 30);
            assert!(matches!(reader.frame().expect("frame"), Frame::Damaged(_)));
        }
        assert!(
            buf.capacity() <= 2 * READ_CHUNK_BYTES,
            "a claimed length grew the buffer to {} bytes",
            buf.capacity()
        );
    }
}
