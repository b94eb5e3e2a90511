//! [`Log`]: the write-ahead log on its own, holding opaque payloads (the
//! shape of raft-engine's or okaywal's logs), for example as a Raft log
//! store.
//!
//! It is the same machinery as [`Store`]: the same inbox, WAL actor, group
//! commit, sync modes, rotation, recovery and metrics, with the same
//! acknowledgement guarantees; a `Log` is a `Store` handle opened on a
//! directory whose manifest says `log`, appending [`Entry::Raw`] records.
//! What it does not have is what only makes sense for keys: no key-value
//! state (it stays empty), and no snapshots or compaction, which keep only
//! the net effect on keys and so would throw a log's payloads away. The
//! directory's kind is recorded in the manifest so that neither kind can
//! ever open (and so compact, or misread) the other's directory.

use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::actors::messages::{PurgeLog, SetMetadata};
use crate::actors::rotator;
use crate::actors::wal::WalShared;
use crate::config::Config;
use crate::entry::{Entry, Record, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::manifest::{DirKind, MAX_METADATA_BYTES};
use crate::fs::{FileSystem, RealFs};
use crate::lifecycle::background::Priority;
use crate::log::admission::{estimated_bytes, Admission};
use crate::log::read::LogRead;
use crate::log::recovery::{Recovery, TruncatedTail};
use crate::log::subscription::Subscription;
use crate::stats::StoreStats;
use crate::store::{Pending, Store};

/// Bytes a raw record's encoding adds to its payload, at most: the variant
/// index and a varint length.
pub(crate) const RAW_ENCODING_OVERHEAD: u64 = 16;

/// An open log of opaque payloads, each with its own sequence number.
/// Cheap to clone; every clone appends to the same log.
///
/// Sequence numbers start at 1, are contiguous and never reused, so a
/// payload's sequence number can serve as a Raft log index. Must be opened
/// and used inside an actix `System`, as a [`Store`].
#[derive(Clone)]
pub struct Log {
    store: Store,
    /// Held by a purge or a truncation: each decides from the log's ends,
    /// which the other moves.
    ends: Arc<tokio::sync::Mutex<()>>,
}

/// What opening a [`Log`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LogRecovery {
    /// The first sequence number the log holds (or will hold, if it is empty).
    pub first_seq: Seq,
    /// The last recovered sequence number (0 for a log never appended to).
    pub last_seq: Seq,
    /// Records recovered (each handed to the replay callback, if any).
    pub replayed: u64,
    /// The torn tail that was cut, if any.
    pub truncated: Option<TruncatedTail>,
    /// Damaged regions passed over (only in `skip_corrupt` mode).
    pub skipped: Vec<Corruption>,
    /// Segments read.
    pub segments: usize,
    /// Time recovery took.
    pub elapsed: Duration,
}

impl Log {
    /// Opens (or creates) the log in `config.data_dir`. A directory holding
    /// a key-value [`Store`] is refused with [`Error::WrongKind`]. Snapshot
    /// and compaction settings of `config` are not used.
    pub async fn open(config: Config) -> Result<(Log, LogRecovery)> {
        Log::open_replaying(config, |_, _| {}).await
    }

    /// As [`Log::open`], handing each recovered record to `on_record` as it
    /// is read, in sequence order. Records are streamed from the files,
    /// never collected: a log of any length opens in constant memory (an
    /// application that wants the records later reads them with
    /// [`Log::read`] instead).
    pub async fn open_replaying(
        config: Config,
        on_record: impl FnMut(Seq, &[u8]) + Send + 'static,
    ) -> Result<(Log, LogRecovery)> {
        Log::open_with_fs(config, Arc::new(RealFs), on_record).await
    }

