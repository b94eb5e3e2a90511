//! Every command the server knows, with what `COMMAND` tells clients about
//! it: arity, flags and where its keys are, in Redis's terms. The arity
//! check of every request comes from here, so a command cannot be served
//! without being described.

use bytes::Bytes;

use crate::server::frame::Frame;

/// One command's description.
pub struct Spec {
    /// Lower case, as `COMMAND` lists it.
    pub name: &'static str,
    /// Arguments counting the name; negative: at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument) and step; 0s: no keys.
    pub keys: (i64, i64, i64),
    /// Redis's command group, for `COMMAND DOCS`.
    pub group: &'static str,
    pub summary: &'static str,
}

impl Spec {
    /// Whether `args` (the arguments after the name) fit the arity.
    pub fn arity_fits(&self, args: usize) -> bool {
        // MSET takes pairs: a key without its value is an arity error in
        // Redis, alone or queued in a transaction.
        if self.name == "mset" && !args.is_multiple_of(2) {
            return false;
        }
        let given = args as i64 + 1;
        if self.arity >= 0 {
            given == self.arity
        } else {
            given >= -self.arity
        }
    }

    fn info(&self) -> Frame {
        let flags = self
            .flags
            .iter()
            .map(|f| Frame::Simple(f))
            .collect::<Vec<_>>();
        Frame::Array(vec![
            Frame::text(self.name),
            Frame::Integer(self.arity),
            Frame::Set(flags),
            Frame::Integer(self.keys.0),
            Frame::Integer(self.keys.1),
            Frame::Integer(self.keys.2),
            // ACL categories, tips, key specs, subcommands: none described.
            Frame::Set(Vec::new()),
            Frame::Set(Vec::new()),
            Frame::Array(Vec::new()),
            Frame::Array(Vec::new()),
        ])
    }

    fn docs(&self) -> Frame {
        let mut fields = vec![
            (Frame::text("summary"), Frame::text(self.summary)),
            (Frame::text("since"), Frame::text("1.0.0")),
            (Frame::text("group"), Frame::text(self.group)),
        ];
        let arguments = super::docs::arguments(self.name);
        if !arguments.is_empty() {
            fields.push((Frame::text("arguments"), Frame::Array(arguments)));
        }
        Frame::Map(fields)
    }
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const CONN: &[&str] = &["fast", "no-auth", "loading", "stale"];
const ADMIN: &[&str] = &["admin", "noscript"];
/// Read-modify-write commands.
const RMW: &[&str] = &["write", "denyoom", "fast"];

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);

