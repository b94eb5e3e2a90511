//! Acknowledged operations waiting for the applier, copied into one buffer.
//!
//! The queue held the records themselves until the applier was done with
//! them, so every key and value was allocated on the appending thread and
//! freed on the applier's: glibc then spent more time moving those chunks
//! between the threads' caches and arenas than the applier spent applying.
//! Copied here as the records are acknowledged, they are freed on the
//! thread that allocated them, where the next append reuses their memory,
//! and the applier frees nothing per operation.
//!
//! Records are queued as soon as they are written, before they are
//! acknowledged, each with its sequence number: the appending thread copies
//! them while it still holds them, and the thread that acknowledges them
//! (after an `fdatasync`, in `always`) only moves a mark. Only the records
//! up to that mark are applied.

use crate::entry::{Entry, Op, Seq};

/// One operation as the state applies it, borrowed from a record or from
/// the queue.
#[derive(Clone, Copy)]
pub(crate) enum OpRef<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
    },
    SetExpiring {
        key: &'a [u8],
        value: &'a [u8],
        expires_at: u64,
    },
    Delete {
        key: &'a [u8],
    },
    Clear,
}

impl<'a> OpRef<'a> {
    pub(crate) fn key(self) -> Option<&'a [u8]> {
        match self {
            OpRef::Set { key, .. } | OpRef::SetExpiring { key, .. } | OpRef::Delete { key } => {
                Some(key)
            }
            OpRef::Clear => None,
        }
    }
}

impl<'a> From<&'a Op> for OpRef<'a> {
    fn from(op: &'a Op) -> OpRef<'a> {
        match op {
            Op::Set { key, value } => OpRef::Set { key, value },
            Op::SetExpiring {
                key,
                value,
                expires_at,
            } => OpRef::SetExpiring {
                key,
                value,
                expires_at: *expires_at,
            },
            Op::Delete { key } => OpRef::Delete { key },
            Op::Clear => OpRef::Clear,
        }
    }
}

/// The most of an emptied buffer kept for reuse: a steady load's queue
/// between two flushes fits many times over.
const KEPT_BYTES: usize = 1 << 20;

const SET: u8 = 0;
const SET_EXPIRING: u8 = 1;
const DELETE: u8 = 2;
const CLEAR: u8 = 3;

/// Queued operations, in order: per operation a tag byte, then the key
/// and the value each after its length (4 bytes, native order), then a
/// deadline's 8 bytes. Only [`Queued::push`] writes it and only
/// [`Ops`] reads it, in the same process.
#[derive(Default)]
pub(crate) struct Queued {
    bytes: Vec<u8>,
    /// Each record's sequence number and where its operations start in
    /// `bytes`, in sequence order.
    starts: Vec<(Seq, usize)>,
    /// Records before this one were taken (see [`Queued::take_front`]).
    head: usize,
}

impl Queued {
    /// Copies the operations of record `seq`, holding `entry`, in; `seq`
    /// follows every record queued.
    pub(crate) fn push(&mut self, seq: Seq, entry: &Entry) {
        debug_assert!(self.starts.last().is_none_or(|(last, _)| *last < seq));
        self.starts.push((seq, self.bytes.len()));
        for op in entry.ops() {
            match op {
                Op::Set { key, value } => {
                    self.bytes.push(SET);
                    self.slice(key);
                    self.slice(value);
                }
                Op::SetExpiring {
                    key,
                    value,
                    expires_at,
                } => {
                    self.bytes.push(SET_EXPIRING);
                    self.slice(key);
                    self.slice(value);
                    self.bytes.extend_from_slice(&expires_at.to_ne_bytes());
                }
                Op::Delete { key } => {
                    self.bytes.push(DELETE);
                    self.slice(key);
                }
                Op::Clear => self.bytes.push(CLEAR),
            }
        }
    }

    fn slice(&mut self, bytes: &[u8]) {
        // Keys and values are bounded by `limits` far below 4 GiB.
        let len = u32::try_from(bytes.len())
            .unwrap_or_else(|_| unreachable!("a key or value of {} bytes", bytes.len()));
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(bytes);
    }

    /// Records queued.
    pub(crate) fn records(&self) -> usize {
        self.starts.len() - self.head
    }

