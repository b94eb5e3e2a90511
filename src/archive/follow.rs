//! Following an archive: a read-only copy of another store, kept current by
//! polling the archive for new chunks and appending their records, in
//! order and under their own sequence numbers, to a local [`Store`] that
//! nothing else writes to (a Redis replica's role, with the archive as its
//! link). Each chunk is checked against the CRC its name carries and each
//! record against its frame's CRC; a record that lands under another
//! sequence number than it had means the local store was written to by
//! someone else, and following stops.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::archive::bucket::Bucket;
use crate::archive::names::{ChunkName, ObjectName};
use crate::config::ArchiveConfig;
use crate::entry::{unix_millis, Seq};
use crate::error::{Corruption, Error, Result};
use crate::format::codec::decode_entry;
use crate::format::record::{read_frame_at, Frame, Layout, MAX_PAYLOAD_BYTES};
use crate::format::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::store::Store;

/// How a follower is doing, readable at any time (`INFO replication`).
#[derive(Debug, Default)]
pub struct FollowStatus {
    applied_seq: AtomicU64,
    archive_seq: AtomicU64,
    /// Unix ms of the last poll that reached the archive (0: none yet).
    last_contact_ms: AtomicU64,
    error: Mutex<Option<String>>,
}

impl FollowStatus {
    /// The last sequence number applied to the local store.
    pub fn applied_seq(&self) -> Seq {
        self.applied_seq.load(Relaxed)
    }

    /// The last sequence number the archive held at the last poll.
    pub fn archive_seq(&self) -> Seq {
        self.archive_seq.load(Relaxed)
    }

    /// Milliseconds since a poll last reached the archive (`None`: never).
    pub fn since_contact_ms(&self) -> Option<u64> {
        match self.last_contact_ms.load(Relaxed) {
            0 => None,
            at => Some(unix_millis(std::time::SystemTime::now()).saturating_sub(at)),
        }
    }

