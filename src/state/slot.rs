//! One key and its value as the state's tree holds them: in one allocation,
//! with the key's first 8 bytes inline in the tree's node.
//!
//! A tree of a million keys whose nodes held only pointers followed one to
//! a random place in memory for every comparison: inserts spent most of
//! their time waiting for those cache misses. With the head inline, keys
//! that differ in their first 8 bytes compare without leaving the node, and
//! one allocation per pair instead of two saves an allocator header.

use std::borrow::Borrow;
use std::cmp::Ordering;

/// A key-value pair; ordered by key, bytewise.
pub(crate) struct Slot {
    /// The key's first 8 bytes, big-endian, zero-padded: ordered as the
    /// key's bytes are wherever two heads differ.
    head: u64,
    /// The key, the value, then the key's length (4 bytes, little-endian).
    data: Box<[u8]>,
}

const LEN_BYTES: usize = 4;

impl Slot {
    /// Copies `key` and `value` into one allocation. Keys are at most
    /// `limits.max_key_bytes`, far below 4 GiB.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Slot {
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let mut data = Vec::with_capacity(key.len() + value.len() + LEN_BYTES);
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        data.extend_from_slice(&key_len.to_le_bytes());
        Slot {
            head: head(key),
            data: data.into_boxed_slice(),
        }
    }

    fn key_len(&self) -> usize {
        let at = self.data.len() - LEN_BYTES;
        let mut len = [0u8; LEN_BYTES];
        len.copy_from_slice(&self.data[at..]);
        u32::from_le_bytes(len) as usize
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.data[..self.key_len()]
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.data[self.key_len()..self.data.len() - LEN_BYTES]
    }
}

fn head(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

impl Ord for Slot {
    fn cmp(&self, other: &Slot) -> Ordering {
        // Zero padding never decides: equal heads fall through to the bytes.
        self.head
            .cmp(&other.head)
            .then_with(|| self.key().cmp(other.key()))
    }
}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Slot) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Slot {}

/// A key to look a [`Slot`] up by, ordered as the slot is.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
#[repr(transparent)]
pub(crate) struct KeyRef([u8]);

impl KeyRef {
    pub(crate) fn new(key: &[u8]) -> &KeyRef {
        // SAFETY: `KeyRef` is `repr(transparent)` over `[u8]`, so the two
        // references have the same layout and metadata.
        unsafe { &*(key as *const [u8] as *const KeyRef) }
    }
}

impl Borrow<KeyRef> for Slot {
    fn borrow(&self) -> &KeyRef {
        KeyRef::new(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_order_as_their_keys_do_whatever_their_heads() {
        let keys: [&[u8]; 9] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0\0",
            b"ab",
            b"key:0000000001",
            b"key:0000000002",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for a in keys {
            for b in keys {
                let (sa, sb) = (Slot::new(a, b"x"), Slot::new(b, b"yz"));
                assert_eq!(sa.cmp(&sb), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(Borrow::<KeyRef>::borrow(&sa).cmp(KeyRef::new(b)), a.cmp(b));
            }
        }
        let slot = Slot::new(b"key", b"value");
        assert_eq!((slot.key(), slot.value()), (&b"key"[..], &b"value"[..]));
        let empty = Slot::new(b"k", b"");
        assert_eq!((empty.key(), empty.value()), (&b"k"[..], &b""[..]));
    }
}
