//! Commands: [`execute`] looks a request's name up in the command [`table`]
//! and runs it against the [`Db`]. Each family lives in its own file:
//! [`keys`] reads, [`write`](mod@write) changes, [`persistence`] snapshots, [`info`] reports, [`connection`]
//! talks about the connection.

pub mod connection;
pub mod docs;
pub mod expire;
pub mod info;
pub mod keys;
pub mod modify;
pub mod persistence;
pub mod table;
pub mod transaction;
pub mod write;

use std::future::Future;
use std::pin::Pin;

use crate::server::frame::Frame;
use bytes::Bytes;

use crate::server::db::Db;
use crate::server::in_flight::Tracked;
use concordkv::Error;
use expire::{Base, Unit};

/// What running a command produced.
pub enum Reply {
    /// A reply available at once.
    Now(Frame),
    /// A write: `ok` is the reply once the log acknowledges it.
    Later { pending: Tracked, ok: Frame },
    /// A reply that takes longer work (a snapshot) to produce.
    Wait(Pin<Box<dyn Future<Output = Frame>>>),
    /// Reply, then close the connection.
    Close(Frame),
}

/// An error reply (`-ERR …`).
pub fn error(message: impl Into<String>) -> Frame {
    Frame::Error(format!("ERR {}", message.into()))
}

/// The reply to a write the log did not take. When the log stopped on a
/// disk failure (or refuses writes since one), Redis's `MISCONF`, as Redis
/// answers writes after a failed AOF write, so clients that know it stop
/// retrying; otherwise `ERR`. Either way the message names the file and
/// the operating system's error (`No space left on device`).
pub fn write_error(e: &Error) -> Frame {
    if matches!(e, Error::WalFailed { .. }) || e.io_error().is_some() {
        Frame::Error(format!(
            "MISCONF Errors writing to the write-ahead log: {e}"
        ))
    } else {
        error(e.to_string())
    }
}

/// A replica's answer to a write, in Redis's words, so that clients that
/// know replicas (and route writes to the primary) recognise it.
pub const READONLY: &str = "READONLY You can't write against a read only replica.";

/// `READONLY` for a write `spec` on a read-only `view`.
pub fn read_only_refusal(view: &dyn crate::server::db::View, spec: &table::Spec) -> Option<Frame> {
    (view.read_only() && spec.flags.contains(&"write")).then(|| Frame::Error(READONLY.into()))
}

/// The `+OK` reply.
pub fn ok() -> Frame {
    Frame::Simple("OK")
}

