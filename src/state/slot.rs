//! One key and its value as the state holds them: in one allocation, with
//! the key's first 16 bytes inline in the tree's node.
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
//! The allocation starts with the key's and the value's lengths, so that a
//! bare pointer to it (a [`Pair`], what the state's hash index holds) is
//! enough to read the pair: the slot is 24 bytes, not the 32 a boxed slice
//! and a 16-byte-aligned head would take.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::cmp::Ordering;
use std::ptr::NonNull;

/// A key-value pair in the tree; ordered by key, bytewise. It owns its
/// allocation; the index only points into it.
pub(crate) struct Slot {
    /// The key's first 16 bytes, big-endian, zero-padded: ordered as the
    /// key's bytes are wherever two heads differ.
    head: Head,
    /// Changed only by [`replace_value`](Slot::replace_value), whose caller
    /// holds the tree exclusively.
    pair: Cell<Pair>,
}

// SAFETY: `pair` changes only through `replace_value`, whose caller holds
// the tree by `&mut`: no other reference to any of its slots exists then
// (readers reach slots only under the state's read lock).
unsafe impl Sync for Slot {}

/// A key's first 16 bytes as two big-endian words (not a `u128`, whose
/// 16-byte alignment would pad every slot to 32 bytes).
type Head = [u64; 2];

/// A pointer to one pair's allocation: the key's length and the value's
/// (4 bytes each, little-endian), the key, then the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair(NonNull<u8>);

// SAFETY: a `Pair` is an address; every read or write through it is an
// `unsafe` call whose caller answers for the slot that owns it (shared
// reads under the state's read lock, writes only through `&mut Tree`).
unsafe impl Send for Pair {}
unsafe impl Sync for Pair {}

const LENS: usize = 8;

impl Pair {
    /// A new allocation holding `key` and `value`.
    fn new(key: &[u8], value: &[u8]) -> Pair {
        let layout = layout(key.len(), value.len());
        // SAFETY: the layout is at least `LENS` bytes, never zero-sized.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: `ptr` is a fresh allocation of `LENS + key + value`
        // bytes, which the three copies fill exactly.
        unsafe {
            let base = ptr.as_ptr();
            base.copy_from_nonoverlapping(len_bytes(key.len()).as_ptr(), 4);
            base.add(4)
                .copy_from_nonoverlapping(len_bytes(value.len()).as_ptr(), 4);
            base.add(LENS)
                .copy_from_nonoverlapping(key.as_ptr(), key.len());
            base.add(LENS + key.len())
                .copy_from_nonoverlapping(value.as_ptr(), value.len());
        }
        Pair(ptr)
    }

    /// # Safety
    /// The slot that owns this pair lives, and nothing writes to it.
    unsafe fn lens(self) -> (usize, usize) {
        // SAFETY: every `Pair` starts with its two lengths (see `new`).
        let bytes = unsafe { &*self.0.as_ptr().cast::<[u8; LENS]>() };
        let [k0, k1, k2, k3, v0, v1, v2, v3] = *bytes;
        (
            u32::from_le_bytes([k0, k1, k2, k3]) as usize,
            u32::from_le_bytes([v0, v1, v2, v3]) as usize,
        )
    }

    /// The key.
    ///
    /// # Safety
    /// The caller picks the lifetime: the slot that owns this pair must
    /// outlive it, unchanged.
    pub(crate) unsafe fn key<'a>(self) -> &'a [u8] {
        // SAFETY: `key` bytes follow the lengths (see `new`); the caller
        // answers for the rest.
        unsafe {
            let (key, _) = self.lens();
            std::slice::from_raw_parts(self.0.as_ptr().add(LENS), key)
        }
    }

    /// The value.
    ///
    /// # Safety
    /// As for [`key`](Pair::key).
    pub(crate) unsafe fn value<'a>(self) -> &'a [u8] {
        // SAFETY: `value` bytes follow the key (see `new`); the caller
        // answers for the rest.
        unsafe {
            let (key, value) = self.lens();
            std::slice::from_raw_parts(self.0.as_ptr().add(LENS + key), value)
        }
    }

    /// Overwrites the value with one of the same length, in place.
    ///
    /// # Safety
    /// No other reference to this pair's bytes may exist: the caller holds
    /// the tree that owns it exclusively.
    pub(crate) unsafe fn set_value(self, value: &[u8]) {
        // SAFETY: the value's `len` bytes lie within the allocation, and the
        // caller guarantees nothing else reads or writes them meanwhile.
        unsafe {
            let (key, len) = self.lens();
            assert_eq!(len, value.len(), "an in-place value keeps its length");
            self.0
                .as_ptr()
                .add(LENS + key)
                .copy_from_nonoverlapping(value.as_ptr(), len);
        }
    }

    /// Where the allocation starts: to prefetch, never to read through.
    pub(crate) fn addr(self) -> *const u8 {
        self.0.as_ptr()
    }

    /// The length of the value stored.
    ///
    /// # Safety
    /// As for [`key`](Pair::key).
    pub(crate) unsafe fn value_len(self) -> usize {
        // SAFETY: the caller answers for the pair.
        unsafe { self.lens().1 }
    }

