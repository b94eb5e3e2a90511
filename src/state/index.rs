//! A hash index over the tree's pairs: where a write to a key already held,
//! a deletion and a `get` find their pair without walking the tree.
//!
//! Finding a key among a million in the B-tree costs a cache miss per level
//! (five or six): applying overwrites at a million a second kept the
//! applier thread busy on those misses alone, and with two cores it held
//! the appenders back. Through the index a lookup costs about two misses.
//! The tree stays the owner of every pair and the order scans walk; the
//! index holds a bare pointer per key (8 bytes, plus 1 byte of hashbrown's
//! control data, per bucket).

use hashbrown::HashTable;

use super::slot::Pair;

/// Every pair the tree holds, by its key's hash.
#[derive(Default)]
pub(crate) struct Index {
    table: HashTable<Pair>,
    /// Seeded per index, so that keys chosen to collide cannot be computed
    /// ahead of time (foldhash's minimal resistance to flooding).
    hasher: foldhash::fast::RandomState,
}

/// A key's hash, computed once per operation and reused by its steps.
#[derive(Clone, Copy)]
pub(crate) struct Hash(u64);

impl Index {
    /// An index with room for `keys` without growing.
    pub(crate) fn with_capacity(keys: usize) -> Index {
        Index {
            table: HashTable::with_capacity(keys),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> Hash {
        Hash(std::hash::BuildHasher::hash_one(&self.hasher, key))
    }

    /// The pair of `key`.
    ///
    /// # Safety
    /// Every pair in the index lives (the tree that owns them is borrowed).
    pub(crate) unsafe fn find(&self, hash: Hash, key: &[u8]) -> Option<Pair> {
        // SAFETY: the caller answers for every pair compared.
        self.table
            .find(hash.0, |pair| unsafe { pair.key() } == key)
            .copied()
    }

    /// Adds `pair`, whose key the index does not hold.
    ///
    /// # Safety
    /// As for [`find`](Index::find); `pair` lives too.
    pub(crate) unsafe fn insert(&mut self, hash: Hash, pair: Pair) {
        let hasher = &self.hasher;
        // SAFETY: growing rehashes pairs the caller answers for.
        self.table.insert_unique(hash.0, pair, |pair| {
            std::hash::BuildHasher::hash_one(hasher, unsafe { pair.key() })
        });
    }

    /// Puts `new` where `old`, a pair of the same key, was: its value
    /// moved. `old` may be freed already: it is compared by address only.
    pub(crate) fn replace(&mut self, hash: Hash, old: Pair, new: Pair) {
        if let Some(held) = self.table.find_mut(hash.0, |held| *held == old) {
            *held = new;
        }
    }

    /// Takes `key` out; its pair, if it was held.
    ///
    /// # Safety
    /// As for [`find`](Index::find).
    pub(crate) unsafe fn remove(&mut self, hash: Hash, key: &[u8]) -> Option<Pair> {
        // SAFETY: the caller answers for every pair compared.
        self.table
            .find_entry(hash.0, |pair| unsafe { pair.key() } == key)
            .ok()
            .map(|entry| entry.remove().0)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}
