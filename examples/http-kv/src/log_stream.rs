//! `GET /log?from=SEQ`: the store's records from `SEQ` on, one JSON object
//! per line (NDJSON). It needs the library's log subscription
//! (`Store::subscribe`), which this version of the library does not have
//! yet: until then the route answers 501 Not Implemented.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use concordkv::Seq;
use serde::Deserialize;

/// The query of `GET /log`.
#[derive(Deserialize)]
pub struct LogQuery {
    #[allow(dead_code)] // read once the subscription exists
    from: Option<Seq>,
}

pub async fn log(_query: web::Query<LogQuery>) -> HttpResponse {
    HttpResponse::build(StatusCode::NOT_IMPLEMENTED)
        .content_type("text/plain")
        .body("the log stream needs Store::subscribe, not in this version of the library\n")
}
