//! `concordkv serve` and a real `redis-server` given the same everyday
//! redis-py calls (`tests/redis_py/everyday.py`, RESP3 as redis-py 8 speaks
//! by default): every step must return the same thing from both. Redis is
//! the specification, so any difference is either a bug here or a call the
//! script must leave out. Also: both describe their commands' arguments
//! alike (`COMMAND DOCS`, what `redis-cli` builds its hints from).
//!
//! Needs a Python with redis-py 8 (`CONCORDKV_TEST_PYTHON`, else
//! `.venv-tests/bin/python` at the workspace root, which `.ci/run` makes,
//! else `python3`) and `redis-server` on `PATH`. Without them the test is
//! skipped with a note, except in CI (`CI=true`), where it fails.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{free_port, Server};
use serde_json::Value;

/// The script's path, next to this file.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis_py/everyday.py")
}

/// Whether `python` imports redis-py at major version 8 or later, the first
/// whose default is RESP3 (an older one would compare RESP2 instead).
fn has_redis_py(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import redis, sys; sys.exit(int(redis.__version__.split('.')[0]) < 8)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with redis-py, or what was looked for.
fn find_python() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("CONCORDKV_TEST_PYTHON") {
        let python = PathBuf::from(python);
        return if has_redis_py(&python) {
            Ok(python)
        } else {
            Err(format!(
                "CONCORDKV_TEST_PYTHON={} cannot import redis-py 8 (pip install 'redis>=8,<9')",
                python.display()
            ))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-tests/bin/python");
    for python in [venv, PathBuf::from("python3")] {
        if has_redis_py(&python) {
            return Ok(python);
        }
    }
    Err(
        "a Python with redis-py 8: none of CONCORDKV_TEST_PYTHON, .venv-tests/bin/python \
         (made by .ci/run), python3 imports it"
            .into(),
    )
}

fn find_redis_server() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| "redis-server on PATH (Debian's redis-server package)".into())
}

/// A `redis-server` of this test's own; killed when dropped, panic or not.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port with no persistence. A port found free can
    /// be taken by another test's server first, so retry until the server
    /// answering is ours (its `process_id`).
    fn start(binary: &Path, dir: &Path) -> RedisServer {
        for _ in 0..20 {
            let port = free_port();
            let child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut server = RedisServer { child, port };
            if server.answers_as_itself() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn answers_as_itself(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                break stream;
            }
            if self.child.try_wait().expect("wait").is_some() || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            .expect("send INFO");
        let wanted = format!("\r\nprocess_id:{}\r\n", self.child.id());
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        // The line sits in the middle of the reply, so reading until it shows
        // up (or the connection ends) is enough.
        while !String::from_utf8_lossy(&seen).contains(&wanted) {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the script against `port` and parses what it printed. Its output
/// goes to files, so a large one cannot block it on a full pipe, and it is
/// killed if it hangs on a server that stopped answering.
fn run_script(python: &Path, port: u16, scratch: &Path, side: &str) -> Vec<Value> {
    let out_path = scratch.join(format!("{side}.json"));
    let err_path = scratch.join(format!("{side}.err"));
    let mut child = Command::new(python)
        .arg(script())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("start the redis-py script");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the redis-py script against {side} ran over 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "the redis-py script against {side} failed ({status}):\n{stderr}"
    );
    let stdout = std::fs::read_to_string(&out_path).expect("read the script's output");
    match serde_json::from_str(&stdout) {
        Ok(Value::Array(steps)) => steps,
        other => panic!("the script against {side} printed no JSON list ({other:?}):\n{stdout}"),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON prints")
}

#[test]
fn redis_py_gets_the_same_results_from_concordkv_as_from_redis() {
    let (python, redis_server) = match (find_python(), find_redis_server()) {
        (Ok(python), Ok(redis_server)) => (python, redis_server),
        (python, redis_server) => {
            let missing: Vec<String> = [python.err(), redis_server.err()]
                .into_iter()
                .flatten()
                .collect();
            let missing = missing.join("; and ");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI must install what this test needs (.ci/run does): missing {missing}");
            }
            // Straight to stderr: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "skipping the redis-py comparison: missing {missing}"
            );
            return;
        }
    };

    let scratch = tempfile::tempdir().expect("tempdir");
    let ours_dir = scratch.path().join("concordkv");
    let redis_dir = scratch.path().join("redis");
    std::fs::create_dir(&ours_dir).expect("mkdir");
    std::fs::create_dir(&redis_dir).expect("mkdir");

    let ours = Server::start(&ours_dir, &[]);
    let redis = RedisServer::start(&redis_server, &redis_dir);
    let expected = run_script(&python, redis.port, scratch.path(), "redis-server");
    let got = run_script(&python, ours.port, scratch.path(), "concordkv");
    drop(redis);
    drop(ours);

    assert!(!expected.is_empty(), "the script made no calls");
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        let step = want.get(0).and_then(Value::as_str).unwrap_or("?");
        assert_eq!(
            want.get(0),
            have.get(0),
            "step {i}: the two runs describe different calls"
        );
        assert!(
            want.get(1) == have.get(1),
            "step {i} ({step}) differs.\nredis-server:\n{}\nconcordkv:\n{}",
            pretty(&want[1]),
            pretty(&have[1]),
        );
    }
    assert_eq!(
        expected.len(),
        got.len(),
        "the runs made different numbers of calls"
    );
}

