//! `MetricsActor`: publishes the store's latencies and counts to the
//! `metrics` facade (and so to Prometheus when `concordkv serve` installed
//! the exporter), and answers the in-process `Stats` query: per kind of
//! operation, count, throughput, mean and p99 latency.
//!
//! Samples are gathered where operations complete (see `crate::latency`);
//! once a second this actor drains them, forwards them to the Prometheus
//! histograms with `record_many` (a batch per histogram and second, never a
//! message per operation), adds them to the totals `Stats` answers from,
//! and refreshes the gauges (files, pending bytes, durable lag).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::actors::messages::GetStats;
use crate::actors::supervised::Watch;
use crate::actors::wal::WalShared;
use crate::latency::{nanos_histogram, LatencyBatch, OpKind};
use crate::stats::PersistenceInfo;

/// How often samples are drained and gauges refreshed.
const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// Bucket bounds of the store's latency histograms (every metric ending in
/// `_seconds`), in seconds: its operations range from tens of microseconds
/// (a write to the page cache) through milliseconds (an fdatasync) to
/// seconds (a large compaction). A recorder has no say in a library's
/// buckets: an application that installs its own Prometheus recorder gives
/// it these, `PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), concordkv::LATENCY_BUCKETS)`,
/// or its histograms render as summaries.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of `concordkv_wal_sync_batch_records`, the group-commit
/// size (records made durable by one sync); see [`LATENCY_BUCKETS`] for
/// giving them to a recorder of the application's own.
pub const SYNC_BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// Installs the Prometheus exporter on `metrics.listen`. Call it before the
/// actix System starts: the exporter then serves scrapes from a thread of
/// its own, never waiting for a busy actor.
///
/// A `metrics.listen` that is not an `ip:port` is an [`Error::Config`]
/// naming the key; an address that cannot be bound is an [`Error::Io`]
/// naming it, with the operating system's error; a second install in one
/// process is an [`Error::InvalidRequest`].
///
/// [`Error::Config`]: crate::Error::Config
/// [`Error::Io`]: crate::Error::Io
/// [`Error::InvalidRequest`]: crate::Error::InvalidRequest
#[cfg(feature = "prometheus-exporter")]
pub fn install_prometheus_exporter(
    config: &crate::config::MetricsConfig,
) -> crate::error::Result<()> {
    use crate::error::{ConfigError, Error};
    use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

    const OP: &str = "serve metrics on metrics.listen =";
    let addr: std::net::SocketAddr = config.listen.parse().map_err(|_| {
        Error::Config(ConfigError::OutOfRange {
            key: "metrics.listen",
            value: format!("{:?}", config.listen),
            accepted: "an ip:port address",
        })
    })?;
    // The exporter reports a failed bind as text only: binding here first
    // keeps the operating system's error (address in use, permission
    // denied) for the caller. The socket is closed again at once, and the
    // exporter binds the address itself.
    drop(std::net::TcpListener::bind(addr).map_err(|e| Error::io(OP, addr.to_string(), e))?);
    let failed = |e: BuildError| match e {
        BuildError::FailedToSetGlobalRecorder(_) => Error::InvalidRequest(format!(
            "cannot serve metrics on metrics.listen = {addr}: {e}"
        )),
        // Kept whole inside the io::Error, not turned into text.
        e => Error::io(OP, addr.to_string(), std::io::Error::other(e)),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(failed)?
        .set_buckets_for_metric(
            Matcher::Full("concordkv_wal_sync_batch_records".into()),
            SYNC_BATCH_BUCKETS,
        )
        .map_err(failed)?
        .install()
        .map_err(failed)?;
    Ok(())
}

/// Help text of every metric the store publishes (Prometheus's HELP lines),
/// given to whichever recorder is installed when a store opens.
pub(crate) fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "concordkv_wal_append_seconds",
        Unit::Seconds,
        "Append call to acknowledgement."
    );
    describe_histogram!(
        "concordkv_wal_sync_seconds",
        Unit::Seconds,
        "One fdatasync of the WAL."
    );
    describe_histogram!(
        "concordkv_wal_sync_batch_records",
        Unit::Count,
        "Records made durable by one sync (group-commit size)."
    );
    describe_histogram!(
        "concordkv_compaction_seconds",
        Unit::Seconds,
        "One compaction run."
    );
    describe_histogram!(
        "concordkv_snapshot_seconds",
        Unit::Seconds,
        "One snapshot, by kind."
    );
    describe_histogram!(
        "concordkv_recovery_seconds",
        Unit::Seconds,
        "Open-time recovery."
    );
    describe_counter!(
        "concordkv_wal_records_total",
        Unit::Count,
        "Records appended."
    );
    describe_counter!(
        "concordkv_wal_bytes_total",
        Unit::Bytes,
        "Bytes appended, frames included."
    );
    describe_counter!(
        "concordkv_wal_syncs_total",
        Unit::Count,
        "fdatasync calls completed."
    );
    describe_counter!(
        "concordkv_wal_rotations_total",
        Unit::Count,
        "Segments sealed and replaced."
    );
    describe_counter!(
        "concordkv_compactions_total",
        Unit::Count,
        "Compactions completed."
    );
    describe_counter!(
        "concordkv_compaction_reclaimed_bytes_total",
        Unit::Bytes,
        "Bytes compactions removed."
    );
    describe_counter!(
        "concordkv_recovery_truncated_bytes_total",
        Unit::Bytes,
        "Torn-tail bytes cut at open."
    );
    describe_counter!(
        "concordkv_wal_sync_errors_total",
        Unit::Count,
        "Failed fdatasync calls."
    );
    describe_counter!(
        "concordkv_wal_write_errors_total",
        Unit::Count,
        "Failed writes to a segment."
    );
    describe_counter!(
        "concordkv_actor_restarts_total",
        Unit::Count,
        "Actors restarted after dying."
    );
    describe_gauge!("concordkv_wal_segments", Unit::Count, "Live WAL segments.");
    describe_gauge!(
        "concordkv_wal_pending_bytes",
        Unit::Bytes,
        "Bytes of appends admitted and not yet answered and applied to the state (bounded by limits.max_pending_bytes)."
    );
    describe_gauge!(
        "concordkv_disk_bytes",
        Unit::Bytes,
        "Bytes of every live file under data_dir."
    );
    describe_gauge!(
        "concordkv_wal_last_seq",
        Unit::Count,
        "The last sequence number appended."
    );
    describe_gauge!(
        "concordkv_wal_durable_seq",
        Unit::Count,
        "The last sequence number known durable (fdatasync returned)."
    );
    describe_gauge!(
        "concordkv_wal_durable_lag_records",
        Unit::Count,
        "Records appended and not yet known durable: what a power cut could take now."
    );
    describe_gauge!(
        "concordkv_wal_writes_refused",
        Unit::Count,
        "1 while the log refuses every write after a failed write or sync (until it is reopened), else 0."
    );
    describe_counter!(
        "concordkv_archive_uploaded_bytes_total",
        Unit::Bytes,
        "Bytes uploaded to the archive and verified there."
    );
    describe_counter!(
        "concordkv_archive_errors_total",
        Unit::Count,
        "Archiving passes that failed (the next one goes on where it stopped)."
    );
    describe_gauge!(
        "concordkv_archive_pending_bytes",
        Unit::Bytes,
        "Bytes of retired segments and snapshots kept until the archive holds them."
    );
    describe_gauge!(
        "concordkv_follow_lag_records",
        Unit::Count,
        "A follower's records behind the archive it follows, at its last poll."
    );
    describe_counter!(
        "concordkv_follow_errors_total",
        Unit::Count,
        "A follower's polls of the archive that failed."
    );
    describe_gauge!(
        "concordkv_archive_lag_seconds",
        Unit::Seconds,
        "How far back the archive is complete: every record durable this many seconds ago is archived."
    );
}

