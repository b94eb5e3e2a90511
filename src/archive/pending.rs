//! Retired files while an archive is configured: moved aside into
//! [`PENDING_DIR`] instead of deleted, and deleted by the archiver once the
//! archive holds them. A rename frees nothing and costs no discard, so the
//! manifest change that retired them is as quick as without an archive.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::FileSystem;

/// The subdirectory of the data directory retired files wait in.
pub const PENDING_DIR: &str = "archive-pending";

/// Where retired files of the store in `dir` wait for the archive.
pub(crate) fn pending_dir(dir: &Path) -> PathBuf {
    dir.join(PENDING_DIR)
}

/// Moves `files`, which a manifest write unlisted, into the pending
/// directory of `dir`; a file already gone is fine. A crash before the
/// directories are synced leaves a file unlisted in `dir`, which the next
/// open holds again.
pub(crate) fn hold(fs: &dyn FileSystem, dir: &Path, files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let pending = pending_dir(dir);
    fs.create_dir_all(&pending)
        .map_err(|e| Error::io("create archive-pending directory", &pending, e))?;
    for file in files {
        let Some(name) = file.file_name() else {
            continue;
        };
        match fs.rename(file, &pending.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("move retired file to archive-pending", file, e)),
        }
    }
    fs.sync_dir(&pending)
        .map_err(|e| Error::io("sync directory", &pending, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}
