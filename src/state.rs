//! The readable key-value state: every acknowledged write applied in
//! sequence order, in key order.
//!
//! A write is visible from the moment its appender is answered, never
//! earlier: a reader never sees a write a crash could still take away under
//! the sync mode (in `always`, one whose `fdatasync` has not returned), and
//! an appender that was answered sees its own write. A batch appears whole.
//!
//! Inserting into a tree of a million keys costs far more than writing the
//! record did, so the acknowledging thread does not insert: just before it
//! answers, it queues the records, and an applier thread moves them into the
//! tree, many at a time. Every read first applies whatever is
//! still queued, so it sees exactly what was acknowledged before it began.
//! The queue is bounded by `limits.max_pending_bytes`: each record keeps
//! its room under that bound until it is applied, so appenders that outrun
//! the applier wait for room as they would for a slow disk, and the
//! acknowledging thread never waits for the applier.

mod slot;

use std::collections::BTreeSet;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::Duration;

use tokio::sync::Notify;

use crate::entry::{Entry, Op, Seq};
use crate::log::admission::Admission;

pub(crate) use slot::Slot;

/// Keys and values as the state holds them: each pair in one allocation,
/// with the key's head in the tree's node (see [`slot`]).
pub(crate) type Tree = BTreeSet<Slot>;

/// How many pairs a [`Scan`] copies out per read lock: enough to make the
/// lock's cost vanish, few enough that a scan never holds the applier back
/// for long.
const SCAN_CHUNK: usize = 256;

/// Queued records that wake the applier: enough to apply in one go, few
/// enough that a reader rarely finds much to apply first.
const WAKE_AT: usize = 512;

/// The share of `limits.max_pending_bytes` queued that wakes the applier
/// whatever the records' number: large records must not wait for
/// [`IDLE_APPLY`] while their appenders wait for room.
const WAKE_AT_SHARE_OF_ROOM: u64 = 8;

/// Records applied after which the applier, once idle, gives the memory
/// their queue held back to the OS (see `memory`): a burst of writes may
/// have queued up to `limits.max_pending_bytes` of them.
const TRIM_AFTER: usize = 1 << 16;

/// How long queued records wait for the applier when fewer than [`WAKE_AT`]
/// arrive (reads apply them at once anyway).
const IDLE_APPLY: Duration = Duration::from_millis(20);

/// A read-only handle on the store's key-value state. Cheap to clone,
/// `Send + Sync` (an actix-web `web::Data` can hold it), and valid after the
/// store shuts down (it then keeps the last state).
#[derive(Clone)]
pub struct State {
    inner: Arc<Shared>,
}

/// What the store's acknowledgement path and every [`State`] share.
pub(crate) struct Shared {
    tree: RwLock<Tree>,
    queue: Arc<Queue>,
    /// How many records the queue holds: a read with nothing queued takes
    /// no lock but the tree's.
    queued: AtomicUsize,
    /// The last record acknowledged (queued or applied): every record up
    /// to it that was acknowledged is visible to a read.
    last_seq: AtomicU64,
    /// Woken after each group of writes is acknowledged, and at shutdown.
    acknowledged: Notify,
    closed: AtomicBool,
    /// Whether the applier thread runs (else acknowledgements apply).
    applier: AtomicBool,
}

/// Acknowledged records not yet in the tree, and the applier's wake-up.
/// Shared with the applier thread apart from the rest, so that the thread
/// does not keep a dropped state alive.
struct Queue {
    records: Mutex<Pending>,
    wake: Condvar,
    /// Queued bytes of room that wake the applier (see [`WAKE_AT_SHARE_OF_ROOM`]).
    wake_bytes: u64,
}

#[derive(Default)]
struct Pending {
    records: Vec<Entry>,
    /// The vector the last flush emptied, to queue into next: acknowledging
    /// threads then rarely grow one while holding the lock.
    spare: Vec<Entry>,
    /// The queued records' room under `limits.max_pending_bytes`, given
    /// back once they are applied.
    room: Option<Admission>,
    stopping: bool,
}

