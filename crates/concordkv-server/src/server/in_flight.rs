//! Writes queued to the log and not yet acknowledged: the newest value of
//! each key they touch.
//!
//! The state shows a write only once it is acknowledged, but a
//! read-modify-write command (`INCR`, `APPEND`, `SETNX`, `SET … NX`) must
//! compute from every earlier write of every client, or two concurrent
//! `INCR`s would both read 5 and both log 6. Every write records its keys
//! here in the same step that queues it (connections share one thread, so
//! nothing runs in between), and such commands read here first. A key
//! leaves once its last write in flight is answered, acknowledged or not:
//! the state then shows the acknowledged value (and a refused write left
//! nothing to show). A `FLUSHDB` in flight hides every key it clears.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use hashbrown::HashTable;

use concordkv::{Op, Pending, Result, Seq};

/// A key's value and deadline (milliseconds since the Unix epoch), as the
/// server plans from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Bytes,
    pub expires_at: Option<u64>,
}

/// What one operation does to the keys, as the server plans from it.
pub enum Written<'a> {
    /// `key` now holds this (`None`: deleted).
    Key(&'a [u8], Option<Stored>),
    /// Every key is gone.
    Clear,
}

impl Written<'_> {
    pub fn of(op: &Op) -> Written<'_> {
        let stored = |value: &[u8], expires_at| {
            Some(Stored {
                value: Bytes::copy_from_slice(value),
                expires_at,
            })
        };
        match op {
            Op::Set { key, value } => Written::Key(key, stored(value, None)),
            Op::SetExpiring {
                key,
                value,
                expires_at,
            } => Written::Key(key, stored(value, Some(*expires_at))),
            Op::Delete { key } => Written::Key(key, None),
            Op::Clear => Written::Clear,
        }
    }
}

impl Stored {
    /// Whether a read at `now` still sees it.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// The newest queued value per key.
#[derive(Default)]
pub struct InFlight {
    keys: RefCell<Keys>,
    /// Clears (`FLUSHDB`) in flight: until they are answered, a key no
    /// later write in flight sets reads as deleted.
    clears: Cell<u32>,
    /// Writes whose client left before they were answered: their keys stay
    /// in flight until the log answers, checked at each lookup.
    orphans: RefCell<Vec<(Pending, Release)>>,
}

/// Every write queued records its keys here and forgets them when it is
/// answered, so this is on the path of every write: a key is hashed once
/// and copied once (with its value) per write, and a write's guard finds
/// its keys again by slot number and stored hash, without hashing or
/// allocating. (Keys as `Bytes` in a `HashMap` took four allocations and
/// two SipHash runs per `SET`: 16% of the connection thread's time under
/// pipelined `SET`s.)
#[derive(Default)]
struct Keys {
    /// Slot numbers, by their key's hash.
    table: HashTable<u32>,
    slots: Vec<Slot>,
    /// Slots no key uses, to be reused first.
    free: Vec<u32>,
    /// Seeded per process, as the state's index: keys are clients'.
    hasher: foldhash::fast::RandomState,
}

#[derive(Default)]
struct Slot {
    hash: u64,
    /// The key, then its newest value.
    bytes: Vec<u8>,
    key_len: usize,
    /// Whether the newest write deletes it (or a clear in flight does).
    deleted: bool,
    expires_at: Option<u64>,
    /// Writes of this key in flight.
    writes: u32,
    /// Whether a key uses this slot.
    used: bool,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    /// Writes of `key` in flight now hold `written` (`None`: deleted).
    fn hold(&mut self, key: &[u8], written: Value<'_>) {
        let (value, expires_at) = written.unwrap_or_default();
        self.bytes.clear();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.key_len = key.len();
        self.deleted = written.is_none();
        self.expires_at = expires_at;
    }

    fn latest(&self) -> Option<Stored> {
        (!self.deleted).then(|| Stored {
            value: Bytes::copy_from_slice(&self.bytes[self.key_len..]),
            expires_at: self.expires_at,
        })
    }
}

/// A value and its deadline; `None` for a delete.
type Value<'a> = Option<(&'a [u8], Option<u64>)>;

