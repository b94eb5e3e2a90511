//! `MULTI` … `EXEC`: queued commands run together and their writes are
//! logged as one atomic batch record, recovered whole or not at all.
//!
//! As in Redis, a queued command that does not exist or has the wrong
//! number of arguments is refused at once and makes `EXEC` abort with
//! `EXECABORT`; one that fails when it runs (`INCR` of a word) answers its
//! error inside `EXEC`'s reply while the others run. Each command sees the
//! writes of the ones before it. `EXEC` answers nil, and runs nothing, if a
//! key the connection `WATCH`ed was written since. The reply goes out once
//! the batch is acknowledged, like any write's.

use std::cell::Cell;
use std::collections::HashMap;

use bytes::Bytes;

use super::expire::{self, Unit};
use super::modify::{self, set_op, Plan};
use super::{error, ok, table, write_error, Reply};
use crate::server::db::{Db, View};
use crate::server::expiry::now_ms;
use crate::server::frame::Frame;
use crate::server::in_flight::{Stored, Written};
use crate::server::watch::Watching;
use concordkv::Op;

/// The commands a transaction can queue: those that read or write keys.
const QUEUEABLE: &[&str] = &[
    "get",
    "mget",
    "strlen",
    "exists",
    "type",
    "set",
    "setnx",
    "getset",
    "getdel",
    "append",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "mset",
    "del",
    "rename",
    "renamenx",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "persist",
    "getex",
    "setex",
    "psetex",
    "flushdb",
    "flushall",
    "ping",
    "echo",
];

/// Commands queued since `MULTI`.
pub struct Transaction {
    queued: Vec<Vec<Bytes>>,
    /// Bytes of arguments queued, at most `max_bytes`.
    bytes: usize,
    max_bytes: usize,
    /// A command was refused while queueing: `EXEC` aborts.
    refused: bool,
}

impl Transaction {
    /// A transaction queueing at most `max_bytes` of arguments: its writes
    /// become one record, which `limits.max_record_bytes` bounds anyway.
    pub fn new(max_bytes: usize) -> Transaction {
        Transaction {
            queued: Vec::new(),
            bytes: 0,
            max_bytes,
            refused: false,
        }
    }

    /// Makes `EXEC` fail with `EXECABORT`: a command was refused.
    pub fn doom(&mut self) {
        self.refused = true;
    }

    /// Queues `args`, or refuses it (and dooms the transaction).
    pub fn queue(&mut self, args: Vec<Bytes>) -> Frame {
        let Some(name) = args.first() else {
            return error("empty command");
        };
        let refusal = match table::lookup(name) {
            None => Some(super::unknown_command(name, &args[1..])),
            Some(spec) if !spec.arity_fits(args.len() - 1) => Some(error(format!(
                "wrong number of arguments for '{}' command",
                spec.name
            ))),
            Some(spec) if !QUEUEABLE.contains(&spec.name) => Some(error(format!(
                "'{}' cannot run inside MULTI in this server",
                spec.name
            ))),
            Some(_) => {
                let size: usize = args.iter().map(Bytes::len).sum();
                (self.bytes + size > self.max_bytes).then(|| {
                    error(format!(
                        "transaction larger than limits.max_record_bytes ({} bytes): its writes \
                         must fit in one record",
                        self.max_bytes
                    ))
                })
            }
        };
        if let Some(refusal) = refusal {
            self.refused = true;
            return refusal;
        }
        self.bytes += args.iter().map(Bytes::len).sum::<usize>();
        self.queued.push(args);
        Frame::Simple("QUEUED")
    }
}

/// The newest values as a transaction sees them: its own earlier writes
/// over the store's newest values.
struct TxView<'a> {
    db: &'a Db,
    writes: HashMap<Vec<u8>, Option<Stored>>,
    /// Whether it cleared every key: those it did not write since are gone.
    cleared: bool,
    /// Whether it read a value of another client's write still in flight.
    read_in_flight: Cell<bool>,
    /// Read acknowledged values only (a transaction that logs nothing
    /// answers at once, so it must not show a write a crash could undo).
    acknowledged_only: bool,
}

impl TxView<'_> {
    fn record(&mut self, ops: &[Op]) {
        for op in ops {
            match Written::of(op) {
                Written::Key(key, value) => {
                    self.writes.insert(key.to_vec(), value);
                }
                Written::Clear => {
                    self.writes.clear();
                    self.cleared = true;
                }
            }
        }
    }
}

impl View for TxView<'_> {
    fn entry(&self, key: &[u8]) -> Option<Stored> {
        let live = |stored: Option<Stored>| stored.filter(|s| s.is_live(now_ms()));
        if let Some(written) = self.writes.get(key) {
            return live(written.clone());
        }
        if self.cleared {
            return None;
        }
        if self.acknowledged_only {
            return self.db.acknowledged(key);
        }
        match self.db.in_flight(key) {
            Some(latest) => {
                self.read_in_flight.set(true);
                live(latest)
            }
            None => self.db.acknowledged(key),
        }
    }
}

