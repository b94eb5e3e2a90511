//! The server's view of the store: reads come from the store's state, which
//! shows a write once the log acknowledged it under the sync mode, and
//! writes go to the log. A connection sees its own earlier writes because
//! it waits for their acknowledgements before it runs a command that reads
//! (see [`crate::server::cmd::reads_state`]).

use std::collections::HashSet;

use bytes::Bytes;

use concordkv::Result;
use concordkv::{Entry, Op};
use concordkv::{Pending, State, Store};

/// The store and a handle on its state.
pub struct Db {
    store: Store,
    state: State,
}

impl Db {
    /// Serves `store`: its state is what recovery rebuilt, kept current by
    /// the store itself.
    pub fn new(store: Store) -> Db {
        let state = store.state();
        Db { store, state }
    }

    /// The log behind the state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.state.get_with(key, Bytes::copy_from_slice)
    }

    /// The length of `key`'s value.
    pub fn value_len(&self, key: &[u8]) -> Option<usize> {
        self.state.get_with(key, <[u8]>::len)
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.state.contains(key)
    }

    /// How many of `keys` exist (a key named twice counts twice, as in Redis).
    pub fn count_existing(&self, keys: &[Bytes]) -> usize {
        keys.iter().filter(|k| self.state.contains(k)).count()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Logs `ops` as one record (a batch if more than one), once the log's
    /// queue has room for it (`limits.max_pending_bytes`); the returned
    /// acknowledgement resolves per the sync mode. A refused write changes
    /// nothing.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Pending> {
        let entry = match <[Op; 1]>::try_from(ops) {
            Ok([op]) => Entry::Op(op),
            Err(ops) => Entry::Batch(ops),
        };
        self.store.submit(entry).await
    }

    /// Deletes those of `keys` that exist, as one record; returns how many
    /// were removed, and the acknowledgement if anything was logged. Like
    /// any count, it is of the keys acknowledged writes left when the
    /// command ran; a write of another client still in flight is not one.
    pub async fn delete(&self, keys: &[Bytes]) -> Result<(usize, Option<Pending>)> {
        // A key named twice is deleted once; a set keeps a long DEL linear.
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut ops: Vec<Op> = Vec::new();
        for key in keys {
            if self.state.contains(key) && seen.insert(key.as_ref()) {
                ops.push(Op::Delete { key: key.to_vec() });
            }
        }
        if ops.is_empty() {
            return Ok((0, None));
        }
        let removed = ops.len();
        Ok((removed, Some(self.write(ops).await?)))
    }
}