    /// As [`Log::open_replaying`], through another file-system implementation.
    pub(crate) async fn open_with_fs(
        config: Config,
        fs: Arc<dyn FileSystem>,
        mut on_record: impl FnMut(Seq, &[u8]) + Send + 'static,
    ) -> Result<(Log, LogRecovery)> {
        let (store, recovery) = Store::open_kind(config, fs, DirKind::Log, move |record| {
            // The kind check at open keeps a store's records out of a log
            // directory, so every record here is raw.
            if let Entry::Raw(payload) = &record.entry {
                on_record(record.seq, payload);
            }
        })
        .await?;
        let log = Log {
            store,
            ends: Arc::new(tokio::sync::Mutex::new(())),
        };
        let recovery = log.log_recovery(recovery);
        Ok((log, recovery))
    }

    fn log_recovery(&self, recovery: Recovery) -> LogRecovery {
        LogRecovery {
            first_seq: self.first_seq(),
            last_seq: recovery.last_seq,
            replayed: recovery.replayed,
            truncated: recovery.truncated,
            skipped: recovery.skipped,
            segments: recovery.segments,
            elapsed: recovery.elapsed,
        }
    }

    /// Queues `payload` and returns the acknowledgement to await (its
    /// sequence number), or refuses it (over `limits.max_record_bytes`,
    /// shutdown, a failed log). Payloads are written in the order they are
    /// queued, so a caller can keep many in flight and still know their
    /// sequence numbers' order. Waits first, in turn, while
    /// `limits.max_pending_bytes` of appends are in flight, as
    /// [`Store::submit`] does.
    pub async fn submit(&self, payload: Vec<u8>) -> Result<Pending> {
        self.check(&payload)?;
        let entry = Entry::Raw(payload);
        let admission = self.store.admit_bytes(estimated_bytes(&entry)).await?;
        self.store.push_append(entry, admission)
    }

    /// Appends `payload`; resolves with its sequence number once the sync
    /// mode's promise holds (in `always` mode: it is durable).
    pub async fn append(&self, payload: Vec<u8>) -> Result<Seq> {
        self.submit(payload).await?.await
    }

    /// Appends `payloads` as consecutive records: they get contiguous
    /// sequence numbers, no other append lands between them, and they are
    /// written together and made durable by the same sync (unless a segment
    /// fills up in the middle, which seals the first part first). Resolves
    /// with the first one's sequence number (the i-th has `first + i`) once
    /// every one of them is acknowledged.
    ///
    /// Each payload is its own record with its own sequence number, so that
    /// a sequence number can equal a Raft index; the batch is therefore
    /// **not atomic across a crash**: a crash before it is acknowledged may
    /// leave any prefix of it (never a later payload without every earlier
    /// one). A caller that needs all-or-nothing appends one payload that
    /// holds them all. An empty batch is refused.
    pub async fn append_batch(&self, payloads: Vec<Vec<u8>>) -> Result<Seq> {
        let mut first = None;
        for pending in self.submit_batch(payloads).await? {
            let seq = pending.await?;
            first.get_or_insert(seq);
        }
        first.ok_or_else(|| Error::InvalidRequest("an empty batch".into()))
    }

    /// Queues `payloads` as [`Log::append_batch`] does and returns one
    /// acknowledgement per payload, in order, without waiting for them: a
    /// caller that must know the order of its appends (a Raft log store)
    /// returns once they are queued and awaits the acknowledgements
    /// elsewhere, so that the batches of many calls share one sync. Waits
    /// first while `limits.max_pending_bytes` of appends are in flight.
    pub async fn submit_batch(&self, payloads: Vec<Vec<u8>>) -> Result<Vec<Pending>> {
        if payloads.is_empty() {
            return Err(Error::InvalidRequest("an empty batch".into()));
        }
        for payload in &payloads {
            self.check(payload)?;
        }
        let entries: Vec<Entry> = payloads.into_iter().map(Entry::Raw).collect();
        let sizes: Vec<u64> = entries.iter().map(estimated_bytes).collect();
        // Admitted whole (a batch larger than the bound waits for an empty
        // queue and goes alone, as one large record would), then shared
        // out, so each payload gives its room back when it is answered.
        let mut room = self.store.admit_bytes(sizes.iter().sum()).await?;
        let last = entries.len() - 1;
        let admitted: Vec<(Entry, Admission)> = entries
            .into_iter()
            .zip(sizes)
            .enumerate()
            .map(|(i, (entry, size))| {
                let share = if i == last { room.bytes() } else { size };
                (entry, room.split_off(share))
            })
            .collect();
        self.store.submit_all(admitted)
    }

