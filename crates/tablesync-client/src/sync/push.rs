//! Push: send the queue to the server, in queue order, across all tables (protocol.md 6.7).
//!
//! The shape is "pure decision, thin IO shell": [`classify`] turns one HTTP answer (or transport
//! failure) into an [`Outcome`] without touching anything; the loop in [`push_all`] applies the
//! outcome to the store.
//!
//! | answer | outcome | effect |
//! |---|---|---|
//! | 2xx with this operation's item, fitting the local table (insert/update) | `Success` | entry removed, server copy (ETag version) written back |
//! | 2xx (delete), 404 (delete) whose JSON body says the item is missing | `Success` | entry removed |
//! | no answer: refused, dropped, timeout | `NetworkError` | push stops, `CancelledByNetworkError`, queue intact; the transport error is the `PushFailed` message |
//! | 401 | `Unauthorized` | push stops, `CancelledByAuthenticationError`, queue intact; the server's message is the `PushFailed` message |
//! | 409, 412, other 4xx/5xx | `Failed` | operation error recorded, push continues |
//! | 2xx garbage: no item, another item's `id`, a value of the wrong type | `Failed` (no server copy, raw body kept) | operation error recorded, nothing written, push continues |
//! | (local store failure) | — | push stops, `CancelledBySyncStoreError`, the store's error is the `PushFailed` message |
//!
//! Insert answered with 409 (the id exists on the server — usually an earlier POST whose
//! response was lost): the 409 body cannot be trusted to be the server's copy (the official Node
//! server echoes the request), so the item is fetched with a GET. If the server's copy holds
//! exactly what was sent, the insert did happen: it counts as a success. Otherwise it is a
//! conflict whose `result` is the fetched server copy.
//!
//! Update answered 404/410: a 404 may be about the table or a route rather than the item, so
//! the item is fetched with `GET /tables/T/{id}?__includeDeleted=true`. Only a tombstone or a
//! 404 saying the item does not exist confirms the delete (the error's `result` is then a
//! tombstone, see `OperationError::is_deleted_on_server`); otherwise the error has no server
//! copy and no shipped handler drops anything.
//!
//! Each operation is claimed (read, payload read, marked Attempted) in one local transaction
//! (`store::queue::claim_next`), so a local write never slips between reading an operation and
//! sending it.

use serde_json::{Map, Value};
use tablesync_protocol::headers::{etag_from_version, version_from_etag};

use crate::client::Client;
use crate::conflict::{OperationError, PushCompletionResult, Resolver, SyncHandler};
use crate::error::{Error, PushStatus, Result};
use crate::queue::{OpKind, OpState};
use crate::store::{queue as q, rows, Store, TableDefinition};
use crate::transport::{HttpResponse, Method, TransportError};

/// The result of sending one operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The server applied the operation; `item` is its copy of the item when it sent one.
    Success {
        /// The server's copy (with `version` taken from the `ETag` header when present).
        item: Option<Map<String, Value>>,
    },
    /// No HTTP answer: connection refused or dropped, timeout, oversized body.
    NetworkError(String),
    /// The server answered 401; the server's message (the body's `error`/`message` string, or
    /// the body text).
    Unauthorized(String),
    /// The server refused or failed the operation.
    Failed {
        /// HTTP status (`None` when nothing was sent, e.g. the local row was missing).
        status: Option<u16>,
        /// The response body as text.
        raw: String,
        /// The server's copy of the item, when the body is a JSON object with an `id` (for an
        /// update answered 404/410, the tombstone that confirms the delete; see
        /// [`TableOperation::execute`]).
        server_item: Option<Map<String, Value>>,
    },
}

