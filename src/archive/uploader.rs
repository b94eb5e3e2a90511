//! One archiving pass: what the archiver does each `archive.max_lag_ms / 2`.
//! It uploads, in the log's order, every segment's records past what the
//! archive holds (a listed segment's up to the durable sequence number, a
//! retired one's to its end), the snapshots the archive lacks, and the
//! manifest if its generation changed; then deletes the retired files the
//! archive now holds. Any failure ends the pass where it is (the next one
//! goes on from there), so the archive never holds a later record without
//! the earlier ones.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::actors::wal::WalShared;
use crate::archive::bucket::{Bucket, Listed};
use crate::archive::chunks::{next_chunk, Held, Next};
use crate::archive::names::{crc, furthest_run, ChunkName, ObjectName};
use crate::archive::pending::pending_dir;
use crate::entry::Seq;
use crate::error::{Error, Result};
use crate::format::segment::{parse_segment_file_name, segment_path};
use crate::format::snapshot::is_snapshot_file_name;
use crate::fs::FileSystem;
use crate::lifecycle::background::Cancel;
use crate::lifecycle::manifest::remove_retired;

/// What the archive holds, as far as this archiver knows: learnt from a
/// listing when it starts, then kept up to date by its own uploads.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    segments: BTreeMap<u64, Held>,
    snapshots: HashSet<String>,
    manifest_generation: Option<u64>,
}

impl Progress {
    /// What `listed` holds. A segment counts from its first byte through
    /// the chunks that follow on without a gap (see [`furthest_run`]);
    /// unknown names are left alone (a restore refuses them).
    pub fn from_listing(listed: &[Listed]) -> Progress {
        let mut progress = Progress::default();
        let mut chunks: Vec<ChunkName> = Vec::new();
        for object in listed {
            match ObjectName::parse(&object.name) {
                Some(ObjectName::Chunk(chunk)) => chunks.push(chunk),
                Some(ObjectName::Snapshot { file_name, .. }) => {
                    progress.snapshots.insert(file_name);
                }
                Some(ObjectName::Manifest { generation, .. }) => {
                    progress.manifest_generation =
                        progress.manifest_generation.max(Some(generation));
                }
                None => {
                    tracing::warn!(object = %object.name, "an object the archive did not name is under its prefix");
                }
            }
        }
        let mut by_segment: BTreeMap<u64, Vec<ChunkName>> = BTreeMap::new();
        for chunk in chunks {
            by_segment.entry(chunk.segment).or_default().push(chunk);
        }
        for (id, chunks) in by_segment {
            // After a gap the archiver uploads again from the gap's start.
            if let Some(last) = furthest_run(&chunks).0.last() {
                progress.segments.insert(
                    id,
                    Held {
                        end: last.end,
                        last_seq: last.last_seq,
                    },
                );
            }
        }
        progress
    }
}

/// The archiver's state between passes.
pub(crate) struct Uploader {
    shared: Arc<WalShared>,
    bucket: Bucket,
    progress: Option<Progress>,
    /// A time at which every record then durable is now archived: the
    /// start of the last pass that uploaded all it set out to.
    caught_up_at: Instant,
    /// Snapshots uploaded since retention last ran: it runs after a pass
    /// that uploaded one (and after the first pass).
    snapshots_since_retention: u64,
}

impl Uploader {
    pub fn new(shared: Arc<WalShared>, bucket: Bucket) -> Uploader {
        Uploader {
            shared,
            bucket,
            progress: None,
            caught_up_at: Instant::now(),
            snapshots_since_retention: 1,
        }
    }

    /// One pass; then the gauges say how far behind the archive is.
    pub async fn pass(&mut self) -> Result<()> {
        let started = Instant::now();
        let shared = Arc::clone(&self.shared);
        let (meters, counters) = (&shared.meters, &shared.counters);
        let durable = counters.durable_seq.load(Relaxed);
        let result = self.upload(durable).await;
        match &result {
            // Everything durable at the start is archived: the lag is
            // counted from then, whatever was synced since.
            Ok(true) => {
                counters.archived_seq.fetch_max(durable, Relaxed);
                self.caught_up_at = started;
            }
            // A file retired under the pass: the next one takes it.
            Ok(false) => {}
            Err(e) => {
                meters.archive_upload_errors.increment(1);
                // The bucket may have changed while it failed (emptied,
                // objects deleted by hand): the next pass lists it again.
                if matches!(e, Error::Archive { .. }) {
                    self.progress = None;
                }
            }
        }
        if counters.archived_seq.load(Relaxed) >= counters.durable_seq.load(Relaxed) {
            self.caught_up_at = Instant::now();
        }
        meters
            .archive_lag_seconds
            .set(self.caught_up_at.elapsed().as_secs_f64());
        let pending = pending_files(&shared)
            .iter()
            .filter_map(|path| shared.fs.file_len(path).ok())
            .sum::<u64>();
        counters.archive_pending_bytes.store(pending, Relaxed);
        meters.archive_pending_bytes.set(pending as f64);
        result.map(|_| ())
    }

