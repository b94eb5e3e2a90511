//! What the log stores: operations, atomic batches of them, and records
//! (an entry with the sequence number the log gave it).

use serde::{Deserialize, Serialize};

/// A log sequence number. Every record gets the next one; they start at 1,
/// never repeat, and continue across restarts.
pub type Seq = u64;

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Set {
        /// The key (never empty).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Its new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key (never empty).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Sets `key` to `value` until the wall-clock time `expires_at`, in
    /// milliseconds since the Unix epoch: from then on reads no longer see
    /// it, as Redis's `PXAT`. An absolute time, so that replaying the log
    /// later never extends a key's life. Declared after the variants logs
    /// already hold, so that their bincode indexes stay the same.
    SetExpiring {
        /// The key (never empty).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Its new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// When it expires: milliseconds since the Unix epoch.
        expires_at: u64,
    },
    /// Removes every key, as Redis's `FLUSHALL`: one small record however
    /// many keys there are.
    Clear,
}

impl Op {
    /// The key this operation changes (`None` for [`Op::Clear`], which
    /// changes them all).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Set { key, .. } | Op::Delete { key } | Op::SetExpiring { key, .. } => Some(key),
            Op::Clear => None,
        }
    }

    /// The value this operation sets, if it sets one.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Set { value, .. } | Op::SetExpiring { value, .. } => Some(value),
            Op::Delete { .. } | Op::Clear => None,
        }
    }
}

/// `time` in milliseconds since the Unix epoch, the unit of
/// [`Op::SetExpiring`]'s `expires_at` (0 before the epoch).
pub fn unix_millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one record holds: a single operation, or a batch applied atomically
/// (recovered whole or not at all, because it is one checksummed record),
/// or an opaque payload of a [`Log`](crate::Log).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Entry {
    /// One operation.
    Op(Op),
    /// Operations applied in order, all or none.
    Batch(Vec<Op>),
    /// Bytes the log does not interpret: a [`Log`](crate::Log)'s records.
    /// Declared last so that the variants before it keep their bincode
    /// indexes (0 and 1) and every log written before it still decodes the
    /// same. A key-value [`Store`](crate::Store) refuses to append one and
    /// its state ignores one.
    Raw(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Entry {
    /// The key-value operations of this entry, in order (none for
    /// [`Entry::Raw`]).
    pub fn ops(&self) -> &[Op] {
        match self {
            Entry::Op(op) => std::slice::from_ref(op),
            Entry::Batch(ops) => ops,
            Entry::Raw(_) => &[],
        }
    }
}

/// An entry as the log holds it: with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The sequence number the log gave it.
    pub seq: Seq,
    /// What it holds.
    pub entry: Entry,
}
