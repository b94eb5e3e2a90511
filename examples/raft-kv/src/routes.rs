//! The HTTP surface: openraft's RPCs between nodes (`/raft/…`), the
//! key-value API for clients (`/kv/{key}`), and what an operator or a test
//! looks at (`/cluster`, `/state`, `/dump`, `/metrics`).

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use concordkv::LimitsConfig;
use concordkv_raft::{Request, StateMachine, TypeConfig, RESERVED_PREFIX};

use crate::memory::MemoryStateMachine;
use crate::proposer::{Proposer, WriteError};
use metrics_exporter_prometheus::PrometheusHandle;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::Raft;
use serde::{Deserialize, Serialize};

use crate::network::{decode, encode, REFUSED, TOKEN_HEADER};

/// The applied keys, as reads see them.
pub enum Keys {
    /// On concordkv (the service).
    Durable(StateMachine<TypeConfig>),
    /// In memory (the benchmark's baseline).
    Memory(MemoryStateMachine),
}

impl Keys {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            Keys::Durable(sm) => sm.get(key),
            Keys::Memory(sm) => sm.get(key),
        }
    }

    /// The user's keys as this node applied them, in order.
    fn user_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let pairs = match self {
            Keys::Durable(sm) => sm.state().iter().collect(),
            Keys::Memory(sm) => sm.pairs(),
        };
        pairs
            .into_iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
            .collect()
    }
}

/// What every handler shares.
pub struct Node {
    pub id: u64,
    /// The cluster's shared secret: `/raft/…` requests must carry it.
    pub token: Option<String>,
    pub raft: Raft<TypeConfig>,
    pub proposer: Proposer,
    pub keys: Keys,
    pub limits: LimitsConfig,
    pub metrics: PrometheusHandle,
}

/// Mounts every route; a write's body may hold at most `max_value` bytes
/// (refused with 413 before it is read whole).
pub fn configure(max_value: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| mount(cfg, max_value)
}

fn mount(cfg: &mut web::ServiceConfig, max_value: usize) {
    cfg.route("/raft/append", web::post().to(append))
        .route("/raft/vote", web::post().to(vote))
        .route("/raft/snapshot", web::post().to(snapshot))
        .service(
            web::resource("/kv/{key}")
                .app_data(web::PayloadConfig::new(max_value))
                .route(web::get().to(get))
                .route(web::put().to(set))
                .route(web::delete().to(delete)),
        )
        .route("/cluster", web::get().to(cluster))
        .route("/state", web::get().to(state))
        .route("/dump", web::get().to(dump))
        .route("/metrics", web::get().to(metrics));
}

/// Refuses what a web page can send: a browser adds `Origin` to a
/// cross-origin POST, PUT or DELETE (and to any fetch), while the nodes and
/// command-line clients never do. Without this, a page open on the same
/// host could post a forged vote (and unseat the leader) or write keys.
/// A page that rebinds its own host name to this address sends no
/// `Origin` on its same-origin reads, but names its host in `Host`: only
/// an IP address or `localhost` is accepted there.
pub async fn refuse_browsers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let from_a_page = req.headers().contains_key(header::ORIGIN)
        || req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none");
    if from_a_page {
        return Err(actix_web::error::ErrorForbidden(
            "requests from web pages are refused (Origin or Sec-Fetch-Site present)",
        ));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_address(host) {
        return Err(actix_web::error::ErrorForbidden(
            "Host must be an IP address or localhost (with a port)",
        ));
    }
    // The token before the body is read: an RPC can be tens of megabytes.
    if req.path().starts_with("/raft/") {
        if let Some(node) = req.app_data::<web::Data<Node>>() {
            authorized(node, req.headers())?;
        }
    }
    next.call(req).await
}

/// Whether `host` (a `Host` header) names an address, not a domain.
fn is_address(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok());
    let name = name.map_or(host, |(name, _)| name).trim_matches(['[', ']']);
    name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

/// Checks the cluster token of an RPC, in constant time.
fn authorized(node: &Node, headers: &header::HeaderMap) -> Result<(), actix_web::Error> {
    let Some(token) = &node.token else {
        return Ok(());
    };
    let given = headers.get(TOKEN_HEADER).map_or(&b""[..], |v| v.as_bytes());
    if bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_bytes())) {
        Ok(())
    } else {
        Err(actix_web::error::ErrorUnauthorized(
            "a Raft RPC without the cluster's token",
        ))
    }
}

/// An RPC's answer: bincode, or the peer's refusal as JSON (see `network`).
fn rpc_answer<T: Serialize, E: Serialize>(result: Result<T, RaftError<u64, E>>) -> HttpResponse {
    match result {
        Ok(answer) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(encode(&answer)),
        Err(refusal) => HttpResponse::build(StatusCode::from_u16(REFUSED).expect("a valid status"))
            .json(refusal),
    }
}

/// The RPC bodies are bincode; anything else (a form a page posts, say)
/// is refused before it is decoded.
fn rpc_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, actix_web::Error> {
    let octets = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    if !octets {
        return Err(actix_web::error::ErrorUnsupportedMediaType(
            "Raft RPCs are application/octet-stream (bincode)",
        ));
    }
    decode(body).map_err(|e| actix_web::error::ErrorBadRequest(format!("undecodable RPC: {e}")))
}

