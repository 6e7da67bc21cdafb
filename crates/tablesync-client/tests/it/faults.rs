//! Garbage answers, timeouts, 401: errors, never panics, and the queue stays intact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tablesync_client::{
    BoxFuture, Client, ClientOptions, Error, HttpRequest, HttpResponse, Method, OpKind, OpState,
    PushCompletionResult, PushStatus, Resolver, SyncContext, SyncHandler, Transport,
    TransportError,
};

use crate::common::{
    context_via, faulty_context, is_discovery, todo_store, Faulty, OurServer, StoreKind,
};

#[tokio::test]
async fn garbage_answers_give_errors_and_keep_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "g1", "text": "x", "complete": false}))
        .await
        .unwrap();
    t.insert(json!({"id": "g2", "text": "y", "complete": true}))
        .await
        .unwrap();

    for (status, body) in [
        (200, "<html>not json</html>"),
        (201, "{\"id\":"),
        (200, "[1,2,3]"),
        (201, "{\"text\":\"no id\"}"),
        (500, "\u{0}\u{ff}"),
        (418, ""),
    ] {
        faulty.answer_with(status, body);
        match ctx.push().await {
            Err(Error::PushFailed {
                status: s,
                errors,
                message: None,
            }) => {
                assert_eq!(s, PushStatus::Complete);
                let got: Vec<(Option<u16>, &str, &str)> = errors
                    .iter()
                    .map(|e| (e.status, e.item_id.as_str(), e.raw_result.as_str()))
                    .collect();
                assert_eq!(
                    got,
                    vec![(Some(status), "g1", body), (Some(status), "g2", body)]
                );
                assert!(errors.iter().all(|e| e.result.is_none()));
            }
            other => panic!("{status} {body:?}: {other:?}"),
        }
        assert_eq!(ctx.pending_operations().await.unwrap(), 2);
    }

    // Pull: first the automatic push fails; with an empty queue the page itself is garbage.
    faulty.answer_with(200, "<html/>");
    assert!(matches!(
        t.pull(Some("q"), "").await,
        Err(Error::PushFailed { .. })
    ));
    t.purge(None, "", true).await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    for (status, body, expect) in [
        (200, "<html/>", "not JSON"),
        (200, "{\"results\":5}", "without a results array"),
        (200, "[{\"id\":\"a\"}]", "has no updatedAt"),
        (
            200,
            "[{\"id\":\"a\",\"updatedAt\":\"soon\"}]",
            "invalid updatedAt",
        ),
        (
            200,
            "[{\"id\":\"a\",\"updatedAt\":\"2020-01-01T00:00:00Z\",\"text\":7}]",
            "not a valid string",
        ),
        (200, "[5]", "not an object"),
    ] {
        faulty.answer_with(status, body);
        let err = t.pull(Some("q"), "").await.unwrap_err();
        assert!(err.to_string().contains(expect), "{body}: {err}");
    }
    faulty.answer_with(500, "{\"error\":\"boom\"}");
    match t.pull(None, "").await {
        Err(Error::Http { status, body }) => {
            assert_eq!((status, body.as_str()), (500, "{\"error\":\"boom\"}"))
        }
        other => panic!("{other:?}"),
    }
    faulty.answer_with(401, "");
    assert!(matches!(t.pull(None, "").await, Err(Error::Unauthorized)));
    // A server that ignores the keyset filter would make a pull loop forever: refused instead.
    faulty.answer_with(
        200,
        "[{\"id\":\"a\",\"updatedAt\":\"2020-01-01T00:00:00.000Z\"},{\"id\":\"b\",\"updatedAt\":\"2020-01-01T00:00:00.000Z\"}]",
    );
    let err = t
        .pull_with_options(
            Some("q"),
            "",
            tablesync_client::PullOptions::with_page_size(2),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not support keyset paging"),
        "{err}"
    );
    // The first page was applied and its token saved before the bad second page.
    assert_eq!(t.read("").await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn unauthorized_stops_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "a", "text": "x"})).await.unwrap();
    t.insert(json!({"id": "b", "text": "y"})).await.unwrap();
    faulty.answer_with(401, "{\"error\":\"token expired\"}");
    match ctx.push().await {
        Err(e @ Error::PushFailed { .. }) => {
            assert_eq!(
                e.to_string(),
                "push failed: CancelledByAuthenticationError (token expired), 0 unhandled operation error(s)"
            );
            let Error::PushFailed {
                status,
                errors,
                message,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(status, PushStatus::CancelledByAuthenticationError);
            assert!(errors.is_empty());
            assert_eq!(message.as_deref(), Some("token expired"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        faulty.methods().len(),
        1,
        "the push stopped at the first 401"
    );
    assert_eq!(ctx.pending_operations().await.unwrap(), 2);
}

#[tokio::test]
async fn timeouts_and_dropped_connections_are_network_errors() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let client =
        Client::with_options(&url, ClientOptions::default().with_request_timeout_ms(300)).unwrap();
    let ctx = SyncContext::initialize(client, todo_store(&dir.path().join("a.db")))
        .await
        .unwrap();
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "a", "text": "x"})).await.unwrap();
    match ctx.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message,
        }) => {
            assert_eq!(status, PushStatus::CancelledByNetworkError);
            assert!(errors.is_empty());
            assert_eq!(message.as_deref(), Some("request timed out"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ctx.pending_operations().await.unwrap(), 1);
    hold.abort();

    // A server that closes every connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url2 = format!("http://{}/", listener.local_addr().unwrap());
    let closer = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    let ctx2 = SyncContext::initialize(
        Client::new(&url2).unwrap(),
        todo_store(&dir.path().join("b.db")),
    )
    .await
    .unwrap();
    let t2 = ctx2.table("TodoItem").unwrap();
    t2.insert(json!({"id": "a", "text": "x"})).await.unwrap();
    assert!(matches!(
        ctx2.push().await,
        Err(Error::PushFailed {
            status: PushStatus::CancelledByNetworkError,
            ..
        })
    ));
    assert!(matches!(
        t2.pull(None, "").await,
        Err(Error::PushFailed { .. })
    ));
    t2.purge(None, "", true).await.unwrap();
    assert!(matches!(t2.pull(None, "").await, Err(Error::Network(_))));
    closer.abort();
}

store_tests!(our_server_rejects_an_unknown_column_as_an_operation_error);

async fn our_server_rejects_an_unknown_column_as_an_operation_error(kind: StoreKind) {
    // A store that declares a column the server does not have: the inserts fail with 400, the
    // push continues and reports them.
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let mut store = tablesync_client::LocalStore::new(dir.path().join("a.db"));
    store
        .define_table(
            tablesync_client::TableDefinition::new("TodoItem")
                .column("text", tablesync_client::ColumnType::String)
                .column("priority", tablesync_client::ColumnType::Number),
        )
        .unwrap();
    let ctx = SyncContext::initialize(Client::new(&server.url).unwrap(), store)
        .await
        .unwrap();
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "x", "text": "a", "priority": 2}))
        .await
        .unwrap();
    t.insert(json!({"id": "y", "text": "b"})).await.unwrap();
    match ctx.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message: None,
        }) => {
            assert_eq!(status, PushStatus::Complete);
            // Both payloads carry the column (`y` with null), both are refused, and the push
            // went on after the first error.
            let got: Vec<(&str, Option<u16>)> = errors
                .iter()
                .map(|e| (e.item_id.as_str(), e.status))
                .collect();
            assert_eq!(got, vec![("x", Some(400)), ("y", Some(400))]);
            assert!(
                errors[0].raw_result.contains("priority"),
                "{}",
                errors[0].raw_result
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ctx.pending_operations().await.unwrap(), 2);
    server.stop().await;
}

