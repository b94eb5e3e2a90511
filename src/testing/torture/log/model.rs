//! The rules every open must obey: what recovery returned against what the
//! last open recovered and what the workload since did (see the parent
//! module for the rules).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::journal::{describe_metadata, label_of, name, Call, Cycle, Tick};
use crate::config::{Config, LimitsConfig};
use crate::entry::Seq;
use crate::error::Corruption;
use crate::log::recovery::TruncatedTail;
use crate::rawlog::Log;
use crate::testing::sim_fs::SimFs;
use crate::testing::torture::{check_loss_bound, LostRecord, Promise};

/// What an open found.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) first: Seq,
    pub(super) last: Seq,
    pub(super) records: Vec<(Seq, Vec<u8>)>,
    pub(super) metadata: Option<Vec<u8>>,
    pub(super) replayed: u64,
    /// `Log::first_seq` and `Log::last_seq` once open.
    pub(super) live: (Seq, Seq),
    pub(super) truncated: Option<TruncatedTail>,
    pub(super) skipped: Vec<Corruption>,
}

/// Opens the log on `fs`, keeping what recovery replayed.
pub(super) async fn open(config: Config, fs: &SimFs) -> crate::Result<(Log, Found)> {
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replayed);
    let (log, recovery) = Log::open_with_fs(config, Arc::new(fs.clone()), move |seq, payload| {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((seq, payload.to_vec()));
    })
    .await?;
    let records = std::mem::take(&mut *replayed.lock().unwrap_or_else(PoisonError::into_inner));
    let found = Found {
        first: recovery.first_seq,
        last: recovery.last_seq,
        records,
        metadata: log.metadata(),
        replayed: recovery.replayed,
        live: (log.first_seq(), log.last_seq()),
        truncated: recovery.truncated,
        skipped: recovery.skipped,
    };
    Ok((log, found))
}

/// What a passed check of an open found.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    pub(super) lost: u64,
    pub(super) unacked_recovered: u64,
    /// Of the calls cut in the middle, by kind (truncations, purges,
    /// metadata writes): (found done, found not done).
    pub(super) cut_inside: [(u64, u64); 3],
}

/// Where the records an open returned came from.
#[derive(Debug, Default)]
pub(super) struct Placed {
    /// The last record recovered at the previous open that is still there
    /// (`first - 1`: none).
    pub(super) kept_through: Seq,
    /// The records appended in the last cycle, in sequence order, by their
    /// index in it.
    pub(super) new: Vec<(Seq, usize)>,
    /// Where each of those is.
    pub(super) at: HashMap<usize, Seq>,
}

/// What the log must hold: what the last open recovered, and the workload
/// run since.
#[derive(Debug)]
pub(super) struct Model {
    /// `first_seq` at the last open.
    pub(super) first: Seq,
    /// `last_seq` at the last open.
    pub(super) last: Seq,
    /// The records the last open recovered, from `first` to `last`.
    pub(super) records: VecDeque<Vec<u8>>,
    pub(super) metadata: Option<Vec<u8>>,
    pub(super) promise: Option<Promise>,
    /// The limits the log runs under; they persist across restarts unless
    /// a cycle changes them.
    pub(super) limits: Option<LimitsConfig>,
    /// The workload since the last open.
    pub(super) cycle: Option<Cycle>,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            first: 1,
            last: 0,
            records: VecDeque::new(),
            metadata: None,
            promise: None,
            limits: None,
            cycle: None,
        }
    }
}

impl Model {
    /// The record the last open recovered as `seq`.
    pub(super) fn record(&self, seq: Seq) -> Option<&[u8]> {
        let index = seq.checked_sub(self.first)?;
        self.records
            .get(usize::try_from(index).ok()?)
            .map(Vec::as_slice)
    }

    /// Where the last open recovered `payload`, if it did.
    pub(super) fn position_of(&self, payload: &[u8]) -> Option<Seq> {
        self.records
            .iter()
            .position(|r| r == payload)
            .map(|i| self.first + i as Seq)
    }