async fn append(
    node: web::Data<Node>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, actix_web::Error> {
    let rpc: AppendEntriesRequest<TypeConfig> = rpc_body(&req, &body)?;
    Ok(rpc_answer(node.raft.append_entries(rpc).await))
}

async fn vote(
    node: web::Data<Node>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, actix_web::Error> {
    let rpc: VoteRequest<u64> = rpc_body(&req, &body)?;
    Ok(rpc_answer(node.raft.vote(rpc).await))
}

async fn snapshot(
    node: web::Data<Node>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, actix_web::Error> {
    let rpc: InstallSnapshotRequest<TypeConfig> = rpc_body(&req, &body)?;
    Ok(rpc_answer(node.raft.install_snapshot(rpc).await))
}

/// Where a client should go instead: the leader, if this node knows it.
#[derive(Serialize)]
struct NotLeader {
    error: &'static str,
    leader_id: Option<u64>,
    leader: Option<String>,
}

fn not_leader(leader_id: Option<u64>, leader: Option<String>) -> HttpResponse {
    HttpResponse::MisdirectedRequest().json(NotLeader {
        error: "not the leader",
        leader_id,
        leader,
    })
}

#[derive(Serialize)]
struct Written {
    /// The log index the write was committed at.
    index: u64,
    /// The key's value before (UTF-8, lossy), if it had one.
    previous: Option<String>,
}

/// Proposes `request` (batched with concurrent writes) and answers once it
/// is committed (on a majority's disks) and applied here.
async fn write(node: &Node, request: Request) -> HttpResponse {
    if let Err(reason) = request.check(&node.limits) {
        return HttpResponse::BadRequest().body(reason);
    }
    match node.proposer.write(request).await {
        Ok((index, answer)) => match answer.refused {
            Some(reason) => HttpResponse::BadRequest().body(reason),
            None => HttpResponse::Ok().json(Written {
                index,
                previous: answer
                    .previous
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
            }),
        },
        Err(WriteError::NotLeader { leader_id, leader }) => not_leader(leader_id, leader),
        Err(WriteError::Unavailable(reason)) => HttpResponse::ServiceUnavailable().body(reason),
    }
}

async fn set(node: web::Data<Node>, key: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let request = Request::Set {
        key: key.into_inner().into_bytes(),
        value: body.to_vec(),
    };
    write(&node, request).await
}

async fn delete(node: web::Data<Node>, key: web::Path<String>) -> HttpResponse {
    let request = Request::Delete {
        key: key.into_inner().into_bytes(),
    };
    write(&node, request).await
}

#[derive(Deserialize)]
struct ReadOptions {
    /// `linearizable` (the default: the leader confirms it still leads
    /// and waits until it applied everything committed before the read)
    /// or `local` (this node's state as applied, on any node).
    #[serde(default)]
    consistency: Option<String>,
}

async fn get(
    node: web::Data<Node>,
    key: web::Path<String>,
    options: web::Query<ReadOptions>,
) -> HttpResponse {
    let key = key.into_inner().into_bytes();
    if key.starts_with(RESERVED_PREFIX) {
        return HttpResponse::BadRequest().body("keys that start with 0xFF 0xFF are reserved");
    }
    match options.consistency.as_deref() {
        None | Some("linearizable") => match node.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(to))) => {
                return not_leader(to.leader_id, to.leader_node.map(|n| n.addr));
            }
            Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
        },
        Some("local") => {}
        Some(other) => {
            return HttpResponse::BadRequest().body(format!(
                "consistency={other}: accepted linearizable or local"
            ));
        }
    }
    match node.keys.get(&key) {
        Some(value) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(value),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn cluster(node: web::Data<Node>) -> HttpResponse {
    let metrics = node.raft.metrics().borrow().clone();
    HttpResponse::Ok().json(metrics)
}

#[derive(Serialize)]
struct Summary {
    id: u64,
    last_applied: Option<u64>,
    keys: u64,
    /// CRC-32 of every key and value in order, length-prefixed: equal
    /// on two nodes that applied the same writes.
    digest: String,
}

async fn state(node: web::Data<Node>) -> HttpResponse {
    let last_applied = node.raft.metrics().borrow().last_applied.map(|id| id.index);
    let mut digest = crc32fast::Hasher::new();
    let mut keys = 0;
    for (key, value) in node.keys.user_pairs() {
        digest.update(&(key.len() as u64).to_le_bytes());
        digest.update(&key);
        digest.update(&(value.len() as u64).to_le_bytes());
        digest.update(&value);
        keys += 1;
    }
    HttpResponse::Ok().json(Summary {
        id: node.id,
        last_applied,
        keys,
        digest: format!("{:08x}", digest.finalize()),
    })
}

/// Every key and value (UTF-8, lossy) as this node applied them.
async fn dump(node: web::Data<Node>) -> HttpResponse {
    let pairs: BTreeMap<String, String> = node
        .keys
        .user_pairs()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    HttpResponse::Ok().json(pairs)
}

/// Prometheus text: the stores' metrics and the node's Raft state.
async fn metrics(node: web::Data<Node>) -> HttpResponse {
    {
        let raft = node.raft.metrics().borrow().clone();
        let labels = [("node", node.id.to_string())];
        metrics::gauge!("raft_kv_term", &labels).set(raft.current_term as f64);
        metrics::gauge!("raft_kv_last_log_index", &labels)
            .set(raft.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("raft_kv_last_applied_index", &labels)
            .set(raft.last_applied.map_or(0, |id| id.index) as f64);
        metrics::gauge!("raft_kv_snapshot_index", &labels)
            .set(raft.snapshot.map_or(0, |id| id.index) as f64);
        metrics::gauge!("raft_kv_is_leader", &labels)
            .set(f64::from(u8::from(raft.current_leader == Some(node.id))));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(node.metrics.render())
}
