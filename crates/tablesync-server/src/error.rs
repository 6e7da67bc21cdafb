//! The server's error type: everything a request can fail with, from the HTTP edge (bad
//! content type, oversized body) to the table rules and the store.
//!
//! It knows nothing of HTTP; `http::error` turns it into a response in one exhaustive match,
//! choosing the status and the stable `code` of `tablesync_protocol::error::ErrorCode`.

use tablesync_protocol::odata::query::QueryError;
use tablesync_protocol::odata::sql::LowerError;

use crate::store::StoreError;
use crate::table::{Item, RuleError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `ZUMO-API-VERSION` header or query parameter.
    #[error("An invalid API version was specified in the request, this request needs to specify a ZUMO-API-VERSION of 2.0.0.")]
    ApiVersionMissing,
    /// A `ZUMO-API-VERSION` other than `2.0.x`.
    #[error("An invalid API version was specified in the request, this request needs to specify a ZUMO-API-VERSION of 2.0.0.")]
    ApiVersionUnsupported,
    /// The body is not JSON.
    #[error("The request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("The request body must be a JSON object")]
    BodyNotObject,
    /// The body is over `limits.body_bytes_max`.
    #[error("The request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// An explicit non-JSON content type.
    #[error("Unsupported content type '{0}': send application/json")]
    UnsupportedMediaType(String),
    /// A query option that does not parse.
    #[error("{}", .0.message)]
    Query(QueryError),
    /// A parsed `$filter`/`$orderby` that does not fit the table (unknown column, wrong type).
    #[error("{}", .0.message)]
    Lower(LowerError),
    /// A raw `$filter` over `limits.filter_bytes_max`.
    #[error("The $filter is longer than {limit_bytes} bytes")]
    FilterTooLong {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// `$select` names an unknown column.
    #[error("{0}")]
    UnknownSelect(String),
    /// `$top` over `limits.page_size_max`.
    #[error("You cannot request more than {max} records")]
    TopTooLarge {
        /// The configured limit.
        max: u64,
    },
    /// A body or header that breaks a table rule.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A per-user table's write body names another owner.
    #[error(
        "The property '{0}' is set from your credentials; a body may only repeat your own user id"
    )]
    OwnerMismatch(String),
    /// The operation needs an authenticated caller and the request carries no token.
    #[error("Authentication required: send a token in X-ZUMO-AUTH or Authorization: Bearer")]
    Unauthenticated,
    /// A token was presented but refused. `reason` is logged, never sent: the client only
    /// learns that its token was refused (and should get a new one).
    #[error("The authentication token was refused")]
    InvalidToken {
        /// Why, for the log (never contains the token).
        reason: String,
    },
    /// No table by that name.
    #[error("The table '{0}' does not exist")]
    TableNotFound(String),
    /// No item with that id (or it is soft-deleted).
    #[error("The item does not exist")]
    ItemNotFound,
    /// No route for the path.
    #[error("No route for {0}")]
    RouteNotFound(String),
    /// The route exists but not for this method, or the operation is disabled for the table.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Duplicate insert or stale body `version`: 409 with the stored item.
    #[error("conflict")]
    Conflict(Box<Item>),
    /// Stale `If-Match`: 412 with the current item.
    #[error("precondition failed")]
    PreconditionFailed(Box<Item>),
    /// The request took longer than `limits.request_timeout_ms`.
    #[error("The request took longer than {limit_ms} ms")]
    Timeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// A write took longer than `limits.request_timeout_ms`; it may still commit.
    #[error("The request took longer than {limit_ms} ms; the write may or may not have been applied: read the item before retrying")]
    WriteTimeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// The request body did not arrive within `limits.body_read_timeout_ms`: the request was
    /// never started, so it changed nothing.
    #[error("The request body did not arrive within {limit_ms} ms; nothing was done")]
    BodyTimeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// Not valid HTTP/1.1 framing (RFC 9112), e.g. a missing or repeated `Host`.
    #[error("{0}")]
    BadRequest(String),
    /// A transfer coding other than `chunked`.
    #[error("The transfer coding '{0}' is not implemented; only chunked is")]
    UnsupportedTransferCoding(String),
    /// A request body with a content coding (`Content-Encoding`) other than `identity`.
    #[error("The content coding '{0}' is not supported; send the request body unencoded")]
    UnsupportedContentCoding(String),
    /// The database failed.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// A `$batch` request that breaks the batch format (the message names the request id).
    #[error("Invalid batch: {0}")]
    InvalidBatch(String),
    /// A `$batch` request with more operations than `limits.batch_operations_max`.
    #[error("The batch has {count} operations; at most {max} are allowed")]
    BatchTooLarge {
        /// Operations in the batch.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// An `Idempotency-Key` that is not 1..=255 visible ASCII characters.
    #[error("The Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// An `Idempotency-Key` recorded for a different request.
    #[error("The Idempotency-Key '{0}' was already used for a different request")]
    IdempotencyKeyReused(String),
    /// A batch operation rolled back with its atomicity group.
    #[error("{0}")]
    FailedDependency(String),
    /// A change feed's position is malformed (docs/extensions.md section 5).
    #[error("Invalid change feed position: {0}")]
    InvalidPosition(String),
    /// `limits.subscribers_max` change-feed subscribers are served already (or it is 0).
    #[error("The server is serving as many change feed subscribers as it may ({max}, limits.subscribers_max); try again later or poll")]
    TooManySubscribers {
        /// The configured limit.
        max: usize,
    },
}
