//! The client side of batched, exactly-once push (issue 9 points 1 and 6; `docs/extensions.md`).
//!
//! [`Canned`] answers batches from a script (every status, 424 group failures, malformed
//! answers), [`Emulator`] offers batches in front of our real server and runs each batched
//! operation there as its own keyed request (what the contract says a batch does, minus
//! atomicity). The end-to-end tests against the server's own `$batch` are in `batch_server.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tablesync_client::{
    BoxFuture, Client, ClientOptions, Error, HttpRequest, HttpResponse, HttpTransport, Method,
    OpKind, OpState, Operation, PushStatus, SyncContext, Transport, TransportError,
};

use crate::common::{context, is_discovery, todo_store, OurServer, StoreKind};

type Answer = Result<HttpResponse, TransportError>;
/// Answers the `n`th batch (from 0) given its request document.
type BatchScript = Box<dyn Fn(usize, &Value) -> Answer + Send + Sync>;
/// Answers any other request.
type SingleScript = Box<dyn Fn(&HttpRequest) -> Answer + Send + Sync>;

/// The discovery document of a server offering batches of at most `operations_max` operations
/// and `body_bytes_max` bytes.
fn offer(operations_max: usize, body_bytes_max: u64) -> HttpResponse {
    HttpResponse::new(
        200,
        json!({"server": "test", "page_size_max": 1000,
               "batch": {"url": "$batch", "operations_max": operations_max, "body_bytes_max": body_bytes_max},
               "idempotency": {"retention_s": 86400}})
        .to_string(),
    )
}

fn is_batch(req: &HttpRequest) -> bool {
    req.method == Method::Post && req.url.ends_with("/$batch")
}

fn batch_doc(req: &HttpRequest) -> Value {
    serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap()
}

/// A scripted server: discovery answers `discovery`, a batch answers `batch(n, request
/// document)` (n counts batches from 0), anything else `single(request)`. Records every request.
struct Canned {
    discovery: HttpResponse,
    batch: BatchScript,
    single: SingleScript,
    batches: AtomicUsize,
    requests: Mutex<Vec<HttpRequest>>,
}

impl Canned {
    fn new(
        discovery: HttpResponse,
        batch: impl Fn(usize, &Value) -> Answer + Send + Sync + 'static,
        single: impl Fn(&HttpRequest) -> Answer + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Canned {
            discovery,
            batch: Box::new(batch),
            single: Box::new(single),
            batches: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn batch_requests(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| is_batch(r))
            .cloned()
            .collect()
    }

    /// Requests that are neither discovery nor batches.
    fn singles(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !is_batch(r) && !is_discovery(r.method, &r.url))
            .cloned()
            .collect()
    }

    fn discoveries(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| is_discovery(r.method, &r.url))
            .count()
    }
}

impl Transport for Canned {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Answer> {
        self.requests.lock().unwrap().push(request.clone());
        let answer = if is_discovery(request.method, &request.url) {
            Ok(self.discovery.clone())
        } else if is_batch(&request) {
            let n = self.batches.fetch_add(1, Ordering::SeqCst);
            (self.batch)(n, &batch_doc(&request))
        } else {
            (self.single)(&request)
        };
        Box::pin(async move { answer })
    }
}

/// Offers batches in front of a real server and runs each batched operation there as its own
/// request (its method, URL, `If-Match`, `Idempotency-Key` and body), answering in the batch
/// format. `lose_batch_answers` batches are applied and their answers then lost.
struct Emulator {
    inner: HttpTransport,
    base: String,
    operations_max: usize,
    lose_batch_answers: AtomicUsize,
    requests: Mutex<Vec<HttpRequest>>,
}

