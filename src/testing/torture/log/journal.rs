//! What the tasks of a cycle observe, each observation at its tick of the
//! cycle's clock, and the workload as the next open checks it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Instant;

use crate::entry::Seq;
use crate::error::Error;

/// Where a payload's label ends.
pub(super) const LABEL_END: u8 = b'|';

/// Where an observation falls among the others of its cycle.
pub(super) type Tick = u64;

/// A payload handed to the log in the last cycle, and what became of it.
#[derive(Debug, Clone)]
pub(super) struct Appended {
    pub(super) label: String,
    pub(super) payload: Vec<u8>,
    /// Its batch and its place in it.
    pub(super) batch: Option<(usize, usize)>,
    /// The ticks between which it was queued (the same tick twice through
    /// `submit`); `None` if it was refused before it could be.
    pub(super) queued: Option<(Tick, Tick)>,
    /// Refused as invalid (over the limit, or in a batch with one that is).
    pub(super) invalid: bool,
    pub(super) acked: Option<Seq>,
    /// A payload of a batch answered with an error: each payload is
    /// acknowledged on its own, so this one may have been.
    pub(super) maybe_acked: bool,
    pub(super) submitted_at: Instant,
    pub(super) acked_at: Option<Instant>,
}

impl Appended {
    /// When it was queued, at the earliest and at the latest.
    pub(super) fn queued(&self) -> (Tick, Tick) {
        self.queued.unwrap_or((Tick::MAX, Tick::MAX))
    }
}

/// How a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not yet.
    Pending,
    Acked,
    /// Refused as invalid: nothing was done.
    Refused,
    /// Another error: it may or may not have been done.
    Failed,
}

/// A call that changes the log's ends or its metadata, or a sync.
#[derive(Debug, Clone)]
pub(super) struct Call<T> {
    pub(super) arg: T,
    pub(super) called: Tick,
    pub(super) answered: Option<Tick>,
    pub(super) outcome: Outcome,
    /// The power was on at the call and off at the answer.
    pub(super) cut_inside: bool,
    /// `last_seq` just before the call.
    pub(super) last: Seq,
}

impl<T> Call<T> {
    pub(super) fn acked(&self) -> bool {
        self.outcome == Outcome::Acked
    }

    /// Whether it may have been done: acknowledged, or answered with an
    /// error that does not say it was not.
    pub(super) fn may_have_happened(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Acked | Outcome::Failed | Outcome::Pending
        )
    }

    /// Not acknowledged, yet maybe done.
    pub(super) fn in_doubt(&self) -> bool {
        matches!(self.outcome, Outcome::Failed | Outcome::Pending)
    }

    /// Acknowledged before `tick`.
    pub(super) fn acked_before(&self, tick: Tick) -> bool {
        self.acked() && self.answered.is_some_and(|at| at < tick)
    }

    /// The tick of its answer, or never.
    pub(super) fn answered_or_never(&self) -> Tick {
        self.answered.unwrap_or(Tick::MAX)
    }
}

/// A read of a range, as the reader saw it.
#[derive(Debug)]
pub(super) struct ReadSeen {
    pub(super) range: (Bound<Seq>, Bound<Seq>),
    pub(super) called: Tick,
    /// `first_seq` just before and just after the call, `last_seq` before.
    pub(super) first_before: Seq,
    pub(super) first_after: Seq,
    pub(super) last_before: Seq,
    /// The read's bound (`LogEntries::end`), unless the call failed.
    pub(super) end: Option<Seq>,
    pub(super) records: Vec<(Seq, Vec<u8>)>,
    pub(super) error: Option<Error>,
    pub(super) finished: Tick,
    /// The power was off, or an injected fault had fired, when it finished.
    pub(super) troubled: bool,
}

/// A subscription, as the subscriber saw it.
#[derive(Debug)]
pub(super) struct SubscriptionSeen {
    pub(super) from: Seq,
    pub(super) called: Tick,
    /// Each record with the tick of its delivery.
    pub(super) records: Vec<(Seq, Vec<u8>, Tick)>,
    /// How it ended (`None`: the log shut down) and when.
    pub(super) end: Option<(Option<Error>, Tick)>,
    pub(super) troubled: bool,
}

