//! kill -9 of all three nodes at once while clients write, then a restart:
//! every write a client saw acknowledged is on every node.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_holds, Cluster, FREQUENT_SNAPSHOTS};

#[test]
fn every_acknowledged_write_survives_killing_every_node_at_once() {
    let mut cluster = Cluster::start(FREQUENT_SNAPSHOTS);
    cluster.leader();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, acked, stop) = (cluster.client(), acked.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("w{w}-{n:05}"), format!("v{n}"));
                    let written =
                        client.write(&key, &value, Instant::now() + Duration::from_secs(1));
                    if written.is_ok() {
                        acked.lock().unwrap().insert(key, value);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        cluster.kill9(i);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the clients wrote under load ({})",
        acked.len()
    );

    for i in 0..3 {
        cluster.start_node(i);
    }
    let nodes = cluster.converged();
    assert_eq!(nodes.len(), 3);
    assert_holds(&nodes, &acked);
}