impl Pending {
    fn wakes_applier(&self, wake_bytes: u64) -> bool {
        self.records.len() >= WAKE_AT
            || self.room.as_ref().map_or(0, Admission::bytes) >= wake_bytes
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every critical section is a push, a swap or a flag change.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    /// The state recovery built, as of `last_seq`, with its applier thread,
    /// under a store admitting `max_pending_bytes` of appends.
    pub(crate) fn new(tree: Tree, last_seq: Seq, max_pending_bytes: u64) -> Arc<Shared> {
        let queue = Arc::new(Queue {
            records: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            wake_bytes: (max_pending_bytes / WAKE_AT_SHARE_OF_ROOM).max(1),
        });
        let shared = Arc::new(Shared {
            tree: RwLock::new(tree),
            queue: Arc::clone(&queue),
            queued: AtomicUsize::new(0),
            last_seq: AtomicU64::new(last_seq),
            acknowledged: Notify::new(),
            closed: AtomicBool::new(false),
            applier: AtomicBool::new(true),
        });
        let weak = Arc::downgrade(&shared);
        let started = std::thread::Builder::new()
            .name("concordkv-state".into())
            .spawn(move || run_applier(&queue, &weak));
        if let Err(e) = started {
            // The acknowledging thread applies everything itself then.
            tracing::warn!(%e, "cannot start the state's applier thread");
            shared.applier.store(false, Release);
        }
        shared
    }

    fn read(&self) -> RwLockReadGuard<'_, Tree> {
        if self.queued.load(Acquire) > 0 {
            self.flush();
        }
        // Every critical section leaves the tree whole: an insert or a
        // removal either happened or not.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves every queued record into the tree, under one lock, then gives
    /// their room back; returns how many records it applied.
    fn flush(&self) -> usize {
        let mut tree = self.write();
        let (mut records, room) = {
            let mut queue = self.queue.lock();
            self.queued.store(0, Release);
            let spare = std::mem::take(&mut queue.spare);
            (
                std::mem::replace(&mut queue.records, spare),
                queue.room.take(),
            )
        };
        let applied = records.len();
        for entry in records.drain(..) {
            apply_entry(&mut tree, entry);
        }
        drop(tree);
        drop(room);
        self.queue.lock().spare = records;
        applied
    }

    /// Makes acknowledged records visible, in sequence order; called just
    /// before their appenders are answered. Each record's room (its
    /// admission) moves with it into the queue. Records at or below what
    /// the state already holds are skipped: after the WAL actor is restarted
    /// the state is rebuilt from the files, and an acknowledgement of a
    /// record written before that may still arrive.
    pub(crate) fn apply<'a>(
        &self,
        records: impl IntoIterator<Item = (Seq, &'a mut Option<Entry>, &'a mut Option<Admission>)>,
    ) {
        let mut records = records.into_iter().peekable();
        if records.peek().is_none() {
            return;
        }
        let mut queue = self.queue.lock();
        let mut last = self.last_seq.load(Relaxed);
        for (seq, entry, room) in records {
            let Some(entry) = entry.take() else { continue };
            if seq <= last {
                continue;
            }
            last = seq;
            if matches!(entry, Entry::Raw(_)) {
                // A log's payload changes no key: nothing to apply, and its
                // room goes back now.
                continue;
            }
            queue.records.push(entry);
            if let Some(room) = room.take() {
                match &mut queue.room {
                    Some(queued) => queued.absorb(room),
                    None => queue.room = Some(room),
                }
            }
        }
        let wake = queue.wakes_applier(self.queue.wake_bytes);
        self.queued.store(queue.records.len(), Release);
        self.last_seq.store(last, Release);
        drop(queue);
        if !self.applier.load(Acquire) {
            self.flush();
        } else if wake {
            self.queue.wake.notify_one();
        }
        self.acknowledged.notify_waiters();
    }

    /// Replaces the whole state with one rebuilt from the files (after the
    /// WAL actor was restarted), which may hold records written but never
    /// acknowledged.
    pub(crate) fn replace(&self, tree: Tree, last_seq: Seq) {
        let mut current = self.write();
        let queued = {
            let mut queue = self.queue.lock();
            self.queued.store(0, Release);
            (std::mem::take(&mut queue.records), queue.room.take())
        };
        let old = std::mem::replace(&mut *current, tree);
        self.last_seq.store(last_seq, Release);
        drop(current);
        self.acknowledged.notify_waiters();
        drop((old, queued));
    }

    /// Moves the last record back to `last_seq` after a log dropped the
    /// records after it: the next ones applied reuse their sequence
    /// numbers. A log's state holds no keys and queues no records, so
    /// there is nothing else to undo.
    pub(crate) fn truncate(&self, last_seq: Seq) {
        let _tree = self.write();
        self.last_seq.store(last_seq, Release);
        self.acknowledged.notify_waiters();
    }

    /// Ends every wait and the applier thread: the store shut down.
    pub(crate) fn close(&self) {
        self.flush();
        self.queue.lock().stopping = true;
        self.queue.wake.notify_one();
        self.closed.store(true, Release);
        self.acknowledged.notify_waiters();
    }

