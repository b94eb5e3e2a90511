//! Opening a store while keeping what recovery replayed, for the tests'
//! oracles: the snapshots' state and every record after it, as recovery
//! streamed them. Every such open also checks the store's state against
//! them: the state recovery built must be exactly the snapshots with the
//! records applied.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use crate::entry::{Record, Seq};
use crate::error::Result;
use crate::fs::{FileSystem, RealFs};
use crate::lifecycle::snapshot::load_base;
use crate::log::recovery::Recovery;
use crate::testing::{apply_to, visible, Keyspace};
use crate::{Config, Store};

/// What recovery replayed, kept whole (which the store itself never does).
#[derive(Debug)]
pub struct Recorded {
    /// The open's own report.
    pub recovery: Recovery,
    /// Every key at `base_seq`, from the snapshots, with its deadline.
    pub base: Keyspace,
    /// Every record replayed after the snapshots, in sequence order.
    pub records: Vec<Record>,
}

impl Deref for Recorded {
    type Target = Recovery;

    fn deref(&self) -> &Recovery {
        &self.recovery
    }
}

impl Recorded {
    /// The key-value state recovery describes: `base` with `records`
    /// applied, each key with its deadline, expired keys included.
    pub fn keyspace(&self) -> Keyspace {
        let mut state = self.base.clone();
        for record in &self.records {
            apply_to(&mut state, &record.entry);
        }
        state
    }

    /// The keys a read sees now, and their values.
    pub fn state(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        visible(&self.keyspace(), crate::state::now_ms())
            .into_iter()
            .map(|(key, (value, _))| (key, value))
            .collect()
    }
}

/// Opens the store on the real disk, recording what recovery replayed.
pub async fn open_recording(config: Config) -> Result<(Store, Recorded)> {
    open_recording_with_fs(config, Arc::new(RealFs)).await
}

/// As [`open_recording`], through another file system.
///
/// # Panics
///
/// If the store's state differs from the snapshots plus the replayed
/// records: recovery built the wrong state.
pub async fn open_recording_with_fs(
    config: Config,
    fs: Arc<dyn FileSystem>,
) -> Result<(Store, Recorded)> {
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replayed);
    let (store, recovery) = Store::open_with_fs(config, Arc::clone(&fs), move |record| {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record.clone());
    })
    .await?;
    let records = std::mem::take(&mut *replayed.lock().unwrap_or_else(PoisonError::into_inner));
    // The open changes no snapshot, so the chain it listed reads the same.
    let base = match load_base(fs.as_ref(), store.config(), &store.snapshots()) {
        Ok(base) => base,
        Err(e) => {
            let _ = store.shutdown().await;
            return Err(e);
        }
    };
    let recorded = Recorded {
        recovery,
        base: base
            .state
            .pairs()
            .map(|(k, v, at)| (k.to_vec(), (v.to_vec(), at)))
            .collect(),
        records,
    };
    check_state(&store, &recorded);
    Ok((store, recorded))
}

fn check_state(store: &Store, recorded: &Recorded) {
    let expected = recorded.keyspace();
    let state = store.state();
    let found = state.dump();
    if found != expected {
        let differing = expected
            .iter()
            .find(|(k, v)| found.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .or_else(|| found.keys().find(|k| !expected.contains_key(*k)).cloned());
        panic!(
            "recovery built a state of {} keys, the snapshots plus the replayed records hold {}; first differing key {:?}",
            found.len(),
            expected.len(),
            differing.map(|k| String::from_utf8_lossy(&k).into_owned())
        );
    }
    let last: Seq = recorded.records.last().map_or(recorded.base_seq, |r| r.seq);
    assert!(
        state.last_seq() >= last && state.last_seq() == recorded.last_seq,
        "the state ends at {}, recovery at {} (last record {last})",
        state.last_seq(),
        recorded.last_seq
    );
}
