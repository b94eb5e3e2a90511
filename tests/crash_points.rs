//! A crash at every step of rotation, manifest replacement, snapshotting and
//! compaction leaves a directory that opens to exactly the acknowledged
//! state. The child is this test binary running the ignored
//! `crash_point_child` test, armed through the crate's crash points.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use concordkv::testing::CRASH_POINTS;
use concordkv::{Config, SyncMode};

const CHILD_DIR: &str = "CONCORDKV_CRASH_POINT_CHILD_DIR";
const WRITES: u32 = 3000;
const KEYS: u32 = 40;

fn child_config(dir: &std::path::Path) -> Config {
    let mut cfg = common::config(dir, SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    cfg.snapshot.keep = 1;
    cfg.compaction.threshold = 200;
    cfg
}

fn key(i: u32) -> String {
    format!("k{}", i % KEYS)
}

fn value(i: u32) -> String {
    format!("value-{i}-{}", "x".repeat((i % 60) as usize))
}

/// The state after writes `0..n`.
fn model(n: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..n)
        .map(|i| (key(i).into_bytes(), value(i).into_bytes()))
        .collect()
}

#[test]
#[ignore = "the child side of a_crash_at_every_point_keeps_the_acknowledged_state"]
fn crash_point_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    actix_rt::System::new().block_on(async move {
        let (store, _) = concordkv::testing::open_recording(child_config(dir.as_ref()))
            .await
            .expect("child open");
        for i in 0..WRITES {
            store.set(key(i), value(i)).await.expect("child set");
            println!("ACK {i}");
            match i % 150 {
                50 => drop(store.snapshot_incremental().await.expect("incremental")),
                100 => drop(store.snapshot().await.expect("full")),
                149 => drop(store.compact().await.expect("compact")),
                _ => {}
            }
        }
        store.shutdown().await.expect("child shutdown");
    });
}

/// The n-th time each point is reached: past the ones an open goes through.
fn arm_after(point: &str) -> u32 {
    match point {
        p if p.starts_with("rotate.") => 4,
        p if p.starts_with("manifest.") => 9,
        _ => 2,
    }
}

#[test]
fn a_crash_at_every_point_keeps_the_acknowledged_state() {
    let exe = std::env::current_exe().expect("test binary");
    for point in CRASH_POINTS {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new(&exe)
            .args([
                "--exact",
                "crash_point_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env("CONCORDKV_CRASH_POINT", point)
            .env("CONCORDKV_CRASH_AFTER", arm_after(point).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run child");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(&format!("crash point {point} reached")),
            "{point}: the child must die at the point; status {}, stderr: {stderr}",
            output.status
        );
        let acked = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(|n| n.parse::<u32>().expect("ack") + 1)
            .max()
            .unwrap_or(0);
        assert!(
            acked > 0,
            "{point}: the child acknowledged writes before dying"
        );
        let state = actix_rt::System::new().block_on(async {
            let (store, recovery) = concordkv::testing::open_recording(child_config(dir.path()))
                .await
                .expect("open after the crash");
            let state = recovery.state();
            let next = store
                .set("after", "crash")
                .await
                .expect("the store accepts writes");
            assert!(
                next > recovery.last_seq,
                "{point}: sequence numbers continue"
            );
            store.shutdown().await.expect("shutdown");
            state
        });
        // One writer, one append in flight: the state is that of all
        // acknowledged writes, or of those and the one in flight.
        assert!(
            state == model(acked) || state == model(acked + 1),
            "{point}: recovered state is not the acknowledged prefix ({acked} acknowledged)"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{point}: temporary files are cleaned up: {names:?}"
        );
    }
}
