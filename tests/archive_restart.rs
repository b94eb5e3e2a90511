//! The archiver panics while writers append, compactions retire files and
//! uploads run: the supervisor restarts it, the new one learns what the
//! archive holds from a fresh listing and catches up, the restart is
//! counted, and a restore equals the store. Against moto's S3 server from
//! `.venv-tests/bin/moto_server` (made by `.ci/run`); skipped without it,
//! except in CI (`CI=true`), where it fails.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::config;
use concordkv::archive::{restore, RestoreTarget};
use concordkv::{ActorKind, Store, SyncMode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

const BUCKET: &str = "concordkv-restart";

/// moto's S3 server on a free loopback port; killed when dropped.
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tests/bin/moto_server");
    if !binary.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install moto[server] (.ci/run does): no {}",
            binary.display()
        );
        eprintln!(
            "skipping: no {} (bash .ci/run installs it)",
            binary.display()
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            // moto creates a bucket on an unsigned PUT.
            write!(
                stream,
                "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .expect("create the bucket");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("moto's answer");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            return Some(moto);
        }
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The archiver restarts of `store` counted since the last snapshot.
fn restarts(recorder: &metrics_util::debugging::Snapshotter, store: &str) -> u64 {
    recorder
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let key = key.key();
            let ours = key.name() == "concordkv_actor_restarts_total"
                && key
                    .labels()
                    .any(|l| l.key() == "actor" && l.value() == "archiver")
                && key
                    .labels()
                    .any(|l| l.key() == "store" && l.value() == store);
            match value {
                DebugValue::Counter(n) if ours => Some(n),
                _ => None,
            }
        })
        .unwrap_or(0)
}

/// Waits until the archive holds every record the store has.
async fn archived(store: &Store, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stats().archived_seq < store.stats().last_seq {
        assert!(
            Instant::now() < deadline,
            "{what}: the archive holds {} of {}",
            store.stats().archived_seq,
            store.stats().last_seq
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_restarted_archiver_catches_up_and_the_archive_restores_the_store() {
    let Some(moto) = start_moto() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test process");
    // The archive's credentials come from the environment, as the AWS SDKs
    // read them; moto takes any.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&dir.path().join("data"), SyncMode::Always);
    cfg.wal.max_segment_bytes = 16 * 1024;
    cfg.compaction.threshold = 400;
    cfg.archive.url = format!("s3://{BUCKET}/restart");
    cfg.archive.endpoint = format!("http://127.0.0.1:{}", moto.1);
    cfg.archive.allow_http = true;
    cfg.archive.max_lag_ms = 50;
    cfg.archive.max_retries = 1;
    let (store, _) = Store::open(cfg.clone()).await.expect("open");
    let label = "data";

    // A snapshot of the recorder takes the counts it returns: they add up.
    let mut counted = 0;
    for round in 0..4u32 {
        for i in 0..500u32 {
            store
                .set(format!("k{}", i % 120), format!("v{round}-{i}"))
                .await
                .expect("set");
        }
        // Mid-pass or between passes: the restart must not matter.
        store.crash_actor(ActorKind::Archiver);
        store.compact().await.expect("compact");
        for i in 0..100u32 {
            store
                .set(format!("after{round}-{i}"), "x")
                .await
                .expect("set");
        }
        // The next panic goes to the new archiver (one sent to the old
        // before it died would die with its mailbox).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            counted += restarts(&snapshotter, label);
            if counted > u64::from(round) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{counted} archiver restarts counted after {} panics",
                round + 1
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    archived(&store, "after 4 restarts").await;
    counted += restarts(&snapshotter, label);
    assert_eq!(counted, 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.stats().archive_pending_bytes > 0 {
        assert!(
            Instant::now() < deadline,
            "retired files were never released"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let expected = store.state().dump();
    store.shutdown().await.expect("shutdown");

    let to = dir.path().join("restored");
    restore(&cfg.archive, &to, RestoreTarget::Latest)
        .await
        .expect("restore");
    let (restored, _) = Store::open(config(&to, SyncMode::Always))
        .await
        .expect("open the restore");
    assert_eq!(restored.state().dump(), expected);
    restored.shutdown().await.expect("shutdown");
}
