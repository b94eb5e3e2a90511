//! Randomized crash-consistency testing under simulated power loss
//! (`concordkv torture`, and the `power_loss` test).
//!
//! One run is a sequence of cycles on one simulated disk ([`SimFs`]). Each
//! cycle opens the store, checks what recovery returned against a model of
//! everything submitted so far, then runs a random workload — concurrent
//! appenders of sets, deletes and batches in a random sync mode, with tiny
//! segments so rotation is constant, and snapshots, incremental snapshots
//! and compactions in between — while the power is cut after a random number
//! of file-system calls, sometimes after an injected `EIO` or `ENOSPC`.
//!
//! The workload writes values with long runs of zeros (whole zero sectors
//! and pages inside a record are user data), keys, values and batches at,
//! just under and just over `limits`, and the limits themselves sometimes
//! drop between restarts below what the records on disk were written
//! under. The disk reorders and tears writeback by sector at a cut, syncs
//! are sometimes slow (writes go on meanwhile), and some opens see a copy
//! of the disk with a flipped bit or a zeroed sector in a file recovery
//! reads.
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
//!
//! Every random choice comes from the seed, so a failure names its seed and
//! cycle. Threads (the sync thread, maintenance threads) interleave as the
//! OS schedules them, so a replay repeats the workload, the faults and the
//! cut points exactly, and the interleaving only as far as timing allows.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::time::timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{Config, LimitsConfig, RecoveryMode, SyncMode};
use crate::entry::{Entry, Op, Seq};
use crate::error::Error;
use crate::format::manifest::{Manifest, MANIFEST_FILE};
use crate::format::segment::segment_path;
use crate::fs::FileSystem;
use crate::lifecycle::snapshot::select_chain;
use crate::store::Store;
use crate::testing::recording::{open_recording_with_fs, Recorded as Recovery};
use crate::testing::sim_fs::{Call, Fault, SimFs};

/// Where the simulated disk keeps the store.
const DATA_DIR: &str = "/sim/concordkv";
/// Keys are drawn from this many, so operations overwrite and delete each other.
const KEYS: u64 = 40;
/// How long shutting down a store on a dead disk may take before it counts as a hang.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// How long an append, sync, snapshot or compaction may go unanswered
/// before it counts as a hang (the slowest simulated sync takes 30 ms).
const ANSWER_LIMIT: Duration = Duration::from_secs(20);
/// Steps the prefix search may take before it gives up (see [`PrefixSearch`]).
const SEARCH_BUDGET: u64 = 200_000;

/// The kinds of fault a run injects, each of which can be turned off
/// (`--without`) to tell which one a failure needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `EIO` and `ENOSPC` from chosen calls.
    IoErrors,
    /// Out-of-order page writeback and sector tears at a power cut.
    Reordering,
    /// Syncs that take milliseconds while writes go on.
    SlowSyncs,
    /// Bit flips and zeroed sectors injected between a cut and the next open.
    MediaDamage,
    /// Reopening with lower `limits` than the records on disk were written under.
    LimitChanges,
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "io-errors" => Ok(FaultKind::IoErrors),
            "reordering" => Ok(FaultKind::Reordering),
            "slow-syncs" => Ok(FaultKind::SlowSyncs),
            "media-damage" => Ok(FaultKind::MediaDamage),
            "limit-changes" => Ok(FaultKind::LimitChanges),
            other => Err(format!(
                "unknown fault kind `{other}`: accepted io-errors | reordering | slow-syncs | media-damage | limit-changes"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct TortureOptions {
    /// Seeds every random choice: the same seed replays the same run.
    pub seed: u64,
    /// Power cuts to run.
    pub cycles: u64,
    /// Operations submitted per cycle, at most.
    pub ops_per_cycle: usize,
    /// Fault kinds not to inject.
    pub without: Vec<FaultKind>,
}

impl TortureOptions {
    fn injects(&self, kind: FaultKind) -> bool {
        !self.without.contains(&kind)
    }
}

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
    /// Unsynced file changes a cut dropped.
    pub changes_lost: u64,
    /// Unsynced file changes a cut kept.
    pub changes_kept: u64,
    /// Unsynced writes a cut tore at a random byte.
    pub torn_writes: u64,
    /// Unsynced directory changes (creations, renames, removals) a cut dropped.
    pub dir_changes_lost: u64,
    /// Pages a cut wrote back although a page written before them was lost.
    pub pages_out_of_order: u64,
    /// Pages a cut left part new, part old, by 512-byte sector.
    pub sector_tears: u64,
    /// Cycles run with slow syncs, and the syncs slowed.
    pub slow_sync_cycles: u64,
    /// Syncs slowed down.
    pub slow_syncs: u64,
    /// Reopens with lower limits than before.
    pub limit_changes: u64,
    /// Media damage injected, by target file and kind.
    pub media_damage: BTreeMap<String, u64>,
    /// What the opens after media damage did.
    pub media_damage_outcomes: BTreeMap<String, u64>,
    /// Injected faults that fired, by "call errno".
    pub faults: BTreeMap<String, u64>,
}

/// A broken guarantee: the run's seed, the cycle, and what was wrong.
#[derive(Debug, Clone)]
pub struct TortureFailure {
    /// The run's seed.
    pub seed: u64,
    /// The cycle that failed (the seed and cycle replay it).
    pub cycle: u64,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for TortureFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} cycle {}: {} (replay: concordkv torture --seed {} --cycles {})",
            self.seed,
            self.cycle,
            self.message,
            self.seed,
            self.cycle + 1
        )
    }
}

