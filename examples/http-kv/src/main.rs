//! `http-kv`: a small HTTP key-value service on a concordkv store, showing
//! the library inside an actix-web application.
//!
//! The store is opened once, before the server starts; every worker gets a
//! clone of the `Store` handle (to write) and of its `State` (to read, with
//! no round trip to the log's actors). Writes are answered only after the
//! store acknowledged them, so a 2xx means what `wal.sync_mode` promises
//! (on disk, with the default `always`). actix-web stops the server on
//! SIGINT or SIGTERM; `main` then shuts the store down, which writes and
//! syncs everything accepted before the signal.
//!
//! Routes are in `routes`, the log stream in `log_stream`.

mod log_stream;
mod routes;

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use clap::Parser;
use concordkv::{Config, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Where the data goes when neither `--data-dir`, the configuration file
/// nor `CONCORDKV__DATA_DIR` names a directory.
const DEFAULT_DATA_DIR: &str = "./http-kv-data";

/// Seconds actix-web waits for open connections at shutdown before it
/// closes them: `/log` streams never end by themselves, so a short grace.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// How often the Prometheus recorder drains its histograms (its own
/// listener would do it; `install_recorder` leaves it to the caller).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// A key-value service over HTTP on a concordkv store.
#[derive(Parser, Debug)]
#[command(name = "http-kv", version)]
struct Args {
    /// A concordkv configuration file (TOML, any subset of the keys of
    /// `config/default.toml`); `CONCORDKV__…` variables override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Data directory; overrides `data_dir` from the file or environment
    /// (default when none names one: ./http-kv-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address the HTTP server listens on (port 0: any free port; the bound
    /// address is printed).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-kv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let config = load_config(args.config.as_deref(), args.data_dir)?;
    // Before the store opens, so its first metrics (recovery) are kept.
    let metrics = install_metrics()?;
    actix_web::rt::System::new().block_on(serve(config, args.listen, metrics))
}

/// The library's configuration, with this program's default data directory
/// unless `--data-dir`, the file or the environment names one.
fn load_config(file: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, Box<dyn Error>> {
    let mut config = Config::load(file)?;
    match data_dir {
        Some(dir) => config.data_dir = dir,
        None if !names_data_dir(file)? => config.data_dir = DEFAULT_DATA_DIR.into(),
        None => {}
    }
    config.validate()?;
    Ok(config)
}

/// Whether the environment or the file sets `data_dir` (`Config::load`
/// fills in the library's default `./data` otherwise).
fn names_data_dir(file: Option<&Path>) -> Result<bool, Box<dyn Error>> {
    if std::env::var_os("CONCORDKV__DATA_DIR").is_some() {
        return Ok(true);
    }
    let Some(path) = file else {
        return Ok(false);
    };
    let named = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()?
        .get_string("data_dir")
        .is_ok();
    Ok(named)
}

/// Installs the global Prometheus recorder; `/metrics` renders its handle.
fn install_metrics() -> Result<PrometheusHandle, Box<dyn Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            concordkv::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("concordkv_wal_sync_batch_records".into()),
            concordkv::SYNC_BATCH_BUCKETS,
        )?
        .install_recorder()?;
    Ok(handle)
}

async fn serve(
    config: Config,
    listen: SocketAddr,
    metrics: PrometheusHandle,
) -> Result<(), Box<dyn Error>> {
    let data_dir = config.data_dir.clone();
    let (store, _recovery) = Store::open(config).await?;
    let state = store.state();
    println!(
        "http-kv: opened {} ({} keys, last seq {})",
        data_dir.display(),
        state.len(),
        state.last_seq()
    );

    let upkeep = metrics.clone();
    actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let store_data = web::Data::new(store.clone());
    let state_data = web::Data::new(state);
    let metrics_data = web::Data::new(metrics);
    let bound = HttpServer::new(move || {
        App::new()
            .app_data(store_data.clone())
            .app_data(state_data.clone())
            .app_data(metrics_data.clone())
            .wrap(middleware::from_fn(routes::refuse_pages))
            .configure(routes::configure)
    })
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .bind(listen);
    let server = match bound {
        Ok(server) => server,
        Err(e) => {
            store.shutdown().await?;
            return Err(format!("cannot listen on {listen}: {e}").into());
        }
    };
    for addr in server.addrs() {
        println!("http-kv: listening on http://{addr}");
    }

    // Returns once a signal (or an error) stopped the server and its
    // workers finished their requests.
    let served = server.run().await;
    let closed = store.shutdown().await;
    served?;
    closed?;
    println!("http-kv: store closed");
    Ok(())
}
