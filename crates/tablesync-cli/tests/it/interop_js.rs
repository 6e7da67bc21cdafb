//! Interoperability with the official JS client: `interop/js-client.js` runs the npm package
//! `azure-mobile-apps-client` 2.0.1 (unmodified, under Node.js, with its own SQLite store on
//! sql.js) against a real `tablesync serve` process, once on SQLite and once on PostgreSQL
//! (`TABLESYNC_TEST_PG_URL`, see `tablesync_server::testing`). The npm packages come from
//! `bash scripts/ensure-npm`; without them these tests fail (they never skip).
//!
//! The server runs with `[auth]` and a per-user table `PerUserItem` beside the anonymous
//! `TodoItem`, and the script gets two tokens (`--auth`): its `auth: …` checks log the official
//! client in (`currentUser.mobileServiceAuthenticationToken`, sent as X-ZUMO-AUTH) and use the
//! per-user table online and through the client's offline sync context.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{
    fresh_database, official, require_npm, run_node, tablesync_serve_env, tail, ServerProcess,
    StoreKind, OUTPUT_TAIL_BYTES,
};
use tablesync_server::auth::{mint_dev_token, AuthConfig, Clock, SystemClock};

/// Every check `js-client.js` makes, in order. The script prints `ok - <name>` for each.
const EXPECTED_CHECKS: [&str; 24] = [
    "insert with a client id returns the stored item",
    "insert without an id gets a generated UUID",
    "insert four more items",
    "insert of an existing id is 409",
    "read with where, orderByDescending, skip, take, select and includeTotalCount",
    "read with orderBy and take returns whole items in order and no count",
    "a full page has a next link the client can follow",
    "read with string functions (startswith, tolower)",
    "a malformed $filter is rejected",
    "lookup returns the item with the version from its ETag",
    "update with the current version",
    "update with a stale version is 412 with the server item",
    "del with a stale version is 412 with the server item",
    "del with the current version, then lookup is 404",
    "read with __includeDeleted sees the tombstone",
    "undelete (raw POST) restores the item",
    "offline: store and sync context initialise",
    "offline: local insert, update and delete",
    "offline: push sends the queued operations",
    "offline: push of a local delete",
    "offline: pull with a query id into a second store",
    "offline: incremental pull brings new items and tombstones",
    "offline: 412 during push, resolved by the push handler (client wins)",
    "offline: unhandled 412 is returned by push and resolved with cancelAndUpdate",
];

/// The checks `js-client.js --auth` adds after [`EXPECTED_CHECKS`].
const AUTH_CHECKS: [&str; 5] = [
    "auth: without a token the per-user table answers 401",
    "auth: online insert, read and update with X-ZUMO-AUTH",
    "auth: another user sees none of those rows and has their own id space",
    "auth: offline push and pull through the sync context see only the own rows",
    "auth: a push with a refused token fails with 401 and keeps the operation",
];

/// The checks `js-client.js --int-ids` adds after the others.
const INT_ID_CHECKS: [&str; 4] = [
    "int ids: insert gets a numeric id from the database",
    "int ids: lookup and queries by id",
    "int ids: update with the current version, a stale one is 412",
    "int ids: delete, then lookup is 404 and the tombstone is kept",
];

/// The HMAC secret of the interop server (test only).
const SECRET: &str = "interop-secret-0123456789abcdef0";

/// The interop server's tables: the anonymous `TodoItem` the script has always used, the
/// per-user `PerUserItem` and the integer-id `IntIdItem`.
const CONFIG: &str = r#"
[auth]
hmac_secret_env = "TABLESYNC_AUTH_SECRET"

[[tables]]
name = "TodoItem"
columns = { text = "string", complete = "boolean" }
access = "anonymous"

[[tables]]
name = "PerUserItem"
columns = { text = "string", complete = "boolean" }
owner_column = "userId"

[[tables]]
name = "IntIdItem"
id_type = "integer"
columns = { text = "string", complete = "boolean", run = "string" }
access = "anonymous"
"#;