/// Latency figures of one kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KindStats {
    /// `append`, `sync`, `compaction`, `snapshot` or `recovery`.
    pub kind: &'static str,
    /// Operations since the store was opened.
    pub count: u64,
    /// Operations per second over the last whole publishing period (1 s).
    pub per_sec: f64,
    /// Mean latency since the store was opened, in microseconds.
    pub mean_us: f64,
    /// 99th percentile latency since the store was opened, in microseconds.
    pub p99_us: f64,
}

/// The answer to the `Stats` query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    /// One entry per kind of operation, in a fixed order.
    pub kinds: Vec<KindStats>,
}

struct Totals {
    histogram: Histogram<u64>,
    per_sec: f64,
    /// Samples since the last periodic tick.
    since_tick: u64,
}

/// Publishes metrics and answers `Stats`.
pub struct MetricsActor {
    shared: Arc<WalShared>,
    totals: Vec<(OpKind, Totals)>,
    last_publish: Instant,
    _watch: Watch,
}

impl MetricsActor {
    pub(crate) fn new(shared: Arc<WalShared>, watch: Watch) -> MetricsActor {
        let totals = OpKind::ALL
            .iter()
            .map(|kind| {
                (
                    *kind,
                    Totals {
                        histogram: nanos_histogram(),
                        per_sec: 0.0,
                        since_tick: 0,
                    },
                )
            })
            .collect();
        MetricsActor {
            shared,
            totals,
            last_publish: Instant::now(),
            _watch: watch,
        }
    }

