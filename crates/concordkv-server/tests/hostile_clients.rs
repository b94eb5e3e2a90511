//! Hostile clients against a real server: oversized keys, values, batches
//! and length claims, thousands of connections opened and dropped, and
//! half-sent requests are all refused or waited for cleanly, while the
//! server keeps serving and its memory stays bounded.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::server::{encode, is_error, ok, raise_fd_limit, Client, Server};
use redis_protocol::resp2::types::BytesFrame;

/// The server's resident memory, in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("server status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open descriptors of the server.
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .expect("server fds")
        .count()
}

fn pong(client: &mut Client) {
    assert_eq!(
        client.call(&["PING"]),
        BytesFrame::SimpleString("PONG".into())
    );
}

#[test]
fn oversized_keys_values_and_batches_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("CONCORDKV__LIMITS__MAX_KEY_BYTES", "64"),
            ("CONCORDKV__LIMITS__MAX_VALUE_BYTES", "1024"),
            ("CONCORDKV__LIMITS__MAX_RECORD_BYTES", "4096"),
        ],
    );
    let mut c = server.client();
    let long_key = "k".repeat(65);
    let reply = c.call(&["SET", &long_key, "v"]);
    assert!(is_error(&reply, "limits.max_key_bytes"), "{reply:?}");
    let big_value = "v".repeat(1025);
    let reply = c.call(&["SET", "k", &big_value]);
    assert!(is_error(&reply, "limits.max_value_bytes"), "{reply:?}");
    // Each pair is within limits; the atomic batch of all of them is not.
    let value = "v".repeat(1000);
    let mut mset = vec!["MSET".to_string()];
    for i in 0..8 {
        mset.push(format!("key-{i}"));
        mset.push(value.clone());
    }
    let args: Vec<&str> = mset.iter().map(String::as_str).collect();
    let reply = c.call(&args);
    assert!(is_error(&reply, "limits.max_record_bytes"), "{reply:?}");
    // The connection stays usable and nothing was stored.
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(0));
    assert_eq!(c.call(&["SET", "k", "fine"]), ok());
}

#[test]
fn an_endless_inline_line_or_bulk_claim_is_refused_before_it_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[("CONCORDKV__SERVER__MAX_REQUEST_BYTES", "1048576")],
    );
    let mut inline = server.client();
    inline.send_raw(&vec![b'a'; 70 * 1024]);
    let reply = inline.read().expect("an error before the close");
    assert!(is_error(&reply, "too big inline request"), "{reply:?}");
    assert!(inline.read().is_none(), "the connection is closed");

    // Claims within the limit one by one, over it together: refused at the
    // claim, before any of the data is sent.
    let mut claims = server.client();
    claims.send_raw(b"*3\r\n$3\r\nSET\r\n$600000\r\n");
    claims.send_raw(&vec![b'x'; 600_000]);
    claims.send_raw(b"\r\n$600000\r\n");
    let reply = claims.read().expect("an error before the close");
    assert!(is_error(&reply, "max_request_bytes"), "{reply:?}");
    pong(&mut server.client());
}

