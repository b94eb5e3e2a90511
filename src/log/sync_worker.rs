//! The sync thread: runs `fdatasync` off the actix event loop.
//!
//! The WAL actor writes records and hands the waiting appenders to this
//! thread as jobs. Each time the thread wakes it takes *every* queued job and
//! serves all jobs on the same file with one sync (group commit), while the
//! actor goes on writing the next records: those wait for the next sync.
//! Jobs complete in submission order, so an acknowledgement never overtakes
//! the durability of an earlier record. After a failed sync the thread
//! fails every later job too: the page cache may have dropped the data, so a
//! retried sync that "succeeds" would prove nothing (PostgreSQL's fsyncgate).
//! It also cuts the file back to the length its last successful sync made
//! durable: the page cache still holds the lost bytes and would show them to
//! a reopen in the same boot, and later writeback could persist pages past a
//! lost one, leaving a hole. A write gate keeps the WAL from writing while
//! that happens, and after it.
//!
//! In `batch` and `interval` modes an append is acknowledged before it is
//! durable, but only within the mode's promise ([`AckBound`]): an
//! acknowledgement that would put more than that at risk waits here until
//! a sync brings the unsynced part back within it. So a slow `fdatasync`
//! slows the appenders down instead of widening what a crash may lose.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{SyncMode, WalConfig};
use crate::entry::Seq;
use crate::error::Error;
use crate::fs::{FileSystem, WritableFile};
use crate::latency::Latencies;
use crate::log::inbox::{Closed, Inbox, Reply};
use crate::log::sync_failure;
use crate::meters::Meters;
use crate::state;
use crate::stats::WalCounters;

/// An appender waiting for `seq` to become durable. An append's record
/// and its room wait in the state's queue (see `state::Shared::stage`),
/// so that neither is freed on this thread.
pub(crate) struct Waiter {
    pub seq: Seq,
    pub reply: Reply,
    /// An append's queueing time, for its latency; `None` for a sync.
    pub queued: Option<Instant>,
}

