//! The client commands as scripts and people use them (issue 13): exit codes, `--json`
//! output, stores that do not exist, unknown tables, the remembered server, closed pipes, and a
//! real conflict listed with `errors` and settled with `resolve` — each against a real
//! `tablesync serve` process (SQLite) and the built binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tablesync_client::{Client, ColumnType, LocalStore, SyncContext, TableDefinition};

use crate::client_cli::{queue_two_inserts, run_tablesync, server_row, tablesync, tablesync_err};
use crate::util::{tablesync_serve, tablesync_serve_with};

/// Parses a command's stdout as exactly one JSON document.
fn one_json(out: &str) -> Value {
    assert_eq!(out.lines().count(), 1, "one line of JSON expected: {out}");
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A SyncContext on `store` (defined tables: the stored ones plus TodoItem), for the test's
/// own writes.
fn with_context<R>(store: &Path, url: &str, f: impl AsyncFnOnce(SyncContext) -> R) -> R {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut local = LocalStore::new(store);
        local
            .define_table(
                TableDefinition::new("TodoItem")
                    .column("text", ColumnType::String)
                    .column("complete", ColumnType::Boolean),
            )
            .expect("define");
        local.define_stored_tables().expect("stored tables");
        let ctx = SyncContext::initialize(Client::new(url).expect("client"), local)
            .await
            .expect("init");
        f(ctx).await
    })
}

/// The base URL as the SDK records it (with its trailing slash).
fn slash(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// PATCHes a row on the server (no `If-Match`), as another client would.
fn server_update(url: &str, id: &str, text: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .patch(format!(
                "{}/tables/TodoItem/{id}",
                url.trim_end_matches('/')
            ))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({ "text": text }))
            .send()
            .await
            .expect("the server answers");
        assert!(resp.status().is_success(), "{}", resp.status());
    });
}

