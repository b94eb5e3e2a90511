//! Test support, compiled only with the `testing` feature: the simulated
//! disk, the torture model, the fuzz entry points, the crash points and the
//! file-system seam they plug into, plus the on-disk format for tests that
//! craft damaged files. Not part of the library's API for applications.

pub mod fuzzing;
pub mod recording;
pub mod sim_fs;
pub mod torture;

pub use crate::crash::{CRASH_POINTS, LOG_CRASH_POINTS};
pub use crate::rawlog::open_log_with_fs;
pub use crate::store::open_with_fs;
pub use recording::{open_recording, open_recording_with_fs, Recorded};

/// A key-value state as the tests' oracles hold it: each key's value and
/// deadline, expired keys included (see `State::dump`).
pub type Keyspace = std::collections::BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Applies one record's operations to an oracle's state, as the store does.
pub fn apply_to(state: &mut Keyspace, entry: &crate::Entry) {
    use crate::Op;
    for op in entry.ops() {
        match op {
            Op::Set { key, value } => {
                state.insert(key.clone(), (value.clone(), None));
            }
            Op::SetExpiring {
                key,
                value,
                expires_at,
            } => {
                state.insert(key.clone(), (value.clone(), Some(*expires_at)));
            }
            Op::Delete { key } => {
                state.remove(key);
            }
            Op::Clear => state.clear(),
        }
    }
}

/// The keys of `state` a read sees at `now` (milliseconds since the Unix
/// epoch): those not past their deadline.
pub fn visible(state: &Keyspace, now: u64) -> Keyspace {
    state
        .iter()
        .filter(|(_, (_, at))| at.is_none_or(|at| at > now))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The file-system seam every file operation of the store goes through.
pub mod fs {
    pub use crate::fs::{DirLock, FileSystem, RealFs, WritableFile};
}

/// The on-disk format (`FORMAT.md`), for tests that write or damage files.
pub mod format {
    pub use crate::format::{all_zero, codec, manifest, record, segment, snapshot};
}
