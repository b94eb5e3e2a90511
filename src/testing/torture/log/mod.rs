//! The torture of a [`Log`](crate::Log) (`concordkv torture --log`, and the
//! `log_power_loss` test; the parent module describes what both tortures
//! share: the faults, the cuts, media damage, the loss bounds).
//!
//! Each cycle opens the log on the simulated disk and checks what recovery
//! returned against the model, then runs a random concurrent workload in a
//! random sync mode with tiny segments: appenders (single payloads through
//! [`Log::submit`](crate::Log::submit) and
//! [`Log::append`](crate::Log::append), batches through
//! [`Log::append_batch`](crate::Log::append_batch), payloads with long zero
//! runs and sizes at and around `limits.max_record_bytes`); a task that truncates (below
//! `first_seq`, at it, inside a batch, at and past the end), purges (below
//! `first_seq`, inside a batch, to the end, past it) and syncs; a task that
//! sets the metadata (empty, small, at and over its limit); a reader of
//! random ranges; and a subscriber, which subscribes again after each
//! `Truncated` or `Purged` — while the power is cut.
//!
//! Tasks run side by side, so the order the log saw operations in is only
//! partly known. The model therefore works from what each task observed
//! and when: every observation is made on the runtime's one thread and
//! takes the next tick of a clock. A payload queued through `submit` has
//! its exact place among the ticks (the queueing and the tick happen in the
//! same poll); one queued through `append` or `append_batch`, and a
//! truncation, lie between the ticks of their call and answer. Every rule
//! below holds for each order those intervals allow, so the model never
//! blames the log for an order it cannot see.
//!
//! The rules, checked at every open (after a cut, or after media damage):
//! - the log is consecutive from `first_seq` to `last_seq`; `first_seq` is
//!   what the acknowledged purges leave, or the point of one that failed
//!   or was cut (all of it or nothing), never beyond;
//! - the records recovered at the previous open are still there and
//!   unchanged, up to where an acknowledged truncation, or a failed or cut
//!   one (all of it or nothing), dropped them, and not one after that;
//! - every record is a payload submitted at that place: one acknowledged
//!   with that sequence number, or an unacknowledged one; each at most once,
//!   the records of a batch consecutive and never a later one without the
//!   earlier ones, and payloads queued one after the other in that order;
//! - a record queued before an acknowledged `truncate_after(s)`, past `s`,
//!   never comes back;
//! - an acknowledged record is missing only where a truncation that may
//!   have happened dropped it (and then it dropped all it had to), or
//!   where a purge did; otherwise it is lost: none in `always` mode, and
//!   in the other modes within the mode's bound, only at the end of the log
//!   (nothing queued after it is there), and never one that an
//!   acknowledged sync or truncation had made durable;
//! - the metadata is the last acknowledged value, or the value of a write
//!   after it that failed or was cut, whole.
//!
//! And while the log runs:
//! - what a read or a subscription hands out is consecutive, in order, each
//!   record acknowledged with its sequence number (or recovered at the
//!   open) with the bytes submitted, never one that a purge acknowledged
//!   before the reader began had purged, nor one that a truncation
//!   acknowledged before the read began (before the delivery, for a
//!   subscription) had dropped; a read ends at its bound unless an error
//!   ends it; `Truncated` and `Purged` only where a truncation or a purge
//!   made while it ran explains them;
//! - refusals are exactly the invalid requests: payloads over the limit,
//!   empty batches, truncations below `first_seq - 1`, purges past the end,
//!   metadata over its limit;
//! - after an acknowledged `truncate_after(s)` the next append gets `s + 1`,
//!   and after an open the first one gets `last_seq + 1`;
//! - when the workload ends without an error, a read of the whole log
//!   holds exactly every acknowledged record that no truncation dropped.
//!
//! Every payload starts with a label naming its cycle, writer and number,
//! so that anything the log returns can be traced to its submission (an
//! empty payload cannot carry one; `tests/log.rs` covers those).

