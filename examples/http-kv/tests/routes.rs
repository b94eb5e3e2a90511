//! Every route of the real binary over real HTTP: answers, errors, the
//! metrics page, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use common::{client, delete, get, list, put, Server};

/// Small limits, so refusals are cheap to provoke.
const LIMITS: &str = "[limits]\nmax_key_bytes = 64\nmax_value_bytes = 1024\n";

fn start_with_limits(dir: &Path) -> Server {
    let config = dir.join("http-kv.toml");
    std::fs::write(&config, LIMITS).expect("write config");
    let config = config.to_str().expect("utf-8 path");
    Server::start(&dir.join("data"), &["--config", config])
}

#[test]
fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();
    let url = server.url("/kv/user/1");

    let (status, first) = put(&http, &url, "ada");
    assert_eq!(status, 201, "a new key is created: {first}");
    let first: u64 = first.trim().parse().expect("a sequence number");
    let (status, second) = put(&http, &url, "grace");
    assert_eq!(status, 200, "an existing key is replaced: {second}");
    let second: u64 = second.trim().parse().expect("a sequence number");
    assert!(second > first);

    assert_eq!(get(&http, &url), (200, "grace".to_string()));
    let (status, _) = get(&http, &server.url("/kv/user/2"));
    assert_eq!(status, 404);

    let (status, seq) = delete(&http, &url);
    assert_eq!(status, 200);
    assert!(seq.trim().parse::<u64>().expect("a sequence number") > second);
    assert_eq!(get(&http, &url).0, 404);
    assert_eq!(delete(&http, &url).0, 404, "deleting a missing key");

    // Percent-encoded keys are decoded; an empty value is a value.
    assert_eq!(put(&http, &server.url("/kv/a%20b"), "").0, 201);
    assert_eq!(get(&http, &server.url("/kv/a%20b")), (200, String::new()));
    assert_eq!(
        list(&http, &server, "a", 10),
        [("a b".into(), String::new())]
    );
}

#[test]
fn refused_requests_get_400_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();

    let long_key = "k".repeat(65);
    let (status, why) = put(&http, &server.url(&format!("/kv/{long_key}")), "v");
    assert_eq!(status, 400);
    assert!(why.contains("max_key_bytes"), "{why}");

    let (status, why) = put(&http, &server.url("/kv/big"), &"v".repeat(1025));
    assert_eq!(status, 400);
    assert!(why.contains("max_value_bytes"), "{why}");
    assert_eq!(put(&http, &server.url("/kv/big"), &"v".repeat(1024)).0, 201);

    assert_eq!(get(&http, &server.url("/kv?limit=10001")).0, 400);
    assert_eq!(get(&http, &server.url("/kv?limit=many")).0, 400);
    assert_eq!(get(&http, &server.url("/log?from=first")).0, 400);
    assert_eq!(get(&http, &server.url("/nowhere")).0, 404);

    // Nothing refused was written, and the server still serves.
    assert_eq!(list(&http, &server, "", 100).len(), 1);
    assert_eq!(get(&http, &server.url("/healthz")), (200, "ok\n".into()));
}

#[test]
fn requests_a_web_page_could_send_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();
    let url = server.url("/kv/planted");
    let status = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.expect("a response").status().as_u16()
    };

    // A page that rebound its host name to this address: same-origin for
    // the browser, so no CORS stops its reads or writes; its Host gives it
    // away.
    assert_eq!(
        status(http.put(&url).header("host", "evil.example:8080").send("x")),
        403
    );
    assert_eq!(
        status(
            http.get(&server.url("/kv"))
                .header("host", "evil.example")
                .call()
        ),
        403
    );
    // A cross-origin page, by its Origin or its fetch metadata.
    assert_eq!(
        status(
            http.delete(&url)
                .header("origin", "http://evil.example")
                .call()
        ),
        403
    );
    assert_eq!(
        status(
            http.put(&url)
                .header("sec-fetch-site", "cross-site")
                .send("x")
        ),
        403
    );
    // Programs name the address (or localhost) and send neither header.
    assert_eq!(
        status(http.put(&url).header("host", "localhost").send("ok")),
        201
    );
    assert_eq!(get(&http, &url), (200, "ok".to_string()));
}

#[test]
fn listing_is_ordered_by_key_and_limited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();

    // 150 keys under p-, written out of order, and others around them.
    for i in (0..150).rev() {
        let key = format!("p-{:03}", (i * 7) % 150);
        assert_eq!(put(&http, &server.url(&format!("/kv/{key}")), &key).0, 201);
    }
    for key in ["o", "p", "q-000"] {
        assert_eq!(put(&http, &server.url(&format!("/kv/{key}")), key).0, 201);
    }

    let two = list(&http, &server, "p-", 2);
    assert_eq!(
        two,
        [
            ("p-000".to_string(), "p-000".to_string()),
            ("p-001".into(), "p-001".into())
        ]
    );
    let (status, body) = get(&http, &server.url("/kv?prefix=p-"));
    assert_eq!(status, 200);
    let default: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    assert_eq!(default.len(), 100, "the default limit");
    let all = list(&http, &server, "p-", 10_000);
    let expected: Vec<_> = (0..150).map(|i| format!("p-{i:03}")).collect();
    let keys: Vec<_> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, expected);
    assert_eq!(list(&http, &server, "", 10_000).len(), 153);
    assert!(list(&http, &server, "zz", 10).is_empty());
    assert!(list(&http, &server, "p-", 0).is_empty());
}

