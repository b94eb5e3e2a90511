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
//! The model's rules, checked after every cut:
//! - everything recovered at the previous open is still there (it was
//!   durable);
//! - the records after the snapshots are consecutive, and each is exactly
//!   the entry acknowledged with its sequence number, or one that was
//!   submitted and not acknowledged: no value is ever invented;
//! - each key's value in the snapshot state is the last acknowledged
//!   operation on it at or before the snapshot, or one submitted and not
//!   acknowledged: the state is a prefix of the operation sequence;
//! - in `always` mode, every acknowledged sequence number was recovered.
//!
//! Every random choice comes from the seed, so a failure names its seed and
//! cycle. Threads (the sync thread, maintenance threads) interleave as the
//! OS schedules them, so a replay repeats the workload, the faults and the
//! cut points exactly, and the interleaving only as far as timing allows.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{Config, SyncMode};
use crate::entry::{Entry, Op, Seq};
use crate::recovery::Recovery;
use crate::sim_fs::{Call, Fault, SimFs};
use crate::store::Store;

/// Where the simulated disk keeps the store.
const DATA_DIR: &str = "/sim/concordkv";
/// Keys are drawn from this many, so operations overwrite and delete each other.
const KEYS: u64 = 40;
/// How long shutting down a store on a dead disk may take before it counts as a hang.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct TortureOptions {
    pub seed: u64,
    pub cycles: u64,
    /// Operations submitted per cycle, at most.
    pub ops_per_cycle: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TortureReport {
    pub seed: u64,
    pub cycles: u64,
    /// Cycles by sync mode.
    pub cycles_by_mode: BTreeMap<String, u64>,
    /// Cycles whose power was cut while the store was opening.
    pub cuts_during_open: u64,
    pub ops_submitted: u64,
    pub ops_acknowledged: u64,
    /// Records after the snapshots that recovery returned, over all opens.
    pub records_recovered: u64,
    pub snapshots_recovered: u64,
    /// Unsynced file changes a cut dropped, kept, or tore.
    pub changes_lost: u64,
    pub changes_kept: u64,
    pub torn_writes: u64,
    pub dir_changes_lost: u64,
    /// Injected faults that fired, by "call errno".
    pub faults: BTreeMap<String, u64>,
}

/// A broken guarantee: the run's seed, the cycle, and what was wrong.
#[derive(Debug, Clone)]
pub struct TortureFailure {
    pub seed: u64,
    pub cycle: u64,
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

/// One operation submitted in a cycle, and its outcome.
#[derive(Debug, Clone)]
struct Submitted {
    entry: Entry,
    acked: Option<Seq>,
}

/// What the store must hold: the state verified at the last open, and what
/// was submitted since.
#[derive(Debug, Default)]
struct Model {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The last sequence number recovered at the last open.
    recovered_seq: Seq,
    mode: Option<SyncMode>,
    submitted: Vec<Submitted>,
}

/// The final operation an entry makes on `key`: `Some(Some(v))` a set,
/// `Some(None)` a deletion, `None` if it does not touch `key`.
fn effect_on(entry: &Entry, key: &[u8]) -> Option<Option<Vec<u8>>> {
    entry
        .ops()
        .iter()
        .rev()
        .find(|op| op.key() == key)
        .map(|op| match op {
            Op::Set { value, .. } => Some(value.clone()),
            Op::Delete { .. } => None,
        })
}

impl Model {
    /// Checks what an open recovered against the model.
    fn verify(&self, recovery: &Recovery) -> Result<(), String> {
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
            expected_seq += 1;
        }
        if expected_seq != last + 1 {
            return Err(format!(
                "records end at {}, last_seq is {last}",
                expected_seq - 1
            ));
        }

