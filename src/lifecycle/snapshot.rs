//! Snapshots: building them from the log, writing them crash-safely, and
//! loading the chain recovery starts from.
//!
//! The chain is the newest full snapshot followed by the incrementals that
//! continue it exactly (`from_seq` = the previous one's `to_seq`); the WAL
//! replays what comes after the chain's end. A snapshot is written to a
//! temporary file, synced, renamed and the directory synced before the
//! manifest lists it; only then are the segments and snapshots it makes
//! obsolete unlisted and removed.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::crash::crash_point;
use crate::entry::{Entry, Op, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::codec::{decode_entry, for_each_op, Change};
use crate::format::manifest::DirKind;
use crate::format::record::{encode_record, Frame, MAX_PAYLOAD_BYTES};
use crate::format::segment::{segment_path, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::format::snapshot::{SnapshotHeader, SnapshotKind, SNAPSHOT_HEADER_BYTES};
use crate::fs::{FileSystem, WritableFile};
use crate::lifecycle::background::Cancel;
use crate::lifecycle::manifest::{remove_retired, ManifestStore};
use crate::lifecycle::pacing::Pacer;
use crate::log::reader::FrameReader;
use crate::log::scan::walk_frames;
use crate::log::segment::started_segments;
use crate::state::{now_ms, Slot, Tree};

/// How much of a snapshot is written, and its writeback started, at a time.
/// Small, so that a WAL sync never finds more than this of ours ahead of it
/// at the disk: with 1 MiB pieces, appends during the write had a p99 of
/// 1 ms against 0.4 ms without (16 `always` writers, 2 cores).
const WRITEBACK_CHUNK_BYTES: usize = 64 << 10;

/// Net state by key. Hashed while it is built, sorted once when written.
/// foldhash, not SipHash: a compaction hashes every logged key, and
/// foldhash is several times faster while still seeded per map, so clients
/// cannot aim keys at one bucket.
pub(crate) type NetState = HashMap<Vec<u8>, Net, foldhash::fast::RandomState>;

/// One key's net state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Net {
    /// The sequence number of its last change.
    pub seq: Seq,
    /// Its value (`None`: deleted, kept only in incremental snapshots).
    pub value: Option<Vec<u8>>,
    /// Its deadline, if it has one (milliseconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

impl Net {
    /// What a snapshot holds for `key`.
    fn into_op(self, key: Vec<u8>) -> Op {
        match (self.value, self.expires_at) {
            (Some(value), None) => Op::Set { key, value },
            (Some(value), Some(expires_at)) => Op::SetExpiring {
                key,
                value,
                expires_at,
            },
            (None, _) => Op::Delete { key },
        }
    }

    /// Whether a full snapshot keeps it: set, and not expired by `now`. An
    /// expired key is invisible to every read and only a later write can
    /// give it a value again, so leaving it out changes nothing a reader
    /// can see.
    fn is_live(&self, now: u64) -> bool {
        self.value.is_some() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// The state the snapshot chain describes.
#[derive(Debug, Default)]
pub(crate) struct ChainState {
    pub state: NetState,
    /// The last sequence number the chain covers (0: no snapshot).
    pub covered: Seq,
    /// The snapshots in the chain, oldest first.
    pub chain: Vec<SnapshotHeader>,
}

fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption(Corruption {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    })
}

/// The path of a snapshot in `dir`.
pub(crate) fn snapshot_path(dir: &Path, header: &SnapshotHeader) -> PathBuf {
    dir.join(header.file_name())
}

/// The snapshots to load: the newest full one and the incrementals that
/// continue it without a gap.
pub(crate) fn select_chain(listed: &[SnapshotHeader]) -> Vec<SnapshotHeader> {
    let mut chain: Vec<SnapshotHeader> = listed
        .iter()
        .filter(|s| s.kind == SnapshotKind::Full)
        .max_by_key(|s| s.to_seq)
        .into_iter()
        .copied()
        .collect();
    let mut covered = chain.last().map_or(0, |s| s.to_seq);
    while let Some(next) = listed.iter().find(|s| {
        s.kind == SnapshotKind::Incremental && s.from_seq == covered && s.to_seq > covered
    }) {
        covered = next.to_seq;
        chain.push(*next);
    }
    chain
}

/// Loads and checks the chain the manifest lists.
pub(crate) fn load_chain(
    fs: &dyn FileSystem,
    config: &Config,
    listed: &[SnapshotHeader],
    cancel: &Cancel,
) -> Result<ChainState> {
    let mut loaded = ChainState::default();
    let mut buf = Vec::new();
    for header in select_chain(listed) {
        let path = snapshot_path(&config.data_dir, &header);
        // Sized up front (the header counts the entries), not regrown and
        // rehashed a dozen times on the way.
        loaded
            .state
            .reserve(usize::try_from(header.entries).unwrap_or(0).min(1 << 24));
        let read = read_snapshot(fs, &path, &header, &mut buf, cancel, |seq, op| {
            let (key, value, expires_at) = match op {
                Op::Set { key, value } => (key, Some(value), None),
                Op::SetExpiring {
                    key,
                    value,
                    expires_at,
                } => (key, Some(value), Some(expires_at)),
                Op::Delete { key } => (key, None, None),
                Op::Clear => return loaded.state.clear(),
            };
            loaded.state.insert(
                key,
                Net {
                    seq,
                    value,
                    expires_at,
                },
            );
        });
        if let Err(e) = read {
            return Err(cancel.fail(e, loaded));
        }
        loaded.covered = header.to_seq;
        loaded.chain.push(header);
    }
    loaded.state.retain(|_, net| net.value.is_some());
    Ok(loaded)
}

/// The state the chain describes, as recovery starts the store's state from.
pub(crate) struct Base {
    /// Every live key and its value.
    pub state: Tree,
    /// The last sequence number the chain covers (0: no snapshot).
    pub covered: Seq,
    /// Snapshots read.
    pub snapshots: usize,
}

/// Loads the chain for recovery. A lone full snapshot (the usual chain) is
/// read straight into key order, which its file already has, with no map to
/// hash into and sort out of; a longer chain is merged through a map.
pub(crate) fn load_base(
    fs: &dyn FileSystem,
    config: &Config,
    listed: &[SnapshotHeader],
) -> Result<Base> {
    let chain = select_chain(listed);
    let [header] = chain.as_slice() else {
        let loaded = load_chain(fs, config, listed, &Cancel::default())?;
        let mut state = Tree::new();
        for (key, net) in loaded.state {
            if let Some(value) = net.value {
                state.insert(&key, &value, net.expires_at);
            }
        }
        return Ok(Base {
            state,
            covered: loaded.covered,
            snapshots: loaded.chain.len(),
        });
    };
    let path = snapshot_path(&config.data_dir, header);
    let mut slots = Vec::with_capacity(usize::try_from(header.entries).unwrap_or(0).min(1 << 24));
    let mut deadlines = Vec::new();
    let never = Cancel::default();
    read_snapshot(
        fs,
        &path,
        header,
        &mut Vec::new(),
        &never,
        |_, op| match op {
            Op::Set { key, value } => slots.push(Slot::new(&key, &value)),
            Op::SetExpiring {
                key,
                value,
                expires_at,
            } => {
                slots.push(Slot::new(&key, &value));
                deadlines.push((key, expires_at));
            }
            // A full snapshot holds neither (`read_snapshot` refuses them).
            Op::Delete { .. } | Op::Clear => {}
        },
    )?;
    Ok(Base {
        state: Tree::build(slots, deadlines),
        covered: header.to_seq,
        snapshots: 1,
    })
}

/// Reads a snapshot file that no manifest lists (one copied from another
/// store, a Raft snapshot received from a leader, say): its own header says
/// what it covers, and every entry is checked (checksum, sequence range,
/// count) before the next is read. Streams the file; never holds it whole.
pub fn read_snapshot_file(path: &Path, mut visit: impl FnMut(Seq, Op)) -> Result<SnapshotHeader> {
    let fs = crate::fs::RealFs;
    let mut buf = Vec::new();
    let header = {
        let mut reader = FrameReader::new(&fs, path, &mut buf, MAX_PAYLOAD_BYTES);
        let bytes = reader
            .peek(SNAPSHOT_HEADER_BYTES)
            .map_err(|e| Error::io("read snapshot", path, e))?;
        SnapshotHeader::decode(bytes)
            .map_err(|(offset, reason)| corruption(path, offset, reason))?
    };
    read_snapshot(&fs, path, &header, &mut buf, &Cancel::default(), &mut visit)?;
    Ok(header)
}

/// Reads every entry of a snapshot into `visit`, checking it against the
/// header the manifest lists for it; the file goes through `buf` a piece at
/// a time. Stops with [`Error::ShutDown`] once `cancel` is set.
pub(crate) fn read_snapshot(
    fs: &dyn FileSystem,
    path: &Path,
    listed: &SnapshotHeader,
    buf: &mut Vec<u8>,
    cancel: &Cancel,
    mut visit: impl FnMut(Seq, Op),
) -> Result<()> {
    let io_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            corruption(path, 0, "listed in MANIFEST but missing")
        } else {
            Error::io("read snapshot", path, e)
        }
    };
    let mut reader = FrameReader::new(fs, path, buf, MAX_PAYLOAD_BYTES);
    let header = SnapshotHeader::decode(reader.peek(SNAPSHOT_HEADER_BYTES).map_err(io_error)?)
        .map_err(|(offset, reason)| corruption(path, offset, reason))?;
    if header != *listed {
        return Err(corruption(
            path,
            0,
            format!("header {header:?} differs from the manifest's {listed:?}"),
        ));
    }
    reader.consume(SNAPSHOT_HEADER_BYTES);
    let mut entries = 0u64;
    let full = header.kind == SnapshotKind::Full;
    while !reader.at_end().map_err(io_error)? {
        cancel.check()?;
        let offset = reader.offset();
        let (seq, op, size) = match reader.frame().map_err(io_error)? {
            Frame::Record {
                seq, payload, size, ..
            } => {
                let entry =
                    decode_entry(payload).map_err(|reason| corruption(path, offset, reason))?;
                (seq, entry, size)
            }
            Frame::Unwritten => {
                return Err(corruption(path, offset, "zeros where an entry should be"))
            }
            Frame::Damaged(reason) => return Err(corruption(path, offset, reason)),
        };
        if seq <= header.from_seq || seq > header.to_seq {
            return Err(corruption(
                path,
                offset,
                format!("entry sequence {seq} outside the snapshot's range"),
            ));
        }
        let op = match op {
            Entry::Op(Op::Delete { .. }) if full => {
                return Err(corruption(path, offset, "a deletion in a full snapshot"));
            }
            Entry::Op(Op::Clear) if full || entries > 0 => {
                return Err(corruption(
                    path,
                    offset,
                    "a clear that is not the first entry of an incremental snapshot",
                ));
            }
            Entry::Op(op) => op,
            Entry::Batch(_) => return Err(corruption(path, offset, "a batch in a snapshot")),
            Entry::Raw(_) => return Err(corruption(path, offset, "a raw payload in a snapshot")),
        };
        visit(seq, op);
        entries += 1;
        reader.consume(size);
    }
    if entries != header.entries {
        return Err(corruption(
            path,
            reader.offset(),
            format!("{entries} entries, the header says {}", header.entries),
        ));
    }
    Ok(())
}

/// A net state being built from the log.
#[derive(Debug, Default)]
struct Building {
    state: NetState,
    /// The last clear applied: every key changed before it is gone, those
    /// a snapshot building on an older one does not hold included.
    cleared: Option<Seq>,
}

impl Building {
    /// Applies one logged operation. A key already present keeps its
    /// allocations: rewriting a hot key a million times allocates once.
    fn apply(&mut self, seq: Seq, change: Change<'_>) {
        let (key, value, expires_at) = match change {
            Change::Put {
                key,
                value,
                expires_at,
            } => (key, Some(value), expires_at),
            Change::Delete { key } => (key, None, None),
            Change::Clear => {
                self.state.clear();
                self.cleared = Some(seq);
                return;
            }
        };
        let Some(net) = self.state.get_mut(key) else {
            let net = Net {
                seq,
                value: value.map(<[u8]>::to_vec),
                expires_at,
            };
            self.state.insert(key.to_vec(), net);
            return;
        };
        net.seq = seq;
        net.expires_at = expires_at;
        match (&mut net.value, value) {
            (Some(old), Some(new)) => {
                old.clear();
                old.extend_from_slice(new);
            }
            (old, new) => *old = new.map(<[u8]>::to_vec),
        }
    }
}

/// What [`apply_log`] read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogRead {
    /// Operations applied (a batch counts each of its operations).
    pub ops: u64,
    /// Bytes of the segments read: headers and records up to `upto`.
    pub bytes: u64,
}

