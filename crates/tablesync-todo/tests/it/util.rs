//! Helpers for the end-to-end tests: a real `tablesync serve` process (adapted from
//! `crates/tablesync-cli/tests/it/util.rs`), the app binary run once per step, and plain HTTP
//! calls to the server as "another client".

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
pub use tablesync_server::testing::StoreKind;
use tablesync_server::testing::TestDatabase;

/// How long the server may take to print its listening line. A bound against hanging forever on
/// two shared cores, not a timing assertion.
pub const LISTEN_TIMEOUT_SECS: u64 = 120;

/// How many bytes of a process's output a failure message shows (its tail).
pub const OUTPUT_TAIL_BYTES: usize = 8_000;

/// The prefix `tablesync serve` prints, followed by its base URL.
const LISTENING_PREFIX: &str = "listening on ";

/// The last `max_bytes` of `text`, cut at a character boundary.
pub fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

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

enum Event {
    Line(String),
    Closed,
}

/// A running `tablesync serve`; killed when dropped, then its database is removed.
pub struct Server {
    child: Child,
    url: String,
    output: Arc<Mutex<String>>,
    /// Dropped after `Drop::drop` killed the process (fields drop after it).
    _db: TestDatabase,
}

impl Server {
    /// Starts `tablesync serve --listen 127.0.0.1:0 --database <db>` on a fresh database of
    /// `kind` (a temporary SQLite file, or `CREATE DATABASE tablesync_test_<random>` on
    /// `TABLESYNC_TEST_PG_URL`) and waits for its `listening on http://127.0.0.1:<port>` line.
    /// Panics, i.e. fails the test, when PostgreSQL cannot be reached.
    pub fn start(kind: StoreKind) -> Server {
        let db = TestDatabase::create_blocking(kind)
            .unwrap_or_else(|e| panic!("cannot create a {} test database: {e}", kind.name()));
        let mut cmd = Command::new(tablesync_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(db.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(out, tx.clone(), Arc::clone(&output));
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tx, Arc::clone(&output));
        }
        let mut server = Server {
            child,
            url: String::new(),
            output,
            _db: db,
        };
        server.url = server.wait_for_listening(&rx);
        server
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn output(&self) -> String {
        match self.output.lock() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn wait_for_listening(&mut self, rx: &Receiver<Event>) -> String {
        let deadline = Instant::now() + Duration::from_secs(LISTEN_TIMEOUT_SECS);
        let mut open = 2;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Event::Line(line)) => {
                    if let Some(url) = listening_url(&line) {
                        return url;
                    }
                }
                Ok(Event::Closed) => {
                    open -= 1;
                    if open == 0 {
                        let status = self.child.wait();
                        panic!(
                            "tablesync serve exited ({status:?}) before listening; output:\n{}",
                            tail(&self.output(), OUTPUT_TAIL_BYTES)
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "tablesync serve printed no listening line within {LISTEN_TIMEOUT_SECS} s; output:\n{}",
                    tail(&self.output(), OUTPUT_TAIL_BYTES)
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The process may already be gone; nothing to do about an error here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base URL in a `listening on http://127.0.0.1:<port>` line (possibly log-prefixed).
fn listening_url(line: &str) -> Option<String> {
    let at = line.find(LISTENING_PREFIX)?;
    let url: String = line[at + LISTENING_PREFIX.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let url = url.trim_end_matches('/').to_string();
    (url.starts_with("http://") && url.rsplit(':').next()?.parse::<u16>().is_ok()).then_some(url)
}

/// Reads `stream` line by line on a thread, keeping everything in `output`.
fn pump(stream: impl Read + Send + 'static, tx: Sender<Event>, output: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if let Ok(mut o) = output.lock() {
                        o.push_str(&line);
                        o.push('\n');
                    }
                    // Keep draining after the listening line so the server never blocks.
                    let _ = tx.send(Event::Line(line));
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
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

/// Changes an item on the server directly (unconditionally), as another client would.
pub fn server_update(url: &str, id: &str, patch: Value) -> Value {
    block_on(send(
        reqwest::Client::new()
            .patch(format!("{url}/tables/TodoItem/{id}"))
            .json(&patch),
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

#[test]
fn listening_url_parses_plain_and_prefixed_lines() {
    assert_eq!(
        listening_url("listening on http://127.0.0.1:4000"),
        Some("http://127.0.0.1:4000".to_string())
    );
    assert_eq!(
        listening_url("2026-11-28T10:00:00Z  INFO tablesync: listening on http://127.0.0.1:55 x"),
        Some("http://127.0.0.1:55".to_string())
    );
    assert_eq!(listening_url("listening on nothing"), None);
}
