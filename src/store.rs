//! The public handle: open a store, append, sync, read counters, shut down.

use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix::Addr;
use tokio::sync::oneshot;

use crate::actors::compactor::CompactorActor;
use crate::actors::messages::{Compact, GetStats, Shutdown, TakeSnapshot};
use crate::actors::metrics::{MetricsActor, StatsReport};
use crate::actors::rotator::{RotatorActor, RotatorState};
use crate::actors::snapshot::SnapshotActor;
#[cfg(feature = "testing")]
use crate::actors::supervised::ActorKind;
use crate::actors::supervised::Slot;
use crate::actors::supervisor::StoreSupervisor;
use crate::actors::wal::{open_log, WalShared};
use crate::config::{Config, LimitsConfig};
use crate::entry::{Entry, Op, Record, Seq};
use crate::error::{Error, Result};
use crate::format::manifest::DirKind;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::fs::{FileSystem, RealFs};
use crate::latency::Latencies;
use crate::lifecycle::background::{Jobs, Priority};
use crate::lifecycle::closing;
use crate::lifecycle::compaction::CompactionReport;
use crate::lifecycle::manifest::ManifestStore;
use crate::lifecycle::single_flight::SingleFlight;
use crate::log::admission::{estimated_bytes, op_bytes, Admission, RECORD_OVERHEAD_BYTES};
use crate::log::inbox::{Inbox, Request};
use crate::log::read::{acknowledged_upto, Cursor, LogRead};
use crate::log::recovery::{Debris, Recovery};
use crate::log::subscription::Subscription;
use crate::log::sync_worker::{AckBound, Instruments, SyncWorker};
use crate::meters::Meters;
use crate::state::{self, State};
use crate::stats::{PersistenceInfo, StoreStats, WalCounters};

