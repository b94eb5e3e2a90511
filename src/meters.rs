//! The store's Prometheus instruments, registered once when it opens and
//! labelled with the store's name (`metrics.store`, by default the data
//! directory's name), so that two stores in one process keep apart, and no
//! hot path looks a metric up by name. Every counter starts at 0, so that
//! an `increase()` alert sees the first error.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::actors::supervised::ActorKind;
use crate::config::Config;

/// Every instrument one store records into.
pub(crate) struct Meters {
    pub append_seconds: Histogram,
    pub sync_seconds: Histogram,
    pub sync_batch_records: Histogram,
    pub syncs: Counter,
    pub sync_errors: Counter,
    pub write_errors: Counter,
    pub records: Counter,
    pub bytes: Counter,
    pub rotations: Counter,
    pub full_snapshot_seconds: Histogram,
    pub incremental_snapshot_seconds: Histogram,
    pub compaction_seconds: Histogram,
    pub compactions: Counter,
    pub compaction_reclaimed_bytes: Counter,
    pub recovery_seconds: Histogram,
    pub recovery_truncated_bytes: Counter,
    /// `concordkv_actor_restarts_total`, by [`ActorKind::index`].
    pub restarts: [Counter; 7],
    pub segments: Gauge,
    pub disk_bytes: Gauge,
    pub pending_bytes: Gauge,
    pub last_seq: Gauge,
    pub durable_seq: Gauge,
    pub durable_lag_records: Gauge,
    pub writes_refused: Gauge,
    #[cfg(feature = "archive")]
    pub archive_uploaded_bytes: Counter,
    #[cfg(feature = "archive")]
    pub archive_upload_errors: Counter,
    #[cfg(feature = "archive")]
    pub archive_pending_bytes: Gauge,
    #[cfg(feature = "archive")]
    pub archive_lag_seconds: Gauge,
}

/// The `store` label of `config`'s store.
pub(crate) fn store_label(config: &Config) -> String {
    if !config.metrics.store.is_empty() {
        return config.metrics.store.clone();
    }
    config.data_dir.file_name().map_or_else(
        || "concordkv".into(),
        |name| name.to_string_lossy().into_owned(),
    )
}

impl Meters {
    /// Registers every instrument of the store `config` opens.
    pub(crate) fn new(config: &Config) -> Meters {
        let store = store_label(config);
        let counter = |name: &'static str| {
            let counter = counter!(name, "store" => store.clone());
            counter.increment(0);
            counter
        };
        let histogram = |name: &'static str| histogram!(name, "store" => store.clone());
        let gauge = |name: &'static str| gauge!(name, "store" => store.clone());
        let snapshot = |kind: &'static str| histogram!("concordkv_snapshot_seconds", "store" => store.clone(), "kind" => kind);
        let restarts = ActorKind::ALL.map(|actor| {
            let counter = counter!("concordkv_actor_restarts_total", "store" => store.clone(), "actor" => actor.name());
            counter.increment(0);
            counter
        });
        Meters {
            append_seconds: histogram("concordkv_wal_append_seconds"),
            sync_seconds: histogram("concordkv_wal_sync_seconds"),
            sync_batch_records: histogram("concordkv_wal_sync_batch_records"),
            syncs: counter("concordkv_wal_syncs_total"),
            sync_errors: counter("concordkv_wal_sync_errors_total"),
            write_errors: counter("concordkv_wal_write_errors_total"),
            records: counter("concordkv_wal_records_total"),
            bytes: counter("concordkv_wal_bytes_total"),
            rotations: counter("concordkv_wal_rotations_total"),
            full_snapshot_seconds: snapshot("full"),
            incremental_snapshot_seconds: snapshot("incremental"),
            compaction_seconds: histogram("concordkv_compaction_seconds"),
            compactions: counter("concordkv_compactions_total"),
            compaction_reclaimed_bytes: counter("concordkv_compaction_reclaimed_bytes_total"),
            recovery_seconds: histogram("concordkv_recovery_seconds"),
            recovery_truncated_bytes: counter("concordkv_recovery_truncated_bytes_total"),
            restarts,
            segments: gauge("concordkv_wal_segments"),
            disk_bytes: gauge("concordkv_disk_bytes"),
            pending_bytes: gauge("concordkv_wal_pending_bytes"),
            last_seq: gauge("concordkv_wal_last_seq"),
            durable_seq: gauge("concordkv_wal_durable_seq"),
            durable_lag_records: gauge("concordkv_wal_durable_lag_records"),
            writes_refused: gauge("concordkv_wal_writes_refused"),
            #[cfg(feature = "archive")]
            archive_uploaded_bytes: counter("concordkv_archive_uploaded_bytes_total"),
            #[cfg(feature = "archive")]
            archive_upload_errors: counter("concordkv_archive_errors_total"),
            #[cfg(feature = "archive")]
            archive_pending_bytes: gauge("concordkv_archive_pending_bytes"),
            #[cfg(feature = "archive")]
            archive_lag_seconds: gauge("concordkv_archive_lag_seconds"),
        }
    }
}
