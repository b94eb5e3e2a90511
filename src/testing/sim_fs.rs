//! A simulated disk for crash-consistency testing: an in-memory
//! [`FileSystem`] that remembers which bytes are durable, loses the rest on
//! a simulated power cut, and fails chosen calls with `EIO` or `ENOSPC`.
//!
//! A `kill -9` only proves that data reached the page cache; a power cut
//! also loses what was never synced. The model follows Linux:
//! - a write or length change is durable once a later `fdatasync`/`fsync`
//!   of the same file succeeds;
//! - a creation, rename or removal is durable once its directory is synced;
//! - at a power cut, each file keeps its durable content plus, in order, a
//!   random number of its unsynced changes, the last of which may be torn
//!   at a random byte; each directory keeps a random prefix of its unsynced
//!   changes;
//! - or, for about half the files at a cut, writeback is out of order, as a
//!   disk's queue and the page cache are: each dirty page inside the
//!   file's durable length reaches the disk or not on its own, whatever
//!   order it was written in, and one may be torn by 512-byte sector (some
//!   sectors new, others old; a sector itself is atomic). Pages past the
//!   durable length follow the in-order rule, as the file's size does: a
//!   file system that extends a file (ext4's `data=ordered`) writes the new
//!   data before the size that exposes it;
//! - a failed sync drops the changes it was to make durable, while reads
//!   still return them: a later sync that succeeds has *not* saved them
//!   (PostgreSQL's fsyncgate), so a store must never trust a retry. As in
//!   the page cache, loss is by 4 KiB page: a later write into a lost page
//!   dirties it again and carries the whole page's current content.
//!
//! A *slow sync* ([`SimFs::slow_syncs`]) makes every `fdatasync`/`fsync`
//! take a set time without holding the disk: writes go on meanwhile, and the
//! sync saves only what was written before it began, as on Linux. It is how
//! a test makes a writer run ahead of its syncs.
//!
//! After the cut every call fails with `EIO`, as on a machine that lost
//! power; [`SimFs::reboot`] gives the disk as it is found at the next boot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fs::{DirLock, FileSystem, WritableFile};

/// The kinds of call a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    /// Reading a file or listing a directory.
    Read,
    /// Creating a file or a directory, or taking a lock.
    Create,
    /// Writing into a file.
    Write,
    /// Changing a file's length.
    SetLen,
    /// `fdatasync`.
    SyncData,
    /// `fsync`.
    SyncAll,
    /// `fsync` of a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
}

/// An injected error: the `nth` matching call from now on (1 = the next)
/// fails with `errno`, and so does every later one if `sticky`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The kind of call that fails.
    pub call: Call,
    /// Which matching call fails first (1 = the next).
    pub nth: u64,
    /// The OS error it fails with (`libc::EIO`, `libc::ENOSPC`, ...).
    pub errno: i32,
    /// Only calls on paths containing this text match (`None`: every path).
    pub path_contains: Option<String>,
    /// Every later matching call fails too (a disk that stays broken).
    pub sticky: bool,
}

/// What a simulated disk did, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// File-system calls made.
    pub calls: u64,
    /// Calls failed by an injected fault, by kind of call and errno.
    pub faults: BTreeMap<(Call, i32), u64>,
    /// Syncs slowed by [`SimFs::slow_syncs`].
    pub slow_syncs: u64,
}

/// What a power cut did to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced file changes lost.
    pub changes_lost: u64,
    /// Unsynced file changes that reached the disk anyway.
    pub changes_kept: u64,
    /// Writes torn part-way.
    pub torn_writes: u64,
    /// Unsynced directory changes lost.
    pub dir_changes_lost: u64,
    /// Pages that reached the disk although a page written before them
    /// (in the same file, since its last sync) did not.
    pub pages_out_of_order: u64,
    /// Pages that reached the disk only in part, some 512-byte sectors new
    /// and others old.
    pub sector_tears: u64,
}

#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Change::Write { offset, bytes } => {
                let start = *offset as usize;
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
            }
            Change::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

/// The page cache's unit: what a failed sync loses, and what a write dirties.
const PAGE: u64 = 4096;
/// The device's atomic unit: a torn page is torn at sector boundaries.
const SECTOR: usize = 512;

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<Change>,
    /// Changes ever taken off the front of `unsynced` (synced or dropped),
    /// so a slow sync can tell which changes came after it began.
    retired: u64,
    /// Pages whose changes a failed sync dropped: clean in the cache, old on disk.
    lost_pages: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
