//! openraft's log on a concordkv [`Log`]: one record per entry, the vote
//! and the purge point in the log's metadata slot.
//!
//! Records hold consecutive sequence numbers; Raft indexes are consecutive
//! too, but may restart higher (a log emptied by a purge past its end, when
//! a snapshot arrives, goes on from the snapshot's index). An in-memory
//! index of runs maps one to the other, so a read or a truncation goes
//! straight to its records. It is never stored: at open the first and last
//! records tell it (the log is one run unless their distances differ).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use concordkv::{Error, Log, Seq};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError};
use openraft::{StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::{decode, encode};

/// The log's metadata slot: what must survive a restart besides the
/// entries, written atomically in one manifest replacement.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<C: RaftTypeConfig> {
    vote: Option<Vote<C::NodeId>>,
    /// Everything up to it is purged (or covered by a snapshot): kept here
    /// because its term is gone with the records.
    last_purged: Option<LogId<C::NodeId>>,
}

/// Where the log's ends are, as openraft sees them.
struct Ends<C: RaftTypeConfig> {
    /// Runs of consecutive indexes: (first index, its sequence number),
    /// in order. Entries of a run continue to the next run's sequence
    /// number, or to `last`.
    runs: Vec<(u64, Seq)>,
    /// The sequence number the next appended entry gets.
    next_seq: Seq,
    /// The last entry the log holds, appended (not necessarily durable).
    last: Option<LogId<C::NodeId>>,
    meta: Meta<C>,
    /// The newest entries as appended, with their encoded sizes: a leader
    /// sends them to its followers right after appending them, and reading
    /// them back from the files for every follower cost more than the rest
    /// of its work. Every entry from the front's index on is here.
    tail: VecDeque<(C::Entry, usize)>,
    tail_bytes: usize,
}

impl<C: RaftTypeConfig> Ends<C> {
    /// The last index of run `r`.
    fn run_end(&self, r: usize) -> u64 {
        match (self.runs.get(r + 1), &self.last) {
            (Some(&(_, next_seq)), _) => self.runs[r].0 + (next_seq - self.runs[r].1) - 1,
            (None, Some(last)) => last.index,
            (None, None) => self.runs[r].0.wrapping_sub(1),
        }
    }

    /// The sequence number of the last entry at or below `index`.
    fn seq_at_or_below(&self, index: u64) -> Option<Seq> {
        let r = self
            .runs
            .partition_point(|&(i, _)| i <= index)
            .checked_sub(1)?;
        let (first, seq) = self.runs[r];
        Some(seq + index.min(self.run_end(r)) - first)
    }

    /// The sequence number of the first entry at or above `index`.
    fn seq_at_or_above(&self, index: u64) -> Option<Seq> {
        let r = self.runs.partition_point(|&(i, _)| i <= index);
        if let Some(c) = r.checked_sub(1) {
            if index <= self.run_end(c) {
                let (first, seq) = self.runs[c];
                return Some(seq + index - first);
            }
        }
        self.runs.get(r).map(|&(_, seq)| seq)
    }

    fn cache(&mut self, entry: C::Entry, bytes: usize) {
        self.tail.push_back((entry, bytes));
        self.tail_bytes += bytes;
        while self.tail_bytes > TAIL_CACHE_BYTES && self.tail.len() > 1 {
            if let Some((_, b)) = self.tail.pop_front() {
                self.tail_bytes -= b;
            }
        }
    }

    /// Drops cached entries at or above `index` (truncated).
    fn uncache_from(&mut self, index: u64) {
        while self
            .tail
            .back()
            .is_some_and(|(e, _)| e.get_log_id().index >= index)
        {
            if let Some((_, b)) = self.tail.pop_back() {
                self.tail_bytes -= b;
            }
        }
    }

    /// Drops cached entries at or below `index` (purged).
    fn uncache_through(&mut self, index: u64) {
        while self
            .tail
            .front()
            .is_some_and(|(e, _)| e.get_log_id().index <= index)
        {
            if let Some((_, b)) = self.tail.pop_front() {
                self.tail_bytes -= b;
            }
        }
    }

