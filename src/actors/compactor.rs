//! `CompactorActor`: decides when to compact and runs it in the background.
//! It counts the records of every segment the WAL seals; once they reach
//! `compaction.threshold` it analyzes the sealed log on a blocking thread and,
//! if the redundant fraction reaches `compaction.ratio`, has the snapshot
//! actor write the compacted output (see `crate::compaction`). Appends never
//! wait for any of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::{Compact, SegmentSealed, TakeSnapshot};
use crate::actors::snapshot::SnapshotActor;
use crate::actors::wal::WalShared;
use crate::background;
use crate::compaction::{analyze, CompactionReport};
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotKind;
use crate::snapshot::snapshot_path;

/// Starts compactions, by itself and on request.
pub struct CompactorActor {
    shared: Arc<WalShared>,
    snapshots: Addr<SnapshotActor>,
    /// Records sealed since the last automatic check.
    sealed_since_check: u64,
    running: bool,
}

impl CompactorActor {
    pub(crate) fn new(shared: Arc<WalShared>, snapshots: Addr<SnapshotActor>) -> CompactorActor {
        CompactorActor {
            shared,
            snapshots,
            sealed_since_check: 0,
            running: false,
        }
    }

    /// One compaction; an automatic one only if the sealed log is due.
    fn run(
        &self,
        automatic: bool,
    ) -> impl Future<Output = Result<Option<CompactionReport>>> + 'static {
        let shared = Arc::clone(&self.shared);
        let snapshots = self.snapshots.clone();
        async move {
            let _running = Running::mark(&shared.counters.compacting);
            let started = Instant::now();
            let analyzed = {
                let shared = Arc::clone(&shared);
                background::run("concordkv-compact", move || {
                    let _maintenance = shared.maintenance();
                    analyze(shared.fs.as_ref(), &shared.manifest, &shared.config)
                })
                .await?
            };
            if analyzed.ops == 0 || (automatic && !analyzed.due(&shared.config)) {
                return Ok(None);
            }
            crash_point("compaction.after_analyze");
            let taken = snapshots
                .send(TakeSnapshot {
                    kind: SnapshotKind::Full,
                    upto: analyzed.upto,
                })
                .await
                .unwrap_or(Err(Error::ShutDown))?;
            let Some(header) = taken else {
                return Ok(None);
            };
            let output = snapshot_path(&shared.config.data_dir, &header);
            let bytes_after = shared
                .fs
                .file_len(&output)
                .map_err(|e| Error::io("stat compaction output", &output, e))?;
            let report = CompactionReport {
                upto: header.to_seq,
                entries_before: analyzed.ops + analyzed.snapshot_entries,
                entries_after: header.entries,
                bytes_before: analyzed.bytes,
                bytes_after,
            };
            metrics::histogram!("concordkv_compaction_seconds")
                .record(started.elapsed().as_secs_f64());
            shared.latencies.compaction.record(started.elapsed());
            metrics::counter!("concordkv_compactions_total").increment(1);
            metrics::counter!("concordkv_compaction_reclaimed_bytes_total")
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
        self.sealed_since_check += msg.records;
        if self.running || self.sealed_since_check < self.shared.config.compaction.threshold {
            return;
        }
        self.sealed_since_check = 0;
        self.running = true;
        ctx.spawn(self.run(true).into_actor(self).map(|outcome, act, _| {
            act.running = false;
            if let Err(e) = outcome {
                tracing::error!(%e, "automatic compaction failed; the sealed segments stay in use");
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