#[test]
fn thousands_of_dropped_and_half_sent_connections_leave_memory_and_fds_bounded() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[("CONCORDKV__SERVER__MAX_REQUEST_BYTES", "1048576")],
    );
    let mut probe = server.client();
    pong(&mut probe);
    let fds_before = open_fds(&server);
    let addr = ("127.0.0.1", server.port);

    // A wave: 500 connections at once, each half-way through a 1 MiB value
    // (64 KiB sent), then all dropped; and 1,000 connect-and-drop.
    let wave = || {
        let mut held: Vec<TcpStream> = Vec::new();
        for _ in 0..500 {
            let mut c = TcpStream::connect(addr).expect("connect");
            std::io::Write::write_all(&mut c, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048000\r\n")
                .expect("send claim");
            std::io::Write::write_all(&mut c, &vec![b'x'; 64 * 1024]).expect("send part");
            held.push(c);
        }
        for _ in 0..1000 {
            drop(TcpStream::connect(addr).expect("connect"));
        }
        held
    };
    let mut peaks = Vec::new();
    for _ in 0..6 {
        let held = wave();
        pong(&mut probe);
        peaks.push(rss_kib(&server));
        drop(held);
        pong(&mut probe);
    }
    // 500 half-sent requests hold about 32 MiB of buffers. The allocator
    // keeps some of what a wave freed for the next (measured: +19, +9, +4,
    // +2, +0.5 MiB over ten waves), so the growth must die out; a leak of
    // the buffers would add 32 MiB a wave.
    let first = peaks[0];
    assert!(
        first < 512 * 1024,
        "RSS {first} KiB after 500 half-sent requests"
    );
    let settled = peaks[1..=3].iter().copied().max().unwrap_or(first);
    assert!(
        peaks[5] <= settled + 16 * 1024,
        "RSS keeps growing wave after wave: {peaks:?} KiB"
    );
    // Every dropped connection's descriptor is closed again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_fds(&server) > fds_before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "descriptors leak: {} open, {fds_before} before",
            open_fds(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(probe.call(&["SET", "still", "here"]), ok());
    let mut c = server.client();
    c.send_raw(&encode(&[b"GET", b"still"]));
    assert_eq!(
        c.read().expect("reply"),
        BytesFrame::BulkString("here".into())
    );
}

/// Reads until the server closes the connection; `true` if it did within
/// the stream's read timeout, `false` if the connection stayed open.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 65536];
    loop {
        match std::io::Read::read(stream, &mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn raw_stream(server: &Server, read_timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    stream
}

#[test]
fn http_sent_to_the_resp_port_runs_nothing_and_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["SET", "victim", "here"]), ok());
    let body = "SET pwned yes\r\nDEL victim\r\n";
    let attacks = [
        // What a web page's fetch() to http://127.0.0.1:<port>/ sends.
        format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        // A header line first (the request line cut off) is caught too.
        format!("Host: 127.0.0.1\r\n\r\n{body}"),
    ];
    for attack in &attacks {
        let mut stream = raw_stream(&server, Duration::from_secs(20));
        std::io::Write::write_all(&mut stream, attack.as_bytes()).expect("send");
        let mut reply = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut reply);
        assert!(
            reply.is_empty(),
            "{attack:?} was answered: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(
        c.call(&["GET", "victim"]),
        BytesFrame::BulkString("here".into())
    );
    assert_eq!(c.call(&["GET", "pwned"]), BytesFrame::Null);
    assert_eq!(c.call(&["DBSIZE"]), BytesFrame::Integer(1));
}

#[test]
fn with_requirepass_only_auth_and_quit_run_before_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[("CONCORDKV__SERVER__REQUIREPASS", "open sesame")],
    );
    let mut c = server.client();
    for command in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["PING"],
        &["BGSAVE"],
    ] {
        let reply = c.call(command);
        assert_eq!(
            reply,
            BytesFrame::Error("NOAUTH Authentication required.".into()),
            "{command:?}"
        );
    }
    let wrongpass =
        BytesFrame::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.call(&["AUTH", "open"]), wrongpass);
    assert_eq!(c.call(&["AUTH", "default", "open sesamE"]), wrongpass);
    assert_eq!(c.call(&["AUTH", "admin", "open sesame"]), wrongpass);
    assert_eq!(c.call(&["AUTH", "open sesame"]), ok());
    assert_eq!(
        c.call(&["DBSIZE"]),
        BytesFrame::Integer(0),
        "nothing ran before AUTH"
    );
    assert_eq!(c.call(&["SET", "k", "v"]), ok());

    let mut other = server.client();
    assert_eq!(other.call(&["AUTH", "default", "open sesame"]), ok());
    assert_eq!(
        other.call(&["GET", "k"]),
        BytesFrame::BulkString("v".into())
    );
    let mut leaving = server.client();
    assert_eq!(leaving.call(&["QUIT"]), ok());
    assert!(leaving.read().is_none());
}

