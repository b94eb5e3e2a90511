//! The `concordkv` command: `serve` (the main job), `bench`,
//! `bench-lifecycle`, `bench-read`, `inspect`, `verify` and `torture`.
// The options' doc comments are their `--help` text, where `[archive]`
// names the TOML table, not an item.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concordkv::testing::torture::{self, TortureOptions};
use concordkv::{Config, SyncMode};
use concordkv_server::bench::{self, BenchOptions, LifecycleOptions, ReadBenchOptions};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "concordkv",
    version,
    about = "A durable key-value log with a Redis-protocol server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Redis protocol (RESP2; RESP3 after HELLO 3) on server.listen, data in data_dir.
    Serve {
        /// A TOML configuration file; every key is optional (see config/default.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Serve a read-only copy of this archive (s3://bucket/prefix),
        /// restored into data_dir if it holds no store yet and kept current
        /// every archive.max_lag_ms; writes are answered READONLY. The
        /// [archive] settings (endpoint, region, ...) say how to reach it.
        #[arg(long, value_name = "S3_URL")]
        follow: Option<String>,
    },
    /// Load a fresh directory in-process and report throughput and latency
    /// next to the raw fdatasync floor of the same directory.
    Bench {
        /// Where to put the data (must be empty); kept for inspection.
        /// Without it a temporary directory in the working directory is used and removed.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// always | batch | interval | none
        #[arg(long, default_value = "always")]
        sync_mode: SyncMode,
        /// Concurrent appenders.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// How long the load runs (default 10 s; with --ops, a cap only if given).
        #[arg(long)]
        seconds: Option<f64>,
        /// Stop after this many operations instead.
        #[arg(long)]
        ops: Option<u64>,
        /// Keys are drawn from this many.
        #[arg(long, default_value_t = 1_000_000)]
        key_space: u64,
        /// Operations per append (more than 1: atomic batches).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List a data directory's manifest, segments, snapshots and redundancy,
    /// the torn tail the next open would cut, and any damage; changes
    /// nothing. Exit 0: nothing the open would refuse; 1: damage listed;
    /// 2: the directory could not be read.
    Inspect {
        /// The data directory.
        data_dir: PathBuf,
        /// Print one JSON object instead of the listing.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum of every file of a data directory as `serve`
    /// would open it (recovery_mode = tolerate_tail); changes nothing.
    /// Exit 0: the open would succeed, though it may cut a torn tail off the
    /// newest segment (one `torn tail:` line: file, byte offset, bytes);
    /// 1: damage the open refuses (one `DAMAGED` line each: file, byte
    /// offset, reason); 2: the directory could not be read.
    Verify {
        /// The data directory.
        data_dir: PathBuf,
        /// Print one JSON object instead of the lines.
        #[arg(long)]
        json: bool,
    },
    /// Measure recovery, compaction, and appends while compaction runs, on a
    /// fresh temporary directory in the working directory.
    BenchLifecycle {
        /// Records written first.
        #[arg(long, default_value_t = 2_000_000)]
        records: u64,
        /// Keys they are spread over.
        #[arg(long, default_value_t = 200_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Sync mode of the append load.
        #[arg(long, default_value = "always")]
        sync_mode: SyncMode,
        /// Concurrent appenders of the append load.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Length of each window without compaction.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Compactions run under the load, each between two quiet windows.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Measure reading the log back (`Store::read` of every record written,
    /// in `none` mode) and following it (how long after an `always`-mode
    /// acknowledgement a subscriber gets the record), on fresh temporary
    /// directories in the working directory.
    BenchRead {
        /// Records written, then read back as one range.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Concurrent appenders while the subscriber follows.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Threads looking keys up in the state at once.
        #[arg(long, default_value_t = 64)]
        readers: usize,
        /// How long the appenders run while the subscriber follows.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a data directory from the archive ([archive] in the
    /// configuration, or --from), as of its latest record, of --seq, or of
    /// what it held at --time: every object is checked against the CRC its
    /// name carries, and a gap is refused with the missing range.
    /// Credentials come from the environment (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY). Exit 0: restored (`verify` and `serve` take
    /// the directory as it is); 2: not.
    Restore {
        /// s3://bucket/prefix (default: archive.url of the configuration).
        #[arg(long)]
        from: Option<String>,
        /// The directory to rebuild; it must not exist or be empty.
        #[arg(long)]
        to: PathBuf,
        /// Restore up to this sequence number (default: the latest archived).
        #[arg(long, conflicts_with = "time")]
        seq: Option<u64>,
        /// Restore what the archive held at this time (RFC 3339, e.g.
        /// 2026-12-03T10:00:00Z; to the second, as S3 times objects).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        time: Option<std::time::SystemTime>,
        /// A TOML configuration file for the [archive] settings (endpoint,
        /// region, allow_http, retries).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Cut the power of a simulated disk at random points of random
    /// workloads, with injected I/O errors, and check every recovery against
    /// a model: of a key-value store, or with --log of a Log (appends,
    /// truncations, purges, metadata, reads, a subscriber). Exit 0: every
    /// guarantee held; 1: one broke (the seed and cycle are printed and
    /// replay the run).
    Torture {
        /// Torture a Log instead of a key-value store.
        #[arg(long)]
        log: bool,
        /// Seed of every random choice (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Power cuts to survive.
        #[arg(long, default_value_t = 1000)]
        cycles: u64,
        /// Operations submitted per cycle, at most.
        #[arg(long, default_value_t = 200)]
        ops_per_cycle: usize,
        /// A kind of fault not to inject, to tell which one a failure needs
        /// (repeatable): io-errors | reordering | slow-syncs | media-damage | limit-changes |
        /// actor-panics.
        #[arg(long)]
        without: Vec<torture::FaultKind>,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        Command::Bench { .. }
        | Command::BenchLifecycle { .. }
        | Command::BenchRead { .. }
        | Command::Inspect { .. }
        | Command::Verify { .. }
        | Command::Restore { .. } => "warn",
        // The store logs every injected fault; the summary says what matters.
        Command::Torture { .. } => "off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concordkv: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Restore {
            from,
            to,
            seq,
            time,
            config,
        } => {
            let mut archive = Config::load(config.as_deref())?.archive;
            if let Some(from) = from {
                archive.url = from;
            }
            if !archive.enabled() {
                anyhow::bail!(
                    "no archive to restore from: give --from s3://bucket/prefix or set archive.url"
                );
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let target = match (seq, time) {
                (Some(seq), _) => concordkv::archive::RestoreTarget::Seq(seq),
                (None, Some(time)) => concordkv::archive::RestoreTarget::Time(time),
                (None, None) => concordkv::archive::RestoreTarget::Latest,
            };
            let report = runtime.block_on(concordkv::archive::restore(&archive, &to, target))?;
            println!(
                "restored {} up to sequence number {}: {} snapshot(s), {} segment(s), {} objects, {} bytes",
                to.display(),
                report.last_seq,
                report.snapshots.len(),
                report.segments,
                report.objects,
                report.bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { data_dir, json } => {
            let found = concordkv::inspect(&data_dir)?;
            if json {
                println!("{}", serde_json::to_string(&found)?);
            } else {
                print!("{}", found.report());
            }
            Ok(exit_for(&found))
        }
        Command::Verify { data_dir, json } => {
            let found = concordkv::inspect(&data_dir)?;
            let records: u64 = found.segments.iter().map(|s| s.records).sum();
            if json {
                let report = serde_json::json!({
                    "dir": data_dir.to_string_lossy(),
                    "ok": found.damage.is_empty(),
                    "segments": found.segments.len(),
                    "records": records,
                    "snapshots": found.snapshots.len(),
                    "torn_tail": found.torn_tail,
                    "damage": serde_json::to_value(&found)?["damage"],
                });
                println!("{report}");
                return Ok(exit_for(&found));
            }
            if let Some(line) = found.torn_tail_line() {
                println!("{line}");
            }
            let lines = found.damage_lines();
            if lines.is_empty() {
                println!(
                    "OK {}: {} segments ({records} records) and {} snapshots, every checksum intact{}",
                    data_dir.display(),
                    found.segments.len(),
                    found.snapshots.len(),
                    if found.torn_tail.is_some() {
                        " up to the torn tail"
                    } else {
                        ""
                    }
                );
            }
            for line in lines {
                println!("{line}");
            }
            Ok(exit_for(&found))
        }
        Command::Serve { config, follow } => {
            let config = Config::load(config.as_deref())?;
            let follow = follow.map(|url| concordkv::ArchiveConfig {
                url,
                ..config.archive.clone()
            });
            if let Some(source) = &follow {
                let mut check = config.clone();
                check.archive = source.clone();
                check.validate()?;
            }
            // Before the System: the exporter then has a thread of its own.
            if config.metrics.enabled {
                concordkv::install_prometheus_exporter(&config.metrics)?;
            }
            actix_rt::System::new().block_on(concordkv_server::server::serve(config, follow))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            dir,
            sync_mode,
            writers,
            value_size,
            seconds,
            ops,
            key_space,
            batch,
            json,
        } => {
            // With --ops and no --seconds, the count alone ends the run.
            let seconds = seconds.unwrap_or(if ops.is_some() { 86_400.0 } else { 10.0 });
            check_load(
                writers,
                seconds,
                &[("--batch", batch as u64), ("--ops", ops.unwrap_or(1))],
            )?;
            let report = bench::run(&BenchOptions {
                dir,
                sync_mode,
                writers,
                value_size,
                seconds,
                ops,
                key_space,
                batch,
                progress: !json,
            })?;
            print_report(json, &report, report.table());
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchLifecycle {
            records,
            keys,
            value_size,
            sync_mode,
            writers,
            seconds,
            rounds,
            json,
        } => {
            check_load(
                writers,
                seconds,
                &[
                    ("--records", records),
                    ("--keys", keys),
                    ("--rounds", u64::from(rounds)),
                ],
            )?;
            let report = bench::run_lifecycle(&LifecycleOptions {
                records,
                keys,
                value_size,
                sync_mode,
                writers,
                seconds,
                rounds,
            })?;
            print_report(json, &report, report.table());
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchRead {
            records,
            value_size,
            writers,
            readers,
            seconds,
            json,
        } => {
            check_load(writers, seconds, &[("--records", records)])?;
            let report = bench::run_read(&ReadBenchOptions {
                records,
                value_size,
                writers,
                readers,
                seconds,
            })?;
            print_report(json, &report, report.table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Torture {
            log,
            seed,
            cycles,
            ops_per_cycle,
            without,
            json,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
            let opts = TortureOptions {
                seed,
                cycles,
                ops_per_cycle,
                without,
            };
            let outcome = if log {
                torture::log::run(&opts).map(|report| print_report(json, &report, report.table()))
            } else {
                torture::run(&opts).map(|report| print_report(json, &report, report.table()))
            };
            match outcome {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(failure) => {
                    println!("FAILED {failure}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `inspect` and `verify` exit 1 when the open would refuse the directory;
/// a torn tail alone it cuts and opens.
fn exit_for(found: &concordkv::Inspection) -> ExitCode {
    if found.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints a bench report: one JSON object, or the table.
fn print_report(json: bool, report: &impl serde::Serialize, table: String) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{table}");
    }
}

/// Refuses a load that could not run: no writers, a non-positive duration,
/// or a count of zero.
fn check_load(writers: usize, seconds: f64, counts: &[(&str, u64)]) -> anyhow::Result<()> {
    if writers == 0 {
        anyhow::bail!("--writers must be at least 1");
    }
    if !seconds.is_finite() || seconds <= 0.0 {
        anyhow::bail!("--seconds must be positive, not {seconds}");
    }
    match counts.iter().find(|(_, n)| *n == 0) {
        Some((flag, _)) => anyhow::bail!("{flag} must be at least 1"),
        None => Ok(()),
    }
}

/// The error and its causes on one line, each cause once: the library's
/// errors already name their I/O cause in their own message.
fn describe(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}
