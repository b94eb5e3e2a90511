//! Snapshot files: a 48-byte header, then one record frame (see `record`)
//! per key, each holding `Entry::Op` and the sequence number of the key's
//! last change.
//!
//! Header: `magic[8] | version u32 | crc u32 | kind u32 | reserved u32 |
//! from_seq u64 | to_seq u64 | entry count u64`; the CRC covers every other
//! header byte. A full snapshot holds every live key at `to_seq`
//! (`from_seq` = 0, no deletions, no expired keys); an incremental one
//! holds the net change of every key changed in `(from_seq, to_seq]`,
//! deletions included, after a clear (`Op::Clear`, first) if the range
//! removed every key. Version 2 adds deadlines (`Op::SetExpiring`) and
//! clears; version 1 files, which hold neither, are still read.

use serde::{Deserialize, Serialize};

use crate::entry::Seq;

/// Identifies a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CKVSNAP\n";
/// The version new snapshots are written in; bumped on any incompatible
/// change to snapshot files.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest version still read: snapshots a previous release wrote.
pub const OLDEST_SNAPSHOT_VERSION: u32 = 1;
/// Size of the snapshot header.
pub const SNAPSHOT_HEADER_BYTES: usize = 48;

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Every live key at `to_seq`.
    Full,
    /// The net changes in `(from_seq, to_seq]`.
    Incremental,
}

/// What a snapshot covers; also how the manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Full or incremental.
    pub kind: SnapshotKind,
    /// An incremental snapshot's base: it holds the changes after this
    /// sequence number (0 for a full snapshot).
    pub from_seq: Seq,
    /// The last sequence number it covers: recovery replays the log after it.
    pub to_seq: Seq,
    /// Key-value entries in the file (deletions included for an incremental one).
    pub entries: u64,
}

impl SnapshotHeader {
    /// The header's bytes.
    pub(crate) fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut buf = [0u8; SNAPSHOT_HEADER_BYTES];
        buf[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        buf[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            SnapshotKind::Full => 0,
            SnapshotKind::Incremental => 1,
        };
        buf[16..20].copy_from_slice(&kind.to_le_bytes());
        buf[24..32].copy_from_slice(&self.from_seq.to_le_bytes());
        buf[32..40].copy_from_slice(&self.to_seq.to_le_bytes());
        buf[40..48].copy_from_slice(&self.entries.to_le_bytes());
        let crc = header_crc(&buf);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses and checks a header: `Err((offset, reason))` when damaged.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SnapshotHeader, (u64, String)> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err((
                0,
                format!(
                    "snapshot of {} bytes is shorter than its header",
                    bytes.len()
                ),
            ));
        }
        let buf = &bytes[..SNAPSHOT_HEADER_BYTES];
        if buf[0..8] != SNAPSHOT_MAGIC {
            return Err((0, "not a concordkv snapshot (bad magic)".into()));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let stored = u32_at(12);
        let actual = header_crc(buf);
        if stored != actual {
            return Err((
                12,
                format!("snapshot header checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
            ));
        }
        if !(OLDEST_SNAPSHOT_VERSION..=SNAPSHOT_VERSION).contains(&u32_at(8)) {
            return Err((
                8,
                format!(
                    "snapshot version {}, this build reads {OLDEST_SNAPSHOT_VERSION} to {SNAPSHOT_VERSION}",
                    u32_at(8)
                ),
            ));
        }
        let kind = match u32_at(16) {
            0 => SnapshotKind::Full,
            1 => SnapshotKind::Incremental,
            other => return Err((16, format!("unknown snapshot kind {other}"))),
        };
        let header = SnapshotHeader {
            kind,
            from_seq: u64_at(24),
            to_seq: u64_at(32),
            entries: u64_at(40),
        };
        if header.from_seq > header.to_seq || (kind == SnapshotKind::Full && header.from_seq != 0) {
            return Err((
                24,
                format!(
                    "invalid sequence range ({}, {}]",
                    header.from_seq, header.to_seq
                ),
            ));
        }
        Ok(header)
    }

    /// The file name: kind and range, so names sort by coverage.
    pub fn file_name(&self) -> String {
        match self.kind {
            SnapshotKind::Full => format!("{:020}.full.snap", self.to_seq),
            SnapshotKind::Incremental => {
                format!("{:020}-{:020}.incr.snap", self.from_seq, self.to_seq)
            }
        }
    }
}

/// Whether `name` is a snapshot file's name (`<20 digits>.full.snap` or
/// `<20 digits>-<20 digits>.incr.snap`): the only files besides segments
/// and the manifest the store ever removes are named so.
pub fn is_snapshot_file_name(name: &str) -> bool {
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(stem) = name.strip_suffix(".full.snap") {
        return digits(stem);
    }
    name.strip_suffix(".incr.snap")
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(from, to)| digits(from) && digits(to))
}

fn header_crc(buf: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..12]);
    hasher.update(&buf[16..SNAPSHOT_HEADER_BYTES]);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_every_flipped_byte() {
        let header = SnapshotHeader {
            kind: SnapshotKind::Incremental,
            from_seq: 10,
            to_seq: 99,
            entries: 7,
        };
        let bytes = header.encode();
        assert_eq!(SnapshotHeader::decode(&bytes), Ok(header));
        for i in 0..SNAPSHOT_HEADER_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x20;
            assert!(SnapshotHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert_eq!(
            header.file_name(),
            "00000000000000000010-00000000000000000099.incr.snap"
        );
    }

    #[test]
    fn version_1_headers_are_still_read_and_later_ones_refused() {
        let header = SnapshotHeader {
            kind: SnapshotKind::Full,
            from_seq: 0,
            to_seq: 9,
            entries: 3,
        };
        let with_version = |version: u32| {
            let mut bytes = header.encode();
            bytes[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = header_crc(&bytes);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
            SnapshotHeader::decode(&bytes)
        };
        assert_eq!(with_version(1), Ok(header));
        assert!(matches!(with_version(3), Err((8, r)) if r.contains("version 3")));
    }

    #[test]
    fn only_exact_snapshot_names_are_snapshot_names() {
        let full = SnapshotHeader {
            kind: SnapshotKind::Full,
            from_seq: 0,
            to_seq: 42,
            entries: 1,
        };
        assert!(is_snapshot_file_name(&full.file_name()));
        let incr = SnapshotHeader {
            kind: SnapshotKind::Incremental,
            from_seq: 42,
            to_seq: 50,
            entries: 1,
        };
        assert!(is_snapshot_file_name(&incr.file_name()));
        for other in [
            "backup.snap",
            "42.full.snap",
            "my.full.snap",
            "00000000000000000042.full.snap.bak",
            "x-y.incr.snap",
        ] {
            assert!(!is_snapshot_file_name(other), "{other}");
        }
    }
}
