//! The `MANIFEST` file: which segments are live. Layout:
//! `magic[8] | version u32 | payload length u32 | crc u32 | payload`, the CRC
//! covering version, length and payload; the payload is bincode (see
//! `codec`). It is always replaced whole, atomically.

use serde::{Deserialize, Serialize};

use crate::entry::Seq;
use crate::format::codec;
use crate::format::snapshot::SnapshotHeader;

/// Identifies a manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"CKVMAN\r\n";
/// Bumped on any incompatible change to the manifest. Version 2 added
/// `sealed_through`; version 3 the directory's kind, `purged_through`, the
/// truncation marks and the metadata slot of a [`Log`](crate::Log).
/// Versions 1 and 2 are still read (a key-value store's, nothing sealed,
/// purged or truncated, no metadata).
pub const MANIFEST_VERSION: u32 = 3;
/// The largest metadata a log's manifest holds: the manifest is rewritten
/// whole at every change, so a large slot would slow every rotation.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// Bytes before the payload.
pub const MANIFEST_HEADER_BYTES: usize = 20;
/// The file name.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Where a new manifest is written before it is renamed over the old one.
pub const MANIFEST_TEMP_FILE: &str = "MANIFEST.tmp";

/// What the manifest records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Incremented at every write.
    pub generation: u64,
    /// The id the next created segment gets; ids are never reused.
    pub next_segment_id: u64,
    /// The live segments, ascending: the only ones recovery reads.
    pub segments: Vec<u64>,
    /// The live snapshots, in the order they were taken.
    pub snapshots: Vec<SnapshotHeader>,
    /// Every segment up to this id is known synced whole (an open sealed
    /// it), even when a crash leaves it the last one started: recovery
    /// never takes damage in it for an interrupted write.
    pub sealed_through: u64,
    /// What the directory holds: a key-value [`Store`](crate::Store) or a
    /// [`Log`](crate::Log). Each refuses to open the other's directory: a
    /// store would compact a log's records away, and a log would hand a
    /// store's records out as payloads.
    pub kind: DirKind,
    /// A log's records up to this sequence number were purged on purpose
    /// (`Log::purge_before`); reads below it answer `Error::Purged`. 0:
    /// nothing purged.
    pub purged_through: Seq,
    /// A log's dropped suffixes, oldest first (`Log::truncate_after`).
    pub truncations: Vec<TruncationMark>,
    /// A log's application metadata (a Raft vote, say), at most
    /// [`MAX_METADATA_BYTES`].
    #[serde(with = "serde_bytes")]
    pub metadata: Option<Vec<u8>>,
}

/// What a data directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirKind {
    /// A key-value [`Store`](crate::Store) (every directory written before
    /// manifest version 3).
    #[default]
    Kv,
    /// A [`Log`](crate::Log) of opaque payloads.
    Log,
}

impl DirKind {
    /// The name errors and tools use.
    pub fn name(self) -> &'static str {
        match self {
            DirKind::Kv => "kv",
            DirKind::Log => "log",
        }
    }
}

/// A dropped suffix of a log: every record with a sequence number above
/// `after_seq` in a segment whose id is at most `through_segment` is not
/// part of the log. Segments created after the mark continue at
/// `after_seq + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncationMark {
    /// The last record kept.
    pub after_seq: Seq,
    /// The last segment the mark applies to (the one sealed to make it).
    pub through_segment: u64,
}

/// A version-2 manifest's payload.
#[derive(Deserialize)]
struct ManifestV2 {
    generation: u64,
    next_segment_id: u64,
    segments: Vec<u64>,
    snapshots: Vec<SnapshotHeader>,
    sealed_through: u64,
}

/// A version-1 manifest's payload.
#[derive(Deserialize)]
struct ManifestV1 {
    generation: u64,
    next_segment_id: u64,
    segments: Vec<u64>,
    snapshots: Vec<SnapshotHeader>,
}

/// Why a manifest was not accepted: the byte offset and the reason.
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// Byte offset of the damage in the MANIFEST.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

fn damaged(offset: u64, reason: impl Into<String>) -> ManifestError {
    ManifestError {
        offset,
        reason: reason.into(),
    }
}

