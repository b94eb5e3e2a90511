//! `concordkv bench`: in-process load on a fresh directory, reported next to
//! the floor of that directory's disk; `bench-lifecycle` (recovery and
//! compaction) and `bench-read` (reading the log back and following it).
//!
//! The floor is the raw `fdatasync` latency after a 128-byte overwrite inside
//! a preallocated file, measured in the same run on the same directory: the
//! cheapest durable write the disk offers, so `always`-mode latencies read
//! as a ratio against it.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use anyhow::{anyhow, bail, Context, Result};
use concordkv::{Config, Store, SyncMode};

/// Size of the probe file the floor is measured in.
const PROBE_FILE_BYTES: u64 = 1 << 20;
/// The overwrite each floor sample syncs.
const PROBE_WRITE_BYTES: usize = 128;
/// Floor samples taken (or fewer if `PROBE_MAX_TIME` passes first).
const PROBE_SAMPLES: usize = 2000;
const PROBE_MAX_TIME: Duration = Duration::from_secs(3);
/// Keys a lifecycle writer skips between appends: a prime, so the writers
/// spread over the key space.
const KEY_STRIDE: u64 = 7919;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the data goes (must be empty or absent); a temporary directory
    /// in the working directory when `None`, removed afterwards.
    pub dir: Option<PathBuf>,
    pub sync_mode: SyncMode,
    pub writers: usize,
    pub value_size: usize,
    /// Longest the load runs.
    pub seconds: f64,
    /// Stop after this many operations (whichever of the two comes first).
    pub ops: Option<u64>,
    /// Keys are drawn uniformly from this many.
    pub key_space: u64,
    /// Operations per append (1: single sets; more: atomic batches).
    pub batch: usize,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

/// One run's figures; the JSON field names are part of the contract.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub sync_mode: String,
    pub writers: usize,
    pub value_bytes: usize,
    pub batch_ops: usize,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    /// p90 and p95 beside p99: whether a higher p99 is a shifted
    /// distribution or a heavier tail.
    pub p90_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub fsync_p50_us: f64,
    pub fsync_p99_us: f64,
    pub syncs: u64,
    pub records_per_sync: f64,
    /// The store's own `fdatasync`s during the load (its `Stats`): beside
    /// the floor, whether the disk or the path to it bounds a sync mode.
    pub sync_mean_us: f64,
    pub sync_p99_us: f64,
    pub dir: String,
}

