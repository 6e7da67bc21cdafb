//! `POST /$batch` and keyed single-item writes: the HTTP side of [`crate::batch`].
//!
//! The batch route sits behind the same gate as the table routes (authentication, then the API
//! version), so its own token applies to every operation. Each operation's answer is rendered
//! by [`render`], through the very `IntoResponse` code a single-item route uses, then read back
//! into status, headers and JSON body: a batched answer cannot drift from the route's.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::item_response;
use super::extract::{is_json_media_type, read_body, Caller};
use crate::app::App;
use crate::auth::Identity;
use crate::batch::{self, BatchOp, OpKind, OpResult};
use crate::error::ApiError;
use crate::store::{BoxFuture, Recorded};

/// Render one operation's result exactly as its single-item route answers it.
pub fn render(result: OpResult) -> BoxFuture<'static, Recorded> {
    let response = match result {
        Ok((status, item)) => {
            item_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), item)
        }
        Err(e) => e.into_response(),
    };
    Box::pin(async move {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| **name != header::CONTENT_TYPE && **name != header::CONTENT_LENGTH)
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        // Our bodies are small JSON documents already in memory; the limit only bounds a bug.
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        Recorded {
            status,
            headers,
            body,
        }
    })
}

/// `POST /$batch`: `{"requests": […]}` → `{"responses": […]}` (docs/extensions.md section 2).
pub async fn batch_post(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let limit_bytes = app.limits().body_bytes_max;
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let text = String::from_utf8_lossy(content_type.as_bytes()).into_owned();
        if !is_json_media_type(&text) {
            return Err(ApiError::UnsupportedMediaType(text));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit_bytes as u64) {
        return Err(ApiError::PayloadTooLarge { limit_bytes });
    }
    let bytes = read_body(req.into_body(), limit_bytes).await?;
    let ops = batch::parse(&bytes, app.limits().batch_operations_max)?;
    let answers = batch::run(&app, &caller, &ops, &render).await?;
    if let Some(metrics) = app.metrics() {
        metrics.observe_batch(ops.len());
        count_operations(metrics, &app, &ops, &answers);
    }
    let responses: Vec<Value> = answers
        .into_iter()
        .map(|a| {
            let headers: Map<String, Value> = a
                .answer
                .headers
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let mut response = json!({"id": a.id, "status": a.answer.status, "headers": headers});
            if let Some(body) = a.answer.body {
                response["body"] = body;
            }
            response
        })
        .collect();
    Ok(Json(json!({ "responses": responses })).into_response())
}

/// Count each operation's answer in the write metrics; a replayed answer was counted when it
/// was first applied.
fn count_operations(
    metrics: &crate::observe::metrics::Metrics,
    app: &App,
    ops: &[BatchOp],
    answers: &[batch::OpAnswer],
) {
    for (op, answer) in ops.iter().zip(answers) {
        let replayed = answer
            .answer
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(batch::REPLAYED_HEADER));
        if !replayed {
            let table = app.table_name(&op.table).unwrap_or_default();
            let operation = crate::observe::metrics::operation_name(op.kind);
            metrics.write_answered(table, operation, answer.answer.status);
        }
    }
}

/// The request's `Idempotency-Key`, when it sent one (400 when it is not 1..=255 visible ASCII
/// characters, or sent twice).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if values.next().is_none() && batch::valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::InvalidIdempotencyKey),
    }
}

/// A single-item write that carries an `Idempotency-Key`: run as a batch of one, answered like
/// the route (plus `idempotent-replayed: true` when it is a replay).
#[allow(clippy::too_many_arguments)]
pub async fn keyed_write(
    app: &Arc<App>,
    caller: &Identity,
    kind: OpKind,
    table: String,
    item_id: Option<String>,
    if_match: Option<String>,
    key: String,
    body: Option<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let op = BatchOp {
        id: String::new(),
        kind,
        table,
        item_id,
        if_match,
        key: Some(key),
        body,
        group: None,
    };
    let answer = batch::run(app, caller, std::slice::from_ref(&op), &render)
        .await?
        .remove(0)
        .answer;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match answer.body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    };
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
