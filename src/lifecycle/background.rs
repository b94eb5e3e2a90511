//! Background maintenance threads: snapshots and compaction read and write
//! whole files, removals of retired segments cut them down step by step,
//! and none may take CPU or disk time from appends. Each job
//! runs on a thread of its own in the `SCHED_IDLE` class, which runs only
//! when no normal thread wants the CPU, and at the lowest best-effort I/O
//! priority. A niced thread is not enough: measured on 2 cores with 64
//! `always` appenders, a nice-10 CPU burner raised the append p99 from about
//! 0.5 ms to 1.0–1.3 ms, while a `SCHED_IDLE` one left the median unchanged.
//!
//! A job's thread is kept for the next job of its priority rather than
//! ended ([`Workers`]): a thread that ends frees its allocator caches
//! under its arena's lock, and in the idle class beside busy processes it
//! held that lock for up to 100 s while a `SAVE`, at normal priority,
//! waited for it.
//!
//! The jobs are counted in [`Jobs`] so that shutdown waits for them
//! before it releases the directory lock: a job still writing into the
//! directory must not overlap the next process that opens it. Shutdown
//! also cancels them ([`Cancel`]) as it starts: a job gives up at its next
//! check, and whatever it leaves (retired files not yet removed, a
//! snapshot not yet listed) the next open removes, rather than holding
//! the shutdown for as long as the job would take (paced to a byte rate,
//! or in the idle class beside busy processes, minutes).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// `ioprio_set` arguments: one thread (IOPRIO_WHO_PROCESS with a thread id),
/// best-effort class (2) at its lowest level (7).
#[cfg(target_os = "linux")]
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
#[cfg(target_os = "linux")]
const IOPRIO_BEST_EFFORT_LOWEST: libc::c_long = (2 << 13) | 7;

/// How a job's thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Nobody waits for it: `SCHED_IDLE` and the lowest best-effort I/O
    /// priority, so that it never takes time from appends.
    Background,
    /// A client waits for it (`SAVE`): normal priority. In the idle class,
    /// any other busy process on the machine held it back for as long as
    /// it stayed busy (a 20 MiB snapshot took 19 s instead of 0.5 s beside
    /// two CPU-bound processes on two cores).
    Waited,
}

impl Priority {
    /// The byte rate a job at this priority writes at, given the configured
    /// `maintenance` one: a waited job runs at the disk's speed, since its
    /// client waits for all of it, and appends share the disk with it only
    /// for that long.
    pub(crate) fn pace(self, bytes_per_sec: u64) -> u64 {
        match self {
            Priority::Background => bytes_per_sec,
            Priority::Waited => 0,
        }
    }
}

/// Set once the store closes; a job checks it between pieces of its work.
/// A default one is never set (for the same work done at open). A job that
/// gives way ([`Cancel::giving_way`]) is also cancelled while a waited job
/// is queued behind it.
#[derive(Clone, Default)]
pub(crate) struct Cancel {
    closing: Arc<Cancelling>,
    /// Waited jobs queued, which this job gives way to.
    gives_way_to: Option<Arc<AtomicUsize>>,
}

#[derive(Default)]
struct Cancelling {
    set: AtomicBool,
    /// What cancelled jobs built, freed by whoever closes the jobs.
    leftovers: Mutex<Vec<Box<dyn Send>>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("set", &self.closing.set)
            .field("gives_way_to", &self.gives_way_to)
            .finish()
    }
}

impl Cancel {
    /// [`Error::ShutDown`] once cancelled; [`Error::GaveWay`] while a waited
    /// job waits for this one, if it gives way.
    pub(crate) fn check(&self) -> Result<()> {
        if self.closing.set.load(Ordering::Relaxed) {
            Err(Error::ShutDown)
        } else if self
            .gives_way_to
            .as_ref()
            .is_some_and(|waited| waited.load(Ordering::Relaxed) > 0)
        {
            Err(Error::GaveWay)
        } else {
            Ok(())
        }
    }

    /// This one, also cancelled while a waited job is queued (see
    /// [`Jobs::waited`]).
    pub(crate) fn giving_way(&self, jobs: &Jobs) -> Cancel {
        Cancel {
            closing: Arc::clone(&self.closing),
            gives_way_to: Some(Arc::clone(&jobs.waited)),
        }
    }