/// Parses a response body as an item (a JSON object with a string `id`), taking `version` from a
/// strong `ETag` header when present. Weak ETags (`W/"…"`, express's body hash) are not versions.
pub fn parse_item(resp: &HttpResponse) -> Option<Map<String, Value>> {
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&resp.body) else {
        return None;
    };
    if !matches!(m.get("id"), Some(Value::String(_))) {
        return None;
    }
    if let Some(etag) = resp.header("etag") {
        if !etag.trim_start().starts_with("W/") {
            m.insert("version".into(), Value::String(version_from_etag(etag)));
        }
    }
    Some(m)
}

/// Longest server message kept from an error body, in characters.
const SERVER_MESSAGE_CHARS_MAX: usize = 500;

/// The human message of an error answer: the `error` or `message` string of a JSON body (the
/// official servers' and ours), else the body text; an empty body gives the status line.
pub(crate) fn server_message(resp: &HttpResponse) -> String {
    let from_json = match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => ["error", "message"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str).map(str::to_string)),
        _ => None,
    };
    let text = from_json.unwrap_or_else(|| resp.body_text().trim().to_string());
    if text.is_empty() {
        format!("HTTP {} without a message", resp.status)
    } else {
        text.chars().take(SERVER_MESSAGE_CHARS_MAX).collect()
    }
}

/// Classifies the answer to one pushed operation (pure).
pub fn classify(kind: OpKind, answer: &Result<HttpResponse, TransportError>) -> Outcome {
    let resp = match answer {
        Err(e) => return Outcome::NetworkError(e.to_string()),
        Ok(r) => r,
    };
    let status = resp.status;
    if status == 401 {
        return Outcome::Unauthorized(server_message(resp));
    }
    let failed = |server_item| Outcome::Failed {
        status: Some(status),
        raw: resp.body_text(),
        server_item,
    };
    match (kind, status) {
        // A delete is done whatever the body says (Node: the row, .NET: 204 empty). A 404 means
        // someone else deleted it already, which is what we wanted, but only when the body says
        // the *item* is missing: an HTML page from a proxy or an unknown route, an empty body or
        // another resource's code says nothing about the item, and taking it as success would
        // drop the queued delete for good (the local row is already gone).
        (OpKind::Delete, 200..=299) => Outcome::Success {
            item: parse_item(resp),
        },
        (OpKind::Delete, 404) if says_item_not_found(resp) => Outcome::Success { item: None },
        (_, 200..=299) => match parse_item(resp) {
            Some(item) => Outcome::Success { item: Some(item) },
            // A 2xx without the item is a garbage answer: we cannot know the new version, so the
            // operation stays queued and is reported.
            None => failed(None),
        },
        _ => failed(parse_item(resp)),
    }
}

/// Whether a 404/410 answer to a GET by id says the item does not exist: a JSON error body
/// with `code` `item_not_found` (ours), or a JSON object without a `code` (the official Node
/// server's `{"error":"The item does not exist"}`). An HTML page (an unknown route or table on
/// express), an empty body or another code is not a confirmation.
fn says_item_not_found(resp: &HttpResponse) -> bool {
    if !matches!(resp.status, 404 | 410) {
        return false;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => match m.get("code") {
            Some(Value::String(c)) => c == "item_not_found",
            Some(_) => false,
            None => true,
        },
        _ => false,
    }
}

/// Whether the server's copy holds every value that was sent (lost-response detection).
fn same_content(sent: &Map<String, Value>, server: &Map<String, Value>) -> bool {
    sent.iter().all(|(k, v)| {
        let s = server.get(k).unwrap_or(&Value::Null);
        match (v, s) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::String(a), Value::String(b)) if a != b => {
                match (rows::normalize_date(a), rows::normalize_date(b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            }
            _ => v == s,
        }
    })
}

/// One queued operation as handed to a [`SyncHandler`]: what will be sent, and the means to send it.
#[derive(Debug, Clone)]
pub struct TableOperation {
    client: Client,
    /// The local table's definition: 2xx answers must fit it before they count as success.
    def: TableDefinition,
    kind: OpKind,
    table: String,
    item_id: String,
    item: Map<String, Value>,
    version: Option<String>,
}

