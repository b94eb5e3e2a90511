//! Every message the actors exchange, in one place.

use std::path::PathBuf;

use actix::Message;
use tokio::sync::oneshot;

use crate::actors::wal::WalStart;
use crate::entry::Seq;
use crate::error::Result;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::lifecycle::background::{Priority, Waiting};
use crate::lifecycle::compaction::CompactionReport;
use crate::log::segment::Segment;

/// To `WalActor`: requests are waiting in the inbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// To `WalActor`, from `SyncTimerActor`: sync what was written since the last sync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncTick;

/// To `WalActor`, from the sync thread: the full segment is sealed (or failed to be).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SealDone(pub std::result::Result<(), std::sync::Arc<crate::error::Error>>);

/// To `WalActor`, from the sync thread: the new segment's header is durable
/// (or failed to become so).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HeaderSynced(pub std::result::Result<(), std::sync::Arc<crate::error::Error>>);

/// To `WalActor`: write what is queued, sync everything, then stop;
/// the outcome goes to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWal {
    pub reply: oneshot::Sender<Result<()>>,
}

/// To `RotatorActor`, from `WalActor`: create, preallocate and list the next segment.
#[derive(Message)]
#[rtype(result = "Result<Segment>")]
pub(crate) struct PrepareSegment;

/// To `RotatorActor`, from `WalActor`: a rotation waits for the segment
/// being prepared; fill it at full speed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Hurry;

/// To `RotatorActor`, from `SnapshotActor`: list the snapshot `header`
/// (written and synced) and, in the same manifest write, unlist the
/// `segments` and `obsolete` snapshots it covers; answers their files, for
/// the caller to remove at its pace.
#[derive(Message)]
#[rtype(result = "Result<Vec<PathBuf>>")]
pub(crate) struct ListSnapshot {
    pub header: SnapshotHeader,
    pub segments: Vec<u64>,
    pub obsolete: Vec<SnapshotHeader>,
}

/// To `RotatorActor`, from a `Log`: record that the records before
/// `before` are purged and unlist the segments holding only those;
/// answers their files, for the caller to remove.
#[derive(Message)]
#[rtype(result = "Result<Vec<PathBuf>>")]
pub(crate) struct PurgeLog {
    pub before: Seq,
}

/// To `RotatorActor`, from a `Log`: replace the metadata slot, durably.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct SetMetadata(pub Vec<u8>);

/// To `RotatorActor`, from `WalActor`, once the active segment is sealed:
/// mark the records after `after` in the segments up to `through` as
/// dropped (see `ManifestStore::truncate_after`); answers the files of the
/// segments unlisted for holding only dropped records.
#[derive(Message)]
#[rtype(result = "Result<Vec<PathBuf>>")]
pub(crate) struct MarkTruncation {
    pub after: Seq,
    pub through: u64,
}

/// To `RotatorActor`, from `StoreSupervisor` after the WAL died:
/// re-validate the files, bring the state in line with them, and start a
/// segment after the recovered log for the new WAL actor.
#[derive(Message)]
#[rtype(result = "Result<WalStart>")]
pub(crate) struct Revalidate;

/// To `SnapshotActor`: take a snapshot covering the log up to `upto`, which
/// must be durable; `None` if the snapshots already cover it.
#[derive(Message)]
#[rtype(result = "Result<Option<SnapshotHeader>>")]
pub struct TakeSnapshot {
    pub kind: SnapshotKind,
    pub upto: Seq,
    /// Whether someone waits for it (`Store::begin_snapshot_waited`).
    pub priority: Priority,
    /// For a waited snapshot, until its job starts: a compaction running
    /// ahead of it gives way.
    pub waiting: Option<Waiting>,
}

/// To `CompactorActor`, from `WalActor`: a segment of `records` records was sealed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SegmentSealed {
    pub records: u64,
}

/// To `CompactorActor`: compact the sealed segments now; `None` if there was nothing to do.
#[derive(Message)]
#[rtype(result = "Result<Option<CompactionReport>>")]
pub struct Compact;

/// To `SnapshotActor`, from `CompactorActor`: rewrite the sealed segments
/// into a full snapshot, if they are due (`automatic`) or whenever there
/// is something to compact; `None` if there was not.
#[derive(Message)]
#[rtype(result = "Result<Option<CompactionReport>>")]
pub(crate) struct RunCompaction {
    pub automatic: bool,
}

/// To `MetricsActor`: the in-process statistics.
#[derive(Message)]
#[rtype(result = "crate::actors::metrics::StatsReport")]
pub struct GetStats;

/// To `StoreSupervisor`: the WAL actor of `generation` is gone without being stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WalDied {
    pub generation: u64,
}

/// To `StoreSupervisor`: the actor `actor` of `generation` is gone (after
/// a panic, or at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorDied {
    pub actor: crate::actors::supervised::ActorKind,
    pub generation: u64,
}

/// To any actor, in tests: panic in the handler, as a bug would.
#[cfg(feature = "testing")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// To `RotatorActor`, in tests: panic on the next `PrepareSegment`, so the
/// WAL hears of the death as the answer to its request for a segment —
/// while a full segment may be waiting for it.
#[cfg(feature = "testing")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashWhilePreparing;

/// To `StoreSupervisor`, in tests: make `0` panic (the store sends the
/// WAL's and the timer's this way: it holds no address of theirs).
#[cfg(feature = "testing")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashActor(pub crate::actors::supervised::ActorKind);

/// To `StoreSupervisor`: re-validation after the WAL's death finished; start this WAL.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WalRecovered(pub Result<WalStart>);

/// To `StoreSupervisor`: drain, sync and stop everything.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Shutdown;
