//! The client commands of the `tablesync` binary (`push`, `pull`, `purge`, `queue`, `status`)
//! run as a user would run them: a real `tablesync serve` process, a store file in a temporary
//! directory, and the exact lines each command prints; once with the server on SQLite and once
//! on PostgreSQL.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use tablesync_client::{Client, ColumnType, LocalStore, SyncContext, TableDefinition};

use crate::util::{tablesync_serve_on, StoreKind};

/// Runs `tablesync <args> --store <store> --url <url>` and returns (exit code, stdout).
fn tablesync(args: &[&str], store: &Path, url: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--url")
        .arg(url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tablesync");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().expect("tablesync exited by a signal");
    (code, stdout)
}

/// Queues two inserts in a store through the SDK, as an app would while offline.
fn queue_two_inserts(store: &Path) {
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

    // Offline: the push stops with the network status, exit code 1, and the queue is intact.
    let (code, out) = tablesync(
        &["push", "--request-timeout-ms", "2000"],
        &writer,
        "http://127.0.0.1:9/",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("push failed: CancelledByNetworkError"),
        "{out}"
    );
    assert!(out.contains("2 operation(s) still queued"), "{out}");

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

    let (code, out) = tablesync(&["purge"], &store, server.url());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--force"), "{out}");
    let (_, out) = tablesync(&["status"], &store, server.url());
    assert!(out.contains("pending: 2 operation(s)\n"), "{out}");

    let (code, out) = tablesync(&["purge", "--force"], &store, server.url());
    assert_eq!((code, out.as_str()), (0, "purged 2 row(s) from TodoItem\n"));
    let (_, out) = tablesync(&["status"], &store, server.url());
    assert!(out.contains("table:   TodoItem (0 row(s))\n"), "{out}");
    assert!(out.contains("pending: 0 operation(s)\n"), "{out}");
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
}
