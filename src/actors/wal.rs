//! `WalActor`: owns the active segment. It takes every request queued in the
//! inbox at once, encodes them into one buffer, writes it with one `pwrite`,
//! and answers per the sync mode: at once after the write, or through the
//! sync thread once an `fdatasync` covers the records (group commit).
//!
//! Rotation: when the next record would take the segment past
//! `wal.max_segment_bytes`, the segment is sealed (synced a last time) on
//! the sync thread while new requests wait in the inbox; the next
//! segment was preallocated ahead of time on a blocking thread, so the swap
//! is a header write and a handle exchange. Sealing before writing on keeps a
//! power cut from leaving a later segment intact behind a torn earlier one.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::compactor::CompactorActor;
use crate::actors::messages::{
    Drain, HeaderSynced, Hurry, MarkTruncation, PrepareSegment, SealDone, SegmentSealed, StopWal,
    SyncTick, WalDied,
};
use crate::actors::rotator::{self, RotatorActor};
use crate::actors::supervised::Slot;
use crate::actors::supervisor::StoreSupervisor;
use crate::config::{Config, SyncMode};
use crate::crash::crash_point;
use crate::entry::{Entry, Record, Seq};
use crate::error::{Error, Result};
use crate::format::record::encode_segment_record;
use crate::format::segment::SEGMENT_HEADER_BYTES;
use crate::fs::FileSystem;
use crate::latency::Latencies;
use crate::lifecycle::background::{Jobs, Priority};
use crate::lifecycle::manifest::{remove_retired, ManifestStore};
use crate::log::admission::Admission;
use crate::log::inbox::{Closed, Inbox, Reply, Request};
use crate::log::recovery::{recover, Debris, Recovery};
use crate::log::segment::Segment;
use crate::log::sync_worker::{SyncJob, SyncWorker, Waiter};
use crate::meters::Meters;
use crate::state::{self, Tree};
use crate::stats::WalCounters;

/// How long the WAL waits before asking a restarted rotator again for the
/// segment the dead one was preparing.
const ROTATOR_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Bytes written between two starts of writeback ahead of a sync (see
/// `WalActor::write_back_ahead`; RocksDB's `wal_bytes_per_sync`).
const WRITEBACK_STEP: u64 = 1 << 20;

/// The page size writeback is started in whole units of: a page still
/// being filled would be written twice.
const PAGE_BYTES: u64 = 4096;

/// What every incarnation of the WAL actor shares with the supervisor.
pub(crate) struct WalShared {
    pub config: Config,
    pub fs: Arc<dyn FileSystem>,
    /// Read by anyone; changed only by `RotatorActor` (see its module).
    pub manifest: ManifestStore,
    /// Latency samples for the `MetricsActor` to drain.
    pub latencies: Arc<Latencies>,
    pub inbox: Arc<Inbox>,
    pub worker: SyncWorker,
    pub counters: Arc<WalCounters>,
    /// The key-value state acknowledged records are applied to.
    pub state: Arc<state::Shared>,
    /// The store's Prometheus instruments.
    pub meters: Arc<Meters>,
    /// Maintenance threads (snapshots, compactions, removals of retired
    /// files): shutdown cancels them and waits for them.
    pub jobs: Arc<Jobs>,
}

impl WalShared {
    /// Removes `files`, which a manifest write unlisted, paced at
    /// `maintenance.delete_bytes_per_sec`, as a maintenance job: shutdown
    /// stops it, and the next open removes whatever it left.
    pub(crate) fn remove_unlisted_files(
        self: &Arc<Self>,
        what: &'static str,
        priority: Priority,
        files: Vec<std::path::PathBuf>,
    ) -> impl std::future::Future<Output = Result<()>> {
        let shared = Arc::clone(self);
        self.jobs
            .run("concordkv-remove", what, priority, move |cancel| {
                let pace = shared.config.maintenance.delete_bytes_per_sec;
                remove_retired(shared.fs.as_ref(), &files, pace, cancel)
            })
    }
}

/// Where a WAL actor starts: a fresh segment after the recovered log.
pub struct WalStart {
    segment: Segment,
    next_seq: Seq,
}

/// Recovers the log the manifest lists (the state it holds, and each record
/// after the snapshots handed to `on_record`), retires segments that hold
/// nothing, and starts a new segment after the log: at open, and on the
/// rotator's manifest thread after the WAL died.
pub(crate) fn open_log(
    fs: &dyn FileSystem,
    manifest: &ManifestStore,
    config: &Config,
    debris: Debris,
    on_record: &mut dyn FnMut(&Record),
) -> Result<(Recovery, Tree, WalStart)> {
    let recovered = recover(fs, manifest, config, debris, on_record)?;
    manifest.finish_recovery(&recovered.retire, recovered.sealed_through)?;
    let next_seq = recovered.recovery.last_seq + 1;
    // Unpaced: appends wait for this one.
    let mut segment =
        manifest.create_segment(config.wal.max_segment_bytes, 0, &AtomicBool::new(true))?;
    segment.start(next_seq)?;
    segment
        .file
        .sync_data()
        .map_err(|e| Error::io("sync segment", &segment.path, e))?;
    segment.durable.store(
        SEGMENT_HEADER_BYTES as u64,
        std::sync::atomic::Ordering::Release,
    );
    Ok((
        recovered.recovery,
        recovered.state,
        WalStart { segment, next_seq },
    ))
}

/// Tells the supervisor whenever the actor is dropped. A panic in a handler
/// drops it too (actix even runs `stopped()` while unwinding, so that hook
/// cannot tell a crash from a stop); the supervisor ignores the notice of an
/// actor it stopped itself.
pub(crate) struct DeathNotice {
    pub supervisor: Addr<StoreSupervisor>,
    pub generation: u64,
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        self.supervisor.do_send(WalDied {
            generation: self.generation,
        });
    }
}

