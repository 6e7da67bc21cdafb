//! Batched, exactly-once push against our real server's `POST /$batch` (issue 9 points 1 and 6),
//! through the server's loopback [`FaultProxy`]: the client discovers the extension once,
//! pushes in batches, and a batch whose answer is dropped after the server applied it is sent
//! again with the same keys and replayed, so every operation is applied exactly once (the
//! table's write counter, which every applied write moves, proves it).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{json, Map, Value};
use tablesync_client::{Error, PushStatus, SyncContext};
use tablesync_server::testing::{Fault, FaultPlan, FaultProxy};

use crate::common::{context, OurServer, StoreKind};

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// The write counter a version renders (our server's versions are 8 big-endian bytes, base64).
fn counter(version: &Value) -> u64 {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(version.as_str().expect("a version"))
        .unwrap();
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// Every server row (deleted ones too), read with a fresh client straight from the server.
async fn server_rows(url: &str, dir: &std::path::Path) -> BTreeMap<String, Map<String, Value>> {
    let client = reqwest::Client::new();
    let rows: Vec<Map<String, Value>> = client
        .get(format!(
            "{url}tables/TodoItem?__includeDeleted=true&$top=1000"
        ))
        .header("ZUMO-API-VERSION", "2.0.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = dir;
    rows.into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect()
}

/// Request lines the proxy saw, `METHOD path`.
fn lines(proxy: &FaultProxy) -> Vec<String> {
    proxy.log().into_iter().map(|e| e.request_line).collect()
}

async fn queue_mixed(ctx: &SyncContext, round: &str) {
    let t = ctx.table("TodoItem").unwrap();
    for i in 0..6 {
        t.insert(json!({"id": format!("{round}-n{i}"), "text": "new", "complete": false}))
            .await
            .unwrap();
    }
    for i in 0..3 {
        t.update(json!({"id": format!("base{i}"), "text": format!("{round} edit")}))
            .await
            .unwrap();
    }
    // A local transaction: one atomicity group.
    let mut tx = ctx.transaction();
    tx.insert(
        "TodoItem",
        json!({"id": format!("{round}-g"), "text": "grouped"}),
    )
    .unwrap()
    .update("TodoItem", json!({"id": "base3", "complete": true}))
    .unwrap();
    tx.commit().await.unwrap();
}

async fn a_dropped_batch_answer_is_replayed_and_every_operation_applies_once(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let proxy = FaultProxy::start(addr_of(&server.url), 9, FaultPlan::none()).unwrap();
    let url = format!("{}/", proxy.url());
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&url, &dir.path().join("a.db"), None).await;
    let t = ctx.table("TodoItem").unwrap();
    for i in 0..6 {
        t.insert(json!({"id": format!("base{i}"), "text": "base", "complete": false}))
            .await
            .unwrap();
    }
    ctx.push().await.unwrap();
    assert_eq!(
        lines(&proxy),
        ["GET /$capabilities", "POST /$batch"],
        "one discovery, one batch"
    );
    // 6 inserts, 3 updates, a group of 2, 2 deletes: 13 writes.
    queue_mixed(&ctx, "r1").await;
    t.delete("base4").await.unwrap();
    t.delete("base5").await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 13);
    let before = server_rows(&server.url, dir.path()).await;
    let counter_before = before
        .values()
        .map(|r| counter(&r["version"]))
        .max()
        .unwrap();
    assert_eq!(counter_before, 6);

    proxy.set_plan(FaultPlan::always(Fault::DropResponse));
    match ctx.push().await {
        Err(Error::PushFailed {
            status: PushStatus::CancelledByNetworkError,
            ..
        }) => {}
        other => panic!("a dropped answer is a network failure: {other:?}"),
    }
    assert_eq!(proxy.stats().dropped_responses, 1);
    assert_eq!(ctx.pending_operations().await.unwrap(), 13, "queue intact");
    // The server applied the whole batch before its answer was lost.
    let applied = server_rows(&server.url, dir.path()).await;
    let counter_applied = applied
        .values()
        .map(|r| counter(&r["version"]))
        .max()
        .unwrap();
    assert_eq!(counter_applied, counter_before + 13);
    assert_eq!(applied["base4"]["deleted"], json!(true));

    proxy.set_plan(FaultPlan::none());
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    let after = server_rows(&server.url, dir.path()).await;
    // Replayed, not applied again: every row (version, updatedAt and all) as the dropped batch
    // left it, and the counter did not move.
    assert_eq!(after, applied);
    let batches: Vec<String> = lines(&proxy)
        .into_iter()
        .filter(|l| l == "POST /$batch")
        .collect();
    assert_eq!(batches.len(), 3, "first push, dropped batch, resent batch");
    assert_eq!(
        lines(&proxy).len(),
        4,
        "no single-item request and no second discovery"
    );
    // The client holds what the server holds, versions included.
    let local = t.read("").await.unwrap().items;
    for row in local {
        let id = row["id"].as_str().unwrap();
        assert_eq!(row["version"], after[id]["version"], "{id}");
        assert_eq!(row["text"], after[id]["text"], "{id}");
    }
    drop(proxy);
    server.stop().await;
}

async fn an_atomicity_group_the_server_refuses_applies_nothing(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&server.url, &dir.path().join("a.db"), None).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "taken", "text": "mine", "complete": false}))
        .await
        .unwrap();
    ctx.push().await.unwrap();
    // Another client deletes `taken` (hard to see offline); our group updates it and inserts.
    let other = context(&server.url, &dir.path().join("b.db"), None).await;
    other
        .table("TodoItem")
        .unwrap()
        .pull(None, "")
        .await
        .unwrap();
    other
        .table("TodoItem")
        .unwrap()
        .delete("taken")
        .await
        .unwrap();
    other.push().await.unwrap();
    let mut tx = ctx.transaction();
    tx.insert("TodoItem", json!({"id": "with-it", "text": "x"}))
        .unwrap()
        .update("TodoItem", json!({"id": "taken", "text": "edited"}))
        .unwrap();
    tx.commit().await.unwrap();
    let result = ctx.push().await;
    assert!(result.is_err(), "the group failed: {result:?}");
    let rows = server_rows(&server.url, dir.path()).await;
    assert!(!rows.contains_key("with-it"), "rolled back with its group");
    server.stop().await;
}

store_tests!(
    a_dropped_batch_answer_is_replayed_and_every_operation_applies_once,
    an_atomicity_group_the_server_refuses_applies_nothing,
);
