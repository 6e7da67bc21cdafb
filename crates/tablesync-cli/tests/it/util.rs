//! Process helpers shared by the integration tests: start a server process (our `tablesync serve`
//! or the official Node server), wait for its `listening on http://127.0.0.1:<port>` line, keep
//! its output for failure messages, and kill it when the handle is dropped.

// Shared by several test modules (interop, todo app end-to-end, multi-process torture tests);
// not every helper is used by every module at every point in time.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use tablesync_server::testing::{StoreKind, TestDatabase};

/// How long a server may take to print its listening line. Generous on purpose: CI machines
/// have two shared cores and the first start may include SQLite file creation. This is a bound
/// against hanging forever, not a timing assertion.
pub const LISTEN_TIMEOUT_SECS: u64 = 120;

/// How many bytes of a process's captured output a failure message shows (its tail).
pub const OUTPUT_TAIL_BYTES: usize = 8_000;

/// How much of a process's output is kept (the newest part); servers log a line per request and
/// long tests must not grow memory without bound.
pub const OUTPUT_KEEP_BYTES: usize = 1 << 20;

/// The prefix every server prints, followed by its base URL.
const LISTENING_PREFIX: &str = "listening on ";

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The interop harness directory (`<repo>/interop`), after checking that its npm packages are
/// installed. Panics (fails the test, never skips it) with the command to run when they are not.
pub fn require_npm() -> PathBuf {
    let interop = repo_root().join("interop");
    let needed = [
        "node_modules/.package-lock.json",
        "node_modules/azure-mobile-apps-client/package.json",
        "node_modules/xmlhttprequest/package.json",
        "node_modules/sql.js/package.json",
        "node_modules/azure-mobile-apps/package.json",
        "node_modules/sqlite3/build/Release/node_sqlite3.node",
    ];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| !interop.join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "the interop npm packages are not installed (missing {missing:?} under {}); \
         run `bash scripts/ensure-npm` from the repository root first",
        interop.display()
    );
    interop
}

/// Runs `node <script> <args...>` in the interop directory and returns its output.
pub fn run_node(interop: &Path, script: &str, args: &[&str]) -> Output {
    match Command::new("node")
        .arg(interop.join(script))
        .args(args)
        .current_dir(interop)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("could not run `node {script}` (is Node.js 20 installed?): {e}"),
    }
}

/// The last `max_bytes` of `text`, cut at a character boundary.
pub fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What the output reader threads report.
enum Event {
    Line(String),
    Closed,
}

/// A running server process. Dropping it kills the process (and closes its stdin, which is how
/// the official Node server is told to exit).
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    output: Arc<Mutex<String>>,
    // Keeps a temporary data directory alive as long as the server runs.
    _data_dir: Option<tempfile::TempDir>,
    // Keeps (and, when dropped after the process is killed, removes) the server's own fresh
    // database.
    _database: Option<TestDatabase>,
}