    /// Why the last poll failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// Follows the archive `source` into `store` until the store shuts down,
/// polling every `source.max_lag_ms`: a follower is then at most
/// `max_lag_ms` (the archiver's bound) plus one poll behind the store it
/// follows. A failed poll is reported in `status` and retried at the next.
/// `store` must hold a prefix of the archived log (a restore of it, say)
/// and take no other writes.
pub async fn follow(store: Store, source: ArchiveConfig, status: Arc<FollowStatus>) -> Result<()> {
    let bucket = Bucket::connect(&source)?;
    let poll = Duration::from_millis(source.max_lag_ms);
    let label = crate::meters::store_label(store.config());
    let lag = metrics::gauge!("concordkv_follow_lag_records", "store" => label.clone());
    let errors = metrics::counter!("concordkv_follow_errors_total", "store" => label);
    errors.increment(0);
    let mut follower = Follower {
        bucket,
        store,
        status,
        after: None,
        layout: None,
    };
    loop {
        let polled = follower.poll().await;
        let status = &follower.status;
        lag.set(status.archive_seq().saturating_sub(status.applied_seq()) as f64);
        if polled.is_err() {
            errors.increment(1);
        }
        match polled {
            Ok(()) => follower.status.set_error(None),
            Err(Error::ShutDown) => return Ok(()),
            Err(e @ Error::Untrusted(_)) => {
                follower.status.set_error(Some(e.to_string()));
                return Err(e);
            }
            Err(e) => {
                if follower.status.error().is_none() {
                    tracing::warn!(%e, "following the archive failed; retrying at every poll");
                }
                follower.status.set_error(Some(e.to_string()));
            }
        }
        if follower.store.is_shut_down() {
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}

struct Follower {
    bucket: Bucket,
    store: Store,
    status: Arc<FollowStatus>,
    /// The last chunk applied whole: the next listing starts after it.
    after: Option<String>,
    /// The layout of the segment being followed, from its header.
    layout: Option<(u64, Layout)>,
}

impl Follower {
    async fn poll(&mut self) -> Result<()> {
        let listed = self.bucket.list_after(self.after.as_deref()).await?;
        self.status
            .last_contact_ms
            .store(unix_millis(std::time::SystemTime::now()), Relaxed);
        let chunks: Vec<(ChunkName, String)> = listed
            .into_iter()
            .filter_map(|object| match ObjectName::parse(&object.name) {
                Some(ObjectName::Chunk(chunk)) => Some((chunk, object.name)),
                _ => None,
            })
            .collect();
        if let Some((last, _)) = chunks.last() {
            self.status.archive_seq.fetch_max(last.last_seq, Relaxed);
        }
        for (chunk, name) in chunks {
            let applied = self.store.stats().last_seq;
            self.status.applied_seq.store(applied, Relaxed);
            if chunk.last_seq <= applied {
                self.after = Some(name);
                continue;
            }
            if chunk.first_seq > applied + 1 {
                return Err(Error::Archive {
                    op: "follow",
                    object: name,
                    reason: format!(
                        "records {}..{} are missing from the archive before this chunk",
                        applied + 1,
                        chunk.first_seq - 1
                    ),
                });
            }
            let bytes = self
                .bucket
                .get_checked(&name, chunk.crc, chunk.len())
                .await?;
            self.apply(&chunk, &name, &bytes, applied).await?;
            self.after = Some(name);
        }
        self.status
            .applied_seq
            .store(self.store.stats().last_seq, Relaxed);
        Ok(())
    }

    /// The layout of segment `id`'s frames: from its header, in the chunk
    /// at byte 0 (fetched if this poll did not bring it).
    async fn layout(&mut self, id: u64, first: Option<&[u8]>) -> Result<Layout> {
        if let Some((known, layout)) = self.layout {
            if known == id {
                return Ok(layout);
            }
        }
        let fetched;
        let header_bytes = match first {
            Some(bytes) => bytes,
            None => {
                let prefix = format!("wal/{id:020}/000000000000-");
                let listed = self.bucket.list().await?;
                let object = listed
                    .iter()
                    .find_map(|o| match ObjectName::parse(&o.name) {
                        Some(ObjectName::Chunk(c)) if o.name.starts_with(&prefix) => {
                            Some((c, o.name.clone()))
                        }
                        _ => None,
                    })
                    .ok_or_else(|| Error::Archive {
                        op: "follow",
                        object: prefix.clone(),
                        reason: format!("the first chunk of segment {id} is missing"),
                    })?;
                fetched = self
                    .bucket
                    .get_checked(&object.1, object.0.crc, object.0.len())
                    .await?;
                &fetched
            }
        };
        let header =
            SegmentHeader::decode(&header_bytes[..header_bytes.len().min(SEGMENT_HEADER_BYTES)])
                .map_err(|_| Error::Archive {
                    op: "follow",
                    object: format!("wal/{id:020}/"),
                    reason: "the segment's header is damaged".into(),
                })?;
        self.layout = Some((id, header.layout()));
        Ok(header.layout())
    }

    /// Appends the records of `bytes` (chunk `chunk`) after `applied`.
    async fn apply(
        &mut self,
        chunk: &ChunkName,
        name: &str,
        bytes: &[u8],
        applied: Seq,
    ) -> Result<()> {
        let (layout, mut pos) = if chunk.start == 0 {
            (
                self.layout(chunk.segment, Some(bytes)).await?,
                SEGMENT_HEADER_BYTES,
            )
        } else {
            (self.layout(chunk.segment, None).await?, 0)
        };
        let damaged = |offset: u64, reason: String| {
            Error::Corruption(Corruption {
                file: name.into(),
                offset,
                reason,
            })
        };
        let mut pending = Vec::new();
        while pos < bytes.len() {
            let offset = chunk.start + pos as u64;
            match read_frame_at(&bytes[pos..], layout, offset, MAX_PAYLOAD_BYTES) {
                Frame::Record {
                    seq, payload, size, ..
                } => {
                    if seq > applied {
                        let entry =
                            decode_entry(payload).map_err(|reason| damaged(offset, reason))?;
                        pending.push((seq, self.store.submit(entry).await?));
                    }
                    pos += size;
                }
                Frame::Unwritten => return Err(damaged(offset, "zeros inside a chunk".into())),
                Frame::Damaged(reason) => return Err(damaged(offset, reason)),
            }
        }
        for (expected, ack) in pending {
            let seq = ack.await?;
            if seq != expected {
                return Err(Error::Untrusted(format!(
                    "record {expected} of the archive was stored here as {seq}: the local store \
                     took writes of its own, and no longer follows {name}"
                )));
            }
        }
        Ok(())
    }
}