enum DirChange {
    Link(PathBuf, u64),
    Unlink(PathBuf),
}

impl DirChange {
    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirChange::Link(path, inode) => {
                names.insert(path.clone(), *inode);
            }
            DirChange::Unlink(path) => {
                names.remove(path);
            }
        }
    }

    fn dir(&self) -> &Path {
        let path = match self {
            DirChange::Link(path, _) | DirChange::Unlink(path) => path,
        };
        path.parent().unwrap_or(Path::new(""))
    }
}

#[derive(Debug, Clone)]
struct Disk {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// The namespace the running system sees.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace that survives a power cut.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Namespace changes not yet made durable by a directory sync, oldest first.
    unsynced_dir: Vec<DirChange>,
    dirs: HashSet<PathBuf>,
    locked: HashSet<PathBuf>,
    faults: Vec<Fault>,
    /// Power is cut when `stats.calls` reaches this.
    cut_at_call: Option<u64>,
    /// How long each file sync takes (`None`: no time).
    sync_delay: Option<Duration>,
    /// Whether a cut may write dirty pages back out of order (see the
    /// module comment); kept across reboots.
    reorder_writeback: bool,
    /// The disk as found after the cut.
    after_cut: Option<(Box<Disk>, CutReport)>,
    stats: SimStats,
    rng: StdRng,
    /// Counts the boots: a power cut starts a new one.
    boot: u64,
}

/// The simulated disk; clones share it.
#[derive(Debug, Clone)]
pub struct SimFs {
    disk: Arc<Mutex<Disk>>,
}

fn power_lost() -> io::Error {
    io::Error::other("power lost (simulated)")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file (simulated)", path.display()),
    )
}

impl SimFs {
    /// An empty disk; `seed` drives every random choice of its power cuts.
    pub fn new(seed: u64) -> SimFs {
        SimFs::from_disk(Disk {
            inodes: HashMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            unsynced_dir: Vec::new(),
            dirs: HashSet::new(),
            locked: HashSet::new(),
            faults: Vec::new(),
            cut_at_call: None,
            sync_delay: None,
            reorder_writeback: true,
            after_cut: None,
            stats: SimStats::default(),
            rng: StdRng::seed_from_u64(seed),
            boot: 0,
        })
    }

