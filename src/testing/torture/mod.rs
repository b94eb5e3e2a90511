//! Randomized crash-consistency testing under simulated power loss
//! (`concordkv torture`, `concordkv torture --log`, and the `power_loss`
//! and `log_power_loss` tests).
//!
//! One run is a sequence of cycles on one simulated disk ([`SimFs`]). Each
//! cycle opens what it tortures, checks what recovery returned against a
//! model of everything submitted so far, then runs a random concurrent
//! workload in a random sync mode, with tiny segments so rotation is
//! constant, while the power is cut after a random number of file-system
//! calls, sometimes after an injected `EIO` or `ENOSPC`. Two things are
//! tortured this way, each with its own workload and model:
//! - a key-value [`Store`](crate::Store) ([`run`], in `store`): sets,
//!   deletes, atomic batches, snapshots and compactions;
//! - a [`Log`](crate::Log) ([`log::run`]): appends, batch appends,
//!   truncations, purges, metadata writes, reads and a subscriber.
//!
//! What they share lives here and in `damage`: the options, the faults and
//! how a cycle arms them, the cycle's configuration (limits at, under and
//! over what the records on disk were written with), the loss bound of
//! each sync mode, the report of what the disk did, and media damage
//! between a cut and the next open with the rules its outcome must obey.
//!
//! The disk reorders and tears writeback by sector at a cut, syncs are
//! sometimes slow (writes go on meanwhile), some opens see a copy of the
//! disk with a flipped bit or a zeroed sector in a file recovery reads, and
//! actors other than the WAL panic now and then during a workload (the
//! supervisor restarts them; nothing the models check may change). A
//! watchdog thread ends a run whose cycle stops making progress.
//!
//! Every random choice comes from the seed, so a failure names its seed and
//! cycle. Threads (the sync thread, maintenance threads) interleave as the
//! OS schedules them, so a replay repeats the workload, the faults and the
//! cut points exactly, and the interleaving only as far as timing allows.

mod damage;
pub mod log;
mod store;

pub use store::{run, TortureReport};

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::actors::supervised::ActorKind;
use crate::config::{Config, LimitsConfig, SyncMode};
use crate::entry::Seq;
use crate::testing::sim_fs::{Call, Fault, SimFs};

/// Where the simulated disk keeps the store or the log.
const DATA_DIR: &str = "/sim/concordkv";
/// How long shutting down a store on a dead disk may take before it counts as a hang.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// How long an append, sync, snapshot or compaction may go unanswered
/// before it counts as a hang (the slowest simulated sync takes 30 ms).
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

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
    /// Panics in the rotator (also just as the WAL asks it for a segment),
    /// compactor, snapshot, sync-timer and metrics actors during a workload.
    ActorPanics,
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
            "actor-panics" => Ok(FaultKind::ActorPanics),
            other => Err(format!(
                "unknown fault kind `{other}`: accepted io-errors | reordering | slow-syncs | media-damage | limit-changes | actor-panics"
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

/// What a torture run tortured, so that a failure says how to replay it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A key-value [`Store`](crate::Store) (`concordkv torture`).
    Store,
    /// A [`Log`](crate::Log) (`concordkv torture --log`).
    Log,
}

/// A broken guarantee: the run's seed, the cycle, and what was wrong.
#[derive(Debug, Clone)]
pub struct TortureFailure {
    /// What was tortured.
    pub subject: Subject,
    /// The run's seed.
    pub seed: u64,
    /// The cycle that failed (the seed and cycle replay it).
    pub cycle: u64,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for TortureFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.subject {
            Subject::Store => "",
            Subject::Log => " --log",
        };
        write!(
            f,
            "seed {} cycle {}: {} (replay: concordkv torture{flag} --seed {} --cycles {})",
            self.seed,
            self.cycle,
            self.message,
            self.seed,
            self.cycle + 1
        )
    }
}

impl std::error::Error for TortureFailure {}

/// What a run did to the disk and to the configuration the store reopens
/// with: the part of the report both tortures share (flattened into each
/// report's JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskReport {
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
    /// Panics injected into actors, by actor.
    pub actor_panics: BTreeMap<String, u64>,
}