/// Applies the WAL records in `(after, upto]` of the listed segments, and
/// fails unless it saw every one of them, in order: a snapshot missing a
/// record would retire the only copy of it.
fn apply_log(
    fs: &dyn FileSystem,
    config: &Config,
    segments: &[u64],
    after: Seq,
    upto: Seq,
    state: &mut Building,
    cancel: &Cancel,
) -> Result<LogRead> {
    let mut read = LogRead::default();
    let mut expected = after + 1;
    let mut buf = Vec::new();
    // Where reading ended, for the error if records are missing.
    let mut reached = (config.data_dir.clone(), 0);
    for &id in segments {
        if expected > upto {
            break;
        }
        let path = segment_path(&config.data_dir, id);
        let io_error = |e| Error::io("read segment", &path, e);
        let mut reader = FrameReader::new(fs, &path, &mut buf, MAX_PAYLOAD_BYTES);
        let Ok(header) =
            SegmentHeader::decode(reader.peek(SEGMENT_HEADER_BYTES).map_err(io_error)?)
        else {
            continue;
        };
        reader.set_layout(header.layout());
        reader.consume(SEGMENT_HEADER_BYTES);
        read.bytes += SEGMENT_HEADER_BYTES as u64;
        // The walk stops at the first frame that is not intact: the active
        // segment may hold a write in progress past `upto`, and a record
        // missing below it fails the check after the loop.
        let mut failed = None;
        let walk = walk_frames(&mut reader, header.first_seq, |seq, payload, offset| {
            if seq > upto {
                return Ok(ControlFlow::Break(()));
            }
            if let Err(cancelled) = cancel.check() {
                failed = Some(cancelled);
                return Ok(ControlFlow::Break(()));
            }
            if seq >= expected {
                if seq != expected {
                    failed = Some(corruption(
                        &path,
                        offset,
                        format!("sequence {seq}, expected {expected}"),
                    ));
                    return Ok(ControlFlow::Break(()));
                }
                let applied = for_each_op(payload, |change| {
                    state.apply(seq, change);
                    read.ops += 1;
                });
                if let Err(reason) = applied {
                    failed = Some(corruption(&path, offset, reason));
                    return Ok(ControlFlow::Break(()));
                }
                expected += 1;
            }
            Ok(ControlFlow::Continue(()))
        })
        .map_err(io_error)?;
        if let Some(err) = failed {
            return Err(err);
        }
        read.bytes += walk.offset - SEGMENT_HEADER_BYTES as u64;
        reached = (path.clone(), walk.offset);
    }
    if expected != upto + 1 {
        // Listed segments that lack records the manifest says they hold.
        return Err(corruption(
            &reached.0,
            reached.1,
            format!(
                "the log holds records up to {}, not the {upto} the snapshot must cover",
                expected - 1
            ),
        ));
    }
    Ok(read)
}

