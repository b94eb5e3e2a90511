//! The server's view of the store: reads come from the store's state, which
//! shows a write once the log acknowledged it under the sync mode, and
//! writes go to the log. A connection sees its own earlier writes because
//! it waits for their acknowledgements before it runs a command that reads
//! (see [`crate::server::cmd::reads_state`]); read-modify-write commands
//! also see every client's writes still in flight (see [`InFlight`]).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::server::cursors::Cursors;
use crate::server::expiry::now_ms;
use crate::server::in_flight::{InFlight, Stored, Tracked};
use crate::server::watch::Watches;
use concordkv::{Admission, Result};
use concordkv::{Entry, Op};
use concordkv::{State, Store};

/// The newest values a command plans from.
pub trait View {
    /// The value and deadline of `key`, or `None` if it is not set or has
    /// expired.
    fn entry(&self, key: &[u8]) -> Option<Stored>;

    /// The value of `key`, or `None` if it is not set or has expired.
    fn latest(&self, key: &[u8]) -> Option<Bytes> {
        self.entry(key).map(|stored| stored.value)
    }

    /// Whether writes are refused: a follower's copy changes only as the
    /// store it follows does.
    fn read_only(&self) -> bool {
        false
    }
}

/// The store, a handle on its state, the writes in flight and the watched
/// keys.
pub struct Db {
    store: Store,
    state: State,
    in_flight: Rc<InFlight>,
    watches: Rc<Watches>,
    cursors: RefCell<Cursors>,
    /// Expired keys whose deletion the log acknowledged (`INFO`'s
    /// `expired_keys`).
    expired: Cell<u64>,
    /// With `serve --follow`: the archive followed, and how it goes.
    following: Option<Following>,
}

/// What a follower serves from.
pub struct Following {
    /// The archive's `s3://` URL.
    pub url: String,
    pub status: Arc<concordkv::archive::FollowStatus>,
}

impl View for Db {
    fn read_only(&self) -> bool {
        self.following.is_some()
    }

    fn entry(&self, key: &[u8]) -> Option<Stored> {
        match self.in_flight(key) {
            Some(latest) => latest.filter(|stored| stored.is_live(now_ms())),
            None => self.acknowledged(key),
        }
    }
}

impl Db {
    /// Serves `store`: its state is what recovery rebuilt, kept current by
    /// the store itself.
    pub fn new(store: Store) -> Db {
        let state = store.state();
        Db {
            store,
            state,
            in_flight: Rc::default(),
            watches: Rc::default(),
            cursors: RefCell::default(),
            expired: Cell::new(0),
            following: None,
        }
    }

    /// Serves `store` read-only, as a follower of an archive: every write
    /// is answered `READONLY`, and only the follower changes the store.
    pub fn follower(store: Store, following: Following) -> Db {
        Db {
            following: Some(following),
            ..Db::new(store)
        }
    }

    /// The archive this server follows, if it does.
    pub fn following(&self) -> Option<&Following> {
        self.following.as_ref()
    }

    /// The versions `WATCH` checks.
    pub fn watches(&self) -> &Rc<Watches> {
        &self.watches
    }

