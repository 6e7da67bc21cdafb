//! The tutorial's three sections, through the scriptable subcommands, against a real server:
//! online (items sync both ways), offline (unreachable URL: the push fails with
//! `CancelledByNetworkError`, items survive a restart, the server is unchanged), reconnected
//! (the start-up sync pushes them, completing items syncs).

use crate::util::{
    dead_url, listed_id, listed_number, server_delete, server_insert, server_items, server_summary,
    server_update, start_server, todo,
};
use serde_json::json;

use crate::util::StoreKind;

store_tests!(
    online_offline_reconnected,
    errors_and_conflicts_have_their_exit_codes,
    an_item_deleted_on_the_server_does_not_block_later_syncs,
    a_null_from_another_client_does_not_break_the_app,
    delete_removes_the_item_here_and_on_the_server,
);

fn s(text: &str, complete: bool) -> (String, bool) {
    (text.to_string(), complete)
}

fn online_offline_reconnected(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();

    // 1. Online: items added in the app reach the server; the other way round too.
    let r = todo(dir, url, &["add", "Buy", "milk"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.starts_with("added: [ ] Buy milk (id: "), "{r}");
    assert!(r.stdout.contains("sync: ok"), "{r}");
    assert!(dir.join("localstore.db").exists());
    assert_eq!(server_summary(url), [s("Buy milk", false)]);

    server_insert(url, "Walk the dog");
    let r = todo(dir, url, &["list"]);
    assert_eq!(r.code, Some(0), "{r}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r}");
    assert!(lines[0].starts_with("sync: ok"), "{r}");
    assert!(lines[1].starts_with("1. [ ] Buy milk (id: "), "{r}");
    assert!(lines[2].starts_with("2. [ ] Walk the dog (id: "), "{r}");
    let walk_id = listed_id(&r.stdout, "Walk the dog");
    assert_eq!(
        server_items(url)
            .iter()
            .find(|i| i["text"] == "Walk the dog")
            .map(|i| i["id"].clone()),
        Some(json!(walk_id))
    );
    let r = todo(dir, url, &["status"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains(&format!("server:             {url}\n")),
        "{r}"
    );
    assert!(r.stdout.contains("items:              2\n"), "{r}");
    assert!(r.stdout.contains("pending operations: 0\n"), "{r}");
    assert!(r.stdout.contains("(server reached, ok)"), "{r}");

    // 2. Offline: a URL nothing listens on.
    let server_before = server_items(url);
    let offline = dead_url();
    for text in ["Offline one", "Offline two"] {
        let r = todo(dir, &offline, &["add", text]);
        assert_eq!(r.code, Some(2), "the add succeeds, the sync cannot: {r}");
        assert!(
            r.stdout.starts_with(&format!("added: [ ] {text} (id: ")),
            "{r}"
        );
        assert!(
            r.stderr.starts_with(
                "sync failed:\nPush failed because of sync errors. You may be offline.\n\
                 PushResult.Status: CancelledByNetworkError\nMessage: connection failed: "
            ),
            "{r}"
        );
        // The dialog names the cause of the cancelled push.
        let message_line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("Message: "))
            .unwrap_or_default();
        assert!(
            message_line
                .to_ascii_lowercase()
                .contains("connection refused"),
            "{r}"
        );
    }
    let r = todo(dir, &offline, &["status"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("items:              4\n"), "{r}");
    assert!(r.stdout.contains("pending operations: 2\n"), "{r}");
    assert!(r.stdout.contains("(server not reached, failed)"), "{r}");
    assert!(
        r.stdout
            .contains("PushResult.Status: CancelledByNetworkError"),
        "{r}"
    );
    // A new process (the app restarted) still has them, with the start-up sync failing again.
    let r = todo(dir, &offline, &["list"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("PushResult.Status: CancelledByNetworkError"),
        "{r}"
    );
    assert!(r.stderr.contains("2 operation(s) pending"), "{r}");
    let texts: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(texts.len(), 4, "{r}");
    assert!(texts[0].starts_with("1. [ ] Buy milk"), "{r}");
    assert!(texts[1].starts_with("2. [ ] Offline one"), "{r}");
    assert!(texts[2].starts_with("3. [ ] Offline two"), "{r}");
    assert!(texts[3].starts_with("4. [ ] Walk the dog"), "{r}");
    // Local-only work while offline: complete one without trying to sync.
    let r = todo(dir, &offline, &["--no-sync", "done", "2"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.starts_with("updated: [x] Offline one"), "{r}");
    assert_eq!(
        server_items(url),
        server_before,
        "the server must be unchanged"
    );

    // 3. Reconnected: the start-up sync of any command pushes the queue.
    let r = todo(dir, url, &["list"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("2. [x] Offline one"), "{r}");
    assert_eq!(
        server_summary(url),
        [
            s("Buy milk", false),
            s("Offline one", true),
            s("Offline two", false),
            s("Walk the dog", false)
        ]
    );
    // Completing items syncs: by list number and by id prefix.
    let n = listed_number(&r.stdout, "Offline two");
    let r2 = todo(dir, url, &["done", &n]);
    assert_eq!(r2.code, Some(0), "{r2}");
    assert!(r2.stdout.starts_with("updated: [x] Offline two"), "{r2}");
    let r2 = todo(dir, url, &["done", &walk_id[..8]]);
    assert_eq!(r2.code, Some(0), "{r2}");
    let r2 = todo(dir, url, &["undone", "Offline one"]);
    assert_eq!(r2.code, Some(1), "not a number nor an id: {r2}");
    assert!(r2.stderr.contains("error: no item \"Offline one\""), "{r2}");
    let r2 = todo(dir, url, &["undone", &listed_id(&r.stdout, "Offline one")]);
    assert_eq!(r2.code, Some(0), "{r2}");
    assert_eq!(
        server_summary(url),
        [
            s("Buy milk", false),
            s("Offline one", false),
            s("Offline two", true),
            s("Walk the dog", true)
        ]
    );
    let r = todo(dir, url, &["status"]);
    assert!(r.stdout.contains("pending operations: 0\n"), "{r}");
    assert!(r.stdout.contains("(server reached, ok)"), "{r}");
}

fn errors_and_conflicts_have_their_exit_codes(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();

    let r = todo(dir, url, &["add", "   "]);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(r.stderr, "error: the item text must not be empty\n", "{r}");
    let r = todo(dir, url, &["done", "1"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.starts_with("error: no item \"1\""), "{r}");
    let r = todo(dir, url, &["frobnicate"]);
    assert_eq!(
        r.code,
        Some(1),
        "usage errors are errors, not 'offline': {r}"
    );
    let r = todo(dir, "ftp://nowhere", &["list"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("invalid server URL"), "{r}");
    // Intervals beyond their limits are usage errors, not a panic at the first sync.
    for (flag, value) in [
        ("--sync-interval-s", "86401"),
        ("--offline-retry-interval-s", "0"),
        ("--offline-retry-interval-s", "18446744073709551615"),
    ] {
        let r = todo(dir, url, &[flag, value, "status"]);
        assert_eq!(r.code, Some(1), "{flag} {value}: {r}");
        assert!(r.stderr.contains(flag), "{r}");
    }

    // A conflict: the item changes on the server while our update of it waits offline. The
    // server answers 412, the app keeps the server's copy and exits 3 (server reached, sync
    // failed); the next sync is clean.
    let r = todo(dir, url, &["add", "Shared"]);
    assert_eq!(r.code, Some(0), "{r}");
    let id = listed_id(&todo(dir, url, &["list"]).stdout, "Shared");
    let r = todo(dir, url, &["--no-sync", "done", "1"]);
    assert_eq!(r.code, Some(0), "{r}");
    server_update(url, &id, json!({ "text": "Shared (edited elsewhere)" }));
    let r = todo(dir, url, &["sync"]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(
        r.stderr.starts_with(
            "sync failed:\nPush failed because of sync errors. You may be offline.\n\
             PushResult.Status: Complete\n"
        ),
        "{r}"
    );
    assert!(
        r.stderr.contains(": 412 (the server's copy was kept)"),
        "{r}"
    );
    let r = todo(dir, url, &["list"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("1. [ ] Shared (edited elsewhere)"), "{r}");
    assert_eq!(server_summary(url), [s("Shared (edited elsewhere)", false)]);
}

fn an_item_deleted_on_the_server_does_not_block_later_syncs(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();

    let r = todo(dir, url, &["add", "Doomed"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = todo(dir, url, &["add", "Kept"]);
    assert_eq!(r.code, Some(0), "{r}");
    let list = todo(dir, url, &["list"]).stdout;
    let doomed = listed_id(&list, "Doomed");
    // Another client deletes the item while our edit of it waits offline.
    let r = todo(
        dir,
        url,
        &["--no-sync", "done", &listed_number(&list, "Doomed")],
    );
    assert_eq!(r.code, Some(0), "{r}");
    server_delete(url, &doomed);
    server_insert(url, "From elsewhere");

    // The update is answered 404 and the item is confirmed deleted: the local change is
    // discarded (the tutorial's CancelAndDiscard), the sync reports it once.
    let r = todo(dir, url, &["sync"]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(
        r.stderr
            .contains(": 404 (deleted on the server; the local change was discarded)"),
        "{r}"
    );
    // The next sync is clean and pulls again.
    let r = todo(dir, url, &["list"]);
    assert_eq!(r.code, Some(0), "{r}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{r}");
    assert!(lines[0].starts_with("sync: ok"), "{r}");
    assert!(lines[1].starts_with("1. [ ] From elsewhere (id: "), "{r}");
    assert!(lines[2].starts_with("2. [ ] Kept (id: "), "{r}");
    let r = todo(dir, url, &["status"]);
    assert!(r.stdout.contains("pending operations: 0\n"), "{r}");
    assert_eq!(
        server_summary(url),
        [s("From elsewhere", false), s("Kept", false)]
    );
}

/// Another client inserts `{"text":"x"}` (no `complete`, stored as null): every command used to
/// exit 1 with "invalid type: null, expected a boolean". The item is shown as not done, and
/// `done` and `status` keep working.
fn a_null_from_another_client_does_not_break_the_app(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let r = todo(dir, url, &["add", "Mine"]);
    assert_eq!(r.code, Some(0), "{r}");
    crate::util::server_insert_raw(url, json!({"text": "x"}));
    crate::util::server_insert_raw(url, json!({"complete": true}));
    let r = todo(dir, url, &["list"]);
    assert_eq!(r.code, Some(0), "{r}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{r}");
    assert!(lines[0].starts_with("sync: ok"), "{r}");
    assert!(lines[1].starts_with("1. [x]  (id: "), "{r}");
    assert!(lines[2].starts_with("2. [ ] Mine (id: "), "{r}");
    assert!(lines[3].starts_with("3. [ ] x (id: "), "{r}");
    let r = todo(dir, url, &["done", "3"]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = todo(dir, url, &["status"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("pending operations: 0\n"), "{r}");
    assert_eq!(
        server_summary(url),
        [s("", true), s("Mine", false), s("x", true)]
    );
}

fn delete_removes_the_item_here_and_on_the_server(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    for text in ["Keep me", "Drop me"] {
        let r = todo(dir, url, &["add", text]);
        assert_eq!(r.code, Some(0), "{r}");
    }
    let list = todo(dir, url, &["list"]).stdout;
    // Offline first: deleted locally and queued, the server unchanged.
    let r = todo(
        dir,
        &dead_url(),
        &["delete", &listed_number(&list, "Drop me")],
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stdout.starts_with("deleted: [ ] Drop me (id: "), "{r}");
    assert_eq!(
        server_summary(url),
        [s("Drop me", false), s("Keep me", false)]
    );
    let r = todo(dir, url, &["--no-sync", "list"]);
    assert!(!r.stdout.contains("Drop me"), "{r}");
    // The next sync deletes it on the server.
    let r = todo(dir, url, &["sync"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(server_summary(url), [s("Keep me", false)]);
    let r = todo(dir, url, &["delete", "Drop me"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("no item \"Drop me\""), "{r}");
}