/// `tablesync serve` with [`CONFIG`] on a fresh database of `kind`.
fn interop_server(kind: StoreKind) -> ServerProcess {
    let db = fresh_database(kind);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("interop.toml");
    std::fs::write(&config, CONFIG).expect("write the config");
    tablesync_serve_env(
        std::path::Path::new(db.url()),
        &["--config", config.to_str().expect("UTF-8 path")],
        &[("TABLESYNC_AUTH_SECRET", SECRET)],
    )
    .keep_alive(db)
    .keep_alive(dir)
}

/// `--auth <alice>,<bob>`: an hour's tokens for the two users of the `auth:` checks.
fn auth_args() -> String {
    let auth = AuthConfig::with_secret(SECRET);
    let now = SystemClock.now_unix_s();
    let mint = |user: &str| mint_dev_token(&auth, &|_| None, user, 3600, now).expect("token");
    format!("{},{}", mint("alice"), mint("bob"))
}

/// Runs `js-client.js` against `server` and asserts that every expected check passed.
fn assert_js_client_passes(server: &ServerProcess, extra_args: &[&str], expected: &[&str]) {
    let interop = require_npm();
    let mut args = vec![server.url()];
    args.extend_from_slice(extra_args);
    let out = run_node(&interop, "js-client.js", &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = || {
        format!(
            "js-client.js output:\n{stdout}\njs-client.js stderr:\n{}\nserver output (tail):\n{}",
            tail(&stderr, OUTPUT_TAIL_BYTES),
            tail(&server.output(), OUTPUT_TAIL_BYTES)
        )
    };

    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("not ok - "))
        .collect();
    assert!(
        failures.is_empty(),
        "failed checks: {failures:#?}\n{}",
        context()
    );
    let oks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok - "))
        .collect();
    assert_eq!(oks, expected, "the checks that passed\n{}", context());
    let summary = format!("{} passed, 0 failed", expected.len());
    assert_eq!(
        stdout.lines().last(),
        Some(summary.as_str()),
        "summary line\n{}",
        context()
    );
    assert!(
        out.status.success(),
        "exit status {:?}\n{}",
        out.status,
        context()
    );
}

fn official_js_client_against_tablesync_serve(kind: StoreKind) {
    let server = interop_server(kind);
    let expected: Vec<&str> = EXPECTED_CHECKS
        .iter()
        .chain(&AUTH_CHECKS)
        .chain(&INT_ID_CHECKS)
        .copied()
        .collect();
    let tokens = auth_args();
    assert_js_client_passes(&server, &["--auth", &tokens, "--int-ids"], &expected);
}

#[test]
fn official_js_client_against_tablesync_serve_sqlite() {
    official_js_client_against_tablesync_serve(StoreKind::Sqlite);
}

#[test]
fn official_js_client_against_tablesync_serve_postgres() {
    official_js_client_against_tablesync_serve(StoreKind::Postgres);
}

/// `interop/official-server.js` keeps the contract other tests rely on: it prints its listening
/// line, serves `TodoItem` on 127.0.0.1, and exits when its stdin closes.
#[test]
fn official_server_contract() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut server = official(&dir.path().join("official.db"));
    assert!(
        server.url().starts_with("http://127.0.0.1:"),
        "{}",
        server.url()
    );

    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream
        .write_all(
            b"GET /tables/TodoItem HTTP/1.1\r\nHost: 127.0.0.1\r\nZUMO-API-VERSION: 2.0.0\r\nConnection: close\r\n\r\n",
        )
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n"),
        "response: {response}"
    );
    assert!(response.ends_with("\r\n\r\n[]"), "response: {response}");

    server.close_stdin();
    assert!(
        // A bound against hanging, not a timing assertion: exiting takes milliseconds.
        server.wait_exit(Duration::from_secs(60)),
        "the official server did not exit after its stdin closed; output:\n{}",
        server.output()
    );
}