impl TableOperation {
    pub(crate) fn new(
        client: Client,
        def: TableDefinition,
        kind: OpKind,
        table: String,
        item_id: String,
        item: Map<String, Value>,
        version: Option<String>,
    ) -> Self {
        TableOperation {
            client,
            def,
            kind,
            table,
            item_id,
            item,
            version,
        }
    }

    /// Insert, update or delete.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// Table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Id of the item.
    pub fn item_id(&self) -> &str {
        &self.item_id
    }

    /// The body to send (no system properties).
    pub fn item(&self) -> &Map<String, Value> {
        &self.item
    }

    /// Replaces the body (system properties are removed; the `id` is kept).
    pub fn set_item(&mut self, mut item: Map<String, Value>) {
        for k in ["createdAt", "updatedAt", "deleted", "version"] {
            item.remove(k);
        }
        item.insert("id".into(), Value::String(self.item_id.clone()));
        self.item = item;
    }

    /// The version sent in `If-Match` (updates and deletes).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Sets the version sent in `If-Match`.
    pub fn set_version(&mut self, version: Option<String>) {
        self.version = version;
    }

    /// Turns an insert into an update of the existing server row (for client-wins on an insert
    /// conflict). No effect on updates and deletes.
    pub fn convert_insert_to_update(&mut self) {
        if self.kind == OpKind::Insert {
            self.kind = OpKind::Update;
        }
    }

    /// Sends the operation and classifies the answer. Never panics; every failure is an outcome.
    ///
    /// Beyond [`classify`]: an insert answered 409 fetches the server's row (lost response or
    /// conflict); an update answered 404/410 fetches the item with `__includeDeleted=true` to
    /// confirm a delete; a 2xx item is a success only if it carries this operation's `id` and
    /// fits the local table's column types, otherwise the answer is `Failed` (status and raw
    /// body kept, no server copy).
    pub async fn execute(&self) -> Outcome {
        let c = &self.client;
        let mut req = match self.kind {
            OpKind::Insert => c.request(
                Method::Post,
                c.table_url(&self.table, None),
                Some(&Value::Object(self.item.clone())),
            ),
            OpKind::Update => c.request(
                Method::Patch,
                c.table_url(&self.table, Some(&self.item_id)),
                Some(&Value::Object(self.item.clone())),
            ),
            OpKind::Delete => c.request(
                Method::Delete,
                c.table_url(&self.table, Some(&self.item_id)),
                None,
            ),
        };
        if self.kind != OpKind::Insert {
            if let Some(v) = &self.version {
                req.headers.push(("If-Match".into(), etag_from_version(v)));
            }
        }
        let answer = c.transport().send(req).await;
        let outcome = classify(self.kind, &answer);
        match (outcome, &answer) {
            (
                Outcome::Failed {
                    status: Some(409),
                    raw,
                    server_item,
                },
                _,
            ) if self.kind == OpKind::Insert => {
                self.resolve_insert_conflict(raw, server_item).await
            }
            (
                Outcome::Failed {
                    status: Some(status @ (404 | 410)),
                    raw,
                    server_item: None,
                },
                _,
            ) if self.kind == OpKind::Update => self.confirm_deleted(status, raw).await,
            (Outcome::Success { item: Some(item) }, Ok(resp)) if self.kind != OpKind::Delete => {
                self.checked_success(item, resp)
            }
            (other, _) => other,
        }
    }

