//! Crash test: a real child process appends in `always` mode from many
//! concurrent writers and is killed with SIGKILL at random moments. After
//! each kill every acknowledged record must come back, and what comes back
//! must be exactly a prefix of what was written: no gap, no duplicate, no
//! record that was never written.
//!
//! The child is this same test binary running the ignored `crash_child`
//! test, selected by an environment variable.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::config;
use concordkv::{Entry, Op, SyncMode};

const CHILD_DIR: &str = "CONCORDKV_CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "CONCORDKV_CRASH_CHILD_CYCLE";
const WRITERS: u32 = 16;
const CYCLES: u32 = 24;

fn key(cycle: u32, writer: u32, i: u32) -> Vec<u8> {
    format!("c{cycle}-w{writer}-{i}").into_bytes()
}

/// A value derived from the key, so a recovered record can be checked
/// against what was really written.
fn value(cycle: u32, writer: u32, i: u32) -> Vec<u8> {
    let mut v = format!("v{cycle}.{writer}.{i}.").into_bytes();
    v.resize(100, b'0' + (i % 10) as u8);
    v
}

fn parse_key(key: &[u8]) -> Option<(u32, u32, u32)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.strip_prefix('c')?.split('-');
    let cycle = parts.next()?.parse().ok()?;
    let writer = parts.next()?.strip_prefix('w')?.parse().ok()?;
    let i = parts.next()?.parse().ok()?;
    Some((cycle, writer, i))
}

#[test]
#[ignore = "the child side of acknowledged_writes_survive_sigkill"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let cycle: u32 = std::env::var(CHILD_CYCLE)
        .expect("cycle")
        .parse()
        .expect("cycle number");
    actix_rt::System::new().block_on(async move {
        let (store, _) = concordkv::testing::open_recording(config(dir.as_ref(), SyncMode::Always))
            .await
            .expect("child open");
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                actix_rt::spawn(async move {
                    for i in 0.. {
                        let entry = if i % 7 == 3 {
                            // Every seventh append is an atomic batch of two.
                            Entry::Batch(vec![
                                Op::Set {
                                    key: key(cycle, w, i),
                                    value: value(cycle, w, i),
                                },
                                Op::Delete {
                                    key: format!("absent-{w}").into_bytes(),
                                },
                            ])
                        } else {
                            Entry::Op(Op::Set {
                                key: key(cycle, w, i),
                                value: value(cycle, w, i),
                            })
                        };
                        let seq = store
                            .submit(entry)
                            .await
                            .expect("child submit")
                            .await
                            .expect("child append");
                        println!("ACK {seq} {cycle} {w} {i}");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
    });
}

/// Seeded xorshift, so a failing run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed = std::env::var("CONCORDKV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set CONCORDKV_CRASH_SEED to repeat)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut total_acked = 0usize;
    let mut expected_records = 0u64;

    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_CYCLE, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = line.strip_prefix("ACK ") {
                    let f: Vec<u64> = ack
                        .split(' ')
                        .map(|x| x.parse().expect("ack field"))
                        .collect();
                    if tx
                        .send((f[0], f[1] as u32, f[2] as u32, f[3] as u32))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        // Wait for the first acknowledgement, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the child acknowledges appends");
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        reader.join().expect("reader thread");
        let mut acked = vec![first];
        acked.extend(rx.try_iter());
        total_acked += acked.len();

        let recovered_len =
            actix_rt::System::new().block_on(check_recovery(dir.path(), &acked, expected_records));
        assert!(
            recovered_len >= expected_records + acked.len() as u64,
            "cycle {cycle}: recovered {recovered_len} records, acknowledged at least {}",
            expected_records + acked.len() as u64
        );
        expected_records = recovered_len;
    }
    eprintln!(
        "{CYCLES} kills, {total_acked} acknowledged appends, {expected_records} records recovered"
    );
}

/// Opens the store after a kill and checks the recovered log; returns how
/// many records it holds.
async fn check_recovery(dir: &std::path::Path, acked: &[(u64, u32, u32, u32)], before: u64) -> u64 {
    let (store, recovery) = concordkv::testing::open_recording(config(dir, SyncMode::Always))
        .await
        .expect("open after kill");
    let records = &recovery.records;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq,
            index as u64 + 1,
            "recovered sequence is a prefix: no gap, no duplicate"
        );
    }
    let mut next_i: HashMap<(u32, u32), u32> = HashMap::new();
    for record in records {
        let Op::Set { key: k, value: v } = &record.entry.ops()[0] else {
            panic!("seq {}: the first op of every record is a set", record.seq);
        };
        let (cycle, w, i) =
            parse_key(k).unwrap_or_else(|| panic!("seq {}: invented key {k:?}", record.seq));
        assert_eq!(
            v,
            &value(cycle, w, i),
            "seq {}: value is exactly what was written",
            record.seq
        );
        let expected_i = next_i.entry((cycle, w)).or_insert(0);
        assert_eq!(
            i, *expected_i,
            "writer {w} of cycle {cycle}: its appends come back in order without gaps"
        );
        *expected_i += 1;
        if i % 7 == 3 {
            assert_eq!(
                record.entry.ops().len(),
                2,
                "seq {}: an atomic batch comes back whole",
                record.seq
            );
        }
    }
    for &(seq, cycle, w, i) in acked {
        let record = records
            .get(seq as usize - 1)
            .unwrap_or_else(|| panic!("acknowledged seq {seq} is missing after SIGKILL"));
        assert_eq!(
            record.entry.ops()[0].key(),
            Some(key(cycle, w, i).as_slice()),
            "acknowledged seq {seq}"
        );
    }
    assert!(
        records.len() as u64 >= before,
        "nothing recovered earlier disappears"
    );
    store.shutdown().await.expect("shutdown");
    records.len() as u64
}
