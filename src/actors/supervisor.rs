//! `StoreSupervisor`: starts the store's actors (the WAL actor and its sync
//! timer on the opening arbiter, or on one of its own with
//! `wal.dedicated_writer_thread`), restarts any of them that dies, and
//! drains everything on shutdown.
//!
//! actix's `Supervisor` only restarts an actor that *stops*; a panic in a
//! handler kills the task and closes the mailbox without `restarting()`
//! ever running. So every actor carries a notice of its drop (the WAL a
//! [`DeathNotice`], the others a [`Watch`]). On the WAL's death the
//! supervisor fails every queued request (never leaving an appender
//! hanging, never acknowledging what it cannot vouch for), has the rotator
//! re-run recovery over the files on its manifest thread (the
//! re-validation changes the manifest), and starts a fresh actor on a new
//! segment after the recovered log. Another actor is started afresh at
//! once and put in its [`Slot`]: it holds no state the files do not, and
//! requests that were in its mailbox fail with [`Error::Panicked`]. As
//! Erlang/OTP's supervisors, it gives up after `supervision.max_restarts`
//! restarts within `supervision.period_secs`: the store then refuses every
//! request with [`Error::RestartLimit`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use tokio::sync::oneshot;

#[cfg(feature = "archive")]
use crate::actors::archiver::FinalPass;
use crate::actors::compactor::CompactorActor;
use crate::actors::messages::{ActorDied, Revalidate, Shutdown, StopWal, WalDied, WalRecovered};
use crate::actors::metrics::MetricsActor;
use crate::actors::rotator::{self, RotatorActor, RotatorState};
use crate::actors::snapshot::SnapshotActor;
use crate::actors::supervised::{ActorKind, Slot, Watch};
use crate::actors::sync_timer::SyncTimerActor;
use crate::actors::wal::{DeathNotice, WalActor, WalShared, WalStart};
use crate::error::{Error, Result};
use crate::fs::DirLock;
use crate::lifecycle::background::Jobs;
use crate::log::inbox::Closed;

/// How long a shutdown waits for the archive's last pass: a store whose
/// archive does not answer still stops.
#[cfg(feature = "archive")]
const FINAL_PASS_TIMEOUT: Duration = Duration::from_secs(10);

/// Supervises one store's actors.
pub struct StoreSupervisor {
    shared: Arc<WalShared>,
    /// Where the WAL actor and its timer run.
    arbiter: ArbiterHandle,
    /// The WAL's own arbiter thread, with `wal.dedicated_writer_thread`.
    own_arbiter: Option<Arbiter>,
    shutting_down: bool,
    rotator: Slot<RotatorActor>,
    /// The rotator's manifest thread, handed to each incarnation.
    rotator_state: Arc<RotatorState>,
    /// Set until shutdown stops the manifest thread: the draining WAL and
    /// the snapshot being finished may still need a rotator, so one that
    /// dies meanwhile is restarted even while shutting down.
    rotator_needed: Arc<AtomicBool>,
    compactor: Slot<CompactorActor>,
    snapshots: Slot<SnapshotActor>,
    metrics: Slot<MetricsActor>,
    /// The archiver and the arbiter thread it runs on, with an `[archive]`.
    #[cfg(feature = "archive")]
    archiver: Option<(Arbiter, Addr<crate::actors::archiver::ArchiverActor>)>,
    /// The incarnation of each actor, by [`ActorKind::index`]: a late
    /// notice of an earlier one's death is ignored.
    generations: [u64; 7],
    /// When the restarts of the last `supervision.period_secs` happened.
    restarts: VecDeque<Instant>,
    wal: Option<Addr<WalActor>>,
    timer: Option<Addr<SyncTimerActor>>,
    /// The re-validation after a death, while it runs; shutdown waits for it.
    restarting: Option<actix_rt::task::JoinHandle<()>>,
    /// Why the last restart failed, if it did; shutdown reports it.
    restart_failed: Option<Arc<Error>>,
    /// Released only once every writer is gone.
    lock: Arc<Mutex<Option<DirLock>>>,
    /// The maintenance threads (`WalShared::jobs`); shutdown cancels them
    /// and waits for them.
    jobs: Arc<Jobs>,
}