    /// The cached entries of `start..=end`, if the cache holds them all.
    fn cached(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<C::Entry>>
    where
        C::Entry: Clone,
    {
        let front = self.tail.front()?.0.get_log_id().index;
        if start < front {
            return None;
        }
        let mut bytes = 0;
        let mut entries = Vec::new();
        for (entry, size) in &self.tail {
            let index = entry.get_log_id().index;
            if index < start {
                continue;
            }
            if index > end || (!entries.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            entries.push(entry.clone());
        }
        Some(entries)
    }

    /// The first index the log holds.
    fn first_index(&self) -> u64 {
        self.meta.last_purged.as_ref().map_or(0, |p| p.index + 1)
    }
}

/// Bytes of recent entries kept in memory for replication.
const TAIL_CACHE_BYTES: usize = 32 << 20;
/// Bytes of entries one replication request carries at most (at least
/// one entry): the receiving node's request body limit must allow it.
pub const MAX_READ_BYTES: usize = 8 << 20;
/// Reads that race a purge or a truncation are tried again this often.
const READ_RETRIES: usize = 8;

/// What the log asks of the state machine before it purges: that what the
/// purge drops be covered by durable state. openraft 0.9 purges the log
/// for a snapshot received from the leader in the same step as it hands
/// the snapshot to the state machine, without waiting for the install.
pub(crate) trait Coverage: Send + Sync {
    /// Resolves once the state up to `index` is durable, or no install
    /// that would cover it is under way.
    fn before_purge(
        &self,
        index: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>>;
}

struct Shared<C: RaftTypeConfig> {
    log: Log,
    engine: Arc<Engine>,
    coverage: Arc<dyn Coverage>,
    ends: Mutex<Ends<C>>,
    /// (truncations so far, last sequence number acknowledged): a reader
    /// waits here for entries openraft appended and the disk has not
    /// acknowledged yet. The count keeps the acknowledgement of an append
    /// that a truncation since dropped from raising it.
    acked: watch::Sender<(u64, Seq)>,
}

/// openraft's [`RaftLogStorage`] on a concordkv [`Log`]. Cheap to clone.
///
/// `append` queues the entries and returns; openraft hears they are
/// flushed once the log's `fdatasync` covers them, so the entries of many
/// appends in flight share one sync (group commit).
pub struct LogStore<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    pub(crate) async fn open(
        engine: Arc<Engine>,
        log: Log,
        coverage: Arc<dyn Coverage>,
    ) -> Result<Self, Error> {
        let meta: Meta<C> = match log.metadata() {
            Some(bytes) => decode(&bytes).map_err(|e| {
                let manifest = log.config().data_dir.join("MANIFEST");
                Error::Untrusted(format!(
                    "{}: the log's metadata (vote, purge point) does not decode: {e}",
                    manifest.display()
                ))
            })?,
            None => Meta {
                vote: None,
                last_purged: None,
            },
        };
        let last_seq = log.last_seq();
        let mut ends = Ends {
            runs: Vec::new(),
            next_seq: last_seq + 1,
            last: None,
            meta,
            tail: VecDeque::new(),
            tail_bytes: 0,
        };
        if log.first_seq() <= last_seq {
            let first = read_one::<C>(&log, log.first_seq())?;
            let last = read_one::<C>(&log, last_seq)?;
            if last.index - first.index == last_seq - log.first_seq() {
                ends.runs.push((first.index, log.first_seq()));
            } else {
                ends.runs = scan_runs::<C>(&log)?;
            }
            ends.last = Some(last);
        }
        let (acked, _) = watch::channel((0, last_seq));
        let store = LogStore {
            shared: Arc::new(Shared {
                log,
                engine,
                coverage,
                ends: Mutex::new(ends),
                acked,
            }),
        };
        // A purge whose mark was written but whose records were not yet
        // retired when the process stopped: finish it.
        let purged = store.ends().meta.last_purged.clone();
        if let Some(purged) = purged {
            store.retire_through(purged.index).await?;
        }
        Ok(store)
    }

    fn ends(&self) -> std::sync::MutexGuard<'_, Ends<C>> {
        self.shared.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The underlying log (its statistics, say).
    pub fn log(&self) -> &Log {
        &self.shared.log
    }

    /// Stops the log: every acknowledged entry is durable; later calls fail.
    pub async fn close(&self) -> Result<(), Error> {
        self.shared
            .engine
            .shutdown_log(self.shared.log.clone())
            .await
    }

    async fn write_meta(&self) -> Result<(), Error> {
        let bytes = encode(&self.ends().meta);
        self.shared.log.set_metadata(bytes).await
    }

    /// Retires the records at or below `index` from the files, and forgets
    /// the last entry if none is left.
    async fn retire_through(&self, index: u64) -> Result<(), Error> {
        let (to, emptied) = {
            let mut ends = self.ends();
            let retire = match &ends.last {
                Some(last) if last.index > index => {
                    (ends.seq_at_or_below(index).map_or(0, |s| s + 1), false)
                }
                _ => {
                    ends.last = None;
                    ends.runs.clear();
                    (ends.next_seq, true)
                }
            };
            ends.uncache_through(index);
            retire
        };
        if emptied {
            // Every queued append is written first, so the purge may end
            // the log at its last record.
            self.shared.log.sync().await?;
        }
        if to > self.shared.log.first_seq() {
            self.shared.log.purge_before(to).await?;
        }
        Ok(())
    }

    /// Entries of `range` (indexes), at most about `max_bytes` of them
    /// (at least one): from the cache of recent entries, or read from the
    /// files off the runtime.
    /// `exact`: the range must start where asked (replication, which sends
    /// the entries after a known one): a start already purged is an error,
    /// never a later start. Otherwise the start moves up to the first entry
    /// held, as openraft's reads of "everything from" expect.
    async fn read_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
        exact: bool,
    ) -> Result<Vec<C::Entry>, Error> {
        let mut tries = 0;
        loop {
            match self.read_once(range, max_bytes, exact).await {
                // Truncated while read (a leadership ended), or purged while
                // read by a read that may start later: what is left now is
                // the answer.
                Err(Error::Truncated { .. }) if tries < READ_RETRIES => tries += 1,
                Err(Error::Purged { .. }) if !exact && tries < READ_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn read_once(
        &self,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
        exact: bool,
    ) -> Result<Vec<C::Entry>, Error> {
        let (from, to, truncations) = {
            let ends = self.ends();
            let Some(last) = ends.last.as_ref() else {
                return Ok(Vec::new());
            };
            let asked = match range.start_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => i.saturating_add(1),
                Bound::Unbounded => 0,
            };
            if exact && asked < ends.first_index() {
                return Err(Error::Purged {
                    upto: ends.first_index() - 1,
                });
            }
            let start = asked.max(ends.first_index());
            let end = match range.end_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&0) => return Ok(Vec::new()),
                Bound::Excluded(&i) => i - 1,
                Bound::Unbounded => last.index,
            }
            .min(last.index);
            if start > end {
                return Ok(Vec::new());
            }
            if let Some(entries) = ends.cached(start, end, max_bytes) {
                return Ok(entries);
            }
            match (ends.seq_at_or_above(start), ends.seq_at_or_below(end)) {
                (Some(from), Some(to)) if from <= to => (from, to, self.shared.acked.borrow().0),
                _ => return Ok(Vec::new()),
            }
        };
        // Entries openraft appended may not be acknowledged yet.
        let mut acked = self.shared.acked.subscribe();
        acked
            .wait_for(|&(t, seq)| t != truncations || seq >= to)
            .await
            .map_err(|_| Error::ShutDown)?;
        let log = self.shared.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            let mut bytes = 0;
            for record in log.read(from..=to)? {
                let (seq, payload) = record?;
                if !entries.is_empty() && bytes + payload.len() > max_bytes {
                    break;
                }
                bytes += payload.len();
                entries.push(decode::<C::Entry>(&payload).map_err(|e| undecodable(&log, seq, &e))?);
            }
            Ok::<_, Error>(entries)
        })
        .await
        .map_err(|_| Error::ShutDown)?
    }
}