/// The key one operation writes, and what (`None`: a clear).
fn written(op: &Op) -> Option<(&[u8], Value<'_>)> {
    match op {
        Op::Set { key, value } => Some((key, Some((value, None)))),
        Op::SetExpiring {
            key,
            value,
            expires_at,
        } => Some((key, Some((value, Some(*expires_at))))),
        Op::Delete { key } => Some((key, None)),
        Op::Clear => None,
    }
}

impl Keys {
    fn find(&self, key: &[u8]) -> Option<&Slot> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.table
            .find(hash, |&at| slots[at as usize].key() == key)
            .map(|&at| &slots[at as usize])
    }

    /// The slot of `key`, taken if no write of it is in flight.
    fn slot_of(&mut self, key: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&at) = self.table.find(hash, |&at| slots[at as usize].key() == key) {
            return at;
        }
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                self.slots.push(Slot::default());
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.slots[at as usize];
        slot.hash = hash;
        slot.used = true;
        slot.writes = 0;
        let slots = &self.slots;
        self.table
            .insert_unique(hash, at, |&at| slots[at as usize].hash);
        at
    }

    /// Frees slot `at`: no write of its key is in flight any more.
    fn forget(&mut self, at: u32) {
        let slot = &mut self.slots[at as usize];
        slot.used = false;
        // A big value's room is not kept for whatever key comes next.
        if slot.bytes.capacity() > KEPT_SLOT_BYTES {
            slot.bytes = Vec::new();
        }
        if let Ok(found) = self.table.find_entry(slot.hash, |&other| other == at) {
            found.remove();
        }
        self.free.push(at);
        if self.table.is_empty() && self.slots.len() > KEPT_SLOTS {
            // A burst's slots are not kept once it is over.
            self.slots.truncate(KEPT_SLOTS);
            self.slots.shrink_to_fit();
            self.free.clear();
            self.free.extend((0..KEPT_SLOTS as u32).rev());
            self.free.shrink_to_fit();
            let slots = &self.slots;
            self.table.shrink_to_fit(|&at| slots[at as usize].hash);
        }
    }
}

/// Slots kept while no write is in flight, and the value room each keeps.
const KEPT_SLOTS: usize = 1024;
const KEPT_SLOT_BYTES: usize = 4096;

impl InFlight {
    /// The newest queued value of `key`: `None` if no write of it is in
    /// flight, `Some(None)` if the newest deletes it.
    pub fn latest(&self, key: &[u8]) -> Option<Option<Stored>> {
        self.reap_orphans();
        match self.keys.borrow().find(key) {
            Some(slot) => Some(slot.latest()),
            None if self.clears.get() > 0 => Some(None),
            None => None,
        }
    }

    /// Forgets the keys of orphaned writes the log has answered.
    fn reap_orphans(&self) {
        let answered: Vec<(Pending, Release)> = {
            let mut orphans = self.orphans.borrow_mut();
            if orphans.is_empty() {
                return;
            }
            let mut cx = Context::from_waker(Waker::noop());
            let mut answered = Vec::new();
            let mut waiting = Vec::new();
            for (mut pending, release) in std::mem::take(&mut *orphans) {
                if Pin::new(&mut pending).poll(&mut cx).is_ready() {
                    answered.push((pending, release));
                } else {
                    waiting.push((pending, release));
                }
            }
            *orphans = waiting;
            answered
        };
        drop(answered);
    }

    /// Records `ops` as queued; the returned guard forgets them once their
    /// write is answered.
    pub fn record(self: &Rc<InFlight>, ops: &[Op]) -> Release {
        self.reap_orphans();
        let mut keys = self.keys.borrow_mut();
        let mut touched = Touched::default();
        let mut clears = 0;
        for op in ops {
            let Some((key, value)) = written(op) else {
                clears += 1;
                for slot in keys.slots.iter_mut().filter(|s| s.used) {
                    slot.deleted = true;
                }
                continue;
            };
            let at = keys.slot_of(key);
            let slot = &mut keys.slots[at as usize];
            slot.hold(key, value);
            slot.writes += 1;
            touched.push(at);
        }
        self.clears.set(self.clears.get() + clears);
        Release {
            in_flight: Rc::clone(self),
            touched,
            clears,
        }
    }