    /// Checks what an open found against the model. Without `loss_bounds`
    /// (media damage recovery may cut off the newest segment as a torn
    /// tail), acknowledged records may be missing at the end, whatever
    /// the sync mode and the syncs promised.
    pub(super) fn verify(&self, found: &Found, loss_bounds: bool) -> Result<Verdict, String> {
        check_shape(found)?;
        let empty = Cycle::default();
        let cycle = self.cycle.as_ref().unwrap_or(&empty);
        let acked_first = self.check_first(found, cycle)?;
        let (acked_metadata, _) = cycle.metadata_allowed(&self.metadata);
        self.check_metadata(found, cycle)?;
        let placed = self.place(found, cycle)?;
        let lost = self.check_acknowledged(found, cycle, &placed, loss_bounds)?;
        let lost = if loss_bounds {
            let records = lost
                .iter()
                .map(|&i| {
                    let a = &cycle.appends[i];
                    LostRecord {
                        acked: a.acked,
                        submitted_at: a.submitted_at,
                        acked_at: a.acked_at,
                    }
                })
                .collect();
            check_loss_bound(self.promise, records, found.last)?
        } else {
            lost.len() as u64
        };
        let mut verdict = Verdict {
            lost,
            unacked_recovered: placed
                .new
                .iter()
                .filter(|(_, i)| cycle.appends[*i].acked.is_none())
                .count() as u64,
            cut_inside: [(0, 0); 3],
        };
        for t in cycle.truncations.iter().filter(|t| t.cut_inside) {
            count_done(
                &mut verdict.cut_inside[0],
                self.truncation_done(t, found, cycle, &placed),
            );
        }
        for p in cycle.purges.iter().filter(|p| p.cut_inside) {
            let done = (p.arg > acked_first).then_some(found.first == p.arg);
            count_done(&mut verdict.cut_inside[1], done);
        }
        for m in cycle.metadata.iter().filter(|m| m.cut_inside) {
            let value = Some(m.arg.clone());
            let done = if value == acked_metadata {
                None
            } else if found.metadata == value {
                Some(true)
            } else {
                (found.metadata == acked_metadata).then_some(false)
            };
            count_done(&mut verdict.cut_inside[2], done);
        }
        Ok(verdict)
    }

    /// `first_seq` is what the acknowledged purges leave, or the point of a
    /// purge in doubt; returns the former.
    pub(super) fn check_first(&self, found: &Found, cycle: &Cycle) -> Result<Seq, String> {
        let acked = cycle
            .purges
            .iter()
            .filter(|p| p.acked())
            .map(|p| p.arg)
            .fold(self.first, Seq::max);
        let in_doubt: Vec<Seq> = cycle
            .purges
            .iter()
            .filter(|p| p.in_doubt() && p.arg > acked)
            .map(|p| p.arg)
            .collect();
        if found.first != acked && !in_doubt.contains(&found.first) {
            return Err(format!(
                "the log starts at {}, but the acknowledged purges leave it at {acked}, and no purge in doubt moves it there (in doubt: {in_doubt:?})",
                found.first
            ));
        }
        Ok(acked)
    }

    /// The metadata is the last acknowledged value or one written after it
    /// that may have been done, whole.
    pub(super) fn check_metadata(&self, found: &Found, cycle: &Cycle) -> Result<(), String> {
        let (acked, in_doubt) = cycle.metadata_allowed(&self.metadata);
        let value = found.metadata.as_deref();
        if value == acked.as_deref() || value.is_some_and(|v| in_doubt.contains(&v)) {
            return Ok(());
        }
        Err(format!(
            "the metadata is {}, but the last acknowledged value is {} and no write in doubt after it wrote that ({} in doubt)",
            describe_metadata(value),
            describe_metadata(acked.as_deref()),
            in_doubt.len()
        ))
    }

    /// Traces every record to the previous open or to the last cycle's
    /// appends, and checks the rules on where each may be.
    pub(super) fn place(&self, found: &Found, cycle: &Cycle) -> Result<Placed, String> {
        let floor = found.first - 1;
        let mut placed = Placed {
            kept_through: floor,
            ..Placed::default()
        };
        for (seq, payload) in &found.records {
            if self.record(*seq) == Some(payload.as_slice()) {
                if let Some((new_seq, i)) = placed.new.first() {
                    return Err(format!(
                        "record {seq}, recovered there at the last open, follows record {new_seq} ({}), appended since",
                        cycle.appends[*i].label
                    ));
                }
                placed.kept_through = *seq;
                continue;
            }
            let Some(i) = cycle.appended(payload) else {
                return Err(match self.position_of(payload) {
                    Some(at) => format!(
                        "record {seq} is {}, which the last open recovered as record {at}",
                        name(payload)
                    ),
                    None if label_of(payload).is_some() => format!(
                        "record {seq} is {}, which was not recovered at the last open (the cut before it lost it, or a truncation dropped it): it came back",
                        name(payload)
                    ),
                    None => format!("record {seq} is {}, which nobody appended", name(payload)),
                });
            };
            let a = &cycle.appends[i];
            if a.payload != *payload {
                return Err(format!(
                    "record {seq} carries the label of {}, but not its bytes ({} bytes, {} submitted)",
                    a.label,
                    payload.len(),
                    a.payload.len()
                ));
            }
            if a.queued.is_none() {
                return Err(format!(
                    "record {seq} is {}, which was refused before anything was written",
                    a.label
                ));
            }
            if let Some(before) = placed.at.insert(i, *seq) {
                return Err(format!(
                    "{} was recovered twice, as record {before} and as record {seq}",
                    a.label
                ));
            }
            if let Some(acked) = a.acked.filter(|acked| acked != seq) {
                return Err(format!(
                    "record {seq} is {}, which was acknowledged as record {acked}",
                    a.label
                ));
            }
            if let Some(t) = cycle
                .truncations
                .iter()
                .find(|t| t.acked() && a.queued().1 < t.called && *seq > t.arg)
            {
                return Err(format!(
                    "record {seq} is {}, queued before truncate_after({}), which was acknowledged and dropped it: it came back",
                    a.label, t.arg
                ));
            }
            placed.new.push((*seq, i));
        }
        self.check_kept_through(found, cycle, placed.kept_through)?;
        check_order(cycle, &placed)?;
        check_batches(found, cycle, &placed)?;
        Ok(placed)
    }

