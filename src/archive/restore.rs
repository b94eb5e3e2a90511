//! `restore`: rebuilds a data directory from the archive, as of its latest
//! record or of an exact sequence number. One listing plans it (the names
//! say what each object holds); every object is checked against the CRC its
//! name carries; a gap anywhere in what the target needs is an error naming
//! the missing range. The result is an ordinary data directory: its
//! manifest lists the snapshot chain and the segments restored, each synced
//! whole, and `verify` and an open read it like any other.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::archive::bucket::Bucket;
use crate::archive::names::{furthest_run, ChunkName, ObjectName};
use crate::config::ArchiveConfig;
use crate::entry::Seq;
use crate::error::{Error, Result};
use crate::format::manifest::{DirKind, Manifest};
use crate::format::record::MAX_PAYLOAD_BYTES;
use crate::format::segment::{segment_path, SEGMENT_HEADER_BYTES};
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::{FileSystem, RealFs};
use crate::lifecycle::snapshot::read_snapshot_file;
use crate::log::reader::FrameReader;
use crate::log::scan::walk_frames;

/// The largest manifest object a restore downloads: far beyond any real
/// one (a manifest lists a store's segments and snapshots, a few dozen
/// bytes each), so that an object put there by someone else cannot make a
/// restore hold gigabytes.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What a restore rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The last sequence number the restored directory holds.
    pub last_seq: Seq,
    /// The snapshots it starts from (the newest full one at or before the
    /// target, and the incrementals after it).
    pub snapshots: Vec<SnapshotHeader>,
    /// Segments restored.
    pub segments: usize,
    /// Objects downloaded, and their bytes.
    pub objects: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// How far a restore goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The latest record the archive holds.
    Latest,
    /// Exactly this sequence number.
    Seq(Seq),
    /// The latest record the archive held at this time: objects uploaded
    /// after it are left out (S3 times objects to the second, and the
    /// archive holds a record at most `archive.max_lag_ms` after it was
    /// synced).
    Time(std::time::SystemTime),
}

/// A snapshot the archive holds.
struct ArchivedSnapshot {
    object: String,
    crc: u32,
    /// Bytes, as listed: the download stops with an error past them.
    size: u64,
    kind: SnapshotKind,
    from_seq: Seq,
    to_seq: Seq,
}

