//! A crash at every step of a `Log`'s purge and truncation leaves a
//! directory that opens to exactly the acknowledged records the
//! application kept: none it purged or truncated away (a dropped record
//! never returns), none lost, and appends continue after them. The child is this
//! test binary running the ignored `log_crash_point_child` test, armed
//! through the crate's crash points.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use concordkv::testing::LOG_CRASH_POINTS;
use concordkv::{Config, Log, Seq, SyncMode};

const CHILD_DIR: &str = "CONCORDKV_LOG_CRASH_POINT_CHILD_DIR";
const WRITES: u64 = 2000;

fn child_config(dir: &std::path::Path) -> Config {
    let mut cfg = common::config(dir, SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    cfg
}

/// What the child appends as `seq` after `truncations` truncations: a
/// record appended again after a truncation differs from the dropped one.
fn payload(seq: Seq, truncations: u64) -> Vec<u8> {
    format!(
        "entry-{seq}-t{truncations}-{}",
        "x".repeat((seq % 50) as usize)
    )
    .into_bytes()
}

#[test]
#[ignore = "the child side of a_crash_at_every_log_point_keeps_exactly_the_kept_records"]
fn log_crash_point_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    actix_rt::System::new().block_on(async move {
        let (log, _) = Log::open(child_config(dir.as_ref()))
            .await
            .expect("child open");
        let mut truncations = 0;
        for i in 0..WRITES {
            let seq = log
                .append(payload(log.last_seq() + 1, truncations))
                .await
                .expect("append");
            println!("ACK {seq} {truncations}");
            if i % 100 == 99 {
                let before = seq - 40;
                println!("PURGING {before}");
                log.purge_before(before).await.expect("purge");
            }
            if i % 70 == 69 {
                let after = seq - 20;
                println!("TRUNCATING {after}");
                log.truncate_after(after).await.expect("truncate");
                truncations += 1;
                println!("TRUNCATED");
            }
        }
        log.shutdown().await.expect("child shutdown");
    });
}

#[test]
fn a_crash_at_every_log_point_keeps_exactly_the_kept_records() {
    let exe = std::env::current_exe().expect("test binary");
    for point in LOG_CRASH_POINTS {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new(&exe)
            .args([
                "--exact",
                "log_crash_point_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env("CONCORDKV_CRASH_POINT", point)
            .env("CONCORDKV_CRASH_AFTER", "3")
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
        // Replays the child's story: what it was told, in order.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut model: BTreeMap<Seq, Vec<u8>> = BTreeMap::new();
        let mut purged_before = 1;
        let mut truncating = None;
        for line in stdout.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let n = |i: usize| -> u64 { words[i].parse().expect("number") };
            match words[0] {
                "ACK" => {
                    model.insert(n(1), payload(n(1), n(2)));
                }
                "PURGING" => purged_before = n(1),
                "TRUNCATING" => truncating = Some(n(1)),
                "TRUNCATED" => {
                    let after = truncating.take().expect("a truncation began");
                    model.retain(|seq, _| *seq <= after);
                }
                _ => {}
            }
        }
        // A crash after the mark's manifest write keeps the drop; before
        // it, every record stays.
        if let Some(after) = truncating {
            if *point == "truncate.after_manifest" {
                model.retain(|seq, _| *seq <= after);
            }
        }
        let acked = *model
            .keys()
            .next_back()
            .expect("the child acknowledged appends");
        let expected: BTreeMap<Seq, Vec<u8>> = model.split_off(&purged_before);

        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = Arc::clone(&seen);
        actix_rt::System::new().block_on(async {
            let (log, recovery) = Log::open_replaying(child_config(dir.path()), move |seq, b| {
                assert!(
                    sink.lock().expect("lock").insert(seq, b.to_vec()).is_none(),
                    "record {seq} replayed twice"
                );
            })
            .await
            .expect("open after the crash");
            // The crash came after the purge's manifest write: it holds.
            assert_eq!(recovery.first_seq, purged_before, "{point}");
            assert_eq!(log.first_seq(), purged_before, "{point}");
            // Nothing acknowledged is lost, and nothing was in flight (the
            // crash is inside a purge or a truncation).
            assert_eq!(recovery.last_seq, acked, "{point}");
            // Reading the files back honours the purge and the marks too.
            let read: BTreeMap<Seq, Vec<u8>> = log
                .read(..)
                .expect("read")
                .collect::<Result<_, _>>()
                .expect("records");
            assert_eq!(read, expected, "{point}: read back");
            let next = log.append(b"after".to_vec()).await.expect("append");
            assert_eq!(next, acked + 1, "{point}: sequence numbers continue");
            log.shutdown().await.expect("shutdown");
        });
        let seen = std::mem::take(&mut *seen.lock().expect("lock"));
        assert_eq!(seen, expected, "{point}: exactly the kept records");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{point}: temporary files are cleaned up: {names:?}"
        );
        let listed = common::segments(dir.path()).len();
        let manifest = concordkv::testing::format::manifest::Manifest::decode(
            &std::fs::read(dir.path().join("MANIFEST")).expect("manifest"),
        )
        .expect("valid manifest");
        assert_eq!(
            listed,
            manifest.segments.len(),
            "{point}: the files the purge unlisted are gone"
        );
    }
}