/// The writer of the log.
pub struct WalActor {
    shared: Arc<WalShared>,
    rotator: Slot<RotatorActor>,
    compactor: Slot<CompactorActor>,
    segment: Segment,
    next_seq: Seq,
    /// The next segment, created ahead of time by the rotator.
    prepared: Option<Segment>,
    preparing: bool,
    /// The segment being prepared was hurried before the active one filled.
    hurried_early: bool,
    /// A `Hurry` for a dead rotator's successor is scheduled.
    hurry_retry: bool,
    /// Set while a full segment is being sealed; `true` once it is.
    rotating: Option<bool>,
    /// Requests taken from the inbox and not yet written.
    backlog: VecDeque<Request>,
    taken: Vec<Request>,
    buf: Vec<u8>,
    /// The appends of the last write, emptied: gathered into again rather
    /// than allocated per write (see the sync worker's `ready`).
    acks: Vec<Waiter>,
    /// The records of the last write, emptied: staged in the state once
    /// written, then freed here, on the thread that allocated them.
    written: Vec<(Seq, Entry)>,
    /// Records written since the last sync was requested.
    unsynced: u64,
    /// `Rotate` requests waiting for the rotation in progress.
    rotation_replies: Vec<Reply>,
    /// A log's truncation waiting for the active segment's seal: the last
    /// record kept, and who asked.
    truncation: Option<(Seq, Reply)>,
    /// The failure that stopped the log, shared with every request refused
    /// because of it.
    failed: Option<Arc<Error>>,
    stopping: Option<oneshot::Sender<Result<()>>>,
    /// Held only for its `Drop`.
    _death: DeathNotice,
}

impl WalActor {
    pub(crate) fn new(
        shared: Arc<WalShared>,
        rotator: Slot<RotatorActor>,
        compactor: Slot<CompactorActor>,
        start: WalStart,
        death: DeathNotice,
    ) -> WalActor {
        shared.counters.last_seq.store(start.next_seq - 1, Relaxed);
        shared
            .counters
            .durable_seq
            .store(start.next_seq - 1, Relaxed);
        WalActor {
            shared,
            rotator,
            compactor,
            segment: start.segment,
            next_seq: start.next_seq,
            prepared: None,
            preparing: false,
            hurried_early: false,
            hurry_retry: false,
            rotating: None,
            backlog: VecDeque::new(),
            taken: Vec::new(),
            buf: Vec::new(),
            acks: Vec::new(),
            written: Vec::new(),
            unsynced: 0,
            rotation_replies: Vec::new(),
            truncation: None,
            failed: None,
            stopping: None,
            _death: death,
        }
    }

