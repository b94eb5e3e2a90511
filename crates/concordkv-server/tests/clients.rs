//! `concordkv serve` driven by a client library no one here wrote: the
//! `redis` crate (redis-rs), in RESP2 and, after its `HELLO 3`, in RESP3.

mod common;

use common::server::{is_error, ok, Server};
use redis::{Commands, Value};
use redis_protocol::resp2::types::BytesFrame;

fn queued() -> BytesFrame {
    BytesFrame::SimpleString("QUEUED".into())
}

fn connect(server: &Server, protocol: &str) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{}/?protocol={protocol}", server.port);
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect (the client opens with HELLO for RESP3)")
}

/// A server on a fresh directory, and a connection to it in `protocol`.
fn served(protocol: &str) -> (tempfile::TempDir, Server, redis::Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let c = connect(&server, protocol);
    (dir, server, c)
}

fn everyday_calls(c: &mut redis::Connection) {
    let _: () = c.set("greeting", "hello").expect("SET");
    let got: Option<String> = c.get("greeting").expect("GET");
    assert_eq!(got.as_deref(), Some("hello"));
    let missing: Option<String> = c.get("missing").expect("GET missing");
    assert_eq!(missing, None);
    let _: () = c.mset(&[("a", "1"), ("b", "22")]).expect("MSET");
    let values: Vec<Option<String>> = c.mget(&["a", "missing", "b"]).expect("MGET");
    assert_eq!(values, [Some("1".into()), None, Some("22".into())]);
    let len: usize = c.strlen("b").expect("STRLEN");
    assert_eq!(len, 2);
    let kind: String = redis::cmd("TYPE").arg("a").query(c).expect("TYPE");
    assert_eq!(kind, "string");
    let kind: String = redis::cmd("TYPE").arg("missing").query(c).expect("TYPE");
    assert_eq!(kind, "none");
    let n: usize = c.exists(&["a", "b", "missing"]).expect("EXISTS");
    assert_eq!(n, 2);
    let removed: usize = c.del(&["a", "missing"]).expect("DEL");
    assert_eq!(removed, 1);
    let size: usize = redis::cmd("DBSIZE").query(c).expect("DBSIZE");
    assert_eq!(size, 2);
    // A pipeline (not a transaction): replies in order.
    let (x, y): (Option<String>, usize) = redis::pipe()
        .set("p", "v")
        .ignore()
        .get("p")
        .strlen("greeting")
        .query(c)
        .expect("pipeline");
    assert_eq!((x.as_deref(), y), (Some("v"), 5));
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(c).expect("CLIENT ID");
    assert!(id >= 0);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("suite")
        .query(c)
        .expect("CLIENT SETNAME");
    let name: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(c)
        .expect("GETNAME");
    assert_eq!(name, "suite");
    let err = redis::cmd("NOSUCH")
        .query::<Value>(c)
        .expect_err("unknown command");
    assert!(
        err.to_string().contains("unknown command 'NOSUCH'"),
        "{err}"
    );
}

#[test]
fn redis_rs_runs_everyday_calls_over_resp2_and_resp3() {
    for protocol in ["resp2", "resp3"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path(), &[]);
        let mut c = connect(&server, protocol);
        everyday_calls(&mut c);
    }
}

#[test]
fn resp3_connections_get_maps_and_resp2_connections_flat_arrays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let docs = |c: &mut redis::Connection| -> Value {
        redis::cmd("COMMAND")
            .arg("DOCS")
            .arg("get")
            .query(c)
            .expect("COMMAND DOCS")
    };
    let mut c3 = connect(&server, "resp3");
    match docs(&mut c3) {
        Value::Map(pairs) => {
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].0, Value::BulkString(b"get".to_vec()));
            assert!(matches!(&pairs[0].1, Value::Map(_)), "{:?}", pairs[0].1);
        }
        other => panic!("RESP3 COMMAND DOCS is a map: {other:?}"),
    }
    let nil: Value = c3.get("missing").expect("GET");
    assert_eq!(nil, Value::Nil);
    let mut c2 = connect(&server, "resp2");
    match docs(&mut c2) {
        Value::Array(items) => assert_eq!(items.len(), 2),
        other => panic!("RESP2 COMMAND DOCS is a flat array: {other:?}"),
    }
    let count: usize = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut c2)
        .expect("COUNT");
    assert!(count > 10);
}