    /// Uploads what the archive lacks of the records up to `durable`, the
    /// snapshots and the manifest; whether it got all of it (not when a
    /// file was retired under the pass).
    async fn upload(&mut self, durable: Seq) -> Result<bool> {
        if self.progress.is_none() {
            let listed = self.bucket.list().await?;
            self.progress = Some(Progress::from_listing(&listed));
        }
        let mut complete = true;
        let shared = Arc::clone(&self.shared);
        let manifest = shared.manifest.current();
        let pending = pending_files(&shared);
        let dir = &shared.config.data_dir;

        // Segments in id order, listed ones up to what is durable.
        let mut segments: BTreeMap<u64, (PathBuf, Seq)> = BTreeMap::new();
        for path in &pending {
            if let Some(id) = file_name(path).and_then(parse_segment_file_name) {
                segments.insert(id, (path.clone(), Seq::MAX));
            }
        }
        for &id in &manifest.segments {
            segments.insert(id, (segment_path(dir, id), durable));
        }
        // Chunks go up `archive.concurrency` at a time; a retired file's
        // before it is released.
        let window = shared.config.archive.concurrency.max(1) as usize;
        let mut batch: Vec<(ChunkName, Vec<u8>)> = Vec::new();
        for (id, (path, upto)) in segments {
            let retired = upto == Seq::MAX;
            loop {
                // What the archive will hold once the batch is up.
                let held = batch
                    .iter()
                    .rev()
                    .find(|(chunk, _)| chunk.segment == id)
                    .map(|(chunk, _)| Held {
                        end: chunk.end,
                        last_seq: chunk.last_seq,
                    })
                    .or_else(|| self.progress().segments.get(&id).copied());
                let next = match next_chunk(shared.fs.as_ref(), &path, id, held, upto) {
                    Ok(next) => next,
                    // Retired under the pass: the next pass finds it pending.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        complete = false;
                        break;
                    }
                    Err(e) => return Err(Error::io("read segment for the archive", &path, e)),
                };
                match next {
                    Next::Chunk(chunk, bytes) => {
                        batch.push((chunk, bytes));
                        if batch.len() >= window {
                            self.upload_chunks(&mut batch).await?;
                        }
                    }
                    Next::Nothing { clean, damage } => {
                        if retired {
                            self.upload_chunks(&mut batch).await?;
                            if let Some((offset, reason)) = damage {
                                // Never deleted: damage is not cut away.
                                return Err(Error::Corruption(crate::error::Corruption {
                                    file: path,
                                    offset,
                                    reason: format!(
                                        "{reason}; the file is kept in archive-pending, \
                                         archived up to there"
                                    ),
                                }));
                            }
                            if clean {
                                self.release(&path)?;
                            }
                        }
                        break;
                    }
                }
            }
        }
        self.upload_chunks(&mut batch).await?;

