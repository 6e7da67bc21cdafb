//! [`ApiError`] → HTTP response, in one exhaustive match.
//!
//! Every error body is the protocol's `ErrorBody` (`{"error": …, "code": …}` plus `position` for
//! query parse errors). The two exceptions are 409 and 412, whose body is the server's current
//! item with its `ETag`, because that is what clients need to resolve the conflict. Database
//! details are logged here and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tablesync_protocol::error::{ErrorBody, ErrorCode};
use tablesync_protocol::headers::etag_from_version;
use tablesync_protocol::system;

use crate::error::ApiError;
use crate::store::StoreErrorKind;
use crate::table::Item;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (code, position) = match self {
            ApiError::Conflict(item) => return item_response(StatusCode::CONFLICT, *item),
            ApiError::PreconditionFailed(item) => {
                return item_response(StatusCode::PRECONDITION_FAILED, *item)
            }
            ApiError::ApiVersionMissing => (ErrorCode::ApiVersionMissing, None),
            ApiError::ApiVersionUnsupported => (ErrorCode::ApiVersionUnsupported, None),
            ApiError::InvalidJson(_) => (ErrorCode::InvalidJson, None),
            ApiError::BodyNotObject => (ErrorCode::BodyNotObject, None),
            ApiError::PayloadTooLarge { .. } => (ErrorCode::PayloadTooLarge, None),
            ApiError::UnsupportedMediaType(_) | ApiError::UnsupportedContentCoding(_) => {
                (ErrorCode::UnsupportedMediaType, None)
            }
            ApiError::Query(e) => (e.code, e.position),
            ApiError::Lower(e) => (e.code, None),
            ApiError::FilterTooLong { .. } => (ErrorCode::InvalidFilter, None),
            ApiError::UnknownSelect(_) => (ErrorCode::UnknownColumn, None),
            ApiError::TopTooLarge { .. } => (ErrorCode::TopTooLarge, None),
            ApiError::Rule(rule) => (rule_code(&rule), None),
            ApiError::OwnerMismatch(_) => (ErrorCode::OwnerMismatch, None),
            ApiError::InvalidBatch(_) => (ErrorCode::InvalidBatch, None),
            ApiError::BatchTooLarge { .. } => (ErrorCode::BatchTooLarge, None),
            ApiError::InvalidIdempotencyKey => (ErrorCode::InvalidIdempotencyKey, None),
            ApiError::IdempotencyKeyReused(_) => (ErrorCode::IdempotencyKeyReused, None),
            ApiError::FailedDependency(_) => (ErrorCode::FailedDependency, None),
            ApiError::InvalidPosition(_) => (ErrorCode::InvalidPosition, None),
            ApiError::TooManySubscribers { .. } => (ErrorCode::ServiceUnavailable, None),
            ApiError::Unauthenticated => return unauthorized(message, "Bearer"),
            ApiError::InvalidToken { reason } => {
                // The reason goes to the log only; the token itself never does.
                tracing::warn!(target: "tablesync::auth", "401: token refused: {reason}");
                return unauthorized(message, "Bearer error=\"invalid_token\"");
            }
            ApiError::TableNotFound(_) => (ErrorCode::TableNotFound, None),
            ApiError::ItemNotFound => (ErrorCode::ItemNotFound, None),
            ApiError::RouteNotFound(_) => (ErrorCode::RouteNotFound, None),
            ApiError::MethodNotAllowed(_) => (ErrorCode::MethodNotAllowed, None),
            ApiError::Timeout { .. } => (ErrorCode::ServiceUnavailable, None),
            ApiError::WriteTimeout { .. } => (ErrorCode::OutcomeUnknown, None),
            // The connection is left mid-body or its framing is in doubt: close it rather than
            // parse what follows as another request.
            ApiError::BodyTimeout { .. } => return closing(ErrorCode::RequestTimeout, message),
            ApiError::BadRequest(_) => return closing(ErrorCode::BadRequest, message),
            ApiError::UnsupportedTransferCoding(_) => {
                return closing(ErrorCode::NotImplemented, message)
            }
            ApiError::Store(e) => {
                if e.kind == StoreErrorKind::InvalidInput {
                    // The client's value, not our bug; still logged so a missing check shows.
                    tracing::warn!(kind = ?e.kind, "{}", e.message);
                } else {
                    tracing::error!(kind = ?e.kind, "{}", e.message);
                }
                let (code, text) = match e.kind {
                    StoreErrorKind::InvalidInput => (
                        ErrorCode::InvalidValue,
                        "The database refused a value of the request: it is out of range or too large",
                    ),
                    StoreErrorKind::Busy => (
                        ErrorCode::ServiceUnavailable,
                        "The database is busy; try again later",
                    ),
                    StoreErrorKind::Schema | StoreErrorKind::Query | StoreErrorKind::Internal => (
                        ErrorCode::Internal,
                        "An internal error occurred; it has been logged",
                    ),
                };
                return error_response(code, ErrorBody::new(code, text));
            }
        };
        error_response(code, ErrorBody::new(code, message).with_position(position))
    }
}

fn rule_code(rule: &crate::table::RuleError) -> ErrorCode {
    use crate::table::RuleError as R;
    match rule {
        R::InvalidId(_) => ErrorCode::InvalidId,
        R::Reserved(_) => ErrorCode::ReservedProperty,
        R::UnknownColumn(_) => ErrorCode::UnknownColumn,
        R::WrongType(_) => ErrorCode::WrongType,
        R::IdMismatch => ErrorCode::IdMismatch,
    }
}

/// 401 with our JSON body and the `WWW-Authenticate` challenge (RFC 6750).
fn unauthorized(message: String, challenge: &'static str) -> Response {
    let mut response = error_response(
        ErrorCode::Unauthorized,
        ErrorBody::new(ErrorCode::Unauthorized, message),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Our JSON error with `Connection: close`.
fn closing(code: ErrorCode, message: String) -> Response {
    let mut response = error_response(code, ErrorBody::new(code, message));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn error_response(code: ErrorCode, body: ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// A single-item response: the item as JSON with `ETag: "<version>"`.
pub fn item_response(status: StatusCode, item: Item) -> Response {
    let etag = item
        .get(system::VERSION)
        .and_then(|v| v.as_str())
        .and_then(|v| HeaderValue::from_str(&etag_from_version(v)).ok());
    let mut response = (status, Json(item)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
