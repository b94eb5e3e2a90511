//! Record frames. Two layouts, both little endian:
//!
//! - plain, `len u32 | crc u32 | seq u64 | payload[len]`: snapshots and
//!   segments of format version 1;
//! - segment, `len u32 | crc u32 | seq u64 | segment u32 | durable u32 |
//!   payload[len]`: segments of format version 2. `segment` is the low 32
//!   bits of the segment's id, and `durable` the offset up to which the
//!   writer knew the segment was synced when it wrote the frame: recovery
//!   tells an interrupted write (damage past every such offset) from media
//!   damage (damage below one) by it, whatever the user's data looks like.
//!
//! The CRC-32 covers the length, the rest of the header and the payload, so a
//! damaged length or a record from another place in the sequence is caught
//! as surely as a damaged payload; in the segment layout it also covers the
//! frame's offset in its file (not stored), so a frame copied elsewhere, or
//! one a user value happens to contain, is not an intact frame there.

use crate::entry::{Entry, Seq};
use crate::format::{all_zero, codec};

/// Bytes before the payload in the plain layout: length, CRC and sequence number.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Bytes before the payload in the segment layout: the plain header, the
/// segment id's low half and the durable offset.
pub const SEGMENT_FRAME_HEADER_BYTES: usize = 24;
/// The largest payload the format allows (and `limits.max_record_bytes` may
/// be raised to). Files are judged by it, never by the current limit: a
/// limit lowered after a record was written must not make it look torn.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// How the frames of one file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Snapshots and format-1 segments.
    Plain,
    /// Format-2 segments; `segment` is the low 32 bits of the segment id.
    Segment {
        /// The low 32 bits of the segment id, which each frame repeats.
        segment: u32,
    },
}

impl Layout {
    /// Bytes before the payload.
    pub fn header_bytes(self) -> usize {
        match self {
            Layout::Plain => FRAME_HEADER_BYTES,
            Layout::Segment { .. } => SEGMENT_FRAME_HEADER_BYTES,
        }
    }
}

/// Appends the plain frame of record `seq` holding `entry` to `out`; returns its size.
pub fn encode_record(seq: Seq, entry: &Entry, out: &mut Vec<u8>) -> usize {
    encode(seq, entry, Layout::Plain, 0, 0, out)
}

/// Appends the segment frame of record `seq` to `out`, for the file offset
/// `offset` of segment layout `layout`, saying the segment was durable up
/// to `durable` (at most `offset`); returns its size.
pub fn encode_segment_record(
    seq: Seq,
    entry: &Entry,
    layout: Layout,
    durable: u64,
    offset: u64,
    out: &mut Vec<u8>,
) -> usize {
    encode(seq, entry, layout, durable.min(offset), offset, out)
}

fn encode(
    seq: Seq,
    entry: &Entry,
    layout: Layout,
    durable: u64,
    offset: u64,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    let header_bytes = layout.header_bytes();
    out.resize(start + header_bytes, 0);
    codec::encode_entry(entry, out);
    let payload_len = out.len() - start - header_bytes;
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    if let Layout::Segment { segment } = layout {
        // Segments end below 4 GiB (`wal.max_segment_bytes` is at most
        // 2 GiB, a record at most 1 GiB), so every offset fits.
        let durable = u32::try_from(durable).unwrap_or(u32::MAX);
        out[start + 16..start + 20].copy_from_slice(&segment.to_le_bytes());
        out[start + 20..start + 24].copy_from_slice(&durable.to_le_bytes());
    }
    let (head, payload) = out[start..].split_at(header_bytes);
    let crc = frame_crc(head, layout, offset, payload);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// The CRC of a frame whose header (CRC field included, and skipped) is
/// `head`, at file offset `offset`.
fn frame_crc(head: &[u8], layout: Layout, offset: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[0..4]);
    hasher.update(&head[8..]);
    if let Layout::Segment { .. } = layout {
        hasher.update(&offset.to_le_bytes());
    }
    hasher.update(payload);
    hasher.finalize()
}

/// What the bytes at one offset of a file hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An intact frame: its sequence number, payload, whole size, and (in
    /// the segment layout) the durable offset it carries (0 otherwise).
    Record {
        /// The record's sequence number.
        seq: Seq,
        /// The encoded entry.
        payload: &'a [u8],
        /// Bytes the whole frame takes, header included.
        size: usize,
        /// The durable offset the frame attests (0 in the plain layout).
        durable: u64,
    },
    /// Only zeros from here on in the frame header: the preallocated,
    /// never-written rest of a segment.
    Unwritten,
    /// Not an intact frame; the reason says why.
    Damaged(String),
}

