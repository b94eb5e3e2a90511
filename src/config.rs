//! Configuration: the documented defaults in `config/default.toml` (compiled
//! in, so no file is needed), an optional TOML file, then `CONCORDKV__…`
//! environment variables. Unknown keys and out-of-range values are refused at
//! start with the key's name, before any file is touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The documented defaults, compiled in: this file is the single source of them.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Bytes a record adds around a key and value (frame header and encoding
/// overhead, rounded up); `limits.max_record_bytes` must leave room for it.
const RECORD_OVERHEAD_BYTES: u64 = 64;
/// Slowest accepted maintenance rate (1 MiB/s).
const MIN_MAINTENANCE_RATE: u64 = 1 << 20;

/// Smallest accepted bound on the appends in flight (4 KiB): a few small
/// records at a time; less would serialise ordinary appends.
const MIN_PENDING_BYTES: u64 = 4096;
/// Largest accepted bound on the appends in flight (4 GiB).
const MAX_PENDING_BYTES: u64 = 1 << 32;

/// Longest accepted client timeout (a week, in ms).
const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Smallest accepted cap on all clients' buffers (1 MiB): below it a few
/// ordinary pipelines would already be disconnected.
const MIN_TOTAL_CLIENT_BUFFER: u64 = 1 << 20;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding every file of the store (created 0700 if missing).
    pub data_dir: PathBuf,
    /// The RESP listener of `concordkv serve`; the library only validates it,
    /// so that one file configures a whole deployment.
    pub server: ServerConfig,
    /// The Prometheus endpoint (served by `install_prometheus_exporter`).
    pub metrics: MetricsConfig,
    /// Durability and segment layout.
    pub wal: WalConfig,
    /// When automatic compaction starts.
    pub compaction: CompactionConfig,
    /// How many snapshots are kept.
    pub snapshot: SnapshotConfig,
    /// How fast background work may use the disk.
    pub maintenance: MaintenanceConfig,
    /// How often actors may die and be restarted before the store fails.
    pub supervision: SupervisionConfig,
    /// Sizes refused before anything is written.
    pub limits: LimitsConfig,
    /// The continuous archive to object storage (off unless `url` is set).
    pub archive: ArchiveConfig,
}

/// `[server]`: the RESP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ip:port` to listen on (loopback by default).
    pub listen: String,
    /// Connections beyond this are answered with an error and closed.
    pub max_clients: u64,
    /// Largest single command a client may send, in bytes.
    pub max_request_bytes: u64,
    /// The password `AUTH` must give before any other command (empty: none).
    pub requirepass: Secret,
    /// While no password is set, refuse clients that are not on loopback.
    pub protected_mode: bool,
    /// Close a connection with no complete request for this long (0: never).
    pub idle_timeout_ms: u64,
    /// Close a connection whose request takes longer than this to arrive (0: never).
    pub request_timeout_ms: u64,
    /// Input and output bytes all clients together may hold (0: no limit).
    pub max_total_client_buffer_bytes: u64,
}

/// A password from the configuration: `Debug` never shows it, so logging a
/// configuration cannot leak it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(unset)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` of the `/metrics` endpoint.
    pub listen: String,
    /// Whether `concordkv serve` serves the endpoint at all.
    pub enabled: bool,
    /// The `store` label on every metric of this store, which keeps two
    /// stores in one process apart; empty: the data directory's name.
    #[serde(default)]
    pub store: String,
}

/// `[wal]`: durability and segment layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// When an append is acknowledged, and so what a crash may lose.
    pub sync_mode: SyncMode,
    /// `batch`: records per sync, and the most acknowledged records a crash
    /// may lose.
    pub batch_size: u64,
    /// `batch`: longest a record waits for its sync, in ms.
    pub batch_max_delay_ms: u64,
    /// `interval`: the sync period, in ms.
    pub sync_interval_ms: u64,
    /// Size a segment is preallocated to and sealed at (at most 2 GiB, so
    /// every offset fits the 32-bit fields of its frames).
    pub max_segment_bytes: u64,
    /// What damage found at open does.
    pub recovery_mode: RecoveryMode,
    /// Run the WAL actor on an arbiter thread of its own instead of the one
    /// that opened the store: an application's event loop then never waits
    /// for a `write(2)`, at the cost of one thread hop per append.
    pub dedicated_writer_thread: bool,
}

