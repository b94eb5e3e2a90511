//! The torture of a key-value [`Store`] (`concordkv torture`, and the
//! `power_loss` test; see the parent module for what both tortures share).
//!
//! The workload: concurrent appenders of sets, deletes and batches in a
//! random sync mode, with tiny segments so rotation is constant, and
//! snapshots, incremental snapshots and compactions in between. It writes
//! values with long runs of zeros (whole zero sectors and pages inside a
//! record are user data), keys, values and batches at, just under and
//! just over `limits`, and the limits themselves sometimes drop between
//! restarts below what the records on disk were written under.
//!
//! The model's rules, checked after every cut:
//! - everything recovered at the previous open is still there, unchanged
//!   (it was durable);
//! - what follows is a prefix of the operations submitted since, in the
//!   order the store queued them: each record is exactly the entry
//!   submitted in its place, every acknowledged record is at its own
//!   sequence number, and only unacknowledged submissions may be missing
//!   (they failed before reaching the log); a snapshot that covers new
//!   records holds the state such a prefix makes;
//! - acknowledged records lost: none in `always` mode, at most
//!   `wal.batch_size` in `batch` mode, and in `interval` mode only records
//!   written within one `wal.sync_interval_ms` after the oldest lost one;
//! - after media damage the open fails naming the file, or reports the
//!   region as skipped (`skip_corrupt`), or, in the newest segment only,
//!   cuts a torn tail; what it returns then still passes the rules above.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::time::timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::damage::damage_a_copy;
use super::{
    arm, check_loss_bound, next_limits, panic_actors, random_config, reboot, run_cycles,
    DiskReport, FaultKind, LostRecord, Panic, Promise, Subject, TortureFailure, TortureOptions,
    ANSWER_LIMIT, SHUTDOWN_LIMIT,
};
use crate::actors::supervised::ActorKind;
use crate::config::{Config, LimitsConfig, SyncMode};
use crate::entry::{Entry, Op, Seq};
use crate::error::Error;
use crate::format::snapshot::SnapshotKind;
use crate::store::Store;
use crate::testing::recording::{open_recording_with_fs, Recorded as Recovery};
use crate::testing::sim_fs::SimFs;
use crate::testing::{apply_to, Keyspace};

/// Keys are drawn from this many, so operations overwrite and delete each other.
const KEYS: u64 = 40;

/// A deadline the workload sets that no run reaches: 2100-01-01, in
/// milliseconds since the Unix epoch.
const FAR_AHEAD_MS: u64 = 4_102_444_800_000;
/// Steps the prefix search may take before it gives up (see [`PrefixSearch`]).
const SEARCH_BUDGET: u64 = 200_000;

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TortureReport {
    /// The run's seed.
    pub seed: u64,
    /// Cycles run.
    pub cycles: u64,
    /// Cycles by sync mode.
    pub cycles_by_mode: BTreeMap<String, u64>,
    /// Cycles whose power was cut while the store was opening.
    pub cuts_during_open: u64,
    /// Operations submitted to the store.
    pub ops_submitted: u64,
    /// Operations the store acknowledged.
    pub ops_acknowledged: u64,
    /// Operations refused at submission (over a limit); never to be recovered.
    pub ops_refused: u64,
    /// Acknowledged records a cut lost (`batch`, `interval` and `none` modes).
    pub acknowledged_lost: u64,
    /// Opens whose prefix check had too many ways to choose which
    /// unacknowledged operations were written, and was left undecided.
    pub prefix_checks_undecided: u64,
    /// Records after the snapshots that recovery returned, over all opens.
    pub records_recovered: u64,
    /// Snapshots recovery loaded, over all opens.
    pub snapshots_recovered: u64,
    /// Cycles shut down while their snapshots and compactions still ran.
    pub early_shutdowns: u64,
    /// Snapshots and compactions those shutdowns cancelled.
    pub maintenance_cancelled: u64,
    /// What the run did to the disk and the limits.
    #[serde(flatten)]
    pub disk: DiskReport,
}

/// One operation queued in a cycle, and its outcome. Kept in the order the
/// store queued them, which is the order it writes them in.
#[derive(Debug, Clone)]
struct Submitted {
    entry: Entry,
    acked: Option<Seq>,
    /// When it was handed to the store (before it could be written).
    submitted_at: Instant,
    /// When its acknowledgement arrived (after it was written).
    acked_at: Option<Instant>,
}

