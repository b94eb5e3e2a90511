//! `raft-kv`: a replicated key-value service. Each node is an actix-web
//! server running openraft over concordkv storage (`concordkv-raft`): the
//! Raft log on a concordkv log with `fdatasync` before every
//! acknowledgement, the applied keys in a concordkv store, snapshots as
//! the store's snapshot files. Nodes talk to each other and to clients
//! over HTTP.
//!
//! A write is answered once a majority has it on disk and this node applied
//! it. A three-node cluster on one machine:
//!
//! ```text
//! raft-kv --id 1 --init 1=127.0.0.1:21001,2=127.0.0.1:21002,3=127.0.0.1:21003
//! raft-kv --id 2
//! raft-kv --id 3
//! ```
// The options' doc comments are their `--help` text, where `<id>` is a
// placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod memory;
mod network;
mod proposer;
mod routes;
mod settings;

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use clap::Parser;
use concordkv_raft::TypeConfig;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};

use crate::memory::{MemoryLog, MemoryStateMachine};
use crate::network::Network;
use crate::proposer::Proposer;
use crate::routes::{Keys, Node};
use crate::settings::Settings;

/// First port of the default addresses: node `n` listens on `21000 + n`.
const BASE_PORT: u16 = 21000;
/// How often the Prometheus recorder drains its histograms.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// A node of a replicated key-value service (openraft on concordkv).
#[derive(Parser, Debug)]
#[command(name = "raft-kv", version)]
struct Args {
    /// The node's TOML file: `[node]`, `[raft]` and `[store]` (concordkv's
    /// settings); every key is optional.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The node's id (overrides `[node] id`).
    #[arg(long)]
    id: Option<u64>,
    /// Address to listen on (overrides `[node] listen`; default
    /// 127.0.0.1:21000 + id). The other nodes reach this node there.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Data directory (overrides `[node] data_dir`; default
    /// ./raft-kv-data/<id>).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Makes a new cluster of these voters (`ID=IP:PORT,…`), this node
    /// among them. Ignored by a node that already belongs to one, so the
    /// same command restarts it.
    #[arg(long, value_name = "ID=IP:PORT,...", value_parser = parse_members)]
    init: Option<BTreeMap<u64, BasicNode>>,
    /// Where the log and the keys live: `concordkv` (on disk, durable) or
    /// `memory` (nothing survives the process: the benchmark's baseline).
    #[arg(long, value_enum, default_value = "concordkv")]
    store: StoreKind,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Concordkv,
    Memory,
}

