//! The archive's bucket, through the `object_store` crate: listing, and
//! uploads that count only once read back intact.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::archive::names::{crc, ObjectName};
use crate::archive::url::ArchiveUrl;
use crate::config::ArchiveConfig;
use crate::error::{Error, Result};
use crate::fs::{read_exact_at, FileSystem};

/// How long the check at open waits for the archive to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Files larger than this go up in parts of this size, `archive.concurrency`
/// parts in memory at a time (S3 wants parts of at least 5 MiB, but the
/// last).
pub(crate) const PART_BYTES: u64 = 8 << 20;

/// S3's error codes for requests that no retry will let through: wrong
/// or missing credentials, a bucket that does not exist or is not ours.
const REFUSALS: [&str; 6] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "NoSuchBucket",
    "AllAccessDisabled",
    "InvalidBucketName",
];

/// Whether `e` is a refusal (see [`REFUSALS`]); `object_store` passes S3's
/// error body on in its message.
/// The size a download must come to: it stops as soon as more arrives,
/// so that what a hostile or replaced object holds never takes more memory
/// or disk than its name or listing says.
struct Expected {
    len: u64,
    got: u64,
}

impl Expected {
    fn new(len: u64) -> Expected {
        Expected { len, got: 0 }
    }

    /// Counts `piece` in; why to stop if it takes the object past its size.
    fn take(&mut self, piece: &[u8]) -> std::result::Result<(), String> {
        let got = self.got + piece.len() as u64;
        if got > self.len {
            return Err(format!(
                "the object holds more than the {} bytes expected of it",
                self.len
            ));
        }
        self.got = got;
        Ok(())
    }

    /// Why to refuse the whole object, if it came short.
    fn finish(&self) -> std::result::Result<(), String> {
        if self.got == self.len {
            return Ok(());
        }
        Err(format!(
            "the object holds {} bytes, {} were expected of it",
            self.got, self.len
        ))
    }
}

fn refused(e: &object_store::Error) -> bool {
    let text = e.to_string();
    REFUSALS.iter().any(|code| text.contains(code))
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
}

/// One archive: a bucket and the prefix its objects are named under.
#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    /// `archive.url`, for errors.
    url: String,
    /// Parts of one upload in flight at once (`archive.concurrency`).
    concurrency: usize,
}

/// An object found by a listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// The name under the prefix.
    pub name: String,
    pub size: u64,
    /// When it was written, in Unix ms (S3 keeps whole seconds).
    pub modified_ms: u64,
}

