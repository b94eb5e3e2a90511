//! `ArchiverActor`: keeps the archive (`[archive]`) up to date. On its own
//! arbiter thread, so that uploads, their retries and the reads of segment
//! files never hold up the WAL's thread, it runs a pass (see
//! `crate::archive::uploader`) every `archive.max_lag_ms / 2`; a pass still
//! running when the next is due is not doubled. A restarted archiver learns
//! what the archive holds from a fresh listing.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::archive::bucket::Bucket;
use crate::archive::uploader::Uploader;

/// Uploads what the archive lacks.
pub struct ArchiverActor {
    /// `None` while a pass runs.
    uploader: Option<Uploader>,
    period: Duration,
    /// Whether the last pass failed: each change of it is logged once.
    failing: bool,
    _watch: Watch,
}

impl ArchiverActor {
    /// An archiver for the bucket `[archive]` names, which the open
    /// already connected to once.
    pub(crate) fn new(shared: Arc<WalShared>, watch: Watch) -> ArchiverActor {
        let period = Duration::from_millis((shared.config.archive.max_lag_ms / 2).max(5));
        let uploader = match Bucket::connect(&shared.config.archive) {
            Ok(bucket) => Some(Uploader::new(shared, bucket)),
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
        let Some(mut uploader) = self.uploader.take() else {
            return;
        };
        let pass = async move {
            let result = uploader.pass().await;
            (uploader, result)
        };
        ctx.spawn(pass.into_actor(self).map(|(uploader, result), act, _| {
            act.uploader = Some(uploader);
            match result {
                Ok(()) if act.failing => {
                    tracing::info!("the archive is reachable again");
                    act.failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !act.failing {
                        tracing::error!(%e, "archiving failed; retired files are kept until it succeeds");
                    }
                    act.failing = true;
                }
            }
        }));
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
