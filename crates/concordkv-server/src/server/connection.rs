//! One client connection: read whatever arrived, run every complete request
//! in it, then answer them all in order with one write (or one per
//! `FLUSH_BYTES` of replies, so a client that does not read its replies
//! holds little of the server's memory).
//!
//! Writes in a pipeline are all submitted before the first is awaited, so a
//! client that pipelines N writes has them all in one group commit instead
//! of paying N syncs; the replies still go out in request order. A command
//! that reads the state first waits for the replies before it (the
//! acknowledgements of the connection's earlier writes): the state shows a
//! write only once it is acknowledged, and a client must see its own. Once
//! the log's queue is full (`limits.max_pending_bytes`), submitting a write
//! waits for room, and the connection reads nothing more until it has it.
//!
//! A connection is closed at once when it speaks HTTP (see
//! [`cross_protocol`]), when it sends no complete request for
//! `server.idle_timeout_ms`, when a request takes longer than
//! `server.request_timeout_ms` to arrive, or when its buffers are the
//! largest while all clients' together exceed their cap (see [`clients`]).
//!
//! [`cross_protocol`]: crate::server::cross_protocol
//! [`clients`]: crate::server::clients

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::server::auth;
use crate::server::clients::ClientSlot;
use crate::server::cmd::{self, error, write_error, Reply};
use crate::server::cross_protocol::looks_like_http;
use crate::server::db::Db;
use crate::server::frame::Protocol;
use crate::server::request::RequestParser;
use crate::server::session::Session;
use concordkv::{LimitsConfig, Secret, ServerConfig};

/// Bytes read from the socket at a time (grown when a request is larger).
const READ_CHUNK: usize = 16 * 1024;
/// Replies are written out once they fill this much: a few bytes of
/// pipelined GETs of a large value must not become gigabytes of encoded
/// replies held at once for a client that does not read them.
const FLUSH_BYTES: usize = 64 * 1024;

/// What every connection is served with, from `[server]`.
pub struct ConnectionSettings {
    pub max_request_bytes: usize,
    /// What one `MULTI` may queue: its writes become one record, so no
    /// more than `limits.max_record_bytes` (a client queueing without end
    /// would otherwise grow the server's memory without bound).
    pub max_transaction_bytes: usize,
    pub password: Secret,
    /// Longest time without a complete request.
    pub idle_timeout: Option<Duration>,
    /// Longest time a request may take to arrive once it has begun.
    pub request_timeout: Option<Duration>,
}

impl ConnectionSettings {
    /// The settings `[server]` describes (a timeout of 0 is none).
    pub fn new(config: &ServerConfig, limits: &LimitsConfig) -> ConnectionSettings {
        let timeout = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        ConnectionSettings {
            max_request_bytes: usize::try_from(config.max_request_bytes).unwrap_or(usize::MAX),
            max_transaction_bytes: usize::try_from(limits.max_record_bytes).unwrap_or(usize::MAX),
            password: config.requirepass.clone(),
            idle_timeout: timeout(config.idle_timeout_ms),
            request_timeout: timeout(config.request_timeout_ms),
        }
    }
}

