//! The client's error type.
//!
//! One `#[non_exhaustive]` enum for the whole SDK. Variants are grouped by where the fault lies:
//! the caller (bad input), the local store, the network, the server's answer, and the outcome of
//! a push. Nothing in the SDK panics on input from the app or the server; every such fault is one
//! of these variants.

use crate::operation_error::OperationError;
use crate::queue::{OpKind, OpState};

/// Result alias used throughout the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a push ended (mirrors the reference client's `MobileServicePushStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PushStatus {
    /// Every queued operation was attempted; some may have failed with operation errors.
    Complete,
    /// A network failure (connection refused/dropped, timeout) stopped the push; the queue is intact.
    CancelledByNetworkError,
    /// The server answered 401; the push stopped; the queue is intact.
    CancelledByAuthenticationError,
    /// The local store failed during the push; the push stopped (the store's error is the
    /// `PushFailed` message) and the queue is as the store left it.
    CancelledBySyncStoreError,
    /// The server's answer to a batch (`docs/extensions.md` section 2) was not `200` with one
    /// readable answer per operation: a refusal of the whole batch (e.g. 413), a server error,
    /// or an unreadable body. The push stopped with the queue intact and every idempotency key
    /// kept, so sending the same batch again is safe; the `PushFailed` message says what was
    /// wrong. After a refusal (a 4xx) the context pushes one request per operation from then on.
    CancelledByServerError,
}

