//! `CompactorActor`: decides when to compact. It counts the records of every
//! segment the WAL seals; once they reach `compaction.threshold` it asks
//! `SnapshotActor`, the one writer of snapshots, to compact, which writes
//! the output only if the redundant fraction reaches `compaction.ratio`
//! (see `crate::lifecycle::compaction`). Appends never wait for any of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::{Compact, RunCompaction, SegmentSealed};
use crate::actors::snapshot::SnapshotActor;
use crate::actors::supervised::{Slot, Watch};
use crate::actors::wal::WalShared;
use crate::error::{Error, Result};
use crate::format::manifest::DirKind;
use crate::lifecycle::compaction::CompactionReport;

/// Starts compactions, by itself and on request.
pub struct CompactorActor {
    shared: Arc<WalShared>,
    snapshots: Slot<SnapshotActor>,
    /// Records sealed since the last automatic check.
    sealed_since_check: u64,
    running: bool,
    _watch: Watch,
}

impl CompactorActor {
    pub(crate) fn new(
        shared: Arc<WalShared>,
        snapshots: Slot<SnapshotActor>,
        watch: Watch,
    ) -> CompactorActor {
        CompactorActor {
            shared,
            snapshots,
            sealed_since_check: 0,
            running: false,
            _watch: watch,
        }
    }

    /// One compaction; an automatic one only if the sealed log is due.
    fn run(
        &self,
        automatic: bool,
    ) -> impl Future<Output = Result<Option<CompactionReport>>> + 'static {
        let shared = Arc::clone(&self.shared);
        let snapshots = self.snapshots.clone();
        let mut asked = snapshots.get().send(RunCompaction { automatic });
        async move {
            let _running = Running::mark(&shared.counters.compacting);
            let mut started = Instant::now();
            let outcome = loop {
                let outcome = asked.await.unwrap_or_else(|_| {
                    Err(if shared.manifest.is_closed() {
                        Error::ShutDown
                    } else {
                        Error::Panicked {
                            what: "the snapshot actor",
                        }
                    })
                });
                if !matches!(outcome, Err(Error::GaveWay)) {
                    break outcome?;
                }
                // Queued behind the snapshot it gave way to.
                tracing::debug!(
                    automatic,
                    "compaction gave way to a waited snapshot; asked again"
                );
                asked = snapshots.get().send(RunCompaction { automatic });
                started = Instant::now();
            };
            let Some(report) = outcome else {
                return Ok(None);
            };
            shared.counters.snapshot_taken();
            shared.latencies.compaction.record(started.elapsed());
            let meters = &shared.meters;
            meters.compactions.increment(1);
            meters
                .compaction_reclaimed_bytes
                .increment(report.bytes_before.saturating_sub(report.bytes_after));
            tracing::info!(?report, automatic, "compaction finished");
            Ok(Some(report))
        }
    }
}

/// Marks a compaction as under way for `INFO` while it lives.
struct Running<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Running<'a> {
    fn mark(flag: &'a std::sync::atomic::AtomicU64) -> Running<'a> {
        flag.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(flag)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Actor for CompactorActor {
    type Context = Context<Self>;
}

impl Handler<SegmentSealed> for CompactorActor {
    type Result = ();

    fn handle(&mut self, msg: SegmentSealed, ctx: &mut Context<Self>) {
        if self.shared.manifest.kind() == DirKind::Log {
            // Nothing to compact in a Log (see `build_snapshot`).
            return;
        }
        self.sealed_since_check += msg.records;
        self.check(ctx);
    }
}

impl CompactorActor {
    /// Starts an automatic compaction if enough was sealed since the last
    /// one started, and none is running. Records sealed while one runs are
    /// checked when it ends: left for the next seal, a load that stopped
    /// during a compaction kept its whole log (2M records replayed at the
    /// next open instead of 136K, 2.2 s instead of 0.7 s).
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.sealed_since_check < self.shared.config.compaction.threshold {
            return;
        }
        self.sealed_since_check = 0;
        self.running = true;
        ctx.spawn(self.run(true).into_actor(self).map(|outcome, act, ctx| {
            act.running = false;
            match outcome {
                // Shutdown refuses new maintenance jobs: nothing failed.
                Err(Error::ShutDown) => tracing::debug!("automatic compaction skipped: shutting down"),
                Err(e) => tracing::error!(%e, "automatic compaction failed; the sealed segments stay in use"),
                Ok(_) => act.check(ctx),
            }
        }));
    }
}

impl Handler<Compact> for CompactorActor {
    type Result = ResponseFuture<Result<Option<CompactionReport>>>;

    fn handle(&mut self, _msg: Compact, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.run(false))
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for CompactorActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into CompactorActor");
    }
}
