//! Local transactions through the public API: several writes on several tables commit
//! together (rows and queued operations) or not at all.

use serde_json::json;
use tablesync_client::{Error, OpKind};

use crate::common::{faulty_context, Faulty, TodoItem};

#[tokio::test]
async fn a_transaction_commits_every_write_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "old", "text": "to go"}))
        .await
        .unwrap();

    let mut tx = ctx.transaction();
    assert!(tx.is_empty());
    tx.insert("TodoItem", TodoItem::new("typed", "from a struct"))
        .unwrap()
        .insert("todoitem", json!({"text": "generated id"}))
        .unwrap()
        .update("TodoItem", json!({"id": "typed", "complete": true}))
        .unwrap()
        .delete("TodoItem", "old");
    assert_eq!(tx.len(), 4);
    let rows = tx.commit().await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].as_ref().unwrap()["text"], json!("from a struct"));
    let generated = rows[1].as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rows[2].as_ref().unwrap()["complete"], json!(true));
    assert_eq!(rows[3], None);
    assert_eq!(t.lookup("old").await.unwrap(), None);
    // `old` was a pending insert: deleting it cancelled it. The rest is one group.
    let ops = ctx.operations().await.unwrap();
    let got: Vec<(&str, OpKind)> = ops.iter().map(|o| (o.item_id.as_str(), o.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("typed", OpKind::Insert),
            (generated.as_str(), OpKind::Insert)
        ]
    );
    assert!(ops[0].group.is_some());
    assert_eq!(ops[0].group, ops[1].group);

    // A refused write anywhere leaves everything as it was.
    let before = ctx.operations().await.unwrap();
    let mut tx = ctx.transaction();
    tx.insert("TodoItem", json!({"id": "fresh", "text": "x"}))
        .unwrap()
        .update("TodoItem", json!({"id": "nope", "text": "x"}))
        .unwrap();
    assert!(matches!(tx.commit().await, Err(Error::ItemNotFound(id)) if id == "nope"));
    let mut tx = ctx.transaction();
    tx.insert("TodoItem", json!({"id": "fresh", "text": "x"}))
        .unwrap()
        .insert("Ghost", json!({"id": "g"}))
        .unwrap();
    assert!(matches!(tx.commit().await, Err(Error::UnknownTable(_))));
    let mut tx = ctx.transaction();
    assert!(matches!(
        tx.insert("TodoItem", json!([1, 2])),
        Err(Error::NotAnObject(_))
    ));
    assert_eq!(t.lookup("fresh").await.unwrap(), None);
    assert_eq!(ctx.operations().await.unwrap(), before);
    assert!(
        faulty.methods().is_empty(),
        "local work never touches the network"
    );
}
