//! A pull never overwrites a row that has a queued operation (ARCHITECTURE.md "Incremental
//! pull"), end to end, in both ways such a row meets a pull:
//!
//! * the push the pull starts with leaves an operation error that the app's handler marks
//!   handled but keeps (the operation stays queued, the push succeeds, the pull goes on);
//! * a local edit lands while the pull is in flight, after the server answered the page and
//!   before the page is applied (the transport makes the edit at exactly that point).
//!
//! Both fail if the pull's apply step stops checking the queue (the local edit would be
//! replaced by the server's copy).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tablesync_client::{
    BoxFuture, HttpRequest, HttpResponse, HttpTransport, OpKind, PushCompletionResult, Resolver,
    SyncHandler, SyncTable, Transport, TransportError,
};

use crate::common::{context, context_via, is_discovery, OurServer, StoreKind};

store_tests!(
    a_kept_operation_error_keeps_the_local_row_through_the_pull,
    a_local_edit_landing_mid_pull_is_not_overwritten,
);

/// Marks every operation error handled without resolving it: the operation stays queued.
struct KeepErrors;

impl SyncHandler for KeepErrors {
    fn on_push_complete<'a>(
        &'a self,
        result: &'a mut PushCompletionResult,
        _resolver: &'a Resolver,
    ) -> BoxFuture<'a, tablesync_client::Result<()>> {
        Box::pin(async move {
            for e in &mut result.errors {
                e.handled = true;
            }
            Ok(())
        })
    }
}

fn text_of(row: Option<serde_json::Map<String, Value>>) -> Value {
    row.map(|r| r["text"].clone()).unwrap_or(Value::Null)
}

async fn a_kept_operation_error_keeps_the_local_row_through_the_pull(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let b = context(
        &server.url,
        &dir.path().join("b.db"),
        Some(Arc::new(KeepErrors)),
    )
    .await;
    let (at, bt) = (a.table("TodoItem").unwrap(), b.table("TodoItem").unwrap());
    at.insert(json!({"id": "k", "text": "a1", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    // A changes the row on the server; B edits its older copy offline.
    at.update(json!({"id": "k", "text": "a2"})).await.unwrap();
    a.push().await.unwrap();
    bt.update(json!({"id": "k", "text": "b local"}))
        .await
        .unwrap();

    // B's pull pushes first: 412, which the handler keeps; the page then brings "a2" for k.
    let summary = bt.pull(Some("all"), "").await.unwrap();
    assert_eq!(summary.skipped, 1, "{summary:?}");
    assert_eq!(text_of(bt.lookup("k").await.unwrap()), json!("b local"));
    let ops = b.operations().await.unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(
        (ops[0].kind, ops[0].item_id.as_str()),
        (OpKind::Update, "k")
    );
    server.stop().await;
}

/// Forwards everything; on the first pull page request it makes a local edit after the
/// server's answer arrived and before it is handed back (so before the page is applied).
struct EditMidPull {
    inner: HttpTransport,
    edit: Mutex<Option<(SyncTable, Value)>>,
}

impl Transport for EditMidPull {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let is_page = request.method == tablesync_client::Method::Get
                && !is_discovery(request.method, &request.url)
                && request.url.contains("/tables/TodoItem?");
            let response = self.inner.send(request).await;
            let edit = if is_page {
                self.edit.lock().unwrap().take()
            } else {
                None
            };
            if let Some((table, item)) = edit {
                table.update(item).await.unwrap();
            }
            response
        })
    }
}

async fn a_local_edit_landing_mid_pull_is_not_overwritten(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let at = a.table("TodoItem").unwrap();
    for id in ["p", "q"] {
        at.insert(json!({"id": id, "text": "server 1", "complete": false}))
            .await
            .unwrap();
    }
    a.push().await.unwrap();

    let transport = Arc::new(EditMidPull {
        inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
        edit: Mutex::new(None),
    });
    let b = context_via(
        &server.url,
        &dir.path().join("b.db"),
        transport.clone(),
        None,
    )
    .await;
    let bt = b.table("TodoItem").unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    // The server's copies move on; B's next pull starts with an empty queue (no push).
    for id in ["p", "q"] {
        at.update(json!({"id": id, "text": "server 2"}))
            .await
            .unwrap();
    }
    a.push().await.unwrap();
    *transport.edit.lock().unwrap() = Some((bt.clone(), json!({"id": "p", "text": "mid-pull"})));
    let summary = bt.pull(Some("all"), "").await.unwrap();
    assert!(
        transport.edit.lock().unwrap().is_none(),
        "the edit was made"
    );
    assert_eq!((summary.upserted, summary.skipped), (1, 1), "{summary:?}");
    assert_eq!(text_of(bt.lookup("p").await.unwrap()), json!("mid-pull"));
    assert_eq!(text_of(bt.lookup("q").await.unwrap()), json!("server 2"));
    let ops = b.operations().await.unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(
        (ops[0].kind, ops[0].item_id.as_str()),
        (OpKind::Update, "p")
    );
    server.stop().await;
}