impl Manifest {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        codec::encode_value(self, &mut payload);
        let mut out = Vec::with_capacity(MANIFEST_HEADER_BYTES + payload.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = manifest_crc(&out[8..16], &payload);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses and checks a whole manifest file.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < MANIFEST_HEADER_BYTES {
            return Err(damaged(
                0,
                format!(
                    "manifest of {} bytes is shorter than its header",
                    bytes.len()
                ),
            ));
        }
        if bytes[0..8] != MANIFEST_MAGIC {
            return Err(damaged(0, "not a concordkv manifest (bad magic)"));
        }
        let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let payload = &bytes[MANIFEST_HEADER_BYTES..];
        if payload.len() != len {
            return Err(damaged(
                12,
                format!(
                    "manifest payload is {} bytes, its header says {len}",
                    payload.len()
                ),
            ));
        }
        let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let actual = manifest_crc(&bytes[8..16], payload);
        if stored != actual {
            return Err(damaged(
                16,
                format!(
                    "manifest checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
                ),
            ));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let at_payload = |reason| damaged(MANIFEST_HEADER_BYTES as u64, reason);
        let manifest: Manifest = match version {
            1 => {
                let old: ManifestV1 = codec::decode_value(payload).map_err(at_payload)?;
                Manifest {
                    generation: old.generation,
                    next_segment_id: old.next_segment_id,
                    segments: old.segments,
                    snapshots: old.snapshots,
                    ..Manifest::default()
                }
            }
            2 => {
                let old: ManifestV2 = codec::decode_value(payload).map_err(at_payload)?;
                Manifest {
                    generation: old.generation,
                    next_segment_id: old.next_segment_id,
                    segments: old.segments,
                    snapshots: old.snapshots,
                    sealed_through: old.sealed_through,
                    ..Manifest::default()
                }
            }
            MANIFEST_VERSION => codec::decode_value(payload).map_err(at_payload)?,
            _ => {
                return Err(damaged(
                    8,
                    format!("manifest version {version}, this build reads 1 to {MANIFEST_VERSION}"),
                ))
            }
        };
        if !manifest.segments.windows(2).all(|w| w[0] < w[1]) {
            return Err(damaged(
                MANIFEST_HEADER_BYTES as u64,
                "segment ids are not ascending",
            ));
        }
        if manifest
            .segments
            .last()
            .is_some_and(|last| *last >= manifest.next_segment_id)
        {
            return Err(damaged(
                MANIFEST_HEADER_BYTES as u64,
                "a listed segment id is not below next_segment_id",
            ));
        }
        if manifest
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
        {
            return Err(damaged(
                MANIFEST_HEADER_BYTES as u64,
                format!("metadata is over {MAX_METADATA_BYTES} bytes"),
            ));
        }
        if manifest.kind == DirKind::Kv
            && (manifest.purged_through != 0
                || !manifest.truncations.is_empty()
                || manifest.metadata.is_some())
        {
            return Err(damaged(
                MANIFEST_HEADER_BYTES as u64,
                "a key-value store's manifest with a log's purge, truncation or metadata",
            ));
        }
        Ok(manifest)
    }
}

fn manifest_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_every_flipped_byte_is_caught() {
        let manifest = Manifest {
            generation: 9,
            next_segment_id: 12,
            segments: vec![3, 7, 11],
            snapshots: vec![SnapshotHeader {
                kind: crate::format::snapshot::SnapshotKind::Full,
                from_seq: 0,
                to_seq: 40,
                entries: 3,
            }],
            sealed_through: 7,
            kind: DirKind::Log,
            purged_through: 30,
            truncations: vec![TruncationMark {
                after_seq: 35,
                through_segment: 9,
            }],
            metadata: Some(b"vote".to_vec()),
        };
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(manifest.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "byte {i}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A manifest file of `version` around `payload`, framed as every
    /// version is.
    fn framed(version: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MANIFEST_MAGIC);
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = manifest_crc(&bytes[8..16], payload);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_version_1_manifest_is_read_with_nothing_sealed() {
        let segments: Vec<u64> = vec![2, 3];
        let snapshots: Vec<SnapshotHeader> = Vec::new();
        let mut payload = Vec::new();
        codec::encode_value(&(5u64, 4u64, segments, snapshots), &mut payload);
        let bytes = framed(1, &payload);
        assert_eq!(
            Manifest::decode(&bytes),
            Ok(Manifest {
                generation: 5,
                next_segment_id: 4,
                segments: vec![2, 3],
                snapshots: Vec::new(),
                sealed_through: 0,
                kind: DirKind::Kv,
                purged_through: 0,
                truncations: Vec::new(),
                metadata: None,
            })
        );
    }

    #[test]
    fn a_version_2_manifest_is_read_as_a_key_value_store() {
        let segments: Vec<u64> = vec![2, 3];
        let snapshots: Vec<SnapshotHeader> = Vec::new();
        let mut payload = Vec::new();
        codec::encode_value(&(5u64, 4u64, segments, snapshots, 2u64), &mut payload);
        let bytes = framed(2, &payload);
        assert_eq!(
            Manifest::decode(&bytes),
            Ok(Manifest {
                generation: 5,
                next_segment_id: 4,
                segments: vec![2, 3],
                snapshots: Vec::new(),
                sealed_through: 2,
                kind: DirKind::Kv,
                purged_through: 0,
                truncations: Vec::new(),
                metadata: None,
            })
        );
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let manifest = Manifest {
            kind: DirKind::Log,
            metadata: Some(vec![0; MAX_METADATA_BYTES + 1]),
            ..Manifest::default()
        };
        assert!(Manifest::decode(&manifest.encode()).is_err());
    }
}
