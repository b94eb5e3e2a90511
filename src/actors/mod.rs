//! The store's actors, one concern each, under [`supervisor::StoreSupervisor`]:
//!
//! - [`wal::WalActor`] owns the active segment: encodes, writes, rotates and
//!   hands appenders to the sync thread per the sync mode.
//! - [`rotator::RotatorActor`] prepares the next segment ahead of time and
//!   keeps the manifest.
//! - [`compactor::CompactorActor`] decides when the sealed segments are
//!   compacted, and has it done in the background.
//! - [`metrics::MetricsActor`] publishes latencies, counts and file gauges,
//!   and answers the in-process `Stats` query.
//! - [`snapshot::SnapshotActor`] takes full and incremental snapshots and
//!   retires what they make obsolete.
//! - [`sync_timer::SyncTimerActor`] is the clock of `batch` and `interval` syncs.
//! - [`supervisor::StoreSupervisor`] starts them, notices a dead WAL actor
//!   (also after a panic), re-validates the files and starts a fresh one, and
//!   drains everything on shutdown.
//!
//! Every message they exchange is in [`messages`].

pub mod compactor;
pub mod messages;
pub mod metrics;
pub mod rotator;
pub mod snapshot;
pub mod supervisor;
pub mod sync_timer;
pub mod wal;
