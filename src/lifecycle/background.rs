//! Background maintenance threads: snapshots and compaction read and write
//! whole files, removals of retired segments cut them down step by step,
//! and none may take CPU or disk time from appends. Each job
//! runs on a thread of its own in the `SCHED_IDLE` class, which runs only
//! when no normal thread wants the CPU, and at the lowest best-effort I/O
//! priority. A niced thread is not enough: measured on 2 cores with 64
//! `always` appenders, a nice-10 CPU burner raised the append p99 from about
//! 0.5 ms to 1.0–1.3 ms, while a `SCHED_IDLE` one left the median unchanged.
//!
//! The threads are counted in [`Jobs`] so that shutdown waits for them
//! before it releases the directory lock: a job still writing into the
//! directory must not overlap the next process that opens it. Shutdown
//! also cancels them ([`Cancel`]) as it starts: a job gives up at its next
//! check, and whatever it leaves (retired files not yet removed, a
//! snapshot not yet listed) the next open removes, rather than holding
//! the shutdown for as long as the job would take (paced to a byte rate,
//! or in the idle class beside busy processes, minutes).

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
}

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
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || {
                        // Counted off even if the job panics.
                        let _running = Running(&jobs);
                        if priority == Priority::Background {
                            lower_priority();
                        }
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
                        crate::memory::release_freed();
                        let _ = tx.send(result);
                    })
                    .map_err(|e| {
                        state.running -= 1;
                        Error::io("start a maintenance thread for", &self.dir, e)
                    })
                    .map(drop)
            }
        };
        async move {
            spawned?;
            // The sender is dropped unsent only when the job panicked.
            rx.await.unwrap_or(Err(Error::Panicked { what }))
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

    /// Refuses new jobs and cancels the running ones, without waiting.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cancel.set();
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
    fn a_job_someone_waits_for_leaves_the_idle_class() {
        assert_eq!(class_of(Priority::Background), libc::SCHED_IDLE);
        assert_eq!(class_of(Priority::Waited), libc::SCHED_OTHER);
    }
}
