//! Every actor of the store, made to panic in turn while writers append: it
//! is restarted, appends go on, nothing acknowledged is lost, the restart
//! is counted; and a supervisor that sees too many deaths gives up with an
//! error that says so.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config;
use concordkv::{ActorKind, Error, Log, Store, SyncMode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn restarts(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    store: &str,
    actor: &str,
) -> Option<u64> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let key = key.key();
        let labelled = key
            .labels()
            .any(|l| l.key() == "actor" && l.value() == actor)
            && key
                .labels()
                .any(|l| l.key() == "store" && l.value() == store);
        match value {
            DebugValue::Counter(n)
                if key.name() == "concordkv_actor_restarts_total" && labelled =>
            {
                Some(*n)
            }
            _ => None,
        }
    })
}

/// Waits until `count` grew by `more` since `from`, or panics.
async fn appends_go_on(count: &AtomicUsize, from: usize, more: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::Relaxed) < from + more {
        assert!(
            Instant::now() < deadline,
            "appends stopped after {what} died"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asks until the actor answers. A request can reach the crashed actor's
/// mailbox before the crash does: an actor busy with an automatic
/// compaction (answered whole, in the idle class) takes the crash only
/// after it, and the requests queued behind the crash get its panic.
async fn answered<T, F: std::future::Future<Output = concordkv::Result<T>>>(
    ask: impl Fn() -> F,
    what: &str,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ask().await {
            Ok(answer) => return answer,
            Err(e @ (Error::Panicked { .. } | Error::ActorDied)) => {
                assert!(Instant::now() < deadline, "{what}: {e:?}");
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

#[actix_rt::test]
async fn each_actor_that_panics_under_load_is_restarted_and_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test process");
    let dir = tempfile::tempdir().expect("tempdir");
    // `batch` has a sync timer; small segments make the rotator work.
    let mut cfg = config(dir.path(), SyncMode::Batch);
    cfg.wal.max_segment_bytes = 16 * 1024;
    let (store, _) = Store::open(cfg.clone()).await.expect("open");

    // The last value acknowledged for each key, and how many were.
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, acked, stop) = (store.clone(), Arc::clone(&acked), Arc::clone(&stop));
            let count = Arc::clone(&count);
            actix_rt::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("w{w}-{}", n % 500), format!("v{n}"));
                    match store.set(key.clone(), value.clone()).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key, value);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // The WAL's own death fails what it held: not acknowledged.
                        Err(Error::ActorDied | Error::Panicked { .. }) => {}
                        Err(other) => panic!("unexpected error under restarts: {other}"),
                    }
                    n += 1;
                }
            })
        })
        .collect();

    // The archiver runs only with an `[archive]` (and the `archive`
    // feature): this store has none.
    let running = ActorKind::ALL
        .into_iter()
        .filter(|a| *a != ActorKind::Archiver);
    for actor in running.clone() {
        let before = count.load(Ordering::Relaxed);
        store.crash_actor(actor);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        appends_go_on(&count, before, 200, actor.name()).await;
        // The restarted actors answer: a snapshot, a compaction, the stats.
        answered(|| store.snapshot(), "a snapshot after the restart").await;
        answered(|| store.compact(), "a compaction after the restart").await;
        answered(|| store.stats_report(), "the stats after the restart").await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    // The other test of this file runs a store of its own at the same time.
    let label = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let counted = snapshotter.snapshot().into_vec();
    for actor in running {
        assert_eq!(
            restarts(&counted, &label, actor.name()),
            Some(1),
            "the restart of {} is counted",
            actor.name()
        );
    }
    store.shutdown().await.expect("shutdown");

    let (store, _) = Store::open(cfg).await.expect("reopen");
    let state = store.state();
    for (key, value) in acked.lock().unwrap().iter() {
        assert_eq!(
            state.get(key.as_bytes()).as_deref(),
            Some(value.as_bytes()),
            "acknowledged {key} survived"
        );
    }
    store.shutdown().await.expect("shutdown");
}

