//! The record frame: `len u32 | crc u32 | seq u64 | payload[len]`, little
//! endian. The CRC-32 covers the length, the sequence number and the payload,
//! so a damaged length or a record from another place in the sequence is
//! caught as surely as a damaged payload.

use crate::entry::{Entry, Seq};
use crate::format::{all_zero, codec};

/// Bytes before the payload: length, CRC and sequence number.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Appends the frame of record `seq` holding `entry` to `out`; returns its size.
pub fn encode_record(seq: Seq, entry: &Entry, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    codec::encode_entry(entry, out);
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    let crc = frame_crc(len, seq, &out[start + FRAME_HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn frame_crc(len: u32, seq: Seq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// What the bytes at one offset of a segment hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An intact frame: its sequence number, payload and whole size.
    Record {
        seq: Seq,
        payload: &'a [u8],
        size: usize,
    },
    /// Only zeros from here on in the frame header: the preallocated,
    /// never-written rest of a segment.
    Unwritten,
    /// Not an intact frame; the reason says why.
    Damaged(String),
}

/// Reads the frame at the start of `buf`. A payload over `max_payload` bytes
/// is damage, whatever its checksum, and nothing is allocated for it.
pub fn read_frame(buf: &[u8], max_payload: usize) -> Frame<'_> {
    if buf.len() < FRAME_HEADER_BYTES {
        return if all_zero(buf) {
            Frame::Unwritten
        } else {
            Frame::Damaged(format!(
                "incomplete frame header ({} of {FRAME_HEADER_BYTES} bytes)",
                buf.len()
            ))
        };
    }
    let header = &buf[..FRAME_HEADER_BYTES];
    if all_zero(header) {
        return Frame::Unwritten;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
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
    let available = buf.len() - FRAME_HEADER_BYTES;
    if payload_len > available {
        return Frame::Damaged(format!(
            "frame length {payload_len} runs past the end of the file ({available} bytes left)"
        ));
    }
    let payload = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len];
    let actual = frame_crc(len, seq, payload);
    if actual != crc {
        return Frame::Damaged(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Frame::Record {
        seq,
        payload,
        size: FRAME_HEADER_BYTES + payload_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Op;
    use crate::format::codec::decode_entry;
    use proptest::prelude::*;

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
                Frame::Record { seq: s, payload, size: n } => {
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
