//! `RotatorActor`: the one owner of the manifest. Every change to the list
//! of segments and snapshots reaches it as a message: the next segment for
//! the WAL, a snapshot or compaction output to list (retiring what it
//! covers), a log's purge, truncation mark and metadata, and the
//! re-validation of the files after the WAL died. It makes them one at a
//! time, in the order they arrived, on a thread of its own (the manifest
//! thread), so no lock orders one change against another and no change
//! waits on an actor's thread for an fsync.
//!
//! A segment's preparation is in two steps: the file is created, zero-filled
//! and synced on a blocking thread, outside the manifest thread (the fill
//! is paced at `maintenance.write_bytes_per_sec`, a whole segment's worth
//! of appends being the time it has, and goes at full speed once the WAL
//! sends [`Hurry`]); only its listing queues with the other changes.
//!
//! The manifest thread and the hurry flag outlive any one incarnation of
//! the actor: the supervisor hands them to each new one, so a change taken
//! before a panic still completes and answers, and a restarted rotator
//! never runs a change beside its predecessor's.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::messages::{
    Hurry, ListSnapshot, MarkTruncation, PrepareSegment, PurgeLog, Revalidate, SetMetadata,
};
use crate::actors::supervised::{Slot, Watch};
use crate::actors::wal::{open_log, WalShared, WalStart};
use crate::error::{Error, Result};
use crate::log::recovery::Debris;
use crate::log::segment::Segment;

/// How long a caller waits before asking a restarted rotator again.
const RETRY: Duration = Duration::from_millis(20);

/// How many times a caller asks before taking the rotator for gone for
/// good (the store shut down, or gave up restarting it): 5 s.
const TRIES: u32 = 250;

/// A change for the manifest thread: run it (`true`) or refuse it because
/// the thread stopped (`false`); either way it answers its caller.
type Change = Box<dyn FnOnce(bool) + Send>;

