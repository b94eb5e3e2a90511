//! Cutting a segment file into archive chunks: the records after what the
//! archive already holds, up to a sequence number known durable, whole
//! frames only, through the same frame walk recovery uses.

use std::io;
use std::ops::ControlFlow;
use std::path::Path;

use crate::archive::names::{crc, ChunkName};
use crate::entry::Seq;
use crate::format::record::MAX_PAYLOAD_BYTES;
use crate::format::segment::{HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::fs::{read_exact_at, FileSystem};
use crate::log::reader::FrameReader;
use crate::log::scan::{rest_is_zero, walk_frames, Stop};

/// Bytes a chunk grows to before it is uploaded (more only for one larger
/// record): what a pass holds in memory per upload.
pub(crate) const CHUNK_BYTES: u64 = 8 << 20;

/// What the archive already holds of a segment: bytes up to `end`, records
/// up to `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub end: u64,
    pub last_seq: Seq,
}

/// What a segment holds beyond what the archive has.
#[derive(Debug)]
pub(crate) enum Next {
    /// A chunk to upload, with its bytes.
    Chunk(ChunkName, Vec<u8>),
    /// Nothing more up to the bound. `clean`: the frames end there for good
    /// (the end of the file, or zeros to its end); `damage`: what stopped
    /// the walk instead, at which offset.
    Nothing {
        clean: bool,
        damage: Option<(u64, String)>,
    },
}

/// The next chunk of segment `id` at `path` after `held`, holding records
/// up to `upto` at most.
pub(crate) fn next_chunk(
    fs: &dyn FileSystem,
    path: &Path,
    id: u64,
    held: Option<Held>,
    upto: Seq,
) -> io::Result<Next> {
    let mut buf = Vec::new();
    let mut reader = FrameReader::new(fs, path, &mut buf, MAX_PAYLOAD_BYTES);
    let header = match SegmentHeader::decode(reader.peek(SEGMENT_HEADER_BYTES)?) {
        Ok(header) => header,
        Err(HeaderError::Unwritten) => {
            let clean = rest_is_zero(&mut reader)?;
            let damage = (!clean).then(|| (0, "zero header with data behind it".to_string()));
            return Ok(Next::Nothing { clean, damage });
        }
        Err(HeaderError::Damaged(reason)) => {
            return Ok(Next::Nothing {
                clean: false,
                damage: Some((0, reason)),
            })
        }
    };
    reader.consume(SEGMENT_HEADER_BYTES);
    reader.set_layout(header.layout());
    let (start, expected) = match held {
        Some(held) => {
            reader.seek(held.end);
            (held.end, held.last_seq + 1)
        }
        None => (0, header.first_seq),
    };
    let walk = walk_frames(&mut reader, expected, |seq, _, offset| {
        let full = offset - start >= CHUNK_BYTES && seq > expected;
        Ok(if seq > upto || full {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    if walk.next_seq > expected {
        let end = walk.offset;
        let bytes = read_exact_at(fs, path, start, (end - start) as usize)?;
        let name = ChunkName {
            segment: id,
            start,
            end,
            first_seq: expected,
            last_seq: walk.next_seq - 1,
            crc: crc(&bytes),
        };
        return Ok(Next::Chunk(name, bytes));
    }
    let (clean, damage) = match walk.stop {
        Stop::End => (true, None),
        Stop::Zeros => {
            let clean = rest_is_zero(&mut reader)?;
            (
                clean,
                (!clean).then(|| (walk.offset, "zeros with data behind them".to_string())),
            )
        }
        Stop::Visitor => (false, None),
        Stop::Damaged(reason) => (false, Some((walk.offset, reason))),
    };
    Ok(Next::Nothing { clean, damage })
}
