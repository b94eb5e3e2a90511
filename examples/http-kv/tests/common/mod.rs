//! Runs the real `http-kv` binary on 127.0.0.1 (a port the system picks,
//! read from the program's output) over a data directory, and talks HTTP
//! to it.

#![allow(dead_code)] // each test file uses its own part of this

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Segment size of every server the tests start (`wal.max_segment_bytes`,
/// through the environment): a new segment is filled with zeros before it
/// is used, and at the default 64 MiB that takes seconds per open here.
/// Small segments also make the tests' writes rotate.
const SEGMENT_BYTES: &str = "65536";
/// How long a start (opening and recovering the store) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop after SIGTERM may take (actix-web's grace is 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `http-kv`; killed (SIGKILL) when dropped, if still running.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Server {
    /// Starts the binary with data in `data_dir` and the extra arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec![OsStr::new("--data-dir"), data_dir.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        Server::start_in(None, &args)
    }

    /// Starts the binary in `cwd` (or the test's directory) with exactly
    /// these arguments, plus `--listen 127.0.0.1:0`.
    pub fn start_in(cwd: Option<&Path>, args: &[&OsStr]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_http-kv"));
        command
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("CONCORDKV__DATA_DIR")
            .env("CONCORDKV__WAL__MAX_SEGMENT_BYTES", SEGMENT_BYTES)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("start http-kv");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (found, address) = mpsc::channel();
        // Reads every line (so the pipe never fills), reporting the address.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("http-kv: listening on ") {
                    let _ = found.send(url.to_string());
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let base = loop {
            if let Ok(url) = address.recv_timeout(Duration::from_millis(50)) {
                break url;
            }
            if let Some(status) = child.try_wait().expect("poll http-kv") {
                panic!("http-kv exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "http-kv did not start in time");
        };
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll http-kv") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "http-kv did not stop after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, and waits for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL http-kv");
        self.child.wait().expect("reap http-kv");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client that returns every status as a response (no status is an
/// error) and gives up on a request after 10 s.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A response's status and body as text.
pub fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), ureq::Error> {
    let mut response = response?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    Ok((status, body))
}

pub fn put(agent: &ureq::Agent, url: &str, value: &str) -> (u16, String) {
    answer(agent.put(url).send(value)).expect("PUT")
}

pub fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    answer(agent.get(url).call()).expect("GET")
}

pub fn delete(agent: &ureq::Agent, url: &str) -> (u16, String) {
    answer(agent.delete(url).call()).expect("DELETE")
}

/// `GET /kv?prefix=...&limit=...` as (key, value) pairs, in the order given.
pub fn list(
    agent: &ureq::Agent,
    server: &Server,
    prefix: &str,
    limit: usize,
) -> Vec<(String, String)> {
    let (status, body) = get(
        agent,
        &server.url(&format!("/kv?prefix={prefix}&limit={limit}")),
    );
    assert_eq!(status, 200, "{body}");
    let items: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON array");
    items
        .iter()
        .map(|item| {
            (
                item["key"].as_str().expect("key").to_string(),
                item["value"].as_str().expect("value").to_string(),
            )
        })
        .collect()
}
