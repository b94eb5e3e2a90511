//! Runs real `raft-kv` processes on 127.0.0.1, three to a cluster, each
//! over its own data directory, and talks HTTP to them.

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a node may take to open its stores and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to elect a leader or to converge.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Timings that make elections quick, and snapshots frequent enough that a
/// node down for a thousand writes comes back through one.
pub const FREQUENT_SNAPSHOTS: &str = r#"
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
snapshot_logs_since_last = 200
max_in_snapshot_log_to_keep = 50
snapshot_max_chunk_bytes = 4096

[store.wal]
max_segment_bytes = 65536
"#;

/// Quick elections, no snapshot during the test, small segments (so the
/// log has sealed segments to damage).
pub const NO_SNAPSHOTS: &str = r#"
[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
snapshot_logs_since_last = 1000000

[store.wal]
max_segment_bytes = 16384
"#;

/// A running node; killed (SIGKILL) when dropped.
pub struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Cluster {
    dir: TempDir,
    config: PathBuf,
    ports: [u16; 3],
    nodes: [Option<Node>; 3],
    pub agent: ureq::Agent,
}

/// Three ports free now (held together, so they differ).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local address").port();
    [port(0), port(1), port(2)]
}

impl Cluster {
    /// Starts three nodes, node 1 initializing the cluster.
    pub fn start(config: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, config).expect("write the node configuration");
        let mut cluster = Cluster {
            dir,
            config: path,
            ports: free_ports(),
            nodes: [None, None, None],
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        };
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster
    }

    /// Node `i`'s (0-based) data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}", i + 1))
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    fn command(&self, i: usize) -> Command {
        let members: Vec<String> = (0..3)
            .map(|j| format!("{}=127.0.0.1:{}", j + 1, self.ports[j]))
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_raft-kv"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--id", &(i + 1).to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .env_remove("CONCORDKV__DATA_DIR")
            .stdin(Stdio::null());
        if i == 0 {
            command.args(["--init", &members.join(",")]);
        }
        command
    }

    /// Starts node `i` and waits until it listens.
    pub fn start_node(&mut self, i: usize) {
        let mut child = self
            .command(i)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start raft-kv");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (found, listening) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(" listening on ") {
                    let _ = found.send(());
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        while listening.recv_timeout(Duration::from_millis(50)).is_err() {
            if let Some(status) = child.try_wait().expect("poll raft-kv") {
                panic!("node {} exited before listening: {status}", i + 1);
            }
            assert!(Instant::now() < deadline, "node {} did not start", i + 1);
        }
        self.nodes[i] = Some(Node { child });
    }

    /// Runs node `i` expecting it to refuse to start: its exit status and
    /// what it wrote to stderr.
    pub fn start_refused(&self, i: usize) -> (ExitStatus, String) {
        let mut child = self
            .command(i)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start raft-kv");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr is piped")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (child.wait().expect("reap raft-kv"), stderr)
    }

    /// kill -9 of node `i`, reaped.
    pub fn kill9(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("node is running");
        node.child.kill().expect("SIGKILL");
        node.child.wait().expect("reap");
    }

    pub fn running(&self) -> Vec<usize> {
        (0..3).filter(|&i| self.nodes[i].is_some()).collect()
    }

    fn json(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let mut response = self.agent.get(&self.url(i, path)).call().ok()?;
        if response.status() != 200 {
            return None;
        }
        serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
    }

    /// openraft's metrics of node `i`.
    pub fn metrics(&self, i: usize) -> Option<serde_json::Value> {
        self.json(i, "/cluster")
    }

    /// The node every running node names as leader, once they agree and
    /// it says it leads (its index, and its term).
    pub fn leader(&self) -> (usize, u64) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let seen: Vec<Option<(u64, u64)>> = self
                .running()
                .iter()
                .map(|&i| {
                    let m = self.metrics(i)?;
                    Some((m["current_leader"].as_u64()?, m["current_term"].as_u64()?))
                })
                .collect();
            if let Some(Some((leader, term))) = seen.first() {
                let agreed = seen.iter().all(|s| *s == Some((*leader, *term)));
                let index = (*leader - 1) as usize;
                let leads = self.metrics(index).is_some_and(|m| m["state"] == "Leader");
                if agreed && leads && self.nodes[index].is_some() {
                    return (index, *term);
                }
            }
            assert!(Instant::now() < deadline, "no leader: {seen:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client of the cluster's nodes, for other threads.
    pub fn client(&self) -> Client {
        Client {
            ports: self.ports,
            agent: self.agent.clone(),
        }
    }

    pub fn write(&self, key: &str, value: &str, deadline: Instant) -> Result<u64, String> {
        self.client().write(key, value, deadline)
    }

    /// Waits until every running node applied the same last index as the
    /// leader's log, then returns each node's keys.
    pub fn converged(&self) -> Vec<BTreeMap<String, String>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let (leader, _) = self.leader();
            let target = self
                .metrics(leader)
                .and_then(|m| m["last_log_index"].as_u64());
            let applied: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|&i| {
                    self.json(i, "/state")
                        .and_then(|s| s["last_applied"].as_u64())
                })
                .collect();
            if target.is_some() && applied.iter().all(|a| *a == target) {
                return self
                    .running()
                    .iter()
                    .map(|&i| {
                        let dump = self.json(i, "/dump").expect("dump");
                        serde_json::from_value(dump).expect("a JSON object of strings")
                    })
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "no convergence: leader log {target:?}, applied {applied:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes to the cluster, whichever node leads.
#[derive(Clone)]
pub struct Client {
    ports: [u16; 3],
    agent: ureq::Agent,
}

impl Client {
    /// Writes `key` through whichever node leads, following redirects and
    /// trying the next node while none is known or reachable; `Ok` (the
    /// log index) only once the cluster committed it. `Err` if no leader
    /// took it before `deadline`.
    pub fn write(&self, key: &str, value: &str, deadline: Instant) -> Result<u64, String> {
        let mut target = 0;
        let mut last = String::new();
        while Instant::now() < deadline {
            let url = format!("http://127.0.0.1:{}/kv/{key}", self.ports[target]);
            match self.agent.put(&url).send(value) {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let body = r.body_mut().read_to_string().unwrap_or_default();
                    if status == 200 {
                        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                        return Ok(v["index"].as_u64().expect("index"));
                    }
                    if status == 421 {
                        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                        if let Some(id) = v["leader_id"].as_u64() {
                            target = (id - 1) as usize;
                            continue;
                        }
                    }
                    last = format!("{status} {body}");
                }
                Err(e) => last = e.to_string(),
            }
            target = (target + 1) % 3;
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{key}: not written: {last}"))
    }
}

/// The files of `dir` with extension `ext`, sorted by name.
pub fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Checks that each node holds every acknowledged write, and the same keys.
pub fn assert_holds(nodes: &[BTreeMap<String, String>], acked: &BTreeMap<String, String>) {
    for (i, node) in nodes.iter().enumerate() {
        for (key, value) in acked {
            assert_eq!(
                node.get(key),
                Some(value),
                "a node ({i} of those running) lost acknowledged {key}"
            );
        }
        assert_eq!(node, &nodes[0], "two nodes applied different keys");
    }
}
