//! Changes: `SET`, `MSET` (one atomic batch), `DEL`. Each is answered once
//! the log acknowledges it per the sync mode.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::{error, ok, Reply};
use crate::server::db::Db;
use concordkv::Error;
use concordkv::Op;

fn refused(e: Error) -> Reply {
    Reply::Now(error(e.to_string()))
}

/// `SET key value`.
pub fn set(db: &Db, key: &Bytes, value: &Bytes) -> Reply {
    let op = Op::Set {
        key: key.to_vec(),
        value: value.to_vec(),
    };
    match db.write(vec![op]) {
        Ok(pending) => Reply::Later { pending, ok: ok() },
        Err(e) => refused(e),
    }
}

/// `MSET key value [key value …]`: all or nothing, as one record.
pub fn mset(db: &Db, pairs: &[Bytes]) -> Reply {
    let ops = pairs
        .chunks_exact(2)
        .map(|kv| Op::Set {
            key: kv[0].to_vec(),
            value: kv[1].to_vec(),
        })
        .collect();
    match db.write(ops) {
        Ok(pending) => Reply::Later { pending, ok: ok() },
        Err(e) => refused(e),
    }
}

/// `DEL key [key …]`: how many existed; the removals are one record.
pub fn del(db: &Db, keys: &[Bytes]) -> Reply {
    match db.delete(keys) {
        Ok((_, None)) => Reply::Now(BytesFrame::Integer(0)),
        Ok((removed, Some(pending))) => Reply::Later {
            pending,
            ok: BytesFrame::Integer(removed as i64),
        },
        Err(e) => refused(e),
    }
}