fn latency_histogram() -> Histogram<u64> {
    // Nanoseconds from 1 ns to 60 s at three significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .unwrap_or_else(|e| unreachable!("static bounds: {e}"))
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Measures raw `fdatasync` after small in-place writes in `dir`.
pub fn measure_fdatasync(dir: &Path) -> Result<Histogram<u64>> {
    let path = dir.join("fdatasync-probe");
    // Written out whole first, so the timed syncs find every block allocated
    // (as the WAL's preallocated segments do) and flush data, not metadata.
    std::fs::write(&path, vec![0u8; PROBE_FILE_BYTES as usize])
        .with_context(|| format!("create probe file {}", path.display()))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("open probe file {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("sync probe file {}", path.display()))?;
    let mut hist = latency_histogram();
    let block = [0xA5u8; PROBE_WRITE_BYTES];
    let started = Instant::now();
    for i in 0..PROBE_SAMPLES {
        let offset = (i * PROBE_WRITE_BYTES) as u64 % PROBE_FILE_BYTES;
        file.write_at(&block, offset)
            .with_context(|| format!("write probe file {}", path.display()))?;
        let t = Instant::now();
        file.sync_data()
            .with_context(|| format!("sync probe file {}", path.display()))?;
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        if started.elapsed() > PROBE_MAX_TIME {
            break;
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("remove probe file {}", path.display()))?;
    Ok(hist)
}

/// Runs the benchmark in an actix System of its own.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let scratch;
    let dir = match &opts.dir {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "bench needs a fresh directory; {} is not empty",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create bench directory {}", dir.display()))?;
            dir.clone()
        }
        None => {
            scratch = scratch_dir()?;
            scratch.path().to_path_buf()
        }
    };
    let floor = measure_fdatasync(&dir)?;
    let mut config = Config::with_data_dir(&dir);
    config.wal.sync_mode = opts.sync_mode;
    let load = actix_rt::System::new().block_on(run_load(config, opts))?;
    Ok(BenchReport {
        sync_mode: opts.sync_mode.to_string(),
        writers: opts.writers,
        value_bytes: opts.value_size,
        batch_ops: opts.batch,
        ops: load.ops,
        seconds: load.elapsed.as_secs_f64(),
        ops_per_sec: load.ops as f64 / load.elapsed.as_secs_f64(),
        p50_us: us(&load.latency, 0.5),
        p90_us: us(&load.latency, 0.9),
        p95_us: us(&load.latency, 0.95),
        p99_us: us(&load.latency, 0.99),
        p999_us: us(&load.latency, 0.999),
        max_us: load.latency.max() as f64 / 1000.0,
        fsync_p50_us: us(&floor, 0.5),
        fsync_p99_us: us(&floor, 0.99),
        syncs: load.syncs,
        records_per_sync: load.records_per_sync,
        sync_mean_us: load.sync.map_or(0.0, |s| s.mean_us),
        sync_p99_us: load.sync.map_or(0.0, |s| s.p99_us),
        dir: dir.display().to_string(),
    })
}

struct Load {
    ops: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    syncs: u64,
    records_per_sync: f64,
    /// The store's syncs under the load, if it measured any.
    sync: Option<SyncLatency>,
}

#[derive(Clone, Copy)]
struct SyncLatency {
    mean_us: f64,
    p99_us: f64,
}

async fn run_load(config: Config, opts: &BenchOptions) -> Result<Load> {
    let (store, _) = Store::open(config).await?;
    let latency = Rc::new(RefCell::new(latency_histogram()));
    let ops = Rc::new(Cell::new(0u64));
    // Operations handed out to writers, checked against `opts.ops`.
    let issued = Rc::new(Cell::new(0u64));
    let failure: Rc<RefCell<Option<concordkv::Error>>> = Rc::new(RefCell::new(None));
    let duration = Duration::from_secs_f64(opts.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let writers: Vec<_> = (0..opts.writers)
        .map(|w| {
            let (store, latency, ops, failure, issued) = (
                store.clone(),
                Rc::clone(&latency),
                Rc::clone(&ops),
                Rc::clone(&failure),
                Rc::clone(&issued),
            );
            let limit = opts.ops.unwrap_or(u64::MAX);
            let (key_space, batch) = (opts.key_space.max(1), opts.batch.max(1));
            let value = vec![b'v'; opts.value_size];
            actix_rt::spawn(async move {
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let mut next_key = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng % key_space).to_be_bytes().to_vec()
                };
                // One clock reading an append: each ends where the next
                // begins (two were 3% of the appenders' thread at 1M/s).
                let mut t = Instant::now();
                loop {
                    if t >= deadline || issued.get() >= limit {
                        break;
                    }
                    issued.set(issued.get() + batch as u64);
                    let outcome = if batch == 1 {
                        store.set(next_key(), value.clone()).await
                    } else {
                        let ops = (0..batch)
                            .map(|_| concordkv::Op::Set {
                                key: next_key(),
                                value: value.clone(),
                            })
                            .collect();
                        store.append_batch(ops).await
                    };
                    if let Err(e) = outcome {
                        failure.borrow_mut().get_or_insert(e);
                        break;
                    }
                    let now = Instant::now();
                    let _ = latency.borrow_mut().record((now - t).as_nanos() as u64);
                    ops.set(ops.get() + batch as u64);
                    t = now;
                }
            })
        })
        .collect();
    let bar = progress_bar(opts.progress, duration);
    let limit = opts.ops.unwrap_or(u64::MAX);
    while Instant::now() < deadline && failure.borrow().is_none() && ops.get() < limit {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let elapsed = started.elapsed();
        bar.set_position(elapsed.as_millis().min(duration.as_millis()) as u64);
        bar.set_message(format!(
            "{:.0} ops/s",
            ops.get() as f64 / elapsed.as_secs_f64()
        ));
    }
    for writer in writers {
        let _ = writer.await;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let stats = store.stats();
    // A figure the report can go without: a failed query does not throw
    // the load's own figures away.
    let sync = store
        .stats_report()
        .await
        .ok()
        .and_then(|report| {
            report
                .kinds
                .into_iter()
                .find(|k| k.kind == "sync" && k.count > 0)
        })
        .map(|k| SyncLatency {
            mean_us: k.mean_us,
            p99_us: k.p99_us,
        });
    store.shutdown().await?;
    if let Some(e) = failure.take() {
        return Err(e.into());
    }
    let latency = latency.borrow().clone();
    Ok(Load {
        ops: ops.get(),
        elapsed,
        latency,
        syncs: stats.syncs,
        records_per_sync: stats.records_per_sync(),
        sync,
    })
}

fn progress_bar(visible: bool, duration: Duration) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let ratio = |v: f64| {
            if self.fsync_p50_us > 0.0 {
                v / self.fsync_p50_us
            } else {
                0.0
            }
        };
        format!(
            "concordkv bench: sync_mode={} writers={} value={}B batch={} dir={}\n\
             \n\
             {:<28}{:>14}\n\
             {:<28}{:>14.0}\n\
             {:<28}{:>14.0}\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}\n\
             {:<28}{:>14}\n\
             {:<28}{:>14.1}\n\
             {:<28}{:>14.1}   ({:.2}x fdatasync p50)\n\
             {:<28}{:>14.1}\n\
             \n\
             {:<28}{:>14.1}\n\
             {:<28}{:>14.1}\n",
            self.sync_mode,
            self.writers,
            self.value_bytes,
            self.batch_ops,
            self.dir,
            "metric",
            "value",
            "ops",
            self.ops as f64,
            "ops/s",
            self.ops_per_sec,
            "append p50 (us)",
            self.p50_us,
            ratio(self.p50_us),
            "append p90 (us)",
            self.p90_us,
            ratio(self.p90_us),
            "append p95 (us)",
            self.p95_us,
            ratio(self.p95_us),
            "append p99 (us)",
            self.p99_us,
            ratio(self.p99_us),
            "append p999 (us)",
            self.p999_us,
            ratio(self.p999_us),
            "append max (us)",
            self.max_us,
            "syncs",
            self.syncs,
            "records per sync",
            self.records_per_sync,
            "store sync mean (us)",
            self.sync_mean_us,
            ratio(self.sync_mean_us),
            "store sync p99 (us)",
            self.sync_p99_us,
            "raw fdatasync p50 (us)",
            self.fsync_p50_us,
            "raw fdatasync p99 (us)",
            self.fsync_p99_us,
        )
    }
}

