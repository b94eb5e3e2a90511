//! `concordkv serve` driven by a client library no one here wrote: the
//! `redis` crate (redis-rs), in RESP2 and, after its `HELLO 3`, in RESP3.

mod common;

use common::server::Server;
use redis::{Commands, Value};

fn connect(server: &Server, protocol: &str) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{}/?protocol={protocol}", server.port);
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect (the client opens with HELLO for RESP3)")
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
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = connect(&server, "resp3");
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
