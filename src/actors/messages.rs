//! Every message the actors exchange, in one place.

use actix::Message;
use tokio::sync::oneshot;

use crate::actors::wal::WalStart;
use crate::entry::Seq;
use crate::error::Result;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
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

/// To `SnapshotActor`: take a snapshot covering the log up to `upto`, which
/// must be durable; `None` if the snapshots already cover it.
#[derive(Message)]
#[rtype(result = "Result<Option<SnapshotHeader>>")]
pub struct TakeSnapshot {
    pub kind: SnapshotKind,
    pub upto: Seq,
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

/// To `StoreSupervisor`, in tests: make `0` panic.
#[cfg(feature = "testing")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashActor(pub crate::actors::supervised::ActorKind);

/// To `StoreSupervisor`: re-validation after a death finished; start this WAL.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WalRecovered(pub Result<WalStart>);

/// To `StoreSupervisor`: drain, sync and stop everything.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Shutdown;
