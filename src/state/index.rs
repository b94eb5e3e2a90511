//! A hash index over the tree's pairs: where a write to a key already held,
//! a deletion and a `get` find their pair without walking the tree.
//!
//! Finding a key among a million in the B-tree costs a cache miss per level
//! (five or six): applying overwrites at a million a second kept the
//! applier thread busy on those misses alone, and with two cores it held
//! the appenders back. Through the index a lookup costs two or three
//! misses: its tags, its pointer, the pair. Those are the applier's time
//! still, so the index is an open-addressing table whose slot for a hash is
//! known before the lookup: the applier asks for the lines of the keys a
//! few records ahead ([`Index::prefetch_slots`], [`Index::prefetch_pair`])
//! and finds them loaded when it gets there, where a table that can only be
//! searched (hashbrown's) makes it wait for each miss in turn.
//!
//! Linear probing over two arrays: a 2-byte tag of each hash (`EMPTY` and
//! `DELETED` reserved), and the pair's pointer. A probe scans tags, which
//! sit 32 to a cache line, and follows a pointer only where a tag matches
//! (a wrong match one time in 65,534). Removals leave a `DELETED` mark
//! unless the next slot is empty; marks count towards the load and go at
//! the next rehash. 10 bytes a slot, at most 7/8 of slots in use.

use super::slot::Pair;

/// Every pair the tree holds, by its key's hash.
#[derive(Default)]
pub(crate) struct Index {
    /// Per slot: `EMPTY`, `DELETED`, or the [`tag`] of the held pair's
    /// hash. A power of two long (or empty: nothing held yet).
    tags: Box<[u16]>,
    /// Per slot: the pair, where the tag is one.
    pairs: Box<[Option<Pair>]>,
    /// Pairs held.
    len: usize,
    /// Slots marked `DELETED`.
    deleted: usize,
    /// Seeded per store, so that keys chosen to collide cannot be computed
    /// ahead of time (foldhash's minimal resistance to flooding).
    hasher: foldhash::fast::RandomState,
}

/// A key's hash, computed once per operation and reused by its steps.
#[derive(Clone, Copy)]
pub(crate) struct Hash(u64);

const EMPTY: u16 = 0;
const DELETED: u16 = 1;

/// The fewest slots a table that holds anything has.
const MIN_SLOTS: usize = 16;

/// Slots a rehash reads ahead of the one it moves.
const REHASH_AHEAD: usize = 8;

/// The tag of a hash: its top 16 bits (the slot comes from the bottom
/// ones), moved off the two reserved values.
fn tag(hash: Hash) -> u16 {
    ((hash.0 >> 48) as u16).max(DELETED + 1)
}