impl Waiter {
    /// Answers the appender.
    pub(crate) fn answer(self, answer: crate::error::Result<Seq>) {
        // The appender may have given up waiting; nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// The most waiters an emptied vector keeps room for: a group at steady
/// load fits; what a burst grew it to goes back.
pub(crate) const KEPT_WAITERS: usize = 4096;

/// Called with the outcome once a job's sync finished: the error its
/// waiters were answered with, shared rather than flattened.
pub(crate) type OnDone = Box<dyn FnOnce(Result<(), Arc<Error>>) + Send>;

/// One request to make a file durable up to what was written before it.
pub(crate) struct SyncJob {
    pub file: Arc<dyn WritableFile>,
    pub path: PathBuf,
    /// Records written since the previous job (for the group-commit size).
    pub records: u64,
    /// The last sequence number this job covers.
    pub upto: Seq,
    /// The file's length of written data when the job was submitted.
    pub end: u64,
    /// The file's known-durable offset, raised to `end` once the sync
    /// succeeds (the WAL writes it into every frame).
    pub durable: Arc<AtomicU64>,
    pub waiters: Vec<Waiter>,
    /// A seal (rotation or shutdown): the segment's last sync, never merged
    /// with a later job's. At a rotation the preallocated zeros after `end`
    /// stay: cutting them off made the disk discard them while every append
    /// waited for the seal (11 ms for a segment sealed early by a
    /// compaction); the whole file is given back, paced, when a snapshot
    /// retires it.
    pub seal: bool,
    /// Cut the preallocated rest off before this sync: at shutdown, where
    /// no append waits for the discard, so the next open reads only what
    /// was written, not a segment's worth of zeros.
    pub trim: bool,
    pub on_done: Option<OnDone>,
}

/// How far acknowledgements may run ahead of durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckBound {
    /// Acknowledge only after a sync (`always`).
    Durable,
    /// At most this many acknowledged records not yet durable (`batch`).
    Records(u64),
    /// Acknowledged records not yet durable were all written within this
    /// long after the oldest unsynced write (`interval`).
    Age(Duration),
    /// No bound (`none`).
    Unbounded,
}

impl AckBound {
    /// The bound `wal.sync_mode` promises.
    pub(crate) fn of(wal: &WalConfig) -> AckBound {
        match wal.sync_mode {
            SyncMode::Always => AckBound::Durable,
            SyncMode::Batch => AckBound::Records(wal.batch_size),
            SyncMode::Interval => AckBound::Age(Duration::from_millis(wal.sync_interval_ms)),
            SyncMode::None => AckBound::Unbounded,
        }
    }
}

struct State {
    jobs: Vec<SyncJob>,
    stopping: bool,
    /// Why syncing stopped: the failure itself, handed to every request
    /// it affects.
    failed: Option<Arc<Error>>,
    /// Appenders whose acknowledgement waits for the bound, in sequence order.
    deferred: VecDeque<Waiter>,
    /// The last sequence number and time of each write not yet known
    /// durable, oldest first (for [`AckBound::Age`]).
    unsynced_writes: VecDeque<(Seq, Instant)>,
    /// The vector the last answer emptied, to gather the next one in. A
    /// new one per group is an allocation of several KiB, and each such
    /// allocation makes glibc merge every small chunk the state's applier
    /// freed since: a sixth of the appending thread's time at 64 writers.
    ready: Vec<Waiter>,
}

impl State {
    /// Whether record `seq` may be acknowledged now, durable or not.
    fn may_acknowledge(&self, bound: AckBound, seq: Seq, durable_seq: Seq, now: Instant) -> bool {
        if seq <= durable_seq {
            return true;
        }
        match bound {
            AckBound::Durable => false,
            AckBound::Records(n) => seq - durable_seq <= n,
            AckBound::Age(limit) => self
                .unsynced_writes
                .front()
                .is_none_or(|(_, written)| now.duration_since(*written) < limit),
            AckBound::Unbounded => true,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// What `wal.sync_mode` promises; fixed for the store's life.
    bound: AckBound,
    /// Where a failed cut-back leaves the failed-sync marker.
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// Read-held by the WAL around each write; write-held while a failure
    /// is recorded and the file cut back. A lock rather than a message:
    /// uncontended it costs a write 22 ns, where asking this thread and
    /// waiting for its answer took 93 µs at the median (215 µs p99) on the
    /// benchmark machine, as long as an `fdatasync`.
    gate: RwLock<()>,
    ready: Condvar,
    inbox: Arc<Inbox>,
    counters: Arc<WalCounters>,
    latencies: Arc<Latencies>,
    /// The key-value state, where acknowledged records become visible.
    kv: Arc<state::Shared>,
    /// The store's Prometheus instruments.
    meters: Arc<Meters>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the sync thread.
/// What the sync thread counts and measures into.
pub(crate) struct Instruments {
    pub counters: Arc<WalCounters>,
    pub latencies: Arc<Latencies>,
    pub meters: Arc<Meters>,
}

pub(crate) struct SyncWorker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SyncWorker {
    /// Starts the thread.
    pub(crate) fn start(
        inbox: Arc<Inbox>,
        instruments: Instruments,
        bound: AckBound,
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        kv: Arc<state::Shared>,
    ) -> std::io::Result<SyncWorker> {
        let Instruments {
            counters,
            latencies,
            meters,
        } = instruments;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: Vec::new(),
                stopping: false,
                failed: None,
                deferred: VecDeque::new(),
                unsynced_writes: VecDeque::new(),
                ready: Vec::new(),
            }),
            bound,
            fs,
            dir,
            gate: RwLock::new(()),
            ready: Condvar::new(),
            inbox,
            counters,
            latencies,
            kv,
            meters,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("concordkv-sync".into())
            .spawn(move || run(&thread_shared))?;
        Ok(SyncWorker {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a job; after an earlier failure it fails at once.
    pub(crate) fn submit(&self, job: SyncJob) {
        let mut state = self.shared.lock();
        if let Some(cause) = state.failed.clone() {
            drop(state);
            complete(&self.shared, job, Err(Arc::new(Error::refused(&cause))));
            return;
        }
        state.jobs.push(job);
        drop(state);
        self.shared.ready.notify_one();
    }

    /// Notes a write of records up to `last` (for [`AckBound::Age`]).
    pub(crate) fn wrote(&self, last: Seq, at: Instant) {
        // Only the age bound needs the times; the others skip the lock.
        if matches!(self.shared.bound, AckBound::Age(_)) {
            self.shared.lock().unsynced_writes.push_back((last, at));
        }
    }

    /// Answers written (not yet durable) appends: at once where the bound
    /// allows, otherwise once a sync brings them within it.
    /// Takes every waiter out of `waiters`, leaving its room for the next
    /// group.
    pub(crate) fn acknowledge(&self, waiters: &mut Vec<Waiter>) {
        let mut state = self.shared.lock();
        if let Some(cause) = state.failed.clone() {
            drop(state);
            fail_waiters(&self.shared.kv, waiters.drain(..), &Error::refused(&cause));
            return;
        }
        let durable_seq = self.shared.counters.durable_seq.load(Relaxed);
        let now = Instant::now();
        let mut ready = std::mem::take(&mut state.ready);
        for waiter in waiters.drain(..) {
            if state.deferred.is_empty()
                && state.may_acknowledge(self.shared.bound, waiter.seq, durable_seq, now)
            {
                ready.push(waiter);
            } else {
                state.deferred.push_back(waiter);
            }
        }
        // Still under the lock: a release on the sync thread must not
        // answer (and apply) later records before these.
        answer(&self.shared, &mut ready, now);
        ready.shrink_to(KEPT_WAITERS);
        state.ready = ready;
    }

    /// Fails every appender held back by the bound with `error`: the log
    /// stopped, and the syncs that would have answered them will not come.
    pub(crate) fn fail_deferred(&self, error: &Error) {
        let deferred = std::mem::take(&mut self.shared.lock().deferred);
        fail_waiters(&self.shared.kv, deferred, error);
    }

    /// Why syncing stopped, if it did.
    pub(crate) fn failure(&self) -> Option<Arc<Error>> {
        self.shared.lock().failed.clone()
    }

    /// Admits one write to the log: the guard keeps a failure from being
    /// recorded (and the file cut back) until the write is done; after a
    /// failure, its cause instead.
    pub(crate) fn admit_write(&self) -> Result<RwLockReadGuard<'_, ()>, Arc<Error>> {
        let gate = self
            .shared
            .gate
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match self.failure() {
            Some(cause) => Err(cause),
            None => Ok(gate),
        }
    }

    /// Finishes every queued job, then ends the thread.
    pub(crate) fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_one();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the sync thread panicked");
            }
        }
        // Every sync has run: whoever still waits would wait forever.
        self.fail_deferred(&Error::ShutDown);
    }
}

fn run(shared: &Shared) {
    let mut batch: Vec<SyncJob> = Vec::new();
    loop {
        {
            let mut state = shared.lock();
            while state.jobs.is_empty() && !state.stopping {
                state = shared
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.jobs.is_empty() {
                return;
            }
            std::mem::swap(&mut batch, &mut state.jobs);
        }
        let processed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(shared, &mut batch)));
        if processed.is_err() {
            // A panic (in a file-system implementation, say) must not leave
            // appenders waiting on a thread that no longer syncs: from here
            // on every job fails at once. Whatever the batch and the held
            // back appends waited for is lost with it; later jobs are refused.
            let cause = Arc::new(Error::Panicked {
                what: "the sync thread",
            });
            tracing::error!(%cause, "nothing after the last sync is durable");
            let (queued, deferred) = {
                let mut state = shared.lock();
                state.failed = Some(Arc::clone(&cause));
                (
                    std::mem::take(&mut state.jobs),
                    std::mem::take(&mut state.deferred),
                )
            };
            fail_waiters(&shared.kv, deferred, &cause);
            shared
                .inbox
                .close_and_fail(Closed::Failed(Arc::clone(&cause)));
            for job in batch.drain(..) {
                complete(shared, job, Err(Arc::clone(&cause)));
            }
            let refused = Arc::new(Error::refused(&cause));
            for job in queued {
                complete(shared, job, Err(Arc::clone(&refused)));
            }
        }
    }
}

