//! Scenarios against our own server, in-process on 127.0.0.1:0.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use tablesync_client::{
    BoxFuture, Client, ClientWins, ColumnType, Error, LocalStore, Method, OpKind, OpState, Outcome,
    PullOptions, PushStatus, ServerWins, SyncContext, SyncHandler, TableDefinition, TableOperation,
};

use crate::common::{
    context, context_via, decoded, fresh_database, Capping, Faulty, LinkMode, OurServer, StoreKind,
    TestDatabase, TodoItem,
};

store_tests!(
    tutorial_against_our_server,
    interrupted_pull_resumes_from_the_saved_token,
    rows_sharing_one_updated_at_are_pulled_exactly_once,
    lost_insert_response_is_recognised_on_the_next_push,
    insert_conflict_and_update_conflict_resolved_by_server_wins_handler,
    deleting_an_item_already_deleted_on_the_server_succeeds,
    pull_pushes_pending_operations_first_and_fails_when_that_push_fails,
    an_edit_during_the_push_of_an_insert_is_pushed_next_time_as_an_update,
    update_operation_and_discard_resolutions,
    a_server_that_caps_pages_below_top_is_pulled_to_the_end,
    a_delete_on_the_server_wins_with_both_shipped_handlers,
    a_table_level_404_keeps_the_operation_with_both_handlers,
    update_operation_turns_an_insert_conflict_into_an_update,
    purge_resets_every_delta_token_of_the_table,
);

/// Inserts `count` items (`id(i)`, text `row <i>`) through `ctx` and pushes them.
async fn insert_and_push(ctx: &SyncContext, count: usize, id: impl Fn(usize) -> String) {
    let todos = ctx.typed_table::<TodoItem>("TodoItem").unwrap();
    for i in 0..count {
        todos
            .insert(&TodoItem::new(&id(i), &format!("row {i}")))
            .await
            .unwrap();
    }
    ctx.push().await.unwrap();
}

async fn tutorial_against_our_server(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    crate::scenario::tutorial(&server.url).await;
    server.stop().await;
}

async fn interrupted_pull_resumes_from_the_saved_token(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 7, |i| format!("r{i}")).await;

    // Pages of 3; the connection drops on the third GET, after two pages were applied.
    let b_path = dir.path().join("b.db");
    let faulty = Faulty::with_drop_gets_after(Some(2));
    let b = context_via(&server.url, &b_path, faulty.clone(), None).await;
    let bt = b.table("TodoItem").unwrap();
    let err = bt
        .pull_with_options(Some("q"), "", PullOptions::with_page_size(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err:?}");
    assert_eq!(bt.read("").await.unwrap().items.len(), 6);
    drop(bt);
    drop(b);

    // A new context on the same file resumes after the sixth row: one page with the last row.
    let recorder = Faulty::new();
    let b = context_via(&server.url, &b_path, recorder.clone(), None).await;
    let bt = b.table("TodoItem").unwrap();
    let s = bt
        .pull_with_options(Some("q"), "", PullOptions::with_page_size(3))
        .await
        .unwrap();
    assert_eq!((s.pages, s.upserted), (1, 1));
    let urls = recorder.get_urls();
    assert_eq!(urls.len(), 1);
    let first = decoded(&urls[0]);
    let r5 = bt.lookup("r5").await.unwrap().unwrap();
    let u = r5["updatedAt"].as_str().unwrap();
    assert!(
        first.contains(&format!(
            "$filter=(updatedAt ge datetimeoffset'{u}') and ((updatedAt gt datetimeoffset'{u}') or ((updatedAt eq datetimeoffset'{u}') and (id gt 'r5')))"
        )),
        "{first}"
    );
    assert!(
        first.contains("$orderby=updatedAt,id&$top=3&__includeDeleted=true"),
        "{first}"
    );
    assert_eq!(bt.read("").await.unwrap().items.len(), 7);
    server.stop().await;
}

