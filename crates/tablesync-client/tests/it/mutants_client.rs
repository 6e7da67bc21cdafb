//! Tests written to kill mutants that `cargo mutants` found surviving in `src/store/` and
//! `src/sync/` (docs/mutation-testing.md lists them). Each goes through the public API only, so
//! a refactor of the store's internals keeps them meaningful.

use serde_json::{json, Value};
use tablesync_client::{ColumnType, LocalStore, TableDefinition};

use crate::common::{faulty_context, Faulty};

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
