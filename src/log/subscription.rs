//! Following the log: a [`Subscription`] hands out every record from a
//! chosen sequence number on, in order, each once it is acknowledged, and
//! then waits for the next.
//!
//! It reads the segment files (through a [`Cursor`], a chunk of records per
//! blocking task, never on the actix event loop), not a copy of what the
//! WAL writes: a subscriber that falls behind costs the appenders nothing
//! and catches up from the disk, and one that falls behind a snapshot or a
//! compaction learns it from [`Error::Purged`]. Waiting is a
//! `tokio::sync::Notify` the acknowledgement path wakes, not a poll.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::actors::wal::WalShared;
use crate::entry::{Record, Seq};
use crate::error::{Error, Result};
use crate::log::read::{acknowledged_upto, is_closed, wait_past, Cursor};

/// What a blocking read task hands back: the cursor, the records it read,
/// and how the read ended.
type Chunk = (Cursor, VecDeque<Record>, Result<()>);

/// Records of the log from a sequence number on, as they are acknowledged;
/// see [`Store::subscribe`](crate::Store::subscribe).
pub struct Subscription {
    wal: Arc<WalShared>,
    /// `None` while a read task has it.
    cursor: Option<Cursor>,
    /// The read in flight: kept across calls, so a `next` dropped while it
    /// runs loses nothing.
    reading: Option<tokio::task::JoinHandle<Chunk>>,
    ready: VecDeque<Record>,
    failed: Option<Error>,
    done: bool,
}

impl Subscription {
    pub(crate) fn new(wal: Arc<WalShared>, from: Seq) -> Subscription {
        let cursor = Cursor::new(Arc::clone(&wal), Some(from)).following();
        Subscription {
            wal,
            cursor: Some(cursor),
            reading: None,
            ready: VecDeque::new(),
            failed: None,
            done: false,
        }
    }

    /// The next record, once it is acknowledged. `None` once the store has
    /// shut down (records not handed out yet stay in the log, for a
    /// subscription of the reopened store), and after an error.
    ///
    /// Cancel-safe: dropping the future (in a `select!`, say) loses no
    /// record; the next call goes on where this one was. Must be polled
    /// inside the store's actix `System` (files are read on its blocking
    /// threads).
    pub async fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if self.done || is_closed(&self.wal) {
                self.done = true;
                return None;
            }
            if let Some(record) = self.ready.pop_front() {
                return Some(Ok(record));
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some(Err(e));
            }
            if let Some(reading) = self.reading.as_mut() {
                let joined = reading.await;
                self.reading = None;
                match joined {
                    Ok((cursor, ready, outcome)) => {
                        self.cursor = Some(cursor);
                        self.ready = ready;
                        self.failed = outcome.err();
                    }
                    Err(e) => self.failed = Some(Error::task_failed("reading the log", &e)),
                }
                continue;
            }
            let Some(mut cursor) = self.cursor.take() else {
                // The cursor went with a read task that failed.
                self.done = true;
                return None;
            };
            let upto = acknowledged_upto(&self.wal);
            if cursor.next_seq() > upto {
                // A truncation moves the end back below a waiting cursor.
                if let Err(e) = cursor.check_waiting() {
                    self.failed = Some(e);
                    continue;
                }
                let seen = cursor.next_seq() - 1;
                self.cursor = Some(cursor);
                if !wait_past(&self.wal, seen).await {
                    self.done = true;
                    return None;
                }
                continue;
            }
            let mut ready = std::mem::take(&mut self.ready);
            self.reading = Some(actix_rt::task::spawn_blocking(move || {
                let outcome = cursor.read_chunk(upto, &mut ready);
                (cursor, ready, outcome)
            }));
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("buffered", &self.ready.len())
            .field("reading", &self.reading.is_some())
            .field("done", &self.done)
            .finish()
    }
}
