//! `concordkv inspect` and `concordkv verify`: a read-only look at a data
//! directory. Every file is read, never written: no lock is taken, nothing is
//! created, cut or removed, so a damaged directory is described exactly as
//! it is and left for the operator to decide.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::config::RecoveryMode;
use crate::entry::Seq;
use crate::error::{Corruption, Error, Result};
use crate::format::manifest::{DirKind, Manifest, MANIFEST_FILE};
use crate::format::record::MAX_PAYLOAD_BYTES;
use crate::format::segment::{parse_segment_file_name, segment_path};
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::{FileSystem, RealFs};
use crate::lifecycle::background::Cancel;
use crate::lifecycle::manifest::truncation_cap;
use crate::lifecycle::snapshot::{read_snapshot, select_chain, snapshot_path};
use crate::log::reader::FrameReader;
use crate::log::recovery::TruncatedTail;
use crate::log::scan::{self, serialize_path, End, Start};

/// What a segment holds.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    /// The segment id (its file name's number).
    pub id: u64,
    /// The segment file.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// File length (preallocated zeros included).
    pub bytes: u64,
    /// Sequence numbers of its first and last intact records.
    pub seqs: Option<(Seq, Seq)>,
    /// Intact records, up to the first damage or torn tail.
    pub records: u64,
    /// `sealed` (a later segment has started), `active` (the newest started
    /// one), `prepared` (never started), `torn` (the newest segment's header
    /// never reached the disk: the open retires it) or `damaged`. A sealed
    /// segment keeps its preallocated zeros, so only the order tells the
    /// first two apart.
    pub state: &'static str,
}

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// Its header, equal to the manifest's entry for it.
    pub header: SnapshotHeader,
    /// The snapshot file.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// File length.
    pub bytes: u64,
}

/// A data directory as found, judged as an open (in the default
/// `tolerate_tail` recovery mode) would judge it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// The data directory.
    #[serde(serialize_with = "serialize_path")]
    pub dir: PathBuf,
    /// The manifest, if it could be read.
    pub manifest: Option<Manifest>,
    /// The listed segments (every segment file present, without a manifest).
    pub segments: Vec<SegmentReport>,
    /// The listed snapshots that read intact.
    pub snapshots: Vec<SnapshotReport>,
    /// Files the manifest does not list (removed at the next open).
    #[serde(serialize_with = "serialize_paths")]
    pub unlisted: Vec<PathBuf>,
    /// The torn tail of the newest segment that the next open cuts: an
    /// interrupted write, not damage.
    pub torn_tail: Option<TruncatedTail>,
    /// Every piece of damage, each of which fails the open: file, byte
    /// offset, reason.
    #[serde(serialize_with = "serialize_damage")]
    pub damage: Vec<Corruption>,
    /// Operations in the segments (up to any damage or torn tail).
    pub ops: u64,
    /// Distinct keys those operations leave set: the rest of `ops` is what a
    /// compaction would drop.
    pub live_keys: u64,
}

fn serialize_paths<S: Serializer>(paths: &[PathBuf], serializer: S) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(paths.len()))?;
    for path in paths {
        seq.serialize_element(&path.to_string_lossy())?;
    }
    seq.end()
}

/// `Corruption` as `{file, offset, reason}`.
fn serialize_damage<S: Serializer>(
    damage: &[Corruption],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Damage<'a> {
        file: std::borrow::Cow<'a, str>,
        offset: u64,
        reason: &'a str,
    }
    let mut seq = serializer.serialize_seq(Some(damage.len()))?;
    for d in damage {
        seq.serialize_element(&Damage {
            file: d.file.to_string_lossy(),
            offset: d.offset,
            reason: &d.reason,
        })?;
    }
    seq.end()
}

