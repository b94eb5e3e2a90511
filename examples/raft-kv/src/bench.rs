//! `raft-kv-bench`: write load on a running `raft-kv` cluster. Many clients
//! each keep one write in flight against the leader for a while; prints
//! throughput, latency percentiles and, from the nodes' `/metrics`, how
//! many `fdatasync`s the logs made per committed entry.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

/// Write load on a raft-kv cluster.
#[derive(Parser, Debug)]
#[command(name = "raft-kv-bench", version)]
struct Args {
    /// The nodes' base URLs, node 1 first (`http://127.0.0.1:21001,…`).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Clients, each with one write in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .tcp_nodelay(true)
        .build()?;
    let leader = leader(&http, &args.nodes).await?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let value = "v".repeat(args.value_bytes);
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let (http, measuring, stop) = (http.clone(), measuring.clone(), stop.clone());
            let url = format!("{}/kv", args.nodes[leader]);
            let value = value.clone();
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
                let mut failed = 0u64;
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let started = Instant::now();
                    let answer = http
                        .put(format!("{url}/bench-{c}-{n}"))
                        .body(value.clone())
                        .send()
                        .await;
                    let ok = matches!(&answer, Ok(r) if r.status().is_success());
                    if measuring.load(Relaxed) {
                        if ok {
                            let micros = started.elapsed().as_micros() as u64;
                            latencies.record(micros.max(1)).expect("in range");
                        } else {
                            failed += 1;
                        }
                    }
                    n += 1;
                }
                (latencies, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let start_counts = Counts::read(&http, &args.nodes, leader).await?;
    measuring.store(true, Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Relaxed);
    let elapsed = started.elapsed();
    let end_counts = Counts::read(&http, &args.nodes, leader).await?;
    stop.store(true, Relaxed);
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut failed = 0;
    for client in clients {
        let (h, f) = client.await?;
        latencies.add(h)?;
        failed += f;
    }
    let ops = latencies.len() as f64 / elapsed.as_secs_f64();
    let entries = end_counts.entries.saturating_sub(start_counts.entries);
    let syncs: Vec<u64> = end_counts
        .syncs
        .iter()
        .zip(&start_counts.syncs)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let per_entry = syncs.iter().sum::<u64>() as f64 / entries.max(1) as f64;
    let per_write = syncs.iter().sum::<u64>() as f64 / latencies.len().max(1) as f64;
    println!(
        "{} clients, {} s: {:.0} writes/s, p50 {} µs, p99 {} µs, p99.9 {} µs, {} failed",
        args.clients,
        args.seconds,
        ops,
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.value_at_quantile(0.999),
        failed
    );
    println!(
        "{entries} entries committed; log fdatasyncs per node {syncs:?}: {per_entry:.3} per committed entry, {per_write:.3} per write (all nodes)"
    );
    println!(
        "RESULT ops_per_sec={ops:.0} p50_us={} p99_us={} syncs_per_entry={per_entry:.3} syncs_per_write={per_write:.3} failed={failed} leader={}",
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        leader + 1
    );
    Ok(())
}

/// The index of the node that leads, as node 1 sees it.
async fn leader(http: &reqwest::Client, nodes: &[String]) -> Result<usize, Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics: serde_json::Value = http
            .get(format!("{}/cluster", nodes[0]))
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = metrics["current_leader"].as_u64() {
            return Ok(usize::try_from(id)? - 1);
        }
        if Instant::now() > deadline {
            return Err("no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader's last log index and each node's log syncs so far.
struct Counts {
    entries: u64,
    syncs: Vec<u64>,
}

impl Counts {
    async fn read(
        http: &reqwest::Client,
        nodes: &[String],
        leader: usize,
    ) -> Result<Counts, Box<dyn Error>> {
        let metrics: serde_json::Value = http
            .get(format!("{}/cluster", nodes[leader]))
            .send()
            .await?
            .json()
            .await?;
        let entries = metrics["last_log_index"].as_u64().unwrap_or(0);
        let mut syncs = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let text = http
                .get(format!("{node}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let store = format!("store=\"node-{}-log\"", i + 1);
            let count = text
                .lines()
                .filter(|l| l.starts_with("concordkv_wal_syncs_total{") && l.contains(&store))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            syncs.push(count as u64);
        }
        Ok(Counts { entries, syncs })
    }
}
