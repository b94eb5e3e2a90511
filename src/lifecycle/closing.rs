//! Stores dropped without `shutdown`, still closing in the background.
//!
//! Dropping the last handle of a store cannot wait for its actors (they may
//! run on the very thread that drops it), so the shutdown runs on the actix
//! arbiter. Until it has released the directory lock, an open of the same
//! directory in this process waits for it here instead of failing on the
//! lock: `drop(store); Store::open(same_dir)` just works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

/// Directories being closed, each with a receiver that sees its sender
/// dropped once the close has finished (or was abandoned).
static CLOSING: Mutex<Option<HashMap<PathBuf, Closing>>> = Mutex::new(None);
/// One close under way: its id and the receiver that sees it end.
type Closing = (u64, watch::Receiver<()>);
/// Tells apart two closes of the same directory, so that the older one's
/// guard never removes the newer one's entry.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Held while a dropped store closes; dropping it releases the waiters.
pub(crate) struct ClosingGuard {
    key: PathBuf,
    id: u64,
    _done: watch::Sender<()>,
}

/// Registers `dir` as closing until the returned guard is dropped.
pub(crate) fn begin(dir: &Path) -> ClosingGuard {
    let key = key(dir);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (done, waiter) = watch::channel(());
    CLOSING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(key.clone(), (id, waiter));
    ClosingGuard {
        key,
        id,
        _done: done,
    }
}

/// Waits until no dropped store is still closing `dir`.
pub(crate) async fn wait(dir: &Path) {
    let key = key(dir);
    loop {
        let waiter = CLOSING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|closing| closing.get(&key))
            .map(|(_, waiter)| waiter.clone());
        match waiter {
            // `changed` fails once the sender is gone: the close is over.
            Some(mut waiter) => while waiter.changed().await.is_ok() {},
            None => return,
        }
    }
}

impl Drop for ClosingGuard {
    fn drop(&mut self) {
        let mut closing = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = closing.as_mut() {
            if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
    }
}

/// One name per directory however it was spelled: resolved through
/// symlinks when it exists, made absolute otherwise.
fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}
