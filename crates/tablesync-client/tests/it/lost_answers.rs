//! Issue 9 point 2: a write applied on the server whose answer was lost, then an offline edit of
//! the same item collapsing into the queued operation. The next push meets a 412 (or a 409 for
//! an insert) whose server copy holds what the lost attempt sent: the push recognises it,
//! rebases the operation on the server's version and sends the newer edit, so the user's LAST
//! edit ends on the server even with the shipped `ServerWins` handler, which before took the
//! server's copy and dropped it.
//!
//! Each scenario runs on both stores of our server and against the official Node server.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tablesync_client::{
    Client, ClientOptions, Error, Method, OpKind, PushStatus, ServerWins, SyncContext,
};

use crate::common::{context, todo_store, Faulty, OfficialServer, OurServer, StoreKind};

store_tests!(
    a_lost_update_answer_then_an_offline_edit_ends_with_the_last_edit,
    a_lost_update_answer_then_an_offline_delete_deletes_the_item,
    a_lost_insert_answer_then_an_offline_edit_ends_with_the_last_edit,
);

async fn a_lost_update_answer_then_an_offline_edit_ends_with_the_last_edit(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    lost_update_then_edit(&server.url).await;
    server.stop().await;
}

async fn a_lost_update_answer_then_an_offline_delete_deletes_the_item(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    lost_update_then_delete(&server.url).await;
    server.stop().await;
}

async fn a_lost_insert_answer_then_an_offline_edit_ends_with_the_last_edit(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    lost_insert_then_edit(&server.url).await;
    server.stop().await;
}

#[tokio::test]
async fn official_server_a_lost_update_answer_then_an_offline_edit_ends_with_the_last_edit() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    lost_update_then_edit(&server.url).await;
}

#[tokio::test]
async fn official_server_a_lost_update_answer_then_an_offline_delete_deletes_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    lost_update_then_delete(&server.url).await;
}

#[tokio::test]
async fn official_server_a_lost_insert_answer_then_an_offline_edit_ends_with_the_last_edit() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    lost_insert_then_edit(&server.url).await;
}

/// A context with the shipped `ServerWins` handler whose requests go through `faulty`, pushing
/// one request per operation (the path this point is about: our server would otherwise take
/// the queue as a batch, whose lost answer `batch_server.rs` covers).
async fn server_wins_context(
    url: &str,
    dir: &std::path::Path,
    faulty: &Arc<Faulty>,
) -> SyncContext {
    let options = ClientOptions::default().with_batch_push(false);
    let client = Client::with_transport_and_options(url, faulty.clone(), options).unwrap();
    SyncContext::initialize_with_handler(
        client,
        todo_store(&dir.join("a.db")),
        Arc::new(ServerWins),
    )
    .await
    .unwrap()
}

/// The server's copy of item `id` as a fresh context pulls it (`None` when it is deleted).
async fn server_copy(url: &str, id: &str) -> Option<Map<String, Value>> {
    let dir = tempfile::tempdir().unwrap();
    let other = context(url, &dir.path().join("check.db"), None).await;
    let t = other.table("TodoItem").unwrap();
    t.pull(None, "").await.unwrap();
    t.lookup(id).await.unwrap()
}

/// A push whose write answers are lost: the push stops with a network error.
async fn push_losing_answers(ctx: &SyncContext, faulty: &Faulty, methods: &[Method]) {
    faulty.lose_responses_to(methods);
    match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::CancelledByNetworkError,
            errors,
            message,
        }) => {
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(
                message.as_deref(),
                Some("connection failed: response lost by the test")
            );
        }
        other => panic!("{other:?}"),
    }
    faulty.lose_responses_to(&[]);
}

/// `If-Match` of a request, unquoted.
fn if_match(req: &tablesync_client::HttpRequest) -> Option<String> {
    req.header("if-match")
        .map(|v| v.trim_matches('"').to_string())
}

