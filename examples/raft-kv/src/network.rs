//! How a node reaches the others: openraft's three RPCs as HTTP POSTs to
//! `/raft/{append,vote,snapshot}` on the peer's address.
//!
//! Requests and successful answers are bincode (an append carries many
//! entries of raw bytes); a refusal from the peer's Raft (`RaftError`)
//! comes back as JSON with status 409, so that its free-form details
//! never depend on a non-self-describing format.

use std::error::Error as StdError;

use concordkv_raft::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Status of an answer that carries the peer's `RaftError` (as JSON).
pub const REFUSED: u16 = 409;
/// The header that carries the cluster's shared token, when it has one.
pub const TOKEN_HEADER: &str = "x-raft-kv-token";

/// Makes a [`Peer`] per target node; one HTTP client (and connection pool)
/// for them all.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    token: Option<String>,
}

impl Network {
    /// A client that sends `token` (the cluster's shared secret) with each
    /// RPC, if there is one.
    pub fn new(token: Option<String>) -> Result<Network, reqwest::Error> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Network { client, token })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            token: self.token.clone(),
            target,
            base: format!("http://{}/raft", node.addr),
        }
    }
}

/// One peer, as openraft's replication and elections talk to it.
pub struct Peer {
    client: reqwest::Client,
    token: Option<String>,
    target: u64,
    base: String,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(v, _)| v)
}

impl Peer {
    /// `entries`: how many log entries `request` carries, for a peer that
    /// finds it too large.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        entries: usize,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let network =
            |e: &dyn StdError| RPCError::Network(NetworkError::new(&Described(e.to_string())));
        let mut post = self
            .client
            .post(format!("{}/{path}", self.base))
            .timeout(option.hard_ttl())
            .header("content-type", "application/octet-stream");
        if let Some(token) = &self.token {
            post = post.header(TOKEN_HEADER, token);
        }
        let answer = post.body(encode(request)).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                network(&e)
            }
        })?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| network(&e))?;
        if status.as_u16() == REFUSED {
            let refusal: RaftError<u64, E> =
                serde_json::from_slice(&body).map_err(|e| network(&e))?;
            return Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                refusal,
            )));
        }
        if status.as_u16() == 413 && entries > 1 {
            // openraft sends fewer entries next time. (One entry, or a
            // snapshot chunk, too large for the peer is a network error:
            // it is retried after a pause, not at once.)
            let fewer = (entries / 2) as u64;
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        if !status.is_success() {
            return Err(network(&Described(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))));
        }
        decode(&body).map_err(|e| network(&e))
    }
}

/// An error that is only its message.
#[derive(Debug)]
struct Described(String);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Described {}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len();
        self.call("append", &rpc, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("vote", &rpc, 0, &option).await
    }
}