/// Reads the frame at the start of `buf`, which lies at file offset
/// `offset`, in `layout`.
pub fn read_frame_at(buf: &[u8], layout: Layout, offset: u64, max_payload: usize) -> Frame<'_> {
    let header_bytes = layout.header_bytes();
    if buf.len() < header_bytes {
        return if all_zero(buf) {
            Frame::Unwritten
        } else {
            Frame::Damaged(format!(
                "incomplete frame header ({} of {header_bytes} bytes)",
                buf.len()
            ))
        };
    }
    let header = &buf[..header_bytes];
    if all_zero(header) {
        return Frame::Unwritten;
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let len = word(0);
    let crc = word(4);
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&header[8..16]);
    let seq = Seq::from_le_bytes(seq_bytes);
    let payload_len = len as usize;
    if payload_len == 0 {
        return Frame::Damaged("frame with an empty payload".into());
    }
    if payload_len > max_payload {
        return Frame::Damaged(format!(
            "frame length {payload_len} exceeds the record limit {max_payload}"
        ));
    }
    let available = buf.len() - header_bytes;
    if payload_len > available {
        return Frame::Damaged(format!(
            "frame length {payload_len} runs past the end of the file ({available} bytes left)"
        ));
    }
    let payload = &buf[header_bytes..header_bytes + payload_len];
    let actual = frame_crc(header, layout, offset, payload);
    if actual != crc {
        return Frame::Damaged(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    let durable = match layout {
        Layout::Plain => 0,
        Layout::Segment { segment } => {
            let stored = word(16);
            if stored != segment {
                return Frame::Damaged(format!(
                    "frame of segment {stored:#010x} (low 32 bits), this segment is {segment:#010x}"
                ));
            }
            let durable = u64::from(word(20));
            if durable > offset {
                return Frame::Damaged(format!(
                    "frame says the segment was durable up to byte {durable}, beyond its own offset"
                ));
            }
            durable
        }
    };
    Frame::Record {
        seq,
        payload,
        size: header_bytes + payload_len,
        durable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Op;
    use crate::format::codec::decode_entry;
    use proptest::prelude::*;

    /// The plain frame at the start of `buf`.
    fn read_frame(buf: &[u8], max_payload: usize) -> Frame<'_> {
        read_frame_at(buf, Layout::Plain, 0, max_payload)
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 1..32), bytes())
                .prop_map(|(key, value)| Op::Set { key, value }),
            proptest::collection::vec(any::<u8>(), 1..32).prop_map(|key| Op::Delete { key }),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            arb_op().prop_map(Entry::Op),
            proptest::collection::vec(arb_op(), 0..8).prop_map(Entry::Batch),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(seq in any::<u64>(), entry in arb_entry()) {
            let mut buf = Vec::new();
            let size = encode_record(seq, &entry, &mut buf);
            prop_assert_eq!(size, buf.len());
            match read_frame(&buf, 1 << 20) {
                Frame::Record { seq: s, payload, size: n, .. } => {
                    prop_assert_eq!(s, seq);
                    prop_assert_eq!(n, buf.len());
                    prop_assert_eq!(decode_entry(payload).expect("decodes"), entry);
                }
                other => prop_assert!(false, "expected a record, got {:?}", other),
            }
        }

        #[test]
        fn any_single_byte_change_is_detected(
            seq in any::<u64>(),
            entry in arb_entry(),
            pos in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut buf = Vec::new();
            encode_record(seq, &entry, &mut buf);
            let i = pos.index(buf.len());
            buf[i] ^= xor;
            let intact_same = matches!(
                read_frame(&buf, 1 << 20),
                Frame::Record { seq: s, payload, .. } if s == seq && decode_entry(payload).ok() == Some(entry.clone())
            );
            prop_assert!(!intact_same, "a change at byte {} went unnoticed", i);
            prop_assert!(!matches!(read_frame(&buf, 1 << 20), Frame::Record { .. }), "byte {} changed, frame still accepted", i);
        }
    }

    proptest! {
        #[test]
        fn segment_frames_round_trip_and_any_byte_change_is_detected(
            seq in any::<u64>(),
            entry in arb_entry(),
            offset in 32u64..1 << 31,
            durable in any::<u32>(),
            pos in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let layout = Layout::Segment { segment: 7 };
            let mut buf = Vec::new();
            let size = encode_segment_record(seq, &entry, layout, u64::from(durable), offset, &mut buf);
            prop_assert_eq!(size, buf.len());
            match read_frame_at(&buf, layout, offset, 1 << 20) {
                Frame::Record { seq: s, payload, size: n, durable: d } => {
                    prop_assert_eq!(s, seq);
                    prop_assert_eq!(n, buf.len());
                    prop_assert_eq!(d, u64::from(durable).min(offset));
                    prop_assert_eq!(decode_entry(payload).expect("decodes"), entry);
                }
                other => prop_assert!(false, "expected a record, got {:?}", other),
            }
            let i = pos.index(buf.len());
            buf[i] ^= xor;
            prop_assert!(
                !matches!(read_frame_at(&buf, layout, offset, 1 << 20), Frame::Record { .. }),
                "byte {} changed, frame still accepted", i
            );
        }
    }

    #[test]
    fn a_segment_frame_is_intact_only_at_its_own_offset_and_segment() {
        let entry = Entry::Op(Op::Set {
            key: b"k".to_vec(),
            value: vec![0; 64],
        });
        let layout = Layout::Segment { segment: 3 };
        let mut buf = Vec::new();
        encode_segment_record(5, &entry, layout, 32, 4096, &mut buf);
        assert!(matches!(
            read_frame_at(&buf, layout, 4096, 1 << 20),
            Frame::Record {
                seq: 5,
                durable: 32,
                ..
            }
        ));
        assert!(matches!(
            read_frame_at(&buf, layout, 4097, 1 << 20),
            Frame::Damaged(_)
        ));
        assert!(matches!(
            read_frame_at(&buf, Layout::Segment { segment: 4 }, 4096, 1 << 20),
            Frame::Damaged(_)
        ));
        assert!(matches!(
            read_frame_at(&buf, Layout::Plain, 4096, 1 << 20),
            Frame::Damaged(_)
        ));
    }

    #[test]
    fn zeros_are_unwritten_and_short_garbage_is_damage() {
        assert_eq!(read_frame(&[0u8; 40], 100), Frame::Unwritten);
        assert_eq!(read_frame(&[0u8; 3], 100), Frame::Unwritten);
        assert!(matches!(read_frame(&[1u8, 0, 0], 100), Frame::Damaged(_)));
    }

    #[test]
    fn oversized_length_is_damage() {
        let mut buf = Vec::new();
        encode_record(1, &Entry::Op(Op::Delete { key: vec![7; 50] }), &mut buf);
        assert!(matches!(read_frame(&buf, 10), Frame::Damaged(r) if r.contains("exceeds")));
    }
}
