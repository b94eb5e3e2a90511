//! `concordkv serve` as a user meets it: a real process on a loopback port,
//! spoken to over TCP by a raw RESP client and by `redis-cli`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{bulk, encode, is_error, ok, raise_fd_limit, Client, Server};
use redis_protocol::resp2::types::BytesFrame;

#[test]
fn commands_behave_like_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["PING"]), BytesFrame::SimpleString("PONG".into()));
    assert_eq!(c.call(&["ping", "hi"]), bulk("hi"));
    assert_eq!(c.call(&["SET", "a", "1"]), ok());
    assert_eq!(c.call(&["GET", "a"]), bulk("1"));
    assert_eq!(c.call(&["GET", "missing"]), BytesFrame::Null);
    assert_eq!(c.call(&["MSET", "b", "2", "c", "3"]), ok());
    assert_eq!(
        c.call(&["EXISTS", "a", "b", "nope", "a"]),
        BytesFrame::Integer(3)
    );
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(3));
    assert_eq!(c.call(&["DEL", "a", "b", "nope"]), BytesFrame::Integer(2));
    assert_eq!(c.call(&["DEL", "nope"]), BytesFrame::Integer(0));
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(1));
    assert!(is_error(
        &c.call(&["LPUSH", "list", "x"]),
        "unknown command 'LPUSH'"
    ));
    // A line break in a quoted argument goes out as a space, as from Redis,
    // so the error stays one line and the next reply is read as the next.
    assert_eq!(
        c.call(&["NOSUCH", "a\r\nb"]),
        BytesFrame::Error("ERR unknown command 'NOSUCH', with args beginning with: 'a  b' ".into())
    );
    assert_eq!(c.call(&["PING"]), BytesFrame::SimpleString("PONG".into()));
    assert!(is_error(
        &c.call(&["GET"]),
        "wrong number of arguments for 'get'"
    ));
    assert!(is_error(
        &c.call(&["MSET", "k"]),
        "wrong number of arguments"
    ));
    // A key without its value: Redis's arity error, and nothing written.
    assert!(is_error(
        &c.call(&["MSET", "x", "1", "y"]),
        "wrong number of arguments for 'mset' command"
    ));
    assert_eq!(c.call(&["EXISTS", "x", "y"]), BytesFrame::Integer(0));
    assert!(is_error(&c.call(&["SET", "", "v"]), "empty key"));
    let BytesFrame::BulkString(info) = c.call(&["INFO", "persistence"]) else {
        panic!("INFO returns a bulk string");
    };
    let info = String::from_utf8_lossy(&info);
    assert!(
        info.contains("sync_mode:always") && info.contains("wal_last_seq:3"),
        "{info}"
    );
    assert_eq!(c.call(&["QUIT"]), ok());
    assert!(c.read().is_none(), "QUIT closes the connection");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(encode(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
        batch.extend(encode(&[b"GET", format!("k{i}").as_bytes()]));
    }
    batch.extend(encode(&[b"DBSIZE"]));
    c.send_raw(&batch);
    for i in 0..200 {
        assert_eq!(c.read().expect("reply"), ok());
        assert_eq!(
            c.read().expect("reply"),
            bulk(&format!("v{i}")),
            "a read sees the write before it"
        );
    }
    assert_eq!(c.read().expect("reply"), BytesFrame::Integer(200));
}

