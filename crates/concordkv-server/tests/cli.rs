//! The `concordkv` command line: `bench --json` output and argument errors.

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

    use concordkv::testing::format::segment::SEGMENT_HEADER_BYTES;
    use concordkv::{Config, Store, SyncMode};

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
            let (store, _) = Store::open(cfg).await.expect("open");
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
}
