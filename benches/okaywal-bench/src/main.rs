//! `okaywal-bench`: okaywal 0.3 under the load `concordkv bench --sync-mode
//! always` applies: N threads, each appending one entry of a 16-byte key and
//! a value at a time and committing it (okaywal's commit is durable: it
//! returns after the fsync that covers the entry, shared by the threads
//! waiting at the same time). Prints one JSON object, for
//! `benches/peers.sh`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use okaywal::{LogVoid, WriteAheadLog};

/// okaywal under concurrent durable appends.
#[derive(Parser, Debug)]
#[command(name = "okaywal-bench", version)]
struct Args {
    /// Threads, each with one entry in flight.
    #[arg(long, default_value_t = 64)]
    threads: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes per value (each entry is a 16-byte key and the value).
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Where the log goes (default: a temporary directory here, removed).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let scratch = tempfile::Builder::new()
        .prefix(".okaywal-bench-")
        .tempdir_in(".")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let log = WriteAheadLog::recover(&dir, LogVoid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let (log, stop) = (log.clone(), Arc::clone(&stop));
            let value = vec![b'v'; args.value_size];
            std::thread::spawn(move || -> std::io::Result<Histogram<u64>> {
                let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let key = format!("{t:04}-{n:011}");
                    let began = Instant::now();
                    let mut entry = log.begin_entry()?;
                    entry.write_chunk(key.as_bytes())?;
                    entry.write_chunk(&value)?;
                    entry.commit()?;
                    let micros = began.elapsed().as_micros() as u64;
                    latencies.record(micros.max(1)).expect("in range");
                    n += 1;
                }
                Ok(latencies)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Relaxed);
    let mut latencies = Histogram::<u64>::new(3)?;
    for thread in threads {
        let h = thread.join().map_err(|_| "a writer thread panicked")??;
        latencies.add(h)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    log.shutdown()?;
    println!(
        "{}",
        serde_json::json!({
            "threads": args.threads,
            "value_bytes": args.value_size,
            "ops": latencies.len(),
            "seconds": elapsed,
            "ops_per_sec": latencies.len() as f64 / elapsed,
            "p50_us": latencies.value_at_quantile(0.5),
            "p99_us": latencies.value_at_quantile(0.99),
        })
    );
    Ok(())
}
