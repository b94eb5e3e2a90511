//! The appenders' queue in front of the WAL actor.
//!
//! An actix message per append would cost a mailbox round trip per record;
//! instead appenders push into this shared queue and only the push that finds
//! it idle wakes the actor, which then takes everything queued at once. That
//! batch is what one `write` and one `fdatasync` serve (group commit).
//! Measured on the 2-core machine the benchmarks run on: 64 tasks sending
//! an actix message with a reply per 100-byte append to an actor that does
//! nothing with it peak at 2.6M messages/s, about 380 ns of the actor's
//! thread each, before any encoding, writing or acknowledging; `none` mode
//! appends at about 1M/s in all. This queue costs the actor one swap per
//! batch, whatever the batch's size. The shared memory stays here for that.
//! What may enter is bounded by the [`Gate`] it holds (see `admission`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::Addr;
use tokio::sync::oneshot;

use crate::actors::messages::Drain;
use crate::actors::wal::WalActor;
use crate::entry::{Entry, Seq};
use crate::error::{Error, Result};
use crate::log::admission::{Admission, Gate};
use crate::stats::WalCounters;

/// Where an appender's answer goes: the sequence number it was given.
pub(crate) type Reply = oneshot::Sender<Result<Seq>>;

/// One queued request, answered through its `reply`.
pub(crate) enum Request {
    /// Write `entry` as the next record; `permit` is its room in the
    /// queue, given back once the record is applied (or the append fails,
    /// or the request is dropped).
    Append {
        entry: Entry,
        reply: Reply,
        permit: Admission,
        /// When it was queued: its latency is recorded where it is
        /// acknowledged, with one clock reading for a whole group.
        queued: Instant,
    },
    /// Make everything queued before this durable; answered with the last
    /// sequence number written.
    Sync { reply: Reply },
    /// Seal the active segment if it holds records; answered once the next
    /// one is in place, with the last sequence number sealed.
    Rotate { reply: Reply },
    /// A log's truncation: drop every record after `after` (see
    /// `WalActor`); answered with `after` once the drop is durable.
    Truncate { after: Seq, reply: Reply },
}

impl Request {
    /// Answers the request with an error.
    pub(crate) fn fail(self, error: Error) {
        let reply = match self {
            // The room goes back before the answer, so an appender that
            // has its answer finds it free.
            Request::Append { reply, permit, .. } => {
                drop(permit);
                reply
            }
            Request::Sync { reply }
            | Request::Rotate { reply }
            | Request::Truncate { reply, .. } => reply,
        };
        // The appender may have given up waiting; nothing to do then.
        let _ = reply.send(Err(error));
    }
}

/// Why the inbox refuses new requests.
#[derive(Debug, Clone)]
pub(crate) enum Closed {
    /// `shutdown` was called.
    ShutDown,
    /// The WAL actor died and is being restarted.
    Restarting,
    /// A write or sync failed (the cause, shared with every request it
    /// refuses); the log accepts nothing until reopened.
    Failed(Arc<Error>),
}

impl Closed {
    fn error(&self) -> Error {
        match self {
            Closed::ShutDown => Error::ShutDown,
            Closed::Restarting => Error::ActorDied,
            Closed::Failed(cause) => Error::refused(cause),
        }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// A wake-up is on its way to the actor; later pushes need not send one.
    wake_pending: bool,
    closed: Option<Closed>,
    wal: Option<Addr<WalActor>>,
}

/// The shared request queue.
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Admission of appends; closed with the inbox for good (shutdown or
    /// a failed log), never for a restart.
    gate: Gate,
}

impl Inbox {
    /// An empty inbox admitting at most `max_pending_bytes` of appends at a
    /// time, counted in `counters.pending_bytes`.
    pub(crate) fn new(max_pending_bytes: u64, counters: Arc<WalCounters>) -> Inbox {
        Inbox {
            state: Mutex::default(),
            gate: Gate::new(max_pending_bytes, counters),
        }
    }

