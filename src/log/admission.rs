//! Admission to the inbox: at most `limits.max_pending_bytes` of appends
//! accepted and not yet in the key-value state.
//!
//! The inbox itself is unbounded (the WAL actor takes everything queued at
//! once), so without this a producer that submits faster than the disk
//! syncs would grow it without limit. Each append first takes permits for
//! its estimated size from a FIFO semaphore, waiting while the bound is
//! reached; the permits travel with the request, then, merged with those
//! of the rest of its write, with its record into the state's queue, and go
//! back once the state's applier has applied it (so an applier slower than
//! the disk slows the appenders too), or just before a failed append is
//! answered, or when the request is dropped unanswered (a dead actor, a
//! refused push).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::entry::{Entry, Op};
use crate::stats::WalCounters;

/// Bytes counted per operation besides its key and value: the varint
/// lengths and the tag (also what `check_entry` allows for).
pub(crate) const OP_OVERHEAD_BYTES: u64 = 21;
/// Bytes counted per record besides its operations: the batch header.
pub(crate) const RECORD_OVERHEAD_BYTES: u64 = 16;

/// Bytes counted for a deadline: a varint of up to 9 bytes.
const DEADLINE_BYTES: u64 = 9;

/// The bytes one operation is counted for: its key and value plus at most
/// what its encoding adds, never less than it encodes to.
pub(crate) fn op_bytes(op: &Op) -> u64 {
    let key = op.key().map_or(0, <[u8]>::len) as u64;
    let value = op.value().map_or(0, <[u8]>::len) as u64;
    let deadline = match op {
        Op::SetExpiring { .. } => DEADLINE_BYTES,
        Op::Set { .. } | Op::Delete { .. } | Op::Clear => 0,
    };
    key + value + deadline + OP_OVERHEAD_BYTES
}

/// The bytes an entry is admitted for: its keys and values plus the
/// encoding's overhead (close to its encoded size, cheap to compute).
pub(crate) fn estimated_bytes(entry: &Entry) -> u64 {
    entry.ops().iter().map(op_bytes).sum::<u64>()
        + match entry {
            // A log's payload has no operations: its bytes are all of it.
            Entry::Raw(payload) => payload.len() as u64,
            Entry::Op(_) | Entry::Batch(_) => 0,
        }
        + RECORD_OVERHEAD_BYTES
}

/// The bound on the appends in flight.
pub(crate) struct Gate {
    /// Fair (FIFO): a large record waiting at the front is not overtaken
    /// by a stream of small ones, so it is never starved.
    shared: Arc<GateShared>,
}

/// What the gate and every admission it gave share.
struct GateShared {
    semaphore: Semaphore,
    /// The semaphore's permits (one per byte): the most one admission
    /// takes, so a record larger than the bound waits for an empty queue
    /// instead of forever.
    capacity: u32,
    counters: Arc<WalCounters>,
}

impl GateShared {
    /// Gives `permits` back. Counted out before the permits return, so
    /// `pending_bytes` never reads above what the semaphore holds.
    fn release(&self, permits: u32) {
        if permits > 0 {
            self.counters
                .pending_bytes
                .fetch_sub(u64::from(permits), Relaxed);
            self.semaphore.add_permits(permits as usize);
        }
    }
}

impl Gate {
    /// A gate letting `max_pending_bytes` in (at most `u32::MAX`, what one
    /// acquisition can take; the configuration allows 4 GiB, one byte more).
    pub(crate) fn new(max_pending_bytes: u64, counters: Arc<WalCounters>) -> Gate {
        let capacity = max_pending_bytes
            .min(u64::from(u32::MAX))
            .min(Semaphore::MAX_PERMITS as u64)
            .max(1);
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        Gate {
            shared: Arc::new(GateShared {
                semaphore: Semaphore::new(capacity as usize),
                capacity,
                counters,
            }),
        }
    }

    /// The permits `bytes` takes: all of them at most.
    pub(crate) fn permits_for(&self, bytes: u64) -> u32 {
        let capacity = self.shared.capacity;
        u32::try_from(bytes.min(u64::from(capacity))).unwrap_or(capacity)
    }

