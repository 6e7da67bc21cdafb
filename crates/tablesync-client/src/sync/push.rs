//! Push: send the queue to the server, in queue order, across all tables (protocol.md 6.7).
//!
//! The shape is "pure decision, thin IO shell": [`classify`] turns one HTTP answer (or transport
//! failure) into an [`Outcome`] without touching anything; the loop in [`push_all`] applies the
//! outcome to the store.
//!
//! | answer | outcome | effect |
//! |---|---|---|
//! | 2xx with the item (insert/update) | `Success` | entry removed, server copy (ETag version) written back |
//! | 2xx (delete), 404 (delete) | `Success` | entry removed |
//! | no answer: refused, dropped, timeout | `NetworkError` | push stops, `CancelledByNetworkError`, queue intact; the transport error is the `PushFailed` message |
//! | 401 | `Unauthorized` | push stops, `CancelledByAuthenticationError`, queue intact; the server's message is the `PushFailed` message |
//! | 409, 412, other 4xx/5xx, 2xx garbage | `Failed` | operation error recorded, push continues |
//!
//! Insert answered with 409 (the id exists on the server — usually an earlier POST whose
//! response was lost): the 409 body cannot be trusted to be the server's copy (the official Node
//! server echoes the request), so the item is fetched with a GET. If the server's copy holds
//! exactly what was sent, the insert did happen: it counts as a success. Otherwise it is a
//! conflict whose `result` is the fetched server copy.

use serde_json::{Map, Value};
use tablesync_protocol::headers::{etag_from_version, version_from_etag};

use crate::client::Client;
use crate::conflict::{OperationError, PushCompletionResult, Resolver, SyncHandler};
use crate::error::{Error, PushStatus, Result};
use crate::queue::{OpKind, OpState};
use crate::store::{queue as q, rows, Store};
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
        /// The server's copy of the item, when the body is a JSON object with an `id`.
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
        // A delete is done whatever the body says (Node: the row, .NET: 204 empty); 404 means
        // someone else deleted it already, which is what we wanted.
        (OpKind::Delete, 200..=299 | 404) => Outcome::Success {
            item: parse_item(resp),
        },
        (_, 200..=299) => match parse_item(resp) {
            Some(item) => Outcome::Success { item: Some(item) },
            // A 2xx without the item is a garbage answer: we cannot know the new version, so the
            // operation stays queued and is reported.
            None => failed(None),
        },
        _ => failed(parse_item(resp)),
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
    kind: OpKind,
    table: String,
    item_id: String,
    item: Map<String, Value>,
    version: Option<String>,
}

impl TableOperation {
    pub(crate) fn new(
        client: Client,
        kind: OpKind,
        table: String,
        item_id: String,
        item: Map<String, Value>,
        version: Option<String>,
    ) -> Self {
        TableOperation {
            client,
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
        match outcome {
            Outcome::Failed {
                status: Some(409),
                raw,
                server_item,
            } if self.kind == OpKind::Insert => {
                self.resolve_insert_conflict(raw, server_item).await
            }
            other => other,
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
                    Outcome::Success { item: Some(server) }
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

/// Pushes the whole queue. `Ok(())` when every operation went through or every error was handled.
pub(crate) async fn push_all(
    client: &Client,
    store: &Store,
    handler: &dyn SyncHandler,
) -> Result<()> {
    store.run(|c, _| q::clear_errors(c)).await?;
    let mut status = PushStatus::Complete;
    let mut cause: Option<String> = None;
    let mut last_sequence = 0;
    loop {
        let Some(op) = store.run(move |c, _| q::next_op(c, last_sequence)).await? else {
            break;
        };
        last_sequence = op.sequence;
        let table = op.table.clone();
        let item_id = op.item_id.clone();
        let kind = op.kind;
        let queued_item = op.item.clone();
        let def_known = store.table(&table).is_ok();
        // Payload: inserts/updates send the row as it is now; deletes the item queued with them.
        let loaded = if !def_known {
            None
        } else if kind == OpKind::Delete {
            let item = queued_item.unwrap_or_default();
            Some(rows::payload(&item))
        } else {
            let s = store.clone();
            let (t, i) = (table.clone(), item_id.clone());
            store
                .run(move |c, _| rows::read_row(c, s.table(&t)?, &i))
                .await?
                .map(|row| rows::payload(&row))
        };
        let Some((mut body, version)) = loaded else {
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
                raw_result: if def_known {
                    "the item is missing from the local table".into()
                } else {
                    "the table is not defined in the local store".into()
                },
                result: None,
                handled: false,
            };
            store.run(move |c, _| q::record_error(c, &e)).await?;
            continue;
        };
        body.insert("id".into(), Value::String(item_id.clone()));
        let op_id = op.id.clone();
        store
            .run(move |c, _| q::set_state(c, &op_id, OpState::Attempted))
            .await?;
        let mut top = TableOperation::new(
            client.clone(),
            kind,
            table.clone(),
            item_id.clone(),
            body,
            version,
        );
        let outcome = handler.execute_table_operation(&mut top).await;
        tracing::debug!(table = %table, id = %item_id, %kind, ?outcome, "pushed operation");
        let kind_is_auth = matches!(outcome, Outcome::Unauthorized(_));
        match outcome {
            Outcome::Success { item } => {
                let s = store.clone();
                store
                    .run(move |c, _| q::complete_op(c, s.table(&op.table)?, &op, item.as_ref()))
                    .await?;
            }
            Outcome::NetworkError(message) | Outcome::Unauthorized(message) => {
                let op_id = op.id.clone();
                store
                    .run(move |c, _| q::set_state(c, &op_id, OpState::Failed))
                    .await?;
                status = if kind_is_auth {
                    PushStatus::CancelledByAuthenticationError
                } else {
                    PushStatus::CancelledByNetworkError
                };
                cause = Some(message);
                break;
            }
            Outcome::Failed {
                status: http,
                raw,
                server_item,
            } => {
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
    let errors = store.run(|c, _| q::list_errors(c)).await?;
    let mut result = PushCompletionResult {
        status,
        errors,
        message: cause,
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
