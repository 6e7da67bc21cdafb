//! The client commands of the `tablesync` binary (`push`, `pull`, `purge`, `queue`, `status`)
//! run as a user would run them: a real `tablesync serve` process, a store file in a temporary
//! directory, and the exact lines each command prints; once with the server on SQLite and once
//! on PostgreSQL.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use tablesync_client::{Client, ColumnType, LocalStore, SyncContext, TableDefinition};

use crate::util::{fresh_database, tablesync_serve_on, tablesync_serve_with, StoreKind};

/// Runs `tablesync <args> --store <store> --url <url>` and returns (exit code, stdout).
pub(crate) fn tablesync(args: &[&str], store: &Path, url: &str) -> (i32, String) {
    let (code, out, _) = tablesync_err(args, store, url);
    (code, out)
}

/// Runs `tablesync <args> --store <store> --url <url>` and returns (exit code, stdout, stderr).
pub(crate) fn tablesync_err(args: &[&str], store: &Path, url: &str) -> (i32, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.extend([
        std::ffi::OsStr::new("--store"),
        store.as_os_str(),
        std::ffi::OsStr::new("--url"),
        std::ffi::OsStr::new(url),
    ]);
    run_tablesync(&all)
}

/// Runs `tablesync <args>` (no `TABLESYNC_URL`/`TABLESYNC_TOKEN` from the environment) and
/// returns (exit code, stdout, stderr).
pub(crate) fn run_tablesync<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TABLESYNC_URL")
        .env_remove("TABLESYNC_TOKEN")
        .output()
        .expect("run tablesync");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().expect("tablesync exited by a signal");
    (code, stdout, stderr)
}

/// Queues two inserts in a store through the SDK, as an app would while offline.
pub(crate) fn queue_two_inserts(store: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = LocalStore::new(store);
        local
            .define_table(
                TableDefinition::new("TodoItem")
                    .column("text", ColumnType::String)
                    .column("complete", ColumnType::Boolean),
            )
            .expect("define table");
        // Nothing is sent while queuing, so the URL does not matter yet.
        let client = Client::new("http://127.0.0.1:9/").expect("client");
        let ctx = SyncContext::initialize(client, local).await.expect("init");
        let table = ctx.table("TodoItem").expect("table");
        for (id, text) in [("cli-1", "milk"), ("cli-2", "eggs")] {
            table
                .insert(json!({"id": id, "text": text, "complete": false}))
                .await
                .expect("insert");
        }
    });
}

fn push_pull_purge_queue_and_status_by_hand(kind: StoreKind) {
    let server = tablesync_serve_on(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = dir.path().join("writer.db");
    let reader = dir.path().join("reader.db");
    queue_two_inserts(&writer);

    // The queue lists both inserts in order; status counts them.
    let (code, out) = tablesync(&["queue"], &writer, server.url());
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("insert") && lines[0].contains("TodoItem/cli-1"),
        "{out}"
    );
    assert!(
        lines[1].contains("insert") && lines[1].contains("TodoItem/cli-2"),
        "{out}"
    );
    let (code, out) = tablesync(&["status"], &writer, server.url());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("table:   TodoItem (2 row(s))\n"), "{out}");
    assert!(out.contains("pending: 2 operation(s)\n"), "{out}");

    // Offline: the push stops with the network status, exit code 2, and the queue is intact;
    // the message names the server by host and port.
    let (code, out, err) = tablesync_err(
        &["push", "--request-timeout-ms", "2000"],
        &writer,
        "http://127.0.0.1:9/some/long/app/path/",
    );
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        out,
        "push CancelledByNetworkError: 0 operation(s) pushed, 2 still queued\n"
    );
    assert!(
        err.contains("offline: could not reach the server at 127.0.0.1:9 ("),
        "{err}"
    );
    assert!(!err.contains("/some/long/app/path"), "{err}");
    assert!(err.contains("2 operation(s) still queued"), "{err}");

    // Online: both go, the queue empties.
    let (code, out) = tablesync(&["push"], &writer, server.url());
    assert_eq!((code, out.as_str()), (0, "pushed 2 operation(s)\n"));
    let (_, out) = tablesync(&["queue"], &writer, server.url());
    assert_eq!(out, "queue is empty\n");

    // A second store pulls them incrementally; the next pull finds nothing new.
    let (code, out) = tablesync(&["pull", "--query-id", "all"], &reader, server.url());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("pulled TodoItem: "), "{out}");
    assert!(
        out.contains(" 2 row(s) written, 0 deleted, 0 skipped"),
        "{out}"
    );
    let (_, out) = tablesync(&["pull", "--query-id", "all"], &reader, server.url());
    assert!(
        out.contains(" 0 row(s) written, 0 deleted, 0 skipped"),
        "{out}"
    );

    // Purge with a filter removes only the matching row.
    let (code, out) = tablesync(
        &[
            "purge",
            "--query-id",
            "all",
            "--query",
            "$filter=text eq 'milk'",
        ],
        &reader,
        server.url(),
    );
    assert_eq!((code, out.as_str()), (0, "purged 1 row(s) from TodoItem\n"));
    let (_, out) = tablesync(&["status"], &reader, server.url());
    assert!(out.contains("table:   TodoItem (1 row(s))\n"), "{out}");
}