    /// A 2xx answer's item counts only when it is this operation's item and fits the local
    /// table; otherwise the answer is garbage (`Failed` with its status and raw body, no server
    /// copy) and the operation stays queued: writing another id's copy would overwrite an
    /// unrelated row, and a wrongly typed value cannot be stored.
    fn checked_success(&self, item: Map<String, Value>, resp: &HttpResponse) -> Outcome {
        let problem = if item.get("id") != Some(&Value::String(self.item_id.clone())) {
            Some(format!(
                "the answer is an item with id {}",
                item.get("id").unwrap_or(&Value::Null)
            ))
        } else {
            rows::check_server_item(&self.def, &item)
                .err()
                .map(|e| e.to_string())
        };
        match problem {
            None => Outcome::Success { item: Some(item) },
            Some(problem) => {
                tracing::warn!(table = %self.table, id = %self.item_id, %problem, "garbage answer to a push");
                Outcome::Failed {
                    status: Some(resp.status),
                    raw: resp.body_text(),
                    server_item: None,
                }
            }
        }
    }

    /// An update answered 404/410: the item may be deleted on the server, or the answer may be
    /// about something else (the table, a route). `GET /tables/T/{id}?__includeDeleted=true`
    /// decides: a tombstone (`deleted: true`) or a 404 that says the item does not exist
    /// confirms the delete, and the error's server copy is then the tombstone (the server's, or
    /// `{"id": …, "deleted": true}`), which is what [`crate::OperationError::is_deleted_on_server`]
    /// checks. A live item becomes the server copy. Anything else (a table-level 404, an HTML
    /// page, a 5xx) leaves the error without a server copy, so nothing is dropped.
    async fn confirm_deleted(&self, status: u16, raw: String) -> Outcome {
        let c = &self.client;
        let url = format!(
            "{}?__includeDeleted=true",
            c.table_url(&self.table, Some(&self.item_id))
        );
        let answer = c.transport().send(c.request(Method::Get, url, None)).await;
        let server_item = match &answer {
            Err(e) => return Outcome::NetworkError(e.to_string()),
            Ok(r) if r.status == 401 => return Outcome::Unauthorized(server_message(r)),
            Ok(r) if (200..=299).contains(&r.status) => parse_item(r)
                .filter(|m| m.get("id") == Some(&Value::String(self.item_id.clone())))
                .filter(|m| rows::check_server_item(&self.def, m).is_ok()),
            Ok(r) if says_item_not_found(r) => {
                let mut tombstone = Map::new();
                tombstone.insert("id".into(), Value::String(self.item_id.clone()));
                tombstone.insert("deleted".into(), Value::Bool(true));
                Some(tombstone)
            }
            Ok(_) => None,
        };
        Outcome::Failed {
            status: Some(status),
            raw,
            server_item,
        }
    }

    /// Insert got 409: fetch the server's copy to tell a lost response from a real conflict.
    async fn resolve_insert_conflict(
        &self,
        raw: String,
        body_item: Option<Map<String, Value>>,
    ) -> Outcome {
        let c = &self.client;
        let req = c.request(
            Method::Get,
            c.table_url(&self.table, Some(&self.item_id)),
            None,
        );
        let answer = c.transport().send(req).await;
        // Only a body carrying a version can be the server's copy (Node echoes the request).
        let body_item = body_item.filter(|m| matches!(m.get("version"), Some(Value::String(_))));
        match &answer {
            Err(e) => Outcome::NetworkError(e.to_string()),
            Ok(r) if r.status == 401 => Outcome::Unauthorized(server_message(r)),
            Ok(r) if (200..=299).contains(&r.status) => match parse_item(r) {
                Some(server) if same_content(&self.item, &server) => {
                    self.checked_success(server, r)
                }
                Some(server) => Outcome::Failed {
                    status: Some(409),
                    raw,
                    server_item: Some(server),
                },
                None => Outcome::Failed {
                    status: Some(409),
                    raw,
                    server_item: body_item,
                },
            },
            Ok(_) => Outcome::Failed {
                status: Some(409),
                raw,
                server_item: body_item,
            },
        }
    }
}

/// Whether an error is a failure of the local store (as opposed to a refused answer).
fn is_store_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Store(_)
            | Error::StoreTask(_)
            | Error::CorruptStore(_)
            | Error::UnsupportedStoreVersion { .. }
    )
}