    /// Waits (in turn) until `bytes` fit under the bound; `None` once the
    /// gate is closed. Room free at once is taken without a wait's
    /// bookkeeping: while anyone waits, the semaphore hands every freed
    /// permit to the first in line, so none is free to jump the queue.
    /// Either way the admission counts against the task's budget, as a
    /// wait would: an appender whose appends are refused at once (the WAL
    /// restarting) and who retries in a loop still yields to the runtime,
    /// where the restart runs.
    pub(crate) async fn admit(&self, bytes: u64) -> Option<Admission> {
        tokio::task::consume_budget().await;
        let permits = self.permits_for(bytes);
        let semaphore = &self.shared.semaphore;
        match semaphore.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(_) => semaphore.acquire_many(permits).await.ok()?.forget(),
        }
        self.shared
            .counters
            .pending_bytes
            .fetch_add(u64::from(permits), Relaxed);
        Some(Admission {
            permits,
            gate: Arc::clone(&self.shared),
        })
    }

    /// Wakes every waiting appender with a refusal, and every later one:
    /// the store accepts nothing more.
    pub(crate) fn close(&self) {
        self.shared.semaphore.close();
    }

    /// Whether `admission` was given by this gate.
    pub(crate) fn gave(&self, admission: &Admission) -> bool {
        Arc::ptr_eq(&admission.gate, &self.shared)
    }
}

/// Room for one append under `limits.max_pending_bytes`, taken with
/// [`Store::admit`] and spent with [`Store::submit_admitted`]. It is given
/// back once the append is in the state (or answered with a failure), or
/// when it is dropped unused.
///
/// The room is a count of permits taken from the gate's semaphore and
/// given back by hand: a permit object per append cost an atomic count of
/// the semaphore's references at every step (take, merge, drop), on a line
/// the applier's thread writes too.
///
/// [`Store::admit`]: crate::Store::admit
/// [`Store::submit_admitted`]: crate::Store::submit_admitted
#[must_use = "an admission holds room in the queue until it is used or dropped"]
pub struct Admission {
    permits: u32,
    gate: Arc<GateShared>,
}

impl Admission {
    /// The bytes of room it holds.
    pub fn bytes(&self) -> u64 {
        u64::from(self.permits)
    }

    /// Splits `bytes` of room (all it has, at most) off into an admission
    /// of its own: a batch admitted whole, then queued as several appends,
    /// each giving its part back when it is answered.
    pub(crate) fn split_off(&mut self, bytes: u64) -> Admission {
        let take = u32::try_from(bytes.min(self.bytes())).unwrap_or(self.permits);
        self.permits -= take;
        Admission {
            permits: take,
            gate: Arc::clone(&self.gate),
        }
    }

    /// Takes `other`'s room into `into`'s, to be given back together (one
    /// release instead of one per append); `other` itself if `into` holds
    /// none. Both come from the same gate. (An admission from another gate
    /// is given back at once instead.)
    pub(crate) fn gather(into: &mut Option<Admission>, mut other: Admission) {
        match into {
            None => *into = Some(other),
            Some(held) if Arc::ptr_eq(&held.gate, &other.gate) => {
                // Both are permits of one semaphore, whose total fits in a `u32`.
                held.permits += std::mem::take(&mut other.permits);
            }
            Some(_) => {}
        }
    }

    /// Gives back everything above `bytes` at once, rather than when the
    /// append is answered.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        let keep = u32::try_from(bytes.min(self.bytes())).unwrap_or(self.permits);
        self.gate.release(self.permits - keep);
        self.permits = keep;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.release(self.permits);
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn admissions_wait_in_turn_and_a_record_larger_than_the_bound_takes_it_whole() {
        let counters = Arc::new(WalCounters::default());
        let gate = Gate::new(100, Arc::clone(&counters));
        let first = gate.admit(60).await.expect("room");
        assert_eq!(counters.pending_bytes.load(Relaxed), 60);
        // The large one queues first; a small one that would fit waits behind it.
        let large = gate.admit(1_000);
        let small = gate.admit(10);
        tokio::pin!(large, small);
        assert!(futures_poll_once(large.as_mut()).await.is_none());
        assert!(futures_poll_once(small.as_mut()).await.is_none(), "FIFO");
        drop(first);
        let large = large.await.expect("the whole bound");
        assert_eq!(large.bytes(), 100);
        assert_eq!(counters.pending_bytes.load(Relaxed), 100);
        drop(large);
        let mut small = small.await.expect("room");
        small.shrink_to(4);
        assert_eq!(counters.pending_bytes.load(Relaxed), 4);
        gate.close();
        assert!(gate.admit(1).await.is_none(), "closed");
        drop(small);
        assert_eq!(counters.pending_bytes.load(Relaxed), 0);
    }

    /// Polls `future` once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