    /// The last record acknowledged, which a read sees.
    pub(crate) fn last_seq(&self) -> Seq {
        self.last_seq.load(Acquire)
    }

    /// Whether the store has shut down.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// Waits until a record after `seq` was acknowledged; `false` once the
    /// store shut down with none.
    pub(crate) async fn wait_past(&self, seq: Seq) -> bool {
        loop {
            let acknowledged = self.acknowledged.notified();
            tokio::pin!(acknowledged);
            // Registered before the check, so a wake between the two is not lost.
            acknowledged.as_mut().enable();
            if self.last_seq.load(Acquire) > seq {
                return true;
            }
            if self.closed.load(Acquire) {
                return false;
            }
            acknowledged.await;
        }
    }
}

/// The applier thread: applies queued records whenever [`WAKE_AT`] of them
/// (or their share of the room) wait, or after [`IDLE_APPLY`]; ends when the store closes or the state is
/// dropped.
fn run_applier(queue: &Queue, state: &Weak<Shared>) {
    let mut applied_since_trim = 0;
    loop {
        {
            let mut pending = queue.lock();
            loop {
                if pending.stopping {
                    return;
                }
                if pending.wakes_applier(queue.wake_bytes) {
                    break;
                }
                let (guard, waited) = queue
                    .wake
                    .wait_timeout(pending, IDLE_APPLY)
                    .unwrap_or_else(PoisonError::into_inner);
                pending = guard;
                if waited.timed_out() {
                    if state.strong_count() == 0 {
                        return;
                    }
                    if !pending.records.is_empty() {
                        break;
                    }
                    if applied_since_trim >= TRIM_AFTER {
                        // A burst is over: what its queue held goes back.
                        drop(pending);
                        crate::memory::release_freed();
                        applied_since_trim = 0;
                        pending = queue.lock();
                    }
                }
            }
        }
        match state.upgrade() {
            Some(state) => applied_since_trim += state.flush(),
            None => return,
        }
    }
}

/// Applies one record's operations to `tree`.
pub(crate) fn apply_entry(tree: &mut Tree, entry: Entry) {
    match entry {
        Entry::Op(op) => apply_op(tree, &op),
        Entry::Batch(ops) => {
            for op in &ops {
                apply_op(tree, op);
            }
        }
        // A log's payload changes no key (a store never holds one).
        Entry::Raw(_) => {}
    }
}

fn apply_op(tree: &mut Tree, op: &Op) {
    match op {
        Op::Set { key, value } => {
            if !slot::overwrite(tree, &Slot::probe(key), value) {
                tree.insert(Slot::new(key, value));
            }
        }
        Op::Delete { key } => {
            tree.remove(&Slot::probe(key));
        }
    }
}

impl State {
    pub(crate) fn new(inner: Arc<Shared>) -> State {
        State { inner }
    }

    /// The value of `key`, copied out.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// Calls `f` on the value of `key` without copying it. `f` runs under
    /// the state's read lock, which holds acknowledgements back: keep it short.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.inner
            .read()
            .get(&Slot::probe(key))
            .map(|slot| f(slot.value()))
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.read().contains(&Slot::probe(key))
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.inner.read().is_empty()
    }

    /// The last record the state holds (0: none). Every acknowledged
    /// record up to it is visible.
    pub fn last_seq(&self) -> Seq {
        self.inner.last_seq.load(Acquire)
    }

    /// The pairs whose keys fall in `range`, in key order; for example
    /// `state.range("a".."c")` or `state.range::<&[u8]>(..)`.
    pub fn range<K: AsRef<[u8]>>(&self, range: impl RangeBounds<K>) -> Scan {
        let own = |bound: Bound<&K>| match bound {
            Bound::Included(k) => Bound::Included(Slot::probe(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(Slot::probe(k.as_ref())),
            Bound::Unbounded => Bound::Unbounded,
        };
        Scan::new(
            self.clone(),
            own(range.start_bound()),
            own(range.end_bound()),
        )
    }

    /// The pairs whose keys start with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Scan {
        let end = match successor(prefix) {
            Some(end) => Bound::Excluded(Slot::probe(&end)),
            None => Bound::Unbounded,
        };
        Scan::new(self.clone(), Bound::Included(Slot::probe(prefix)), end)
    }

    /// Every pair, in key order.
    pub fn iter(&self) -> Scan {
        Scan::new(self.clone(), Bound::Unbounded, Bound::Unbounded)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("keys", &self.len())
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is all `0xff`).
fn successor(prefix: &[u8]) -> Option<Box<[u8]>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end.into_boxed_slice())
}

