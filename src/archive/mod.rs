//! The continuous archive: a copy of the store's files in S3-compatible
//! object storage, kept up to date by `ArchiverActor`, and the restore that
//! rebuilds a data directory from it.
//!
//! What is archived is what recovery reads: each segment's records, as
//! immutable chunks of its bytes (the synced part of the active segment at
//! most `archive.max_lag_ms` after its sync, the rest as it is sealed),
//! every snapshot, and each manifest generation. Object names carry what a
//! restore needs to choose and check them (`FORMAT.md`, "Archive"), so a
//! listing alone plans a restore, and every byte is checked against the CRC its
//! name carries.
//!
//! `follow` keeps a read-only copy current from the archive.
//!
//! While an archive is configured nothing is deleted before the archive
//! holds it: retired files wait in [`PENDING_DIR`] until the archiver has
//! copied them.

#[cfg(feature = "archive")]
pub(crate) mod names;
pub(crate) mod pending;
pub(crate) mod url;

#[cfg(feature = "archive")]
pub(crate) mod bucket;
#[cfg(feature = "archive")]
pub(crate) mod chunks;
#[cfg(feature = "archive")]
mod follow;
#[cfg(feature = "archive")]
mod restore;
#[cfg(feature = "archive")]
pub(crate) mod uploader;

#[cfg(feature = "archive")]
pub use follow::{follow, FollowStatus};
#[cfg(feature = "archive")]
pub use restore::{restore, RestoreReport, RestoreTarget};

pub use pending::PENDING_DIR;
