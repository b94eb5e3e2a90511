//! Snapshots and compaction on request: `SAVE [FULL|INCREMENTAL]` waits for
//! the snapshot, `BGSAVE [FULL|INCREMENTAL]` starts it and answers at once,
//! `BGREWRITEAOF` starts a compaction of everything written so far.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::{error, ok, Reply};
use crate::server::db::Db;
use crate::store::Store;

#[derive(Clone, Copy)]
enum Kind {
    Full,
    Incremental,
}

fn kind(arg: Option<&Bytes>) -> Option<Kind> {
    match arg
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .as_deref()
    {
        None | Some("FULL") => Some(Kind::Full),
        Some("INCREMENTAL") => Some(Kind::Incremental),
        Some(_) => None,
    }
}

async fn snapshot(store: Store, kind: Kind) -> crate::error::Result<()> {
    match kind {
        Kind::Full => store.snapshot().await.map(drop),
        Kind::Incremental => store.snapshot_incremental().await.map(drop),
    }
}

/// `SAVE [FULL|INCREMENTAL]`.
pub fn save(db: &Db, arg: Option<&Bytes>) -> Reply {
    let Some(kind) = kind(arg) else {
        return Reply::Now(error("syntax error: SAVE [FULL|INCREMENTAL]"));
    };
    let store = db.store().clone();
    Reply::Wait(Box::pin(async move {
        match snapshot(store, kind).await {
            Ok(()) => ok(),
            Err(e) => error(e.to_string()),
        }
    }))
}

/// `BGSAVE [FULL|INCREMENTAL]`.
pub fn bgsave(db: &Db, arg: Option<&Bytes>) -> Reply {
    let Some(kind) = kind(arg) else {
        return Reply::Now(error("syntax error: BGSAVE [FULL|INCREMENTAL]"));
    };
    let store = db.store().clone();
    actix_rt::spawn(async move {
        if let Err(e) = snapshot(store, kind).await {
            tracing::error!(%e, "background snapshot failed");
        }
    });
    Reply::Now(BytesFrame::SimpleString(Bytes::from_static(
        b"Background saving started",
    )))
}

/// `BGREWRITEAOF`: compact the log in the background.
pub fn bgrewriteaof(db: &Db) -> Reply {
    let store = db.store().clone();
    actix_rt::spawn(async move {
        if let Err(e) = store.compact().await {
            tracing::error!(%e, "background compaction failed");
        }
    });
    Reply::Now(BytesFrame::SimpleString(Bytes::from_static(
        b"Background append only file rewriting started",
    )))
}
