//! The readable key-value state: every acknowledged write applied in
//! sequence order, in key order.
//!
//! A write is visible from the moment its appender is answered, never
//! earlier: a reader never sees a write a crash could still take away under
//! the sync mode (in `always`, one whose `fdatasync` has not returned), and
//! an appender that was answered sees its own write. A batch appears whole.
//!
//! Inserting into a tree of a million keys costs far more than writing the
//! record did, so neither the appending thread nor the acknowledging one
//! inserts. The WAL queues (stages) each record once it is written; just
//! before the appenders are answered, the acknowledging thread moves a mark
//! past their records; an applier thread moves the records up to the mark
//! into the tree, many at a time. Every read first applies whatever is
//! queued up to the mark, so it sees exactly what was acknowledged before
//! it began, and nothing after. The queue is bounded by
//! `limits.max_pending_bytes`: each record keeps its room under that bound
//! until it is applied, so appenders that outrun the applier wait for room
//! as they would for a slow disk, and the acknowledging thread never waits
//! for the applier.

mod deadlines;
mod index;
mod queued;
mod slot;

use std::collections::{BTreeSet, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::entry::{Entry, Seq};
use crate::log::admission::Admission;

pub(crate) use deadlines::now_ms;
use deadlines::Deadlines;
use index::{Hash, Index};
use queued::{OpRef, Queued};
pub(crate) use slot::Slot;

/// Keys and values as the state holds them: each pair in one allocation,
/// with the key's head in the tree's node (see [`slot`]).
pub(crate) type Slots = BTreeSet<Slot>;

/// Every key with its value, and the deadlines of the keys that expire. A
/// key past its deadline stays here, invisible to reads, until a logged
/// deletion removes it: the state is always exactly the log applied, so a
/// replay at any later time builds the same one.
#[derive(Default)]
pub(crate) struct Tree {
    /// The pairs in key order; each slot owns its pair.
    slots: Slots,
    /// The same pairs by key, for lookups; changed with `slots`, by the
    /// methods below only, so that it never points to a freed pair.
    index: Index,
    deadlines: Deadlines,
    /// What clears removed, to be freed once the lock is released:
    /// freeing a million keys under it would hold every reader back.
    discarded: Vec<Discarded>,
}

/// A whole state a clear removed, freed outside the lock. The index goes
/// first: it only points into the slots.
pub(crate) type Discarded = (Index, Slots, Deadlines);

impl Tree {
    pub(crate) fn new() -> Tree {
        Tree::default()
    }

    /// A tree of `slots` (in key order, as a snapshot holds them: collected
    /// without a search per key) and the deadlines of those that expire.
    pub(crate) fn build(slots: Vec<Slot>, deadlines: Vec<(Vec<u8>, u64)>) -> Tree {
        let slots: Slots = slots.into_iter().collect();
        // Indexed from the tree, not the run: a key the run held twice is in
        // the tree once, and the index must not keep the dropped copy.
        let mut index = Index::with_capacity(slots.len());
        for slot in &slots {
            let hash = index.hash(slot.key());
            // SAFETY: every pair indexed is owned by `slots`, which the
            // tree keeps with the index.
            unsafe { index.insert(hash, slot.pair()) };
        }
        let mut tree = Tree {
            slots,
            index,
            ..Tree::default()
        };
        for (key, at) in deadlines {
            tree.deadlines.set(&key, at);
        }
        tree
    }

    /// Sets a pair (loading a snapshot).
    pub(crate) fn insert(&mut self, key: &[u8], value: &[u8], expires_at: Option<u64>) {
        self.put(key, value, self.index.hash(key));
        if let Some(at) = expires_at {
            self.deadlines.set(key, at);
        }
    }

    /// Applies one record's operations.
    pub(crate) fn apply_entry(&mut self, entry: &Entry) {
        self.apply_ops(entry.ops().iter().map(OpRef::from));
    }

    /// Applies operations in order, with the index's lines for each key
    /// asked for a few operations ahead (see [`index`]): the misses of one
    /// lookup overlap those of the next ones instead of following them.
    pub(crate) fn apply_ops<'a>(&mut self, ops: impl Iterator<Item = OpRef<'a>> + Clone) {
        let mut ahead = ops.clone();
        // The hashes of the next `SLOTS_AHEAD` operations, by position mod
        // `SLOTS_AHEAD`; a clear keeps the hasher, so they stay right.
        // `None` past the last operation, and for a clear.
        let mut hashes = [None; SLOTS_AHEAD];
        for hash in &mut hashes {
            *hash = ahead.next().and_then(|op| self.prefetch_slots(op));
        }
        for (n, op) in ops.enumerate() {
            if let Some(hash) = hashes[(n + PAIRS_AHEAD) % SLOTS_AHEAD] {
                self.index.prefetch_pair(hash);
            }
            let hash = hashes[n % SLOTS_AHEAD];
            self.apply_op(op, hash);
            hashes[n % SLOTS_AHEAD] = ahead.next().and_then(|op| self.prefetch_slots(op));
        }
    }

    /// The hash of `op`'s key, with the index's slots for it asked for.
    fn prefetch_slots(&self, op: OpRef<'_>) -> Option<Hash> {
        let hash = self.index.hash(op.key()?);
        self.index.prefetch_slots(hash);
        Some(hash)
    }

    /// Applies one operation; `hash` is its key's, when computed already.
    fn apply_op(&mut self, op: OpRef<'_>, hash: Option<Hash>) {
        let hash = |index: &Index, key: &[u8]| hash.unwrap_or_else(|| index.hash(key));
        match op {
            OpRef::Set { key, value } => {
                self.put(key, value, hash(&self.index, key));
                self.deadlines.remove(key);
            }
            OpRef::SetExpiring {
                key,
                value,
                expires_at,
            } => {
                self.put(key, value, hash(&self.index, key));
                self.deadlines.set(key, expires_at);
            }
            OpRef::Delete { key } => {
                let hash = hash(&self.index, key);
                // SAFETY: the index points into `self.slots`, borrowed
                // exclusively here; the pair leaves the index before its
                // slot is dropped.
                if unsafe { self.index.remove(hash, key) }.is_some() {
                    self.slots.remove(slot::Probe::new(key).as_keyed());
                }
                self.deadlines.remove(key);
            }
            OpRef::Clear => {
                let emptied = self.index.emptied();
                let index = std::mem::replace(&mut self.index, emptied);
                let slots = std::mem::take(&mut self.slots);
                let deadlines = std::mem::take(&mut self.deadlines);
                self.discarded.push((index, slots, deadlines));
            }
        }
    }

    /// What clears removed since the last call, for the caller to free
    /// outside any lock.
    pub(crate) fn take_discarded(&mut self) -> Vec<Discarded> {
        std::mem::take(&mut self.discarded)
    }

    /// Sets `key` to `value`: in place if the key is held with a value of
    /// the same length (no search of the tree, no allocation, nothing for
    /// another thread to free), else through the tree.
    fn put(&mut self, key: &[u8], value: &[u8], hash: Hash) {
        // SAFETY (all three blocks): the index points into `self.slots`,
        // borrowed exclusively here, so no reader holds any pair; each
        // change to a slot's pair is made in the index too.
        match unsafe { self.index.find(hash, key) } {
            Some(pair) if unsafe { pair.value_len() } == value.len() => unsafe {
                pair.set_value(value);
            },
            Some(old) => {
                let Some(slot) = self.slots.get(slot::Probe::new(key).as_keyed()) else {
                    unreachable!("the index holds a key the tree does not")
                };
                let moved = unsafe { slot.replace_value(value) };
                self.index.replace(hash, old, moved);
            }
            None => {
                let slot = Slot::new(key, value);
                let pair = slot.pair();
                self.slots.insert(slot);
                unsafe { self.index.insert(hash, pair) };
            }
        }
    }

    /// The value of `key` and its deadline, unless it has expired by `now`.
    fn live(&self, key: &[u8], now: &mut Clock) -> Option<(&[u8], Option<u64>)> {
        // SAFETY: the index points into `self.slots`, which `&self` keeps
        // alive and unchanged as long as the value returned is borrowed.
        let value = unsafe { self.index.find(self.index.hash(key), key)?.value() };
        let at = self.deadlines.get(key);
        match at {
            Some(at) if at <= now.get() => None,
            _ => Some((value, at)),
        }
    }

    /// The number of keys a read sees now.
    pub(crate) fn live_len(&self) -> usize {
        if self.deadlines.is_empty() {
            return self.slots.len();
        }
        self.slots.len() - self.deadlines.expired_count(now_ms())
    }

    /// Every key with its value and deadline, expired ones included, in
    /// key order (for the tests' oracles).
    #[cfg(feature = "testing")]
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<u64>)> {
        self.slots
            .iter()
            .map(|slot| (slot.key(), slot.value(), self.deadlines.get(slot.key())))
    }
}