/// The runs of a log whose indexes jump somewhere: read from every record.
fn scan_runs<C>(log: &Log) -> Result<Vec<(u64, Seq)>, Error>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let mut runs: Vec<(u64, Seq)> = Vec::new();
    let mut prev: Option<u64> = None;
    for record in log.read(..)? {
        let (seq, payload) = record?;
        let entry: C::Entry = decode(&payload).map_err(|e| undecodable(log, seq, &e))?;
        let index = entry.get_log_id().index;
        if prev.is_none_or(|p| p + 1 != index) {
            runs.push((index, seq));
        }
        prev = Some(index);
    }
    Ok(runs)
}

/// A record whose checksum held but whose payload is no entry (written by
/// another program, or another type configuration): named by directory
/// and sequence number (`concordkv inspect` finds its file and offset).
fn undecodable(log: &Log, seq: Seq, e: &bincode::error::DecodeError) -> Error {
    Error::Untrusted(format!(
        "{}: log record {seq} is no Raft entry of this type configuration: {e}",
        log.config().data_dir.display()
    ))
}

/// Reads the entry at `seq` and returns its log id.
fn read_one<C>(log: &Log, seq: Seq) -> Result<LogId<C::NodeId>, Error>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let (_, payload) = log.read(seq..=seq)?.next().ok_or_else(|| {
        Error::Untrusted(format!(
            "{}: log record {seq} is missing",
            log.config().data_dir.display()
        ))
    })??;
    let entry: C::Entry = decode(&payload).map_err(|e| undecodable(log, seq, &e))?;
    Ok(entry.get_log_id().clone())
}