fn parse_members(text: &str) -> Result<BTreeMap<u64, BasicNode>, String> {
    text.split(',')
        .map(|member| {
            let (id, addr) = member
                .split_once('=')
                .ok_or_else(|| format!("{member:?}: expected ID=IP:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("{member:?}: {id:?} is not a node id"))?;
            let addr: SocketAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("{member:?}: {addr:?} is not an IP:PORT"))?;
            Ok((id, BasicNode::new(addr.to_string())))
        })
        .collect()
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-kv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a node runs with, from the arguments over the file.
struct Plan {
    id: u64,
    store: StoreKind,
    listen: SocketAddr,
    settings: Settings,
    init: Option<BTreeMap<u64, BasicNode>>,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let mut settings = Settings::load(args.config.as_deref())?;
    let mut node = settings.node.clone().unwrap_or_default();
    // From the environment, to keep the secret out of the file.
    if let Ok(token) = std::env::var("RAFT_KV_CLUSTER_TOKEN") {
        node.cluster_token = Some(token);
    }
    if node.cluster_token.as_deref() == Some("") {
        return Err("an empty cluster token would let anyone in: set one, or none".into());
    }
    settings.node = Some(node.clone());
    let id = args
        .id
        .or(node.id)
        .ok_or("no node id: give --id or `[node] id` in the file")?;
    let listen = match args.listen.or(node.listen) {
        Some(addr) => addr,
        None => {
            let port = u16::try_from(id)
                .ok()
                .and_then(|id| BASE_PORT.checked_add(id))
                .ok_or_else(|| format!("node id {id} has no default port: give --listen"))?;
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    settings.store.data_dir = args
        .data_dir
        .or(node.data_dir)
        .unwrap_or_else(|| PathBuf::from(format!("./raft-kv-data/{id}")));
    settings.store.metrics.store = format!("node-{id}");
    if let Some(members) = &args.init {
        if !members.contains_key(&id) {
            return Err(format!("--init does not name this node ({id})").into());
        }
    }
    let metrics = install_metrics()?;
    let plan = Plan {
        id,
        store: args.store,
        listen,
        settings,
        init: args.init,
    };
    actix_web::rt::System::new().block_on(serve(plan, metrics))
}

/// Installs the global Prometheus recorder; `/metrics` renders its handle.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn Error>> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            concordkv::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("concordkv_wal_sync_batch_records".into()),
            concordkv::SYNC_BATCH_BUCKETS,
        )?
        .install_recorder()?)
}

async fn serve(plan: Plan, metrics: PrometheusHandle) -> Result<(), Box<dyn Error>> {
    let Plan {
        id,
        store,
        listen,
        settings,
        init,
    } = plan;
    let raft_config = Arc::new(settings.raft.to_openraft()?);
    let chunk_bytes = settings.raft.snapshot_max_chunk_bytes;
    let token = settings.node.as_ref().and_then(|n| n.cluster_token.clone());
    let limits = settings.store.limits.clone();
    // Half the log's record limit: a batch's encoding adds a few bytes
    // per write to their keys and values.
    let proposal_bytes = usize::try_from(limits.max_record_bytes / 2).unwrap_or(usize::MAX);
    let data_dir = settings.store.data_dir.clone();
    let network = Network::new(token.clone())?;
    let (raft, keys, durable) = match store {
        StoreKind::Concordkv => {
            let (log_store, state_machine) = concordkv_raft::open::<TypeConfig>(settings.store)
                .await
                .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
            let raft = Raft::new(
                id,
                raft_config,
                network,
                log_store.clone(),
                state_machine.clone(),
            )
            .await?;
            let keys = Keys::Durable(state_machine.clone());
            (raft, keys, Some((log_store, state_machine)))
        }
        StoreKind::Memory => {
            let state_machine = MemoryStateMachine::new(data_dir.join("memory-snapshots"))?;
            let raft = Raft::new(
                id,
                raft_config,
                network,
                MemoryLog::default(),
                state_machine.clone(),
            )
            .await?;
            (raft, Keys::Memory(state_machine), None)
        }
    };

    let upkeep = metrics.clone();
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    // Room for what a peer sends: replication reads stop after
    // `MAX_READ_BYTES` but always carry one entry (up to a record), and a
    // snapshot comes in chunks.
    let max_body = concordkv_raft::MAX_READ_BYTES
        + proposal_bytes.saturating_mul(2)
        + usize::try_from(chunk_bytes).unwrap_or(usize::MAX)
        + (1 << 20);
    let max_value = usize::try_from(limits.max_value_bytes).unwrap_or(usize::MAX);
    let node = web::Data::new(Node {
        id,
        token,
        raft: raft.clone(),
        proposer: Proposer::start(raft.clone(), proposal_bytes),
        keys,
        limits,
        metrics,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(node.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(middleware::from_fn(routes::refuse_browsers))
            .configure(routes::configure(max_value))
    })
    .bind(listen)
    .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    for addr in server.addrs() {
        println!("raft-kv: node {id} listening on http://{addr}");
    }
    if let Some(members) = init {
        match raft.initialize(members).await {
            Ok(()) => println!("raft-kv: node {id} initialized the cluster"),
            // Already a member of a cluster: a restart with the same command.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(format!("cannot initialize the cluster: {e}").into()),
        }
    }

    // A Raft core that stopped on a fatal error (a storage failure, say)
    // ends the process: serving reads from a node that no longer follows
    // the log would hand out stale data as current.
    let server = server.run();
    let stopper = server.handle();
    let mut watched = raft.metrics();
    actix_web::rt::spawn(async move {
        while watched.changed().await.is_ok() {
            let fatal = watched.borrow().running_state.clone().err();
            if let Some(fatal) = fatal {
                eprintln!("raft-kv: node {id}: Raft stopped: {fatal}");
                break;
            }
        }
        stopper.stop(false).await;
    });
    let served = server.await;
    let fatal = raft.metrics().borrow().running_state.clone().err();
    let stopped = raft.shutdown().await;
    let closed = match durable {
        Some((log_store, state_machine)) => {
            log_store.close().await.and(state_machine.close().await)
        }
        None => Ok(()),
    };
    served?;
    if let Some(fatal) = fatal {
        return Err(format!("Raft stopped: {fatal}").into());
    }
    stopped.map_err(|e| format!("stopping Raft: {e}"))?;
    closed?;
    println!("raft-kv: node {id} stopped");
    Ok(())
}