#[test]
fn commands_other_than_pull_refuse_a_missing_store_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo.db");
    for args in [
        vec!["status"],
        vec!["queue"],
        vec!["errors"],
        vec!["push"],
        vec!["purge"],
        vec!["resolve", "x", "--keep", "server"],
    ] {
        let (code, out, err) = tablesync_err(&args, &missing, "http://127.0.0.1:9/");
        assert_eq!((code, out.as_str()), (4, ""), "{args:?}: {err}");
        assert!(err.contains("no store at"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created the store");
    }
    // A usage error is bad input too (4, not clap's 2, which means "server not reached").
    let (code, _, err) = run_tablesync(&["status", "--no-such-flag"]);
    assert_eq!(code, 4, "{err}");
    let (code, help, _) = run_tablesync(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("2 server not reached") && help.contains("4 bad input"),
        "{help}"
    );
}

#[test]
fn an_unknown_table_is_refused_unless_columns_are_given_and_never_recorded() {
    let server = tablesync_serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    queue_two_inserts(&store);

    let (code, out, err) = tablesync_err(&["pull", "--table", "Nope"], &store, server.url());
    assert_eq!((code, out.as_str()), (4, ""), "{err}");
    assert!(
        err.contains("\"Nope\" is not recorded") && err.contains("--column"),
        "{err}"
    );
    let (_, out, _) = tablesync_err(&["status", "--json"], &store, server.url());
    let names: Vec<Value> = one_json(&out)["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("TodoItem")], "{out}");

    // The recorded table matches case-insensitively; with columns a new table is accepted.
    let (code, _, err) = tablesync_err(
        &["purge", "--table", "todoitem", "--force"],
        &store,
        server.url(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = tablesync_err(
        &["pull", "--table", "Nope", "--column", "title:string"],
        &store,
        server.url(),
    );
    // The server has no such table: the pull fails (1), but the table was declared on purpose.
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404"), "{err}");
}

#[test]
fn json_output_of_status_queue_push_pull_and_purge() {
    let server = tablesync_serve();
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    queue_two_inserts(&store);

    let (code, out) = tablesync(&["queue", "--json"], &store, url);
    assert_eq!(code, 0, "{out}");
    let queue = one_json(&out);
    let ops = queue["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 2, "{out}");
    assert_eq!(
        (
            ops[0]["operation"].clone(),
            ops[0]["state"].clone(),
            ops[0]["table"].clone(),
            ops[0]["id"].clone()
        ),
        (
            json!("insert"),
            json!("pending"),
            json!("TodoItem"),
            json!("cli-1")
        )
    );
    assert!(
        ops[0]["sequence"].is_i64() && ops[0]["version"].is_i64(),
        "{out}"
    );

    let (code, out) = tablesync(&["push", "--json"], &store, url);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        one_json(&out),
        json!({"status": "Complete", "pushed": 2, "pending": 0, "errors": [], "message": null})
    );

    let (code, out) = tablesync(&["pull", "--json", "--query-id", "q"], &store, url);
    assert_eq!(code, 0, "{out}");
    let pull = one_json(&out);
    assert_eq!(
        (
            pull["table"].clone(),
            pull["upserted"].clone(),
            pull["deleted"].clone()
        ),
        (json!("TodoItem"), json!(2), json!(0)),
        "{out}"
    );
    assert!(pull["pages"].as_u64().is_some_and(|p| p >= 1) && pull["skipped"] == json!(0));

    let (code, out) = tablesync(&["status", "--json"], &store, url);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        one_json(&out),
        json!({
            "store": store.display().to_string(),
            "server": slash(url),
            "tables": [{"name": "TodoItem", "rows": 2}],
            "pending": 0,
            "errors": 0,
        })
    );

    let (code, out) = tablesync(&["purge", "--json", "--query-id", "q"], &store, url);
    assert_eq!(code, 0, "{out}");
    assert_eq!(one_json(&out), json!({"table": "TodoItem", "purged": 2}));

    // An offline push still prints its object, with the status, and exits 2.
    queue_two_inserts(&dir.path().join("other.db"));
    let (code, out) = tablesync(
        &["push", "--json", "--request-timeout-ms", "2000"],
        &dir.path().join("other.db"),
        "http://127.0.0.1:9/",
    );
    assert_eq!(code, 2, "{out}");
    let push = one_json(&out);
    assert_eq!(
        (
            push["status"].clone(),
            push["pushed"].clone(),
            push["pending"].clone()
        ),
        (json!("CancelledByNetworkError"), json!(0), json!(2)),
        "{out}"
    );
}

#[test]
fn the_store_remembers_its_server_and_commands_default_to_it() {
    let server = tablesync_serve();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    let store_arg = store.to_str().expect("utf-8");
    let (code, _, err) = tablesync_err(&["pull"], &store, server.url());
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_tablesync(&["status", "--store", store_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("server:  {}\n", slash(server.url()))),
        "{out}"
    );
    // Without --url, push goes to the remembered server (not the default :8080).
    with_context(&store, server.url(), async |ctx| {
        ctx.table("TodoItem")
            .expect("table")
            .insert(json!({"id": "r1", "text": "remembered", "complete": false}))
            .await
            .expect("insert");
    });
    let (code, out, err) = run_tablesync(&["push", "--store", store_arg]);
    assert_eq!(
        (code, out.as_str()),
        (0, "pushed 1 operation(s)\n"),
        "{err}"
    );
    assert_eq!(
        server_row(server.url(), "TodoItem", "r1")["text"],
        json!("remembered")
    );
    // A failed sync elsewhere does not replace it.
    let (code, _, _) = tablesync_err(
        &["pull", "--request-timeout-ms", "2000"],
        &store,
        "http://127.0.0.1:9/",
    );
    assert_eq!(code, 2);
    let (_, out, _) = run_tablesync(&["status", "--store", store_arg, "--json"]);
    assert_eq!(one_json(&out)["server"], json!(slash(server.url())));
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    // More output than a pipe buffers (64 KiB on Linux), so the writer meets the closed pipe.
    let ops: usize = 4_000;
    with_context(&store, "http://127.0.0.1:9/", async |ctx| {
        let mut tx = ctx.transaction();
        for i in 0..ops {
            tx.insert(
                "TodoItem",
                json!({"id": format!("item-{i:05}"), "text": "x", "complete": false}),
            )
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(["queue", "--store"])
        .arg(&store)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        reader.read_line(&mut first).expect("first line");
        // Dropping the reader closes the pipe, as `head -1` does.
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.contains("TodoItem/item-00000"), "{first}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Queues three items, pushes them, lets "another client" change each on the server, then edits
/// each locally: the next push conflicts on all three.
fn three_conflicts(store: &Path, url: &str) {
    with_context(store, url, async |ctx| {
        let table = ctx.table("TodoItem").expect("table");
        for id in ["keep-server", "keep-client", "discard"] {
            table
                .insert(json!({"id": id, "text": "first", "complete": false}))
                .await
                .expect("insert");
        }
        ctx.push().await.expect("first push");
    });
    for id in ["keep-server", "keep-client", "discard"] {
        server_update(url, id, "theirs");
    }
    with_context(store, url, async |ctx| {
        let table = ctx.table("TodoItem").expect("table");
        for id in ["keep-server", "keep-client", "discard"] {
            table
                .update(json!({"id": id, "text": "mine", "complete": true}))
                .await
                .expect("update");
        }
    });
}

#[test]
fn conflicts_are_listed_resolved_and_then_push_and_pull_work_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let server = tablesync_serve_with(&db, &[]);
    let url = server.url();
    let store = dir.path().join("s.db");
    three_conflicts(&store, url);

    // The push names the conflicts, says what was done, exits 3.
    let (code, out, err) = tablesync_err(&["push"], &store, url);
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(
        out,
        "push Complete: 0 operation(s) pushed, 3 still queued\n"
    );
    assert!(
        err.contains("3 change(s) conflicted with the server:"),
        "{err}"
    );
    assert!(err.contains("  update TodoItem/keep-client (412)"), "{err}");
    assert!(err.contains("tablesync errors"), "{err}");
    assert!(!err.contains("push failed: Complete"), "{err}");
    // A pull pushes first, so it fails the same way until the conflicts are resolved.
    let (code, _, err) = tablesync_err(&["pull"], &store, url);
    assert_eq!(code, 3, "{err}");

    // `errors` shows both versions side by side, changed cells marked.
    let (code, out) = tablesync(&["errors"], &store, url);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("update TodoItem/keep-client (412): conflict\n"),
        "{out}"
    );
    let text_rows: Vec<&str> = out.lines().filter(|l| l.contains("\"mine\"")).collect();
    assert_eq!(text_rows.len(), 3, "{out}");
    assert!(
        text_rows
            .iter()
            .all(|l| l.starts_with("* text") && l.ends_with("\"theirs\"")),
        "{out}"
    );
    let (_, out) = tablesync(&["errors", "--json"], &store, url);
    let errors = one_json(&out)["errors"].as_array().expect("errors").clone();
    assert_eq!(errors.len(), 3, "{out}");
    assert_eq!(
        (
            errors[0]["operation"].clone(),
            errors[0]["status"].clone(),
            errors[0]["conflict"].clone(),
            errors[0]["local"]["text"].clone(),
            errors[0]["server"]["text"].clone()
        ),
        (
            json!("update"),
            json!(412),
            json!(true),
            json!("mine"),
            json!("theirs")
        )
    );

    // Bad references are bad input; each resolution says what it did.
    let (code, _, err) = tablesync_err(&["resolve", "nope", "--keep", "server"], &store, url);
    assert_eq!(code, 4, "{err}");
    let (code, out) = tablesync(&["resolve", "keep-server", "--keep", "server"], &store, url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("took the server's copy"), "{out}");
    let (code, out) = tablesync(
        &["resolve", "TodoItem/keep-client", "--keep", "client"],
        &store,
        url,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept the local change"), "{out}");
    let (code, out) = tablesync(&["resolve", "discard", "--keep", "discard"], &store, url);
    assert_eq!(code, 0, "{out}");

    // Push and pull work again, without a purge, and each side got what was chosen.
    let (code, out, err) = tablesync_err(&["push"], &store, url);
    assert_eq!(
        (code, out.as_str()),
        (0, "pushed 1 operation(s)\n"),
        "{err}"
    );
    let (code, out, err) = tablesync_err(&["pull", "--json"], &store, url);
    assert_eq!(code, 0, "{err}");
    assert_eq!(one_json(&out)["upserted"], json!(3), "{out}");
    assert_eq!(
        server_row(url, "TodoItem", "keep-client")["text"],
        json!("mine")
    );
    assert_eq!(
        server_row(url, "TodoItem", "keep-server")["text"],
        json!("theirs")
    );
    assert_eq!(
        server_row(url, "TodoItem", "discard")["text"],
        json!("theirs")
    );
    let (_, out) = tablesync(&["status", "--json"], &store, url);
    let status = one_json(&out);
    assert_eq!(
        (
            status["pending"].clone(),
            status["errors"].clone(),
            status["tables"][0]["rows"].clone()
        ),
        (json!(0), json!(0), json!(3)),
        "{out}"
    );
}

#[test]
fn progress_is_drawn_when_stderr_is_a_terminal_and_never_otherwise() {
    let server = tablesync_serve();
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = dir.path().join("w.db");
    queue_two_inserts(&writer);
    let (code, _, err) = tablesync_err(&["push"], &writer, url);
    assert_eq!(code, 0, "{err}");

    // Piped: no progress, no escape codes on stderr.
    let piped = dir.path().join("piped.db");
    let (code, out, err) = tablesync_err(&["pull", "--page-size", "1"], &piped, url);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("pulled TodoItem: "), "{out}");
    assert!(
        !err.contains("pulling") && !err.contains('\u{1b}'),
        "{err:?}"
    );

    // On a terminal (util-linux `script` gives the command a pty): the spinner shows.
    let tty = dir.path().join("tty.db");
    let command = format!(
        "{} pull --page-size 1 --store {} --url {}",
        env!("CARGO_BIN_EXE_tablesync"),
        tty.display(),
        url
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run `script` (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(screen.contains("pulling TodoItem"), "{screen:?}");
    assert!(screen.contains("pulled TodoItem: "), "{screen:?}");
}

#[test]
fn ctrl_c_asks_the_running_pull_to_stop_and_a_second_one_quits() {
    // A server that accepts connections and never answers: the pull waits in its first request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", silent.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args([
            "pull",
            "--request-timeout-ms",
            "120000",
            "--url",
            &url,
            "--store",
        ])
        .arg(dir.path().join("s.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Once the request is out, the Ctrl-C handler is installed (it is set before the pull).
    let (_conn, _) = silent.accept().expect("the pull connects");
    let interrupt = |pid: u32| {
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    interrupt(child.id());
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("a line");
    assert!(line.starts_with("stopping after the page"), "{line}");
    interrupt(child.id());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
}