    /// Fails a job with `error`, freeing what it built; if the job was
    /// cancelled, that is left to the next waited job's thread or to the
    /// one that closes the jobs. A map of a million keys freed on the job's own
    /// thread, in the idle class beside busy processes, held shutdown (or
    /// the waited job given way to) for tens of seconds.
    pub(crate) fn fail(&self, error: Error, built: impl Send + 'static) -> Error {
        if error.is_cancellation() {
            self.closing
                .leftovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Box::new(built));
        }
        error
    }

    /// Frees `map` here, a piece at a time; once this job is cancelled, or
    /// gives way to a waited job queued behind it, what is left goes to the
    /// leftovers (see [`Cancel::fail`]). Dropped at once in the idle class,
    /// beside busy processes, a compaction's map of a million keys held a
    /// `SAVE` queued behind it for 57 s.
    pub(crate) fn free_map<K, V, S>(&self, mut map: HashMap<K, V, S>)
    where
        K: Send + 'static,
        V: Send + 'static,
        S: Send + 'static,
    {
        const PIECE: usize = 4096;
        for (freed, pair) in map.extract_if(|_, _| true).enumerate() {
            drop(pair);
            if freed % PIECE == PIECE - 1 && self.check().is_err() {
                break;
            }
        }
        if !map.is_empty() {
            self.closing
                .leftovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Box::new(map));
        }
    }

    fn set(&self) {
        self.closing.set.store(true, Ordering::Relaxed);
    }

    /// Frees what cancelled jobs left.
    fn free_leftovers(&self) {
        let leftovers = std::mem::take(
            &mut *self
                .closing
                .leftovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        drop(leftovers);
    }
}

/// A store's maintenance threads: how many run, and whether new ones are refused.
#[derive(Debug)]
pub(crate) struct Jobs {
    state: Mutex<JobsState>,
    ended: Condvar,
    /// Given to every job; set by [`Jobs::close`].
    cancel: Cancel,
    /// Waited jobs queued behind others (see [`Jobs::waited`]).
    waited: Arc<AtomicUsize>,
    /// The data directory, named when a thread cannot be started.
    dir: PathBuf,
    /// The threads that run jobs, by priority.
    background: Arc<Workers>,
    waited_workers: Arc<Workers>,
}

/// A job as its thread runs it.
type Task = Box<dyn FnOnce() + Send>;

/// Threads of one priority that run jobs and, between jobs, wait for the
/// next. A thread that ended after its job freed its allocator caches
/// under its arena's lock (glibc's `tcache_thread_shutdown`), and a
/// thread in the idle class may get no CPU time for as long as other
/// processes stay busy: beside two CPU-bound processes, a `SAVE` that
/// needed the same arena waited 36 s for one. Kept, the threads end only
/// when the store closes.
#[derive(Debug, Default)]
struct Workers {
    state: Mutex<WorkersState>,
    ready: Condvar,
}

#[derive(Default)]
struct WorkersState {
    tasks: VecDeque<Task>,
    /// Threads waiting for a task.
    idle: usize,
    closed: bool,
}

impl std::fmt::Debug for WorkersState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkersState")
            .field("tasks", &self.tasks.len())
            .field("idle", &self.idle)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Workers {
    fn lock(&self) -> MutexGuard<'_, WorkersState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `task` for a waiting thread, or starts one for it; once
    /// closed, drops it (jobs are refused before, by [`Jobs::run`]).
    fn submit(self: &Arc<Self>, task: Task, priority: Priority) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Ok(());
        }
        state.tasks.push_back(task);
        if state.idle >= state.tasks.len() {
            self.ready.notify_one();
            return Ok(());
        }
        let workers = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("concordkv-maintenance".to_string())
            .spawn(move || workers.work(priority));
        if started.is_err() {
            // Still the last one: no thread ran while the lock was held.
            state.tasks.pop_back();
        }
        started.map(drop)
    }

    /// A thread's life: tasks as they come, until the store closes.
    fn work(&self, priority: Priority) {
        if priority == Priority::Background {
            lower_priority();
        }
        let mut state = self.lock();
        loop {
            if let Some(task) = state.tasks.pop_front() {
                drop(state);
                // A job's panic is its own: its waiter hears of it (see
                // `Jobs::run`), and the thread goes on to the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                name_thread("concordkv-idle");
                state = self.lock();
            } else if state.closed {
                return;
            } else {
                state.idle += 1;
                state = self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.idle -= 1;
            }
        }
    }

    /// Lets the threads end once no task is left.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Names the calling thread as `ps` and `top` show it (cut to 15 bytes),
