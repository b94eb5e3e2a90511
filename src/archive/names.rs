//! How archived objects are named. A name carries what a restore needs to
//! choose the object and check it, so that one listing plans a restore and
//! no object has to be read to learn what it holds; zero-padded numbers
//! make a listing's order the log's order.
//!
//! - `wal/<segment id>/<start>-<end>_<first seq>-<last seq>_<crc>`: bytes
//!   `start..end` of a segment file (the header too, in the chunk at 0),
//!   whole records `first..=last`;
//! - `snap/<snapshot file name>_<crc>`: a snapshot file, whole;
//! - `manifest/<generation>_<crc>`: a `MANIFEST`, whole.
//!
//! `<crc>` is the CRC-32 (IEEE, as `crc32fast` computes it) of the object's
//! bytes, in 8 hex digits.

use crate::archive::chunks::CHUNK_BYTES;
use crate::entry::Seq;
use crate::format::record::{MAX_PAYLOAD_BYTES, SEGMENT_FRAME_HEADER_BYTES};
use crate::format::snapshot::is_snapshot_file_name;

/// The longest chunk the archiver makes: a chunk ends at the first record
/// boundary at or past [`CHUNK_BYTES`], so it holds less than that and one
/// whole frame of the largest payload the format allows. A name that says
/// more is not one of ours, and a download never holds more in memory.
pub(crate) const MAX_CHUNK_BYTES: u64 =
    CHUNK_BYTES + (SEGMENT_FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES) as u64;

/// A chunk of a segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ChunkName {
    pub segment: u64,
    pub start: u64,
    pub end: u64,
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub crc: u32,
}

impl ChunkName {
    /// The chunk's size in bytes, as its name says.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// What an archived object is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectName {
    Chunk(ChunkName),
    Snapshot { file_name: String, crc: u32 },
    Manifest { generation: u64, crc: u32 },
}

impl ObjectName {
    /// The name under the archive's prefix.
    pub fn render(&self) -> String {
        match self {
            ObjectName::Chunk(c) => format!(
                "wal/{:020}/{:012}-{:012}_{:020}-{:020}_{:08x}",
                c.segment, c.start, c.end, c.first_seq, c.last_seq, c.crc
            ),
            ObjectName::Snapshot { file_name, crc } => format!("snap/{file_name}_{crc:08x}"),
            ObjectName::Manifest { generation, crc } => {
                format!("manifest/{generation:020}_{crc:08x}")
            }
        }
    }

    /// Parses a name under the prefix; `None` for a name the archive never
    /// gives.
    pub fn parse(name: &str) -> Option<ObjectName> {
        let (dir, rest) = name.split_once('/')?;
        match dir {
            "wal" => {
                let (segment, rest) = rest.split_once('/')?;
                let mut parts = rest.split('_');
                let (bytes, seqs, crc) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                let (start, end) = bytes.split_once('-')?;
                let (first, last) = seqs.split_once('-')?;
                let chunk = ChunkName {
                    segment: number(segment, 20)?,
                    start: number(start, 12)?,
                    end: number(end, 12)?,
                    first_seq: number(first, 20)?,
                    last_seq: number(last, 20)?,
                    crc: hex(crc)?,
                };
                (chunk.start < chunk.end
                    && chunk.len() <= MAX_CHUNK_BYTES
                    && chunk.first_seq <= chunk.last_seq)
                    .then_some(ObjectName::Chunk(chunk))
            }
            "snap" => {
                let (file_name, crc) = rest.rsplit_once('_')?;
                if !is_snapshot_file_name(file_name) {
                    return None;
                }
                Some(ObjectName::Snapshot {
                    file_name: file_name.to_string(),
                    crc: hex(crc)?,
                })
            }
            "manifest" => {
                let (generation, crc) = rest.split_once('_')?;
                Some(ObjectName::Manifest {
                    generation: number(generation, 20)?,
                    crc: hex(crc)?,
                })
            }
            _ => None,
        }
    }
}

