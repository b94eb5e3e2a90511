//! The `concordkv` command line: the benches' `--json` output and argument errors.

use std::process::Command;

/// Runs a `concordkv` subcommand with `--json` in `dir`; the parsed report.
fn json_of(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .output()
        .expect("run concordkv");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// Runs `concordkv bench` with `args` and `--json`; the parsed report.
fn bench_json(args: &[&str], dir: Option<&std::path::Path>) -> serde_json::Value {
    let mut all: Vec<&str> = vec!["bench"];
    all.extend_from_slice(args);
    let data = dir.map(|d| d.to_str().expect("utf-8 path"));
    if let Some(data) = data {
        all.extend_from_slice(&["--dir", data]);
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    json_of(&all, cwd.path())
}

#[test]
fn bench_json_reports_the_contract_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("bench");
    let report = bench_json(
        &[
            "--sync-mode",
            "batch",
            "--writers",
            "4",
            "--value-size",
            "100",
            "--seconds",
            "0.3",
        ],
        Some(&data),
    );
    for field in [
        "sync_mode",
        "writers",
        "value_bytes",
        "ops",
        "seconds",
        "ops_per_sec",
        "p50_us",
        "p90_us",
        "p95_us",
        "p99_us",
        "p999_us",
        "fsync_p50_us",
        "fsync_p99_us",
    ] {
        assert!(report.get(field).is_some(), "missing {field} in {report}");
    }
    assert_eq!(report["sync_mode"], "batch");
    assert_eq!(report["writers"], 4);
    assert!(report["ops"].as_u64().expect("ops") > 0);
    assert!(report["fsync_p50_us"].as_f64().expect("floor") > 0.0);
    let quantiles: Vec<f64> = ["p50_us", "p90_us", "p95_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|field| report[field].as_f64().expect("a latency"))
        .collect();
    assert!(
        quantiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "latency quantiles out of order: {quantiles:?}"
    );
    assert!(data.read_dir().expect("data kept").any(|e| e
        .expect("entry")
        .path()
        .extension()
        .is_some_and(|x| x == "wal")));

    let again = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .args(["bench", "--seconds", "0.1", "--dir"])
        .arg(&data)
        .output()
        .expect("run bench");
    assert!(
        !again.status.success(),
        "bench refuses a directory that is not fresh"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn bench_stops_after_an_op_count() {
    let report = bench_json(
        &["--sync-mode", "none", "--writers", "4", "--ops", "500"],
        None,
    );
    assert_eq!(report["ops"], 500);
}

#[test]
fn bench_read_reads_every_record_and_follows_every_acknowledged_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = json_of(
        &[
            "bench-read",
            "--records",
            "20000",
            "--writers",
            "4",
            "--readers",
            "4",
            "--seconds",
            "0.3",
        ],
        dir.path(),
    );
    assert_eq!(report["records"], 20000);
    assert!(report["gets_per_sec"].as_f64() > Some(0.0), "{report}");
    assert!(
        report["read_records_per_sec"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(report["followed"].as_u64() > Some(0), "{report}");
    let (p50, p99, max) = (
        report["lag_p50_us"].as_f64().expect("p50"),
        report["lag_p99_us"].as_f64().expect("p99"),
        report["lag_max_us"].as_f64().expect("max"),
    );
    assert!(p50 <= p99 && p99 <= max, "{report}");
    assert_eq!(
        dir.path().read_dir().expect("list").count(),
        0,
        "the scratch directory is removed"
    );
}

#[test]
fn bench_lifecycle_compacts_under_load_and_splits_the_latencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = json_of(
        &[
            "bench-lifecycle",
            "--records",
            "30000",
            "--keys",
            "1000",
            "--sync-mode",
            "none",
            "--writers",
            "4",
            "--seconds",
            "0.2",
            "--rounds",
            "2",
        ],
        dir.path(),
    );
    assert_eq!(report["rounds"], 2);
    assert!(
        report["appends_idle"].as_u64().expect("idle") > 0,
        "{report}"
    );
    assert!(
        report["appends_compacting"].as_u64().expect("busy") > 0,
        "{report}"
    );
    assert!(
        report["compaction_bytes_after"].as_u64() < report["compaction_bytes_before"].as_u64(),
        "{report}"
    );
    for rate in [
        "recovery_from_segments_records_per_sec",
        "compaction_input_records_per_sec",
        "compaction_under_load_input_records_per_sec",
        "recovery_from_snapshot_records_per_sec",
    ] {
        assert!(report[rate].as_f64().expect(rate) > 0.0, "{rate}: {report}");
    }
    assert_eq!(
        dir.path().read_dir().expect("list").count(),
        0,
        "the scratch directory is removed"
    );
}

#[test]
fn torture_reports_its_seed_cycles_and_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = json_of(&["torture", "--seed", "5", "--cycles", "40"], dir.path());
    assert_eq!(report["seed"], 5);
    assert_eq!(report["cycles"], 40);
    assert!(report["ops_acknowledged"].as_u64().expect("acked") > 0);
    assert!(report["faults"].is_object());
}

#[test]
fn torture_of_a_log_reports_its_seed_cycles_and_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = json_of(
        &["torture", "--log", "--seed", "5", "--cycles", "40"],
        dir.path(),
    );
    assert_eq!(report["seed"], 5);
    assert_eq!(report["cycles"], 40);
    assert!(report["appends_acknowledged"].as_u64().expect("acked") > 0);
    assert!(report["truncations"]["acknowledged"].is_u64());
    assert!(report["faults"].is_object());
}

#[test]
fn an_unknown_sync_mode_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .args(["bench", "--sync-mode", "sometimes"])
        .output()
        .expect("run bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sometimes"));
}