async fn rows_sharing_one_updated_at_are_pulled_exactly_once(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(kind).await;
    // Create the server's schema, then write 120 rows with one updatedAt behind its back (our
    // server's commit-order stamps never produce ties, but other servers do).
    OurServer::start_on(&db).await.stop().await;
    let f = if kind == StoreKind::Sqlite {
        "0"
    } else {
        "false"
    };
    let rows: Vec<String> = (0..120)
        .map(|i| {
            format!(
                "('same-{i:03}', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', 'MQ==', \
                 {f}, 'row {i}', {f})"
            )
        })
        .collect();
    execute_sql(
        &db,
        &format!(
            "INSERT INTO \"TodoItem\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \
             \"deleted\", \"text\", \"complete\") VALUES {}",
            rows.join(", ")
        ),
    );
    let server = OurServer::start_on(&db).await;
    let recorder = Faulty::new();
    let b = context_via(
        &server.url,
        &dir.path().join("b.db"),
        recorder.clone(),
        None,
    )
    .await;
    let bt = b.table("TodoItem").unwrap();
    let s = bt
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(50))
        .await
        .unwrap();
    assert_eq!((s.pages, s.upserted, s.skipped), (3, 120, 0));
    let ids: HashSet<String> = bt
        .read("")
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 120);
    // The next pull starts after the last row and finds nothing.
    let s = bt
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(50))
        .await
        .unwrap();
    assert_eq!((s.pages, s.upserted), (1, 0));
    let last = decoded(recorder.get_urls().last().unwrap());
    assert!(last.contains("id gt 'same-119'"), "{last}");
    server.stop().await;
    drop(db);
}