/// A fake server: answers each request with what `answer` returns, and records the requests.
struct Scripted {
    answer: Box<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>,
    log: Mutex<Vec<(Method, String)>>,
}

impl Scripted {
    fn new(answer: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Scripted {
            answer: Box::new(answer),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Methods of the requests sent, discovery left out.
    fn methods(&self) -> Vec<Method> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, u)| !is_discovery(*m, u))
            .map(|(m, _)| *m)
            .collect()
    }
}

impl Transport for Scripted {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        self.log
            .lock()
            .unwrap()
            .push((request.method, request.url.clone()));
        let resp = (self.answer)(&request);
        Box::pin(async move { Ok(resp) })
    }
}

/// The JSON object a request carries.
fn request_item(req: &HttpRequest) -> Map<String, Value> {
    match req.body.as_deref().map(serde_json::from_slice::<Value>) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    }
}

/// Counts `on_push_complete` calls and remembers the last result.
#[derive(Default)]
struct Observer {
    completions: AtomicUsize,
    last: Mutex<Option<PushCompletionResult>>,
}

impl SyncHandler for Observer {
    fn on_push_complete<'a>(
        &'a self,
        result: &'a mut PushCompletionResult,
        _resolver: &'a Resolver,
    ) -> BoxFuture<'a, tablesync_client::Result<()>> {
        self.completions.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some(result.clone());
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn garbage_2xx_answers_with_another_id_or_wrong_types_are_operation_errors() {
    const OTHER_ID: &str = r#"{"id":"victim","text":"overwritten by a garbage answer","complete":true,"version":"v9","updatedAt":"2026-01-01T00:00:00.000Z","createdAt":"2026-01-01T00:00:00.000Z","deleted":false}"#;
    const WRONG_TYPES: &str = r#"{"id":"typed","text":5,"complete":"yes","version":"v9","updatedAt":"2026-01-01T00:00:00.000Z","createdAt":"2026-01-01T00:00:00.000Z","deleted":false}"#;
    let server = Scripted::new(|req| {
        let item = request_item(req);
        match item.get("id").and_then(Value::as_str) {
            Some("other") => HttpResponse::new(201, OTHER_ID),
            Some("typed") => HttpResponse::new(201, WRONG_TYPES),
            Some("victim") => HttpResponse::new(503, r#"{"error":"busy"}"#),
            _ => {
                let mut m = item.clone();
                m.insert("version".into(), json!("v1"));
                m.insert("updatedAt".into(), json!("2026-01-01T00:00:00.000Z"));
                HttpResponse::new(201, Value::Object(m).to_string())
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let observer = Arc::new(Observer::default());
    let ctx = context_via(
        "http://127.0.0.1:9/",
        &dir.path().join("a.db"),
        server.clone(),
        Some(observer.clone()),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    for (id, text) in [
        ("other", "mine"),
        ("typed", "typed text"),
        ("fine", "ok"),
        ("victim", "victim's own"),
    ] {
        t.insert(json!({"id": id, "text": text, "complete": false}))
            .await
            .unwrap();
    }
    match ctx.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message: None,
        }) => {
            assert_eq!(status, PushStatus::Complete);
            let got: Vec<(&str, Option<u16>, &str)> = errors
                .iter()
                .map(|e| (e.item_id.as_str(), e.status, e.raw_result.as_str()))
                .collect();
            assert_eq!(
                got,
                vec![
                    ("other", Some(201), OTHER_ID),
                    ("typed", Some(201), WRONG_TYPES),
                    ("victim", Some(503), r#"{"error":"busy"}"#),
                ]
            );
            assert!(errors.iter().all(|e| e.result.is_none()), "{errors:?}");
        }
        other => panic!("{other:?}"),
    }
    // Every operation was attempted, and the handler saw the errors.
    assert_eq!(
        server.methods(),
        vec![Method::Post, Method::Post, Method::Post, Method::Post]
    );
    assert_eq!(observer.completions.load(Ordering::SeqCst), 1);
    assert_eq!(
        observer
            .last
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.errors.len()),
        Some(3)
    );
    // No local row was touched by the garbage, and the failed operations stay queued.
    let texts: Vec<(String, Value, Value)> = t
        .read("$orderby=id")
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["text"].clone(),
                r["version"].clone(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        vec![
            ("fine".to_string(), json!("ok"), json!("v1")),
            ("other".to_string(), json!("mine"), Value::Null),
            ("typed".to_string(), json!("typed text"), Value::Null),
            ("victim".to_string(), json!("victim's own"), Value::Null),
        ]
    );
    let ops: Vec<(String, OpKind, OpState)> = ctx
        .operations()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.item_id, o.kind, o.state))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("other".to_string(), OpKind::Insert, OpState::Failed),
            ("typed".to_string(), OpKind::Insert, OpState::Failed),
            ("victim".to_string(), OpKind::Insert, OpState::Failed),
        ]
    );
}

