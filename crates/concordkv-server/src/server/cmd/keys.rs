//! Reads: `GET`, `EXISTS`, `DBSIZE`.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::Reply;
use crate::server::db::Db;

/// `GET key`: the value, or nil.
pub fn get(db: &Db, key: &Bytes) -> Reply {
    Reply::Now(db.get(key).map_or(BytesFrame::Null, BytesFrame::BulkString))
}

/// `EXISTS key [key …]`: how many exist.
pub fn exists(db: &Db, keys: &[Bytes]) -> Reply {
    Reply::Now(BytesFrame::Integer(db.count_existing(keys) as i64))
}

/// `DBSIZE`: number of keys.
pub fn dbsize(db: &Db) -> Reply {
    Reply::Now(BytesFrame::Integer(db.len() as i64))
}