impl StoreSupervisor {
    /// Starts the supervisor and, through it, every actor, the WAL actor
    /// at `start`; returns the slots the store reaches the others through.
    pub(crate) fn launch(
        shared: Arc<WalShared>,
        start: WalStart,
        lock: DirLock,
        rotator_state: Arc<RotatorState>,
    ) -> (Addr<StoreSupervisor>, Slots) {
        let mut started = None;
        let supervisor = StoreSupervisor::create(|ctx| {
            let own_arbiter = shared.config.wal.dedicated_writer_thread.then(Arbiter::new);
            let arbiter = own_arbiter
                .as_ref()
                .map_or_else(Arbiter::current, Arbiter::handle);
            let me = ctx.address();
            let jobs = Arc::clone(&shared.jobs);
            let watch = |actor| Watch {
                supervisor: me.clone(),
                actor,
                generation: 1,
            };
            let rotator = Slot::new(start_rotator(
                &arbiter,
                &shared,
                &rotator_state,
                watch(ActorKind::Rotator),
            ));
            let snapshots = Slot::new(start_snapshot(
                &arbiter,
                &shared,
                &jobs,
                &rotator,
                watch(ActorKind::Snapshot),
            ));
            let compactor = Slot::new(start_compactor(
                &arbiter,
                &shared,
                &snapshots,
                watch(ActorKind::Compactor),
            ));
            let metrics = Slot::new(start_metrics(&arbiter, &shared, watch(ActorKind::Metrics)));
            #[cfg(feature = "archive")]
            let archiver = shared.config.archive.enabled().then(|| {
                let own = Arbiter::new();
                let archiver = start_archiver(&own.handle(), &shared, watch(ActorKind::Archiver));
                (own, archiver)
            });
            started = Some(Slots {
                rotator: rotator.clone(),
                snapshots: snapshots.clone(),
                compactor: compactor.clone(),
                metrics: metrics.clone(),
            });
            let mut supervisor = StoreSupervisor {
                arbiter,
                rotator,
                rotator_state,
                rotator_needed: Arc::new(AtomicBool::new(true)),
                compactor,
                snapshots,
                metrics,
                #[cfg(feature = "archive")]
                archiver,
                generations: [1; 7],
                restarts: VecDeque::new(),
                own_arbiter,
                shutting_down: false,
                restarting: None,
                restart_failed: None,
                shared,
                wal: None,
                timer: None,
                lock: Arc::new(Mutex::new(Some(lock))),
                jobs,
            };
            // `start_wal` counts the WAL's and the timer's first incarnations.
            supervisor.generations[ActorKind::Wal.index()] = 0;
            supervisor.generations[ActorKind::SyncTimer.index()] = 0;
            supervisor.start_wal(ctx, start);
            supervisor
        });
        let slots =
            started.unwrap_or_else(|| unreachable!("create runs its closure before returning"));
        (supervisor, slots)
    }

    /// A watch for the next incarnation of `actor`.
    fn watch(&mut self, ctx: &Context<Self>, actor: ActorKind) -> Watch {
        self.generations[actor.index()] += 1;
        Watch {
            supervisor: ctx.address(),
            actor,
            generation: self.generations[actor.index()],
        }
    }

    /// Counts a restart; `false` once there were more than
    /// `supervision.max_restarts` within `supervision.period_secs`, after
    /// failing the store with [`Error::RestartLimit`].
    fn may_restart(&mut self, actor: ActorKind) -> bool {
        self.shared.meters.restarts[actor.index()].increment(1);
        let limits = &self.shared.config.supervision;
        let period = Duration::from_secs(limits.period_secs);
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > period)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        if self.restarts.len() as u64 <= limits.max_restarts {
            return true;
        }
        let cause = Arc::new(Error::RestartLimit {
            actor: actor.name(),
            restarts: self.restarts.len() as u64,
            period_secs: limits.period_secs,
        });
        tracing::error!(%cause, "giving up on restarting the store's actors");
        self.shared
            .inbox
            .close_and_fail(Closed::Failed(Arc::clone(&cause)));
        self.restart_failed = Some(cause);
        false
    }

    fn start_wal(&mut self, ctx: &mut Context<Self>, start: WalStart) {
        if self.shutting_down {
            return;
        }
        self.generations[ActorKind::Wal.index()] += 1;
        let death = DeathNotice {
            supervisor: ctx.address(),
            generation: self.generations[ActorKind::Wal.index()],
        };
        let shared = Arc::clone(&self.shared);
        let (rotator, compactor) = (self.rotator.clone(), self.compactor.clone());
        let wal = WalActor::start_in_arbiter(&self.arbiter, move |_| {
            WalActor::new(shared, rotator, compactor, start, death)
        });
        self.shared.inbox.open(wal.clone());
        self.wal = Some(wal);
        self.start_timer(ctx);
    }

    /// Starts the sync timer the sync mode needs, if any, for the WAL now running.
    fn start_timer(&mut self, ctx: &Context<Self>) {
        let Some(wal) = self.wal.clone() else {
            return;
        };
        let Some(period) = SyncTimerActor::period(&self.shared.config.wal) else {
            return;
        };
        let watch = self.watch(ctx, ActorKind::SyncTimer);
        self.timer = Some(SyncTimerActor::start_in_arbiter(&self.arbiter, move |_| {
            SyncTimerActor::new(wal, period, watch)
        }));
    }
}

