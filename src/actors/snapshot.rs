//! `SnapshotActor`: the one writer of snapshots, full and incremental, and
//! of compaction output (a full snapshot that replaces the sealed log). Each
//! reads the log up to a durable sequence number on a low-priority
//! maintenance thread while writers go on appending, and writes its file;
//! the rotator lists it and unlists what it covers; the files retired are
//! then removed, paced. One runs at a time (the handlers hold the mailbox
//! until they finish), so no build reads a chain another is replacing.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::{ListSnapshot, RunCompaction, TakeSnapshot};
use crate::actors::rotator::{self, RotatorActor};
use crate::actors::supervised::{Slot, Watch};
use crate::actors::wal::WalShared;
use crate::error::Result;
use crate::format::snapshot::{SnapshotHeader, SnapshotKind};
use crate::lifecycle::background::{Jobs, Priority};
use crate::lifecycle::compaction::{compact, CompactionReport};
use crate::lifecycle::snapshot::{remove_obsolete, take_snapshot, Written};

/// Writes snapshots and compaction output for the store.
pub struct SnapshotActor {
    shared: Arc<WalShared>,
    jobs: Arc<Jobs>,
    publisher: Publisher,
    _watch: Watch,
}

impl SnapshotActor {
    pub(crate) fn new(
        shared: Arc<WalShared>,
        jobs: Arc<Jobs>,
        rotator: Slot<RotatorActor>,
        watch: Watch,
    ) -> SnapshotActor {
        let publisher = Publisher {
            shared: Arc::clone(&shared),
            jobs: Arc::clone(&jobs),
            rotator,
        };
        SnapshotActor {
            shared,
            jobs,
            publisher,
            _watch: watch,
        }
    }
}

/// Lists what a build wrote, through the rotator, and removes what that
/// retired.
#[derive(Clone)]
struct Publisher {
    shared: Arc<WalShared>,
    jobs: Arc<Jobs>,
    rotator: Slot<RotatorActor>,
}

impl Publisher {
    /// Lists the snapshot, then removes what it retired as background work,
    /// paced. A background snapshot's answer waits for the removal, so that
    /// one removal runs at a time; a waited one (`SAVE`) is answered as
    /// soon as it is listed: its client waits for the snapshot, not for the
    /// disk space (waiting for the removal and writing at the maintenance
    /// rate made a `SAVE` of a million keys take 4.5 s instead of 1.7–2.1 s).
    async fn publish(self, written: Written, priority: Priority) -> Result<SnapshotHeader> {
        let Written {
            header,
            segments,
            obsolete,
        } = written;
        let retired = rotator::ask(&self.shared, &self.rotator, || ListSnapshot {
            header,
            segments: segments.clone(),
            obsolete: obsolete.clone(),
        })
        .await?;
        let shared = self.shared;
        // Its thread runs whether or not it is awaited, counted among the
        // jobs that shutdown cancels and waits for; refused only at
        // shutdown. Either way the next open removes what it left.
        let removal = self.jobs.run(
            "concordkv-retire",
            "removing retired files",
            Priority::Background,
            move |cancel| {
                remove_obsolete(shared.fs.as_ref(), &shared.config, &retired, cancel);
                Ok(())
            },
        );
        if priority == Priority::Background {
            let _ = removal.await;
        }
        Ok(header)
    }
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;
}

impl Handler<TakeSnapshot> for SnapshotActor {
    type Result = AtomicResponse<Self, Result<Option<SnapshotHeader>>>;

    fn handle(&mut self, msg: TakeSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        // Its turn has come: nothing needs to give way to it any more.
        drop(msg.waiting);
        let shared = Arc::clone(&self.shared);
        let kind = msg.kind;
        let priority = msg.priority;
        let started = Instant::now();
        // Shutdown waits for the snapshot until it is listed, not only for
        // the job that writes it.
        let held = self.jobs.hold();
        let written = self.jobs.run(
            "concordkv-snapshot",
            "a snapshot",
            msg.priority,
            move |cancel| {
                take_snapshot(
                    shared.fs.as_ref(),
                    &shared.manifest,
                    &shared.config,
                    (kind, msg.upto),
                    priority.pace(shared.config.maintenance.write_bytes_per_sec),
                    cancel,
                )
            },
        );
        let publisher = self.publisher.clone();
        let latencies = Arc::clone(&self.shared.latencies);
        let counters = Arc::clone(&self.shared.counters);
        AtomicResponse::new(Box::pin(
            async move {
                let outcome = match held {
                    Err(e) => Err(e),
                    Ok(_held) => match written.await {
                        Ok(Some(written)) => {
                            publisher.publish(written, priority).await.map(Some)
                        }
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    },
                };
                let label = match kind {
                    SnapshotKind::Full => "full",
                    SnapshotKind::Incremental => "incremental",
                };
                match &outcome {
                    Ok(Some(header)) => {
                        counters.snapshot_taken();
                        latencies.snapshot(kind).record(started.elapsed());
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

impl Handler<RunCompaction> for SnapshotActor {
    type Result = AtomicResponse<Self, Result<Option<CompactionReport>>>;

    fn handle(&mut self, msg: RunCompaction, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        let jobs = Arc::clone(&self.jobs);
        let held = self.jobs.hold();
        // In the idle class, a compaction holds back a `SAVE` queued behind
        // it for as long as other processes keep the CPU busy: it stops
        // instead, and the compactor asks again.
        let written = self.jobs.run(
            "concordkv-compact",
            "a compaction",
            Priority::Background,
            move |cancel| {
                compact(
                    shared.fs.as_ref(),
                    &shared.manifest,
                    &shared.config,
                    msg.automatic,
                    &cancel.giving_way(&jobs),
                )
            },
        );
        let publisher = self.publisher.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let _held = held?;
                let Some((written, report)) = written.await? else {
                    return Ok(None);
                };
                publisher.publish(written, Priority::Background).await?;
                Ok(Some(report))
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
