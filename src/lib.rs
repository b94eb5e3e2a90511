//! # concordkv
//!
//! A durable key-value log for actix applications: a write-ahead log with
//! group commit, checksummed records, segment rotation and crash recovery,
//! run by supervised actors. See `README.md` for the guarantees of each sync
//! mode and `FORMAT.md` for the bytes on disk.
//!
//! ```no_run
//! use concordkv::{Config, Store};
//!
//! #[actix::main]
//! async fn main() -> Result<(), concordkv::Error> {
//!     let (store, recovery) = Store::open(Config::with_data_dir("./data")).await?;
//!     println!("recovered {} records", recovery.records.len());
//!     store.set("greeting", "hello").await?; // durable when this returns (sync_mode = always)
//!     store.shutdown().await
//! }
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod actors;
mod background;
pub mod bench;
pub mod compaction;
pub mod config;
pub mod crash;
pub mod entry;
pub mod error;
pub mod format;
mod frame_reader;
pub mod fs;
pub mod fuzzing;
mod inbox;
pub mod inspect;
pub mod latency;
mod manifest;
mod pacing;
pub mod recovery;
mod segment;
pub mod server;
pub mod sim_fs;
mod snapshot;
pub mod stats;
pub mod store;
mod sync_failure;
mod sync_worker;
pub mod torture;

pub use compaction::CompactionReport;
pub use config::{Config, RecoveryMode, SyncMode};
pub use entry::{Entry, Op, Record, Seq};
pub use error::{ConfigError, Corruption, Error, Result};
pub use recovery::{Recovery, TruncatedTail};
pub use stats::{PersistenceInfo, StoreStats};
pub use store::{Pending, Store};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