        // Snapshots: listed ones and retired ones not archived yet.
        let mut snapshots: Vec<(PathBuf, bool)> = manifest
            .snapshots
            .iter()
            .map(|s| (crate::lifecycle::snapshot::snapshot_path(dir, s), false))
            .collect();
        snapshots.extend(
            pending
                .iter()
                .filter(|p| file_name(p).is_some_and(is_snapshot_file_name))
                .map(|p| (p.clone(), true)),
        );
        for (path, retired) in snapshots {
            let Some(name) = file_name(&path).map(str::to_string) else {
                continue;
            };
            if !self.progress().snapshots.contains(&name) {
                // Read twice rather than held: a snapshot is as large as
                // the state.
                let (size, crc) = match file_crc(shared.fs.as_ref(), &path) {
                    Ok(found) => found,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        complete = false;
                        continue;
                    }
                    Err(e) => return Err(Error::io("read snapshot for the archive", &path, e)),
                };
                let object = ObjectName::Snapshot {
                    file_name: name.clone(),
                    crc,
                };
                self.bucket
                    .put_file_verified(shared.fs.as_ref(), &path, &object, (size, crc))
                    .await?;
                shared.meters.archive_uploaded_bytes.increment(size);
                self.progress().snapshots.insert(name);
                self.snapshots_since_retention += 1;
            }
            if retired {
                self.release(&path)?;
            }
        }

        // The manifest last: every file it lists is archived before it.
        if self.progress().manifest_generation != Some(manifest.generation) {
            let bytes = manifest.encode();
            let object = ObjectName::Manifest {
                generation: manifest.generation,
                crc: crc(&bytes),
            };
            self.bucket.put_verified(&object, bytes).await?;
            self.progress().manifest_generation = Some(manifest.generation);
        }
        if self.snapshots_since_retention > 0 && shared.config.archive.keep_snapshots > 0 {
            self.apply_retention().await?;
            self.snapshots_since_retention = 0;
        }
        Ok(complete)
    }

    /// Deletes what the archive keeps no longer (`archive.keep_snapshots`):
    /// snapshots older than the oldest full one kept, and whole segments
    /// whose every record it covers (a segment is kept or deleted whole: its
    /// first chunk holds the header the rest needs), and manifests older
    /// than the newest few.
    async fn apply_retention(&mut self) -> Result<()> {
        let keep = self.shared.config.archive.keep_snapshots as usize;
        let listed = self.bucket.list().await?;
        let mut fulls: Vec<Seq> = Vec::new();
        let mut segment_last: BTreeMap<u64, Seq> = BTreeMap::new();
        let mut manifests = Vec::new();
        for object in &listed {
            match ObjectName::parse(&object.name) {
                Some(ObjectName::Snapshot { file_name, .. })
                    if file_name.ends_with(".full.snap") =>
                {
                    fulls.push(snapshot_to_seq(&file_name));
                }
                Some(ObjectName::Chunk(chunk)) => {
                    let last = segment_last.entry(chunk.segment).or_default();
                    *last = (*last).max(chunk.last_seq);
                }
                Some(ObjectName::Manifest { generation, .. }) => manifests.push(generation),
                _ => {}
            }
        }
        fulls.sort_unstable();
        if fulls.len() <= keep {
            return Ok(());
        }
        let cutoff = fulls[fulls.len() - keep];
        manifests.sort_unstable();
        let newest_manifests: HashSet<u64> = manifests
            .iter()
            .rev()
            .take(MANIFESTS_KEPT)
            .copied()
            .collect();
        for object in &listed {
            let old = match ObjectName::parse(&object.name) {
                Some(ObjectName::Snapshot { file_name, .. }) => {
                    snapshot_to_seq(&file_name) < cutoff
                }
                Some(ObjectName::Chunk(chunk)) => segment_last[&chunk.segment] <= cutoff,
                Some(ObjectName::Manifest { generation, .. }) => {
                    !newest_manifests.contains(&generation)
                }
                None => false,
            };
            if old {
                self.bucket.delete(&object.name).await?;
            }
        }
        Ok(())
    }

    /// Uploads `batch` (drained) at once, then counts what arrived in log
    /// order up to the first failure: the archive is never said to hold a
    /// record after one it lacks (an object uploaded after a failed one is
    /// uploaded again by the next pass).
    async fn upload_chunks(&mut self, batch: &mut Vec<(ChunkName, Vec<u8>)>) -> Result<()> {
        let bucket = &self.bucket;
        let uploads = batch.drain(..).map(|(chunk, bytes)| async move {
            let size = bytes.len() as u64;
            bucket
                .put_verified(&ObjectName::Chunk(chunk), bytes)
                .await
                .map(|()| (chunk, size))
        });
        let results = futures_util::future::join_all(uploads).await;
        let shared = Arc::clone(&self.shared);
        for result in results {
            let (chunk, size) = result?;
            shared.meters.archive_uploaded_bytes.increment(size);
            self.progress().segments.insert(
                chunk.segment,
                Held {
                    end: chunk.end,
                    last_seq: chunk.last_seq,
                },
            );
            shared
                .counters
                .archived_seq
                .fetch_max(chunk.last_seq, Relaxed);
        }
        Ok(())
    }

    fn progress(&mut self) -> &mut Progress {
        self.progress.get_or_insert_with(Progress::default)
    }

    /// Deletes a retired file the archive now holds whole.
    fn release(&self, path: &Path) -> Result<()> {
        let pace = self.shared.config.maintenance.delete_bytes_per_sec;
        remove_retired(
            self.shared.fs.as_ref(),
            &[path.to_path_buf()],
            pace,
            &Cancel::default(),
        )
    }
}

/// Manifests the archive keeps under retention: the newest few, which
/// only tell a restore what kind of store it holds.
const MANIFESTS_KEPT: usize = 16;

/// The sequence number a snapshot file name says it covers up to.
fn snapshot_to_seq(file_name: &str) -> Seq {
    let stem = file_name
        .strip_suffix(".full.snap")
        .or_else(|| file_name.strip_suffix(".incr.snap"))
        .unwrap_or(file_name);
    let to = stem.rsplit('-').next().unwrap_or(stem);
    to.parse().unwrap_or(0)
}

/// The size and CRC of file `path`, read a piece at a time.
fn file_crc(fs: &dyn FileSystem, path: &Path) -> std::io::Result<(u64, u32)> {
    let (mut len, mut hasher) = (0u64, crc32fast::Hasher::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match fs.read_at(path, len, &mut buf)? {
            0 => return Ok((len, hasher.finalize())),
            n => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
        }
    }
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// The files waiting in the pending directory, sorted.
fn pending_files(shared: &WalShared) -> Vec<PathBuf> {
    let mut files = shared
        .fs
        .list_dir(&pending_dir(&shared.config.data_dir))
        .unwrap_or_default();
    files.sort();
    files
}
