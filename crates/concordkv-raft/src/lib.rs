//! # concordkv-raft
//!
//! concordkv as [openraft](https://docs.rs/openraft/0.9)'s storage: a
//! durable Raft log ([`LogStore`], on a concordkv [`Log`](concordkv::Log))
//! and a key-value state machine ([`StateMachine`], on a concordkv
//! [`Store`](concordkv::Store)), both in one node directory.
//!
//! - Every entry is one checksummed log record; `append` tells openraft
//!   the entries are flushed once `fdatasync` covers them, and appends in
//!   flight share that sync (group commit).
//! - The vote and the purge point live in the log's metadata slot, replaced
//!   atomically; truncation and purge are the log's own, durable at once.
//! - The state machine writes each applied chunk of entries and its last
//!   log id in one atomic batch. A Raft snapshot is the store's full
//!   snapshot file, handed out as a file and never read into memory;
//!   installing one builds a new store generation and switches to it with
//!   one rename.
//!
//! The log must be written with `wal.sync_mode = "always"`: openraft counts
//! an entry toward a majority as soon as the node says it is flushed, so a
//! mode that acknowledges before the disk does would let a crash of a
//! majority lose a committed entry. [`open`] refuses any other mode.
//!
//! ```no_run
//! use concordkv_raft::{open, TypeConfig};
//!
//! # async fn run() -> Result<(), concordkv::Error> {
//! let config = concordkv::Config::with_data_dir("./node-1");
//! let (log_store, state_machine) = open::<TypeConfig>(config).await?;
//! // openraft::Raft::new(1, raft_config, network, log_store, state_machine.clone())
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod engine;
mod log_store;
mod request;
mod state_machine;

use std::sync::Arc;

use concordkv::{Config, ConfigError, Error, SyncMode};
use openraft::{Entry, RaftTypeConfig};

pub use log_store::{LogStore, MAX_READ_BYTES};
pub use request::{Request, Response};
pub use state_machine::{is_valid_snapshot_id, SnapshotBuilder, StateMachine};

/// Keys that start with these bytes belong to the state machine itself
/// (its applied log id and membership): requests on them are refused.
pub const RESERVED_PREFIX: &[u8] = b"\xff\xff";

openraft::declare_raft_types!(
    /// A type configuration for a key-value service: `u64` node ids,
    /// [`openraft::BasicNode`] addresses, [`Request`] and [`Response`], and
    /// snapshots as files.
    pub TypeConfig:
        D = Request,
        R = Response,
        SnapshotData = tokio::fs::File,
);

/// Opens (or creates) a node's storage in `config.data_dir`: the Raft log
/// in `log/`, the state machine in `state/` and its snapshots in
/// `snapshots/`. Refuses a `wal.sync_mode` other than `always`. Damage in
/// either store is refused as the store refuses it, naming the file.
///
/// Works from any tokio runtime: the stores run in an actix system on a
/// thread of their own, which stops when every handle is dropped.
pub async fn open<C>(config: Config) -> Result<(LogStore<C>, StateMachine<C>), Error>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    if config.wal.sync_mode != SyncMode::Always {
        return Err(Error::Config(ConfigError::OutOfRange {
            key: "wal.sync_mode",
            value: format!("{:?}", config.wal.sync_mode).to_lowercase(),
            accepted: "always (a Raft log must be durable before it is acknowledged)",
        }));
    }
    config.validate().map_err(Error::Config)?;
    let engine = Arc::new(
        engine::Engine::start(&config.data_dir.display().to_string())
            .map_err(|e| Error::io("start the storage thread", &config.data_dir, e))?,
    );
    let mut log_config = config.clone();
    log_config.data_dir = config.data_dir.join("log");
    // Any entry a leader accepted must fit here, whatever this node's own
    // limits: a follower that refused one would stop for good.
    log_config.limits.max_key_bytes = 1 << 24;
    log_config.limits.max_value_bytes = 1 << 29;
    log_config.limits.max_record_bytes = 1 << 30;
    log_config.metrics.store = format!("{}-log", config.metrics.store);
    let state_machine = StateMachine::open(Arc::clone(&engine), config).await?;
    let log = engine.open_log(log_config).await?;
    let log_store = LogStore::open(engine, log, state_machine.coverage()).await?;
    Ok((log_store, state_machine))
}

/// The encoding of entries, the vote and snapshot metadata: the same
/// bincode configuration as concordkv's own records.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}
