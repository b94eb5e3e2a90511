//! `concordkv inspect` and `concordkv verify`: a read-only look at a data
//! directory. Every file is read, never written: no lock is taken, nothing is
//! created, cut or removed, so a damaged directory is described exactly as
//! it is and left for the operator to decide.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::entry::Seq;
use crate::error::{Corruption, Error, Result};
use crate::format::all_zero;
use crate::format::codec::decode_entry;
use crate::format::manifest::{Manifest, MANIFEST_FILE};
use crate::format::record::{read_frame_at, Frame, MAX_PAYLOAD_BYTES};
use crate::format::segment::{
    parse_segment_file_name, segment_path, HeaderError, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::{FileSystem, RealFs};
use crate::lifecycle::snapshot::{read_snapshot, snapshot_path};

/// What a segment holds.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    pub id: u64,
    pub path: PathBuf,
    /// File length (preallocated zeros included).
    pub bytes: u64,
    /// Sequence numbers of its first and last intact records.
    pub seqs: Option<(Seq, Seq)>,
    pub records: u64,
    /// `sealed` (a later segment has started), `active` (the newest started
    /// one), `prepared` (never started) or `damaged`. A sealed segment keeps
    /// its preallocated zeros, so only the order tells the two apart.
    pub state: &'static str,
}

/// What a snapshot holds.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub header: SnapshotHeader,
    pub path: PathBuf,
    pub bytes: u64,
}

/// A data directory as found.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub dir: PathBuf,
    pub manifest: Option<Manifest>,
    pub segments: Vec<SegmentReport>,
    pub snapshots: Vec<SnapshotReport>,
    /// Files the manifest does not list (removed at the next open).
    pub unlisted: Vec<PathBuf>,
    /// Every piece of damage: file, byte offset, reason.
    pub damage: Vec<Corruption>,
    /// Operations in the segments, and how many distinct keys they leave
    /// set: the rest is what a compaction would drop.
    pub ops: u64,
    pub live_keys: u64,
}

