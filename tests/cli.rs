//! The `concordkv` command line: `bench --json` output and argument errors.

use std::process::Command;

#[test]
fn bench_json_reports_the_contract_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("bench");
    let output = Command::new(env!("CARGO_BIN_EXE_concordkv"))
        .args([
            "bench",
            "--sync-mode",
            "batch",
            "--writers",
            "4",
            "--value-size",
            "100",
            "--seconds",
            "0.3",
            "--json",
            "--dir",
        ])
        .arg(&data)
        .output()
        .expect("run bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
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
    assert!(!again.status.success(), "bench refuses a directory that is not fresh");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
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
