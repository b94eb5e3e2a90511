//! openraft's state machine on a concordkv [`Store`]: the applied entries'
//! writes, with the last applied log id and membership under reserved keys
//! in the same atomic batch; Raft snapshots are the store's own full
//! snapshot files.
//!
//! Layout of the node's directory (beside `log/`):
//! - `state/CURRENT` names the generation in use, `state/<generation>/` is
//!   its store. Installing a snapshot builds the next generation beside it
//!   and switches `CURRENT` (one atomic rename), so a crash leaves the old
//!   state or the new one, never a mix.
//! - `snapshots/<id>.snap` is the current snapshot (a hard link to the
//!   store's snapshot file, or the file a leader sent) and `<id>.meta` its
//!   metadata, written after it: a `.snap` without `.meta` is unfinished.

use std::collections::HashMap;
use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use concordkv::{Config, Error, Op, SnapshotKind, State, Store, SyncMode};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, RaftTypeConfig, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::engine::{replace_file, sync_dir, with_suffix, Engine};
use crate::log_store::Coverage;
use crate::{decode, encode, Request, Response, RESERVED_PREFIX};

const APPLIED_KEY: &[u8] = b"\xff\xffconcordkv-raft/applied";
/// Names of state generations set aside as damaged (kept, never removed).
const DAMAGED_PREFIX: &str = "damaged-";
const MEMBERSHIP_KEY: &[u8] = b"\xff\xffconcordkv-raft/membership";

/// What the state machine has applied, as openraft asks for it.
type Applied<C> = (
    Option<LogId<<C as RaftTypeConfig>::NodeId>>,
    StoredMembership<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>,
);

/// A snapshot's metadata, as openraft describes it.
type Meta<C> = SnapshotMeta<<C as RaftTypeConfig>::NodeId, <C as RaftTypeConfig>::Node>;

struct Shared<C: RaftTypeConfig> {
    engine: Arc<Engine>,
    dir: PathBuf,
    /// The node's configuration; each generation's store is opened from it.
    base: Config,
    store: RwLock<Store>,
    generation: AtomicU64,
    applied: Mutex<Applied<C>>,
    current: Mutex<Option<Meta<C>>>,
    /// One snapshot built or installed at a time: each changes the store
    /// generation or the current snapshot the other reads.
    snapshotting: tokio::sync::Mutex<()>,
    receiving: AtomicU64,
    progress: tokio::sync::watch::Sender<Progress>,
}

