//! The error types: one enum for the store, one for configuration, one for
//! on-disk damage. Each variant names what failed and where, so a user can act
//! on the message alone.

use std::io;
use std::path::PathBuf;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected before anything was opened.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A file operation failed; `path` is the file or directory it was on.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Stored data failed validation; nothing from the damaged region was returned.
    #[error(transparent)]
    Corruption(#[from] Corruption),

    /// The request was refused before anything was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A write or sync failed earlier. Data written after the failure could not
    /// be made durable, so the log refuses writes until it is reopened
    /// (PostgreSQL's fsyncgate lesson: a failed fsync is never retried).
    #[error("the write-ahead log stopped accepting writes after an I/O failure: {0}")]
    WalFailed(String),

    /// The WAL actor died while this request was in flight; the request may or
    /// may not have reached the log, and it was not acknowledged.
    #[error("the WAL actor stopped before acknowledging this request; it was restarted, retry the request")]
    ActorDied,

    /// The data directory cannot be trusted before the machine restarts: a
    /// sync of it failed earlier in this boot (see `SYNC_FAILED`).
    #[error("{0}")]
    Untrusted(String),

    /// The store is shutting down or was shut down.
    #[error("the store is shut down")]
    ShutDown,
}

impl Error {
    /// Wraps an I/O error with the operation and the path it concerned.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Damage found in a data file: the file, the byte offset and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt data in {} at byte offset {offset}: {reason}", file.display())]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// A configuration value that was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or did not deserialize (unknown key, wrong type).
    #[error("configuration: {0}")]
    Load(String),

    /// A value of the right type but outside what is accepted.
    #[error("configuration key `{key}` = {value}: accepted {accepted}")]
    OutOfRange {
        key: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
