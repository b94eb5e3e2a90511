//! The Prometheus endpoint of `concordkv serve`, scraped for real: every
//! metric of the contract is there, histograms have buckets, `promtool`
//! accepts the scrape, and `INFO stats` reports per-kind latencies.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{free_port, ok, Server};
use redis_protocol::resp2::types::BytesFrame;

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_string()
}

fn promtool_available() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("promtool is missing on CI; .ci/run installs Debian's prometheus package");
    }
    found
}

#[test]
fn the_endpoint_exports_every_contract_metric_and_promtool_accepts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        dir.path(),
        &[
            ("CONCORDKV__METRICS__ENABLED", "true"),
            ("CONCORDKV__METRICS__LISTEN", &listen),
            ("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "4096"),
        ],
    );
    let mut c = server.client();
    for i in 0..300 {
        assert_eq!(
            c.call(&["SET", &format!("k{}", i % 30), &format!("v{i}")]),
            ok()
        );
    }
    assert_eq!(c.call(&["SAVE"]), ok());
    assert_eq!(c.call(&["SET", "k1", "again"]), ok());
    assert_eq!(c.call(&["SAVE", "INCREMENTAL"]), ok());
    for i in 0..100 {
        assert_eq!(c.call(&["SET", &format!("k{}", i % 30), "more"]), ok());
    }
    assert_eq!(
        c.call(&["BGREWRITEAOF"]),
        BytesFrame::SimpleString("Background append only file rewriting started".into())
    );

    // The MetricsActor publishes once a second; wait (bounded) for the batch.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = scrape(metrics_port);
        let appends_counted = body
            .lines()
            .any(|l| l.starts_with("concordkv_wal_append_seconds_count") && !l.ends_with(" 0"));
        if appends_counted && body.contains("concordkv_compaction_seconds_bucket") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "appends and the compaction never showed up:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for histogram in [
        "concordkv_wal_append_seconds",
        "concordkv_wal_sync_seconds",
        "concordkv_wal_sync_batch_records",
        "concordkv_compaction_seconds",
        "concordkv_snapshot_seconds",
        "concordkv_recovery_seconds",
    ] {
        assert!(
            body.contains(&format!("{histogram}_bucket{{")),
            "{histogram} has buckets:\n{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is a histogram"
        );
    }
    for kind in ["full", "incremental"] {
        assert!(
            body.lines()
                .any(|l| l.starts_with("concordkv_snapshot_seconds_bucket{")
                    && l.contains(&format!("kind=\"{kind}\""))),
            "{kind} snapshots are timed:\n{body}"
        );
    }
    // Error counters are exported at 0 before any error, so that an
    // `increase()` alert sees the first one.
    // Every series carries the store's label: the data directory's name.
    let store = format!(
        "store=\"{}\"",
        dir.path().file_name().expect("name").to_string_lossy()
    );
    for zero in [
        "concordkv_wal_sync_errors_total{",
        "concordkv_wal_write_errors_total{",
        "concordkv_actor_restarts_total{",
        "concordkv_wal_writes_refused{",
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(zero) && l.contains(&store) && l.ends_with("} 0")),
            "{zero}{store}}} 0 is exported:\n{body}"
        );
    }
    for series in [
        "concordkv_wal_records_total",
        "concordkv_wal_bytes_total",
        "concordkv_wal_syncs_total",
        "concordkv_wal_rotations_total",
        "concordkv_compactions_total",
        "concordkv_compaction_reclaimed_bytes_total",
        "concordkv_recovery_truncated_bytes_total",
        "concordkv_wal_segments",
        "concordkv_disk_bytes",
        "concordkv_wal_pending_bytes",
        "concordkv_wal_last_seq",
        "concordkv_wal_durable_seq",
        "concordkv_wal_durable_lag_records",
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(series) && !l.starts_with('#')),
            "{series} is exported:\n{body}"
        );
    }

    if promtool_available() {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("feed promtool");
        let checked = child.wait_with_output().expect("promtool result");
        assert!(
            checked.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    let BytesFrame::BulkString(info) = c.call(&["INFO", "stats"]) else {
        panic!("INFO stats is a bulk string");
    };
    let info = String::from_utf8_lossy(&info);
    for field in [
        "append_count:",
        "append_p99_us:",
        "sync_count:",
        "compaction_count:",
        "snapshot_mean_us:",
    ] {
        assert!(info.contains(field), "INFO stats lacks {field}: {info}");
    }
    assert!(
        !info.contains("append_count:0\r"),
        "appends are counted: {info}"
    );
}

/// `grafana/alerts.yml` is valid, and each alert fires for a failing
/// instance and not for a healthy one (`grafana/alerts.test.yml`); both
/// Prometheus configurations (one server, a raft-kv cluster) load.
#[test]
fn the_alerting_rules_pass_promtool_s_checks_and_unit_tests() {
    if !promtool_available() {
        eprintln!("promtool is not installed; skipped here (CI installs it)");
        return;
    }
    let grafana = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
        &["check", "config", "prometheus.yml"],
        &["check", "config", "prometheus-raft-kv.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&grafana)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_bad_listen_address_is_a_config_error_and_a_taken_port_an_io_error() {
    let bad = concordkv::MetricsConfig {
        listen: "not an address".into(),
        enabled: true,
        store: String::new(),
    };
    let err = concordkv::install_prometheus_exporter(&bad).expect_err("refused");
    assert!(
        matches!(&err, concordkv::Error::Config(_)) && err.to_string().contains("metrics.listen"),
        "{err:?}"
    );

    // Nothing is installed when the address is taken: the bind fails first.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let busy = concordkv::MetricsConfig {
        listen: addr.to_string(),
        enabled: true,
        store: String::new(),
    };
    let err = concordkv::install_prometheus_exporter(&busy).expect_err("refused");
    match &err {
        concordkv::Error::Io { path, source, .. } => {
            assert_eq!(path.to_str(), Some(addr.to_string().as_str()), "{err}");
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        }
        other => panic!("not an I/O error: {other:?}"),
    }
}