/// openraft's [`RaftStateMachine`] on a concordkv [`Store`]. Cheap to
/// clone: the application keeps a clone to read the keys (through
/// [`StateMachine::state`]) while openraft owns another.
pub struct StateMachine<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for StateMachine<C> {
    fn clone(&self) -> Self {
        StateMachine {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds snapshots for openraft (a clone of the state machine).
pub struct SnapshotBuilder<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn snapshots_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

/// The configuration of a generation's store: the node's, in its own
/// directory, without syncs of its own (the Raft log is the durable copy
/// of every applied write; a restart applies again what the store lost).
fn generation_config(base: &Config, dir: &Path, generation: u64) -> Config {
    let mut config = base.clone();
    config.data_dir = state_dir(dir).join(generation.to_string());
    config.wal.sync_mode = SyncMode::None;
    config.metrics.store = format!("{}-state", base.metrics.store);
    // The largest the format allows: what the state machine stores must
    // not depend on a node's own settings, or one node could refuse a
    // write that the others applied. A service holds proposals to its
    // limits before they enter the log.
    config.limits.max_key_bytes = 1 << 24;
    config.limits.max_value_bytes = 1 << 29;
    config.limits.max_record_bytes = 1 << 30;
    config
}

/// Bytes of writes per store batch when applying entries or filling a
/// store from a snapshot: each batch is one record, kept well below the
/// largest record the format allows.
const CHUNK_BYTES: usize = 8 << 20;

/// The estimated share of a store batch taken by `op`.
fn op_bytes(op: &Op) -> usize {
    16 + match op {
        Op::Set { key, value } | Op::SetExpiring { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
        _ => 0,
    }
}

/// Whether a snapshot id (which a leader sends) is safe as a file name: 1
/// to 128 ASCII letters, digits and `-`, and not the name of a file being
/// received.
pub fn is_valid_snapshot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with(RECEIVING_PREFIX)
}

/// Names of the files snapshots are received into.
const RECEIVING_PREFIX: &str = "receiving-";

/// What a purge of the log waits for (see `log_store::Coverage`).
#[derive(Clone, Copy, Default)]
struct Progress {
    /// A snapshot from the leader is being received or installed.
    receiving: bool,
    /// The last install failed: a purge that waited for it must not go on
    /// (it would drop entries the state does not hold). Cleared when the
    /// next snapshot begins to arrive.
    install_failed: bool,
    /// The last applied index (as applied, not necessarily durable).
    applied: Option<u64>,
}

impl<C> StateMachine<C>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    pub(crate) async fn open(engine: Arc<Engine>, base: Config) -> Result<Self, Error> {
        let dir = base.data_dir.clone();
        let states = state_dir(&dir);
        let snapshots = snapshots_dir(&dir);
        for d in [&states, &snapshots] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create directory", d, e))?;
        }
        let current_file = states.join("CURRENT");
        let generation = match std::fs::read_to_string(&current_file) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                Error::Untrusted(format!(
                    "{}: {text:?} is not a generation number",
                    current_file.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io("read", &current_file, e)),
        };
        // A generation an install was building when the process stopped
        // (damaged generations set aside stay, for inspection).
        remove_except(&states, &[&generation.to_string(), "CURRENT"])?;
        let current = load_current_snapshot::<C>(&snapshots)?;
        let (store, generation) = match engine
            .open_store(generation_config(&base, &dir, generation))
            .await
        {
            Ok(store) => (store, generation),
            Err(Error::Corruption(damage)) => {
                // The state store makes no fsync of its own (the Raft log
                // is the durable copy), so a power cut can leave a page of
                // it missing anywhere. It is set aside and rebuilt from the
                // current snapshot; openraft applies the log after it again.
                tracing::error!(
                    %damage,
                    "the state store is damaged: setting it aside and rebuilding it from the snapshot and the log"
                );
                let damaged = states.join(generation.to_string());
                let aside = states.join(format!(
                    "{DAMAGED_PREFIX}{generation}-{}",
                    concordkv::unix_millis(std::time::SystemTime::now())
                ));
                std::fs::rename(&damaged, &aside).map_err(|e| Error::io("rename", &damaged, e))?;
                let snapshot = current
                    .as_ref()
                    .map(|meta| (meta, snapshots.join(format!("{}.snap", meta.snapshot_id))));
                let from = snapshot
                    .as_ref()
                    .map(|(meta, path)| (*meta, path.as_path()));
                let next = generation + 1;
                let store = build_generation::<C>(&engine, &base, &dir, next, from).await?;
                (store, next)
            }
            Err(e) => return Err(e),
        };
        if store.state().last_seq() == 0 {
            // A new store holds the markers from the start, so that it
            // always has a snapshot to give (an empty state is one too).
            let (applied, membership) = applied_in::<C>(&store.state())?;
            let mut ops = Vec::new();
            push_markers::<C>(&mut ops, &applied, &membership, true);
            store.append_batch(ops).await?;
        }
        let applied = applied_in::<C>(&store.state())?;
        let applied_index = applied.0.as_ref().map(|id| id.index);
        let current_ahead = current
            .clone()
            .filter(|meta| meta.last_log_id.as_ref().map(|id| id.index) > applied_index);
        let sm = StateMachine {
            shared: Arc::new(Shared {
                engine,
                dir,
                base,
                store: RwLock::new(store),
                generation: AtomicU64::new(generation),
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                snapshotting: tokio::sync::Mutex::new(()),
                receiving: AtomicU64::new(0),
                progress: tokio::sync::watch::channel(Progress {
                    receiving: false,
                    install_failed: false,
                    applied: applied_index,
                })
                .0,
            }),
        };
        // An install that published its snapshot but stopped before its
        // state became the current one: the snapshot is the newer state.
        if let Some(meta) = current_ahead {
            let path = snapshots.join(format!("{}.snap", meta.snapshot_id));
            sm.shared.fill_generation(&meta, &path).await?;
        }
        Ok(sm)
    }

    /// What the log store waits on before it purges.
    pub(crate) fn coverage(&self) -> Arc<dyn Coverage> {
        Arc::clone(&self.shared) as Arc<dyn Coverage>
    }

    /// The store holding the applied state now (an install replaces it).
    fn store(&self) -> Store {
        self.shared
            .store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The keys as applied so far: a snapshot-consistent, lock-free view
    /// for reads (`get`, `range`, `prefix`). Take it again after a snapshot
    /// install, which replaces it; the reserved keys (see [`Request`]) are
    /// in it too.
    pub fn state(&self) -> State {
        self.store().state()
    }

    /// The value of `key` as applied so far.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store().state().get(key)
    }

    /// Stops the store: later calls fail.
    pub async fn close(&self) -> Result<(), Error> {
        self.shared.engine.shutdown_store(self.store()).await
    }
}

fn remove_except(dir: &Path, keep: &[&str]) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let damaged = name.to_str().is_some_and(|n| n.starts_with(DAMAGED_PREFIX));
        if damaged || keep.iter().any(|k| name == **k) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io("remove", &path, e))?;
    }
    Ok(())
}

