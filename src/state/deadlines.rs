//! When the keys that expire do: by key, to hide an expired key from reads,
//! and by time, to find the expired ones without walking every key.
//!
//! Most keys never expire, so their deadlines live here, beside the tree,
//! not in every slot: a store without expiring keys pays one emptiness
//! check per read.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

/// Milliseconds since the Unix epoch: the clock deadlines are set in.
pub(crate) fn now_ms() -> u64 {
    crate::entry::unix_millis(SystemTime::now())
}

/// The deadline of every key that has one.
#[derive(Default)]
pub(crate) struct Deadlines {
    by_key: HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>,
    by_time: BTreeSet<(u64, Box<[u8]>)>,
}

impl Deadlines {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The deadline of `key`, if it has one.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(key).copied()
    }

    /// Whether `key` has a deadline at or before `now`.
    pub(crate) fn expired(&self, key: &[u8], now: u64) -> bool {
        self.get(key).is_some_and(|at| at <= now)
    }

    /// Gives `key` the deadline `at`, replacing any it had.
    pub(crate) fn set(&mut self, key: &[u8], at: u64) {
        match self.by_key.get_mut(key) {
            Some(old) if *old == at => {}
            Some(old) => {
                let key: Box<[u8]> = key.into();
                self.by_time.remove(&(*old, key.clone()));
                *old = at;
                self.by_time.insert((at, key));
            }
            None => {
                let key: Box<[u8]> = key.into();
                self.by_key.insert(key.clone(), at);
                self.by_time.insert((at, key));
            }
        }
    }

    /// Takes `key`'s deadline away, if it had one.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        if self.by_key.is_empty() {
            return;
        }
        if let Some((key, at)) = self.by_key.remove_entry(key) {
            self.by_time.remove(&(at, key));
        }
    }

    /// Keys whose deadline is at or before `now`, the longest expired first.
    pub(crate) fn expired_keys(&self, now: u64) -> impl Iterator<Item = &[u8]> {
        self.by_time
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, key)| &**key)
    }

    /// How many keys expired at or before `now`.
    pub(crate) fn expired_count(&self, now: u64) -> usize {
        self.expired_keys(now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_found_by_key_and_by_time() {
        let mut d = Deadlines::default();
        d.set(b"b", 20);
        d.set(b"a", 10);
        d.set(b"c", 30);
        d.set(b"c", 5);
        assert_eq!(d.get(b"c"), Some(5));
        assert!(d.expired(b"a", 10) && !d.expired(b"b", 10));
        let expired: Vec<&[u8]> = d.expired_keys(10).collect();
        assert_eq!(expired, [&b"c"[..], b"a"]);
        d.remove(b"c");
        assert_eq!(d.expired_count(100), 2);
        d.remove(b"a");
        d.remove(b"b");
        assert!(d.is_empty() && d.expired_count(u64::MAX) == 0);
    }
}