/// Slots needed to hold `keys` within the 7/8 load.
fn slots_for(keys: usize) -> usize {
    if keys == 0 {
        return 0;
    }
    (keys.saturating_mul(8) / 7 + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

impl Index {
    /// An index with room for `keys` without growing.
    pub(crate) fn with_capacity(keys: usize) -> Index {
        Index::with_slots(slots_for(keys), foldhash::fast::RandomState::default())
    }

    fn with_slots(slots: usize, hasher: foldhash::fast::RandomState) -> Index {
        Index {
            tags: vec![EMPTY; slots].into_boxed_slice(),
            pairs: vec![None; slots].into_boxed_slice(),
            len: 0,
            deleted: 0,
            hasher,
        }
    }

    /// An empty index hashing as this one does: hashes computed for this
    /// one stay valid in it (a clear swaps it in under records whose
    /// hashes were computed ahead).
    pub(crate) fn emptied(&self) -> Index {
        Index::with_slots(0, self.hasher.clone())
    }

    pub(crate) fn hash(&self, key: &[u8]) -> Hash {
        Hash(std::hash::BuildHasher::hash_one(&self.hasher, key))
    }

    fn mask(&self) -> usize {
        self.tags.len().wrapping_sub(1)
    }

    /// The slot that holds `key`.
    ///
    /// # Safety
    /// Every pair in the index lives (the tree that owns them is borrowed).
    unsafe fn slot_of(&self, hash: Hash, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let (mask, tag) = (self.mask(), tag(hash));
        let mut i = hash.0 as usize & mask;
        // Ends: fewer than 7/8 of the slots are ever in use or marked.
        loop {
            match self.tags[i] {
                EMPTY => return None,
                t if t == tag => {
                    if let Some(pair) = self.pairs[i] {
                        // SAFETY: the caller answers for every pair held.
                        if unsafe { pair.key() } == key {
                            return Some(i);
                        }
                    }
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }

    /// The pair of `key`.
    ///
    /// # Safety
    /// As for [`slot_of`](Index::slot_of).
    pub(crate) unsafe fn find(&self, hash: Hash, key: &[u8]) -> Option<Pair> {
        // SAFETY: the caller answers for every pair compared.
        unsafe { self.slot_of(hash, key) }.and_then(|i| self.pairs[i])
    }

    /// Adds `pair`, whose key the index does not hold.
    ///
    /// # Safety
    /// As for [`find`](Index::find); `pair` lives too.
    pub(crate) unsafe fn insert(&mut self, hash: Hash, pair: Pair) {
        if (self.len + self.deleted + 1) * 8 > self.tags.len() * 7 {
            // Twice the slots if more than half the room would be pairs;
            // else the same number, rid of the marks.
            let slots = if (self.len + 1) * 16 > self.tags.len() * 7 {
                (self.tags.len() * 2).max(MIN_SLOTS)
            } else {
                self.tags.len()
            };
            // SAFETY: the caller answers for every pair held.
            unsafe { self.rehash(slots) };
        }
        self.place(hash, pair);
    }

    /// Puts `pair` in the first free slot of its probe.
    fn place(&mut self, hash: Hash, pair: Pair) {
        let mask = self.mask();
        let mut i = hash.0 as usize & mask;
        while self.tags[i] > DELETED {
            i = (i + 1) & mask;
        }
        if self.tags[i] == DELETED {
            self.deleted -= 1;
        }
        self.tags[i] = tag(hash);
        self.pairs[i] = Some(pair);
        self.len += 1;
    }

    /// Moves every pair into a table of `slots` slots.
    ///
    /// # Safety
    /// As for [`find`](Index::find): each pair's key is hashed again.
    unsafe fn rehash(&mut self, slots: usize) {
        let old = std::mem::replace(self, Index::with_slots(slots, self.hasher.clone()));
        for (n, pair) in old.pairs.iter().enumerate() {
            if let Some(Some(ahead)) = old.pairs.get(n + REHASH_AHEAD) {
                prefetch(ahead.addr());
            }
            if let Some(pair) = *pair {
                // SAFETY: the caller answers for every pair held.
                let hash = self.hash(unsafe { pair.key() });
                self.place(hash, pair);
            }
        }
    }

    /// Puts `new` where `old`, a pair of the same key, was: its value
    /// moved. `old` may be freed already: it is compared by address only.
    pub(crate) fn replace(&mut self, hash: Hash, old: Pair, new: Pair) {
        if self.len == 0 {
            return;
        }
        let mask = self.mask();
        let mut i = hash.0 as usize & mask;
        while self.tags[i] != EMPTY {
            if self.pairs[i] == Some(old) {
                self.pairs[i] = Some(new);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Takes `key` out; its pair, if it was held.
    ///
    /// # Safety
    /// As for [`find`](Index::find).
    pub(crate) unsafe fn remove(&mut self, hash: Hash, key: &[u8]) -> Option<Pair> {
        // SAFETY: the caller answers for every pair compared.
        let i = unsafe { self.slot_of(hash, key) }?;
        let mask = self.mask();
        let pair = self.pairs[i].take();
        self.len -= 1;
        if self.tags[(i + 1) & mask] == EMPTY {
            // No probe goes on past an empty slot, so none needs this one
            // or the marks just before it.
            self.tags[i] = EMPTY;
            let mut j = i.wrapping_sub(1) & mask;
            while self.tags[j] == DELETED {
                self.tags[j] = EMPTY;
                self.deleted -= 1;
                j = j.wrapping_sub(1) & mask;
            }
        } else {
            self.tags[i] = DELETED;
            self.deleted += 1;
        }
        pair
    }

    /// Starts loading the tags and pointers where the probe for `hash`
    /// begins; they stay valid hints whatever changes in between.
    pub(crate) fn prefetch_slots(&self, hash: Hash) {
        if self.tags.is_empty() {
            return;
        }
        let i = hash.0 as usize & self.mask();
        prefetch(self.tags[i..].as_ptr().cast());
        prefetch(self.pairs[i..].as_ptr().cast());
    }

    /// Starts loading the pair the probe for `hash` would compare first:
    /// nearly always its own. Reads the tags and pointers (best loaded by
    /// [`prefetch_slots`](Index::prefetch_slots) a while before); touches
    /// no pair, so one freed since is harmless.
    pub(crate) fn prefetch_pair(&self, hash: Hash) {
        if self.len == 0 {
            return;
        }
        let (mask, tag) = (self.mask(), tag(hash));
        let mut i = hash.0 as usize & mask;
        while self.tags[i] != EMPTY {
            if self.tags[i] == tag {
                if let Some(pair) = self.pairs[i] {
                    let at = pair.addr();
                    prefetch(at);
                    // A value past the first line is written in place.
                    prefetch(at.wrapping_add(64));
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Asks the CPU to start loading the cache line at `at` (a hint: never
/// faults, whatever the address).
#[inline]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing a program can observe and cannot
    // fault; SSE is part of every x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Slot;

    /// Inserts and removals that leave marks, fill the table past its
    /// rehash points and clear marks behind an empty slot, against a model.
    #[test]
    fn every_pair_is_found_after_inserts_removals_and_rehashes() {
        let mut index = Index::with_capacity(0);
        let mut held: std::collections::BTreeMap<Vec<u8>, Slot> = Default::default();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..60_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = (rng % 3000).to_be_bytes().to_vec();
            let hash = index.hash(&key);
            if step % 3 == 0 {
                // SAFETY: every pair indexed is owned by `held`'s slots,
                // and leaves the index before its slot is dropped.
                let removed = unsafe { index.remove(hash, &key) };
                assert_eq!(removed.is_some(), held.remove(&key).is_some());
            } else if let std::collections::btree_map::Entry::Vacant(vacant) = held.entry(key) {
                let slot = Slot::new(vacant.key(), b"v");
                // SAFETY: as above.
                unsafe { index.insert(hash, slot.pair()) };
                vacant.insert(slot);
            }
            assert_eq!(index.len(), held.len());
            assert!((index.len + index.deleted) * 8 <= index.tags.len() * 7);
        }
        for (key, slot) in &held {
            // SAFETY: as above.
            let found = unsafe { index.find(index.hash(key), key) };
            assert!(found == Some(slot.pair()), "{key:?} is held");
        }
        for n in 3000..6000u64 {
            let key = n.to_be_bytes();
            // SAFETY: as above.
            assert!(unsafe { index.find(index.hash(&key), &key) }.is_none());
        }
    }
}
