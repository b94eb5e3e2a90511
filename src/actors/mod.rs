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
//! - `archiver::ArchiverActor` (with the `archive` feature and an
//!   `[archive]` configured) copies the files to object storage.
//! - [`supervisor::StoreSupervisor`] starts them, notices any of them dying
//!   (also after a panic: each carries a [`supervised::Watch`]), restarts it
//!   (the WAL after re-validating the files), gives up after too many
//!   restarts in a while, and drains everything on shutdown. Whoever talks
//!   to an actor reads its current address in a [`supervised::Slot`].
//!
//! Every message they exchange is in [`messages`].

#[cfg(feature = "archive")]
pub mod archiver;
pub mod compactor;
pub mod messages;
pub mod metrics;
pub mod rotator;
pub mod snapshot;
pub mod supervised;
pub mod supervisor;
pub mod sync_timer;
pub mod wal;