fn io<C: RaftTypeConfig>(
    make: fn(AnyError) -> StorageIOError<C::NodeId>,
) -> impl Fn(Error) -> StorageError<C::NodeId> {
    move |e| make(AnyError::new(&e)).into()
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read_range(range, usize::MAX, false)
            .await
            .map_err(io::<C>(StorageIOError::read_logs))
    }

    /// What replication reads: bounded in bytes, so that a request to a
    /// follower never outgrows what it accepts.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let range = (Bound::Included(start), Bound::Excluded(end));
        self.read_range(range, MAX_READ_BYTES, true)
            .await
            .map_err(io::<C>(StorageIOError::read_logs))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let ends = self.ends();
        let last_purged_log_id = ends.meta.last_purged.clone();
        let last_log_id = ends.last.clone().or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.ends().meta.vote = Some(vote.clone());
        self.write_meta()
            .await
            .map_err(io::<C>(StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.ends().meta.vote.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write_err = io::<C>(StorageIOError::write_logs);
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.get_log_id().clone()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let payloads: Vec<Vec<u8>> = entries.iter().map(encode).collect();
        let sizes: Vec<usize> = payloads.iter().map(Vec::len).collect();
        let first = entries[0].get_log_id().index;
        let truncations = {
            let mut ends = self.ends();
            match &ends.last {
                Some(prev) if prev.index + 1 == first => {}
                Some(prev) if first <= prev.index => {
                    return Err(write_err(Error::InvalidRequest(format!(
                        "entry {first} does not follow the last entry {} (truncate first)",
                        prev.index
                    ))));
                }
                // A log that starts, or goes on after a gap.
                _ => {
                    let seq = ends.next_seq;
                    ends.runs.push((first, seq));
                }
            }
            self.shared.acked.borrow().0
        };
        // Queued before returning, so appends keep openraft's order; their
        // acknowledgements are awaited off this call.
        let pendings = self
            .shared
            .log
            .submit_batch(payloads)
            .await
            .map_err(&write_err)?;
        {
            let mut ends = self.ends();
            ends.next_seq += pendings.len() as u64;
            ends.last = Some(last);
            for (entry, size) in entries.into_iter().zip(sizes) {
                ends.cache(entry, size);
            }
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut outcome = Ok(());
            let mut through = 0;
            for pending in pendings {
                match pending.await {
                    Ok(seq) => through = seq,
                    Err(e) => {
                        outcome = Err(std::io::Error::other(e.to_string()));
                        break;
                    }
                }
            }
            shared.acked.send_if_modified(|(t, seq)| {
                let raise = *t == truncations && through > *seq;
                if raise {
                    *seq = through;
                }
                raise
            });
            callback.log_io_completed(outcome);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let write_err = io::<C>(StorageIOError::write_logs);
        let (after, new_last_seq) = {
            let ends = self.ends();
            match &ends.last {
                Some(last) if log_id.index <= last.index => {}
                _ => return Ok(()),
            }
            let keep = log_id
                .index
                .checked_sub(1)
                .filter(|&k| k >= ends.first_index())
                .and_then(|k| ends.seq_at_or_below(k))
                .filter(|&seq| seq >= self.shared.log.first_seq());
            let after = keep.unwrap_or(self.shared.log.first_seq() - 1);
            (after, keep)
        };
        self.shared.acked.send_modify(|(t, seq)| {
            *t += 1;
            *seq = (*seq).min(after);
        });
        self.shared
            .log
            .truncate_after(after)
            .await
            .map_err(&write_err)?;
        let last = match new_last_seq {
            Some(seq) => {
                let log = self.shared.log.clone();
                let read = tokio::task::spawn_blocking(move || read_one::<C>(&log, seq))
                    .await
                    .map_err(|_| write_err(Error::ShutDown))?;
                Some(read.map_err(&write_err)?)
            }
            None => None,
        };
        let mut ends = self.ends();
        ends.next_seq = after + 1;
        ends.runs.retain(|&(_, seq)| seq <= after);
        ends.last = last;
        ends.uncache_from(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let write_err = io::<C>(StorageIOError::write_logs);
        let done = self
            .ends()
            .meta
            .last_purged
            .as_ref()
            .is_some_and(|p| p.index >= log_id.index);
        if done {
            return Ok(());
        }
        self.shared
            .coverage
            .before_purge(log_id.index)
            .await
            .map_err(&write_err)?;
        self.ends().meta.last_purged = Some(log_id.clone());
        // The mark first: a crash before the records go leaves them
        // unreadable anyway, and the next open retires them.
        self.write_meta().await.map_err(&write_err)?;
        self.retire_through(log_id.index).await.map_err(&write_err)
    }
}