impl Actor for StoreSupervisor {
    type Context = Context<Self>;
}

impl Handler<WalDied> for StoreSupervisor {
    type Result = ();

    fn handle(&mut self, msg: WalDied, ctx: &mut Context<Self>) {
        if msg.generation != self.generations[ActorKind::Wal.index()]
            || self.shutting_down
            || self.restart_failed.is_some()
        {
            return;
        }
        tracing::error!(
            generation = msg.generation,
            "the WAL actor died; re-validating the log and restarting it"
        );
        self.wal = None;
        // The timer stops by itself once its WAL is gone: that is no
        // death to restart it for (the new WAL gets a timer of its own).
        self.timer = None;
        self.generations[ActorKind::SyncTimer.index()] += 1;
        if !self.may_restart(ActorKind::Wal) {
            return;
        }
        self.shared.inbox.close_and_fail(Closed::Restarting);
        let (shared, rotator) = (Arc::clone(&self.shared), self.rotator.clone());
        let me = ctx.address();
        self.restarting = Some(actix_rt::spawn(async move {
            let start = rotator::ask(&shared, &rotator, || Revalidate).await;
            me.do_send(WalRecovered(start));
        }));
    }
}

impl Handler<ActorDied> for StoreSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ActorDied, ctx: &mut Context<Self>) {
        let current = self.generations[msg.actor.index()];
        let needed = msg.actor == ActorKind::Rotator && self.rotator_needed.load(Ordering::Acquire);
        if msg.generation != current
            || (self.shutting_down && !needed)
            || self.restart_failed.is_some()
        {
            return;
        }
        tracing::error!(
            actor = msg.actor.name(),
            generation = msg.generation,
            "an actor died; restarting it"
        );
        if msg.actor == ActorKind::SyncTimer {
            self.timer = None;
        }
        if !self.may_restart(msg.actor) {
            return;
        }
        if msg.actor == ActorKind::SyncTimer {
            self.start_timer(ctx);
            return;
        }
        let watch = self.watch(ctx, msg.actor);
        let (arbiter, shared, jobs) = (&self.arbiter, &self.shared, &self.jobs);
        match msg.actor {
            ActorKind::Rotator => {
                let rotator = start_rotator(arbiter, shared, &self.rotator_state, watch);
                self.rotator.set(rotator);
            }
            ActorKind::Compactor => {
                let compactor = start_compactor(arbiter, shared, &self.snapshots, watch);
                self.compactor.set(compactor);
            }
            ActorKind::Snapshot => {
                let snapshots = start_snapshot(arbiter, shared, jobs, &self.rotator, watch);
                self.snapshots.set(snapshots);
            }
            ActorKind::Metrics => self.metrics.set(start_metrics(arbiter, shared, watch)),
            #[cfg(feature = "archive")]
            ActorKind::Archiver => {
                if let Some((own, addr)) = &mut self.archiver {
                    *addr = start_archiver(&own.handle(), shared, watch);
                }
            }
            #[cfg(not(feature = "archive"))]
            ActorKind::Archiver => {}
            // The WAL reports its death with `WalDied`; the timer is above.
            ActorKind::Wal | ActorKind::SyncTimer => {}
        }
    }
}

/// The slots the store reaches the actors it asks things of through.
pub(crate) struct Slots {
    pub rotator: Slot<RotatorActor>,
    pub snapshots: Slot<SnapshotActor>,
    pub compactor: Slot<CompactorActor>,
    pub metrics: Slot<MetricsActor>,
}

fn start_rotator(
    arbiter: &ArbiterHandle,
    shared: &Arc<WalShared>,
    state: &Arc<RotatorState>,
    watch: Watch,
) -> Addr<RotatorActor> {
    let (shared, state) = (Arc::clone(shared), Arc::clone(state));
    RotatorActor::start_in_arbiter(arbiter, move |_| RotatorActor::new(shared, state, watch))
}

