//! The manifest as the store keeps it: the one place that creates, lists and
//! retires segments and snapshots.
//!
//! Order makes it crash-safe: a segment is created and made durable before
//! the manifest lists it, and unlisted before its file is removed, so a crash
//! at any step leaves at worst an unlisted file, which the next open deletes
//! and never replays. The manifest itself is replaced atomically (temporary
//! file, fsync, rename, directory fsync).
//!
//! Changes have one owner. At open, before any actor runs, the opening
//! thread makes them; from then on only `RotatorActor` does, on its manifest
//! thread, one at a time in the order they were asked for (see
//! `crate::actors::rotator`). The mutex inside publishes each new manifest
//! to its readers (log readers, snapshot builds, `INFO`); it orders no
//! change against another.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::crash::crash_point;
use crate::error::{Corruption, Error, Result};
use crate::format::manifest::{
    DirKind, Manifest, TruncationMark, MANIFEST_FILE, MANIFEST_TEMP_FILE,
};
use crate::format::segment::{
    parse_segment_file_name, segment_path, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::format::snapshot::{is_snapshot_file_name, SnapshotHeader};
use crate::fs::FileSystem;
use crate::lifecycle::background::Cancel;
use crate::lifecycle::pacing::Pacer;
use crate::lifecycle::snapshot::snapshot_path;
use crate::log::segment::{prepare_file, Segment};

/// How much of a retired file is given back to the file system at a time.
const RETIRE_STEP_BYTES: u64 = 256 << 10;

/// The live manifest of one data directory.
pub(crate) struct ManifestStore {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    current: Mutex<Live>,
    /// Segments prepared so far, for unique temporary names.
    prepared: std::sync::atomic::AtomicU64,
    /// The generation of the manifest in `current`, readable without the
    /// lock: a log reader checks, after each read, that the manifest has
    /// not changed since it last found its segment listed (the lock is
    /// held across manifest writes and their fsyncs).
    generation: std::sync::atomic::AtomicU64,
    /// The number of the last truncation made since open, readable
    /// without the lock: a log reader checks it before each record it
    /// hands out.
    epoch: std::sync::atomic::AtomicU64,
}

/// A segment file prepared under a temporary name, not yet listed.
pub(crate) struct PreparedSegment {
    temp: PathBuf,
    file: Arc<dyn crate::fs::WritableFile>,
}

/// Ends the temporary name a segment is prepared under.
const PREPARED_SEGMENT_SUFFIX: &str = ".wal.prep";

struct Live {
    manifest: Manifest,
    /// Set by `close`: the directory is about to be released.
    closed: bool,
    /// Truncations made since open, numbered from 1 (`epoch` is the last
    /// number given), each with its last record kept: a reader tells from
    /// these whether a truncation came after it began (see `log_ends`).
    truncations_since_open: Vec<(u64, crate::entry::Seq)>,
    epoch: u64,
}

impl ManifestStore {
    /// Reads `MANIFEST` in `dir`. A directory without one becomes a new
    /// store only if it holds nothing but what a first open writes before
    /// its manifest (`LOCK`, `MANIFEST.tmp`), as `initdb` insists on an
    /// empty directory: anything else may be a store that lost its manifest
    /// or somebody else's files, and is refused, never deleted. Segments a
    /// crash left half-prepared are removed here, once per open: later, the
    /// rotator may be preparing one. A new directory is made of `kind`; an
    /// existing one of another kind is refused before anything in it is
    /// touched.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, kind: DirKind) -> Result<ManifestStore> {
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
                let foreign = foreign_files(fs.as_ref(), dir)?;
                if !foreign.is_empty() {
                    return Err(Error::Corruption(Corruption {
                        file: path,
                        offset: 0,
                        reason: format!(
                            "no MANIFEST, but the directory is not empty ({}); a new store is \
                             created only in an empty directory, and a store whose MANIFEST \
                             is lost is not guessed at",
                            foreign.join(", ")
                        ),
                    }));
                }
                let fresh = Manifest {
                    next_segment_id: 1,
                    kind,
                    ..Manifest::default()
                };
                write(fs.as_ref(), dir, &fresh)?;
                fresh
            }
            Err(e) => return Err(Error::io("read manifest", path, e)),
        };
        if manifest.kind != kind {
            return Err(Error::WrongKind {
                dir: dir.to_path_buf(),
                found: manifest.kind.name(),
                wanted: kind.name(),
            });
        }
        remove_half_prepared(fs.as_ref(), dir)?;
        let generation = std::sync::atomic::AtomicU64::new(manifest.generation);
        Ok(ManifestStore {
            fs,
            dir: dir.to_path_buf(),
            current: Mutex::new(Live {
                manifest,
                closed: false,
                truncations_since_open: Vec::new(),
                epoch: 0,
            }),
            prepared: std::sync::atomic::AtomicU64::new(0),
            generation,
            epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        // The in-memory manifest is replaced only after its file was written.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `next`, just written, the live manifest.
    fn install(&self, live: &mut Live, next: Manifest) {
        let generation = next.generation;
        live.manifest = next;
        // SeqCst: a reader that reads a file and then finds this generation
        // unchanged read it before anything this change retired was removed.
        self.generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// The generation of the live manifest: it changes with every change
    /// to the lists.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether segment `id` is listed, and the generation of the manifest
    /// that says so.
    pub fn is_listed(&self, id: u64) -> (bool, u64) {
        let live = self.lock();
        (
            live.manifest.segments.binary_search(&id).is_ok(),
            live.manifest.generation,
        )
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

    /// The live manifest, whole.
    #[cfg(feature = "archive")]
    pub fn current(&self) -> Manifest {
        self.lock().manifest.clone()
    }

    /// The live segment ids, ascending.
    pub fn segments(&self) -> Vec<u64> {
        self.lock().manifest.segments.clone()
    }

    /// Every segment up to this id is synced whole (see [`Manifest`]).
    pub fn sealed_through(&self) -> u64 {
        self.lock().manifest.sealed_through
    }

    /// What the directory holds.
    pub fn kind(&self) -> DirKind {
        self.lock().manifest.kind
    }

    /// A log's records up to this sequence number were purged (0: none).
    pub fn purged_through(&self) -> crate::entry::Seq {
        self.lock().manifest.purged_through
    }

    /// The live snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotHeader> {
        self.lock().manifest.snapshots.clone()
    }

    /// Lists a written snapshot and, in the same manifest write, unlists the
    /// segments and snapshots it makes obsolete. Returns their files, which
    /// nothing reads any more: the caller removes them, at its own pace and
    /// without holding up the rotator (see [`remove_retired`]).
    pub fn add_snapshot(
        &self,
        header: SnapshotHeader,
        segments: &[u64],
        snapshots: &[SnapshotHeader],
    ) -> Result<Vec<PathBuf>> {
        let mut live = self.lock_open()?;
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.snapshots.retain(|s| !snapshots.contains(s));
        next.snapshots.push(header);
        next.segments.retain(|id| !segments.contains(id));
        write(self.fs.as_ref(), &self.dir, &next)?;
        self.install(&mut live, next);
        crash_point("snapshot.after_manifest");
        Ok(segments
            .iter()
            .map(|id| segment_path(&self.dir, *id))
            .chain(snapshots.iter().map(|s| snapshot_path(&self.dir, s)))
            .collect())
    }

    /// A log's metadata slot.
    pub fn metadata(&self) -> Option<Vec<u8>> {
        self.lock().manifest.metadata.clone()
    }

    /// Replaces a log's metadata slot: durable when this returns, and
    /// atomic, since the manifest is replaced whole (temporary file, fsync,
    /// rename, directory fsync).
    pub fn set_metadata(&self, metadata: Vec<u8>) -> Result<()> {
        let mut live = self.lock_open()?;
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.metadata = Some(metadata);
        write(self.fs.as_ref(), &self.dir, &next)?;
        self.install(&mut live, next);
        Ok(())
    }

    /// Purges a log's records before `seq`: in one manifest write, records
    /// that everything up to `seq - 1` is purged and unlists every segment
    /// all of whose records are below `seq`, which a later segment's header
    /// proves (it starts at or before `seq`). The newest started segment is
    /// never unlisted: the next one after it is not started, so nothing
    /// proves where it ends. Returns the unlisted files, for the caller to
    /// remove at its pace (see [`remove_retired`]); a crash before they are
    /// removed leaves unlisted files, which the next open deletes.
    pub fn purge_before(&self, seq: crate::entry::Seq) -> Result<Vec<PathBuf>> {
        let mut live = self.lock_open()?;
        let purged_through = seq.saturating_sub(1);
        if purged_through <= live.manifest.purged_through {
            return Ok(Vec::new());
        }
        let segments = &live.manifest.segments;
        let mut unlisted = Vec::new();
        for pair in segments.windows(2) {
            let next = segment_path(&self.dir, pair[1]);
            let starts = self
                .fs
                .read_prefix(&next, SEGMENT_HEADER_BYTES)
                .ok()
                .and_then(|bytes| SegmentHeader::decode(&bytes).ok())
                .map(|header| header.first_seq);
            match starts {
                Some(first) if first <= seq => unlisted.push(pair[0]),
                _ => break,
            }
        }
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.purged_through = purged_through;
        next.segments.retain(|id| !unlisted.contains(id));
        prune_marks(&mut next);
        write(self.fs.as_ref(), &self.dir, &next)?;
        self.install(&mut live, next);
        crash_point("purge.after_manifest");
        Ok(unlisted
            .iter()
            .map(|id| segment_path(&self.dir, *id))
            .collect())
    }

    /// The number of the last truncation made since open (0: none): a
    /// reader notes it when it begins.
    pub fn truncation_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What moved a log's ends since truncation `epoch`: the purge point
    /// now, the lowest last-kept record of the truncations after `epoch`
    /// (`None`: none since), and the latest truncation's number.
    pub fn log_ends(&self, epoch: u64) -> (crate::entry::Seq, Option<crate::entry::Seq>, u64) {
        let live = self.lock();
        let since = live
            .truncations_since_open
            .iter()
            .filter(|(e, _)| *e > epoch)
            .map(|(_, after)| *after)
            .min();
        (live.manifest.purged_through, since, live.epoch)
    }

    /// A log's truncation marks, oldest first.
    pub fn truncations(&self) -> Vec<TruncationMark> {
        self.lock().manifest.truncations.clone()
    }

    /// Drops a log's records after `after_seq` from every segment up to
    /// `through` (sealed, and the newest one started): one manifest write
    /// records the mark and unlists the segments that hold only dropped
    /// records (those starting after `after_seq`). From then on, recovery
    /// and readers skip the dropped records, and the next segment must
    /// start at `after_seq + 1`. Returns the unlisted files, for the caller
    /// to remove.
    ///
    /// `durable` runs once the mark is durable and before any reader can
    /// learn of it (under the manifest's lock, before the new listing and
    /// the truncation's number are published): there the log moves its
    /// acknowledged end back, so that no reader that sees the truncation
    /// reads with an end from before it, past what the log now holds.
    pub fn truncate_after(
        &self,
        after_seq: crate::entry::Seq,
        through: u64,
        durable: impl FnOnce(),
    ) -> Result<Vec<PathBuf>> {
        let mut live = self.lock_open()?;
        if after_seq < live.manifest.purged_through {
            return Err(Error::InvalidRequest(format!(
                "cannot truncate after {after_seq}: the log was purged through {}",
                live.manifest.purged_through
            )));
        }
        let mut unlisted = Vec::new();
        for &id in live.manifest.segments.iter().filter(|id| **id <= through) {
            let path = segment_path(&self.dir, id);
            let bytes = self
                .fs
                .read_prefix(&path, SEGMENT_HEADER_BYTES)
                .map_err(|e| Error::io("read segment header", &path, e))?;
            let header = SegmentHeader::decode(&bytes).map_err(|e| {
                Error::Corruption(Corruption {
                    file: path.clone(),
                    offset: 0,
                    reason: format!("a sealed segment's header does not read: {e:?}"),
                })
            })?;
            if header.first_seq > after_seq {
                unlisted.push(id);
            }
        }
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.truncations.push(TruncationMark {
            after_seq,
            through_segment: through,
        });
        next.segments.retain(|id| !unlisted.contains(id));
        prune_marks(&mut next);
        write(self.fs.as_ref(), &self.dir, &next)?;
        durable();
        self.install(&mut live, next);
        live.epoch += 1;
        let epoch = live.epoch;
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        live.truncations_since_open.push((epoch, after_seq));
        crash_point("truncate.after_manifest");
        Ok(unlisted
            .iter()
            .map(|id| segment_path(&self.dir, *id))
            .collect())
    }

    /// Removes segment files the manifest does not list, and a leftover
    /// temporary manifest: debris of a crash between two steps. With
    /// `hold` (an archive is configured), unlisted segments and snapshots
    /// are moved into the archive's pending directory instead: a crash
    /// after a manifest write retired them must not delete what the
    /// archive may not hold yet.
    pub fn remove_unlisted(&self, hold: bool) -> Result<()> {
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
            // Only names the store itself gives files, exactly.
            let unlisted = match parse_segment_file_name(name) {
                Some(id) => manifest.segments.binary_search(&id).is_err(),
                None => {
                    name == MANIFEST_TEMP_FILE
                        || name.strip_suffix(".tmp").is_some_and(is_snapshot_file_name)
                        || (is_snapshot_file_name(name)
                            && !listed_snapshots.iter().any(|l| l == name))
                }
            };
            let complete = parse_segment_file_name(name).is_some() || is_snapshot_file_name(name);
            if unlisted && hold && complete {
                tracing::warn!(file = %path.display(), "holding a file the manifest does not list for the archive");
                crate::archive::pending::hold(self.fs.as_ref(), &self.dir, &[path])?;
            } else if unlisted {
                tracing::warn!(file = %path.display(), "removing a file the manifest does not list");
                remove_if_present(self.fs.as_ref(), &path)?;
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

    /// Creates the next segment (preallocated to `size`, filled at
    /// `fill_bytes_per_sec` until `hurry` is set) and lists it: at open,
    /// before any actor runs (see [`ManifestStore::prepare_segment`] and
    /// [`ManifestStore::list_segment`] for the rotator's two steps).
    pub fn create_segment(
        &self,
        size: u64,
        fill_bytes_per_sec: u64,
        hurry: &AtomicBool,
    ) -> Result<Segment> {
        let prepared = self.prepare_segment(size, fill_bytes_per_sec, hurry)?;
        self.list_segment(prepared)
    }

    /// Prepares a segment file (preallocated to `size`, filled at
    /// `fill_bytes_per_sec` until `hurry` is set) under a temporary name
    /// no other preparation uses. It changes nothing the manifest lists,
    /// so a paced fill holds up no change of the manifest.
    pub fn prepare_segment(
        &self,
        size: u64,
        fill_bytes_per_sec: u64,
        hurry: &AtomicBool,
    ) -> Result<PreparedSegment> {
        let temp = self.dir.join(format!(
            "{}{PREPARED_SEGMENT_SUFFIX}",
            self.prepared
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match prepare_file(self.fs.as_ref(), &temp, size, fill_bytes_per_sec, hurry) {
            Ok(file) => Ok(PreparedSegment { temp, file }),
            Err(e) => {
                let _ = self.fs.remove(&temp);
                Err(e)
            }
        }
    }

    /// Gives a prepared segment the next id, renames it to that id and
    /// lists it.
    pub fn list_segment(&self, prepared: PreparedSegment) -> Result<Segment> {
        let PreparedSegment { temp, file } = prepared;
        let installed = self.lock_open().and_then(|live| {
            let id = live.manifest.next_segment_id;
            let segment = Segment::install(self.fs.as_ref(), &self.dir, id, &temp, file)?;
            Ok((live, id, segment))
        });
        let (mut live, id, segment) = match installed {
            Ok(installed) => installed,
            Err(e) => {
                let _ = self.fs.remove(&temp);
                return Err(e);
            }
        };
        crash_point("rotate.after_create");
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.next_segment_id = id + 1;
        next.segments.push(id);
        write(self.fs.as_ref(), &self.dir, &next)?;
        self.install(&mut live, next);
        crash_point("rotate.after_list");
        Ok(segment)
    }

    /// What an open learnt: unlists `ids` and records that every segment
    /// up to `sealed_through` is synced whole, in one manifest write, then
    /// removes the unlisted files.
    pub fn finish_recovery(&self, ids: &[u64], sealed_through: u64) -> Result<()> {
        let mut live = self.lock_open()?;
        if ids.is_empty() && sealed_through <= live.manifest.sealed_through {
            return Ok(());
        }
        let mut next = live.manifest.clone();
        next.generation += 1;
        next.segments.retain(|id| !ids.contains(id));
        next.sealed_through = next.sealed_through.max(sealed_through);
        write(self.fs.as_ref(), &self.dir, &next)?;
        self.install(&mut live, next);
        for id in ids {
            remove_if_present(self.fs.as_ref(), &segment_path(&self.dir, *id))?;
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }
}

/// Forgets truncation marks that no listed segment falls under any more,
/// so that they do not pile up in a log that is truncated and purged for
/// ever.
fn prune_marks(manifest: &mut Manifest) {
    let first = manifest.segments.first().copied();
    manifest
        .truncations
        .retain(|mark| first.is_some_and(|first| mark.through_segment >= first));
}

/// The newest mark's limit on segment `id`: records above it were dropped
/// (`None`: no mark covers the segment).
pub(crate) fn truncation_cap(marks: &[TruncationMark], id: u64) -> Option<crate::entry::Seq> {
    marks
        .iter()
        .filter(|mark| mark.through_segment >= id)
        .map(|mark| mark.after_seq)
        .min()
}

/// Removes the temporary files of segments that were being prepared when
/// the process stopped.
fn remove_half_prepared(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let listed = match fs.list_dir(dir) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list data directory", dir, e)),
    };
    for path in listed {
        let half_prepared = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(PREPARED_SEGMENT_SUFFIX))
            .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()));
        if half_prepared {
            tracing::warn!(file = %path.display(), "removing a segment left half-prepared");
            remove_if_present(fs, &path)?;
        }
    }
    Ok(())
}

/// What a first open writes before its manifest exists.
const PRE_MANIFEST_FILES: [&str; 2] = [crate::fs::LOCK_FILE, MANIFEST_TEMP_FILE];

/// The names in `dir` other than [`PRE_MANIFEST_FILES`], sorted.
fn foreign_files(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?
        .iter()
        .filter_map(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !PRE_MANIFEST_FILES.contains(&name.as_str()))
        .collect();
    names.sort();
    Ok(names)
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

/// Removes files a manifest write unlisted, giving their space back at
/// `bytes_per_sec` (0: at once): each is cut down [`RETIRE_STEP_BYTES`] at
/// a time before it is unlinked, because freeing a large file at once makes
/// the disk discard all of it in one go, and the WAL's next sync waits
/// behind that (a compaction unlinking 140 MB of segments held appends at a
/// p99 of 13 ms for the 35 ms it took). The directory is not synced: a
/// removal a crash undoes leaves an unlisted file, which the next open
/// deletes; so does a removal `cancel` stops ([`Error::ShutDown`]).
pub(crate) fn remove_retired(
    fs: &dyn FileSystem,
    files: &[PathBuf],
    bytes_per_sec: u64,
    cancel: &Cancel,
) -> Result<()> {
    let mut pacer = Pacer::new(bytes_per_sec);
    for path in files {
        cancel.check()?;
        if bytes_per_sec > 0 {
            cut_down(fs, path, &mut pacer, cancel)?;
        }
        remove_if_present(fs, path)?;
    }
    Ok(())
}

/// Truncates `path` to nothing a step at a time, paced; a file already gone is fine.
fn cut_down(fs: &dyn FileSystem, path: &Path, pacer: &mut Pacer, cancel: &Cancel) -> Result<()> {
    let error = |e: std::io::Error| Error::io("shrink obsolete file", path, e);
    let (file, mut len) = match fs
        .open_writable(path)
        .and_then(|f| Ok((f, fs.file_len(path)?)))
    {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(error(e)),
    };
    while len > 0 {
        cancel.check()?;
        let next = len.saturating_sub(RETIRE_STEP_BYTES);
        file.set_len(next).map_err(error)?;
        pacer.pace(len - next);
        len = next;
    }
    Ok(())
}

/// Replaces the manifest atomically: temporary file, fsync, rename, directory fsync.
pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, manifest: &Manifest) -> Result<()> {
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
