//! The server's state: an in-memory map rebuilt from the log at start, kept
//! in step with the log by applying each write under the same lock that
//! submits it, so the map changes in exactly the log's order.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use concordkv::Recovery;
use concordkv::Result;
use concordkv::{Entry, Op};
use concordkv::{Pending, Store};

/// The key-value map and the log behind it.
pub struct Db {
    map: Mutex<HashMap<Vec<u8>, Bytes>>,
    store: Store,
}

impl Db {
    /// The state recovery describes: the snapshots' base, then the records after it.
    pub fn new(store: Store, recovery: &Recovery) -> Db {
        let mut map: HashMap<Vec<u8>, Bytes> = recovery
            .base
            .iter()
            .map(|(key, value)| (key.clone(), Bytes::copy_from_slice(value)))
            .collect();
        for record in &recovery.records {
            for op in record.entry.ops() {
                apply(&mut map, op);
            }
        }
        Db {
            map: Mutex::new(map),
            store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Bytes>> {
        // Every critical section is a single map operation.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log behind the map.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.lock().get(key).cloned()
    }

    /// How many of `keys` exist (a key named twice counts twice, as in Redis).
    pub fn count_existing(&self, keys: &[Bytes]) -> usize {
        let map = self.lock();
        keys.iter().filter(|k| map.contains_key(k.as_ref())).count()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Logs `ops` as one record and applies them; the returned acknowledgement
    /// resolves per the sync mode. A refused write changes nothing.
    pub fn write(&self, ops: Vec<Op>) -> Result<Pending> {
        let mut map = self.lock();
        self.log_and_apply(&mut map, ops)
    }

    /// Deletes those of `keys` that exist, as one record; returns how many
    /// were removed, and the acknowledgement if anything was logged.
    pub fn delete(&self, keys: &[Bytes]) -> Result<(usize, Option<Pending>)> {
        let mut map = self.lock();
        // A key named twice is deleted once; a set keeps a long DEL linear.
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut ops: Vec<Op> = Vec::new();
        for key in keys {
            if map.contains_key(key.as_ref()) && seen.insert(key.as_ref()) {
                ops.push(Op::Delete { key: key.to_vec() });
            }
        }
        if ops.is_empty() {
            return Ok((0, None));
        }
        let removed = ops.len();
        Ok((removed, Some(self.log_and_apply(&mut map, ops)?)))
    }

    /// Submits `ops` as one record (a batch if more than one) while the map
    /// is locked, and applies them only if the log accepted them.
    fn log_and_apply(&self, map: &mut HashMap<Vec<u8>, Bytes>, ops: Vec<Op>) -> Result<Pending> {
        let entry = match <[Op; 1]>::try_from(ops) {
            Ok([op]) => Entry::Op(op),
            Err(ops) => Entry::Batch(ops),
        };
        let pending = self.store.submit(entry.clone())?;
        for op in entry.ops() {
            apply(map, op);
        }
        Ok(pending)
    }
}

fn apply(map: &mut HashMap<Vec<u8>, Bytes>, op: &Op) {
    match op {
        Op::Set { key, value } => {
            map.insert(key.clone(), Bytes::copy_from_slice(value));
        }
        Op::Delete { key } => {
            map.remove(key);
        }
    }
}