#[test]
fn hello_with_auth_opens_a_password_protected_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[("CONCORDKV__SERVER__REQUIREPASS", "hunter2")]);
    let open = |password: &str| {
        let url = format!(
            "redis://default:{password}@127.0.0.1:{}/?protocol=resp3",
            server.port
        );
        redis::Client::open(url).expect("client").get_connection()
    };
    let err = open("wrong").err().expect("a wrong password is refused");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    let mut c = open("hunter2").expect("the right password opens");
    let _: () = c.set("k", "v").expect("SET");
    let v: String = c.get("k").expect("GET");
    assert_eq!(v, "v");
}

#[test]
fn read_modify_write_commands_answer_as_redis_does() {
    let (_dir, _server, mut c) = served("resp3");
    let c = &mut c;
    let n: i64 = c.incr("n", 1).expect("INCR");
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("INCRBY")
        .arg("n")
        .arg(41)
        .query(c)
        .expect("INCRBY");
    assert_eq!(n, 42);
    let n: i64 = redis::cmd("DECR").arg("n").query(c).expect("DECR");
    assert_eq!(n, 41);
    let n: i64 = c.decr("n", 40).expect("DECRBY");
    assert_eq!(n, 1);
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.5")
        .query(c)
        .expect("INCRBYFLOAT");
    assert_eq!(f, "1.5");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("2")
        .query(c)
        .expect("INCRBYFLOAT");
    assert_eq!(f, "3.5");
    let _: () = c.set("s", "abc").expect("SET");
    let err = c.incr::<_, _, i64>("s", 1).expect_err("INCR of text");
    assert!(
        err.to_string()
            .contains("value is not an integer or out of range"),
        "{err}"
    );
    let _: () = c.set("max", i64::MAX).expect("SET");
    let err = c.incr::<_, _, i64>("max", 1).expect_err("overflow");
    assert!(
        err.to_string()
            .contains("increment or decrement would overflow"),
        "{err}"
    );
    let len: i64 = c.append("s", "def").expect("APPEND");
    assert_eq!(len, 6);
    let len: i64 = c.append("fresh", "xy").expect("APPEND to a missing key");
    assert_eq!(len, 2);
    let set: bool = c.set_nx("s", "no").expect("SETNX");
    assert!(!set);
    let set: bool = c.set_nx("new", "yes").expect("SETNX");
    assert!(set);
    let old: Option<String> = c.getset("s", "ghi").expect("GETSET");
    assert_eq!(old.as_deref(), Some("abcdef"));
    let old: Option<String> = c.get_del("s").expect("GETDEL");
    assert_eq!(old.as_deref(), Some("ghi"));
    let gone: Option<String> = c.get_del("s").expect("GETDEL again");
    assert_eq!(gone, None);
    let nx = |c: &mut redis::Connection, opt: &str| -> Value {
        redis::cmd("SET")
            .arg("cond")
            .arg("v")
            .arg(opt)
            .query(c)
            .expect("SET NX/XX")
    };
    assert_eq!(nx(c, "XX"), Value::Nil);
    assert_eq!(nx(c, "NX"), Value::Okay);
    assert_eq!(nx(c, "NX"), Value::Nil);
    assert_eq!(nx(c, "XX"), Value::Okay);
    let old: Option<String> = redis::cmd("SET")
        .arg("cond")
        .arg("w")
        .arg("GET")
        .query(c)
        .expect("SET GET");
    assert_eq!(old.as_deref(), Some("v"));
    let err = redis::cmd("SET")
        .arg("cond")
        .arg("w")
        .arg("NX")
        .arg("XX")
        .query::<Value>(c)
        .expect_err("NX with XX");
    assert!(err.to_string().contains("syntax error"), "{err}");
    let v: String = c.get("cond").expect("GET");
    assert_eq!(v, "w");
}

