//! Reads: `GET`, `MGET`, `STRLEN`, `TYPE`, `EXISTS`, `DBSIZE`, and the
//! walks over the ordered keys: `SCAN`, `KEYS`, `RANDOMKEY`.

use bytes::Bytes;

use super::{error, Reply};
use crate::server::db::Db;
use crate::server::frame::Frame;
use crate::server::pattern;

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

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: the next
/// cursor (0 when the walk is over) and the matching keys among the next
/// `count` (default 10) it examined, in key order.
pub fn scan(db: &Db, rest: &[Bytes]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&rest[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Reply::Now(error("invalid cursor"));
    };
    let (mut pattern, mut count, mut strings) = (None, 10usize, true);
    let mut options = rest[1..].iter();
    while let Some(option) = options.next() {
        let value = options.next();
        match (option.to_ascii_uppercase().as_slice(), value) {
            (b"MATCH", Some(p)) => pattern = Some(p.clone()),
            (b"COUNT", Some(n)) => match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
                Some(n) if n >= 1 => count = n,
                Some(_) => return Reply::Now(error("syntax error")),
                None => return Reply::Now(error("value is not an integer or out of range")),
            },
            // Every value is a string.
            (b"TYPE", Some(t)) => strings = t.eq_ignore_ascii_case(b"string"),
            _ => return Reply::Now(error("syntax error")),
        }
    }
    let after = match cursor {
        0 => None,
        c => match db.cursors().borrow().resume(c) {
            Some(key) => Some(key),
            None => return Reply::Now(error("invalid cursor")),
        },
    };
    let prefix = pattern
        .as_deref()
        .map(pattern::literal_prefix)
        .unwrap_or_default();
    let mut keys = db.keys_after(after.as_deref(), &prefix).peekable();
    let mut found = Vec::new();
    let mut last = None;
    for key in keys.by_ref().take(count) {
        if strings && pattern.as_deref().is_none_or(|p| pattern::matches(p, &key)) {
            found.push(Frame::Bulk(key.clone()));
        }
        last = Some(key);
    }
    // Nothing after the last key examined: the walk is over.
    let next = match last {
        Some(key) if keys.peek().is_some() => db.cursors().borrow_mut().issue(key),
        _ => 0,
    };
    Reply::Now(Frame::Array(vec![
        Frame::text(next.to_string()),
        Frame::Array(found),
    ]))
}

/// `KEYS pattern`: every key that matches, in key order. Like Redis's, it
/// walks every key under the pattern's literal prefix at once: `SCAN` is
/// the way to walk a large keyspace.
pub fn keys(db: &Db, pattern: &Bytes) -> Reply {
    let prefix = pattern::literal_prefix(pattern);
    Reply::Now(Frame::Array(
        db.keys_after(None, &prefix)
            .filter(|key| pattern::matches(pattern, key))
            .map(Frame::Bulk)
            .collect(),
    ))
}

/// `RANDOMKEY`: some key, or nil when there is none: the first at or after
/// a random point of the key space (keys after long gaps come up more
/// often than in Redis, whose pick is uniform).
pub fn randomkey(db: &Db) -> Reply {
    let probe: [u8; 8] = rand::random();
    let key = db
        .keys_after(Some(&probe), &[])
        .next()
        .or_else(|| db.keys_after(None, &[]).next());
    Reply::Now(key.map_or(Frame::Null, Frame::Bulk))
}