impl Emulator {
    fn new(base: &str, operations_max: usize) -> Arc<Self> {
        Arc::new(Emulator {
            inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
            base: base.to_string(),
            operations_max,
            lose_batch_answers: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn batch_requests(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| is_batch(r))
            .cloned()
            .collect()
    }

    fn writes_outside_batches(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method != Method::Get && !is_batch(r))
            .count()
    }

    async fn run_batch(&self, doc: &Value) -> Answer {
        let mut responses = Vec::new();
        for r in doc["requests"].as_array().unwrap() {
            let method = match r["method"].as_str().unwrap() {
                "POST" => Method::Post,
                "PATCH" => Method::Patch,
                "DELETE" => Method::Delete,
                other => panic!("method {other}"),
            };
            let mut req = HttpRequest::new(
                method,
                format!("{}{}", self.base, r["url"].as_str().unwrap()),
            );
            req.headers
                .push(("ZUMO-API-VERSION".into(), "2.0.0".into()));
            for (k, v) in r["headers"].as_object().unwrap() {
                req.headers
                    .push((k.clone(), v.as_str().unwrap().to_string()));
            }
            if let Some(body) = r.get("body") {
                req.headers
                    .push(("Content-Type".into(), "application/json".into()));
                req.body = Some(body.to_string().into_bytes());
            }
            let resp = self.inner.send(req).await?;
            let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            let headers: Map<String, Value> = resp
                .headers
                .iter()
                .filter(|(k, _)| k == "etag")
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            responses.push(
                json!({"id": r["id"], "status": resp.status, "headers": headers, "body": body}),
            );
        }
        Ok(HttpResponse::new(
            200,
            json!({ "responses": responses }).to_string(),
        ))
    }
}

impl Transport for Emulator {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            self.requests.lock().unwrap().push(request.clone());
            if is_discovery(request.method, &request.url) {
                return Ok(offer(self.operations_max, 1 << 20));
            }
            if !is_batch(&request) {
                return self.inner.send(request).await;
            }
            let answer = self.run_batch(&batch_doc(&request)).await;
            let lose = self
                .lose_batch_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if lose {
                return Err(TransportError::Connection(
                    "batch answer lost by the test".into(),
                ));
            }
            answer
        })
    }
}

/// Base URL of scripted servers (never dialled).
const SCRIPTED: &str = "http://127.0.0.1:9/";

/// A context on `path` for the server at `base`, over `transport`, with `options`.
async fn context_with(
    base: &str,
    path: &std::path::Path,
    transport: Arc<dyn Transport>,
    options: ClientOptions,
) -> SyncContext {
    let client = Client::with_transport_and_options(base, transport, options).unwrap();
    SyncContext::initialize(client, todo_store(path))
        .await
        .unwrap()
}

/// The queue as it matters for "intact": every field of every operation.
async fn queue(ctx: &SyncContext) -> Vec<Operation> {
    ctx.operations().await.unwrap()
}

/// Every local row, by id.
async fn rows(ctx: &SyncContext) -> BTreeMap<String, Map<String, Value>> {
    ctx.table("TodoItem")
        .unwrap()
        .read("")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

// --- against our server, behind the emulated batch endpoint --------------------------------

store_tests!(
    batched_push_sends_the_queue_in_bounded_batches_and_applies_every_answer,
    a_lost_batch_answer_is_resent_whole_with_the_same_keys,
    our_server_offers_batches_and_the_push_uses_them,
);

async fn batched_push_sends_the_queue_in_bounded_batches_and_applies_every_answer(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::new(&server.url, 4);
    let ctx = context_with(
        &server.url,
        &dir.path().join("a.db"),
        emulator.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    for i in 0..10 {
        t.insert(json!({"id": format!("b{i}"), "text": format!("row {i}"), "complete": false}))
            .await
            .unwrap();
    }
    ctx.push().await.unwrap();
    assert_eq!(
        emulator.batch_requests().len(),
        3,
        "10 operations, 4 per batch"
    );
    // Updates, deletes and an insert: 6 operations, 2 batches.
    for i in 0..3 {
        t.update(json!({"id": format!("b{i}"), "complete": true}))
            .await
            .unwrap();
    }
    t.delete("b8").await.unwrap();
    t.delete("b9").await.unwrap();
    t.insert(json!({"id": "b10", "text": "late", "complete": false}))
        .await
        .unwrap();
    ctx.push().await.unwrap();
    assert_eq!(emulator.batch_requests().len(), 5);
    assert_eq!(
        emulator.writes_outside_batches(),
        0,
        "every write went in a batch"
    );
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    // The requests inside the batches are the single-item requests, each with its key.
    let last = batch_doc(&emulator.batch_requests()[3]);
    let methods: Vec<&str> = last["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["PATCH", "PATCH", "PATCH", "DELETE"]);
    for r in last["requests"].as_array().unwrap() {
        assert!(r["headers"]["if-match"].is_string(), "{r}");
        assert_eq!(r["headers"]["idempotency-key"].as_str().unwrap().len(), 36);
    }
    // The server holds what the client holds, versions included.
    let local = rows(&ctx).await;
    let check = context(&server.url, &dir.path().join("check.db"), None).await;
    check
        .table("TodoItem")
        .unwrap()
        .pull(None, "")
        .await
        .unwrap();
    assert_eq!(rows(&check).await, local);
    assert_eq!(local.len(), 9);
    assert_eq!(local["b1"]["complete"], json!(true));
    server.stop().await;
}

async fn a_lost_batch_answer_is_resent_whole_with_the_same_keys(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::new(&server.url, 100);
    let ctx = context_with(
        &server.url,
        &dir.path().join("a.db"),
        emulator.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    for i in 0..3 {
        t.insert(json!({"id": format!("l{i}"), "text": "x", "complete": false}))
            .await
            .unwrap();
    }
    let keys_before: Vec<String> = queue(&ctx)
        .await
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    emulator.lose_batch_answers.store(1, Ordering::SeqCst);
    match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::CancelledByNetworkError,
            errors,
            message,
        }) => {
            assert!(errors.is_empty());
            assert_eq!(
                message.as_deref(),
                Some("connection failed: batch answer lost by the test")
            );
        }
        other => panic!("{other:?}"),
    }
    let ops = queue(&ctx).await;
    assert_eq!(ops.len(), 3, "queue intact");
    assert!(ops.iter().all(|o| o.state == OpState::Failed));
    assert_eq!(
        ops.iter()
            .map(|o| o.idempotency_key.clone())
            .collect::<Vec<_>>(),
        keys_before
    );
    // The retry sends the same batch, byte for byte (the server replays each keyed insert).
    ctx.push().await.unwrap();
    let batches = emulator.batch_requests();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].body, batches[1].body);
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    assert!(rows(&ctx).await.values().all(|r| r["version"].is_string()));
    server.stop().await;
}

