"""Everyday redis-py calls against one server, printed as JSON.

Run by crates/concordkv-server/tests/redis_py.rs against `concordkv serve`
and against a real redis-server, each starting empty, which then compares
the two outputs step by step.

Usage: everyday.py PORT

Prints one JSON list of [description, result] pairs, in order. A result is
the value redis-py returned, made JSON-serialisable by `plain` (bytes shown
with repr so a bulk string never reads like a client-side str), or
{"error": message, "class": exception class} when the call raised.

To add a call, append a step to STEPS: (description, function of the
client). Steps run in order on one client, so each sees what the earlier
ones wrote. Leave out what legitimately differs between the servers
(MULTI/EXEC, SCAN/KEYS, TTLs, FLUSH*, INFO, CLIENT ID/INFO, SELECT of a
database other than 0).
"""

import json
import sys

import redis


def plain(value):
    """The JSON form of what redis-py returned, keeping its shape."""
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((plain(v) for v in value), key=repr)}
    if isinstance(value, dict):
        pairs = ([plain(k), plain(v)] for k, v in value.items())
        return {"map": sorted(pairs, key=repr)}
    if isinstance(value, BaseException):
        return failure(value)
    return {"other": type(value).__name__, "repr": repr(value)}


def failure(exc):
    return {"error": str(exc), "class": type(exc).__name__}


def pipeline(r):
    """A pipeline, not a transaction: replies in order, an error among them."""
    p = r.pipeline(transaction=False)
    p.set("p", "v")
    p.get("p")
    p.incr("p")
    p.append("p", "w")
    p.strlen("p")
    p.mget("p", "missing", "greeting")
    p.incrby("pn", 5)
    p.exists("p", "pn", "missing")
    p.execute_command("NOSUCH", "x")
    p.delete("p", "pn")
    p.get("p")
    return p.execute(raise_on_error=False)


BIG = "x" * 100_000

