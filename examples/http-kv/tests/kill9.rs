//! kill -9 under load: every PUT answered 2xx is there after a restart,
//! with its value, and no key appears that was never sent. Two rounds on
//! the same data directory.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{client, list, Server};

const WRITERS: usize = 8;
/// How long the writers run before the kill.
const LOAD: Duration = Duration::from_secs(2);
/// A writer stops by itself after this many PUTs or this long, whichever
/// comes first (the kill normally comes before either). Its keys end in a
/// five-digit counter, listed by its first digit: at most 10,000 a listing.
const MAX_PUTS_PER_WRITER: usize = 100_000;
const WRITER_DEADLINE: Duration = Duration::from_secs(6);

/// What one writer sent: every key it sent with its value, and whether the
/// server acknowledged it (2xx).
struct Sent {
    values: HashMap<String, (String, bool)>,
    /// Whether the writer was still sending when the server died.
    cut_off: bool,
}

fn writer(base: String, round: usize, id: usize, stop: Arc<AtomicBool>) -> Sent {
    let http = client();
    let started = Instant::now();
    let mut sent = Sent {
        values: HashMap::new(),
        cut_off: false,
    };
    for i in 0..MAX_PUTS_PER_WRITER {
        if started.elapsed() > WRITER_DEADLINE || stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("r{round}-w{id}-{i:05}");
        let value = format!("value of {key} at {:?}", started.elapsed());
        sent.values.insert(key.clone(), (value.clone(), false));
        // Read to the end (so the connection is reused).
        match common::answer(http.put(format!("{base}/kv/{key}")).send(&value)) {
            Ok((status, _)) if (200..300).contains(&status) => {
                if let Some(entry) = sent.values.get_mut(&key) {
                    entry.1 = true;
                }
            }
            Ok((status, body)) => panic!("PUT {key}: {status} {body}"),
            // The server is gone (connection refused or reset).
            Err(_) => {
                sent.cut_off = true;
                break;
            }
        }
    }
    sent
}

/// Runs the writers against `server`, kills it under load, and returns
/// what each writer sent.
fn load_and_kill(server: Server, round: usize) -> Vec<Sent> {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let base = server.base.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || writer(base, round, id, stop))
        })
        .collect();
    thread::sleep(LOAD);
    server.kill9();
    // Writers blocked in a request fail with the connection; any that
    // somehow still runs stops at the next iteration.
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();
    let acked: usize = sent
        .iter()
        .map(|s| s.values.values().filter(|(_, ok)| *ok).count())
        .sum();
    eprintln!("round {round}: {acked} PUTs acknowledged before kill -9");
    assert!(acked > 0, "no PUT was acknowledged");
    assert!(
        sent.iter().any(|s| s.cut_off),
        "the kill came after every writer had finished: no load to cut"
    );
    sent
}

/// Checks the restarted server against everything sent in `round`.
fn check(server: &Server, round: usize, sent: &[Sent]) {
    let http = client();
    for (id, sent) in sent.iter().enumerate() {
        let found: HashMap<String, String> = (0..10)
            .flat_map(|digit| list(&http, server, &format!("r{round}-w{id}-{digit}"), 10_000))
            .collect();
        for (key, value) in &found {
            let (sent_value, _) = sent
                .values
                .get(key)
                .unwrap_or_else(|| panic!("{key} exists but was never sent"));
            assert_eq!(value, sent_value, "{key} holds a value never sent for it");
        }
        for (key, (value, acked)) in &sent.values {
            if *acked {
                assert_eq!(
                    found.get(key),
                    Some(value),
                    "{key} was acknowledged but is not there after kill -9"
                );
            }
        }
    }
}

#[test]
fn acknowledged_puts_survive_kill9_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rounds: Vec<Vec<Sent>> = Vec::new();
    for round in 0..2 {
        let server = Server::start(dir.path(), &[]);
        // Earlier rounds' data is still right before the next load.
        for (earlier, sent) in rounds.iter().enumerate() {
            check(&server, earlier, sent);
        }
        rounds.push(load_and_kill(server, round));
    }
    let server = Server::start(dir.path(), &[]);
    for (round, sent) in rounds.iter().enumerate() {
        check(&server, round, sent);
    }
}