/// The time read at most once per read, and only if a key read has a
/// deadline to compare it with.
struct Clock(Option<u64>);

impl Clock {
    fn new() -> Clock {
        Clock(None)
    }

    fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(now_ms)
    }
}

/// How many pairs a [`Scan`] copies out per read lock: enough to make the
/// lock's cost vanish, few enough that a scan never holds the applier back
/// for long.
const SCAN_CHUNK: usize = 256;

/// Operations ahead of the one applied whose index slots are asked for,
/// and, nearer, whose pairs are: about the misses a core keeps in flight,
/// and far enough apart that a pair's pointer has arrived when it is read.
const SLOTS_AHEAD: usize = 16;
const PAIRS_AHEAD: usize = 8;

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

/// The most records applied under one hold of the tree's write lock: the
/// applier runs at the lowest priority, and a normal thread that needs
/// the lock while other processes keep the CPU busy waits for its chunk.
const APPLY_CHUNK: usize = 256;

/// How long acknowledged records wait for the low-priority applier before
/// the watch thread, at normal priority, applies them itself.
const STARVED: Duration = Duration::from_millis(100);

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
    /// How many acknowledged records the queue holds: a read with none
    /// to apply takes no lock but the tree's.
    queued: AtomicUsize,
    /// The last record acknowledged (queued or applied): every record up
    /// to it is visible to a read.
    last_seq: AtomicU64,
    /// Woken after each group of writes is acknowledged, and at shutdown.
    acknowledged: Notify,
    closed: AtomicBool,
    /// Whether the applier thread runs (else acknowledgements apply).
    applier: AtomicBool,
}

