//! The arguments `COMMAND DOCS` describes for each command, in Redis's
//! terms (`key`, `string`, `integer`, `pure-token`, `oneof`, `block`,
//! `optional`, `multiple`): what `redis-cli` turns into the hints it shows
//! while a command is typed, and what client libraries that probe read.

use crate::server::frame::Frame;

/// One argument of a command, as `COMMAND DOCS` lists it.
pub struct Arg {
    name: &'static str,
    kind: &'static str,
    token: Option<&'static str>,
    optional: bool,
    multiple: bool,
    /// The alternatives of a `oneof`, the parts of a `block`.
    parts: Vec<Arg>,
}

fn plain(name: &'static str, kind: &'static str) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
        parts: Vec::new(),
    }
}

fn key(name: &'static str) -> Arg {
    plain(name, "key")
}

fn string(name: &'static str) -> Arg {
    plain(name, "string")
}

fn integer(name: &'static str) -> Arg {
    plain(name, "integer")
}

/// A word on its own (`NX`): its name is the word in lower case.
fn token(word: &'static str) -> Arg {
    let name = match word {
        "NX" => "nx",
        "XX" => "xx",
        "GT" => "gt",
        "LT" => "lt",
        "GET" => "get",
        "KEEPTTL" => "keepttl",
        "PERSIST" => "persist",
        "ASYNC" => "async",
        "SYNC" => "sync",
        "FULL" => "full",
        "INCREMENTAL" => "incremental",
        other => other,
    };
    Arg {
        token: Some(word),
        ..plain(name, "pure-token")
    }
}

/// An argument introduced by a word (`EX seconds`).
fn tagged(word: &'static str, arg: Arg) -> Arg {
    Arg {
        token: Some(word),
        ..arg
    }
}

fn oneof(name: &'static str, parts: Vec<Arg>) -> Arg {
    Arg {
        parts,
        ..plain(name, "oneof")
    }
}

fn block(name: &'static str, parts: Vec<Arg>) -> Arg {
    Arg {
        parts,
        ..plain(name, "block")
    }
}

impl Arg {
    fn optional(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }

    fn multiple(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }

    fn frame(&self) -> Frame {
        let mut fields = vec![
            (Frame::text("name"), Frame::text(self.name)),
            (Frame::text("type"), Frame::text(self.kind)),
        ];
        if let Some(token) = self.token {
            fields.push((Frame::text("token"), Frame::text(token)));
        }
        let flags: Vec<Frame> = [(self.optional, "optional"), (self.multiple, "multiple")]
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, flag)| Frame::Simple(flag))
            .collect();
        if !flags.is_empty() {
            fields.push((Frame::text("flags"), Frame::Array(flags)));
        }
        if !self.parts.is_empty() {
            fields.push((
                Frame::text("arguments"),
                Frame::Array(self.parts.iter().map(Arg::frame).collect()),
            ));
        }
        Frame::Map(fields)
    }
}

/// `[NX|XX|GT|LT]` of the `EXPIRE` family.
fn expire_condition() -> Arg {
    oneof(
        "condition",
        vec![token("NX"), token("XX"), token("GT"), token("LT")],
    )
    .optional()
}

/// `EX seconds | PX milliseconds | EXAT … | PXAT …` and a last choice.
fn expiration(last: Arg) -> Arg {
    oneof(
        "expiration",
        vec![
            tagged("EX", integer("seconds")),
            tagged("PX", integer("milliseconds")),
            tagged("EXAT", plain("unix-time-seconds", "unix-time")),
            tagged("PXAT", plain("unix-time-milliseconds", "unix-time")),
            last,
        ],
    )
    .optional()
}

fn flush_type() -> Arg {
    oneof("flush-type", vec![token("ASYNC"), token("SYNC")]).optional()
}

fn snapshot_kind() -> Arg {
    oneof("kind", vec![token("FULL"), token("INCREMENTAL")]).optional()
}

/// The arguments of `command`, as `COMMAND DOCS` frames. Commands with
/// subcommands (`CLIENT`, `COMMAND`, `CONFIG`) list none, as in Redis.
pub fn arguments(command: &str) -> Vec<Frame> {
    let args = match command {
        "auth" => vec![string("username").optional(), string("password")],
        "hello" => vec![block(
            "arguments",
            vec![
                integer("protover"),
                tagged(
                    "AUTH",
                    block("auth", vec![string("username"), string("password")]),
                )
                .optional(),
                tagged("SETNAME", string("clientname")).optional(),
            ],
        )
        .optional()],
        "ping" => vec![string("message").optional()],
        "echo" => vec![string("message")],
        "select" => vec![integer("index")],
        "info" => vec![string("section").optional().multiple()],
        "save" | "bgsave" => vec![snapshot_kind()],
        "get" | "strlen" | "type" | "incr" | "decr" | "getdel" | "ttl" | "pttl" | "expiretime"
        | "pexpiretime" | "persist" => vec![key("key")],
        "mget" | "exists" | "del" | "watch" => vec![key("key").multiple()],
        "scan" => vec![
            integer("cursor"),
            tagged("MATCH", plain("pattern", "pattern")).optional(),
            tagged("COUNT", integer("count")).optional(),
            tagged("TYPE", string("type")).optional(),
        ],
        "keys" => vec![plain("pattern", "pattern")],
        "rename" | "renamenx" => vec![key("key"), key("newkey")],
        "set" => vec![
            key("key"),
            string("value"),
            oneof("condition", vec![token("NX"), token("XX")]).optional(),
            token("GET").optional(),
            expiration(token("KEEPTTL")),
        ],
        "setnx" | "getset" | "append" => vec![key("key"), string("value")],
        "incrby" => vec![key("key"), integer("increment")],
        "decrby" => vec![key("key"), integer("decrement")],
        "incrbyfloat" => vec![key("key"), plain("increment", "double")],
        "mset" => vec![block("data", vec![key("key"), string("value")]).multiple()],
        "expire" => vec![key("key"), integer("seconds"), expire_condition()],
        "pexpire" => vec![key("key"), integer("milliseconds"), expire_condition()],
        "expireat" => vec![
            key("key"),
            plain("unix-time-seconds", "unix-time"),
            expire_condition(),
        ],
        "pexpireat" => vec![
            key("key"),
            plain("unix-time-milliseconds", "unix-time"),
            expire_condition(),
        ],
        "getex" => vec![key("key"), expiration(token("PERSIST"))],
        "setex" => vec![key("key"), integer("seconds"), string("value")],
        "psetex" => vec![key("key"), integer("milliseconds"), string("value")],
        "flushdb" | "flushall" => vec![flush_type()],
        _ => Vec::new(),
    };
    args.iter().map(Arg::frame).collect()
}