    /// The admission gate.
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Why the inbox refuses requests; [`Error::ShutDown`] if it does not
    /// (yet): the gate only closes with it.
    pub(crate) fn refusal(&self) -> Error {
        self.lock()
            .closed
            .as_ref()
            .map_or(Error::ShutDown, Closed::error)
    }

    /// Refuses the admissions of a closed inbox too, unless it only waits
    /// for a restart (called with the state lock released).
    fn close_gate_for(&self, why: &Closed) {
        if !matches!(why, Closed::Restarting) {
            self.gate.close();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere never leaves the queue half-updated: every
        // critical section is a push, a swap or a flag change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request, waking the WAL actor if it is idle; a closed inbox
    /// refuses it with the reason.
    pub(crate) fn push(&self, request: Request) -> Result<()> {
        self.push_with(|queue| queue.push(request))
    }

    /// Queues `requests` together, in order: nothing another appender
    /// pushes lands between them. A closed inbox refuses them all.
    pub(crate) fn push_all(&self, mut requests: Vec<Request>) -> Result<()> {
        self.push_with(|queue| queue.append(&mut requests))
    }

    /// Adds to the queue under its lock, unless it is closed, and wakes the actor.
    fn push_with(&self, add: impl FnOnce(&mut Vec<Request>)) -> Result<()> {
        let mut state = self.lock();
        if let Some(closed) = &state.closed {
            return Err(closed.error());
        }
        add(&mut state.requests);
        let wake = if state.wake_pending {
            None
        } else {
            state.wake_pending = true;
            state.wal.clone()
        };
        drop(state);
        if let Some(wal) = wake {
            wal.do_send(Drain);
        }
        Ok(())
    }

    /// Moves every queued request into `into`; the next push wakes the actor again.
    pub(crate) fn take(&self, into: &mut Vec<Request>) {
        let mut state = self.lock();
        state.wake_pending = false;
        if into.is_empty() {
            // A swap, not a copy: the queue keeps `into`'s allocation.
            std::mem::swap(into, &mut state.requests);
        } else {
            into.append(&mut state.requests);
        }
    }

    /// Refuses new requests from now on; queued ones stay for the actor.
    pub(crate) fn close(&self, why: Closed) {
        {
            let mut state = self.lock();
            if !matches!(state.closed, Some(Closed::Failed(_))) {
                state.closed = Some(why.clone());
            }
        }
        self.close_gate_for(&why);
    }

    /// Refuses new requests and fails every queued one with the reason.
    pub(crate) fn close_and_fail(&self, why: Closed) {
        let requests = {
            let mut state = self.lock();
            if !matches!(state.closed, Some(Closed::Failed(_))) {
                state.closed = Some(why.clone());
            }
            std::mem::take(&mut state.requests)
        };
        self.close_gate_for(&why);
        for request in requests {
            request.fail(why.error());
        }
    }

    /// Accepts requests again, delivered to `wal` — unless the log failed,
    /// which only reopening the store clears.
    pub(crate) fn open(&self, wal: Addr<WalActor>) {
        let mut state = self.lock();
        if !matches!(state.closed, Some(Closed::Failed(_))) {
            state.closed = None;
        }
        state.wal = Some(wal);
        if !state.requests.is_empty() {
            state.wake_pending = true;
            if let Some(wal) = &state.wal {
                wal.do_send(Drain);
            }
        } else {
            state.wake_pending = false;
        }
    }

    /// Whether no request is waiting.
    /// Whether a failed write or sync closed it: the log refuses every
    /// write until it is reopened.
    pub(crate) fn refuses_after_failure(&self) -> bool {
        self.failure().is_some()
    }

    /// The failure the log refuses every request for, if it does.
    pub(crate) fn failure(&self) -> Option<Arc<Error>> {
        match &self.lock().closed {
            Some(Closed::Failed(cause)) => Some(Arc::clone(cause)),
            _ => None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().requests.is_empty()
    }
}
