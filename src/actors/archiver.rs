//! `ArchiverActor`: keeps the archive (`[archive]`) up to date. On its own
//! arbiter thread, so that uploads, their retries and the reads of segment
//! files never hold up the WAL's thread, it runs a pass (see
//! `crate::archive::uploader`) every `archive.max_lag_ms / 2`; a pass still
//! running when the next is due is not doubled. A restarted archiver learns
//! what the archive holds from a fresh listing. A shutdown asks for a last
//! pass ([`FinalPass`]) once the WAL has stopped.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::archive::bucket::Bucket;
use crate::archive::uploader::Uploader;

/// Uploads what the archive lacks.
pub struct ArchiverActor {
    /// Locked while a pass runs.
    uploader: Option<Arc<tokio::sync::Mutex<Uploader>>>,
    period: Duration,
    /// Whether the last pass failed: each change of it is logged once.
    failing: bool,
    _watch: Watch,
}

/// One more pass, after any running one, answered when it ends: what a
/// shutdown asks for once the WAL has synced its last record, so that a
/// store stopped cleanly leaves an archive holding all of it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FinalPass;

impl ArchiverActor {
    /// An archiver for the bucket `[archive]` names, which the open
    /// already connected to once.
    pub(crate) fn new(shared: Arc<WalShared>, watch: Watch) -> ArchiverActor {
        let period = Duration::from_millis((shared.config.archive.max_lag_ms / 2).max(5));
        let uploader = match Bucket::connect(&shared.config.archive) {
            Ok(bucket) => Some(Arc::new(tokio::sync::Mutex::new(Uploader::new(
                shared, bucket,
            )))),
            Err(e) => {
                // The open built the same client from the same settings.
                tracing::error!(%e, "the archiver cannot reach its bucket");
                None
            }
        };
        ArchiverActor {
            uploader,
            period,
            failing: false,
            _watch: watch,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some(uploader) = &self.uploader else {
            return;
        };
        // A pass still running is not doubled.
        let Ok(mut uploader) = Arc::clone(uploader).try_lock_owned() else {
            return;
        };
        let pass = async move { uploader.pass().await };
        ctx.spawn(
            pass.into_actor(self)
                .map(|result, act, _| act.report(result)),
        );
    }

    fn report(&mut self, result: crate::error::Result<()>) {
        match result {
            Ok(()) if self.failing => {
                tracing::info!("the archive is reachable again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !self.failing {
                    tracing::error!(%e, "archiving failed; retired files are kept until it succeeds");
                }
                self.failing = true;
            }
        }
    }
}

impl Handler<FinalPass> for ArchiverActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: FinalPass, _ctx: &mut Context<Self>) -> Self::Result {
        let uploader = self.uploader.clone();
        let pass = async move {
            match uploader {
                Some(uploader) => Some(uploader.lock_owned().await.pass().await),
                None => None,
            }
        };
        Box::pin(pass.into_actor(self).map(|result, act, _| {
            if let Some(result) = result {
                act.report(result);
            }
        }))
    }
}

impl Actor for ArchiverActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.period, |act, ctx| act.tick(ctx));
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for ArchiverActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("crash injected into the archiver actor");
    }
}