/// Rebuilds the archive `config` names into `to`, which must not exist or
/// be empty, as of `target`.
pub async fn restore(
    config: &ArchiveConfig,
    to: &Path,
    target: RestoreTarget,
) -> Result<RestoreReport> {
    let bucket = Bucket::connect(config)?;
    let refuse = |object: &str, reason: String| Error::Archive {
        op: "restore from",
        object: format!("{}/{object}", config.url.trim_end_matches('/')),
        reason,
    };
    let fs = RealFs;
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidRequest(format!(
                    "{} is not empty: a restore writes only into a new or empty directory",
                    to.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read restore directory", to, e)),
    }

    // Plan from one listing.
    let mut listed = bucket.list().await?;
    let upto = match target {
        RestoreTarget::Latest => None,
        RestoreTarget::Seq(seq) => Some(seq),
        RestoreTarget::Time(time) => {
            let ms = crate::entry::unix_millis(time);
            listed.retain(|object| object.modified_ms <= ms);
            None
        }
    };
    let mut chunks: BTreeMap<u64, Vec<(ChunkName, String)>> = BTreeMap::new();
    let mut snapshots = Vec::new();
    let mut manifests = Vec::new();
    for object in &listed {
        match ObjectName::parse(&object.name) {
            Some(ObjectName::Chunk(chunk)) => {
                if chunk.end - chunk.start != object.size {
                    return Err(refuse(
                        &object.name,
                        format!(
                            "the object holds {} bytes, its name says {}",
                            object.size,
                            chunk.end - chunk.start
                        ),
                    ));
                }
                chunks
                    .entry(chunk.segment)
                    .or_default()
                    .push((chunk, object.name.clone()));
            }
            Some(ObjectName::Snapshot { file_name, crc }) => {
                let (kind, from_seq, to_seq) = snapshot_range(&file_name);
                snapshots.push(ArchivedSnapshot {
                    object: object.name.clone(),
                    crc,
                    size: object.size,
                    kind,
                    from_seq,
                    to_seq,
                });
            }
            Some(ObjectName::Manifest { generation, crc }) => {
                if object.size > MAX_MANIFEST_BYTES {
                    return Err(refuse(
                        &object.name,
                        format!(
                            "the object holds {} bytes, more than any manifest ({MAX_MANIFEST_BYTES})",
                            object.size
                        ),
                    ));
                }
                manifests.push((generation, crc, object.size, object.name.clone()))
            }
            None => {
                return Err(refuse(
                    &object.name,
                    "an object the archive does not name so is under its prefix; \
                     restore only from a prefix the archiver alone writes to"
                        .into(),
                ))
            }
        }
    }
    let Some((_, crc, size, name)) = manifests.iter().max() else {
        return Err(refuse(
            "manifest/",
            "no manifest: nothing was archived under this prefix".into(),
        ));
    };
    let newest = bucket.get_checked(name, *crc, *size).await?;
    let manifest = Manifest::decode(&newest).map_err(|e| refuse(name, e.reason))?;
    if manifest.kind != DirKind::Kv {
        return Err(refuse(
            name,
            "the archive holds a Log, not a key-value store".into(),
        ));
    }

    // The segments as contiguous runs of chunks from byte 0; the records
    // each holds. A segment with a gap is refused below if any of its
    // records is needed: retention may have deleted the chunks of a
    // segment the newest snapshot covers while later ones were still on
    // their way up.
    let mut segments: Vec<(u64, Vec<(ChunkName, String)>)> = Vec::new();
    let mut gaps: Vec<(u64, (u64, u64), Seq)> = Vec::new();
    for (id, run) in chunks {
        let names: BTreeMap<ChunkName, String> = run.into_iter().collect();
        let all: Vec<ChunkName> = names.keys().copied().collect();
        let (picked, gap) = furthest_run(&all);
        if let Some(gap) = gap {
            let last = all.iter().map(|chunk| chunk.last_seq).max().unwrap_or(0);
            gaps.push((id, gap, last));
            continue;
        }
        let picked = picked
            .into_iter()
            .map(|chunk| (chunk, names[&chunk].clone()))
            .collect();
        segments.push((id, picked));
    }
    let first = |run: &[(ChunkName, String)]| run.first().map_or(0, |(c, _)| c.first_seq);
    let last = |run: &[(ChunkName, String)]| run.last().map_or(0, |(c, _)| c.last_seq);
    let archived_last = segments.last().map_or(0, |(_, run)| last(run));
    let archived_last = archived_last.max(snapshots.iter().map(|s| s.to_seq).max().unwrap_or(0));
    let target = upto.unwrap_or(archived_last);
    if target > archived_last {
        return Err(refuse(
            "wal/",
            format!("the archive ends at sequence number {archived_last}, before {target}"),
        ));
    }

    // The snapshot chain: the newest full snapshot at or before the
    // target, then incrementals that continue it.
    let mut chain: Vec<&ArchivedSnapshot> = Vec::new();
    if let Some(full) = snapshots
        .iter()
        .filter(|s| s.kind == SnapshotKind::Full && s.to_seq <= target)
        .max_by_key(|s| s.to_seq)
    {
        chain.push(full);
        while let Some(next) = snapshots.iter().find(|s| {
            s.kind == SnapshotKind::Incremental
                && s.from_seq == chain.last().map_or(0, |c| c.to_seq)
                && s.to_seq <= target
        }) {
            chain.push(next);
        }
    }
    let base = chain.last().map_or(0, |s| s.to_seq);
    if let Some((id, (from, to), _)) = gaps.iter().find(|(_, _, last)| *last > base) {
        return Err(refuse(
            &format!("wal/{id:020}/"),
            format!("bytes {from}..{to} of segment {id} are missing from the archive"),
        ));
    }

    // The segments from `base + 1` to the target, without a gap.
    let needed: Vec<&(u64, Vec<(ChunkName, String)>)> = segments
        .iter()
        .filter(|(_, run)| !run.is_empty() && last(run) > base && first(run) <= target)
        .collect();
    let mut expected = base + 1;
    for (id, run) in &needed {
        if first(run) > expected {
            return Err(refuse(
                &format!("wal/{id:020}/"),
                format!(
                    "records {expected}..{} are missing from the archive (no snapshot covers them)",
                    first(run) - 1
                ),
            ));
        }
        expected = last(run) + 1;
    }
    if target >= expected {
        return Err(refuse(
            "wal/",
            format!("records {expected}..={target} are missing from the archive"),
        ));
    }

    // Download and write.
    fs.create_dir_all(to)
        .map_err(|e| Error::io("create restore directory", to, e))?;
    let mut report = RestoreReport {
        last_seq: target,
        snapshots: Vec::new(),
        segments: needed.len(),
        objects: 1,
        bytes: newest.len() as u64,
    };
    for snapshot in &chain {
        let file_name = snapshot
            .object
            .strip_prefix("snap/")
            .and_then(|n| n.rsplit_once('_'))
            .map_or("", |(name, _)| name);
        let path = to.join(file_name);
        // Streamed to the file: a snapshot is as large as the state.
        report.bytes += bucket
            .download_checked(&fs, &snapshot.object, (snapshot.size, snapshot.crc), &path)
            .await?;
        report.objects += 1;
        let header = read_snapshot_file(&path, |_, _| {})?;
        report.snapshots.push(header);
    }
    let mut ids = Vec::new();
    for (id, run) in &needed {
        let mut parts = Vec::new();
        for (chunk, name) in run {
            if chunk.first_seq > target {
                break;
            }
            let bytes = bucket.get_checked(name, chunk.crc, chunk.len()).await?;
            report.objects += 1;
            report.bytes += bytes.len() as u64;
            parts.push((chunk.start, bytes));
        }
        let path = segment_path(to, *id);
        let parts_ref: Vec<(u64, &[u8])> =
            parts.iter().map(|(at, b)| (*at, b.as_slice())).collect();
        write_file(&fs, &path, &parts_ref)?;
        if last(run) > target {
            cut_after(&fs, &path, first(run), target)?;
        }
        ids.push(*id);
    }
    let restored = Manifest {
        generation: 1,
        next_segment_id: ids.last().map_or(1, |id| id + 1),
        segments: ids.clone(),
        snapshots: report.snapshots.clone(),
        sealed_through: ids.last().copied().unwrap_or(0),
        kind: DirKind::Kv,
        ..Manifest::default()
    };
    crate::lifecycle::manifest::write(&fs, to, &restored)?;
    Ok(report)
}

/// The kind and range of a snapshot, from its file name (checked by
/// [`ObjectName::parse`]).
fn snapshot_range(file_name: &str) -> (SnapshotKind, Seq, Seq) {
    let number = |s: &str| s.parse().unwrap_or(0);
    if let Some(stem) = file_name.strip_suffix(".full.snap") {
        return (SnapshotKind::Full, 0, number(stem));
    }
    let stem = file_name.strip_suffix(".incr.snap").unwrap_or(file_name);
    let (from, to) = stem.split_once('-').unwrap_or(("0", "0"));
    (SnapshotKind::Incremental, number(from), number(to))
}

/// Writes `parts` (offset, bytes) into a new file at `path`, synced.
fn write_file(fs: &dyn FileSystem, path: &Path, parts: &[(u64, &[u8])]) -> Result<()> {
    let file = fs
        .create(path, 0)
        .map_err(|e| Error::io("create restored file", path, e))?;
    for (at, bytes) in parts {
        file.write_at(bytes, *at)
            .map_err(|e| Error::io("write restored file", path, e))?;
    }
    file.sync_all()
        .map_err(|e| Error::io("sync restored file", path, e))
}

/// Cuts the restored segment at `path` just after record `target`.
fn cut_after(fs: &dyn FileSystem, path: &PathBuf, first_seq: Seq, target: Seq) -> Result<()> {
    let mut buf = Vec::new();
    let mut reader = FrameReader::new(fs, path, &mut buf, MAX_PAYLOAD_BYTES);
    let header = crate::format::segment::SegmentHeader::decode(
        reader
            .peek(SEGMENT_HEADER_BYTES)
            .map_err(|e| Error::io("read restored segment", path, e))?,
    )
    .map_err(|_| {
        Error::Corruption(crate::error::Corruption {
            file: path.clone(),
            offset: 0,
            reason: "the restored segment's header is damaged".into(),
        })
    })?;
    reader.consume(SEGMENT_HEADER_BYTES);
    reader.set_layout(header.layout());
    let walk = walk_frames(&mut reader, first_seq, |seq, _, _| {
        Ok(if seq > target {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .map_err(|e| Error::io("read restored segment", path, e))?;
    if walk.next_seq != target + 1 {
        return Err(Error::Corruption(crate::error::Corruption {
            file: path.clone(),
            offset: walk.offset,
            reason: format!(
                "the restored segment's records end at {} before the target {target}",
                walk.next_seq - 1
            ),
        }));
    }
    let file = fs
        .open_writable(path)
        .map_err(|e| Error::io("open restored segment", path, e))?;
    file.set_len(walk.offset)
        .map_err(|e| Error::io("cut restored segment", path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("sync restored segment", path, e))
}
