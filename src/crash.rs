//! Named crash points: places between two steps of a multi-step file
//! operation (write, sync, rename, list, remove) where a test makes the
//! process die, to prove that a crash at that step leaves a directory that
//! opens to exactly the acknowledged state.
//!
//! Compiled in only with the `crash-points` feature (the tests enable it);
//! otherwise every point is an empty inline function. Armed by
//! `CONCORDKV_CRASH_POINT=<name>`, optionally `CONCORDKV_CRASH_AFTER=<n>` to
//! die at the n-th time the point is reached; the process then aborts, like
//! a `kill -9` at that instant.

/// Every crash point, by name.
#[cfg(feature = "testing")]
pub const CRASH_POINTS: &[&str] = &[
    "rotate.after_create",
    "rotate.after_list",
    "rotate.before_header",
    "manifest.after_temp_sync",
    "manifest.after_rename",
    "snapshot.after_temp_sync",
    "snapshot.after_rename",
    "snapshot.after_manifest",
    "compaction.after_build",
];

/// The crash points only a [`Log`](crate::Log) reaches.
#[cfg(feature = "testing")]
pub const LOG_CRASH_POINTS: &[&str] = &[
    "purge.after_manifest",
    "truncate.after_seal",
    "truncate.after_manifest",
];

#[cfg(feature = "crash-points")]
pub(crate) fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let point = std::env::var("CONCORDKV_CRASH_POINT").ok()?;
        let after = std::env::var("CONCORDKV_CRASH_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Some((point, after))
    });
    if let Some((point, after)) = armed {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *after {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}

/// A named place where a test makes the process wait: armed by
/// `CONCORDKV_PAUSE_POINT=<name>:<milliseconds>`, it sleeps that long each
/// time it is reached, so a test can act while a thread is held there.
#[cfg(feature = "crash-points")]
pub(crate) fn pause_point(name: &str) {
    use std::sync::OnceLock;

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var("CONCORDKV_PAUSE_POINT").ok()?;
        let (point, ms) = value.rsplit_once(':')?;
        Some((point.to_string(), ms.parse().ok()?))
    });
    if let Some((point, ms)) = armed {
        if point == name {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn pause_point(_name: &str) {}
