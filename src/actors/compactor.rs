//! `CompactorActor`: decides when to compact and runs it in the background.
//! It counts the records of every segment the WAL seals; once they reach
//! `compaction.threshold` it builds the compacted state on a maintenance
//! thread and, if the redundant fraction reaches `compaction.ratio`, writes
//! it out (see `crate::lifecycle::compaction`). Appends never wait for any of it; the
//! maintenance lock keeps it from racing a snapshot on the manifest.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::{Compact, SegmentSealed};
use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::error::{Error, Result};
use crate::format::manifest::DirKind;
use crate::lifecycle::background::Jobs;
use crate::lifecycle::compaction::{compact, CompactionReport};

/// Starts compactions, by itself and on request.
pub struct CompactorActor {
    shared: Arc<WalShared>,
    jobs: Arc<Jobs>,
    /// Records sealed since the last automatic check.
    sealed_since_check: u64,
    running: bool,
    _watch: Watch,
}

impl CompactorActor {
    pub(crate) fn new(shared: Arc<WalShared>, jobs: Arc<Jobs>, watch: Watch) -> CompactorActor {
        CompactorActor {
            shared,
            jobs,
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
        let jobs = Arc::clone(&self.jobs);
        async move {
            let _running = Running::mark(&shared.counters.compacting);
            let started = Instant::now();
            let outcome = {
                let shared = Arc::clone(&shared);
                jobs.run("concordkv-compact", "a compaction", move || {
                    let _maintenance = shared.maintenance();
                    compact(
                        shared.fs.as_ref(),
                        &shared.manifest,
                        &shared.config,
                        automatic,
                    )
                })
                .await?
            };
            let Some(report) = outcome else {
                return Ok(None);
            };
            shared.counters.snapshot_taken();
            let meters = &shared.meters;
            meters
                .compaction_seconds
                .record(started.elapsed().as_secs_f64());
            shared.latencies.compaction.record(started.elapsed());
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
        if self.running || self.sealed_since_check < self.shared.config.compaction.threshold {
            return;
        }
        self.sealed_since_check = 0;
        self.running = true;
        ctx.spawn(self.run(true).into_actor(self).map(|outcome, act, _| {
            act.running = false;
            match outcome {
                // Shutdown refuses new maintenance jobs: nothing failed.
                Err(Error::ShutDown) => tracing::debug!("automatic compaction skipped: shutting down"),
                Err(e) => tracing::error!(%e, "automatic compaction failed; the sealed segments stay in use"),
                Ok(_) => {}
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
