//! The one table of error codes: code <-> HTTP status <-> meaning, and the error body.
//!
//! Every error response of the server is `{"error": "<message>", "code": "<code>"}`. The
//! `error` member is what the official clients display (they read `error`, not `message`); the
//! `code` member is a stable snake_case string that programs can match on. Codes are never
//! renamed once published; new ones may be added (the enum is `#[non_exhaustive]`).

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal), )*) => {
        /// A stable, machine-readable error code. See the table in [`ErrorCode::ALL`].
        #[non_exhaustive]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable snake_case string sent in the `code` member.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status this error is answered with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The code whose [`as_str`](Self::as_str) is `s`, if any.
            pub fn from_str_code(s: &str) -> Option<Self> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// No `ZUMO-API-VERSION` header or query parameter.
    ApiVersionMissing = ("api_version_missing", 400),
    /// `ZUMO-API-VERSION` is not `2.0.x`.
    ApiVersionUnsupported = ("api_version_unsupported", 400),
    /// The request body is not valid JSON.
    InvalidJson = ("invalid_json", 400),
    /// The request body is JSON but not an object.
    BodyNotObject = ("body_not_object", 400),
    /// `$filter` does not parse.
    InvalidFilter = ("invalid_filter", 400),
    /// `$orderby` does not parse.
    InvalidOrderBy = ("invalid_orderby", 400),
    /// `$select` does not parse.
    InvalidSelect = ("invalid_select", 400),
    /// Another query option is malformed or repeated (`$top=-1`, `$inlinecount=x`, ...).
    InvalidQueryOption = ("invalid_query_option", 400),
    /// `$top` is above the server's maximum page size.
    TopTooLarge = ("top_too_large", 400),
    /// A query or body names a column the table does not have.
    UnknownColumn = ("unknown_column", 400),
    /// A value or expression has the wrong type for where it is used.
    WrongType = ("wrong_type", 400),
    /// The body sets `createdAt`, `updatedAt` or `deleted`.
    ReservedProperty = ("reserved_property", 400),
    /// The id in the body differs from the id in the URL.
    IdMismatch = ("id_mismatch", 400),
    /// The id breaks the id rules (protocol.md 3.1).
    InvalidId = ("invalid_id", 400),
    /// No such table.
    TableNotFound = ("table_not_found", 404),
    /// No such item (or it is soft-deleted).
    ItemNotFound = ("item_not_found", 404),
    /// The operation is disabled for this table.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// Insert of an existing id, or a stale `version` in the body.
    Conflict = ("conflict", 409),
    /// `If-Match` does not match the current version.
    PreconditionFailed = ("precondition_failed", 412),
    /// The body is larger than the server accepts.
    PayloadTooLarge = ("payload_too_large", 413),
    /// The body is not `application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// Authentication is required and missing or invalid.
    Unauthorized = ("unauthorized", 401),
    /// An unexpected server-side failure; details are logged, never returned.
    Internal = ("internal", 500),
    /// No route matches the request path (outside `/tables/{table}[/{id}]`).
    RouteNotFound = ("route_not_found", 404),
    /// The server is overloaded or the database busy, or the request timed out: retry later.
    ServiceUnavailable = ("service_unavailable", 503),
    /// The database refused a value of the request (out of its range, too large) or the query is
    /// too complex for it: the same request will fail again.
    InvalidValue = ("invalid_value", 400),
    /// A write took longer than the server's request timeout: it may or may not have been
    /// applied. Read the item before retrying.
    OutcomeUnknown = ("outcome_unknown", 504),
    /// A write to a per-user table names another user as the row's owner (the owner comes from
    /// the credentials).
    OwnerMismatch = ("owner_mismatch", 400),
    /// The request is not valid HTTP/1.1: bad framing or header syntax, or a missing or
    /// repeated `Host` (RFC 9112).
    BadRequest = ("bad_request", 400),
    /// The request body did not arrive within the server's body read timeout; nothing was done.
    RequestTimeout = ("request_timeout", 408),
    /// The request target (URL) is longer than the server accepts.
    UriTooLong = ("uri_too_long", 414),
    /// The request's headers are larger, or more numerous, than the server accepts.
    HeadersTooLarge = ("headers_too_large", 431),
    /// The request uses a transfer coding the server does not implement (only `chunked` is).
    NotImplemented = ("not_implemented", 501),
    /// A `$batch` request breaks the batch format (`docs/extensions.md` section 2); the message
    /// names the request id and the problem. Nothing was applied.
    InvalidBatch = ("invalid_batch", 400),
    /// A `$batch` request has more operations than the server's `batch_operations_max`.
    BatchTooLarge = ("batch_too_large", 400),
    /// An `Idempotency-Key` header that is not 1..=255 visible ASCII characters.
    InvalidIdempotencyKey = ("invalid_idempotency_key", 400),
    /// An `Idempotency-Key` already recorded for a different request (the message names it).
    IdempotencyKeyReused = ("idempotency_key_reused", 422),
    /// A batch operation rolled back because another operation of its atomicity group failed.
    FailedDependency = ("failed_dependency", 424),
    /// A change feed's position (`?after=` or `Last-Event-ID`) is not `<updatedAt>|<id>` with a
    /// wire-form timestamp and a valid id of the table (`docs/extensions.md` section 5).
    InvalidPosition = ("invalid_position", 400),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error response body: `{"error": "<message>", "code": "<code>"}`, plus `position` (a
/// byte offset into the offending query option) for query parse errors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorBody {
    /// Human-readable message (the member the official clients display).
    pub error: String,
    /// [`ErrorCode::as_str`] of the error.
    pub code: String,
    /// Byte offset into the offending (percent-decoded) query option, for parse errors.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<usize>,
}

impl ErrorBody {
    /// A body for `code` with `message` and no position.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: message.into(),
            code: code.as_str().to_string(),
            position: None,
        }
    }

    /// The same body with `position` set.
    pub fn with_position(mut self, position: Option<usize>) -> Self {
        self.position = position;
        self
    }

    /// The code, if it is one this version knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_str_code(&self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
            assert_eq!(ErrorCode::from_str_code(c.as_str()), Some(c));
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!((400..600).contains(&c.http_status()));
        }
        assert_eq!(ErrorCode::ALL.len(), 39);
        assert_eq!(ErrorCode::from_str_code("nope"), None);
        assert_eq!(ErrorCode::InvalidFilter.as_str(), "invalid_filter");
        assert_eq!(ErrorCode::PreconditionFailed.http_status(), 412);
        assert_eq!(ErrorCode::Conflict.http_status(), 409);
        assert_eq!(ErrorCode::Internal.http_status(), 500);
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::Unauthorized.as_str(), "unauthorized");
    }

    #[test]
    fn body_json() {
        let b = ErrorBody::new(ErrorCode::ItemNotFound, "The item does not exist");
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"error":"The item does not exist","code":"item_not_found"}"#
        );
        let b = ErrorBody::new(ErrorCode::InvalidFilter, "bad").with_position(Some(8));
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"error":"bad","code":"invalid_filter","position":8}"#
        );
        let back: ErrorBody = serde_json::from_str(r#"{"error":"x","code":"conflict"}"#).unwrap();
        assert_eq!(back.error_code(), Some(ErrorCode::Conflict));
        assert_eq!(back.position, None);
    }
}