mod journal;
mod live;
mod model;
mod workload;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use actix_rt::time::timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::damage::damage_a_copy;
use super::{
    arm, next_limits, panic_actors, random_config, reboot, run_cycles, DiskReport, FaultKind,
    Panic, Promise, Subject, TortureFailure, TortureOptions, SHUTDOWN_LIMIT,
};
use crate::config::Config;
use crate::error::Error;
use crate::rawlog::RAW_ENCODING_OVERHEAD;
use crate::testing::sim_fs::SimFs;
use journal::{Call, Cycle, Journal, Outcome};
use live::{check_quiet, Live};
use model::{open, Model};
use workload::{follow, maintain, read, set_metadata, write, Ctx, PayloadMaker};

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogTortureReport {
    /// The run's seed.
    pub seed: u64,
    /// Cycles run.
    pub cycles: u64,
    /// Cycles by sync mode.
    pub cycles_by_mode: BTreeMap<String, u64>,
    /// Cycles whose power was cut while the log was opening.
    pub cuts_during_open: u64,
    /// Payloads queued (each of a batch counts).
    pub appends_submitted: u64,
    /// Payloads acknowledged.
    pub appends_acknowledged: u64,
    /// Payloads refused as invalid before anything was written (over the
    /// limit, or in a batch with one that is), as the model expected.
    pub appends_refused: u64,
    /// `append_batch` calls that queued their payloads.
    pub batches: u64,
    /// Acknowledged records a cut lost (`batch`, `interval` and `none` modes).
    pub acknowledged_lost: u64,
    /// Records recovered although never acknowledged (written before the
    /// cut, their appenders answered with an error).
    pub unacknowledged_recovered: u64,
    /// Records recovered, over all opens.
    pub records_recovered: u64,
    /// `truncate_after` calls and what became of them.
    pub truncations: OpCounts,
    /// `purge_before` calls and what became of them.
    pub purges: OpCounts,
    /// `set_metadata` calls and what became of them.
    pub metadata_writes: OpCounts,
    /// `sync` calls.
    pub syncs: u64,
    /// Reads of a range, and the records they returned.
    pub reads: u64,
    /// Records the reads returned.
    pub records_read: u64,
    /// Subscriptions, and the records they delivered.
    pub subscriptions: u64,
    /// Records the subscriptions delivered.
    pub records_delivered: u64,
    /// How reads and subscriptions ended, other than at their end.
    pub read_endings: BTreeMap<String, u64>,
    /// What the run did to the disk and the limits.
    #[serde(flatten)]
    pub disk: DiskReport,
}

/// What became of the calls of one kind that change the log's ends or its
/// metadata.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OpCounts {
    /// Acknowledged.
    pub acknowledged: u64,
    /// Refused as invalid, as the model expected.
    pub refused: u64,
    /// Answered with another error (an injected fault, or the power cut).
    pub failed: u64,
    /// Cut in the middle (the power failed while they ran), and found done
    /// at the next open.
    pub cut_inside_done: u64,
    /// Cut in the middle, and found not done.
    pub cut_inside_not_done: u64,
}

impl fmt::Display for OpCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged {}, refused {}, failed {}; cut inside: found done {}, not done {}",
            self.acknowledged,
            self.refused,
            self.failed,
            self.cut_inside_done,
            self.cut_inside_not_done
        )
    }
}

/// Runs the cycles; the first broken guarantee ends the run.
pub fn run(opts: &TortureOptions) -> Result<LogTortureReport, TortureFailure> {
    let opts = opts.clone();
    actix_rt::System::new().block_on(async move {
        let mut report = LogTortureReport {
            seed: opts.seed,
            ..LogTortureReport::default()
        };
        let mut model = Model::default();
        run_cycles(&opts, Subject::Log, async |fs, rng, cycle| {
            let fs = run_cycle(fs, &mut model, rng, &opts, cycle, &mut report).await?;
            report.cycles += 1;
            Ok(fs)
        })
        .await?;
        Ok(report)
    })
}

