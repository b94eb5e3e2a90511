//! Media damage between a power cut and the next open, and the rules the
//! open's outcome must obey, for both tortures.
//!
//! A copy of the disk gets a flipped bit or a zeroed 512-byte sector in
//! one file the next open reads (the MANIFEST, a loaded snapshot, a sealed
//! or the newest segment); the copy is opened and then dropped, so the run
//! goes on from the undamaged disk. The open must fail naming the file,
//! report the region as skipped (`skip_corrupt`), or, in the newest segment
//! only and only where no later frame attests the data durable, cut it as
//! a torn tail; whatever it returns then must still pass the torture's
//! model. The oracle reads the damaged segment with its own parser of
//! FORMAT.md, independently of recovery.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::Rng;

use super::{DiskReport, DATA_DIR};
use crate::config::{Config, RecoveryMode};
use crate::entry::Seq;
use crate::error::{Corruption, Error};
use crate::format::manifest::{Manifest, MANIFEST_FILE};
use crate::format::segment::segment_path;
use crate::fs::FileSystem;
use crate::lifecycle::manifest::truncation_cap;
use crate::lifecycle::snapshot::select_chain;
use crate::log::recovery::TruncatedTail;
use crate::testing::sim_fs::SimFs;

/// A file recovery reads, and so may be damaged to test it.
#[derive(Debug, Clone)]
struct Target {
    path: PathBuf,
    /// What it is, for reports: "manifest", "snapshot", "sealed segment",
    /// "newest segment".
    kind: &'static str,
    /// For a log's segment, the truncation marks' limit on it: records
    /// past it were dropped and are never returned.
    cap: Option<Seq>,
}

/// The files the next open reads: the MANIFEST, the snapshots of the chain
/// it loads, and the segments it lists that were started (a segment whose
/// first page is zeros was prepared and never used; recovery retires it
/// unread).
fn damage_targets(fs: &SimFs) -> Vec<Target> {
    let dir = PathBuf::from(DATA_DIR);
    let manifest_path = dir.join(MANIFEST_FILE);
    let Ok(bytes) = fs.read(&manifest_path) else {
        return Vec::new();
    };
    let Ok(manifest) = Manifest::decode(&bytes) else {
        return Vec::new();
    };
    let mut targets = vec![Target {
        path: manifest_path,
        kind: "manifest",
        cap: None,
    }];
    for header in select_chain(&manifest.snapshots) {
        targets.push(Target {
            path: dir.join(header.file_name()),
            kind: "snapshot",
            cap: None,
        });
    }
    let started: Vec<(PathBuf, Option<Seq>)> = manifest
        .segments
        .iter()
        .map(|id| {
            (
                segment_path(&dir, *id),
                truncation_cap(&manifest.truncations, *id),
            )
        })
        .filter(|(path, _)| {
            fs.read_prefix(path, 4096)
                .is_ok_and(|head| head.iter().any(|b| *b != 0))
        })
        .collect();
    let count = started.len();
    for (index, (path, cap)) in started.into_iter().enumerate() {
        targets.push(Target {
            path,
            kind: if index + 1 == count {
                "newest segment"
            } else {
                "sealed segment"
            },
            cap,
        });
    }
    targets
}

/// A copy of the disk with one file damaged, and the configuration to open
/// it with (sometimes in `skip_corrupt` mode).
pub(super) struct DamagedCopy {
    /// The damaged copy; what happens to it never reaches the run's disk.
    pub fs: SimFs,
    pub config: Config,
    target: Target,
    /// The file's length.
    len: u64,
    /// The file's bytes after the damage.
    damaged: Vec<u8>,
    /// What was damaged where, for messages.
    described: String,
    /// Whether the damage leaves only zeros from there to the segment's
    /// end: such a segment looks like one whose records ended earlier (or,
    /// all zeros, like one prepared and never used), and only the gap it
    /// leaves, which the next segment shows, or the model can tell.
    zeroed_to_end: bool,
}