/// Serves one connection until the client leaves, sends `QUIT`, breaks the
/// protocol, times out, or is disconnected to bring the buffers under their cap.
pub async fn serve_connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    db: Rc<Db>,
    settings: Arc<ConnectionSettings>,
    slot: ClientSlot,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut parser = RequestParser::new(settings.max_request_bytes);
    // Each reply with the protocol in force when its request ran: a
    // `HELLO 3` changes the encoding of the replies after its own only.
    let mut replies: Vec<(Reply, Protocol)> = Vec::new();
    let mut session = Session::new(
        slot.id(),
        peer,
        settings.password.clone(),
        settings.max_transaction_bytes,
        Rc::clone(db.watches()),
    );
    let mut first_request = true;
    let mut last_request = Instant::now();
    // When the incomplete request at the front of `input` began to arrive.
    let mut request_began: Option<Instant> = None;
    loop {
        let mut closing = false;
        let mut completed = false;
        loop {
            let request = match parser.parse(&mut input) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(e) => {
                    replies.push((Reply::Close(error(e.to_string())), session.protocol()));
                    closing = true;
                    break;
                }
            };
            completed = true;
            let Some(command) = request.args.first() else {
                continue;
            };
            let first_inline = std::mem::take(&mut first_request) && request.inline;
            if looks_like_http(&request.args, first_inline) {
                tracing::warn!(
                    %peer,
                    "possible cross-protocol attack: the client sent HTTP to the RESP port; \
                     connection closed before running anything it sent after it"
                );
                return Ok(());
            }
            if cmd::reads_state(command)
                && !send_replies(&mut replies, &mut socket, &mut output, &slot, &input).await?
            {
                return Ok(());
            }
            let reply = if !session.may_run(command) {
                Reply::Now(auth::noauth())
            } else if let Some(reply) = session.run(&request.args, db.as_ref()) {
                Reply::Now(reply)
            } else if command.eq_ignore_ascii_case(b"EXEC") && request.args.len() == 1 {
                match session.exec() {
                    Ok((transaction, watching)) => {
                        cmd::transaction::exec(&db, transaction, watching).await
                    }
                    Err(refusal) => Reply::Now(refusal),
                }
            } else {
                // A write waits here for room in the log's queue, before
                // the next request is parsed or more input read.
                cmd::execute(request.args, &db).await
            };
            closing = matches!(reply, Reply::Close(_));
            // After the command: HELLO answers in the protocol it chose.
            replies.push((reply, session.protocol()));
            if closing {
                break;
            }
        }
        if completed {
            last_request = Instant::now();
        }
        if !send_replies(&mut replies, &mut socket, &mut output, &slot, &input).await?
            || !flush(&mut socket, &mut output, &slot, &input).await?
        {
            return Ok(());
        }
        if closing {
            return socket.shutdown().await;
        }
        request_began = match request_began {
            _ if input.is_empty() => None,
            Some(began) if !completed => Some(began),
            _ => Some(Instant::now()),
        };
        slot.set_buffered(input.len());
        let deadline = [
            settings.idle_timeout.map(|t| (last_request + t, "idle")),
            settings
                .request_timeout
                .zip(request_began)
                .map(|(t, began)| (began + t, "request")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at);
        input.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = socket.read_buf(&mut input) => read?,
            () = slot.evicted() => return Ok(()),
            why = expire(deadline) => {
                match why {
                    "idle" => tracing::debug!(%peer, "closing a client idle for server.idle_timeout_ms"),
                    _ => tracing::info!(
                        %peer,
                        bytes = input.len(),
                        "closing a client whose request took longer than server.request_timeout_ms"
                    ),
                }
                return Ok(());
            }
        };
        if read == 0 {
            return Ok(());
        }
        slot.set_buffered(input.len());
    }
}

/// Waits for each queued reply in order and encodes it into `output`,
/// writing out every [`FLUSH_BYTES`]; `false` if the client was
/// disconnected meanwhile to bring all buffers under their cap.
async fn send_replies(
    replies: &mut Vec<(Reply, Protocol)>,
    socket: &mut TcpStream,
    output: &mut BytesMut,
    slot: &ClientSlot,
    input: &BytesMut,
) -> std::io::Result<bool> {
    for (reply, protocol) in replies.drain(..) {
        let frame = match reply {
            Reply::Now(frame) | Reply::Close(frame) => frame,
            Reply::Later { pending, ok } => match pending.await {
                Ok(_) => ok,
                Err(e) => write_error(&e),
            },
            Reply::Wait(work) => work.await,
        };
        frame.encode(protocol, output);
        if output.len() >= FLUSH_BYTES && !flush(socket, output, slot, input).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes out and clears `output`; `false` if the client was disconnected
/// meanwhile to bring all buffers under their cap.
async fn flush(
    socket: &mut TcpStream,
    output: &mut BytesMut,
    slot: &ClientSlot,
    input: &BytesMut,
) -> std::io::Result<bool> {
    if output.is_empty() {
        return Ok(true);
    }
    slot.set_buffered(input.len() + output.len());
    tokio::select! {
        written = socket.write_all(output) => written?,
        () = slot.evicted() => return Ok(false),
    }
    output.clear();
    Ok(true)
}

/// Resolves with the deadline's name when it passes; never without one.
async fn expire(deadline: Option<(Instant, &'static str)>) -> &'static str {
    match deadline {
        Some((at, why)) => {
            tokio::time::sleep_until(at).await;
            why
        }
        None => std::future::pending().await,
    }
}
