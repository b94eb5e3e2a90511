//! Background maintenance threads: snapshots and compaction read and write
//! whole files, and must not take CPU or disk time from appends. Each job
//! runs on a thread of its own at a lower CPU priority (nice 10) and the
//! lowest best-effort I/O priority, so on a small machine the appenders'
//! thread and the sync thread win every contention.

use std::future::Future;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Niceness of maintenance threads (0 is normal, 19 the lowest).
const MAINTENANCE_NICE: libc::c_int = 10;
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
    // SAFETY: gettid, setpriority and ioprio_set only read their integer
    // arguments and act on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, MAINTENANCE_NICE);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_BEST_EFFORT_LOWEST,
        );
    }
}