/// Serves a batch of jobs in order, one sync per run of jobs on one file.
/// A job leaves `batch` only once answered: if a sync panics, the jobs
/// still in it are answered by the caller with the panic, instead of their
/// waiters being dropped unanswered (which would read as a dead actor).
fn process(shared: &Shared, batch: &mut Vec<SyncJob>) {
    while !batch.is_empty() {
        let mut end = 1;
        while end < batch.len()
            && Arc::ptr_eq(&batch[end].file, &batch[0].file)
            && !batch[end - 1].seal
        {
            end += 1;
        }
        let result = sync_group(shared, &batch[..end]);
        for job in batch.drain(..end) {
            complete(shared, job, result.clone());
        }
    }
}

/// Syncs the file of a group of jobs once, and records the outcome: on a
/// failure, the error its waiters get (the failure itself; a refusal if
/// an earlier one stopped the log).
fn sync_group(shared: &Shared, group: &[SyncJob]) -> Result<(), Arc<Error>> {
    if let Some(cause) = shared.lock().failed.clone() {
        return Err(Arc::new(Error::refused(&cause)));
    }
    let job = group
        .last()
        .map(|j| (&j.file, &j.path, j.trim, j.upto, j.end));
    let Some((file, path, trim, upto, end)) = job else {
        return Ok(());
    };
    let started = Instant::now();
    let outcome = if trim {
        file.set_len(end).and_then(|()| file.sync_all())
    } else {
        file.sync_data()
    };
    let elapsed = started.elapsed();
    match outcome {
        Ok(()) => {
            let records: u64 = group.iter().map(|j| j.records).sum();
            let c = &shared.counters;
            c.syncs.fetch_add(1, Relaxed);
            c.synced_records.fetch_add(records, Relaxed);
            c.sync_nanos.fetch_add(elapsed.as_nanos() as u64, Relaxed);
            shared.latencies.sync.record(elapsed);
            shared.latencies.sync_batch.record_count(records);
            shared.meters.syncs.increment(1);
            if let Some(last) = group.last() {
                last.durable.fetch_max(end, Relaxed);
            }
            release_deferred(shared, upto);
            Ok(())
        }
        Err(e) => {
            let op = if trim {
                "trim and sync segment"
            } else {
                "sync segment"
            };
            let cause = Arc::new(Error::io(op, path, e));
            tracing::error!(%cause, "the WAL stops accepting writes");
            shared.meters.sync_errors.increment(1);
            let _gate = shared.gate.write().unwrap_or_else(PoisonError::into_inner);
            let deferred = {
                let mut state = shared.lock();
                state.failed = Some(Arc::clone(&cause));
                std::mem::take(&mut state.deferred)
            };
            // Held-back appends this sync was to make durable hit the
            // failure; those written after it are refused.
            let (hit, after): (Vec<_>, Vec<_>) =
                deferred.into_iter().partition(|waiter| waiter.seq <= upto);
            fail_waiters(&shared.kv, hit, &cause);
            fail_waiters(&shared.kv, after, &Error::refused(&cause));
            // What a successful sync made durable, the header's included
            // (a new segment's header may have been synced outside this
            // thread, at open): cutting below it would unstart the segment
            // and make the previous one the newest again.
            let keep = group.last().map_or(0, |job| {
                job.durable.load(std::sync::atomic::Ordering::Acquire)
            });
            match file.set_len(keep).and_then(|()| file.sync_all()) {
                Ok(()) => tracing::warn!(
                    file = %path.display(),
                    length = keep,
                    "cut the segment back to what its last successful sync made durable"
                ),
                Err(e) => {
                    tracing::error!(
                        file = %path.display(),
                        %e,
                        "cannot cut the segment back to its durable length; the directory is untrusted until a reboot"
                    );
                    sync_failure::mark(shared.fs.as_ref(), &shared.dir, path, &e);
                }
            }
            shared
                .inbox
                .close_and_fail(Closed::Failed(Arc::clone(&cause)));
            Err(cause)
        }
    }
}

