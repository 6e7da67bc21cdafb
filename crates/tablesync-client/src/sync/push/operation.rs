//! One queued operation on the wire: [`TableOperation`], what a [`crate::SyncHandler`] sees.
//!
//! [`TableOperation::execute`] sends the operation as one request (or takes the answer a batch
//! already brought) and classifies the answer with [`super::classify::classify`], then does the
//! follow-ups that need the server's copy of the item:
//!
//! * **Insert answered 409** (the id exists on the server — usually an earlier POST whose
//!   response was lost): the 409 body cannot be trusted to be the server's copy (the official
//!   Node server echoes the request), so the item is fetched with a GET. If the server's copy
//!   holds exactly what is being sent, the insert did happen: success. If it holds what an
//!   earlier attempt sent (the user edited the item after that attempt's answer was lost), the
//!   insert is rebased: it becomes an update of the server's version, sent at once. Otherwise it
//!   is a conflict whose `result` is the fetched server copy.
//! * **Update or delete answered 412**, whose body is the server's copy: the same comparison
//!   (issue 9 point 2). Holding what this update sends: success. Holding what an earlier
//!   attempt sent (an update's, or, for a delete, the update it replaced): the earlier request
//!   landed, so the operation is rebased on the server's version and sent again, once. A
//!   tombstone answering a delete: the item is gone, success. Otherwise a conflict, as before.
//! * **Update answered 404/410**: a 404 may be about the table or a route rather than the item,
//!   so the item is fetched with `GET /tables/T/{id}?__includeDeleted=true`. Only a tombstone or
//!   a 404 saying the item does not exist confirms the delete (the error's `result` is then a
//!   tombstone, see `OperationError::is_deleted_on_server`); otherwise the error has no server
//!   copy and no shipped handler drops anything.
//!
//! The follow-up GETs and the rebased resend are single requests, in the batched push too.
//! Every write carries the operation's `Idempotency-Key`; any change to what is sent (a rebase,
//! a handler's `set_*`) takes a new one, so a server that keeps idempotency records never sees
//! one key with two requests. A rebase is not written to the store: if its answer is lost too,
//! the next push finds the same server copy (or the resent one) and decides again.

use serde_json::{Map, Value};
use tablesync_protocol::headers::etag_from_version;

use super::classify::{classify, compare_server_copy, parse_item, says_item_not_found};
use super::classify::{server_message, Outcome, ServerCopy};
use crate::client::Client;
use crate::queue::OpKind;
use crate::store::{new_idempotency_key, rows, TableDefinition};
use crate::transport::{HttpResponse, Method, TransportError};

/// One queued operation as handed to a [`crate::SyncHandler`]: what will be sent, and the means
/// to send it.
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
    idempotency_key: String,
    /// What this operation's attempts sent since its base version (oldest first): a server
    /// copy holding one of them means that attempt landed.
    sent_before: Vec<Map<String, Value>>,
    /// The answer a batch already brought for the operation as claimed; the first
    /// [`TableOperation::execute`] uses it instead of sending.
    prefetched: Option<HttpResponse>,
}

/// What [`TableOperation::new`] builds from: the queued operation as claimed.
pub(crate) struct Claim {
    pub(crate) kind: OpKind,
    pub(crate) table: String,
    pub(crate) item_id: String,
    pub(crate) item: Map<String, Value>,
    pub(crate) version: Option<String>,
    pub(crate) idempotency_key: String,
    pub(crate) sent_before: Vec<Map<String, Value>>,
}