    /// The records recovered at the last open end where a truncation that
    /// was acknowledged, or one in doubt, cut them, or where they ended.
    pub(super) fn check_kept_through(
        &self,
        found: &Found,
        cycle: &Cycle,
        kept: Seq,
    ) -> Result<(), String> {
        let floor = found.first - 1;
        let cap = |t: Seq| t.min(self.last);
        let acked = cycle
            .truncations
            .iter()
            .filter(|t| t.acked())
            .min_by_key(|t| cap(t.arg));
        let acked_cap = acked.map_or(self.last, |t| cap(t.arg));
        let allowed: Vec<Seq> = std::iter::once(acked_cap)
            .chain(
                cycle
                    .truncations
                    .iter()
                    .filter(|t| t.in_doubt())
                    .map(|t| cap(t.arg))
                    .filter(|t| *t < acked_cap),
            )
            .map(|t| t.max(floor))
            .collect();
        if allowed.contains(&kept) {
            return Ok(());
        }
        if kept > acked_cap.max(floor) {
            return Err(format!(
                "record {}, recovered at the last open, is back although truncate_after({}) was acknowledged and dropped it",
                acked_cap + 1,
                acked.map_or(acked_cap, |t| t.arg)
            ));
        }
        let in_doubt: Vec<Seq> = cycle
            .truncations
            .iter()
            .filter(|t| t.in_doubt())
            .map(|t| t.arg)
            .collect();
        Err(format!(
            "records {}..={}, recovered at the last open, are gone, yet no truncation acknowledged or in doubt drops exactly those (acknowledged down to {acked_cap}; in doubt: {in_doubt:?})",
            kept + 1,
            self.last
        ))
    }

    /// Whether truncation `t` may have happened whole: nothing it would
    /// have dropped is there.
    pub(super) fn whole(
        &self,
        t: &Call<Seq>,
        found: &Found,
        cycle: &Cycle,
        placed: &Placed,
    ) -> bool {
        placed.kept_through <= t.arg.max(found.first - 1)
            && !placed
                .new
                .iter()
                .any(|(seq, i)| *seq > t.arg && cycle.appends[*i].queued().1 < t.called)
    }

    /// Whether a truncation cut in the middle was found done (`None`: the
    /// log cannot tell).
    pub(super) fn truncation_done(
        &self,
        t: &Call<Seq>,
        found: &Found,
        cycle: &Cycle,
        placed: &Placed,
    ) -> Option<bool> {
        let older = t.arg < self.last && t.arg + 1 >= found.first;
        let newer: Vec<usize> = cycle
            .appends
            .iter()
            .enumerate()
            .filter(|(_, a)| a.queued().1 < t.called && a.acked.is_some_and(|s| s > t.arg))
            .map(|(i, _)| i)
            .collect();
        if !older && newer.is_empty() {
            return None;
        }
        Some(self.whole(t, found, cycle, placed))
    }