/// What `bench-lifecycle` runs.
#[derive(Debug, Clone)]
pub struct LifecycleOptions {
    /// Records written before measuring recovery and compaction.
    pub records: u64,
    /// Keys they are spread over.
    pub keys: u64,
    pub value_size: usize,
    /// The append load measured with and without compaction.
    pub sync_mode: SyncMode,
    pub writers: usize,
    /// Length of each window without compaction.
    pub seconds: f64,
    /// Compactions run under the load, each between two quiet windows.
    pub rounds: u32,
}

/// `bench-lifecycle` figures, from one run on one directory.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleReport {
    pub records: u64,
    pub keys: u64,
    pub recovery_from_segments_records_per_sec: f64,
    /// Of the compaction of the whole filled log, with nothing else running
    /// and no `[maintenance]` pacing: what compaction itself can do.
    pub compaction_input_records_per_sec: f64,
    pub compaction_seconds: f64,
    pub compaction_bytes_before: u64,
    pub compaction_bytes_after: u64,
    /// Of the compactions under the load, paced as configured by default.
    pub compaction_under_load_input_records_per_sec: f64,
    /// Of the compacted filled log, before the load.
    pub recovery_from_snapshot_records_per_sec: f64,
    pub append_p50_us_idle: f64,
    pub append_p99_us_idle: f64,
    pub append_p50_us_compacting: f64,
    pub append_p99_us_compacting: f64,
    /// Compactions measured, and the appends that started during them or not.
    pub rounds: u32,
    pub appends_idle: u64,
    pub appends_compacting: u64,
}

/// A temporary directory in the working directory, on the disk being
/// measured, removed when dropped.
fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(".concordkv-bench-")
        .tempdir_in(".")
        .context("create a bench directory in the current directory")
}