fn purge_with_pending_operations_is_refused_unless_forced(kind: StoreKind) {
    let server = tablesync_serve_on(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store.db");
    queue_two_inserts(&store);

    let (code, out, err) = tablesync_err(&["purge"], &store, server.url());
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
    assert!(err.contains("--force"), "{err}");
    let (_, out) = tablesync(&["status"], &store, server.url());
    assert!(out.contains("pending: 2 operation(s)\n"), "{out}");

    let (code, out) = tablesync(&["purge", "--force"], &store, server.url());
    assert_eq!((code, out.as_str()), (0, "purged 2 row(s) from TodoItem\n"));
    let (_, out) = tablesync(&["status"], &store, server.url());
    assert!(out.contains("table:   TodoItem (0 row(s))\n"), "{out}");
    assert!(out.contains("pending: 0 operation(s)\n"), "{out}");
}

/// A server config with an app's tables: `TodoItem` with an extra `priority` and `Note`.
const APP_TABLES_TOML: &str = r#"
[[tables]]
name = "TodoItem"
columns = { text = "string", complete = "boolean", priority = "number" }

[[tables]]
name = "Note"
columns = { title = "string", stars = "number" }
"#;

/// GET `<url>tables/<table>/<id>` as JSON.
pub(crate) fn server_row(url: &str, table: &str, id: &str) -> serde_json::Value {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("{}/tables/{table}/{id}", url.trim_end_matches('/')))
            .header("ZUMO-API-VERSION", "2.0.0")
            .send()
            .await
            .expect("the server answers");
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json().await.expect("JSON")
    })
}

/// Queues, through the SDK as the app would, a Note and a TodoItem with every column.
fn queue_app_rows(store: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = LocalStore::new(store);
        local
            .define_table(
                TableDefinition::new("TodoItem")
                    .column("text", ColumnType::String)
                    .column("complete", ColumnType::Boolean)
                    .column("priority", ColumnType::Number),
            )
            .expect("define TodoItem");
        local
            .define_table(
                TableDefinition::new("Note")
                    .column("title", ColumnType::String)
                    .column("stars", ColumnType::Number),
            )
            .expect("define Note");
        let client = Client::new("http://127.0.0.1:9/").expect("client");
        let ctx = SyncContext::initialize(client, local).await.expect("init");
        ctx.table("Note")
            .expect("Note")
            .insert(json!({"id": "n1", "title": "hello", "stars": 5}))
            .await
            .expect("insert note");
        ctx.table("TodoItem")
            .expect("TodoItem")
            .insert(json!({"id": "t1", "text": "milk", "complete": true, "priority": 2}))
            .await
            .expect("insert todo");
    });
}

