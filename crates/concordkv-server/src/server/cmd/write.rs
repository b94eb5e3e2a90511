//! Changes: `SET`, `MSET` (one atomic batch), `DEL`. Each waits for room in
//! the log's queue before it is applied, and is answered once the log
//! acknowledges it per the sync mode.

use crate::server::frame::Frame;
use bytes::Bytes;

use super::{ok, write_error, Reply};
use crate::server::db::Db;
use concordkv::Error;
use concordkv::Op;

fn refused(e: Error) -> Reply {
    Reply::Now(write_error(&e))
}

/// `SET key value`.
pub async fn set(db: &Db, key: &Bytes, value: &Bytes) -> Reply {
    let op = Op::Set {
        key: key.to_vec(),
        value: value.to_vec(),
    };
    match db.write(vec![op]).await {
        Ok(pending) => Reply::Later { pending, ok: ok() },
        Err(e) => refused(e),
    }
}

/// `MSET key value [key value …]`: all or nothing, as one record (pairs
/// only: the command table refuses a key without its value).
pub async fn mset(db: &Db, pairs: &[Bytes]) -> Reply {
    let ops = pairs
        .chunks_exact(2)
        .map(|kv| Op::Set {
            key: kv[0].to_vec(),
            value: kv[1].to_vec(),
        })
        .collect();
    match db.write(ops).await {
        Ok(pending) => Reply::Later { pending, ok: ok() },
        Err(e) => refused(e),
    }
}

/// `DEL key [key …]`: how many existed; the removals are one record.
pub async fn del(db: &Db, keys: &[Bytes]) -> Reply {
    match db.delete(keys).await {
        Ok((_, None)) => Reply::Now(Frame::Integer(0)),
        Ok((removed, Some(pending))) => Reply::Later {
            pending,
            ok: Frame::Integer(removed as i64),
        },
        Err(e) => refused(e),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use concordkv::testing::sim_fs::{Call, Fault, SimFs};
    use concordkv::{Config, SyncMode};

    use super::*;
    use crate::server::cmd::execute;

    /// The reply to `SET key v` once the log has answered.
    async fn set(db: &Db, key: &str) -> Frame {
        let args = vec![
            Bytes::from("SET"),
            Bytes::from(key.to_string()),
            Bytes::from("v"),
        ];
        match execute(args, db).await {
            Reply::Now(frame) => frame,
            Reply::Later { pending, ok } => match pending.await {
                Ok(_) => ok,
                Err(e) => write_error(&e),
            },
            _ => panic!("SET answers now or once the log did"),
        }
    }

    fn text(frame: &Frame) -> String {
        match frame {
            Frame::Error(e) => e.to_string(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn a_full_disk_is_answered_like_redis_naming_the_file_and_the_cause() {
        let fs = SimFs::new(1);
        let mut config = Config::with_data_dir(PathBuf::from("/sim/db"));
        config.wal.sync_mode = SyncMode::Always;
        let (store, _) = concordkv::testing::open_recording_with_fs(config, Arc::new(fs.clone()))
            .await
            .expect("open");
        let db = Db::new(store.clone());
        assert_eq!(set(&db, "a").await, ok());
        fs.inject(Fault {
            call: Call::Write,
            nth: 1,
            errno: libc::ENOSPC,
            // Every segment write from now on: the rotator may be filling
            // the next segment at this moment, and a one-off fault could be
            // spent there instead of on the append.
            path_contains: Some(".wal".into()),
            sticky: true,
        });
        for key in ["b", "c"] {
            let reply = text(&set(&db, key).await);
            assert!(
                reply.starts_with("MISCONF ")
                    && reply.contains("/sim/db/")
                    && reply.contains(".wal")
                    && reply.contains("No space left on device"),
                "{key}: {reply}"
            );
        }
        // A request refused before anything was written stays an ERR.
        let reply = text(&set(&db, "").await);
        assert!(reply.starts_with("ERR "), "{reply}");
        let _ = store.shutdown().await;
    }
}
