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
    /// An error as a push records one, for an app's own tests of the decisions its
    /// [`SyncHandler`](crate::SyncHandler) makes on errors (the push builds its errors itself;
    /// the struct is `non_exhaustive`, so other crates cannot write it out). No answer yet: no
    /// status, no body, no server copy, an empty item; add them with the `with_` methods. A
    /// resolution applied to it acts only when `operation_id` and `operation_version` name a
    /// queued operation as it is (else `Error::OperationChanged`).
    ///
    /// ```
    /// use serde_json::json;
    /// use tablesync_client::{OpKind, OperationError};
    ///
    /// // An app's rule: keep the server's copy when the server's row is marked final.
    /// fn keep_servers(e: &OperationError) -> bool {
    ///     e.is_conflict() && e.result.as_ref().is_some_and(|r| r["final"] == json!(true))
    /// }
    /// let server = json!({"id": "a", "version": "AAAAAAAAAAI=", "final": true});
    /// let e = OperationError::new("op-1", 1, OpKind::Update, "TodoItem", "a")
    ///     .with_item(json!({"id": "a", "text": "mine"}).as_object().unwrap().clone())
    ///     .with_answer(412, server.to_string())
    ///     .with_server_item(server.as_object().unwrap().clone());
    /// assert!(keep_servers(&e) && !e.is_deleted_on_server() && !e.handled);
    /// let unanswered = OperationError::new("op-2", 1, OpKind::Insert, "TodoItem", "b");
    /// assert!(!keep_servers(&unanswered) && unanswered.status.is_none());
    /// ```
    pub fn new(
        operation_id: impl Into<String>,
        operation_version: i64,
        kind: OpKind,
        table: impl Into<String>,
        item_id: impl Into<String>,
    ) -> Self {
        OperationError {
            operation_id: operation_id.into(),
            operation_version,
            kind,
            table: table.into(),
            item_id: item_id.into(),
            item: Map::new(),
            status: None,
            raw_result: String::new(),
            result: None,
            handled: false,
        }
    }

    /// With the item that was sent.
    pub fn with_item(mut self, item: Map<String, Value>) -> Self {
        self.item = item;
        self
    }

    /// With the server's answer: its HTTP status and raw body.
    pub fn with_answer(mut self, status: u16, raw_result: impl Into<String>) -> Self {
        self.status = Some(status);
        self.raw_result = raw_result.into();
        self
    }

    /// With the server's copy of the item (see [`OperationError::result`]).
    pub fn with_server_item(mut self, server_item: Map<String, Value>) -> Self {
        self.result = Some(server_item);
        self
    }

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
