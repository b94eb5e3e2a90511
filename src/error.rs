//! The error types: one enum for the store, one for configuration, one for
//! on-disk damage. Each variant names what failed and where, so a user can act
//! on the message alone, and a program can act on the variant: a full disk,
//! a failing disk, a stopped log and a bad request are told apart by `match`,
//! not by reading the text.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::entry::Seq;

/// Everything a store operation can fail with.
///
/// `Clone`, so one failure can answer every request it affected: the I/O
/// error is shared, never turned into text on its way to the callers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before anything was opened.
    Config(ConfigError),

    /// The disk, or the user's quota on it, is full (`ENOSPC`, `EDQUOT`):
    /// freeing space and reopening the store is the remedy, unlike for
    /// [`Error::Io`].
    DiskFull {
        /// What was being done (`"write segment"`, `"sync segment"`, ...).
        op: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// The error the operating system returned, kind and code intact.
        source: Arc<io::Error>,
    },

    /// A file operation failed for another reason than a full disk (`EIO`,
    /// permissions, a missing file, ...).
    Io {
        /// What was being done (`"write segment"`, `"sync segment"`, ...).
        op: &'static str,
        /// The file or directory it was done on (for a listening socket,
        /// its address).
        path: PathBuf,
        /// The error the operating system returned, kind and code intact.
        source: Arc<io::Error>,
    },

    /// Stored data failed validation; nothing from the damaged region was returned.
    Corruption(Corruption),

    /// The request was refused before anything was written (an empty key,
    /// a value over a limit, ...).
    InvalidRequest(String),

    /// Refused because the log stopped accepting writes after an earlier
    /// failure, `cause`. Data written after a failed write or sync could not
    /// be made durable, so the log refuses writes until the store is reopened
    /// (PostgreSQL's fsyncgate lesson: a failed fsync is never retried). The
    /// request that hit the failure itself got `cause` directly.
    WalFailed {
        /// The failure that stopped the log (often [`Error::DiskFull`] or
        /// [`Error::Io`]; never another `WalFailed`).
        cause: Arc<Error>,
    },

    /// The WAL actor died while this request was in flight; the request may or
    /// may not have reached the log, and it was not acknowledged.
    ActorDied,

    /// The store's actors died more than `supervision.max_restarts` times
    /// within `supervision.period_secs`: the supervisor gave up, and the
    /// store refuses every request until it is opened again.
    RestartLimit {
        /// The actor whose death was one too many (`"rotator"`, `"wal"`, ...).
        actor: &'static str,
        /// Restarts within the period, that one included.
        restarts: u64,
        /// `supervision.period_secs`.
        period_secs: u64,
    },

    /// A thread or task of the store panicked; its work was not done (and,
    /// for the log's own threads, the log stopped). An actor that panicked
    /// was restarted by its supervisor: the next request reaches the new one.
    Panicked {
        /// The work or the thread that panicked (`"a snapshot"`,
        /// `"the sync thread"`, `"opening the store"`).
        what: &'static str,
    },

    /// The data directory cannot be trusted before the machine restarts: a
    /// sync of it failed earlier in this boot (see `SYNC_FAILED`).
    Untrusted(String),

    /// A compaction or snapshot asked for while another of its kind, asked
    /// for earlier, is still running; nothing was started.
    InProgress(&'static str),

    /// A read or subscription of a [`Log`](crate::Log) reached records
    /// that [`Log::truncate_after`](crate::Log::truncate_after) dropped
    /// while it ran, or had handed some out: what it would read next is no
    /// longer what it read before. Read again from `after + 1` (a
    /// subscription that handed out nothing past `after` goes on by
    /// itself).
    Truncated {
        /// The last record kept.
        after: Seq,
    },

    /// The data directory holds another kind of log than the one opening
    /// it: a [`Store`](crate::Store)'s key-value records, or a
    /// [`Log`](crate::Log)'s opaque payloads. Nothing in it was changed.
    WrongKind {
        /// The data directory.
        dir: PathBuf,
        /// What it holds (`"kv"` or `"log"`).
        found: &'static str,
        /// What was opening it.
        wanted: &'static str,
    },

    /// A read of the log asked for records a snapshot or a compaction has
    /// retired (their segments are no longer listed in the manifest, and
    /// the snapshot holds their net effect, not the records themselves), or
    /// that a [`Log`](crate::Log) purged with `purge_before`.
    Purged {
        /// The last retired sequence number: the log holds records from
        /// `upto + 1` on.
        upto: Seq,
    },

    /// The archive (`[archive]`) refused or failed a request, or holds
    /// something a restore cannot use; `object` names the bucket, prefix
    /// and object.
    Archive {
        /// What was being done (`"upload"`, `"list"`, `"check"`, ...).
        op: &'static str,
        /// `s3://bucket/prefix/object`.
        object: String,
        /// What went wrong.
        reason: String,
    },

    /// The store is shutting down or was shut down.
    ShutDown,

    /// A compaction stopped to let a snapshot someone waits for (`SAVE`)
    /// run first; the compactor runs it again after that one.
    GaveWay,

    /// [`Store::open`](crate::Store::open) was called outside a running
    /// actix `System`, which the store's actors need.
    NoActixSystem,
}

