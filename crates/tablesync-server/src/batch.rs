//! Batched writes and `Idempotency-Key` (`docs/extensions.md` sections 2 and 3), without HTTP.
//!
//! [`parse`] turns a `POST /$batch` body into [`BatchOp`]s, refusing the whole batch (400
//! `invalid_batch` naming the request id, 400 `batch_too_large`) before anything runs. [`run`]
//! applies them in order in **one** store transaction ([`crate::store::StoreTx`]):
//!
//! * every keyed operation's key is claimed first (a key already recorded for another request
//!   refuses the whole batch with 422 before anything is applied; one recorded for this request
//!   is answered from the record and not run again);
//! * each operation runs in its own savepoint through the same `App` table operation as its
//!   single-item route, so its answer is exactly that route's; a refusal undoes only itself;
//! * an atomicity group runs in one more savepoint: when one of its operations is not a 2xx the
//!   group is rolled back, the failed one keeps its answer and the others get 424;
//! * a decided outcome (2xx, 400, 404, 409, 412) is recorded with its key in the same
//!   transaction; keys of undecided operations (5xx, 401, 405, 424) are let go;
//! * the transaction commits once, so the batch's writes and records exist together or not at
//!   all. Cost: a batch holds its tables' clock rows (PostgreSQL) or the writer (SQLite) until
//!   it commits, at most `batch_operations_max` operations long; other writers wait meanwhile.
//!   On SQLite the batch is one entry of the store's group commit: its work runs on the writer
//!   thread in a savepoint of a transaction it may share with concurrent writes, every call on
//!   the transaction answered at once (`Store::transaction`).
//!
//! A single-item write carrying `Idempotency-Key` runs here too, as a batch of one.
//! Rendering an answer into status, headers and body is the HTTP layer's ([`Render`]), so a
//! batched answer is byte for byte what the route would send.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::auth::Identity;
use crate::error::ApiError;
use tablesync_protocol::odata::sql::SqlValue;

use crate::store::{
    BoxFuture, Claim, RecordKey, Recorded, Rows, Scope, StoreResult, StoreTx, TxWork, WorkEnd,
    WriteOutcome,
};
use crate::table::{Column, Item, TableSchema};

/// Longest `Idempotency-Key`, in bytes (the IETF draft leaves it to the server).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The answer header that marks a replayed outcome.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Which table operation a batch request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `POST tables/{table}`.
    Insert,
    /// `PATCH tables/{table}/{id}`.
    Update,
    /// `DELETE tables/{table}/{id}`.
    Delete,
    /// `POST tables/{table}/{id}`.
    Undelete,
}

impl OpKind {
    fn method(self) -> &'static str {
        match self {
            OpKind::Insert | OpKind::Undelete => "POST",
            OpKind::Update => "PATCH",
            OpKind::Delete => "DELETE",
        }
    }
}

/// One operation of a batch (or a keyed single-item write).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOp {
    /// The request id (`""` for a single-item write).
    pub id: String,
    /// The operation.
    pub kind: OpKind,
    /// Table name as in the URL (percent-decoded).
    pub table: String,
    /// Item id of update, delete and undelete (percent-decoded).
    pub item_id: Option<String>,
    /// `If-Match`, when sent.
    pub if_match: Option<String>,
    /// `Idempotency-Key`, when sent.
    pub key: Option<String>,
    /// Body of insert and update.
    pub body: Option<Map<String, Value>>,
    /// `atomicityGroup`, when sent.
    pub group: Option<String>,
}

/// One operation's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct OpAnswer {
    /// The request id.
    pub id: String,
    /// Status, headers and body.
    pub answer: Recorded,
}

/// What a table operation decided, before rendering: the success status and item, or the error.
pub type OpResult = Result<(u16, Item), ApiError>;

/// Renders an [`OpResult`] exactly as the single-item route would answer it (HTTP layer).
pub type Render = dyn Fn(OpResult) -> BoxFuture<'static, Recorded> + Send + Sync;

