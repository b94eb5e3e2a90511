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
        err.to_string().contains("unknown command 'nosuch'"),
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