fn damage(file: &Path, offset: u64, reason: impl Into<String>) -> Corruption {
    Corruption {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads and checks everything in `dir`, changing nothing.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let fs = RealFs;
    let mut found = Inspection {
        dir: dir.to_path_buf(),
        ..Inspection::default()
    };
    let names: Vec<String> = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
        .collect();
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut segment_ids: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    segment_ids.sort_unstable();
    match fs.read(&manifest_path) {
        Ok(bytes) => match Manifest::decode(&bytes) {
            Ok(manifest) => found.manifest = Some(manifest),
            Err(e) => found
                .damage
                .push(damage(&manifest_path, e.offset, e.reason)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            found.damage.push(damage(
                &manifest_path,
                0,
                "missing: not a concordkv data directory, or one that lost its manifest",
            ));
        }
        Err(e) => return Err(Error::io("read manifest", manifest_path, e)),
    }
    // Without a readable manifest, every segment file present is checked.
    let (listed_segments, listed_snapshots) = match &found.manifest {
        Some(m) => (m.segments.clone(), m.snapshots.clone()),
        None => (segment_ids.clone(), Vec::new()),
    };
    let listed_names: Vec<String> = listed_segments
        .iter()
        .map(|id| crate::format::segment::segment_file_name(*id))
        .chain(listed_snapshots.iter().map(SnapshotHeader::file_name))
        .collect();
    for name in &names {
        let ours = name.ends_with(".wal") || name.ends_with(".snap") || name.ends_with(".tmp");
        if ours && !listed_names.contains(name) {
            found.unlisted.push(dir.join(name));
        }
    }

    let mut buf = Vec::new();
    for header in &listed_snapshots {
        let path = snapshot_path(dir, header);
        match read_snapshot(&fs, &path, header, &mut buf, |_, _| {}) {
            Ok(_) => found.snapshots.push(SnapshotReport {
                header: *header,
                bytes: fs.file_len(&path).unwrap_or(0),
                path,
            }),
            Err(Error::Corruption(c)) => found.damage.push(c),
            Err(e) => found.damage.push(damage(&path, 0, e.to_string())),
        }
    }

    let mut last_is_set: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut expected: Option<Seq> = None;
    for &id in &listed_segments {
        let path = segment_path(dir, id);
        let bytes = match fs.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                found
                    .damage
                    .push(damage(&path, 0, "listed in MANIFEST but missing"));
                continue;
            }
            Err(e) => return Err(Error::io("read segment", path, e)),
        };
        let mut report = SegmentReport {
            id,
            path: path.clone(),
            bytes: bytes.len() as u64,
            seqs: None,
            records: 0,
            state: "sealed",
        };
        let header = match SegmentHeader::decode(&bytes) {
            Ok(header) => header,
            Err(HeaderError::Unwritten) if all_zero(&bytes) => {
                report.state = "prepared";
                found.segments.push(report);
                continue;
            }
            Err(HeaderError::Unwritten) => {
                found.damage.push(damage(
                    &path,
                    0,
                    "segment header is all zeros but data follows it",
                ));
                report.state = "damaged";
                found.segments.push(report);
                continue;
            }
            Err(HeaderError::Damaged(reason)) => {
                found.damage.push(damage(&path, 0, reason));
                report.state = "damaged";
                found.segments.push(report);
                continue;
            }
        };
        if header.id != id {
            found.damage.push(damage(
                &path,
                16,
                format!("header says segment {}, file name says {id}", header.id),
            ));
        }
        if let Some(expected) = expected {
            if header.first_seq != expected {
                found.damage.push(damage(
                    &path,
                    24,
                    format!(
                        "segment starts at sequence {}, the previous one ends before {expected}",
                        header.first_seq
                    ),
                ));
            }
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut next = header.first_seq;
        let layout = header.layout();
        loop {
            match read_frame_at(&bytes[offset..], layout, offset as u64, MAX_PAYLOAD_BYTES) {
                Frame::Record {
                    seq, payload, size, ..
                } if seq == next => match decode_entry(payload) {
                    Ok(entry) => {
                        for op in entry.ops() {
                            found.ops += 1;
                            last_is_set.insert(
                                op.key().to_vec(),
                                matches!(op, crate::entry::Op::Set { .. }),
                            );
                        }
                        report.seqs = Some((report.seqs.map_or(seq, |(first, _)| first), seq));
                        report.records += 1;
                        next += 1;
                        offset += size;
                    }
                    Err(reason) => {
                        found.damage.push(damage(&path, offset as u64, reason));
                        report.state = "damaged";
                        break;
                    }
                },
                Frame::Record { seq, .. } => {
                    found.damage.push(damage(
                        &path,
                        offset as u64,
                        format!("sequence number {seq}, expected {next}"),
                    ));
                    report.state = "damaged";
                    break;
                }
                Frame::Unwritten if all_zero(&bytes[offset..]) => break,
                Frame::Unwritten => {
                    found.damage.push(damage(
                        &path,
                        offset as u64,
                        "zeros where a record should be, with data after them",
                    ));
                    report.state = "damaged";
                    break;
                }
                Frame::Damaged(reason) => {
                    found.damage.push(damage(&path, offset as u64, reason));
                    report.state = "damaged";
                    break;
                }
            }
        }
        expected = Some(next);
        found.segments.push(report);
    }
    if let Some(newest) = found.segments.iter_mut().rfind(|s| s.state == "sealed") {
        newest.state = "active";
    }
    found.live_keys = last_is_set.values().filter(|set| **set).count() as u64;
    Ok(found)
}

impl Inspection {
    /// The `inspect` listing.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "data directory {}", self.dir.display());
        match &self.manifest {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "manifest: generation {}, {} segments, {} snapshots, next segment id {}",
                    m.generation,
                    m.segments.len(),
                    m.snapshots.len(),
                    m.next_segment_id
                );
            }
            None => {
                let _ = writeln!(out, "manifest: unreadable (see damage below)");
            }
        }
        let _ = writeln!(
            out,
            "\nsegments:\n  {:<26}{:>12}{:>24}{:>10}  state",
            "file", "bytes", "sequence range", "records"
        );
        for s in &self.segments {
            let range = s
                .seqs
                .map_or("-".to_string(), |(a, b)| format!("{a}..={b}"));
            let name = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<26}{:>12}{:>24}{:>10}  {}",
                name, s.bytes, range, s.records, s.state
            );
        }
        let _ = writeln!(out, "\nsnapshots:");
        for s in &self.snapshots {
            let kind = match s.header.kind {
                SnapshotKind::Full => "full",
                SnapshotKind::Incremental => "incremental",
            };
            let _ = writeln!(
                out,
                "  {:<48} {kind:<12} ({}, {}] {} entries, {} bytes",
                s.header.file_name(),
                s.header.from_seq,
                s.header.to_seq,
                s.header.entries,
                s.bytes
            );
        }
        let redundant = self.ops.saturating_sub(self.live_keys);
        let _ = writeln!(
            out,
            "\nsegments hold {} operations on {} live keys: {} redundant ({:.1}%), dropped by a compaction",
            self.ops,
            self.live_keys,
            redundant,
            if self.ops == 0 {
                0.0
            } else {
                100.0 * redundant as f64 / self.ops as f64
            }
        );
        for path in &self.unlisted {
            let _ = writeln!(
                out,
                "unlisted (removed at the next open): {}",
                path.display()
            );
        }
        for line in self.damage_lines() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// One line per damage: file, byte offset, reason.
    pub fn damage_lines(&self) -> Vec<String> {
        self.damage
            .iter()
            .map(|d| {
                format!(
                    "DAMAGED {} at byte offset {}: {}",
                    d.file.display(),
                    d.offset,
                    d.reason
                )
            })
            .collect()
    }
}
