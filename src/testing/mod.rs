//! Test support, compiled only with the `testing` feature: the simulated
//! disk, the torture model, the fuzz entry points, the crash points and the
//! file-system seam they plug into, plus the on-disk format for tests that
//! craft damaged files. Not part of the library's API for applications.

pub mod fuzzing;
pub mod recording;
pub mod sim_fs;
pub mod torture;

pub use crate::crash::{CRASH_POINTS, LOG_CRASH_POINTS};
pub use crate::rawlog::open_log_with_fs;
pub use crate::store::open_with_fs;
pub use recording::{open_recording, open_recording_with_fs, Recorded};

/// The file-system seam every file operation of the store goes through.
pub mod fs {
    pub use crate::fs::{DirLock, FileSystem, RealFs, WritableFile};
}

/// The on-disk format (`FORMAT.md`), for tests that write or damage files.
pub mod format {
    pub use crate::format::{all_zero, codec, manifest, record, segment, snapshot};
}