/// One cycle: open and verify (first, sometimes, a damaged copy of the
/// disk), run a workload, cut the power, check what the workload saw;
/// returns the disk as the next boot finds it.
async fn run_cycle(
    fs: SimFs,
    model: &mut Model,
    rng: &mut StdRng,
    opts: &TortureOptions,
    cycle: u64,
    report: &mut LogTortureReport,
) -> Result<SimFs, String> {
    let limits = next_limits(rng, model.limits.as_ref(), opts, &mut report.disk);
    model.limits = Some(limits.clone());
    let config = random_config(rng, limits);
    if opts.injects(FaultKind::MediaDamage) && rng.random_bool(0.15) {
        let mut drng = StdRng::seed_from_u64(rng.random());
        damaged_open(&fs, model, &mut drng, &config, report).await?;
    }
    if rng.random_bool(0.1) {
        fs.cut_power_after(rng.random_range(1..=40));
    }
    let (log, found) = match open(config.clone(), &fs).await {
        Ok(opened) => opened,
        Err(_) if fs.is_dead() => {
            report.cuts_during_open += 1;
            return Ok(reboot(&fs, rng, &mut report.disk));
        }
        Err(e) => return Err(format!("open failed: {e}")),
    };
    let verdict = model.verify(&found, true)?;
    if fs.is_dead() {
        // The cut landed after recovery read everything but before the open
        // finished writing; the next open checks the same model again.
        report.cuts_during_open += 1;
        let _ = timeout(SHUTDOWN_LIMIT, log.shutdown()).await;
        return Ok(reboot(&fs, rng, &mut report.disk));
    }
    report.acknowledged_lost += verdict.lost;
    report.unacknowledged_recovered += verdict.unacked_recovered;
    report.records_recovered += found.records.len() as u64;
    for (counts, (done, not_done)) in [
        &mut report.truncations,
        &mut report.purges,
        &mut report.metadata_writes,
    ]
    .into_iter()
    .zip(verdict.cut_inside)
    {
        counts.cut_inside_done += done;
        counts.cut_inside_not_done += not_done;
    }
    *report
        .cycles_by_mode
        .entry(format!("{:?}", config.wal.sync_mode).to_lowercase())
        .or_default() += 1;
    *model = Model {
        first: found.first,
        last: found.last,
        records: found.records.into_iter().map(|(_, p)| p).collect(),
        metadata: found.metadata,
        promise: Some(Promise::of(&config)),
        limits: model.limits.take(),
        cycle: None,
    };

    let ops = rng.random_range(1..=opts.ops_per_cycle.max(1));
    let armed = arm(&fs, rng, opts, ops, &mut report.disk);
    let pause = armed.pause;
    let journal = Rc::new(Journal::default());
    let ctx = Ctx {
        log: log.clone(),
        journal: Rc::clone(&journal),
        fs: fs.clone(),
        record_limit: config.limits.max_record_bytes,
    };
    let limit = usize::try_from(config.limits.max_record_bytes - RAW_ENCODING_OVERHEAD)
        .unwrap_or(usize::MAX);
    let writers = rng.random_range(1..=4usize);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let maker = PayloadMaker {
            rng: StdRng::seed_from_u64(rng.random()),
            tag: format!("c{cycle}w{writer}"),
            counter: 0,
            limit,
        };
        let quota = ops / writers + usize::from(writer < ops % writers);
        tasks.push((
            "a writer",
            actix_rt::spawn(write(ctx.clone(), maker, quota, pause)),
        ));
    }
    let seeded = |rng: &mut StdRng| StdRng::seed_from_u64(rng.random());
    let rounds = rng.random_range(0..=6);
    tasks.push((
        "the maintenance task",
        actix_rt::spawn(maintain(ctx.clone(), seeded(rng), rounds)),
    ));
    let rounds = rng.random_range(0..=3);
    tasks.push((
        "the metadata task",
        actix_rt::spawn(set_metadata(ctx.clone(), seeded(rng), rounds)),
    ));
    let rounds = rng.random_range(0..=4);
    tasks.push((
        "the reader",
        actix_rt::spawn(read(ctx.clone(), seeded(rng), rounds)),
    ));
    let panicking = ctx.log.clone();
    tasks.push((
        "the actor panics",
        panic_actors(rng, opts, &mut report.disk, move |panic| match panic {
            Panic::Actor(actor) => panicking.crash_actor(actor),
            Panic::RotatorPreparing => panicking.crash_rotator_while_preparing(),
        }),
    ));
    let subscriber = rng.random_bool(0.6).then(|| {
        // From just below `first_seq` (purged: refused) to past the end.
        let low = model.first.saturating_sub(1).max(1);
        let from = rng.random_range(low..=(model.last + 2).max(low));
        actix_rt::spawn(follow(ctx.clone(), from))
    });
    // Whether the workload ended with the power cut (the checks after it
    // run once the cycle has cut it anyway).
    let cut_in_workload = Cell::new(None);
    let context = |e: String| {
        format!(
            "{e} (sync mode {:?}, batch_size {}, sync_interval_ms {}, slow syncs {}, power {})",
            config.wal.sync_mode,
            config.wal.batch_size,
            config.wal.sync_interval_ms,
            pause.is_some(),
            if cut_in_workload.get().unwrap_or_else(|| fs.is_dead()) {
                "cut"
            } else {
                "on"
            }
        )
    };
    for (what, task) in tasks {
        task.await
            .map_err(|e| format!("{what} failed: {e}"))?
            .map_err(context)?;
    }
    armed.disarm();
    let finished = Cycle::from_journal(&journal);
    let quiet = !fs.is_dead() && journal.errors.get() == 0 && fs.stats().faults.is_empty();
    if quiet {
        // A fault armed and not fired would fail the read; the power cut
        // still armed may land in it, which ends the check.
        fs.clear_faults();
        check_quiet(&log, &fs, model, &finished)
            .await
            .map_err(context)?;
    }
    cut_in_workload.set(Some(fs.is_dead()));
    fs.cut_power();
    let shutdown = journal.tick();
    if timeout(SHUTDOWN_LIMIT, log.shutdown()).await.is_err() {
        return Err("shutting down on a dead disk hung".into());
    }
    if let Some(subscriber) = subscriber {
        timeout(SHUTDOWN_LIMIT, subscriber)
            .await
            .map_err(|_| "a subscription did not end when the log shut down".to_string())?
            .map_err(|e| format!("the subscriber failed: {e}"))?;
    }
    drop(ctx);
    drop(log);
    let live = Live {
        model,
        cycle: &finished,
    };
    live.check_continuations().map_err(context)?;
    for read in journal.reads.borrow().iter() {
        live.check_read(read).map_err(context)?;
        report.reads += 1;
        report.records_read += read.records.len() as u64;
        if let Some(e) = &read.error {
            *report
                .read_endings
                .entry(format!("read: {}", ending(e)))
                .or_default() += 1;
        }
    }
    for sub in journal.subscriptions.borrow().iter() {
        live.check_subscription(sub, shutdown).map_err(context)?;
        report.subscriptions += 1;
        report.records_delivered += sub.records.len() as u64;
        if let Some((Some(e), _)) = &sub.end {
            *report
                .read_endings
                .entry(format!("subscription: {}", ending(e)))
                .or_default() += 1;
        }
    }
    tally(&finished, report);
    model.cycle = Some(finished);
    Ok(reboot(&fs, rng, &mut report.disk))
}