/// Fills a fresh store, then measures recovery from segments, a compaction
/// of the whole log with nothing else running, and recovery from its
/// snapshot; then, under one continuous append load, alternates quiet
/// windows with compactions of the whole log, so latencies with and without
/// a compaction running come from the same load, interleaved, not from two
/// runs a noisy disk and scheduler may treat differently.
pub fn run_lifecycle(opts: &LifecycleOptions) -> Result<LifecycleReport> {
    let scratch = scratch_dir()?;
    let mut config = Config::with_data_dir(scratch.path());
    config.wal.sync_mode = SyncMode::None;
    // Only on-request compactions, so each window measures what it names.
    config.compaction.threshold = u64::MAX;
    let opts = opts.clone();
    actix_rt::System::new().block_on(async move {
        let (store, _) = Store::open(config.clone()).await?;
        let value = vec![b'v'; opts.value_size];
        let keys = opts.keys.max(1);
        let mut pending = std::collections::VecDeque::new();
        for i in 0..opts.records {
            pending.push_back(
                store
                    .submit(concordkv::Entry::Op(concordkv::Op::Set {
                        key: (i % keys).to_be_bytes().to_vec(),
                        value: value.clone(),
                    }))
                    .await?,
            );
            if pending.len() >= 1024 {
                if let Some(p) = pending.pop_front() {
                    p.await?;
                }
            }
        }
        for p in pending {
            p.await?;
        }
        store.shutdown().await?;

        let mut unpaced = config.clone();
        unpaced.maintenance.write_bytes_per_sec = 0;
        unpaced.maintenance.delete_bytes_per_sec = 0;
        let (store, recovery) = Store::open(unpaced).await?;
        let from_segments = recovery.replayed as f64 / recovery.elapsed.as_secs_f64();
        let started = Instant::now();
        let report = store
            .compact()
            .await?
            .ok_or_else(|| anyhow!("nothing was compacted"))?;
        let compaction_time = started.elapsed();
        store.shutdown().await?;

        let mut loaded = config.clone();
        loaded.wal.sync_mode = opts.sync_mode;
        let (store, recovery) = Store::open(loaded).await?;
        // After the compaction, the snapshot holds every key (and no record
        // follows it but those the load wrote since).
        let from_snapshot =
            (recovery.keys as u64 + recovery.replayed) as f64 / recovery.elapsed.as_secs_f64();

        let load = InterleavedLoad::start(&store, &opts, keys);
        let quiet = Duration::from_secs_f64(opts.seconds);
        let (mut loaded_input, mut loaded_time) = (0u64, Duration::ZERO);
        for _ in 0..opts.rounds {
            actix_rt::time::sleep(quiet).await;
            load.compacting.set(true);
            let started = Instant::now();
            let outcome = store.compact().await;
            load.compacting.set(false);
            let report = outcome?.ok_or_else(|| anyhow!("nothing was compacted"))?;
            loaded_input += report.entries_before;
            loaded_time += started.elapsed();
        }
        actix_rt::time::sleep(quiet).await;
        let [idle, busy] = load.finish().await?;
        store.shutdown().await?;
        Ok(LifecycleReport {
            records: opts.records,
            keys,
            recovery_from_segments_records_per_sec: from_segments,
            compaction_input_records_per_sec: report.entries_before as f64
                / compaction_time.as_secs_f64(),
            compaction_seconds: compaction_time.as_secs_f64(),
            compaction_bytes_before: report.bytes_before,
            compaction_bytes_after: report.bytes_after,
            compaction_under_load_input_records_per_sec: loaded_input as f64
                / loaded_time.as_secs_f64().max(f64::EPSILON),
            recovery_from_snapshot_records_per_sec: from_snapshot,
            append_p50_us_idle: us(&idle, 0.5),
            append_p99_us_idle: us(&idle, 0.99),
            append_p50_us_compacting: us(&busy, 0.5),
            append_p99_us_compacting: us(&busy, 0.99),
            rounds: opts.rounds,
            appends_idle: idle.len(),
            appends_compacting: busy.len(),
        })
    })
}

/// Appenders that run until told to stop, filing each append's latency
/// under whether a compaction was running when it started.
struct InterleavedLoad {
    compacting: Rc<Cell<bool>>,
    stop: Rc<Cell<bool>>,
    latency: Rc<RefCell<[Histogram<u64>; 2]>>,
    writers: Vec<actix_rt::task::JoinHandle<Result<()>>>,
}

