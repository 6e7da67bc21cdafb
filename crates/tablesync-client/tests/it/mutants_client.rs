//! Tests written to kill mutants that `cargo mutants` found surviving in `src/store/` and
//! `src/sync/` (docs/mutation-testing.md lists them). Each goes through the public API only, so
//! a refactor of the store's internals keeps them meaningful.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tablesync_client::{
    BoxFuture, ColumnType, LocalStore, Outcome, SyncHandler, SyncTable, TableDefinition,
    TableOperation,
};

use crate::common::{context_via, faulty_context, Faulty, OurServer, StoreKind};

/// `LocalStore::table_names` (the CLI's "unknown table, known are …" message and its table
/// loop) lists every defined table, in definition order. Killed mutant: `table_names` → `vec![]`.
#[test]
fn the_store_names_its_tables_in_definition_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::new(dir.path().join("a.db"));
    assert!(store.table_names().is_empty());
    store
        .define_table(TableDefinition::new("TodoItem").column("text", ColumnType::String))
        .unwrap();
    store
        .define_table(TableDefinition::new("Note").column("title", ColumnType::String))
        .unwrap();
    assert_eq!(store.table_names(), vec!["TodoItem", "Note"]);
}

/// A boolean column holding a non-integral number (written by another tool; SQLite keeps 0.5
/// as REAL even in an INTEGER column) reads as `true`, like any non-zero value. Killed mutant:
/// `f != 0.0` → `f == 0.0` in `rows::to_json`.
#[tokio::test]
async fn a_boolean_stored_as_a_fraction_reads_as_true() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty::new();
    let ctx = faulty_context(dir.path(), &faulty).await;
    let t = ctx.table("TodoItem").unwrap();
    t.insert(json!({"id": "half", "text": "x", "complete": false}))
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
    raw.execute(
        "UPDATE \"TodoItem\" SET \"complete\" = 0.5 WHERE \"id\" = 'half'",
        [],
    )
    .unwrap();
    let stored: String = raw
        .query_row(
            "SELECT typeof(\"complete\") FROM \"TodoItem\" WHERE \"id\" = 'half'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored, "real",
        "the test needs a REAL in the boolean column"
    );
    let row = t.lookup("half").await.unwrap().unwrap();
    assert_eq!(row["complete"], Value::Bool(true), "{row:?}");
}

/// A handler that deletes the item locally while its operation is in flight (deterministically,
/// from inside the push).
struct DeleteDuringPush {
    table: Mutex<Option<SyncTable>>,
}

impl SyncHandler for DeleteDuringPush {
    fn execute_table_operation<'a>(&'a self, op: &'a mut TableOperation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let table = self.table.lock().unwrap().take();
            if let Some(t) = table {
                t.delete(op.item_id()).await.unwrap();
            }
            op.execute().await
        })
    }
}

/// The app deletes an item while its update is being pushed: the update lands, and the delete
/// queued meanwhile must carry the version the update produced, so the same push goes on to
/// delete the item with ONE delete request (no 412, no second attempt) and leaves nothing
/// queued. Killed mutant: `current.kind == OpKind::Delete` → `!=` in `store::queue::complete_in`
/// (the delete kept the old version; the lost-answer check then hid the 412 behind a second
/// attempt, so only the number of deletes sent shows it).
async fn a_delete_during_the_push_of_an_update_is_sent_once_with_the_new_version(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let handler = Arc::new(DeleteDuringPush {
        table: Mutex::new(None),
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
    t.insert(json!({"id": "g", "text": "original", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    t.update(json!({"id": "g", "text": "edited"}))
        .await
        .unwrap();
    *handler.table.lock().unwrap() = Some(t.clone());
    let before = recorder.writes().len();
    a.push().await.unwrap();
    assert_eq!(a.pending_operations().await.unwrap(), 0);
    assert!(a.push_errors().await.unwrap().is_empty());
    let sent = sent_methods(&recorder.writes()[before..]);
    assert_eq!(
        sent.iter().filter(|m| *m == "DELETE").count(),
        1,
        "one delete request: {sent:?}"
    );
    assert_eq!(get_status(&server.url, "tables/TodoItem/g").await, 404);
    server.stop().await;
}

/// The method of every table operation in `writes`: a batch's requests, or the request itself.
fn sent_methods(writes: &[tablesync_client::HttpRequest]) -> Vec<String> {
    let mut out = Vec::new();
    for w in writes {
        if w.url.contains("$batch") {
            let doc: Value = serde_json::from_slice(w.body.as_deref().unwrap()).unwrap();
            for r in doc["requests"].as_array().unwrap() {
                out.push(r["method"].as_str().unwrap().to_owned());
            }
        } else {
            out.push(w.method.as_str().to_owned());
        }
    }
    out
}

/// The status of `GET path` on our server.
async fn get_status(base: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("ZUMO-API-VERSION", tablesync_client::ZUMO_API_VERSION)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

store_tests!(a_delete_during_the_push_of_an_update_is_sent_once_with_the_new_version);
