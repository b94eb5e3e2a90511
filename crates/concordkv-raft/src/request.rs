//! What a client asks the replicated key-value state for, and its answer.

use concordkv::LimitsConfig;
use serde::{Deserialize, Serialize};

use crate::state_machine::is_reserved;

/// A write, replicated through the Raft log and applied on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sets `key` to `value`.
    Set {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Its new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl Request {
    /// The key the request writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Set { key, .. } | Request::Delete { key } => key,
        }
    }

    /// Why the state machine would refuse the request, if it would: an
    /// empty or reserved key, or a key or value over `limits`. A service
    /// checks before it proposes; the state machine checks again, with the
    /// same limits on every node, so a refused write is refused everywhere.
    pub fn check(&self, limits: &LimitsConfig) -> Result<(), String> {
        let key = self.key();
        if key.is_empty() {
            return Err("an empty key".into());
        }
        if is_reserved(key) {
            return Err("keys that start with 0xFF 0xFF are reserved".into());
        }
        if key.len() as u64 > limits.max_key_bytes {
            return Err(format!(
                "a key of {} bytes (limits.max_key_bytes = {})",
                key.len(),
                limits.max_key_bytes
            ));
        }
        if let Request::Set { value, .. } = self {
            if value.len() as u64 > limits.max_value_bytes {
                return Err(format!(
                    "a value of {} bytes (limits.max_value_bytes = {})",
                    value.len(),
                    limits.max_value_bytes
                ));
            }
        }
        Ok(())
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The key's value before the write (for a set or a delete).
    #[serde(default)]
    pub previous: Option<Vec<u8>>,
    /// Why the write was refused, if it was (nothing was written).
    #[serde(default)]
    pub refused: Option<String>,
}

impl Response {
    pub(crate) fn done(previous: Option<Vec<u8>>) -> Response {
        Response {
            previous,
            refused: None,
        }
    }

    pub(crate) fn refused(reason: String) -> Response {
        Response {
            previous: None,
            refused: Some(reason),
        }
    }
}
