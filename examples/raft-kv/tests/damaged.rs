//! A node whose log has a flipped byte in a sealed segment refuses to
//! start, naming the file; once its directory is wiped it rejoins and is
//! rebuilt from the leader.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_holds, files_with, Cluster, NO_SNAPSHOTS};

#[test]
fn a_damaged_node_refuses_to_start_and_rejoins_once_wiped() {
    let mut cluster = Cluster::start(NO_SNAPSHOTS);
    cluster.leader();
    let mut acked = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..600 {
        let (key, value) = (format!("k{n:04}"), format!("value-{n}-{}", "x".repeat(40)));
        cluster.write(&key, &value, deadline).expect("written");
        acked.insert(key, value);
    }
    let victim = 2;
    cluster.converged();
    cluster.kill9(victim);

    let log = cluster.data_dir(victim).join("log");
    let segments = files_with(&log, "wal");
    assert!(
        segments.len() >= 3,
        "the log has sealed segments: {segments:?}"
    );
    let sealed = &segments[1];
    let mut bytes = std::fs::read(sealed).expect("read the segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(sealed, &bytes).expect("write the segment");

    let (status, stderr) = cluster.start_refused(victim);
    assert!(!status.success(), "a damaged node must not start");
    let name = sealed.file_name().unwrap().to_string_lossy();
    assert!(stderr.contains(&*name), "the error names {name}: {stderr}");

    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wipe");
    cluster.start_node(victim);
    for n in 600..700 {
        let (key, value) = (format!("k{n:04}"), format!("after-{n}"));
        cluster.write(&key, &value, deadline).expect("written");
        acked.insert(key, value);
    }
    let nodes = cluster.converged();
    assert_eq!(nodes.len(), 3);
    assert_holds(&nodes, &acked);
}
