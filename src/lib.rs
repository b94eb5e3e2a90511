//! # concordkv
//!
//! A durable key-value log for actix applications: a write-ahead log with
//! group commit, checksummed records, segment rotation and crash recovery,
//! run by supervised actors, with full and incremental snapshots and
//! compaction in the background. See `README.md` for the guarantees of each
//! sync mode and `FORMAT.md` for the bytes on disk.
//!
//! ```no_run
//! use concordkv::{Config, Store};
//!
//! #[actix::main]
//! async fn main() -> Result<(), concordkv::Error> {
//!     let (store, recovery) = Store::open(Config::with_data_dir("./data")).await?;
//!     println!("recovered {} keys", recovery.keys);
//!     store.set("greeting", "hello").await?; // durable when this returns (sync_mode = always)
//!     let state = store.state(); // cheap to clone; sees every acknowledged write
//!     assert_eq!(state.get(b"greeting").as_deref(), Some(&b"hello"[..]));
//!     store.shutdown().await
//! }
//! ```
//!
//! The same write-ahead log is usable on its own, without the key-value
//! state: [`Log`] holds opaque payloads with one sequence number each (a
//! Raft log store, say), with purge, truncation and a metadata slot.
//!
//! ## Layout
//!
//! - `log/`: segments, the frame reader, the sync thread, recovery;
//! - `lifecycle/`: the manifest, snapshots, compaction and the background
//!   work that writes them;
//! - `actors/`: the supervised actors that run it all;
//! - `format/`: the bytes on disk;
//! - `rawlog.rs`: [`Log`], the same actors and files under a handle for
//!   opaque payloads.
//!
//! ## Features
//!
//! - `prometheus-exporter`: `install_prometheus_exporter` serves the
//!   metrics over HTTP for Prometheus (the store publishes them through the
//!   `metrics` facade either way, to whatever recorder is installed).
//! - `testing`: the simulated disk, the torture model and the fuzz entry
//!   points, for this crate's own tests and tools.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod actors;
pub mod archive;
mod config;
mod crash;
mod entry;
mod error;
mod format;
mod fs;
mod inspect;
mod latency;
mod lifecycle;
mod log;
mod memory;
mod meters;
mod rawlog;
mod state;
mod stats;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "prometheus-exporter")]
pub use actors::metrics::install_prometheus_exporter;
pub use actors::metrics::{KindStats, StatsReport, LATENCY_BUCKETS, SYNC_BATCH_BUCKETS};
pub use actors::supervised::ActorKind;
pub use config::{
    ArchiveConfig, CompactionConfig, Config, LimitsConfig, MaintenanceConfig, MetricsConfig,
    RecoveryMode, Secret, ServerConfig, SnapshotConfig, SupervisionConfig, SyncMode, WalConfig,
    DEFAULT_TOML,
};
pub use entry::{unix_millis, Entry, Op, Record, Seq};
pub use error::{ConfigError, Corruption, Error, Result};
pub use format::snapshot::{SnapshotHeader, SnapshotKind};
pub use inspect::{inspect, Inspection, SegmentReport, SnapshotReport};
pub use latency::OpKind;
pub use lifecycle::compaction::CompactionReport;
pub use lifecycle::snapshot::read_snapshot_file;
pub use log::admission::Admission;
pub use log::read::LogRead;
pub use log::recovery::{Recovery, TruncatedTail};
pub use log::subscription::Subscription;
pub use rawlog::{Log, LogEntries, LogRecovery, LogSubscription};
pub use state::{Scan, State};
pub use stats::{PersistenceInfo, StoreStats};
pub use store::{Pending, Store};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
