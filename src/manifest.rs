//! The manifest as the store keeps it: the one place that creates, lists and
//! retires segments and snapshots.
//!
//! Order makes it crash-safe: a segment is created and made durable before
//! the manifest lists it, and unlisted before its file is removed, so a crash
//! at any step leaves at worst an unlisted file, which the next open deletes
//! and never replays. The manifest itself is replaced atomically (temporary
//! file, fsync, rename, directory fsync). One mutex orders every change, so
//! the rotator and a restarting WAL never hand out the same segment id.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::crash::crash_point;
use crate::error::{Corruption, Error, Result};
use crate::format::manifest::{Manifest, MANIFEST_FILE, MANIFEST_TEMP_FILE};
use crate::format::segment::{parse_segment_file_name, segment_path};
use crate::format::snapshot::SnapshotHeader;
use crate::fs::FileSystem;
use crate::segment::Segment;
use crate::snapshot::snapshot_path;

/// The live manifest of one data directory.
pub(crate) struct ManifestStore {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    current: Mutex<Live>,
}

struct Live {
    manifest: Manifest,
    /// Set by `close`: the directory is about to be released.
    closed: bool,
}

impl ManifestStore {
    /// Reads `MANIFEST` in `dir`; a directory without one must hold no
    /// segments (a new store), and gets an empty manifest written.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<ManifestStore> {
        let path = dir.join(MANIFEST_FILE);
        let manifest = match fs.read(&path) {
            Ok(bytes) => Manifest::decode(&bytes).map_err(|e| {
                Error::Corruption(Corruption {
                    file: path.clone(),
                    offset: e.offset,
                    reason: e.reason,
                })
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(segment) = segment_files(fs.as_ref(), dir)?.first() {
                    return Err(Error::Corruption(Corruption {
                        file: path,
                        offset: 0,
                        reason: format!(
                            "MANIFEST is missing but segment {} exists; refusing to guess which segments are live",
                            segment.1.display()
                        ),
                    }));
                }
                let fresh = Manifest {
                    generation: 0,
                    next_segment_id: 1,
                    segments: Vec::new(),
                    snapshots: Vec::new(),
                };
                write(fs.as_ref(), dir, &fresh)?;
                fresh
            }
            Err(e) => return Err(Error::io("read manifest", path, e)),
        };
        Ok(ManifestStore {
            fs,
            dir: dir.to_path_buf(),
            current: Mutex::new(Live {
                manifest,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        // The in-memory manifest is replaced only after its file was written.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks for a change; refused once closed.
    fn lock_open(&self) -> Result<MutexGuard<'_, Live>> {
        let live = self.lock();
        if live.closed {
            return Err(Error::ShutDown);
        }
        Ok(live)
    }

    /// Waits for any change in progress, then refuses all later ones: after
    /// this the directory can be released to another opener.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether `close` was called: the store has shut down.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The live segment ids, ascending.
    pub fn segments(&self) -> Vec<u64> {
        self.lock().manifest.segments.clone()
    }

    /// The live snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotHeader> {
        self.lock().manifest.snapshots.clone()
    }

    /// Lists a written snapshot and, in the same manifest write, unlists the
    /// segments and snapshots it makes obsolete; then removes their files.
    pub fn add_snapshot(
        &self,
        header: SnapshotHeader,
        segments: &[u64],
        snapshots: &[SnapshotHeader],
    ) -> Result<()> {
        let mut live = self.lock_open()?;
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.snapshots.retain(|s| !snapshots.contains(s));
        next.snapshots.push(header);
        next.segments.retain(|id| !segments.contains(id));
        write(self.fs.as_ref(), &self.dir, &next)?;
        live.manifest = next;
        crash_point("snapshot.after_manifest");
        let files = segments
            .iter()
            .map(|id| segment_path(&self.dir, *id))
            .chain(snapshots.iter().map(|s| snapshot_path(&self.dir, s)));
        for path in files {
            remove_if_present(self.fs.as_ref(), &path)?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }

    /// Removes segment files the manifest does not list, and a leftover
    /// temporary manifest: debris of a crash between two steps.
    pub fn remove_unlisted(&self) -> Result<()> {
        let live = self.lock_open()?;
        let manifest = &live.manifest;
        let listed_snapshots: Vec<String> = manifest
            .snapshots
            .iter()
            .map(SnapshotHeader::file_name)
            .collect();
        let mut removed = false;
        for path in self
            .fs
            .list_dir(&self.dir)
            .map_err(|e| Error::io("list data directory", &self.dir, e))?
        {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let unlisted = match parse_segment_file_name(name) {
                Some(id) => manifest.segments.binary_search(&id).is_err(),
                None => {
                    name == MANIFEST_TEMP_FILE
                        || name.ends_with(".snap.tmp")
                        || (name.ends_with(".snap") && !listed_snapshots.iter().any(|l| l == name))
                }
            };
            if unlisted {
                tracing::warn!(file = %path.display(), "removing a file the manifest does not list");
                self.fs
                    .remove(&path)
                    .map_err(|e| Error::io("remove unlisted file", &path, e))?;
                removed = true;
            }
        }
        if removed {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// Creates the next segment (preallocated to `size`) and lists it.
    pub fn create_segment(&self, size: u64) -> Result<Segment> {
        let mut live = self.lock_open()?;
        let id = live.manifest.next_segment_id;
        let segment = Segment::create(self.fs.as_ref(), &self.dir, id, size)?;
        crash_point("rotate.after_create");
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.next_segment_id = id + 1;
        next.segments.push(id);
        write(self.fs.as_ref(), &self.dir, &next)?;
        live.manifest = next;
        crash_point("rotate.after_list");
        Ok(segment)
    }

    /// Unlists `ids`, then removes their files.
    pub fn retire_segments(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut live = self.lock_open()?;
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.segments.retain(|id| !ids.contains(id));
        write(self.fs.as_ref(), &self.dir, &next)?;
        live.manifest = next;
        for id in ids {
            remove_if_present(self.fs.as_ref(), &segment_path(&self.dir, *id))?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }
}

/// The segment files present in `dir`, by id.
fn segment_files(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?
        .into_iter()
        .filter_map(|path| Some((parse_segment_file_name(path.file_name()?.to_str()?)?, path)))
        .collect();
    files.sort();
    Ok(files)
}

/// Removes a file that a manifest write just unlisted; already gone is fine
/// (a crash after the write, before the removal).
fn remove_if_present(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove obsolete file", path, e)),
    }
}

/// Replaces the manifest atomically: temporary file, fsync, rename, directory fsync.
fn write(fs: &dyn FileSystem, dir: &Path, manifest: &Manifest) -> Result<()> {
    let temp = dir.join(MANIFEST_TEMP_FILE);
    let path = dir.join(MANIFEST_FILE);
    match fs.remove(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove temporary manifest", temp, e)),
    }
    let file = fs
        .create(&temp, 0)
        .map_err(|e| Error::io("create manifest", &temp, e))?;
    file.write_at(&manifest.encode(), 0)
        .map_err(|e| Error::io("write manifest", &temp, e))?;
    file.sync_all()
        .map_err(|e| Error::io("sync manifest", &temp, e))?;
    crash_point("manifest.after_temp_sync");
    fs.rename(&temp, &path)
        .map_err(|e| Error::io("rename manifest", &path, e))?;
    crash_point("manifest.after_rename");
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}
