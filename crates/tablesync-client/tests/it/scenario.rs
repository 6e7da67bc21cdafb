//! The tutorial's flow, run against any server: offline inserts, push, pull into a second store,
//! an update conflict (412) resolved server-wins and client-wins, delete, purge.

use std::sync::Arc;

use serde_json::{json, Value};
use tablesync_client::{ClientWins, Error, OpKind, PushStatus};

use crate::common::{context, TodoItem, UNREACHABLE};

fn text_of(row: &serde_json::Map<String, Value>) -> &str {
    row["text"].as_str().unwrap()
}

pub async fn tutorial(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a_path = dir.path().join("a.db");
    let b_path = dir.path().join("b.db");

    // 1. Offline: inserts land in the local store and the queue; a push fails with a network
    //    error and leaves the queue intact.
    {
        let ctx = context(UNREACHABLE, &a_path, None).await;
        let todos = ctx.typed_table::<TodoItem>("TodoItem").unwrap();
        for (id, text) in [("t1", "Buy milk"), ("t2", "Walk dog"), ("t3", "Read book")] {
            let stored = todos.insert(&TodoItem::new(id, text)).await.unwrap();
            assert_eq!(stored, TodoItem::new(id, text));
        }
        match ctx.push().await {
            Err(e @ Error::PushFailed { .. }) => {
                let text = e.to_string();
                let Error::PushFailed {
                    status,
                    errors,
                    message,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(status, PushStatus::CancelledByNetworkError);
                assert!(errors.is_empty(), "{errors:?}");
                // The cause is the transport's: nothing listens on port 1.
                let message = message.expect("a cancelled push carries its cause");
                assert!(
                    message.starts_with("connection failed: ")
                        && message.to_ascii_lowercase().contains("connection refused"),
                    "{message}"
                );
                assert_eq!(
                    text,
                    format!(
                        "push failed: CancelledByNetworkError ({message}), 0 unhandled operation error(s)"
                    )
                );
            }
            other => panic!("expected a network failure, got {other:?}"),
        }
        let ops = ctx.operations().await.unwrap();
        let summary: Vec<(OpKind, &str)> =
            ops.iter().map(|o| (o.kind, o.item_id.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (OpKind::Insert, "t1"),
                (OpKind::Insert, "t2"),
                (OpKind::Insert, "t3")
            ]
        );
        assert_eq!(todos.read("$orderby=id").await.unwrap().len(), 3);
    }

    // 2. Online again (same store file, so the queue survived): push.
    let a = context(url, &a_path, None).await;
    assert_eq!(a.pending_operations().await.unwrap(), 3);
    a.push().await.unwrap();
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    let a_todos = a.table("TodoItem").unwrap();
    let t1 = a_todos.lookup("t1").await.unwrap().unwrap();
    assert!(t1["version"].is_string(), "version written back: {t1:?}");
    assert!(
        t1["updatedAt"].is_string(),
        "updatedAt written back: {t1:?}"
    );
    assert!(
        t1["createdAt"].is_string(),
        "createdAt written back: {t1:?}"
    );

    // 3. Pull into a second store.
    let b = context(url, &b_path, None).await;
    let b_todos = b.table("TodoItem").unwrap();
    let pulled = b_todos.pull(Some("all"), "").await.unwrap();
    assert_eq!((pulled.upserted, pulled.deleted, pulled.skipped), (3, 0, 0));
    let rows = b_todos.read("$orderby=id").await.unwrap().items;
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), text_of(r)))
        .collect();
    assert_eq!(
        got,
        vec![("t1", "Buy milk"), ("t2", "Walk dog"), ("t3", "Read book")]
    );
    assert_eq!(rows[0]["version"], t1["version"]);
    // Nothing new: an incremental pull downloads nothing.
    let again = b_todos.pull(Some("all"), "").await.unwrap();
    assert_eq!((again.upserted, again.pages), (0, 1));

    // 4a. Update conflict (412), resolved server-wins with the error's server item.
    a_todos
        .update(json!({"id": "t1", "text": "A edit"}))
        .await
        .unwrap();
    a.push().await.unwrap();
    b_todos
        .update(json!({"id": "t1", "text": "B edit"}))
        .await
        .unwrap();
    let mut errors = match b.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message: None,
        }) => {
            assert_eq!(status, PushStatus::Complete);
            errors
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(errors.len(), 1);
    let e = &mut errors[0];
    assert_eq!(
        (e.status, e.kind, e.item_id.as_str()),
        (Some(412), OpKind::Update, "t1")
    );
    assert_eq!(e.item["text"], json!("B edit"));
    let server = e.result.clone().expect("412 carries the server item");
    assert_eq!(server["text"], json!("A edit"));
    b.resolver()
        .cancel_and_update_item(e, server.clone())
        .await
        .unwrap();
    assert!(e.handled);
    let t1b = b_todos.lookup("t1").await.unwrap().unwrap();
    assert_eq!(text_of(&t1b), "A edit");
    assert_eq!(t1b["version"], server["version"]);
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    // Resolving twice is refused: the operation is gone.
    assert!(matches!(
        b.resolver().cancel_and_discard_item(e).await,
        Err(Error::OperationChanged)
    ));
    drop(b_todos);
    drop(b);

    // 4b. Update conflict resolved client-wins by the shipped handler.
    a_todos
        .update(json!({"id": "t2", "text": "A edit 2"}))
        .await
        .unwrap();
    a.push().await.unwrap();
    let b = context(url, &b_path, Some(Arc::new(ClientWins::default()))).await;
    let b_todos = b.table("TodoItem").unwrap();
    b_todos
        .update(json!({"id": "t2", "text": "B edit 2"}))
        .await
        .unwrap();
    b.push().await.unwrap();
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    a_todos.pull(Some("all"), "").await.unwrap();
    let t2a = a_todos.lookup("t2").await.unwrap().unwrap();
    assert_eq!(text_of(&t2a), "B edit 2");
    assert_eq!(
        t2a["version"],
        b_todos.lookup("t2").await.unwrap().unwrap()["version"]
    );

    // 5. Delete: the tombstone removes the row in the other store.
    a_todos.delete("t3").await.unwrap();
    assert_eq!(a.operations().await.unwrap()[0].kind, OpKind::Delete);
    a.push().await.unwrap();
    let pulled = b_todos.pull(Some("all"), "").await.unwrap();
    assert_eq!(pulled.deleted, 1);
    assert_eq!(b_todos.lookup("t3").await.unwrap(), None);

    // 6. Purge: refused with pending operations, forced drops them; the token is reset, so the
    //    next pull brings the server's rows back.
    b_todos
        .update(json!({"id": "t1", "complete": true}))
        .await
        .unwrap();
    match b_todos.purge(Some("all"), "", false).await {
        Err(Error::PurgeRefused(t)) => assert_eq!(t, "TodoItem"),
        other => panic!("expected a refused purge, got {other:?}"),
    }
    assert_eq!(b_todos.read("").await.unwrap().items.len(), 2);
    assert_eq!(b_todos.purge(Some("all"), "", true).await.unwrap(), 2);
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    assert!(b_todos.read("").await.unwrap().items.is_empty());
    let pulled = b_todos.pull(Some("all"), "").await.unwrap();
    assert_eq!(pulled.upserted, 2);
    let rows = b_todos.read("$orderby=id").await.unwrap().items;
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                text_of(r),
                r["complete"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("t1", "A edit", false), ("t2", "B edit 2", false)]
    );
}