/// Written records not yet in the tree, and the applier's wake-up.
/// Shared with the applier thread apart from the rest, so that the thread
/// does not keep a dropped state alive.
struct Queue {
    records: Mutex<Pending>,
    wake: Condvar,
    /// Wakes the watch thread at shutdown.
    watch: Condvar,
    /// Queued bytes of room that wake the applier (see [`WAKE_AT_SHARE_OF_ROOM`]).
    wake_bytes: u64,
}

struct Pending {
    /// Staged records not yet applied, acknowledged or not, in order.
    records: Queued,
    /// The buffer the last flush applied a chunk from, to copy the next
    /// one into: no allocation per chunk.
    spare: Queued,
    /// The room under `limits.max_pending_bytes` of the records staged
    /// and not yet applied, a share per staging, oldest first.
    room: VecDeque<Room>,
    /// The bytes `room` holds.
    room_bytes: u64,
    /// The last record acknowledged: [`Shared::last_seq`], changed under
    /// this lock.
    acknowledged: Seq,
    /// The last record staged (or held before staging began).
    staged: Seq,
    /// Since when acknowledged records have waited to be applied.
    ready_since: Option<Instant>,
    stopping: bool,
}

/// The room of the records `first..=last`, given back once none of them
/// waits to be applied (a log's payloads, which change no key, once they
/// are acknowledged).
struct Room {
    first: Seq,
    last: Seq,
    admission: Admission,
}

impl Pending {
    fn new(last_seq: Seq) -> Pending {
        Pending {
            records: Queued::default(),
            spare: Queued::default(),
            room: VecDeque::new(),
            room_bytes: 0,
            acknowledged: last_seq,
            staged: last_seq,
            ready_since: None,
            stopping: false,
        }
    }

    /// The queued records that are acknowledged: those the next flush applies.
    fn ready(&self) -> usize {
        self.records.records_through(self.acknowledged)
    }

    fn wakes_applier(&self, wake_bytes: u64) -> bool {
        let ready = self.ready();
        ready >= WAKE_AT || (ready > 0 && self.room_bytes >= wake_bytes)
    }

