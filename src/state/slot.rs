//! One key and its value as the state's tree holds them: in one allocation,
//! with the key's first 16 bytes inline in the tree's node.
//!
//! A tree of a million keys whose nodes held only pointers followed one to
//! a random place in memory for every comparison: inserts spent most of
//! their time waiting for those cache misses. With the head inline, keys
//! that differ in their first 16 bytes compare without leaving the node
//! (16, not 8: keys such as `key:000000123456` or `user:1234567:name`
//! share their first 8 bytes, and a restart replaying two million of them
//! took 4.5 us a record, nearly all of it spent on those misses), and
//! one allocation per pair instead of two saves an allocator header.
//!
//! A key already in the tree gets its new value in place (see
//! [`overwrite`]): no search for where to insert, no allocation when the
//! value keeps its length, nothing for another thread to free.

use std::borrow::Borrow;
use std::cell::UnsafeCell;
use std::cmp::Ordering;

use super::Slots;

/// A key-value pair; ordered by key, bytewise.
pub(crate) struct Slot {
    /// The key's first 16 bytes, big-endian, zero-padded: ordered as the
    /// key's bytes are wherever two heads differ.
    head: u128,
    /// The key, the value, then the key's length (4 bytes, little-endian).
    /// Changed only by [`overwrite`], which holds the tree exclusively; the
    /// key part, which orders the slot, never changes.
    data: UnsafeCell<Box<[u8]>>,
}

// SAFETY: `data` is written only through `overwrite`, which takes the tree
// by `&mut`: no other reference to any slot of it exists meanwhile (readers
// reach slots only through the state's read lock, which `&mut Tree` excludes).
unsafe impl Sync for Slot {}

const LEN_BYTES: usize = 4;

impl Slot {
    /// Copies `key` and `value` into one allocation.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Slot {
        let mut data = Vec::with_capacity(key.len() + value.len() + LEN_BYTES);
        data.extend_from_slice(key);
        fill(&mut data, key.len(), value);
        Slot {
            head: head(key),
            data: UnsafeCell::new(data.into_boxed_slice()),
        }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: see `impl Sync for Slot`: while `&self` lives, no
        // `overwrite` runs on this slot's tree.
        unsafe { &*self.data.get() }
    }

    /// A slot to look `key` up by (its value empty): comparing against it
    /// uses the heads, where looking a bare key up would follow every
    /// slot's pointer it passes.
    pub(crate) fn probe(key: &[u8]) -> Slot {
        Slot::new(key, &[])
    }

    pub(crate) fn key(&self) -> &[u8] {
        let data = self.data();
        &data[..key_len(data)]
    }

    pub(crate) fn value(&self) -> &[u8] {
        let data = self.data();
        &data[key_len(data)..data.len() - LEN_BYTES]
    }
}

/// Sets `key`'s value to `value` in place if `key` is in `tree`; `false`
/// (and nothing changed) if it is not.
pub(crate) fn overwrite(tree: &mut Slots, key: &[u8], value: &[u8]) -> bool {
    let Some(slot) = tree.get(Probe::new(key).as_keyed()) else {
        return false;
    };
    // SAFETY: `tree` is borrowed exclusively, so `slot` is the only
    // reference to this slot's data; the key bytes, which order the slot,
    // are kept as they are.
    let data = unsafe { &mut *slot.data.get() };
    let key_len = key_len(data);
    if data.len() == key_len + value.len() + LEN_BYTES {
        data[key_len..key_len + value.len()].copy_from_slice(value);
    } else {
        let mut resized = std::mem::take(data).into_vec();
        fill(&mut resized, key_len, value);
        *data = resized.into_boxed_slice();
    }
    true
}

/// A key and its head as a lookup compares them, ordered as slots are.
/// Lookups borrow the key through it instead of copying it into a
/// [`Slot`]: one allocation and one free less for every write applied.
pub(crate) trait Keyed {
    fn head(&self) -> u128;
    fn key_bytes(&self) -> &[u8];
}

/// A borrowed key to look a slot up by.
pub(crate) struct Probe<'a> {
    head: u128,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    pub(crate) fn new(key: &'a [u8]) -> Probe<'a> {
        Probe {
            head: head(key),
            key,
        }
    }

    /// What the tree's lookups take.
    pub(crate) fn as_keyed(&self) -> &(dyn Keyed + 'a) {
        self
    }
}

impl Keyed for Probe<'_> {
    fn head(&self) -> u128 {
        self.head
    }

    fn key_bytes(&self) -> &[u8] {
        self.key
    }
}

impl Keyed for Slot {
    fn head(&self) -> u128 {
        self.head
    }

    fn key_bytes(&self) -> &[u8] {
        self.key()
    }
}

impl<'a> Borrow<dyn Keyed + 'a> for Slot {
    fn borrow(&self) -> &(dyn Keyed + 'a) {
        self
    }
}

impl Ord for dyn Keyed + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head()
            .cmp(&other.head())
            .then_with(|| self.key_bytes().cmp(other.key_bytes()))
    }
}

impl PartialOrd for dyn Keyed + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn Keyed + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn Keyed + '_ {}

/// Makes `data`, which starts with a key of `key_len` bytes, that key,
/// `value` and the key's length.
fn fill(data: &mut Vec<u8>, key_len: usize, value: &[u8]) {
    data.truncate(key_len);
    data.reserve_exact(value.len() + LEN_BYTES);
    data.extend_from_slice(value);
    // Keys are at most `limits.max_key_bytes`, far below 4 GiB.
    let len = u32::try_from(key_len).unwrap_or(u32::MAX);
    data.extend_from_slice(&len.to_le_bytes());
}

fn key_len(data: &[u8]) -> usize {
    let at = data.len() - LEN_BYTES;
    let mut len = [0u8; LEN_BYTES];
    len.copy_from_slice(&data[at..]);
    u32::from_le_bytes(len) as usize
}

fn head(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_order_as_their_keys_do_whatever_their_heads() {
        let keys: [&[u8]; 13] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"ab",
            b"key:0000000001",
            b"key:0000000002",
            b"key:000000000001",
            b"key:0000000000010",
            b"key:0000000000011",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for a in keys {
            for b in keys {
                let (sa, sb) = (Slot::new(a, b"x"), Slot::new(b, b"yz"));
                assert_eq!(sa.cmp(&sb), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(Slot::probe(a).cmp(&sb), a.cmp(b));
            }
        }
        let slot = Slot::new(b"key", b"value");
        assert_eq!((slot.key(), slot.value()), (&b"key"[..], &b"value"[..]));
        let empty = Slot::new(b"k", b"");
        assert_eq!((empty.key(), empty.value()), (&b"k"[..], &b""[..]));
    }

    #[test]
    fn overwrites_keep_the_key_whatever_the_new_value_length() {
        let mut tree: Slots = [Slot::new(b"a", b"1"), Slot::new(b"key", b"old")]
            .into_iter()
            .collect();
        for value in [&b"new"[..], b"", b"a much longer value than before", b"xyz"] {
            assert!(overwrite(&mut tree, b"key", value));
            let slot = tree.get(&Slot::probe(b"key")).expect("still there");
            assert_eq!((slot.key(), slot.value()), (&b"key"[..], value));
        }
        assert!(!overwrite(&mut tree, b"absent", b"v"));
        assert_eq!(tree.len(), 2);
        let a = tree.get(&Slot::probe(b"a")).expect("untouched");
        assert_eq!(a.value(), b"1");
    }
}