impl TableOperation {
    pub(crate) fn new(
        client: Client,
        def: TableDefinition,
        claim: Claim,
        prefetched: Option<HttpResponse>,
    ) -> Self {
        TableOperation {
            client,
            def,
            kind: claim.kind,
            table: claim.table,
            item_id: claim.item_id,
            item: claim.item,
            version: claim.version,
            idempotency_key: claim.idempotency_key,
            sent_before: claim.sent_before,
            prefetched,
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

    /// Replaces the body (system properties are removed; the `id` is kept). A new request: it
    /// gets a new idempotency key.
    pub fn set_item(&mut self, mut item: Map<String, Value>) {
        for k in ["createdAt", "updatedAt", "deleted", "version"] {
            item.remove(k);
        }
        item.insert("id".into(), Value::String(self.item_id.clone()));
        self.item = item;
        self.changed();
    }

    /// The version sent in `If-Match` (updates and deletes).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Sets the version sent in `If-Match`. A new request: it gets a new idempotency key.
    pub fn set_version(&mut self, version: Option<String>) {
        self.version = version;
        self.changed();
    }

    /// The `Idempotency-Key` the next request carries (`docs/extensions.md` section 3).
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Turns an insert into an update of the existing server row (for client-wins on an insert
    /// conflict). No effect on updates and deletes.
    pub fn convert_insert_to_update(&mut self) {
        if self.kind == OpKind::Insert {
            self.kind = OpKind::Update;
            self.changed();
        }
    }

    /// What is sent changed: another request, so another key, and a batch's answer to the
    /// operation as it was no longer answers it.
    fn changed(&mut self) {
        self.idempotency_key = new_idempotency_key();
        self.prefetched = None;
    }

    /// Sends the operation and classifies the answer. Never panics; every failure is an outcome.
    ///
    /// The first call of an operation a batch carried takes the batch's answer instead of
    /// sending. Beyond [`classify`]: an insert answered 409 fetches the server's row, an update
    /// or delete answered 412 compares the server's copy with what was sent (see the module
    /// docs: a lost answer is recognised and the operation rebased and sent again), an update
    /// answered 404/410 fetches the item with `__includeDeleted=true` to confirm a delete; a 2xx
    /// item is a success only if it carries this operation's `id` and fits the local table's
    /// column types, otherwise the answer is `Failed` (status and raw body kept, no server copy).
    pub async fn execute(&mut self) -> Outcome {
        let mut answer = match self.prefetched.take() {
            Some(resp) => Ok(resp),
            None => self.send().await,
        };
        // At most one rebase per call: after it, the operation's base is the server's version.
        let mut may_rebase = true;
        loop {
            let outcome = classify(self.kind, &answer);
            let (status, raw, server_item) = match outcome {
                Outcome::Success { item: Some(item) } if self.kind != OpKind::Delete => {
                    let Ok(resp) = &answer else {
                        return Outcome::Success { item: Some(item) };
                    };
                    return self.checked_success(item, resp.status, resp.body_text());
                }
                Outcome::Failed {
                    status: Some(status),
                    raw,
                    server_item,
                } => (status, raw, server_item),
                other => return other,
            };
            let decided = match (self.kind, status, server_item) {
                (OpKind::Insert, 409, body_item) => {
                    self.resolve_insert_conflict(raw, body_item, may_rebase)
                        .await
                }
                (OpKind::Update, 404 | 410, None) => {
                    Decided::Outcome(self.confirm_deleted(status, raw).await)
                }
                (OpKind::Update | OpKind::Delete, 412, Some(server)) => {
                    self.resolve_precondition_failed(raw, server, may_rebase)
                }
                (_, status, server_item) => Decided::Outcome(Outcome::Failed {
                    status: Some(status),
                    raw,
                    server_item,
                }),
            };
            match decided {
                Decided::Outcome(outcome) => return outcome,
                Decided::Rebase { kind, version } => {
                    tracing::info!(table = %self.table, id = %self.item_id, %kind, "an earlier attempt landed although its answer was lost: rebased on the server's version");
                    self.kind = kind;
                    self.version = Some(version);
                    self.sent_before.clear();
                    self.changed();
                    may_rebase = false;
                    answer = self.send().await;
                }
            }
        }
    }

    /// Sends the operation as one request, with its idempotency key.
    async fn send(&self) -> Result<HttpResponse, TransportError> {
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
        req.headers
            .push(("Idempotency-Key".into(), self.idempotency_key.clone()));
        c.transport().send(req).await
    }

    /// A 2xx answer's item counts only when it is this operation's item and fits the local
    /// table; otherwise the answer is garbage (`Failed` with its status and raw body, no server
    /// copy) and the operation stays queued: writing another id's copy would overwrite an
    /// unrelated row, and a wrongly typed value cannot be stored.
    fn checked_success(&self, item: Map<String, Value>, status: u16, raw: String) -> Outcome {
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
                    status: Some(status),
                    raw,
                    server_item: None,
                }
            }
        }
    }

    /// An update or delete answered 412 with the server's copy `server` (see the module docs).
    fn resolve_precondition_failed(
        &self,
        raw: String,
        server: Map<String, Value>,
        may_rebase: bool,
    ) -> Decided {
        match compare_server_copy(self.kind, &self.item, &self.sent_before, &server) {
            ServerCopy::HoldsThisRequest => {
                Decided::Outcome(self.checked_success(server, 412, raw))
            }
            ServerCopy::DeletedAsWanted => Decided::Outcome(Outcome::Success { item: None }),
            ServerCopy::HoldsEarlierAttempt(version) if may_rebase => Decided::Rebase {
                kind: self.kind,
                version,
            },
            ServerCopy::HoldsEarlierAttempt(_) | ServerCopy::Conflict => {
                Decided::Outcome(Outcome::Failed {
                    status: Some(412),
                    raw,
                    server_item: Some(server),
                })
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
        may_rebase: bool,
    ) -> Decided {
        let c = &self.client;
        let req = c.request(
            Method::Get,
            c.table_url(&self.table, Some(&self.item_id)),
            None,
        );
        let answer = c.transport().send(req).await;
        // Only a body carrying a version can be the server's copy (Node echoes the request).
        let body_item = body_item.filter(|m| matches!(m.get("version"), Some(Value::String(_))));
        let conflict = |server_item| {
            Decided::Outcome(Outcome::Failed {
                status: Some(409),
                raw: raw.clone(),
                server_item,
            })
        };
        match &answer {
            Err(e) => Decided::Outcome(Outcome::NetworkError(e.to_string())),
            Ok(r) if r.status == 401 => Decided::Outcome(Outcome::Unauthorized(server_message(r))),
            Ok(r) if (200..=299).contains(&r.status) => match parse_item(r) {
                Some(server) => {
                    match compare_server_copy(self.kind, &self.item, &self.sent_before, &server) {
                        ServerCopy::HoldsThisRequest => {
                            Decided::Outcome(self.checked_success(server, r.status, r.body_text()))
                        }
                        ServerCopy::HoldsEarlierAttempt(version) if may_rebase => Decided::Rebase {
                            kind: OpKind::Update,
                            version,
                        },
                        _ => conflict(Some(server)),
                    }
                }
                None => conflict(body_item),
            },
            Ok(_) => conflict(body_item),
        }
    }
}

/// What a follow-up decided.
enum Decided {
    /// The final outcome.
    Outcome(Outcome),
    /// An earlier attempt landed: send again as `kind` with `If-Match: version`.
    Rebase { kind: OpKind, version: String },
}
