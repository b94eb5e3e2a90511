//! The file-system seam: every create, write, sync, rename, directory sync and
//! removal the store performs goes through [`FileSystem`], so a
//! fault-injecting implementation can stand in for [`RealFs`] without touching
//! the log's code.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Data files are private to the owner.
const FILE_MODE: u32 = 0o600;
/// The file a store's directory lock is held on.
pub const LOCK_FILE: &str = "LOCK";

/// Data directories are private to the owner.
const DIR_MODE: u32 = 0o700;
/// The boot id where the system names none: every boot looks the same.
const UNKNOWN_BOOT: &str = "unknown";

/// `len` bytes of `path` from `offset`, however many reads that takes; a
/// file that ends first is an `UnexpectedEof` error saying where.
#[cfg(feature = "archive")]
pub(crate) fn read_exact_at(
    fs: &dyn FileSystem,
    path: &Path,
    offset: u64,
    len: usize,
) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    let mut read = 0;
    while read < len {
        match fs.read_at(path, offset + read as u64, &mut bytes[read..])? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ends at byte {}, before the {len} bytes from {offset}",
                        path.display(),
                        offset + read as u64
                    ),
                ))
            }
            n => read += n,
        }
    }
    Ok(bytes)
}

/// The file operations the store needs, and nothing else.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates `path` and missing parents with mode 0700.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory (full paths), in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads from `offset` into `buf` until it is full or the file ends;
    /// the bytes read (fewer than `buf.len()` only at the end). A reader of
    /// large files goes through them a piece at a time with one buffer.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// At most the first `len` bytes of a file.
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>>;
    /// The length of a file.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Creates a new file (failing if it exists) with mode 0600, with
    /// `preallocate` bytes reserved and reading as zeros.
    fn create(&self, path: &Path, preallocate: u64) -> io::Result<Arc<dyn WritableFile>>;
    /// Opens an existing file for writing (to truncate or seal it).
    fn open_writable(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the directory's exclusive lock, failing at once with
    /// `WouldBlock` if another holder exists.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;
    /// Names the running boot: what the page cache holds belongs to it.
    fn boot_id(&self) -> io::Result<String>;
}

/// An open file the store writes at explicit offsets; shared between the
/// writer and the sync thread, so every method takes `&self`.
pub trait WritableFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes the written data (and the length) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata.
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Starts writing back `len` bytes at `offset` without waiting, so a
    /// large file's final sync has little left to do; best effort, and no
    /// promise of durability.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
    /// Waits until the writeback of `len` bytes at `offset` has finished;
    /// paces a large writer to the disk's speed. Best effort, like
    /// `start_writeback`: the file's own sync still decides durability.
    fn wait_writeback(&self, _offset: u64, _len: u64) {}
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl WritableFile for RealFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn start_writeback(&self, offset: u64, len: u64) {
        self.writeback(offset, len, false);
    }

    fn wait_writeback(&self, offset: u64, len: u64) {
        self.writeback(offset, len, true);
    }
}

impl RealFile {
    /// Starts writing back the range's dirty pages, and with `wait` waits
    /// for them: background writers hand the disk small pieces this way
    /// instead of leaving a large backlog for the WAL's next `fdatasync`.
    #[cfg(target_os = "linux")]
    fn writeback(&self, offset: u64, len: u64, wait: bool) {
        let flags = if wait {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments on an open descriptor.
        unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), offset, len, flags);
        }
    }

    /// Without `sync_file_range` the kernel writes back when it likes:
    /// durability never rested on this, only the pacing of background I/O.
    #[cfg(not(target_os = "linux"))]
    fn writeback(&self, _offset: u64, _len: u64, _wait: bool) {}
}

impl FileSystem for RealFs {
    /// Creates the missing directories and makes each one's entry durable
    /// in its parent: a new data directory whose name a power cut loses
    /// would take everything acknowledged in it along.
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let missing: Vec<&Path> = path.ancestors().take_while(|dir| !dir.exists()).collect();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)?;
        for dir in missing.iter().rev() {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn boot_id(&self) -> io::Result<String> {
        // Linux names each boot; elsewhere no boot can be told from
        // another, and a failed-sync marker stays until removed by hand.
        #[cfg(target_os = "linux")]
        match fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            Ok(id) => Ok(id.trim().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(UNKNOWN_BOOT.to_string()),
            Err(e) => Err(e),
        }
        #[cfg(not(target_os = "linux"))]
        Ok(UNKNOWN_BOOT.to_string())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = File::open(path)?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        File::open(path)?.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn create(&self, path: &Path, preallocate: u64) -> io::Result<Arc<dyn WritableFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        if preallocate > 0 {
            reserve(&file, preallocate)?;
        }
        Ok(Arc::new(RealFile(file)))
    }

    fn open_writable(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    /// `flock` on the file `LOCK` in `dir`.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)?;
        // SAFETY: flock only reads its integer arguments on an open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the data directory is in use by another store (LOCK is held)",
                )
            } else {
                err
            });
        }
        Ok(DirLock::holding(file))
    }
}

/// Reserves `len` bytes with `fallocate` (reading as zeros); file systems
/// without it get a plain length extension.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "preallocation too large"))?;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open for writing.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len)?,
            _ => return Err(err),
        }
    }
    Ok(())
}

/// A plain length extension (reading as zeros) where `fallocate` does not
/// exist; the segment's zero fill then allocates its blocks.
#[cfg(not(target_os = "linux"))]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// An exclusive lock on a data directory: two processes writing one log
/// would interleave records, so the second open fails instead. Released
/// when dropped.
pub struct DirLock {
    _held: Box<dyn Send + Sync>,
}

impl DirLock {
    /// A lock that lasts as long as `held` does.
    pub fn holding(held: impl Send + Sync + 'static) -> DirLock {
        DirLock {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirLock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_files_and_dirs_are_private_and_preallocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        RealFs.create_dir_all(&sub).expect("mkdir");
        let mode = fs::metadata(&sub).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, DIR_MODE);
        let path = sub.join("f");
        let f = RealFs.create(&path, 8192).expect("create");
        f.write_at(b"abc", 10).expect("write");
        f.sync_data().expect("sync");
        let meta = fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, FILE_MODE);
        assert_eq!(meta.len(), 8192);
        let data = RealFs.read(&path).expect("read");
        assert_eq!(&data[10..13], b"abc");
        assert!(data[..10].iter().all(|b| *b == 0));
        assert!(
            RealFs.create(&path, 0).is_err(),
            "create must not replace a file"
        );
    }

    #[test]
    fn second_lock_on_a_directory_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = RealFs.lock_dir(dir.path()).expect("first lock");
        let err = RealFs.lock_dir(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(first);
        RealFs.lock_dir(dir.path()).expect("lock after release");
    }
}
