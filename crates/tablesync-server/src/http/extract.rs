//! Request extractors whose rejections are [`ApiError`]s (so every failure has a JSON body):
//! path parameters, `If-Match`, and a JSON-object body with content-type and size checks.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::{Map, Value};

use crate::app::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::table::RuleError;

/// `{table}` of `/tables/{table}`.
pub struct TablePath(pub String);

/// `{table}` and `{id}` of `/tables/{table}/{id}` (percent-decoded).
pub struct ItemPath(pub String, pub String);

fn bad_path() -> ApiError {
    ApiError::Rule(RuleError::InvalidId(
        "the URL path is not valid percent-encoded UTF-8".into(),
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for TablePath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(table) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_path())?;
        Ok(TablePath(table))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((table, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_path())?;
        Ok(ItemPath(table, id))
    }
}

/// The caller, as `middleware::table_gate` authenticated it. A request that did not pass the
/// gate is anonymous (and `App` then refuses whatever needs a user).
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Caller(
            parts
                .extensions
                .get::<Identity>()
                .cloned()
                .unwrap_or(Identity::Anonymous),
        ))
    }
}

/// The `If-Match` header, when present (a value that is not visible ASCII matches nothing).
/// Several `If-Match` lines are one comma-separated list, as HTTP defines for list headers.
pub struct IfMatch(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let lines: Vec<String> = parts
            .headers
            .get_all(header::IF_MATCH)
            .iter()
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|_| String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect();
        Ok(IfMatch((!lines.is_empty()).then(|| lines.join(", "))))
    }
}

/// A request body that is a JSON object.
///
/// * content type: missing is taken as JSON (the official Node server does); anything but
///   `application/json` or `*/*+json` is 415;
/// * size: over `limits.body_bytes_max` is 413, checked against `Content-Length` first and
///   while reading (chunked bodies have no length);
/// * not JSON is 400 `invalid_json`; JSON but not an object is 400 `body_not_object`.
pub struct JsonObject(pub Map<String, Value>);

impl<S> FromRequest<S> for JsonObject
where
    S: Send + Sync,
    Arc<App>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit_bytes = Arc::<App>::from_ref(state).limits().body_bytes_max;
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
        match crate::json::parse_strict(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BodyNotObject),
            Err(e) => Err(ApiError::InvalidJson(e.to_string())),
        }
    }
}

/// `application/json`, `text/json` or a `+json` suffix type, any parameters.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.contains('/') && essence.ends_with("+json"))
}

/// The whole body, at most `limit_bytes` (413 beyond).
pub(super) async fn read_body(
    mut body: axum::body::Body,
    limit_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| ApiError::InvalidJson(format!("the body could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit_bytes {
                return Err(ApiError::PayloadTooLarge { limit_bytes });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "text/json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "",
            "application/xml",
            "+json",
            "application/jsonx",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