impl InterleavedLoad {
    fn start(store: &Store, opts: &LifecycleOptions, keys: u64) -> InterleavedLoad {
        let compacting = Rc::new(Cell::new(false));
        let stop = Rc::new(Cell::new(false));
        let latency = Rc::new(RefCell::new([latency_histogram(), latency_histogram()]));
        let writers = (0..opts.writers)
            .map(|w| {
                let store = store.clone();
                let (compacting, stop, latency) = (
                    Rc::clone(&compacting),
                    Rc::clone(&stop),
                    Rc::clone(&latency),
                );
                let value = vec![b'w'; opts.value_size];
                actix_rt::spawn(async move {
                    let mut i = w as u64;
                    while !stop.get() {
                        let (t, during) = (Instant::now(), usize::from(compacting.get()));
                        store
                            .set((i % keys).to_be_bytes().to_vec(), value.clone())
                            .await?;
                        let _ = latency.borrow_mut()[during].record(t.elapsed().as_nanos() as u64);
                        i += KEY_STRIDE;
                    }
                    Ok(())
                })
            })
            .collect();
        InterleavedLoad {
            compacting,
            stop,
            latency,
            writers,
        }
    }

    /// Stops the appenders; the latencies without and with a compaction running.
    async fn finish(self) -> Result<[Histogram<u64>; 2]> {
        self.stop.set(true);
        for writer in self.writers {
            writer
                .await
                .map_err(|e| anyhow!("a bench writer panicked: {e}"))??;
        }
        let histograms = self.latency.borrow().clone();
        Ok(histograms)
    }
}

impl LifecycleReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        format!(
            "concordkv bench-lifecycle: {} records over {} keys\n\n\
             {:<44}{:>14.0}\n{:<44}{:>14.0}\n{:<44}{:>14.2}\n{:<44}{:>14}\n{:<44}{:>14}\n{:<44}{:>14.0}\n{:<44}{:>14.0}\n\
             {:<44}{:>14.1}\n{:<44}{:>14.1}\n{:<44}{:>14.1}\n{:<44}{:>14.1}\n{:<44}{:>14}\n",
            self.records,
            self.keys,
            "recovery from segments (records/s)",
            self.recovery_from_segments_records_per_sec,
            "compaction input, alone (records/s)",
            self.compaction_input_records_per_sec,
            "compaction time (s)",
            self.compaction_seconds,
            "compaction bytes before",
            self.compaction_bytes_before,
            "compaction bytes after",
            self.compaction_bytes_after,
            "recovery from snapshot (records/s)",
            self.recovery_from_snapshot_records_per_sec,
            "compaction input, under the load (records/s)",
            self.compaction_under_load_input_records_per_sec,
            "append p50, no compaction (us)",
            self.append_p50_us_idle,
            "append p99, no compaction (us)",
            self.append_p99_us_idle,
            "append p50, compaction running (us)",
            self.append_p50_us_compacting,
            "append p99, compaction running (us)",
            self.append_p99_us_compacting,
            "compactions under the load",
            self.rounds,
        )
    }
}

/// What `bench-read` runs.
#[derive(Debug, Clone)]
pub struct ReadBenchOptions {
    /// Records written, then read back as one range.
    pub records: u64,
    pub value_size: usize,
    /// Appenders of the subscription load (`always` mode).
    pub writers: usize,
    /// Threads looking keys up in the state at once.
    pub readers: usize,
    /// How long the subscription load (and the lookups) run.
    pub seconds: f64,
}

/// `bench-read` figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReadBenchReport {
    pub records: u64,
    pub value_bytes: usize,
    /// `read(1..=records)` on a store written in `none` mode.
    pub read_seconds: f64,
    pub read_records_per_sec: f64,
    pub read_mib_per_sec: f64,
    /// `State::get` of random keys among the `records` ones, from
    /// `readers` threads at once for `seconds`.
    pub readers: usize,
    pub gets_per_sec: f64,
    pub writers: usize,
    /// Records appended (and followed) during the subscription load.
    pub followed: u64,
    pub appends_per_sec: f64,
    /// From an append's acknowledgement (its `set` returning) to the
    /// subscriber's `next` returning the record; 0 when the subscriber had
    /// it first.
    pub lag_p50_us: f64,
    pub lag_p99_us: f64,
    pub lag_max_us: f64,
    /// Records the subscriber was handed before their appender resumed.
    pub delivered_before_ack: u64,
}