    /// Takes the room of every record acknowledged and no longer queued.
    fn take_done_room(&mut self) -> Option<Admission> {
        let queued = self.records.first_seq().unwrap_or(Seq::MAX);
        let mut done: Option<Admission> = None;
        while let Some(front) = self.room.front() {
            if front.last > self.acknowledged || front.last >= queued {
                break;
            }
            let Some(Room { admission, .. }) = self.room.pop_front() else {
                break;
            };
            self.room_bytes -= admission.bytes();
            Admission::gather(&mut done, admission);
        }
        done
    }

    /// Empties the queue (records, room and all) as of `last_seq`.
    fn reset(&mut self, last_seq: Seq) -> (Queued, VecDeque<Room>) {
        self.room_bytes = 0;
        self.acknowledged = last_seq;
        self.staged = last_seq;
        self.ready_since = None;
        (
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.room),
        )
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
            records: Mutex::new(Pending::new(last_seq)),
            wake: Condvar::new(),
            watch: Condvar::new(),
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
        let (watched, watching) = (Arc::clone(&queue), weak.clone());
        let started = std::thread::Builder::new()
            .name("concordkv-state".into())
            .spawn(move || run_applier(&queue, &weak))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("concordkv-state-watch".into())
                    .spawn(move || run_watch(&watched, &watching))
            });
        if let Err(e) = started {
            // The acknowledging thread applies everything itself then.
            tracing::warn!(%e, "cannot start the state's applier threads");
            shared.applier.store(false, Release);
        }
        shared
    }

    fn read(&self) -> RwLockReadGuard<'_, Tree> {
        if self.queued.load(Acquire) > 0 {
            self.flush_all();
        }
        // Every critical section leaves the tree whole: an insert or a
        // removal either happened or not.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies every acknowledged record queued, a chunk per lock; returns
    /// how many it applied.
    fn flush_all(&self) -> usize {
        let mut applied = 0;
        loop {
            applied += self.flush(APPLY_CHUNK);
            // Checked before taking the lock again: a write lock taken for
            // nothing still holds every reader back.
            if self.queued.load(Acquire) == 0 {
                return applied;
            }
        }
    }

    /// Moves up to `most` acknowledged records queued into the tree, under
    /// one lock, then gives their room back; returns how many it applied.
    /// A read finds those left still counted in `queued`, and applies them
    /// itself.
    fn flush(&self, most: usize) -> usize {
        let mut tree = self.write();
        let (mut records, room) = {
            let mut queue = self.queue.lock();
            let ready = queue.ready();
            let taken = ready.min(most);
            self.queued.store(ready - taken, Release);
            // Those not yet acknowledged stay queued (in `always`, the
            // group whose `fdatasync` runs), and those past the chunk.
            let mut records = std::mem::take(&mut queue.spare);
            queue.records.take_front(taken, &mut records);
            if taken == ready {
                queue.ready_since = None;
            }
            (records, queue.take_done_room())
        };
        let applied = records.records();
        tree.apply_ops(records.ops());
        records.clear();
        let discarded = tree.take_discarded();
        // The room goes back before the lock does: a read that waited for
        // this flush finds it free (a read that finds nothing queued takes
        // the lock without flushing, and must not see the room still held).
        drop(room);
        drop(tree);
        drop(discarded);
        self.queue.lock().spare = records;
        applied
    }

    /// Queues written records, in sequence order, invisible until they
    /// are acknowledged; `room` is their room under the bound, given back
    /// once they are applied. Called by the WAL on its own thread, which
    /// frees the records: copied here, their memory never moves between
    /// threads (see `queued`). Records at or below what the state already
    /// holds are skipped: after the WAL actor is restarted, the state is
    /// rebuilt from the files.
    pub(crate) fn stage<'a>(
        &self,
        records: impl IntoIterator<Item = (Seq, &'a Entry)>,
        room: Option<Admission>,
    ) {
        let mut queue = self.queue.lock();
        let mut first = None;
        for (seq, entry) in records {
            if seq <= queue.staged {
                continue;
            }
            queue.staged = seq;
            first.get_or_insert(seq);
            // A log's payload changes no key: nothing to apply.
            if !matches!(entry, Entry::Raw(_)) {
                queue.records.push(seq, entry);
            }
        }
        let (Some(first), Some(admission)) = (first, room) else {
            return;
        };
        queue.room_bytes += admission.bytes();
        let last = queue.staged;
        queue.room.push_back(Room {
            first,
            last,
            admission,
        });
    }

    /// Makes every staged record up to `upto` visible; called just before
    /// their appenders are answered, in sequence order.
    pub(crate) fn acknowledge(&self, upto: Seq) {
        let (room, wake) = {
            let mut queue = self.queue.lock();
            if upto <= queue.acknowledged {
                return;
            }
            queue.acknowledged = upto;
            let ready = queue.ready();
            if ready > 0 && queue.ready_since.is_none() {
                queue.ready_since = Some(Instant::now());
            }
            self.queued.store(ready, Release);
            self.last_seq.store(upto, Release);
            (
                queue.take_done_room(),
                queue.wakes_applier(self.queue.wake_bytes),
            )
        };
        drop(room);
        if !self.applier.load(Acquire) {
            self.flush_all();
        } else if wake {
            self.queue.wake.notify_one();
        }
        self.acknowledged.notify_waiters();
    }

    /// Drops every staged record from `seq` on that is not acknowledged,
    /// and gives its room back: its appender is about to be answered with
    /// an error, so it must never become visible.
    pub(crate) fn discard_from(&self, seq: Seq) {
        let dropped = {
            let mut queue = self.queue.lock();
            let from = seq.max(queue.acknowledged + 1);
            queue.records.drop_from(from);
            let mut dropped = Vec::new();
            while let Some(back) = queue.room.back_mut() {
                if back.first >= from {
                    dropped.extend(queue.room.pop_back());
                } else {
                    // Its earlier records still hold it.
                    back.last = back.last.min(from - 1);
                    break;
                }
            }
            for room in &dropped {
                queue.room_bytes -= room.admission.bytes();
            }
            (dropped, queue.take_done_room())
        };
        drop(dropped);
    }

    /// Replaces the whole state with one rebuilt from the files (after the
    /// WAL actor was restarted), which may hold records written but never
    /// acknowledged.
    pub(crate) fn replace(&self, tree: Tree, last_seq: Seq) {
        let mut current = self.write();
        let queued = {
            let mut queue = self.queue.lock();
            self.queued.store(0, Release);
            queue.reset(last_seq)
        };
        let old = std::mem::replace(&mut *current, tree);
        self.last_seq.store(last_seq, Release);
        drop(current);
        self.acknowledged.notify_waiters();
        drop((old, queued));
    }

    /// Moves the last record back to `last_seq` after a log dropped the
    /// records after it: the next ones staged reuse their sequence
    /// numbers. A log's state holds no keys, and every record it dropped
    /// was acknowledged, so there is nothing else to undo.
    pub(crate) fn truncate(&self, last_seq: Seq) {
        let _tree = self.write();
        let queued = {
            let mut queue = self.queue.lock();
            self.queued.store(0, Release);
            queue.reset(last_seq)
        };
        self.last_seq.store(last_seq, Release);
        self.acknowledged.notify_waiters();
        drop(queued);
    }

    /// Ends every wait and the applier thread: the store shut down.
    pub(crate) fn close(&self) {
        self.flush_all();
        self.queue.lock().stopping = true;
        self.queue.wake.notify_one();
        self.queue.watch.notify_one();
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
/// (or their share of the room) wait, or after [`IDLE_APPLY`]; ends when
/// the store closes or the state is dropped.
fn run_applier(queue: &Queue, state: &Weak<Shared>) {
    lower_priority();
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
                    if pending.ready() > 0 {
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
            Some(state) => applied_since_trim += state.flush_all(),
            None => return,
        }
    }
}

