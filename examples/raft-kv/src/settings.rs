//! The node's configuration: one TOML file with the node's own table, the
//! Raft timings, and the concordkv store settings (any subset of the keys
//! of concordkv's `config/default.toml`, under `[store]`).
//!
//! ```toml
//! [node]
//! id = 1
//! listen = "127.0.0.1:21001"
//! data_dir = "./raft-kv-data/1"
//!
//! [raft]
//! heartbeat_interval_ms = 100
//! snapshot_logs_since_last = 5000
//!
//! [store.wal]
//! max_segment_bytes = 8388608
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[node]`: who this node is and where it listens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's Raft id (unique in the cluster).
    pub id: Option<u64>,
    /// Address of the HTTP server: clients and the other nodes use it.
    pub listen: Option<SocketAddr>,
    /// Where the node keeps its log, state and snapshots.
    pub data_dir: Option<PathBuf>,
    /// A secret every node of the cluster shares: nodes send it with each
    /// Raft RPC and refuse an RPC without it. Without one, anything that
    /// can reach the port can vote and append: set one whenever the nodes
    /// listen on anything but loopback.
    pub cluster_token: Option<String>,
}

/// `[raft]`: openraft's timings and snapshot policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time between these
    /// starts an election.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Entries applied since the last snapshot that trigger a new one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot (a follower this far
    /// behind catches up from the log, not from the snapshot).
    pub max_in_snapshot_log_to_keep: u64,
    /// Bytes per chunk when a snapshot is sent to a follower.
    pub snapshot_max_chunk_bytes: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            snapshot_max_chunk_bytes: 1 << 20,
        }
    }
}

impl RaftSection {
    /// openraft's configuration, validated by openraft.
    pub fn to_openraft(&self) -> Result<openraft::Config, Box<dyn Error>> {
        let config = openraft::Config {
            cluster_name: "raft-kv".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_max_chunk_size: self.snapshot_max_chunk_bytes,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub node: Option<NodeSection>,
    pub raft: RaftSection,
    pub store: concordkv::Config,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node: Option<NodeSection>,
    #[serde(default)]
    raft: RaftSection,
    store: Option<toml::Table>,
}

impl Settings {
    /// Reads `path` (or the defaults without one). The store's settings
    /// start from concordkv's defaults and are checked as concordkv checks
    /// its own file: an unknown key or a value out of range is refused,
    /// named.
    pub fn load(path: Option<&Path>) -> Result<Settings, Box<dyn Error>> {
        let file: File = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => File {
                node: None,
                raft: RaftSection::default(),
                store: None,
            },
        };
        let store_toml = toml::to_string(&file.store.unwrap_or_default())?;
        let store = load_store_config(&store_toml)
            .map_err(|e| format!("[store] of {}: {e}", describe(path)))?;
        Ok(Settings {
            node: file.node,
            raft: file.raft,
            store,
        })
    }
}

fn describe(path: Option<&Path>) -> String {
    path.map_or_else(|| "the defaults".into(), |p| p.display().to_string())
}

/// concordkv's defaults, then `toml`, then `CONCORDKV__…` variables (as
/// `concordkv::Config::load` layers them), validated.
fn load_store_config(toml: &str) -> Result<concordkv::Config, Box<dyn Error>> {
    use config::{Environment, File, FileFormat};
    let store: concordkv::Config = config::Config::builder()
        .add_source(File::from_str(concordkv::DEFAULT_TOML, FileFormat::Toml))
        .add_source(File::from_str(toml, FileFormat::Toml))
        .add_source(
            Environment::with_prefix("CONCORDKV")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()?
        .try_deserialize()?;
    store.validate()?;
    Ok(store)
}
