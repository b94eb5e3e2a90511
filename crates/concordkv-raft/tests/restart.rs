//! openraft's suite cases again, each followed by a close and a reopen
//! from disk: everything openraft can observe (log state, vote, entries,
//! applied state, current snapshot, the keys) must come back the same.

use std::fmt::Debug;
use std::future::Future;
use std::path::Path;

use concordkv::{Config, SyncMode};
use concordkv_raft::{open, LogStore, StateMachine, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, RaftLogReader, StorageError, StorageIOError};
use tempfile::TempDir;

type Ls = LogStore<TypeConfig>;
type Sm = StateMachine<TypeConfig>;
type Cases = Suite<TypeConfig, Ls, Sm, Unused, ()>;

/// The suite's type needs a builder; these cases are run by hand.
struct Unused;

impl StoreBuilder<TypeConfig, Ls, Sm, ()> for Unused {
    async fn build(&self) -> Result<((), Ls, Sm), StorageError<u64>> {
        Err(StorageIOError::write(AnyError::error("not used")).into())
    }
}

async fn open_node(dir: &Path) -> (Ls, Sm) {
    open::<TypeConfig>(Config::with_data_dir(dir))
        .await
        .expect("the node opens")
}

/// What openraft (and a reader of the keys) sees of a node.
#[derive(Debug, PartialEq)]
struct Observed {
    log_state: String,
    vote: String,
    entries: String,
    applied: String,
    snapshot: String,
    keys: Vec<(Vec<u8>, Vec<u8>)>,
}

async fn observe(ls: &mut Ls, sm: &mut Sm) -> Observed {
    Observed {
        log_state: format!("{:?}", ls.get_log_state().await.unwrap()),
        vote: format!("{:?}", ls.read_vote().await.unwrap()),
        entries: format!("{:?}", ls.try_get_log_entries(..).await.unwrap()),
        applied: format!("{:?}", sm.applied_state().await.unwrap()),
        snapshot: format!(
            "{:?}",
            sm.get_current_snapshot().await.unwrap().map(|s| s.meta)
        ),
        keys: sm.state().iter().collect(),
    }
}

async fn run_then_reopen<F, Fut, E>(name: &'static str, case: F)
where
    F: FnOnce(Ls, Sm) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Debug,
{
    let dir = TempDir::new().unwrap();
    let (mut ls, mut sm) = open_node(dir.path()).await;
    case(ls.clone(), sm.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let before = observe(&mut ls, &mut sm).await;
    ls.close().await.unwrap();
    sm.close().await.unwrap();
    drop((ls, sm));
    let (mut ls, mut sm) = open_node(dir.path()).await;
    let after = observe(&mut ls, &mut sm).await;
    assert_eq!(before, after, "{name}: the reopened node differs");
}

/// Runs the cases side by side (each sleeps in places, waiting for a
/// background purge it allows).
macro_rules! cases {
    ($($case:ident),* $(,)?) => {{
        let mut running = tokio::task::JoinSet::new();
        $(running.spawn(run_then_reopen(stringify!($case), Cases::$case));)*
        while let Some(done) = running.join_next().await {
            done.expect("a case panicked");
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_survives_a_restart() {
    cases!(
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_with_state,
        get_initial_state_membership_from_log_and_sm,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        try_get_log_entry,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
}

#[tokio::test]
async fn a_sync_mode_that_acknowledges_before_the_disk_is_refused() {
    for mode in [SyncMode::None, SyncMode::Batch, SyncMode::Interval] {
        let dir = TempDir::new().unwrap();
        let mut config = Config::with_data_dir(dir.path());
        config.wal.sync_mode = mode;
        let refused = open::<TypeConfig>(config).await.err().expect("refused");
        assert!(
            refused.to_string().contains("wal.sync_mode"),
            "{mode:?}: {refused}"
        );
    }
}