    fn sync_mode(&self) -> SyncMode {
        self.shared.config.wal.sync_mode
    }

    /// Writes everything queued, until the inbox is empty or the segment is full.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        while self.rotating.is_none() {
            if self.backlog.is_empty() {
                self.shared.inbox.take(&mut self.taken);
                if self.taken.is_empty() {
                    break;
                }
                self.backlog.extend(self.taken.drain(..));
            }
            if let Some(cause) = self.failed.clone().or_else(|| self.shared.worker.failure()) {
                self.fail(cause);
                continue;
            }
            if self.write_backlog() {
                self.start_rotation(ctx);
            } else {
                self.hurry_if_outrun(ctx);
            }
        }
        self.finish_stop_if_drained(ctx);
    }

    /// Encodes and writes the backlog; returns whether the segment is full.
    fn write_backlog(&mut self) -> bool {
        self.buf.clear();
        let mut acks = std::mem::take(&mut self.acks);
        let mut written = std::mem::take(&mut self.written);
        // The room of every append written, merged: given back at once
        // once their records are applied.
        let mut room: Option<Admission> = None;
        let mut sync_replies: Vec<Reply> = Vec::new();
        let mut full = false;
        let max = self.shared.config.wal.max_segment_bytes;
        let empty_segment = self.segment.records == 0;
        let layout = self.segment.layout();
        let durable = self
            .segment
            .durable
            .load(std::sync::atomic::Ordering::Acquire);
        while let Some(request) = self.backlog.pop_front() {
            match request {
                Request::Append {
                    entry,
                    reply,
                    permit,
                    queued,
                } => {
                    let start = self.buf.len();
                    encode_segment_record(
                        self.next_seq,
                        &entry,
                        layout,
                        durable,
                        self.segment.offset + start as u64,
                        &mut self.buf,
                    );
                    let end = self.segment.offset + self.buf.len() as u64;
                    // A record larger than a whole segment gets a segment of its own.
                    let alone = empty_segment && start == 0;
                    if end > max && !alone {
                        self.buf.truncate(start);
                        self.backlog.push_front(Request::Append {
                            entry,
                            reply,
                            permit,
                            queued,
                        });
                        full = true;
                        break;
                    }
                    acks.push(Waiter {
                        seq: self.next_seq,
                        reply,
                        queued: Some(queued),
                    });
                    written.push((self.next_seq, entry));
                    Admission::gather(&mut room, permit);
                    self.next_seq += 1;
                }
                Request::Sync { reply } => sync_replies.push(reply),
                Request::Truncate { after, reply } => {
                    if after >= self.next_seq - 1 {
                        // Nothing after it was ever written.
                        let _ = reply.send(Ok(self.next_seq - 1));
                        continue;
                    }
                    // Sealed even if it holds nothing: the next segment's
                    // header must say `after + 1`.
                    self.truncation = Some((after, reply));
                    full = true;
                    break;
                }
                Request::Rotate { reply } => {
                    if empty_segment && self.buf.is_empty() {
                        let _ = reply.send(Ok(self.next_seq - 1));
                    } else {
                        self.rotation_replies.push(reply);
                        full = true;
                        break;
                    }
                }
            }
        }
        if !self.buf.is_empty() {
            // The requests of a write that fails get its error; after an
            // earlier failure they are refused with that one as the cause.
            let outcome = match self.shared.worker.admit_write() {
                Ok(_gate) => self
                    .segment
                    .file
                    .write_at(&self.buf, self.segment.offset)
                    .map_err(|e| {
                        self.shared.meters.write_errors.increment(1);
                        let cause = Arc::new(Error::io("write segment", &self.segment.path, e));
                        (Error::clone(&cause), cause)
                    }),
                Err(cause) => Err((Error::refused(&cause), cause)),
            };
            if let Err((answer, cause)) = outcome {
                // The room goes back before the answers, so that an
                // appender that has its answer finds it free.
                drop(room);
                written.clear();
                for waiter in acks.drain(..) {
                    waiter.answer(Err(answer.clone()));
                }
                for reply in sync_replies {
                    let _ = reply.send(Err(answer.clone()));
                }
                self.acks = acks;
                self.written = written;
                self.fail(cause);
                return false;
            }
            // Queued for the state before anyone can acknowledge them.
            self.shared
                .state
                .stage(written.iter().map(|(seq, entry)| (*seq, entry)), room);
            written.clear();
            written.shrink_to(crate::log::sync_worker::KEPT_WAITERS);
            let written = self.buf.len() as u64;
            self.shared
                .worker
                .wrote(self.next_seq - 1, std::time::Instant::now());
            self.segment.offset += written;
            self.segment.records += acks.len() as u64;
            if matches!(self.sync_mode(), SyncMode::Interval | SyncMode::None) {
                self.write_back_ahead();
            }
            let counters = &self.shared.counters;
            counters.records.fetch_add(acks.len() as u64, Relaxed);
            counters.bytes.fetch_add(written, Relaxed);
            counters.last_seq.store(self.next_seq - 1, Relaxed);
            self.shared.meters.records.increment(acks.len() as u64);
            self.shared.meters.bytes.increment(written);
        }
        self.unsynced += acks.len() as u64;
        let upto = self.next_seq - 1;
        let mut waiters: Vec<Waiter> = sync_replies
            .into_iter()
            .map(|reply| Waiter {
                seq: upto,
                reply,
                queued: None,
            })
            .collect();
        match self.sync_mode() {
            SyncMode::Always => waiters.append(&mut acks),
            // Acknowledged within the mode's bound on what is not yet
            // durable; after a failed sync, not at all (fsyncgate). One held
            // back is answered by a sync already coming: the one in flight,
            // the next batch's (a batch-mode append is held back only when a
            // whole batch is unsynced), or the timer's.
            SyncMode::Batch | SyncMode::Interval | SyncMode::None => {
                if !acks.is_empty() {
                    self.shared.worker.acknowledge(&mut acks);
                }
            }
        }
        acks.shrink_to(crate::log::sync_worker::KEPT_WAITERS);
        self.acks = acks;
        self.written = written;
        let batch_due = self.sync_mode() == SyncMode::Batch
            && self.unsynced >= self.shared.config.wal.batch_size;
        let always_due = self.sync_mode() == SyncMode::Always && self.unsynced > 0;
        if !waiters.is_empty() || batch_due || always_due {
            self.submit_sync(waiters, None, false);
        }
        full
    }

    /// Starts the writeback of the whole pages written since the last
    /// start, once there are [`WRITEBACK_STEP`] of them. In a mode that syncs
    /// seldom, a sync otherwise finds everything since the last one dirty:
    /// a second's worth at 150 MB/s, which the appenders held back by the
    /// mode's bound (and every rotation's seal) waited for. Only started,
    /// never waited for here (a wait would also take the file's writeback
    /// error that the next sync must report).
    fn write_back_ahead(&mut self) {
        let segment = &mut self.segment;
        let whole_pages = segment.offset & !(PAGE_BYTES - 1);
        if whole_pages >= segment.written_back + WRITEBACK_STEP {
            segment
                .file
                .start_writeback(segment.written_back, whole_pages - segment.written_back);
            segment.written_back = whole_pages;
        }
    }

    /// Asks the sync thread to make the active segment durable up to now.
    /// `seal`: the segment's last sync (rotation or shutdown), and what to
    /// do when it is done; `trim`: cut the preallocated rest off first.
    fn submit_sync(
        &mut self,
        waiters: Vec<Waiter>,
        seal: Option<crate::log::sync_worker::OnDone>,
        trim: bool,
    ) {
        self.shared.worker.submit(SyncJob {
            file: Arc::clone(&self.segment.file),
            path: self.segment.path.clone(),
            records: std::mem::take(&mut self.unsynced),
            upto: self.next_seq - 1,
            end: self.segment.offset,
            durable: Arc::clone(&self.segment.durable),
            waiters,
            seal: seal.is_some(),
            trim,
            on_done: seal,
        });
    }

    fn start_rotation(&mut self, ctx: &mut Context<Self>) {
        self.rotating = Some(false);
        let me = ctx.address();
        self.submit_sync(
            Vec::new(),
            Some(Box::new(move |result| me.do_send(SealDone(result)))),
            false,
        );
        self.prepare_next(ctx);
    }

    /// Asks the rotator for the next segment, unless one is ready or coming.
    fn prepare_next(&mut self, ctx: &mut Context<Self>) {
        if self.prepared.is_some() || self.preparing || self.failed.is_some() {
            return;
        }
        self.preparing = true;
        self.hurried_early = false;
        ctx.spawn(
            self.rotator
                .get()
                .send(PrepareSegment)
                .into_actor(self)
                .map(|outcome, act, ctx| {
                    match outcome {
                        Ok(Ok(segment)) => act.prepared = Some(segment),
                        Ok(Err(e)) => act.fail(Arc::new(e)),
                        // The rotator died (its mailbox closes only when a
                        // handler panicked): the supervisor restarts it, and
                        // the segment is asked of the new one a moment later
                        // — unless the supervisor gave up. Still preparing
                        // meanwhile: a send to the closed mailbox fails at
                        // once, and asking again right away would spin this
                        // thread, starving the supervisor that brings the
                        // successor.
                        Err(_) => match act.shared.inbox.failure() {
                            Some(cause) => act.fail(cause),
                            None => {
                                ctx.run_later(ROTATOR_RETRY, |act, ctx| {
                                    act.preparing = false;
                                    act.prepare_next(ctx);
                                    act.finish_stop_if_drained(ctx);
                                });
                                return;
                            }
                        },
                    }
                    act.preparing = false;
                    act.finish_rotation(ctx);
                    act.finish_stop_if_drained(ctx);
                }),
        );
    }

    /// Tells the rotator that a rotation waits for the segment it is
    /// preparing. A dead rotator's successor is told once it is in place
    /// (the flag the fill watches outlives both), by one retry at a time.
    fn hurry(&mut self, ctx: &mut Context<Self>) {
        if self.hurry_retry {
            return;
        }
        match self.rotator.get().try_send(Hurry) {
            Ok(()) => {}
            Err(SendError::Full(hurry)) => self.rotator.get().do_send(hurry),
            Err(SendError::Closed(_)) => {
                self.hurry_retry = true;
                ctx.run_later(ROTATOR_RETRY, |act, ctx| {
                    act.hurry_retry = false;
                    let waiting = act.rotating == Some(true) && act.prepared.is_none();
                    if waiting && act.failed.is_none() {
                        act.hurry(ctx);
                    }
                });
            }
        }
    }

    /// Hurries the segment being prepared once the active one is half
    /// full: the log is then growing faster than the paced fill, which
    /// would not finish before the rotation needs it. Measured with 64
    /// `none` writers (150 MB/s of log, fill at 64 MiB/s): every rotation
    /// held the appenders for up to 110 ms; hurried at half, 30–36 ms at
    /// most, and 15–20% more appends a second.
    fn hurry_if_outrun(&mut self, ctx: &mut Context<Self>) {
        let half = self.shared.config.wal.max_segment_bytes / 2;
        if self.preparing && !self.hurried_early && self.segment.offset > half {
            self.hurried_early = true;
            self.hurry(ctx);
        }
    }

    /// Swaps in the prepared segment once the full one is sealed.
    fn finish_rotation(&mut self, ctx: &mut Context<Self>) {
        if self.rotating != Some(true) {
            return;
        }
        let Some(mut next) = self.prepared.take() else {
            self.hurry(ctx);
            self.prepare_next(ctx);
            return;
        };
        crash_point("rotate.before_header");
        if let Err(e) = next.start(self.next_seq) {
            self.fail(Arc::new(e));
            self.finish_stop_if_drained(ctx);
            return;
        }
        let sealed = std::mem::replace(&mut self.segment, next);
        self.compactor.get().do_send(SegmentSealed {
            records: sealed.records,
        });
        // The header is made durable before any record follows it. Synced
        // together, a failed sync could lose the header's page while later
        // pages still reach the disk by writeback: a segment whose header
        // reads as zeros with records behind it, which recovery must treat
        // as damage, not as a write that never happened.
        let me = ctx.address();
        self.shared.worker.submit(SyncJob {
            file: Arc::clone(&self.segment.file),
            path: self.segment.path.clone(),
            records: 0,
            upto: self.next_seq - 1,
            end: self.segment.offset,
            durable: Arc::clone(&self.segment.durable),
            waiters: Vec::new(),
            seal: false,
            trim: false,
            on_done: Some(Box::new(move |result| me.do_send(HeaderSynced(result)))),
        });
        // Still rotating (nothing is written meanwhile), but no longer
        // waiting for a prepared segment.
        self.rotating = Some(false);
    }

    /// The new segment's header is durable: the rotation is complete.
    fn finish_start(&mut self, ctx: &mut Context<Self>) {
        self.rotating = None;
        for reply in self.rotation_replies.drain(..) {
            let _ = reply.send(Ok(self.next_seq - 1));
        }
        self.shared.counters.rotations.fetch_add(1, Relaxed);
        self.shared.meters.rotations.increment(1);
        self.prepare_next(ctx);
        self.drain(ctx);
    }

    /// A log's truncation, once the active segment is sealed and every
    /// record written before the request is answered: one manifest write
    /// (by the rotator, which owns the manifest; nothing is written
    /// meanwhile, as in any rotation) marks the records after `after` in the sealed segments
    /// as dropped, and moves the readers' end back to `after` before any
    /// reader can see the mark; then the counters move back too and the
    /// rotation goes on, starting the next segment at `after + 1`.
    ///
    /// A crash before the manifest write keeps every record; after it,
    /// the open drops them (the mark) and starts a segment at
    /// `after + 1` itself. If the write fails the log stops: whether the
    /// mark reached the disk is unknown, and a segment continuing from
    /// either number could contradict it.
    fn truncate(&mut self, after: Seq, reply: Reply, ctx: &mut Context<Self>) {
        crash_point("truncate.after_seal");
        let (shared, rotator) = (Arc::clone(&self.shared), self.rotator.clone());
        let through = self.segment.id;
        let marking = async move {
            rotator::ask(&shared, &rotator, || MarkTruncation { after, through }).await
        };
        ctx.spawn(marking.into_actor(self).map(move |outcome, act, ctx| {
            match outcome {
                Ok(_) if act.failed.is_some() => {
                    // The log failed while the mark was written (the
                    // rotator or a sync met the failing disk): nothing
                    // will finish this rotation, so the caller hears now.
                    // The mark may be durable; the reopen honours it.
                    let cause = act.failed.clone();
                    let refused = cause.map_or(Error::ShutDown, |c| Error::refused(&c));
                    let _ = reply.send(Err(refused));
                    act.finish_stop_if_drained(ctx);
                }
                Ok(retired) => {
                    act.next_seq = after + 1;
                    let counters = &act.shared.counters;
                    counters.last_seq.store(after, Relaxed);
                    // Stored, not raised: `durable_seq` only ever grows
                    // otherwise, and must not vouch for the new records
                    // that reuse the dropped numbers.
                    counters.durable_seq.store(after, Relaxed);
                    act.rotation_replies.push(reply);
                    act.remove_in_background(retired);
                    act.rotating = Some(true);
                    act.finish_rotation(ctx);
                }
                Err(e @ Error::InvalidRequest(_)) => {
                    // Refused before anything was written: go on as after
                    // any rotation.
                    let _ = reply.send(Err(e));
                    act.rotating = Some(true);
                    act.finish_rotation(ctx);
                }
                Err(e) => {
                    let cause = Arc::new(e);
                    let _ = reply.send(Err(Error::clone(&cause)));
                    act.fail(cause);
                    act.finish_stop_if_drained(ctx);
                }
            }
        }));
    }

    /// Removes segment files a truncation unlisted, paced, on a maintenance
    /// thread that shutdown cancels. Whatever is not removed then, or at a
    /// crash, is unlisted, and the next open removes it.
    fn remove_in_background(&self, files: Vec<std::path::PathBuf>) {
        if files.is_empty() {
            return;
        }
        let removing = self.shared.remove_unlisted_files(
            "removing the segments a truncation dropped",
            Priority::Background,
            files,
        );
        actix_rt::spawn(async move {
            match removing.await {
                Ok(()) => {}
                Err(Error::ShutDown) => {
                    tracing::debug!("shutdown stopped the removal of truncated segments; the next open removes them");
                }
                Err(e) => {
                    tracing::warn!(%e, "removing segments a truncation dropped failed; the next open removes them");
                }
            }
        });
    }

    /// Refuses everything from now on because of `cause`: the log cannot
    /// promise durability. Every request still waiting is refused with it.
    fn fail(&mut self, cause: Arc<Error>) {
        // Kept as the failure itself, not a refusal that mentions it.
        let cause = match cause.as_ref() {
            Error::WalFailed { cause } => Arc::clone(cause),
            _ => cause,
        };
        let cause = match &self.failed {
            Some(first) => Arc::clone(first),
            None => {
                tracing::error!(%cause, "the WAL stops accepting writes");
                self.failed = Some(Arc::clone(&cause));
                cause
            }
        };
        let refused = Error::refused(&cause);
        self.shared
            .inbox
            .close_and_fail(Closed::Failed(Arc::clone(&cause)));
        for request in self.backlog.drain(..) {
            request.fail(refused.clone());
        }
        for reply in self.rotation_replies.drain(..) {
            let _ = reply.send(Err(refused.clone()));
        }
        if let Some((_, reply)) = self.truncation.take() {
            let _ = reply.send(Err(refused.clone()));
        }
        // Appenders held back by the loss bound wait for a sync that will
        // not come now.
        self.shared.worker.fail_deferred(&refused);
        self.rotating = None;
    }

    /// On shutdown, once nothing is left to write: one last sync, then stop
    /// (the sync thread holds the file until the sync is done).
    fn finish_stop_if_drained(&mut self, ctx: &mut Context<Self>) {
        let busy = self.rotating.is_some() || self.preparing;
        if busy || !self.backlog.is_empty() || !self.shared.inbox.is_empty() {
            return;
        }
        let Some(reply) = self.stopping.take() else {
            return;
        };
        match &self.failed {
            Some(cause) => {
                let _ = reply.send(Err(Error::refused(cause)));
            }
            None => self.submit_sync(
                Vec::new(),
                Some(Box::new(move |result| {
                    let _ = reply.send(result.map_err(|e| Error::clone(&e)));
                })),
                true,
            ),
        }
        ctx.stop();
    }
}

