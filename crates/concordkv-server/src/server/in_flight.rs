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

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

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
    keys: RefCell<HashMap<Bytes, Latest>>,
    /// Clears (`FLUSHDB`) in flight: until they are answered, a key no
    /// later write in flight sets reads as deleted.
    clears: RefCell<u32>,
    /// Writes whose client left before they were answered: their keys stay
    /// in flight until the log answers, checked at each lookup.
    orphans: RefCell<Vec<(Pending, Release)>>,
}

struct Latest {
    /// `None`: deleted.
    value: Option<Stored>,
    /// Writes of this key in flight.
    writes: u32,
}

impl InFlight {
    /// The newest queued value of `key`: `None` if no write of it is in
    /// flight, `Some(None)` if the newest deletes it.
    pub fn latest(&self, key: &[u8]) -> Option<Option<Stored>> {
        self.reap_orphans();
        match self.keys.borrow().get(key) {
            Some(latest) => Some(latest.value.clone()),
            None if *self.clears.borrow() > 0 => Some(None),
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
        let mut touched = Vec::with_capacity(ops.len());
        let mut clears = 0;
        for op in ops {
            let (key, value) = match Written::of(op) {
                Written::Key(key, value) => (key, value),
                Written::Clear => {
                    clears += 1;
                    for latest in keys.values_mut() {
                        latest.value = None;
                    }
                    continue;
                }
            };
            let key = Bytes::copy_from_slice(key);
            let latest = keys.entry(key.clone()).or_insert(Latest {
                value: None,
                writes: 0,
            });
            latest.value = value;
            latest.writes += 1;
            touched.push(key);
        }
        *self.clears.borrow_mut() += clears;
        Release {
            in_flight: Rc::clone(self),
            keys: touched,
            clears,
        }
    }

    /// Forgets a write's keys. Writes are answered in whatever order their
    /// clients poll them, not the log's: while a clear is in flight, a key
    /// whose last write was answered keeps its entry, because the state may
    /// not show it yet through the clear's eyes (the clear hides every key
    /// it has no entry for); they all go once the last clear is answered.
    fn release(&self, touched: &[Bytes], clears: u32) {
        let clears_left = {
            let mut in_flight = self.clears.borrow_mut();
            *in_flight -= clears;
            *in_flight
        };
        let mut keys = self.keys.borrow_mut();
        for key in touched {
            if let Some(latest) = keys.get_mut(key) {
                latest.writes -= 1;
                if latest.writes == 0 && clears_left == 0 {
                    keys.remove(key);
                }
            }
        }
        if clears > 0 && clears_left == 0 {
            keys.retain(|_, latest| latest.writes > 0);
        }
    }

    /// Keys with a write in flight.
    pub fn len(&self) -> usize {
        self.keys.borrow().len()
    }

    /// Whether no write is in flight.
    pub fn is_empty(&self) -> bool {
        self.keys.borrow().is_empty() && *self.clears.borrow() == 0
    }
}

/// Forgets a write's keys when dropped.
pub struct Release {
    in_flight: Rc<InFlight>,
    keys: Vec<Bytes>,
    clears: u32,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.in_flight.release(&self.keys, self.clears);
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
}