#[test]
fn auth_without_a_password_configured_is_refused_as_redis_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    let reply = c.call(&["AUTH", "guess"]);
    assert!(
        is_error(
            &reply,
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
        ),
        "{reply:?}"
    );
    pong(&mut c);
}

#[test]
fn an_idle_connection_is_closed_after_idle_timeout_and_a_busy_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[("CONCORDKV__SERVER__IDLE_TIMEOUT_MS", "500")]);
    let mut idle = raw_stream(&server, Duration::from_secs(20));
    std::io::Write::write_all(&mut idle, &encode(&[b"PING"])).expect("send");
    let mut busy = server.client();
    // Requests every 50 ms for 1.5 s: never 500 ms without one.
    for _ in 0..30 {
        pong(&mut busy);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        closed_by_server(&mut idle),
        "the idle client was not closed"
    );
    pong(&mut busy);
}

#[test]
fn a_request_that_never_completes_is_closed_after_request_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[("CONCORDKV__SERVER__REQUEST_TIMEOUT_MS", "300")],
    );
    // A slow loris: a request begun, then a byte now and then.
    let mut slow = raw_stream(&server, Duration::from_millis(100));
    std::io::Write::write_all(&mut slow, b"*2\r\n$4\r\nECHO\r\n$2000\r\nhel").expect("send");
    let mut closed = false;
    for _ in 0..200 {
        if std::io::Write::write_all(&mut slow, b"l").is_err() || closed_by_server(&mut slow) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow request was never closed");
    // With no request under way, a quiet connection is left alone.
    let mut quiet = server.client();
    pong(&mut quiet);
    std::thread::sleep(Duration::from_millis(600));
    pong(&mut quiet);
}

#[test]
fn over_the_total_buffer_cap_the_client_holding_the_most_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[(
            "CONCORDKV__SERVER__MAX_TOTAL_CLIENT_BUFFER_BYTES",
            "4194304",
        )],
    );
    // Three half-sent SETs holding 1.0, 2.2 and 1.3 MB: 4.5 MB together,
    // over the 4 MiB cap; dropping the 2.2 MB one is enough.
    let begin = |claim: usize, sent: usize| {
        let mut stream = raw_stream(&server, Duration::from_secs(10));
        let head = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${claim}\r\n");
        std::io::Write::write_all(&mut stream, head.as_bytes()).expect("send claim");
        let _ = std::io::Write::write_all(&mut stream, &vec![b'x'; sent]);
        stream
    };
    let mut a = begin(2_000_000, 1_000_000);
    let mut b = begin(2_200_000, 2_200_000 - 10);
    let mut c = begin(1_300_000, 1_300_000 - 10);
    assert!(
        closed_by_server(&mut b),
        "the biggest client was not disconnected"
    );
    let finish = |stream: &mut TcpStream, rest: usize| {
        let mut tail = vec![b'x'; rest];
        tail.extend_from_slice(b"\r\n");
        std::io::Write::write_all(stream, &tail).expect("send the rest");
        let mut reply = [0u8; 5];
        std::io::Read::read_exact(stream, &mut reply).expect("a reply");
        assert_eq!(&reply, b"+OK\r\n");
    };
    finish(&mut c, 10);
    finish(&mut a, 1_000_000);
    pong(&mut server.client());
}

