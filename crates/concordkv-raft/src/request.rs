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
    /// Several writes in one log entry, applied in order and together: a
    /// service batches the writes of concurrent clients into one proposal,
    /// so that they share one `fdatasync` on the leader (openraft 0.9
    /// writes and syncs each proposal's entry before it takes the next).
    /// Each is checked on its own; a batch inside a batch is refused.
    Batch(Vec<Request>),
}

impl Request {
    /// Why a service should not propose the request: an empty or reserved
    /// key, a key or value over `limits`, an empty or nested batch. The
    /// state machine checks only the shape again when it applies (empty,
    /// reserved, nested), which does not depend on any node's settings.
    pub fn check(&self, limits: &LimitsConfig) -> Result<(), String> {
        self.check_shape()?;
        let (key, value) = match self {
            Request::Set { key, value } => (key, Some(value)),
            Request::Delete { key } => (key, None),
            Request::Batch(requests) => {
                return requests.iter().try_for_each(|r| r.check(limits));
            }
        };
        if key.len() as u64 > limits.max_key_bytes {
            return Err(format!(
                "a key of {} bytes (limits.max_key_bytes = {})",
                key.len(),
                limits.max_key_bytes
            ));
        }
        if let Some(value) = value {
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

    /// What the state machine checks when it applies a write: only what
    /// depends on the write itself, never on a node's settings, so that
    /// every node decides the same.
    pub fn check_shape(&self) -> Result<(), String> {
        let key = match self {
            Request::Set { key, .. } | Request::Delete { key } => key,
            Request::Batch(requests) => {
                if requests.is_empty() {
                    return Err("an empty batch".into());
                }
                if requests.iter().any(|r| matches!(r, Request::Batch(_))) {
                    return Err("a batch inside a batch".into());
                }
                return Ok(());
            }
        };
        if key.is_empty() {
            return Err("an empty key".into());
        }
        if is_reserved(key) {
            return Err("keys that start with 0xFF 0xFF are reserved".into());
        }
        Ok(())
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The key's value before the write (for a set or a delete).
    pub previous: Option<Vec<u8>>,
    /// Why the write was refused, if it was (nothing was written).
    pub refused: Option<String>,
    /// A batch's answers, one per write, in order.
    pub batch: Vec<Response>,
}

impl Response {
    pub(crate) fn done(previous: Option<Vec<u8>>) -> Response {
        Response {
            previous,
            ..Response::default()
        }
    }

    pub(crate) fn refused(reason: String) -> Response {
        Response {
            refused: Some(reason),
            ..Response::default()
        }
    }

    pub(crate) fn batch(answers: Vec<Response>) -> Response {
        Response {
            batch: answers,
            ..Response::default()
        }
    }
}