fn number(text: &str, digits: usize) -> Option<u64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn hex(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

/// The chunks of one segment that run on from byte 0 as far as any do: a
/// chunk whose upload was not known to have succeeded is uploaded again,
/// perhaps longer, so chunks may overlap, but each starts and ends on a
/// record boundary of the same bytes, so any run of them from 0 is the
/// segment's prefix. Also the first byte range no chunk reaches that a
/// later one begins after: a gap.
pub(crate) fn furthest_run(chunks: &[ChunkName]) -> (Vec<ChunkName>, Option<(u64, u64)>) {
    let mut sorted = chunks.to_vec();
    sorted.sort();
    // The chunk through which each reachable end was first reached.
    let mut via: std::collections::BTreeMap<u64, Option<ChunkName>> = [(0, None)].into();
    for chunk in &sorted {
        if via.contains_key(&chunk.start) && !via.contains_key(&chunk.end) {
            via.insert(chunk.end, Some(*chunk));
        }
    }
    let reach = via.keys().next_back().copied().unwrap_or(0);
    let mut run = Vec::new();
    let mut at = reach;
    while let Some(Some(chunk)) = via.get(&at) {
        run.push(*chunk);
        at = chunk.start;
    }
    run.reverse();
    let gap = sorted
        .iter()
        .map(|c| c.start)
        .filter(|start| *start > reach)
        .min()
        .map(|start| (reach, start));
    (run, gap)
}

/// The CRC an object's name carries for `bytes`.
pub(crate) fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_log_order() {
        let chunk = |segment, start, end, first, last| {
            ObjectName::Chunk(ChunkName {
                segment,
                start,
                end,
                first_seq: first,
                last_seq: last,
                crc: 0xdead_beef,
            })
        };
        let names = [
            chunk(2, 0, 100, 1, 5),
            chunk(2, 100, 4096, 6, 90),
            chunk(10, 0, 64, 91, 91),
            ObjectName::Snapshot {
                file_name: "00000000000000000090.full.snap".into(),
                crc: 7,
            },
            ObjectName::Manifest {
                generation: 12,
                crc: 0xffff_ffff,
            },
        ];
        let rendered: Vec<String> = names.iter().map(ObjectName::render).collect();
        for (name, text) in names.iter().zip(&rendered) {
            assert_eq!(ObjectName::parse(text).as_ref(), Some(name), "{text}");
        }
        let wal: Vec<&String> = rendered.iter().filter(|n| n.starts_with("wal/")).collect();
        let mut sorted = wal.clone();
        sorted.sort();
        assert_eq!(wal, sorted);
    }

    #[test]
    fn the_furthest_run_passes_over_overlaps_and_names_a_gap() {
        let chunk = |start, end| ChunkName {
            segment: 1,
            start,
            end,
            first_seq: start + 1,
            last_seq: end,
            crc: 0,
        };
        // [100, 500) was uploaded, then (unconfirmed) again as [100, 700).
        let chunks = [
            chunk(0, 100),
            chunk(100, 500),
            chunk(100, 700),
            chunk(700, 900),
        ];
        let (run, gap) = furthest_run(&chunks);
        assert_eq!(run, [chunk(0, 100), chunk(100, 700), chunk(700, 900)]);
        assert_eq!(gap, None);
        let (run, gap) = furthest_run(&[chunk(0, 100), chunk(300, 400)]);
        assert_eq!(run, [chunk(0, 100)]);
        assert_eq!(gap, Some((100, 300)));
        assert_eq!(furthest_run(&[chunk(50, 60)]), (vec![], Some((0, 50))));
    }

    #[test]
    fn foreign_names_are_not_taken_for_archive_objects() {
        for name in [
            "wal/1/0-10_1-2_00000000",
            "wal/00000000000000000001/000000000010-000000000000_00000000000000000001-00000000000000000001_00000000",
            // Longer than any chunk the archiver makes (a terabyte).
            "wal/00000000000000000001/000000000000-999999999999_00000000000000000001-00000000000000000001_00000000",
            "snap/x.full.snap_00000000",
            "manifest/00000000000000000001_0000000g",
            "other/thing",
            "wal",
        ] {
            assert_eq!(ObjectName::parse(name), None, "{name}");
        }
    }
}