/// Damages one file of a copy of the disk (a flipped bit or a zeroed
/// 512-byte sector; never an injection that changes nothing), counted in
/// `report`; `None` when there was nothing to damage.
pub(super) fn damage_a_copy(
    fs: &SimFs,
    rng: &mut StdRng,
    config: &Config,
    report: &mut DiskReport,
) -> Result<Option<DamagedCopy>, String> {
    let copy = fs.duplicate();
    let targets = damage_targets(&copy);
    if targets.is_empty() {
        return Ok(None);
    }
    let target = targets[rng.random_range(0..targets.len())].clone();
    let Ok(bytes) = copy.read(&target.path) else {
        return Ok(None);
    };
    let Some((offset, damage, what)) = pick_damage(rng, &bytes) else {
        return Ok(None);
    };
    copy.damage(&target.path, offset as u64, &damage)
        .map_err(|e| format!("damaging {}: {e}", target.path.display()))?;
    *report
        .media_damage
        .entry(format!("{what} in {}", target.kind))
        .or_default() += 1;
    let mut config = config.clone();
    if rng.random_bool(0.3) {
        config.wal.recovery_mode = RecoveryMode::SkipCorrupt;
    }
    let described = format!(
        "{what} at byte {offset} of {} ({}, recovery_mode {:?})",
        target.path.display(),
        target.kind,
        config.wal.recovery_mode
    );
    let mut damaged = bytes;
    damaged[offset..offset + damage.len()].copy_from_slice(&damage);
    let zeroed_to_end =
        target.kind.ends_with("segment") && damaged[offset..].iter().all(|x| *x == 0);
    Ok(Some(DamagedCopy {
        fs: copy,
        config,
        target,
        len: damaged.len() as u64,
        damaged,
        described,
        zeroed_to_end,
    }))
}

/// What a model checks of an open that went through damage: whether the
/// sync mode's loss bounds still hold (not when recovery may have cut
/// acknowledged records off the newest segment as a torn tail).
pub(super) type Verify<'a> = &'a mut dyn FnMut(bool) -> Result<(), String>;

impl DamagedCopy {
    /// The open failed: it must have been a corruption naming the damaged
    /// file at an offset inside it. Returns the outcome, for the report.
    pub fn judge_failure(&self, error: Error) -> Result<&'static str, String> {
        let described = &self.described;
        match error {
            Error::Corruption(corruption) => {
                if corruption.file != self.target.path && !self.zeroed_to_end {
                    return Err(format!(
                        "after {described}, the open failed naming another file: {corruption}"
                    ));
                }
                if corruption.offset > self.len {
                    return Err(format!(
                        "after {described}, the open failed naming an offset past the file's end: {corruption}"
                    ));
                }
                Ok("failed naming the file")
            }
            e => Err(format!("after {described}, the open failed: {e}")),
        }
    }

    /// The open succeeded, reporting `skipped` regions and a torn tail
    /// `truncated`, its log ending at `last_seq`: it must have reported the
    /// damage, or (in the newest segment only) cut it as a torn tail where
    /// the durability rule allows, and returned what `verify` accepts.
    /// Returns the outcome, for the report.
    pub fn judge_open(
        &self,
        skipped: &[Corruption],
        truncated: Option<&TruncatedTail>,
        last_seq: Seq,
        verify: Verify<'_>,
    ) -> Result<&'static str, String> {
        let described = &self.described;
        let target = &self.target;
        if skipped
            .iter()
            .any(|c| c.file == target.path || self.zeroed_to_end)
        {
            return Ok("skipped the region");
        }
        if target.kind != "newest segment" && !self.zeroed_to_end {
            return Err(format!(
                "after {described}, the open succeeded without reporting it (torn tail cut: {truncated:?}; regions skipped: {skipped:?})"
            ));
        }
        let checked = if target.kind == "newest segment" {
            check_newest_segment_rule(&self.damaged, last_seq, target.cap, truncated)
                .and_then(|()| verify(false))
        } else {
            // A sealed segment was synced whole: nothing in it may be
            // lost, so every bound holds as after a plain cut.
            verify(true)
        };
        if let Err(e) = checked {
            return Err(format!(
                "after {described}, the open returned a bad log: {e}"
            ));
        }
        Ok(if truncated.is_some() {
            "cut a torn tail"
        } else {
            "opened"
        })
    }

    /// Counts the open's outcome in `report`.
    pub fn count(&self, outcome: &str, report: &mut DiskReport) {
        *report
            .media_damage_outcomes
            .entry(format!("{}: {outcome}", self.target.kind))
            .or_default() += 1;
    }
}

/// What the oracle reads in a damaged format-2 segment, with its own
/// parser (FORMAT.md), independently of recovery.
#[derive(Debug)]
struct SegmentScan {
    /// Where the run of intact, consecutive frames after the header ends:
    /// the damage as recovery meets it, or the end of the records.
    damage_at: usize,
    /// Whether anything but zeros follows `damage_at`.
    damaged: bool,
    /// The last sequence number in that run.
    last_intact_seq: Option<Seq>,
    /// The highest `durable` of the frames intact at their own offset
    /// after `damage_at`, and where that frame is.
    durable_after: Option<(u64, usize)>,
}