/// Gives the calling thread the lowest normal priority (nice 19); failing
/// to is harmless. On 2 cores, at the appenders' priority, the applier's
/// bursts held the sync thread and the appending thread off the CPU: 64
/// `always` appenders went from about 200,000 appends/s to 130,000. Not
/// the idle class: a thread there, holding the tree's lock while other
/// processes keep every core busy, held readers and appenders back for
/// more than a second.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority read their integer arguments and act
    // on the calling thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// The watch thread, at normal priority: applies what was acknowledged
/// when it waited [`STARVED`] for the applier (other processes keeping
/// every core busy), so that appenders waiting for room are not held back
/// for as long as those run. Ends with the applier.
fn run_watch(queue: &Queue, state: &Weak<Shared>) {
    loop {
        let starved = {
            let pending = queue.lock();
            if pending.stopping {
                return;
            }
            let (pending, _) = queue
                .watch
                .wait_timeout(pending, STARVED)
                .unwrap_or_else(PoisonError::into_inner);
            if pending.stopping {
                return;
            }
            pending
                .ready_since
                .is_some_and(|since| since.elapsed() >= STARVED)
        };
        match state.upgrade() {
            Some(state) if starved => {
                state.flush_all();
            }
            Some(_) => {}
            None => return,
        }
    }
}