/// A read's ending, for the report.
fn ending(e: &Error) -> &'static str {
    match e {
        Error::Truncated { .. } => "truncated",
        Error::Purged { .. } => "purged",
        _ => "failed",
    }
}

/// Counts a finished cycle's calls in the report.
fn tally(cycle: &Cycle, report: &mut LogTortureReport) {
    for a in &cycle.appends {
        match (a.queued, a.acked) {
            (None, _) => report.appends_refused += u64::from(a.invalid),
            (Some(_), Some(_)) => {
                report.appends_submitted += 1;
                report.appends_acknowledged += 1;
            }
            (Some(_), None) => report.appends_submitted += 1,
        }
    }
    let mut batches: Vec<usize> = cycle
        .appends
        .iter()
        .filter(|a| a.queued.is_some())
        .filter_map(|a| a.batch.map(|(b, _)| b))
        .collect();
    batches.dedup();
    report.batches += batches.len() as u64;
    fn count<T>(calls: &[Call<T>], counts: &mut OpCounts) {
        for c in calls {
            match c.outcome {
                Outcome::Acked => counts.acknowledged += 1,
                Outcome::Refused => counts.refused += 1,
                Outcome::Failed | Outcome::Pending => counts.failed += 1,
            }
        }
    }
    count(&cycle.truncations, &mut report.truncations);
    count(&cycle.purges, &mut report.purges);
    count(&cycle.metadata, &mut report.metadata_writes);
    report.syncs += cycle.syncs.len() as u64;
}

