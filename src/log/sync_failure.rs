//! A failed `fsync` poisons the page cache until the machine restarts.
//!
//! After a failed sync, Linux marks the pages clean: the cache goes on showing
//! data the disk may not hold, and the next sync reports success without
//! writing it (PostgreSQL's fsyncgate). An open whose sync failed leaves a
//! marker naming the boot; every later open in the same boot refuses the
//! directory instead of trusting, and building on, what the cache shows. A
//! new boot starts from what the disk holds, so its open removes the marker.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fs::FileSystem;

/// The marker's file name in the data directory.
pub const SYNC_FAILED_FILE: &str = "SYNC_FAILED";

/// Leaves the marker for `file`'s failed sync (best effort: a failing disk
/// may refuse it too, which is logged). It is not synced: it only has to
/// outlive this boot's page cache, which it is part of.
pub(crate) fn mark(fs: &dyn FileSystem, dir: &Path, file: &Path, error: &std::io::Error) {
    let boot = fs.boot_id().unwrap_or_default();
    let text = format!("{boot}\n{}: {error}\n", file.display());
    let path = dir.join(SYNC_FAILED_FILE);
    let written = fs
        .create(&path, 0)
        .and_then(|f| f.write_at(text.as_bytes(), 0));
    if let Err(e) = written {
        tracing::error!(
            file = %path.display(),
            %e,
            "cannot leave the failed-sync marker; do not reopen this directory before a reboot"
        );
    }
}

/// A marker found in a data directory.
pub(crate) struct Marker {
    /// The marker file.
    pub path: std::path::PathBuf,
    /// It names the current boot: the directory cannot be trusted.
    pub this_boot: bool,
    /// The file and error of the failed sync, as recorded.
    pub what: String,
}

/// The directory's marker, if it has one; reads only.
pub(crate) fn find(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(SYNC_FAILED_FILE);
    let text = match fs.read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read failed-sync marker", &path, e)),
    };
    let (boot, what) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    let current = fs
        .boot_id()
        .map_err(|e| Error::io("read the boot id", &path, e))?;
    Ok(Some(Marker {
        this_boot: !boot.is_empty() && boot == current,
        what: what.trim().to_string(),
        path,
    }))
}

impl Marker {
    /// Why the directory is refused, naming the marker and the failed sync.
    pub fn refusal(&self) -> String {
        format!(
            "{}: a sync failed in this boot ({}); the page cache may show data the disk \
             does not hold, so the directory cannot be trusted until the machine restarts",
            self.path.display(),
            self.what
        )
    }
}

/// Refuses a directory whose marker names this boot; removes a marker from
/// an earlier boot.
pub(crate) fn check(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let Some(marker) = find(fs, dir)? else {
        return Ok(());
    };
    if marker.this_boot {
        return Err(Error::Untrusted(marker.refusal()));
    }
    tracing::warn!(file = %marker.path.display(), failed = %marker.what, "a sync failed in an earlier boot; recovering from what the disk holds");
    fs.remove(&marker.path)
        .map_err(|e| Error::io("remove failed-sync marker", &marker.path, e))
}