/// How the walk over the queue ended.
struct Walk {
    status: PushStatus,
    cause: Option<String>,
}

/// Pushes the whole queue. `Ok(())` when every operation went through or every error was handled.
///
/// A failure of the local store stops the push like a network error does: the handler's
/// `on_push_complete` still runs, and the push fails with `CancelledBySyncStoreError` whose
/// message is the store's error (protocol.md 6.7, "local store failure").
pub(crate) async fn push_all(
    client: &Client,
    store: &Store,
    handler: &dyn SyncHandler,
) -> Result<()> {
    let walk = match walk_queue(client, store, handler).await {
        Ok(walk) => walk,
        Err(e) if is_store_failure(&e) => Walk {
            status: PushStatus::CancelledBySyncStoreError,
            cause: Some(e.to_string()),
        },
        Err(e) => return Err(e),
    };
    let mut result = match store.run(|c, _| q::list_errors(c)).await {
        Ok(errors) => PushCompletionResult {
            status: walk.status,
            errors,
            message: walk.cause,
        },
        Err(e) if is_store_failure(&e) => PushCompletionResult {
            status: PushStatus::CancelledBySyncStoreError,
            errors: Vec::new(),
            message: walk.cause.or_else(|| Some(e.to_string())),
        },
        Err(e) => return Err(e),
    };
    let resolver = Resolver::new(store.clone());
    handler.on_push_complete(&mut result, &resolver).await?;
    let unhandled: Vec<OperationError> = result.errors.into_iter().filter(|e| !e.handled).collect();
    if result.status == PushStatus::Complete && unhandled.is_empty() {
        Ok(())
    } else {
        Err(Error::PushFailed {
            status: result.status,
            errors: unhandled,
            message: result.message,
        })
    }
}