/// Records that everything up to `upto` is durable, and answers the
/// deferred appenders the bound now allows, in order.
fn release_deferred(shared: &Shared, upto: Seq) {
    let mut state = shared.lock();
    let durable_seq = shared
        .counters
        .durable_seq
        .fetch_max(upto, Relaxed)
        .max(upto);
    while state
        .unsynced_writes
        .front()
        .is_some_and(|(last, _)| *last <= durable_seq)
    {
        state.unsynced_writes.pop_front();
    }
    let now = Instant::now();
    let mut ready = std::mem::take(&mut state.ready);
    while let Some(front) = state.deferred.front() {
        if !state.may_acknowledge(shared.bound, front.seq, durable_seq, now) {
            break;
        }
        ready.extend(state.deferred.pop_front());
    }
    answer(shared, &mut ready, now);
    ready.shrink_to(KEPT_WAITERS);
    state.ready = ready;
}

/// Makes the waiters' records visible in the state, then answers them: a
/// write is visible before its appender hears, and never before the sync
/// mode acknowledges it. Waiters come in sequence order, and every record
/// before them was answered, so one mark covers them all. Empties
/// `waiters`, keeping its room.
///
/// Each append's latency, queued to `now`, is recorded here for the whole
/// group: one clock reading and one lock, not one of each per append on
/// the appenders' thread (two clock readings an append were 7% of that
/// thread's time with 64 `none` writers).
fn answer(shared: &Shared, waiters: &mut Vec<Waiter>, now: Instant) {
    if let Some(last) = waiters.iter().map(|waiter| waiter.seq).max() {
        shared.kv.acknowledge(last);
    }
    shared.latencies.append.record_all(
        waiters
            .iter()
            .filter_map(|waiter| Some(now.saturating_duration_since(waiter.queued?))),
    );
    for waiter in waiters.drain(..) {
        let seq = waiter.seq;
        waiter.answer(Ok(seq));
    }
}