#[test]
fn a_read_in_a_pipeline_sees_the_writes_before_it_and_none_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    let requests: [&[&[u8]]; 9] = [
        &[b"SET", b"a", b"1"],
        &[b"GET", b"a"],
        &[b"SET", b"a", b"2"],
        &[b"MSET", b"b", b"x", b"c", b"y"],
        &[b"GET", b"a"],
        &[b"DEL", b"a", b"b", b"nothing"],
        &[b"EXISTS", b"a", b"b", b"c"],
        &[b"DBSIZE"],
        &[b"GET", b"c"],
    ];
    let packet: Vec<u8> = requests.iter().flat_map(|r| encode(r)).collect();
    // Everything in one packet but the last request's final bytes.
    let (most, rest) = packet.split_at(packet.len() - 3);
    c.send_raw(most);
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.send_raw(rest);
    let expected = [
        ok(),
        bulk("1"),
        ok(),
        ok(),
        bulk("2"),
        BytesFrame::Integer(2),
        BytesFrame::Integer(1),
        BytesFrame::Integer(1),
        bulk("y"),
    ];
    for (request, want) in requests.iter().zip(expected) {
        let got = c.read().expect("reply");
        assert_eq!(
            got,
            want,
            "reply to {:?}",
            String::from_utf8_lossy(request[0])
        );
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_and_sigterm_drains_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["SET", "a", "b"]), ok());
    assert_eq!(c.call(&["MSET", "x", "1", "y", "2"]), ok());
    server.kill9();

    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["GET", "a"]), bulk("b"));
    assert_eq!(c.call(&["GET", "y"]), bulk("2"));
    assert_eq!(c.call(&["SET", "after", "restart"]), ok());
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");

    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["GET", "after"]), bulk("restart"));
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(4));
}

#[test]
fn malformed_and_oversized_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[("CONCORDKV__SERVER__MAX_REQUEST_BYTES", "65536")],
    );
    let mut bystander = server.client();
    assert_eq!(bystander.call(&["SET", "k", "v"]), ok());

    let hostile: [&[u8]; 4] = [
        b"*1\r\n$999999999\r\n",
        b"*2\r\n*1\r\n*1\r\n*1\r\n",
        b"*abc\r\n",
        b"*1\r\n$3\r\nGETxx",
    ];
    for request in hostile {
        let mut c = server.client();
        c.send_raw(request);
        let reply = c.read().expect("an error reply before the close");
        assert!(is_error(&reply, "Protocol error"), "{request:?}: {reply:?}");
        assert!(c.read().is_none(), "{request:?}: the connection is closed");
    }
    let mut c = server.client();
    let big = "x".repeat(70_000);
    let reply = c.call(&["SET", "big", &big]);
    assert!(is_error(&reply, "max_request_bytes"), "{reply:?}");

    // A request cut off half-way is simply waited for; the server keeps serving others.
    let mut half = server.client();
    half.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nh");
    assert_eq!(bystander.call(&["GET", "k"]), bulk("v"));
    half.send_raw(b"\r\n$1\r\nv\r\n");
    assert_eq!(half.read().expect("completed request"), ok());
}

#[test]
fn clients_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[("CONCORDKV__SERVER__MAX_CLIENTS", "2")]);
    // The start-up probe's connections hold slots until the server sees them close.
    let a = connected_client(&server);
    let _b = connected_client(&server);
    let mut c = server.client();
    let reply = c.read().expect("refusal");
    assert!(is_error(&reply, "max number of clients"), "{reply:?}");
    assert!(c.read().is_none(), "the refused connection is closed");
    drop(a);
    connected_client(&server);
}

/// A client that got a slot: retries (bounded) while the server is full.
fn connected_client(server: &Server) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = server.client();
        client.send_raw(&encode(&[b"PING"]));
        if client.read() == Some(BytesFrame::SimpleString("PONG".into())) {
            return client;
        }
        assert!(Instant::now() < deadline, "no client slot became free");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_config_stops_serve_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .arg("serve")
        .env("CONCORDKV__DATA_DIR", dir.path())
        .env("CONCORDKV__WAL__SYNC_MODE", "sometimes")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sync_mode"), "{stderr}");
}

fn redis_cli() -> Option<&'static str> {
    let found = Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("redis-cli is missing on CI; .ci/run installs redis-tools");
    }
    found.then_some("redis-cli")
}

