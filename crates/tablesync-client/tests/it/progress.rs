//! Progress, sync status and cancellation (`SyncContext::{progress, status, cancel_sync}`)
//! against our in-process server on SQLite: a pull cancelled after its first page keeps that
//! page and resumes after it; a push cancelled after its first operation keeps the rest queued
//! and sends it next time; the status follows pushes, pulls, local writes and a dead server.
//!
//! The cancellation is made deterministic by a transport that asks for it from inside the
//! action (when a given request goes out), instead of racing a watcher task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;
use tablesync_client::{
    BoxFuture, Client, Error, HttpRequest, HttpResponse, HttpTransport, Method, PullOptions,
    SyncContext, SyncProgress, Transport, TransportError,
};

use crate::common::{context, todo_store, OurServer, StoreKind};

/// Real HTTP; calls `cancel_sync` on the context when the `at`-th request matching
/// (`method`, `path`) goes out, and records the context's progress as each one goes out (what a
/// watcher would read at that moment; a watcher task could miss values, `watch` keeps only the
/// latest).
struct CancelAt {
    http: HttpTransport,
    method: Method,
    path: &'static str,
    at: usize,
    seen: AtomicUsize,
    ctx: OnceLock<SyncContext>,
    progress: Mutex<Vec<SyncProgress>>,
}

impl CancelAt {
    fn new(method: Method, at: usize) -> Arc<Self> {
        Arc::new(CancelAt {
            http: HttpTransport::new(20_000, 64 << 20).unwrap(),
            method,
            path: "tables/TodoItem",
            at,
            seen: AtomicUsize::new(0),
            ctx: OnceLock::new(),
            progress: Mutex::new(Vec::new()),
        })
    }

    fn progress_seen(&self) -> Vec<SyncProgress> {
        std::mem::take(&mut *self.progress.lock().unwrap())
    }
}

impl Transport for CancelAt {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        if request.method == self.method && request.url.contains(self.path) {
            let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(ctx) = self.ctx.get() {
                let now = ctx.progress().borrow().clone();
                self.progress.lock().unwrap().push(now);
                if n == self.at {
                    assert!(ctx.cancel_sync(), "an action is running");
                }
            }
        }
        self.http.send(request)
    }
}

/// A context on `path` whose transport is `transport` (which then knows the context).
async fn context_with(
    client: Client,
    path: &std::path::Path,
    transport: &Arc<CancelAt>,
) -> SyncContext {
    let ctx = SyncContext::initialize(client, todo_store(path))
        .await
        .unwrap();
    let _ = transport.ctx.set(ctx.clone());
    ctx
}

async fn seed(server: &OurServer, dir: &std::path::Path, rows: usize) {
    let writer = context(&server.url, &dir.join("writer.db"), None).await;
    let mut tx = writer.transaction();
    for i in 0..rows {
        tx.insert(
            "TodoItem",
            json!({"id": format!("r{i:03}"), "text": "x", "complete": false}),
        )
        .unwrap();
    }
    tx.commit().await.unwrap();
    writer.push().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_keeps_its_committed_pages_and_resumes_after_them() {
    let server = OurServer::start(StoreKind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    seed(&server, dir.path(), 50).await;
    // The second page request goes out while the first page is applied: the cancel is seen
    // at the checkpoint after page 1.
    let transport = CancelAt::new(Method::Get, 2);
    let client = Client::with_transport(&server.url, transport.clone()).unwrap();
    let ctx = context_with(client, &dir.path().join("r.db"), &transport).await;
    let table = ctx.table("TodoItem").unwrap();
    let mut progress = ctx.progress();
    let err = table
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let local = table.read("$top=0&$inlinecount=allpages").await.unwrap();
    assert_eq!(local.count, Some(10), "exactly the committed page is kept");
    assert_eq!(*progress.borrow_and_update(), SyncProgress::Idle);
    let status = ctx.status().borrow().clone();
    assert!(!status.syncing);
    assert_eq!(
        status.last_error.as_deref(),
        Some(Error::Cancelled.to_string().as_str())
    );

    // Run again: it resumes after the committed page (40 rows, not 50: four pages and an empty
    // fifth), and reports each committed page; a page's request goes out while the page before
    // it is applied, so the requests see nothing, nothing, then pages 1, 2 and 3 committed.
    transport.progress_seen();
    let summary = table
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(10))
        .await
        .unwrap();
    assert_eq!(summary.upserted, 40);
    let seen = transport.progress_seen();
    let pulled: Vec<(u64, u64)> = seen
        .iter()
        .filter_map(|p| match p {
            SyncProgress::Pull {
                table, pages, rows, ..
            } if table == "TodoItem" => Some((*pages, *rows)),
            _ => None,
        })
        .collect();
    assert_eq!(pulled, vec![(1, 10), (2, 20), (3, 30)], "{seen:?}");
    assert_eq!(seen.len(), 5, "{seen:?}");
    let local = table.read("$top=0&$inlinecount=allpages").await.unwrap();
    assert_eq!(local.count, Some(50));
    let status = ctx.status().borrow().clone();
    assert!(status.last_success.is_some() && status.last_error.is_none());
    assert_eq!(status.online, Some(true));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_push_keeps_the_rest_queued_and_sends_it_next_time() {
    let server = OurServer::start(StoreKind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    // One request per operation, so the checkpoint comes after the first.
    let transport = CancelAt::new(Method::Post, 1);
    let client = Client::with_transport_and_options(
        &server.url,
        transport.clone(),
        tablesync_client::ClientOptions::default().with_batch_push(false),
    )
    .unwrap();
    let ctx = context_with(client, &dir.path().join("p.db"), &transport).await;
    let table = ctx.table("TodoItem").unwrap();
    let mut status = ctx.status();
    for i in 0..3 {
        table
            .insert(json!({"id": format!("p{i}"), "text": "x", "complete": false}))
            .await
            .unwrap();
    }
    assert_eq!(status.borrow_and_update().pending_operations, Some(3));
    let err = ctx.push().await.unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(ctx.pending_operations().await.unwrap(), 2);
    assert_eq!(status.borrow_and_update().pending_operations, Some(2));

    // The next push counts the two operations left, one done before the second goes out.
    transport.progress_seen();
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    assert_eq!(status.borrow_and_update().pending_operations, Some(0));
    assert_eq!(
        transport.progress_seen(),
        vec![
            SyncProgress::Push { done: 0, total: 2 },
            SyncProgress::Push { done: 1, total: 2 }
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_says_offline_when_the_server_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context("http://127.0.0.1:9/", &dir.path().join("o.db"), None).await;
    let status = ctx.status();
    assert_eq!(status.borrow().online, None);
    // A push with nothing queued sends nothing: it succeeds, but is no sync to report.
    ctx.push().await.unwrap();
    let s = status.borrow().clone();
    assert_eq!((s.online, s.last_success), (None, None), "{s:?}");
    ctx.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "o1", "text": "x", "complete": false}))
        .await
        .unwrap();
    let err = ctx.push().await.unwrap_err();
    assert!(matches!(err, Error::PushFailed { .. }), "{err}");
    let s = status.borrow().clone();
    assert_eq!(
        (s.online, s.syncing, s.pending_operations),
        (Some(false), false, Some(1))
    );
    assert!(s.last_error.is_some() && s.last_success.is_none());
    assert!(!ctx.cancel_sync(), "nothing runs");
}