/// A fresh database of this kind (a temporary SQLite file, or a new PostgreSQL database on
/// `TABLESYNC_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres). Panics (fails
/// the test, never skips it) when PostgreSQL cannot be reached.
pub fn fresh_database(kind: StoreKind) -> TestDatabase {
    match TestDatabase::create_blocking(kind) {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

impl ServerProcess {
    /// Starts `command` and waits until it prints `listening on <url>` on stdout or stderr.
    /// Panics with the process's output if it exits first or does not get there within
    /// [`LISTEN_TIMEOUT_SECS`].
    pub fn spawn(mut command: Command, what: &str) -> ServerProcess {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => panic!("could not start {what} ({command:?}): {e}"),
        };
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(out, tx.clone(), Arc::clone(&output));
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tx, Arc::clone(&output));
        }
        let mut server = ServerProcess {
            child,
            stdin,
            url: String::new(),
            output,
            _data_dir: None,
            _database: None,
        };
        server.url = server.wait_for_listening(&rx, what);
        server
    }

    /// Starts our `tablesync serve` on a free port with a database in a fresh temporary
    /// directory.
    pub fn tablesync_serve() -> ServerProcess {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("could not create a temporary directory: {e}"),
        };
        let db = dir.path().join("db");
        let mut server = ServerProcess::tablesync_serve_with(&db, &[]);
        server._data_dir = Some(dir);
        server
    }

    /// Starts our `tablesync serve` on a free port on a fresh database of this kind (dropped
    /// with the process).
    pub fn tablesync_serve_on(kind: StoreKind) -> ServerProcess {
        let db = fresh_database(kind);
        let mut server = ServerProcess::tablesync_serve_with(Path::new(db.url()), &[]);
        server._database = Some(db);
        server
    }

    /// Starts our `tablesync serve` on a free port with the given database file and extra
    /// arguments (for example `--config <file>`).
    pub fn tablesync_serve_with(database: &Path, extra_args: &[&str]) -> ServerProcess {
        ServerProcess::tablesync_serve_env(database, extra_args, &[])
    }

    /// [`tablesync_serve_with`](Self::tablesync_serve_with) with extra environment variables
    /// (for example `RUST_LOG=warn` to keep a busy server's per-request log lines out).
    /// `database` is a file path or a `postgres://` URL.
    pub fn tablesync_serve_env(
        database: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tablesync"));
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(database)
            .args(extra_args)
            .envs(envs.iter().copied());
        ServerProcess::spawn(command, "tablesync serve")
    }

    /// Starts the official Node server (`interop/official-server.js`: azure-mobile-apps 4.0.2,
    /// tables `TodoItem` and `PlainItem`) on a free port with the given SQLite data file.
    pub fn official(db_file: &Path) -> ServerProcess {
        let interop = require_npm();
        let mut command = Command::new("node");
        command
            .arg(interop.join("official-server.js"))
            .current_dir(&interop)
            .env("DB_FILE", db_file)
            .env("PORT", "0");
        ServerProcess::spawn(command, "the official Node server")
    }

    /// Base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in server URL {}", self.url))
    }

    /// Everything the process printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        match self.output.lock() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The process id (for tests that signal the server themselves).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the server's stdin (the official Node server exits on that).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `max_wait` for the process to exit on its own; returns whether it did.
    pub fn wait_exit(&mut self, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) | Err(_) => return false,
            }
        }
    }

    fn wait_for_listening(&mut self, rx: &Receiver<Event>, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(LISTEN_TIMEOUT_SECS);
        let mut open_streams = 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Line(line)) => {
                    if let Some(url) = listening_url(&line) {
                        return url;
                    }
                }
                Ok(Event::Closed) => {
                    open_streams -= 1;
                    if open_streams == 0 {
                        let status = self.child.wait();
                        panic!(
                            "{what} exited ({status:?}) before printing its listening line; output:\n{}",
                            tail(&self.output(), OUTPUT_TAIL_BYTES)
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{what} printed no `listening on http://...` line within {LISTEN_TIMEOUT_SECS} s; output:\n{}",
                        tail(&self.output(), OUTPUT_TAIL_BYTES)
                    );
                }
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stdin = None;
        // The process may already be gone; nothing useful to do with an error here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base URL in a `listening on http://127.0.0.1:<port>` line (the line may carry a log
/// prefix, e.g. from tracing).
fn listening_url(line: &str) -> Option<String> {
    let at = line.find(LISTENING_PREFIX)?;
    let rest = &line[at + LISTENING_PREFIX.len()..];
    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    let url = url.trim_end_matches('/').to_string();
    (url.starts_with("http://") && url.rsplit(':').next()?.parse::<u16>().is_ok()).then_some(url)
}

/// Reads `stream` line by line on a thread: every line goes into `output` and to `tx`.
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
                        if o.len() > 2 * OUTPUT_KEEP_BYTES {
                            let keep = tail(&o, OUTPUT_KEEP_BYTES).to_string();
                            *o = keep;
                        }
                    }
                    // The receiver is gone once the server is up; keep draining the pipe anyway
                    // so the server never blocks on a full pipe.
                    let _ = tx.send(Event::Line(line));
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

#[test]
fn listening_url_parses_plain_and_prefixed_lines() {
    assert_eq!(
        listening_url("listening on http://127.0.0.1:4000"),
        Some("http://127.0.0.1:4000".to_string())
    );
    assert_eq!(
        listening_url(
            "2026-11-28T10:00:00Z  INFO tablesync: listening on http://127.0.0.1:55 (db x)"
        ),
        Some("http://127.0.0.1:55".to_string())
    );
    assert_eq!(listening_url("listening on nothing"), None);
    assert_eq!(listening_url("starting"), None);
}
