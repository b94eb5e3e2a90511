//! Snapshots across nodes and crashes: an install interrupted after its
//! snapshot was published finishes at the next open, a damaged snapshot
//! from a leader is refused with the state left as it was, and a damaged
//! state store (it makes no fsync of its own) is rebuilt from the snapshot.

use std::path::Path;

use concordkv::Config;
use concordkv_raft::{open, Request, StateMachine, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tempfile::TempDir;

fn set(index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::Set {
            key: key.into(),
            value: value.into(),
        }),
    }
}

async fn node(dir: &Path) -> StateMachine<TypeConfig> {
    open::<TypeConfig>(Config::with_data_dir(dir))
        .await
        .expect("the node opens")
        .1
}

/// A leader's state machine with 100 keys and a snapshot of them: its
/// directory, and the snapshot's file and metadata file.
async fn leader_with_snapshot() -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = TempDir::new().unwrap();
    let mut sm = node(dir.path()).await;
    let entries: Vec<_> = (1..=100)
        .map(|i| set(i, &format!("k{i:03}"), "v"))
        .collect();
    sm.apply(entries).await.unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let id = snapshot.meta.snapshot_id.clone();
    let snaps = dir.path().join("snapshots");
    (
        dir,
        snaps.join(format!("{id}.snap")),
        snaps.join(format!("{id}.meta")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_published_before_a_crash_finishes_at_open() {
    let (_leader, snap, meta) = leader_with_snapshot().await;
    let follower = TempDir::new().unwrap();
    let mut sm = node(follower.path()).await;
    sm.apply(vec![set(1, "old", "state")]).await.unwrap();
    sm.close().await.unwrap();
    drop(sm);
    // As an install leaves it when the process dies after publishing the
    // snapshot (file, then metadata) and before switching the state.
    let snaps = follower.path().join("snapshots");
    std::fs::copy(&snap, snaps.join(snap.file_name().unwrap())).unwrap();
    std::fs::copy(&meta, snaps.join(meta.file_name().unwrap())).unwrap();

    let mut sm = node(follower.path()).await;
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(100));
    assert_eq!(sm.get(b"k042").as_deref(), Some(&b"v"[..]));
    assert_eq!(
        sm.get(b"old"),
        None,
        "the snapshot's state replaced the old one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_from_the_leader_is_refused_and_the_state_kept() {
    let (_leader, snap, meta_path) = leader_with_snapshot().await;
    let meta = published_meta(&meta_path);
    let follower = TempDir::new().unwrap();
    let mut sm = node(follower.path()).await;
    sm.apply(vec![set(1, "mine", "kept")]).await.unwrap();

    let receiving = receive_damaged(&mut sm, &snap).await;
    let refused = sm.install_snapshot(&meta, receiving).await;
    assert!(refused.is_err(), "a damaged snapshot is refused");
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(1));
    assert_eq!(sm.get(b"mine").as_deref(), Some(&b"kept"[..]));
    assert_eq!(sm.get(b"k042"), None);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_for_a_failed_install_is_refused_and_the_entries_stay() {
    let (_leader, snap, meta_path) = leader_with_snapshot().await;
    let meta = published_meta(&meta_path);
    let follower = TempDir::new().unwrap();
    let (mut log, mut sm) = open::<TypeConfig>(Config::with_data_dir(follower.path()))
        .await
        .expect("the node opens");
    openraft::storage::RaftLogStorageExt::blocking_append(
        &mut log,
        (1..=5).map(|i| set(i, "k", "v")),
    )
    .await
    .unwrap();
    sm.apply((1..=5).map(|i| set(i, "k", "v"))).await.unwrap();

    // The leader's snapshot (up to 100) arrives damaged; openraft purges
    // the log up to it in the same step as it hands it over.
    let receiving = receive_damaged(&mut sm, &snap).await;
    let purge_log = log.clone();
    let purge = tokio::spawn(async move {
        let mut log = purge_log;
        openraft::storage::RaftLogStorage::purge(&mut log, meta.last_log_id.unwrap()).await
    });
    assert!(sm.install_snapshot(&meta, receiving).await.is_err());
    let purged = purge.await.unwrap();
    assert!(
        purged.is_err(),
        "the purge waited for the install, and refused"
    );
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log)
        .await
        .unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id.map(|id| id.index), Some(5));
}

/// Receives the snapshot file at `snap` with a byte flipped in its middle.
async fn receive_damaged(sm: &mut StateMachine<TypeConfig>, snap: &Path) -> Box<tokio::fs::File> {
    let mut bytes = std::fs::read(snap).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes)
        .await
        .unwrap();
    receiving
}

/// The metadata the leader published, as the follower receives it.
fn published_meta(path: &Path) -> openraft::SnapshotMeta<u64, openraft::BasicNode> {
    let bytes = std::fs::read(path).unwrap();
    bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_store_is_set_aside_and_rebuilt_from_the_snapshot() {
    let dir = TempDir::new().unwrap();
    let mut sm = node(dir.path()).await;
    for i in 1..=100 {
        sm.apply(vec![set(i, &format!("k{i:03}"), "v")])
            .await
            .unwrap();
    }
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    for i in 101..=110 {
        sm.apply(vec![set(i, &format!("k{i:03}"), "late")])
            .await
            .unwrap();
    }
    sm.close().await.unwrap();
    drop(sm);

    // A flipped byte in the first record of the newest segment that holds
    // records, valid records after it: damage, not a torn tail.
    let state = dir.path().join("state").join("0");
    let mut segments: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let (newest, mut bytes) = segments
        .iter()
        .rev()
        .map(|path| (path, std::fs::read(path).unwrap()))
        .find(|(_, bytes)| bytes.len() > 64 && bytes[32..64].iter().any(|&b| b != 0))
        .expect("a segment with records");
    bytes[32 + 12] ^= 0x20;
    std::fs::write(newest, &bytes).unwrap();

    let mut sm = node(dir.path()).await;
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(
        applied.map(|id| id.index),
        Some(100),
        "the state is the snapshot's; openraft applies 101.. from the log again"
    );
    assert_eq!(sm.get(b"k100").as_deref(), Some(&b"v"[..]));
    assert_eq!(sm.get(b"k105"), None);
    let kept: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().any(|n| n.starts_with("damaged-0-")),
        "the damaged generation is kept for inspection: {kept:?}"
    );
    // Applying goes on from there.
    sm.apply(vec![set(101, "k101", "again")]).await.unwrap();
    assert_eq!(sm.get(b"k101").as_deref(), Some(&b"again"[..]));
}