/// Clients pipelining `INCR`s of one key at once: every reply is a
/// different number, and the key ends at their count, so no increment
/// computed from a value another one had already replaced.
#[test]
fn concurrent_increments_never_compute_the_same_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (clients, rounds, depth) = (8, 25, 20);
    let replies: Vec<i64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let server = &server;
                scope.spawn(move || {
                    let mut c = connect(server, "resp2");
                    let mut seen = Vec::new();
                    for _ in 0..rounds {
                        let mut pipe = redis::pipe();
                        for _ in 0..depth {
                            pipe.incr("counter", 1);
                        }
                        let got: Vec<i64> = pipe.query(&mut c).expect("pipelined INCRs");
                        seen.extend(got);
                    }
                    seen
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let total = (clients * rounds * depth) as i64;
    let mut sorted = replies.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        replies.len(),
        "two INCRs returned the same value"
    );
    assert_eq!(sorted.first().copied(), Some(1));
    assert_eq!(sorted.last().copied(), Some(total));
    let mut c = connect(&server, "resp2");
    let end: i64 = c.get("counter").expect("GET");
    assert_eq!(end, total);
}

#[test]
fn transactions_run_whole_with_redis_s_error_rules() {
    let (_dir, server, mut c) = served("resp3");
    let c = &mut c;
    // redis-rs's atomic pipeline: MULTI … EXEC, each reply in order, each
    // command seeing the ones before it.
    let (set, n, got): (String, i64, String) = redis::pipe()
        .atomic()
        .set("t", "1")
        .incr("t", 5)
        .get("t")
        .query(c)
        .expect("MULTI/EXEC");
    assert_eq!((set.as_str(), n, got.as_str()), ("OK", 6, "6"));
    // A runtime error answers inside EXEC; the rest runs (the raw client:
    // redis-rs turns an error inside the array into an error of the call).
    let mut raw = server.client();
    assert_eq!(raw.call(&["SET", "word", "abc"]), ok());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["INCR", "word"]), queued());
    assert_eq!(raw.call(&["SET", "after", "yes"]), queued());
    let BytesFrame::Array(items) = raw.call(&["EXEC"]) else {
        panic!("EXEC answers an array")
    };
    assert!(is_error(&items[0], "value is not an integer"), "{items:?}");
    assert_eq!(items[1], ok());
    let after: String = c.get("after").expect("GET");
    assert_eq!(after, "yes");
    // A queueing error aborts EXEC: nothing runs.
    let _: () = redis::cmd("MULTI").query(c).expect("MULTI");
    let _: Value = redis::cmd("SET")
        .arg("never")
        .arg("1")
        .query(c)
        .expect("QUEUED");
    let err = redis::cmd("NOSUCH").query::<Value>(c).expect_err("unknown");
    assert!(err.to_string().contains("unknown command"), "{err}");
    let err = redis::cmd("EXEC").query::<Value>(c).expect_err("EXECABORT");
    assert!(
        err.to_string()
            .contains("Transaction discarded because of previous errors"),
        "{err}"
    );
    let never: Option<String> = c.get("never").expect("GET");
    assert_eq!(never, None);
    // DISCARD drops the queue; EXEC and DISCARD need a MULTI.
    let _: () = redis::cmd("MULTI").query(c).expect("MULTI");
    let _: Value = redis::cmd("SET")
        .arg("never")
        .arg("1")
        .query(c)
        .expect("QUEUED");
    let _: () = redis::cmd("DISCARD").query(c).expect("DISCARD");
    let never: Option<String> = c.get("never").expect("GET");
    assert_eq!(never, None);
    for lone in ["EXEC", "DISCARD"] {
        let err = redis::cmd(lone)
            .query::<Value>(c)
            .expect_err("without MULTI");
        assert!(err.to_string().contains("without MULTI"), "{lone}: {err}");
    }
}

