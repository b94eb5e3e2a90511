//! openraft's own storage test suite, unmodified, on a fresh on-disk node
//! per case.

use concordkv::Config;
use concordkv_raft::{open, LogStore, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine<TypeConfig>, TempDir> for OnDisk {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachine<TypeConfig>), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, sm) = open::<TypeConfig>(Config::with_data_dir(dir.path()))
            .await
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    Suite::test_all(OnDisk).expect("the suite passes");
}
