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
ones wrote. Leave out what legitimately differs between the servers (INFO,
CLIENT ID/INFO, SELECT of a database other than 0, the order SCAN and KEYS
return keys in: sort them; times to live to the millisecond: compare them
with bounds).
"""

import json
import sys
import time

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


def transaction(r):
    """redis-py's default pipeline: MULTI/EXEC, one reply per command."""
    p = r.pipeline()
    p.set("tx", "1")
    p.incr("tx")
    p.append("tx", "0")
    p.get("tx")
    p.mget("tx", "missing")
    p.delete("tx")
    p.exists("tx")
    return p.execute()


def transaction_with_a_runtime_error(r):
    """A command that fails as it runs fails alone; the others still apply."""
    p = r.pipeline()
    p.set("txe", "text")
    p.incr("txe")
    p.set("txe2", "after")
    return p.execute(raise_on_error=False)


def transaction_with_a_queueing_error(r):
    """A command refused while queued discards the whole transaction."""
    p = r.pipeline()
    p.set("txq", "never")
    p.execute_command("INCRBY", "txq")
    try:
        return p.execute()
    except redis.exceptions.RedisError as e:
        return [failure(e), r.exists("txq")]


def another_client(r):
    """A second connection to the same server."""
    kwargs = r.connection_pool.connection_kwargs
    return redis.Redis(host=kwargs["host"], port=kwargs["port"])


def watched_exec(r, keys, meanwhile, key, value):
    """WATCH `keys`, run `meanwhile()`, then MULTI, SET key value, EXEC:
    "ran", or "aborted" when EXEC answered nil (WatchError)."""
    with r.pipeline() as p:
        p.watch(*keys)
        meanwhile()
        p.multi()
        p.set(key, value)
        try:
            p.execute()
            return "ran"
        except redis.exceptions.WatchError:
            return "aborted"


def watched_transaction(r):
    """WATCH, then another client's write: EXEC answers nil (WatchError)."""
    other = another_client(r)
    current = r.get("w")
    outcome = watched_exec(r, ["w"], lambda: other.set("w", "theirs"), "w", "mine")
    other.close()
    return [current, outcome, r.get("w")]


def watched_key_expires(r):
    """A watched key that expires before EXEC aborts it; one watched while
    absent does not notice a FLUSHDB by another client."""
    other = another_client(r)
    r.set("wexp", "v", px=150)
    outcomes = [
        watched_exec(r, ["wexp", "wabsent"], lambda: time.sleep(0.3), "wdone", "1"),
        watched_exec(r, ["wabsent"], other.flushdb, "wdone", "2"),
    ]
    other.close()
    return outcomes + [r.get("wdone")]


def transaction_function(r):
    """redis-py's optimistic-locking helper, retried on WatchError."""
    r.set("balance", 10)

    def spend(pipe):
        balance = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", balance - 3)

    r.transaction(spend, "balance")
    return r.get("balance")


def scan_all(r):
    r.mset({f"scan:{i:03}": i for i in range(250)})
    keys = sorted(r.scan_iter(match="scan:*", count=40))
    return [len(keys), keys[0], keys[-1], sorted(r.keys("scan:1?0"))]


def ttl_within(r, key, low, high):
    ttl = r.ttl(key)
    return ttl if ttl < 0 else low <= ttl <= high


def pttl_within(r, key, low, high):
    pttl = r.pttl(key)
    return pttl if pttl < 0 else low <= pttl <= high


def expires_soon(r):
    """A key given 200 ms is there, then gone: GET, EXISTS, TTL agree."""
    r.set("brief", "v", px=200)
    before = [r.get("brief"), r.exists("brief")]
    time.sleep(0.4)
    return before + [r.get("brief"), r.exists("brief"), r.ttl("brief"), r.type("brief")]


def expiry_in_a_transaction(r):
    p = r.pipeline()
    p.set("txttl", "v", ex=100)
    p.ttl("txttl")
    p.persist("txttl")
    p.ttl("txttl")
    p.expire("txttl", 50)
    return p.execute()


