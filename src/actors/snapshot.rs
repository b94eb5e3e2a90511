//! `SnapshotActor`: takes full and incremental snapshots in the background.
//! Each one reads the log up to a durable sequence number on a low-priority
//! maintenance thread while writers go on appending; one runs at a time (the handler
//! holds the mailbox until it finishes), so two never race on the manifest
//! or retire each other's inputs.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::TakeSnapshot;
use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::error::Result;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::lifecycle::background::Jobs;
use crate::lifecycle::snapshot::take_snapshot;

/// Takes snapshots for the store.
pub struct SnapshotActor {
    shared: Arc<WalShared>,
    jobs: Arc<Jobs>,
    _watch: Watch,
}

impl SnapshotActor {
    pub(crate) fn new(shared: Arc<WalShared>, jobs: Arc<Jobs>, watch: Watch) -> SnapshotActor {
        SnapshotActor {
            shared,
            jobs,
            _watch: watch,
        }
    }
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;
}

impl Handler<TakeSnapshot> for SnapshotActor {
    type Result = AtomicResponse<Self, Result<Option<SnapshotHeader>>>;

    fn handle(&mut self, msg: TakeSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        let counters = Arc::clone(&self.shared.counters);
        let latencies = Arc::clone(&self.shared.latencies);
        let meters = Arc::clone(&self.shared.meters);
        let kind = msg.kind;
        let started = Instant::now();
        let work = self.jobs.run("concordkv-snapshot", "a snapshot", move || {
            let _maintenance = shared.maintenance();
            take_snapshot(
                shared.fs.as_ref(),
                &shared.manifest,
                &shared.config,
                kind,
                msg.upto,
            )
        });
        AtomicResponse::new(Box::pin(
            async move {
                let outcome = work.await;
                let label = match kind {
                    SnapshotKind::Full => "full",
                    SnapshotKind::Incremental => "incremental",
                };
                match &outcome {
                    Ok(Some(header)) => {
                        counters.snapshot_taken();
                        latencies.snapshot.record(started.elapsed());
                        let histogram = match kind {
                            SnapshotKind::Full => &meters.full_snapshot_seconds,
                            SnapshotKind::Incremental => &meters.incremental_snapshot_seconds,
                        };
                        histogram.record(started.elapsed().as_secs_f64());
                        tracing::info!(
                            kind = label,
                            to_seq = header.to_seq,
                            entries = header.entries,
                            "snapshot taken"
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(kind = label, %e, "snapshot failed; the log and older snapshots stay in use")
                    }
                }
                outcome
            }
            .into_actor(self),
        ))
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for SnapshotActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into SnapshotActor");
    }
}