/// Whether `key` is a valid `Idempotency-Key`: 1..=255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Parse and check a `$batch` body (see the module docs); `operations_max` is
/// `limits.batch_operations_max`.
pub fn parse(bytes: &[u8], operations_max: usize) -> Result<Vec<BatchOp>, ApiError> {
    let invalid = |m: String| ApiError::InvalidBatch(m);
    let doc = crate::json::parse_strict(bytes)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    let requests = doc
        .as_object()
        .and_then(|o| o.get("requests"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the body must be an object with a \"requests\" array".into()))?;
    if requests.len() > operations_max {
        return Err(ApiError::BatchTooLarge {
            count: requests.len(),
            max: operations_max,
        });
    }
    let mut ops = Vec::with_capacity(requests.len());
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut closed_groups: HashSet<String> = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        let op = parse_one(index, request)?;
        let name = &op.id;
        if !ids.insert(op.id.clone()) {
            return Err(invalid(format!("request '{name}': the id is not unique")));
        }
        if let Some(key) = &op.key {
            if !keys.insert(key.clone()) {
                return Err(invalid(format!(
                    "request '{name}': the idempotency-key '{key}' is used twice in the batch"
                )));
            }
        }
        // Groups are adjacent: a group seen before, then interrupted, may not come back.
        let previous = ops.last().and_then(|p: &BatchOp| p.group.clone());
        if previous != op.group {
            if let Some(previous) = previous {
                closed_groups.insert(previous);
            }
            if let Some(group) = &op.group {
                if closed_groups.contains(group) {
                    return Err(invalid(format!(
                        "request '{name}': the operations of atomicity group '{group}' are not adjacent"
                    )));
                }
            }
        }
        ops.push(op);
    }
    Ok(ops)
}

/// One request of a batch; `index` names it when it has no usable id.
fn parse_one(index: usize, request: &Value) -> Result<BatchOp, ApiError> {
    let at = |m: &str| ApiError::InvalidBatch(format!("request #{}: {m}", index + 1));
    let request = request
        .as_object()
        .ok_or_else(|| at("a request must be a JSON object"))?;
    let id = match request.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(at("\"id\" must be a non-empty string")),
    };
    let bad = |m: String| ApiError::InvalidBatch(format!("request '{id}': {m}"));
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("\"method\" must be a string".into()))?;
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("\"url\" must be a string".into()))?;
    let (table, item_id) = parse_url(url).map_err(|m| bad(format!("url '{url}': {m}")))?;
    let kind = match (method.to_ascii_uppercase().as_str(), item_id.is_some()) {
        ("POST", false) => OpKind::Insert,
        ("PATCH", true) => OpKind::Update,
        ("DELETE", true) => OpKind::Delete,
        ("POST", true) => OpKind::Undelete,
        _ => {
            return Err(bad(format!(
                "{method} {url} is not a table write (POST tables/T, PATCH, DELETE or POST tables/T/id)"
            )))
        }
    };
    let mut if_match = None;
    let mut key = None;
    match request.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let value = value
                    .as_str()
                    .ok_or_else(|| bad(format!("header '{name}' must be a string")))?;
                match name.to_ascii_lowercase().as_str() {
                    "if-match" => if_match = Some(value.to_owned()),
                    "idempotency-key" => {
                        if !valid_key(value) {
                            return Err(bad(
                                "the idempotency-key must be 1 to 255 visible ASCII characters"
                                    .into(),
                            ));
                        }
                        key = Some(value.to_owned());
                    }
                    "content-type" if !crate::http::is_json_media_type(value) => {
                        return Err(bad(format!("content-type '{value}' is not JSON")));
                    }
                    _ => {}
                }
            }
        }
        Some(_) => return Err(bad("\"headers\" must be an object".into())),
    }
    let body = match (kind, request.get("body")) {
        (OpKind::Insert | OpKind::Update, Some(Value::Object(body))) => Some(body.clone()),
        (OpKind::Insert | OpKind::Update, _) => {
            return Err(bad("\"body\" must be a JSON object".into()))
        }
        (OpKind::Delete | OpKind::Undelete, None | Some(Value::Null)) => None,
        (OpKind::Delete | OpKind::Undelete, Some(_)) => {
            return Err(bad("a delete or undelete has no body".into()))
        }
    };
    let group = match request.get("atomicityGroup") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) if !g.is_empty() => Some(g.clone()),
        Some(_) => return Err(bad("\"atomicityGroup\" must be a non-empty string".into())),
    };
    Ok(BatchOp {
        id,
        kind,
        table,
        item_id,
        if_match,
        key,
        body,
        group,
    })
}