/// What the tasks of a cycle observe, in the order of their ticks. Shared
/// by the tasks on the runtime's one thread.
#[derive(Debug, Default)]
pub(super) struct Journal {
    pub(super) clock: Cell<Tick>,
    pub(super) appends: RefCell<Vec<Appended>>,
    pub(super) batches: Cell<usize>,
    pub(super) truncations: RefCell<Vec<Call<Seq>>>,
    pub(super) purges: RefCell<Vec<Call<Seq>>>,
    pub(super) metadata: RefCell<Vec<Call<Vec<u8>>>>,
    pub(super) syncs: RefCell<Vec<Call<()>>>,
    pub(super) reads: RefCell<Vec<ReadSeen>>,
    pub(super) subscriptions: RefCell<Vec<SubscriptionSeen>>,
    /// Answers that were errors other than refusals: the last check of a
    /// cycle runs only without them.
    pub(super) errors: Cell<u64>,
}

impl Journal {
    pub(super) fn tick(&self) -> Tick {
        let tick = self.clock.get() + 1;
        self.clock.set(tick);
        tick
    }

    pub(super) fn register(&self, appended: Appended) -> usize {
        let mut appends = self.appends.borrow_mut();
        appends.push(appended);
        appends.len() - 1
    }

    pub(super) fn failed(&self) {
        self.errors.set(self.errors.get() + 1);
    }

    /// The acknowledged batches of two or more records, as (first, count).
    pub(super) fn acked_batches(&self) -> Vec<(Seq, u64)> {
        let appends = self.appends.borrow();
        let mut batches: BTreeMap<usize, (Seq, u64)> = BTreeMap::new();
        for a in appends.iter() {
            if let (Some((batch, index)), Some(seq)) = (a.batch, a.acked) {
                let entry = batches.entry(batch).or_insert((seq, 0));
                if index == 0 {
                    entry.0 = seq;
                }
                entry.1 += 1;
            }
        }
        batches.into_values().filter(|(_, n)| *n >= 2).collect()
    }
}

/// The last cycle's workload, as the next open checks it.
#[derive(Debug, Default)]
pub(super) struct Cycle {
    pub(super) appends: Vec<Appended>,
    pub(super) labels: HashMap<String, usize>,
    pub(super) truncations: Vec<Call<Seq>>,
    pub(super) purges: Vec<Call<Seq>>,
    pub(super) metadata: Vec<Call<Vec<u8>>>,
    pub(super) syncs: Vec<Call<()>>,
}

impl Cycle {
    pub(super) fn from_journal(journal: &Journal) -> Cycle {
        let appends = journal.appends.take();
        let labels = appends
            .iter()
            .enumerate()
            .map(|(i, a)| (a.label.clone(), i))
            .collect();
        Cycle {
            appends,
            labels,
            truncations: journal.truncations.take(),
            purges: journal.purges.take(),
            metadata: journal.metadata.take(),
            syncs: journal.syncs.take(),
        }
    }

    /// The payload appended in this cycle with `payload`'s label.
    pub(super) fn appended(&self, payload: &[u8]) -> Option<usize> {
        let label = label_of(payload)?;
        self.labels.get(label).copied()
    }

    /// The metadata the acknowledged writes leave (`before` if none was
    /// acknowledged), and the values of the writes after the last of them
    /// that may have been done.
    pub(super) fn metadata_allowed(
        &self,
        before: &Option<Vec<u8>>,
    ) -> (Option<Vec<u8>>, Vec<&[u8]>) {
        let last_acked = self.metadata.iter().rposition(Call::acked);
        let acked =
            last_acked.map_or_else(|| before.clone(), |i| Some(self.metadata[i].arg.clone()));
        let after = last_acked.map_or(0, |i| i + 1);
        let in_doubt = self.metadata[after..]
            .iter()
            .filter(|c| c.in_doubt())
            .map(|c| c.arg.as_slice())
            .collect();
        (acked, in_doubt)
    }
}

/// A payload's label, if it has one.
pub(super) fn label_of(payload: &[u8]) -> Option<&str> {
    let end = payload.iter().take(64).position(|b| *b == LABEL_END)?;
    std::str::from_utf8(&payload[..end])
        .ok()
        .filter(|l| l.starts_with('c'))
}

/// Names a payload in messages: its label, or its size.
pub(super) fn name(payload: &[u8]) -> String {
    label_of(payload).map_or_else(
        || format!("{} unlabelled bytes", payload.len()),
        String::from,
    )
}

/// Names a metadata value in messages.
pub(super) fn describe_metadata(value: Option<&[u8]>) -> String {
    match value {
        None => "never set".into(),
        Some(bytes) => format!(
            "{} bytes beginning {:02x?}",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ),
    }
}
