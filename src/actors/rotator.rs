//! `RotatorActor`: prepares the next segment ahead of time and keeps the
//! manifest. Creating and preallocating a segment, syncing it and rewriting
//! the manifest take several fsyncs; they run on a blocking thread while the
//! WAL keeps writing, so a rotation itself is only a header write and a
//! handle swap.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::messages::PrepareSegment;
use crate::actors::wal::WalShared;
use crate::error::{Error, Result};
use crate::segment::Segment;

/// Creates and lists segments for the WAL actor.
pub struct RotatorActor {
    shared: Arc<WalShared>,
}

impl RotatorActor {
    pub(crate) fn new(shared: Arc<WalShared>) -> RotatorActor {
        RotatorActor { shared }
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
            actix_rt::task::spawn_blocking(move || shared.manifest.create_segment(size))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::WalFailed(format!(
                        "the segment-creating task failed: {e}"
                    )))
                })
        })
    }
}