/// `[compaction]`: when automatic compaction starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    /// Sealed entries before automatic compaction is considered.
    pub threshold: u64,
    /// Fraction of sealed entries overwritten or deleted later that starts it.
    pub ratio: f64,
}

/// `[snapshot]`: how many snapshots are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Full snapshots kept, the newest included.
    pub keep: u64,
}

/// `[supervision]`: how often the store's actors may die and be restarted
/// before the supervisor gives up (Erlang/OTP's intensity and period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed within `period_secs`; one more and the store fails.
    pub max_restarts: u64,
    /// The window the restarts are counted in, in seconds.
    pub period_secs: u64,
}

/// `[maintenance]`: how fast snapshots and compactions may use the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Bytes per second a snapshot or compaction output is written at (0: no
    /// limit); not a snapshot a client waits for (`SAVE`).
    pub write_bytes_per_sec: u64,
    /// Bytes per second of retired files given back to the file system (0: no limit).
    pub delete_bytes_per_sec: u64,
}

/// `[limits]`: sizes refused before anything is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest key, in bytes (empty keys are always refused).
    pub max_key_bytes: u64,
    /// Longest value, in bytes.
    pub max_value_bytes: u64,
    /// Largest single record (a set, a delete or an atomic batch), in bytes.
    /// Only appends are held to it: stored records are read against the
    /// format's own limit, so lowering it never hides data.
    pub max_record_bytes: u64,
    /// Bytes of appends admitted and not yet answered, at most: a producer
    /// faster than the disk then waits for room instead of growing the
    /// queue's memory without bound.
    pub max_pending_bytes: u64,
}

/// `[archive]`: where sealed segments, the synced part of the active one,
/// snapshots and manifests are copied as they appear (see `README.md`,
/// "Archive and restore").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `s3://bucket/prefix`; empty: no archive.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:9000` for a local server);
    /// empty: AWS's own for `region`.
    pub endpoint: String,
    /// The bucket's region.
    pub region: String,
    /// Whether an `http://` endpoint is accepted (credentials then cross
    /// the network in the clear).
    pub allow_http: bool,
    /// Longest a synced record waits before the archive holds it, in ms:
    /// the recovery point a lost machine leaves.
    pub max_lag_ms: u64,
    /// Retries of one request before the pass gives up (the next pass
    /// tries again).
    pub max_retries: u64,
    /// Longest one request is retried for, in ms.
    pub retry_timeout_ms: u64,
    /// Uploads in flight at once (chunks, or a snapshot's parts), each
    /// holding up to 8 MiB: a link's latency, not its bandwidth, bounds
    /// one at a time.
    pub concurrency: u64,
    /// Full snapshots the archive keeps, with everything after the oldest
    /// of them; older objects are deleted (0: keep everything).
    pub keep_snapshots: u64,
}

impl ArchiveConfig {
    /// Whether an archive is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// When an append is acknowledged (see the guarantees table in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// After `fdatasync` covers the record.
    Always,
    /// After the write; synced every `batch_size` records or `batch_max_delay_ms`.
    Batch,
    /// After the write; synced every `sync_interval_ms`.
    Interval,
    /// After the write; the OS flushes when it likes.
    None,
}

/// What damage at open does (cf. RocksDB's WAL recovery modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// Cut a torn tail of the newest segment; fail on anything else.
    TolerateTail,
    /// Fail on any damage, a torn tail included.
    Absolute,
    /// Skip damaged records and recover the rest.
    SkipCorrupt,
}

impl std::str::FromStr for SyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncMode::Always),
            "batch" => Ok(SyncMode::Batch),
            "interval" => Ok(SyncMode::Interval),
            "none" => Ok(SyncMode::None),
            other => Err(format!(
                "unknown sync mode `{other}`: accepted always | batch | interval | none"
            )),
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Always => "always",
            SyncMode::Batch => "batch",
            SyncMode::Interval => "interval",
            SyncMode::None => "none",
        })
    }
}

impl Default for Config {
    /// The compiled-in defaults of `config/default.toml`.
    fn default() -> Self {
        toml_defaults()
    }
}

