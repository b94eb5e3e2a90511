//! `StoreSupervisor`: starts the WAL actor (on the opening arbiter, or on one
//! of its own with `wal.dedicated_writer_thread`) and its sync timer,
//! restarts the WAL actor when it dies, and drains everything on shutdown.
//!
//! actix's `Supervisor` only restarts an actor that *stops*; a panic in a
//! handler kills the task and closes the mailbox without `restarting()`
//! ever running. So the WAL actor carries a [`DeathNotice`] that reports its
//! drop. On a death the supervisor fails every queued request (never leaving
//! an appender hanging, never acknowledging what it cannot vouch for),
//! re-runs recovery over the files on a blocking thread, and starts a fresh
//! actor on a new segment after the recovered log.

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use tokio::sync::oneshot;

use crate::actors::compactor::CompactorActor;
use crate::actors::messages::{Shutdown, StopWal, WalDied, WalRecovered};
use crate::actors::metrics::MetricsActor;
use crate::actors::rotator::RotatorActor;
use crate::actors::snapshot::SnapshotActor;
use crate::actors::sync_timer::SyncTimerActor;
use crate::actors::wal::{open_log, DeathNotice, WalActor, WalShared, WalStart};
use crate::error::{Error, Result};
use crate::fs::DirLock;
use crate::lifecycle::background::Jobs;
use crate::log::inbox::Closed;

/// Supervises one store's actors.
pub struct StoreSupervisor {
    shared: Arc<WalShared>,
    /// Where the WAL actor and its timer run.
    arbiter: ArbiterHandle,
    /// The WAL's own arbiter thread, with `wal.dedicated_writer_thread`.
    own_arbiter: Option<Arbiter>,
    shutting_down: bool,
    rotator: Addr<RotatorActor>,
    compactor: Addr<CompactorActor>,
    wal: Option<Addr<WalActor>>,
    timer: Option<Addr<SyncTimerActor>>,
    /// The re-validation after a death, while it runs; shutdown waits for it.
    restarting: Option<actix_rt::task::JoinHandle<()>>,
    /// Why the last restart failed, if it did; shutdown reports it.
    restart_failed: Option<Arc<Error>>,
    /// Incremented at every (re)start, so a late death notice of an old
    /// incarnation is not mistaken for the current one's.
    generation: u64,
    /// Released only once every writer is gone.
    lock: Arc<Mutex<Option<DirLock>>>,
    /// Snapshot and compaction threads; shutdown waits for them.
    jobs: Arc<Jobs>,
}

impl StoreSupervisor {
    /// Starts the supervisor and, through it, the WAL actor at `start`, the
    /// rotator and the snapshot actor.
    pub(crate) fn launch(
        shared: Arc<WalShared>,
        start: WalStart,
        lock: DirLock,
        jobs: Arc<Jobs>,
    ) -> (
        Addr<StoreSupervisor>,
        Addr<SnapshotActor>,
        Addr<CompactorActor>,
        Addr<MetricsActor>,
    ) {
        let mut started = None;
        let supervisor = StoreSupervisor::create(|ctx| {
            let own_arbiter = shared.config.wal.dedicated_writer_thread.then(Arbiter::new);
            let arbiter = own_arbiter
                .as_ref()
                .map_or_else(Arbiter::current, Arbiter::handle);
            let rotator_shared = Arc::clone(&shared);
            let rotator = RotatorActor::start_in_arbiter(&arbiter, move |_| {
                RotatorActor::new(rotator_shared)
            });
            let snapshot_shared = Arc::clone(&shared);
            let snapshot_jobs = Arc::clone(&jobs);
            let snapshots = SnapshotActor::start_in_arbiter(&arbiter, move |_| {
                SnapshotActor::new(snapshot_shared, snapshot_jobs)
            });
            let compactor_shared = Arc::clone(&shared);
            let compactor_jobs = Arc::clone(&jobs);
            let compactor = CompactorActor::start_in_arbiter(&arbiter, move |_| {
                CompactorActor::new(compactor_shared, compactor_jobs)
            });
            let metrics_shared = Arc::clone(&shared);
            let metrics = MetricsActor::start_in_arbiter(&arbiter, move |_| {
                MetricsActor::new(metrics_shared)
            });
            started = Some((snapshots, compactor.clone(), metrics));
            let mut supervisor = StoreSupervisor {
                arbiter,
                rotator,
                compactor,
                own_arbiter,
                shutting_down: false,
                restarting: None,
                restart_failed: None,
                shared,
                wal: None,
                timer: None,
                generation: 0,
                lock: Arc::new(Mutex::new(Some(lock))),
                jobs,
            };
            supervisor.start_wal(ctx, start);
            supervisor
        });
        let (snapshots, compactor, metrics) =
            started.unwrap_or_else(|| unreachable!("create runs its closure before returning"));
        (supervisor, snapshots, compactor, metrics)
    }

