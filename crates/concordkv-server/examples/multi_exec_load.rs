//! Transactions per second a Redis-protocol server sustains: `clients`
//! connections (redis-rs), each sending `MULTI`, ten `SET`s of 100-byte
//! values to random keys and `EXEC` as one pipeline, then waiting for the
//! reply, for `seconds`. `benches/redis_compare.sh` runs it against Redis
//! and `concordkv serve` in one run; redis-benchmark has no transactions.
//!
//!     cargo run --release -p concordkv-server --example multi_exec_load -- PORT [CLIENTS] [SECONDS]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> redis::RedisResult<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: multi_exec_load PORT [CLIENTS] [SECONDS]";
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect(usage);
    let clients: usize = args.next().map_or(50, |c| c.parse().expect(usage));
    let seconds: f64 = args.next().map_or(5.0, |s| s.parse().expect(usage));
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let (stop, done) = (AtomicBool::new(false), AtomicU64::new(0));
    let value = vec![b'x'; 100];
    let started = Instant::now();
    std::thread::scope(|scope| -> redis::RedisResult<()> {
        let mut workers = Vec::new();
        for w in 0..clients as u64 {
            let mut connection = client.get_connection()?;
            let (stop, done, value) = (&stop, &done, &value);
            workers.push(scope.spawn(move || -> redis::RedisResult<()> {
                let mut x = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                while !stop.load(Ordering::Relaxed) {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    for _ in 0..10 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        pipe.set(format!("key:{:012}", x % 100_000), value).ignore();
                    }
                    pipe.query::<()>(&mut connection)?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().expect("worker panicked")?;
        }
        Ok(())
    })?;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
    Ok(())
}
