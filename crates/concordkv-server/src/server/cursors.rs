//! `SCAN` cursors. Clients (redis-py's `scan_iter`, redis-rs) parse the
//! cursor as an integer, and the state is walked in key order, so each
//! cursor is a number standing for the last key a `SCAN` returned; the
//! next call resumes just after that key. Walking by key, not by position,
//! keeps `SCAN`'s promise: a key present from the first call to the last
//! is returned, whatever is added or removed meanwhile. The table holds
//! the newest [`CAPACITY`] cursors of all clients; an older one is refused.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Cursors remembered at once (each holds one key).
pub const CAPACITY: usize = 65_536;

/// Cursor numbers and where they resume.
#[derive(Default)]
pub struct Cursors {
    next: u64,
    after: HashMap<u64, Bytes>,
    /// Oldest first, for eviction.
    order: VecDeque<u64>,
}

impl Cursors {
    /// A new cursor resuming after `key` (never 0: 0 starts and ends a scan).
    pub fn issue(&mut self, key: Bytes) -> u64 {
        self.next += 1;
        let cursor = self.next;
        self.after.insert(cursor, key);
        self.order.push_back(cursor);
        while self.order.len() > CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.after.remove(&oldest);
            }
        }
        cursor
    }

    /// The key `cursor` resumes after; `None` if it was never issued or has
    /// been evicted.
    pub fn resume(&self, cursor: u64) -> Option<Bytes> {
        self.after.get(&cursor).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_resume_where_they_stopped_until_evicted() {
        let mut cursors = Cursors::default();
        let first = cursors.issue(Bytes::from("k1"));
        assert_ne!(first, 0);
        assert_eq!(cursors.resume(first), Some(Bytes::from("k1")));
        assert_eq!(cursors.resume(first + 1), None);
        for i in 0..CAPACITY {
            cursors.issue(Bytes::from(format!("k{i}")));
        }
        assert_eq!(cursors.resume(first), None, "the oldest is evicted");
    }
}