    fn from_disk(disk: Disk) -> SimFs {
        SimFs {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.disk().faults.push(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.disk().faults.clear();
    }

    /// Makes every later file sync (`fdatasync` and `fsync`) take `delay`
    /// (`None`: none), so that writes go on while a sync is in flight.
    pub fn slow_syncs(&self, delay: Option<Duration>) {
        self.disk().sync_delay = delay;
    }

    /// Whether power cuts may write dirty pages back out of order and tear
    /// them by sector (the default), or keep only in-order prefixes; off,
    /// a test can tell whether a failure needs reordering.
    pub fn reorder_writeback(&self, enabled: bool) {
        self.disk().reorder_writeback = enabled;
    }

    /// An independent copy of the disk as it is now: what happens to one
    /// no longer shows on the other.
    pub fn duplicate(&self) -> SimFs {
        SimFs::from_disk(self.disk().clone())
    }

    /// Media damage: overwrites `bytes` at `offset` of the file at `path`,
    /// in what reads see and in what survives a cut alike, as a bad sector
    /// or a flipped bit on the device would (no call is counted).
    pub fn damage(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        let inode = disk.inode_of(path)?;
        let file = disk.file(inode)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len());
        if end > file.data.len() || end > file.durable.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "damage past the end of the file (simulated)",
            ));
        }
        file.data[start..end].copy_from_slice(bytes);
        file.durable[start..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Cuts the power when the `calls`-th call from now is made (that call
    /// and every later one fail).
    pub fn cut_power_after(&self, calls: u64) {
        let mut disk = self.disk();
        disk.cut_at_call = Some(disk.stats.calls + calls.max(1));
    }

    /// Cuts the power now.
    pub fn cut_power(&self) {
        self.disk().cut();
    }

    /// Whether the power has been cut.
    pub fn is_dead(&self) -> bool {
        self.disk().after_cut.is_some()
    }

    /// Calls made and faults injected so far.
    pub fn stats(&self) -> SimStats {
        self.disk().stats.clone()
    }

    /// The disk as the next boot finds it (cutting the power first if it is
    /// still on), with what the cut did; `seed` drives the next cut.
    pub fn reboot(&self, seed: u64) -> (SimFs, CutReport) {
        let mut disk = self.disk();
        disk.cut();
        let (mut image, report) = disk
            .after_cut
            .take()
            .unwrap_or_else(|| unreachable!("cut() always leaves an image"));
        image.rng = StdRng::seed_from_u64(seed);
        (SimFs::from_disk(*image), report)
    }
}

/// Redoes, page by page, what a cut left of the dirty pages inside a
/// file's durable length (`data` holds the in-order outcome): each such page
/// ends up old (as last synced), new (as the page cache holds it), or torn
/// by sector, independently of the order the pages were written in. Bytes
/// past the durable length keep the in-order outcome, and synced bytes that
/// no unsynced change touched are never altered.
fn writeback_out_of_order(file: &Inode, data: &mut [u8], rng: &mut StdRng, report: &mut CutReport) {
    let bound = file.durable.len().min(data.len()).min(file.data.len());
    // Dirty pages in the order they were first written since the last sync.
    let mut order: Vec<u64> = Vec::new();
    for change in &file.unsynced {
        if let Change::Write { offset, bytes } = change {
            if bytes.is_empty() {
                continue;
            }
            for page in offset / PAGE..=(offset + bytes.len() as u64 - 1) / PAGE {
                if !order.contains(&page) {
                    order.push(page);
                }
            }
        }
    }
    let mut earlier_lost = false;
    for page in order {
        let start = (page * PAGE) as usize;
        if start >= bound {
            continue;
        }
        let end = (start + PAGE as usize).min(bound);
        let old = &file.durable[start..end];
        let new = &file.data[start..end];
        if old == new {
            continue;
        }
        let outcome = rng.random_range(0..10);
        let mut reached = false;
        if outcome < 4 {
            data[start..end].copy_from_slice(old);
        } else if outcome < 8 {
            data[start..end].copy_from_slice(new);
            reached = true;
        } else {
            let (mut some_old, mut some_new) = (false, false);
            for sector in (0..end - start).step_by(SECTOR) {
                let range = sector..(sector + SECTOR).min(end - start);
                if old[range.clone()] == new[range.clone()] {
                    data[start + range.start..start + range.end].copy_from_slice(&new[range]);
                } else if rng.random_bool(0.5) {
                    data[start + range.start..start + range.end].copy_from_slice(&new[range]);
                    some_new = true;
                } else {
                    data[start + range.start..start + range.end].copy_from_slice(&old[range]);
                    some_old = true;
                }
            }
            if some_old && some_new {
                report.sector_tears += 1;
            }
            reached = some_new;
        }
        if reached && earlier_lost {
            report.pages_out_of_order += 1;
        }
        if !reached {
            earlier_lost = true;
        }
    }
}

impl Disk {
    /// Counts a call, cuts the power if it is due, and fails the call if
    /// the power is off or a fault matches.
    fn enter(&mut self, call: Call, path: &Path) -> io::Result<()> {
        self.stats.calls += 1;
        if self.cut_at_call.is_some_and(|at| self.stats.calls >= at) {
            self.cut();
        }
        if self.after_cut.is_some() {
            return Err(power_lost());
        }
        let text = path.to_string_lossy();
        let mut fired = None;
        for (index, fault) in self.faults.iter_mut().enumerate() {
            let matches = fault.call == call
                && fault
                    .path_contains
                    .as_deref()
                    .is_none_or(|part| text.contains(part));
            if !matches {
                continue;
            }
            if fault.nth > 1 {
                fault.nth -= 1;
                continue;
            }
            fired = Some(index);
            break;
        }
        let Some(index) = fired else {
            return Ok(());
        };
        let errno = self.faults[index].errno;
        if !self.faults[index].sticky {
            self.faults.remove(index);
        }
        *self.stats.faults.entry((call, errno)).or_default() += 1;
        Err(io::Error::from_raw_os_error(errno))
    }

    /// Takes the image a power cut leaves, once; later calls keep the first.
    fn cut(&mut self) {
        if self.after_cut.is_some() {
            return;
        }
        let mut report = CutReport::default();
        let mut names = self.durable_names.clone();
        let keep_dir = self.rng.random_range(0..=self.unsynced_dir.len());
        for change in &self.unsynced_dir[..keep_dir] {
            change.apply(&mut names);
        }
        report.dir_changes_lost = (self.unsynced_dir.len() - keep_dir) as u64;
        let mut inodes = HashMap::new();
        for inode in names.values() {
            if inodes.contains_key(inode) {
                continue;
            }
            let Some(file) = self.inodes.get(inode) else {
                continue;
            };
            let mut data = file.durable.clone();
            let keep = self.rng.random_range(0..=file.unsynced.len());
            for change in &file.unsynced[..keep] {
                change.apply(&mut data);
            }
            report.changes_kept += keep as u64;
            report.changes_lost += (file.unsynced.len() - keep) as u64;
            if let Some(Change::Write { offset, bytes }) = file.unsynced.get(keep) {
                if !bytes.is_empty() && self.rng.random_bool(0.5) {
                    let torn = self.rng.random_range(0..bytes.len());
                    Change::Write {
                        offset: *offset,
                        bytes: bytes[..torn].to_vec(),
                    }
                    .apply(&mut data);
                    report.torn_writes += 1;
                }
            }
            if self.reorder_writeback && self.rng.random_bool(0.5) {
                writeback_out_of_order(file, &mut data, &mut self.rng, &mut report);
            }
            inodes.insert(
                *inode,
                Inode {
                    durable: data.clone(),
                    data,
                    unsynced: Vec::new(),
                    retired: 0,
                    lost_pages: BTreeSet::new(),
                },
            );
        }
        let image = Disk {
            inodes,
            next_inode: self.next_inode,
            names: names.clone(),
            durable_names: names,
            unsynced_dir: Vec::new(),
            dirs: self.dirs.clone(),
            locked: HashSet::new(),
            faults: Vec::new(),
            cut_at_call: None,
            sync_delay: None,
            reorder_writeback: self.reorder_writeback,
            after_cut: None,
            stats: SimStats::default(),
            rng: StdRng::seed_from_u64(0),
            boot: self.boot + 1,
        };
        self.after_cut = Some((Box::new(image), report));
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn file(&mut self, inode: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stale file handle (simulated)"))
    }

    fn change(&mut self, inode: u64, change: Change) -> io::Result<()> {
        let file = self.file(inode)?;
        change.apply(&mut file.data);
        let change = match change {
            Change::Write { offset, bytes } if !bytes.is_empty() => {
                let pages = offset / PAGE..=(offset + bytes.len() as u64 - 1) / PAGE;
                if file.lost_pages.range(pages.clone()).next().is_some() {
                    // A lost page written again goes to disk whole.
                    for page in pages.clone() {
                        file.lost_pages.remove(&page);
                    }
                    let start = *pages.start() * PAGE;
                    let end = ((*pages.end() + 1) * PAGE).min(file.data.len() as u64);
                    Change::Write {
                        offset: start,
                        bytes: file.data[start as usize..end as usize].to_vec(),
                    }
                } else {
                    Change::Write { offset, bytes }
                }
            }
            other => other,
        };
        file.unsynced.push(change);
        Ok(())
    }

    /// Makes the oldest `count` unsynced changes of a file durable (all of
    /// them if `None`).
    fn sync(&mut self, inode: u64, count: Option<usize>) -> io::Result<()> {
        let file = self.file(inode)?;
        let count = count.unwrap_or(usize::MAX).min(file.unsynced.len());
        file.retired += count as u64;
        for change in file.unsynced.drain(..count) {
            change.apply(&mut file.durable);
        }
        Ok(())
    }

    /// A failed sync: the changes it was to save are dropped from the
    /// durability pipeline but stay visible to reads.
    fn lose_unsynced(&mut self, inode: u64) {
        if let Some(file) = self.inodes.get_mut(&inode) {
            file.retired += file.unsynced.len() as u64;
            for change in std::mem::take(&mut file.unsynced) {
                if let Change::Write { offset, bytes } = change {
                    if !bytes.is_empty() {
                        let last = (offset + bytes.len() as u64 - 1) / PAGE;
                        file.lost_pages.extend(offset / PAGE..=last);
                    }
                }
            }
        }
    }

    fn link(&mut self, path: &Path, inode: u64) {
        self.names.insert(path.to_path_buf(), inode);
        self.unsynced_dir
            .push(DirChange::Link(path.to_path_buf(), inode));
    }

    fn unlink(&mut self, path: &Path) {
        self.names.remove(path);
        self.unsynced_dir
            .push(DirChange::Unlink(path.to_path_buf()));
    }
}

struct SimFile {
    disk: Arc<Mutex<Disk>>,
    inode: u64,
    path: PathBuf,
}

impl SimFile {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A file sync. A slow one waits without holding the disk, then saves
    /// only the changes made before it began: writes during it stay unsynced.
    fn sync(&self, call: Call) -> io::Result<()> {
        let (delay, covered) = {
            let mut disk = self.disk();
            if let Err(e) = disk.enter(call, &self.path) {
                disk.lose_unsynced(self.inode);
                return Err(e);
            }
            let Some(delay) = disk.sync_delay else {
                return disk.sync(self.inode, None);
            };
            disk.stats.slow_syncs += 1;
            let file = disk.file(self.inode)?;
            (delay, file.retired + file.unsynced.len() as u64)
        };
        std::thread::sleep(delay);
        let mut disk = self.disk();
        if disk.after_cut.is_some() {
            return Err(power_lost());
        }
        let retired = disk.file(self.inode)?.retired;
        let count = usize::try_from(covered.saturating_sub(retired)).unwrap_or(usize::MAX);
        disk.sync(self.inode, Some(count))
    }
}

impl WritableFile for SimFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::Write, &self.path)?;
        disk.change(
            self.inode,
            Change::Write {
                offset,
                bytes: buf.to_vec(),
            },
        )
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(Call::SyncData)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(Call::SyncAll)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::SetLen, &self.path)?;
        disk.change(self.inode, Change::SetLen(len))
    }
}

