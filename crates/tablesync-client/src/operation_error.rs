//! The failed push of one queued operation ([`OperationError`], protocol.md 6.8), as plain data.
//!
//! Its own module so that the error type, the store's error table and the conflict machinery
//! can all name it without depending on each other: it knows only [`OpKind`].

use serde_json::{Map, Value};

use crate::queue::OpKind;

/// A failed push of one queued operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OperationError {
    /// Id of the queued operation.
    pub operation_id: String,
    /// Version of the operation when it was pushed (guards resolutions).
    pub operation_version: i64,
    /// Insert, update or delete.
    pub kind: OpKind,
    /// Table name.
    pub table: String,
    /// Id of the item.
    pub item_id: String,
    /// The item that was sent (system properties stripped; `version` kept when known).
    pub item: Map<String, Value>,
    /// HTTP status, `None` when there was no HTTP answer (e.g. the local row was missing).
    pub status: Option<u16>,
    /// The raw response body.
    pub raw_result: String,
    /// The server's copy of the item when the answer carried one (a JSON object with an `id`;
    /// for an insert conflict, the copy fetched with a GET). For an update answered 404/410
    /// whose delete the server confirmed on a GET, a tombstone: the server's, or
    /// `{"id": …, "deleted": true}` when the GET said the item does not exist.
    pub result: Option<Map<String, Value>>,
    /// Set by the resolutions; unhandled errors make the push fail.
    pub handled: bool,
}

impl OperationError {
    /// Whether this is a concurrency conflict (409 or 412).
    pub fn is_conflict(&self) -> bool {
        matches!(self.status, Some(409) | Some(412))
    }

    /// Whether the server confirmed that the item no longer exists: the error's server copy is
    /// a tombstone (`deleted: true`). That is the case for a conflict with a soft-deleted row
    /// (e.g. an insert of an id deleted on the server), and for an update answered 404/410 once
    /// the push confirmed with `GET /tables/T/{id}?__includeDeleted=true` that the item is a
    /// tombstone or does not exist (the copy is then `{"id": …, "deleted": true}`).
    ///
    /// A bare 404 is **not** enough (a deviation from the reference's usual "404 on update =
    /// deleted" handling): a 404 for the table (`{"code":"table_not_found"}`), an unknown
    /// route or a proxy's error page would otherwise make the shipped handlers drop the local
    /// row and its queued change.
    pub fn is_deleted_on_server(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.get("deleted") == Some(&Value::Bool(true)))
    }
}