/// Writes `records` records in `none` mode and times one read of them all;
/// then, on another fresh store in `always` mode, runs `writers` appenders
/// for `seconds` under one subscriber and measures how long after each
/// acknowledgement the subscriber gets the record. Both stores live in one
/// temporary directory in the working directory.
pub fn run_read(opts: &ReadBenchOptions) -> Result<ReadBenchReport> {
    let scratch = scratch_dir()?;
    let opts = opts.clone();
    let mut written = Config::with_data_dir(scratch.path().join("read"));
    written.wal.sync_mode = SyncMode::None;
    // Nothing retires segments under the read.
    written.compaction.threshold = u64::MAX;
    let mut followed = Config::with_data_dir(scratch.path().join("follow"));
    followed.wal.sync_mode = SyncMode::Always;
    followed.compaction.threshold = u64::MAX;
    actix_rt::System::new().block_on(async move {
        let (store, _) = Store::open(written).await?;
        let value = vec![b'v'; opts.value_size];
        let mut pending = std::collections::VecDeque::new();
        for i in 0..opts.records {
            pending.push_back(
                store
                    .submit(concordkv::Entry::Op(concordkv::Op::Set {
                        key: i.to_be_bytes().to_vec(),
                        value: value.clone(),
                    }))
                    .await?,
            );
            if pending.len() >= 1024 {
                if let Some(p) = pending.pop_front() {
                    p.await?;
                }
            }
        }
        for p in pending {
            p.await?;
        }
        let reader = store.clone();
        let last = opts.records;
        let (read_time, read, bytes) = actix_rt::task::spawn_blocking(move || {
            let started = Instant::now();
            let (mut count, mut bytes) = (0u64, 0u64);
            for record in reader.read(1..=last)? {
                count += 1;
                for op in record?.entry.ops() {
                    bytes += op.key().map_or(0, <[u8]>::len) as u64;
                    if let concordkv::Op::Set { value, .. } = op {
                        bytes += value.len() as u64;
                    }
                }
            }
            Ok::<_, concordkv::Error>((started.elapsed(), count, bytes))
        })
        .await
        .map_err(|e| anyhow!("the read panicked: {e}"))??;
        if read != opts.records {
            bail!("read {read} records of {}", opts.records);
        }
        let state = store.state();
        let (readers, seconds, records) = (opts.readers, opts.seconds, opts.records);
        let gets_per_sec =
            actix_rt::task::spawn_blocking(move || lookups(&state, readers, seconds, records))
                .await
                .map_err(|e| anyhow!("the lookups panicked: {e}"))??;
        store.shutdown().await?;

        let (store, _) = Store::open(followed).await?;
        let lag = follow_load(&store, &opts).await?;
        store.shutdown().await?;
        Ok(ReadBenchReport {
            records: opts.records,
            value_bytes: opts.value_size,
            read_seconds: read_time.as_secs_f64(),
            read_records_per_sec: read as f64 / read_time.as_secs_f64(),
            read_mib_per_sec: bytes as f64 / (1 << 20) as f64 / read_time.as_secs_f64(),
            readers: opts.readers,
            gets_per_sec,
            writers: opts.writers,
            followed: lag.followed,
            appends_per_sec: lag.followed as f64 / lag.elapsed.as_secs_f64(),
            lag_p50_us: us(&lag.histogram, 0.5),
            lag_p99_us: us(&lag.histogram, 0.99),
            lag_max_us: lag.histogram.max() as f64 / 1000.0,
            delivered_before_ack: lag.early,
        })
    })
}