        let acked: HashMap<Seq, &Entry> = self
            .submitted
            .iter()
            .filter_map(|s| s.acked.map(|seq| (seq, &s.entry)))
            .collect();
        let mut unacked: Vec<&Entry> = self
            .submitted
            .iter()
            .filter(|s| s.acked.is_none())
            .map(|s| &s.entry)
            .collect();
        if self.mode == Some(SyncMode::Always) {
            if let Some(lost) = acked.keys().filter(|seq| **seq > last).min() {
                return Err(format!(
                    "sequence {lost} was acknowledged in always mode but recovery ends at {last}"
                ));
            }
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
        } else {
            self.verify_snapshot_state(recovery, &acked, &unacked)?;
        }

        for record in &recovery.records {
            if record.seq <= self.recovered_seq {
                continue;
            }
            match acked.get(&record.seq) {
                Some(entry) if **entry == record.entry => {}
                Some(entry) => {
                    return Err(format!(
                        "record {} is {:?}, but {:?} was acknowledged with that number",
                        record.seq, record.entry, entry
                    ))
                }
                None => match unacked.iter().position(|e| **e == record.entry) {
                    Some(index) => {
                        unacked.swap_remove(index);
                    }
                    None => {
                        return Err(format!(
                            "record {} is {:?}, which nobody submitted (or it was already used)",
                            record.seq, record.entry
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    /// The snapshot state when a snapshot taken this cycle covers new
    /// operations: each key holds the last acknowledged operation at or
    /// before the snapshot, the value from before, or an unacknowledged one.
    fn verify_snapshot_state(
        &self,
        recovery: &Recovery,
        acked: &HashMap<Seq, &Entry>,
        unacked: &[&Entry],
    ) -> Result<(), String> {
        let upto = recovery.base_seq;
        let mut keys: Vec<&Vec<u8>> = self.state.keys().chain(recovery.base.keys()).collect();
        for submitted in &self.submitted {
            keys.extend(submitted.entry.ops().iter().map(|op| match op {
                Op::Set { key, .. } | Op::Delete { key } => key,
            }));
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            let found = recovery.base.get(key).cloned();
            let last_acked = acked
                .iter()
                .filter(|(seq, _)| **seq <= upto)
                .filter_map(|(seq, entry)| effect_on(entry, key).map(|effect| (*seq, effect)))
                .max_by_key(|(seq, _)| *seq)
                .map(|(_, effect)| effect);
            let expected = last_acked.unwrap_or_else(|| self.state.get(key).cloned());
            if found == expected {
                continue;
            }
            if unacked
                .iter()
                .any(|e| effect_on(e, key) == Some(found.clone()))
            {
                continue;
            }
            return Err(format!(
                "key {:?} holds {:?} in the snapshot at {upto}; expected {:?} or an unacknowledged write",
                String::from_utf8_lossy(key),
                found.as_deref().map(String::from_utf8_lossy),
                expected.as_deref().map(String::from_utf8_lossy),
            ));
        }
        Ok(())
    }
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

fn random_config(rng: &mut StdRng) -> Config {
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

fn random_entry(rng: &mut StdRng, tag: &str, counter: &mut u64) -> Entry {
    let mut op = |rng: &mut StdRng| {
        *counter += 1;
        let key = format!("k{}", rng.random_range(0..KEYS)).into_bytes();
        if rng.random_bool(0.25) {
            Op::Delete { key }
        } else {
            let pad = rng.random_range(0..200);
            let value = format!("{tag}.{counter}.{}", "v".repeat(pad)).into_bytes();
            Op::Set { key, value }
        }
    };
    if rng.random_bool(0.2) {
        let n = rng.random_range(1..=4);
        Entry::Batch((0..n).map(|_| op(rng)).collect())
    } else {
        Entry::Op(op(rng))
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

/// One cycle: open and verify, run a workload, cut the power; returns the
/// disk as the next boot finds it.
async fn run_cycle(
    fs: SimFs,
    model: &mut Model,
    rng: &mut StdRng,
    opts: &TortureOptions,
    cycle: u64,
    report: &mut TortureReport,
) -> Result<SimFs, String> {
    let config = random_config(rng);
    let cut_during_open = rng.random_bool(0.1);
    if cut_during_open {
        fs.cut_power_after(rng.random_range(1..=40));
    }
    let opened = Store::open_with_fs(config.clone(), Arc::new(fs.clone())).await;
    let (store, recovery) = match opened {
        Ok(opened) => opened,
        Err(_) if fs.is_dead() => {
            report.cuts_during_open += 1;
            return Ok(reboot(&fs, rng, report));
        }
        Err(e) => return Err(format!("open failed: {e}")),
    };
    model.verify(&recovery)?;
    if fs.is_dead() {
        // The cut landed after recovery read everything but before the open
        // finished writing; the next open checks the same model again.
        report.cuts_during_open += 1;
        let _ = actix_rt::time::timeout(SHUTDOWN_LIMIT, store.shutdown()).await;
        return Ok(reboot(&fs, rng, report));
    }
    report.records_recovered += recovery.records.len() as u64;
    report.snapshots_recovered += recovery.snapshots as u64;
    *report
        .cycles_by_mode
        .entry(format!("{:?}", config.wal.sync_mode).to_lowercase())
        .or_default() += 1;
    *model = Model {
        state: recovery.state(),
        recovered_seq: recovery.last_seq,
        mode: Some(config.wal.sync_mode),
        submitted: Vec::new(),
    };
    drop(recovery);

    let ops = rng.random_range(1..=opts.ops_per_cycle.max(1));
    fs.cut_power_after(rng.random_range(1..=(ops as u64) * 3 + 20));
    if rng.random_bool(0.25) {
        fs.inject(random_fault(rng));
    }
    let submitted = Rc::new(RefCell::new(Vec::new()));
    let writers = rng.random_range(1..=6usize);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut wrng = StdRng::seed_from_u64(rng.random());
        let (store, submitted) = (store.clone(), Rc::clone(&submitted));
        let quota = ops / writers + usize::from(writer < ops % writers);
        let tag = format!("c{cycle}w{writer}");
        tasks.push(actix_rt::spawn(async move {
            let mut counter = 0;
            for _ in 0..quota {
                let entry = random_entry(&mut wrng, &tag, &mut counter);
                let outcome = match &entry {
                    Entry::Op(op) => store.append(op.clone()).await,
                    Entry::Batch(ops) => store.append_batch(ops.clone()).await,
                };
                submitted.borrow_mut().push(Submitted {
                    entry,
                    acked: outcome.ok(),
                });
            }
        }));
    }
    let maintenance = {
        let store = store.clone();
        let mut mrng = StdRng::seed_from_u64(rng.random());
        let rounds = rng.random_range(0..=4);
        actix_rt::spawn(async move {
            for _ in 0..rounds {
                actix_rt::time::sleep(Duration::from_micros(mrng.random_range(0..3000))).await;
                let _ = match mrng.random_range(0..4) {
                    0 => store.snapshot().await.map(drop),
                    1 => store.snapshot_incremental().await.map(drop),
                    2 => store.compact().await.map(drop),
                    _ => store.sync().await.map(drop),
                };
            }
        })
    };
    for task in tasks {
        task.await
            .map_err(|e| format!("a writer task failed: {e}"))?;
    }
    maintenance
        .await
        .map_err(|e| format!("the maintenance task failed: {e}"))?;
    model.submitted = submitted.take();
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

fn reboot(fs: &SimFs, rng: &mut StdRng, report: &mut TortureReport) -> SimFs {
    for ((call, errno), count) in fs.stats().faults {
        let name = if errno == libc::ENOSPC {
            "ENOSPC"
        } else {
            "EIO"
        };
        *report.faults.entry(format!("{call:?} {name}")).or_default() += count;
    }
    let (next, cut) = fs.reboot(rng.random());
    report.changes_lost += cut.changes_lost;
    report.changes_kept += cut.changes_kept;
    report.torn_writes += cut.torn_writes;
    report.dir_changes_lost += cut.dir_changes_lost;
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
        for (fault, n) in &self.faults {
            out += &format!("  injected {fault}: {n}\n");
        }
        out
    }
}