/// Parses the compiled-in defaults; a failure is a build defect caught by the tests.
fn toml_defaults() -> Config {
    config::Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .unwrap_or_else(|e| panic!("config/default.toml does not parse: {e}"))
}

impl Config {
    /// Loads defaults, then `file` if given, then `CONCORDKV__…` variables,
    /// and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// As [`Config::load`], with the environment given explicitly (for tests);
    /// `None` reads the process environment.
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        // Values stay text until a field asks for a number or a boolean
        // (no `try_parsing`, which would turn the password or directory
        // "000123" into the number 123).
        let environment = Environment::with_prefix("CONCORDKV")
            .prefix_separator("__")
            .separator("__")
            .source(env);
        let config: Config = builder
            .add_source(environment)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its accepted range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(out_of_range("data_dir", "\"\"", "a non-empty path"));
        }
        check_addr("server.listen", &self.server.listen)?;
        check_addr("metrics.listen", &self.metrics.listen)?;
        check_range(
            "server.max_clients",
            self.server.max_clients,
            1,
            1_000_000,
            "1 to 1000000",
        )?;
        check_range(
            "server.max_request_bytes",
            self.server.max_request_bytes,
            1024,
            1 << 30,
            "1024 to 1073741824",
        )?;
        check_range(
            "server.idle_timeout_ms",
            self.server.idle_timeout_ms,
            0,
            MAX_TIMEOUT_MS,
            "0 (never) to 604800000",
        )?;
        check_range(
            "server.request_timeout_ms",
            self.server.request_timeout_ms,
            0,
            MAX_TIMEOUT_MS,
            "0 (never) to 604800000",
        )?;
        let total = self.server.max_total_client_buffer_bytes;
        if total != 0 && !(MIN_TOTAL_CLIENT_BUFFER..=1 << 40).contains(&total) {
            return Err(out_of_range(
                "server.max_total_client_buffer_bytes",
                total,
                "0 (no limit) or 1048576 to 1099511627776",
            ));
        }
        check_range(
            "wal.batch_size",
            self.wal.batch_size,
            1,
            1_000_000,
            "1 to 1000000",
        )?;
        check_range(
            "wal.batch_max_delay_ms",
            self.wal.batch_max_delay_ms,
            1,
            60_000,
            "1 to 60000",
        )?;
        check_range(
            "wal.sync_interval_ms",
            self.wal.sync_interval_ms,
            1,
            3_600_000,
            "1 to 3600000",
        )?;
        check_range(
            "wal.max_segment_bytes",
            self.wal.max_segment_bytes,
            4096,
            1 << 31,
            "4096 to 2147483648",
        )?;
        check_range(
            "compaction.threshold",
            self.compaction.threshold,
            1,
            u64::MAX,
            "1 or more",
        )?;
        if !(0.0..=1.0).contains(&self.compaction.ratio) {
            return Err(out_of_range(
                "compaction.ratio",
                self.compaction.ratio,
                "0.0 to 1.0",
            ));
        }
        check_rate(
            "maintenance.write_bytes_per_sec",
            self.maintenance.write_bytes_per_sec,
        )?;
        check_rate(
            "maintenance.delete_bytes_per_sec",
            self.maintenance.delete_bytes_per_sec,
        )?;
        check_range(
            "supervision.max_restarts",
            self.supervision.max_restarts,
            1,
            1000,
            "1 to 1000",
        )?;
        check_range(
            "supervision.period_secs",
            self.supervision.period_secs,
            1,
            86_400,
            "1 to 86400",
        )?;
        check_range(
            "limits.max_key_bytes",
            self.limits.max_key_bytes,
            1,
            1 << 24,
            "1 to 16777216",
        )?;
        check_range(
            "limits.max_value_bytes",
            self.limits.max_value_bytes,
            0,
            1 << 29,
            "0 to 536870912",
        )?;
        check_range(
            "limits.max_record_bytes",
            self.limits.max_record_bytes,
            self.limits.max_key_bytes + self.limits.max_value_bytes + RECORD_OVERHEAD_BYTES,
            1 << 30,
            "at least max_key_bytes + max_value_bytes + 64, at most 1073741824",
        )?;
        check_range(
            "limits.max_pending_bytes",
            self.limits.max_pending_bytes,
            MIN_PENDING_BYTES,
            MAX_PENDING_BYTES,
            "4096 to 4294967296",
        )?;
        self.archive.validate()
    }

    /// A configuration for `dir` with everything else at its default: the
    /// usual start for an embedded store.
    pub fn with_data_dir(dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: dir.into(),
            ..Config::default()
        }
    }
}