/// An ordered walk over part of the state, copied out a few hundred pairs
/// at a time, so no lock is held between calls to `next`. Like Redis's
/// `SCAN`, it is not a snapshot: a key present throughout the walk is
/// returned once, one written or removed during it may or may not be.
pub struct Scan {
    state: State,
    /// Where the next chunk starts: just after the last key returned.
    from: Bound<Slot>,
    to: Bound<Slot>,
    chunk: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Scan {
    fn new(state: State, from: Bound<Slot>, to: Bound<Slot>) -> Scan {
        let done = is_empty_range(&from, &to);
        Scan {
            state,
            from,
            to,
            chunk: Vec::new().into_iter(),
            done,
        }
    }

    fn refill(&mut self) {
        let tree = self.state.inner.read();
        let bounds = (self.from.as_ref(), self.to.as_ref());
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = tree
            .range::<Slot, _>(bounds)
            .take(SCAN_CHUNK)
            .map(|slot| (slot.key().to_vec(), slot.value().to_vec()))
            .collect();
        drop(tree);
        self.done = chunk.len() < SCAN_CHUNK;
        if let Some((last, _)) = chunk.last() {
            self.from = Bound::Excluded(Slot::probe(last));
            self.done |= is_empty_range(&self.from, &self.to);
        }
        self.chunk = chunk.into_iter();
    }
}

impl Iterator for Scan {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pair) = self.chunk.next() {
                return Some(pair);
            }
            if self.done {
                return None;
            }
            self.refill();
        }
    }
}

/// Whether no key lies between the bounds (`BTreeMap::range` panics on
/// such bounds instead of returning nothing).
fn is_empty_range(from: &Bound<Slot>, to: &Bound<Slot>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: &[&str]) -> State {
        let tree: Tree = keys.iter().map(|k| Slot::new(k.as_bytes(), b"v")).collect();
        State::new(Shared::new(tree, 0, 1 << 20))
    }

    fn keys(scan: Scan) -> Vec<String> {
        scan.map(|(k, _)| String::from_utf8(k).expect("utf-8"))
            .collect()
    }

    #[test]
    fn prefixes_end_where_the_prefix_does() {
        let s = state(&["a", "ab", "abc", "ac", "b"]);
        assert_eq!(keys(s.prefix(b"ab")), ["ab", "abc"]);
        assert_eq!(keys(s.prefix(b"")), ["a", "ab", "abc", "ac", "b"]);
        assert_eq!(successor(&[0x61, 0xff, 0xff]).as_deref(), Some(&[0x62][..]));
        assert_eq!(successor(&[0xff]), None);
    }

    #[test]
    fn ranges_follow_their_bounds_and_never_panic_when_empty() {
        let s = state(&["a", "b", "c", "d"]);
        assert_eq!(keys(s.range("b".."d")), ["b", "c"]);
        assert_eq!(keys(s.range("b"..="d")), ["b", "c", "d"]);
        assert_eq!(keys(s.range::<&str>(..)), ["a", "b", "c", "d"]);
        assert!(keys(s.range("d".."b")).is_empty());
        assert!(keys(s.range("b".."b")).is_empty());
        let excluded = (Bound::Excluded("b"), Bound::Excluded("b"));
        assert!(keys(s.range::<&str>(excluded)).is_empty());
    }

    #[test]
    fn a_long_scan_goes_on_across_chunks() {
        let names: Vec<String> = (0..SCAN_CHUNK * 3 + 7)
            .map(|i| format!("k{i:05}"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let s = state(&refs);
        assert_eq!(keys(s.iter()), names);
        assert_eq!(s.prefix(b"k").count(), names.len());
    }

    #[test]
    fn applied_records_are_visible_whole_and_never_twice() {
        let shared = Shared::new(Tree::new(), 0, 1 << 20);
        let s = State::new(Arc::clone(&shared));
        let set = |k: &str, v: &str| Op::Set {
            key: k.into(),
            value: v.into(),
        };
        let mut first = Some(Entry::Batch(vec![set("a", "1"), set("b", "1")]));
        let mut second = Some(Entry::Op(Op::Delete { key: "a".into() }));
        shared.apply([(1, &mut first, &mut None), (2, &mut second, &mut None)]);
        assert_eq!(s.get(b"a"), None);
        assert_eq!(s.get(b"b").as_deref(), Some(&b"1"[..]));
        assert_eq!(s.last_seq(), 2);
        // A late acknowledgement of a record the state already holds.
        let mut late = Some(Entry::Op(set("a", "stale")));
        shared.apply([(2, &mut late, &mut None)]);
        assert_eq!(s.get(b"a"), None);
    }
}
