//! One client connection: read whatever arrived, run every complete request
//! in it, then answer them all in order with one write.
//!
//! Writes in a pipeline are all submitted before the first is awaited, so a
//! client that pipelines N writes has them all in one group commit instead
//! of paying N syncs; the replies still go out in request order.

use std::sync::Arc;

use bytes::BytesMut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::cmd::{self, error, Reply};
use crate::server::db::Db;
use crate::server::request::parse_request;

/// Bytes read from the socket at a time (grown when a request is larger).
const READ_CHUNK: usize = 16 * 1024;

/// Serves one connection until the client leaves, sends `QUIT`, or breaks
/// the protocol.
pub async fn serve_connection(
    mut socket: TcpStream,
    db: Arc<Db>,
    max_request_bytes: usize,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut replies: Vec<Reply> = Vec::new();
    loop {
        let mut closing = false;
        loop {
            match parse_request(&mut input, max_request_bytes) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => {
                    let reply = cmd::execute(args, &db);
                    closing = matches!(reply, Reply::Close(_));
                    replies.push(reply);
                    if closing {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    replies.push(Reply::Close(error(e.to_string())));
                    closing = true;
                    break;
                }
            }
        }
        for reply in replies.drain(..) {
            let frame = match reply {
                Reply::Now(frame) | Reply::Close(frame) => frame,
                Reply::Later { pending, ok } => match pending.await {
                    Ok(_) => ok,
                    Err(e) => error(e.to_string()),
                },
                Reply::Wait(work) => work.await,
            };
            encode(&mut output, &frame);
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
        if closing {
            return socket.shutdown().await;
        }
        input.reserve(READ_CHUNK);
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

fn encode(output: &mut BytesMut, frame: &BytesFrame) {
    if let Err(e) = extend_encode(output, frame, false) {
        tracing::error!(%e, "could not encode a reply");
        let _ = extend_encode(output, &error("internal error encoding the reply"), false);
    }
}