    /// Every acknowledged record of the last cycle is there, or was
    /// dropped by a truncation that may have happened whole, or purged;
    /// the others are lost, only at the end of the log, and never one an
    /// acknowledged sync or truncation had made durable. Returns the lost
    /// ones, by index.
    pub(super) fn check_acknowledged(
        &self,
        found: &Found,
        cycle: &Cycle,
        placed: &Placed,
        loss_bounds: bool,
    ) -> Result<Vec<usize>, String> {
        let mut lost = Vec::new();
        for (i, a) in cycle.appends.iter().enumerate() {
            let Some(seq) = a.acked else {
                continue;
            };
            if placed.at.get(&i) == Some(&seq) || seq < found.first {
                continue;
            }
            let (earliest, latest) = a.queued();
            let dropped = cycle.truncations.iter().any(|t| {
                t.may_have_happened()
                    && t.arg < seq
                    && earliest < t.answered_or_never()
                    && self.whole(t, found, cycle, placed)
            });
            if dropped {
                continue;
            }
            if loss_bounds {
                let synced = cycle
                    .syncs
                    .iter()
                    .find(|s| s.acked() && latest < s.called)
                    .map(|_| "a sync".to_string())
                    .or_else(|| {
                        cycle
                            .truncations
                            .iter()
                            // One that dropped records sealed the segment;
                            // one at or past the end changed nothing.
                            .find(|t| {
                                t.acked() && t.last > t.arg && latest < t.called && seq <= t.arg
                            })
                            .map(|t| format!("truncate_after({}), which sealed its segment", t.arg))
                    });
                if let Some(barrier) = synced {
                    return Err(format!(
                        "record {seq} ({}) was acknowledged and made durable by {barrier} that was acknowledged, but it is lost (the log ends at {})",
                        a.label, found.last
                    ));
                }
            }
            lost.push(i);
        }
        for &i in &lost {
            let a = &cycle.appends[i];
            if let Some((later, j)) = placed
                .new
                .iter()
                .find(|(_, j)| cycle.appends[*j].queued().0 > a.queued().1)
            {
                return Err(format!(
                    "acknowledged record {} ({}) is lost, but record {later} ({}), queued after it, is there: a hole",
                    a.acked.unwrap_or_default(),
                    a.label,
                    cycle.appends[*j].label
                ));
            }
        }
        Ok(lost)
    }
}

pub(super) fn count_done(counts: &mut (u64, u64), done: Option<bool>) {
    match done {
        Some(true) => counts.0 += 1,
        Some(false) => counts.1 += 1,
        None => {}
    }
}

/// The records are consecutive from `first` to `last`, and the open's
/// report agrees with the log it opened.
pub(super) fn check_shape(found: &Found) -> Result<(), String> {
    if found.last + 1 < found.first {
        return Err(format!(
            "the log starts at {} but ends at {}",
            found.first, found.last
        ));
    }
    for (i, (seq, _)) in found.records.iter().enumerate() {
        let due = found.first + i as Seq;
        if *seq != due {
            return Err(format!(
                "records not consecutive: {seq} where {due} was due"
            ));
        }
    }
    let count = found.records.len() as Seq;
    if count != found.last + 1 - found.first {
        return Err(format!(
            "{count} records replayed from {}, but last_seq is {}",
            found.first, found.last
        ));
    }
    if found.replayed != count || found.live != (found.first, found.last) {
        return Err(format!(
            "recovery reported {} records from {} to {}, the open log says {:?}, and {count} were replayed",
            found.replayed, found.first, found.last, found.live
        ));
    }
    Ok(())
}

/// Payloads queued one after the other are in that order: none has a
/// higher sequence number than one queued after it.
pub(super) fn check_order(cycle: &Cycle, placed: &Placed) -> Result<(), String> {
    // From the highest sequence number down: the earliest latest-queueing
    // tick among the higher records.
    let mut earliest: Option<(Tick, Seq, usize)> = None;
    for &(seq, i) in placed.new.iter().rev() {
        let (first, last) = cycle.appends[i].queued();
        if let Some((tick, higher, j)) = earliest {
            if tick < first {
                return Err(format!(
                    "record {seq} ({}) was queued after {} was, yet {} is record {higher}",
                    cycle.appends[i].label, cycle.appends[j].label, cycle.appends[j].label
                ));
            }
        }
        if earliest.is_none_or(|(tick, _, _)| last < tick) {
            earliest = Some((last, seq, i));
        }
    }
    Ok(())
}

/// The records of a batch are consecutive, in their order, and never a
/// later one without every earlier one (unless those were purged).
pub(super) fn check_batches(found: &Found, cycle: &Cycle, placed: &Placed) -> Result<(), String> {
    let mut batches: BTreeMap<usize, Vec<(usize, Seq, usize)>> = BTreeMap::new();
    for &(seq, i) in &placed.new {
        if let Some((batch, index)) = cycle.appends[i].batch {
            batches.entry(batch).or_default().push((index, seq, i));
        }
    }
    for members in batches.values_mut() {
        members.sort_unstable();
        let (first_index, first_seq, first_i) = members[0];
        if first_index > 0 && first_seq != found.first {
            return Err(format!(
                "record {first_seq} is {}, but the payload before it in its batch is missing",
                cycle.appends[first_i].label
            ));
        }
        for &(index, seq, i) in &members[1..] {
            if seq - first_seq != (index - first_index) as Seq {
                return Err(format!(
                    "record {seq} is {}, which is not {} records after {} (record {first_seq}) as in its batch",
                    cycle.appends[i].label,
                    index - first_index,
                    cycle.appends[first_i].label
                ));
            }
        }
    }
    Ok(())
}