fn wrong_arity(name: &str) -> Reply {
    Reply::Now(error(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

/// Whether a command reads the key-value state, and so must wait until the
/// connection's earlier writes are acknowledged (and visible) before it
/// runs: the table's read-only commands, and `DEL` (its count), `INFO` and
/// `EXEC` (its reads).
pub fn reads_state(name: &[u8]) -> bool {
    table::lookup(name)
        .is_some_and(|c| c.flags.contains(&"readonly") || matches!(c.name, "del" | "info" | "exec"))
}

/// Runs one request against `db`. A write resolves once the log's queue
/// had room for it and it was applied (its acknowledgement is the
/// [`Reply::Later`]); the caller reads no further request meanwhile, which
/// is how a full queue slows a client down. Commands about the connection
/// itself are the session's (see [`crate::server::session`]).
pub async fn execute(args: Vec<Bytes>, db: &Db) -> Reply {
    let Some((name, rest)) = args.split_first() else {
        return Reply::Now(error("empty command"));
    };
    let Some(spec) = table::lookup(name) else {
        return Reply::Now(unknown_command(name, rest));
    };
    if !spec.arity_fits(rest.len()) {
        return wrong_arity(spec.name);
    }
    if let Some(refusal) = read_only_refusal(db, spec) {
        return Reply::Now(refusal);
    }
    match spec.name {
        "ping" => connection::ping(rest),
        "echo" => Reply::Now(Frame::Bulk(rest[0].clone())),
        "quit" => Reply::Close(ok()),
        "select" => connection::select(&rest[0]),
        "config" => connection::config(rest),
        "command" => Reply::Now(table::command(rest)),
        "get" => keys::get(db, &rest[0]),
        "mget" => keys::mget(db, rest),
        "strlen" => keys::strlen(db, &rest[0]),
        "type" => keys::key_type(db, &rest[0]),
        "exists" => keys::exists(db, rest),
        "scan" => keys::scan(db, rest),
        "keys" => keys::keys(db, &rest[0]),
        "randomkey" => keys::randomkey(db),
        "rename" => change(db, |db| modify::rename(db, &rest[0], &rest[1], false)).await,
        "renamenx" => change(db, |db| modify::rename(db, &rest[0], &rest[1], true)).await,
        "dbsize" => keys::dbsize(db),
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let (unit, base) = expire_kind(spec.name);
            change(db, |db| {
                expire::expire(db, &rest[0], &rest[1], &rest[2..], unit, base, spec.name)
            })
            .await
        }
        "ttl" => Reply::Now(expire::ttl(db.acknowledged(&rest[0]), Unit::Seconds, false)),
        "pttl" => Reply::Now(expire::ttl(db.acknowledged(&rest[0]), Unit::Millis, false)),
        "expiretime" => Reply::Now(expire::ttl(db.acknowledged(&rest[0]), Unit::Seconds, true)),
        "pexpiretime" => Reply::Now(expire::ttl(db.acknowledged(&rest[0]), Unit::Millis, true)),
        "persist" => change(db, |db| expire::persist(db, &rest[0])).await,
        "setex" | "psetex" => {
            let unit = if spec.name == "setex" {
                Unit::Seconds
            } else {
                Unit::Millis
            };
            change(db, |_| expire::setex(&rest[0], &rest[1], &rest[2], unit)).await
        }
        "getex" => change(db, |db| expire::getex(db, &rest[0], &rest[1..])).await,
        "flushdb" | "flushall" => match flush(rest) {
            Ok(plan) => change(db, move |_| plan.clone()).await,
            Err(refusal) => Reply::Now(refusal),
        },
        "set" if rest.len() == 2 => write::set(db, &rest[0], &rest[1]).await,
        "set" => change(db, |db| modify::set(db, &rest[0], &rest[1], &rest[2..])).await,
        "setnx" => change(db, |db| modify::setnx(db, &rest[0], &rest[1])).await,
        "getset" => change(db, |db| modify::getset(db, &rest[0], &rest[1])).await,
        "getdel" => change(db, |db| modify::getdel(db, &rest[0])).await,
        "append" => change(db, |db| modify::append(db, &rest[0], &rest[1])).await,
        "incr" => change(db, |db| modify::incr_by(db, &rest[0], None, false)).await,
        "decr" => change(db, |db| modify::incr_by(db, &rest[0], None, true)).await,
        "incrby" => {
            change(db, |db| {
                modify::incr_by(db, &rest[0], Some(&rest[1]), false)
            })
            .await
        }
        "decrby" => change(db, |db| modify::incr_by(db, &rest[0], Some(&rest[1]), true)).await,
        "incrbyfloat" => change(db, |db| modify::incr_by_float(db, &rest[0], &rest[1])).await,
        "mset" => write::mset(db, rest).await,
        "del" => write::del(db, rest).await,
        "save" => persistence::save(db, rest.first()),
        "bgsave" => persistence::bgsave(db, rest.first()),
        "bgrewriteaof" => persistence::bgrewriteaof(db),
        "info" => info::info(db, rest.first()),
        // The session's commands (AUTH, HELLO, CLIENT, RESET, MULTI, EXEC,
        // DISCARD, WATCH, UNWATCH) never get here.
        other => Reply::Now(error(format!(
            "'{other}' is a command about the connection and cannot run here"
        ))),
    }
}

/// The unit and base of an `EXPIRE`-family command's number.
pub fn expire_kind(name: &str) -> (Unit, Base) {
    match name {
        "expire" => (Unit::Seconds, Base::Now),
        "pexpire" => (Unit::Millis, Base::Now),
        "expireat" => (Unit::Seconds, Base::Epoch),
        _ => (Unit::Millis, Base::Epoch),
    }
}

/// `FLUSHDB`/`FLUSHALL [ASYNC|SYNC]`: one clear record, `OK` once it is
/// acknowledged. Both modes free the keys as the record is applied.
pub fn flush(options: &[Bytes]) -> Result<modify::Plan, Frame> {
    match options {
        [] => {}
        [mode] if matches!(mode.to_ascii_uppercase().as_slice(), b"ASYNC" | b"SYNC") => {}
        _ => return Err(error("syntax error")),
    }
    Ok((vec![concordkv::Op::Clear], ok()))
}

/// Runs a read-modify-write plan (see [`modify`]) and turns its outcome
/// into the reply: at once if nothing was logged, else once the log
/// acknowledged.
async fn change(db: &Db, decide: impl FnMut(&Db) -> modify::Plan) -> Reply {
    match db.change(decide).await {
        Ok((reply, None)) => Reply::Now(reply),
        Ok((reply, Some(pending))) => Reply::Later { pending, ok: reply },
        Err(e) => Reply::Now(write_error(&e)),
    }
}

/// Redis 7's reply to an unknown command, byte for byte, since clients and
/// people match on it: the name as sent (up to 128 bytes), then each
/// argument quoted and followed by a space until 128 bytes of them are shown.
pub fn unknown_command(name: &[u8], rest: &[Bytes]) -> Frame {
    const SHOWN: usize = 128;
    // Redis formats with `%s`, which stops at a NUL byte.
    let c_string = |b: &[u8]| -> Vec<u8> { b.iter().copied().take_while(|&c| c != 0).collect() };
    let mut args = Vec::new();
    for arg in rest {
        if args.len() >= SHOWN {
            break;
        }
        let arg = c_string(arg);
        let room = SHOWN - args.len();
        args.push(b'\'');
        args.extend_from_slice(&arg[..arg.len().min(room)]);
        args.extend_from_slice(b"' ");
    }
    let name = c_string(name);
    error(format!(
        "unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&name[..name.len().min(SHOWN)]),
        String::from_utf8_lossy(&args)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(args: &[&str]) -> String {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        match unknown_command(&args[0], &args[1..]) {
            Frame::Error(e) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn unknown_commands_are_answered_in_redis_s_words() {
        assert_eq!(
            unknown(&["NoSuch", "a", "b"]),
            "ERR unknown command 'NoSuch', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown(&["nosuch"]),
            "ERR unknown command 'nosuch', with args beginning with: "
        );
        // As redis-server 7.0 answers: the first argument cut at 128 bytes,
        // and no argument after it.
        let long = "x".repeat(200);
        assert_eq!(
            unknown(&["nosuch", &long, "y"]),
            format!(
                "ERR unknown command 'nosuch', with args beginning with: '{}' ",
                "x".repeat(128)
            )
        );
        assert_eq!(
            unknown(&[&"n".repeat(200)]),
            format!(
                "ERR unknown command '{}', with args beginning with: ",
                "n".repeat(128)
            )
        );
    }
}