#[actix_rt::test]
async fn the_supervisor_gives_up_after_too_many_restarts_in_the_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.supervision.max_restarts = 2;
    cfg.supervision.period_secs = 3600;
    let (store, _) = Store::open(cfg).await.expect("open");
    store.set("before", "ok").await.expect("set");
    for _ in 0..3 {
        store.crash_actor(ActorKind::Snapshot);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    match store.set("after", "refused").await {
        Err(Error::WalFailed { cause }) => match &*cause {
            Error::RestartLimit {
                actor,
                restarts,
                period_secs,
            } => assert_eq!((*actor, *restarts, *period_secs), ("snapshot", 3, 3600)),
            other => panic!("expected RestartLimit as the cause, got {other:?}"),
        },
        other => panic!("expected a refusal for the restart limit, got {other:?}"),
    }
    let _ = store.shutdown().await;
}

/// The rotator makes every change of the manifest: a log's truncation,
/// purge and metadata asked for just as it dies reach its successor, and
/// each is made once and durably.
#[actix_rt::test]
async fn a_log_whose_rotator_dies_truncates_purges_and_keeps_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::Always);
    cfg.wal.max_segment_bytes = 8 * 1024;
    let (log, _) = Log::open(cfg.clone()).await.expect("open");
    for batch in 0..20 {
        let payloads = (0..100)
            .map(|i| format!("record {}", batch * 100 + i + 1).into_bytes())
            .collect();
        log.append_batch(payloads).await.expect("append");
    }
    assert_eq!(log.last_seq(), 2000);

    log.crash_actor(ActorKind::Rotator);
    log.truncate_after(1500)
        .await
        .expect("a truncation asked as the rotator dies");
    assert_eq!(log.last_seq(), 1500);
    log.crash_actor(ActorKind::Rotator);
    log.purge_before(1000)
        .await
        .expect("a purge asked as the rotator dies");
    log.crash_actor(ActorKind::Rotator);
    log.set_metadata(b"term 7".to_vec())
        .await
        .expect("metadata written as the rotator dies");
    assert_eq!(log.append(b"after".to_vec()).await.expect("append"), 1501);
    log.shutdown().await.expect("shutdown");

    let (log, _) = Log::open(cfg).await.expect("reopen");
    assert_eq!(log.last_seq(), 1501);
    assert!(
        log.first_seq() <= 1000 && log.first_seq() > 1,
        "{}",
        log.first_seq()
    );
    assert_eq!(log.metadata().as_deref(), Some(&b"term 7"[..]));
    let mut records = log.read(1500..).expect("read");
    let (seq, payload) = records.next().expect("record 1500").expect("ok");
    assert_eq!((seq, payload.as_slice()), (1500, &b"record 1500"[..]));
    let (seq, payload) = records.next().expect("record 1501").expect("ok");
    assert_eq!((seq, payload.as_slice()), (1501, &b"after"[..]));
    assert!(records.next().is_none(), "nothing after 1501");
    log.shutdown().await.expect("shutdown");
}

/// A store shutting down while its rotator dies still drains every write
/// it took: the WAL waits for the rotator's successor to give it the
/// segments the backlog needs, and the shutdown ends. The rotator dies as
/// the WAL asks it for a segment, with a full one waiting for it: a WAL
/// that asked the dead rotator again at once spun on the thread the
/// supervisor needed to restart it (20 hangs in 20 runs).
#[actix_rt::test]
async fn a_shutdown_as_the_rotator_dies_drains_and_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), SyncMode::None);
    cfg.wal.max_segment_bytes = 8 * 1024;
    let (store, _) = Store::open(cfg.clone()).await.expect("open");
    let writes: Vec<_> = (0..3000)
        .map(|i| {
            let store = store.clone();
            actix_rt::spawn(async move { store.set(format!("k{i}"), "v").await })
        })
        .collect();
    actix_rt::task::yield_now().await;
    store.crash_rotator_while_preparing();
    actix_rt::time::timeout(Duration::from_secs(30), store.shutdown())
        .await
        .expect("the shutdown ends")
        .expect("shutdown");
    let mut acknowledged = Vec::new();
    for (i, write) in writes.into_iter().enumerate() {
        match write.await.expect("task") {
            Ok(_) => acknowledged.push(i),
            Err(Error::ShutDown) => {}
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    let (store, _) = Store::open(cfg).await.expect("reopen");
    for i in acknowledged {
        assert!(
            store.state().contains(format!("k{i}").as_bytes()),
            "acknowledged write k{i} lost"
        );
    }
    store.shutdown().await.expect("shutdown");
}