/// `[/]tables/{table}[/{id}]` → (table, id), both percent-decoded; no query string.
fn parse_url(url: &str) -> Result<(String, Option<String>), String> {
    if url.contains('?') || url.contains('#') {
        return Err("a batch URL has no query string".into());
    }
    let rest = url
        .strip_prefix('/')
        .unwrap_or(url)
        .strip_prefix("tables/")
        .ok_or("not a table URL (tables/{table}[/{id}])")?;
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| "not valid percent-encoded UTF-8".to_owned())
    };
    let mut parts = rest.split('/');
    let table = parts.next().unwrap_or("");
    let id = parts.next();
    if table.is_empty() || parts.next().is_some() || id == Some("") {
        return Err("not a table URL (tables/{table}[/{id}])".into());
    }
    Ok((decode(table)?, id.map(decode).transpose()?))
}

/// The record principal of a caller: keys never cross users.
pub fn principal(identity: &Identity) -> String {
    match identity {
        Identity::User(p) => format!("u:{}", p.user_id),
        Identity::Anonymous => "anonymous".to_owned(),
    }
}

/// Hash of what an operation asks for: method, table, id, `If-Match` and body.
pub fn fingerprint(op: &BatchOp) -> String {
    let doc = serde_json::json!([
        op.kind.method(),
        op.table.to_ascii_lowercase(),
        op.item_id,
        op.if_match,
        op.body,
    ]);
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Outcomes a table operation decided, recorded with their key (docs/extensions.md 3).
fn recordable(status: u16) -> bool {
    (200..300).contains(&status) || matches!(status, 400 | 404 | 409 | 412)
}

fn success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The transaction as the table operations see it, noting which tables dynamic schema grew:
/// a rolled-back savepoint takes its `ADD COLUMN` with it, and the app's copy of the columns
/// must then be read again rather than merged.
struct TxRows<'a> {
    tx: &'a dyn StoreTx,
    grown: std::sync::Mutex<Vec<TableSchema>>,
}

impl TxRows<'_> {
    fn grown(&self) -> Vec<TableSchema> {
        self.grown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a rollback inside the transaction: the grown tables' columns as it sees them now.
    async fn reread(&self, app: &App) -> Result<(), ApiError> {
        for table in self.grown() {
            let columns = self.tx.columns(&table).await?;
            app.replace_columns(&table.name, columns);
        }
        Ok(())
    }
}

impl Rows for TxRows<'_> {
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        self.tx.get(table, scope, id)
    }
    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.tx.insert(table, scope, id, values)
    }
    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.tx.update(table, scope, id, values, expected)
    }
    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.tx.delete(table, scope, id, expected)
    }
    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.tx.undelete(table, scope, id, expected)
    }
    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        let mut grown = self
            .grown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !grown.iter().any(|t| t.name == table.name) {
            grown.push(table.clone());
        }
        self.tx.add_columns(table, columns)
    }
}

/// How one operation's turn went.
enum Turn {
    /// Answered from its record.
    Replayed(Recorded),
    /// Ran now.
    Ran(Recorded),
}