/// Answers every waiter with `error`, first dropping their records from
/// the state's queue: nothing after the first of them will be acknowledged.
fn fail_waiters(kv: &state::Shared, waiters: impl IntoIterator<Item = Waiter>, error: &Error) {
    let waiters: Vec<Waiter> = waiters.into_iter().collect();
    if let Some(first) = waiters.iter().map(|waiter| waiter.seq).min() {
        kv.discard_from(first);
    }
    for waiter in waiters {
        waiter.answer(Err(error.clone()));
    }
}

/// Answers a job's waiters with its outcome, then runs its `on_done`.
fn complete(shared: &Shared, job: SyncJob, result: Result<(), Arc<Error>>) {
    match &result {
        Ok(()) => answer(shared, &mut { job.waiters }, Instant::now()),
        Err(error) => fail_waiters(&shared.kv, job.waiters, error),
    }
    if let Some(on_done) = job.on_done {
        on_done(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sim_fs::SimFs;

    fn worker(bound: AckBound) -> SyncWorker {
        let instruments = Instruments {
            counters: Arc::new(WalCounters::default()),
            latencies: Arc::new(Latencies::default()),
            meters: Arc::new(Meters::new(&crate::Config::with_data_dir("/d"))),
        };
        SyncWorker::start(
            Arc::new(Inbox::new(1 << 20, Arc::new(WalCounters::default()))),
            instruments,
            bound,
            Arc::new(SimFs::new(1)),
            PathBuf::from("/d"),
            state::Shared::new(state::Tree::new(), 0, 1 << 20),
        )
        .expect("start")
    }

    fn waiter(
        seq: Seq,
    ) -> (
        Waiter,
        tokio::sync::oneshot::Receiver<crate::error::Result<Seq>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = Some(Instant::now());
        (Waiter { seq, reply, queued }, answer)
    }

    #[test]
    fn appends_within_the_bound_are_answered_at_once_and_the_rest_wait() {
        let worker = worker(AckBound::Records(2));
        let (first, mut first_answer) = waiter(2);
        let (third, mut third_answer) = waiter(3);
        worker.acknowledge(&mut vec![first, third]);
        assert!(matches!(first_answer.try_recv(), Ok(Ok(2))));
        assert!(third_answer.try_recv().is_err(), "3 is beyond 0 + 2");
        worker.stop();
    }

    #[test]
    fn held_back_appends_get_an_error_when_the_log_stops_or_fails() {
        let worker = worker(AckBound::Records(1));
        let (held, mut answer) = waiter(5);
        worker.acknowledge(&mut vec![held]);
        assert!(answer.try_recv().is_err(), "held back");
        let cause = Arc::new(Error::Panicked { what: "a test" });
        worker.fail_deferred(&Error::refused(&cause));
        assert!(matches!(
            answer.try_recv(),
            Ok(Err(Error::WalFailed { cause })) if matches!(*cause, Error::Panicked { .. })
        ));

        let (held, mut answer) = waiter(9);
        worker.acknowledge(&mut vec![held]);
        worker.stop();
        assert!(
            matches!(answer.try_recv(), Ok(Err(Error::ShutDown))),
            "no sync will come after the thread stopped"
        );
    }
}
