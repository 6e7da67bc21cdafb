//! Helpers for the end-to-end tests: a real `tablesync serve` process
//! (`tablesync_server::testing::ServerProcess`, shared with the cli crate's tests), the app
//! binary run once per step, and plain HTTP calls to the server as "another client".

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};
pub use tablesync_server::testing::StoreKind;
use tablesync_server::testing::{serve_command, tail, ProcessLimits, ServerProcess, TestDatabase};

/// How many bytes of a process's output a failure message shows (its tail).
pub const OUTPUT_TAIL_BYTES: usize = 8_000;

/// The `tablesync` server binary: next to this test executable's profile directory
/// (`target/<profile>/tablesync`), built with `$CARGO build -p tablesync-cli --bin tablesync`
/// into the same target directory when it is not there yet. Built at most once per test run.
pub fn tablesync_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/it-<hash> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join(format!("tablesync{}", std::env::consts::EXE_SUFFIX));
        if bin.exists() {
            return bin;
        }
        let target_dir = profile_dir
            .parent()
            .expect("target/<profile> has a parent")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "tablesync-cli", "--bin", "tablesync"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run {cmd:?} to build the server: {e}"));
        assert!(
            out.status.success() && bin.exists(),
            "building the server with {cmd:?} failed ({}); expected {}:\n{}",
            out.status,
            bin.display(),
            tail(&String::from_utf8_lossy(&out.stderr), OUTPUT_TAIL_BYTES)
        );
        bin
    })
    .clone()
}

/// Starts `tablesync serve --listen 127.0.0.1:0 --database <db>` on a fresh database of `kind`
/// (a temporary SQLite file, or `CREATE DATABASE tablesync_test_<random>` on
/// `TABLESYNC_TEST_PG_URL`; removed after the process is killed) and waits for its `listening
/// on http://127.0.0.1:<port>` line (120 s at most: a bound against hanging forever on two
/// shared cores, not a timing assertion). Panics, i.e. fails the test, when PostgreSQL cannot be
/// reached or the server does not start.
pub fn start_server(kind: StoreKind) -> ServerProcess {
    let db = TestDatabase::create_blocking(kind)
        .unwrap_or_else(|e| panic!("cannot create a {} test database: {e}", kind.name()));
    let limits = ProcessLimits {
        error_output_tail_bytes: OUTPUT_TAIL_BYTES,
        ..ProcessLimits::default()
    };
    ServerProcess::spawn(
        serve_command(tablesync_bin(), db.url()),
        "tablesync serve",
        &limits,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .keep_alive(db)
}

/// A URL nothing listens on: a port that was free a moment ago (bound, then released).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = l.local_addr().expect("its address").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// What one run of the app printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `tablesync-todo --data-dir <data_dir> --url <url> <args...>` to completion.
pub fn todo(data_dir: &Path, url: &str, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_tablesync-todo"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("TABLESYNC_URL")
        .env_remove("TABLESYNC_TODO_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("the app binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs an async HTTP call on a throw-away runtime (the tests themselves are synchronous).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

async fn send(req: reqwest::RequestBuilder) -> Value {
    let resp = req
        .header("ZUMO-API-VERSION", "2.0.0")
        .send()
        .await
        .expect("the server answers");
    let status = resp.status();
    let body = resp.text().await.expect("a response body");
    assert!(status.is_success(), "server answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Every `TodoItem` on the server (soft-deleted ones excluded), ordered by text.
pub fn server_items(url: &str) -> Vec<Value> {
    let v = block_on(send(
        reqwest::Client::new().get(format!("{url}/tables/TodoItem?$orderby=text")),
    ));
    match v {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// `(text, complete)` of every server item, ordered by text.
pub fn server_summary(url: &str) -> Vec<(String, bool)> {
    server_items(url)
        .iter()
        .map(|i| {
            (
                i["text"].as_str().unwrap_or_default().to_string(),
                i["complete"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// Inserts an item on the server directly, as another client would; returns the server's copy.
pub fn server_insert(url: &str, text: &str) -> Value {
    block_on(send(
        reqwest::Client::new()
            .post(format!("{url}/tables/TodoItem"))
            .json(&json!({ "text": text, "complete": false })),
    ))
}

/// Inserts this body on the server directly, as another client (curl) would.
pub fn server_insert_raw(url: &str, body: Value) -> Value {
    block_on(send(
        reqwest::Client::new()
            .post(format!("{url}/tables/TodoItem"))
            .json(&body),
    ))
}

/// Changes an item on the server directly (unconditionally), as another client would.
pub fn server_update(url: &str, id: &str, patch: Value) -> Value {
    block_on(send(
        reqwest::Client::new()
            .patch(format!("{url}/tables/TodoItem/{id}"))
            .json(&patch),
    ))
}

/// Deletes an item on the server directly (unconditionally), as another client would.
pub fn server_delete(url: &str, id: &str) -> Value {
    block_on(send(
        reqwest::Client::new().delete(format!("{url}/tables/TodoItem/{id}")),
    ))
}

/// The id `list` printed for the item with this text (`N. [ ] text (id: ...)`).
pub fn listed_id(list_stdout: &str, text: &str) -> String {
    list_stdout
        .lines()
        .find(|l| l.contains(&format!("] {text} (id: ")))
        .and_then(|l| l.rsplit("(id: ").next())
        .map(|s| s.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("no item {text:?} in the list:\n{list_stdout}"))
}

/// The number `list` printed for the item with this text.
pub fn listed_number(list_stdout: &str, text: &str) -> String {
    list_stdout
        .lines()
        .find(|l| l.contains(&format!("] {text} (id: ")))
        .and_then(|l| l.split('.').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no item {text:?} in the list:\n{list_stdout}"))
}
