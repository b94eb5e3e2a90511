//! `WATCH`: optimistic checks for `EXEC`. Each watched key has a version
//! that every write of it bumps, whoever writes it and whether or not it is
//! acknowledged yet; `EXEC` runs only if no watched key's version moved
//! since the connection watched it, and none expired since (as Redis: a key
//! already expired when watched, and deleted for it later, changed
//! nothing). Only watched keys are tracked, so writes pay one lookup in an
//! empty map when no one watches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use concordkv::Op;

/// Every watched key's version.
#[derive(Default)]
pub struct Watches {
    keys: RefCell<HashMap<Bytes, Watched>>,
}

struct Watched {
    /// Connections watching the key.
    watchers: usize,
    version: u64,
}

impl Watches {
    /// Bumps the version of each watched key `ops` write; a clear writes
    /// the watched keys that `exists` says are there.
    pub fn touch(&self, ops: &[Op], exists: impl Fn(&[u8]) -> bool) {
        let mut keys = self.keys.borrow_mut();
        if keys.is_empty() {
            return;
        }
        for op in ops {
            match op.key() {
                Some(key) => {
                    if let Some(watched) = keys.get_mut(key) {
                        watched.version += 1;
                    }
                }
                None => {
                    for (key, watched) in keys.iter_mut() {
                        if exists(key) {
                            watched.version += 1;
                        }
                    }
                }
            }
        }
    }
}

/// One connection's watched keys and the versions it saw; unwatches them
/// when dropped (`EXEC`, `DISCARD`, `UNWATCH`, `RESET`, or the client left).
pub struct Watching {
    watches: Rc<Watches>,
    /// Each key, the version seen, and the deadline it had then.
    keys: Vec<(Bytes, u64, Option<u64>)>,
}

impl Watching {
    pub fn new(watches: Rc<Watches>) -> Watching {
        Watching {
            watches,
            keys: Vec::new(),
        }
    }

    /// Watches `key` as it is now, with the deadline it has if it is
    /// there (again: no change).
    pub fn add(&mut self, key: &Bytes, expires_at: Option<u64>) {
        if self.keys.iter().any(|(k, _, _)| k == key) {
            return;
        }
        let mut keys = self.watches.keys.borrow_mut();
        let watched = keys.entry(key.clone()).or_insert(Watched {
            watchers: 0,
            version: 0,
        });
        watched.watchers += 1;
        self.keys.push((key.clone(), watched.version, expires_at));
    }

    /// Whether any watched key was written, or expired, since it was
    /// watched.
    pub fn changed(&self, now: u64) -> bool {
        let keys = self.watches.keys.borrow();
        self.keys.iter().any(|(key, seen, expires_at)| {
            keys.get(key).is_none_or(|w| w.version != *seen)
                || expires_at.is_some_and(|at| at <= now)
        })
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut keys = self.watches.keys.borrow_mut();
        for (key, _, _) in &self.keys {
            if let Some(watched) = keys.get_mut(key) {
                watched.watchers -= 1;
                if watched.watchers == 0 {
                    keys.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &str) -> Op {
        Op::Set {
            key: k.into(),
            value: "v".into(),
        }
    }

    #[test]
    fn a_write_of_a_watched_key_is_seen_by_every_watcher_and_others_are_not() {
        let watches = Rc::new(Watches::default());
        let mut first = Watching::new(Rc::clone(&watches));
        let mut second = Watching::new(Rc::clone(&watches));
        first.add(&Bytes::from("a"), None);
        second.add(&Bytes::from("b"), None);
        watches.touch(&[set("c")], |_| true);
        assert!(!first.changed(0) && !second.changed(0));
        watches.touch(&[set("a")], |_| true);
        assert!(first.changed(0) && !second.changed(0));
        drop(first);
        drop(second);
        assert!(watches.keys.borrow().is_empty());
    }

    #[test]
    fn a_clear_changes_the_watched_keys_that_exist_and_expiry_changes_a_key() {
        let watches = Rc::new(Watches::default());
        let mut there = Watching::new(Rc::clone(&watches));
        let mut absent = Watching::new(Rc::clone(&watches));
        there.add(&Bytes::from("there"), None);
        absent.add(&Bytes::from("absent"), None);
        watches.touch(&[Op::Clear], |key| key == b"there");
        assert!(there.changed(0) && !absent.changed(0));
        let mut expiring = Watching::new(Rc::clone(&watches));
        expiring.add(&Bytes::from("e"), Some(100));
        assert!(!expiring.changed(99) && expiring.changed(100));
    }
}