/// A field of a `COMMAND DOCS` map (RESP3 maps, as redis-rs reads them).
fn doc_field<'a>(map: &'a redis::Value, name: &str) -> Option<&'a redis::Value> {
    let redis::Value::Map(pairs) = map else {
        return None;
    };
    pairs.iter().find_map(|(k, v)| match k {
        redis::Value::BulkString(b) if b == name.as_bytes() => Some(v),
        redis::Value::SimpleString(s) if s == name => Some(v),
        _ => None,
    })
}

fn doc_text(map: &redis::Value, name: &str) -> Option<String> {
    match doc_field(map, name)? {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// An argument as redis-cli's hints show it: `[EX seconds|PX milliseconds]`.
fn hint(arg: &redis::Value) -> String {
    let parts = || -> Vec<String> {
        match doc_field(arg, "arguments") {
            Some(redis::Value::Array(parts)) => parts.iter().map(hint).collect(),
            _ => Vec::new(),
        }
    };
    let kind = doc_text(arg, "type").unwrap_or_default();
    let token = doc_text(arg, "token");
    let mut shown = match kind.as_str() {
        "pure-token" => token.clone().unwrap_or_default(),
        "oneof" => parts().join("|"),
        "block" => parts().join(" "),
        _ => doc_text(arg, "name").unwrap_or_default(),
    };
    if let (Some(token), false) = (token, kind == "pure-token") {
        shown = format!("{token} {shown}");
    }
    let flags: Vec<String> = match doc_field(arg, "flags") {
        Some(redis::Value::Array(flags)) | Some(redis::Value::Set(flags)) => flags
            .iter()
            .filter_map(|f| match f {
                redis::Value::SimpleString(s) => Some(s.clone()),
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if flags.iter().any(|f| f == "multiple") {
        shown = format!("{shown} [{shown} ...]");
    }
    if flags.iter().any(|f| f == "optional") {
        shown = format!("[{shown}]");
    }
    shown
}

/// The hint of every command in a `COMMAND DOCS` reply.
fn hints(port: u16, names: &[String]) -> Vec<(String, String)> {
    let url = format!("redis://127.0.0.1:{port}/?protocol=resp3");
    let mut c = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect");
    let docs: redis::Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg(names)
        .query(&mut c)
        .expect("COMMAND DOCS");
    names
        .iter()
        .map(|name| {
            let doc = doc_field(&docs, name)
                .unwrap_or_else(|| panic!("COMMAND DOCS {name} answers nothing on port {port}"));
            let args = match doc_field(doc, "arguments") {
                Some(redis::Value::Array(args)) => args.iter().map(hint).collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            (name.clone(), args.join(" "))
        })
        .collect()
}

/// `redis-cli` shows, while a command is typed, hints built from `COMMAND
/// DOCS`: every command both servers know must give the same hints
/// (`SAVE` and `BGSAVE` take `FULL|INCREMENTAL` here instead of Redis's
/// `SCHEDULE`).
#[test]
fn command_docs_give_redis_cli_the_same_hints_as_redis() {
    let Ok(redis_server) = find_redis_server() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install redis-server (.ci/run does)"
        );
        let _ = writeln!(std::io::stderr(), "skipping: no redis-server on PATH");
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let ours = Server::start(scratch.path(), &[]);
    let redis_dir = scratch.path().join("redis");
    std::fs::create_dir(&redis_dir).expect("mkdir");
    let redis = RedisServer::start(&redis_server, &redis_dir);
    let url = format!("redis://127.0.0.1:{}/", ours.port);
    let mut c = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect");
    let names: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .query(&mut c)
        .expect("COMMAND LIST");
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| !matches!(n.as_str(), "save" | "bgsave"))
        .collect();
    assert!(names.len() > 50, "{names:?}");
    let want = hints(redis.port, &names);
    let have = hints(ours.port, &names);
    for ((name, want), (_, have)) in want.iter().zip(&have) {
        assert_eq!(have, want, "the hint of {name}");
    }
    assert_eq!(
        hints(ours.port, &["set".to_string()])[0].1,
        "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"
    );
}