impl DiskReport {
    /// The summary's lines for media damage and injected faults, one per kind.
    fn detail_lines(&self) -> String {
        let mut out = String::new();
        for (damage, n) in &self.media_damage {
            out += &format!("  media damage: {damage}: {n}\n");
        }
        for (outcome, n) in &self.media_damage_outcomes {
            out += &format!("  after media damage, {outcome}: {n}\n");
        }
        for (fault, n) in &self.faults {
            out += &format!("  injected {fault}: {n}\n");
        }
        for (actor, n) in &self.actor_panics {
            out += &format!("  injected panic in {actor}: {n}\n");
        }
        out
    }
}

/// The disk as the next boot finds it (cutting the power if it is still
/// on), counting what the cut and the injected faults did.
fn reboot(fs: &SimFs, rng: &mut StdRng, report: &mut DiskReport) -> SimFs {
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

/// Runs `opts.cycles` cycles on one simulated disk, each with a generator
/// of its own seed; the first failure ends the run, named by `subject`,
/// the seed and the cycle, which replay it.
async fn run_cycles(
    opts: &TortureOptions,
    subject: Subject,
    mut cycle: impl AsyncFnMut(SimFs, &mut StdRng, u64) -> Result<SimFs, String>,
) -> Result<(), TortureFailure> {
    let mut fs = SimFs::new(cycle_seed(opts.seed, u64::MAX));
    fs.reorder_writeback(opts.injects(FaultKind::Reordering));
    if opts.injects(FaultKind::ActorPanics) {
        quiet_injected_panics();
    }
    let watchdog = Watchdog::start(subject, opts.seed);
    for n in 0..opts.cycles {
        watchdog.cycle(n);
        let mut rng = StdRng::seed_from_u64(cycle_seed(opts.seed, n));
        fs = cycle(fs, &mut rng, n)
            .await
            .map_err(|message| TortureFailure {
                subject,
                seed: opts.seed,
                cycle: n,
                message,
            })?;
    }
    Ok(())
}

/// How long one cycle may run before the run counts as stuck. The limits
/// above catch a call that goes unanswered; only a thread of its own sees
/// an event loop that stopped turning (a task that spins or blocks starves
/// every timeout on it).
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Ends the process with the seed and cycle when a cycle outlasts
/// [`STALL_LIMIT`]: a stuck run reports itself instead of hanging.
struct Watchdog {
    cycles: std::sync::mpsc::Sender<u64>,
}

impl Watchdog {
    fn start(subject: Subject, seed: u64) -> Watchdog {
        let (cycles, started) = std::sync::mpsc::channel::<u64>();
        let watch = move || {
            use std::sync::mpsc::RecvTimeoutError;
            let mut current = None;
            loop {
                match started.recv_timeout(STALL_LIMIT) {
                    Ok(cycle) => current = Some(cycle),
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        let failure = TortureFailure {
                            subject,
                            seed,
                            cycle: current.unwrap_or(0),
                            message: format!(
                                "the cycle made no progress for {STALL_LIMIT:?}: its event loop is stuck"
                            ),
                        };
                        eprintln!("{failure}");
                        std::process::exit(1);
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("torture-watchdog".into())
            .spawn(watch)
        {
            tracing::warn!(%e, "the torture runs without a watchdog");
        }
        Watchdog { cycles }
    }

    fn cycle(&self, n: u64) {
        let _ = self.cycles.send(n);
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
    report: &mut DiskReport,
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

/// A cycle's configuration: a random sync mode, tiny segments, small
/// batches and intervals, and `limits`. (The compaction and snapshot keys
/// are drawn for a log too, which does not use them, so that both
/// tortures draw the same way.)
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

/// How a cycle's workload meets its end, armed before it starts.
struct Armed {
    /// Cuts the power at a random moment (only with slow syncs).
    cutter: Option<actix_rt::task::JoinHandle<()>>,
    /// With slow syncs, the most a writer pauses between two submissions,
    /// in microseconds.
    pause: Option<u64>,
}

impl Armed {
    /// The workload is over: the timed cut, if any, is no longer wanted
    /// (the cycle cuts the power itself now).
    fn disarm(self) {
        if let Some(cutter) = self.cutter {
            cutter.abort();
        }
    }
}

/// Arms the end of a workload of about `ops` operations: a power cut after
/// a random number of file-system calls (mostly in the middle of the
/// workload; sometimes only at its end, so that work which reads many
/// files completes), sometimes an injected `EIO` or `ENOSPC`, and
/// sometimes slow syncs. With slow syncs, writers also pause between
/// submissions and the power is cut at a random moment as well, so that
/// the workload outlasts a sync interval and the cut can land while a sync
/// lags: the loss bounds are tested where they matter.
fn arm(
    fs: &SimFs,
    rng: &mut StdRng,
    opts: &TortureOptions,
    ops: usize,
    report: &mut DiskReport,
) -> Armed {
    let calls = if rng.random_bool(0.25) {
        u64::MAX / 2
    } else {
        rng.random_range(1..=(ops as u64) * 3 + 20)
    };
    fs.cut_power_after(calls);
    if opts.injects(FaultKind::IoErrors) && rng.random_bool(0.25) {
        fs.inject(random_fault(rng));
    }
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
    Armed { cutter, pause }
}

/// The durability promise of the cycle whose log is being recovered.
#[derive(Debug, Clone, Copy)]
struct Promise {
    mode: SyncMode,
    batch_size: u64,
    sync_interval: Duration,
}

impl Promise {
    fn of(config: &Config) -> Promise {
        Promise {
            mode: config.wal.sync_mode,
            batch_size: config.wal.batch_size,
            sync_interval: Duration::from_millis(config.wal.sync_interval_ms),
        }
    }
}

/// An acknowledged record a cut lost, as the loss bound judges it.
#[derive(Debug, Clone, Copy)]
struct LostRecord {
    /// The sequence number it was acknowledged with.
    acked: Option<Seq>,
    /// When it was handed to the store (before it could be written).
    submitted_at: Instant,
    /// When its acknowledgement arrived (after it was written).
    acked_at: Option<Instant>,
}

/// Whether the acknowledged records a cut lost are within the sync mode's
/// bound: none in `always` mode; in `batch` mode at most `batch_size` of
/// them; in `interval` mode only records written within one interval after
/// the oldest of them. Submission and acknowledgement times stand in for
/// write times (a record is written after it is submitted and before it is
/// acknowledged), so the measured spread never exceeds the real one; the
/// interval is still given a margin of itself for timer slack. `last` is
/// where recovery ended, for the message. Returns how many were lost.
fn check_loss_bound(
    promise: Option<Promise>,
    mut lost: Vec<LostRecord>,
    last: Seq,
) -> Result<u64, String> {
    let Some(promise) = promise else {
        return Ok(0);
    };
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

/// The actors a workload makes panic. Not the WAL: its death fails the
/// appends it held, some of them written, which the models would take for
/// a power cut that never happened (`tests/actor_restarts.rs` covers it).
const PANICKING_ACTORS: [ActorKind; 5] = [
    ActorKind::Rotator,
    ActorKind::Compactor,
    ActorKind::Snapshot,
    ActorKind::SyncTimer,
    ActorKind::Metrics,
];

/// A panic the workload injects.
#[derive(Debug, Clone, Copy)]
enum Panic {
    /// In the actor's next handler.
    Actor(ActorKind),
    /// In the rotator, as the WAL next asks it for a segment: the WAL
    /// hears of the death as its answer, perhaps with a full segment
    /// waiting for the new one.
    RotatorPreparing,
}

impl Panic {
    fn name(self) -> &'static str {
        match self {
            Panic::Actor(actor) => actor.name(),
            Panic::RotatorPreparing => "rotator (preparing a segment)",
        }
    }
}

/// A task that makes up to three actors panic at random moments of the
/// workload's first few milliseconds, in some cycles (none without
/// [`FaultKind::ActorPanics`]); counted in `disk`.
fn panic_actors(
    rng: &mut StdRng,
    opts: &TortureOptions,
    disk: &mut DiskReport,
    crash: impl Fn(Panic) + 'static,
) -> actix_rt::task::JoinHandle<Result<(), String>> {
    let mut schedule = Vec::new();
    if opts.injects(FaultKind::ActorPanics) && rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..=3) {
            let actor = PANICKING_ACTORS[rng.random_range(0..PANICKING_ACTORS.len())];
            let panic = match actor {
                ActorKind::Rotator if rng.random_bool(0.5) => Panic::RotatorPreparing,
                _ => Panic::Actor(actor),
            };
            *disk.actor_panics.entry(panic.name().into()).or_default() += 1;
            schedule.push((Duration::from_micros(rng.random_range(0..5000)), panic));
        }
    }
    actix_rt::spawn(async move {
        for (wait, panic) in schedule {
            actix_rt::time::sleep(wait).await;
            crash(panic);
        }
        Ok(())
    })
}

/// Keeps the panics the torture injects (thousands in a run) out of the
/// output; any other panic is reported as before.
fn quiet_injected_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|message| message.starts_with("a crash injected into"));
            if !injected {
                report(info);
            }
        }));
    });
}
