//! Three processes: write through the leader, kill -9 it, write through the
//! next one, bring the killed node back and watch it catch up through a
//! snapshot; all three end identical with every acknowledged write.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_holds, Cluster, FREQUENT_SNAPSHOTS};

#[test]
fn the_cluster_survives_losing_its_leader_and_the_leader_catches_up() {
    let mut cluster = Cluster::start(FREQUENT_SNAPSHOTS);
    let (first, term) = cluster.leader();
    let mut acked = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..1000 {
        let (key, value) = (format!("k{n:04}"), format!("first-{n}"));
        cluster.write(&key, &value, deadline).expect("written");
        acked.insert(key, value);
    }
    let left_at = cluster.metrics(first).expect("metrics")["last_log_index"]
        .as_u64()
        .expect("an index");

    cluster.kill9(first);
    let (second, new_term) = cluster.leader();
    assert_ne!(second, first);
    assert!(new_term > term, "a new leader is elected in a new term");
    for n in 1000..2000 {
        let (key, value) = (format!("k{n:04}"), format!("second-{n}"));
        cluster.write(&key, &value, deadline).expect("written");
        acked.insert(key, value);
    }
    // The leader has purged its log past where the killed node stopped:
    // that node can only come back through a snapshot.
    let purged = cluster.metrics(second).expect("metrics")["purged"]["index"]
        .as_u64()
        .expect("the leader purged its log");
    assert!(
        purged > left_at,
        "purged {purged}, the killed node left at {left_at}"
    );

    cluster.start_node(first);
    let nodes = cluster.converged();
    assert_eq!(nodes.len(), 3);
    assert_holds(&nodes, &acked);
    let snapshot = cluster.metrics(first).expect("metrics")["snapshot"]["index"]
        .as_u64()
        .expect("the restarted node has a snapshot");
    assert!(snapshot > left_at, "it installed the leader's snapshot");
}
