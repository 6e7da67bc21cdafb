//! Middleware: the `ZUMO-API-VERSION` gate and no-cache header on table routes, HTTP/1.1
//! framing checks (RFC 9112: `Host`, transfer codings), the body read timeout and the request
//! timeout. The request log and the server-version header are `crate::observe::request`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tablesync_protocol::headers::{is_supported_api_version, ZUMO_API_VERSION};

use crate::app::{raw_query_value, App};
use crate::auth::Identity;
use crate::config::TableOperation;
use crate::error::ApiError;

/// `x-zumo-server-version: tablesync-<crate version>` on every response (stamped by
/// `crate::observe::request`).
pub const SERVER_VERSION: &str = concat!("tablesync-", env!("CARGO_PKG_VERSION"));

/// Table routes: the operation must exist (404 table, 405 disabled), the caller is
/// authenticated (401 for a refused token, then 401 for an anonymous caller of an authenticated
/// operation), then `ZUMO-API-VERSION` 2.0.x is required (header first, then the query key in
/// any case; OPTIONS exempt): the order of `shared/design/auth.md` 6.3. The caller's
/// [`Identity`] goes to the handler as a request extension ([`super::extract::Caller`]); every
/// answer is marked `Cache-Control: no-cache`.
pub async fn table_gate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let mut response = match admit(&app, &req) {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The checks of [`table_gate`], in order; the caller when they pass.
fn admit(app: &App, req: &Request) -> Result<Identity, ApiError> {
    if req.method() == Method::OPTIONS {
        return Ok(Identity::Anonymous);
    }
    let target = table_operation(req.method(), req.uri().path());
    if let Some((table, op)) = &target {
        app.check_operation(table, *op)?;
    }
    let identity = caller(app, req.headers())?;
    if let Some((table, op)) = &target {
        app.authorize(table, *op, &identity)?;
    }
    check_api_version(app, req)?;
    Ok(identity)
}

/// The caller named by the configured token headers: anonymous without a token (or without
/// `[auth]`), 401 for a token that does not verify.
pub fn caller(app: &App, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let values: Vec<(String, Vec<Vec<u8>>)> = app
        .token_header_names()
        .iter()
        .map(|name| {
            let values = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            (name.clone(), values)
        })
        .collect();
    app.authenticate(&values)
}

/// The table and operation of a table route (`/tables/{table}[/{id}]`), None for a method no
/// route takes (its 405 comes from the router).
fn table_operation(method: &Method, path: &str) -> Option<(String, TableOperation)> {
    // The change feed is a table read (docs/extensions.md section 5).
    if let Some(table) = path.strip_prefix("/$changes/") {
        let table = percent_decode_str(table).decode_utf8_lossy().into_owned();
        return matches!(method.as_str(), "GET" | "HEAD").then_some((table, TableOperation::Read));
    }
    let rest = path.strip_prefix("/tables/")?;
    let (table, has_id) = match rest.split_once('/') {
        Some((table, _)) => (table, true),
        None => (rest, false),
    };
    let table = percent_decode_str(table).decode_utf8_lossy().into_owned();
    let op = match (method.as_str(), has_id) {
        ("GET" | "HEAD", _) => TableOperation::Read,
        ("POST", false) => TableOperation::Insert,
        ("POST", true) => TableOperation::Undelete,
        // With or without an id in the path: the collection URL takes the id from the body
        // or the query (the Node server's routes).
        ("PATCH", _) => TableOperation::Update,
        ("DELETE", _) => TableOperation::Delete,
        _ => return None,
    };
    Some((table, op))
}

fn check_api_version(app: &App, req: &Request) -> Result<(), ApiError> {
    if app.skip_version_check() || req.method() == Method::OPTIONS {
        return Ok(());
    }
    let version = match req.headers().get(ZUMO_API_VERSION) {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => match raw_query_value(req.uri().query().unwrap_or(""), ZUMO_API_VERSION, true) {
            Some(v) => percent_decode_str(v).decode_utf8_lossy().into_owned(),
            None => return Err(ApiError::ApiVersionMissing),
        },
    };
    if is_supported_api_version(version.trim()) {
        Ok(())
    } else {
        Err(ApiError::ApiVersionUnsupported)
    }
}

/// Answer when a request runs longer than `limits.request_timeout_ms`: a read with 503
/// `service_unavailable` (safe to retry), a write with 504 `outcome_unknown`.
///
/// Only the response is abandoned: a database write already handed to the store still runs to
/// commit or rollback (SQLite's blocking task cannot be cancelled, and PostgreSQL may have the
/// COMMIT in flight), so a timed-out write may have been applied. Claiming "unavailable" would
/// invite a blind retry; `outcome_unknown` tells the client to re-read the item first.
pub async fn timeout(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit_ms = app.limits().request_timeout_ms;
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match tokio::time::timeout(Duration::from_millis(limit_ms), next.run(req)).await {
        Ok(response) => response,
        Err(_) if is_write => ApiError::WriteTimeout { limit_ms }.into_response(),
        Err(_) => ApiError::Timeout { limit_ms }.into_response(),
    }
}

/// RFC 9112 checks hyper leaves to the server: an HTTP/1.1 request has exactly one `Host`
/// (section 3.2: 400 otherwise), and a transfer coding other than `chunked` is 501 (section 7:
/// `gzip, chunked` was accepted and the gzip ignored). A request body with a content coding
/// (`Content-Encoding`) other than `identity` is 415 (RFC 9110 section 8.4.1): we decode none,
/// and before, a gzip body's raw bytes were parsed as if plain.
pub async fn framing(req: Request, next: Next) -> Response {
    if req.version() == axum::http::Version::HTTP_11 {
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if hosts != 1 {
            let what = if hosts == 0 {
                "no Host header"
            } else {
                "more than one Host header"
            };
            return ApiError::BadRequest(format!(
                "An HTTP/1.1 request must have exactly one Host header; this one has {what}"
            ))
            .into_response();
        }
    }
    for value in req.headers().get_all(header::TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return ApiError::UnsupportedTransferCoding(coding.to_owned()).into_response();
            }
        }
    }
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("identity") {
                return ApiError::UnsupportedContentCoding(coding.to_owned()).into_response();
            }
        }
    }
    next.run(req).await
}