impl std::error::Error for TortureFailure {}

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

/// The durability promise of the cycle whose log is being recovered.
#[derive(Debug, Clone, Copy)]
struct Promise {
    mode: SyncMode,
    batch_size: u64,
    sync_interval: Duration,
}

/// What the store must hold: what was verified at the last open, and what
/// was submitted since.
#[derive(Debug, Default)]
struct Model {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
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
            if state != self.state {
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

    /// The acknowledged records past the recovered end: none in `always`
    /// mode; in `batch` mode at most `batch_size` of them; in `interval`
    /// mode only records written within one interval after the oldest of
    /// them. Submission and acknowledgement times stand in for write times
    /// (a record is written after it is submitted and before it is
    /// acknowledged), so the measured spread never exceeds the real one;
    /// the interval is still given a margin of itself for timer slack.
    fn check_loss_bound(&self, last: Seq) -> Result<u64, String> {
        let Some(promise) = self.promise else {
            return Ok(0);
        };
        let mut lost: Vec<&Submitted> = self
            .submitted
            .iter()
            .filter(|s| s.acked.is_some_and(|seq| seq > last))
            .collect();
        lost.sort_by_key(|s| s.acked);
        let Some(oldest) = lost.first() else {
            return Ok(0);
        };
        let count = lost.len() as u64;
        match promise.mode {
            SyncMode::Always => Err(format!(
                "{count} records acknowledged in always mode were lost, the first {:?}; recovery ends at {last}",
                oldest.acked
            )),
            SyncMode::Batch if count > promise.batch_size => Err(format!(
                "batch mode lost {count} acknowledged records ({:?} to {:?}), more than batch_size = {}",
                oldest.acked,
                lost.last().and_then(|s| s.acked),
                promise.batch_size
            )),
            SyncMode::Interval => {
                let acked_at = oldest.acked_at.unwrap_or(oldest.submitted_at);
                let allowed = promise.sync_interval * 2;
                match lost
                    .iter()
                    .find(|s| s.submitted_at.saturating_duration_since(acked_at) > allowed)
                {
                    Some(late) => Err(format!(
                        "interval mode lost record {:?}, submitted {:?} after lost record {:?} was acknowledged; sync_interval_ms = {:?} (allowed, with margin: {allowed:?})",
                        late.acked,
                        late.submitted_at.saturating_duration_since(acked_at),
                        oldest.acked,
                        promise.sync_interval
                    )),
                    None => Ok(count),
                }
            }
            SyncMode::Batch | SyncMode::None => Ok(count),
        }
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
        state == self.recovery.base
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
    let found: BTreeMap<Vec<u8>, Vec<u8>> = store.state().iter().collect();
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

fn apply(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, entry: &Entry) {
    for op in entry.ops() {
        match op {
            Op::Set { key, value } => {
                state.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                state.remove(key);
            }
        }
    }
}

/// A seed per cycle, so each cycle's choices do not depend on how many
/// random numbers the previous one drew.
fn cycle_seed(seed: u64, cycle: u64) -> u64 {
    let mut z = seed ^ cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Limits small enough that records near them are cheap, and each at least
/// what the configuration requires of the others.
fn random_limits(rng: &mut StdRng) -> LimitsConfig {
    let max_key_bytes = rng.random_range(16..=300);
    let max_value_bytes = rng.random_range(256..=6000);
    LimitsConfig {
        max_key_bytes,
        max_value_bytes,
        max_record_bytes: max_key_bytes
            + max_value_bytes
            + 64
            + rng.random_range(0..=max_value_bytes / 2),
        // Not drawn, so that a seed replays the runs it always did.
        max_pending_bytes: Config::default().limits.max_pending_bytes,
    }
}

/// The limits of this cycle: usually those of the last one; sometimes
/// lower, so that records on disk exceed them (they must still recover:
/// the format, not the configuration, bounds what is on disk); sometimes
/// new ones.
fn next_limits(
    rng: &mut StdRng,
    previous: Option<&LimitsConfig>,
    opts: &TortureOptions,
    report: &mut TortureReport,
) -> LimitsConfig {
    let Some(previous) = previous else {
        return random_limits(rng);
    };
    match rng.random_range(0..10) {
        0 | 1 if opts.injects(FaultKind::LimitChanges) => {
            report.limit_changes += 1;
            let max_key_bytes = (previous.max_key_bytes / 2).max(8);
            let max_value_bytes = previous.max_value_bytes / 2;
            LimitsConfig {
                max_key_bytes,
                max_value_bytes,
                max_record_bytes: max_key_bytes + max_value_bytes + 64,
                max_pending_bytes: previous.max_pending_bytes,
            }
        }
        2 => {
            let raised = random_limits(rng);
            let max_key_bytes = raised.max_key_bytes.max(previous.max_key_bytes);
            let max_value_bytes = raised.max_value_bytes.max(previous.max_value_bytes);
            LimitsConfig {
                max_key_bytes,
                max_value_bytes,
                max_record_bytes: (max_key_bytes + max_value_bytes + 64)
                    .max(raised.max_record_bytes)
                    .max(previous.max_record_bytes),
                max_pending_bytes: previous.max_pending_bytes,
            }
        }
        _ => previous.clone(),
    }
}

fn random_config(rng: &mut StdRng, limits: LimitsConfig) -> Config {
    let mut config = Config::with_data_dir(DATA_DIR);
    config.wal.sync_mode = match rng.random_range(0..4) {
        0 => SyncMode::Always,
        1 => SyncMode::Batch,
        2 => SyncMode::Interval,
        _ => SyncMode::None,
    };
    config.wal.max_segment_bytes = rng.random_range(4096..=16384);
    config.wal.batch_size = rng.random_range(1..=16);
    config.wal.batch_max_delay_ms = rng.random_range(1..=3);
    config.wal.sync_interval_ms = rng.random_range(1..=5);
    config.compaction.threshold = rng.random_range(10..=200);
    config.compaction.ratio = rng.random_range(0.0..0.9);
    config.snapshot.keep = rng.random_range(1..=3);
    // The piecewise writing, filling and retiring run (retired files are cut
    // down step by step), but nothing sleeps: a simulated disk has no
    // appenders' syncs to spare.
    config.maintenance.write_bytes_per_sec = u64::MAX;
    config.maintenance.delete_bytes_per_sec = u64::MAX;
    config.limits = limits;
    config
}

fn random_fault(rng: &mut StdRng) -> Fault {
    let call = match rng.random_range(0..8) {
        0 => Call::Write,
        1 => Call::SyncData,
        2 => Call::SyncAll,
        3 => Call::SyncDir,
        4 => Call::Rename,
        5 => Call::Create,
        6 => Call::SetLen,
        _ => Call::Read,
    };
    Fault {
        call,
        nth: rng.random_range(1..=20),
        errno: if call == Call::Read || rng.random_bool(0.5) {
            libc::EIO
        } else {
            libc::ENOSPC
        },
        path_contains: None,
        sticky: rng.random_bool(0.3),
    }
}

/// Makes the entries of one writer: sets and deletes, atomic batches, and
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

    fn op(&mut self) -> Op {
        self.counter += 1;
        let key = self.key();
        if self.rng.random_bool(0.25) {
            Op::Delete { key }
        } else {
            Op::Set {
                key,
                value: self.value(None),
            }
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
        let mut fs = SimFs::new(cycle_seed(opts.seed, u64::MAX));
        fs.reorder_writeback(opts.injects(FaultKind::Reordering));
        let mut model = Model::default();
        for cycle in 0..opts.cycles {
            let failure = |message: String| TortureFailure {
                seed: opts.seed,
                cycle,
                message,
            };
            let mut rng = StdRng::seed_from_u64(cycle_seed(opts.seed, cycle));
            fs = run_cycle(fs, &mut model, &mut rng, &opts, cycle, &mut report)
                .await
                .map_err(failure)?;
            report.cycles += 1;
        }
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
    let limits = next_limits(rng, model.limits.as_ref(), opts, report);
    model.limits = Some(limits.clone());
    let config = random_config(rng, limits);
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
            return Ok(reboot(&fs, rng, report));
        }
        Err(e) => return Err(format!("open failed: {e}")),
    };
    let verified = model.verify(&recovery)?;
    if fs.is_dead() {
        // The cut landed after recovery read everything but before the open
        // finished writing; the next open checks the same model again.
        report.cuts_during_open += 1;
        let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
        return Ok(reboot(&fs, rng, report));
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
        state: recovery.state(),
        recovered_seq: recovery.last_seq,
        records: recovery
            .records
            .iter()
            .map(|r| (r.seq, r.entry.clone()))
            .collect(),
        promise: Some(Promise {
            mode: config.wal.sync_mode,
            batch_size: config.wal.batch_size,
            sync_interval: Duration::from_millis(config.wal.sync_interval_ms),
        }),
        submitted: Vec::new(),
        limits: model.limits.take(),
    };
    drop(recovery);

    let ops = rng.random_range(1..=opts.ops_per_cycle.max(1));
    // Mostly a cut in the middle of the workload; sometimes only at its end,
    // so that snapshots and compactions, which read many files, complete
    // and retire segments (else the log only grows).
    let calls = if rng.random_bool(0.25) {
        u64::MAX / 2
    } else {
        rng.random_range(1..=(ops as u64) * 3 + 20)
    };
    fs.cut_power_after(calls);
    if opts.injects(FaultKind::IoErrors) && rng.random_bool(0.25) {
        fs.inject(random_fault(rng));
    }
    // With slow syncs, writers also pause between submissions and the power
    // is cut at a random moment as well, so that the workload outlasts a
    // sync interval and the cut can land while a sync lags: the loss bounds
    // are tested where they matter.
    let mut cutter = None;
    let pause = if opts.injects(FaultKind::SlowSyncs) && rng.random_bool(0.1) {
        report.slow_sync_cycles += 1;
        fs.slow_syncs(Some(Duration::from_millis(rng.random_range(5..=30))));
        let at = Duration::from_millis(rng.random_range(1..=50));
        let fs = fs.clone();
        cutter = Some(actix_rt::spawn(async move {
            actix_rt::time::sleep(at).await;
            fs.cut_power();
        }));
        Some(rng.random_range(100..=1000))
    } else {
        None
    };
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
    let maintenance = {
        let store = store.clone();
        let mut mrng = StdRng::seed_from_u64(rng.random());
        let rounds = rng.random_range(0..=4);
        actix_rt::spawn(async move {
            for _ in 0..rounds {
                actix_rt::time::sleep(Duration::from_micros(mrng.random_range(0..3000))).await;
                let limit = ANSWER_LIMIT;
                let (what, answered) = match mrng.random_range(0..4) {
                    0 => (
                        "a snapshot",
                        timeout(limit, store.snapshot()).await.map(drop),
                    ),
                    1 => (
                        "an incremental snapshot",
                        timeout(limit, store.snapshot_incremental()).await.map(drop),
                    ),
                    2 => (
                        "a compaction",
                        timeout(limit, store.compact()).await.map(drop),
                    ),
                    _ => ("a sync", timeout(limit, store.sync()).await.map(drop)),
                };
                if answered.is_err() {
                    return Err(format!("{what} went unanswered for {limit:?}"));
                }
            }
            Ok(())
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
    maintenance
        .await
        .map_err(|e| format!("the maintenance task failed: {e}"))?
        .map_err(context)?;
    if let Some(cutter) = cutter {
        cutter.abort();
    }
    model.submitted = submitted.take();
    check_live_state(&store, model).map_err(context)?;
    report.ops_refused += refused.take();
    report.ops_submitted += model.submitted.len() as u64;
    report.ops_acknowledged += model.submitted.iter().filter(|s| s.acked.is_some()).count() as u64;
    fs.cut_power();
    match actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await {
        Ok(_) => {}
        Err(_) => return Err("shutting down on a dead disk hung".into()),
    }
    drop(store);
    Ok(reboot(&fs, rng, report))
}

/// A file recovery reads, and so may be damaged to test it.
#[derive(Debug, Clone)]
struct Target {
    path: PathBuf,
    /// What it is, for reports: "manifest", "snapshot", "sealed segment",
    /// "newest segment".
    kind: &'static str,
}

/// The files the next open reads: the MANIFEST, the snapshots of the chain
/// it loads, and the segments it lists that were started (a segment whose
/// first page is zeros was prepared and never used; recovery retires it
/// unread).
fn damage_targets(fs: &SimFs) -> Vec<Target> {
    let dir = PathBuf::from(DATA_DIR);
    let manifest_path = dir.join(MANIFEST_FILE);
    let Ok(bytes) = fs.read(&manifest_path) else {
        return Vec::new();
    };
    let Ok(manifest) = Manifest::decode(&bytes) else {
        return Vec::new();
    };
    let mut targets = vec![Target {
        path: manifest_path,
        kind: "manifest",
    }];
    for header in select_chain(&manifest.snapshots) {
        targets.push(Target {
            path: dir.join(header.file_name()),
            kind: "snapshot",
        });
    }
    let started: Vec<PathBuf> = manifest
        .segments
        .iter()
        .map(|id| segment_path(&dir, *id))
        .filter(|path| {
            fs.read_prefix(path, 4096)
                .is_ok_and(|head| head.iter().any(|b| *b != 0))
        })
        .collect();
    let count = started.len();
    for (index, path) in started.into_iter().enumerate() {
        targets.push(Target {
            path,
            kind: if index + 1 == count {
                "newest segment"
            } else {
                "sealed segment"
            },
        });
    }
    targets
}

/// Damages one file of a copy of the disk (a flipped bit or a zeroed
/// 512-byte sector; never an injection that changes nothing), opens the
/// copy, and checks what the open did: fail naming the file, report the
/// region as skipped (`skip_corrupt`), or, only in the newest segment, cut
/// it as a torn tail — and whatever it returns must still pass the model.
/// The copy is then dropped: the next cycle goes on from the undamaged disk.
async fn damaged_open(
    fs: &SimFs,
    model: &Model,
    rng: &mut StdRng,
    config: &Config,
    report: &mut TortureReport,
) -> Result<(), String> {
    let copy = fs.duplicate();
    let targets = damage_targets(&copy);
    if targets.is_empty() {
        return Ok(());
    }
    let target = targets[rng.random_range(0..targets.len())].clone();
    let Ok(bytes) = copy.read(&target.path) else {
        return Ok(());
    };
    let Some((offset, damage, what)) = pick_damage(rng, &bytes) else {
        return Ok(());
    };
    copy.damage(&target.path, offset as u64, &damage)
        .map_err(|e| format!("damaging {}: {e}", target.path.display()))?;
    *report
        .media_damage
        .entry(format!("{what} in {}", target.kind))
        .or_default() += 1;
    let mut config = config.clone();
    if rng.random_bool(0.3) {
        config.wal.recovery_mode = RecoveryMode::SkipCorrupt;
    }
    let described = format!(
        "{what} at byte {offset} of {} ({}, recovery_mode {:?})",
        target.path.display(),
        target.kind,
        config.wal.recovery_mode
    );
    // A segment whose damage leaves only zeros from there to its end looks
    // like one whose records ended earlier (or, all zeros, like one
    // prepared and never used): only the gap it leaves, which the next
    // segment shows, or the model can tell.
    let mut damaged = bytes.clone();
    damaged[offset..offset + damage.len()].copy_from_slice(&damage);
    let zeroed_to_end =
        target.kind.ends_with("segment") && damaged[offset..].iter().all(|x| *x == 0);
    let outcome = match open_recording_with_fs(config, Arc::new(copy.clone())).await {
        Err(Error::Corruption(corruption)) => {
            if corruption.file != target.path && !zeroed_to_end {
                return Err(format!(
                    "after {described}, the open failed naming another file: {corruption}"
                ));
            }
            if corruption.offset > bytes.len() as u64 {
                return Err(format!(
                    "after {described}, the open failed naming an offset past the file's end: {corruption}"
                ));
            }
            "failed naming the file"
        }
        Err(e) => return Err(format!("after {described}, the open failed: {e}")),
        Ok((store, recovery)) => {
            let skipped = recovery
                .skipped
                .iter()
                .any(|c| c.file == target.path || zeroed_to_end);
            let outcome = if skipped {
                "skipped the region"
            } else if target.kind != "newest segment" && !zeroed_to_end {
                let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
                return Err(format!(
                    "after {described}, the open succeeded without reporting it (torn tail cut: {:?}; regions skipped: {:?})",
                    recovery.truncated, recovery.skipped
                ));
            } else {
                let checked = if target.kind == "newest segment" {
                    check_newest_segment_rule(&damaged, &recovery)
                        .and_then(|()| model.verify_with(&recovery, false).map(drop))
                } else {
                    // A sealed segment was synced whole: nothing in it may
                    // be lost, so every bound holds as after a plain cut.
                    model.verify(&recovery).map(drop)
                };
                if let Err(e) = checked {
                    let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
                    return Err(format!(
                        "after {described}, the open returned a bad log: {e}"
                    ));
                }
                if recovery.truncated.is_some() {
                    "cut a torn tail"
                } else {
                    "opened"
                }
            };
            let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
            outcome
        }
    };
    *report
        .media_damage_outcomes
        .entry(format!("{}: {outcome}", target.kind))
        .or_default() += 1;
    Ok(())
}

/// What the oracle reads in a damaged format-2 segment, with its own
/// parser (FORMAT.md), independently of recovery.
#[derive(Debug)]
struct SegmentScan {
    /// Where the run of intact, consecutive frames after the header ends:
    /// the damage as recovery meets it, or the end of the records.
    damage_at: usize,
    /// Whether anything but zeros follows `damage_at`.
    damaged: bool,
    /// The last sequence number in that run.
    last_intact_seq: Option<Seq>,
    /// The highest `durable` of the frames intact at their own offset
    /// after `damage_at`, and where that frame is.
    durable_after: Option<(u64, usize)>,
}

const SEGMENT_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAX_PAYLOAD: usize = 1 << 30;

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The format-2 frame intact at `at` (its CRC covers its own offset), if
/// any: its sequence number, `durable` field and size.
fn intact_frame(bytes: &[u8], at: usize) -> Option<(Seq, u64, usize)> {
    let head = bytes.get(at..at + FRAME_HEADER)?;
    let len = le_u32(head, 0) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[0..4]);
    crc.update(&head[8..]);
    crc.update(&(at as u64).to_le_bytes());
    crc.update(payload);
    (crc.finalize() == le_u32(head, 4)).then(|| {
        (
            le_u64(head, 8),
            u64::from(le_u32(head, 20)),
            FRAME_HEADER + len,
        )
    })
}

/// Scans a segment the way FORMAT.md describes it; `None` unless its
/// header says format 2 (or the header is what is damaged).
fn scan_segment(bytes: &[u8]) -> Option<SegmentScan> {
    let header = bytes.get(..SEGMENT_HEADER)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[0..12]);
    crc.update(&header[16..32]);
    let header_intact = &header[0..8] == b"CKVWAL\r\n" && crc.finalize() == le_u32(header, 12);
    if header_intact && le_u32(header, 8) != 2 {
        return None;
    }
    let mut at = if header_intact { SEGMENT_HEADER } else { 0 };
    let mut last_intact_seq = None;
    if header_intact {
        let mut expected = le_u64(header, 24);
        while let Some((seq, _, size)) = intact_frame(bytes, at) {
            if seq != expected {
                break;
            }
            last_intact_seq = Some(seq);
            expected += 1;
            at += size;
        }
    }
    let durable_after = (at + 1..bytes.len())
        .filter_map(|later| intact_frame(bytes, later).map(|(_, durable, _)| (durable, later)))
        .max();
    Some(SegmentScan {
        damage_at: at,
        damaged: bytes[at..].iter().any(|b| *b != 0),
        last_intact_seq,
        durable_after,
    })
}

/// The durability rule for an open that went through damage in the newest
/// segment: damage at X is a torn tail only if no intact frame after X
/// says the segment was durable past X; and every record whose frame lies
/// wholly before the damage is returned.
fn check_newest_segment_rule(bytes: &[u8], recovery: &Recovery) -> Result<(), String> {
    let Some(scan) = scan_segment(bytes) else {
        return Ok(());
    };
    if !scan.damaged {
        return Ok(());
    }
    if let Some((durable, frame)) = scan.durable_after {
        if durable > scan.damage_at as u64 {
            return Err(format!(
                "damage at byte {} lies below the durable offset {durable} that the intact frame at byte {frame} carries, yet the open neither failed nor reported it (torn tail cut: {:?}; recovered up to {})",
                scan.damage_at, recovery.truncated, recovery.last_seq
            ));
        }
    }
    match scan.last_intact_seq {
        Some(seq) if recovery.last_seq < seq => Err(format!(
            "the frames before the damage at byte {} hold records up to {seq}, but recovery ends at {}",
            scan.damage_at, recovery.last_seq
        )),
        _ => Ok(()),
    }
}

/// A bit flip or a zeroed 512-byte sector somewhere in `bytes` that changes
/// at least one byte: the offset, the bytes to write there, and its name.
fn pick_damage(rng: &mut StdRng, bytes: &[u8]) -> Option<(usize, Vec<u8>, &'static str)> {
    if bytes.is_empty() {
        return None;
    }
    for _ in 0..8 {
        if rng.random_bool(0.5) {
            let at = rng.random_range(0..bytes.len());
            let flipped = bytes[at] ^ (1 << rng.random_range(0..8));
            return Some((at, vec![flipped], "bit flip"));
        }
        let start = rng.random_range(0..bytes.len().div_ceil(512)) * 512;
        let end = (start + 512).min(bytes.len());
        if bytes[start..end].iter().any(|b| *b != 0) {
            return Some((start, vec![0; end - start], "zeroed sector"));
        }
    }
    None
}

fn reboot(fs: &SimFs, rng: &mut StdRng, report: &mut TortureReport) -> SimFs {
    let stats = fs.stats();
    for ((call, errno), count) in stats.faults {
        let name = if errno == libc::ENOSPC {
            "ENOSPC"
        } else {
            "EIO"
        };
        *report.faults.entry(format!("{call:?} {name}")).or_default() += count;
    }
    report.slow_syncs += stats.slow_syncs;
    let (next, cut) = fs.reboot(rng.random());
    report.changes_lost += cut.changes_lost;
    report.changes_kept += cut.changes_kept;
    report.torn_writes += cut.torn_writes;
    report.dir_changes_lost += cut.dir_changes_lost;
    report.pages_out_of_order += cut.pages_out_of_order;
    report.sector_tears += cut.sector_tears;
    next
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
            "  power cuts during open {}\n  records recovered {}, snapshots loaded {}\n  unsynced changes lost {}, kept {}, torn writes {}, directory changes lost {}\n",
            self.cuts_during_open,
            self.records_recovered,
            self.snapshots_recovered,
            self.changes_lost,
            self.changes_kept,
            self.torn_writes,
            self.dir_changes_lost
        );
        out += &format!(
            "  operations refused (over a limit) {}, acknowledged and lost {}, prefix checks undecided {}\n  pages written back out of order {}, pages torn by sector {}\n  cycles with slow syncs {}, syncs slowed {}\n  reopens with lowered limits {}\n",
            self.ops_refused,
            self.acknowledged_lost,
            self.prefix_checks_undecided,
            self.pages_out_of_order,
            self.sector_tears,
            self.slow_sync_cycles,
            self.slow_syncs,
            self.limit_changes
        );
        for (damage, n) in &self.media_damage {
            out += &format!("  media damage: {damage}: {n}\n");
        }
        for (outcome, n) in &self.media_damage_outcomes {
            out += &format!("  after media damage, {outcome}: {n}\n");
        }
        for (fault, n) in &self.faults {
            out += &format!("  injected {fault}: {n}\n");
        }
        out
    }
}