impl Turn {
    fn answer(&self) -> &Recorded {
        match self {
            Turn::Replayed(a) | Turn::Ran(a) => a,
        }
    }
}

/// Apply `ops` for `identity` in one transaction (see the module docs). An `Err` means the
/// whole batch is refused or failed and nothing was applied.
pub async fn run(
    app: &Arc<App>,
    identity: &Identity,
    ops: &[BatchOp],
    render: &'static Render,
) -> Result<Vec<OpAnswer>, ApiError> {
    let retention_s = i64::try_from(app.limits().idempotency_retention_s).unwrap_or(i64::MAX);
    let now_s = app.clock().now_unix_s();
    let batch = Arc::new(Batch {
        app: Arc::clone(app),
        identity: identity.clone(),
        principal: principal(identity),
        ops: ops.to_vec(),
        render,
        now_s,
        expired_before_s: now_s.saturating_sub(retention_s),
        answers: Mutex::new(None),
        grown: Mutex::new(Vec::new()),
    });
    // The store may run the work on another thread (SQLite: the writer's), and again if its
    // first transaction died under it; each run starts afresh and leaves its answers.
    let work: TxWork = {
        let batch = Arc::clone(&batch);
        Box::new(move |tx| {
            let batch = Arc::clone(&batch);
            Box::pin(async move { batch.run_on(tx).await })
        })
    };
    let committed = app.store().transaction(work).await;
    let result = match committed {
        Ok(()) => lock(&batch.answers).take().unwrap_or_else(|| {
            Err(ApiError::Store(crate::store::StoreError::new(
                crate::store::StoreErrorKind::Internal,
                "the batch transaction ended without running the batch",
            )))
        }),
        Err(e) => Err(ApiError::from(e)),
    };
    if let Ok(answers) = &result {
        // Committed: wake the change feed of every table a 2xx operation wrote.
        for (op, answer) in ops.iter().zip(answers) {
            app.after_write(&op.table, success(answer.answer.status));
        }
    }
    if result.is_err() {
        // Rolled back (or never committed): columns the batch added are gone again.
        let grown = lock(&batch.grown).clone();
        for table in grown {
            if let Ok(columns) = app.store().columns(&table).await {
                app.replace_columns(&table.name, columns);
            }
        }
    }
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One batch's inputs and, once its work ran, its answers.
struct Batch {
    app: Arc<App>,
    identity: Identity,
    principal: String,
    ops: Vec<BatchOp>,
    render: &'static Render,
    now_s: i64,
    expired_before_s: i64,
    /// The answers of the last run, or why the batch failed.
    answers: Mutex<Option<Result<Vec<OpAnswer>, ApiError>>>,
    /// Tables whose columns dynamic schema grew (read again when the batch did not commit).
    grown: Mutex<Vec<TableSchema>>,
}

impl Batch {
    /// Run the batch in `tx`: keep its work when it answered, discard it when it failed.
    async fn run_on(&self, tx: &dyn StoreTx) -> WorkEnd {
        let rows = TxRows {
            tx,
            grown: std::sync::Mutex::new(Vec::new()),
        };
        let result = run_in(
            &self.app,
            &rows,
            &self.identity,
            &self.ops,
            self.render,
            &self.principal,
            self.now_s,
            self.expired_before_s,
        )
        .await;
        {
            let mut grown = lock(&self.grown);
            for table in rows.grown() {
                if !grown.iter().any(|t| t.name == table.name) {
                    grown.push(table);
                }
            }
        }
        let writes = self.ops.len();
        let end = match result {
            Ok(_) => WorkEnd::Keep { writes },
            Err(_) => WorkEnd::Discard { writes },
        };
        *lock(&self.answers) = Some(result);
        end
    }
}

/// [`run`] inside its transaction; the caller commits.
#[allow(clippy::too_many_arguments)]
async fn run_in(
    app: &App,
    rows: &TxRows<'_>,
    identity: &Identity,
    ops: &[BatchOp],
    render: &Render,
    principal: &str,
    now_s: i64,
    expired_before_s: i64,
) -> Result<Vec<OpAnswer>, ApiError> {
    let tx = rows.tx;
    let retention_s = now_s.saturating_sub(expired_before_s);
    sweep_now_and_then(app, tx, now_s, retention_s, expired_before_s).await?;

    // Claim every key first: a key reused for another request refuses the batch untouched.
    let mut keys: Vec<Option<RecordKey>> = Vec::with_capacity(ops.len());
    let mut recorded: Vec<Option<Recorded>> = Vec::with_capacity(ops.len());
    for op in ops {
        let Some(key) = &op.key else {
            keys.push(None);
            recorded.push(None);
            continue;
        };
        let record_key = RecordKey {
            principal: principal.to_owned(),
            key: key.clone(),
            fingerprint: fingerprint(op),
        };
        match tx.claim(&record_key, now_s, expired_before_s).await? {
            Claim::New => recorded.push(None),
            Claim::Existing { fingerprint, .. } if fingerprint != record_key.fingerprint => {
                return Err(ApiError::IdempotencyKeyReused(key.clone()));
            }
            Claim::Existing {
                outcome: Some(outcome),
                ..
            } => recorded.push(Some(outcome)),
            // A claim without an outcome is never committed (see below); treat it as busy.
            Claim::Existing { outcome: None, .. } => {
                return Err(ApiError::Store(crate::store::StoreError::new(
                    crate::store::StoreErrorKind::Busy,
                    format!("idempotency key {key} is claimed without an outcome"),
                )))
            }
        }
        keys.push(Some(record_key));
    }

    let mut answers: Vec<Option<Recorded>> = vec![None; ops.len()];
    let mut keep: Vec<bool> = vec![false; ops.len()];
    let mut i = 0;
    while i < ops.len() {
        let end = match &ops[i].group {
            Some(g) => {
                let mut end = i;
                while end < ops.len() && ops[end].group.as_ref() == Some(g) {
                    end += 1;
                }
                end
            }
            None => i + 1,
        };
        let grouped = ops[i].group.is_some();
        if grouped {
            tx.savepoint().await?;
        }
        let mut turns: Vec<Turn> = Vec::with_capacity(end - i);
        let mut failed: Option<usize> = None;
        for j in i..end {
            let turn = match recorded[j].take() {
                Some(outcome) => Turn::Replayed(replayed(outcome)),
                None => Turn::Ran(run_one(app, rows, identity, &ops[j], render).await?),
            };
            let ok = success(turn.answer().status);
            turns.push(turn);
            if grouped && !ok {
                failed = Some(j);
                break;
            }
        }
        match failed {
            Some(f) => {
                tx.rollback_to().await?;
                rows.reread(app).await?;
                let message = format!(
                    "Request '{}' of atomicity group '{}' failed; this operation was rolled back",
                    ops[f].id,
                    ops[i].group.as_deref().unwrap_or("")
                );
                let dependency = render(Err(ApiError::FailedDependency(message))).await;
                for j in i..end {
                    answers[j] = Some(if j == f {
                        turns[j - i].answer().clone()
                    } else {
                        dependency.clone()
                    });
                }
            }
            None => {
                if grouped {
                    tx.release().await?;
                }
                for (offset, turn) in turns.into_iter().enumerate() {
                    let j = i + offset;
                    match turn {
                        Turn::Replayed(answer) => {
                            keep[j] = true;
                            answers[j] = Some(answer);
                        }
                        Turn::Ran(answer) => {
                            if let Some(key) = &keys[j] {
                                if recordable(answer.status) {
                                    tx.complete(key, &answer).await?;
                                    keep[j] = true;
                                }
                            }
                            answers[j] = Some(answer);
                        }
                    }
                }
            }
        }
        i = end;
    }
    // Keys whose operation decided nothing are let go, so a retry is decided afresh.
    for (key, keep) in keys.iter().zip(&keep) {
        if let (Some(key), false) = (key, keep) {
            tx.unclaim(key).await?;
        }
    }
    Ok(ops
        .iter()
        .zip(answers)
        .map(|(op, answer)| OpAnswer {
            id: op.id.clone(),
            answer: answer.unwrap_or_else(|| Recorded {
                status: 500,
                headers: Vec::new(),
                body: None,
            }),
        })
        .collect())
}

/// A recorded outcome as replayed: the same, plus `idempotent-replayed: true`.
fn replayed(mut outcome: Recorded) -> Recorded {
    outcome
        .headers
        .push((REPLAYED_HEADER.to_owned(), "true".to_owned()));
    outcome
}

/// Run one operation in its own savepoint: kept when it succeeded, undone otherwise.
async fn run_one(
    app: &App,
    tx_rows: &TxRows<'_>,
    identity: &Identity,
    op: &BatchOp,
    render: &Render,
) -> Result<Recorded, ApiError> {
    let tx = tx_rows.tx;
    tx.savepoint().await?;
    let rows: &dyn Rows = tx_rows;
    let id = op.item_id.as_deref().unwrap_or("");
    let if_match = op.if_match.as_deref();
    let result: OpResult = match op.kind {
        OpKind::Insert => app
            .insert_on(
                rows,
                &op.table,
                identity,
                op.body.clone().unwrap_or_default(),
            )
            .await
            .map(|item| (201, item)),
        OpKind::Update => app
            .update_on(
                rows,
                &op.table,
                identity,
                id,
                op.body.clone().unwrap_or_default(),
                if_match,
            )
            .await
            .map(|item| (200, item)),
        OpKind::Delete => app
            .delete_on(rows, &op.table, identity, id, if_match)
            .await
            .map(|item| (200, item)),
        OpKind::Undelete => app
            .undelete_on(rows, &op.table, identity, id, if_match)
            .await
            .map(|item| (200, item)),
    };
    let answer = render(result).await;
    if success(answer.status) {
        tx.release().await?;
    } else {
        tx.rollback_to().await?;
        tx_rows.reread(app).await?;
    }
    Ok(answer)
}

/// Delete expired records at most once per `min(60 s, retention)` per process, inside a
/// batch's transaction (so no extra connection or task is needed).
async fn sweep_now_and_then(
    app: &App,
    tx: &dyn StoreTx,
    now_s: i64,
    retention_s: i64,
    expired_before_s: i64,
) -> Result<(), ApiError> {
    let last = app.last_sweep_s();
    let previous = last.load(Ordering::Relaxed);
    if now_s.saturating_sub(previous) >= retention_s.min(60)
        && last
            .compare_exchange(previous, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let swept = tx.sweep(expired_before_s).await?;
        if swept > 0 {
            tracing::debug!("swept {swept} expired idempotency records");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse(body.as_bytes(), 3) {
            Err(e) => e.to_string(),
            Ok(ops) => panic!("accepted: {ops:?}"),
        }
    }

    #[test]
    fn a_batch_parses_into_operations() {
        let ops = parse(
            br#"{"requests":[
              {"id":"1","method":"POST","url":"tables/T","headers":{"Idempotency-Key":"k1"},"body":{"id":"a"},"atomicityGroup":"g"},
              {"id":"2","method":"patch","url":"/tables/T/a%2Fb","headers":{"if-match":"\"v\""},"body":{},"atomicityGroup":"g"},
              {"id":"3","method":"DELETE","url":"tables/T/c","body":null}]}"#,
            3,
        )
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind, OpKind::Insert);
        assert_eq!(ops[0].key.as_deref(), Some("k1"));
        assert_eq!(ops[1].kind, OpKind::Update);
        assert_eq!(ops[1].item_id.as_deref(), Some("a/b"));
        assert_eq!(ops[1].if_match.as_deref(), Some("\"v\""));
        assert_eq!(ops[2].kind, OpKind::Delete);
        assert_eq!(ops[2].group, None);
    }

    #[test]
    fn broken_batches_are_refused_naming_the_request() {
        assert!(err("{").contains("not valid JSON"));
        assert!(err(r#"{"requests":{}}"#).contains("\"requests\" array"));
        assert!(
            err(r#"{"requests":[{"id":"x","method":"GET","url":"tables/T"}]}"#)
                .contains("request 'x'")
        );
        assert!(
            err(r#"{"requests":[{"id":"x","method":"PUT","url":"tables/T/a","body":{}}]}"#)
                .contains("request 'x'")
        );
        assert!(
            err(r#"{"requests":[{"id":"y","method":"POST","url":"tables/T?a=1","body":{}}]}"#)
                .contains("query string")
        );
        assert!(
            err(r#"{"requests":[{"id":"y","method":"POST","url":"other/T","body":{}}]}"#)
                .contains("request 'y'")
        );
        assert!(
            err(r#"{"requests":[{"id":"z","method":"POST","url":"tables/T","body":[1]}]}"#)
                .contains("request 'z'")
        );
        assert!(
            err(r#"{"requests":[{"id":"z","method":"DELETE","url":"tables/T/a","body":{}}]}"#)
                .contains("no body")
        );
        assert!(err(
            r#"{"requests":[{"id":"d","method":"POST","url":"tables/T","body":{}},{"id":"d","method":"POST","url":"tables/T","body":{}}]}"#
        )
        .contains("not unique"));
        assert!(
            err(r#"{"requests":[{"method":"POST","url":"tables/T","body":{}}]}"#)
                .contains("request #1")
        );
        assert!(err(
            r#"{"requests":[{"id":"k","method":"POST","url":"tables/T","headers":{"idempotency-key":"a b"},"body":{}}]}"#
        )
        .contains("visible ASCII"));
        assert!(err(
            r#"{"requests":[{"id":"c","method":"POST","url":"tables/T","headers":{"content-type":"text/plain"},"body":{}}]}"#
        )
        .contains("not JSON"));
        let split = r#"{"requests":[
            {"id":"1","method":"POST","url":"tables/T","body":{},"atomicityGroup":"g"},
            {"id":"2","method":"POST","url":"tables/T","body":{}},
            {"id":"3","method":"POST","url":"tables/T","body":{},"atomicityGroup":"g"}]}"#;
        assert!(err(split).contains("not adjacent"));
        let many = r#"{"requests":[
            {"id":"1","method":"POST","url":"tables/T","body":{}},{"id":"2","method":"POST","url":"tables/T","body":{}},
            {"id":"3","method":"POST","url":"tables/T","body":{}},{"id":"4","method":"POST","url":"tables/T","body":{}}]}"#;
        assert!(matches!(
            parse(many.as_bytes(), 3),
            Err(ApiError::BatchTooLarge { count: 4, max: 3 })
        ));
    }

    #[test]
    fn fingerprints_cover_method_url_if_match_and_body() {
        let op = parse(
            br#"{"requests":[{"id":"1","method":"PATCH","url":"tables/T/a","headers":{"if-match":"\"1\""},"body":{"x":1}}]}"#,
            1,
        )
        .unwrap()
        .remove(0);
        let same = fingerprint(&op);
        assert_eq!(same, fingerprint(&op.clone()));
        let mut other = op.clone();
        other.if_match = Some("\"2\"".into());
        assert_ne!(same, fingerprint(&other));
        let mut other = op.clone();
        other.body = Some(Map::new());
        assert_ne!(same, fingerprint(&other));
        let mut other = op;
        other.item_id = Some("b".into());
        assert_ne!(same, fingerprint(&other));
    }
}