impl State {
    pub(crate) fn new(inner: Arc<Shared>) -> State {
        State { inner }
    }

    /// The value of `key`, copied out. A key past its deadline (see
    /// [`Op::SetExpiring`]) is not there for this or any read.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// Calls `f` on the value of `key` without copying it. `f` runs under
    /// the state's read lock, which holds acknowledgements back: keep it short.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.entry_with(key, |value, _| f(value))
    }

    /// Calls `f` on the value of `key` and its deadline (milliseconds
    /// since the Unix epoch; `None`: it never expires), as
    /// [`get_with`](State::get_with) does.
    pub fn entry_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8], Option<u64>) -> R) -> Option<R> {
        self.inner
            .read()
            .live(key, &mut Clock::new())
            .map(|(value, at)| f(value, at))
    }

    /// The deadline of `key` in milliseconds since the Unix epoch: `None`
    /// if there is no such key, `Some(None)` if it never expires.
    pub fn expires_at(&self, key: &[u8]) -> Option<Option<u64>> {
        self.entry_with(key, |_, at| at)
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entry_with(key, |_, _| ()).is_some()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.inner.read().live_len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` keys past their deadline that the state still holds,
    /// the longest expired first: what an owner deletes to give their
    /// memory back (reads no longer see them). The deletion is a write like
    /// any other, logged, so that a replay removes them too; whoever makes
    /// it must order it after their own writes of those keys, as Redis's
    /// primary does when it propagates `DEL` for an expired key.
    pub fn expired_keys(&self, limit: usize) -> Vec<Vec<u8>> {
        let tree = self.inner.read();
        if tree.deadlines.is_empty() {
            return Vec::new();
        }
        tree.deadlines
            .expired_keys(now_ms())
            .take(limit)
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Every key with its value and deadline, expired keys included, in
    /// key order: the state exactly as the log made it, for the tests'
    /// oracles.
    #[cfg(feature = "testing")]
    pub fn dump(&self) -> crate::testing::Keyspace {
        self.inner
            .read()
            .pairs()
            .map(|(k, v, at)| (k.to_vec(), (v.to_vec(), at)))
            .collect()
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
        let mut now = Clock::new();
        let mut walked = 0;
        let mut last = None;
        let mut chunk = Vec::new();
        for slot in tree.slots.range::<Slot, _>(bounds).take(SCAN_CHUNK) {
            walked += 1;
            last = Some(slot);
            if !tree.deadlines.is_empty() && tree.deadlines.expired(slot.key(), now.get()) {
                continue;
            }
            chunk.push((slot.key().to_vec(), slot.value().to_vec()));
        }
        self.done = walked < SCAN_CHUNK;
        if let Some(last) = last {
            self.from = Bound::Excluded(Slot::probe(last.key()));
            self.done |= is_empty_range(&self.from, &self.to);
        }
        drop(tree);
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
    use crate::entry::Op;

    fn state(keys: &[&str]) -> State {
        let mut tree = Tree::new();
        for k in keys {
            tree.insert(k.as_bytes(), b"v", None);
        }
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
    fn expired_keys_are_invisible_but_held_until_deleted_and_a_clear_empties_all() {
        let shared = Shared::new(Tree::new(), 0, 1 << 20);
        let s = State::new(Arc::clone(&shared));
        let expiring = |k: &str, at| Op::SetExpiring {
            key: k.into(),
            value: b"v".to_vec(),
            expires_at: at,
        };
        let far = now_ms() + 3_600_000;
        let first = Entry::Batch(vec![
            expiring("gone", 1),
            expiring("kept", far),
            Op::Set {
                key: "plain".into(),
                value: b"v".to_vec(),
            },
        ]);
        acknowledged(&shared, 1, &first);
        assert_eq!(s.get(b"gone"), None);
        assert!(!s.contains(b"gone"));
        assert_eq!(s.expires_at(b"kept"), Some(Some(far)));
        assert_eq!(s.expires_at(b"plain"), Some(None));
        assert_eq!(s.len(), 2);
        assert_eq!(keys(s.iter()), ["kept", "plain"]);
        assert_eq!(s.expired_keys(10), [b"gone".to_vec()]);
        // A plain set drops the deadline; a deletion removes the held key.
        let second = Entry::Batch(vec![
            Op::Set {
                key: "kept".into(),
                value: b"w".to_vec(),
            },
            Op::Delete { key: "gone".into() },
        ]);
        acknowledged(&shared, 2, &second);
        assert_eq!(s.expires_at(b"kept"), Some(None));
        assert!(s.expired_keys(10).is_empty());
        let clear = Entry::Batch(vec![Op::Clear, expiring("new", far)]);
        acknowledged(&shared, 3, &clear);
        assert_eq!(keys(s.iter()), ["new"]);
        assert_eq!(s.expires_at(b"new"), Some(Some(far)));
    }

    /// The tree and its index against a map, through every kind of
    /// change: values that keep or change their length (in place, or moved
    /// to a new allocation the index must follow), deletions of held and
    /// absent keys, clears, and a rebuild from a run holding a key twice.
    #[test]
    fn the_index_follows_every_change_to_the_tree() {
        use std::collections::BTreeMap;
        let mut tree = Tree::new();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // Queued and applied in runs of 1 to 64 records, as the applier
        // does: the lines it asks for ahead go stale as earlier records of
        // the run move, add and remove pairs, and a clear swaps the index
        // midway.
        let mut run = Queued::default();
        let mut run_len = 1;
        for step in 0..40_000u64 {
            // Keys from 1 to 20 bytes over a small space, so that most
            // writes hit a held key and some keys share their 16-byte head.
            let id = next(500);
            let key = format!("k{id:0>width$}", width = (id % 20) as usize).into_bytes();
            let op = match next(100) {
                _ if step % 5000 == 2499 => Op::Clear,
                0..=19 => Op::Delete { key: key.clone() },
                _ => Op::Set {
                    key: key.clone(),
                    value: vec![b'a' + (step % 26) as u8; next(3) as usize * 7],
                },
            };
            match &op {
                Op::Set { key, value } => {
                    model.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    model.remove(key);
                }
                _ => model.clear(),
            }
            run.push(step, &Entry::Op(op));
            if run.records() < run_len {
                continue;
            }
            tree.apply_ops(run.ops());
            run.clear();
            run_len = next(64) as usize + 1;
            drop(tree.take_discarded());
            let probe = format!("k{:0>width$}", next(500), width = next(20) as usize);
            let seen = tree.live(probe.as_bytes(), &mut Clock::new());
            assert_eq!(
                seen.map(|(v, _)| v),
                model.get(probe.as_bytes()).map(Vec::as_slice)
            );
        }
        tree.apply_ops(run.ops());
        assert_eq!(tree.index.len(), tree.slots.len());
        let pairs: Vec<_> = tree
            .slots
            .iter()
            .map(|s| (s.key().to_vec(), s.value().to_vec()))
            .collect();
        assert_eq!(pairs, model.clone().into_iter().collect::<Vec<_>>());
        for (key, value) in &model {
            assert_eq!(
                tree.live(key, &mut Clock::new()).map(|(v, _)| v),
                Some(&value[..])
            );
        }
        // A run holding a key twice (a damaged or hand-made snapshot) builds
        // a tree that holds it once, and an index that points to that copy.
        let run = vec![
            Slot::new(b"a", b"1"),
            Slot::new(b"b", b"2"),
            Slot::new(b"b", b"3"),
        ];
        let mut built = Tree::build(run, Vec::new());
        assert_eq!((built.index.len(), built.slots.len()), (2, 2));
        let held = built
            .slots
            .iter()
            .map(|s| s.value().to_vec())
            .collect::<Vec<_>>();
        assert_eq!(
            built.live(b"b", &mut Clock::new()).map(|(v, _)| v.to_vec()),
            Some(held[1].clone())
        );
        built.apply_entry(&Entry::Op(Op::Set {
            key: b"b".to_vec(),
            value: b"long".to_vec(),
        }));
        assert_eq!(
            built.live(b"b", &mut Clock::new()).map(|(v, _)| v),
            Some(&b"long"[..])
        );
    }

    /// Stages `entry` as record `seq` and acknowledges it.
    fn acknowledged(shared: &Shared, seq: Seq, entry: &Entry) {
        shared.stage([(seq, entry)], None);
        shared.acknowledge(seq);
    }

    #[test]
    fn staged_records_are_visible_once_acknowledged_whole_and_never_twice() {
        let shared = Shared::new(Tree::new(), 0, 1 << 20);
        let s = State::new(Arc::clone(&shared));
        let set = |k: &str, v: &str| Op::Set {
            key: k.into(),
            value: v.into(),
        };
        let first = Entry::Batch(vec![set("a", "1"), set("b", "1")]);
        let second = Entry::Op(Op::Delete { key: "a".into() });
        shared.stage([(1, &first), (2, &second)], None);
        assert_eq!((s.get(b"a"), s.len(), s.last_seq()), (None, 0, 0));
        shared.acknowledge(1);
        assert_eq!(s.get(b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!((s.len(), s.last_seq()), (2, 1));
        shared.acknowledge(2);
        assert_eq!(s.get(b"a"), None);
        assert_eq!(s.get(b"b").as_deref(), Some(&b"1"[..]));
        assert_eq!(s.last_seq(), 2);
        // A late staging of a record the state already holds.
        let late = Entry::Op(set("a", "stale"));
        shared.stage([(2, &late)], None);
        shared.acknowledge(2);
        assert_eq!(s.get(b"a"), None);

        // Records whose appenders get an error are never shown, and
        // an acknowledged one is never taken back.
        let third = Entry::Op(set("c", "3"));
        let fourth = Entry::Op(set("d", "4"));
        shared.stage([(3, &third), (4, &fourth)], None);
        shared.discard_from(2);
        shared.acknowledge(4);
        assert_eq!((s.get(b"c"), s.get(b"d"), s.len()), (None, None, 1));
        let fifth = Entry::Op(set("e", "5"));
        let sixth = Entry::Op(set("f", "6"));
        shared.stage([(5, &fifth), (6, &sixth)], None);
        shared.acknowledge(5);
        shared.discard_from(5);
        shared.acknowledge(6);
        assert_eq!(keys(s.iter()), ["b", "e"]);
    }

    #[actix_rt::test]
    async fn room_goes_back_once_the_records_holding_it_are_applied_or_discarded() {
        use crate::log::admission::Gate;
        use crate::stats::WalCounters;
        let counters = Arc::new(WalCounters::default());
        let gate = Gate::new(1 << 20, Arc::clone(&counters));
        let pending = || {
            counters
                .pending_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let shared = Shared::new(Tree::new(), 0, 1 << 20);
        let s = State::new(Arc::clone(&shared));
        let set = |k: &str| {
            Entry::Op(Op::Set {
                key: k.into(),
                value: b"v".to_vec(),
            })
        };
        let (a, b, c) = (set("a"), set("b"), set("c"));
        shared.stage([(1, &a), (2, &b)], gate.admit(100).await);
        shared.stage([(3, &c)], gate.admit(10).await);
        shared.acknowledge(1);
        assert_eq!(s.len(), 1, "a read applies what is acknowledged");
        assert_eq!(pending(), 110, "record 2 still holds the first room");
        shared.acknowledge(2);
        assert_eq!(s.len(), 2);
        assert_eq!(pending(), 10);
        shared.discard_from(3);
        assert_eq!(pending(), 0);
        // A log's payloads hold their room until they are acknowledged.
        let raw = Entry::Raw(b"payload".to_vec());
        shared.stage([(4, &raw)], gate.admit(50).await);
        assert_eq!(pending(), 50);
        shared.acknowledge(4);
        assert_eq!((pending(), s.last_seq()), (0, 4));
    }
}