async fn our_server_offers_batches_and_the_push_uses_them(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let faulty = crate::common::Faulty::new();
    let ctx =
        crate::common::context_via(&server.url, &dir.path().join("a.db"), faulty.clone(), None)
            .await;
    let offered = ctx.capabilities().await;
    let batch = offered.batch.expect("our server offers batches");
    assert_eq!(batch.url, format!("{}$batch", server.url));
    assert_eq!(
        (batch.operations_max, batch.body_bytes_max),
        (1000, 1_048_576)
    );
    assert_eq!(offered.idempotency.map(|i| i.retention_s), Some(86_400));
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "s1", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "s2", "text": "y"})).await.unwrap();
    ctx.push().await.unwrap();
    let writes = faulty.writes();
    assert_eq!(
        writes
            .iter()
            .map(|w| (w.method, w.url.ends_with("/$batch")))
            .collect::<Vec<_>>(),
        vec![(Method::Post, true)],
        "both operations in one batch"
    );
    let doc = batch_doc(&writes[0]);
    assert!(doc["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["headers"]["idempotency-key"]
            .as_str()
            .is_some_and(|k| k.len() == 36)));
    assert_eq!(faulty.discovery_requests(), 1);
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    server.stop().await;
}

// --- scripted answers ------------------------------------------------------------------------

/// Rows `p1`… that the server already has at version `v1`: pulled into a fresh store so the
/// queue can hold updates and deletes of them.
fn server_rows(ids: &[&str]) -> String {
    Value::Array(
        ids.iter()
            .map(|id| {
                json!({"id": id, "text": "server", "complete": false, "version": "v1",
                       "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z",
                       "deleted": false})
            })
            .collect(),
    )
    .to_string()
}

