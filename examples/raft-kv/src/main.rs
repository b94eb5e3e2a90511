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

mod network;
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

use crate::network::Network;
use crate::routes::Node;
use crate::settings::Settings;

/// First port of the default addresses: node `n` listens on `21000 + n`.
const BASE_PORT: u16 = 21000;
/// How often the Prometheus recorder drains its histograms.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// Bucket bounds of the `*_seconds` histograms (as concordkv's exporter).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Largest request body: a snapshot chunk or a batch of entries, with room.
const MAX_BODY_BYTES: usize = 64 << 20;

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
    listen: SocketAddr,
    settings: Settings,
    init: Option<BTreeMap<u64, BasicNode>>,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let mut settings = Settings::load(args.config.as_deref())?;
    let node = settings.node.clone().unwrap_or(settings::NodeSection {
        id: None,
        listen: None,
        data_dir: None,
    });
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
        listen,
        settings,
        init: args.init,
    };
    actix_web::rt::System::new().block_on(serve(plan, metrics))
}

/// Installs the global Prometheus recorder; `/metrics` renders its handle.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn Error>> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?)
}

async fn serve(plan: Plan, metrics: PrometheusHandle) -> Result<(), Box<dyn Error>> {
    let Plan {
        id,
        listen,
        settings,
        init,
    } = plan;
    let raft_config = Arc::new(settings.raft.to_openraft()?);
    let limits = settings.store.limits.clone();
    let data_dir = settings.store.data_dir.clone();
    let (log_store, state_machine) = concordkv_raft::open::<TypeConfig>(settings.store)
        .await
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    let raft = Raft::new(
        id,
        raft_config,
        Network::new()?,
        log_store.clone(),
        state_machine.clone(),
    )
    .await?;

    let upkeep = metrics.clone();
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let node = web::Data::new(Node {
        id,
        raft: raft.clone(),
        state_machine: state_machine.clone(),
        limits,
        metrics,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(node.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(middleware::from_fn(routes::refuse_browsers))
            .configure(routes::configure)
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
    let log_closed = log_store.close().await;
    let state_closed = state_machine.close().await;
    served?;
    if let Some(fatal) = fatal {
        return Err(format!("Raft stopped: {fatal}").into());
    }
    stopped.map_err(|e| format!("stopping Raft: {e}"))?;
    log_closed?;
    state_closed?;
    println!("raft-kv: node {id} stopped");
    Ok(())
}
