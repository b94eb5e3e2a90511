//! Batches the writes of concurrent clients into one Raft entry.
//!
//! openraft 0.9 appends each proposal's entry and waits for its
//! `fdatasync` before it takes the next proposal, so a leader that proposed
//! every client write on its own would sync once per write. Here the writes
//! that arrive while earlier proposals are under way wait in a queue and
//! go together, as one `Request::Batch`, the next time a proposal slot
//! frees: one entry, one sync on each node, however many clients. (The
//! followers' appends already carry many entries each.)

use std::sync::Arc;

use concordkv_raft::{Request, Response, TypeConfig};
use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Proposals under way at once: one being synced by the leader while the
/// one before it is replicated and applied.
const IN_FLIGHT: usize = 2;
/// Writes per proposal, at most.
const MAX_WRITES: usize = 4096;

/// Why a write was not committed.
pub enum WriteError {
    /// This node does not lead; the leader, if known.
    NotLeader {
        leader_id: Option<u64>,
        leader: Option<String>,
    },
    /// Raft could not take it (shutting down, a storage failure).
    Unavailable(String),
}

type Reply = oneshot::Sender<Result<(u64, Response), WriteError>>;

/// The queue in front of `Raft::client_write`.
pub struct Proposer {
    queue: mpsc::Sender<(Request, usize, Reply)>,
}

impl Proposer {
    /// Starts the batching task; `max_bytes` bounds a proposal's keys and
    /// values (the log's record limit, with room for the encoding).
    pub fn start(raft: Raft<TypeConfig>, max_bytes: usize) -> Proposer {
        let (queue, rx) = mpsc::channel(MAX_WRITES);
        actix_web::rt::spawn(run(raft, rx, max_bytes));
        Proposer { queue }
    }

    /// Proposes `request`; answers with the log index it was committed at
    /// and what applying it answered.
    pub async fn write(&self, request: Request) -> Result<(u64, Response), WriteError> {
        let size = match &request {
            Request::Set { key, value } => key.len() + value.len(),
            Request::Delete { key } => key.len(),
            Request::Batch(requests) => requests.len() * 64,
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || WriteError::Unavailable("the node is stopping".into());
        self.queue
            .send((request, size, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut queue: mpsc::Receiver<(Request, usize, Reply)>,
    max_bytes: usize,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Everything that queued while the slots were busy goes together.
        let mut bytes = first.1;
        let mut writes = vec![first];
        while writes.len() < MAX_WRITES {
            match queue.try_recv() {
                Ok(write) if bytes + write.1 <= max_bytes => {
                    bytes += write.1;
                    writes.push(write);
                }
                Ok(write) => {
                    held = Some(write);
                    break;
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        actix_web::rt::spawn(async move {
            let _slot = slot;
            propose(&raft, writes).await;
        });
    }
}

async fn propose(raft: &Raft<TypeConfig>, mut writes: Vec<(Request, usize, Reply)>) {
    let single = writes.len() == 1;
    let proposal = if single {
        writes[0].0.clone()
    } else {
        Request::Batch(
            writes
                .iter_mut()
                .map(|w| std::mem::replace(&mut w.0, Request::Batch(Vec::new())))
                .collect(),
        )
    };
    match raft.client_write(proposal).await {
        Ok(written) => {
            let index = written.log_id.index;
            if single {
                let (_, _, reply) = writes.remove(0);
                let _ = reply.send(Ok((index, written.data)));
            } else {
                for ((_, _, reply), answer) in writes.into_iter().zip(written.data.batch) {
                    let _ = reply.send(Ok((index, answer)));
                }
            }
        }
        Err(e) => {
            for (_, _, reply) in writes {
                let _ = reply.send(Err(match &e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
                        WriteError::NotLeader {
                            leader_id: to.leader_id,
                            leader: to.leader_node.as_ref().map(|n| n.addr.clone()),
                        }
                    }
                    other => WriteError::Unavailable(other.to_string()),
                }));
            }
        }
    }
}
