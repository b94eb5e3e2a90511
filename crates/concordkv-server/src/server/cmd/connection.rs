//! Commands about the connection itself, and the few that `redis-cli` and
//! `redis-benchmark` send at start and only need a harmless answer to.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::{error, ok, Reply};

/// `PING [message]`.
pub fn ping(rest: &[Bytes]) -> Reply {
    Reply::Now(match rest.first() {
        Some(message) => BytesFrame::BulkString(message.clone()),
        None => BytesFrame::SimpleString(Bytes::from_static(b"PONG")),
    })
}

/// `SELECT index`: there is one database, 0.
pub fn select(index: &Bytes) -> Reply {
    Reply::Now(if index.as_ref() == b"0" {
        ok()
    } else {
        error("DB index is out of range")
    })
}

/// `CONFIG GET …` answers an empty list (clients then use their defaults),
/// `COMMAND …` an empty list, `CLIENT SETNAME/SETINFO` OK; anything else
/// of these is refused by name.
pub fn compatibility(name: &str, rest: &[Bytes]) -> Reply {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default();
    Reply::Now(match (name, sub.as_str()) {
        ("CONFIG", "GET") | ("COMMAND", _) => BytesFrame::Array(Vec::new()),
        ("CLIENT", "SETNAME") | ("CLIENT", "SETINFO") => ok(),
        _ => error(format!(
            "unsupported command '{} {}'",
            name.to_ascii_lowercase(),
            sub.to_ascii_lowercase()
        )),
    })
}