impl std::fmt::Display for PushStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            PushStatus::Complete => "Complete",
            PushStatus::CancelledByNetworkError => "CancelledByNetworkError",
            PushStatus::CancelledByAuthenticationError => "CancelledByAuthenticationError",
            PushStatus::CancelledBySyncStoreError => "CancelledBySyncStoreError",
            PushStatus::CancelledByServerError => "CancelledByServerError",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The base URL given to the client is not usable.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A table name does not match `^[A-Za-z_][A-Za-z0-9_]{0,127}$` or is reserved.
    #[error("invalid table name {0:?}")]
    InvalidTableName(String),
    /// A column name is invalid, reserved or declared twice.
    #[error("invalid column name {column:?} in table {table:?}: {reason}")]
    InvalidColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Why it was refused.
        reason: String,
    },
    /// The table was not defined before the store was initialised.
    #[error("table {0:?} is not defined in the local store")]
    UnknownTable(String),
    /// A table was defined after the sync context was initialised, or twice.
    #[error("table {0:?} is already defined")]
    TableAlreadyDefined(String),
    /// An item carries a property that is not a column of the local table.
    #[error("column {column:?} is not defined on the local table {table:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The property name.
        column: String,
    },
    /// An item's value does not fit the declared column type.
    #[error("value for column {column:?} of table {table:?} is not a valid {expected}: {value}")]
    TypeMismatch {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The declared type.
        expected: &'static str,
        /// The offending value (JSON).
        value: String,
    },
    /// The item is not a JSON object.
    #[error("item is not a JSON object: {0}")]
    NotAnObject(String),
    /// A typed item could not be serialised to a JSON object (serde's message).
    #[error("the item could not be serialised: {0}")]
    Serialize(String),
    /// A local row does not fit the app's type of a typed table (serde's message, e.g.
    /// "invalid type: null, expected a string").
    #[error("the row does not fit the app's type: {0}")]
    Deserialize(String),
    /// The server table has integer ids (the Node server's `autoIncrement`, our server's
    /// `id_type = "integer"`): offline sync needs string ids the client can make while offline,
    /// in every official client and in this one, so such a table cannot be a sync table. Found
    /// from the server's answer: a pulled row whose id is a number (nothing of that page is
    /// applied).
    #[error(
        "table {0:?} has integer ids on the server, and offline sync needs string ids: serve it with string ids (id_type = \"string\")"
    )]
    IntegerIdTable(String),
    /// An id is missing where one is required.
    #[error("the item has no id")]
    MissingId,
    /// An id breaks the protocol's id rules (length, control characters, `"+?\/` and backquote, `.`/`..`).
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Insert of an id that already exists locally.
    #[error("an item with id {0:?} already exists in the local table")]
    ItemAlreadyExists(String),
    /// Update or delete of an id that does not exist locally.
    #[error("no item with id {0:?} in the local table")]
    ItemNotFound(String),
    /// The new local operation cannot be combined with the one already queued for the item
    /// (protocol.md 6.6). Displays the reference client's message (the `MSG_*` constants of
    /// [`crate::internals`]).
    #[error("{}", crate::queue::conflict_message(*existing, *existing_state, *new))]
    QueueConflict {
        /// Kind of the operation already queued for the item.
        existing: OpKind,
        /// State of the queued operation (a delete of an insert that a push attempted is refused).
        existing_state: OpState,
        /// Kind of the refused new local operation.
        new: OpKind,
    },
    /// An OData query string (filter, orderby, ...) could not be parsed or lowered.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A pull query id breaks `^[^|]{0,255}$`.
    #[error(
        "the query id must not contain the pipe character and must be at most 255 characters long"
    )]
    InvalidQueryId,
    /// An incremental pull was given an option it manages itself.
    #[error("a pull query must not use {0} (the pull pages with its own $orderby/$top)")]
    UnsupportedPullOption(&'static str),
    /// A configuration value is out of range (the message names it and its unit).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Purge refused because the table has pending operations and `force` was not set.
    #[error("table {0:?} cannot be purged because it has pending operations")]
    PurgeRefused(String),
    /// A conflict resolution was attempted on an operation that changed (or vanished) since the error.
    #[error("the operation has been updated or removed since the error and cannot be resolved")]
    OperationChanged,
    /// The local SQLite store failed.
    #[error("local store error: {0}")]
    Store(#[from] rusqlite::Error),
    /// The local store file has a schema this version of the SDK does not know.
    #[error("local store schema version {found} is newer than the supported version {supported}")]
    UnsupportedStoreVersion {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this SDK writes.
        supported: i64,
    },
    /// Stored data in a system table is unreadable (e.g. corrupt JSON).
    #[error("corrupt local store data: {0}")]
    CorruptStore(String),
    /// A blocking store task failed to run (the runtime is shutting down or the task panicked).
    #[error("local store task failed: {0}")]
    StoreTask(String),
    /// The server could not be reached, the connection dropped, or the request timed out.
    #[error("network error: {0}")]
    Network(String),
    /// The server answered 401.
    #[error("the server refused the credentials (401)")]
    Unauthorized,
    /// The server answered with an unexpected status (outside a push, e.g. during a pull).
    #[error("server answered {status}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Response body (text, possibly truncated by the transport limit).
        body: String,
    },
    /// The server answered something that is not a valid protocol response.
    #[error("invalid server response: {0}")]
    InvalidResponse(String),
    /// The app stopped the running pull or push (`SyncContext::cancel_sync`); the store is
    /// consistent and the action resumes when run again.
    #[error("the sync was cancelled; run it again to resume")]
    Cancelled,
    /// A push did not complete, or completed with unhandled operation errors.
    #[error(
        "push failed: {status}{}, {} unhandled operation error(s)",
        cause_suffix(message.as_deref()),
        errors.len()
    )]
    PushFailed {
        /// How the push ended.
        status: PushStatus,
        /// The operation errors no handler resolved.
        errors: Vec<OperationError>,
        /// Why a cancelled push stopped: the transport's error for `CancelledByNetworkError`
        /// (e.g. "connection failed: … Connection refused"), the server's message for
        /// `CancelledByAuthenticationError`, the store's error for `CancelledBySyncStoreError`,
        /// what was wrong with the batch answer for `CancelledByServerError`.
        /// `None` when the push walked the whole queue.
        message: Option<String>,
    },
}

/// ` (cause)` for [`Error::PushFailed`]'s display, or nothing.
fn cause_suffix(message: Option<&str>) -> String {
    message.map(|m| format!(" ({m})")).unwrap_or_default()
}

impl Error {
    /// Whether this is a failure of the local store (as opposed to refused input or a refused
    /// answer): a push stops on it (`CancelledBySyncStoreError`).
    pub(crate) fn is_store_failure(&self) -> bool {
        matches!(
            self,
            Error::Store(_)
                | Error::StoreTask(_)
                | Error::CorruptStore(_)
                | Error::UnsupportedStoreVersion { .. }
        )
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::StoreTask(e.to_string())
    }
}