/// The local rows of a table, opened as a tool would (stored definitions only).
fn local_rows(store: &Path, table: &str) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = LocalStore::new(store);
        local.define_stored_tables().expect("stored tables");
        let client = Client::new("http://127.0.0.1:9/").expect("client");
        let ctx = SyncContext::initialize(client, local).await.expect("init");
        ctx.table(table)
            .expect("table")
            .read("$orderby=id")
            .await
            .expect("read")
            .items
            .into_iter()
            .map(serde_json::Value::Object)
            .collect()
    })
}

fn client_commands_keep_the_stores_table_definition(kind: StoreKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tables.toml");
    std::fs::write(&config, APP_TABLES_TOML).expect("write config");
    let db = fresh_database(kind);
    let server = tablesync_serve_with(
        Path::new(db.url()),
        &["--config", config.to_str().expect("utf-8 path")],
    )
    .keep_alive(db);
    let store = dir.path().join("app.db");
    queue_app_rows(&store);

    // The stored definitions are used, the whole row is sent.
    let (code, out) = tablesync(&["push"], &store, server.url());
    assert_eq!((code, out.as_str()), (0, "pushed 2 operation(s)\n"));
    let note = server_row(server.url(), "Note", "n1");
    assert_eq!(
        (note["title"].clone(), note["stars"].clone()),
        (json!("hello"), json!(5))
    );
    let todo = server_row(server.url(), "TodoItem", "t1");
    assert_eq!(
        (
            todo["text"].clone(),
            todo["complete"].clone(),
            todo["priority"].clone()
        ),
        (json!("milk"), json!(true), json!(2))
    );
    // Plain commands (default TodoItem) and a narrower --column list leave the definitions whole.
    let (code, out) = tablesync(&["status"], &store, server.url());
    assert_eq!(code, 0, "{out}");
    let (code, out) = tablesync(
        &["pull", "--table", "Note", "--column", "title:string"],
        &store,
        server.url(),
    );
    assert_eq!(code, 0, "{out}");
    let notes = local_rows(&store, "Note");
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0]["title"].clone(), notes[0]["stars"].clone()),
        (json!("hello"), json!(5))
    );
    let todos = local_rows(&store, "TodoItem");
    assert_eq!(todos[0]["priority"], json!(2), "{todos:?}");
    // A column declared with another type than the stored one is refused, not reinterpreted.
    let (code, out) = tablesync(
        &["pull", "--table", "Note", "--column", "stars:string"],
        &store,
        server.url(),
    );
    assert_eq!(code, 4, "{out}");
}

/// Each test runs against a server on SQLite and on PostgreSQL.
mod on_store {
    use super::StoreKind;

    #[test]
    fn push_pull_purge_queue_and_status_by_hand_sqlite() {
        super::push_pull_purge_queue_and_status_by_hand(StoreKind::Sqlite);
    }

    #[test]
    fn push_pull_purge_queue_and_status_by_hand_postgres() {
        super::push_pull_purge_queue_and_status_by_hand(StoreKind::Postgres);
    }

    #[test]
    fn purge_with_pending_operations_is_refused_unless_forced_sqlite() {
        super::purge_with_pending_operations_is_refused_unless_forced(StoreKind::Sqlite);
    }

    #[test]
    fn purge_with_pending_operations_is_refused_unless_forced_postgres() {
        super::purge_with_pending_operations_is_refused_unless_forced(StoreKind::Postgres);
    }

    #[test]
    fn client_commands_keep_the_stores_table_definition_sqlite() {
        super::client_commands_keep_the_stores_table_definition(StoreKind::Sqlite);
    }

    #[test]
    fn client_commands_keep_the_stores_table_definition_postgres() {
        super::client_commands_keep_the_stores_table_definition(StoreKind::Postgres);
    }
}