/// Holds a simulated directory lock until dropped.
struct SimLock {
    disk: Arc<Mutex<Disk>>,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked
            .remove(&self.dir);
    }
}

impl FileSystem for SimFs {
    fn boot_id(&self) -> io::Result<String> {
        Ok(format!("simulated boot {}", self.disk().boot))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::Create, path)?;
        for dir in path.ancestors() {
            disk.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        if !disk.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .cloned()
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        let inode = disk.inode_of(path)?;
        Ok(disk.file(inode)?.data.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        let inode = disk.inode_of(path)?;
        let data = &disk.file(inode)?.data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        let inode = disk.inode_of(path)?;
        let data = &disk.file(inode)?.data;
        Ok(data[..len.min(data.len())].to_vec())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        let inode = disk.inode_of(path)?;
        Ok(disk.file(inode)?.data.len() as u64)
    }

    fn create(&self, path: &Path, preallocate: u64) -> io::Result<Arc<dyn WritableFile>> {
        let mut disk = self.disk();
        disk.enter(Call::Create, path)?;
        if disk.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: file exists (simulated)", path.display()),
            ));
        }
        if !path.parent().is_some_and(|dir| disk.dirs.contains(dir)) {
            return Err(not_found(path));
        }
        let inode = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(inode, Inode::default());
        disk.link(path, inode);
        if preallocate > 0 {
            disk.change(inode, Change::SetLen(preallocate))?;
        }
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            inode,
            path: path.to_path_buf(),
        }))
    }

    fn open_writable(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let mut disk = self.disk();
        disk.enter(Call::Read, path)?;
        let inode = disk.inode_of(path)?;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            inode,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::Rename, to)?;
        let inode = disk.inode_of(from)?;
        disk.unlink(from);
        disk.link(to, inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::Remove, path)?;
        disk.inode_of(path)?;
        disk.unlink(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk();
        disk.enter(Call::SyncDir, path)?;
        let pending = std::mem::take(&mut disk.unsynced_dir);
        let (here, elsewhere): (Vec<DirChange>, Vec<DirChange>) =
            pending.into_iter().partition(|c| c.dir() == path);
        for change in &here {
            change.apply(&mut disk.durable_names);
        }
        disk.unsynced_dir = elsewhere;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut disk = self.disk();
        disk.enter(Call::Create, dir)?;
        if !disk.locked.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the data directory is in use by another store (LOCK is held)",
            ));
        }
        Ok(DirLock::holding(SimLock {
            disk: Arc::clone(&self.disk),
            dir: dir.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/sim")
    }

    fn setup() -> SimFs {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).expect("mkdir");
        fs
    }

    #[test]
    fn synced_data_and_names_survive_a_cut_and_unsynced_ones_may_not() {
        for seed in 0..50 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).expect("mkdir");
            let path = dir().join("a");
            let file = fs.create(&path, 0).expect("create");
            file.write_at(b"durable", 0).expect("write");
            file.sync_data().expect("sync");
            fs.sync_dir(&dir()).expect("sync dir");
            file.write_at(b"-volatile", 7).expect("write");
            let (after, _) = fs.reboot(seed);
            let data = after.read(&path).expect("the synced file exists");
            assert!(data.starts_with(b"durable"), "{data:?}");
            assert!(b"durable-volatile".starts_with(&data), "{data:?}");
        }
    }

    #[test]
    fn an_unsynced_creation_can_be_lost() {
        let lost = (0..50).any(|seed| {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).expect("mkdir");
            let file = fs.create(&dir().join("a"), 0).expect("create");
            file.write_at(b"x", 0).expect("write");
            file.sync_data().expect("sync");
            let (after, _) = fs.reboot(seed);
            after.read(&dir().join("a")).is_err()
        });
        assert!(
            lost,
            "a creation never made durable by a directory sync must be losable"
        );
    }

    /// A durably created file `a` holding `data` whose first sync fails with EIO.
    fn failed_first_sync(fs: &SimFs, data: &[u8]) -> Arc<dyn WritableFile> {
        let file = fs.create(&dir().join("a"), 0).expect("create");
        fs.sync_dir(&dir()).expect("sync dir");
        file.write_at(data, 0).expect("write");
        fs.inject(Fault {
            call: Call::SyncData,
            nth: 1,
            errno: libc::EIO,
            path_contains: None,
            sticky: false,
        });
        assert_eq!(
            file.sync_data().unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        file
    }

    #[test]
    fn a_failed_sync_loses_its_data_even_if_a_later_sync_succeeds() {
        let fs = setup();
        let path = dir().join("a");
        let file = failed_first_sync(&fs, b"lost");
        assert_eq!(fs.read(&path).expect("read"), b"lost", "reads still see it");
        file.sync_data().expect("the retry succeeds");
        let (after, _) = fs.reboot(0);
        assert_eq!(
            after.read(&path).expect("read"),
            b"",
            "but nothing was saved"
        );
    }

    #[test]
    fn a_lost_page_written_again_reaches_the_disk_whole() {
        let fs = setup();
        let path = dir().join("a");
        let file = failed_first_sync(&fs, b"first");
        file.write_at(b"-second", 5)
            .expect("write into the lost page");
        file.sync_data().expect("sync");
        let (after, _) = fs.reboot(0);
        assert_eq!(after.read(&path).expect("read"), b"first-second");
    }

    #[test]
    fn faults_hit_the_nth_matching_call_and_power_cuts_fail_everything_after() {
        let fs = setup();
        let file = fs.create(&dir().join("x.snap"), 0).expect("create");
        fs.inject(Fault {
            call: Call::Write,
            nth: 2,
            errno: libc::ENOSPC,
            path_contains: Some(".snap".into()),
            sticky: false,
        });
        file.write_at(b"1", 0).expect("first write");
        let err = file.write_at(b"2", 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        file.write_at(b"3", 1).expect("not sticky");
        assert_eq!(
            fs.stats().faults.get(&(Call::Write, libc::ENOSPC)),
            Some(&1)
        );
        fs.cut_power_after(2);
        file.write_at(b"4", 2).expect("before the cut");
        assert!(file.write_at(b"5", 3).is_err());
        assert!(fs.is_dead());
        assert!(fs.read(&dir().join("x.snap")).is_err());
    }

    #[test]
    fn renames_become_durable_with_the_directory_sync() {
        let fs = setup();
        let file = fs.create(&dir().join("tmp"), 0).expect("create");
        file.write_at(b"new", 0).expect("write");
        file.sync_all().expect("sync");
        fs.rename(&dir().join("tmp"), &dir().join("final"))
            .expect("rename");
        fs.sync_dir(&dir()).expect("sync dir");
        let (after, _) = fs.reboot(3);
        assert_eq!(after.read(&dir().join("final")).expect("read"), b"new");
        assert!(after.read(&dir().join("tmp")).is_err());
    }
    /// A durably created file of `pages` pages of `fill`, synced.
    fn synced_pages(fs: &SimFs, pages: usize, fill: u8) -> Arc<dyn WritableFile> {
        let file = fs.create(&dir().join("a"), 0).expect("create");
        file.write_at(&vec![fill; pages * PAGE as usize], 0)
            .expect("write");
        file.sync_data().expect("sync");
        fs.sync_dir(&dir()).expect("sync dir");
        file
    }

    #[test]
    fn pages_can_reach_the_disk_out_of_order_and_synced_bytes_never_change() {
        let mut out_of_order = false;
        for seed in 0..200 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).expect("mkdir");
            let file = synced_pages(&fs, 4, 1);
            // Pages 0..3 rewritten in order; page 3 keeps its synced bytes.
            for page in 0..3u8 {
                file.write_at(&vec![page + 10; PAGE as usize], u64::from(page) * PAGE)
                    .expect("write");
            }
            let (after, report) = fs.reboot(seed);
            let data = after.read(&dir().join("a")).expect("read");
            assert_eq!(data.len(), 4 * PAGE as usize);
            let page = |n: usize| &data[n * PAGE as usize..(n + 1) * PAGE as usize];
            assert!(page(3).iter().all(|b| *b == 1), "synced bytes changed");
            for n in 0..3 {
                assert!(
                    page(n).iter().all(|b| *b == 1 || *b == n as u8 + 10),
                    "page {n} holds bytes never written there"
                );
            }
            let reached = |n: usize| page(n).iter().any(|b| *b != 1);
            if (0..3).any(|n| reached(n) && (0..n).any(|m| !reached(m))) {
                assert!(report.pages_out_of_order > 0, "{report:?}");
                out_of_order = true;
            }
        }
        assert!(
            out_of_order,
            "a later page must sometimes reach the disk before an earlier one"
        );
    }

    #[test]
    fn a_page_can_be_torn_by_sector_and_each_sector_is_whole() {
        let mut torn = false;
        for seed in 0..200 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).expect("mkdir");
            let file = synced_pages(&fs, 1, 1);
            file.write_at(&[2; PAGE as usize], 0).expect("write");
            let (after, report) = fs.reboot(seed);
            if report.sector_tears == 0 {
                continue;
            }
            let data = after.read(&dir().join("a")).expect("read");
            let sectors: Vec<u8> = data
                .chunks(SECTOR)
                .map(|sector| {
                    assert!(
                        sector.iter().all(|b| *b == sector[0]),
                        "a sector of a sector-torn page is mixed"
                    );
                    sector[0]
                })
                .collect();
            assert!(sectors.contains(&1) && sectors.contains(&2), "{sectors:?}");
            torn = true;
        }
        assert!(torn, "no cut ever tore a page by sector");
    }

    #[test]
    fn a_slow_sync_lets_writes_go_on_and_saves_only_what_came_before_it() {
        let mut later_write_lost = false;
        for seed in 0..20 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).expect("mkdir");
            let file = synced_pages(&fs, 2, 0);
            fs.slow_syncs(Some(Duration::from_millis(40)));
            file.write_at(b"before", 0).expect("write");
            let syncing = {
                let file = Arc::clone(&file);
                std::thread::spawn(move || file.sync_data())
            };
            std::thread::sleep(Duration::from_millis(10));
            let started = std::time::Instant::now();
            file.write_at(b"during", PAGE).expect("write");
            assert!(
                started.elapsed() < Duration::from_millis(30),
                "a write waited for the sync"
            );
            syncing
                .join()
                .expect("the sync thread")
                .expect("the slow sync succeeds");
            assert_eq!(fs.stats().slow_syncs, 1);
            let (after, _) = fs.reboot(seed);
            let data = after.read(&dir().join("a")).expect("read");
            assert_eq!(&data[..6], b"before", "the sync covered it");
            later_write_lost |= data[PAGE as usize] == 0;
        }
        assert!(
            later_write_lost,
            "a write made while the sync ran must not always be saved by it"
        );
    }
    #[test]
    fn media_damage_hits_one_copy_durably() {
        let fs = setup();
        let file = synced_pages(&fs, 1, 7);
        drop(file);
        let copy = fs.duplicate();
        copy.damage(&dir().join("a"), 10, &[0, 0]).expect("damage");
        assert!(copy.damage(&dir().join("a"), PAGE - 1, &[0, 0]).is_err());
        assert_eq!(
            fs.read(&dir().join("a")).expect("read")[10],
            7,
            "the original is untouched"
        );
        let (after, _) = copy.reboot(0);
        let data = after.read(&dir().join("a")).expect("read");
        assert_eq!(&data[9..13], &[7, 0, 0, 7], "the damage is on the disk");
    }
}
