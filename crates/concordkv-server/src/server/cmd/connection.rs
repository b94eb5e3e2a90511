//! Commands about the connection that need no session (`PING`, `SELECT`),
//! and `CONFIG GET`, which `redis-benchmark` sends at start and only needs
//! a harmless answer to.

use crate::server::frame::Frame;
use bytes::Bytes;

use super::{error, ok, Reply};

/// `PING [message]`.
pub fn ping(rest: &[Bytes]) -> Reply {
    Reply::Now(match rest.first() {
        Some(message) => Frame::Bulk(message.clone()),
        None => Frame::Simple("PONG"),
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

/// `CONFIG GET pattern…` answers an empty map (clients then use their
/// defaults); the server's settings live in its TOML file, so `CONFIG SET`
/// and the rest are refused by name.
pub fn config(rest: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&rest[0]).to_ascii_uppercase();
    Reply::Now(match sub.as_str() {
        "GET" if rest.len() >= 2 => Frame::Map(Vec::new()),
        _ => error(format!(
            "unsupported command 'config {}': settings come from the TOML configuration file",
            sub.to_ascii_lowercase()
        )),
    })
}
