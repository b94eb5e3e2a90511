//! Latency samples gathered where operations complete, and drained by the
//! `MetricsActor` once a second, which alone publishes them to Prometheus
//! and answers the `Stats` query from them: an append pays one uncontended
//! lock and a histogram increment, never a message.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::format::snapshot::SnapshotKind;

/// The kinds of operation whose latency is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Append call to acknowledgement.
    Append,
    /// One `fdatasync` of the WAL.
    Sync,
    /// One compaction run.
    Compaction,
    /// One snapshot, full or incremental.
    Snapshot,
    /// Open-time recovery.
    Recovery,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 5] = [
        OpKind::Append,
        OpKind::Sync,
        OpKind::Compaction,
        OpKind::Snapshot,
        OpKind::Recovery,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Append => "append",
            OpKind::Sync => "sync",
            OpKind::Compaction => "compaction",
            OpKind::Snapshot => "snapshot",
            OpKind::Recovery => "recovery",
        }
    }
}

/// A new histogram of nanoseconds, 1 ns to 10 minutes at three significant digits.
pub(crate) fn nanos_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .unwrap_or_else(|e| unreachable!("static bounds: {e}"))
}

/// Samples of one kind since the last drain.
pub(crate) struct LatencyBatch {
    samples: Mutex<Histogram<u64>>,
}

impl Default for LatencyBatch {
    fn default() -> Self {
        LatencyBatch {
            samples: Mutex::new(nanos_histogram()),
        }
    }
}

impl LatencyBatch {
    fn lock(&self) -> MutexGuard<'_, Histogram<u64>> {
        // A histogram update cannot be left half done by a panic elsewhere.
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one sample.
    pub fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.lock().saturating_record(nanos);
    }

    /// Adds a sample for each of `took`, under one lock.
    pub fn record_all(&self, took: impl IntoIterator<Item = Duration>) {
        let mut samples = self.lock();
        for took in took {
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
            samples.saturating_record(nanos);
        }
    }

    /// Adds one sample that is a count, not a duration.
    pub fn record_count(&self, count: u64) {
        self.lock().saturating_record(count);
    }

    /// Takes every sample gathered since the last call.
    pub fn take(&self) -> Histogram<u64> {
        std::mem::replace(&mut *self.lock(), nanos_histogram())
    }
}

/// One batch per histogram, shared by everything that completes operations.
#[derive(Default)]
pub(crate) struct Latencies {
    pub append: LatencyBatch,
    pub sync: LatencyBatch,
    /// Records made durable by each sync (a count, not a duration).
    pub sync_batch: LatencyBatch,
    pub compaction: LatencyBatch,
    pub full_snapshot: LatencyBatch,
    pub incremental_snapshot: LatencyBatch,
    pub recovery: LatencyBatch,
}

impl Latencies {
    /// The batch of snapshots of `kind`.
    pub fn snapshot(&self, kind: SnapshotKind) -> &LatencyBatch {
        match kind {
            SnapshotKind::Full => &self.full_snapshot,
            SnapshotKind::Incremental => &self.incremental_snapshot,
        }
    }
}
