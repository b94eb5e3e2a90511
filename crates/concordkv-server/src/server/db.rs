//! The server's state: an in-memory map rebuilt from the log at start, kept
//! in step with the log by applying each write under the same lock that
//! submits it, so the map changes in exactly the log's order.
//!
//! A write first waits for room in the log's queue (`limits.max_pending_bytes`)
//! with no lock held ([`Store::admit`]), then queues and applies under the
//! lock without waiting ([`Store::submit_admitted`]): a full queue slows the
//! writers down without ever blocking readers or holding the map.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use concordkv::Recovery;
use concordkv::Result;
use concordkv::{Admission, Pending, Store};
use concordkv::{Entry, Op};

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
    /// resolves per the sync mode. Waits first for room in the log's queue
    /// (with no lock held). A refused write changes nothing.
    pub async fn write(&self, ops: Vec<Op>) -> Result<Pending> {
        let entry = entry_of(ops);
        let admission = self.store.admit(&entry).await?;
        let mut map = self.lock();
        let pending = self.store.submit_admitted(entry.clone(), admission)?;
        for op in entry.ops() {
            apply(&mut map, op);
        }
        Ok(pending)
    }

    /// Deletes those of `keys` that exist, as one record; returns how many
    /// were removed, and the acknowledgement if anything was logged. Which
    /// keys exist is only known under the lock, and room in the log's queue
    /// is waited for outside it: so the room is taken for the keys found at
    /// a first look, and taken again if more of them exist by the time the
    /// lock is back (another client set one meanwhile).
    pub async fn delete(&self, keys: &[Bytes]) -> Result<(usize, Option<Pending>)> {
        let mut admission: Option<Admission> = None;
        loop {
            match self.delete_if_admitted(keys, &mut admission)? {
                Deleted::Done(removed, pending) => return Ok((removed, pending)),
                Deleted::NeedsRoom(entry) => {
                    // The room held (too little) goes back before more is
                    // waited for: held meanwhile, it could make the wait endless.
                    drop(admission.take());
                    admission = Some(self.store.admit(&entry).await?);
                }
            }
        }
    }

    /// Under the lock: deletes those of `keys` that exist if `admission`
    /// holds room for them (spending it), or names the entry to take room for.
    fn delete_if_admitted(
        &self,
        keys: &[Bytes],
        admission: &mut Option<Admission>,
    ) -> Result<Deleted> {
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
            return Ok(Deleted::Done(0, None));
        }
        let entry = entry_of(ops);
        let needed = self.store.admission_bytes(&entry);
        let Some(admission) = admission.take_if(|a| a.bytes() >= needed) else {
            return Ok(Deleted::NeedsRoom(entry));
        };
        let removed = entry.ops().len();
        let pending = self.store.submit_admitted(entry.clone(), admission)?;
        for op in entry.ops() {
            apply(&mut map, op);
        }
        Ok(Deleted::Done(removed, Some(pending)))
    }
}

/// What one attempt of a `DEL` under the lock came to.
enum Deleted {
    /// The keys removed, and the acknowledgement if any was.
    Done(usize, Option<Pending>),
    /// More keys exist than the room held covers: take room for this entry.
    NeedsRoom(Entry),
}

/// One record of `ops`: a batch if there is more than one.
fn entry_of(ops: Vec<Op>) -> Entry {
    match <[Op; 1]>::try_from(ops) {
        Ok([op]) => Entry::Op(op),
        Err(ops) => Entry::Batch(ops),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::PathBuf;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    use concordkv::testing::sim_fs::SimFs;
    use concordkv::{Config, SyncMode};

    use super::*;

    /// Far beyond what the test takes: only there to turn a hang into a failure.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    fn set(key: &str) -> Op {
        Op::Set {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    /// Yields to the other tasks of this thread a few times.
    async fn let_others_run() {
        for _ in 0..20 {
            actix_rt::task::yield_now().await;
        }
    }

    #[actix_rt::test]
    async fn writes_wait_for_room_without_holding_the_map_and_del_takes_more_room_if_needed() {
        let fs = SimFs::new(1);
        let mut config = Config::with_data_dir(PathBuf::from("/sim/db"));
        config.wal.sync_mode = SyncMode::Always;
        config.limits.max_pending_bytes = 4096;
        config.wal.max_segment_bytes = 1 << 20;
        let (store, recovery) = concordkv::testing::open_with_fs(config, Arc::new(fs))
            .await
            .expect("open");
        let db = Rc::new(Db::new(store.clone(), &recovery));
        db.write(vec![set("a")])
            .await
            .expect("room")
            .await
            .expect("written");

        // The whole bound taken and held: every write now waits.
        let blocker = store
            .admit(&Entry::Op(Op::Set {
                key: b"blocker".to_vec(),
                value: vec![0; 8192],
            }))
            .await
            .expect("room");
        let set_done = Rc::new(Cell::new(false));
        let set_b = {
            let (db, done) = (Rc::clone(&db), Rc::clone(&set_done));
            actix_rt::spawn(async move {
                let pending = db.write(vec![set("b")]).await.expect("room");
                done.set(true);
                pending.await.expect("written");
            })
        };
        let_others_run().await;
        // Queued behind the SET: at its first look only "a" exists.
        let del = {
            let db = Rc::clone(&db);
            actix_rt::spawn(async move {
                let keys = [Bytes::from("a"), Bytes::from("b")];
                let (removed, pending) = db.delete(&keys).await.expect("room");
                pending.expect("logged").await.expect("written");
                removed
            })
        };
        let_others_run().await;
        assert!(!set_done.get(), "the SET waits for room");
        // Waiting writers hold no lock: reads go on, and see nothing of them.
        assert_eq!(db.get(b"a"), Some(Bytes::from("v")));
        assert_eq!(db.get(b"b"), None);

        drop(blocker);
        let removed = actix_rt::time::timeout(HANG_GUARD, async {
            set_b.await.expect("set");
            del.await.expect("del")
        })
        .await
        .expect("both answered (hang guard)");
        // "b" appeared while the DEL waited: it took room for both and removed both.
        assert_eq!(removed, 2);
        assert!(db.is_empty());
        assert_eq!(store.stats().pending_bytes, 0);
        store.shutdown().await.expect("shutdown");
    }
}