/// The applied log id and membership a state holds.
fn applied_in<C: RaftTypeConfig>(state: &State) -> Result<Applied<C>, Error> {
    let applied = match state.get(APPLIED_KEY) {
        Some(bytes) => decode(&bytes)
            .map_err(|e| Error::Untrusted(format!("the applied log id does not decode: {e}")))?,
        None => None,
    };
    let membership = match state.get(MEMBERSHIP_KEY) {
        Some(bytes) => decode(&bytes)
            .map_err(|e| Error::Untrusted(format!("the membership does not decode: {e}")))?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// The newest finished snapshot in `dir`; every other file there goes.
fn load_current_snapshot<C: RaftTypeConfig>(dir: &Path) -> Result<Option<Meta<C>>, Error> {
    let mut best: Option<Meta<C>> = None;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        if path.extension().is_none_or(|e| e != "meta") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let meta: Meta<C> = decode(&bytes)
            .map_err(|e| Error::Untrusted(format!("{}: does not decode: {e}", path.display())))?;
        if !path.with_extension("snap").exists() {
            return Err(Error::Untrusted(format!(
                "{}: its snapshot file is missing",
                path.display()
            )));
        }
        if best
            .as_ref()
            .is_none_or(|b| b.last_log_id < meta.last_log_id)
        {
            best = Some(meta);
        }
    }
    let keep = best.as_ref().map(|m| {
        (
            format!("{}.snap", m.snapshot_id),
            format!("{}.meta", m.snapshot_id),
        )
    });
    match &keep {
        Some((snap, meta)) => remove_except(dir, &[snap, meta])?,
        None => remove_except(dir, &[])?,
    }
    Ok(best)
}

fn sm_err<C: RaftTypeConfig>(
    make: fn(AnyError) -> StorageIOError<C::NodeId>,
) -> impl Fn(Error) -> StorageError<C::NodeId> {
    move |e| make(AnyError::new(&e)).into()
}

fn snapshot_err<C: RaftTypeConfig>(e: Error) -> StorageError<C::NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::io(what, path, e)
}

