//! `WATCH`: optimistic checks for `EXEC`. Each watched key has a version
//! that every write of it bumps, whoever writes it and whether or not it is
//! acknowledged yet; `EXEC` runs only if no watched key's version moved
//! since the connection watched it. Only watched keys are tracked, so
//! writes pay one lookup in an empty map when no one watches.

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
    /// Bumps the version of each watched key `ops` write.
    pub fn touch(&self, ops: &[Op]) {
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
                // A clear writes every key.
                None => keys.values_mut().for_each(|watched| watched.version += 1),
            }
        }
    }
}

/// One connection's watched keys and the versions it saw; unwatches them
/// when dropped (`EXEC`, `DISCARD`, `UNWATCH`, `RESET`, or the client left).
pub struct Watching {
    watches: Rc<Watches>,
    keys: Vec<(Bytes, u64)>,
}

impl Watching {
    pub fn new(watches: Rc<Watches>) -> Watching {
        Watching {
            watches,
            keys: Vec::new(),
        }
    }

    /// Watches `key` as it is now (again: no change).
    pub fn add(&mut self, key: &Bytes) {
        if self.keys.iter().any(|(k, _)| k == key) {
            return;
        }
        let mut keys = self.watches.keys.borrow_mut();
        let watched = keys.entry(key.clone()).or_insert(Watched {
            watchers: 0,
            version: 0,
        });
        watched.watchers += 1;
        self.keys.push((key.clone(), watched.version));
    }

    /// Whether any watched key was written since it was watched.
    pub fn changed(&self) -> bool {
        let keys = self.watches.keys.borrow();
        self.keys
            .iter()
            .any(|(key, seen)| keys.get(key).is_none_or(|w| w.version != *seen))
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut keys = self.watches.keys.borrow_mut();
        for (key, _) in &self.keys {
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
        first.add(&Bytes::from("a"));
        second.add(&Bytes::from("b"));
        watches.touch(&[set("c")]);
        assert!(!first.changed() && !second.changed());
        watches.touch(&[set("a")]);
        assert!(first.changed() && !second.changed());
        drop(first);
        drop(second);
        assert!(watches.keys.borrow().is_empty());
    }
}