/// Read the whole request body within `limits.body_read_timeout_ms` before the request starts
/// (and before [`timeout`]'s clock): a body that does not arrive in time is 408
/// `request_timeout` and the connection is closed. Before, a write whose body stalled got 504
/// `outcome_unknown` after the request timeout, although nothing had started.
///
/// At most `limits.body_bytes_max + 1` bytes are read (the extractor answers 413 for more), and
/// a body whose `Content-Length` is over the limit is not waited for at all.
pub async fn body_in_time(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limits = app.limits();
    let (limit_ms, max) = (limits.body_read_timeout_ms, limits.body_bytes_max);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = super::extract::read_body(body, max);
    match tokio::time::timeout(Duration::from_millis(limit_ms), read).await {
        Err(_) => ApiError::BodyTimeout { limit_ms }.into_response(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_operations() {
        let op = |m: Method, p: &str| table_operation(&m, p);
        assert_eq!(
            op(Method::POST, "/tables/Todo%49tem"),
            Some(("TodoItem".into(), TableOperation::Insert))
        );
        assert_eq!(
            op(Method::POST, "/tables/T/x"),
            Some(("T".into(), TableOperation::Undelete))
        );
        assert_eq!(op(Method::PUT, "/tables/T/x"), None);
        assert_eq!(
            op(Method::GET, "/$changes/Todo%49tem"),
            Some(("TodoItem".into(), TableOperation::Read))
        );
        assert_eq!(op(Method::POST, "/$changes/T"), None);
        assert_eq!(op(Method::GET, "/other"), None);
    }
}
