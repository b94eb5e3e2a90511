//! A real `concordkv serve` process on a loopback port, and a raw RESP client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

/// Lets this process hold thousands of sockets (up to the hard limit).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The server's stderr (warnings, panics), shown when it cannot be
    /// reached: a server that vanished says why.
    log: tempfile::NamedTempFile,
}

impl Server {
    /// Starts `concordkv serve` on a free port. Tests run in parallel, so a
    /// port found free can be taken by another test's server before ours
    /// binds it: retry on a new port until the server answering is ours.
    pub fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        Server::start_with_args(dir, extra_env, &[])
    }

    /// As [`Server::start`], with more arguments after `serve`.
    pub fn start_with_args(dir: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> Server {
        for _ in 0..20 {
            let port = free_port();
            if let Some(server) = Server::try_start(dir, port, extra_env, args) {
                return server;
            }
        }
        panic!("could not start a server on a free port");
    }

    fn try_start(
        dir: &Path,
        port: u16,
        extra_env: &[(&str, &str)],
        args: &[&str],
    ) -> Option<Server> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_concordkv"));
        command
            .arg("serve")
            .args(args)
            .env("CONCORDKV__DATA_DIR", dir)
            .env("CONCORDKV__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("CONCORDKV__METRICS__ENABLED", "false")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let log = tempfile::NamedTempFile::new().expect("server log file");
        command.stderr(log.reopen().expect("server log file"));
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start concordkv serve");
        let mut server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if server.child.try_wait().expect("wait").is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .ok()?;
        let mut probe = Client {
            stream,
            buf: BytesMut::new(),
        };
        let password = extra_env
            .iter()
            .find(|(k, _)| *k == "CONCORDKV__SERVER__REQUIREPASS");
        if let Some((_, password)) = password {
            probe.try_call(&["AUTH", password])?;
        }
        // Another test's server may hold the port, and be killed or closing
        // just now: no reply is "not ours", as a foreign reply is.
        let Some(BytesFrame::BulkString(info)) = probe.try_call(&["INFO", "server"]) else {
            if let Some(status) = server.child.try_wait().expect("wait") {
                // Ours exited: because another server holds the port (it
                // answered the probe, or not), or it died, which is a bug.
                let stderr = std::fs::read_to_string(server.log.path()).unwrap_or_default();
                assert!(
                    stderr.contains("in use"),
                    "concordkv serve exited ({status}) at its first request; its stderr:\n{stderr}"
                );
            }
            return None;
        };
        let ours =
            String::from_utf8_lossy(&info).contains(&format!("process_id:{}\r", server.child.id()));
        if !ours {
            let _ = server.child.kill();
            return None;
        }
        Some(server)
    }

    pub fn client(&self) -> Client {
        let stream = match TcpStream::connect(("127.0.0.1", self.port)) {
            Ok(stream) => stream,
            Err(e) => {
                // Z: it exited (not yet reaped); absent: reaped.
                let state = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("State:"))
                            .map(String::from)
                    });
                panic!(
                    "connect to the server on port {}: {e}; its process: {state:?}; its stderr:\n{}",
                    self.port,
                    std::fs::read_to_string(self.log.path()).unwrap_or_default()
                )
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with a valid pid and signal has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "send SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Client {
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next reply, or `None` if the server closed the connection.
    pub fn read(&mut self) -> Option<BytesFrame> {
        loop {
            if let Some((frame, _, _)) = decode_bytes_mut(&mut self.buf).expect("valid reply") {
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn call(&mut self, args: &[&str]) -> BytesFrame {
        self.try_call(args).expect("a reply")
    }

    /// The reply, or `None` if the connection ended first.
    pub fn try_call(&mut self, args: &[&str]) -> Option<BytesFrame> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.stream.write_all(&encode(&args)).ok()?;
        self.read()
    }
}

pub fn bulk(s: &str) -> BytesFrame {
    BytesFrame::BulkString(s.as_bytes().to_vec().into())
}

pub fn ok() -> BytesFrame {
    BytesFrame::SimpleString("OK".into())
}

pub fn is_error(frame: &BytesFrame, needle: &str) -> bool {
    matches!(frame, BytesFrame::Error(e) if e.contains(needle))
}