/// after the job it runs.
#[cfg(target_os = "linux")]
fn name_thread(name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name`
        // is and outlives the call; it renames the calling thread only.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn name_thread(_name: &str) {}

/// A waited job on its way: jobs that give way to it stop while it lives.
#[derive(Debug)]
pub(crate) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct JobsState {
    running: usize,
    closed: bool,
}

impl Jobs {
    /// No job running yet, for the store in `dir`.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Jobs {
        Jobs {
            state: Mutex::default(),
            ended: Condvar::new(),
            cancel: Cancel::default(),
            waited: Arc::default(),
            dir: dir.into(),
            background: Arc::default(),
            waited_workers: Arc::default(),
        }
    }

    fn workers(&self, priority: Priority) -> &Arc<Workers> {
        match priority {
            Priority::Background => &self.background,
            Priority::Waited => &self.waited_workers,
        }
    }

    /// Marks a waited job as queued until the returned guard is dropped
    /// (when the job starts): a job in the idle class ahead of it cannot be
    /// raised back to normal priority by an unprivileged process, so one
    /// that gives way stops instead, to be run again after it.
    pub(crate) fn waited(&self) -> Waiting {
        self.waited.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(&self.waited))
    }

    fn lock(&self) -> MutexGuard<'_, JobsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` on a thread named `name`, scheduled as `priority` says;
    /// resolves with its result, or [`Error::Panicked`] naming `what` the
    /// job was doing. After
    /// [`Jobs::close_and_wait`] a job is refused, and one whose thread had
    /// not begun it yet is skipped, with [`Error::ShutDown`]; one under way
    /// is cancelled through the [`Cancel`] it is given.
    pub(crate) fn run<T: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        what: &'static str,
        priority: Priority,
        job: impl FnOnce(&Cancel) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> {
        let (tx, rx) = oneshot::channel();
        let spawned = {
            let mut state = self.lock();
            if state.closed {
                Err(Error::ShutDown)
            } else {
                state.running += 1;
                let jobs = Arc::clone(self);
                let name = name.to_string();
                let task: Task = Box::new(move || {
                    // Counted off even if the job panics.
                    let _running = Running(&jobs);
                    name_thread(&name);
                    if jobs.lock().closed {
                        let _ = tx.send(Err(Error::ShutDown));
                        return;
                    }
                    // What a job that gave way built is freed by the
                    // waited job it gave way to, at that one's priority:
                    // in the idle class, beside busy processes, freeing
                    // a million keys took 80 s.
                    if priority == Priority::Waited {
                        jobs.cancel.free_leftovers();
                    }
                    crate::crash::pause_point("maintenance.before_job");
                    let result = job(&jobs.cancel);
                    if priority == Priority::Waited {
                        crate::memory::release_freed();
                    }
                    let _ = tx.send(result);
                });
                self.workers(priority).submit(task, priority).map_err(|e| {
                    state.running -= 1;
                    Error::io("start a maintenance thread for", &self.dir, e)
                })
            }
        };
        let trimmer = Arc::clone(&self.waited_workers);
        async move {
            spawned?;
            // The sender is dropped unsent only when the job panicked.
            let result = rx.await.unwrap_or(Err(Error::Panicked { what }));
            if priority == Priority::Background {
                // Trimming locks every arena in turn: not in the idle
                // class, where it could hold one for as long as other
                // processes keep the CPU busy; nor from an idle-class
                // thread, whose new threads would be in that class too.
                let _ = trimmer.submit(Box::new(crate::memory::release_freed), Priority::Waited);
            }
            result
        }
    }

    /// Counts work that runs partly elsewhere (a snapshot, listed by the
    /// rotator between two jobs) as a running job while the returned guard
    /// lives, so that shutdown waits for all of it; [`Error::ShutDown`]
    /// once closed.
    pub(crate) fn hold(self: &Arc<Self>) -> Result<Held> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::ShutDown);
        }
        state.running += 1;
        Ok(Held(Arc::clone(self)))
    }

    /// Refuses new jobs and cancels the running ones, without waiting;
    /// the threads end once idle.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cancel.set();
        self.background.close();
        self.waited_workers.close();
    }

    /// [`Jobs::close`], then blocks until every job has ended, and frees
    /// what the cancelled ones left.
    pub(crate) fn close_and_wait(&self) {
        self.close();
        let mut state = self.lock();
        while state.running > 0 {
            state = self
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        self.cancel.free_leftovers();
    }
}

impl Drop for Jobs {
    /// A store dropped without shutting down leaves no thread waiting.
    fn drop(&mut self) {
        self.background.close();
        self.waited_workers.close();
    }
}

/// Work counted as a running job until dropped (see [`Jobs::hold`]).
pub(crate) struct Held(Arc<Jobs>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.ended.notify_all();
    }
}

/// One running job's count, given back when its thread ends.
struct Running<'a>(&'a Jobs);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.ended.notify_all();
    }
}