    /// Forgets a write's keys. Writes are answered in whatever order their
    /// clients poll them, not the log's: while a clear is in flight, a key
    /// whose last write was answered keeps its entry, because the state may
    /// not show it yet through the clear's eyes (the clear hides every key
    /// it has no entry for); they all go once the last clear is answered.
    fn release(&self, touched: &Touched, clears: u32) {
        let clears_left = self.clears.get() - clears;
        self.clears.set(clears_left);
        let mut keys = self.keys.borrow_mut();
        for at in touched.iter() {
            let slot = &mut keys.slots[at as usize];
            slot.writes -= 1;
            if slot.writes == 0 && clears_left == 0 {
                keys.forget(at);
            }
        }
        if clears > 0 && clears_left == 0 {
            let idle: Vec<u32> = (0..keys.slots.len() as u32)
                .filter(|&at| {
                    let slot = &keys.slots[at as usize];
                    slot.used && slot.writes == 0
                })
                .collect();
            for at in idle {
                keys.forget(at);
            }
        }
    }

    /// Keys with a write in flight.
    pub fn len(&self) -> usize {
        self.keys.borrow().table.len()
    }

    /// Whether no write is in flight.
    pub fn is_empty(&self) -> bool {
        self.keys.borrow().table.is_empty() && self.clears.get() == 0
    }
}

/// The slots a write touched: one without allocating, as most writes.
#[derive(Default)]
struct Touched {
    first: Option<u32>,
    rest: Vec<u32>,
}

impl Touched {
    fn push(&mut self, at: u32) {
        match self.first {
            None => self.first = Some(at),
            Some(_) => self.rest.push(at),
        }
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }
}

/// Forgets a write's keys when dropped.
pub struct Release {
    in_flight: Rc<InFlight>,
    touched: Touched,
    clears: u32,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.in_flight.release(&self.touched, self.clears);
    }
}

/// A write's acknowledgement that keeps its keys in flight until it
/// resolves, even if the client leaves before waiting for it.
pub struct Tracked {
    pending: Option<Pending>,
    release: Option<Release>,
}

impl Tracked {
    pub fn new(pending: Pending, release: Release) -> Tracked {
        Tracked {
            pending: Some(pending),
            release: Some(release),
        }
    }
}