/// What the store must hold: what was verified at the last open, and what
/// was submitted since.
#[derive(Debug, Default)]
struct Model {
    state: Keyspace,
    /// The last sequence number recovered at the last open.
    recovered_seq: Seq,
    /// The records after the snapshots that the last open returned.
    records: BTreeMap<Seq, Entry>,
    promise: Option<Promise>,
    submitted: Vec<Submitted>,
    /// The limits the store runs under; they persist across restarts
    /// unless a cycle changes them.
    limits: Option<LimitsConfig>,
}

impl Model {
    /// Checks what an open recovered against the model: a prefix of the
    /// submitted sequence, holding everything known durable, within the
    /// sync mode's loss bound. Returns the acknowledged records it lost.
    fn verify(&self, recovery: &Recovery) -> Result<Verified, String> {
        self.verify_with(recovery, true)
    }

    /// As [`Model::verify`]; without `loss_bounds`, acknowledged records
    /// may be missing at the end (media damage the durability rule lets
    /// recovery cut as a torn tail), but never records recovered before.
    fn verify_with(&self, recovery: &Recovery, loss_bounds: bool) -> Result<Verified, String> {
        let last = recovery.last_seq;
        if last < self.recovered_seq {
            return Err(format!(
                "recovered up to {last}, but {} was recovered (so durable) before",
                self.recovered_seq
            ));
        }
        let mut expected_seq = recovery.base_seq + 1;
        for record in &recovery.records {
            if record.seq != expected_seq {
                return Err(format!(
                    "records not consecutive: {} where {expected_seq} was due",
                    record.seq
                ));
            }
            if let Some(before) = self.records.get(&record.seq) {
                if *before != record.entry {
                    return Err(format!(
                        "record {} is {:?}, but the last open recovered {:?} there",
                        record.seq, record.entry, before
                    ));
                }
            }
            expected_seq += 1;
        }
        if expected_seq != last + 1 {
            return Err(format!(
                "records end at {}, last_seq is {last}",
                expected_seq - 1
            ));
        }
        if recovery.base_seq <= self.recovered_seq {
            let mut state = recovery.base.clone();
            for record in &recovery.records {
                if record.seq > self.recovered_seq {
                    break;
                }
                apply(&mut state, &record.entry);
            }
            if visible(&state) != visible(&self.state) {
                return Err(format!(
                    "the state at {} differs from what was recovered before ({} keys, expected {})",
                    self.recovered_seq,
                    state.len(),
                    self.state.len()
                ));
            }
        }
        let lost = if loss_bounds {
            self.check_loss_bound(last)?
        } else {
            0
        };
        let decided = PrefixSearch::new(self, recovery).run()?;
        Ok(Verified { lost, decided })
    }

    /// The acknowledged records past the recovered end, within the sync
    /// mode's bound (see [`check_loss_bound`]).
    fn check_loss_bound(&self, last: Seq) -> Result<u64, String> {
        let lost = self
            .submitted
            .iter()
            .filter(|s| s.acked.is_some_and(|seq| seq > last))
            .map(|s| LostRecord {
                acked: s.acked,
                submitted_at: s.submitted_at,
                acked_at: s.acked_at,
            })
            .collect();
        check_loss_bound(self.promise, lost, last)
    }
}

/// What a passed check found.
struct Verified {
    /// Acknowledged records lost.
    lost: u64,
    /// Whether the prefix search decided (it may give up, see [`SEARCH_BUDGET`]).
    decided: bool,
}

/// Whether the recovered records after the last open's end are a prefix of
/// what was submitted since: a choice of which unacknowledged submissions
/// were written (the others failed before reaching the log) under which
/// every record is exactly the entry submitted in that place, every
/// acknowledged record sits at its own sequence number, and the snapshot
/// state, if a snapshot covers new records, is the state that prefix makes.
/// A depth-first search; acknowledged records pin it, so it branches only
/// over runs of unacknowledged submissions.
struct PrefixSearch<'a> {
    model: &'a Model,
    recovery: &'a Recovery,
    subs: Vec<&'a Submitted>,
    /// For each position, the next position holding an acknowledged
    /// submission (or `subs.len()`).
    next_acked: Vec<usize>,
    /// Unacknowledged submissions before each position.
    unacked_before: Vec<usize>,
    budget: u64,
}