/// Lowers the calling thread's CPU and I/O priority; failing to is harmless.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: gettid, sched_setscheduler and ioprio_set read their integer
    // arguments (and `idle`, which outlives the call) and act on the
    // calling thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_IDLE, &idle);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_BEST_EFFORT_LOWEST,
        );
    }
}

/// `SCHED_IDLE` and `ioprio_set` are Linux's: elsewhere maintenance threads
/// run at normal priority (only the byte-rate pacing holds them back).
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling class a job's thread runs in, as the job sees it.
    fn class_of(priority: Priority) -> libc::c_int {
        let jobs = Arc::new(Jobs::new("test"));
        let job = jobs.run("concordkv-test", "a test job", priority, |_| {
            // SAFETY: sched_getscheduler(0) reads the calling thread's policy.
            Ok(unsafe { libc::sched_getscheduler(0) })
        });
        let class = block_on(job).expect("the job ran");
        jobs.close_and_wait();
        class
    }

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    #[test]
    fn what_a_cancelled_job_built_is_freed_by_the_closer_not_the_job() {
        /// Records the thread that drops it.
        struct Built(Arc<Mutex<Option<std::thread::ThreadId>>>);
        impl Drop for Built {
            fn drop(&mut self) {
                *self.0.lock().expect("lock") = Some(std::thread::current().id());
            }
        }
        let jobs = Arc::new(Jobs::new("test"));
        let (cancelled, failed) = (Arc::default(), Arc::default());
        let (started, go) = std::sync::mpsc::channel();
        let (job, failing) = (Arc::clone(&cancelled), Arc::clone(&failed));
        let ran = jobs.run(
            "concordkv-test",
            "a test job",
            Priority::Waited,
            move |cancel| {
                started.send(()).expect("send");
                while cancel.check().is_ok() {
                    std::thread::yield_now();
                }
                let failure =
                    cancel.fail(Error::InvalidRequest("not a cancel".into()), Built(failing));
                assert!(matches!(failure, Error::InvalidRequest(_)));
                let cancelled = cancel.check().expect_err("cancelled");
                Err::<(), _>(cancel.fail(cancelled, Built(job)))
            },
        );
        let outcome = std::thread::spawn(move || block_on(ran));
        go.recv().expect("the job started");
        jobs.close_and_wait();
        let closer = std::thread::current().id();
        assert_eq!(*cancelled.lock().expect("lock"), Some(closer));
        let job_thread = failed.lock().expect("lock").expect("freed");
        assert_ne!(
            job_thread, closer,
            "a failure other than a cancel frees at once"
        );
        assert!(matches!(
            outcome.join().expect("join"),
            Err(Error::ShutDown)
        ));
    }

    #[test]
    fn a_jobs_thread_runs_the_next_job_of_its_priority_and_ends_when_the_jobs_close() {
        let jobs = Arc::new(Jobs::new("test"));
        let thread_of = |jobs: &Arc<Jobs>| {
            let job = jobs.run("concordkv-test", "a test job", Priority::Background, |_| {
                // SAFETY: gettid takes no argument.
                Ok(unsafe { libc::syscall(libc::SYS_gettid) })
            });
            block_on(job).expect("the job ran")
        };
        let first = thread_of(&jobs);
        // Back from its job, the thread waits for the next one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while jobs.background.lock().idle == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never waited"
            );
            std::thread::yield_now();
        }
        assert_eq!(thread_of(&jobs), first, "a new thread ran the next job");
        let task = PathBuf::from(format!("/proc/self/task/{first}"));
        assert!(task.exists());
        jobs.close_and_wait();
        while task.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread outlived the jobs"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_map_a_job_frees_goes_to_the_waited_job_queued_behind_it() {
        let jobs = Arc::new(Jobs::new("test"));
        let cancel = jobs.cancel.giving_way(&jobs);
        let map: HashMap<u32, Vec<u8>> = (0..100_000).map(|k| (k, vec![1; 8])).collect();
        let left = || jobs.cancel.closing.leftovers.lock().expect("lock").len();
        cancel.free_map(map.clone());
        assert_eq!(
            left(),
            0,
            "with nothing queued behind, the job frees it all"
        );
        let waiting = jobs.waited();
        cancel.free_map(map);
        assert_eq!(left(), 1, "what was left was not handed on");
        drop(waiting);
        jobs.cancel.free_leftovers();
        assert_eq!(left(), 0);
    }

    #[test]
    fn a_job_someone_waits_for_leaves_the_idle_class() {
        assert_eq!(class_of(Priority::Background), libc::SCHED_IDLE);
        assert_eq!(class_of(Priority::Waited), libc::SCHED_OTHER);
    }
}