    /// Makes everything appended before this call durable, whatever the
    /// sync mode; resolves with the last sequence number written.
    pub async fn sync(&self) -> Result<Seq> {
        self.store.sync().await
    }

    /// The first sequence number the log holds: records before it were
    /// purged. The log is empty when it is above [`Log::last_seq`].
    pub fn first_seq(&self) -> Seq {
        self.store.wal().manifest.purged_through() + 1
    }

    /// The last acknowledged sequence number (0: none yet): every record up
    /// to it was acknowledged to its appender, and a read returns it.
    pub fn last_seq(&self) -> Seq {
        self.store.state().last_seq()
    }

    /// Purges the records before `seq` (the application keeps that prefix
    /// elsewhere, a Raft snapshot say): from now on [`Log::first_seq`] is
    /// `seq` and no read or recovery returns a record below it. One durable
    /// manifest write records it and unlists every segment whose records
    /// are all below `seq`; their files are then removed, paced by
    /// `maintenance.delete_bytes_per_sec`. Records below `seq` that share a
    /// segment with later ones stay on the disk until that segment goes,
    /// but are never returned. A `seq` at or below `first_seq` changes
    /// nothing; one past the last acknowledged record plus one is refused
    /// (there would be a hole between the log and its next record). A
    /// shutdown stops the removal and the purge still succeeds: the files
    /// left are unlisted, and the next open removes them.
    pub async fn purge_before(&self, seq: Seq) -> Result<()> {
        let _ends = self.ends.lock().await;
        let last = self.last_seq();
        if seq > last + 1 {
            return Err(Error::InvalidRequest(format!(
                "purge_before({seq}) is past the log's end (last sequence number {last})"
            )));
        }
        let retired = rotator::ask(self.store.wal(), self.store.rotator(), || PurgeLog {
            before: seq,
        })
        .await?;
        let removing = self.store.wal().remove_unlisted_files(
            "removing the segments a purge dropped",
            Priority::Waited,
            retired,
        );
        match removing.await {
            // The purge is durable once listed: files that shutdown left
            // are unlisted, and the next open removes them.
            Err(Error::ShutDown) => Ok(()),
            removed => removed,
        }
    }

    /// Drops every record after `seq`, durably, for example where a Raft
    /// follower must overwrite a conflicting tail: the next append gets
    /// `seq + 1`, and no read or recovery ever returns a dropped record,
    /// whatever point a crash interrupts this at. Resolves once the drop
    /// is durable; an error other than [`Error::InvalidRequest`] leaves the
    /// log stopped (reopen it: it opens with or without the drop, never
    /// half of it).
    ///
    /// Appends submitted before the call are written (and acknowledged)
    /// first, then dropped if after `seq`; appends submitted after it
    /// follow the drop. Under the hood the active segment is sealed, one
    /// manifest write records a mark (records after `seq` in the segments
    /// up to the sealed one are not part of the log) and unlists segments
    /// that hold only dropped records, and the next segment starts at
    /// `seq + 1`. A `seq` at or after the last record changes nothing; one
    /// below [`Log::first_seq`] `- 1` is refused (those records were
    /// purged).
    pub async fn truncate_after(&self, seq: Seq) -> Result<()> {
        let _ends = self.ends.lock().await;
        let first = self.first_seq();
        if seq + 1 < first {
            return Err(Error::InvalidRequest(format!(
                "cannot truncate after {seq}: the log starts at {first} (purged before it)"
            )));
        }
        self.store.truncate_after(seq).await.map(|_| ())
    }

    /// The application's metadata (a Raft vote and term, say) as last set,
    /// or `None` if it never was. Kept in the manifest, so it costs no
    /// read.
    pub fn metadata(&self) -> Option<Vec<u8>> {
        self.store.wal().manifest.metadata()
    }