/// A snapshot built in memory, not yet written.
pub(crate) struct Built {
    pub header: SnapshotHeader,
    state: NetState,
    /// The clear an incremental snapshot starts with, if its range has one.
    cleared: Option<Seq>,
    /// The chain it was built on (empty for an incremental snapshot).
    pub chain: Vec<SnapshotHeader>,
    /// What was read from the log after the chain.
    pub log: LogRead,
    listed: Vec<SnapshotHeader>,
    segments: Vec<u64>,
}

impl Built {
    /// Frees what was built, yielding to a waited job (see
    /// [`Cancel::free_map`]).
    pub(crate) fn discard(self, cancel: &Cancel) {
        cancel.free_map(self.state);
    }

    /// Keys whose last operation in the log read is a set: what the log
    /// contributes to a full snapshot.
    pub fn live_from_log(&self) -> u64 {
        let after = self
            .header
            .from_seq
            .max(self.chain.last().map_or(0, |s| s.to_seq));
        self.state
            .values()
            .filter(|net| net.seq > after && net.value.is_some())
            .count() as u64
    }
}

/// Builds the snapshot of `kind` covering the log up to `upto` (which must be
/// durable); `None` when the chain already covers `upto`.
pub(crate) fn build_snapshot(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
    kind: SnapshotKind,
    upto: Seq,
    cancel: &Cancel,
) -> Result<Option<Built>> {
    if manifest.kind() == DirKind::Log {
        // A snapshot keeps only the net effect on keys: of a log's
        // payloads it would keep nothing, and then retire their segments.
        return Err(Error::InvalidRequest(
            "a Log has no snapshots or compaction; use purge_before".into(),
        ));
    }
    let listed = manifest.snapshots();
    let covered = select_chain(&listed).last().map_or(0, |s| s.to_seq);
    if upto <= covered {
        return Ok(None);
    }
    let segments = manifest.segments();
    let (from_seq, state, chain) = match kind {
        SnapshotKind::Full => {
            let loaded = load_chain(fs, config, &listed, cancel)?;
            (0, loaded.state, loaded.chain)
        }
        SnapshotKind::Incremental => (covered, NetState::default(), Vec::new()),
    };
    let mut building = Building {
        state,
        cleared: None,
    };
    let log = match apply_log(fs, config, &segments, covered, upto, &mut building, cancel) {
        Ok(log) => log,
        Err(e) => return Err(cancel.fail(e, building)),
    };
    let Building { mut state, cleared } = building;
    let cleared = match kind {
        SnapshotKind::Full => {
            let now = now_ms();
            state.retain(|_, net| net.is_live(now));
            // A full snapshot is the whole state: a clear needs no entry.
            None
        }
        SnapshotKind::Incremental => cleared,
    };
    Ok(Some(Built {
        header: SnapshotHeader {
            kind,
            from_seq,
            to_seq: upto,
            entries: state.len() as u64 + u64::from(cleared.is_some()),
        },
        state,
        cleared,
        chain,
        log,
        listed,
        segments,
    }))
}