    /// The log behind the state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The acknowledged value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.state.get_with(key, Bytes::copy_from_slice)
    }

    /// The acknowledged value of `key` and its deadline.
    pub fn acknowledged(&self, key: &[u8]) -> Option<Stored> {
        self.state.entry_with(key, |value, expires_at| Stored {
            value: Bytes::copy_from_slice(value),
            expires_at,
        })
    }

    /// The newest value of `key` among writes still in flight: `None` if
    /// none writes it, `Some(None)` if the newest deletes it (or a clear
    /// in flight does).
    pub fn in_flight(&self, key: &[u8]) -> Option<Option<Stored>> {
        self.in_flight.latest(key)
    }

    /// Counts `n` more expired keys deleted.
    pub fn count_expired(&self, n: u64) {
        self.expired.set(self.expired.get() + n);
    }

    /// Expired keys deleted since the server started.
    pub fn expired(&self) -> u64 {
        self.expired.get()
    }

    /// Up to `limit` acknowledged keys past their deadline that the state
    /// still holds.
    pub fn expired_keys(&self, limit: usize) -> Vec<Vec<u8>> {
        self.state.expired_keys(limit)
    }

    /// Acknowledged keys in order, from just after `after` (or the first),
    /// among those starting with `prefix`.
    pub fn keys_after(
        &self,
        after: Option<&[u8]>,
        prefix: &[u8],
    ) -> impl Iterator<Item = Bytes> + use<> {
        let start = match after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let end = match successor(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.state
            .range((start, end))
            .map(|(key, _)| Bytes::from(key))
    }

    /// The `SCAN` cursors.
    pub fn cursors(&self) -> &RefCell<Cursors> {
        &self.cursors
    }

    /// The length of `key`'s acknowledged value.
    pub fn value_len(&self, key: &[u8]) -> Option<usize> {
        self.state.get_with(key, <[u8]>::len)
    }

    /// Whether `key` exists (acknowledged).
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
    pub async fn write(&self, ops: Vec<Op>) -> Result<Tracked> {
        let entry = entry_of(ops);
        let admission = self.store.admit(&entry).await?;
        self.queue(entry, admission, true)
    }

    /// Queues an admitted entry and records it in flight, in one step;
    /// with `touch`, bumps the watched keys it writes (a purge of expired
    /// keys does not: they were gone for every reader already).
    fn queue(&self, entry: Entry, admission: Admission, touch: bool) -> Result<Tracked> {
        if touch {
            // Before the entry is in flight: a clear changes the keys that
            // were there without it.
            self.watches
                .touch(entry.ops(), |key| self.entry(key).is_some());
        }
        let release = self.in_flight.record(entry.ops());
        let pending = self.store.submit_admitted(entry, admission)?;
        Ok(Tracked::new(pending, release))
    }

    /// Runs a read-modify-write: `decide` looks at the newest values (see
    /// [`Db::latest`]) and returns the operations to log and the reply.
    /// It runs again, after waiting for room in the log's queue, in the
    /// same step that queues its operations, so nothing changes in between;
    /// no operations: nothing is logged.
    pub async fn change<R>(
        &self,
        decide: impl FnMut(&Db) -> (Vec<Op>, R),
    ) -> Result<(R, Option<Tracked>)> {
        self.change_with(decide, true).await
    }

    /// Deletes expired keys as [`Db::change`] runs a command, without
    /// touching the watched ones: for every reader they were gone already.
    pub async fn purge<R>(
        &self,
        decide: impl FnMut(&Db) -> (Vec<Op>, R),
    ) -> Result<(R, Option<Tracked>)> {
        self.change_with(decide, false).await
    }

    async fn change_with<R>(
        &self,
        mut decide: impl FnMut(&Db) -> (Vec<Op>, R),
        touch: bool,
    ) -> Result<(R, Option<Tracked>)> {
        let mut room: Option<Admission> = None;
        loop {
            let (ops, reply) = decide(self);
            if ops.is_empty() {
                return Ok((reply, None));
            }
            let entry = entry_of(ops);
            match room.take() {
                Some(admission) if admission.bytes() >= self.store.admission_bytes(&entry) => {
                    return Ok((reply, Some(self.queue(entry, admission, touch)?)));
                }
                // First pass, or the values grew while it waited.
                _ => room = Some(self.store.admit(&entry).await?),
            }
        }
    }

    /// Deletes those of `keys` that exist (counting writes in flight), as
    /// one record; returns how many were removed, and the acknowledgement
    /// if anything was logged.
    pub async fn delete(&self, keys: &[Bytes]) -> Result<(usize, Option<Tracked>)> {
        self.change(|db| {
            // A key named twice is deleted once; a set keeps a long DEL linear.
            let mut seen: HashSet<&[u8]> = HashSet::new();
            let mut ops: Vec<Op> = Vec::new();
            for key in keys {
                if db.latest(key).is_some() && seen.insert(key) {
                    ops.push(Op::Delete { key: key.to_vec() });
                }
            }
            let removed = ops.len();
            (ops, removed)
        })
        .await
    }
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is empty or all `0xff`).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

fn entry_of(ops: Vec<Op>) -> Entry {
    match <[Op; 1]>::try_from(ops) {
        Ok([op]) => Entry::Op(op),
        Err(ops) => Entry::Batch(ops),
    }
}