/// What the scripted server answers one write (by method and item id), on either path.
fn verdict(method: &str, id: &str, body: &Value) -> HttpResponse {
    let item = |text: &Value, version: &str| {
        let mut m = body.as_object().cloned().unwrap_or_default();
        m.insert("id".into(), json!(id));
        if !text.is_null() {
            m.insert("text".into(), text.clone());
        }
        m.insert("version".into(), json!(version));
        m.insert("updatedAt".into(), json!("2026-01-02T00:00:00.000Z"));
        Value::Object(m).to_string()
    };
    match (method, id) {
        ("POST", "ins-ok") | ("PATCH", "upd-ok") => HttpResponse::new(
            if method == "POST" { 201 } else { 200 },
            item(&Value::Null, "v2"),
        )
        .with_header("etag", "\"v2\""),
        // Someone else changed it: 412 with their copy.
        ("PATCH", "upd-conflict") => HttpResponse::new(
            412,
            json!({"id": id, "text": "theirs", "complete": true, "version": "v7"}).to_string(),
        ),
        // The server already holds exactly what this update sends.
        ("PATCH", "upd-landed") => HttpResponse::new(412, item(&Value::Null, "v3")),
        ("PATCH", "upd-busy") => HttpResponse::new(503, r#"{"error":"busy"}"#),
        ("DELETE", "del-gone") => HttpResponse::new(404, r#"{"error":"The item does not exist"}"#),
        ("DELETE", "del-ok") => HttpResponse::new(200, item(&Value::Null, "v2")),
        ("POST", "ins-garbage") => HttpResponse::new(200, "[1,2]"),
        ("POST", "ins-bad") => HttpResponse::new(
            400,
            r#"{"error":"text is too long","code":"invalid_value"}"#,
        ),
        other => panic!("unexpected request {other:?}"),
    }
}

/// The id in a write's URL or body.
fn write_id(url: &str, body: &Value) -> String {
    match body.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => url.rsplit('/').next().unwrap().to_string(),
    }
}

/// Answers a single request: the pull page of [`server_rows`], or [`verdict`].
fn single_verdict(req: &HttpRequest) -> Answer {
    if req.method == Method::Get {
        let ids = [
            "upd-ok",
            "upd-conflict",
            "upd-landed",
            "upd-busy",
            "del-gone",
            "del-ok",
        ];
        return Ok(HttpResponse::new(
            200,
            if req.url.contains("id%20gt") {
                "[]".to_string()
            } else {
                server_rows(&ids)
            },
        ));
    }
    let body: Value = req
        .body
        .as_deref()
        .map(|b| serde_json::from_slice(b).unwrap())
        .unwrap_or(Value::Null);
    Ok(verdict(
        req.method.as_str(),
        &write_id(&req.url, &body),
        &body,
    ))
}

/// Answers a batch request with [`verdict`] per operation, as a batch answer.
fn batch_verdicts(doc: &Value) -> Answer {
    let responses: Vec<Value> = doc["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let body = r.get("body").cloned().unwrap_or(Value::Null);
            let v = verdict(
                r["method"].as_str().unwrap(),
                &write_id(r["url"].as_str().unwrap(), &body),
                &body,
            );
            let headers: Map<String, Value> = v
                .headers
                .iter()
                .map(|(k, val)| (k.clone(), json!(val)))
                .collect();
            json!({"id": r["id"], "status": v.status, "headers": headers,
                   "body": serde_json::from_slice::<Value>(&v.body).unwrap()})
        })
        .collect();
    Ok(HttpResponse::new(
        200,
        json!({ "responses": responses }).to_string(),
    ))
}

/// Fills a store with one operation per scripted case.
async fn queue_every_case(ctx: &SyncContext) {
    let t = ctx.table("TodoItem").unwrap();
    t.pull(None, "").await.unwrap();
    for id in ["ins-ok", "ins-garbage", "ins-bad"] {
        t.insert(json!({"id": id, "text": "mine", "complete": false}))
            .await
            .unwrap();
    }
    for id in ["upd-ok", "upd-conflict", "upd-busy"] {
        t.update(json!({"id": id, "text": "mine"})).await.unwrap();
    }
    // What the server answers for upd-landed: the local row as it is.
    t.update(json!({"id": "upd-landed", "text": "server"}))
        .await
        .unwrap();
    t.delete("del-gone").await.unwrap();
    t.delete("del-ok").await.unwrap();
}

/// What a push left: errors (item, status, raw, server copy), operations (item, kind, state,
/// whether the key changed), rows.
type Aftermath = (
    Vec<(String, Option<u16>, String, Option<Map<String, Value>>)>,
    Vec<(String, OpKind, OpState, bool)>,
    BTreeMap<String, Map<String, Value>>,
);

async fn push_and_look(ctx: &SyncContext) -> Aftermath {
    let keys: BTreeMap<String, String> = queue(ctx)
        .await
        .into_iter()
        .map(|o| (o.item_id, o.idempotency_key))
        .collect();
    let errors = match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::Complete,
            errors,
            message: None,
        }) => errors,
        other => panic!("{other:?}"),
    };
    (
        errors
            .into_iter()
            .map(|e| (e.item_id, e.status, e.raw_result, e.result))
            .collect(),
        queue(ctx)
            .await
            .into_iter()
            .map(|o| {
                let changed = keys[&o.item_id] != o.idempotency_key;
                (o.item_id, o.kind, o.state, changed)
            })
            .collect(),
        rows(ctx).await,
    )
}