    /// Replaces the metadata with `bytes` (at most 64 KiB): durable when
    /// this returns, and replaced atomically (a crash leaves the old or
    /// the new value, never a mix), since it goes through the manifest's
    /// own replacement: temporary file, fsync, rename, directory fsync.
    /// Each call rewrites the whole manifest, so it suits data that changes
    /// about as often as a Raft term, not per append.
    pub async fn set_metadata(&self, bytes: Vec<u8>) -> Result<()> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(Error::InvalidRequest(format!(
                "metadata of {} bytes exceeds the limit of {MAX_METADATA_BYTES}",
                bytes.len()
            )));
        }
        rotator::ask(self.store.wal(), self.store.rotator(), || {
            SetMetadata(bytes.clone())
        })
        .await
    }

    /// The records of `range` (`1..=100`, `50..`, `..`) as `(seq, payload)`,
    /// read back from the segment files in order through one bounded
    /// buffer, however long the range, by the same reader as
    /// [`Store::read`] (whose documentation says more). An unbounded start
    /// is [`Log::first_seq`]; a start below it answers [`Error::Purged`]
    /// at once. The read ends at the range's end or at the last record
    /// acknowledged when it began. A purge or truncation while it runs
    /// ends it with [`Error::Purged`] or [`Error::Truncated`] where it
    /// would otherwise return a record no longer in the log; a record
    /// returned before that is what was appended. Reads the files on the
    /// calling thread: in async code, iterate it in a blocking task, or
    /// use [`Log::subscribe`].
    pub fn read(&self, range: impl RangeBounds<Seq>) -> Result<LogEntries> {
        let first = self.first_seq();
        let start = match range.start_bound() {
            Bound::Included(from) => (*from).max(1),
            Bound::Excluded(after) => after.saturating_add(1),
            Bound::Unbounded => first,
        };
        let end = range.end_bound().cloned();
        let empty = match end {
            Bound::Included(to) => to < start,
            Bound::Excluded(to) => to <= start,
            Bound::Unbounded => false,
        };
        if start < first && !empty {
            return Err(Error::Purged { upto: first - 1 });
        }
        let guard = TruncationGuard::new(self);
        Ok(LogEntries {
            inner: self.store.read((Bound::Included(start), end))?,
            guard,
        })
    }

    /// Follows the log from record `from` on: every record, in order and
    /// once, as `(seq, payload)`, each as soon as the sync mode
    /// acknowledges it, read from the files on blocking threads (a slow
    /// subscriber never slows the appenders); see [`Store::subscribe`].
    /// Records purged before it reads them answer [`Error::Purged`]. After
    /// a truncation made while it runs, it hands out the records up to the
    /// last one kept and then answers [`Error::Truncated`] (never a record
    /// the truncation dropped, even one it had read ahead): subscribe again
    /// from the record after it. Ends when the log shuts down.
    pub fn subscribe(&self, from: Seq) -> LogSubscription {
        let guard = TruncationGuard::new(self);
        LogSubscription {
            inner: self.store.subscribe(from),
            guard,
        }
    }

    /// The WAL's counters since open.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The configuration the log runs with.
    pub fn config(&self) -> &Config {
        self.store.config()
    }

    /// Refuses new appends, writes and syncs every queued one, stops the
    /// actors and threads, and releases the directory. Appends accepted
    /// before the call are durable when it returns `Ok`.
    pub async fn shutdown(&self) -> Result<()> {
        self.store.shutdown().await
    }

    /// Refuses a payload the limits do not allow, before anything is written.
    fn check(&self, payload: &[u8]) -> Result<()> {
        let limit = self.store.config().limits.max_record_bytes;
        if payload.len() as u64 + RAW_ENCODING_OVERHEAD > limit {
            return Err(Error::InvalidRequest(format!(
                "payload of {} bytes exceeds limits.max_record_bytes = {limit}",
                payload.len()
            )));
        }
        Ok(())
    }
}