#[test]
fn a_watched_key_written_by_another_client_makes_exec_answer_nil() {
    let (_dir, server, mut c) = served("resp2");
    let mut other = connect(&server, "resp2");
    let _: () = c.set("balance", 10).expect("SET");
    let _: () = redis::cmd("WATCH")
        .arg("balance")
        .query(&mut c)
        .expect("WATCH");
    let _: () = other.set("balance", 99).expect("another client's SET");
    let outcome: Option<(i64,)> = redis::pipe()
        .atomic()
        .incr("balance", 1)
        .query(&mut c)
        .expect("EXEC");
    assert_eq!(
        outcome, None,
        "EXEC after a watched key changed runs nothing"
    );
    let balance: i64 = c.get("balance").expect("GET");
    assert_eq!(balance, 99);
    // Unchanged since WATCH: it runs. UNWATCH forgets.
    let _: () = redis::cmd("WATCH")
        .arg("balance")
        .query(&mut c)
        .expect("WATCH");
    let outcome: Option<(i64,)> = redis::pipe()
        .atomic()
        .incr("balance", 1)
        .query(&mut c)
        .expect("EXEC");
    assert_eq!(outcome, Some((100,)));
    let _: () = redis::cmd("WATCH")
        .arg("balance")
        .query(&mut c)
        .expect("WATCH");
    let _: () = redis::cmd("UNWATCH").query(&mut c).expect("UNWATCH");
    let _: () = other.set("balance", 5).expect("SET");
    let outcome: Option<(i64,)> = redis::pipe()
        .atomic()
        .incr("balance", 1)
        .query(&mut c)
        .expect("EXEC");
    assert_eq!(outcome, Some((6,)));
}