/// Looks random keys of `0..records` (all present) up from `readers`
/// threads for `seconds`; returns lookups per second over all threads.
fn lookups(state: &concordkv::State, readers: usize, seconds: f64, records: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..readers.max(1) as u64)
            .map(|t| {
                scope.spawn(move || {
                    // splitmix64: a different, repeatable key order per thread.
                    let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        for _ in 0..1024 {
                            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                            let mut z = x;
                            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                            let key = ((z ^ (z >> 31)) % records.max(1)).to_be_bytes();
                            done += u64::from(state.get_with(&key, <[u8]>::len).is_some());
                        }
                    }
                    done
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
    });
    if total == 0 {
        bail!("no lookup found its key");
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// What the subscription load measured.
struct Lag {
    followed: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
    early: u64,
}

/// When each record was acknowledged or delivered, whichever came first,
/// until the other side claims it.
#[derive(Default)]
struct Arrivals {
    acknowledged: std::collections::HashMap<u64, Instant>,
    delivered: std::collections::HashMap<u64, Instant>,
    histogram: Option<Histogram<u64>>,
    early: u64,
}

impl Arrivals {
    fn acknowledged(&mut self, seq: u64, at: Instant) {
        match self.delivered.remove(&seq) {
            Some(_) => {
                self.early += 1;
                self.record(Duration::ZERO);
            }
            None => {
                self.acknowledged.insert(seq, at);
            }
        }
    }

    fn delivered(&mut self, seq: u64, at: Instant) {
        match self.acknowledged.remove(&seq) {
            Some(acked) => self.record(at.saturating_duration_since(acked)),
            None => {
                self.delivered.insert(seq, at);
            }
        }
    }

    fn record(&mut self, lag: Duration) {
        let histogram = self.histogram.get_or_insert_with(latency_histogram);
        let _ = histogram.record((lag.as_nanos() as u64).max(1));
    }
}

/// Runs the appenders and one subscriber on the store's own thread, as an
/// actix application would, and stops once the subscriber has every record
/// the appenders were answered for.
async fn follow_load(store: &Store, opts: &ReadBenchOptions) -> Result<Lag> {
    let arrivals = Rc::new(RefCell::new(Arrivals::default()));
    let stop = Rc::new(Cell::new(false));
    let first = store.state().last_seq() + 1;
    let mut subscription = store.subscribe(first);
    let follower = {
        let arrivals = Rc::clone(&arrivals);
        let stop = Rc::clone(&stop);
        let store = store.clone();
        actix_rt::spawn(async move {
            let (mut followed, mut upto) = (0u64, first - 1);
            loop {
                // Every answered append is in: nothing more to wait for.
                if stop.get() && upto >= store.state().last_seq() {
                    break;
                }
                let next = tokio::time::timeout(Duration::from_millis(100), subscription.next());
                match next.await {
                    Ok(Some(record)) => {
                        upto = record?.seq;
                        arrivals.borrow_mut().delivered(upto, Instant::now());
                        followed += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            Ok::<_, concordkv::Error>(followed)
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.seconds);
    let writers: Vec<_> = (0..opts.writers)
        .map(|w| {
            let (store, arrivals) = (store.clone(), Rc::clone(&arrivals));
            let value = vec![b'w'; opts.value_size];
            actix_rt::spawn(async move {
                let mut i = w as u64;
                while Instant::now() < deadline {
                    let seq = store.set(i.to_be_bytes().to_vec(), value.clone()).await?;
                    arrivals.borrow_mut().acknowledged(seq, Instant::now());
                    i += KEY_STRIDE;
                }
                Ok::<_, concordkv::Error>(())
            })
        })
        .collect();
    for writer in writers {
        writer
            .await
            .map_err(|e| anyhow!("a bench writer panicked: {e}"))??;
    }
    let elapsed = started.elapsed();
    stop.set(true);
    let followed = follower
        .await
        .map_err(|e| anyhow!("the subscriber panicked: {e}"))??;
    let mut arrivals = arrivals.borrow_mut();
    if !arrivals.acknowledged.is_empty() {
        bail!(
            "{} acknowledged records were never delivered",
            arrivals.acknowledged.len()
        );
    }
    Ok(Lag {
        followed,
        elapsed,
        histogram: arrivals.histogram.take().unwrap_or_else(latency_histogram),
        early: arrivals.early,
    })
}

impl ReadBenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        format!(
            "concordkv bench-read: {} records of {}-byte values\n\n\
             {:<44}{:>14.2}\n{:<44}{:>14.0}\n{:<44}{:>14.1}\n{:<44}{:>14.0}\n\n\
             subscription under {} writers, sync_mode=always\n\n\
             {:<44}{:>14}\n{:<44}{:>14.0}\n{:<44}{:>14.1}\n{:<44}{:>14.1}\n{:<44}{:>14.1}\n{:<44}{:>14}\n",
            self.records,
            self.value_bytes,
            "read(1..=N) time (s)",
            self.read_seconds,
            "read (records/s)",
            self.read_records_per_sec,
            "read (MiB/s of keys and values)",
            self.read_mib_per_sec,
            format!("get, {} threads (lookups/s)", self.readers),
            self.gets_per_sec,
            self.writers,
            "records appended and followed",
            self.followed,
            "appends/s",
            self.appends_per_sec,
            "ack-to-delivery lag p50 (us)",
            self.lag_p50_us,
            "ack-to-delivery lag p99 (us)",
            self.lag_p99_us,
            "ack-to-delivery lag max (us)",
            self.lag_max_us,
            "delivered before the appender resumed",
            self.delivered_before_ack,
        )
    }
}
