//! The payload codec: bincode 2 behind one configuration constant.
//!
//! bincode's `standard()` and `legacy()` configurations silently misread each
//! other, so the one in use is fixed here and the file format carries its own
//! version. Decoding borrows byte strings from the input instead of
//! allocating them, so a damaged length prefix can never make it allocate
//! more than the record's own size.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Op};

/// Upper bound bincode enforces on any single decode (1 GiB, the largest
/// record `limits.max_record_bytes` can allow).
const DECODE_LIMIT: usize = 1 << 30;

/// The only bincode configuration the format uses: little-endian varints.
const CODEC: Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>> =
    bincode::config::standard().with_limit::<DECODE_LIMIT>();

/// Borrowed mirror of [`Op`], with the same serde shape.
#[derive(Deserialize)]
enum OpRef<'a> {
    Set {
        #[serde(borrow)]
        key: &'a [u8],
        #[serde(borrow)]
        value: &'a [u8],
    },
    Delete {
        #[serde(borrow)]
        key: &'a [u8],
    },
    SetExpiring {
        #[serde(borrow)]
        key: &'a [u8],
        #[serde(borrow)]
        value: &'a [u8],
        expires_at: u64,
    },
    Clear,
}

/// One operation as [`for_each_op`] lends it: borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// `key` is set to `value`, until `expires_at` if that is `Some`.
    Put {
        /// The key.
        key: &'a [u8],
        /// Its new value.
        value: &'a [u8],
        /// When it expires (milliseconds since the Unix epoch), if ever.
        expires_at: Option<u64>,
    },
    /// `key` is removed.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Every key is removed.
    Clear,
}

impl Change<'_> {
    /// The owned operation this change is.
    pub fn to_op(self) -> Op {
        match self {
            Change::Put {
                key,
                value,
                expires_at: None,
            } => Op::Set {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Change::Put {
                key,
                value,
                expires_at: Some(expires_at),
            } => Op::SetExpiring {
                key: key.to_vec(),
                value: value.to_vec(),
                expires_at,
            },
            Change::Delete { key } => Op::Delete { key: key.to_vec() },
            Change::Clear => Op::Clear,
        }
    }
}

/// Borrowed mirror of [`Entry`], with the same serde shape.
#[derive(Deserialize)]
enum EntryRef<'a> {
    #[serde(borrow)]
    Op(OpRef<'a>),
    #[serde(borrow)]
    Batch(Vec<OpRef<'a>>),
    #[serde(borrow)]
    Raw(&'a [u8]),
}

impl<'a> OpRef<'a> {
    fn change(&self) -> Change<'a> {
        match *self {
            OpRef::Set { key, value } => Change::Put {
                key,
                value,
                expires_at: None,
            },
            OpRef::SetExpiring {
                key,
                value,
                expires_at,
            } => Change::Put {
                key,
                value,
                expires_at: Some(expires_at),
            },
            OpRef::Delete { key } => Change::Delete { key },
            OpRef::Clear => Change::Clear,
        }
    }

    fn to_owned_op(&self) -> Op {
        self.change().to_op()
    }
}

/// Appends the encoding of `entry` to `out`.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    encode_value(entry, out)
}

/// Appends the encoding of any of the format's serde types to `out`.
pub fn encode_value<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and our types have no fallible serializer.
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, CODEC) {
        unreachable!("encoding into memory failed: {e}");
    }
}

/// Decodes one entry that must fill `bytes` exactly.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    Ok(match decode_entry_ref(bytes)? {
        EntryRef::Op(op) => Entry::Op(op.to_owned_op()),
        EntryRef::Batch(ops) => Entry::Batch(ops.iter().map(OpRef::to_owned_op).collect()),
        EntryRef::Raw(bytes) => Entry::Raw(bytes.to_vec()),
    })
}