fn damage(file: &Path, offset: u64, reason: impl Into<String>) -> Corruption {
    Corruption {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads and checks everything in `dir`, changing nothing: no lock, no
/// write, no cut. Segments go through the same scan as recovery, so a torn
/// tail the open would cut is reported as `torn_tail` and only what the
/// open would refuse as `damage`.
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
    // A failed sync in this boot makes the open refuse the directory,
    // whatever its files hold.
    if let Some(marker) = crate::log::sync_failure::find(&fs, dir)? {
        if marker.this_boot {
            found.damage.push(damage(&marker.path, 0, marker.refusal()));
        }
    }
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
    let (listed_segments, listed_snapshots, sealed_through) = match &found.manifest {
        Some(m) => (m.segments.clone(), m.snapshots.clone(), m.sealed_through),
        None => (segment_ids.clone(), Vec::new(), 0),
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
        match read_snapshot(&fs, &path, header, &mut buf, &Cancel::default(), |_, _| {}) {
            Ok(_) => found.snapshots.push(SnapshotReport {
                header: *header,
                bytes: fs.file_len(&path).unwrap_or(0),
                path,
            }),
            Err(Error::Corruption(c)) => found.damage.push(c),
            Err(e) => found.damage.push(damage(&path, 0, e.to_string())),
        }
    }

    let plan = scan::plan(&fs, dir, &listed_segments, sealed_through, &mut buf)
        .map_err(|(path, e)| Error::io("read segment", path, e))?;
    // The open replays the log after the snapshot chain, which the first
    // started segment must reach.
    // A log's purged prefix counts as covered, as for the open.
    let covered = select_chain(&listed_snapshots)
        .last()
        .map_or(0, |h| h.to_seq)
        .max(found.manifest.as_ref().map_or(0, |m| m.purged_through));
    let mut first = true;
    let mut last_is_set: HashMap<Vec<u8>, bool> = HashMap::new();
    let now = crate::state::now_ms();
    let mut expected: Option<Seq> = None;
    for &id in &listed_segments {
        let path = segment_path(dir, id);
        let bytes = match fs.file_len(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                found.damage.push(scan::listed_but_missing(&path));
                continue;
            }
            Err(e) => return Err(Error::io("read segment", path, e)),
        };
        let mut report = SegmentReport {
            id,
            path: path.clone(),
            bytes,
            seqs: None,
            records: 0,
            state: "sealed",
        };
        if plan.unstarted.contains(&id) {
            report.state = "prepared";
            found.segments.push(report);
            continue;
        }
        let place = plan.place(id);
        let mode = RecoveryMode::TolerateTail;
        let read_error = |e| Error::io("read segment", &path, e);
        let mut reader = FrameReader::new(&fs, &path, &mut buf, MAX_PAYLOAD_BYTES);
        let header =
            match scan::read_start(&mut reader, &path, id, place, mode).map_err(read_error)? {
                Start::Header(header) => header,
                Start::Unstarted => {
                    report.state = "prepared";
                    found.segments.push(report);
                    continue;
                }
                Start::Torn(tail) => {
                    found.torn_tail = Some(tail);
                    report.state = "torn";
                    found.segments.push(report);
                    continue;
                }
                Start::Corrupt(c) => {
                    found.damage.push(c);
                    report.state = "damaged";
                    found.segments.push(report);
                    expected = None;
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
        if first && header.first_seq > covered + 1 {
            found.damage.push(damage(
                &path,
                24,
                format!(
                    "the log starts at sequence {}, but the snapshots end at {covered}: records are missing",
                    header.first_seq
                ),
            ));
        }
        first = false;
        if let Some(expected) = expected {
            if !scan::continues(expected, header.first_seq, covered) {
                found.damage.push(damage(
                    &path,
                    24,
                    format!(
                        "segment starts at sequence {}, the previous segment ends before {expected}",
                        header.first_seq
                    ),
                ));
            }
        }
        let scanned = scan::scan_frames(&mut reader, &path, &header, place, mode, |seq, entry| {
            for op in entry.ops() {
                found.ops += 1;
                let set = match op {
                    crate::entry::Op::Set { .. } => true,
                    crate::entry::Op::SetExpiring { expires_at, .. } => *expires_at > now,
                    crate::entry::Op::Delete { .. } => false,
                    crate::entry::Op::Clear => {
                        last_is_set.clear();
                        continue;
                    }
                };
                if let Some(key) = op.key() {
                    last_is_set.insert(key.to_vec(), set);
                }
            }
            report.seqs = Some((report.seqs.map_or(seq, |(first, _)| first), seq));
            report.records += 1;
        })
        .map_err(read_error)?;
        // After damage, where the next segment should start is unknown:
        // its start is not checked, so each damage is listed once. After a
        // log's truncation mark, the next segment continues from the mark.
        let cap = found
            .manifest
            .as_ref()
            .and_then(|m| truncation_cap(&m.truncations, id))
            .unwrap_or(Seq::MAX);
        expected = Some(scanned.next_seq.min(cap.saturating_add(1)));
        match scanned.end {
            End::Clean => {}
            End::Torn(tail) => found.torn_tail = Some(tail),
            End::Corrupt(c) => {
                found.damage.push(c);
                report.state = "damaged";
                expected = None;
            }
        }
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
                if m.kind == DirKind::Log {
                    let _ = writeln!(
                        out,
                        "log: purged through {}, truncation marks {:?}, metadata {}",
                        m.purged_through,
                        m.truncations
                            .iter()
                            .map(|t| (t.after_seq, t.through_segment))
                            .collect::<Vec<_>>(),
                        m.metadata
                            .as_ref()
                            .map_or("none".to_string(), |b| format!("{} bytes", b.len()))
                    );
                }
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
        if let Some(line) = self.torn_tail_line() {
            let _ = writeln!(out, "{line}");
        }
        for line in self.damage_lines() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The torn tail the next open cuts, in one line: file, offset, bytes
    /// and reason.
    pub fn torn_tail_line(&self) -> Option<String> {
        self.torn_tail.as_ref().map(|t| {
            format!(
                "torn tail: {} at byte offset {}: {} bytes would be cut on open ({})",
                t.file.display(),
                t.offset,
                t.bytes,
                t.reason
            )
        })
    }

    /// One line per damage (what fails the open): file, byte offset, reason.
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