/// Every command, in the order `COMMAND` lists them.
#[rustfmt::skip]
pub const COMMANDS: &[Spec] = &[
    spec("auth", -2, CONN, NO_KEYS, "connection", "Authenticates the connection."),
    spec("hello", -1, CONN, NO_KEYS, "connection", "Handshakes with the server: protocol, authentication, name."),
    spec("ping", -1, &["fast"], NO_KEYS, "connection", "Returns the server's liveliness response."),
    spec("echo", 2, &["fast"], NO_KEYS, "connection", "Returns the given string."),
    spec("quit", -1, CONN, NO_KEYS, "connection", "Closes the connection."),
    spec("reset", 1, CONN, NO_KEYS, "connection", "Resets the connection."),
    spec("select", 2, &["fast", "loading", "stale"], NO_KEYS, "connection", "Changes the selected database (only 0 exists)."),
    spec("client", -2, &["loading", "stale"], NO_KEYS, "connection", "ID, SETNAME, GETNAME, INFO, SETINFO of the connection."),
    spec("command", -1, &["loading", "stale"], NO_KEYS, "server", "Returns detailed information about all commands."),
    spec("config", -2, ADMIN, NO_KEYS, "server", "CONFIG GET answers an empty map."),
    spec("info", -1, &["loading", "stale"], NO_KEYS, "server", "Returns information and statistics about the server."),
    spec("dbsize", 1, READ, NO_KEYS, "server", "Returns the number of keys."),
    spec("save", -1, ADMIN, NO_KEYS, "server", "Writes a snapshot [FULL|INCREMENTAL] and waits for it."),
    spec("bgsave", -1, ADMIN, NO_KEYS, "server", "Writes a snapshot [FULL|INCREMENTAL] in the background."),
    spec("bgrewriteaof", 1, ADMIN, NO_KEYS, "server", "Compacts the log in the background."),
    spec("get", 2, READ, ONE_KEY, "string", "Returns the string value of a key."),
    spec("mget", -2, READ, ALL_KEYS, "string", "Returns the string values of one or more keys."),
    spec("strlen", 2, READ, ONE_KEY, "string", "Returns the length of a string value."),
    spec("exists", -2, READ, ALL_KEYS, "generic", "Determines whether one or more keys exist."),
    spec("type", 2, READ, ONE_KEY, "generic", "Determines the type of value stored at a key."),
    spec("scan", -2, &["readonly"], NO_KEYS, "generic", "Iterates over the key names in key order [MATCH pattern] [COUNT count] [TYPE type]."),
    spec("keys", 2, &["readonly"], NO_KEYS, "generic", "Returns all key names that match a pattern."),
    spec("randomkey", 1, &["readonly"], NO_KEYS, "generic", "Returns a random key name."),
    spec("rename", 3, &["write"], (1, 2, 1), "generic", "Renames a key and overwrites the destination."),
    spec("renamenx", 3, &["write", "fast"], (1, 2, 1), "generic", "Renames a key only when the target key name doesn't exist."),
    spec("set", -3, WRITE, ONE_KEY, "string", "Sets the string value of a key [NX|XX] [GET] [EX|PX|EXAT|PXAT n|KEEPTTL]."),
    spec("setnx", 3, RMW, ONE_KEY, "string", "Sets the string value of a key only when the key doesn't exist."),
    spec("getset", 3, RMW, ONE_KEY, "string", "Returns the previous string value of a key after setting it to a new value."),
    spec("getdel", 2, &["write", "fast"], ONE_KEY, "string", "Returns the string value of a key after deleting the key."),
    spec("append", 3, RMW, ONE_KEY, "string", "Appends a string to the value of a key; creates the key if it doesn't exist."),
    spec("incr", 2, RMW, ONE_KEY, "string", "Increments the integer value of a key by one."),
    spec("decr", 2, RMW, ONE_KEY, "string", "Decrements the integer value of a key by one."),
    spec("incrby", 3, RMW, ONE_KEY, "string", "Increments the integer value of a key by a number."),
    spec("decrby", 3, RMW, ONE_KEY, "string", "Decrements a number from the integer value of a key."),
    spec("incrbyfloat", 3, RMW, ONE_KEY, "string", "Increments the floating point value of a key by a number."),
    spec("mset", -3, WRITE, (1, -1, 2), "string", "Atomically sets the string values of one or more keys."),
    spec("del", -2, &["write"], ALL_KEYS, "generic", "Deletes one or more keys."),
    spec("expire", -3, &["write", "fast"], ONE_KEY, "generic", "Sets the expiration time of a key in seconds [NX|XX|GT|LT]."),
    spec("pexpire", -3, &["write", "fast"], ONE_KEY, "generic", "Sets the expiration time of a key in milliseconds [NX|XX|GT|LT]."),
    spec("expireat", -3, &["write", "fast"], ONE_KEY, "generic", "Sets the expiration time of a key to a Unix timestamp [NX|XX|GT|LT]."),
    spec("pexpireat", -3, &["write", "fast"], ONE_KEY, "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp [NX|XX|GT|LT]."),
    spec("ttl", 2, READ, ONE_KEY, "generic", "Returns the expiration time in seconds of a key."),
    spec("pttl", 2, READ, ONE_KEY, "generic", "Returns the expiration time in milliseconds of a key."),
    spec("expiretime", 2, READ, ONE_KEY, "generic", "Returns the expiration time of a key as a Unix timestamp."),
    spec("pexpiretime", 2, READ, ONE_KEY, "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    spec("setex", 4, WRITE, ONE_KEY, "string", "Sets the string value and expiration time in seconds of a key."),
    spec("psetex", 4, WRITE, ONE_KEY, "string", "Sets the string value and expiration time in milliseconds of a key."),
    spec("persist", 2, &["write", "fast"], ONE_KEY, "generic", "Removes the expiration time of a key."),
    spec("getex", -2, &["write", "fast"], ONE_KEY, "string", "Returns the string value of a key after setting its expiration time [EX|PX|EXAT|PXAT n|PERSIST]."),
    spec("flushdb", -1, &["write"], NO_KEYS, "server", "Removes all keys [ASYNC|SYNC], as one logged record."),
    spec("flushall", -1, &["write"], NO_KEYS, "server", "Removes all keys [ASYNC|SYNC], as one logged record."),
    spec("multi", 1, &["noscript", "loading", "stale", "fast"], NO_KEYS, "transactions", "Starts a transaction."),
    spec("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], NO_KEYS, "transactions", "Executes all commands in a transaction, as one atomic record."),
    spec("discard", 1, &["noscript", "loading", "stale", "fast"], NO_KEYS, "transactions", "Discards a transaction."),
    spec("watch", -2, &["noscript", "loading", "stale", "fast"], ALL_KEYS, "transactions", "Monitors changes to keys to determine the execution of a transaction."),
    spec("unwatch", 1, &["noscript", "loading", "stale", "fast"], NO_KEYS, "transactions", "Forgets about watched keys of a transaction."),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// `COMMAND [COUNT | INFO name… | DOCS [name…] | LIST]`.
pub fn command(rest: &[Bytes]) -> Frame {
    let Some(sub) = rest.first() else {
        return Frame::Array(COMMANDS.iter().map(Spec::info).collect());
    };
    let named = |names: &[Bytes]| -> Vec<Option<&'static Spec>> {
        names.iter().map(|n| lookup(n)).collect()
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" if rest.len() == 1 => Frame::Integer(COMMANDS.len() as i64),
        b"LIST" if rest.len() == 1 => {
            Frame::Array(COMMANDS.iter().map(|c| Frame::text(c.name)).collect())
        }
        b"INFO" => Frame::Array(if rest.len() == 1 {
            COMMANDS.iter().map(Spec::info).collect()
        } else {
            named(&rest[1..])
                .into_iter()
                .map(|c| c.map_or(Frame::Null, Spec::info))
                .collect()
        }),
        b"DOCS" => {
            let specs: Vec<&Spec> = if rest.len() == 1 {
                COMMANDS.iter().collect()
            } else {
                named(&rest[1..]).into_iter().flatten().collect()
            };
            Frame::Map(
                specs
                    .into_iter()
                    .map(|c| (Frame::text(c.name), c.docs()))
                    .collect(),
            )
        }
        _ => Frame::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_follows_redis_s_convention() {
        let get = lookup(b"GeT").expect("get");
        assert!(get.arity_fits(1) && !get.arity_fits(0) && !get.arity_fits(2));
        let mset = lookup(b"MSET").expect("mset");
        assert!(mset.arity_fits(2) && mset.arity_fits(4) && !mset.arity_fits(3));
        let del = lookup(b"del").expect("del");
        assert!(del.arity_fits(1) && del.arity_fits(5) && !del.arity_fits(0));
        assert!(lookup(b"nosuch").is_none());
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }
}
