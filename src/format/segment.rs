//! Segment files: `<id>.wal`, a 32-byte header, then record frames, then
//! (while the segment is active) preallocated zeros.
//!
//! Header: `magic[8] | version u32 | crc u32 | segment id u64 | first seq u64`;
//! the CRC covers every other header byte. Version 2 segments use the
//! segment frame layout (each frame names its segment and the durable
//! offset); version 1 segments, still read, use the plain one. Version 3
//! has version 2's layout and adds two operations to the codec
//! (`Op::SetExpiring`, `Op::Clear`): a build that reads only up to 2
//! refuses such a segment by its version instead of calling those records
//! damaged.

use std::path::{Path, PathBuf};

use crate::entry::Seq;
use crate::format::record::Layout;

/// Identifies a segment file. The `\r\n` catches text-mode transfer damage.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CKVWAL\r\n";
/// The version new segments are written in; bumped on any incompatible
/// change to the header, frame or codec.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version still read: segments a previous release wrote.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// File-name extension of segments.
pub const SEGMENT_EXTENSION: &str = "wal";

/// The header of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of the segment in the log; file names sort by it.
    pub id: u64,
    /// Sequence number of the segment's first record.
    pub first_seq: Seq,
    /// The format version the segment is written in.
    pub version: u32,
}

/// Why a header was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// All zeros: a preallocated segment that was never started.
    Unwritten,
    /// Anything else; the reason says what.
    Damaged(String),
}

impl SegmentHeader {
    /// The header of a new segment, in the current format.
    pub fn new(id: u64, first_seq: Seq) -> SegmentHeader {
        SegmentHeader {
            id,
            first_seq,
            version: FORMAT_VERSION,
        }
    }

    /// How the segment's frames are laid out.
    pub fn layout(&self) -> Layout {
        if self.version >= 2 {
            // The low half of the id: enough to tell a recycled file's old
            // frames from new ones, as RocksDB's recyclable log format does.
            Layout::Segment {
                segment: self.id as u32,
            }
        } else {
            Layout::Plain
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut buf = [0u8; SEGMENT_HEADER_BYTES];
        buf[0..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[8..12].copy_from_slice(&self.version.to_le_bytes());
        buf[16..24].copy_from_slice(&self.id.to_le_bytes());
        buf[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = header_crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses and checks the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let available = bytes.len().min(SEGMENT_HEADER_BYTES);
        if crate::format::all_zero(&bytes[..available]) {
            return Err(HeaderError::Unwritten);
        }
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Damaged(format!(
                "incomplete segment header ({} of {SEGMENT_HEADER_BYTES} bytes)",
                bytes.len()
            )));
        }
        let buf = &bytes[..SEGMENT_HEADER_BYTES];
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Damaged(
                "not a concordkv segment (bad magic)".into(),
            ));
        }
        let stored = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
        let actual = header_crc(buf);
        if stored != actual {
            return Err(HeaderError::Damaged(format!(
                "segment header checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            )));
        }
        let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Damaged(format!(
                "segment format version {version}, this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
            )));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&buf[16..24]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&buf[24..32]);
        Ok(SegmentHeader {
            id: u64::from_le_bytes(id),
            first_seq: Seq::from_le_bytes(first),
            version,
        })
    }
}

fn header_crc(buf: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..12]);
    hasher.update(&buf[16..SEGMENT_HEADER_BYTES]);
    hasher.finalize()
}

/// The file name of segment `id`: zero-padded so names sort like ids.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.{SEGMENT_EXTENSION}")
}

/// The path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(segment_file_name(id))
}

/// The segment id a file name stands for, if it is a segment's name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_every_flipped_byte() {
        let header = SegmentHeader::new(7, 1234);
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(
                matches!(SegmentHeader::decode(&bad), Err(HeaderError::Damaged(_))),
                "byte {i}"
            );
        }
        assert_eq!(
            SegmentHeader::decode(&[0u8; 64]),
            Err(HeaderError::Unwritten)
        );
    }

    #[test]
    fn version_1_headers_are_still_read_with_the_plain_layout() {
        let old = SegmentHeader {
            version: 1,
            ..SegmentHeader::new(9, 1)
        };
        let decoded = SegmentHeader::decode(&old.encode()).expect("version 1 is read");
        assert_eq!(decoded.layout(), Layout::Plain);
        assert_eq!(
            SegmentHeader::new(9, 1).layout(),
            Layout::Segment { segment: 9 }
        );
        let previous = SegmentHeader {
            version: 2,
            ..SegmentHeader::new(9, 1)
        };
        let decoded = SegmentHeader::decode(&previous.encode()).expect("version 2 is read");
        assert_eq!(decoded.layout(), Layout::Segment { segment: 9 });
        let future = SegmentHeader {
            version: 4,
            ..SegmentHeader::new(9, 1)
        };
        assert!(matches!(
            SegmentHeader::decode(&future.encode()),
            Err(HeaderError::Damaged(r)) if r.contains("version 4")
        ));
    }

    #[test]
    fn file_names_sort_and_parse() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
