//! The actix system the node's [`Log`] and state-machine [`Store`] run in.
//!
//! openraft drives storage from whatever tokio runtime it runs on (a plain
//! one in its test suite), while concordkv's actors need an actix `System`.
//! The node gets a thread of its own that hosts one; the handles are used
//! from any thread, and only opening and shutting down run on it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use concordkv::{Config, Error, Log, Store};
use tokio::sync::oneshot;

/// The node's actix thread.
pub(crate) struct Engine {
    arbiter: actix_rt::ArbiterHandle,
    system: actix_rt::System,
    thread: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl Engine {
    pub(crate) fn start(name: &str) -> std::io::Result<Engine> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("concordkv-raft {name}"))
            .spawn(move || {
                let runner = actix_rt::System::new();
                let _ = tx.send((actix_rt::System::current(), actix_rt::Arbiter::current()));
                runner.run()
            })?;
        let (system, arbiter) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the storage thread ended as it started"))?;
        Ok(Engine {
            arbiter,
            system,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f`'s future on the actix thread and hands back its output.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let sent = self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = tx.send(f().await);
            });
        });
        if !sent {
            return Err(Error::ShutDown);
        }
        rx.await.map_err(|_| Error::ShutDown)
    }

    pub(crate) async fn open_log(&self, config: Config) -> Result<Log, Error> {
        self.run(move || async move { Log::open(config).await.map(|(log, _)| log) })
            .await?
    }

    pub(crate) async fn open_store(&self, config: Config) -> Result<Store, Error> {
        self.run(move || async move { Store::open(config).await.map(|(store, _)| store) })
            .await?
    }

    pub(crate) async fn shutdown_store(&self, store: Store) -> Result<(), Error> {
        self.run(move || async move { store.shutdown().await })
            .await?
    }

    pub(crate) async fn shutdown_log(&self, log: Log) -> Result<(), Error> {
        self.run(move || async move { log.shutdown().await })
            .await?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: a temporary file, fsync, rename, directory fsync.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = with_suffix(path, ".tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (a rename, a new link) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