#[tokio::test]
async fn batch_answers_mean_exactly_what_single_answers_mean() {
    let dir = tempfile::tempdir().unwrap();
    let single = Canned::new(
        HttpResponse::new(404, "<html>no</html>"),
        |_, _| panic!("no batches"),
        single_verdict,
    );
    let batched = Canned::new(
        offer(1000, 1 << 20),
        |_, doc| batch_verdicts(doc),
        single_verdict,
    );
    let a = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        single.clone(),
        ClientOptions::default(),
    )
    .await;
    let b = context_with(
        SCRIPTED,
        &dir.path().join("b.db"),
        batched.clone(),
        ClientOptions::default(),
    )
    .await;
    queue_every_case(&a).await;
    queue_every_case(&b).await;
    let by_single = push_and_look(&a).await;
    let by_batch = push_and_look(&b).await;
    assert_eq!(
        batched.batch_requests().len(),
        1,
        "one request for the whole queue"
    );
    assert_eq!(single.singles().len(), 10, "one pull, nine writes");
    assert_eq!(by_batch, by_single);
    // And what they mean:
    let (errors, ops, rows) = by_batch;
    let failed: Vec<(&str, Option<u16>)> = errors.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        failed,
        vec![
            ("ins-garbage", Some(200)),
            ("ins-bad", Some(400)),
            ("upd-conflict", Some(412)),
            ("upd-busy", Some(503)),
        ]
    );
    assert_eq!(
        errors[2].3.as_ref().unwrap()["text"],
        json!("theirs"),
        "a conflict carries the server's copy"
    );
    assert_eq!(
        ops,
        vec![
            (
                "ins-garbage".to_string(),
                OpKind::Insert,
                OpState::Failed,
                false
            ),
            ("ins-bad".to_string(), OpKind::Insert, OpState::Failed, true),
            (
                "upd-conflict".to_string(),
                OpKind::Update,
                OpState::Failed,
                true
            ),
            (
                "upd-busy".to_string(),
                OpKind::Update,
                OpState::Failed,
                false
            ),
        ],
        "a decided refusal replaces the key; garbage and a 503 keep it"
    );
    assert_eq!(rows["ins-ok"]["version"], json!("v2"));
    assert_eq!(rows["upd-ok"]["version"], json!("v2"));
    assert_eq!(rows["upd-landed"]["version"], json!("v3"));
    assert!(!rows.contains_key("del-gone") && !rows.contains_key("del-ok"));
}

#[tokio::test]
async fn a_local_transaction_is_one_atomicity_group_and_fails_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let canned = Canned::new(
        offer(1000, 1 << 20),
        |_, doc| {
            let ids: Vec<&Value> = doc["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r["id"])
                .collect();
            Ok(HttpResponse::new(
                200,
                json!({"responses": [
                    {"id": ids[0], "status": 400, "body": {"error": "bad text", "code": "invalid_value"}},
                    {"id": ids[1], "status": 424, "body": {"error": "request 1 failed", "code": "failed_dependency"}},
                    {"id": ids[2], "status": 201, "headers": {"etag": "\"v1\""},
                     "body": {"id": "c", "text": "alone", "complete": false}}
                ]})
                .to_string(),
            ))
        },
        |r| panic!("unexpected single request {r:?}"),
    );
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default(),
    )
    .await;
    let mut tx = ctx.transaction();
    tx.insert("TodoItem", json!({"id": "a", "text": "first"}))
        .unwrap()
        .insert("TodoItem", json!({"id": "b", "text": "second"}))
        .unwrap();
    tx.commit().await.unwrap();
    ctx.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "c", "text": "alone"}))
        .await
        .unwrap();
    let before = queue(&ctx).await;
    assert!(before[0].group.is_some());
    assert_eq!(before[0].group, before[1].group);
    assert_eq!(before[2].group, None);
    match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::Complete,
            errors,
            ..
        }) => {
            let got: Vec<(&str, Option<u16>)> = errors
                .iter()
                .map(|e| (e.item_id.as_str(), e.status))
                .collect();
            assert_eq!(got, vec![("a", Some(400)), ("b", Some(424))]);
            assert!(errors[1].raw_result.contains("failed_dependency"));
        }
        other => panic!("{other:?}"),
    }
    let doc = batch_doc(&canned.batch_requests()[0]);
    let groups: Vec<&Value> = doc["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.get("atomicityGroup").unwrap_or(&Value::Null))
        .collect();
    assert_eq!(groups, vec![&json!("g1"), &json!("g1"), &Value::Null]);
    let after = queue(&ctx).await;
    assert_eq!(
        after
            .iter()
            .map(|o| (o.item_id.as_str(), o.state))
            .collect::<Vec<_>>(),
        vec![("a", OpState::Failed), ("b", OpState::Failed)]
    );
    assert_ne!(
        after[0].idempotency_key, before[0].idempotency_key,
        "a 400 is decided"
    );
    assert_eq!(
        after[1].idempotency_key, before[1].idempotency_key,
        "a 424 is not"
    );
    assert_eq!(rows(&ctx).await["c"]["version"], json!("v1"));
}

