//! Local CRUD and queries (no server): reads never touch the network.

use serde_json::{json, Value};
use tablesync_client::{Error, OpKind};

use crate::common::{faulty_context, Faulty};

#[tokio::test]
async fn local_writes_collapse_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();

    let generated = t.insert(json!({"text": "no id"})).await.unwrap();
    let gid = generated["id"].as_str().unwrap().to_string();
    assert_eq!(gid.len(), 36, "uuid v4: {gid}");
    t.update(json!({"id": gid, "complete": true}))
        .await
        .unwrap();
    assert_eq!(
        Value::Object(t.lookup(&gid).await.unwrap().unwrap()),
        json!({"id": gid, "createdAt": null, "updatedAt": null, "version": null, "deleted": false,
               "text": "no id", "complete": true})
    );
    // insert + update = one insert; insert + delete = nothing.
    t.insert(json!({"id": "gone", "text": "x"})).await.unwrap();
    t.delete("gone").await.unwrap();
    let ops = ctx.operations().await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].kind, ops[0].item_id.as_str(), ops[0].version),
        (OpKind::Insert, gid.as_str(), 2)
    );

    // Refusals leave both the row and the queue as they were.
    assert!(matches!(
        t.insert(json!({"id": gid, "text": "dup"})).await,
        Err(Error::ItemAlreadyExists(_))
    ));
    assert!(matches!(
        t.update(json!({"id": "nope", "text": "x"})).await,
        Err(Error::ItemNotFound(_))
    ));
    assert!(matches!(
        t.update(json!({"text": "x"})).await,
        Err(Error::MissingId)
    ));
    assert!(matches!(
        t.delete("nope").await,
        Err(Error::ItemNotFound(_))
    ));
    assert!(matches!(
        t.insert(json!({"id": "a/b", "text": "x"})).await,
        Err(Error::InvalidId { .. })
    ));
    assert!(matches!(
        t.insert(json!({"id": "z", "text": "x", "colour": "red"}))
            .await,
        Err(Error::UnknownColumn { .. })
    ));
    assert!(matches!(
        t.insert(json!({"id": "z", "complete": "yes"})).await,
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        t.insert(json!([1])).await,
        Err(Error::NotAnObject(_))
    ));
    assert_eq!(t.lookup("z").await.unwrap(), None);
    assert_eq!(ctx.pending_operations().await.unwrap(), 1);
    assert!(matches!(ctx.table("Nope"), Err(Error::UnknownTable(_))));
    assert!(
        faulty.methods().is_empty(),
        "local work never touches the network"
    );
}

#[tokio::test]
async fn local_queries_use_the_protocol_query_model() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = faulty_context(dir.path(), &Faulty::new()).await;
    let t = ctx.table("TodoItem").unwrap();
    for (id, text, complete) in [
        ("1", "apples", false),
        ("2", "Bread", true),
        ("3", "carrots", false),
        ("4", "dates", true),
        ("5", "eggs", false),
    ] {
        t.insert(json!({"id": id, "text": text, "complete": complete}))
            .await
            .unwrap();
    }
    let ids = |items: &[serde_json::Map<String, Value>]| -> Vec<String> {
        items
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = t
        .read("$filter=complete eq false&$orderby=text desc")
        .await
        .unwrap();
    assert_eq!(ids(&r.items), vec!["5", "3", "1"]);
    assert_eq!(r.count, None);
    let r = t
        .read("$filter=not complete&$orderby=id&$skip=1&$top=1&$inlinecount=allpages")
        .await
        .unwrap();
    assert_eq!(ids(&r.items), vec!["3"]);
    assert_eq!(r.count, Some(3));
    let r = t
        .read(
            "$filter=startswith(text, 'd') or tolower(text) eq 'bread'&$select=id,text&$orderby=id",
        )
        .await
        .unwrap();
    assert_eq!(
        Value::Array(r.items.into_iter().map(Value::Object).collect()),
        json!([{"id": "2", "text": "Bread"}, {"id": "4", "text": "dates"}])
    );
    let err = t.read("$filter=colour eq 'red'").await.unwrap_err();
    assert!(matches!(err, Error::InvalidQuery(_)), "{err:?}");
    let err = t.read("$filter=text eq").await.unwrap_err();
    assert!(matches!(err, Error::InvalidQuery(_)), "{err:?}");

    // Purge with a filter (no pending ops after a forced purge of those rows only).
    assert_eq!(
        t.purge(None, "$filter=complete eq true", true)
            .await
            .unwrap(),
        2
    );
    let ops = ctx.operations().await.unwrap();
    let mut left: Vec<&str> = ops.iter().map(|o| o.item_id.as_str()).collect();
    left.sort();
    assert_eq!(left, vec!["1", "3", "5"]);
    assert_eq!(t.read("").await.unwrap().items.len(), 3);
    // Pull options that the keyset paging owns are refused.
    for (q, opt) in [
        ("$select=id", "$select"),
        ("$orderby=text", "$orderby"),
        ("$skip=1", "$skip"),
        ("$top=1", "$top"),
        ("__includeDeleted=true", "__includeDeleted"),
    ] {
        match t.pull(Some("q"), q).await {
            Err(Error::UnsupportedPullOption(o)) => assert_eq!(o, opt),
            other => panic!("{q}: {other:?}"),
        }
    }
    assert!(matches!(
        t.pull(Some("a|b"), "").await,
        Err(Error::InvalidQueryId)
    ));
}