impl<'a> PrefixSearch<'a> {
    fn new(model: &'a Model, recovery: &'a Recovery) -> PrefixSearch<'a> {
        let subs: Vec<&Submitted> = model.submitted.iter().collect();
        let mut next_acked = vec![subs.len(); subs.len() + 1];
        for pos in (0..subs.len()).rev() {
            next_acked[pos] = if subs[pos].acked.is_some() {
                pos
            } else {
                next_acked[pos + 1]
            };
        }
        let mut unacked_before = vec![0; subs.len() + 1];
        for pos in 0..subs.len() {
            unacked_before[pos + 1] = unacked_before[pos] + usize::from(subs[pos].acked.is_none());
        }
        PrefixSearch {
            model,
            recovery,
            subs,
            next_acked,
            unacked_before,
            budget: SEARCH_BUDGET,
        }
    }

    /// Whether a fitting prefix exists; `Ok(false)` when the search gave up.
    fn run(mut self) -> Result<bool, String> {
        let start = self.model.recovered_seq;
        let last = self.recovery.last_seq;
        if (last - start) as usize > self.subs.len() {
            return Err(format!(
                "recovered {} records after {start}, but only {} were submitted",
                last - start,
                self.subs.len()
            ));
        }
        let mut chosen = Vec::new();
        match self.search(0, &mut chosen) {
            Some(true) => Ok(true),
            // Too many ways to choose: the check is left undecided (and
            // counted) rather than failed.
            None => Ok(false),
            Some(false) => Err(self.explain()),
        }
    }

    /// The sequence number the next chosen submission gets.
    fn next_seq(&self, chosen: &[usize]) -> Seq {
        self.model.recovered_seq + chosen.len() as Seq + 1
    }

    /// Whether the submissions from `pos` on can complete the prefix;
    /// `None` once the budget is spent.
    fn search(&mut self, pos: usize, chosen: &mut Vec<usize>) -> Option<bool> {
        let last = self.recovery.last_seq;
        let seq = self.next_seq(chosen);
        if seq > last {
            // Complete: no acknowledged record may be missing from it.
            let missing = self.subs[pos..]
                .iter()
                .any(|s| s.acked.is_some_and(|acked| acked <= last));
            return Some(!missing);
        }
        if pos == self.subs.len() {
            return Some(false);
        }
        self.budget = self.budget.checked_sub(1)?;
        // The unacknowledged submissions before the next acknowledged one
        // must fill exactly the sequence numbers before it.
        let anchor = self.next_acked[pos];
        let available = self.unacked_before[anchor] - self.unacked_before[pos];
        let needed = match self.subs.get(anchor).and_then(|s| s.acked) {
            Some(acked) if acked <= last => match acked.checked_sub(seq) {
                Some(needed) => needed as usize,
                None => return Some(false),
            },
            _ => (last + 1 - seq) as usize,
        };
        if needed > available {
            return Some(false);
        }
        let sub = self.subs[pos];
        match sub.acked {
            Some(acked) if acked == seq => {
                if !self.fits(seq, &sub.entry, chosen, pos) {
                    return Some(false);
                }
                chosen.push(pos);
                let found = self.search(pos + 1, chosen);
                chosen.pop();
                found
            }
            Some(_) => Some(false),
            None => {
                if needed > 0 && self.fits(seq, &sub.entry, chosen, pos) {
                    chosen.push(pos);
                    let found = self.search(pos + 1, chosen);
                    chosen.pop();
                    if found != Some(false) {
                        return found;
                    }
                }
                if needed < available {
                    return self.search(pos + 1, chosen);
                }
                Some(false)
            }
        }
    }

    /// Whether the submission at `pos` can be record `seq`: the same entry
    /// where a record was recovered, and where `seq` is the snapshots' last
    /// sequence number, a prefix that makes the snapshot state.
    fn fits(&self, seq: Seq, entry: &Entry, chosen: &[usize], pos: usize) -> bool {
        let base_seq = self.recovery.base_seq;
        if seq > base_seq {
            let index = (seq - base_seq - 1) as usize;
            return self
                .recovery
                .records
                .get(index)
                .is_some_and(|record| record.entry == *entry);
        }
        if seq < base_seq {
            return true;
        }
        let mut state = self.model.state.clone();
        for &at in chosen.iter().chain(std::iter::once(&pos)) {
            apply(&mut state, &self.subs[at].entry);
        }
        visible(&state) == visible(&self.recovery.base)
    }

    /// Why no prefix fits: the first record no submission can be.
    fn explain(&self) -> String {
        let start = self.model.recovered_seq;
        let base_seq = self.recovery.base_seq;
        let acked: HashMap<Seq, &Entry> = self
            .subs
            .iter()
            .filter_map(|s| s.acked.map(|seq| (seq, &s.entry)))
            .collect();
        for record in self.recovery.records.iter().filter(|r| r.seq > start) {
            if let Some(entry) = acked.get(&record.seq) {
                if **entry != record.entry {
                    return format!(
                        "record {} is {:?}, but {:?} was acknowledged with that number",
                        record.seq, record.entry, entry
                    );
                }
            } else if !self.subs.iter().any(|s| s.entry == record.entry) {
                return format!(
                    "record {} is {:?}, which nobody submitted",
                    record.seq, record.entry
                );
            }
        }
        if base_seq > start {
            return format!(
                "no prefix of the {} operations submitted after {start} makes the snapshot state at {base_seq} and the records after it ({} keys in the snapshot)",
                self.subs.len(),
                self.recovery.base.len()
            );
        }
        format!(
            "the records {}..={} are not a prefix of the {} operations submitted after {start} in their order",
            start + 1,
            self.recovery.last_seq,
            self.subs.len()
        )
    }
}