/// A snapshot written and synced under its own name, not yet listed: the
/// segments and snapshots listing it retires.
pub(crate) struct Written {
    pub header: SnapshotHeader,
    pub segments: Vec<u64>,
    pub obsolete: Vec<SnapshotHeader>,
}

/// Writes a built snapshot at `write_bytes_per_sec` (0: no limit) and says
/// what listing it retires. Listing it is the rotator's (see
/// `crate::actors::rotator`); until then the file is unread, and the next
/// open removes it if it is never listed.
pub(crate) fn write_built(
    fs: &dyn FileSystem,
    config: &Config,
    built: Built,
    write_bytes_per_sec: u64,
    cancel: &Cancel,
) -> Result<Written> {
    let Built {
        header,
        state,
        cleared,
        listed,
        segments,
        ..
    } = built;
    write_snapshot(
        fs,
        config,
        (&header, cleared),
        state,
        write_bytes_per_sec,
        cancel,
    )?;
    let obsolete = obsolete_snapshots(&listed, header.kind, config.snapshot.keep);
    let segments = covered_segments(fs, &config.data_dir, &segments, header.to_seq)?;
    Ok(Written {
        header,
        segments,
        obsolete,
    })
}

/// Removes the files a listed snapshot retired, or, with an archive
/// configured, moves them aside until the archive holds them. The snapshot
/// is in place whatever happens here: a file left behind is debris the next
/// open removes (or holds), not a failed snapshot.
pub(crate) fn remove_obsolete(
    fs: &dyn FileSystem,
    config: &Config,
    retired: &[PathBuf],
    cancel: &Cancel,
) {
    let removed = if config.archive.enabled() {
        crate::archive::pending::hold(fs, &config.data_dir, retired)
    } else {
        remove_retired(fs, retired, config.maintenance.delete_bytes_per_sec, cancel)
    };
    match removed {
        Ok(()) => {}
        // Nothing went wrong: shutdown stopped the removal.
        Err(Error::ShutDown) => {
            tracing::debug!(
                "removal of obsolete files stopped by shutdown; the next open removes them"
            );
        }
        Err(e) => {
            tracing::warn!(%e, "an obsolete file was not removed; the next open removes it");
        }
    }
}