#[tokio::test]
async fn typed_tables_round_trip() {
    use crate::common::TodoItem;
    let dir = tempfile::tempdir().unwrap();
    let ctx = faulty_context(dir.path(), &Faulty::new()).await;
    let t = ctx.typed_table::<TodoItem>("TodoItem").unwrap();
    let stored = t
        .insert(&TodoItem {
            id: None,
            text: "typed".into(),
            complete: true,
            version: None,
        })
        .await
        .unwrap();
    let id = stored.id.clone().unwrap();
    let mut item = t.lookup(&id).await.unwrap().unwrap();
    assert_eq!(item, stored);
    item.text = "changed".into();
    t.update(&item).await.unwrap();
    assert_eq!(
        t.read("$filter=text eq 'changed'").await.unwrap(),
        vec![item]
    );
    t.delete(&id).await.unwrap();
    assert_eq!(t.lookup(&id).await.unwrap(), None);
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
}

#[tokio::test]
async fn queue_conflicts_and_typed_conversion_failures_are_typed_errors() {
    use tablesync_client::internals::{MSG_DELETE_QUEUED, MSG_INCONSISTENT};
    use tablesync_client::OpState;
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    // A row the server has (pulled), deleted locally: inserting its id again is refused.
    faulty.answer_with(
        200,
        r#"[{"id":"p","text":"a","complete":false,"version":"v1","updatedAt":"2026-01-01T00:00:00.000Z"}]"#,
    );
    t.pull(None, "").await.unwrap();
    t.delete("p").await.unwrap();
    let err = t
        .insert(json!({"id": "p", "text": "again"}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueConflict {
                existing: OpKind::Delete,
                existing_state: OpState::Pending,
                new: OpKind::Insert,
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), MSG_DELETE_QUEUED);
    // An insert that a push attempted may be on the server: deleting it is refused.
    faulty.answer_with(503, "");
    t.insert(json!({"id": "z", "text": "x"})).await.unwrap();
    ctx.push().await.unwrap_err();
    let err = t.delete("z").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueConflict {
                existing: OpKind::Insert,
                existing_state: OpState::Failed,
                new: OpKind::Delete,
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), MSG_INCONSISTENT);

    // A typed read of a row that does not fit the app's type is a Deserialize error.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Strict {
        id: Option<String>,
        text: String,
        complete: bool,
    }
    t.insert(json!({"id": "nulltext", "complete": false}))
        .await
        .unwrap();
    let typed = ctx.typed_table::<Strict>("TodoItem").unwrap();
    match typed.lookup("nulltext").await {
        Err(e @ Error::Deserialize(_)) => assert_eq!(
            e.to_string(),
            "the row does not fit the app's type: row 'nulltext': invalid type: null, expected a string"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn table_names_match_case_insensitively() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let lower = ctx.table("todoitem").unwrap();
    assert_eq!(lower.name(), "TodoItem", "the defined name is used");
    lower.insert(json!({"id": "c", "text": "x"})).await.unwrap();
    let upper = ctx.table("TODOITEM").unwrap();
    assert_eq!(
        upper.lookup("c").await.unwrap().unwrap()["text"],
        json!("x")
    );
    let ops = ctx.operations().await.unwrap();
    assert_eq!(ops[0].table, "TodoItem");
    assert!(matches!(
        ctx.table("TodoItems"),
        Err(Error::UnknownTable(_))
    ));
    faulty.answer_with(201, r#"{"id":"c","text":"x","version":"v1"}"#);
    ctx.push().await.unwrap();
    assert!(
        faulty.writes()[0].url.ends_with("/tables/TodoItem"),
        "{:?}",
        faulty.log.lock().unwrap()
    );
}

/// `$select=*` is every column, as on the server (it used to be "unknown column '*'").
#[tokio::test]
async fn local_select_star_is_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = faulty_context(dir.path(), &Faulty::new()).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "1", "text": "apples", "complete": false}))
        .await
        .unwrap();
    let every = json!([{"id": "1", "createdAt": null, "updatedAt": null, "version": null,
                        "deleted": false, "text": "apples", "complete": false}]);
    for q in [
        "$select=*",
        "$select=id,*",
        "$select=*&$filter=text eq 'apples'",
    ] {
        let r = t.read(q).await.unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(
            Value::Array(r.items.into_iter().map(Value::Object).collect()),
            every,
            "{q}"
        );
    }
    // Other names are still checked.
    let err = t.read("$select=*,colour").await.unwrap_err();
    assert!(matches!(err, Error::InvalidQuery(_)), "{err:?}");
}