    /// The sequence number of the first record queued.
    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.starts.get(self.head).map(|(seq, _)| *seq)
    }

    /// How many records queued are numbered `seq` or less.
    pub(crate) fn records_through(&self, seq: Seq) -> usize {
        self.starts[self.head..].partition_point(|(queued, _)| *queued <= seq)
    }

    /// Moves the first `n` records (all there are, at most) to the end of
    /// `into`: a copy of them alone, however many stay behind.
    pub(crate) fn take_front(&mut self, n: usize, into: &mut Queued) {
        let end = (self.head + n).min(self.starts.len());
        if end == self.head {
            return;
        }
        let from = self.starts[self.head].1;
        let to = self.starts.get(end).map_or(self.bytes.len(), |(_, at)| *at);
        let base = into.bytes.len();
        into.bytes.extend_from_slice(&self.bytes[from..to]);
        into.starts.extend(
            self.starts[self.head..end]
                .iter()
                .map(|(seq, start)| (*seq, start - from + base)),
        );
        self.head = end;
        if self.head == self.starts.len() {
            self.bytes.clear();
            self.starts.clear();
            self.head = 0;
        } else if self.head * 2 > self.starts.len() {
            // Taken records go once they are most of the buffer: each
            // byte moves at most once more on average.
            self.bytes.drain(..to);
            self.starts.drain(..self.head);
            for (_, start) in &mut self.starts {
                *start -= to;
            }
            self.head = 0;
        }
    }

    /// Drops every record numbered `seq` or more.
    pub(crate) fn drop_from(&mut self, seq: Seq) {
        let kept =
            self.head + self.starts[self.head..].partition_point(|(queued, _)| *queued < seq);
        if let Some(&(_, from)) = self.starts.get(kept) {
            self.bytes.truncate(from);
            self.starts.truncate(kept);
            if kept == self.head {
                self.clear();
            }
        }
    }

    /// Empties the queue, keeping up to [`KEPT_BYTES`] of its buffer for
    /// the next records: a burst may have queued up to
    /// `limits.max_pending_bytes`, which must not stay allocated after it.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(KEPT_BYTES);
        self.starts.clear();
        self.starts.shrink_to(KEPT_BYTES / 64);
        self.head = 0;
    }

    /// The queued operations, in the order pushed.
    pub(crate) fn ops(&self) -> Ops<'_> {
        let from = self
            .starts
            .get(self.head)
            .map_or(self.bytes.len(), |(_, at)| *at);
        Ops {
            rest: &self.bytes[from..],
        }
    }
}

/// An iterator over queued operations; cloned to read ahead.
#[derive(Clone)]
pub(crate) struct Ops<'a> {
    rest: &'a [u8],
}

impl<'a> Ops<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        taken
    }

    fn slice(&mut self) -> &'a [u8] {
        let len = u32::from_ne_bytes(self.array());
        self.take(len as usize)
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N));
        array
    }
}

impl<'a> Iterator for Ops<'a> {
    type Item = OpRef<'a>;

    fn next(&mut self) -> Option<OpRef<'a>> {
        let [tag] = *self.rest.first_chunk::<1>()?;
        self.take(1);
        Some(match tag {
            SET => OpRef::Set {
                key: self.slice(),
                value: self.slice(),
            },
            SET_EXPIRING => OpRef::SetExpiring {
                key: self.slice(),
                value: self.slice(),
                expires_at: u64::from_ne_bytes(self.array()),
            },
            DELETE => OpRef::Delete { key: self.slice() },
            CLEAR => OpRef::Clear,
            _ => unreachable!("the queue holds only what `push` wrote"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_out_as_they_went_in() {
        let entries = [
            Entry::Op(Op::Set {
                key: b"k".to_vec(),
                value: b"value".to_vec(),
            }),
            Entry::Batch(vec![
                Op::SetExpiring {
                    key: b"e".to_vec(),
                    value: Vec::new(),
                    expires_at: u64::MAX - 1,
                },
                Op::Delete { key: Vec::new() },
                Op::Clear,
            ]),
            Entry::Op(Op::Delete {
                key: b"gone".to_vec(),
            }),
        ];
        let mut queued = Queued::default();
        for (seq, entry) in (10..).zip(&entries) {
            queued.push(seq, entry);
        }
        assert_eq!(queued.records(), 3);
        let described = |entries: &[Entry]| -> Vec<String> {
            entries
                .iter()
                .flat_map(Entry::ops)
                .map(|op| describe(OpRef::from(op)))
                .collect()
        };
        let found: Vec<String> = queued.ops().map(describe).collect();
        assert_eq!(found, described(&entries));

        // Split after the first record: the rest lands after what the
        // other queue holds, with its sequence numbers.
        assert_eq!(queued.records_through(10), 1);
        assert_eq!(queued.records_through(9), 0);
        assert_eq!(queued.records_through(u64::MAX), 3);
        // Take the first record: it lands after what the other queue
        // holds, with its sequence number, and the rest stay.
        let mut taken = Queued::default();
        taken.push(5, &entries[2]);
        queued.take_front(1, &mut taken);
        assert_eq!(
            taken.ops().map(describe).collect::<Vec<_>>(),
            described(&[entries[2].clone(), entries[0].clone()])
        );
        assert_eq!((taken.first_seq(), taken.records_through(10)), (Some(5), 2));
        assert_eq!(
            queued.ops().map(describe).collect::<Vec<_>>(),
            described(&entries[1..])
        );
        assert_eq!((queued.first_seq(), queued.records()), (Some(11), 2));
        assert_eq!(queued.records_through(11), 1);
        // Past the rest, a taken record and the ones after it are dropped.
        queued.drop_from(12);
        assert_eq!(
            queued.ops().map(describe).collect::<Vec<_>>(),
            described(&entries[1..2])
        );
        queued.push(12, &entries[0]);
        queued.take_front(5, &mut taken);
        assert_eq!((queued.records(), queued.ops().next().is_none()), (0, true));
        assert_eq!(taken.records(), 4);
        taken.drop_from(0);
        assert!(taken.first_seq().is_none() && taken.ops().next().is_none());
    }

    fn describe(op: OpRef<'_>) -> String {
        match op {
            OpRef::Set { key, value } => format!("set {key:?} {value:?}"),
            OpRef::SetExpiring {
                key,
                value,
                expires_at,
            } => format!("setex {key:?} {value:?} {expires_at}"),
            OpRef::Delete { key } => format!("del {key:?}"),
            OpRef::Clear => "clear".into(),
        }
    }
}