    fn start_wal(&mut self, ctx: &mut Context<Self>, start: WalStart) {
        if self.shutting_down {
            return;
        }
        self.generation += 1;
        let death = DeathNotice {
            supervisor: ctx.address(),
            generation: self.generation,
        };
        let shared = Arc::clone(&self.shared);
        let (rotator, compactor) = (self.rotator.clone(), self.compactor.clone());
        let wal = WalActor::start_in_arbiter(&self.arbiter, move |_| {
            WalActor::new(shared, rotator, compactor, start, death)
        });
        self.timer = SyncTimerActor::for_mode(&self.shared.config.wal, wal.clone())
            .map(|timer| SyncTimerActor::start_in_arbiter(&self.arbiter, move |_| timer));
        self.shared.inbox.open(wal.clone());
        self.wal = Some(wal);
    }
}

impl Actor for StoreSupervisor {
    type Context = Context<Self>;
}

impl Handler<WalDied> for StoreSupervisor {
    type Result = ();

    fn handle(&mut self, msg: WalDied, ctx: &mut Context<Self>) {
        if msg.generation != self.generation || self.shutting_down {
            return;
        }
        tracing::error!(
            generation = msg.generation,
            "the WAL actor died; re-validating the log and restarting it"
        );
        self.shared.meters.wal_restarts.increment(1);
        self.wal = None;
        self.timer = None;
        self.shared.inbox.close_and_fail(Closed::Restarting);
        let shared = Arc::clone(&self.shared);
        let meters = Arc::clone(&self.shared.meters);
        let me = ctx.address();
        self.restarting = Some(actix_rt::spawn(async move {
            let reopened = actix_rt::task::spawn_blocking(move || {
                let _maintenance = shared.maintenance();
                let (recovery, tree, start) = open_log(
                    shared.fs.as_ref(),
                    &shared.manifest,
                    &shared.config,
                    &mut |_| {},
                )?;
                // The files are the truth now: they may hold records the dead
                // actor wrote but never acknowledged.
                shared.state.replace(tree, recovery.last_seq);
                Ok((recovery, start))
            })
            .await
            .unwrap_or_else(|e| Err(Error::task_failed("re-validating the log", &e)));
            let start = reopened.map(|(recovery, start)| {
                if let Some(tail) = &recovery.truncated {
                    meters.recovery_truncated_bytes.increment(tail.bytes);
                }
                start
            });
            me.do_send(WalRecovered(start));
        }));
    }
}

impl Handler<WalRecovered> for StoreSupervisor {
    type Result = ();

    fn handle(&mut self, msg: WalRecovered, ctx: &mut Context<Self>) {
        self.restarting = None;
        match msg.0 {
            Ok(start) => {
                tracing::info!("the WAL actor was restarted");
                self.start_wal(ctx, start);
            }
            Err(e) => {
                tracing::error!(%e, "restarting the WAL failed");
                let cause = Arc::new(e);
                self.shared
                    .inbox
                    .close_and_fail(Closed::Failed(Arc::clone(&cause)));
                self.restart_failed = Some(cause);
            }
        }
    }
}

impl Handler<Shutdown> for StoreSupervisor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        self.shared.inbox.close(Closed::ShutDown);
        let (reply, drained) = oneshot::channel();
        match &self.wal {
            Some(wal) => wal.do_send(StopWal { reply }),
            None => {
                let _ = reply.send(Ok(()));
            }
        }
        self.wal = None;
        self.timer = None;
        let arbiter = self.own_arbiter.take();
        let shared = Arc::clone(&self.shared);
        let lock = Arc::clone(&self.lock);
        let jobs = Arc::clone(&self.jobs);
        let restarting = self.restarting.take();
        Box::pin(
            async move {
                let result = drained.await.unwrap_or(Err(Error::ActorDied));
                // A re-validation in flight touches the files: let it finish
                // before the directory is released.
                if let Some(restarting) = restarting {
                    let _ = restarting.await;
                }
                // Every request after the close was refused; fail any that
                // raced in before it, then stop the threads and release the directory.
                shared.inbox.close_and_fail(Closed::ShutDown);
                let finished = actix_rt::task::spawn_blocking(move || {
                    // A snapshot or compaction still writing into the
                    // directory ends before anything it uses is closed and
                    // before another process can take the directory.
                    jobs.close_and_wait();
                    shared.worker.stop();
                    // Every answer is sent: whoever waits for more writes
                    // to become visible waits in vain.
                    shared.state.close();
                    shared.manifest.close();
                    if let Some(arbiter) = arbiter {
                        arbiter.stop();
                        if arbiter.join().is_err() {
                            tracing::error!("the WAL arbiter thread panicked");
                        }
                    }
                    lock.lock().unwrap_or_else(PoisonError::into_inner).take();
                })
                .await;
                if finished.is_err() {
                    tracing::error!("stopping the WAL threads panicked");
                }
                result
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                let result = match act.restart_failed.take() {
                    Some(cause) if result.is_ok() => Err(Error::refused(&cause)),
                    _ => result,
                };
                ctx.stop();
                result
            }),
        )
    }
}