impl ArchiveConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if crate::archive::url::ArchiveUrl::parse(&self.url).is_err() {
            return Err(out_of_range(
                "archive.url",
                format!("{:?}", self.url),
                "\"\" (no archive) or s3://bucket[/prefix], the bucket named as S3 allows \
                 (3 to 63 of a-z, 0-9, '.', '-')",
            ));
        }
        let endpoint = self.endpoint.as_str();
        if !endpoint.is_empty() && !endpoint.starts_with("https://") {
            if !endpoint.starts_with("http://") {
                return Err(out_of_range(
                    "archive.endpoint",
                    format!("{endpoint:?}"),
                    "\"\" (AWS) or an http:// or https:// URL",
                ));
            }
            if !self.allow_http {
                return Err(out_of_range(
                    "archive.endpoint",
                    format!("{endpoint:?}"),
                    "an https:// URL, or http:// with archive.allow_http = true",
                ));
            }
        }
        if self.region.is_empty() {
            return Err(out_of_range(
                "archive.region",
                "\"\"",
                "a region name, e.g. \"us-east-1\"",
            ));
        }
        check_range(
            "archive.max_lag_ms",
            self.max_lag_ms,
            10,
            MAX_TIMEOUT_MS,
            "10 to 604800000",
        )?;
        check_range("archive.max_retries", self.max_retries, 0, 100, "0 to 100")?;
        check_range(
            "archive.retry_timeout_ms",
            self.retry_timeout_ms,
            100,
            MAX_TIMEOUT_MS,
            "100 to 604800000",
        )?;
        check_range("archive.concurrency", self.concurrency, 1, 64, "1 to 64")?;
        check_range(
            "archive.keep_snapshots",
            self.keep_snapshots,
            0,
            10_000,
            "0 (keep everything) to 10000",
        )
    }
}

fn out_of_range(
    key: &'static str,
    value: impl std::fmt::Display,
    accepted: &'static str,
) -> ConfigError {
    ConfigError::OutOfRange {
        key,
        value: value.to_string(),
        accepted,
    }
}

fn check_range(
    key: &'static str,
    value: u64,
    min: u64,
    max: u64,
    accepted: &'static str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(out_of_range(key, value, accepted))
    }
}

/// A maintenance rate: 0 (no limit) or at least 1 MiB/s, below which a
/// snapshot of any size would take longer than anyone means.
fn check_rate(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 || value >= MIN_MAINTENANCE_RATE {
        Ok(())
    } else {
        Err(out_of_range(
            key,
            value,
            "0 (no limit) or 1048576 to 2^64-1",
        ))
    }
}