#[tokio::test]
async fn a_null_deleted_in_a_pulled_row_is_false() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    faulty.answer_with(
        200,
        r#"[{"id":"r1","text":"a","complete":false,"version":"v1","updatedAt":"2026-01-01T00:00:00.000Z","createdAt":"2026-01-01T00:00:00.000Z","deleted":null}]"#,
    );
    let s = t.pull(Some("q"), "").await.unwrap();
    assert_eq!((s.upserted, s.deleted), (1, 0));
    let row = t.lookup("r1").await.unwrap().unwrap();
    assert_eq!(
        (row["text"].clone(), row["deleted"].clone()),
        (json!("a"), json!(false))
    );
}

#[tokio::test]
async fn a_store_failure_during_push_ends_with_cancelled_by_sync_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let recorder = Faulty::new();
    let observer = Arc::new(Observer::default());
    let ctx = context_via(
        "http://127.0.0.1:9/",
        &path,
        recorder.clone(),
        Some(observer.clone()),
    )
    .await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "s", "text": "x", "complete": false}))
        .await
        .unwrap();
    // The local table disappears behind the SDK's back: reading the payload fails.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE \"TodoItem\"")
        .unwrap();
    match ctx.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message,
        }) => {
            assert_eq!(status, PushStatus::CancelledBySyncStoreError);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(
                message.as_deref(),
                Some("local store error: no such table: TodoItem")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(observer.completions.load(Ordering::SeqCst), 1);
    assert_eq!(
        observer.last.lock().unwrap().as_ref().map(|r| r.status),
        Some(PushStatus::CancelledBySyncStoreError)
    );
    assert!(recorder.methods().is_empty());
}