#[test]
fn out_of_descriptors_the_accept_loop_pauses_and_logs_once() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let port = common::server::free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_concordkv"));
    command
        .arg("serve")
        .env("CONCORDKV__DATA_DIR", dir.path().join("data"))
        .env("CONCORDKV__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CONCORDKV__METRICS__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    // SAFETY: setrlimit is async-signal-safe and only reads the struct.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start concordkv serve");
    let started = std::time::Instant::now();
    let first = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // More connections than the server has descriptors: the last ones wait
    // in the backlog while every accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let failures = std::fs::read_to_string(&log_path)
        .expect("log")
        .matches("accept failed")
        .count();
    drop(held);
    drop(first);
    // Descriptors free again: the server serves new clients.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    std::io::Write::write_all(&mut stream, &encode(&[b"PING"])).expect("send");
    let mut reply = [0u8; 7];
    let answered = std::io::Read::read_exact(&mut stream, &mut reply);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(failures, 1, "accept failures logged over 1.5 s of EMFILE");
    answered.expect("a reply once descriptors are free");
    assert_eq!(&reply, b"+PONG\r\n");
}

/// The server's peak resident memory so far, in KiB.
fn peak_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("server status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn replies_a_client_does_not_read_are_not_all_held_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    let big = "v".repeat(1 << 20);
    assert_eq!(c.call(&["SET", "big", &big]), ok());
    let before = peak_rss_kib(&server);
    // 300 pipelined GETs of a 1 MiB value (7 KiB of requests asking for
    // 300 MiB of replies), none of them read.
    let mut greedy = raw_stream(&server, Duration::from_secs(20));
    let mut requests = Vec::new();
    for _ in 0..300 {
        requests.extend(encode(&[b"GET", b"big"]));
    }
    std::io::Write::write_all(&mut greedy, &requests).expect("send");
    pong(&mut c);
    std::thread::sleep(Duration::from_millis(500));
    pong(&mut c);
    let grown = peak_rss_kib(&server).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the server's peak memory grew by {grown} KiB for replies nobody reads"
    );
    drop(greedy);
    pong(&mut c);
}

/// Deadlines at the edges of 64 bits, numbers that are not numbers, and an
/// expiry command cut off mid-request: each is refused with Redis's error,
/// the server stays up, and the key keeps its value and deadline, across a
/// kill -9 too.
#[test]
fn hostile_deadlines_are_refused_and_leave_the_key_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["SET", "k", "v", "EX", "1000"]), ok());
    let max = i64::MAX.to_string();
    let min = i64::MIN.to_string();
    let refused: [&[&str]; 12] = [
        &["EXPIRE", "k", &max],
        &["EXPIRE", "k", &min],
        &["EXPIRE", "k", "18446744073709551616"],
        &["EXPIRE", "k", ""],
        &["EXPIRE", "k", "1e3"],
        &["PEXPIRE", "k", &max],
        &["EXPIREAT", "k", &max],
        &["SET", "x", "v", "EX", &max],
        &["SET", "x", "v", "PX", &max],
        &["SETEX", "x", &max, "v"],
        &["GETEX", "k", "EXAT", &max],
        &[
            "EXPIRE", "k", "10", "NX", "XX", "GT", "LT", "NX", "XX", "GT", "LT",
        ],
    ];
    for args in refused {
        let reply = c.call(args);
        assert!(
            is_error(&reply, "invalid expire time")
                || is_error(&reply, "not an integer")
                || is_error(&reply, "not compatible"),
            "{args:?}: {reply:?}"
        );
    }
    // Half an EXPIRE, then the connection goes.
    let mut half = raw_stream(&server, Duration::from_secs(5));
    std::io::Write::write_all(&mut half, b"*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n1")
        .expect("send");
    drop(half);
    pong(&mut c);
    let ttl = |c: &mut Client| match c.call(&["TTL", "k"]) {
        BytesFrame::Integer(ttl) => ttl,
        other => panic!("TTL: {other:?}"),
    };
    assert!((990..=1000).contains(&ttl(&mut c)));
    assert_eq!(c.call(&["EXISTS", "x"]), BytesFrame::Integer(0));
    drop(c);
    server.kill9();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client();
    assert_eq!(c.call(&["GET", "k"]), BytesFrame::BulkString("v".into()));
    assert!((990..=1000).contains(&ttl(&mut c)));
}