#[test]
fn redis_cli_talks_to_the_server_and_the_value_survives_kill_9() {
    let Some(cli) = redis_cli() else {
        eprintln!("redis-cli is not installed; skipped here (CI installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let port = server.port.to_string();
    let run = |args: &[&str]| {
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(&["set", "a", "b"]), "OK");
    assert_eq!(run(&["get", "a"]), "b");
    assert_eq!(run(&["ping"]), "PONG");
    server.kill9();
    let server = Server::start(dir.path(), &[]);
    let port = server.port.to_string();
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port, "get", "a"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "b");
}

#[test]
fn save_and_bgsave_take_snapshots_that_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "4096")]);
    let mut c = server.client();
    for i in 0..200 {
        assert_eq!(c.call(&["SET", &format!("k{i}"), &format!("v{i}")]), ok());
    }
    assert_eq!(c.call(&["SAVE"]), ok());
    assert_eq!(c.call(&["DEL", "k0"]), BytesFrame::Integer(1));
    assert_eq!(c.call(&["SAVE", "INCREMENTAL"]), ok());
    assert!(is_error(&c.call(&["SAVE", "SOMETIMES"]), "syntax error"));
    assert_eq!(c.call(&["SET", "k1", "changed"]), ok());
    assert_eq!(
        c.call(&["BGSAVE"]),
        BytesFrame::SimpleString("Background saving started".into())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let BytesFrame::BulkString(info) = c.call(&["INFO", "persistence"]) else {
            panic!("INFO returns a bulk string");
        };
        let info = String::from_utf8_lossy(&info).to_string();
        if info.contains("last_snapshot_seq:202") && info.contains("last_snapshot_kind:full") {
            for field in [
                "segments:",
                "disk_bytes:",
                "compaction_in_progress:",
                "recovery_truncated_bytes:0",
            ] {
                assert!(
                    info.contains(field),
                    "INFO persistence lacks {field}: {info}"
                );
            }
            assert!(!info.contains("last_snapshot_time:0\r"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "BGSAVE never finished: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let server = Server::start(dir.path(), &[("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "4096")]);
    let mut c = server.client();
    assert_eq!(c.call(&["GET", "k0"]), BytesFrame::Null);
    assert_eq!(c.call(&["GET", "k1"]), bulk("changed"));
    assert_eq!(c.call(&["GET", "k199"]), bulk("v199"));
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(199));
    assert_eq!(
        c.call(&["BGREWRITEAOF"]),
        BytesFrame::SimpleString("Background append only file rewriting started".into())
    );
}

#[test]
fn a_thousand_clients_at_once_are_all_served() {
    const CLIENTS: usize = 1000;
    // This process holds one socket per client too.
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_raw(&encode(&[
            b"SET",
            format!("client-{i}").as_bytes(),
            b"here",
        ]));
    }
    for c in clients.iter_mut() {
        assert_eq!(c.read().expect("every client is answered"), ok());
    }
    let mut last = server.client();
    assert_eq!(last.call(&["DBSIZE"]), BytesFrame::Integer(CLIENTS as i64));
    drop(clients);
    assert_eq!(
        last.call(&["PING"]),
        BytesFrame::SimpleString("PONG".into())
    );
}

#[test]
fn pipelined_bgrewriteaof_and_bgsave_start_one_job_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    for i in 0..100 {
        assert_eq!(c.call(&["SET", &format!("k{i}"), "v"]), ok());
    }
    for (command, started, refused) in [
        (
            "BGREWRITEAOF",
            "Background append only file rewriting started",
            "ERR Background append only file rewriting already in progress",
        ),
        (
            "BGSAVE",
            "Background saving started",
            "ERR Background save already in progress",
        ),
    ] {
        let mut batch = Vec::new();
        for _ in 0..3000 {
            batch.extend(encode(&[command.as_bytes()]));
        }
        c.send_raw(&batch);
        let mut starts = 0;
        for _ in 0..3000 {
            match c.read().expect("reply") {
                BytesFrame::SimpleString(s) if s == started.as_bytes() => starts += 1,
                BytesFrame::Error(e) if e == refused => {}
                other => panic!("{command}: unexpected reply {other:?}"),
            }
        }
        // The batch arrives in a few reads; a job may end between two.
        assert!(
            (1..=5).contains(&starts),
            "{command}: {starts} of 3000 started"
        );
    }
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(100));
}
