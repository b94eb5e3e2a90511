//! Counters the WAL keeps as it works, readable at any time without asking an
//! actor (`Store::stats`): what the bench and `INFO` report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters, updated with relaxed atomics on the write and sync paths.
#[derive(Debug, Default)]
pub(crate) struct WalCounters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub synced_records: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub rotations: AtomicU64,
    pub last_seq: AtomicU64,
    pub durable_seq: AtomicU64,
    /// Compactions under way (0 or 1).
    pub compacting: AtomicU64,
    /// Unix time of the last snapshot or compaction output, in seconds.
    pub last_snapshot_unix: AtomicU64,
    /// Bytes of appends admitted and not yet answered (see `admission`).
    pub pending_bytes: AtomicU64,
    /// The last sequence number the archive holds, with every one before it.
    pub archived_seq: AtomicU64,
    /// Bytes of retired files waiting for the archive.
    pub archive_pending_bytes: AtomicU64,
}

impl WalCounters {
    /// Notes that a snapshot (or a compaction's output) was just listed.
    pub fn snapshot_taken(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_snapshot_unix.store(now, Relaxed);
    }
}

/// The state of the store's files, as `INFO persistence` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistenceInfo {
    /// Live segments.
    pub segments: usize,
    /// Bytes of every live file (segments at their preallocated size).
    pub disk_bytes: u64,
    /// Live snapshots.
    pub snapshots: usize,
    /// The last sequence number a snapshot covers (0: none).
    pub last_snapshot_seq: u64,
    /// When the last snapshot was taken by this process (Unix seconds; 0: not yet).
    pub last_snapshot_unix: u64,
    /// Whether a compaction is running.
    pub compacting: bool,
    /// Bytes of torn tail cut off at open.
    pub recovery_truncated_bytes: u64,
}

/// A snapshot of the WAL's counters since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records appended.
    pub records: u64,
    /// Bytes appended (frames included).
    pub bytes: u64,
    /// `fdatasync` calls completed.
    pub syncs: u64,
    /// Records made durable by those syncs.
    pub synced_records: u64,
    /// Time spent in them.
    pub sync_time: Duration,
    /// Segments sealed and replaced.
    pub rotations: u64,
    /// The last sequence number written.
    pub last_seq: u64,
    /// The last sequence number known durable.
    pub durable_seq: u64,
    /// Bytes of appends admitted and not yet in the state (answered and
    /// applied; a failed one is out when answered): at most
    /// `limits.max_pending_bytes` (a record larger than that counts as
    /// exactly that).
    pub pending_bytes: u64,
    /// With an `[archive]`: the last sequence number the archive holds
    /// (with every one before it, since the archiver started); 0 without.
    pub archived_seq: u64,
    /// With an `[archive]`: bytes of retired files kept until the archive
    /// holds them.
    pub archive_pending_bytes: u64,
}

impl StoreStats {
    /// Mean records made durable per sync: the group-commit size.
    pub fn records_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.synced_records as f64 / self.syncs as f64
        }
    }
}

impl WalCounters {
    pub fn snapshot(&self) -> StoreStats {
        StoreStats {
            records: self.records.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            synced_records: self.synced_records.load(Relaxed),
            sync_time: Duration::from_nanos(self.sync_nanos.load(Relaxed)),
            rotations: self.rotations.load(Relaxed),
            last_seq: self.last_seq.load(Relaxed),
            durable_seq: self.durable_seq.load(Relaxed),
            pending_bytes: self.pending_bytes.load(Relaxed),
            archived_seq: self.archived_seq.load(Relaxed),
            archive_pending_bytes: self.archive_pending_bytes.load(Relaxed),
        }
    }
}

impl PersistenceInfo {
    /// Reads the manifest's lists and the files' sizes (the torn bytes are
    /// the store's to add: they belong to its open).
    pub(crate) fn read(wal: &crate::actors::wal::WalShared) -> PersistenceInfo {
        let dir = &wal.config.data_dir;
        let segments = wal.manifest.segments();
        let snapshots = wal.manifest.snapshots();
        let disk_bytes = segments
            .iter()
            .map(|id| crate::format::segment::segment_path(dir, *id))
            .chain(
                snapshots
                    .iter()
                    .map(|s| crate::lifecycle::snapshot::snapshot_path(dir, s)),
            )
            .filter_map(|path| wal.fs.file_len(&path).ok())
            .sum();
        PersistenceInfo {
            segments: segments.len(),
            disk_bytes,
            snapshots: snapshots.len(),
            last_snapshot_seq: snapshots.iter().map(|s| s.to_seq).max().unwrap_or(0),
            last_snapshot_unix: wal.counters.last_snapshot_unix.load(Relaxed),
            compacting: wal.counters.compacting.load(Relaxed) > 0,
            recovery_truncated_bytes: 0,
        }
    }
}
