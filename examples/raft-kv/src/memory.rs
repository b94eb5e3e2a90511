//! Raft storage that keeps everything in memory, wired exactly like the
//! durable one (`raft-kv --store memory`): the baseline of the benchmark,
//! which tells what openraft and HTTP cost without a disk. Same requests,
//! same answers, same snapshot files; nothing survives the process.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use concordkv_raft::{is_valid_snapshot_id, Request, Response, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::network::{decode, encode};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    last_purged: Option<LogId<u64>>,
}

/// The Raft log in a map.
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<LogInner>>,
}

impl RaftLogReader<TypeConfig> for MemoryLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(lock(&self.inner)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemoryLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let inner = lock(&self.inner);
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.inner).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(lock(&self.inner).vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        lock(&self.inner).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = lock(&self.inner);
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct Applied {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
}

struct SmInner {
    applied: Applied,
    current: Option<SnapshotMeta<u64, openraft::BasicNode>>,
}

/// The applied keys in a map; snapshots are that map, encoded, in a file
/// (openraft hands snapshots around as files in this service).
#[derive(Clone)]
pub struct MemoryStateMachine {
    inner: Arc<Mutex<SmInner>>,
    dir: Arc<PathBuf>,
    files: Arc<AtomicU64>,
}

fn io(e: std::io::Error) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

impl MemoryStateMachine {
    /// Snapshot files go to `dir` (a scratch directory).
    pub fn new(dir: PathBuf) -> std::io::Result<MemoryStateMachine> {
        std::fs::create_dir_all(&dir)?;
        Ok(MemoryStateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                applied: Applied::default(),
                current: None,
            })),
            dir: Arc::new(dir),
            files: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        lock(&self.inner).applied.data.get(key).cloned()
    }

    pub fn pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        lock(&self.inner)
            .applied
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.snap"))
    }

    /// Removes the file of a snapshot no longer current (and any received
    /// file, once an install is done with it).
    async fn forget(&self, previous: Option<SnapshotMeta<u64, openraft::BasicNode>>) {
        if let Some(previous) = previous {
            let _ = tokio::fs::remove_file(self.snapshot_path(&previous.snapshot_id)).await;
        }
    }

    async fn open(
        &self,
        meta: SnapshotMeta<u64, openraft::BasicNode>,
    ) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let file = tokio::fs::File::open(self.snapshot_path(&meta.snapshot_id))
            .await
            .map_err(io)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemoryStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let applied = lock(&self.inner).applied.clone();
        let n = self.files.fetch_add(1, Relaxed);
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: format!("built-{n}"),
        };
        tokio::fs::write(self.snapshot_path(&meta.snapshot_id), encode(&applied))
            .await
            .map_err(io)?;
        let previous = lock(&self.inner).current.replace(meta.clone());
        self.forget(previous).await;
        self.open(meta).await
    }
}

impl RaftStateMachine<TypeConfig> for MemoryStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        StorageError<u64>,
    > {
        let inner = lock(&self.inner);
        Ok((inner.applied.last_applied, inner.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = lock(&self.inner);
        let applied = &mut inner.applied;
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            responses.push(match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::default()
                }
                EntryPayload::Normal(request) => apply(&mut applied.data, request),
            });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let n = self.files.fetch_add(1, Relaxed);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.snapshot_path(&format!("receiving-{n}")))
            .await
            .map_err(io)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        if !is_valid_snapshot_id(&meta.snapshot_id) {
            let refused = std::io::Error::other(format!("snapshot id {:?}", meta.snapshot_id));
            return Err(io(refused));
        }
        let mut bytes = Vec::new();
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(io)?;
        snapshot.read_to_end(&mut bytes).await.map_err(io)?;
        let applied: Applied = decode(&bytes).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
        })?;
        let mut file = tokio::fs::File::create(self.snapshot_path(&meta.snapshot_id))
            .await
            .map_err(io)?;
        file.write_all(&bytes).await.map_err(io)?;
        let previous = {
            let mut inner = lock(&self.inner);
            inner.applied = applied;
            inner.current.replace(meta.clone())
        };
        self.forget(previous).await;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let current = lock(&self.inner).current.clone();
        match current {
            Some(meta) => self.open(meta).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Applies `request` as the durable state machine does (the same shape
/// check, the same answers).
fn apply(data: &mut BTreeMap<Vec<u8>, Vec<u8>>, request: Request) -> Response {
    if let Err(reason) = request.check_shape() {
        return Response {
            refused: Some(reason),
            ..Response::default()
        };
    }
    let previous = match request {
        Request::Set { key, value } => data.insert(key, value),
        Request::Delete { key } => data.remove(&key),
        Request::Batch(requests) => {
            let batch = requests.into_iter().map(|r| apply(data, r)).collect();
            return Response {
                batch,
                ..Response::default()
            };
        }
    };
    Response {
        previous,
        ..Response::default()
    }
}