impl Error {
    /// Wraps an I/O error with the operation and the path it concerned; a
    /// full disk or quota becomes [`Error::DiskFull`], anything else
    /// [`Error::Io`]. Public so that crates built on the store report
    /// their own files the same way.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        let source = Arc::new(source);
        if is_disk_full(&source) {
            Error::DiskFull { op, path, source }
        } else {
            Error::Io { op, path, source }
        }
    }

    /// A blocking task doing `what` that did not finish: it panicked, or
    /// the runtime was shut down under it.
    pub(crate) fn task_failed(what: &'static str, e: &tokio::task::JoinError) -> Self {
        if e.is_panic() {
            Error::Panicked { what }
        } else {
            Error::ShutDown
        }
    }

    /// Whether a maintenance job stopped because it was cancelled (see
    /// `lifecycle::background::Cancel`) rather than because it failed.
    pub(crate) fn is_cancellation(&self) -> bool {
        matches!(self, Error::ShutDown | Error::GaveWay)
    }

    /// The refusal of a request after the log stopped because of `cause`.
    /// A cause that is itself a refusal is not wrapped again.
    pub(crate) fn refused(cause: &Arc<Error>) -> Self {
        let cause = match cause.as_ref() {
            Error::WalFailed { cause } => cause,
            _ => cause,
        };
        Error::WalFailed {
            cause: Arc::clone(cause),
        }
    }

    /// The failure behind this error: the cause of [`Error::WalFailed`],
    /// otherwise the error itself. Match on it to treat a refusal after a
    /// full disk like the full disk.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::WalFailed { cause } => cause.root_cause(),
            other => other,
        }
    }

    /// The operating system's error behind this one, if an I/O operation
    /// failed (directly, or as the cause of [`Error::WalFailed`]): its
    /// `kind()` and `raw_os_error()` are those the call returned.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self.root_cause() {
            Error::DiskFull { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether the disk or the quota is full, directly or as the cause of
    /// [`Error::WalFailed`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self.root_cause(), Error::DiskFull { .. })
    }
}

