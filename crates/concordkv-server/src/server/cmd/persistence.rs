//! Snapshots and compaction on request: `SAVE [FULL|INCREMENTAL]` waits for
//! the snapshot (written unpaced, see `Store::begin_snapshot_waited`),
//! `BGSAVE [FULL|INCREMENTAL]` starts it and answers at once,
//! `BGREWRITEAOF` starts a compaction of everything written so far. One
//! snapshot and one compaction run at a time (the store's single flight):
//! asked for again meanwhile, they answer Redis's "already in progress"
//! error and start nothing.

use crate::server::frame::Frame;
use bytes::Bytes;

use super::{error, ok, Reply};
use crate::server::db::Db;
use concordkv::Error;
use concordkv::SnapshotKind;

fn kind(arg: Option<&Bytes>) -> Option<SnapshotKind> {
    match arg
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .as_deref()
    {
        None | Some("FULL") => Some(SnapshotKind::Full),
        Some("INCREMENTAL") => Some(SnapshotKind::Incremental),
        Some(_) => None,
    }
}

/// The reply to a refused start: Redis's text for a job already running.
fn refused(e: Error, in_progress: &'static str) -> Reply {
    Reply::Now(match e {
        Error::InProgress(_) => Frame::Error(in_progress.into()),
        e => error(e.to_string()),
    })
}

const SAVE_IN_PROGRESS: &str = "ERR Background save already in progress";
const REWRITE_IN_PROGRESS: &str = "ERR Background append only file rewriting already in progress";

/// `SAVE [FULL|INCREMENTAL]`.
pub fn save(db: &Db, arg: Option<&Bytes>) -> Reply {
    let Some(kind) = kind(arg) else {
        return Reply::Now(error("syntax error: SAVE [FULL|INCREMENTAL]"));
    };
    // The client waits: the snapshot must not wait for an idle CPU.
    let work = match db.store().begin_snapshot_waited(kind) {
        Ok(work) => work,
        Err(e) => return refused(e, SAVE_IN_PROGRESS),
    };
    Reply::Wait(Box::pin(async move {
        match work.await {
            Ok(_) => ok(),
            Err(e) => error(e.to_string()),
        }
    }))
}

/// `BGSAVE [FULL|INCREMENTAL]`.
pub fn bgsave(db: &Db, arg: Option<&Bytes>) -> Reply {
    let Some(kind) = kind(arg) else {
        return Reply::Now(error("syntax error: BGSAVE [FULL|INCREMENTAL]"));
    };
    let work = match db.store().begin_snapshot(kind) {
        Ok(work) => work,
        Err(e) => return refused(e, SAVE_IN_PROGRESS),
    };
    actix_rt::spawn(async move {
        if let Err(e) = work.await {
            tracing::error!(%e, "background snapshot failed");
        }
    });
    Reply::Now(Frame::Simple("Background saving started"))
}

/// `BGREWRITEAOF`: compact the log in the background.
pub fn bgrewriteaof(db: &Db) -> Reply {
    let work = match db.store().begin_compaction() {
        Ok(work) => work,
        Err(e) => return refused(e, REWRITE_IN_PROGRESS),
    };
    actix_rt::spawn(async move {
        if let Err(e) = work.await {
            tracing::error!(%e, "background compaction failed");
        }
    });
    Reply::Now(Frame::Simple(
        "Background append only file rewriting started",
    ))
}
