//! The readable key-value state: every acknowledged write applied in
//! sequence order, in key order.
//!
//! Writes enter the state where their appenders are answered, just before
//! the answer is sent, and never earlier: a reader never sees a write a
//! crash could still take away under the sync mode (in `always`, one whose
//! `fdatasync` has not returned), and an appender that was answered sees its
//! own write. A batch is applied under one lock, so it appears whole.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

use crate::entry::{Entry, Op, Seq};

/// Keys and values as the state holds them: exact-size boxes, 16 bytes of
/// pointer each in the tree (a `Vec` would add 8 bytes of capacity each).
pub(crate) type Tree = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// How many pairs a [`Scan`] copies out per read lock: enough to make the
/// lock's cost vanish, few enough that a scan never holds writers back for
/// long (appenders are answered only after their write is applied).
const SCAN_CHUNK: usize = 256;

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
    /// The last record applied: every record up to it that was acknowledged
    /// is visible.
    last_seq: AtomicU64,
    /// Woken after each group of writes is applied, and at shutdown.
    applied: Notify,
    closed: AtomicBool,
}

impl Shared {
    /// The state recovery built, as of `last_seq`.
    pub(crate) fn new(tree: Tree, last_seq: Seq) -> Arc<Shared> {
        Arc::new(Shared {
            tree: RwLock::new(tree),
            last_seq: AtomicU64::new(last_seq),
            applied: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Tree> {
        // Every critical section leaves the tree whole: an insert or a
        // removal either happened or not.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies acknowledged records, in sequence order, under one lock.
    /// Records at or below what the state already holds are skipped: after
    /// the WAL actor is restarted the state is rebuilt from the files, and
    /// an acknowledgement of a record written before that may still arrive.
    pub(crate) fn apply<'a>(
        &self,
        records: impl IntoIterator<Item = (Seq, &'a mut Option<Entry>)>,
    ) {
        let mut records = records.into_iter().peekable();
        if records.peek().is_none() {
            return;
        }
        let mut tree = self.write();
        let mut last = self.last_seq.load(Relaxed);
        for (seq, entry) in records {
            let Some(entry) = entry.take() else { continue };
            if seq <= last {
                continue;
            }
            apply_entry(&mut tree, entry);
            last = seq;
        }
        self.last_seq.store(last, Release);
        drop(tree);
        self.applied.notify_waiters();
    }

    /// Replaces the whole state with one rebuilt from the files (after the
    /// WAL actor was restarted), which may hold records written but never
    /// acknowledged.
    pub(crate) fn replace(&self, tree: Tree, last_seq: Seq) {
        let old = std::mem::replace(&mut *self.write(), tree);
        self.last_seq.store(last_seq, Release);
        self.applied.notify_waiters();
        drop(old);
    }

    /// Moves the last record back to `last_seq` after a log dropped the
    /// records after it: the next ones applied reuse their sequence
    /// numbers. A log's state holds no keys, so there is nothing else to
    /// undo.
    pub(crate) fn truncate(&self, last_seq: Seq) {
        let _tree = self.write();
        self.last_seq.store(last_seq, Release);
        self.applied.notify_waiters();
    }

    /// Ends every wait: the store shut down.
    pub(crate) fn close(&self) {
        self.closed.store(true, Release);
        self.applied.notify_waiters();
    }

    /// The last record applied: the last one acknowledged.
    pub(crate) fn last_seq(&self) -> Seq {
        self.last_seq.load(Acquire)
    }

    /// Whether the store has shut down.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Acquire)
    }

    /// Waits until a record after `seq` was applied; `false` once the store
    /// shut down with none.
    pub(crate) async fn wait_past(&self, seq: Seq) -> bool {
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            // Registered before the check, so a wake between the two is not lost.
            applied.as_mut().enable();
            if self.last_seq.load(Acquire) > seq {
                return true;
            }
            if self.closed.load(Acquire) {
                return false;
            }
            applied.await;
        }
    }
}

/// Applies one record's operations to `tree`.
pub(crate) fn apply_entry(tree: &mut Tree, entry: Entry) {
    match entry {
        Entry::Op(op) => apply_op(tree, op),
        Entry::Batch(ops) => {
            for op in ops {
                apply_op(tree, op);
            }
        }
        // A log's payload changes no key (a store never holds one).
        Entry::Raw(_) => {}
    }
}

fn apply_op(tree: &mut Tree, op: Op) {
    match op {
        Op::Set { key, value } => {
            tree.insert(key.into_boxed_slice(), value.into_boxed_slice());
        }
        Op::Delete { key } => {
            tree.remove(key.as_slice());
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
        self.inner.read().get(key).map(|value| f(value))
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.read().contains_key(key)
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
            Bound::Included(k) => Bound::Included(Box::from(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(Box::from(k.as_ref())),
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
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Scan::new(self.clone(), Bound::Included(Box::from(prefix)), end)
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
    from: Bound<Box<[u8]>>,
    to: Bound<Box<[u8]>>,
    chunk: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Scan {
    fn new(state: State, from: Bound<Box<[u8]>>, to: Bound<Box<[u8]>>) -> Scan {
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
        let bounds = (as_ref(&self.from), as_ref(&self.to));
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = tree
            .range::<[u8], _>(bounds)
            .take(SCAN_CHUNK)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        drop(tree);
        self.done = chunk.len() < SCAN_CHUNK;
        if let Some((last, _)) = chunk.last() {
            self.from = Bound::Excluded(Box::from(last.as_slice()));
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

fn as_ref(bound: &Bound<Box<[u8]>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether no key lies between the bounds (`BTreeMap::range` panics on
/// such bounds instead of returning nothing).
fn is_empty_range(from: &Bound<Box<[u8]>>, to: &Bound<Box<[u8]>>) -> bool {
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
        let tree: Tree = keys
            .iter()
            .map(|k| (Box::from(k.as_bytes()), Box::from(b"v".as_slice())))
            .collect();
        State::new(Shared::new(tree, 0))
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
        let shared = Shared::new(Tree::new(), 0);
        let s = State::new(Arc::clone(&shared));
        let set = |k: &str, v: &str| Op::Set {
            key: k.into(),
            value: v.into(),
        };
        let mut first = Some(Entry::Batch(vec![set("a", "1"), set("b", "1")]));
        let mut second = Some(Entry::Op(Op::Delete { key: "a".into() }));
        shared.apply([(1, &mut first), (2, &mut second)]);
        assert_eq!(s.get(b"a"), None);
        assert_eq!(s.get(b"b").as_deref(), Some(&b"1"[..]));
        assert_eq!(s.last_seq(), 2);
        // A late acknowledgement of a record the state already holds.
        let mut late = Some(Entry::Op(set("a", "stale")));
        shared.apply([(2, &mut late)]);
        assert_eq!(s.get(b"a"), None);
    }
}