SOON = int(time.time()) + 1000

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
    # Transactions.
    ("transaction (MULTI/EXEC)", transaction),
    ("transaction with a runtime error", transaction_with_a_runtime_error),
    ("transaction with a queueing error", transaction_with_a_queueing_error),
    ("WATCH, another client writes, EXEC", watched_transaction),
    ("r.transaction helper", transaction_function),
    ("EXEC without MULTI", lambda r: r.execute_command("EXEC")),
    # SCAN and KEYS (order aside).
    ("scan_iter MATCH COUNT and KEYS", scan_all),
    # Expiry.
    ("SET e v EX 100", lambda r: r.set("e", "v", ex=100)),
    ("TTL e", lambda r: ttl_within(r, "e", 99, 100)),
    ("PTTL e", lambda r: pttl_within(r, "e", 98_000, 100_000)),
    ("TTL missing", lambda r: r.ttl("missing")),
    ("TTL greeting (no deadline)", lambda r: r.ttl("greeting")),
    ("PTTL greeting", lambda r: r.pttl("greeting")),
    ("INCR keeps the deadline", lambda r: [r.set("ec", 1, ex=100), r.incr("ec"), ttl_within(r, "ec", 99, 100)]),
    ("APPEND keeps the deadline", lambda r: [r.append("ec", "0"), ttl_within(r, "ec", 99, 100)]),
    ("SET drops the deadline", lambda r: [r.set("ec", "plain"), r.ttl("ec")]),
    ("SET KEEPTTL keeps it", lambda r: [r.expire("ec", 100), r.set("ec", "k", keepttl=True), ttl_within(r, "ec", 99, 100)]),
    ("GETSET drops it", lambda r: [r.getset("ec", "g"), r.ttl("ec")]),
    ("RENAME carries it", lambda r: [r.expire("ec", 100), r.rename("ec", "ec2"), ttl_within(r, "ec2", 99, 100), r.exists("ec")]),
    ("EXPIRE e 200", lambda r: [r.expire("e", 200), ttl_within(r, "e", 199, 200)]),
    ("EXPIRE missing 10", lambda r: r.expire("missing", 10)),
    ("EXPIRE e 300 NX (has one)", lambda r: r.expire("e", 300, nx=True)),
    ("EXPIRE e 300 XX", lambda r: [r.expire("e", 300, xx=True), ttl_within(r, "e", 299, 300)]),
    ("EXPIRE e 100 GT (smaller)", lambda r: r.expire("e", 100, gt=True)),
    ("EXPIRE e 100 LT", lambda r: [r.expire("e", 100, lt=True), ttl_within(r, "e", 99, 100)]),
    ("EXPIRE greeting 10 GT (no deadline)", lambda r: r.expire("greeting", 10, gt=True)),
    ("EXPIRE greeting 10 XX (no deadline)", lambda r: r.expire("greeting", 10, xx=True)),
    ("EXPIRE e 1 NX XX", lambda r: r.execute_command("EXPIRE", "e", "1", "NX", "XX")),
    ("EXPIRE e 1 GT LT", lambda r: r.execute_command("EXPIRE", "e", "1", "GT", "LT")),
    ("EXPIRE e 1 BOGUS", lambda r: r.execute_command("EXPIRE", "e", "1", "BOGUS")),
    ("EXPIRE e abc", lambda r: r.execute_command("EXPIRE", "e", "abc")),
    ("EXPIRE e huge", lambda r: r.execute_command("EXPIRE", "e", "9223372036854775807")),
    ("PEXPIRE e 100000", lambda r: [r.pexpire("e", 100_000), pttl_within(r, "e", 98_000, 100_000)]),
    ("EXPIREAT e SOON", lambda r: [r.expireat("e", SOON), r.expiretime("e") == SOON]),
    ("PEXPIREAT e SOON ms", lambda r: [r.pexpireat("e", SOON * 1000 + 5), r.pexpiretime("e") == SOON * 1000 + 5]),
    ("EXPIRETIME missing, greeting", lambda r: [r.expiretime("missing"), r.expiretime("greeting")]),
    ("PERSIST e", lambda r: [r.persist("e"), r.ttl("e")]),
    ("PERSIST e again", lambda r: r.persist("e")),
    ("PERSIST missing", lambda r: r.persist("missing")),
    ("EXPIRE e 0 deletes", lambda r: [r.expire("e", 0), r.exists("e")]),
    ("EXPIRE -1 deletes", lambda r: [r.set("neg", "v"), r.expire("neg", -1), r.get("neg")]),
    ("EXPIREAT in the past deletes", lambda r: [r.set("past", "v"), r.expireat("past", 1), r.exists("past")]),
    ("SET EXAT in the past", lambda r: [r.set("pastset", "v", exat=1), r.exists("pastset")]),
    ("SET PXAT ahead", lambda r: [r.set("pxat", "v", pxat=SOON * 1000), r.pexpiretime("pxat") == SOON * 1000]),
    ("SET EX 0", lambda r: r.set("bad", "v", ex=0)),
    ("SET EX -5", lambda r: r.execute_command("SET", "bad", "v", "EX", "-5")),
    ("SET EX abc", lambda r: r.execute_command("SET", "bad", "v", "EX", "abc")),
    ("SET EX 10 PX 10", lambda r: r.execute_command("SET", "bad", "v", "EX", "10", "PX", "10")),
    ("SET EX 10 KEEPTTL", lambda r: r.execute_command("SET", "bad", "v", "EX", "10", "KEEPTTL")),
    ("SET EX (no number)", lambda r: r.execute_command("SET", "bad", "v", "EX")),
    ("SET NX EX on a live key", lambda r: r.set("pxat", "w", nx=True, ex=10)),
    ("SET GET EX", lambda r: [r.set("pxat", "w", get=True, ex=100), ttl_within(r, "pxat", 99, 100)]),
    ("GETEX plain", lambda r: [r.getex("pxat"), ttl_within(r, "pxat", 99, 100)]),
    ("GETEX EX 500", lambda r: [r.getex("pxat", ex=500), ttl_within(r, "pxat", 499, 500)]),
    ("GETEX PERSIST", lambda r: [r.getex("pxat", persist=True), r.ttl("pxat")]),
    ("GETEX missing EX 5", lambda r: r.getex("missing", ex=5)),
    ("GETEX EX 5 PERSIST", lambda r: r.execute_command("GETEX", "pxat", "EX", "5", "PERSIST")),
    ("GETEX EX 0", lambda r: r.execute_command("GETEX", "pxat", "EX", "0")),
    ("a key expires", expires_soon),
    ("WATCH and expiry, WATCH and FLUSHDB", watched_key_expires),
    ("expiry in a transaction", expiry_in_a_transaction),
    ("DBSIZE before FLUSHDB", lambda r: r.dbsize()),
    ("FLUSHDB", lambda r: r.flushdb()),
    ("DBSIZE after FLUSHDB", lambda r: r.dbsize()),
    ("GET greeting after FLUSHDB", lambda r: r.get("greeting")),
    ("FLUSHDB BOGUS", lambda r: r.execute_command("FLUSHDB", "BOGUS")),
    ("FLUSHALL ASYNC in a transaction", lambda r: r.pipeline().set("f1", "1").flushall(asynchronous=True).set("f2", "2").execute()),
    ("KEYS after FLUSHALL in a transaction", lambda r: sorted(r.keys("*"))),
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