/// Runs one SQL statement on a test database behind the server's back: rusqlite on SQLite,
/// `psql` on PostgreSQL (these tests have no PostgreSQL driver of their own).
fn execute_sql(db: &TestDatabase, sql: &str) {
    match db.kind() {
        StoreKind::Sqlite => {
            let conn = rusqlite::Connection::open(db.url()).unwrap();
            conn.execute_batch(sql).unwrap();
        }
        StoreKind::Postgres => {
            let out = std::process::Command::new("psql")
                .arg(db.url())
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
                .output()
                .expect("cannot run psql (the PostgreSQL client) for this test");
            assert!(
                out.status.success(),
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

async fn lost_insert_response_is_recognised_on_the_next_push(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let faulty = Faulty::new();
    let a = context_via(&server.url, &dir.path().join("a.db"), faulty.clone(), None).await;
    let t = a.table("TodoItem").unwrap();
    t.insert(json!({"id": "lost", "text": "x", "complete": false}))
        .await
        .unwrap();
    faulty.lose_post_responses.store(true, Ordering::SeqCst);
    match a.push().await {
        Err(Error::PushFailed {
            status,
            errors,
            message,
        }) => {
            assert_eq!(status, PushStatus::CancelledByNetworkError);
            assert!(errors.is_empty());
            assert_eq!(
                message.as_deref(),
                Some("connection failed: response lost by the test")
            );
        }
        other => panic!("{other:?}"),
    }
    let ops = a.operations().await.unwrap();
    assert_eq!(
        (ops.len(), ops[0].kind, ops[0].state),
        (1, OpKind::Insert, OpState::Failed)
    );
    // The row did reach the server. The retry (the same batch, same key) is answered from the
    // server's record of the key: 201 with the row, no follow-up GET needed.
    faulty.lose_post_responses.store(false, Ordering::SeqCst);
    a.push().await.unwrap();
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    let row = t.lookup("lost").await.unwrap().unwrap();
    assert!(row["version"].is_string());
    assert_eq!(faulty.methods(), vec![Method::Post, Method::Post]);
    assert!(faulty.writes().iter().all(|w| w.url.ends_with("/$batch")));
    server.stop().await;
}

async fn insert_conflict_and_update_conflict_resolved_by_server_wins_handler(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let b = context(
        &server.url,
        &dir.path().join("b.db"),
        Some(Arc::new(ServerWins)),
    )
    .await;
    let at = a.table("TodoItem").unwrap();
    let bt = b.table("TodoItem").unwrap();
    at.insert(json!({"id": "same", "text": "from A", "complete": false}))
        .await
        .unwrap();
    at.insert(json!({"id": "u", "text": "v1", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    bt.pull(None, "$filter=id eq 'u'").await.unwrap();
    at.update(json!({"id": "u", "text": "A v2"})).await.unwrap();
    a.push().await.unwrap();
    // B inserts an id A already pushed, with other data (409), and updates a stale row (412).
    bt.insert(json!({"id": "same", "text": "from B", "complete": true}))
        .await
        .unwrap();
    bt.update(json!({"id": "u", "text": "B v2"})).await.unwrap();
    b.push().await.unwrap();
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    let same = bt.lookup("same").await.unwrap().unwrap();
    assert_eq!(
        (same["text"].as_str(), same["complete"].as_bool()),
        (Some("from A"), Some(false))
    );
    assert_eq!(
        bt.lookup("u").await.unwrap().unwrap()["text"],
        json!("A v2")
    );
    // Resolved errors are removed from the error table.
    assert!(b.push_errors().await.unwrap().is_empty());
    server.stop().await;
}

async fn deleting_an_item_already_deleted_on_the_server_succeeds(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let b = context(&server.url, &dir.path().join("b.db"), None).await;
    let at = a.table("TodoItem").unwrap();
    let bt = b.table("TodoItem").unwrap();
    at.insert(json!({"id": "d", "text": "x"})).await.unwrap();
    a.push().await.unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    at.delete("d").await.unwrap();
    a.push().await.unwrap();
    bt.delete("d").await.unwrap();
    b.push().await.unwrap();
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    server.stop().await;
}

async fn pull_pushes_pending_operations_first_and_fails_when_that_push_fails(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let faulty = Faulty::new();
    let a = context_via(&server.url, &dir.path().join("a.db"), faulty.clone(), None).await;
    let at = a.table("TodoItem").unwrap();
    at.insert(json!({"id": "p", "text": "x", "complete": false}))
        .await
        .unwrap();
    faulty.answer_with(503, r#"{"error":"down"}"#);
    match at.pull(Some("all"), "").await {
        Err(Error::PushFailed {
            status,
            errors,
            message,
        }) => {
            assert_eq!(status, PushStatus::Complete);
            assert_eq!(message, None, "a complete push has no cause");
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].status, Some(503));
            assert_eq!(errors[0].raw_result, r#"{"error":"down"}"#);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        faulty.methods(),
        vec![Method::Post],
        "nothing pulled after the failed push"
    );
    *faulty.canned.lock().unwrap() = None;
    let s = at.pull(Some("all"), "").await.unwrap();
    assert_eq!(s.upserted, 1);
    assert_eq!(
        faulty.methods(),
        vec![Method::Post, Method::Post, Method::Get]
    );
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    server.stop().await;
}

/// A handler that edits the item locally while its operation is in flight (deterministically,
/// from inside the push).
struct EditDuringPush {
    table: std::sync::Mutex<Option<tablesync_client::SyncTable>>,
}

impl tablesync_client::SyncHandler for EditDuringPush {
    fn execute_table_operation<'a>(
        &'a self,
        op: &'a mut tablesync_client::TableOperation,
    ) -> tablesync_client::BoxFuture<'a, tablesync_client::Outcome> {
        Box::pin(async move {
            let table = self.table.lock().unwrap().take();
            if let Some(t) = table {
                t.update(json!({"id": op.item_id(), "text": "edited in flight"}))
                    .await
                    .unwrap();
            }
            op.execute().await
        })
    }
}

async fn an_edit_during_the_push_of_an_insert_is_pushed_next_time_as_an_update(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let handler = Arc::new(EditDuringPush {
        table: std::sync::Mutex::new(None),
    });
    let recorder = Faulty::new();
    let a = context_via(
        &server.url,
        &dir.path().join("a.db"),
        recorder.clone(),
        Some(handler.clone()),
    )
    .await;
    let t = a.table("TodoItem").unwrap();
    t.insert(json!({"id": "f", "text": "original", "complete": false}))
        .await
        .unwrap();
    *handler.table.lock().unwrap() = Some(t.clone());
    a.push().await.unwrap();
    // The insert went through; the edit stays queued, now as an update with the new version.
    let ops = a.operations().await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].kind, ops[0].state),
        (OpKind::Update, OpState::Pending)
    );
    let row = t.lookup("f").await.unwrap().unwrap();
    assert_eq!(row["text"], json!("edited in flight"));
    assert!(row["version"].is_string());
    a.push().await.unwrap();
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    // Each push is one batch (the insert, then the update).
    assert_eq!(recorder.methods(), vec![Method::Post, Method::Post]);
    let sent: Vec<String> = recorder
        .writes()
        .iter()
        .map(|w| {
            let doc: Value = serde_json::from_slice(w.body.as_deref().unwrap()).unwrap();
            doc["requests"][0]["method"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(sent, ["POST", "PATCH"]);
    let b = context(&server.url, &dir.path().join("b.db"), None).await;
    let bt = b.table("TodoItem").unwrap();
    bt.pull(None, "").await.unwrap();
    assert_eq!(
        bt.lookup("f").await.unwrap().unwrap()["text"],
        json!("edited in flight")
    );
    server.stop().await;
}

async fn update_operation_and_discard_resolutions(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let b = context(&server.url, &dir.path().join("b.db"), None).await;
    let at = a.table("TodoItem").unwrap();
    let bt = b.table("TodoItem").unwrap();
    for id in ["m", "k"] {
        at.insert(json!({"id": id, "text": "v1", "complete": false}))
            .await
            .unwrap();
    }
    a.push().await.unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    for id in ["m", "k"] {
        at.update(json!({"id": id, "text": "A"})).await.unwrap();
        bt.update(json!({"id": id, "text": "B", "complete": true}))
            .await
            .unwrap();
    }
    a.push().await.unwrap();
    let errors = match b.push().await {
        Err(Error::PushFailed { errors, .. }) => errors,
        other => panic!("{other:?}"),
    };
    let ids: Vec<&str> = errors.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(ids, vec!["m", "k"]);
    let resolver = b.resolver();
    let (mut m, mut k) = (errors[0].clone(), errors[1].clone());
    // m: merge (our text, server's complete flag and version) and retry on the next push.
    let server_m = m.result.clone().unwrap();
    let mut merged = m.item.clone();
    merged.insert("complete".into(), server_m["complete"].clone());
    merged.insert("version".into(), server_m["version"].clone());
    resolver.update_operation(&mut m, merged).await.unwrap();
    // k: give up the local change and the local row.
    resolver.cancel_and_discard_item(&mut k).await.unwrap();
    assert!(m.handled && k.handled);
    assert_eq!(bt.lookup("k").await.unwrap(), None);
    let ops = b.operations().await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].item_id.as_str(), ops[0].state),
        ("m", OpState::Pending)
    );
    // A stale error (older operation version) can no longer be applied.
    assert!(matches!(
        resolver
            .cancel_and_discard_item(&mut errors[0].clone())
            .await,
        Err(Error::OperationChanged)
    ));
    b.push().await.unwrap();
    at.pull(Some("all"), "").await.unwrap();
    let m_at_a = at.lookup("m").await.unwrap().unwrap();
    assert_eq!(
        (m_at_a["text"].as_str(), m_at_a["complete"].as_bool()),
        (Some("B"), Some(false))
    );
    assert_eq!(at.lookup("k").await.unwrap().unwrap()["text"], json!("A"));
    server.stop().await;
}

async fn a_server_that_caps_pages_below_top_is_pulled_to_the_end(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 10, |i| format!("r{i:02}")).await;

    // The server serves 3 rows where the client asks for 50 and announces more with a Link
    // header, bare (ours, Node) or bracketed (.NET): the pull goes on with its own keyset
    // queries until a short page without a link, and gets every row.
    for (n, mode) in [LinkMode::Bare, LinkMode::Bracketed]
        .into_iter()
        .enumerate()
    {
        let capping = Capping::new(3, mode);
        let b = context_via(
            &server.url,
            &dir.path().join(format!("b{n}.db")),
            capping.clone(),
            None,
        )
        .await;
        let bt = b.table("TodoItem").unwrap();
        let s = bt
            .pull_with_options(Some("all"), "", PullOptions::with_page_size(50))
            .await
            .unwrap();
        assert_eq!((s.pages, s.upserted), (4, 10), "{mode:?}");
        let mut ids: Vec<String> = bt
            .read("$orderby=id")
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.dedup();
        assert_eq!(ids, (0..10).map(|i| format!("r{i:02}")).collect::<Vec<_>>());
        let gets: Vec<String> = capping
            .gets
            .lock()
            .unwrap()
            .iter()
            .map(|u| decoded(u))
            .collect();
        assert_eq!(gets.len(), 4, "{gets:?}");
        assert!(!gets[0].contains("id gt"), "{}", gets[0]);
        for (url, after) in gets[1..].iter().zip(["r02", "r05", "r08"]) {
            assert!(url.contains(&format!("id gt '{after}'")), "{url}");
            assert!(url.contains("$top=3&__includeDeleted=true"), "{url}");
            assert!(!url.contains("$skip"), "the link is not followed: {url}");
        }
    }

    // A server that caps silently (no link) ends the pull at its first short page; the saved
    // token makes the next incremental pull continue from there.
    let capping = Capping::new(3, LinkMode::Strip);
    let c = context_via(&server.url, &dir.path().join("c.db"), capping.clone(), None).await;
    let ct = c.table("TodoItem").unwrap();
    let s = ct.pull(Some("all"), "").await.unwrap();
    assert_eq!((s.pages, s.upserted), (1, 3));
    let s = ct.pull(Some("all"), "").await.unwrap();
    assert_eq!((s.pages, s.upserted), (1, 3));
    assert_eq!(ct.read("").await.unwrap().items.len(), 6);
    server.stop().await;
}

async fn a_delete_on_the_server_wins_with_both_shipped_handlers(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let at = a.table("TodoItem").unwrap();
    at.insert(json!({"id": "gone", "text": "x", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    let handlers: [(&str, Arc<dyn SyncHandler>); 2] = [
        ("server", Arc::new(ServerWins)),
        ("client", Arc::new(ClientWins::default())),
    ];
    let mut stale = Vec::new();
    for (name, handler) in handlers {
        let ctx = context(
            &server.url,
            &dir.path().join(format!("{name}.db")),
            Some(handler),
        )
        .await;
        ctx.table("TodoItem").unwrap().pull(None, "").await.unwrap();
        stale.push(ctx);
    }
    at.delete("gone").await.unwrap();
    a.push().await.unwrap();
    for ctx in &stale {
        // The update of a row deleted on the server (404) and the insert of an id whose row was
        // deleted on the server (409 with the tombstone) both give way to the delete.
        let t = ctx.table("TodoItem").unwrap();
        t.update(json!({"id": "gone", "text": "edited offline"}))
            .await
            .unwrap();
        t.insert(json!({"id": "taken", "text": "mine", "complete": true}))
            .await
            .unwrap();
    }
    at.insert(json!({"id": "taken", "text": "theirs", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    at.delete("taken").await.unwrap();
    a.push().await.unwrap();
    for ctx in &stale {
        ctx.push().await.unwrap();
        assert_eq!(ctx.pending_operations().await.unwrap(), 0);
        assert!(ctx.push_errors().await.unwrap().is_empty());
        let t = ctx.table("TodoItem").unwrap();
        assert!(t.read("").await.unwrap().items.is_empty());
    }
    server.stop().await;
}

/// A handler that completes every operation without sending it, as if the server had answered
/// with the item at version `v1` (to give a local row a server version the server never saw).
struct PretendPushed;

impl SyncHandler for PretendPushed {
    fn execute_table_operation<'a>(&'a self, op: &'a mut TableOperation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut item = op.item().clone();
            item.insert("version".into(), json!("v1"));
            Outcome::Success { item: Some(item) }
        })
    }
}

/// A store with `TodoItem` and `Ghost`, a table our server does not serve.
fn ghost_store(path: &std::path::Path) -> LocalStore {
    let mut store = crate::common::todo_store(path);
    store
        .define_table(TableDefinition::new("Ghost").column("text", ColumnType::String))
        .unwrap();
    store
}

async fn a_table_level_404_keeps_the_operation_with_both_handlers(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let handlers: [(&str, Arc<dyn SyncHandler>); 2] = [
        ("server", Arc::new(ServerWins)),
        ("client", Arc::new(ClientWins::default())),
    ];
    for (name, handler) in handlers {
        let path = dir.path().join(format!("{name}.db"));
        // A Ghost row the client believes the server has (version v1), edited offline.
        let pretend = SyncContext::initialize_with_handler(
            Client::new(&server.url).unwrap(),
            ghost_store(&path),
            Arc::new(PretendPushed),
        )
        .await
        .unwrap();
        let g = pretend.table("Ghost").unwrap();
        g.insert(json!({"id": "g1", "text": "precious"}))
            .await
            .unwrap();
        pretend.push().await.unwrap();
        g.update(json!({"id": "g1", "text": "precious edit"}))
            .await
            .unwrap();
        drop(g);
        drop(pretend);

        let ctx = SyncContext::initialize_with_handler(
            Client::new(&server.url).unwrap(),
            ghost_store(&path),
            handler,
        )
        .await
        .unwrap();
        // The server answers 404 table_not_found: not a deleted item, so nothing is dropped.
        match ctx.push().await {
            Err(Error::PushFailed {
                status,
                errors,
                message: None,
            }) => {
                assert_eq!(status, PushStatus::Complete, "{name}");
                assert_eq!(errors.len(), 1, "{name}: {errors:?}");
                assert_eq!(
                    (errors[0].kind, errors[0].status, errors[0].item_id.as_str()),
                    (OpKind::Update, Some(404), "g1"),
                    "{name}"
                );
                assert!(
                    errors[0]
                        .raw_result
                        .contains("\"code\":\"table_not_found\""),
                    "{name}: {}",
                    errors[0].raw_result
                );
                assert_eq!(errors[0].result, None, "{name}");
                assert!(!errors[0].is_deleted_on_server(), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let ops = ctx.operations().await.unwrap();
        assert_eq!(
            ops.iter()
                .map(|o| (o.kind, o.state, o.item_id.as_str()))
                .collect::<Vec<_>>(),
            vec![(OpKind::Update, OpState::Failed, "g1")],
            "{name}"
        );
        let row = ctx.table("Ghost").unwrap().lookup("g1").await.unwrap();
        assert_eq!(
            row.map(|r| r["text"].clone()),
            Some(json!("precious edit")),
            "{name}"
        );
    }
    server.stop().await;
}

async fn update_operation_turns_an_insert_conflict_into_an_update(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let b = context(&server.url, &dir.path().join("b.db"), None).await;
    a.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "dup", "text": "from A", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    let bt = b.table("TodoItem").unwrap();
    bt.insert(json!({"id": "dup", "text": "from B", "complete": true}))
        .await
        .unwrap();
    let mut errors = match b.push().await {
        Err(Error::PushFailed { errors, .. }) => errors,
        other => panic!("{other:?}"),
    };
    assert_eq!(errors.len(), 1);
    let e = &mut errors[0];
    assert_eq!((e.kind, e.status), (OpKind::Insert, Some(409)));
    let server_copy = e.result.clone().expect("the server's copy");
    assert_eq!(server_copy["text"], json!("from A"));
    // Client wins by hand: our data with the server's version.
    let mut mine = e.item.clone();
    mine.insert("version".into(), server_copy["version"].clone());
    b.resolver().update_operation(e, mine).await.unwrap();
    let ops = b.operations().await.unwrap();
    assert_eq!(
        ops.iter()
            .map(|o| (o.kind, o.state, o.item_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(OpKind::Update, OpState::Pending, "dup")]
    );
    assert_eq!(
        bt.lookup("dup").await.unwrap().unwrap()["version"],
        server_copy["version"]
    );
    b.push().await.unwrap();
    assert_eq!(b.pending_operations().await.unwrap(), 0);
    let at = a.table("TodoItem").unwrap();
    at.pull(None, "").await.unwrap();
    let row = at.lookup("dup").await.unwrap().unwrap();
    assert_eq!(
        (row["text"].clone(), row["complete"].clone()),
        (json!("from B"), json!(true))
    );
    server.stop().await;
}

async fn purge_resets_every_delta_token_of_the_table(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    let at = a.table("TodoItem").unwrap();
    for (id, complete) in [("p1", false), ("p2", false), ("p3", true)] {
        at.insert(json!({"id": id, "text": id, "complete": complete}))
            .await
            .unwrap();
    }
    a.push().await.unwrap();
    let b = context(&server.url, &dir.path().join("b.db"), None).await;
    let bt = b.table("TodoItem").unwrap();
    let ids = |items: Vec<serde_json::Map<String, serde_json::Value>>| -> Vec<String> {
        let mut v: Vec<String> = items
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };

    // (a) The whole table purged under qA: qB's token must not keep its rows away.
    bt.pull(Some("qA"), "").await.unwrap();
    bt.pull(Some("qB"), "$filter=complete eq false")
        .await
        .unwrap();
    assert_eq!(bt.purge(Some("qA"), "", false).await.unwrap(), 3);
    let s = bt
        .pull(Some("qB"), "$filter=complete eq false")
        .await
        .unwrap();
    assert_eq!(s.upserted, 2);
    assert_eq!(ids(bt.read("").await.unwrap().items), vec!["p1", "p2"]);

    // (b) A filtered purge without a query id: qA must bring the purged rows back.
    bt.pull(Some("qA"), "").await.unwrap();
    assert_eq!(
        ids(bt.read("").await.unwrap().items),
        vec!["p1", "p2", "p3"]
    );
    assert_eq!(
        bt.purge(None, "$filter=complete eq false", false)
            .await
            .unwrap(),
        2
    );
    let s = bt.pull(Some("qA"), "").await.unwrap();
    assert_eq!(s.upserted, 3);
    assert_eq!(
        ids(bt.read("").await.unwrap().items),
        vec!["p1", "p2", "p3"]
    );

    // A purge that removes nothing keeps the other queries' tokens.
    assert_eq!(
        bt.purge(None, "$filter=text eq 'none'", false)
            .await
            .unwrap(),
        0
    );
    let s = bt.pull(Some("qA"), "").await.unwrap();
    assert_eq!(s.upserted, 0);
    server.stop().await;
}