impl<C> Shared<C>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    fn store(&self) -> Store {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `meta` (with its file already at `<id>.snap`, durable) the
    /// current snapshot, and removes the one before.
    async fn publish(&self, meta: &Meta<C>) -> Result<(), Error> {
        let dir = snapshots_dir(&self.dir);
        let meta_path = dir.join(format!("{}.meta", meta.snapshot_id));
        let bytes = encode(meta);
        blocking(move || replace_file(&meta_path, &bytes).map_err(io_err("write", &meta_path)))
            .await?;
        let previous = lock(&self.current).replace(meta.clone());
        if let Some(old) = previous.filter(|old| old.snapshot_id != meta.snapshot_id) {
            // A reader that opened it keeps reading it; one that has not
            // yet finds the new one (see `get_current_snapshot`).
            blocking(move || {
                for ext in ["meta", "snap"] {
                    let path = dir.join(format!("{}.{ext}", old.snapshot_id));
                    std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn open_snapshot(&self, meta: Meta<C>) -> Result<Snapshot<C>, Error> {
        let path = snapshots_dir(&self.dir).join(format!("{}.snap", meta.snapshot_id));
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io_err("open", &path))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }

    async fn build(&self) -> Result<Snapshot<C>, Error> {
        let _one = self.snapshotting.lock().await;
        let store = self.store();
        let header = match store.snapshot().await? {
            Some(header) => header,
            // Nothing was applied since the store's last snapshot.
            None => store
                .snapshots()
                .into_iter()
                .filter(|s| s.kind == SnapshotKind::Full)
                .max_by_key(|s| s.to_seq)
                .ok_or_else(|| Error::Untrusted("the store lists no full snapshot".into()))?,
        };
        let source = store.config().data_dir.join(header.file_name());
        // The applied log id and membership as of the snapshot: read from
        // the file, since entries may have been applied since it was cut.
        let read = source.clone();
        let (applied, membership) = tokio::task::spawn_blocking(move || {
            let (mut applied, mut membership) = (None, None);
            concordkv::read_snapshot_file(&read, |_, op| {
                if let Op::Set { key, value } = op {
                    if key == APPLIED_KEY {
                        applied = Some(value);
                    } else if key == MEMBERSHIP_KEY {
                        membership = Some(value);
                    }
                }
            })?;
            let applied = match applied {
                Some(bytes) => decode(&bytes).map_err(|e| {
                    Error::Untrusted(format!("the applied log id does not decode: {e}"))
                })?,
                None => None,
            };
            let membership = match membership {
                Some(bytes) => decode(&bytes).map_err(|e| {
                    Error::Untrusted(format!("the membership does not decode: {e}"))
                })?,
                None => StoredMembership::default(),
            };
            Ok::<_, Error>((applied, membership))
        })
        .await
        .map_err(|_| Error::ShutDown)??;
        let last: Option<LogId<C::NodeId>> = applied;
        let generation = self.generation.load(Relaxed);
        let snapshot_id = match &last {
            Some(id) => format!(
                "{}-{}-{}-{generation}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index, header.to_seq
            ),
            None => format!("none-{generation}-{}", header.to_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let dir = snapshots_dir(&self.dir);
        let target = dir.join(format!("{}.snap", meta.snapshot_id));
        blocking(move || {
            if target.exists() {
                return Ok(());
            }
            // A link, not a copy: the store may retire its file later.
            let tmp = with_suffix(&target, ".tmp");
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(&source, &tmp).is_err() {
                std::fs::copy(&source, &tmp).map_err(io_err("copy", &source))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("sync", &tmp))?;
            }
            std::fs::rename(&tmp, &target).map_err(io_err("rename", &tmp))?;
            sync_dir(&dir).map_err(io_err("sync", &dir))
        })
        .await?;
        self.publish(&meta).await?;
        self.open_snapshot(meta).await
    }

    async fn install(&self, meta: &Meta<C>, mut data: Box<tokio::fs::File>) -> Result<(), Error> {
        let _one = self.snapshotting.lock().await;
        if !is_valid_snapshot_id(&meta.snapshot_id) {
            return Err(Error::InvalidRequest(format!(
                "snapshot id {:?}: accepted 1 to 128 ASCII letters, digits and '-', not starting `receiving-`",
                meta.snapshot_id
            )));
        }
        let dir = snapshots_dir(&self.dir);
        // The bytes first, whole and durable, under their final name, with
        // their metadata: from here on, a restart finishes the install.
        let target = dir.join(format!("{}.snap", meta.snapshot_id));
        let tmp = with_suffix(&target, ".tmp");
        {
            data.seek(SeekFrom::Start(0))
                .await
                .map_err(io_err("seek", &tmp))?;
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(io_err("create", &tmp))?;
            tokio::io::copy(&mut *data, &mut out)
                .await
                .map_err(io_err("write", &tmp))?;
            out.flush().await.map_err(io_err("write", &tmp))?;
            out.sync_all().await.map_err(io_err("sync", &tmp))?;
        }
        drop(data);
        // Checked whole before it is published: a damaged file is refused
        // here, and the state stays as it was.
        let check = tmp.clone();
        blocking(move || concordkv::read_snapshot_file(&check, |_, _| {}).map(|_| ())).await?;
        let (from, to, synced) = (tmp.clone(), target.clone(), dir.clone());
        blocking(move || {
            std::fs::rename(&from, &to).map_err(io_err("rename", &from))?;
            sync_dir(&synced).map_err(io_err("sync", &synced))
        })
        .await?;
        self.publish(meta).await?;
        self.fill_generation(meta, &target).await?;
        blocking(move || remove_receiving(&dir)).await
    }

    /// Replaces the state with the snapshot at `path`: builds the next
    /// store generation from it, makes it durable, then switches `CURRENT`
    /// to it (one rename) and drops the old one.
    async fn fill_generation(&self, meta: &Meta<C>, path: &Path) -> Result<(), Error> {
        let generation = self.generation.load(Relaxed) + 1;
        let store = build_generation::<C>(
            &self.engine,
            &self.base,
            &self.dir,
            generation,
            Some((meta, path)),
        )
        .await?;
        let applied = (meta.last_log_id.clone(), meta.last_membership.clone());
        let old = std::mem::replace(
            &mut *self.store.write().unwrap_or_else(|p| p.into_inner()),
            store,
        );
        self.generation.store(generation, Relaxed);
        let index = applied.0.as_ref().map(|id| id.index);
        *lock(&self.applied) = applied;
        self.progress.send_modify(|p| {
            p.applied = index;
            p.receiving = false;
        });
        let old_dir = old.config().data_dir.clone();
        self.engine.shutdown_store(old).await?;
        blocking(move || std::fs::remove_dir_all(&old_dir).map_err(io_err("remove", &old_dir)))
            .await
    }
}

/// Builds generation `generation` of the state, from the snapshot `from`
/// (or empty), durable, and makes it the one the node opens (`CURRENT`,
/// one rename).
async fn build_generation<C: RaftTypeConfig>(
    engine: &Engine,
    base: &Config,
    dir: &Path,
    generation: u64,
    from: Option<(&Meta<C>, &Path)>,
) -> Result<Store, Error> {
    let config = generation_config(base, dir, generation);
    let new_dir = config.data_dir.clone();
    if new_dir.exists() {
        let stale = new_dir.clone();
        blocking(move || std::fs::remove_dir_all(&stale).map_err(io_err("remove", &stale))).await?;
    }
    let store = engine.open_store(config).await?;
    let filled = async {
        let (applied, membership) = match from {
            Some((meta, path)) => {
                fill_from_snapshot(&store, path).await?;
                (meta.last_log_id.clone(), meta.last_membership.clone())
            }
            None => (None, StoredMembership::default()),
        };
        let mut markers = Vec::new();
        push_markers::<C>(&mut markers, &applied, &membership, true);
        store.append_batch(markers).await?;
        // Durable before it becomes the one the node opens.
        store.sync().await
    }
    .await;
    if let Err(e) = filled {
        let _ = engine.shutdown_store(store).await;
        let _ =
            blocking(move || std::fs::remove_dir_all(&new_dir).map_err(io_err("remove", &new_dir)))
                .await;
        return Err(e);
    }
    let current_file = state_dir(dir).join("CURRENT");
    blocking(move || {
        replace_file(&current_file, generation.to_string().as_bytes())
            .map_err(io_err("write", &current_file))
    })
    .await?;
    Ok(store)
}

/// Runs file work off the async runtime (openraft's timers run there).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::ShutDown)?
}

impl<C> Coverage for Shared<C>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    fn before_purge(
        &self,
        index: u64,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(async move {
            let mut progress = self.progress.subscribe();
            let covered = |p: &Progress| p.applied.is_some_and(|a| a >= index);
            let settled = *progress
                .wait_for(|p| !p.receiving || covered(p))
                .await
                .map_err(|_| Error::ShutDown)?;
            if settled.install_failed && !covered(&settled) {
                return Err(Error::InvalidRequest(format!(
                    "a purge up to {index} waits for a snapshot install that failed; \
                     the entries stay"
                )));
            }
            // What was applied so far survives a power loss before the
            // entries behind it go.
            self.store().sync().await.map(|_| ())
        })
    }
}

/// Removes the files [`RaftStateMachine::begin_receiving_snapshot`] made.
fn remove_receiving(dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        let receiving = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(RECEIVING_PREFIX));
        if receiving {
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

/// Applies every entry of the snapshot file at `path` to `store`, read on a
/// blocking thread and handed over in bounded chunks.
async fn fill_from_snapshot(store: &Store, path: &Path) -> Result<(), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Op>>(2);
    let path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut receiver_gone = false;
        concordkv::read_snapshot_file(&path, |_, op| {
            if receiver_gone {
                return;
            }
            let size = op_bytes(&op);
            if !chunk.is_empty() && bytes + size > CHUNK_BYTES {
                bytes = 0;
                receiver_gone = tx.blocking_send(std::mem::take(&mut chunk)).is_err();
            }
            bytes += size;
            chunk.push(op);
        })?;
        if !chunk.is_empty() && !receiver_gone {
            let _ = tx.blocking_send(chunk);
        }
        Ok::<_, Error>(())
    });
    let mut applied = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = store.append_batch(chunk).await {
            applied = Err(e);
            break;
        }
    }
    drop(rx);
    let read = reader.await.map_err(|_| Error::ShutDown)?;
    read.and(applied)
}