/// Clients run transactions (two SETs and an INCR of a shared counter)
/// until the server is killed with SIGKILL. After the restart every
/// acknowledged transaction is there whole, every other one is there whole
/// or not at all, and the counter counts exactly the ones there.
#[test]
fn transactions_survive_kill_9_whole_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let port = server.port;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let clients = 4;
    let outcomes: Vec<(u32, u64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|w| {
                let stop = &stop;
                scope.spawn(move || {
                    let url = format!("redis://127.0.0.1:{port}/");
                    let mut c = redis::Client::open(url)
                        .expect("client")
                        .get_connection()
                        .expect("connect");
                    // (worker, transactions issued, transactions acknowledged)
                    let (mut issued, mut acked) = (0u64, 0u64);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        issued += 1;
                        let value = format!("{w}:{issued}");
                        let done: redis::RedisResult<(String, String, i64)> = redis::pipe()
                            .atomic()
                            .set(format!("a:{w}:{issued}"), &value)
                            .set(format!("b:{w}:{issued}"), &value)
                            .incr("transactions", 1)
                            .query(&mut c);
                        match done {
                            Ok(_) => acked = issued,
                            Err(_) => break,
                        }
                    }
                    (w, issued, acked)
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(700));
        server.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let server = Server::start(dir.path(), &[]);
    let mut c = connect(&server, "resp2");
    let mut present = 0i64;
    for (w, issued, acked) in outcomes {
        assert!(acked > 0, "worker {w} got no transaction acknowledged");
        for i in 1..=issued {
            let a: Option<String> = c.get(format!("a:{w}:{i}")).expect("GET");
            let b: Option<String> = c.get(format!("b:{w}:{i}")).expect("GET");
            assert_eq!(a, b, "transaction {w}:{i} recovered in part");
            if i <= acked {
                assert_eq!(a, Some(format!("{w}:{i}")), "acknowledged {w}:{i} lost");
            }
            present += i64::from(a.is_some());
        }
    }
    let counted: i64 = c.get("transactions").expect("GET");
    assert_eq!(
        counted, present,
        "the counter and the transactions disagree"
    );
}

#[test]
fn scan_walks_every_key_present_throughout_while_others_come_and_go() {
    let (_dir, server, mut c) = served("resp3");
    let mut other = connect(&server, "resp2");
    let stable: Vec<String> = (0..300).map(|i| format!("k:{i:03}")).collect();
    let pairs: Vec<(String, &str)> = stable.iter().map(|k| (k.clone(), "v")).collect();
    let _: () = c.mset(&pairs).expect("MSET");
    let churn: Vec<(String, &str)> = (0..100).map(|i| (format!("k:{i:03}x"), "v")).collect();
    let _: () = c.mset(&churn).expect("MSET");
    let _: () = c.set("other", "v").expect("SET");
    // redis-rs's scan_match (SCAN … MATCH … until cursor 0).
    let mut all: Vec<String> = c
        .scan_match::<_, String>("k:*")
        .expect("SCAN")
        .collect::<Result<_, _>>()
        .expect("SCAN replies");
    all.sort();
    assert_eq!(all.len(), 400);
    // By hand, with keys removed and added between calls.
    let (mut cursor, mut seen, mut round) = (0u64, Vec::<String>::new(), 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("k:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .expect("SCAN");
        seen.extend(keys);
        let _: usize = other.del(format!("k:{round:03}x")).expect("DEL");
        let _: () = other.set(format!("k:{round:03}y"), "new").expect("SET");
        round += 1;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for key in &stable {
        assert!(
            seen.contains(key),
            "{key} was present throughout and not returned"
        );
    }
    let mut keys: Vec<String> = c.keys("k:1?0").expect("KEYS");
    keys.sort();
    assert_eq!(
        keys,
        [
            "k:100", "k:110", "k:120", "k:130", "k:140", "k:150", "k:160", "k:170", "k:180",
            "k:190"
        ]
    );
    let random: String = redis::cmd("RANDOMKEY").query(&mut c).expect("RANDOMKEY");
    assert!(c.exists::<_, bool>(&random).expect("EXISTS"), "{random}");
    let err = redis::cmd("SCAN")
        .arg(123456)
        .query::<Value>(&mut c)
        .expect_err("unknown cursor");
    assert!(err.to_string().contains("invalid cursor"), "{err}");
}

#[test]
fn rename_moves_a_value_in_one_record() {
    let (_dir, _server, mut c) = served("resp2");
    let _: () = c.set("a", "1").expect("SET");
    let _: () = c.set("b", "2").expect("SET");
    let _: () = c.rename("a", "c").expect("RENAME");
    let (a, cv): (Option<String>, String) = (c.get("a").expect("GET"), c.get("c").expect("GET"));
    assert_eq!((a, cv.as_str()), (None, "1"));
    let moved: bool = c.rename_nx("c", "b").expect("RENAMENX");
    assert!(!moved, "RENAMENX onto an existing key");
    let moved: bool = c.rename_nx("c", "d").expect("RENAMENX");
    assert!(moved);
    let err = c
        .rename::<_, _, ()>("missing", "x")
        .expect_err("no such key");
    assert!(err.to_string().contains("no such key"), "{err}");
}

/// A client pipelines increments between reads of a large value and hangs
/// up without reading a reply: writing the second large reply fails, and
/// the increments after it are dropped unanswered. Another client
/// increments meanwhile. The first client's writes stay in flight until the
/// log answers them, so no increment of the second reads past one of them:
/// the counter ends at the number of increments logged (every record after
/// the first `SET` is one).
#[test]
fn increments_of_a_client_that_left_are_not_forgotten() {
    use std::io::Write;
    let (_dir, server, mut c) = served("resp2");
    let _: () = c.set("big", vec![b'x'; 200_000]).expect("SET");
    let incr = "*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n";
    let get = "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n";
    let mut mine = Vec::new();
    for _ in 0..12 {
        let mut leaver = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        let burst = [get, &incr.repeat(50), get, &incr.repeat(200)].concat();
        leaver.write_all(burst.as_bytes()).expect("send");
        drop(leaver);
        for _ in 0..40 {
            mine.push(c.incr::<_, _, i64>("counter", 1).expect("INCR"));
        }
    }
    // The leavers' last writes settle.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let counter: i64 = c.get("counter").expect("GET");
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut c)
        .expect("INFO");
    let records: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("wal_last_seq:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("wal_last_seq in INFO");
    assert!(mine.len() >= 200);
    assert_eq!(counter, records - 1, "an INCR read past a write in flight");
}

/// A client that opens a transaction and queues without end gets its
/// queueing refused once the transaction could no longer be one record
/// (`limits.max_record_bytes`), so the server's memory stays bounded;
/// `EXEC` then aborts and nothing is written.
#[test]
fn a_transaction_queues_no_more_than_one_record_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("CONCORDKV__LIMITS__MAX_KEY_BYTES", "1024"),
            ("CONCORDKV__LIMITS__MAX_VALUE_BYTES", "40000"),
            ("CONCORDKV__LIMITS__MAX_RECORD_BYTES", "100000"),
        ],
    );
    let mut raw = server.client();
    let value = "v".repeat(30_000);
    assert_eq!(raw.call(&["MULTI"]), ok());
    for i in 0..3 {
        assert_eq!(raw.call(&["SET", &format!("k{i}"), &value]), queued());
    }
    for i in 3..50 {
        let reply = raw.call(&["SET", &format!("k{i}"), &value]);
        assert!(
            is_error(&reply, "limits.max_record_bytes"),
            "{i}: {reply:?}"
        );
    }
    assert!(is_error(&raw.call(&["EXEC"]), "EXECABORT"));
    assert_eq!(raw.call(&["EXISTS", "k0"]), BytesFrame::Integer(0));
    // A transaction within the bound still runs.
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", "k0", &value]), queued());
    assert_eq!(raw.call(&["EXEC"]), BytesFrame::Array(vec![ok()]));
}