/// What outlives one incarnation of the rotator.
pub(crate) struct RotatorState {
    /// `None` once stopped.
    changes: Mutex<Option<mpsc::Sender<Change>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`Hurry`]: the segment being filled is waited for.
    hurry: Arc<AtomicBool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only a handle is kept under it: nothing to leave half done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RotatorState {
    /// Starts the manifest thread of the store in `dir`.
    pub(crate) fn start(dir: &Path) -> Result<Arc<RotatorState>> {
        let (sender, changes) = mpsc::channel::<Change>();
        let thread = std::thread::Builder::new()
            .name("concordkv-manifest".into())
            .spawn(move || {
                for change in changes {
                    change(true);
                }
            })
            .map_err(|e| Error::io("start the manifest thread for", dir, e))?;
        Ok(Arc::new(RotatorState {
            changes: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            hurry: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Queues `change` after every change queued before it; resolves with
    /// its outcome ([`Error::Panicked`] naming `what` if it panicked,
    /// [`Error::ShutDown`] if the thread had stopped).
    fn submit<T: Send + 'static>(
        &self,
        what: &'static str,
        change: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> {
        let (reply, answer) = oneshot::channel();
        let job: Change = Box::new(move |run| {
            let outcome = if run {
                std::panic::catch_unwind(AssertUnwindSafe(change))
                    .unwrap_or(Err(Error::Panicked { what }))
            } else {
                Err(Error::ShutDown)
            };
            let _ = reply.send(outcome);
        });
        let refused = match &*lock(&self.changes) {
            Some(sender) => sender.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            job(false);
        }
        // Every job answers, run or refused.
        async move { answer.await.unwrap_or(Err(Error::ShutDown)) }
    }

    /// Lets the changes queued so far finish, refuses later ones, and waits
    /// for the thread: after this nothing changes the manifest.
    pub(crate) fn stop(&self) {
        lock(&self.changes).take();
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                tracing::error!("the manifest thread panicked");
            }
        }
    }
}

/// Sends `message()` to the rotator and waits for the answer. A closed
/// mailbox means the message was never taken: one that was is answered
/// from the manifest thread whatever becomes of the actor (actix sends a
/// `ResponseFuture`'s answer from a task of its own). Unless the store is
/// closing or gave up restarting its actors, the rotator died of a panic,
/// and its successor, once the supervisor put it in the slot, is asked
/// again.
pub(crate) async fn ask<M, T>(
    shared: &WalShared,
    rotator: &Slot<RotatorActor>,
    message: impl Fn() -> M,
) -> Result<T>
where
    M: Message<Result = Result<T>> + Send + 'static,
    T: Send + 'static,
    RotatorActor: Handler<M>,
{
    for _ in 0..TRIES {
        match rotator.get().send(message()).await {
            Ok(outcome) => return outcome,
            Err(_) if shared.manifest.is_closed() => return Err(Error::ShutDown),
            Err(_) => {
                if let Some(cause) = shared.inbox.failure() {
                    return Err(Error::refused(&cause));
                }
                actix_rt::time::sleep(RETRY).await;
            }
        }
    }
    Err(Error::Panicked {
        what: "the rotator actor",
    })
}

/// Owns the manifest's changes.
pub struct RotatorActor {
    shared: Arc<WalShared>,
    state: Arc<RotatorState>,
    /// Panic on the next `PrepareSegment` (tests).
    #[cfg(feature = "testing")]
    crash_while_preparing: bool,
    _watch: Watch,
}

impl RotatorActor {
    pub(crate) fn new(
        shared: Arc<WalShared>,
        state: Arc<RotatorState>,
        watch: Watch,
    ) -> RotatorActor {
        RotatorActor {
            shared,
            state,
            #[cfg(feature = "testing")]
            crash_while_preparing: false,
            _watch: watch,
        }
    }
}

impl Actor for RotatorActor {
    type Context = Context<Self>;
}

impl Handler<PrepareSegment> for RotatorActor {
    type Result = ResponseFuture<Result<Segment>>;

    fn handle(&mut self, _msg: PrepareSegment, _ctx: &mut Context<Self>) -> Self::Result {
        #[cfg(feature = "testing")]
        if self.crash_while_preparing {
            panic!("a crash injected into RotatorActor while it prepares a segment");
        }
        let shared = Arc::clone(&self.shared);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let size = shared.config.wal.max_segment_bytes;
            let fill = shared.config.maintenance.write_bytes_per_sec;
            let hurry = Arc::clone(&state.hurry);
            let filling = Arc::clone(&shared);
            let prepared = actix_rt::task::spawn_blocking(move || {
                filling.manifest.prepare_segment(size, fill, &hurry)
            })
            .await
            .unwrap_or_else(|e| Err(Error::task_failed("creating the next segment", &e)));
            let listed = match prepared {
                Ok(prepared) => {
                    state
                        .submit("listing the next segment", move || {
                            shared.manifest.list_segment(prepared)
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            // Whoever hurried this segment has it now (or its failure).
            state.hurry.store(false, Relaxed);
            listed
        })
    }
}

impl Handler<Hurry> for RotatorActor {
    type Result = ();

    fn handle(&mut self, _msg: Hurry, _ctx: &mut Context<Self>) {
        self.state.hurry.store(true, Relaxed);
    }
}

impl Handler<ListSnapshot> for RotatorActor {
    type Result = ResponseFuture<Result<Vec<PathBuf>>>;

    fn handle(&mut self, msg: ListSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        Box::pin(self.state.submit("listing a snapshot", move || {
            shared
                .manifest
                .add_snapshot(msg.header, &msg.segments, &msg.obsolete)
        }))
    }
}

impl Handler<PurgeLog> for RotatorActor {
    type Result = ResponseFuture<Result<Vec<PathBuf>>>;

    fn handle(&mut self, msg: PurgeLog, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        Box::pin(self.state.submit("purging the log", move || {
            shared.manifest.purge_before(msg.before)
        }))
    }
}

impl Handler<SetMetadata> for RotatorActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: SetMetadata, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        Box::pin(self.state.submit("writing the metadata", move || {
            shared.manifest.set_metadata(msg.0)
        }))
    }
}

impl Handler<MarkTruncation> for RotatorActor {
    type Result = ResponseFuture<Result<Vec<PathBuf>>>;

    fn handle(&mut self, msg: MarkTruncation, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        Box::pin(self.state.submit("a truncation", move || {
            // Readers must never see the truncation with the old end.
            let state = Arc::clone(&shared.state);
            let after = msg.after;
            shared
                .manifest
                .truncate_after(after, msg.through, move || state.truncate(after))
        }))
    }
}

impl Handler<Revalidate> for RotatorActor {
    type Result = ResponseFuture<Result<WalStart>>;

    fn handle(&mut self, _msg: Revalidate, _ctx: &mut Context<Self>) -> Self::Result {
        let shared = Arc::clone(&self.shared);
        Box::pin(self.state.submit("re-validating the log", move || {
            // Unlisted files stay: a snapshot being written is one until
            // it is listed. The next open removes whatever is debris.
            let (recovery, tree, start) = open_log(
                shared.fs.as_ref(),
                &shared.manifest,
                &shared.config,
                Debris::Keep,
                &mut |_| {},
            )?;
            // The files are the truth now: they may hold records the dead
            // actor wrote but never acknowledged.
            shared.state.replace(tree, recovery.last_seq);
            if let Some(tail) = &recovery.truncated {
                shared.meters.recovery_truncated_bytes.increment(tail.bytes);
            }
            Ok(start)
        }))
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for RotatorActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into RotatorActor");
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::CrashWhilePreparing> for RotatorActor {
    type Result = ();

    fn handle(
        &mut self,
        _msg: crate::actors::messages::CrashWhilePreparing,
        _ctx: &mut Context<Self>,
    ) {
        self.crash_while_preparing = true;
    }
}
