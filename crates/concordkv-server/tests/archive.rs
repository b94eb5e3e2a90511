//! The archive against a real S3 server on loopback: moto's server mode,
//! from `.venv-tests/bin/moto_server` (made by `.ci/run`), started and
//! stopped by each test. Without it the tests are skipped with a note,
//! except in CI (`CI=true`), where they fail.
//!
//! A server archives while it takes writes, compacts and retires segments;
//! restores to the latest record and to earlier sequence numbers must equal
//! the writes up to there, pass `verify` and serve; an archive that is not
//! there keeps every retired file until it is; damage in the bucket and a
//! gap are refused by name; a follower converges on the store it follows
//! and refuses writes, and an HTTP request or a half-sent one to it runs
//! nothing.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{free_port, Client, Server};
use object_store::ObjectStoreExt;
use redis_protocol::resp2::types::BytesFrame;

const BUCKET: &str = "concordkv-archive";

/// A moto S3 server of this test's own; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

/// moto's server binary, and this test's turn: the tests of this file run
/// one at a time (each runs a moto and a server or two; side by side on a
/// two-core machine their timing would be the scheduler's).
struct MotoBinary {
    path: PathBuf,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for MotoBinary {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

fn moto_binary() -> Option<MotoBinary> {
    static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-tests/bin/moto_server");
    if venv.is_file() {
        return Some(MotoBinary {
            path: venv,
            _turn: TURNS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        });
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI must install moto[server] (.ci/run does): no {}",
            venv.display()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping: no {} (bash .ci/run installs it)",
        venv.display()
    );
    None
}

/// This test's turn, a moto of its own with the bucket made, and a scratch
/// directory.
fn moto_with_bucket() -> Option<(MotoBinary, Moto, tempfile::TempDir)> {
    let binary = moto_binary()?;
    let moto = Moto::start(&binary, free_port());
    moto.create_bucket();
    Some((binary, moto, tempfile::tempdir().expect("tempdir")))
}

impl Moto {
    fn start(binary: &Path, port: u16) -> Moto {
        Moto::start_with_env(binary, port, &[])
    }

    fn start_with_env(binary: &Path, port: u16, env: &[(&str, &str)]) -> Moto {
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn create_bucket(&self) {
        ureq::put(&format!("{}/{BUCKET}", self.endpoint()))
            .send_empty()
            .expect("create the bucket");
    }

    /// The XML of a path-style listing of `prefix`.
    fn listing(&self, prefix: &str) -> String {
        ureq::get(&format!(
            "{}/{BUCKET}?list-type=2&prefix={prefix}",
            self.endpoint()
        ))
        .call()
        .expect("list")
        .body_mut()
        .read_to_string()
        .expect("listing body")
    }

    /// Every key under `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.listing(prefix)
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect()
    }
}

impl Moto {
    /// A signed client of the bucket (moto refuses anonymous object reads).
    fn client(&self) -> (tokio::runtime::Runtime, object_store::aws::AmazonS3) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("S3 client");
        (runtime, s3)
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let (runtime, s3) = self.client();
        runtime.block_on(async {
            s3.get(&key.into())
                .await
                .expect("download")
                .bytes()
                .await
                .expect("body")
                .to_vec()
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        let (runtime, s3) = self.client();
        runtime
            .block_on(s3.put(&key.into(), bytes.into()))
            .expect("upload");
    }

    fn delete(&self, key: &str) {
        let (runtime, s3) = self.client();
        runtime.block_on(s3.delete(&key.into())).expect("delete");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of a process archiving to `prefix` on `endpoint`.
fn archive_env(endpoint: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("CONCORDKV__ARCHIVE__URL", format!("s3://{BUCKET}/{prefix}")),
        ("CONCORDKV__ARCHIVE__ENDPOINT", endpoint.into()),
        ("CONCORDKV__ARCHIVE__ALLOW_HTTP", "true".into()),
        ("CONCORDKV__ARCHIVE__MAX_LAG_MS", "50".into()),
        ("CONCORDKV__ARCHIVE__MAX_RETRIES", "1".into()),
        ("CONCORDKV__ARCHIVE__RETRY_TIMEOUT_MS", "2000".into()),
        // Small segments and eager compaction: many sealed and retired.
        ("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "65536".into()),
        ("CONCORDKV__COMPACTION__THRESHOLD", "400".into()),
        ("CONCORDKV__COMPACTION__RATIO", "0.2".into()),
    ]
}

fn start_server(dir: &Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &env)
}

fn info_field(client: &mut Client, field: &str) -> u64 {
    let BytesFrame::BulkString(info) = client.call(&["INFO", "persistence"]) else {
        panic!("INFO answered no bulk string");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Waits until the archive holds every record written.
fn wait_archived(client: &mut Client, last_seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while info_field(client, "archive_seq") < last_seq {
        assert!(
            Instant::now() < deadline,
            "the archive holds up to {} of {last_seq} after 60 s",
            info_field(client, "archive_seq")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `count` sets over 300 keys after `model`'s, recording the model
/// after each sequence number in `marks`.
fn write_sets(
    client: &mut Client,
    model: &mut BTreeMap<String, String>,
    from: u64,
    count: u64,
    marks: &[u64],
    states: &mut BTreeMap<u64, BTreeMap<String, String>>,
) {
    for seq in from..from + count {
        let (key, value) = (format!("k{:03}", seq * 7 % 300), format!("value-{seq}"));
        assert_eq!(client.call(&["SET", &key, &value]), common::server::ok());
        model.insert(key, value);
        if marks.contains(&seq) {
            states.insert(seq, model.clone());
        }
    }
}

fn restore(env: &[(&'static str, String)], to: &Path, seq: Option<u64>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_concordkv"));
    command.arg("restore").arg("--to").arg(to);
    if let Some(seq) = seq {
        command.args(["--seq", &seq.to_string()]);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run concordkv restore")
}

/// Restores `seq`, checks it with `verify`, serves it and reads it whole.
fn restored_state(
    env: &[(&'static str, String)],
    scratch: &Path,
    seq: Option<u64>,
) -> BTreeMap<String, String> {
    let to = scratch.join(format!(
        "restored-{}",
        seq.map_or("latest".into(), |s| s.to_string())
    ));
    let out = restore(env, &to, seq);
    assert!(
        out.status.success(),
        "restore {seq:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .arg("verify")
        .arg(&to)
        .output()
        .expect("run verify");
    assert!(
        verify.status.success(),
        "verify of the restore {seq:?}: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let server = Server::start(&to, &[]);
    let mut client = server.client();
    let mut state = BTreeMap::new();
    for i in 0..300 {
        let key = format!("k{i:03}");
        if let BytesFrame::BulkString(value) = client.call(&["GET", &key]) {
            state.insert(key, String::from_utf8_lossy(&value).into_owned());
        }
    }
    server.terminate();
    state
}

#[test]
fn restores_equal_the_writes_up_to_the_latest_and_earlier_sequence_numbers() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let env = archive_env(&moto.endpoint(), "restore");
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    let marks = [700, 1500, 1900, 3100];
    write_sets(&mut client, &mut model, 1, 1500, &marks, &mut states);
    // A moment when the archive held exactly 1..=1500 (S3 times objects
    // to the second: a second of quiet on either side).
    wait_archived(&mut client, 1500);
    std::thread::sleep(Duration::from_millis(1100));
    let moment = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(1100));
    write_sets(&mut client, &mut model, 1501, 2500, &marks, &mut states);
    wait_archived(&mut client, 4000);
    // Compactions retired segments: they went to the archive, then away.
    assert!(
        moto.keys("restore/snap/").len() >= 2,
        "compactions wrote snapshots"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut client, "archive_pending_bytes") > 0 {
        assert!(
            Instant::now() < deadline,
            "retired files were never released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.terminate().success());

    assert_eq!(restored_state(&env, scratch.path(), None), model, "latest");
    let at = humantime::format_rfc3339_millis(moment).to_string();
    let to = scratch.path().join("restored-at-time");
    let mut command = Command::new(env!("CARGO_BIN_EXE_concordkv"));
    command
        .args(["restore", "--time", &at])
        .arg("--to")
        .arg(&to);
    let out = command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("restore --time");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("up to sequence number 1500"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for seq in [700, 1900, 3100] {
        assert_eq!(
            restored_state(&env, scratch.path(), Some(seq)),
            states[&seq],
            "as of {seq}"
        );
    }
}

#[test]
fn an_unreachable_archive_keeps_retired_files_until_it_is_back() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let env = archive_env(&endpoint, "outage");
    let server = start_server(&data, &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut client, &mut model, 1, 3000, &[], &mut states);
    // Compactions ran, but nothing they retired may vanish.
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut client, "archive_pending_bytes") == 0 {
        assert!(Instant::now() < deadline, "no compaction retired a segment");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(info_field(&mut client, "archive_seq"), 0);
    let pending = std::fs::read_dir(data.join("archive-pending"))
        .expect("archive-pending")
        .count();
    assert!(pending > 0);

    // The archive comes (back): everything is uploaded, then released.
    let moto = Moto::start(&moto_server, port);
    moto.create_bucket();
    write_sets(&mut client, &mut model, 3001, 200, &[], &mut states);
    wait_archived(&mut client, 3200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut client, "archive_pending_bytes") > 0 {
        assert!(
            Instant::now() < deadline,
            "retired files were never released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.terminate().success());
    assert_eq!(restored_state(&env, scratch.path(), None), model);
}

#[test]
fn restore_names_a_damaged_object_and_a_missing_range() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let env = archive_env(&moto.endpoint(), "damage");
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut client, &mut model, 1, 1500, &[], &mut states);
    wait_archived(&mut client, 1500);
    assert!(server.terminate().success());

    let chunks = moto.keys("damage/wal/");
    assert!(chunks.len() >= 3, "{chunks:?}");
    // A flipped byte: same size, another CRC.
    let victim = chunks[chunks.len() / 2].clone();
    let mut bytes = moto.get(&victim);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    moto.put(&victim, bytes);
    let out = restore(&env, &scratch.path().join("r1"), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(victim.as_str()) && stderr.contains("damaged"),
        "{stderr}"
    );

    // A missing chunk: the gap is named.
    moto.delete(&victim);
    let out = restore(&env, &scratch.path().join("r2"), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing from the archive"), "{stderr}");
}

/// What `concordkv serve` says when it cannot start archiving.
fn refused_at_start(moto: &Moto, prefix: &str, credentials: &str) -> String {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .arg("serve")
        .env("CONCORDKV__DATA_DIR", scratch.path().join("data"))
        .env(
            "CONCORDKV__SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("CONCORDKV__METRICS__ENABLED", "false")
        .envs(archive_env(&moto.endpoint(), prefix))
        .env("AWS_ACCESS_KEY_ID", credentials)
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_credentials_stop_the_server_at_start() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    // Every request must then be signed with a key moto's IAM knows.
    let moto = Moto::start_with_env(
        &moto_server,
        free_port(),
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")],
    );
    let stderr = refused_at_start(&moto, "creds", "AKIANOBODYKNOWS");
    assert!(
        stderr.contains("InvalidAccessKeyId") && stderr.contains(&format!("s3://{BUCKET}/creds")),
        "{stderr}"
    );
}

#[test]
fn a_bucket_that_does_not_exist_stops_the_server_at_start() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    let moto = Moto::start(&moto_server, free_port());
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .arg("serve")
        .env("CONCORDKV__DATA_DIR", scratch.path().join("data"))
        .env(
            "CONCORDKV__SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("CONCORDKV__METRICS__ENABLED", "false")
        .envs(archive_env(&moto.endpoint(), "nobucket"))
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("NoSuchBucket") && stderr.contains(&format!("s3://{BUCKET}/nobucket")),
        "{stderr}"
    );
}

fn all_keys(client: &mut Client) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for i in 0..300 {
        let key = format!("k{i:03}");
        if let BytesFrame::BulkString(value) = client.call(&["GET", &key]) {
            state.insert(key, String::from_utf8_lossy(&value).into_owned());
        }
    }
    state
}

fn replication_field(client: &mut Client, field: &str) -> String {
    let BytesFrame::BulkString(info) = client.call(&["INFO", "replication"]) else {
        panic!("INFO answered no bulk string");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
        .trim()
        .to_string()
}

#[test]
fn a_follower_converges_within_the_lag_bound_and_refuses_writes() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let env = archive_env(&moto.endpoint(), "follow");
    let primary = start_server(&scratch.path().join("primary"), &env);
    let mut writer = primary.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut writer, &mut model, 1, 1200, &[], &mut states);
    wait_archived(&mut writer, 1200);

    // The follower restores what is archived, then tails the rest.
    let follower_env: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "CONCORDKV__ARCHIVE__URL")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let url = format!("s3://{BUCKET}/follow");
    let follower = Server::start_with_args(
        &scratch.path().join("follower"),
        &follower_env,
        &["--follow", &url],
    );
    let mut reader = follower.client();
    assert_eq!(replication_field(&mut reader, "role"), "slave");
    write_sets(&mut writer, &mut model, 1201, 800, &[], &mut states);
    // Writes stop: the follower holds all of them within max_lag_ms (50)
    // plus one poll (50), and some slack for a loaded machine.
    let stopped = Instant::now();
    while replication_field(&mut reader, "slave_repl_offset") != "2000" {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the follower is at {} of 2000",
            replication_field(&mut reader, "slave_repl_offset")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let converged = stopped.elapsed();
    assert_eq!(all_keys(&mut reader), model);
    assert_eq!(replication_field(&mut reader, "master_link_status"), "up");
    assert_eq!(replication_field(&mut reader, "follow_lag_records"), "0");

    // Writes are refused as a Redis replica refuses them, MULTI too.
    let refused = reader.call(&["SET", "k001", "mine"]);
    assert!(
        common::server::is_error(&refused, "READONLY"),
        "{refused:?}"
    );
    assert!(common::server::is_error(
        &reader.call(&["DEL", "k001"]),
        "READONLY"
    ));
    assert_eq!(reader.call(&["MULTI"]), common::server::ok());
    assert!(common::server::is_error(
        &reader.call(&["SET", "a", "b"]),
        "READONLY"
    ));
    assert!(common::server::is_error(
        &reader.call(&["EXEC"]),
        "EXECABORT"
    ));
    assert_eq!(all_keys(&mut reader), model);

    // What a web page's fetch() sends, and a request cut off mid-value:
    // nothing runs, the page gets no answer, and the follower goes on.
    let body = "FLUSHALL\r\nSET pwned yes\r\n";
    let mut page = TcpStream::connect(("127.0.0.1", follower.port)).expect("connect");
    page.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // One write: the follower closes the connection at the request line,
    // and a second write could then fail with a broken pipe, which is
    // the refusal working, not a failure.
    if let Err(e) = page.write_all(request.as_bytes()) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "send: {e}"
        );
    }
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut page, &mut answer);
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let mut half = TcpStream::connect(("127.0.0.1", follower.port)).expect("connect");
    half.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\npwned\r\n$3\r\nye")
        .expect("send");
    assert_eq!(reader.call(&["EXISTS", "pwned"]), BytesFrame::Integer(0));
    assert_eq!(all_keys(&mut reader), model);
    drop(half);

    // Restarted, it goes on from its own copy.
    assert!(follower.terminate().success());
    write_sets(&mut writer, &mut model, 2001, 100, &[], &mut states);
    let follower = Server::start_with_args(
        &scratch.path().join("follower"),
        &follower_env,
        &["--follow", &url],
    );
    let mut reader = follower.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replication_field(&mut reader, "slave_repl_offset") != "2100" {
        assert!(
            Instant::now() < deadline,
            "the restarted follower did not catch up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(all_keys(&mut reader), model);

    // A chunk someone else put after the last one, far larger than its
    // name says: the follower stops reading it once more than that has
    // arrived, names it, and applies nothing.
    assert!(primary.terminate().success());
    let last = moto.keys("follow/wal/").into_iter().max().expect("chunks");
    let (dir, name) = last.rsplit_once('/').expect("a chunk name");
    let fields: Vec<&str> = name.split(['-', '_']).collect();
    let (end, last_seq): (u64, u64) = (
        fields[1].parse().expect("end"),
        fields[3].parse().expect("last seq"),
    );
    let hostile = format!(
        "{dir}/{end:012}-{:012}_{:020}-{:020}_00000000",
        end + 16,
        last_seq + 1,
        last_seq + 1
    );
    moto.put(&hostile, vec![0x5a; 4 << 20]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let error = replication_field(&mut reader, "follow_error");
        if error.contains(&hostile["follow/".len()..]) {
            assert!(error.contains("more than the 16 bytes"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal: {error:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(replication_field(&mut reader, "slave_repl_offset"), "2100");
    assert_eq!(all_keys(&mut reader), model);
    let _ = writeln!(
        std::io::stderr(),
        "the follower converged {converged:?} after the writes stopped"
    );
    assert!(follower.terminate().success());
}

#[test]
fn retention_keeps_the_newest_full_snapshots_and_what_follows_them() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let mut env = archive_env(&moto.endpoint(), "retention");
    env.push(("CONCORDKV__ARCHIVE__KEEP_SNAPSHOTS", "1".into()));
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut client, &mut model, 1, 4000, &[], &mut states);
    wait_archived(&mut client, 4000);
    let fulls = || {
        moto.keys("retention/snap/")
            .into_iter()
            .filter(|k| k.contains(".full.snap"))
            .count()
    };
    // The oldest segments go with the snapshots that covered them.
    let first_segment = || {
        moto.keys("retention/wal/")
            .iter()
            .any(|k| k.starts_with("retention/wal/00000000000000000001/"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fulls() != 1 || first_segment() {
        assert!(
            Instant::now() < deadline,
            "{} full snapshots kept; segment 1 kept: {}",
            fulls(),
            first_segment()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.terminate().success());
    assert_eq!(restored_state(&env, scratch.path(), None), model);
    let out = restore(&env, &scratch.path().join("too-early"), Some(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing from the archive"), "{stderr}");
}

/// A loopback TCP proxy to moto that, while `flaky`, cuts most new
/// connections after a few bytes one way or the other: in a request's
/// headers, in the middle of an uploaded body, or after moto took a whole
/// upload but before its answer arrived (the upload happened; the
/// archiver cannot know). One in six goes through.
struct CuttingProxy {
    port: u16,
    /// [`CuttingProxy::DOWN`], [`CuttingProxy::FLAKY`],
    /// [`CuttingProxy::HEALED`] or [`CuttingProxy::SELECTIVE`], for the
    /// connections it accepts next.
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    /// In `SELECTIVE` mode, a connection is cut when a request holding
    /// these bytes goes through it.
    pattern: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttingProxy {
    /// Bytes let through (to moto, to the archiver) before a cut, by the
    /// connection's number.
    /// (The last carries about one 8 MiB chunk and its read-back.)
    const BUDGETS: [(u64, u64); 6] = [
        (100, u64::MAX),
        (1_500, u64::MAX),
        (9_000, u64::MAX),
        (30_000, u64::MAX),
        (u64::MAX, 12),
        (12 << 20, 12 << 20),
    ];
    /// Every connection cut at its first byte.
    const DOWN: u8 = 0;
    const FLAKY: u8 = 1;
    const HEALED: u8 = 2;
    const SELECTIVE: u8 = 3;

    fn start(upstream: u16, mode: u8) -> CuttingProxy {
        use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let mode = Arc::new(AtomicU8::new(mode));
        let cuts = Arc::new(AtomicU64::new(0));
        let pattern = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_mode, accept_cuts) = (mode.clone(), cuts.clone());
        let accept_pattern = pattern.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mode = accept_mode.load(Ordering::SeqCst);
                let watch_for = (mode == Self::SELECTIVE)
                    .then(|| accept_pattern.lock().expect("pattern").clone());
                let (up, down) = match mode {
                    Self::DOWN => (0, 0),
                    Self::FLAKY => Self::BUDGETS[n % Self::BUDGETS.len()],
                    _ => (u64::MAX, u64::MAX),
                };
                let pipe =
                    |from: &TcpStream, to: &TcpStream, budget: u64, watch_for: Option<Vec<u8>>| {
                        let (mut from, mut to) = (
                            from.try_clone().expect("clone a socket"),
                            to.try_clone().expect("clone a socket"),
                        );
                        let (ends, cuts) =
                            ([from.try_clone(), to.try_clone()], accept_cuts.clone());
                        std::thread::spawn(move || {
                            use std::io::Read;
                            let (mut left, mut buf) = (budget, [0u8; 4096]);
                            // The end of the last read, for a pattern split
                            // across two.
                            let mut seen: Vec<u8> = Vec::new();
                            loop {
                                let n = match from.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                if let Some(pattern) = &watch_for {
                                    seen.extend_from_slice(&buf[..n]);
                                    if seen.windows(pattern.len()).any(|w| w == pattern) {
                                        cuts.fetch_add(1, Ordering::SeqCst);
                                        break;
                                    }
                                    seen.drain(..seen.len().saturating_sub(pattern.len()));
                                }
                                let pass = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                                if to.write_all(&buf[..pass]).is_err() {
                                    break;
                                }
                                left -= pass as u64;
                                if pass < n || left == 0 {
                                    cuts.fetch_add(1, Ordering::SeqCst);
                                    break;
                                }
                            }
                            for end in ends.into_iter().flatten() {
                                let _ = end.shutdown(std::net::Shutdown::Both);
                            }
                        });
                    };
                pipe(&client, &server, up, watch_for);
                pipe(&server, &client, down, None);
            }
        });
        CuttingProxy {
            port,
            mode,
            pattern,
            cuts,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, cuts every connection that carries a request holding
    /// `pattern`; lets the rest through.
    fn cut_requests_holding(&self, pattern: &str) {
        *self.pattern.lock().expect("pattern") = pattern.as_bytes().to_vec();
        self.set(Self::SELECTIVE);
    }

    fn cuts(&self) -> u64 {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_link_cut_in_the_middle_of_uploads_loses_and_damages_nothing() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    let moto = Moto::start(&moto_server, free_port());
    moto.create_bucket();
    let proxy = CuttingProxy::start(moto.port, CuttingProxy::FLAKY);
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    let env = archive_env(&format!("http://127.0.0.1:{}", proxy.port), "cut");
    let server = start_server(&data, &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    // Uploads are cut while writes, compactions and retirements go on.
    write_sets(&mut client, &mut model, 1, 3000, &[], &mut states);
    let mut written = 3000;
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.cuts() < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} connections were cut",
            proxy.cuts()
        );
        // Writes go on until then: an archive that caught up opens no
        // more connections, and the one it keeps alive is cut only after
        // 12 MiB, so the writes carry bytes.
        for pad in 0..16 {
            let (key, value) = (format!("k{pad:03}"), format!("{written:0>32768}"));
            assert_eq!(client.call(&["SET", &key, &value]), common::server::ok());
            model.insert(key, value);
            written += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    write_sets(&mut client, &mut model, written + 1, 1000, &[], &mut states);
    written += 1000;

    // The link heals: everything arrives whole and the held files go.
    proxy.set(CuttingProxy::HEALED);
    write_sets(&mut client, &mut model, written + 1, 200, &[], &mut states);
    written += 200;
    wait_archived(&mut client, written);
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut client, "archive_pending_bytes") > 0 {
        assert!(
            Instant::now() < deadline,
            "retired files were never released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.terminate().success());
    // The restore reads from moto itself, past the proxy.
    let direct = archive_env(&moto.endpoint(), "cut");
    assert_eq!(restored_state(&direct, scratch.path(), None), model);
}

#[test]
fn chunks_in_flight_together_count_only_up_to_the_first_that_failed() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    let moto = Moto::start(&moto_server, free_port());
    moto.create_bucket();
    let proxy = CuttingProxy::start(moto.port, CuttingProxy::DOWN);
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut env = archive_env(&format!("http://127.0.0.1:{}", proxy.port), "window");
    // One 64 MiB segment: a backlog of several 8 MiB chunks of it goes up
    // at once, and some of them are cut.
    env.push(("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "67108864".into()));
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let mut model = BTreeMap::new();
    for i in 0..300u32 {
        let key = format!("k{i:03}");
        let value = format!("{i:0>51200}").repeat(2);
        assert_eq!(client.call(&["SET", &key, &value]), common::server::ok());
        model.insert(key, value);
    }
    // 30 MiB wait: the next pass sends four chunks at once, and the first
    // never arrives; the others do, yet count for nothing without it.
    let first_chunk = "PUT /concordkv-archive/window/wal/00000000000000000001/000000000000-";
    let cut_before = proxy.cuts();
    proxy.cut_requests_holding(first_chunk);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.cuts() < cut_before + 5 {
        assert!(
            Instant::now() < deadline,
            "the first chunk was cut only {} times",
            proxy.cuts() - cut_before
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        moto.keys("window/wal/")
            .iter()
            .any(|k| !k.contains("/000000000000-")),
        "later chunks arrived"
    );
    assert_eq!(info_field(&mut client, "archive_seq"), 0);
    proxy.set(CuttingProxy::HEALED);
    wait_archived(&mut client, 300);
    assert!(server.terminate().success());
    let direct = archive_env(&moto.endpoint(), "window");
    assert_eq!(restored_state(&direct, scratch.path(), None), model);
}

#[test]
fn a_snapshot_larger_than_a_part_goes_up_in_parts_and_restores_whole() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let mut env = archive_env(&moto.endpoint(), "large");
    env.push(("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "4194304".into()));
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    // 20 MiB of state: a full snapshot of it is two parts and a half.
    let mut model = BTreeMap::new();
    for i in 0..200u32 {
        let key = format!("k{i:03}");
        let value: String = (0..100 * 1024)
            .map(|j| char::from(b'a' + ((i as usize * 31 + j * 7) % 26) as u8))
            .collect();
        assert_eq!(client.call(&["SET", &key, &value]), common::server::ok());
        model.insert(key, value);
    }
    assert_eq!(client.call(&["SAVE"]), common::server::ok());
    assert_eq!(client.call(&["SET", "k250", "after"]), common::server::ok());
    model.insert("k250".into(), "after".into());
    wait_archived(&mut client, 201);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !moto
        .keys("large/snap/")
        .iter()
        .any(|k| k.contains(".full.snap"))
    {
        assert!(Instant::now() < deadline, "no full snapshot was archived");
        std::thread::sleep(Duration::from_millis(50));
    }
    // S3 marks an object put together from N parts with an ETag ending
    // in -N.
    let listing = moto.listing("large/snap/");
    let full = listing
        .split("<Contents>")
        .find(|entry| entry.contains(".full.snap"))
        .expect("the full snapshot's entry");
    assert!(
        full.contains("-3&quot;</ETag>") || full.contains("-3\"</ETag>"),
        "not uploaded in 3 parts: {full}"
    );
    assert!(server.terminate().success());
    assert_eq!(restored_state(&env, scratch.path(), None), model);

    // A flipped byte in the middle part is found as the stream arrives.
    let name = moto
        .keys("large/snap/")
        .into_iter()
        .find(|k| k.contains(".full.snap"))
        .expect("the full snapshot");
    let mut bytes = moto.get(&name);
    bytes[12 << 20] ^= 0x01;
    moto.put(&name, bytes);
    let out = restore(&env, &scratch.path().join("damaged"), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&name) && stderr.contains("damaged in the archive"),
        "{stderr}"
    );
}

#[test]
fn a_clean_shutdown_leaves_the_archive_holding_every_record() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let mut env = archive_env(&moto.endpoint(), "last-pass");
    // No pass falls due after the first: only the shutdown's archives.
    env.push(("CONCORDKV__ARCHIVE__MAX_LAG_MS", "600000".into()));
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut client, &mut model, 1, 1500, &[], &mut states);
    // (The first pass, at the start, may have taken the first few.)
    assert!(info_field(&mut client, "archive_seq") < 1500);
    assert!(server.terminate().success());
    assert_eq!(restored_state(&env, scratch.path(), None), model);
}

/// The value of gauge `name` (one series: this server's store) on the
/// metrics endpoint at `listen`.
fn gauge(listen: &str, name: &str) -> f64 {
    let body = ureq::get(&format!("http://{listen}/metrics"))
        .call()
        .expect("scrape")
        .body_mut()
        .read_to_string()
        .expect("metrics body");
    body.lines()
        .find(|line| line.starts_with(&format!("{name}{{")))
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .parse()
        .expect("a number")
}

#[test]
fn the_lag_stays_bounded_under_steady_writes_and_is_zero_after_a_restart() {
    let Some((_turn, moto, scratch)) = moto_with_bucket() else {
        return;
    };
    let data = scratch.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = archive_env(&moto.endpoint(), "lag");
    env.push(("CONCORDKV__METRICS__ENABLED", "true".into()));
    env.push(("CONCORDKV__METRICS__LISTEN", listen.clone()));
    let server = start_server(&data, &env);
    let mut client = server.client();
    // Every write is synced: the durable point never stands still, yet the
    // archive is never more than a pass or two behind it.
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    let (started, mut seq, mut worst) = (Instant::now(), 1, 0f64);
    while started.elapsed() < Duration::from_secs(8) {
        write_sets(&mut client, &mut model, seq, 50, &[], &mut states);
        seq += 50;
        worst = worst.max(gauge(&listen, "concordkv_archive_lag_seconds"));
    }
    // (Unbounded, it would reach the 8 s the writes last.)
    assert!(
        worst < 4.0,
        "the archive lag reached {worst} s under writes"
    );
    assert!(server.terminate().success());

    // Reopened with nothing new to upload, it knows the archive holds all.
    let server = start_server(&data, &env);
    let mut client = server.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while info_field(&mut client, "archive_seq") < seq - 1 {
        assert!(
            Instant::now() < deadline,
            "after a restart the archive is said to hold {} of {}",
            info_field(&mut client, "archive_seq"),
            seq - 1
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gauge(&listen, "concordkv_archive_lag_seconds") < 4.0);
    assert!(server.terminate().success());
}

#[test]
fn an_s3_server_restarted_empty_gets_the_archive_again_from_the_local_files() {
    let Some(moto_server) = moto_binary() else {
        return;
    };
    let port = free_port();
    let moto = Moto::start(&moto_server, port);
    moto.create_bucket();
    let scratch = tempfile::tempdir().expect("tempdir");
    let env = archive_env(&moto.endpoint(), "again");
    let server = start_server(&scratch.path().join("data"), &env);
    let mut client = server.client();
    let (mut model, mut states) = (BTreeMap::new(), BTreeMap::new());
    write_sets(&mut client, &mut model, 1, 1500, &[], &mut states);
    wait_archived(&mut client, 1500);
    // moto keeps its objects in memory: killed, it loses them all, as a
    // bucket emptied by hand would.
    drop(moto);
    write_sets(&mut client, &mut model, 1501, 500, &[], &mut states);
    let moto = Moto::start(&moto_server, port);
    moto.create_bucket();
    write_sets(&mut client, &mut model, 2001, 100, &[], &mut states);
    wait_archived(&mut client, 2100);
    assert!(server.terminate().success());
    assert_eq!(restored_state(&env, scratch.path(), None), model);
}