STEPS = [
    # Connection.
    ("PING", lambda r: r.ping()),
    ("ECHO hello", lambda r: r.echo("hello")),
    ("ECHO binary", lambda r: r.echo(b"\x00\xff\r\n")),
    ("SELECT 0", lambda r: r.select(0)),
    ("CLIENT GETNAME (unset)", lambda r: r.client_getname()),
    ("CLIENT SETNAME suite", lambda r: r.client_setname("suite")),
    ("CLIENT GETNAME", lambda r: r.client_getname()),
    # Plain reads and writes.
    ("GET missing", lambda r: r.get("missing")),
    ("SET greeting hello", lambda r: r.set("greeting", "hello")),
    ("GET greeting", lambda r: r.get("greeting")),
    ("STRLEN greeting", lambda r: r.strlen("greeting")),
    ("STRLEN missing", lambda r: r.strlen("missing")),
    ("APPEND greeting ' world'", lambda r: r.append("greeting", " world")),
    ("GET greeting after APPEND", lambda r: r.get("greeting")),
    ("APPEND fresh xy", lambda r: r.append("fresh", "xy")),
    ("SET empty ''", lambda r: r.set("empty", "")),
    ("GET empty", lambda r: r.get("empty")),
    ("STRLEN empty", lambda r: r.strlen("empty")),
    ("SET binary", lambda r: r.set("binary", b"\x00\x01\xfe\xff")),
    ("GET binary", lambda r: r.get("binary")),
    ("SET big (100000 bytes)", lambda r: r.set("big", BIG)),
    ("GET big is what was set", lambda r: r.get("big") == BIG.encode()),
    ("STRLEN big", lambda r: r.strlen("big")),
    ("get (lower case) greeting", lambda r: r.execute_command("get", "greeting")),
    ("EXISTS greeting fresh missing", lambda r: r.exists("greeting", "fresh", "missing")),
    ("EXISTS greeting greeting", lambda r: r.exists("greeting", "greeting")),
    ("TYPE greeting", lambda r: r.type("greeting")),
    ("TYPE missing", lambda r: r.type("missing")),
    ("MSET a 1 b 22 c 333", lambda r: r.mset({"a": "1", "b": "22", "c": "333"})),
    ("MGET a missing b c", lambda r: r.mget("a", "missing", "b", "c")),
    ("DBSIZE", lambda r: r.dbsize()),
    ("DEL a missing b", lambda r: r.delete("a", "missing", "b")),
    ("DEL a again", lambda r: r.delete("a")),
    ("EXISTS a b c", lambda r: r.exists("a", "b", "c")),
    ("DBSIZE after DEL", lambda r: r.dbsize()),
    # SET's options.
    ("SET cond v XX (missing)", lambda r: r.set("cond", "v", xx=True)),
    ("SET cond v NX (missing)", lambda r: r.set("cond", "v", nx=True)),
    ("SET cond w NX (present)", lambda r: r.set("cond", "w", nx=True)),
    ("GET cond after NX", lambda r: r.get("cond")),
    ("SET cond w XX (present)", lambda r: r.set("cond", "w", xx=True)),
    ("SET cond x GET", lambda r: r.set("cond", "x", get=True)),
    ("SET newkey v GET (missing)", lambda r: r.set("newkey", "v", get=True)),
    ("SET cond y KEEPTTL", lambda r: r.set("cond", "y", keepttl=True)),
    ("SET cond z XX GET", lambda r: r.set("cond", "z", xx=True, get=True)),
    ("SET absent z XX GET", lambda r: r.set("absent", "z", xx=True, get=True)),
    ("GET absent", lambda r: r.get("absent")),
    ("SET cond q NX GET (present)", lambda r: r.set("cond", "q", nx=True, get=True)),
    ("GET cond after NX GET", lambda r: r.get("cond")),
    ("SET k v NX XX", lambda r: r.execute_command("SET", "k", "v", "NX", "XX")),
    ("SET k v BOGUS", lambda r: r.execute_command("SET", "k", "v", "BOGUS")),
    ("SETNX cond other (present)", lambda r: r.setnx("cond", "other")),
    ("SETNX fresh2 v (missing)", lambda r: r.setnx("fresh2", "v")),
    ("GETSET cond new", lambda r: r.getset("cond", "new")),
    ("GETSET missing2 v", lambda r: r.getset("missing2", "v")),
    ("GETDEL cond", lambda r: r.getdel("cond")),
    ("GETDEL cond again", lambda r: r.getdel("cond")),
    ("EXISTS cond", lambda r: r.exists("cond")),
    # Counters.
    ("INCR n (missing)", lambda r: r.incr("n")),
    ("INCRBY n 41", lambda r: r.incrby("n", 41)),
    ("DECR n", lambda r: r.decr("n")),
    ("DECRBY n 40", lambda r: r.decrby("n", 40)),
    ("INCRBY n -5", lambda r: r.incrby("n", -5)),
    ("GET n", lambda r: r.get("n")),
    ("TYPE n", lambda r: r.type("n")),
    ("INCRBYFLOAT f 1.5", lambda r: r.incrbyfloat("f", 1.5)),
    ("INCRBYFLOAT f 2", lambda r: r.incrbyfloat("f", 2)),
    ("GET f", lambda r: r.get("f")),
    ("INCRBYFLOAT n 0.25", lambda r: r.incrbyfloat("n", 0.25)),
    ("GET n after INCRBYFLOAT", lambda r: r.get("n")),
    ("SET max 9223372036854775807", lambda r: r.set("max", 9223372036854775807)),
    ("APPEND counter 7", lambda r: r.append("counter", "7")),
    ("INCR counter (made by APPEND)", lambda r: r.incr("counter")),
    # Errors.
    ("INCR greeting (not an integer)", lambda r: r.incr("greeting")),
    ("INCR max (overflow)", lambda r: r.incr("max")),
    ("INCRBY n abc", lambda r: r.execute_command("INCRBY", "n", "abc")),
    ("INCRBY n ' 1' (spaces)", lambda r: r.execute_command("INCRBY", "n", " 1")),
    ("INCRBYFLOAT greeting 1", lambda r: r.incrbyfloat("greeting", 1)),
    ("INCRBYFLOAT f abc", lambda r: r.execute_command("INCRBYFLOAT", "f", "abc")),
    ("GET (no key)", lambda r: r.execute_command("GET")),
    ("STRLEN a b", lambda r: r.execute_command("STRLEN", "a", "b")),
    ("GETSET k", lambda r: r.execute_command("GETSET", "k")),
    ("MSET a", lambda r: r.execute_command("MSET", "a")),
    ("MSET a 1 b", lambda r: r.execute_command("MSET", "a", "1", "b")),
    ("DEL (no key)", lambda r: r.execute_command("DEL")),
    ("NOSUCH a b", lambda r: r.execute_command("NOSUCH", "a", "b")),
    ("nosuch (lower case, no args)", lambda r: r.execute_command("nosuch")),
    # A pipeline mixing the above, error included.
    ("pipeline (no transaction)", pipeline),
    ("DBSIZE at the end", lambda r: r.dbsize()),
    ("GET greeting at the end", lambda r: r.get("greeting")),
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: everyday.py PORT")
    r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
    out = []
    for description, call in STEPS:
        try:
            result = plain(call(r))
        except redis.exceptions.ConnectionError:
            # The server went away: no later step means anything.
            raise
        except redis.exceptions.RedisError as e:
            result = failure(e)
        out.append([description, result])
    # What was compared must have been RESP3, redis-py's default: the
    # server's HELLO reply says which protocol it agreed to.
    conn = r.connection_pool.get_connection()
    try:
        protocol = (conn.handshake_metadata or {}).get(b"proto")
    finally:
        r.connection_pool.release(conn)
    if protocol != 3:
        sys.exit(f"HELLO agreed to protocol {protocol!r}, not RESP3")
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
