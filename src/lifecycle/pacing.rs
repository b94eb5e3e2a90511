//! Pacing of background I/O to a byte rate.
//!
//! A maintenance thread's CPU priority does not reach the disk: an
//! `fdatasync` of the WAL waits behind every write the disk is still
//! finishing, and a flush request makes the device persist all of them. A
//! snapshot written at full speed, or a retired segment deleted at once
//! (which makes the disk discard all of it), puts milliseconds in front of
//! the appenders' syncs. Done in small pieces at a steady rate, each sync
//! finds at most a piece ahead of it (RocksDB's rate limiter and delete
//! scheduler do the same).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Spreads a job's I/O over time: after each piece, [`Pacer::pace`] sleeps
/// until the bytes done so far fit the rate.
#[derive(Debug)]
pub(crate) struct Pacer {
    bytes_per_sec: u64,
    started: Instant,
    done: u64,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (0: no limit), starting now.
    pub fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec,
            started: Instant::now(),
            done: 0,
        }
    }

    /// Counts `bytes` as done, then sleeps as long as the rate requires.
    pub fn pace(&mut self, bytes: u64) {
        self.done += bytes;
        if let Some(wait) = self.wait(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// [`Pacer::pace`], except that nothing waits while `hurry` is set:
    /// someone is now waiting for the job itself.
    pub fn pace_unless(&mut self, bytes: u64, hurry: &AtomicBool) {
        if hurry.load(Ordering::Relaxed) {
            self.done += bytes;
        } else {
            self.pace(bytes);
        }
    }

    /// How long to wait, `elapsed` after the start, before doing more.
    fn wait(&self, elapsed: Duration) -> Option<Duration> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let due = Duration::from_secs_f64(self.done as f64 / self.bytes_per_sec as f64);
        due.checked_sub(elapsed).filter(|wait| !wait.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_the_bytes_done_fit_the_rate() {
        let mut pacer = Pacer::new(1 << 20);
        pacer.done = 1 << 20;
        assert_eq!(
            pacer.wait(Duration::from_millis(250)),
            Some(Duration::from_millis(750))
        );
        assert_eq!(pacer.wait(Duration::from_secs(1)), None);
        assert_eq!(pacer.wait(Duration::from_secs(2)), None);
    }

    #[test]
    fn no_limit_never_waits() {
        let mut pacer = Pacer::new(0);
        pacer.done = u64::MAX / 2;
        assert_eq!(pacer.wait(Duration::ZERO), None);
    }
}
