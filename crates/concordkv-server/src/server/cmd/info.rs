//! `INFO [section]`: the `server`, `persistence` and `keyspace` sections.

use std::fmt::Write as _;

use crate::server::frame::Frame;
use bytes::Bytes;

use super::Reply;
use crate::server::db::Db;

/// `INFO [section]`: `server`, `persistence`, `stats` and `keyspace`.
pub fn info(db: &Db, section: Option<&Bytes>) -> Reply {
    let wanted = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let show = |name: &str| {
        matches!(
            wanted.as_deref(),
            None | Some("all") | Some("default") | Some("everything")
        ) || wanted.as_deref() == Some(name)
    };
    let store = db.store();
    let config = store.config();
    let stats = store.stats();
    let mut out = String::new();
    if show("server") {
        let _ = write!(
            out,
            "# Server\r\nconcordkv_version:{}\r\nprocess_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
    }
    if show("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nsync_mode:{}\r\nwal_last_seq:{}\r\nwal_durable_seq:{}\r\nwal_records:{}\r\nwal_bytes:{}\r\nwal_syncs:{}\r\nwal_records_per_sync:{:.2}\r\nwal_rotations:{}\r\ndata_dir:{}\r\n",
            config.wal.sync_mode,
            stats.last_seq,
            stats.durable_seq,
            stats.records,
            stats.bytes,
            stats.syncs,
            stats.records_per_sync(),
            stats.rotations,
            config.data_dir.display(),
        );
    }
    if show("persistence") {
        let files = store.persistence_info();
        let last_kind =
            store
                .snapshots()
                .iter()
                .max_by_key(|s| s.to_seq)
                .map_or("none", |s| match s.kind {
                    concordkv::SnapshotKind::Full => "full",
                    concordkv::SnapshotKind::Incremental => "incremental",
                });
        let _ = write!(
            out,
            "segments:{}\r\ndisk_bytes:{}\r\nsnapshots:{}\r\nlast_snapshot_seq:{}\r\nlast_snapshot_kind:{}\r\nlast_snapshot_time:{}\r\ncompaction_in_progress:{}\r\nrecovery_truncated_bytes:{}\r\n\r\n",
            files.segments,
            files.disk_bytes,
            files.snapshots,
            files.last_snapshot_seq,
            last_kind,
            files.last_snapshot_unix,
            u8::from(files.compacting),
            files.recovery_truncated_bytes,
        );
        if config.archive.enabled() {
            // Before the blank line that ends the section.
            out.truncate(out.len() - 2);
            let _ = write!(
                out,
                "archive_url:{}\r\narchive_seq:{}\r\narchive_lag_records:{}\r\narchive_pending_bytes:{}\r\n\r\n",
                config.archive.url,
                stats.archived_seq,
                stats.durable_seq.saturating_sub(stats.archived_seq),
                stats.archive_pending_bytes,
            );
        }
    }
    if show("replication") {
        match db.following() {
            Some(following) => {
                let status = &following.status;
                let contact = status.since_contact_ms();
                let _ = write!(
                    out,
                    "# Replication\r\nrole:slave\r\nmaster_url:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nslave_read_only:1\r\nslave_repl_offset:{}\r\nfollow_archive_seq:{}\r\nfollow_lag_records:{}\r\nfollow_error:{}\r\n\r\n",
                    following.url,
                    if status.error().is_none() && contact.is_some() { "up" } else { "down" },
                    contact.map_or(-1, |ms| (ms / 1000) as i64),
                    status.applied_seq(),
                    status.archive_seq(),
                    status.archive_seq().saturating_sub(status.applied_seq()),
                    status.error().unwrap_or_default().replace(['\r', '\n'], " "),
                );
            }
            None => {
                let _ = write!(
                    out,
                    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"
                );
            }
        }
    }
    if show("keyspace") && !db.is_empty() {
        let _ = write!(out, "# Keyspace\r\ndb0:keys={}\r\n\r\n", db.len());
    }
    if !show("stats") {
        return Reply::Now(Frame::Bulk(Bytes::from(out)));
    }
    let store = store.clone();
    let expired = db.expired();
    Reply::Wait(Box::pin(async move {
        if let Ok(report) = store.stats_report().await {
            out.push_str("# Stats\r\n");
            let _ = write!(out, "expired_keys:{expired}\r\n");
            for kind in report.kinds {
                let _ = write!(
                    out,
                    "{}_count:{}\r\n{}_per_sec:{:.1}\r\n{}_mean_us:{:.1}\r\n{}_p99_us:{:.1}\r\n",
                    kind.kind,
                    kind.count,
                    kind.kind,
                    kind.per_sec,
                    kind.kind,
                    kind.mean_us,
                    kind.kind,
                    kind.p99_us
                );
            }
            out.push_str("\r\n");
        }
        Frame::Bulk(Bytes::from(out))
    }))
}
