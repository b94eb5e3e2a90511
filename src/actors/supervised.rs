//! What the supervisor needs to restart any actor: a [`Slot`] that holds its
//! current address (everyone who talks to the actor reads it there, so a
//! restarted actor is reached without telling each holder), and a [`Watch`]
//! each actor carries, which reports its death when it is dropped: actix
//! runs no hook when a handler panics, but the actor's fields are dropped.

use std::sync::{Arc, PoisonError, RwLock};

use actix::{Actor, Addr};

use crate::actors::messages::ActorDied;
use crate::actors::supervisor::StoreSupervisor;

/// The store's actors, as the supervisor and the metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// `WalActor`.
    Wal,
    /// `RotatorActor`.
    Rotator,
    /// `CompactorActor`.
    Compactor,
    /// `SnapshotActor`.
    Snapshot,
    /// `SyncTimerActor`.
    SyncTimer,
    /// `MetricsActor`.
    Metrics,
    /// `ArchiverActor` (only with an `[archive]` configured).
    Archiver,
}

impl ActorKind {
    /// Every kind, in the order their restart counters are kept.
    pub const ALL: [ActorKind; 7] = [
        ActorKind::Wal,
        ActorKind::Rotator,
        ActorKind::Compactor,
        ActorKind::Snapshot,
        ActorKind::SyncTimer,
        ActorKind::Metrics,
        ActorKind::Archiver,
    ];

    /// The `actor` label of `concordkv_actor_restarts_total`.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Wal => "wal",
            ActorKind::Rotator => "rotator",
            ActorKind::Compactor => "compactor",
            ActorKind::Snapshot => "snapshot",
            ActorKind::SyncTimer => "sync_timer",
            ActorKind::Metrics => "metrics",
            ActorKind::Archiver => "archiver",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// An actor's current address, replaced when the supervisor restarts it.
pub(crate) struct Slot<A: Actor>(Arc<RwLock<Addr<A>>>);

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(Arc::clone(&self.0))
    }
}

impl<A: Actor> Slot<A> {
    pub(crate) fn new(addr: Addr<A>) -> Slot<A> {
        Slot(Arc::new(RwLock::new(addr)))
    }

    /// The address of the actor now running.
    pub(crate) fn get(&self) -> Addr<A> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, addr: Addr<A>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = addr;
    }
}

/// Carried by an actor: reports its death to the supervisor when dropped
/// (after a panic, or at shutdown, which the supervisor tells apart).
pub(crate) struct Watch {
    pub(crate) supervisor: Addr<StoreSupervisor>,
    pub(crate) actor: ActorKind,
    pub(crate) generation: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.supervisor.do_send(ActorDied {
            actor: self.actor,
            generation: self.generation,
        });
    }
}
