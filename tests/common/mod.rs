//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use concordkv::testing::format::record::{read_frame_at, Frame, MAX_PAYLOAD_BYTES};
use concordkv::testing::format::segment::{
    parse_segment_file_name, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use concordkv::testing::fs::{DirLock, FileSystem, RealFs, WritableFile};
use concordkv::{Config, Op, Record, SyncMode};

/// A configuration for `dir` with small segments, so tests rotate often.
pub fn config(dir: &Path, mode: SyncMode) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.wal.sync_mode = mode;
    config.wal.max_segment_bytes = 64 * 1024;
    config
}

/// Writes 200 records of 40-byte values into 4 KiB segments (several
/// sealed ones), shuts down, and returns the configuration used.
pub async fn fill_small_segments(dir: &Path) -> Config {
    let mut cfg = config(dir, SyncMode::Always);
    cfg.wal.max_segment_bytes = 4096;
    let (store, _) = concordkv::testing::open_recording(cfg.clone())
        .await
        .expect("open");
    for i in 0..200u32 {
        store
            .set(format!("key-{i}"), vec![b'x'; 40])
            .await
            .expect("set");
    }
    store.shutdown().await.expect("shutdown");
    cfg
}

/// The segment files of `dir`, in id order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("read data dir")
        .map(|e| e.expect("dir entry").path())
        .filter_map(|p| Some((parse_segment_file_name(p.file_name()?.to_str()?)?, p)))
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Segments that hold a started header (not just preallocated zeros).
pub fn started_segments(dir: &Path) -> Vec<PathBuf> {
    segments(dir)
        .into_iter()
        .filter(|p| SegmentHeader::decode(&std::fs::read(p).expect("read segment")).is_ok())
        .collect()
}

/// Byte ranges of every intact record frame in a segment file.
pub fn frame_ranges(path: &Path) -> Vec<std::ops::Range<usize>> {
    let bytes = std::fs::read(path).expect("read segment");
    let layout = SegmentHeader::decode(&bytes)
        .expect("segment header")
        .layout();
    let mut ranges = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while let Frame::Record { size, .. } =
        read_frame_at(&bytes[at..], layout, at as u64, MAX_PAYLOAD_BYTES)
    {
        ranges.push(at..at + size);
        at += size;
    }
    ranges
}

/// Applies records to a map, the way a user of the library would.
pub fn state(records: &[Record]) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut map = HashMap::new();
    for record in records {
        for op in record.entry.ops() {
            match op {
                Op::Set { key, value } | Op::SetExpiring { key, value, .. } => {
                    map.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    map.remove(key);
                }
                Op::Clear => map.clear(),
            }
        }
    }
    map
}

/// Copies every file of `from` into a new directory under `parent`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}

/// The real disk, with every file it creates passed through `wrap`: how
/// tests slow down, fail or break the files a store writes.
pub struct WrappingFs<W>(pub W);

impl<W> FileSystem for WrappingFs<W>
where
    W: Fn(&Path, Arc<dyn WritableFile>) -> Arc<dyn WritableFile> + Send + Sync + 'static,
{
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        RealFs.list_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        RealFs.read_at(path, offset, buf)
    }
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        RealFs.read_prefix(path, len)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        RealFs.file_len(path)
    }
    fn create(&self, path: &Path, preallocate: u64) -> io::Result<Arc<dyn WritableFile>> {
        Ok((self.0)(path, RealFs.create(path, preallocate)?))
    }
    fn open_writable(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        RealFs.open_writable(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_dir(path)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        RealFs.lock_dir(dir)
    }
    fn boot_id(&self) -> io::Result<String> {
        RealFs.boot_id()
    }
}