impl Bucket {
    /// A client for `config` (credentials from the environment, as the AWS
    /// SDKs read them). Nothing is sent yet.
    pub fn connect(config: &ArchiveConfig) -> Result<Bucket> {
        let url = ArchiveUrl::parse(&config.url).map_err(|reason| Error::Archive {
            op: "parse archive.url",
            object: config.url.clone(),
            reason,
        })?;
        let retry = RetryConfig {
            max_retries: config.max_retries as usize,
            retry_timeout: Duration::from_millis(config.retry_timeout_ms),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&url.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_retry(retry);
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        let store = builder.build().map_err(|e| Error::Archive {
            op: "configure the archive's S3 client",
            object: config.url.clone(),
            reason: e.to_string(),
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            prefix: url.prefix,
            url: config.url.clone(),
            concurrency: config.concurrency.max(1) as usize,
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    fn error(&self, op: &'static str, name: &str, e: impl std::fmt::Display) -> Error {
        Error::Archive {
            op,
            object: format!(
                "{}{}{name}",
                self.url.trim_end_matches('/'),
                if name.is_empty() { "" } else { "/" }
            ),
            reason: e.to_string(),
        }
    }

    /// Lists the prefix once, without retries: an answer that the
    /// credentials are refused or the bucket does not exist is an error;
    /// no answer in time only a warning (the archiver keeps trying).
    pub async fn check(&self) -> Result<()> {
        let mut listing = self.store.list(Some(&self.path("manifest/")));
        match tokio::time::timeout(CHECK_TIMEOUT, listing.try_next()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if refused(&e) => Err(self.error("list", "", e)),
            Ok(Err(e)) => {
                tracing::warn!(%e, url = %self.url, "the archive did not answer; archiving will retry");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "the archive did not answer in time; archiving will retry");
                Ok(())
            }
        }
    }

    /// Every object under the prefix, in name order.
    pub async fn list(&self) -> Result<Vec<Listed>> {
        self.list_after(None).await
    }

    /// The objects under the prefix whose names sort after `after` (a
    /// name under the prefix), in name order: how a follower asks only for
    /// what is new.
    pub async fn list_after(&self, after: Option<&str>) -> Result<Vec<Listed>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = match after {
            Some(after) => self
                .store
                .list_with_offset(prefix.as_ref(), &self.path(after)),
            None => self.store.list(prefix.as_ref()),
        };
        let metas: Vec<_> = listing
            .try_collect()
            .await
            .map_err(|e| self.error("list", "", e))?;
        let mut listed: Vec<Listed> = metas
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.to_string();
                let name = full.strip_prefix(&self.prefix)?.to_string();
                Some(Listed {
                    name,
                    size: meta.size,
                    modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
                })
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// The bytes of object `name`, which must be `len` bytes, and their
    /// CRC: a larger object is refused as soon as more arrives, so that what
    /// a hostile or mistaken bucket serves never takes more memory than its
    /// name (or our own upload) says.
    async fn get(&self, name: &str, len: u64) -> Result<(Vec<u8>, u32)> {
        let mut bytes = Vec::with_capacity(usize::try_from(len.min(PART_BYTES)).unwrap_or(0));
        let mut size = Expected::new(len);
        let (_, crc) = self
            .stream_checked(name, |piece| {
                size.take(piece)
                    .map_err(|e| self.error("download", name, e))?;
                bytes.extend_from_slice(piece);
                Ok(())
            })
            .await?;
        size.finish().map_err(|e| self.error("download", name, e))?;
        Ok((bytes, crc))
    }

    /// Downloads `name`, which must be `len` bytes, and checks its bytes
    /// against the CRC its name carries: a damaged object is an error that
    /// names it.
    pub async fn get_checked(&self, name: &str, expected_crc: u32, len: u64) -> Result<Vec<u8>> {
        let (bytes, found) = self.get(name, len).await?;
        if found != expected_crc {
            return Err(self.error(
                "check",
                name,
                format!(
                    "the object's CRC is {found:08x}, its name says {expected_crc:08x}: \
                     it was damaged in the archive"
                ),
            ));
        }
        Ok(bytes)
    }

    /// Deletes object `name` (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }

    /// Uploads `bytes` as `object`, then reads the object back and checks
    /// its size and CRC: only then does it count as archived.
    pub async fn put_verified(&self, object: &ObjectName, bytes: Vec<u8>) -> Result<()> {
        let name = object.render();
        let expected = (bytes.len(), crc(&bytes));
        self.store
            .put(&self.path(&name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("upload", &name, e))?;
        let (_, back) = self.get(&name, expected.0 as u64).await?;
        if back != expected.1 {
            return Err(self.error(
                "verify upload",
                &name,
                format!(
                    "read back CRC {back:08x}, uploaded {} bytes with CRC {:08x}",
                    expected.0, expected.1
                ),
            ));
        }
        Ok(())
    }

    /// Uploads file `path` (of the size and CRC `expected`) as `object`
    /// without holding it in memory: in parts of [`PART_BYTES`] when it is
    /// larger (`archive.concurrency` of them in flight), then reads the
    /// object back as a stream and checks its size and CRC, as
    /// [`Bucket::put_verified`] does. A failed part aborts the upload,
    /// leaving no object.
    pub async fn put_file_verified(
        &self,
        fs: &dyn FileSystem,
        path: &Path,
        object: &ObjectName,
        expected: (u64, u32),
    ) -> Result<()> {
        let name = object.render();
        let read = |offset: u64| {
            let len = PART_BYTES.min(expected.0 - offset) as usize;
            read_exact_at(fs, path, offset, len)
                .map_err(|e| Error::io("read file for the archive", path, e))
        };
        if expected.0 <= PART_BYTES {
            return self.put_verified(object, read(0)?).await;
        }
        let location = self.path(&name);
        let mut upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| self.error("start upload", &name, e))?;
        let mut offset = 0;
        while offset < expected.0 {
            let mut parts = Vec::with_capacity(self.concurrency);
            while offset < expected.0 && parts.len() < self.concurrency {
                let part = match read(offset) {
                    Ok(part) => part,
                    Err(e) => {
                        let _ = upload.abort().await;
                        return Err(e);
                    }
                };
                offset += part.len() as u64;
                parts.push(upload.put_part(PutPayload::from(part)));
            }
            if let Err(e) = futures_util::future::try_join_all(parts).await {
                let _ = upload.abort().await;
                return Err(self.error("upload part", &name, e));
            }
        }
        if let Err(e) = upload.complete().await {
            let _ = upload.abort().await;
            return Err(self.error("upload", &name, e));
        }
        let back = self.stream_checked(&name, |_| Ok(())).await?;
        if back != expected {
            return Err(self.error(
                "verify upload",
                &name,
                format!(
                    "read back {} bytes with CRC {:08x}, uploaded {} with CRC {:08x}",
                    back.0, back.1, expected.0, expected.1
                ),
            ));
        }
        Ok(())
    }

    /// Streams object `name` to `sink` a piece at a time; its size and CRC.
    async fn stream_checked(
        &self,
        name: &str,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(u64, u32)> {
        let mut stream = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.error("download", name, e))?
            .into_stream();
        let (mut len, mut hasher) = (0u64, crc32fast::Hasher::new());
        while let Some(piece) = stream
            .try_next()
            .await
            .map_err(|e| self.error("download", name, e))?
        {
            hasher.update(&piece);
            len += piece.len() as u64;
            sink(&piece)?;
        }
        Ok((len, hasher.finalize()))
    }

    /// Downloads object `name`, which must be `expected.0` bytes with CRC
    /// `expected.1`, into a new file at `path`, synced, without holding it
    /// in memory. Anything else is an error that names the object, and the
    /// file is removed: a larger object as soon as more arrives, so that
    /// what a hostile or replaced object holds never fills the disk.
    pub async fn download_checked(
        &self,
        fs: &dyn FileSystem,
        name: &str,
        expected: (u64, u32),
        path: &Path,
    ) -> Result<u64> {
        let (expected_len, expected_crc) = expected;
        let file = fs
            .create(path, 0)
            .map_err(|e| Error::io("create restored file", path, e))?;
        let mut size = Expected::new(expected_len);
        let result = self
            .stream_checked(name, |piece| {
                let at = size.got;
                size.take(piece)
                    .map_err(|e| self.error("download", name, e))?;
                file.write_at(piece, at)
                    .map_err(|e| Error::io("write restored file", path, e))
            })
            .await
            .and_then(|sum| {
                size.finish().map_err(|e| self.error("download", name, e))?;
                Ok(sum)
            });
        let checked = match result {
            Ok((len, found)) if found == expected_crc => file
                .sync_all()
                .map(|()| len)
                .map_err(|e| Error::io("sync restored file", path, e)),
            Ok((_, found)) => Err(self.error(
                "check",
                name,
                format!(
                    "the object's CRC is {found:08x}, its name says {expected_crc:08x}: \
                     it was damaged in the archive"
                ),
            )),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            drop(file);
            let _ = fs.remove(path);
        }
        checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_stops_at_the_first_byte_past_its_size_and_refuses_a_short_one() {
        let mut size = Expected::new(10);
        assert!(size.take(&[0; 4]).is_ok());
        assert!(size.take(&[0; 6]).is_ok());
        assert!(size.finish().is_ok());
        let error = size.take(&[0; 1]).expect_err("one byte too many");
        assert!(error.contains("more than the 10 bytes"), "{error}");
        assert_eq!(size.got, 10, "the refused piece is not counted");

        let mut short = Expected::new(10);
        assert!(short.take(&[0; 9]).is_ok());
        let error = short.finish().expect_err("a byte short");
        assert!(error.contains("holds 9 bytes, 10 were expected"), "{error}");
        assert!(Expected::new(0).finish().is_ok());
    }
}
