//! `GET /health`, `GET /ready` and `GET /metrics`: for load balancers, orchestrators and
//! Prometheus. None needs `ZUMO-API-VERSION` or a token, and none reads a table.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tablesync_protocol::error::{ErrorBody, ErrorCode};

use crate::app::App;

/// Liveness: the process answers HTTP. No database work, so a slow or unreachable database
/// never gets a healthy process restarted.
pub async fn health_get() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: one cheap database round trip ([`crate::store::Store::ping`]) within
/// `limits.ready_timeout_ms`. 503 with our error body (`code` `service_unavailable`, the reason
/// in `error`) when the database does not answer, so a load balancer stops sending traffic.
pub async fn ready_get(State(app): State<Arc<App>>) -> Response {
    match app.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(target: "tablesync::ready", "not ready: {}", e.message);
            let body = ErrorBody::new(
                ErrorCode::ServiceUnavailable,
                format!("database unavailable: {}", e.message),
            );
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The metrics in the text exposition format; 404 when `[metrics] enabled = false` (the route
/// is not mounted then, this is only reached through a misconfigured router).
pub async fn metrics_get(State(app): State<Arc<App>>) -> Response {
    match app.metrics() {
        Some(metrics) => {
            let text = metrics.render(app.pool_status(), app.feed().subscribers());
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::metrics::CONTENT_TYPE),
            );
            response
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