impl Actor for WalActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Appenders wait in the inbox, not the mailbox; the mailbox only
        // carries wake-ups and control messages.
        self.prepare_next(ctx);
    }
}

impl Handler<Drain> for WalActor {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) {
        self.drain(ctx);
    }
}

impl Handler<SyncTick> for WalActor {
    type Result = ();

    fn handle(&mut self, _msg: SyncTick, _ctx: &mut Context<Self>) {
        if self.unsynced > 0 && self.rotating.is_none() && self.failed.is_none() {
            self.submit_sync(Vec::new(), None, false);
        }
    }
}

impl Handler<SealDone> for WalActor {
    type Result = ();

    fn handle(&mut self, msg: SealDone, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(()) if self.rotating.is_some() => match self.truncation.take() {
                Some((after, reply)) => self.truncate(after, reply, ctx),
                None => {
                    self.rotating = Some(true);
                    self.finish_rotation(ctx);
                }
            },
            Ok(()) => {}
            Err(cause) => {
                self.fail(cause);
                self.finish_stop_if_drained(ctx);
            }
        }
    }
}

impl Handler<HeaderSynced> for WalActor {
    type Result = ();

    fn handle(&mut self, msg: HeaderSynced, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(()) if self.rotating.is_some() => self.finish_start(ctx),
            Ok(()) => {}
            Err(cause) => {
                self.fail(cause);
                self.finish_stop_if_drained(ctx);
            }
        }
    }
}

impl Handler<StopWal> for WalActor {
    type Result = ();

    fn handle(&mut self, msg: StopWal, ctx: &mut Context<Self>) {
        self.shared.inbox.close(Closed::ShutDown);
        self.stopping = Some(msg.reply);
        // Stopping waits for a segment being prepared (its file must be
        // finished before the directory is released): at full speed, not
        // at the pace that spares appends, now that none will come.
        if self.preparing {
            self.hurry(ctx);
        }
        self.drain(ctx);
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for WalActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into WalActor");
    }
}
