//! Background maintenance threads: snapshots and compaction read and write
//! whole files, and must not take CPU or disk time from appends. Each job
//! runs on a thread of its own in the `SCHED_IDLE` class, which runs only
//! when no normal thread wants the CPU, and at the lowest best-effort I/O
//! priority. A niced thread is not enough: measured on 2 cores with 64
//! `always` appenders, a nice-10 CPU burner raised the append p99 from about
//! 0.5 ms to 1.0–1.3 ms, while a `SCHED_IDLE` one left the median unchanged.

use std::future::Future;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// `ioprio_set` arguments: one thread (IOPRIO_WHO_PROCESS with a thread id),
/// best-effort class (2) at its lowest level (7).
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
const IOPRIO_BEST_EFFORT_LOWEST: libc::c_long = (2 << 13) | 7;

/// Runs `job` on a low-priority thread named `name`; resolves with its result.
pub(crate) fn run<T: Send + 'static>(
    name: &str,
    job: impl FnOnce() -> Result<T> + Send + 'static,
) -> impl Future<Output = Result<T>> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(job());
        });
    async move {
        spawned.map_err(|e| Error::WalFailed(format!("cannot start a maintenance thread: {e}")))?;
        rx.await
            .unwrap_or_else(|_| Err(Error::WalFailed("a maintenance thread panicked".into())))
    }
}

/// Lowers the calling thread's CPU and I/O priority; failing to is harmless.
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
