//! `GET /log?from=SEQ`: the store's records from `SEQ` on, as they are
//! acknowledged, one JSON object per line (NDJSON), until the client goes
//! away or the server stops.
//!
//! Each line is `{"seq":N,"ops":[...]}` with one op per change, in order:
//! `{"op":"set","key":K,"value":V}` or `{"op":"delete","key":K}` (an atomic
//! batch is one record with several ops). Keys and values are UTF-8 text
//! as in `GET /kv`. `from` defaults to the next record to be written. When
//! the log no longer holds `from` (a snapshot or compaction purged it), the
//! answer is 410 Gone; should that happen to a stream already under way, it
//! ends with a line `{"error":...}`.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use concordkv::{Op, Record, Seq, State, Store};
use futures_util::stream;
use serde::{Deserialize, Serialize};

use crate::routes::ApiError;

/// The query of `GET /log`.
#[derive(Deserialize)]
pub struct LogQuery {
    from: Option<Seq>,
}

#[derive(Serialize)]
struct Line {
    seq: Seq,
    ops: Vec<LineOp>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LineOp {
    Set {
        key: String,
        value: String,
        /// Milliseconds since the Unix epoch, for a key that expires.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    Delete {
        key: String,
    },
    Clear,
}

pub async fn log(
    query: web::Query<LogQuery>,
    store: web::Data<Store>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let last = state.last_seq();
    let from = query.from.unwrap_or(last + 1).max(1);
    let mut subscription = store.subscribe(from);
    // Records that exist already come at once, or the subscription says
    // they were purged: wait for the first one to choose the status. A
    // stream from the future starts at once (nothing of it can be purged).
    let first = if from <= last {
        match subscription.next().await {
            Some(Err(concordkv::Error::Purged { upto })) => {
                return Ok(HttpResponse::build(StatusCode::GONE)
                    .content_type("text/plain")
                    .body(format!(
                        "records up to {upto} were purged; the log starts after it\n"
                    )));
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(record)) => Some(record),
            None => None,
        }
    } else {
        None
    };
    let lines = stream::unfold(
        (first, Some(subscription)),
        |(first, subscription)| async move {
            if let Some(record) = first {
                return Some((Ok(line(&record)), (None, subscription)));
            }
            let mut subscription = subscription?;
            match subscription.next().await? {
                Ok(record) => Some((Ok(line(&record)), (None, Some(subscription)))),
                // Said once, then the stream ends.
                Err(e) => Some((Ok(error_line(&e)), (None, None))),
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming::<_, actix_web::Error>(lines))
}

fn line(record: &Record) -> Bytes {
    let ops = record
        .entry
        .ops()
        .iter()
        .map(|op| match op {
            Op::Set { key, value } => LineOp::Set {
                key: text(key),
                value: text(value),
                expires_at: None,
            },
            Op::SetExpiring {
                key,
                value,
                expires_at,
            } => LineOp::Set {
                key: text(key),
                value: text(value),
                expires_at: Some(*expires_at),
            },
            Op::Delete { key } => LineOp::Delete { key: text(key) },
            Op::Clear => LineOp::Clear,
        })
        .collect();
    json_line(&Line {
        seq: record.seq,
        ops,
    })
}

fn error_line(e: &concordkv::Error) -> Bytes {
    json_line(&serde_json::json!({ "error": e.to_string() }))
}

fn json_line(value: &impl Serialize) -> Bytes {
    // Serializing these plain structs cannot fail; an empty object keeps
    // the stream well-formed if it ever did.
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