/// Whether `e` says the disk or the quota is full.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::DiskFull { op, path, source } => {
                write!(f, "{op} {}: the disk is full: {source}", path.display())
            }
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Corruption(e) => e.fmt(f),
            Error::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
            Error::WalFailed { cause } => write!(
                f,
                "the write-ahead log stopped accepting writes after a failure; reopen the store: {cause}"
            ),
            Error::ActorDied => f.write_str(
                "the WAL actor stopped before acknowledging this request; it was restarted, retry the request",
            ),
            Error::RestartLimit {
                actor,
                restarts,
                period_secs,
            } => write!(
                f,
                "the store's actors died {restarts} times within {period_secs} s (the last: the {actor} actor), \
                 more than supervision.max_restarts allows; the supervisor gave up: reopen the store"
            ),
            Error::Panicked { what } => write!(f, "{what} panicked"),
            Error::Untrusted(reason) => f.write_str(reason),
            Error::InProgress(what) => write!(f, "a {what} is already in progress"),
            Error::Truncated { after } => write!(
                f,
                "the log was truncated after {after} while this read ran; read again from {}",
                after + 1
            ),
            Error::WrongKind { dir, found, wanted } => write!(
                f,
                "{} holds a {found} directory and cannot be opened as a {wanted} \
                 (a key-value Store and a Log each open only their own kind)",
                dir.display()
            ),
            Error::Purged { upto } => write!(
                f,
                "records up to {upto} were retired from the log (by a snapshot or compaction, \
                 or a log's purge_before); resume from {} or load the snapshot",
                upto + 1
            ),
            Error::Archive { op, object, reason } => {
                write!(f, "archive: {op} {object}: {reason}")
            }
            Error::ShutDown => f.write_str("the store is shut down"),
            Error::GaveWay => f.write_str(
                "the compaction gave way to a snapshot a client waits for, and runs again after it",
            ),
            Error::NoActixSystem => {
                f.write_str("Store::open must be called inside a running actix System")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The io::Error itself, not its Arc, so `downcast_ref::<io::Error>` finds it.
            Error::DiskFull { source, .. } | Error::Io { source, .. } => Some(source.as_ref()),
            Error::WalFailed { cause } => Some(cause.as_ref()),
            Error::Config(e) => e.source(),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<Corruption> for Error {
    fn from(e: Corruption) -> Self {
        Error::Corruption(e)
    }
}

/// Damage found in a data file: the file, the byte offset and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt data in {} at byte offset {offset}: {reason}", file.display())]
pub struct Corruption {
    /// The damaged file.
    pub file: PathBuf,
    /// Where in it the damage starts.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

/// A configuration value that was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sources could not be read or did not deserialize (unknown key, wrong type).
    #[error("configuration: {0}")]
    Load(String),

    /// A value of the right type but outside what is accepted.
    #[error("configuration key `{key}` = {value}: accepted {accepted}")]
    OutOfRange {
        /// The key, as written in the configuration file (`wal.sync_mode`).
        key: &'static str,
        /// The value given.
        value: String,
        /// What the key accepts.
        accepted: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_by_kind_or_code_and_nothing_else_is() {
        for full in [
            io::Error::from_raw_os_error(libc::ENOSPC),
            io::Error::from_raw_os_error(libc::EDQUOT),
            io::Error::from(io::ErrorKind::StorageFull),
            io::Error::from(io::ErrorKind::QuotaExceeded),
        ] {
            let e = Error::io("write segment", "/d/1.wal", full);
            assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        }
        for other in [
            io::Error::from_raw_os_error(libc::EIO),
            io::Error::from(io::ErrorKind::PermissionDenied),
            io::Error::other("no space left, says the text only"),
        ] {
            let e = Error::io("write segment", "/d/1.wal", other);
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
        }
    }

    #[test]
    fn a_refusal_shares_its_cause_and_never_nests() {
        let cause = Arc::new(Error::io(
            "sync segment",
            "/d/1.wal",
            io::Error::from_raw_os_error(libc::ENOSPC),
        ));
        let refused = Error::refused(&cause);
        let again = Error::refused(&Arc::new(refused.clone()));
        let Error::WalFailed { cause: inner } = &again else {
            panic!("{again:?}");
        };
        assert!(Arc::ptr_eq(inner, &cause), "the same failure, not a copy");
        assert!(again.is_disk_full());
        assert_eq!(
            again.io_error().and_then(io::Error::raw_os_error),
            Some(libc::ENOSPC)
        );
        let text = again.to_string();
        assert!(
            text.contains("sync segment /d/1.wal") && text.contains("No space left on device"),
            "{text}"
        );
    }
}