async fn lost_update_then_edit(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = server_wins_context(url, dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "p2", "text": "v1", "complete": false}))
        .await
        .unwrap();
    ctx.push().await.unwrap();
    let v1 = t.lookup("p2").await.unwrap().unwrap()["version"].clone();

    // The PATCH is applied, its answer lost.
    t.update(json!({"id": "p2", "text": "v2"})).await.unwrap();
    push_losing_answers(&ctx, &faulty, &[Method::Patch]).await;
    assert_eq!(server_copy(url, "p2").await.unwrap()["text"], json!("v2"));

    // Offline, the user edits the item again: the two updates collapse into one operation.
    t.update(json!({"id": "p2", "text": "v3", "complete": true}))
        .await
        .unwrap();
    let ops = ctx.operations().await.unwrap();
    assert_eq!((ops.len(), ops[0].kind), (1, OpKind::Update));

    // The next push gets 412 with the server holding v2 (what the lost PATCH sent): recognised,
    // rebased on the server's version, v3 sent. ServerWins has nothing left to resolve.
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    assert!(ctx.push_errors().await.unwrap().is_empty());
    let server = server_copy(url, "p2").await.unwrap();
    assert_eq!(
        (server["text"].clone(), server["complete"].clone()),
        (json!("v3"), json!(true))
    );
    let local = t.lookup("p2").await.unwrap().unwrap();
    assert_eq!(
        (local["text"].clone(), local["version"].clone()),
        (json!("v3"), server["version"].clone())
    );

    // On the wire: the lost PATCH and the stale one were conditional on v1, the resend on the
    // version the 412 carried, each with its own idempotency key.
    let patches: Vec<_> = faulty
        .writes()
        .into_iter()
        .filter(|r| r.method == Method::Patch)
        .collect();
    assert_eq!(patches.len(), 3, "{patches:?}");
    let v1 = v1.as_str().map(str::to_string);
    assert_eq!(if_match(&patches[0]), v1);
    assert_eq!(if_match(&patches[1]), v1);
    assert_ne!(if_match(&patches[2]), v1);
    let keys: std::collections::HashSet<_> = patches
        .iter()
        .map(|p| p.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 3);
}

async fn lost_update_then_delete(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = server_wins_context(url, dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "d2", "text": "v1", "complete": false}))
        .await
        .unwrap();
    ctx.push().await.unwrap();
    t.update(json!({"id": "d2", "text": "v2"})).await.unwrap();
    push_losing_answers(&ctx, &faulty, &[Method::Patch]).await;

    // Offline, the user deletes the item: the queued update becomes a delete, conditional on
    // the version the local row had (the lost PATCH's answer never brought the new one).
    t.delete("d2").await.unwrap();
    let ops = ctx.operations().await.unwrap();
    assert_eq!((ops.len(), ops[0].kind), (1, OpKind::Delete));

    // 412 with the server holding v2, what the replaced update sent: the delete is rebased and
    // sent again. ServerWins would otherwise have brought the item back.
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    assert_eq!(t.lookup("d2").await.unwrap(), None);
    assert_eq!(server_copy(url, "d2").await, None, "deleted on the server");
    let deletes: Vec<_> = faulty
        .writes()
        .into_iter()
        .filter(|r| r.method == Method::Delete)
        .collect();
    assert_eq!(deletes.len(), 2, "a 412, then the rebased delete");
    assert_ne!(if_match(&deletes[0]), if_match(&deletes[1]));
}

async fn lost_insert_then_edit(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = server_wins_context(url, dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "i2", "text": "v1", "complete": false}))
        .await
        .unwrap();
    push_losing_answers(&ctx, &faulty, &[Method::Post]).await;
    // Offline edit: it collapses into the queued insert.
    t.update(json!({"id": "i2", "text": "v2"})).await.unwrap();
    let ops = ctx.operations().await.unwrap();
    assert_eq!((ops.len(), ops[0].kind), (1, OpKind::Insert));

    // POST → 409, GET → the server holds v1 (what the lost POST sent): the insert becomes an
    // update of the server's version and v2 goes out.
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    assert_eq!(server_copy(url, "i2").await.unwrap()["text"], json!("v2"));
    assert_eq!(
        faulty.methods(),
        vec![Method::Post, Method::Post, Method::Get, Method::Patch]
    );
}
