//! The HTTP routes, and how the store's errors become status codes.
//!
//! Reads go to the `State` (the store's in-memory view of everything
//! acknowledged); writes go through the `Store` and are answered once the
//! store acknowledged them.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use concordkv::{State, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::log_stream;

/// Keys a listing returns when the request names no `limit`.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Most keys one listing returns: a response stays a few megabytes at most
/// for ordinary keys and values (pages of more need the client to ask again
/// with a longer prefix).
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/kv", web::get().to(list))
        // `.+`: keys may contain `/`.
        .service(
            web::resource("/kv/{key:.+}")
                .route(web::get().to(get))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        )
        .route("/log", web::get().to(log_stream::log));
}

/// Refuses what a web page can send. A page on another origin gets no
/// answer to a `PUT` or `DELETE` past CORS, but a page that rebinds its own
/// host name to this address is same-origin: it reads and writes freely,
/// and names its host in `Host`. So `Host` must be an IP address or
/// `localhost`, and a request carrying `Origin` or cross-site fetch
/// metadata (which browsers add, and programs do not) is refused too.
pub async fn refuse_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !host.is_some_and(is_address) {
        return Err(actix_web::error::ErrorForbidden(
            "Host must be an IP address or localhost (with a port)",
        ));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"none");
    if headers.contains_key(header::ORIGIN) || cross_site {
        return Err(actix_web::error::ErrorForbidden(
            "requests from web pages are refused (Origin or Sec-Fetch-Site present)",
        ));
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

/// A failed request: what the client sees.
#[derive(Debug)]
pub enum ApiError {
    /// Refused before anything was written (a limit, an invalid key, a bad
    /// parameter): 400, with the reason.
    Refused(String),
    /// The store could not do it (a failed disk, a stopped log, shutting
    /// down): 503, with the store's error.
    Unavailable(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Refused(why) | ApiError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Refused(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type(ContentType::plaintext())
            .body(format!("{self}\n"))
    }
}

impl From<concordkv::Error> for ApiError {
    fn from(e: concordkv::Error) -> Self {
        match e {
            concordkv::Error::InvalidRequest(_) => ApiError::Refused(e.to_string()),
            other => {
                eprintln!("http-kv: store error: {other}");
                ApiError::Unavailable(other.to_string())
            }
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// `GET /kv/{key}`: the value's bytes, or 404.
async fn get(key: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    match state.get(key.as_bytes()) {
        Some(value) => HttpResponse::Ok()
            .content_type(ContentType::octet_stream())
            .body(value),
        None => not_found(),
    }
}

/// `PUT /kv/{key}`: sets the key to the request body. 201 if the key did
/// not exist when the request arrived, 200 if it did; the body is the
/// record's sequence number. Answered only once the store acknowledged it.
async fn put(
    key: web::Path<String>,
    body: web::Payload,
    store: web::Data<Store>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner().into_bytes();
    // The store refuses a value over the limit; reading at most that much
    // (plus one byte, to know it is over) keeps a huge body out of memory.
    let max = store.config().limits.max_value_bytes;
    let value = match body
        .to_bytes_limited(usize::try_from(max).unwrap_or(usize::MAX))
        .await
    {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => return Err(ApiError::Refused(format!("reading the body: {e}"))),
        Err(_) => {
            return Err(ApiError::Refused(format!(
                "value exceeds limits.max_value_bytes = {max}"
            )))
        }
    };
    let existed = state.contains(&key);
    let seq = store.set(key, value.to_vec()).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status)
        .content_type(ContentType::plaintext())
        .body(format!("{seq}\n")))
}

/// `DELETE /kv/{key}`: removes the key; the body is the record's sequence
/// number. 404 (and nothing written) if the key does not exist.
async fn delete(
    key: web::Path<String>,
    store: web::Data<Store>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner().into_bytes();
    if !state.contains(&key) {
        return Ok(not_found());
    }
    let seq = store.delete(key).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(format!("{seq}\n")))
}

/// The query of `GET /kv`.
#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// One key of a listing. Keys and values are shown as UTF-8 text; bytes
/// that are not valid UTF-8 become U+FFFD (`GET /kv/{key}` returns the
/// exact bytes).
#[derive(Serialize)]
struct Item {
    key: String,
    value: String,
}

/// `GET /kv?prefix=P&limit=N`: the keys starting with `P` in byte order, at
/// most `N` (default 100, at most 10,000), as a JSON array of
/// `{"key": ..., "value": ...}`.
async fn list(
    query: web::Query<ListQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit > MAX_LIST_LIMIT {
        return Err(ApiError::Refused(format!(
            "limit = {limit} is over the maximum of {MAX_LIST_LIMIT}"
        )));
    }
    let items: Vec<Item> = state
        .prefix(query.prefix.as_bytes())
        .take(limit)
        .map(|(key, value)| Item {
            key: String::from_utf8_lossy(&key).into_owned(),
            value: String::from_utf8_lossy(&value).into_owned(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type(ContentType::plaintext())
        .body("not found\n")
}
