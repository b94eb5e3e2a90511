//! Commands: parsing arguments into a [`Command`] and running it against the
//! [`Db`]. Each family lives in its own file: [`keys`] reads, [`write`]
//! changes, [`persistence`] snapshots, [`info`] reports, [`connection`]
//! talks about the connection.

pub mod connection;
pub mod info;
pub mod keys;
pub mod persistence;
pub mod write;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use crate::server::db::Db;
use concordkv::{Error, Pending};

/// What running a command produced.
pub enum Reply {
    /// A reply available at once.
    Now(BytesFrame),
    /// A write: `ok` is the reply once the log acknowledges it.
    Later { pending: Pending, ok: BytesFrame },
    /// A reply that takes longer work (a snapshot) to produce.
    Wait(Pin<Box<dyn Future<Output = BytesFrame>>>),
    /// Reply, then close the connection.
    Close(BytesFrame),
}

/// An error reply (`-ERR …`).
pub fn error(message: impl Into<String>) -> BytesFrame {
    BytesFrame::Error(format!("ERR {}", message.into()).into())
}

/// The reply to a write the log did not take. When the log stopped on a
/// disk failure (or refuses writes since one), Redis's `MISCONF`, as Redis
/// answers writes after a failed AOF write, so clients that know it stop
/// retrying; otherwise `ERR`. Either way the message names the file and
/// the operating system's error (`No space left on device`).
pub fn write_error(e: &Error) -> BytesFrame {
    if matches!(e, Error::WalFailed { .. }) || e.io_error().is_some() {
        BytesFrame::Error(format!("MISCONF Errors writing to the write-ahead log: {e}").into())
    } else {
        error(e.to_string())
    }
}

/// The `+OK` reply.
pub fn ok() -> BytesFrame {
    BytesFrame::SimpleString(Bytes::from_static(b"OK"))
}

fn wrong_arity(name: &str) -> Reply {
    Reply::Now(error(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

/// Whether a command reads the key-value state, and so must wait until the
/// connection's earlier writes are acknowledged (and visible) before it runs.
pub fn reads_state(name: &[u8]) -> bool {
    const READERS: [&[u8]; 5] = [b"GET", b"EXISTS", b"DBSIZE", b"DEL", b"INFO"];
    READERS.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Runs one request against `db`. A write resolves once the log's queue
/// had room for it and it was applied (its acknowledgement is the
/// [`Reply::Later`]); the caller reads no further request meanwhile, which
/// is how a full queue slows a client down.
pub async fn execute(args: Vec<Bytes>, db: &Db) -> Reply {
    let Some(name) = args.first() else {
        return Reply::Now(error("empty command"));
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let rest = &args[1..];
    let arity_ok = match name.as_str() {
        "PING" => rest.len() <= 1,
        "ECHO" | "GET" => rest.len() == 1,
        "SET" => rest.len() == 2,
        "DEL" | "EXISTS" => !rest.is_empty(),
        "MSET" => !rest.is_empty() && rest.len() % 2 == 0,
        "DBSIZE" | "QUIT" | "BGREWRITEAOF" => rest.is_empty(),
        "SELECT" => rest.len() == 1,
        "INFO" | "SAVE" | "BGSAVE" => rest.len() <= 1,
        "CONFIG" | "COMMAND" | "CLIENT" => true,
        _ => return Reply::Now(unknown_command(&name, rest)),
    };
    if !arity_ok {
        return wrong_arity(&name);
    }
    match name.as_str() {
        "PING" => connection::ping(rest),
        "ECHO" => Reply::Now(BytesFrame::BulkString(rest[0].clone())),
        "QUIT" => Reply::Close(ok()),
        "SELECT" => connection::select(&rest[0]),
        "CONFIG" | "COMMAND" | "CLIENT" => connection::compatibility(&name, rest),
        "GET" => keys::get(db, &rest[0]),
        "EXISTS" => keys::exists(db, rest),
        "DBSIZE" => keys::dbsize(db),
        "SET" => write::set(db, &rest[0], &rest[1]).await,
        "MSET" => write::mset(db, rest).await,
        "DEL" => write::del(db, rest).await,
        "SAVE" => persistence::save(db, rest.first()),
        "BGSAVE" => persistence::bgsave(db, rest.first()),
        "BGREWRITEAOF" => persistence::bgrewriteaof(db),
        _ => info::info(db, rest.first()),
    }
}

fn unknown_command(name: &str, rest: &[Bytes]) -> BytesFrame {
    let shown: Vec<String> = rest
        .iter()
        .take(4)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    error(format!(
        "unknown command '{}', with args beginning with: {}",
        name.to_ascii_lowercase(),
        shown.join(" ")
    ))
}