/// A record of a log directory as the log hands it out: a store's record
/// there is damage (the kind check at open keeps them out).
fn payload_of(record: Record, dir: &Path) -> Result<(Seq, Vec<u8>)> {
    match record.entry {
        Entry::Raw(payload) => Ok((record.seq, payload)),
        Entry::Op(_) | Entry::Batch(_) => Err(Error::Corruption(Corruption {
            file: dir.to_path_buf(),
            offset: 0,
            reason: format!("record {} is a key-value record in a log", record.seq),
        })),
    }
}

/// Checks each record a reader is about to hand out against the
/// truncations made since the reader began: a record past one of them may
/// have been read (into a buffer, a chunk ahead) before it dropped the
/// record, and is never handed out; the reader ends with
/// [`Error::Truncated`] instead. One atomic load per record while no
/// truncation happens.
struct TruncationGuard {
    wal: Arc<WalShared>,
    epoch: u64,
    /// The lowest last-kept record of the truncations seen since `epoch`.
    after: Option<Seq>,
    ended: bool,
}

impl std::fmt::Debug for TruncationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TruncationGuard")
            .field("epoch", &self.epoch)
            .field("after", &self.after)
            .finish()
    }
}

impl TruncationGuard {
    fn new(log: &Log) -> TruncationGuard {
        let wal = Arc::clone(log.store.wal());
        let epoch = wal.manifest.truncation_epoch();
        TruncationGuard {
            wal,
            epoch,
            after: None,
            ended: false,
        }
    }

    /// The record, as the log hands it out, or why it may not be.
    fn check(&mut self, record: Result<Record>) -> Option<Result<(Seq, Vec<u8>)>> {
        if self.ended {
            return None;
        }
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                self.ended = true;
                return Some(Err(e));
            }
        };
        if self.wal.manifest.truncation_epoch() != self.epoch {
            let (_, after, _) = self.wal.manifest.log_ends(self.epoch);
            self.after = after;
        }
        if let Some(after) = self.after.filter(|after| record.seq > *after) {
            self.ended = true;
            return Some(Err(Error::Truncated { after }));
        }
        let payload = payload_of(record, &self.wal.config.data_dir);
        self.ended = payload.is_err();
        Some(payload)
    }
}

/// The records of a range of a [`Log`]; see [`Log::read`].
#[derive(Debug)]
pub struct LogEntries {
    inner: LogRead,
    guard: TruncationGuard,
}

impl LogEntries {
    /// The last sequence number this read returns, at most.
    pub fn end(&self) -> Seq {
        self.inner.end()
    }
}

impl Iterator for LogEntries {
    type Item = Result<(Seq, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.guard.ended {
            return None;
        }
        let record = self.inner.next()?;
        self.guard.check(record)
    }
}

impl std::iter::FusedIterator for LogEntries {}

/// A [`Log`] followed from a sequence number on; see [`Log::subscribe`].
#[derive(Debug)]
pub struct LogSubscription {
    inner: Subscription,
    guard: TruncationGuard,
}

impl LogSubscription {
    /// The next record, once it is acknowledged; `None` once the log has
    /// shut down, and after an error. Cancel-safe, as
    /// [`Subscription::next`].
    pub async fn next(&mut self) -> Option<Result<(Seq, Vec<u8>)>> {
        if self.guard.ended {
            return None;
        }
        let record = self.inner.next().await?;
        self.guard.check(record)
    }
}

#[cfg(feature = "testing")]
impl Log {
    /// Makes `actor` panic in a handler, as a bug would; its supervisor
    /// restarts it.
    pub fn crash_actor(&self, actor: crate::ActorKind) {
        self.store.crash_actor(actor);
    }

    /// As [`crate::Store::crash_rotator_while_preparing`].
    pub fn crash_rotator_while_preparing(&self) {
        self.store.crash_rotator_while_preparing();
    }
}