#[tokio::test]
async fn every_malformed_batch_answer_leaves_the_queue_intact() {
    let ok = |id: &str| json!({"id": id, "status": 201, "body": {"id": "x", "text": "x"}});
    let cases: Vec<(u16, String, &str)> = vec![
        (200, "<html>proxy</html>".into(), "not JSON"),
        (200, "".into(), "not JSON"),
        (200, r#"{"responses":null}"#.into(), "no responses array"),
        (
            200,
            json!({"responses": [ok("1")]}).to_string(),
            "no response for request 2",
        ),
        (
            200,
            json!({"responses": [ok("1"), ok("1")]}).to_string(),
            "two responses for request 1",
        ),
        (
            200,
            json!({"responses": [ok("1"), ok("2"), ok("3")]}).to_string(),
            "unknown request \"3\"",
        ),
        (
            200,
            json!({"responses": [ok("1"), {"id": "2", "status": "201"}]}).to_string(),
            "no valid status",
        ),
        (
            500,
            r#"{"error":"boom"}"#.into(),
            "the server answered the batch with 500: boom",
        ),
        (503, "<html>unavailable</html>".into(), "503"),
    ];
    let script: Arc<Mutex<(u16, String)>> = Arc::new(Mutex::new((200, String::new())));
    let s = script.clone();
    let canned = Canned::new(
        offer(1000, 1 << 20),
        move |_, _| {
            let (status, body) = s.lock().unwrap().clone();
            Ok(HttpResponse::new(status, body))
        },
        |r| panic!("unexpected single request {r:?}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "m1", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "m2", "text": "y"})).await.unwrap();
    let rows_before = rows(&ctx).await;
    let mut queue_before = queue(&ctx).await;
    for (n, (status, body, expect)) in cases.into_iter().enumerate() {
        *script.lock().unwrap() = (status, body.clone());
        match ctx.push().await {
            Err(Error::PushFailed {
                status: PushStatus::CancelledByServerError,
                errors,
                message: Some(message),
            }) => {
                assert!(errors.is_empty(), "{body}");
                assert!(message.contains(expect), "{body}: {message}");
            }
            other => panic!("{body}: {other:?}"),
        }
        let mut now = queue(&ctx).await;
        // The first attempt marks them Failed; nothing else changes, ever.
        for o in now.iter_mut().chain(queue_before.iter_mut()) {
            o.state = OpState::Failed;
        }
        assert_eq!(now, queue_before, "{body}");
        assert_eq!(rows(&ctx).await, rows_before, "{body}");
        assert_eq!(
            canned.batch_requests().len(),
            n + 1,
            "still batching after {body}"
        );
        queue_before = now;
    }
    assert!(canned.singles().is_empty());
    assert_eq!(canned.discoveries(), 1, "one discovery per context");
}

#[tokio::test]
async fn a_refused_batch_stops_the_push_and_the_session_falls_back_to_single_requests() {
    let canned = Canned::new(
        offer(1000, 1 << 20),
        |_, _| {
            Ok(HttpResponse::new(
                413,
                r#"{"error":"the batch is too large"}"#,
            ))
        },
        |r| {
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
            Ok(HttpResponse::new(
                201,
                json!({"id": body["id"], "text": body["text"], "version": "v1"}).to_string(),
            ))
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "r1", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "r2", "text": "y"})).await.unwrap();
    let keys: Vec<String> = queue(&ctx)
        .await
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::CancelledByServerError,
            message: Some(m),
            ..
        }) => assert_eq!(
            m,
            "the server answered the batch with 413: the batch is too large"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(ctx.pending_operations().await.unwrap(), 2);
    ctx.push().await.unwrap();
    assert_eq!(canned.batch_requests().len(), 1);
    let singles = canned.singles();
    assert_eq!(singles.len(), 2);
    assert_eq!(
        singles
            .iter()
            .map(|r| r.header("idempotency-key").unwrap().to_string())
            .collect::<Vec<_>>(),
        keys,
        "the same requests, one by one"
    );
}

#[tokio::test]
async fn a_401_or_no_answer_to_a_batch_stops_the_push_like_a_single_request() {
    for (answer, expect) in [
        (
            Ok(HttpResponse::new(401, r#"{"error":"token expired"}"#)),
            PushStatus::CancelledByAuthenticationError,
        ),
        (
            Err(TransportError::Timeout),
            PushStatus::CancelledByNetworkError,
        ),
    ] {
        let a = answer.clone();
        let canned = Canned::new(
            offer(1000, 1 << 20),
            move |_, _| a.clone(),
            |r| panic!("unexpected single request {r:?}"),
        );
        let dir = tempfile::tempdir().unwrap();
        let ctx = context_with(
            SCRIPTED,
            &dir.path().join("a.db"),
            canned.clone(),
            ClientOptions::default(),
        )
        .await;
        ctx.table("TodoItem")
            .unwrap()
            .insert(json!({"id": "u", "text": "x"}))
            .await
            .unwrap();
        let before = queue(&ctx).await;
        match ctx.push().await {
            Err(Error::PushFailed { status, errors, .. }) => {
                assert_eq!(status, expect);
                assert!(errors.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let after = queue(&ctx).await;
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].idempotency_key, before[0].idempotency_key);
        assert_eq!(after[0].state, OpState::Failed);
    }
}

#[tokio::test]
async fn batch_push_off_sends_single_requests_and_asks_nothing() {
    let canned = Canned::new(
        offer(1000, 1 << 20),
        |_, _| panic!("batching is off"),
        |r| {
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
            Ok(HttpResponse::new(
                201,
                json!({"id": body["id"], "version": "v1"}).to_string(),
            ))
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default().with_batch_push(false),
    )
    .await;
    assert!(!ctx.client().batch_push());
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "o1", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "o2", "text": "y"})).await.unwrap();
    ctx.push().await.unwrap();
    assert_eq!(canned.singles().len(), 2);
    assert_eq!(
        canned.discoveries(),
        0,
        "a push without batches needs no discovery"
    );
    assert!(canned.batch_requests().is_empty());
}

#[tokio::test]
async fn an_operation_larger_than_a_batch_goes_alone_and_the_rest_in_batches() {
    let canned = Canned::new(
        // Room for small operations, not for the big one.
        offer(1000, 600),
        |_, doc| {
            let responses: Vec<Value> = doc["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!({"id": r["id"], "status": 201, "body": {"id": r["body"]["id"], "version": "v1"}}))
                .collect();
            Ok(HttpResponse::new(
                200,
                json!({ "responses": responses }).to_string(),
            ))
        },
        |r| {
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
            Ok(HttpResponse::new(
                201,
                json!({"id": body["id"], "version": "v1"}).to_string(),
            ))
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "s1", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "big", "text": "z".repeat(2000)}))
        .await
        .unwrap();
    t.insert(json!({"id": "s2", "text": "y"})).await.unwrap();
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    let batches = canned.batch_requests();
    assert_eq!(batches.len(), 2);
    assert!(batches
        .iter()
        .all(|b| b.body.as_ref().unwrap().len() <= 600));
    let singles = canned.singles();
    assert_eq!(singles.len(), 1);
    assert!(singles[0].body.as_ref().unwrap().len() > 2000);
}

// --- the key lifecycle, seen from the app and on the wire ------------------------------------

#[tokio::test]
async fn idempotency_keys_are_kept_on_retry_replaced_on_change_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = crate::common::Faulty::new();
    let key_of = |ops: &[Operation]| ops[0].idempotency_key.clone();
    let ctx = crate::common::faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "k", "text": "x"})).await.unwrap();
    let k0 = key_of(&queue(&ctx).await);
    // No answer (nothing listens on the scripted URL), then a 503: both retries carry k0.
    assert!(matches!(
        ctx.push().await,
        Err(Error::PushFailed {
            status: PushStatus::CancelledByNetworkError,
            ..
        })
    ));
    faulty.answer_with(503, r#"{"error":"busy"}"#);
    assert!(ctx.push().await.is_err());
    assert!(ctx.push().await.is_err());
    let sent: Vec<String> = faulty
        .writes()
        .iter()
        .map(|w| w.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(sent, vec![k0.clone(), k0.clone(), k0.clone()]);
    assert_eq!(key_of(&queue(&ctx).await), k0);
    // A local edit is a new request.
    t.update(json!({"id": "k", "text": "y"})).await.unwrap();
    let k1 = key_of(&queue(&ctx).await);
    assert_ne!(k1, k0);
    // A decided refusal too: the request did not apply, the next one is decided afresh.
    faulty.answer_with(400, r#"{"error":"no","code":"invalid_value"}"#);
    assert!(ctx.push().await.is_err());
    let last_sent = faulty
        .writes()
        .last()
        .unwrap()
        .header("idempotency-key")
        .unwrap()
        .to_string();
    assert_eq!(last_sent, k1);
    let k2 = key_of(&queue(&ctx).await);
    assert_ne!(k2, k1);
    drop((t, ctx));
    // The key is in the store: a new context on the file sends the same one.
    let again = crate::common::faulty_context(dir.path(), &faulty).await;
    assert_eq!(key_of(&queue(&again).await), k2);
    assert!(again.push().await.is_err());
    let last_sent = faulty
        .writes()
        .last()
        .unwrap()
        .header("idempotency-key")
        .unwrap()
        .to_string();
    assert_eq!(last_sent, k2);
}

#[tokio::test]
async fn a_batch_carries_each_operations_own_key() {
    let canned = Canned::new(
        offer(1000, 1 << 20),
        |_, _| Err(TransportError::Connection("down".into())),
        |r| panic!("unexpected single request {r:?}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context_with(
        SCRIPTED,
        &dir.path().join("a.db"),
        canned.clone(),
        ClientOptions::default(),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    for id in ["a", "b", "c"] {
        t.insert(json!({"id": id, "text": id})).await.unwrap();
    }
    assert!(ctx.push().await.is_err());
    assert!(ctx.push().await.is_err());
    let keys: Vec<String> = queue(&ctx)
        .await
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    for b in canned.batch_requests() {
        let sent: Vec<String> = batch_doc(&b)["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["headers"]["idempotency-key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(sent, keys);
    }
    assert_eq!(canned.batch_requests().len(), 2);
}

#[tokio::test]
async fn client_wins_resends_a_conflict_a_batch_reported() {
    let canned = Canned::new(
        offer(1000, 1 << 20),
        |_, doc| {
            let r = &doc["requests"][0];
            Ok(HttpResponse::new(
                200,
                json!({"responses": [{"id": r["id"], "status": 412, "headers": {"etag": "\"v9\""},
                        "body": {"id": "cw", "text": "theirs", "complete": false}}]})
                .to_string(),
            ))
        },
        |r| {
            if r.method == Method::Get {
                return Ok(HttpResponse::new(200, server_rows(&["cw"])));
            }
            assert_eq!(r.method, Method::Patch);
            assert_eq!(r.header("if-match"), Some("\"v9\""));
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
            Ok(HttpResponse::new(200, body.to_string()).with_header("etag", "\"v10\""))
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let client =
        Client::with_transport_and_options(SCRIPTED, canned.clone(), ClientOptions::default())
            .unwrap();
    let ctx = SyncContext::initialize_with_handler(
        client,
        todo_store(&dir.path().join("a.db")),
        Arc::new(tablesync_client::ClientWins::default()),
    )
    .await
    .unwrap();
    let t = ctx.table("TodoItem").unwrap();
    t.pull(None, "").await.unwrap();
    t.update(json!({"id": "cw", "text": "mine"})).await.unwrap();
    let key = queue(&ctx).await[0].idempotency_key.clone();
    ctx.push().await.unwrap();
    assert_eq!(canned.batch_requests().len(), 1);
    let patches: Vec<HttpRequest> = canned
        .singles()
        .into_iter()
        .filter(|r| r.method == Method::Patch)
        .collect();
    assert_eq!(patches.len(), 1, "the handler's resend");
    assert_ne!(patches[0].header("idempotency-key"), Some(key.as_str()));
    let row = t.lookup("cw").await.unwrap().unwrap();
    assert_eq!(
        (row["text"].clone(), row["version"].clone()),
        (json!("mine"), json!("v10"))
    );
}