/// Once every submission was answered, the store's readable state is the
/// state recovered at the open with exactly the acknowledged operations
/// applied, in sequence order: nothing unacknowledged shows (a write whose
/// sync failed, or that the power cut took), nothing acknowledged is missing.
fn check_live_state(store: &Store, model: &Model) -> Result<(), String> {
    let mut acked: Vec<(Seq, &Entry)> = model
        .submitted
        .iter()
        .filter_map(|s| Some((s.acked?, &s.entry)))
        .collect();
    acked.sort_by_key(|(seq, _)| *seq);
    let mut expected = model.state.clone();
    for (_, entry) in &acked {
        apply(&mut expected, entry);
    }
    let found = visible(&store.state().dump());
    let expected = visible(&expected);
    if found == expected {
        return Ok(());
    }
    let differing = expected
        .iter()
        .find(|(k, v)| found.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .or_else(|| found.keys().find(|k| !expected.contains_key(*k)));
    Err(format!(
        "the live state holds {} keys, the acknowledged operations leave {}; first differing key {:?}",
        found.len(),
        expected.len(),
        differing.map(|k| String::from_utf8_lossy(k).into_owned())
    ))
}

fn apply(state: &mut Keyspace, entry: &Entry) {
    apply_to(state, entry);
}

/// The keys a read sees. The workload's deadlines are either long past or
/// far ahead (see [`EntryMaker::op`]), so what a read sees never depends on
/// when the check runs, while a full snapshot may leave the expired keys
/// out.
fn visible(state: &Keyspace) -> Keyspace {
    crate::testing::visible(state, crate::state::now_ms())
}
/// the values and sizes that recovery must not misjudge.
struct EntryMaker {
    rng: StdRng,
    tag: String,
    counter: u64,
    limits: LimitsConfig,
}

impl EntryMaker {
    /// A size at `limit` or one byte under, or (rarely) one over, which the
    /// store must refuse.
    fn near(&mut self, limit: u64) -> usize {
        let size = match self.rng.random_range(0..8) {
            0 => limit + 1,
            1 => limit.saturating_sub(1),
            _ => limit,
        };
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    fn key(&mut self) -> Vec<u8> {
        let mut key = format!("k{}", self.rng.random_range(0..KEYS)).into_bytes();
        if self.rng.random_bool(0.05) {
            let len = self.near(self.limits.max_key_bytes).max(key.len());
            key.resize(len, b'.');
        }
        key
    }

    /// A value that names its writer (so that no two sets look alike) with,
    /// often, long runs of zeros: whole zero sectors and pages inside a
    /// record are user data, not evidence of a lost write.
    fn value(&mut self, size_hint: Option<usize>) -> Vec<u8> {
        let label = format!("{}.{}.", self.tag, self.counter).into_bytes();
        let max = usize::try_from(self.limits.max_value_bytes).unwrap_or(usize::MAX);
        let mut value = label.clone();
        match size_hint {
            Some(size) => value.resize(size.max(label.len()), 0),
            None => match self.rng.random_range(0..20) {
                0 | 1 => {
                    let run = self.rng.random_range(256..=1500);
                    value.resize(label.len() + run, 0);
                    value.extend_from_slice(&label);
                }
                2 => {
                    value.resize(label.len() + 4096, 0);
                    value.extend_from_slice(&label);
                }
                3 => {
                    let size = self.near(self.limits.max_value_bytes);
                    value.resize(size.max(label.len()), 0);
                    let end = value.len();
                    value[end - label.len()..].copy_from_slice(&label);
                }
                _ => {
                    let pad = self.rng.random_range(0..200);
                    value.extend(std::iter::repeat_n(b'v', pad));
                }
            },
        }
        if size_hint.is_none() && value.len() > max && self.rng.random_bool(0.8) {
            // Keep most values within the limit, so that most are written.
            value.truncate(max.max(1));
        }
        value
    }

    /// A deletion, a set, a set with a deadline (long past: the key must
    /// stay invisible through every recovery; or far ahead: its deadline
    /// must survive them), or, rarely, a clear of every key.
    fn op(&mut self) -> Op {
        self.counter += 1;
        if self.rng.random_bool(0.005) {
            return Op::Clear;
        }
        let key = self.key();
        match self.rng.random_range(0..20) {
            0..=4 => Op::Delete { key },
            5 => Op::SetExpiring {
                key,
                value: self.value(None),
                expires_at: self.rng.random_range(1..1_000_000),
            },
            6 => Op::SetExpiring {
                key,
                value: self.value(None),
                expires_at: FAR_AHEAD_MS + self.rng.random_range(0..1_000_000),
            },
            _ => Op::Set {
                key,
                value: self.value(None),
            },
        }
    }

    /// A batch whose size, as the store counts it (`check_entry`), lands
    /// at `limits.max_record_bytes`, a byte under, or a byte over.
    fn batch_at_record_limit(&mut self) -> Entry {
        let target = self.near(self.limits.max_record_bytes);
        // The store counts each op as key + value + 21, plus 16 per record.
        let per_op_max = usize::try_from(self.limits.max_value_bytes).unwrap_or(usize::MAX);
        let mut left = target.saturating_sub(16);
        let mut ops = Vec::new();
        while left > 0 {
            self.counter += 1;
            let key = format!("k{}", self.rng.random_range(0..KEYS)).into_bytes();
            let overhead = key.len() + 21;
            if left < overhead {
                break;
            }
            let size = (left - overhead).min(per_op_max);
            left -= overhead + size;
            let value = self.value(Some(size));
            let size = value.len();
            ops.push(Op::Set { key, value });
            if size > per_op_max {
                break;
            }
        }
        if ops.is_empty() {
            ops.push(self.op());
        }
        Entry::Batch(ops)
    }

    fn entry(&mut self) -> Entry {
        match self.rng.random_range(0..100) {
            0..=1 => self.batch_at_record_limit(),
            2..=21 => {
                let n = self.rng.random_range(1..=4);
                Entry::Batch((0..n).map(|_| self.op()).collect())
            }
            _ => Entry::Op(self.op()),
        }
    }
}

/// Runs the cycles; the first broken guarantee ends the run.
pub fn run(opts: &TortureOptions) -> Result<TortureReport, TortureFailure> {
    let opts = opts.clone();
    actix_rt::System::new().block_on(async move {
        let mut report = TortureReport {
            seed: opts.seed,
            ..TortureReport::default()
        };
        let mut model = Model::default();
        run_cycles(&opts, Subject::Store, async |fs, rng, cycle| {
            let fs = run_cycle(fs, &mut model, rng, &opts, cycle, &mut report).await?;
            report.cycles += 1;
            Ok(fs)
        })
        .await?;
        Ok(report)
    })
}

/// One cycle: open and verify (first, sometimes, a damaged copy of the
/// disk), run a workload, cut the power; returns the disk as the next boot
/// finds it.
async fn run_cycle(
    fs: SimFs,
    model: &mut Model,
    rng: &mut StdRng,
    opts: &TortureOptions,
    cycle: u64,
    report: &mut TortureReport,
) -> Result<SimFs, String> {
    let limits = next_limits(rng, model.limits.as_ref(), opts, &mut report.disk);
    model.limits = Some(limits.clone());
    let mut config = random_config(rng, limits);
    // Some cycles shut down once the writers are done, without waiting for
    // the snapshots and compactions: shutdown cancels the one under way,
    // and the next open must find everything as a clean shutdown left it.
    // Their maintenance writes at the slowest rate allowed, so that the
    // shutdown finds a job part way through.
    let close_early = rng.random_bool(0.2);
    if close_early {
        config.maintenance.write_bytes_per_sec = 1 << 20;
        config.maintenance.delete_bytes_per_sec = 1 << 20;
    }
    if opts.injects(FaultKind::MediaDamage) && rng.random_bool(0.15) {
        let mut drng = StdRng::seed_from_u64(rng.random());
        damaged_open(&fs, model, &mut drng, &config, report).await?;
    }
    let cut_during_open = rng.random_bool(0.1);
    if cut_during_open {
        fs.cut_power_after(rng.random_range(1..=40));
    }
    let opened = open_recording_with_fs(config.clone(), Arc::new(fs.clone())).await;
    let (store, recovery) = match opened {
        Ok(opened) => opened,
        Err(_) if fs.is_dead() => {
            report.cuts_during_open += 1;
            return Ok(reboot(&fs, rng, &mut report.disk));
        }
        Err(e) => return Err(format!("open failed: {e}")),
    };
    let verified = model.verify(&recovery)?;
    if fs.is_dead() {
        // The cut landed after recovery read everything but before the open
        // finished writing; the next open checks the same model again.
        report.cuts_during_open += 1;
        let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
        return Ok(reboot(&fs, rng, &mut report.disk));
    }
    report.acknowledged_lost += verified.lost;
    report.prefix_checks_undecided += u64::from(!verified.decided);
    report.records_recovered += recovery.records.len() as u64;
    report.snapshots_recovered += recovery.snapshots as u64;
    *report
        .cycles_by_mode
        .entry(format!("{:?}", config.wal.sync_mode).to_lowercase())
        .or_default() += 1;
    *model = Model {
        state: recovery.keyspace(),
        recovered_seq: recovery.last_seq,
        records: recovery
            .records
            .iter()
            .map(|r| (r.seq, r.entry.clone()))
            .collect(),
        promise: Some(Promise::of(&config)),
        submitted: Vec::new(),
        limits: model.limits.take(),
    };
    drop(recovery);

    let ops = rng.random_range(1..=opts.ops_per_cycle.max(1));
    let armed = arm(&fs, rng, opts, ops, &mut report.disk);
    let pause = armed.pause;
    let submitted = Rc::new(RefCell::new(Vec::<Submitted>::new()));
    let refused = Rc::new(RefCell::new(0u64));
    let writers = rng.random_range(1..=6usize);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut maker = EntryMaker {
            rng: StdRng::seed_from_u64(rng.random()),
            tag: format!("c{cycle}w{writer}"),
            counter: 0,
            limits: config.limits.clone(),
        };
        let (store, submitted, refused) =
            (store.clone(), Rc::clone(&submitted), Rc::clone(&refused));
        let quota = ops / writers + usize::from(writer < ops % writers);
        tasks.push(actix_rt::spawn(async move {
            // No more pauses once the log refuses appends (the power is
            // out): they would only stretch the run.
            let mut pause = pause;
            for _ in 0..quota {
                if let Some(max_micros) = pause {
                    let micros = maker.rng.random_range(0..=max_micros);
                    actix_rt::time::sleep(Duration::from_micros(micros)).await;
                }
                let entry = maker.entry();
                let submitted_at = Instant::now();
                // `submit` queues just before it resolves, and nothing
                // runs on this thread between that and the push below, so
                // the list is in the store's queue order, its write order.
                let pending = match store.submit(entry.clone()).await {
                    Ok(pending) => pending,
                    Err(e) => {
                        if matches!(e, Error::InvalidRequest(_)) {
                            *refused.borrow_mut() += 1;
                        } else {
                            pause = None;
                        }
                        continue;
                    }
                };
                let index = {
                    let mut list = submitted.borrow_mut();
                    list.push(Submitted {
                        entry,
                        acked: None,
                        submitted_at,
                        acked_at: None,
                    });
                    list.len() - 1
                };
                let Ok(answer) = actix_rt::time::timeout(ANSWER_LIMIT, pending).await else {
                    return Err(format!(
                        "an append ({} ops) went unanswered for {ANSWER_LIMIT:?}",
                        submitted.borrow()[index].entry.ops().len()
                    ));
                };
                match answer {
                    Ok(seq) => {
                        let mut list = submitted.borrow_mut();
                        list[index].acked = Some(seq);
                        list[index].acked_at = Some(Instant::now());
                    }
                    Err(_) => pause = None,
                }
            }
            Ok(())
        }));
    }
    // Set once a panic is injected into an actor that runs snapshots or
    // compactions: the one in flight may then fail.
    let builders_panicked = Rc::new(Cell::new(false));
    let closing = Rc::new(Cell::new(false));
    let maintenance = {
        let store = store.clone();
        let fs = fs.clone();
        let builders_panicked = Rc::clone(&builders_panicked);
        let closing = Rc::clone(&closing);
        let mut mrng = StdRng::seed_from_u64(rng.random());
        let rounds = rng.random_range(0..=4);
        actix_rt::spawn(async move {
            for _ in 0..rounds {
                actix_rt::time::sleep(Duration::from_micros(mrng.random_range(0..3000))).await;
                let limit = ANSWER_LIMIT;
                let (what, answered) = match mrng.random_range(0..5) {
                    0 => (
                        "a snapshot",
                        timeout(limit, store.snapshot()).await.map(|r| r.map(drop)),
                    ),
                    1 => (
                        "an incremental snapshot",
                        timeout(limit, store.snapshot_incremental())
                            .await
                            .map(|r| r.map(drop)),
                    ),
                    2 => (
                        "a compaction",
                        timeout(limit, store.compact()).await.map(|r| r.map(drop)),
                    ),
                    3 => {
                        let behind = Duration::from_micros(mrng.random_range(0..1000));
                        (
                            "a compaction with a waited snapshot behind it",
                            timeout(limit, compaction_and_save(&store, behind)).await,
                        )
                    }
                    _ => (
                        "a sync",
                        timeout(limit, store.sync()).await.map(|r| r.map(drop)),
                    ),
                };
                let Ok(answer) = answered else {
                    return Err(format!("{what} went unanswered for {limit:?}"));
                };
                let troubled = fs.is_dead() || !fs.stats().faults.is_empty();
                match answer {
                    Ok(()) => {}
                    Err(Error::ShutDown) if closing.get() => {
                        return Ok(u64::from(what != "a sync"));
                    }
                    Err(Error::Panicked { .. }) if builders_panicked.get() => {}
                    Err(_) if troubled => {}
                    Err(e) => {
                        return Err(format!(
                            "{what} failed with no fault fired and the power on: {e}"
                        ))
                    }
                }
            }
            Ok(0)
        })
    };
    let panics = {
        let store = store.clone();
        panic_actors(rng, opts, &mut report.disk, move |panic| match panic {
            Panic::Actor(actor) => {
                if matches!(actor, ActorKind::Snapshot | ActorKind::Compactor) {
                    builders_panicked.set(true);
                }
                store.crash_actor(actor);
            }
            Panic::RotatorPreparing => store.crash_rotator_while_preparing(),
        })
    };
    let context = |e: String| {
        format!(
            "{e} (sync mode {:?}, batch_size {}, sync_interval_ms {}, slow syncs {}, power {})",
            config.wal.sync_mode,
            config.wal.batch_size,
            config.wal.sync_interval_ms,
            pause.is_some(),
            if fs.is_dead() { "cut" } else { "on" }
        )
    };
    for task in tasks {
        task.await
            .map_err(|e| format!("a writer task failed: {e}"))?
            .map_err(context)?;
    }
    if close_early {
        panics
            .await
            .map_err(|e| format!("the actor panics failed: {e}"))?
            .map_err(context)?;
        closing.set(true);
        let Ok(closed) = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await else {
            return Err(context(
                "shutting down with maintenance under way hung".into(),
            ));
        };
        // A clean shutdown made every acknowledged record durable, in any
        // sync mode: the cut that follows may take none of them.
        if closed.is_ok() && !fs.is_dead() && fs.stats().faults.is_empty() {
            if let Some(promise) = &mut model.promise {
                promise.mode = SyncMode::Always;
            }
        }
        report.early_shutdowns += 1;
        report.maintenance_cancelled += maintenance
            .await
            .map_err(|e| format!("the maintenance task failed: {e}"))?
            .map_err(context)?;
        armed.disarm();
        model.submitted = submitted.take();
    } else {
        maintenance
            .await
            .map_err(|e| format!("the maintenance task failed: {e}"))?
            .map_err(context)?;
        panics
            .await
            .map_err(|e| format!("the actor panics failed: {e}"))?
            .map_err(context)?;
        armed.disarm();
        model.submitted = submitted.take();
        check_live_state(&store, model).map_err(context)?;
    }
    report.ops_refused += refused.take();
    report.ops_submitted += model.submitted.len() as u64;
    report.ops_acknowledged += model.submitted.iter().filter(|s| s.acked.is_some()).count() as u64;
    fs.cut_power();
    match actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await {
        Ok(_) => {}
        Err(_) => return Err("shutting down on a dead disk hung".into()),
    }
    drop(store);
    Ok(reboot(&fs, rng, &mut report.disk))
}

/// Opens a copy of the disk with one file damaged (see `damage`), and
/// checks what the open did against the model.
/// A compaction and, `behind` after it was asked for, a snapshot a client
/// waits for (`SAVE`): a compaction under way gives way to the snapshot
/// and runs again after it, and both must end as if they had run in turn.
async fn compaction_and_save(store: &Store, behind: Duration) -> crate::error::Result<()> {
    let save = async {
        actix_rt::time::sleep(behind).await;
        store.begin_snapshot_waited(SnapshotKind::Full)?.await
    };
    let (compacted, saved) = tokio::join!(store.compact(), save);
    compacted?;
    saved.map(drop)
}

async fn damaged_open(
    fs: &SimFs,
    model: &Model,
    rng: &mut StdRng,
    config: &Config,
    report: &mut TortureReport,
) -> Result<(), String> {
    let Some(copy) = damage_a_copy(fs, rng, config, &mut report.disk)? else {
        return Ok(());
    };
    let outcome = match open_recording_with_fs(copy.config.clone(), Arc::new(copy.fs.clone())).await
    {
        Err(e) => copy.judge_failure(e)?,
        Ok((store, recovery)) => {
            let judged = copy.judge_open(
                &recovery.skipped,
                recovery.truncated.as_ref(),
                recovery.last_seq,
                &mut |loss_bounds| model.verify_with(&recovery, loss_bounds).map(drop),
            );
            let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
            judged?
        }
    };
    copy.count(outcome, &mut report.disk);
    Ok(())
}

impl TortureReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut out = format!(
            "seed {}: {} cycles, {} operations submitted, {} acknowledged\n",
            self.seed, self.cycles, self.ops_submitted, self.ops_acknowledged
        );
        for (mode, n) in &self.cycles_by_mode {
            out += &format!("  cycles in {mode:<9} {n}\n");
        }
        out += &format!(
            "  power cuts during open {}\n  records recovered {}, snapshots loaded {}\n  shutdowns with maintenance under way {}, snapshots and compactions they cancelled {}\n  unsynced changes lost {}, kept {}, torn writes {}, directory changes lost {}\n",
            self.cuts_during_open,
            self.records_recovered,
            self.snapshots_recovered,
            self.early_shutdowns,
            self.maintenance_cancelled,
            self.disk.changes_lost,
            self.disk.changes_kept,
            self.disk.torn_writes,
            self.disk.dir_changes_lost
        );
        out += &format!(
            "  operations refused (over a limit) {}, acknowledged and lost {}, prefix checks undecided {}\n  pages written back out of order {}, pages torn by sector {}\n  cycles with slow syncs {}, syncs slowed {}\n  reopens with lowered limits {}\n",
            self.ops_refused,
            self.acknowledged_lost,
            self.prefix_checks_undecided,
            self.disk.pages_out_of_order,
            self.disk.sector_tears,
            self.disk.slow_sync_cycles,
            self.disk.slow_syncs,
            self.disk.limit_changes
        );
        out += &self.disk.detail_lines();
        out
    }
}