/// Sends the queue in order and records outcomes. `Err` only for store failures.
async fn walk_queue(client: &Client, store: &Store, handler: &dyn SyncHandler) -> Result<Walk> {
    store.run(|c, _| q::clear_errors(c)).await?;
    let mut last_sequence = 0;
    loop {
        // Read the operation and its payload and mark it Attempted in one transaction, so a
        // local write cannot slip in between (see `claim_next`).
        let Some((op, payload)) = store
            .run(move |c, tables| q::claim_next(c, tables, last_sequence))
            .await?
        else {
            return Ok(Walk {
                status: PushStatus::Complete,
                cause: None,
            });
        };
        last_sequence = op.sequence;
        let table = op.table.clone();
        let item_id = op.item_id.clone();
        let kind = op.kind;
        let (mut body, version) = match payload {
            q::Payload::Item { body, version } => (body, version),
            q::Payload::Missing(reason) => {
                let mut item = Map::new();
                item.insert("id".into(), Value::String(item_id.clone()));
                let e = OperationError {
                    operation_id: op.id.clone(),
                    operation_version: op.version,
                    kind,
                    table,
                    item_id,
                    item,
                    status: None,
                    raw_result: reason.into(),
                    result: None,
                    handled: false,
                };
                store.run(move |c, _| q::record_error(c, &e)).await?;
                continue;
            }
        };
        // `claim_next` found the definition; a missing one here would be a bug, not input.
        let def = store.table(&table)?.clone();
        body.insert("id".into(), Value::String(item_id.clone()));
        let mut top = TableOperation::new(
            client.clone(),
            def,
            kind,
            table.clone(),
            item_id.clone(),
            body,
            version,
        );
        let outcome = handler.execute_table_operation(&mut top).await;
        tracing::debug!(table = %table, id = %item_id, %kind, ?outcome, "pushed operation");
        let kind_is_auth = matches!(outcome, Outcome::Unauthorized(_));
        let failed = match outcome {
            Outcome::Success { item } => {
                let s = store.clone();
                let op2 = op.clone();
                let item2 = item.clone();
                match store
                    .run(move |c, _| q::complete_op(c, s.table(&op2.table)?, &op2, item2.as_ref()))
                    .await
                {
                    Ok(()) => None,
                    Err(e) if is_store_failure(&e) => return Err(e),
                    // The answer could not be written back (another id, a wrongly typed value:
                    // only possible for outcomes a handler made up, `execute` checks its own).
                    // An operation error, and the push goes on.
                    Err(e) => {
                        tracing::warn!(table = %table, id = %item_id, error = %e, "push answer refused");
                        Some((
                            None,
                            item.map(|m| Value::Object(m).to_string())
                                .unwrap_or_default(),
                            None,
                        ))
                    }
                }
            }
            Outcome::NetworkError(message) | Outcome::Unauthorized(message) => {
                let op_id = op.id.clone();
                store
                    .run(move |c, _| q::set_state(c, &op_id, OpState::Failed))
                    .await?;
                return Ok(Walk {
                    status: if kind_is_auth {
                        PushStatus::CancelledByAuthenticationError
                    } else {
                        PushStatus::CancelledByNetworkError
                    },
                    cause: Some(message),
                });
            }
            Outcome::Failed {
                status: http,
                raw,
                server_item,
            } => Some((http, raw, server_item)),
        };
        if let Some((http, raw, server_item)) = failed {
            let mut item = top.item().clone();
            if let Some(v) = top.version() {
                item.insert("version".into(), Value::String(v.to_string()));
            }
            let e = OperationError {
                operation_id: op.id.clone(),
                operation_version: op.version,
                kind,
                table,
                item_id,
                item,
                status: http,
                raw_result: raw,
                result: server_item,
                handled: false,
            };
            store.run(move |c, _| q::record_error(c, &e)).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse::new(status, body))
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn success_takes_version_from_strong_etag() {
        let r = Ok(
            HttpResponse::new(201, r#"{"id":"a","text":"x","version":"old"}"#)
                .with_header("ETag", "\"MQ==\""),
        );
        assert_eq!(
            classify(OpKind::Insert, &r),
            Outcome::Success {
                item: Some(obj(json!({"id":"a","text":"x","version":"MQ=="})))
            }
        );
        let weak = Ok(HttpResponse::new(200, r#"{"id":"a","version":"Mg=="}"#)
            .with_header("etag", "W/\"1a-xyz\""));
        assert_eq!(
            classify(OpKind::Update, &weak),
            Outcome::Success {
                item: Some(obj(json!({"id":"a","version":"Mg=="})))
            }
        );
    }

    #[test]
    fn deletes_succeed_on_2xx_and_404() {
        assert_eq!(
            classify(OpKind::Delete, &resp(204, "")),
            Outcome::Success { item: None }
        );
        assert_eq!(
            classify(
                OpKind::Delete,
                &resp(404, r#"{"error":"The item does not exist"}"#)
            ),
            Outcome::Success { item: None }
        );
        // A 404 about the table is not "already deleted": the queued delete stays.
        let table_404 = r#"{"error":"Table 'Ghost' does not exist","code":"table_not_found"}"#;
        assert_eq!(
            classify(OpKind::Delete, &resp(404, table_404)),
            Outcome::Failed {
                status: Some(404),
                raw: table_404.into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(
                OpKind::Delete,
                &resp(404, r#"{"error":"gone","code":"item_not_found"}"#)
            ),
            Outcome::Success { item: None }
        );
        // A 404 that does not say the item is missing (an HTML page from a proxy or an unknown
        // route, an empty body, plain text) keeps the queued delete.
        for body in [
            "<html><body>Cannot DELETE /tables/todoitem/a</body></html>",
            "",
            "Not Found",
        ] {
            assert_eq!(
                classify(OpKind::Delete, &resp(404, body)),
                Outcome::Failed {
                    status: Some(404),
                    raw: body.into(),
                    server_item: None
                },
                "{body:?}"
            );
        }
        // Only an item-level 404 confirms a delete (ours, or the Node server's code-less body).
        assert!(says_item_not_found(&HttpResponse::new(
            404,
            r#"{"error":"x","code":"item_not_found"}"#
        )));
        assert!(says_item_not_found(&HttpResponse::new(
            404,
            r#"{"error":"The item does not exist"}"#
        )));
        assert!(!says_item_not_found(&HttpResponse::new(404, table_404)));
        assert!(!says_item_not_found(&HttpResponse::new(
            404,
            "<html>Cannot GET /tables/Ghost/x</html>"
        )));
        assert!(!says_item_not_found(&HttpResponse::new(404, "")));
        assert!(!says_item_not_found(&HttpResponse::new(
            500,
            r#"{"error":"x"}"#
        )));
        assert_eq!(
            classify(
                OpKind::Update,
                &resp(404, r#"{"error":"The item does not exist"}"#)
            ),
            Outcome::Failed {
                status: Some(404),
                raw: r#"{"error":"The item does not exist"}"#.into(),
                server_item: None
            }
        );
    }

    #[test]
    fn conflicts_carry_the_server_item() {
        let body = r#"{"id":"a","text":"server","version":"Mw=="}"#;
        assert_eq!(
            classify(OpKind::Update, &resp(412, body)),
            Outcome::Failed {
                status: Some(412),
                raw: body.into(),
                server_item: Some(obj(json!({"id":"a","text":"server","version":"Mw=="})))
            }
        );
        // An error body without an id is not an item.
        assert_eq!(
            classify(OpKind::Insert, &resp(409, r#"{"message":"PRIMARY KEY"}"#)),
            Outcome::Failed {
                status: Some(409),
                raw: r#"{"message":"PRIMARY KEY"}"#.into(),
                server_item: None
            }
        );
    }

    #[test]
    fn network_auth_and_garbage() {
        assert_eq!(
            classify(OpKind::Insert, &Err(TransportError::Timeout)),
            Outcome::NetworkError("request timed out".into())
        );
        assert_eq!(
            classify(
                OpKind::Insert,
                &Err(TransportError::Connection("reset".into()))
            ),
            Outcome::NetworkError("connection failed: reset".into())
        );
        assert_eq!(
            classify(OpKind::Delete, &resp(401, "")),
            Outcome::Unauthorized("HTTP 401 without a message".into())
        );
        assert_eq!(
            classify(OpKind::Update, &resp(401, r#"{"error":"token expired"}"#)),
            Outcome::Unauthorized("token expired".into())
        );
        assert_eq!(
            classify(OpKind::Insert, &resp(401, "  go away\n")),
            Outcome::Unauthorized("go away".into())
        );
        assert_eq!(
            classify(OpKind::Insert, &resp(200, "<html>hello</html>")),
            Outcome::Failed {
                status: Some(200),
                raw: "<html>hello</html>".into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(OpKind::Update, &resp(200, "[1,2]")),
            Outcome::Failed {
                status: Some(200),
                raw: "[1,2]".into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(OpKind::Update, &resp(500, "\u{0}\u{1}")),
            Outcome::Failed {
                status: Some(500),
                raw: "\u{0}\u{1}".into(),
                server_item: None
            }
        );
    }

    #[test]
    fn lost_response_detection_compares_sent_values() {
        let sent = obj(json!({"id":"a","text":"x","n":1,"due":"2020-01-01T00:00:00Z"}));
        assert!(same_content(
            &sent,
            &obj(
                json!({"id":"a","text":"x","n":1.0,"due":"2020-01-01T00:00:00.000Z","version":"v"})
            )
        ));
        assert!(!same_content(
            &sent,
            &obj(json!({"id":"a","text":"y","n":1}))
        ));
    }
}
