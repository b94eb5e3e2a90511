//! The rules of what the log hands out while it runs: reads, the
//! subscription, the numbers appends get after an open and a truncation,
//! and a last read of the whole log (see the parent module for the rules).

use std::ops::Bound;

use super::journal::{name, Appended, Cycle, ReadSeen, SubscriptionSeen, Tick};
use super::model::{check_shape, Found, Model};
use super::workload::answered;
use crate::entry::Seq;
use crate::error::Error;
use crate::rawlog::Log;
use crate::testing::sim_fs::SimFs;

/// The checks of what the log handed out while it ran, made once the
/// cycle's tasks are done (acknowledgements arrive after the records are
/// readable).
pub(super) struct Live<'a> {
    /// The model as of this cycle's open.
    pub(super) model: &'a Model,
    /// This cycle's workload.
    pub(super) cycle: &'a Cycle,
}

impl Live<'_> {
    /// A record a read or a subscription handed out: never one a purge
    /// acknowledged before `began` (when the reader began) had purged, nor
    /// one a truncation acknowledged before `at` had dropped (for a read,
    /// when it began; for a subscription, the delivery: records it read
    /// ahead are checked against truncations as they are handed out, but
    /// against purges only as they are read, which may be before the purge).
    pub(super) fn check_record(
        &self,
        seq: Seq,
        payload: &[u8],
        began: Tick,
        at: Tick,
        what: &str,
    ) -> Result<(), String> {
        let cycle = self.cycle;
        if let Some(p) = cycle
            .purges
            .iter()
            .find(|p| p.acked_before(began) && seq < p.arg)
        {
            return Err(format!(
                "{what} handed out record {seq} ({}), which purge_before({}) had purged before",
                name(payload),
                p.arg
            ));
        }
        if self.model.record(seq) == Some(payload) {
            if let Some(t) = cycle
                .truncations
                .iter()
                .find(|t| t.acked_before(at) && seq > t.arg)
            {
                return Err(format!(
                    "{what} handed out record {seq} ({}), recovered at the open, which truncate_after({}) had dropped before",
                    name(payload),
                    t.arg
                ));
            }
            return Ok(());
        }
        let Some(i) = cycle.appended(payload) else {
            return Err(format!(
                "{what} handed out record {seq} ({}), which the log does not hold there",
                name(payload)
            ));
        };
        let a = &cycle.appends[i];
        if a.payload != payload {
            return Err(format!(
                "{what} handed out record {seq} with the label of {}, but not its bytes",
                a.label
            ));
        }
        if a.acked != Some(seq) && !a.maybe_acked {
            return Err(format!(
                "{what} handed out record {seq} ({}), which was not acknowledged with that number (acknowledged: {:?})",
                a.label, a.acked
            ));
        }
        if let Some(t) = cycle
            .truncations
            .iter()
            .find(|t| t.acked_before(at) && a.queued().1 < t.called && seq > t.arg)
        {
            return Err(format!(
                "{what} handed out record {seq} ({}), which truncate_after({}) had dropped before",
                a.label, t.arg
            ));
        }
        Ok(())
    }

    /// `Truncated { after }` at tick `at`, for a reader that began at
    /// `began` and wanted a record past `after`: a truncation after
    /// `after`, not acknowledged before the reader began, was called
    /// before.
    pub(super) fn check_truncated(
        &self,
        after: Seq,
        began: Tick,
        at: Tick,
        wanted: Seq,
        what: &str,
    ) -> Result<(), String> {
        let explained = self.cycle.truncations.iter().any(|t| {
            t.arg == after && t.called < at && !t.acked_before(began) && t.may_have_happened()
        });
        if !explained || wanted <= after {
            return Err(format!(
                "{what} ended with Truncated {{ after: {after} }} wanting record {wanted}, which no truncation made while it ran explains (truncations: {:?})",
                self.cycle.truncations.iter().map(|t| t.arg).collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// `Purged { upto }` at tick `at`, for a reader that wanted record
    /// `wanted`: that record is purged, by the open's `first_seq` or a
    /// purge called before.
    pub(super) fn check_purged(
        &self,
        upto: Seq,
        at: Tick,
        wanted: Seq,
        what: &str,
    ) -> Result<(), String> {
        let purged_to = self
            .cycle
            .purges
            .iter()
            .filter(|p| p.called < at && p.may_have_happened())
            .map(|p| p.arg)
            .fold(self.model.first, Seq::max);
        if wanted > upto || upto >= purged_to {
            return Err(format!(
                "{what} ended with Purged {{ upto: {upto} }} wanting record {wanted}, but the purges made reach only to {}",
                purged_to - 1
            ));
        }
        Ok(())
    }

    pub(super) fn check_read(&self, read: &ReadSeen) -> Result<(), String> {
        let what = format!("read({})", describe_range(&read.range));
        // An unbounded start is `first_seq` at the call, which a purge
        // finishing meanwhile (on its blocking thread) may have moved: it
        // lies between the two looks taken around the call.
        let start = match read.range.0 {
            Bound::Included(from) => from.max(1),
            Bound::Excluded(after) => after.saturating_add(1),
            Bound::Unbounded => read
                .records
                .first()
                .map_or(read.first_before, |(seq, _)| *seq)
                .clamp(read.first_before, read.first_after),
        };
        let range_end = match read.range.1 {
            Bound::Included(to) => to,
            Bound::Excluded(to) => to.saturating_sub(1),
            Bound::Unbounded => Seq::MAX,
        };
        let empty = match read.range.1 {
            Bound::Included(to) => to < start,
            Bound::Excluded(to) => to <= start,
            Bound::Unbounded => false,
        };
        let Some(end) = read.end else {
            return match &read.error {
                Some(Error::Purged { upto })
                    if start <= *upto
                        && read.first_before <= upto + 1
                        && *upto < read.first_after =>
                {
                    Ok(())
                }
                Some(e) if read.troubled && !matches!(e, Error::Corruption(_)) => Ok(()),
                e => Err(format!(
                    "{what} was refused: {e:?} (first_seq {} before, {} after)",
                    read.first_before, read.first_after
                )),
            };
        };
        if start < read.first_before && !empty && read.range.0 != Bound::Unbounded {
            return Err(format!(
                "{what} began below first_seq {} and was not refused",
                read.first_before
            ));
        }
        let latest_start = match read.range.0 {
            Bound::Unbounded => read.first_after,
            _ => start,
        };
        // The end the read takes is at least `last_seq` before the call,
        // unless a truncation under way moved it back meanwhile (on the
        // manifest's thread).
        let bounded = self
            .cycle
            .truncations
            .iter()
            .filter(|t| t.called < read.called && !t.acked_before(read.called))
            .map(|t| t.arg)
            .fold(range_end.min(read.last_before), Seq::min);
        if end > range_end || (end == 0 && latest_start <= bounded) || (end != 0 && end < bounded) {
            return Err(format!(
                "{what} reads up to {end}, but last_seq was {} when it began",
                read.last_before
            ));
        }
        let mut next = start;
        for (seq, payload) in &read.records {
            if *seq != next || *seq > end {
                return Err(format!(
                    "{what} handed out record {seq} where {next} was due (end {end})"
                ));
            }
            self.check_record(*seq, payload, read.called, read.called, &what)?;
            next += 1;
        }
        match &read.error {
            None if end != 0 && next <= end => Err(format!(
                "{what} ended at record {} without an error, before its end {end}",
                next - 1
            )),
            None => Ok(()),
            Some(Error::Truncated { after }) => {
                self.check_truncated(*after, read.called, read.finished, end.max(next), &what)
            }
            Some(Error::Purged { upto }) => self.check_purged(*upto, read.finished, next, &what),
            Some(e) if read.troubled && !matches!(e, Error::Corruption(_)) => Ok(()),
            Some(e) => Err(format!("{what} failed at record {next}: {e}")),
        }
    }

    pub(super) fn check_subscription(
        &self,
        sub: &SubscriptionSeen,
        shutdown: Tick,
    ) -> Result<(), String> {
        let what = format!("subscribe({})", sub.from);
        let mut next = sub.from;
        for (seq, payload, at) in &sub.records {
            if *seq != next {
                return Err(format!(
                    "{what} delivered record {seq} where {next} was due"
                ));
            }
            self.check_record(*seq, payload, sub.called, *at, &what)?;
            next += 1;
        }
        match &sub.end {
            None => Err(format!("{what} was still running after the log shut down")),
            Some((None, at)) if *at < shutdown => {
                Err(format!("{what} ended (None) before the log shut down"))
            }
            Some((None, _)) => Ok(()),
            Some((Some(Error::Truncated { after }), at)) => {
                self.check_truncated(*after, sub.called, *at, next, &what)
            }
            Some((Some(Error::Purged { upto }), at)) => self.check_purged(*upto, *at, next, &what),
            Some((Some(e), _)) if sub.troubled && !matches!(e, Error::Corruption(_)) => Ok(()),
            Some((Some(e), _)) => Err(format!("{what} failed at record {next}: {e}")),
        }
    }

    /// After an acknowledged truncation that dropped something, the
    /// appends queued after it continue from the record after its point,
    /// and the first of them gets exactly that number; after the open, the
    /// first append gets `last_seq + 1`.
    pub(super) fn check_continuations(&self) -> Result<(), String> {
        let cycle = self.cycle;
        let queued: Vec<(usize, &Appended)> = cycle
            .appends
            .iter()
            .enumerate()
            .filter(|(_, a)| a.queued.is_some())
            .collect();
        // The first append queued after `after` (nothing else possibly in
        // between, and none possibly before `from`) must get `seq`.
        let first_after = |from: Tick, after: Tick, until: Tick| {
            let candidates: Vec<&(usize, &Appended)> = queued
                .iter()
                .filter(|(_, a)| a.queued().1 > from && a.queued().0 < until)
                .collect();
            let first = candidates
                .iter()
                .filter(|(_, a)| a.queued().0 > after)
                .min_by_key(|(_, a)| a.queued().0)?;
            let (earliest, latest) = first.1.queued();
            let alone = earliest == latest
                && candidates
                    .iter()
                    .all(|(j, b)| *j == first.0 || b.queued().0 > latest);
            alone.then_some(first.1)
        };
        let until = cycle.truncations.first().map_or(Tick::MAX, |t| t.called);
        if let Some(a) = first_after(0, 0, until) {
            if let Some(seq) = a.acked.filter(|seq| *seq != self.model.last + 1) {
                return Err(format!(
                    "the first append after the open ({}) got {seq}, but the log recovered up to {}",
                    a.label, self.model.last
                ));
            }
        }
        for (k, t) in cycle.truncations.iter().enumerate() {
            let Some(answered) = t.answered.filter(|_| t.acked() && t.last >= t.arg) else {
                continue;
            };
            let until = cycle
                .truncations
                .get(k + 1)
                .map_or(Tick::MAX, |next| next.called);
            if let Some((_, a)) = queued.iter().find(|(_, a)| {
                a.queued().0 > answered
                    && a.queued().1 < until
                    && a.acked.is_some_and(|s| s <= t.arg)
            }) {
                return Err(format!(
                    "{} was queued after truncate_after({}) was acknowledged, yet got {:?}",
                    a.label, t.arg, a.acked
                ));
            }
            if let Some(a) = first_after(t.called, answered, until) {
                if let Some(seq) = a.acked.filter(|seq| *seq != t.arg + 1) {
                    return Err(format!(
                        "the first append after truncate_after({}) ({}) got {seq}",
                        t.arg, a.label
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `3..=9`, `..`, `(3..=9` for an excluded start.
pub(super) fn describe_range(range: &(Bound<Seq>, Bound<Seq>)) -> String {
    let start = match range.0 {
        Bound::Included(from) => from.to_string(),
        Bound::Excluded(after) => format!("({after}"),
        Bound::Unbounded => String::new(),
    };
    let end = match range.1 {
        Bound::Included(to) => format!("..={to}"),
        Bound::Excluded(to) => format!("..{to}"),
        Bound::Unbounded => "..".into(),
    };
    start + &end
}

/// Reads the whole log once the workload ended without an error: it holds
/// exactly the acknowledged records no truncation dropped.
pub(super) async fn check_quiet(
    log: &Log,
    fs: &SimFs,
    model: &Model,
    cycle: &Cycle,
) -> Result<(), String> {
    let (first, last) = (log.first_seq(), log.last_seq());
    let entries = match log.read(first..) {
        Ok(entries) => entries,
        Err(_) if fs.is_dead() => return Ok(()),
        Err(e) => {
            return Err(format!(
                "reading the whole log ({first}..={last}) failed: {e}"
            ))
        }
    };
    let (records, error) = answered(
        || "reading the whole log".into(),
        actix_rt::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for record in entries {
                match record {
                    Ok(record) => records.push(record),
                    Err(e) => return (records, Some(e)),
                }
            }
            (records, None)
        }),
    )
    .await?
    .map_err(|e| format!("the read's task failed: {e}"))?;
    if let Some(e) = error {
        if fs.is_dead() {
            return Ok(());
        }
        return Err(format!(
            "reading the whole log ({first}..={last}) failed after {} records: {e}",
            records.len()
        ));
    }
    let found = Found {
        first,
        last,
        replayed: records.len() as u64,
        records,
        live: (first, last),
        ..Found::default()
    };
    check_shape(&found).map_err(|e| format!("the live log: {e}"))?;
    let possibly_dropped = |seq: Seq, earliest: Tick| {
        cycle
            .truncations
            .iter()
            .any(|t| t.acked() && t.arg < seq && earliest < t.answered_or_never())
    };
    let acked_cap = cycle
        .truncations
        .iter()
        .filter(|t| t.acked())
        .map(|t| t.arg)
        .fold(model.last, Seq::min);
    for (seq, payload) in &found.records {
        let expected_old = (*seq <= acked_cap).then(|| model.record(*seq)).flatten();
        if let Some(old) = expected_old {
            if old != payload.as_slice() {
                return Err(format!(
                    "the live log holds {} as record {seq}, recovered at the open as {}",
                    name(payload),
                    name(old)
                ));
            }
            continue;
        }
        let i = cycle.appended(payload).ok_or_else(|| {
            format!(
                "the live log holds {} as record {seq}, which the workload did not append there",
                name(payload)
            )
        })?;
        let a = &cycle.appends[i];
        if a.payload != *payload || a.acked != Some(*seq) {
            return Err(format!(
                "the live log holds {} as record {seq}, acknowledged as {:?}",
                a.label, a.acked
            ));
        }
    }
    for a in &cycle.appends {
        let Some(seq) = a.acked else {
            continue;
        };
        if seq < first || possibly_dropped(seq, a.queued().0) {
            continue;
        }
        let there = seq
            .checked_sub(first)
            .and_then(|i| found.records.get(i as usize))
            .is_some_and(|(_, p)| *p == a.payload);
        if !there {
            return Err(format!(
                "acknowledged record {seq} ({}) is not in the live log ({first}..={last})",
                a.label
            ));
        }
    }
    Ok(())
}