/// Opens a copy of the disk with one file damaged (see `damage`), and
/// checks what the open did against the model.
async fn damaged_open(
    fs: &SimFs,
    model: &Model,
    rng: &mut StdRng,
    config: &Config,
    report: &mut LogTortureReport,
) -> Result<(), String> {
    let Some(copy) = damage_a_copy(fs, rng, config, &mut report.disk)? else {
        return Ok(());
    };
    let outcome = match open(copy.config.clone(), &copy.fs).await {
        Err(e) => copy.judge_failure(e)?,
        Ok((log, found)) => {
            let judged = copy.judge_open(
                &found.skipped,
                found.truncated.as_ref(),
                found.last,
                &mut |loss_bounds| model.verify(&found, loss_bounds).map(drop),
            );
            let _ = timeout(SHUTDOWN_LIMIT, log.shutdown()).await;
            judged?
        }
    };
    copy.count(outcome, &mut report.disk);
    Ok(())
}

impl LogTortureReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut out = format!(
            "seed {} (log): {} cycles, {} payloads queued, {} acknowledged, {} refused; {} batches\n",
            self.seed,
            self.cycles,
            self.appends_submitted,
            self.appends_acknowledged,
            self.appends_refused,
            self.batches
        );
        for (mode, n) in &self.cycles_by_mode {
            out += &format!("  cycles in {mode:<9} {n}\n");
        }
        out += &format!(
            "  power cuts during open {}\n  records recovered {}, acknowledged and lost {}, recovered unacknowledged {}\n",
            self.cuts_during_open,
            self.records_recovered,
            self.acknowledged_lost,
            self.unacknowledged_recovered
        );
        out += &format!(
            "  truncate_after: {}\n  purge_before:   {}\n  set_metadata:   {}\n",
            self.truncations, self.purges, self.metadata_writes
        );
        out += &format!(
            "  syncs {}, reads {} ({} records), subscriptions {} ({} records)\n",
            self.syncs, self.reads, self.records_read, self.subscriptions, self.records_delivered
        );
        for (ending, n) in &self.read_endings {
            out += &format!("  {ending}: {n}\n");
        }
        let disk = &self.disk;
        out += &format!(
            "  unsynced changes lost {}, kept {}, torn writes {}, directory changes lost {}\n  pages written back out of order {}, pages torn by sector {}\n  cycles with slow syncs {}, syncs slowed {}\n  reopens with lowered limits {}\n",
            disk.changes_lost,
            disk.changes_kept,
            disk.torn_writes,
            disk.dir_changes_lost,
            disk.pages_out_of_order,
            disk.sector_tears,
            disk.slow_sync_cycles,
            disk.slow_syncs,
            disk.limit_changes
        );
        out += &disk.detail_lines();
        out
    }
}