/// As [`Log::open_replaying`], through another file-system implementation
/// (the simulated disk of the tests, or a wrapper that injects faults).
#[cfg(feature = "testing")]
pub async fn open_log_with_fs(
    config: Config,
    fs: Arc<dyn FileSystem>,
    on_record: impl FnMut(Seq, &[u8]) + Send + 'static,
) -> Result<(Log, LogRecovery)> {
    Log::open_with_fs(config, fs, on_record).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::config::SyncMode;
    use crate::log::read::Cursor;

    /// A subscription's cursor that takes in a truncation made while it
    /// read ends its chunk there: the bound it was given was acknowledged
    /// before the truncation and lies past the log's new end, where the
    /// records it vouched for are not written yet.
    #[actix_rt::test]
    async fn a_following_cursor_ends_its_chunk_at_a_truncation_it_takes_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::with_data_dir(dir.path());
        config.wal.sync_mode = SyncMode::Always;
        config.wal.max_segment_bytes = 4096;
        let (log, _) = Log::open(config).await.expect("open");
        for i in 1..=300u64 {
            log.append(format!("old-{i}").into_bytes())
                .await
                .expect("append");
        }
        // Made before the truncation, as a subscription waiting at 251 is.
        let mut cursor = Cursor::new(Arc::clone(log.store.wal()), Some(251)).following();
        log.truncate_after(250).await.expect("truncate");
        for i in 251..=260u64 {
            log.append(format!("new-{i}").into_bytes())
                .await
                .expect("append");
        }
        let mut out = VecDeque::new();
        cursor
            .read_chunk(300, &mut out)
            .expect("the truncation, not damage, ends the chunk");
        assert!(out.is_empty(), "{:?}", out.front());
        assert_eq!(cursor.next_seq(), 251);
        // With the bound acknowledged now, it reads the new records.
        cursor
            .read_chunk(log.last_seq(), &mut out)
            .expect("read on");
        let read: Vec<(Seq, Entry)> = out.into_iter().map(|r| (r.seq, r.entry)).collect();
        let appended: Vec<(Seq, Entry)> = (251..=260)
            .map(|i| (i, Entry::Raw(format!("new-{i}").into_bytes())))
            .collect();
        assert_eq!(read, appended);
        log.shutdown().await.expect("shutdown");
    }

    /// Whoever sees a truncation's number sees the log's end moved back to
    /// it: the end moves before the truncation is published, so a reader
    /// that takes the truncation in never reads with the end from before
    /// it, past what the log now holds. A thread watches both while
    /// truncations are made; the window it looks for, if the order were
    /// the other way round, is a task's wake-up wide.
    #[actix_rt::test]
    async fn a_truncation_is_published_only_with_the_end_moved_back() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::with_data_dir(dir.path());
        config.wal.sync_mode = SyncMode::None;
        config.wal.max_segment_bytes = 4096;
        let (log, _) = Log::open(config).await.expect("open");
        let wal = Arc::clone(log.store.wal());
        // The truncation under way (its number, the last record it keeps),
        // `u64::MAX` once it returned and appends may follow it.
        let pending = Arc::new((AtomicU64::new(0), AtomicU64::new(u64::MAX)));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (pending, stop) = (Arc::clone(&pending), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let after = pending.1.load(SeqCst);
                    let number = pending.0.load(SeqCst);
                    let published = wal.manifest.truncation_epoch() >= number;
                    let end = wal.state.last_seq();
                    if after != u64::MAX
                        && published
                        && end > after
                        && pending.1.load(SeqCst) == after
                    {
                        return Some((number, after, end));
                    }
                }
                None
            })
        };
        for number in 1..=100u64 {
            for i in 0..20 {
                log.append(format!("{number}-{i}").into_bytes())
                    .await
                    .expect("append");
            }
            let after = log.last_seq() - 10;
            pending.0.store(number, SeqCst);
            pending.1.store(after, SeqCst);
            log.truncate_after(after).await.expect("truncate");
            pending.1.store(u64::MAX, SeqCst);
        }
        stop.store(true, SeqCst);
        let seen = watcher.join().expect("watcher");
        assert_eq!(
            seen, None,
            "truncation (number, kept through) published with the end at {seen:?}"
        );
        log.shutdown().await.expect("shutdown");
    }
}