/// Builds and writes (at `write_bytes_per_sec`, 0: no limit) a snapshot
/// covering the log up to `upto` (which must be durable), for the rotator
/// to list. Returns `None` when the chain already covers `upto`.
pub(crate) fn take_snapshot(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
    (kind, upto): (SnapshotKind, Seq),
    write_bytes_per_sec: u64,
    cancel: &Cancel,
) -> Result<Option<Written>> {
    build_snapshot(fs, manifest, config, kind, upto, cancel)?
        .map(|built| write_built(fs, config, built, write_bytes_per_sec, cancel))
        .transpose()
}

/// What a new snapshot makes obsolete: after a full one, every incremental
/// (all end at or before it) and the full ones beyond the newest `keep`
/// (the new one included); an incremental only extends the chain.
fn obsolete_snapshots(
    listed: &[SnapshotHeader],
    kind: SnapshotKind,
    keep: u64,
) -> Vec<SnapshotHeader> {
    if kind == SnapshotKind::Incremental {
        return Vec::new();
    }
    let mut fulls: Vec<&SnapshotHeader> = listed
        .iter()
        .filter(|s| s.kind == SnapshotKind::Full)
        .collect();
    fulls.sort_by_key(|s| std::cmp::Reverse(s.to_seq));
    let keep_old = usize::try_from(keep)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let kept: Vec<&SnapshotHeader> = fulls.into_iter().take(keep_old).collect();
    listed
        .iter()
        .filter(|s| !kept.contains(s))
        .copied()
        .collect()
}