/// An open store. Cheap to clone; every clone appends to the same log.
///
/// Must be opened and used inside an actix `System` (for example under
/// `#[actix::main]` or `actix_rt::System::new().block_on`).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    inbox: Arc<Inbox>,
    supervisor: Addr<StoreSupervisor>,
    rotator: Slot<RotatorActor>,
    snapshots: Slot<SnapshotActor>,
    compactor: Slot<CompactorActor>,
    metrics: Slot<MetricsActor>,
    wal: Arc<WalShared>,
    counters: Arc<WalCounters>,
    config: Config,
    /// Torn-tail bytes cut when this store was opened.
    truncated_at_open: u64,
    /// Compactions asked for through [`Store::compact`]: one at a time.
    compaction: SingleFlight,
    /// Snapshots asked for through [`Store::snapshot`]: one at a time.
    snapshot: SingleFlight,
    /// Set once [`Store::shutdown`] is called: an actor's mailbox closed
    /// after that is a stopped store, before it a dead actor.
    shut_down: AtomicBool,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`: validates the
    /// configuration, takes the directory lock, recovers the log into the
    /// key-value [`State`], and starts the actors. What recovery found is
    /// returned with the store.
    pub async fn open(config: Config) -> Result<(Store, Recovery)> {
        Store::open_replaying(config, |_| {}).await
    }

    /// As [`Store::open`], handing each record recovered after the
    /// snapshots to `on_record` as it is replayed, in sequence order (for an
    /// application that keeps state of its own). Records are streamed from
    /// the files, never collected: memory stays that of the state.
    pub async fn open_replaying(
        config: Config,
        on_record: impl FnMut(&Record) + Send + 'static,
    ) -> Result<(Store, Recovery)> {
        Store::open_with_fs(config, Arc::new(RealFs), on_record).await
    }

    /// As [`Store::open_replaying`], through another file-system implementation.
    pub(crate) async fn open_with_fs(
        config: Config,
        fs: Arc<dyn FileSystem>,
        on_record: impl FnMut(&Record) + Send + 'static,
    ) -> Result<(Store, Recovery)> {
        Store::open_kind(config, fs, DirKind::Kv, on_record).await
    }

    /// Opens a directory of `kind`: a key-value store, or the same machinery
    /// under a [`Log`](crate::Log), which differs only in what it appends
    /// and in having no snapshots or compaction.
    pub(crate) async fn open_kind(
        config: Config,
        fs: Arc<dyn FileSystem>,
        kind: DirKind,
        mut on_record: impl FnMut(&Record) + Send + 'static,
    ) -> Result<(Store, Recovery)> {
        config.validate()?;
        if actix::System::try_current().is_none() {
            return Err(Error::NoActixSystem);
        }
        if config.archive.enabled() {
            check_archive(&config, kind).await?;
        }
        // A store of this directory dropped without `shutdown` releases it soon.
        closing::wait(&config.data_dir).await;
        let opening = {
            let config = config.clone();
            let fs = Arc::clone(&fs);
            actix_rt::task::spawn_blocking(move || {
                let dir = config.data_dir.as_path();
                fs.create_dir_all(dir)
                    .map_err(|e| Error::io("create data directory", dir, e))?;
                let lock = fs
                    .lock_dir(dir)
                    .map_err(|e| Error::io("lock data directory", dir, e))?;
                let manifest = ManifestStore::open(Arc::clone(&fs), dir, kind)?;
                let (recovery, tree, start) = open_log(
                    fs.as_ref(),
                    &manifest,
                    &config,
                    Debris::Remove,
                    &mut on_record,
                )?;
                crate::memory::release_freed();
                Ok::<_, Error>((lock, manifest, recovery, tree, start))
            })
        };
        let (lock, manifest, recovery, tree, start) = opening
            .await
            .map_err(|e| Error::task_failed("opening the store", &e))??;
        let meters = Arc::new(Meters::new(&config));
        let latencies = Arc::new(Latencies::default());
        latencies.recovery.record(recovery.elapsed);
        if let Some(tail) = &recovery.truncated {
            meters.recovery_truncated_bytes.increment(tail.bytes);
        }
        let counters = Arc::new(WalCounters::default());
        let inbox = Arc::new(Inbox::new(
            config.limits.max_pending_bytes,
            Arc::clone(&counters),
        ));
        let state = state::Shared::new(tree, recovery.last_seq, config.limits.max_pending_bytes);
        let instruments = Instruments {
            counters: Arc::clone(&counters),
            latencies: Arc::clone(&latencies),
            meters: Arc::clone(&meters),
        };
        let worker = SyncWorker::start(
            Arc::clone(&inbox),
            instruments,
            AckBound::of(&config.wal),
            Arc::clone(&fs),
            config.data_dir.clone(),
            Arc::clone(&state),
        )
        .map_err(|e| Error::io("start the sync thread", &config.data_dir, e))?;
        let wal_shared = Arc::new(WalShared {
            config: config.clone(),
            fs,
            manifest,
            latencies,
            inbox: Arc::clone(&inbox),
            worker,
            counters: Arc::clone(&counters),
            state,
            meters,
            jobs: Arc::new(Jobs::new(&config.data_dir)),
        });
        let rotator_state = RotatorState::start(&config.data_dir)?;
        let (supervisor, slots) =
            StoreSupervisor::launch(Arc::clone(&wal_shared), start, lock, rotator_state);
        let store = Store {
            shared: Arc::new(Shared {
                inbox,
                supervisor,
                rotator: slots.rotator,
                snapshots: slots.snapshots,
                compactor: slots.compactor,
                metrics: slots.metrics,
                wal: wal_shared,
                counters,
                config,
                truncated_at_open: recovery.truncated.as_ref().map_or(0, |t| t.bytes),
                compaction: SingleFlight::new("compaction"),
                snapshot: SingleFlight::new("snapshot"),
                shut_down: AtomicBool::new(false),
            }),
        };
        Ok((store, recovery))
    }

    /// Queues `entry` and returns the acknowledgement to await, or refuses
    /// it (limits, shutdown, a failed log). Requests are written in the
    /// order they are queued, so a caller can keep many in flight
    /// (pipelining) and still know their order.
    ///
    /// Waits first, in turn, while `limits.max_pending_bytes` of appends
    /// are admitted and not yet answered (see [`Store::admit`]): a producer
    /// faster than the disk is slowed to its pace instead of filling memory.
    /// The entry is queued when this resolves, before anything else runs;
    /// dropped while it waits, nothing is queued.
    pub async fn submit(&self, entry: Entry) -> Result<Pending> {
        let admission = self.admit(&entry).await?;
        self.push_append(entry, admission)
    }

    /// Takes room for `entry` under `limits.max_pending_bytes`, waiting (in
    /// turn: first come, first served, so a large record is not starved)
    /// while there is none; refuses it at once if the limits do not allow
    /// it. Room for a record larger than the whole bound is the whole bound:
    /// it waits for the queue to empty and then goes alone.
    ///
    /// The first half of [`Store::submit`], for a caller that must queue
    /// under a lock of its own without waiting there (the server applies
    /// each write to its map under the lock that queues it, so the map
    /// changes in the log's order): admit outside the lock, then
    /// [`Store::submit_admitted`] under it. The room goes back when the
    /// append is answered, or when the admission is dropped unused. Fails
    /// with [`Error::ShutDown`] (or the log's failure) once the store closes.
    pub async fn admit(&self, entry: &Entry) -> Result<Admission> {
        check_entry(entry, &self.shared.config.limits)?;
        let gate = self.shared.inbox.gate();
        match gate.admit(estimated_bytes(entry)).await {
            Some(admission) => Ok(admission),
            None => Err(self.shared.inbox.refusal()),
        }
    }

    /// The room `entry` takes under `limits.max_pending_bytes`: its keys
    /// and values plus a few bytes per operation, the whole bound at most.
    pub fn admission_bytes(&self, entry: &Entry) -> u64 {
        u64::from(self.shared.inbox.gate().permits_for(estimated_bytes(entry)))
    }

    /// Queues `entry` with room taken by [`Store::admit`], without waiting:
    /// the second half of [`Store::submit`]. The admission must come from
    /// this store and be for `entry` or one at least as large (an
    /// [`Error::InvalidRequest`] otherwise); room beyond what `entry` needs
    /// is given back at once.
    pub fn submit_admitted(&self, entry: Entry, mut admission: Admission) -> Result<Pending> {
        check_entry(&entry, &self.shared.config.limits)?;
        if !self.shared.inbox.gate().gave(&admission) {
            return Err(Error::InvalidRequest(
                "the admission was taken from another store".into(),
            ));
        }
        let needed = self.admission_bytes(&entry);
        if admission.bytes() < needed {
            return Err(Error::InvalidRequest(format!(
                "the admission holds {} bytes, the entry needs {needed}",
                admission.bytes()
            )));
        }
        admission.shrink_to(needed);
        self.push_append(entry, admission)
    }

    /// Queues an admitted append; a refused one gives its room back as the
    /// request is dropped.
    pub(crate) fn push_append(&self, entry: Entry, permit: Admission) -> Result<Pending> {
        let (reply, answer) = oneshot::channel();
        self.shared.inbox.push(Request::Append {
            entry,
            reply,
            permit,
            queued: Instant::now(),
        })?;
        Ok(Pending { answer })
    }

    /// Takes room for `bytes` of appends under `limits.max_pending_bytes`
    /// (as [`Store::admit`], for entries the caller checked itself).
    pub(crate) async fn admit_bytes(&self, bytes: u64) -> Result<Admission> {
        match self.shared.inbox.gate().admit(bytes).await {
            Some(admission) => Ok(admission),
            None => Err(self.shared.inbox.refusal()),
        }
    }

    /// Queues admitted `entries` as consecutive records: no other request
    /// is queued between them, so they get contiguous sequence numbers.
    pub(crate) fn submit_all(&self, entries: Vec<(Entry, Admission)>) -> Result<Vec<Pending>> {
        let mut requests = Vec::with_capacity(entries.len());
        let mut pendings = Vec::with_capacity(entries.len());
        let submitted = Instant::now();
        for (entry, permit) in entries {
            let (reply, answer) = oneshot::channel();
            requests.push(Request::Append {
                entry,
                reply,
                permit,
                queued: submitted,
            });
            pendings.push(Pending { answer });
        }
        self.shared.inbox.push_all(requests)?;
        Ok(pendings)
    }

    /// Queues a log's truncation after `after` and waits for it (see
    /// [`Log::truncate_after`](crate::Log::truncate_after)).
    pub(crate) async fn truncate_after(&self, after: Seq) -> Result<Seq> {
        let (reply, answer) = oneshot::channel();
        self.shared.inbox.push(Request::Truncate { after, reply })?;
        Pending { answer }.await
    }

    /// The WAL's shared internals.
    pub(crate) fn wal(&self) -> &Arc<WalShared> {
        &self.shared.wal
    }

    /// The owner of the manifest's changes.
    pub(crate) fn rotator(&self) -> &Slot<RotatorActor> {
        &self.shared.rotator
    }

    /// Sets `key` to `value`; resolves with the record's sequence number
    /// once the sync mode's promise holds.
    pub async fn set(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<Seq> {
        self.append(Op::Set {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    /// Sets `key` to `value` until `expires_at`, after which reads no
    /// longer see it (see [`Op::SetExpiring`]; a time already past makes it
    /// invisible at once). The time is stored to the millisecond.
    pub async fn set_expiring(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        expires_at: std::time::SystemTime,
    ) -> Result<Seq> {
        self.append(Op::SetExpiring {
            key: key.into(),
            value: value.into(),
            expires_at: crate::entry::unix_millis(expires_at),
        })
        .await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<Seq> {
        self.append(Op::Delete { key: key.into() }).await
    }

    /// Removes every key, in one small record (see [`Op::Clear`]).
    pub async fn clear(&self) -> Result<Seq> {
        self.append(Op::Clear).await
    }

    /// Appends one operation.
    pub async fn append(&self, op: Op) -> Result<Seq> {
        self.submit(Entry::Op(op)).await?.await
    }

    /// Appends `ops` as one record: recovered all together or not at all.
    pub async fn append_batch(&self, ops: Vec<Op>) -> Result<Seq> {
        self.submit(Entry::Batch(ops)).await?.await
    }

    /// Makes everything appended before this call durable, whatever the sync
    /// mode; resolves with the last sequence number written.
    pub async fn sync(&self) -> Result<Seq> {
        let (reply, answer) = oneshot::channel();
        self.shared.inbox.push(Request::Sync { reply })?;
        Pending { answer }.await
    }

    /// Takes a full snapshot of everything acknowledged before the call
    /// (syncing first), in the background of the writers; then removes the
    /// segments and snapshots it makes obsolete. `None`: the snapshots
    /// already covered everything. One snapshot (full or incremental) runs
    /// at a time: while one is under way this fails at once with
    /// [`Error::InProgress`] (see [`Store::begin_snapshot`]).
    pub async fn snapshot(&self) -> Result<Option<SnapshotHeader>> {
        self.begin_snapshot(SnapshotKind::Full)?.await
    }

    /// Takes an incremental snapshot: the net changes since the last snapshot.
    pub async fn snapshot_incremental(&self) -> Result<Option<SnapshotHeader>> {
        self.begin_snapshot(SnapshotKind::Incremental)?.await
    }

    /// Claims the store's one snapshot slot now, or fails at once with
    /// [`Error::InProgress`] if a snapshot is under way; the returned
    /// future takes the snapshot and frees the slot when it ends. A caller
    /// is refused rather than handed the running snapshot's result because
    /// that one may have started before the caller's last write, which the
    /// caller's snapshot must cover.
    pub fn begin_snapshot(
        &self,
        kind: SnapshotKind,
    ) -> Result<impl Future<Output = Result<Option<SnapshotHeader>>> + 'static> {
        self.begin_snapshot_as(kind, Priority::Background)
    }

    /// As [`Store::begin_snapshot`], for a caller that waits for the
    /// snapshot (Redis's `SAVE`): it is written at normal CPU priority, not
    /// in the idle class maintenance runs in, so that other busy processes
    /// on the machine cannot hold it back for as long as they stay busy.
    /// For the same reason a compaction under way stops for it and runs
    /// again after it. It is written at the disk's speed, not at
    /// `maintenance.write_bytes_per_sec`, and resolves once listed: the
    /// files it retires are removed afterwards in the background, paced.
    /// Appends share the CPU and the disk with it while it runs.
    pub fn begin_snapshot_waited(
        &self,
        kind: SnapshotKind,
    ) -> Result<impl Future<Output = Result<Option<SnapshotHeader>>> + 'static> {
        self.begin_snapshot_as(kind, Priority::Waited)
    }

    fn begin_snapshot_as(
        &self,
        kind: SnapshotKind,
        priority: Priority,
    ) -> Result<impl Future<Output = Result<Option<SnapshotHeader>>> + 'static> {
        let flight = self.shared.snapshot.claim()?;
        let store = self.clone();
        Ok(async move {
            let _flight = flight;
            let upto = store.sync().await?;
            let waiting = (priority == Priority::Waited).then(|| store.shared.wal.jobs.waited());
            store
                .shared
                .snapshots
                .get()
                .send(TakeSnapshot {
                    kind,
                    upto,
                    priority,
                    waiting,
                })
                .await
                .unwrap_or_else(|_| Err(store.closed_mailbox("the snapshot actor")))
        })
    }

    /// Compacts everything acknowledged before the call, whatever its
    /// redundancy: seals the active segment, then rewrites the sealed
    /// segments down to the latest value of each key (see `compaction`).
    /// `None`: there was nothing left to compact (an automatic compaction
    /// running at the same time may already have covered it all). One
    /// compaction asked for this way runs at a time: while one is under way
    /// this fails at once with [`Error::InProgress`] (see
    /// [`Store::begin_compaction`]); an automatic compaction under way is
    /// waited for instead.
    pub async fn compact(&self) -> Result<Option<CompactionReport>> {
        self.begin_compaction()?.await
    }

    /// Claims the store's one compaction slot now, or fails at once with
    /// [`Error::InProgress`] if a compaction asked for earlier is under way,
    /// before anything is rotated or started; the returned future compacts
    /// and frees the slot when it ends. As with snapshots, a caller is
    /// refused rather than handed the running compaction's result, which
    /// may not cover the caller's last writes.
    pub fn begin_compaction(
        &self,
    ) -> Result<impl Future<Output = Result<Option<CompactionReport>>> + 'static> {
        let flight = self.shared.compaction.claim()?;
        let store = self.clone();
        Ok(async move {
            let _flight = flight;
            let (reply, answer) = oneshot::channel();
            store.shared.inbox.push(Request::Rotate { reply })?;
            Pending { answer }.await?;
            store
                .shared
                .compactor
                .get()
                .send(Compact)
                .await
                .unwrap_or_else(|_| Err(store.closed_mailbox("the compactor actor")))
        })
    }

    /// The records of `range` (for example `1..=100`, `50..`, `..`), read
    /// back from the segment files in sequence order through one bounded
    /// buffer, however long the range.
    ///
    /// The read ends at the range's end or at the last record acknowledged
    /// when it began, whichever comes first (in `always` mode never a
    /// record whose `fdatasync` has not returned); it follows the log into
    /// segments rotated in meanwhile. An unbounded start means the first
    /// record the log still holds. Records a snapshot or a compaction
    /// retired answer [`Error::Purged`], at once if the range starts among
    /// them, or at the first record read after their segment was retired;
    /// a record returned before that is still what was appended. Damage
    /// is [`Error::Corruption`] naming the file and offset. After an error
    /// the iterator ends.
    ///
    /// The files are read on the calling thread (a few headers here, the
    /// records as the iterator is advanced): in async code, iterate it in a
    /// blocking task, or use [`Store::subscribe`].
    pub fn read(&self, range: impl RangeBounds<Seq>) -> Result<LogRead> {
        let start = match range.start_bound() {
            Bound::Included(from) => Some(*from),
            Bound::Excluded(after) => Some(after.saturating_add(1)),
            Bound::Unbounded => None,
        };
        // The cursor first: it notes the log's truncations so far, so one
        // made after the bound below was read is one it knows is new.
        let mut cursor = Cursor::new(Arc::clone(&self.shared.wal), start);
        let acknowledged = acknowledged_upto(&self.shared.wal);
        let end = match range.end_bound() {
            Bound::Included(to) => *to,
            Bound::Excluded(to) => to.saturating_sub(1),
            Bound::Unbounded => Seq::MAX,
        }
        .min(acknowledged);
        if start.is_some_and(|from| from.max(1) > end) {
            return Ok(LogRead::new(cursor, 0));
        }
        cursor.locate()?;
        Ok(LogRead::new(cursor, end))
    }

    /// Follows the log from record `from` on: every record, in sequence
    /// order and once, each as soon as the sync mode acknowledges it (see
    /// [`Subscription::next`]). A subscriber reads the segment files, a
    /// chunk at a time on a blocking thread: one that falls behind never
    /// slows the appenders, and catches up from the disk, unless a snapshot
    /// or a compaction retired the records it has yet to read
    /// ([`Error::Purged`]). Ends when the store shuts down.
    pub fn subscribe(&self, from: Seq) -> Subscription {
        Subscription::new(Arc::clone(&self.shared.wal), from)
    }

    /// A handle on the key-value state: every acknowledged write, readable
    /// in key order. Cheap to clone and to keep.
    pub fn state(&self) -> State {
        State::new(Arc::clone(&self.shared.wal.state))
    }

    /// The state of the files: segments, bytes, snapshots, compaction.
    pub fn persistence_info(&self) -> PersistenceInfo {
        PersistenceInfo {
            recovery_truncated_bytes: self.shared.truncated_at_open,
            ..PersistenceInfo::read(&self.shared.wal)
        }
    }

    /// Per kind of operation (append, sync, compaction, snapshot): count,
    /// throughput and latency, as of the `MetricsActor`'s last publication
    /// (at most a second old).
    pub async fn stats_report(&self) -> Result<StatsReport> {
        self.shared
            .metrics
            .get()
            .send(GetStats)
            .await
            .map_err(|_| self.closed_mailbox("the metrics actor"))
    }

    /// The snapshots the store holds, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotHeader> {
        self.shared.wal.manifest.snapshots()
    }

    /// The WAL's counters since open.
    pub fn stats(&self) -> StoreStats {
        self.shared.counters.snapshot()
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Refuses new requests, writes and syncs every queued one, stops the
    /// actors and threads, and releases the directory. Appends that were
    /// accepted before the call are durable when it returns `Ok`. A
    /// snapshot or compaction under way is cancelled (its caller gets
    /// [`Error::ShutDown`]); the next open redoes it.
    pub async fn shutdown(&self) -> Result<()> {
        let again = self.shared.shut_down.swap(true, Relaxed);
        self.shared
            .supervisor
            .send(Shutdown)
            .await
            .unwrap_or(Err(if again {
                Error::ShutDown
            } else {
                Error::Panicked {
                    what: "the store supervisor",
                }
            }))
    }

    /// Whether `shutdown` was called.
    #[cfg(feature = "archive")]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shared.shut_down.load(Relaxed)
    }

    /// A request its actor dropped: the store stopped, or the actor died
    /// (and its supervisor restarted it: the next request reaches the new one).
    fn closed_mailbox(&self, actor: &'static str) -> Error {
        if self.shared.shut_down.load(Relaxed) {
            Error::ShutDown
        } else {
            Error::Panicked { what: actor }
        }
    }
}

impl Drop for Shared {
    /// The last handle went without [`Store::shutdown`]: shut down the same
    /// way (queued appends written and synced as the sync mode promised,
    /// threads stopped, directory released), in the background, since the
    /// actors may run on this very thread. An open of the same directory in
    /// this process waits for it to finish.
    fn drop(&mut self) {
        let Some(arbiter) = actix_rt::Arbiter::try_current() else {
            // Dropped off the actix threads: nothing here can wait for the
            // reply, but the supervisor still shuts down.
            self.supervisor.do_send(Shutdown);
            return;
        };
        let guard = closing::begin(&self.config.data_dir);
        let supervisor = self.supervisor.clone();
        // If the arbiter is stopping, the future is dropped unrun and
        // `guard` with it: the actors and the lock go with the arbiter.
        arbiter.spawn(async move {
            if let Ok(Err(e)) = supervisor.send(Shutdown).await {
                tracing::error!("closing a dropped store failed: {e}");
            }
            drop(guard);
        });
    }
}

/// Refuses what the limits do not allow, before anything is written.
fn check_entry(entry: &Entry, limits: &LimitsConfig) -> Result<()> {
    if matches!(entry, Entry::Raw(_)) {
        // Its state would silently ignore it, and its snapshots and
        // compactions, which keep only the net effect on keys, would drop it.
        return Err(Error::InvalidRequest(
            "a key-value store takes no raw payloads; open a Log for those".into(),
        ));
    }
    let mut total: u64 = 0;
    for op in entry.ops() {
        total += op_bytes(op);
        let Some(key) = op.key() else { continue };
        if key.is_empty() {
            return Err(Error::InvalidRequest("empty key".into()));
        }
        if key.len() as u64 > limits.max_key_bytes {
            return Err(Error::InvalidRequest(format!(
                "key of {} bytes exceeds limits.max_key_bytes = {}",
                key.len(),
                limits.max_key_bytes
            )));
        }
        let value_len = op.value().map_or(0, <[u8]>::len) as u64;
        if value_len > limits.max_value_bytes {
            return Err(Error::InvalidRequest(format!(
                "value of {value_len} bytes exceeds limits.max_value_bytes = {}",
                limits.max_value_bytes
            )));
        }
    }
    if total + RECORD_OVERHEAD_BYTES > limits.max_record_bytes {
        return Err(Error::InvalidRequest(format!(
            "batch of {} operations ({total} bytes) exceeds limits.max_record_bytes = {}",
            entry.ops().len(),
            limits.max_record_bytes
        )));
    }
    Ok(())
}

/// Refuses an `[archive]` this build or this kind of directory cannot
/// keep, and one whose bucket refuses the credentials or does not exist;
/// an archive merely unreachable is no reason to refuse writes (retired
/// files wait for it).
async fn check_archive(config: &Config, kind: DirKind) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::Archive {
            op: "start archiving to",
            object: config.archive.url.clone(),
            reason: reason.to_string(),
        })
    };
    if kind != DirKind::Kv {
        return refuse("an archive is kept for a key-value Store, not for a Log");
    }
    #[cfg(not(feature = "archive"))]
    return refuse("this build has no archive support (the `archive` feature of concordkv)");
    #[cfg(feature = "archive")]
    crate::archive::bucket::Bucket::connect(&config.archive)?
        .check()
        .await
}

/// As [`Store::open_replaying`], through another file-system implementation
/// (the simulated disk of the tests, or a wrapper that injects faults).
#[cfg(feature = "testing")]
pub async fn open_with_fs(
    config: Config,
    fs: Arc<dyn FileSystem>,
    on_record: impl FnMut(&Record) + Send + 'static,
) -> Result<(Store, Recovery)> {
    Store::open_with_fs(config, fs, on_record).await
}

/// An acknowledgement to await: resolves with the record's sequence number,
/// or with why it was not acknowledged.
#[must_use = "an append is only acknowledged once its Pending resolves"]
pub struct Pending {
    answer: oneshot::Receiver<Result<Seq>>,
}

impl Future for Pending {
    type Output = Result<Seq>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A dropped sender means the WAL actor died holding the request.
        let answer =
            std::task::ready!(Pin::new(&mut this.answer).poll(cx)).unwrap_or(Err(Error::ActorDied));
        Poll::Ready(answer)
    }
}

#[cfg(feature = "testing")]
impl Store {
    /// Makes `actor` panic in a handler, as a bug would; its supervisor
    /// restarts it. An actor the store asks things of directly gets the
    /// panic ahead of the next request it is sent, which then finds its
    /// mailbox closed.
    pub fn crash_actor(&self, actor: ActorKind) {
        use crate::actors::messages::{Crash, CrashActor};
        match actor {
            ActorKind::Rotator => self.shared.rotator.get().do_send(Crash),
            ActorKind::Snapshot => self.shared.snapshots.get().do_send(Crash),
            ActorKind::Compactor => self.shared.compactor.get().do_send(Crash),
            ActorKind::Metrics => self.shared.metrics.get().do_send(Crash),
            ActorKind::Wal | ActorKind::SyncTimer | ActorKind::Archiver => {
                self.shared.supervisor.do_send(CrashActor(actor));
            }
        }
    }

    /// Makes the rotator panic when the WAL next asks it for a segment: the
    /// WAL learns of the death from its request, perhaps while a full
    /// segment waits for the new one.
    pub fn crash_rotator_while_preparing(&self) {
        self.shared
            .rotator
            .get()
            .do_send(crate::actors::messages::CrashWhilePreparing);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::SyncMode;
    use crate::testing::sim_fs::{Call, Fault, SimFs};

    async fn open_sim(fs: &SimFs, mode: SyncMode) -> Store {
        let mut config = Config::with_data_dir(PathBuf::from("/sim/db"));
        config.wal.sync_mode = mode;
        config.limits.max_pending_bytes = 4096;
        config.wal.max_segment_bytes = 1 << 20;
        let (store, _) = Store::open_with_fs(config, Arc::new(fs.clone()), |_| {})
            .await
            .expect("open");
        store
    }

    fn set(key: &str, value_bytes: usize) -> Entry {
        Entry::Op(Op::Set {
            key: key.as_bytes().to_vec(),
            value: vec![7; value_bytes],
        })
    }

    fn segment_fault(call: Call) -> Fault {
        Fault {
            call,
            nth: 1,
            errno: libc::EIO,
            path_contains: Some(".wal".into()),
            sticky: true,
        }
    }

    /// The room still taken once everything answered is applied (a read
    /// applies what is queued).
    fn applied_room(store: &Store) -> u64 {
        let _ = store.state().len();
        store.stats().pending_bytes
    }

    /// Appends three records at once and expects each to fail; the room
    /// of each is back by the time its appender has the answer.
    async fn three_failed_appends(store: &Store) {
        let mut pendings = Vec::new();
        for key in ["a", "b", "c"] {
            pendings.push(store.submit(set(key, 1000)).await.expect("admitted"));
        }
        assert!(store.stats().pending_bytes > 0);
        for pending in pendings {
            assert!(pending.await.is_err(), "the disk failed");
        }
        assert_eq!(store.stats().pending_bytes, 0);
    }

    #[actix_rt::test]
    async fn room_is_given_back_on_every_failure_path() {
        // A failed write: the appenders are answered by the WAL actor.
        let fs = SimFs::new(1);
        let store = open_sim(&fs, SyncMode::Always).await;
        store.set("ok", "1").await.expect("healthy disk");
        assert_eq!(applied_room(&store), 0, "given back once applied");
        fs.inject(segment_fault(Call::Write));
        three_failed_appends(&store).await;
        // Refused afterwards: the gate is closed with the log's failure.
        let refused = store.submit(set("d", 10)).await.err();
        assert!(
            matches!(refused, Some(Error::WalFailed { .. })),
            "{refused:?}"
        );
        assert_eq!(store.stats().pending_bytes, 0);
        let _ = store.shutdown().await;

        // A failed sync: the appenders are answered by the sync thread.
        let fs = SimFs::new(2);
        let store = open_sim(&fs, SyncMode::Always).await;
        fs.inject(segment_fault(Call::SyncData));
        three_failed_appends(&store).await;
        let _ = store.shutdown().await;

        // Held back by the loss bound, then failed by the sync that was to
        // release them.
        let fs = SimFs::new(3);
        let store = open_sim(&fs, SyncMode::Batch).await;
        fs.inject(segment_fault(Call::SyncData));
        let mut pendings = Vec::new();
        for i in 0..200 {
            pendings.push(store.submit(set(&format!("k{i}"), 8)).await);
        }
        for pending in pendings.into_iter().flatten() {
            let _ = pending.await;
        }
        assert_eq!(applied_room(&store), 0);
        let _ = store.shutdown().await;
    }

    #[actix_rt::test]
    async fn room_is_given_back_when_an_admission_is_misused_dropped_or_refused() {
        let fs = SimFs::new(4);
        let store = open_sim(&fs, SyncMode::Always).await;
        let big = set("big", 1000);
        assert_eq!(
            store.admission_bytes(&big),
            3 + 1000 + crate::log::admission::OP_OVERHEAD_BYTES + RECORD_OVERHEAD_BYTES
        );
        // More room than the entry needs: the excess goes back at once.
        let admission = store.admit(&big).await.expect("room");
        let small = set("s", 1);
        let pending = store
            .submit_admitted(small.clone(), admission)
            .expect("queued");
        assert!(store.stats().pending_bytes <= store.admission_bytes(&small));
        pending.await.expect("written");
        assert_eq!(applied_room(&store), 0);
        // Too little room: refused, and what it held goes back.
        let admission = store.admit(&small).await.expect("room");
        let refused = store.submit_admitted(big.clone(), admission).err();
        assert!(
            matches!(refused, Some(Error::InvalidRequest(_))),
            "{refused:?}"
        );
        assert_eq!(store.stats().pending_bytes, 0);
        // Dropped unused.
        drop(store.admit(&big).await.expect("room"));
        assert_eq!(store.stats().pending_bytes, 0);
        // Refused by the limits before any room is taken.
        let empty_key = Entry::Op(Op::Delete { key: Vec::new() });
        assert!(matches!(
            store.admit(&empty_key).await,
            Err(Error::InvalidRequest(_))
        ));
        // Held across the shutdown, then used: refused, given back.
        let admission = store.admit(&big).await.expect("room");
        store.shutdown().await.expect("shutdown");
        assert!(matches!(
            store.submit_admitted(big.clone(), admission),
            Err(Error::ShutDown)
        ));
        assert!(matches!(store.admit(&big).await, Err(Error::ShutDown)));
        assert_eq!(store.stats().pending_bytes, 0);
        // From another store.
        let other_fs = SimFs::new(5);
        let other = open_sim(&other_fs, SyncMode::Always).await;
        let foreign = other.admit(&small).await.expect("room");
        let store = open_sim(&fs, SyncMode::Always).await;
        assert!(matches!(
            store.submit_admitted(small, foreign),
            Err(Error::InvalidRequest(_))
        ));
        assert_eq!(other.stats().pending_bytes, 0);
        store.shutdown().await.expect("shutdown");
        other.shutdown().await.expect("shutdown");
    }
}