/// The value of `field` in `INFO`'s reply.
fn info_field(c: &mut redis::Connection, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").query(c).expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(str::to_owned)
}

#[test]
fn deadlines_and_flushes_survive_kill_9_and_expired_keys_are_deleted_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = connect(&server, "resp3");
    let _: () = c.set("before", "x").expect("SET");
    // A flush inside a transaction: one record, the keys after it stay.
    let (_, _, _): ((), (), ()) = redis::pipe()
        .atomic()
        .set("in-tx", "x")
        .cmd("FLUSHDB")
        .set_ex("after", "y", 1000)
        .query(&mut c)
        .expect("MULTI SET FLUSHDB SET EX EXEC");
    let _: () = c.set_ex("long", "v", 1000).expect("SET EX");
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query(&mut c)
        .expect("SET PX");
    let _: () = c.set("plain", "v").expect("SET");
    let _: bool = c.expire("plain", 2000).expect("EXPIRE");
    let _: bool = c.persist("plain").expect("PERSIST");
    let _: () = c.set_ex("n", 5, 1000).expect("SET EX");
    let n: i64 = c.incr("n", 1).expect("INCR keeps the deadline");
    assert_eq!(n, 6);
    server.kill9();
    std::thread::sleep(std::time::Duration::from_millis(400));

    let server = Server::start(dir.path(), &[]);
    let mut c = connect(&server, "resp2");
    let get = |c: &mut redis::Connection, k: &str| -> Option<String> { c.get(k).expect("GET") };
    assert_eq!(get(&mut c, "before"), None, "flushed");
    assert_eq!(get(&mut c, "in-tx"), None, "flushed in its transaction");
    assert_eq!(get(&mut c, "after"), Some("y".into()));
    assert_eq!(
        get(&mut c, "short"),
        None,
        "expired while the server was down"
    );
    let ttl: i64 = c.ttl("long").expect("TTL");
    assert!((990..=1000).contains(&ttl), "TTL long = {ttl}");
    let ttl: i64 = c.ttl("after").expect("TTL");
    assert!((990..=1000).contains(&ttl), "TTL after = {ttl}");
    let ttl: i64 = c.ttl("plain").expect("TTL");
    assert_eq!(ttl, -1, "PERSIST survived");
    let ttl: i64 = c.ttl("n").expect("TTL");
    assert!((990..=1000).contains(&ttl), "TTL n = {ttl}");
    assert_eq!(get(&mut c, "n"), Some("6".into()));
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, 4);
    // The expired key is deleted by a logged record soon after the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while info_field(&mut c, "expired_keys").as_deref() != Some("1") {
        assert!(
            std::time::Instant::now() < deadline,
            "expired_keys is {:?}",
            info_field(&mut c, "expired_keys")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last: String = info_field(&mut c, "wal_last_seq").expect("wal_last_seq");
    drop(c);
    server.kill9();
    // After another restart nothing is left to delete: the deletion was
    // replayed, and the log did not grow.
    let server = Server::start(dir.path(), &[]);
    let mut c = connect(&server, "resp2");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(info_field(&mut c, "expired_keys").as_deref(), Some("0"));
    assert_eq!(info_field(&mut c, "wal_last_seq"), Some(last));
}