#[test]
fn healthz_and_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();
    assert_eq!(get(&http, &server.url("/healthz")), (200, "ok\n".into()));
    assert_eq!(put(&http, &server.url("/kv/a"), "1").0, 201);

    let (status, page) = get(&http, &server.url("/metrics"));
    assert_eq!(status, 200);
    // Recorded at open, with the latency buckets set (not a summary).
    assert!(
        page.lines()
            .any(|l| l.starts_with("concordkv_recovery_seconds_bucket{")
                && l.contains("store=")
                && l.contains("le=")),
        "{page}"
    );
    assert!(page.contains("# TYPE concordkv_"), "{page}");
}

#[test]
fn log_streams_records_as_ndjson() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();
    assert_eq!(put(&http, &server.url("/kv/a"), "1").0, 201);
    assert_eq!(put(&http, &server.url("/kv/b"), "2").0, 201);
    assert_eq!(delete(&http, &server.url("/kv/a")).0, 200);

    let mut response = http
        .get(server.url("/log?from=2"))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call()
        .expect("GET /log");
    assert_eq!(response.status().as_u16(), 200);
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    let mut next = || -> serde_json::Value {
        let line = lines.next().expect("a line").expect("read a line");
        serde_json::from_str(&line).expect("a JSON line")
    };
    assert_eq!(
        next(),
        serde_json::json!({"seq": 2, "ops": [{"op": "set", "key": "b", "value": "2"}]})
    );
    assert_eq!(
        next(),
        serde_json::json!({"seq": 3, "ops": [{"op": "delete", "key": "a"}]})
    );
    // A record written while the stream is open follows.
    assert_eq!(put(&http, &server.url("/kv/c"), "3").0, 201);
    assert_eq!(
        next(),
        serde_json::json!({"seq": 4, "ops": [{"op": "set", "key": "c", "value": "3"}]})
    );
}

#[test]
fn log_answers_410_once_its_records_were_purged() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Compaction as soon as a segment is sealed: it retires the segments
    // (and so the records) it covers.
    let config = dir.path().join("compacting.toml");
    std::fs::write(&config, "[compaction]\nthreshold = 1\nratio = 0.0\n").expect("write config");
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let http = client();
    let value = "v".repeat(1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        // Overwrites of a few keys fill and seal segments.
        assert_eq!(
            put(&http, &server.url(&format!("/kv/k{}", i % 10)), &value).0 / 100,
            2
        );
        i += 1;
        if i % 20 == 0 {
            // Only the status: a 200 is a stream that does not end.
            let response = http
                .get(server.url("/log?from=1"))
                .call()
                .expect("GET /log");
            if response.status().as_u16() == 410 {
                let (_, body) = common::answer(Ok(response)).expect("read body");
                assert!(body.contains("purged"), "{body}");
                break;
            }
            assert_eq!(response.status().as_u16(), 200);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never purged"
        );
    }
}

#[test]
fn sigterm_exits_zero_and_the_data_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_with_limits(dir.path());
    let http = client();
    for i in 0..20 {
        let url = server.url(&format!("/kv/key-{i:02}"));
        assert_eq!(put(&http, &url, &format!("value-{i}")).0, 201);
    }
    assert_eq!(delete(&http, &server.url("/kv/key-00")).0, 200);
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let server = start_with_limits(dir.path());
    let all = list(&http, &server, "key-", 100);
    let expected: Vec<_> = (1..20)
        .map(|i| (format!("key-{i:02}"), format!("value-{i}")))
        .collect();
    assert_eq!(all, expected);
    assert!(server.terminate().success());
}

#[test]
fn runs_with_no_setup_and_honours_the_config_files_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = client();

    // No flags at all: data in ./http-kv-data.
    let server = Server::start_in(Some(dir.path()), &[]);
    assert_eq!(put(&http, &server.url("/kv/a"), "1").0, 201);
    assert!(server.terminate().success());
    assert!(dir.path().join("http-kv-data").is_dir());

    // A file that names data_dir decides where the data goes.
    std::fs::write(dir.path().join("c.toml"), "data_dir = \"elsewhere\"\n").expect("write");
    let server = Server::start_in(Some(dir.path()), &["--config".as_ref(), "c.toml".as_ref()]);
    assert_eq!(get(&http, &server.url("/kv/a")).0, 404);
    assert!(server.terminate().success());
    assert!(dir.path().join("elsewhere").is_dir());

    // An unknown key in it stops the program with the key's name.
    std::fs::write(dir.path().join("bad.toml"), "colour = \"blue\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_http-kv"))
        .args(["--config", "bad.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .expect("run http-kv");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}