mod inspect_and_verify {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use concordkv::testing::format::record::{read_frame_at, Frame, MAX_PAYLOAD_BYTES};
    use concordkv::testing::format::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
    use concordkv::{Config, SyncMode};

    fn run(command: &str, dir: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_concordkv"))
            .arg(command)
            .arg(dir)
            .output()
            .expect("run concordkv")
    }

    /// Every file of `dir` with its bytes.
    fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .map(|p| {
                let bytes = std::fs::read(&p).expect("read file");
                (p, bytes)
            })
            .collect()
    }

    /// A directory with sealed segments, a full and an incremental snapshot.
    fn populated() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::with_data_dir(dir.path());
        cfg.wal.sync_mode = SyncMode::Always;
        cfg.wal.max_segment_bytes = 4096;
        actix_rt::System::new().block_on(async {
            let (store, _) = concordkv::testing::open_recording(cfg).await.expect("open");
            for i in 0..300u32 {
                store
                    .set(format!("k{}", i % 40), format!("value-{i}"))
                    .await
                    .expect("set");
            }
            store.snapshot().await.expect("full");
            for i in 0..100u32 {
                store
                    .set(format!("k{}", i % 40), format!("again-{i}"))
                    .await
                    .expect("set");
            }
            store.snapshot_incremental().await.expect("incremental");
            for i in 0..150u32 {
                store.set(format!("x{i}"), "tail").await.expect("set");
            }
            store.shutdown().await.expect("shutdown");
        });
        dir
    }

    fn file_ending(dir: &Path, suffix: &str) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no file ending in {suffix}"))
    }

    #[test]
    fn verify_passes_a_clean_directory_and_neither_command_changes_a_byte() {
        let dir = populated();
        let before = contents(dir.path());
        let verified = run("verify", dir.path());
        let text = String::from_utf8_lossy(&verified.stdout);
        assert!(verified.status.success(), "{text}");
        assert!(text.starts_with("OK"), "{text}");
        let inspected = run("inspect", dir.path());
        assert!(inspected.status.success());
        let listing = String::from_utf8_lossy(&inspected.stdout);
        for expected in [
            "manifest: generation",
            "full.snap",
            "incr.snap",
            "sealed",
            "redundant",
        ] {
            assert!(
                listing.contains(expected),
                "inspect lacks {expected:?}:\n{listing}"
            );
        }
        assert_eq!(
            contents(dir.path()),
            before,
            "inspect and verify leave the directory byte-for-byte unchanged"
        );
    }

    #[test]
    fn one_flipped_byte_in_each_kind_of_file_is_named_with_its_offset() {
        for (kind, suffix) in [
            ("segment", ".wal"),
            ("snapshot", ".full.snap"),
            ("manifest", "MANIFEST"),
        ] {
            let dir = populated();
            let victim = file_ending(dir.path(), suffix);
            let mut bytes = std::fs::read(&victim).expect("read");
            let offset = match kind {
                "segment" => SEGMENT_HEADER_BYTES + 20,
                "snapshot" => bytes.len() - 3,
                _ => bytes.len() - 1,
            };
            bytes[offset] ^= 0x20;
            std::fs::write(&victim, &bytes).expect("write");
            let before = contents(dir.path());
            let verified = run("verify", dir.path());
            let text = String::from_utf8_lossy(&verified.stdout);
            assert_eq!(verified.status.code(), Some(1), "{kind}: {text}");
            let line = text
                .lines()
                .find(|l| l.contains(&victim.display().to_string()))
                .unwrap_or_else(|| panic!("{kind}: no line names {}:\n{text}", victim.display()));
            assert!(
                line.starts_with("DAMAGED") && line.contains("byte offset"),
                "{kind}: {line}"
            );
            if kind == "segment" {
                assert!(
                    line.contains(&format!("byte offset {SEGMENT_HEADER_BYTES}:")),
                    "{kind}: {line}"
                );
            }
            let inspected = run("inspect", dir.path());
            assert!(
                String::from_utf8_lossy(&inspected.stdout).contains("DAMAGED"),
                "{kind}: inspect shows it too"
            );
            assert_eq!(
                contents(dir.path()),
                before,
                "{kind}: a damaged directory is reported, not repaired"
            );
        }
    }

    #[test]
    fn verify_of_a_missing_directory_exits_2() {
        let output = run("verify", Path::new("/nonexistent/concordkv"));
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/concordkv"));
    }

    /// Runs `concordkv <command> <dir> --json`; the exit code and the parsed object.
    fn run_json(command: &str, dir: &Path) -> (Option<i32>, serde_json::Value) {
        let output = Command::new(env!("CARGO_BIN_EXE_concordkv"))
            .arg(command)
            .arg(dir)
            .arg("--json")
            .output()
            .expect("run concordkv");
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&output.stdout));
        });
        (output.status.code(), value)
    }

    fn small_config(dir: &Path) -> Config {
        let mut cfg = Config::with_data_dir(dir);
        cfg.wal.sync_mode = SyncMode::Always;
        cfg.wal.max_segment_bytes = 4096;
        cfg
    }

    /// 200 records of 40-byte values in 4 KiB segments, shut down cleanly.
    fn small_segments() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        actix_rt::System::new().block_on(async {
            let (store, _) = concordkv::testing::open_recording(small_config(dir.path()))
                .await
                .expect("open");
            for i in 0..200u32 {
                store
                    .set(format!("key-{i}"), vec![b'x'; 40])
                    .await
                    .expect("set");
            }
            store.shutdown().await.expect("shutdown");
        });
        dir
    }

    /// The started segments of `dir` (header intact), in id order.
    fn started(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .filter(|p| SegmentHeader::decode(&std::fs::read(p).expect("read")).is_ok())
            .collect();
        files.sort();
        files
    }

    /// Byte ranges of the intact frames of a segment.
    fn frames(path: &Path) -> Vec<std::ops::Range<usize>> {
        let bytes = std::fs::read(path).expect("read");
        let layout = SegmentHeader::decode(&bytes).expect("header").layout();
        let mut at = SEGMENT_HEADER_BYTES;
        let mut ranges = Vec::new();
        while let Frame::Record { size, .. } =
            read_frame_at(&bytes[at..], layout, at as u64, MAX_PAYLOAD_BYTES)
        {
            ranges.push(at..at + size);
            at += size;
        }
        ranges
    }

    /// The newest segment zero-filled from the middle of its last record to
    /// its end (and on, as the preallocated rest would read): the write of
    /// that record was interrupted. Returns the segment, the record's offset
    /// and the bytes a cut there removes.
    fn tear_the_newest_record(dir: &Path) -> (PathBuf, u64, u64) {
        let newest = started(dir).pop().expect("a started segment");
        let last = frames(&newest).pop().expect("a record");
        let mut bytes = std::fs::read(&newest).expect("read");
        let middle = (last.start + last.end) / 2;
        bytes.truncate(middle);
        bytes.resize(middle + 4096, 0);
        std::fs::write(&newest, &bytes).expect("write");
        let nonzero_end = bytes.iter().rposition(|b| *b != 0).expect("data") + 1;
        (newest, last.start as u64, (nonzero_end - last.start) as u64)
    }

    #[test]
    fn verify_reports_a_torn_tail_open_will_cut_and_exits_0() {
        let dir = small_segments();
        let (newest, offset, bytes) = tear_the_newest_record(dir.path());
        let before = contents(dir.path());

        let verified = run("verify", dir.path());
        let text = String::from_utf8_lossy(&verified.stdout).to_string();
        assert_eq!(verified.status.code(), Some(0), "{text}");
        let torn: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("torn tail:"))
            .collect();
        let expected = format!(
            "torn tail: {} at byte offset {offset}: {bytes} bytes would be cut on open (checksum mismatch",
            newest.display()
        );
        assert!(
            torn.len() == 1 && torn[0].starts_with(&expected),
            "expected one line starting {expected:?}:\n{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("OK ")), "{text}");
        assert!(!text.contains("DAMAGED"), "{text}");

        let inspected = run("inspect", dir.path());
        let listing = String::from_utf8_lossy(&inspected.stdout);
        assert_eq!(inspected.status.code(), Some(0), "{listing}");
        assert!(listing.contains("torn tail:"), "{listing}");
        assert_eq!(contents(dir.path()), before, "nothing is cut by verify");

        // The open cuts exactly what verify named, and opens.
        actix_rt::System::new().block_on(async {
            let (store, recovery) = concordkv::testing::open_recording(small_config(dir.path()))
                .await
                .expect("a torn tail opens");
            let tail = recovery.truncated.as_ref().expect("a cut");
            assert_eq!(
                (tail.file.as_path(), tail.offset, tail.bytes),
                (newest.as_path(), offset, bytes)
            );
            assert_eq!(recovery.records.len(), 199);
            store.shutdown().await.expect("shutdown");
        });
        let again = run("verify", dir.path());
        let text = String::from_utf8_lossy(&again.stdout);
        assert!(
            again.status.success() && !text.contains("torn tail"),
            "{text}"
        );
    }

    #[test]
    fn verify_exits_1_for_a_flipped_byte_in_a_sealed_segment() {
        let dir = small_segments();
        let segments = started(dir.path());
        assert!(segments.len() > 2);
        let victim = &segments[1];
        let record = frames(victim)[3].clone();
        let mut bytes = std::fs::read(victim).expect("read");
        bytes[record.start + 30] ^= 0x04;
        std::fs::write(victim, &bytes).expect("write");

        let verified = run("verify", dir.path());
        let text = String::from_utf8_lossy(&verified.stdout);
        assert_eq!(verified.status.code(), Some(1), "{text}");
        let expected = format!(
            "DAMAGED {} at byte offset {}: checksum mismatch",
            victim.display(),
            record.start
        );
        assert!(text.lines().any(|l| l.starts_with(&expected)), "{text}");
        assert!(
            !text.contains("torn tail") && !text.contains("OK "),
            "{text}"
        );
        let inspected = run("inspect", dir.path());
        assert_eq!(inspected.status.code(), Some(1));
    }

    /// Damage in the newest segment that a later intact record attests was
    /// synced is damage: the open refuses it, and verify says so.
    #[test]
    fn damage_a_later_record_attests_was_durable_is_damage_for_verify_and_open() {
        let dir = small_segments();
        let newest = started(dir.path()).pop().expect("segment");
        let records = frames(&newest);
        assert!(records.len() > 3);
        let mut bytes = std::fs::read(&newest).expect("read");
        bytes[records[1].start + 30] ^= 0x10;
        std::fs::write(&newest, &bytes).expect("write");

        let verified = run("verify", dir.path());
        let text = String::from_utf8_lossy(&verified.stdout);
        assert_eq!(verified.status.code(), Some(1), "{text}");
        let expected = format!(
            "DAMAGED {} at byte offset {}: ",
            newest.display(),
            records[1].start
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(&expected))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("not an interrupted write"), "{line}");
        assert!(!text.contains("torn tail"), "{text}");

        actix_rt::System::new().block_on(async {
            match concordkv::testing::open_recording(small_config(dir.path())).await {
                Err(concordkv::Error::Corruption(c)) => {
                    assert_eq!(
                        (c.file, c.offset),
                        (newest.clone(), records[1].start as u64)
                    );
                }
                Err(other) => panic!("expected corruption, got {other}"),
                Ok(_) => panic!("the open accepted attested damage"),
            }
        });
    }

    #[test]
    fn json_output_carries_the_torn_tail_and_the_damage() {
        let dir = small_segments();
        let (newest, offset, bytes) = tear_the_newest_record(dir.path());
        let (code, verified) = run_json("verify", dir.path());
        assert_eq!(code, Some(0), "{verified}");
        assert_eq!(verified["ok"], true);
        assert_eq!(verified["torn_tail"]["file"], newest.display().to_string());
        assert_eq!(verified["torn_tail"]["offset"], offset);
        assert_eq!(verified["torn_tail"]["bytes"], bytes);
        assert!(verified["torn_tail"]["reason"].is_string());
        assert_eq!(verified["damage"], serde_json::json!([]));
        assert_eq!(verified["records"], 199);

        let (code, inspected) = run_json("inspect", dir.path());
        assert_eq!(code, Some(0), "{inspected}");
        assert_eq!(inspected["torn_tail"], verified["torn_tail"]);
        assert_eq!(inspected["dir"], dir.path().display().to_string());
        assert!(inspected["manifest"]["generation"].is_u64(), "{inspected}");
        let segments = inspected["segments"].as_array().expect("segments");
        let torn = segments
            .iter()
            .find(|s| s["path"] == newest.display().to_string())
            .unwrap_or_else(|| panic!("{inspected}"));
        assert_eq!(torn["state"], "active");
        assert_eq!(torn["records"], frames(&newest).len());

        let victim = started(dir.path())[0].clone();
        let record = frames(&victim)[2].clone();
        let mut damaged = std::fs::read(&victim).expect("read");
        damaged[record.start + 30] ^= 0x01;
        std::fs::write(&victim, &damaged).expect("write");
        let (code, verified) = run_json("verify", dir.path());
        assert_eq!(code, Some(1), "{verified}");
        assert_eq!(verified["ok"], false);
        let damage = verified["damage"].as_array().expect("damage");
        assert_eq!(damage.len(), 1, "{verified}");
        assert_eq!(damage[0]["file"], victim.display().to_string());
        assert_eq!(damage[0]["offset"], record.start as u64);
        assert!(damage[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("checksum"));
        let (code, inspected) = run_json("inspect", dir.path());
        assert_eq!(code, Some(1));
        assert_eq!(inspected["damage"], verified["damage"]);
    }

    #[test]
    fn verify_refuses_a_directory_whose_sync_failed_in_this_boot() {
        let dir = small_segments();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
        let marker = dir.path().join("SYNC_FAILED");
        std::fs::write(
            &marker,
            format!("{}\nx.wal: Input/output error\n", boot.trim()),
        )
        .expect("marker");
        let output = run("verify", dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("SYNC_FAILED") && stdout.contains("until the machine restarts"),
            "{stdout}"
        );
        // A marker from an earlier boot only means the next open removes it.
        std::fs::write(&marker, "an-earlier-boot\nx.wal: Input/output error\n").expect("marker");
        let output = run("verify", dir.path());
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    #[test]
    fn a_missing_listed_segment_is_damage_not_an_unreadable_directory() {
        for which in ["sealed", "newest"] {
            let dir = small_segments();
            let mut segments = started(dir.path());
            let victim = if which == "newest" {
                segments.pop()
            } else {
                Some(segments.remove(1))
            }
            .expect("a segment");
            std::fs::remove_file(&victim).expect("remove");
            let output = run("verify", dir.path());
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(output.status.code(), Some(1), "{which}: {stdout}");
            let name = victim
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            assert!(
                stdout.contains(&name) && stdout.contains("missing"),
                "{which}: {stdout}"
            );
        }
    }
}