impl<C> RaftSnapshotBuilder<C> for SnapshotBuilder<C>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<C::NodeId>> {
        self.shared.build().await.map_err(snapshot_err::<C>)
    }
}

impl<C> RaftStateMachine<C> for StateMachine<C>
where
    C: RaftTypeConfig<D = Request, R = Response, Entry = Entry<C>, SnapshotData = tokio::fs::File>,
{
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(&mut self) -> Result<Applied<C>, StorageError<C::NodeId>> {
        Ok(lock(&self.shared.applied).clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let write_err = sm_err::<C>(StorageIOError::write_state_machine);
        let store = self.shared.store();
        let state = store.state();
        let (mut applied, mut membership) = lock(&self.shared.applied).clone();
        let mut responses = Vec::new();
        let mut overlay = Overlay::default();
        // Whole entries waiting to be written, with the marker of the last.
        let mut pending: Vec<Op> = Vec::new();
        let mut bytes = 0;
        let mut membership_changed = false;
        for entry in entries {
            let mut ops = Vec::new();
            let mut joins = None;
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Membership(m) => {
                    joins = Some(StoredMembership::new(Some(entry.log_id.clone()), m));
                    Response::default()
                }
                EntryPayload::Normal(request) => overlay.apply(request, &state, &mut ops),
            };
            responses.push(response);
            let entry_bytes: usize = ops.iter().map(op_bytes).sum();
            if !pending.is_empty() && bytes + entry_bytes > CHUNK_BYTES {
                // Written before this entry, with the marker (and the
                // membership) of the one before it: each store batch holds
                // whole entries and says which, unless one entry alone is
                // larger than a batch.
                push_markers::<C>(&mut pending, &applied, &membership, membership_changed);
                store
                    .append_batch(std::mem::take(&mut pending))
                    .await
                    .map_err(&write_err)?;
                bytes = 0;
                membership_changed = false;
            }
            if let Some(joins) = joins {
                membership = joins;
                membership_changed = true;
            }
            if entry_bytes > CHUNK_BYTES {
                // Its writes in several batches, the marker with the last:
                // a crash between them leaves the entry to apply again,
                // which sets and deletes the same keys in the same order.
                let mut chunk_bytes = 0;
                for op in ops {
                    let size = op_bytes(&op);
                    if !pending.is_empty() && chunk_bytes + size > CHUNK_BYTES {
                        store
                            .append_batch(std::mem::take(&mut pending))
                            .await
                            .map_err(&write_err)?;
                        chunk_bytes = 0;
                    }
                    chunk_bytes += size;
                    pending.push(op);
                }
                bytes = chunk_bytes;
            } else {
                bytes += entry_bytes;
                pending.extend(ops);
            }
            applied = Some(entry.log_id.clone());
        }
        if applied != lock(&self.shared.applied).0 {
            push_markers::<C>(&mut pending, &applied, &membership, membership_changed);
            store.append_batch(pending).await.map_err(&write_err)?;
        }
        let index = applied.as_ref().map(|id| id.index);
        *lock(&self.shared.applied) = (applied, membership);
        self.shared.progress.send_modify(|p| p.applied = index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<C::NodeId>> {
        // A stream abandoned earlier (its leader stepped down) leaves its
        // file: one at a time is kept.
        let dir = snapshots_dir(&self.shared.dir);
        blocking(move || remove_receiving(&dir))
            .await
            .map_err(snapshot_err::<C>)?;
        self.shared.progress.send_modify(|p| {
            p.receiving = true;
            p.install_failed = false;
        });
        let n = self.shared.receiving.fetch_add(1, Relaxed);
        let path = snapshots_dir(&self.shared.dir).join(format!("{RECEIVING_PREFIX}{n}"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(io_err("create", &path))
            .map_err(snapshot_err::<C>)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta<C>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let installed = self.shared.install(meta, snapshot).await;
        self.shared.progress.send_modify(|p| {
            p.receiving = false;
            p.install_failed = installed.is_err();
        });
        installed.map_err(snapshot_err::<C>)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        // Not behind the build's lock: openraft asks from the state
        // machine's worker, which must not wait for a build. A snapshot
        // replaced between reading its metadata and opening its file is
        // asked for again.
        let mut tries = 0;
        loop {
            let Some(meta) = lock(&self.shared.current).clone() else {
                return Ok(None);
            };
            match self.shared.open_snapshot(meta).await {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(Error::Io { ref source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 8 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(sm_err::<C>(StorageIOError::read_state_machine)(e)),
            }
        }
    }
}

/// Values as the store batch being built leaves them, so that each write
/// answers with the value the one before it left.
#[derive(Default)]
struct Overlay {
    written: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay {
    /// Adds `request`'s operations to `ops`, and answers it.
    fn apply(&mut self, request: Request, state: &State, ops: &mut Vec<Op>) -> Response {
        if let Err(reason) = request.check_shape() {
            return Response::refused(reason);
        }
        let (key, op, now) = match request {
            Request::Batch(requests) => {
                let answers = requests
                    .into_iter()
                    .map(|r| self.apply(r, state, ops))
                    .collect();
                return Response::batch(answers);
            }
            Request::Set { key, value } => {
                let op = Op::Set {
                    key: key.clone(),
                    value: value.clone(),
                };
                (key, op, Some(value))
            }
            Request::Delete { key } => (key.clone(), Op::Delete { key }, None),
        };
        let previous = match self.written.get(&key) {
            Some(value) => value.clone(),
            None => state.get(&key),
        };
        self.written.insert(key, now);
        ops.push(op);
        Response::done(previous)
    }
}

fn push_markers<C: RaftTypeConfig>(
    ops: &mut Vec<Op>,
    applied: &Option<LogId<C::NodeId>>,
    membership: &StoredMembership<C::NodeId, C::Node>,
    membership_changed: bool,
) {
    ops.push(Op::Set {
        key: APPLIED_KEY.to_vec(),
        value: encode(applied),
    });
    if membership_changed {
        ops.push(Op::Set {
            key: MEMBERSHIP_KEY.to_vec(),
            value: encode(membership),
        });
    }
}

/// Whether `key` is one of the state machine's own.
pub(crate) fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}