/// Segments all of whose records are at or below `upto`: every segment
/// whose successor starts at or below `upto + 1`. The newest never is.
fn covered_segments(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: &[u64],
    upto: Seq,
) -> Result<Vec<u64>> {
    Ok(started_segments(fs, dir, segments)?
        .windows(2)
        .filter(|pair| pair[1].2 <= upto + 1)
        .map(|pair| pair[0].0)
        .collect())
}

/// Writes a snapshot crash-safely: temporary file, fsync, rename, directory
/// fsync; at `write_bytes_per_sec` (0: no limit). Cancelled, it removes the
/// temporary file and fails with the cancellation's error.
fn write_snapshot(
    fs: &dyn FileSystem,
    config: &Config,
    (header, cleared): (&SnapshotHeader, Option<Seq>),
    state: NetState,
    write_bytes_per_sec: u64,
    cancel: &Cancel,
) -> Result<()> {
    let dir = config.data_dir.as_path();
    let path = snapshot_path(dir, header);
    let temp = path.with_extension("snap.tmp");
    if let Err(e) = fs.remove(&temp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(Error::io("remove temporary snapshot", temp, e));
        }
    }
    let mut entries: Vec<_> = state.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let file = fs
        .create(&temp, 0)
        .map_err(|e| Error::io("create snapshot", &temp, e))?;
    let written = write_entries(
        file.as_ref(),
        &temp,
        header,
        cleared,
        entries,
        write_bytes_per_sec,
        cancel,
    );
    if let Err(e) = written {
        drop(file);
        if e.is_cancellation() {
            // The next open would remove it too; no need to leave it.
            if let Err(removal) = fs.remove(&temp) {
                tracing::warn!(file = %temp.display(), %removal, "a cancelled snapshot's temporary file was not removed; the next open removes it");
            }
        }
        return Err(e);
    }
    crash_point("snapshot.after_temp_sync");
    fs.rename(&temp, &path)
        .map_err(|e| Error::io("rename snapshot", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    crash_point("snapshot.after_rename");
    Ok(())
}

/// Encodes and writes a snapshot's entries into its temporary file, and
/// syncs it.
fn write_entries(
    file: &dyn WritableFile,
    temp: &Path,
    header: &SnapshotHeader,
    cleared: Option<Seq>,
    entries: Vec<(Vec<u8>, Net)>,
    write_bytes_per_sec: u64,
    cancel: &Cancel,
) -> Result<()> {
    // Encoded and written a chunk at a time through one buffer (never the
    // whole file in fresh memory), starting each chunk's writeback and
    // waiting for the previous one's, at the given rate: the disk sees
    // a steady trickle, never a large dirty set that the WAL's fdatasync
    // would queue behind (RocksDB's bytes_per_sync and rate limiter).
    let mut pacer = Pacer::new(write_bytes_per_sec);
    let mut chunk = Vec::with_capacity(WRITEBACK_CHUNK_BYTES * 2);
    chunk.extend_from_slice(&header.encode());
    if let Some(seq) = cleared {
        encode_record(seq, &Entry::Op(Op::Clear), &mut chunk);
    }
    let mut offset = 0u64;
    let mut previous: Option<(u64, u64)> = None;
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() || !chunk.is_empty() {
        if let Err(e) = cancel.check() {
            return Err(cancel.fail(e, entries));
        }
        while chunk.len() < WRITEBACK_CHUNK_BYTES {
            let Some((key, net)) = entries.next() else {
                break;
            };
            let seq = net.seq;
            encode_record(seq, &Entry::Op(net.into_op(key)), &mut chunk);
        }
        file.write_at(&chunk, offset)
            .map_err(|e| Error::io("write snapshot", temp, e))?;
        file.start_writeback(offset, chunk.len() as u64);
        if let Some((at, len)) = previous {
            file.wait_writeback(at, len);
        }
        pacer.pace(chunk.len() as u64);
        previous = Some((offset, chunk.len() as u64));
        offset += chunk.len() as u64;
        chunk.clear();
    }
    file.sync_all()
        .map_err(|e| Error::io("sync snapshot", temp, e))
}
