//! Expiry's clock, and the background purge that logs the deletion of keys
//! past their deadline, as Redis writes `DEL` to its append-only file: their
//! memory comes back, and a replay removes them too. Reads never wait for
//! it: the state hides a key from the moment its deadline passes.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use concordkv::Op;

use crate::server::db::Db;

/// How often the purge looks for expired keys: Redis's active expiry runs
/// ten times a second too.
const PURGE_EVERY: Duration = Duration::from_millis(100);

/// Expired keys looked at per record the purge logs.
const PURGE_BATCH: usize = 512;

/// Records the purge logs per tick at most, so that a mass expiry is
/// removed at a steady pace rather than in one long burst of writes.
/// With [`PURGE_BATCH`] and [`PURGE_EVERY`]: up to 80,000 keys a second.
const PURGE_RECORDS_PER_TICK: usize = 16;

/// Bytes counted per deletion besides its key (the log's own estimate).
const DELETE_OVERHEAD_BYTES: u64 = 21;

/// Milliseconds since the Unix epoch: the clock deadlines are set in.
pub fn now_ms() -> u64 {
    concordkv::unix_millis(SystemTime::now())
}

/// Deletes expired keys in the background until the server stops.
pub async fn purge_expired(db: Rc<Db>) {
    let max_bytes = db.store().config().limits.max_record_bytes / 2;
    let mut tick = actix_rt::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        for _ in 0..PURGE_RECORDS_PER_TICK {
            match purge_once(&db, max_bytes).await {
                Ok(more) => {
                    if failing {
                        tracing::info!("expired keys are being removed again");
                        failing = false;
                    }
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    // Reads still hide the keys; their deletion waits for
                    // the log to take writes again.
                    if !failing {
                        tracing::warn!(%e, "cannot log the deletion of expired keys; retrying");
                        failing = true;
                    }
                    break;
                }
            }
        }
    }
}

/// Logs one record deleting expired keys and waits for it; `true` if more
/// may be waiting.
async fn purge_once(db: &Db, max_bytes: u64) -> concordkv::Result<bool> {
    let candidates = db.expired_keys(PURGE_BATCH);
    if candidates.is_empty() {
        return Ok(false);
    }
    let (ops, pending) = db
        .purge(|db| {
            let mut bytes = 0;
            let mut ops = Vec::new();
            for key in &candidates {
                // A write of the key in flight (or a clear) decides its
                // fate; the deletion would undo it. A key the state no
                // longer hides was written meanwhile and is not expired.
                if db.in_flight(key).is_some() || db.get(key).is_some() {
                    continue;
                }
                bytes += key.len() as u64 + DELETE_OVERHEAD_BYTES;
                if bytes > max_bytes && !ops.is_empty() {
                    break;
                }
                ops.push(Op::Delete { key: key.clone() });
            }
            let logged = ops.len();
            (ops, logged)
        })
        .await?;
    if let Some(pending) = pending {
        pending.await?;
        db.count_expired(ops as u64);
    }
    Ok(ops > 0 && candidates.len() == PURGE_BATCH)
}