fn check_addr(key: &'static str, value: &str) -> Result<(), ConfigError> {
    value.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
        out_of_range(
            key,
            format!("{value:?}"),
            "an IP address and port, e.g. \"127.0.0.1:6380\"",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write config");
        Config::load_with_env(Some(&path), env(&[]))
    }

    #[test]
    fn embedded_defaults_match_the_contract() {
        let c = Config::load_with_env(None, env(&[])).expect("defaults load");
        assert_eq!(c, Config::default());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.listen, "127.0.0.1:6380");
        assert_eq!(c.metrics.listen, "127.0.0.1:9187");
        assert_eq!(c.wal.sync_mode, SyncMode::Always);
        assert_eq!(c.wal.batch_size, 100);
        assert_eq!(c.wal.batch_max_delay_ms, 10);
        assert_eq!(c.wal.sync_interval_ms, 1000);
        assert_eq!(c.wal.max_segment_bytes, 64 << 20);
        assert_eq!(c.wal.recovery_mode, RecoveryMode::TolerateTail);
        assert!(!c.wal.dedicated_writer_thread);
        assert_eq!(c.compaction.threshold, 1000);
        assert_eq!(c.compaction.ratio, 0.3);
        assert_eq!(c.limits.max_pending_bytes, 64 << 20);
    }

    #[test]
    fn environment_overrides_with_double_underscore() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("CONCORDKV__WAL__SYNC_MODE", "batch"),
                ("CONCORDKV__WAL__MAX_SEGMENT_BYTES", "8192"),
                ("CONCORDKV__DATA_DIR", "/tmp/x"),
            ]),
        )
        .expect("env config loads");
        assert_eq!(c.wal.sync_mode, SyncMode::Batch);
        assert_eq!(c.wal.max_segment_bytes, 8192);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn file_overrides_only_what_it_names() {
        let c = load_toml("[wal]\nsync_mode = \"none\"\n").expect("loads");
        assert_eq!(c.wal.sync_mode, SyncMode::None);
        assert_eq!(c.wal.batch_size, 100);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_toml("[wal]\nsync_mod = \"none\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync_mod"), "{err}");
        let err = load_toml("bogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_sync_mode_is_named() {
        let err = load_toml("[wal]\nsync_mode = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync_mode"), "{err}");
        assert!(err.contains("sometimes"), "{err}");
        let err = Config::load_with_env(None, env(&[("CONCORDKV__WAL__SYNC_MODE", "never")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync_mode"), "{err}");
    }

    #[test]
    fn negative_size_is_named() {
        let err = load_toml("[wal]\nmax_segment_bytes = -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_segment_bytes"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_key_and_range() {
        let err = load_toml("[wal]\nmax_segment_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wal.max_segment_bytes") && err.contains("4096"),
            "{err}"
        );
        let err = load_toml("[compaction]\nratio = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("compaction.ratio") && err.contains("0.0 to 1.0"),
            "{err}"
        );
        let err = load_toml("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = load_toml("[wal]\nbatch_size = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wal.batch_size"), "{err}");
        let err = load_toml("[maintenance]\nwrite_bytes_per_sec = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("maintenance.write_bytes_per_sec") && err.contains("0 (no limit)"),
            "{err}"
        );
        assert!(load_toml("[maintenance]\ndelete_bytes_per_sec = 0\n").is_ok());
        for bad in ["4095", "4294967297"] {
            let err = load_toml(&format!("[limits]\nmax_pending_bytes = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("limits.max_pending_bytes") && err.contains("4096 to 4294967296"),
                "{err}"
            );
        }
        for good in ["4096", "4294967296"] {
            assert!(load_toml(&format!("[limits]\nmax_pending_bytes = {good}\n")).is_ok());
        }
    }

    #[test]
    fn server_hardening_keys_load_from_env_and_are_range_checked() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("CONCORDKV__SERVER__REQUIREPASS", "s3cret"),
                ("CONCORDKV__SERVER__PROTECTED_MODE", "false"),
                ("CONCORDKV__SERVER__IDLE_TIMEOUT_MS", "5000"),
            ]),
        )
        .expect("env config loads");
        assert_eq!(c.server.requirepass.expose(), "s3cret");
        for password in ["000123", "123456", "true", "1.50", " padded "] {
            let c =
                Config::load_with_env(None, env(&[("CONCORDKV__SERVER__REQUIREPASS", password)]))
                    .expect("env config loads");
            assert_eq!(c.server.requirepass.expose(), password, "kept as given");
        }
        let digits = Config::load_with_env(None, env(&[("CONCORDKV__DATA_DIR", "000123")]))
            .expect("env config loads");
        assert_eq!(
            digits.data_dir,
            PathBuf::from("000123"),
            "text settings are kept as given"
        );
        assert!(!c.server.protected_mode);
        assert_eq!(c.server.idle_timeout_ms, 5000);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug never shows the password"
        );
        let d = Config::default();
        assert!(d.server.requirepass.is_empty() && d.server.protected_mode);
        assert_eq!(
            (d.server.idle_timeout_ms, d.server.request_timeout_ms),
            (0, 30_000)
        );
        assert_eq!(d.server.max_total_client_buffer_bytes, 256 << 20);
        let err = load_toml("[server]\nmax_total_client_buffer_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.max_total_client_buffer_bytes") && err.contains("0 (no limit)"),
            "{err}"
        );
        let err = load_toml("[server]\nrequest_timeout_ms = 999999999999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.request_timeout_ms"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/c.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/c.toml"), "{err}");
    }
}