impl Future for Tracked {
    type Output = Result<Seq>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Seq>> {
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(Err(concordkv::Error::ActorDied));
        };
        let answer = std::task::ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        self.release = None;
        Poll::Ready(answer)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Dropped unanswered (its client left): the keys stay in flight
        // until the log answers, or a later INCR would read past the write.
        if let (Some(pending), Some(release)) = (self.pending.take(), self.release.take()) {
            let in_flight = Rc::clone(&release.in_flight);
            in_flight.orphans.borrow_mut().push((pending, release));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn set(k: &str, v: &str) -> Op {
        Op::Set {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn the_newest_write_wins_and_a_key_leaves_with_its_last_write() {
        let in_flight = Rc::new(InFlight::default());
        assert_eq!(in_flight.latest(b"a"), None);
        let first = in_flight.record(&[set("a", "1"), set("b", "1")]);
        let second = in_flight.record(&[Op::Delete { key: "a".into() }]);
        let one = Stored {
            value: Bytes::from("1"),
            expires_at: None,
        };
        assert_eq!(in_flight.latest(b"a"), Some(None));
        assert_eq!(in_flight.latest(b"b"), Some(Some(one)));
        drop(first);
        assert_eq!(in_flight.latest(b"a"), Some(None));
        assert_eq!(in_flight.latest(b"b"), None);
        drop(second);
        assert!(in_flight.is_empty());
    }

    #[test]
    fn a_clear_in_flight_hides_every_key_but_those_written_after_it() {
        let in_flight = Rc::new(InFlight::default());
        let before = in_flight.record(&[set("a", "1")]);
        let clear = in_flight.record(&[Op::Clear, set("b", "2")]);
        let after = in_flight.record(&[Op::SetExpiring {
            key: "c".into(),
            value: "3".into(),
            expires_at: 7,
        }]);
        assert_eq!(in_flight.latest(b"a"), Some(None));
        assert_eq!(in_flight.latest(b"elsewhere"), Some(None));
        assert_eq!(
            in_flight.latest(b"b").flatten().map(|s| s.value),
            Some(Bytes::from("2"))
        );
        assert_eq!(
            in_flight.latest(b"c").flatten().and_then(|s| s.expires_at),
            Some(7)
        );
        // A write after the clear answered first: its key must not read as
        // cleared while the clear is still in flight.
        drop(after);
        assert_eq!(
            in_flight.latest(b"c").flatten().and_then(|s| s.expires_at),
            Some(7)
        );
        drop(before);
        assert_eq!(in_flight.latest(b"a"), Some(None));
        drop(clear);
        assert_eq!(in_flight.latest(b"elsewhere"), None);
        assert_eq!(in_flight.latest(b"c"), None);
        assert!(in_flight.is_empty());
    }

    /// Keys a write touched, and the clears it made.
    type ModelWrite = (Vec<Vec<u8>>, u32);

    /// The bookkeeping as first written, with a map of owned keys: what
    /// the slot table must answer, step for step.
    #[derive(Default)]
    struct Model {
        keys: HashMap<Vec<u8>, (Option<Stored>, u32)>,
        clears: u32,
    }

    impl Model {
        fn record(&mut self, ops: &[Op]) -> ModelWrite {
            let (mut touched, mut clears) = (Vec::new(), 0);
            for op in ops {
                match Written::of(op) {
                    Written::Clear => {
                        clears += 1;
                        self.keys.values_mut().for_each(|(value, _)| *value = None);
                    }
                    Written::Key(key, value) => {
                        let latest = self.keys.entry(key.to_vec()).or_insert((None, 0));
                        *latest = (value, latest.1 + 1);
                        touched.push(key.to_vec());
                    }
                }
            }
            self.clears += clears;
            (touched, clears)
        }

        fn release(&mut self, (touched, clears): ModelWrite) {
            self.clears -= clears;
            for key in touched {
                let latest = self.keys.get_mut(&key).expect("recorded");
                latest.1 -= 1;
                if latest.1 == 0 && self.clears == 0 {
                    self.keys.remove(&key);
                }
            }
            if clears > 0 && self.clears == 0 {
                self.keys.retain(|_, latest| latest.1 > 0);
            }
        }

        fn latest(&self, key: &[u8]) -> Option<Option<Stored>> {
            match self.keys.get(key) {
                Some((value, _)) => Some(value.clone()),
                None if self.clears > 0 => Some(None),
                None => None,
            }
        }
    }

    #[test]
    fn the_slot_table_answers_as_a_map_of_keys_through_random_writes_and_clears() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let in_flight = Rc::new(InFlight::default());
        let mut model = Model::default();
        let mut held: Vec<(Release, ModelWrite)> = Vec::new();
        let key = |k: u32| format!("key{k}").into_bytes();
        for step in 0..20_000u32 {
            // Now and then a burst past the slots kept, answered whole.
            let burst = step % 5000 == 4999;
            if rng.random_bool(0.55) || burst {
                let n = if burst { 3000 } else { rng.random_range(1..4) };
                let ops: Vec<Op> = (0..n)
                    .map(|i| {
                        let k = if burst {
                            1000 + i
                        } else {
                            rng.random_range(0..12)
                        };
                        match rng.random_range(0..20) {
                            0 => Op::Clear,
                            1..=3 => Op::Delete { key: key(k) },
                            4..=6 => Op::SetExpiring {
                                key: key(k),
                                value: vec![b'e'; rng.random_range(0..9000)],
                                expires_at: u64::from(step),
                            },
                            _ => Op::Set {
                                key: key(k),
                                value: format!("{step}-{i}").into_bytes(),
                            },
                        }
                    })
                    .collect();
                held.push((in_flight.record(&ops), model.record(&ops)));
            }
            let answered = if burst {
                held.len()
            } else {
                rng.random_range(0..2)
            };
            for _ in 0..answered.min(held.len()) {
                let at = rng.random_range(0..held.len());
                let (release, touched) = held.swap_remove(at);
                drop(release);
                model.release(touched);
            }
            for k in (0..12).chain([1000, 2999, 5000]) {
                assert_eq!(
                    in_flight.latest(&key(k)),
                    model.latest(&key(k)),
                    "key{k} at step {step}"
                );
            }
            assert_eq!(in_flight.len(), model.keys.len(), "step {step}");
        }
        drop(held);
        assert!(in_flight.is_empty());
        assert!(in_flight.keys.borrow().slots.len() <= KEPT_SLOTS);
    }
}
