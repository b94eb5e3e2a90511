//! A `Log` on the simulated disk, its power cut at random points of random
//! sequences of appends, truncations, purges and metadata writes: after
//! each cut the reopened log is exactly what the completed operations left,
//! with or without the one in flight, never anything else (a dropped record
//! back, a purged one replayed, an acknowledged one lost, a half-written
//! metadata value).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use concordkv::testing::open_log_with_fs;
use concordkv::testing::sim_fs::SimFs;
use concordkv::{Config, Log, Seq, SyncMode};

/// What the log must hold.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    /// The first record the log keeps.
    first: Seq,
    /// Every kept record from `first` on, in order.
    records: Vec<(Seq, Vec<u8>)>,
    metadata: Option<Vec<u8>>,
}

impl Model {
    fn last(&self) -> Seq {
        self.records.last().map_or(self.first - 1, |(seq, _)| *seq)
    }

    fn apply(&self, op: &Op) -> Model {
        let mut next = self.clone();
        match op {
            Op::Append(payload) => next.records.push((self.last() + 1, payload.clone())),
            Op::Truncate(after) => next.records.retain(|(seq, _)| seq <= after),
            Op::Purge(before) => {
                next.first = next.first.max(*before);
                next.records.retain(|(seq, _)| seq >= before);
            }
            Op::Metadata(bytes) => next.metadata = Some(bytes.clone()),
        }
        next
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    Truncate(Seq),
    Purge(Seq),
    Metadata(Vec<u8>),
}

/// A small repeatable generator (the tests need no `rand`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn config() -> Config {
    let mut cfg = Config::with_data_dir("/sim/log");
    cfg.wal.sync_mode = SyncMode::Always;
    cfg.wal.max_segment_bytes = 4096;
    cfg
}

fn random_op(rng: &mut Rng, model: &Model, cycle: usize, i: usize) -> Op {
    let last = model.last();
    let kept = last + 1 - model.first;
    match rng.below(10) {
        0 if kept > 0 => Op::Truncate(model.first + rng.below(kept)),
        1 if kept > 0 => Op::Purge(model.first + 1 + rng.below(kept)),
        2 => Op::Metadata(format!("vote c{cycle} o{i}").into_bytes()),
        _ => Op::Append(
            format!("c{cycle} o{i} {}", "p".repeat(rng.below(300) as usize)).into_bytes(),
        ),
    }
}

/// Longest any one call may take: a hang fails the test naming the call.
const HANG: Duration = Duration::from_secs(30);

/// Awaits `call`, failing the test if it hangs.
async fn within<T>(what: impl std::fmt::Debug, call: impl std::future::Future<Output = T>) -> T {
    match actix_rt::time::timeout(HANG, call).await {
        Ok(answer) => answer,
        Err(_) => panic!("{what:?} went unanswered for {HANG:?}"),
    }
}

/// Runs `op`; `Err` once the power is out.
async fn run(log: &Log, op: &Op, model: &Model) -> Result<(), String> {
    within(op, run_unguarded(log, op, model)).await
}

async fn run_unguarded(log: &Log, op: &Op, model: &Model) -> Result<(), String> {
    match op {
        Op::Append(payload) => {
            let seq = log
                .append(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(seq, model.last() + 1, "an append got the wrong number");
        }
        Op::Truncate(after) => log
            .truncate_after(*after)
            .await
            .map_err(|e| e.to_string())?,
        Op::Purge(before) => log.purge_before(*before).await.map_err(|e| e.to_string())?,
        Op::Metadata(bytes) => log
            .set_metadata(bytes.clone())
            .await
            .map_err(|e| e.to_string())?,
    }
    Ok(())
}

/// Opens the log, returning what it holds as a model.
async fn reopen(fs: &SimFs) -> (Log, Model) {
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replayed);
    let opening = open_log_with_fs(config(), Arc::new(fs.clone()), move |seq, payload| {
        sink.lock().expect("sink").push((seq, payload.to_vec()));
    });
    let (log, recovery) = within("the reopen", opening)
        .await
        .expect("the log reopens after a power cut");
    let records = std::mem::take(&mut *replayed.lock().expect("sink"));
    let model = Model {
        first: recovery.first_seq,
        records,
        metadata: log.metadata(),
    };
    assert_eq!(log.first_seq(), model.first);
    assert_eq!(log.last_seq(), model.last(), "{model:?}");
    (log, model)
}

#[actix_rt::test]
async fn every_power_cut_leaves_the_completed_operations_and_perhaps_the_one_in_flight() {
    let mut rng = Rng(0x5eed);
    let mut fs = SimFs::new(1);
    let (mut log, mut model) = reopen(&fs).await;
    let (mut in_flight_kept, mut in_flight_lost) = (0, 0);
    // Cuts inside an append, a truncation, a purge, a metadata write.
    let mut cut_inside = [0u32; 4];
    for cycle in 0..200 {
        fs.cut_power_after(1 + rng.below(120));
        let mut in_flight = None;
        for i in 0..40 {
            let op = random_op(&mut rng, &model, cycle, i);
            match run(&log, &op, &model).await {
                Ok(()) => model = model.apply(&op),
                Err(_) => {
                    in_flight = Some(op);
                    break;
                }
            }
        }
        let _ = within("shutdown after the cut", log.shutdown()).await;
        drop(log);
        fs = fs.reboot(rng.below(u64::MAX)).0;
        let (reopened, found) = reopen(&fs).await;
        log = reopened;
        if let Some(op) = &in_flight {
            cut_inside[match op {
                Op::Append(_) => 0,
                Op::Truncate(_) => 1,
                Op::Purge(_) => 2,
                Op::Metadata(_) => 3,
            }] += 1;
        }
        let with = in_flight.as_ref().map(|op| model.apply(op));
        if found == model {
            in_flight_lost += u32::from(in_flight.is_some());
        } else if Some(&found) == with.as_ref() {
            in_flight_kept += 1;
            model = found;
        } else {
            panic!(
                "cycle {cycle}: after the cut the log holds\n{found:?}\nthe completed operations leave\n{model:?}\nin flight: {in_flight:?}"
            );
        }
        // The next append continues right after what the log holds.
        let seq = log
            .append(b"after".to_vec())
            .await
            .expect("append after reopen");
        assert_eq!(seq, model.last() + 1);
        model = model.apply(&Op::Append(b"after".to_vec()));
    }
    let _ = log.shutdown().await;
    assert!(
        in_flight_kept > 0 && in_flight_lost > 0 && cut_inside.iter().all(|n| *n > 0),
        "cuts inside appends, truncations, purges and metadata writes: {cut_inside:?}; the operation in flight kept {in_flight_kept} times, lost {in_flight_lost}"
    );
}