/// One queued command's plan over `view`.
fn plan(args: &[Bytes], view: &dyn View) -> Plan {
    let (name, rest) = match args.split_first() {
        Some((name, rest)) => (name.to_ascii_lowercase(), rest),
        None => return (Vec::new(), error("empty command")),
    };
    let reply = |frame| (Vec::new(), frame);
    let value = |key: &Bytes| view.latest(key);
    match name.as_slice() {
        b"get" => reply(value(&rest[0]).map_or(Frame::Null, Frame::Bulk)),
        b"mget" => reply(Frame::Array(
            rest.iter()
                .map(|k| value(k).map_or(Frame::Null, Frame::Bulk))
                .collect(),
        )),
        b"strlen" => reply(Frame::Integer(
            value(&rest[0]).map_or(0, |v| v.len() as i64),
        )),
        b"exists" => reply(Frame::Integer(
            rest.iter().filter(|k| value(k).is_some()).count() as i64,
        )),
        b"type" => reply(Frame::Simple(if value(&rest[0]).is_some() {
            "string"
        } else {
            "none"
        })),
        b"set" if rest.len() == 2 => (vec![set_op(&rest[0], rest[1].to_vec())], ok()),
        b"set" => modify::set(view, &rest[0], &rest[1], &rest[2..]),
        b"setnx" => modify::setnx(view, &rest[0], &rest[1]),
        b"getset" => modify::getset(view, &rest[0], &rest[1]),
        b"getdel" => modify::getdel(view, &rest[0]),
        b"append" => modify::append(view, &rest[0], &rest[1]),
        b"incr" => modify::incr_by(view, &rest[0], None, false),
        b"decr" => modify::incr_by(view, &rest[0], None, true),
        b"incrby" => modify::incr_by(view, &rest[0], Some(&rest[1]), false),
        b"decrby" => modify::incr_by(view, &rest[0], Some(&rest[1]), true),
        b"incrbyfloat" => modify::incr_by_float(view, &rest[0], &rest[1]),
        b"mset" => (
            rest.chunks_exact(2)
                .map(|kv| set_op(&kv[0], kv[1].to_vec()))
                .collect(),
            ok(),
        ),
        b"del" => {
            let mut ops: Vec<Op> = Vec::new();
            for key in rest {
                let gone = ops.iter().any(|op| op.key() == Some(key.as_ref()));
                if !gone && value(key).is_some() {
                    ops.push(Op::Delete { key: key.to_vec() });
                }
            }
            let removed = ops.len() as i64;
            (ops, Frame::Integer(removed))
        }
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => {
            let command = table::lookup(&name).map_or("expire", |spec| spec.name);
            let (unit, base) = super::expire_kind(command);
            expire::expire(view, &rest[0], &rest[1], &rest[2..], unit, base, command)
        }
        b"ttl" => reply(expire::ttl(view.entry(&rest[0]), Unit::Seconds, false)),
        b"pttl" => reply(expire::ttl(view.entry(&rest[0]), Unit::Millis, false)),
        b"expiretime" => reply(expire::ttl(view.entry(&rest[0]), Unit::Seconds, true)),
        b"pexpiretime" => reply(expire::ttl(view.entry(&rest[0]), Unit::Millis, true)),
        b"persist" => expire::persist(view, &rest[0]),
        b"setex" => expire::setex(&rest[0], &rest[1], &rest[2], Unit::Seconds),
        b"psetex" => expire::setex(&rest[0], &rest[1], &rest[2], Unit::Millis),
        b"getex" => expire::getex(view, &rest[0], &rest[1..]),
        b"flushdb" | b"flushall" => {
            super::flush(rest).unwrap_or_else(|refusal| (Vec::new(), refusal))
        }
        b"rename" => modify::rename(view, &rest[0], &rest[1], false),
        b"renamenx" => modify::rename(view, &rest[0], &rest[1], true),
        b"ping" => reply(match rest.first() {
            Some(message) => Frame::Bulk(message.clone()),
            None => Frame::Simple("PONG"),
        }),
        b"echo" => reply(Frame::Bulk(rest[0].clone())),
        _ => reply(error("command not allowed inside a transaction")),
    }
}

/// Runs every command of `queued` over `db` and the transaction's own
/// writes; returns their writes, in order, and the array of their replies.
fn run(db: &Db, queued: &[Vec<Bytes>], acknowledged_only: bool) -> (Vec<Op>, Frame, bool) {
    let mut view = TxView {
        db,
        writes: HashMap::new(),
        cleared: false,
        read_in_flight: Cell::new(false),
        acknowledged_only,
    };
    let mut ops = Vec::new();
    let mut replies = Vec::with_capacity(queued.len());
    for args in queued {
        let (written, reply) = plan(args, &view);
        view.record(&written);
        ops.extend(written);
        replies.push(reply);
    }
    (ops, Frame::Array(replies), view.read_in_flight.get())
}

/// `EXEC`: the replies of the queued commands, once their writes (one
/// batch record) are acknowledged; nil if a watched key changed.
pub async fn exec(db: &Db, transaction: Transaction, watching: Option<Watching>) -> Reply {
    if transaction.refused {
        return Reply::Now(Frame::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    let queued = transaction.queued;
    let outcome = db
        .change(|db| {
            if watching.as_ref().is_some_and(|w| w.changed(now_ms())) {
                return (Vec::new(), Frame::Null);
            }
            let (ops, replies, read_in_flight) = run(db, &queued, false);
            if ops.is_empty() && read_in_flight {
                // Nothing to log, so nothing to wait for: read only what
                // is acknowledged.
                let (_, replies, _) = run(db, &queued, true);
                return (Vec::new(), replies);
            }
            (ops, replies)
        })
        .await;
    drop(watching);
    match outcome {
        Ok((replies, None)) => Reply::Now(replies),
        Ok((replies, Some(pending))) => Reply::Later {
            pending,
            ok: replies,
        },
        Err(e) => Reply::Now(write_error(&e)),
    }
}