/// Calls `f` on each operation of the entry `bytes` encodes, borrowing
/// from `bytes`: snapshots and compaction fold millions of operations into
/// a map and need no copy of the ones a later operation replaces.
pub fn for_each_op(bytes: &[u8], mut f: impl FnMut(Change<'_>)) -> Result<(), String> {
    let mut visit = |op: &OpRef<'_>| f(op.change());
    match decode_entry_ref(bytes)? {
        EntryRef::Op(op) => visit(&op),
        EntryRef::Batch(ops) => ops.iter().for_each(visit),
        // A log's payload changes no key.
        EntryRef::Raw(_) => {}
    }
    Ok(())
}

fn decode_entry_ref(bytes: &[u8]) -> Result<EntryRef<'_>, String> {
    let (entry, used): (EntryRef<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(bytes, CODEC)
            .map_err(|e| format!("undecodable payload: {e}"))?;
    if used != bytes.len() {
        return Err(format!(
            "payload has {} trailing bytes after its entry",
            bytes.len() - used
        ));
    }
    Ok(entry)
}

/// Decodes a small owned value (not a record payload) that must fill
/// `bytes` exactly; its sequences are bounded by the input's length.
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, CODEC)
        .map_err(|e| format!("undecodable payload: {e}"))?;
    if used != bytes.len() {
        return Err(format!("payload has {} trailing bytes", bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = [
            Entry::Op(Op::Set {
                key: b"k".to_vec(),
                value: vec![0; 300],
            }),
            Entry::Op(Op::Delete {
                key: b"gone".to_vec(),
            }),
            Entry::Batch(vec![]),
            Entry::Batch(vec![
                Op::Set {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                },
                Op::Delete { key: b"b".to_vec() },
            ]),
            Entry::Op(Op::SetExpiring {
                key: b"e".to_vec(),
                value: b"v".to_vec(),
                expires_at: 1_790_000_000_000,
            }),
            Entry::Op(Op::Clear),
            Entry::Batch(vec![
                Op::Clear,
                Op::SetExpiring {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                    expires_at: u64::MAX,
                },
            ]),
        ];
        for entry in entries {
            let mut buf = Vec::new();
            encode_entry(&entry, &mut buf);
            assert_eq!(decode_entry(&buf).expect("decodes"), entry);
            let mut visited = Vec::new();
            for_each_op(&buf, |change| visited.push(change.to_op())).expect("visits");
            assert_eq!(visited, entry.ops());
        }
    }

    #[test]
    fn huge_claimed_length_is_refused_without_allocating_it() {
        // Variant 0 (Op), variant 0 (Set), then a key length of u64::MAX.
        let bytes = [0u8, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode_entry(&bytes).is_err());
        // A batch claiming 2^32 operations with no bytes behind it.
        let bytes = [1u8, 0xFC, 0, 0, 0, 0, 1, 0, 0, 0];
        assert!(decode_entry(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut buf = Vec::new();
        encode_entry(&Entry::Op(Op::Delete { key: b"k".to_vec() }), &mut buf);
        buf.push(0);
        assert!(decode_entry(&buf).unwrap_err().contains("trailing"));
    }

    /// The bytes FORMAT.md promises: any bincode release that encodes
    /// differently fails here before it could misread a stored log.
    #[test]
    fn encoding_is_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_entry(
            &Entry::Batch(vec![
                Op::Set {
                    key: b"k".to_vec(),
                    value: vec![7; 300],
                },
                Op::Delete {
                    key: b"gone".to_vec(),
                },
            ]),
            &mut buf,
        );
        let mut expected = vec![1u8, 2, 0, 1, b'k', 0xFB, 0x2C, 0x01];
        expected.extend([7u8; 300]);
        expected.extend([1u8, 4, b'g', b'o', b'n', b'e']);
        assert_eq!(buf, expected);
    }

    /// Format version 3's operations: a deadline is a varint after the
    /// value (variant 2), and a clear is its index alone (variant 3).
    #[test]
    fn expiring_and_clear_encodings_are_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_entry(
            &Entry::Batch(vec![
                Op::Clear,
                Op::SetExpiring {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    expires_at: 1_790_000_000_000,
                },
            ]),
            &mut buf,
        );
        let mut expected = vec![1u8, 2, 3, 2, 1, b'k', 1, b'v', 0xFD];
        expected.extend(1_790_000_000_000u64.to_le_bytes());
        assert_eq!(buf, expected);
    }

    /// A raw payload is variant 2: its index, its length, its bytes.
    #[test]
    fn raw_encoding_is_the_documented_bytes() {
        let mut buf = Vec::new();
        encode_entry(&Entry::Raw(vec![9; 300]), &mut buf);
        let mut expected = vec![2u8, 0xFB, 0x2C, 0x01];
        expected.extend([9u8; 300]);
        assert_eq!(buf, expected);
        assert_eq!(decode_entry(&buf), Ok(Entry::Raw(vec![9; 300])));
        let mut buf = Vec::new();
        encode_entry(&Entry::Raw(Vec::new()), &mut buf);
        assert_eq!(buf, [2u8, 0]);
        let mut seen = 0;
        for_each_op(&buf, |_| seen += 1).unwrap();
        assert_eq!(seen, 0);
    }
}