    /// Drains the samples into the histograms and totals. Rates are taken
    /// only on the periodic tick (`period` = true), over a whole period.
    fn publish(&mut self, period: bool) {
        let elapsed = self.last_publish.elapsed().as_secs_f64().max(1e-9);
        if period {
            self.last_publish = Instant::now();
        }
        let latencies = &self.shared.latencies;
        let meters = &self.shared.meters;
        let seconds = |batch: &LatencyBatch, histogram: &::metrics::Histogram| {
            let batch = batch.take();
            forward(&batch, histogram, 1e-9);
            batch
        };
        let full = seconds(&latencies.full_snapshot, &meters.full_snapshot_seconds);
        let mut snapshots = seconds(
            &latencies.incremental_snapshot,
            &meters.incremental_snapshot_seconds,
        );
        let _ = snapshots.add(&full);
        forward(
            &latencies.sync_batch.take(),
            &meters.sync_batch_records,
            1.0,
        );
        let mut drained = [
            (
                OpKind::Append,
                seconds(&latencies.append, &meters.append_seconds),
            ),
            (OpKind::Sync, seconds(&latencies.sync, &meters.sync_seconds)),
            (
                OpKind::Compaction,
                seconds(&latencies.compaction, &meters.compaction_seconds),
            ),
            (OpKind::Snapshot, snapshots),
            (
                OpKind::Recovery,
                seconds(&latencies.recovery, &meters.recovery_seconds),
            ),
        ];
        for (kind, totals) in &mut self.totals {
            let Some((_, batch)) = drained.iter_mut().find(|(k, _)| k == kind) else {
                continue;
            };
            totals.since_tick += batch.len();
            if period {
                totals.per_sec = totals.since_tick as f64 / elapsed;
                totals.since_tick = 0;
            }
            let _ = totals.histogram.add(&*batch);
        }
        let files = PersistenceInfo::read(&self.shared);
        meters.segments.set(files.segments as f64);
        meters.disk_bytes.set(files.disk_bytes as f64);
        let pending = self.shared.counters.pending_bytes.load(Relaxed);
        meters.pending_bytes.set(pending as f64);
        let last = self.shared.counters.last_seq.load(Relaxed);
        let durable = self.shared.counters.durable_seq.load(Relaxed);
        meters.last_seq.set(last as f64);
        meters.durable_seq.set(durable as f64);
        meters
            .durable_lag_records
            .set(last.saturating_sub(durable) as f64);
        let refused = self.shared.inbox.refuses_after_failure();
        meters.writes_refused.set(f64::from(u8::from(refused)));
    }
}

/// Records every sample of `batch` into `histogram`, scaled by `scale`
/// (nanoseconds to seconds, or 1 for counts).
fn forward(batch: &Histogram<u64>, histogram: &::metrics::Histogram, scale: f64) {
    for value in batch.iter_recorded() {
        let count = usize::try_from(value.count_at_value()).unwrap_or(usize::MAX);
        histogram.record_many(value.value_iterated_to() as f64 * scale, count);
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        describe();
        self.publish(true);
        // The interval would keep the actor (and the store's files and state
        // it holds) alive forever; it ends once the store has shut down.
        ctx.run_interval(PUBLISH_PERIOD, |actor, ctx| {
            if actor.shared.manifest.is_closed() {
                // What completed since the last tick still counts.
                actor.publish(false);
                ctx.stop();
            } else {
                actor.publish(true);
            }
        });
    }
}

impl Handler<GetStats> for MetricsActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        self.publish(false);
        let kinds = self
            .totals
            .iter()
            .map(|(kind, totals)| KindStats {
                kind: kind.name(),
                count: totals.histogram.len(),
                per_sec: totals.per_sec,
                mean_us: totals.histogram.mean() / 1000.0,
                p99_us: totals.histogram.value_at_quantile(0.99) as f64 / 1000.0,
            })
            .collect();
        MessageResult(StatsReport { kinds })
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for MetricsActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into MetricsActor");
    }
}
