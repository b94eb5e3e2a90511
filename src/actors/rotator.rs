//! `RotatorActor`: prepares the next segment ahead of time and keeps the
//! manifest. Creating, zero-filling and syncing a segment and rewriting the
//! manifest run on a blocking thread while the WAL keeps writing, so a
//! rotation itself is only a header write and a handle swap. The fill is
//! paced at `maintenance.write_bytes_per_sec` (a whole segment's worth of
//! appends is the time it has), and goes at full speed once the WAL is
//! waiting for it.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::messages::PrepareSegment;
use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::error::{Error, Result};
use crate::log::segment::Segment;

/// Creates and lists segments for the WAL actor.
pub struct RotatorActor {
    shared: Arc<WalShared>,
    _watch: Watch,
}

impl RotatorActor {
    pub(crate) fn new(shared: Arc<WalShared>, watch: Watch) -> RotatorActor {
        RotatorActor {
            shared,
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
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let size = shared.config.wal.max_segment_bytes;
            let fill = shared.config.maintenance.write_bytes_per_sec;
            actix_rt::task::spawn_blocking(move || {
                shared
                    .manifest
                    .create_segment(size, fill, &shared.segment_wanted)
            })
            .await
            .unwrap_or_else(|e| Err(Error::task_failed("creating the next segment", &e)))
        })
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for RotatorActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into RotatorActor");
    }
}