    /// Frees the allocation.
    ///
    /// # Safety
    /// Called once, by the slot that owns the pair, when nothing points to
    /// it any more.
    unsafe fn free(self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe {
            let (key, value) = self.lens();
            alloc::dealloc(self.0.as_ptr(), layout(key, value));
        }
    }
}

fn layout(key: usize, value: usize) -> Layout {
    // Keys and values are bounded by `limits` far below `isize::MAX`.
    Layout::array::<u8>(LENS + key + value)
        .unwrap_or_else(|e| unreachable!("a pair of {key} + {value} bytes: {e}"))
}

fn len_bytes(len: usize) -> [u8; 4] {
    // `limits.max_key_bytes` and `max_value_bytes` are far below 4 GiB, and
    // no frame is longer.
    u32::try_from(len)
        .unwrap_or_else(|_| unreachable!("a key or value of {len} bytes"))
        .to_le_bytes()
}

impl Slot {
    /// Copies `key` and `value` into one allocation.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Slot {
        Slot {
            head: head(key),
            pair: Cell::new(Pair::new(key, value)),
        }
    }

    /// A slot to bound a range by (its value empty): comparing against it
    /// uses the heads, where comparing with a bare key would follow every
    /// slot's pointer it passes.
    pub(crate) fn probe(key: &[u8]) -> Slot {
        Slot::new(key, &[])
    }

    /// Where the pair lives, for the index.
    pub(crate) fn pair(&self) -> Pair {
        self.pair.get()
    }

    pub(crate) fn key(&self) -> &[u8] {
        // SAFETY: the slot lives as long as `&self`, and changes only
        // through `replace_value`, which no `&self` may outlive.
        unsafe { self.pair().key() }
    }

    pub(crate) fn value(&self) -> &[u8] {
        // SAFETY: as for `key`.
        unsafe { self.pair().value() }
    }

    /// Gives the slot a new value of another length, in a new allocation;
    /// returns where it now lives.
    ///
    /// # Safety
    /// No other reference to this slot's bytes may exist: the caller holds
    /// the tree exclusively (the tree's `&` is all a lookup in it gives).
    pub(crate) unsafe fn replace_value(&self, value: &[u8]) -> Pair {
        let new = Pair::new(self.key(), value);
        let old = self.pair.replace(new);
        // SAFETY: the caller holds the tree exclusively, so nothing reads
        // the old pair any more; the key, which orders the slot, is the
        // same. The index points to the new pair once the caller updates it
        // with the one returned.
        unsafe { old.free() };
        new
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: the slot owns its pair; the index drops its pointer to it
        // before or with the slot.
        unsafe { self.pair.get().free() }
    }
}

/// A key and its head as a lookup compares them, ordered as slots are.
/// Lookups borrow the key through it instead of copying it into a
/// [`Slot`]: one allocation and one free less for every lookup.
pub(crate) trait Keyed {
    fn head(&self) -> Head;
    fn key_bytes(&self) -> &[u8];
}

/// A borrowed key to look a slot up by.
pub(crate) struct Probe<'a> {
    head: Head,
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
    fn head(&self) -> Head {
        self.head
    }

    fn key_bytes(&self) -> &[u8] {
        self.key
    }
}

impl Keyed for Slot {
    fn head(&self) -> Head {
        self.head
    }

    fn key_bytes(&self) -> &[u8] {
        self.key()
    }
}

impl<'a> std::borrow::Borrow<dyn Keyed + 'a> for Slot {
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

fn head(key: &[u8]) -> Head {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = bytes.split_at(8);
    let word = |half: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(half);
        u64::from_be_bytes(word)
    };
    [word(hi), word(lo)]
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
                let probe = Probe::new(a);
                assert_eq!(probe.as_keyed().cmp(sb.borrow_keyed()), a.cmp(b));
            }
        }
        let slot = Slot::new(b"key", b"value");
        assert_eq!((slot.key(), slot.value()), (&b"key"[..], &b"value"[..]));
        let empty = Slot::new(b"k", b"");
        assert_eq!((empty.key(), empty.value()), (&b"k"[..], &b""[..]));
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    impl Slot {
        fn borrow_keyed(&self) -> &dyn Keyed {
            self
        }
    }

    #[test]
    fn a_value_changes_in_place_or_moves_and_the_key_stays() {
        let slot = Slot::new(b"key", b"old");
        // SAFETY: the test holds the only reference to the slot.
        unsafe { slot.pair().set_value(b"new") };
        assert_eq!((slot.key(), slot.value()), (&b"key"[..], &b"new"[..]));
        for value in [&b""[..], b"a much longer value than before", b"xyz"] {
            // SAFETY: as above.
            let moved = unsafe { slot.replace_value(value) };
            assert!(moved == slot.pair());
            assert_eq!((slot.key(), slot.value()), (&b"key"[..], value));
            // SAFETY: as above.
            assert_eq!(unsafe { moved.value_len() }, value.len());
        }
    }
}
