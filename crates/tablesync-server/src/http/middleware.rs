//! Middleware: the `ZUMO-API-VERSION` gate and no-cache header on table routes, server-version
//! header, request timeout, and the one-line-per-request log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tablesync_protocol::headers::{is_supported_api_version, ZUMO_API_VERSION};

use crate::app::{raw_query_value, App};
use crate::error::ApiError;

/// `x-zumo-server-version: tablesync-<crate version>` on every response.
pub const SERVER_VERSION: &str = concat!("tablesync-", env!("CARGO_PKG_VERSION"));

static X_ZUMO_SERVER_VERSION: HeaderName = HeaderName::from_static("x-zumo-server-version");

/// Table routes: require `ZUMO-API-VERSION` 2.0.x (header first, then the query key in any case;
/// OPTIONS exempt), and mark every answer `Cache-Control: no-cache`.
pub async fn table_gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut response = match check_api_version(&app, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
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

/// Add `x-zumo-server-version` and log one line: method, path and query, status, latency.
pub async fn log_and_stamp(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        X_ZUMO_SERVER_VERSION.clone(),
        HeaderValue::from_static(SERVER_VERSION),
    );
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "tablesync::http", "{method} {target} {} {latency_ms:.1}ms", response.status().as_u16());
    response
}
