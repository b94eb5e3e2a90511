//! Reads: `GET`, `MGET`, `STRLEN`, `TYPE`, `EXISTS`, `DBSIZE`.

use crate::server::frame::Frame;
use bytes::Bytes;

use super::Reply;
use crate::server::db::Db;

/// `GET key`: the value, or nil.
pub fn get(db: &Db, key: &Bytes) -> Reply {
    Reply::Now(db.get(key).map_or(Frame::Null, Frame::Bulk))
}

/// `MGET key [key …]`: each value, or nil.
pub fn mget(db: &Db, keys: &[Bytes]) -> Reply {
    Reply::Now(Frame::Array(
        keys.iter()
            .map(|k| db.get(k).map_or(Frame::Null, Frame::Bulk))
            .collect(),
    ))
}

/// `STRLEN key`: the value's length, 0 for a missing key.
pub fn strlen(db: &Db, key: &Bytes) -> Reply {
    Reply::Now(Frame::Integer(db.value_len(key).unwrap_or(0) as i64))
}

/// `TYPE key`: `string` (every value is one), or `none`.
pub fn key_type(db: &Db, key: &Bytes) -> Reply {
    Reply::Now(Frame::Simple(if db.exists(key) {
        "string"
    } else {
        "none"
    }))
}

/// `EXISTS key [key …]`: how many exist.
pub fn exists(db: &Db, keys: &[Bytes]) -> Reply {
    Reply::Now(Frame::Integer(db.count_existing(keys) as i64))
}

/// `DBSIZE`: number of keys.
pub fn dbsize(db: &Db) -> Reply {
    Reply::Now(Frame::Integer(db.len() as i64))
}
