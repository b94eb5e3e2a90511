//! What a hostile peer or a web page on the same host can send: refused
//! before Raft sees it, and the cluster goes on.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, NO_SNAPSHOTS};

fn post(cluster: &Cluster, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = cluster.agent.post(&cluster.url(0, path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .send(&b"\x00\x01"[..])
        .expect("POST")
        .status()
        .as_u16()
}

#[test]
fn forged_rpcs_and_web_pages_are_refused() {
    let config = format!("{NO_SNAPSHOTS}\n[node]\ncluster_token = \"s3cret-token\"\n");
    let cluster = Cluster::start(&config);
    let (_, term) = cluster.leader();
    let octets = ("content-type", "application/octet-stream");

    // No token, a wrong one: refused before the body is decoded.
    assert_eq!(post(&cluster, "/raft/vote", &[octets]), 401);
    assert_eq!(
        post(
            &cluster,
            "/raft/vote",
            &[octets, ("x-raft-kv-token", "guess")]
        ),
        401
    );
    // The token but not the RPC format (a form a page could post).
    let token = ("x-raft-kv-token", "s3cret-token");
    assert_eq!(
        post(
            &cluster,
            "/raft/append",
            &[("content-type", "text/plain"), token]
        ),
        415
    );
    // The token and the format, but bytes that are no request.
    assert_eq!(post(&cluster, "/raft/append", &[octets, token]), 400);
    // From a page: an Origin, fetch metadata, or a rebound host name.
    assert_eq!(
        post(
            &cluster,
            "/raft/vote",
            &[octets, token, ("origin", "http://evil.example")]
        ),
        403
    );
    let page_write = cluster
        .agent
        .put(&cluster.url(0, "/kv/planted"))
        .header("sec-fetch-site", "cross-site")
        .send("x")
        .expect("PUT");
    assert_eq!(page_write.status().as_u16(), 403);
    let rebound = cluster
        .agent
        .get(&cluster.url(0, "/dump"))
        .header("host", "evil.example:21001")
        .call()
        .expect("GET");
    assert_eq!(rebound.status().as_u16(), 403);

    // The nodes, which hold the token, still make progress, in the same term.
    let deadline = Instant::now() + Duration::from_secs(30);
    cluster.write("after", "fine", deadline).expect("written");
    assert_eq!(
        cluster.leader().1,
        term,
        "no forged RPC unseated the leader"
    );
    let nodes = cluster.converged();
    assert!(nodes.iter().all(|n| !n.contains_key("planted")));

    // What the dashboard reads: each store's series by its label, and the
    // node's Raft state.
    let mut scrape = cluster
        .agent
        .get(&cluster.url(1, "/metrics"))
        .call()
        .expect("GET");
    let text = scrape.body_mut().read_to_string().expect("text");
    for series in [
        "concordkv_wal_syncs_total{store=\"node-2-log\"}",
        "concordkv_wal_records_total{store=\"node-2-state\"}",
        "raft_kv_last_applied_index{node=\"2\"}",
        "raft_kv_is_leader{node=\"2\"}",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
}