const SEGMENT_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAX_PAYLOAD: usize = 1 << 30;

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The format-2 frame intact at `at` (its CRC covers its own offset), if
/// any: its sequence number, `durable` field and size.
fn intact_frame(bytes: &[u8], at: usize) -> Option<(Seq, u64, usize)> {
    let head = bytes.get(at..at + FRAME_HEADER)?;
    let len = le_u32(head, 0) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[0..4]);
    crc.update(&head[8..]);
    crc.update(&(at as u64).to_le_bytes());
    crc.update(payload);
    (crc.finalize() == le_u32(head, 4)).then(|| {
        (
            le_u64(head, 8),
            u64::from(le_u32(head, 20)),
            FRAME_HEADER + len,
        )
    })
}

/// Scans a segment the way FORMAT.md describes it; `None` unless its
/// header says format 2 (or the header is what is damaged).
fn scan_segment(bytes: &[u8]) -> Option<SegmentScan> {
    let header = bytes.get(..SEGMENT_HEADER)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[0..12]);
    crc.update(&header[16..32]);
    let header_intact = &header[0..8] == b"CKVWAL\r\n" && crc.finalize() == le_u32(header, 12);
    if header_intact && le_u32(header, 8) != 2 {
        return None;
    }
    let mut at = if header_intact { SEGMENT_HEADER } else { 0 };
    let mut last_intact_seq = None;
    if header_intact {
        let mut expected = le_u64(header, 24);
        while let Some((seq, _, size)) = intact_frame(bytes, at) {
            if seq != expected {
                break;
            }
            last_intact_seq = Some(seq);
            expected += 1;
            at += size;
        }
    }
    let durable_after = (at + 1..bytes.len())
        .filter_map(|later| intact_frame(bytes, later).map(|(_, durable, _)| (durable, later)))
        .max();
    Some(SegmentScan {
        damage_at: at,
        damaged: bytes[at..].iter().any(|b| *b != 0),
        last_intact_seq,
        durable_after,
    })
}

/// The durability rule for an open that went through damage in the newest
/// segment: damage at X is a torn tail only if no intact frame after X
/// says the segment was durable past X; and every record whose frame lies
/// wholly before the damage is returned (up to `cap`, a log's truncation
/// mark on the segment: records past it are not part of the log).
fn check_newest_segment_rule(
    bytes: &[u8],
    last_seq: Seq,
    cap: Option<Seq>,
    truncated: Option<&TruncatedTail>,
) -> Result<(), String> {
    let Some(scan) = scan_segment(bytes) else {
        return Ok(());
    };
    if !scan.damaged {
        return Ok(());
    }
    if let Some((durable, frame)) = scan.durable_after {
        if durable > scan.damage_at as u64 {
            return Err(format!(
                "damage at byte {} lies below the durable offset {durable} that the intact frame at byte {frame} carries, yet the open neither failed nor reported it (torn tail cut: {truncated:?}; recovered up to {last_seq})",
                scan.damage_at
            ));
        }
    }
    let kept = scan
        .last_intact_seq
        .map(|seq| cap.map_or(seq, |cap| seq.min(cap)));
    match kept {
        Some(seq) if last_seq < seq => Err(format!(
            "the frames before the damage at byte {} hold records up to {seq}, but recovery ends at {last_seq}",
            scan.damage_at
        )),
        _ => Ok(()),
    }
}

/// A bit flip or a zeroed 512-byte sector somewhere in `bytes` that changes
/// at least one byte: the offset, the bytes to write there, and its name.
fn pick_damage(rng: &mut StdRng, bytes: &[u8]) -> Option<(usize, Vec<u8>, &'static str)> {
    if bytes.is_empty() {
        return None;
    }
    for _ in 0..8 {
        if rng.random_bool(0.5) {
            let at = rng.random_range(0..bytes.len());
            let flipped = bytes[at] ^ (1 << rng.random_range(0..8));
            return Some((at, vec![flipped], "bit flip"));
        }
        let start = rng.random_range(0..bytes.len().div_ceil(512)) * 512;
        let end = (start + 512).min(bytes.len());
        if bytes[start..end].iter().any(|b| *b != 0) {
            return Some((start, vec![0; end - start], "zeroed sector"));
        }
    }
    None
}
