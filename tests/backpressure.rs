//! The bound on appends in flight (`limits.max_pending_bytes`): producers
//! faster than a slow disk wait for room instead of growing the queue,
//! everything admitted is still written, a record larger than the bound
//! still goes through, and closing the store answers whoever waits for room.

mod common;

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::WrappingFs;
use concordkv::testing::fs::WritableFile;
use concordkv::{Config, Entry, Error, Op, Pending, Store, SyncMode};

/// Far beyond what any of these runs takes: only there to turn a hang into
/// a failure, never a claim about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A segment whose every `fdatasync` takes `delay` longer; `panic_on_write`
/// makes its next record write panic (in the WAL actor).
struct SlowFile {
    inner: Arc<dyn WritableFile>,
    delay: Duration,
    panic_on_write: Arc<AtomicBool>,
}

impl WritableFile for SlowFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Only the WAL's writes: the rotator's fill writes nothing but zeros.
        if buf.iter().any(|&b| b != 0) && self.panic_on_write.swap(false, Ordering::SeqCst) {
            panic!("injected panic in the WAL writer");
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

/// The room still taken once everything answered is in the state (a read
/// applies whatever is queued, giving its room back).
fn room_in_flight(store: &Store) -> u64 {
    let _ = store.state().len();
    store.stats().pending_bytes
}

fn config(dir: &Path, max_pending_bytes: u64) -> Config {
    let mut cfg = common::config(dir, SyncMode::Always);
    cfg.limits.max_pending_bytes = max_pending_bytes;
    cfg.wal.max_segment_bytes = 1 << 20;
    cfg
}

/// Opens `cfg` on the real disk, with every segment sync slowed by `delay`.
async fn open_throttled(cfg: Config, delay: Duration, panic_on_write: &Arc<AtomicBool>) -> Store {
    let panic_on_write = Arc::clone(panic_on_write);
    let fs = WrappingFs(move |path: &Path, inner: Arc<dyn WritableFile>| {
        if !path.to_string_lossy().contains(".wal") {
            return inner;
        }
        Arc::new(SlowFile {
            inner,
            delay,
            panic_on_write: Arc::clone(&panic_on_write),
        }) as Arc<dyn WritableFile>
    });
    let (store, _) = concordkv::testing::open_recording_with_fs(cfg, Arc::new(fs))
        .await
        .expect("open");
    store
}

fn entry(producer: usize, i: usize, value_bytes: usize) -> Entry {
    Entry::Op(Op::Set {
        key: format!("p{producer}-{i}").into_bytes(),
        value: vec![(producer + i) as u8; value_bytes],
    })
}

#[actix_rt::test]
async fn pipelining_producers_stay_under_the_bound_and_lose_nothing() {
    const BOUND: u64 = 256 << 10;
    const PRODUCERS: usize = 64;
    const PER_PRODUCER: usize = 60;
    const VALUE: usize = 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), BOUND);
    let store = open_throttled(
        cfg.clone(),
        Duration::from_millis(5),
        &Arc::new(AtomicBool::new(false)),
    )
    .await;

    // The fill, sampled on its own and by every producer after each submit.
    let highest = Rc::new(Cell::new(0u64));
    let sample = {
        let (store, highest) = (store.clone(), Rc::clone(&highest));
        move || highest.set(highest.get().max(store.stats().pending_bytes))
    };
    let done = Rc::new(Cell::new(false));
    let sampler = {
        let (sample, done) = (sample.clone(), Rc::clone(&done));
        actix_rt::spawn(async move {
            while !done.get() {
                sample();
                actix_rt::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (store, sample) = (store.clone(), sample.clone());
            actix_rt::spawn(async move {
                // Pipelined: every acknowledgement is awaited only at the end.
                let mut pendings: Vec<Pending> = Vec::new();
                for i in 0..PER_PRODUCER {
                    pendings.push(store.submit(entry(p, i, VALUE)).await.expect("submit"));
                    sample();
                }
                let mut seqs = Vec::new();
                for pending in pendings {
                    seqs.push(pending.await.expect("acknowledged"));
                }
                seqs
            })
        })
        .collect();
    let acknowledged = actix_rt::time::timeout(HANG_GUARD, async {
        let mut n = 0;
        for producer in producers {
            n += producer.await.expect("producer").len();
        }
        n
    })
    .await
    .expect("every append is acknowledged (hang guard)");
    done.set(true);
    sampler.await.expect("sampler");

    assert_eq!(acknowledged, PRODUCERS * PER_PRODUCER);
    let highest = highest.get();
    assert!(
        highest <= BOUND,
        "{highest} bytes in flight, above the bound of {BOUND}"
    );
    // The producers did outrun the disk: without the bound the fill would
    // have reached the whole run's bytes (about 4 MiB).
    assert!(
        highest > BOUND / 2,
        "the bound was never approached ({highest} bytes at most)"
    );
    assert_eq!(room_in_flight(&store), 0, "all given back");
    store.shutdown().await.expect("shutdown");

    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    assert_eq!(recovery.records.len(), PRODUCERS * PER_PRODUCER);
    let state = common::state(&recovery.records);
    for p in 0..PRODUCERS {
        for i in 0..PER_PRODUCER {
            let Entry::Op(Op::Set { key, value }) = entry(p, i, VALUE) else {
                unreachable!("entries are sets")
            };
            assert_eq!(state.get(&key), Some(&value), "p{p}-{i}");
        }
    }
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn a_record_larger_than_the_bound_is_accepted() {
    const BOUND: u64 = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), BOUND);
    let store = open_throttled(
        cfg.clone(),
        Duration::from_millis(2),
        &Arc::new(AtomicBool::new(false)),
    )
    .await;
    // Small ones in flight before and after it: it waits for them, then
    // takes the whole bound, and the later ones wait for it in turn.
    let mut pendings = Vec::new();
    for i in 0..8 {
        pendings.push(store.submit(entry(0, i, 400)).await.expect("submit"));
    }
    let large = store.submit(entry(1, 0, 64 << 10)).await.expect("submit");
    assert_eq!(store.stats().pending_bytes, BOUND, "the whole bound");
    for i in 0..8 {
        pendings.push(store.submit(entry(2, i, 400)).await.expect("submit"));
    }
    let (large_seq, seqs) = actix_rt::time::timeout(HANG_GUARD, async {
        let large = large.await.expect("the large record is acknowledged");
        let mut seqs = Vec::new();
        for pending in pendings {
            seqs.push(pending.await.expect("acknowledged"));
        }
        (large, seqs)
    })
    .await
    .expect("no deadlock (hang guard)");
    assert!(seqs[..8].iter().all(|&s| s < large_seq));
    assert!(seqs[8..].iter().all(|&s| s > large_seq));
    assert_eq!(room_in_flight(&store), 0);
    store.shutdown().await.expect("shutdown");

    let (store, recovery) = concordkv::testing::open_recording(cfg)
        .await
        .expect("reopen");
    let state = common::state(&recovery.records);
    assert_eq!(state.get(b"p1-0".as_slice()).map(Vec::len), Some(64 << 10));
    assert_eq!(recovery.records.len(), 17);
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn shutdown_answers_the_producers_waiting_for_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_throttled(
        config(dir.path(), 4096),
        Duration::from_millis(100),
        &Arc::new(AtomicBool::new(false)),
    )
    .await;
    let waiting = Rc::new(Cell::new(0usize));
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let (store, waiting) = (store.clone(), Rc::clone(&waiting));
            actix_rt::spawn(async move {
                let mut refused = None;
                let mut pendings = Vec::new();
                for i in 0.. {
                    waiting.set(waiting.get() + 1);
                    let submitted = store.submit(entry(p, i, 1000)).await;
                    waiting.set(waiting.get() - 1);
                    match submitted {
                        Ok(pending) => pendings.push(pending),
                        Err(e) => {
                            refused = Some(e);
                            break;
                        }
                    }
                }
                for pending in pendings {
                    // Queued before the shutdown: written and synced by it.
                    pending.await.expect("drained by the shutdown");
                }
                refused
            })
        })
        .collect();
    // Every producer but the few with room is waiting for it.
    while waiting.get() < 12 {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    // Then room for the whole bound is taken and kept: only the shutdown
    // can answer the producers queued behind it.
    let blocker = actix_rt::time::timeout(HANG_GUARD, store.admit(&entry(99, 0, 8192)))
        .await
        .expect("the whole bound comes free in turn (hang guard)")
        .expect("room");
    assert_eq!(blocker.bytes(), 4096);
    while waiting.get() < 16 {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    let refusals = actix_rt::time::timeout(HANG_GUARD, async {
        store.shutdown().await.expect("shutdown");
        let mut refusals = Vec::new();
        for producer in producers {
            refusals.push(producer.await.expect("producer"));
        }
        refusals
    })
    .await
    .expect("no producer is left waiting (hang guard)");
    for refused in refusals {
        assert!(matches!(refused, Some(Error::ShutDown)), "{refused:?}");
    }
    assert_eq!(store.stats().pending_bytes, 4096, "the blocker's");
    drop(blocker);
    assert_eq!(store.stats().pending_bytes, 0);
}

#[actix_rt::test]
async fn a_dead_wal_actor_gives_back_the_room_of_the_requests_it_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let panic_on_write = Arc::new(AtomicBool::new(false));
    let store = open_throttled(
        config(dir.path(), 4096),
        Duration::from_millis(1),
        &panic_on_write,
    )
    .await;
    store.set("before", "1").await.expect("healthy");
    panic_on_write.store(true, Ordering::SeqCst);
    let mut pendings = Vec::new();
    for i in 0..3 {
        pendings.push(store.submit(entry(0, i, 1000)).await.expect("submit"));
    }
    for pending in pendings {
        let answer = actix_rt::time::timeout(HANG_GUARD, pending)
            .await
            .expect("answered (hang guard)");
        assert!(answer.is_err(), "the actor died holding it: {answer:?}");
    }
    assert_eq!(room_in_flight(&store), 0);
    // Restarted with all its room: a whole bound's worth goes through.
    let mut restarted = false;
    for _ in 0..1000 {
        if store.set("after", vec![1; 3000]).await.is_ok() {
            restarted = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(restarted, "the WAL actor was restarted");
    store.shutdown().await.expect("shutdown");
}