fn start_snapshot(
    arbiter: &ArbiterHandle,
    shared: &Arc<WalShared>,
    jobs: &Arc<Jobs>,
    rotator: &Slot<RotatorActor>,
    watch: Watch,
) -> Addr<SnapshotActor> {
    let (shared, jobs, rotator) = (Arc::clone(shared), Arc::clone(jobs), rotator.clone());
    SnapshotActor::start_in_arbiter(arbiter, move |_| {
        SnapshotActor::new(shared, jobs, rotator, watch)
    })
}

fn start_compactor(
    arbiter: &ArbiterHandle,
    shared: &Arc<WalShared>,
    snapshots: &Slot<SnapshotActor>,
    watch: Watch,
) -> Addr<CompactorActor> {
    let (shared, snapshots) = (Arc::clone(shared), snapshots.clone());
    CompactorActor::start_in_arbiter(arbiter, move |_| {
        CompactorActor::new(shared, snapshots, watch)
    })
}

#[cfg(feature = "archive")]
fn start_archiver(
    arbiter: &ArbiterHandle,
    shared: &Arc<WalShared>,
    watch: Watch,
) -> Addr<crate::actors::archiver::ArchiverActor> {
    let shared = Arc::clone(shared);
    crate::actors::archiver::ArchiverActor::start_in_arbiter(arbiter, move |_| {
        crate::actors::archiver::ArchiverActor::new(shared, watch)
    })
}

fn start_metrics(
    arbiter: &ArbiterHandle,
    shared: &Arc<WalShared>,
    watch: Watch,
) -> Addr<MetricsActor> {
    let shared = Arc::clone(shared);
    MetricsActor::start_in_arbiter(arbiter, move |_| MetricsActor::new(shared, watch))
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::CrashActor> for StoreSupervisor {
    type Result = ();

    fn handle(&mut self, msg: crate::actors::messages::CrashActor, _ctx: &mut Context<Self>) {
        use crate::actors::messages::Crash;
        match msg.0 {
            ActorKind::Wal => {
                if let Some(wal) = &self.wal {
                    wal.do_send(Crash);
                }
            }
            ActorKind::SyncTimer => {
                if let Some(timer) = &self.timer {
                    timer.do_send(Crash);
                }
            }
            ActorKind::Rotator => self.rotator.get().do_send(Crash),
            ActorKind::Compactor => self.compactor.get().do_send(Crash),
            ActorKind::Snapshot => self.snapshots.get().do_send(Crash),
            ActorKind::Metrics => self.metrics.get().do_send(Crash),
            #[cfg(feature = "archive")]
            ActorKind::Archiver => {
                if let Some((_, archiver)) = &self.archiver {
                    archiver.do_send(Crash);
                }
            }
            #[cfg(not(feature = "archive"))]
            ActorKind::Archiver => {}
        }
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
        // Snapshots and compactions stop now, not once the WAL has drained:
        // the next open redoes whatever they had left.
        self.jobs.close();
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
        #[cfg(feature = "archive")]
        let archiver = self.archiver.take();
        #[cfg(not(feature = "archive"))]
        let archiver: Option<(Arbiter, ())> = None;
        let shared = Arc::clone(&self.shared);
        let lock = Arc::clone(&self.lock);
        let jobs = Arc::clone(&self.jobs);
        let rotator_state = Arc::clone(&self.rotator_state);
        let rotator_needed = Arc::clone(&self.rotator_needed);
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
                // Every record is synced now: one last pass archives the
                // rest, unless the archive does not answer in time.
                #[cfg(feature = "archive")]
                if let Some((_, addr)) = &archiver {
                    let last =
                        actix_rt::time::timeout(FINAL_PASS_TIMEOUT, addr.send(FinalPass)).await;
                    if last.is_err() {
                        tracing::warn!(
                            "the archive's last pass did not end within {FINAL_PASS_TIMEOUT:?}; \
                             the next open's archiver takes it up"
                        );
                    }
                }
                let finished = actix_rt::task::spawn_blocking(move || {
                    // The archiver stops first: a pass cut short is taken
                    // up by the next open's archiver, from a listing.
                    if let Some((archiver, _)) = archiver {
                        archiver.stop();
                        if archiver.join().is_err() {
                            tracing::error!("the archiver's thread panicked");
                        }
                    }
                    // A snapshot or compaction still writing into the
                    // directory ends before anything it uses is closed and
                    // before another process can take the directory.
                    jobs.close_and_wait();
                    // The changes asked for so far are made; none after.
                    rotator_needed.store(false, Ordering::Release);
                    rotator_state.stop();
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
