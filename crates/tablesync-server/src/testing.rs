//! Test support for this and other crates: a fresh, empty database per test on either store,
//! removed when dropped ([`TestDatabase`]), and a server child process ([`ServerProcess`]).
//!
//! Every server-facing test runs once per [`StoreKind`]. SQLite databases are files in a new
//! temporary directory; PostgreSQL databases are `CREATE DATABASE tablesync_test_<random>` on
//! the server named by `TABLESYNC_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/ensure-postgres` provides),
//! dropped with `WITH (FORCE)` at the end. When PostgreSQL cannot be reached,
//! [`TestDatabase::create`] returns an error that says so; tests unwrap it and fail loudly,
//! they never skip.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tablesync_server::testing::{StoreKind, TestDatabase};
//! let db = TestDatabase::create(StoreKind::Postgres).await.expect("PostgreSQL for tests");
//! let config = tablesync_server::Config::default_todo().with_database(db.url());
//! # assert!(db.url().contains("tablesync_test_"));
//! # }
//! ```
//!
//! [`ServerProcess`] runs a server binary (our `tablesync serve`, whose path the caller knows, or
//! the official Node server) as a child process: it waits for the `listening on
//! http://127.0.0.1:<port>` line, keeps the newest part of the output for failure messages and
//! kills the process when dropped. Std only, so the library's dependencies do not grow for it.
//!
//! Not run as a doctest: it needs the built `tablesync` binary (the cli crate's tests use it
//! with `env!("CARGO_BIN_EXE_tablesync")`).
//!
//! ```no_run
//! use tablesync_server::testing::{serve_command, ProcessLimits, ServerProcess};
//! let command = serve_command("target/debug/tablesync", "/tmp/test.db");
//! let server = ServerProcess::spawn(command, "tablesync serve", &ProcessLimits::default())
//!     .unwrap_or_else(|e| panic!("{e}"));
//! println!("{}", server.url()); // http://127.0.0.1:<port>
//! ```
//!
//! [`proxy::FaultProxy`] sits on loopback between a client and a server and, under a seed,
//! resets connections, cuts responses midway, delays them, and drops the response of a request
//! the server applied (see [`proxy`]).
//!
//! Not part of the server's stable API.

pub mod proxy;

pub use proxy::{Fault, FaultPlan, FaultProxy, FaultStats};

use std::any::Any;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sqlx::Connection;

/// The environment variable naming the PostgreSQL server tests create their databases on (a
/// URL whose user may `CREATE DATABASE`).
pub const PG_URL_ENV: &str = "TABLESYNC_TEST_PG_URL";

/// Used when [`PG_URL_ENV`] is unset.
pub const PG_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl StoreKind {
    /// Both stores, SQLite first.
    pub const ALL: [StoreKind; 2] = [StoreKind::Sqlite, StoreKind::Postgres];

    /// `"sqlite"` or `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL server URL tests use: [`PG_URL_ENV`] or [`PG_URL_DEFAULT`].
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| PG_URL_DEFAULT.to_owned())
}

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestDatabaseError(String);

/// A fresh, empty database for one test; removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    kind: StoreKind,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Make a new database of this kind.
    pub async fn create(kind: StoreKind) -> Result<TestDatabase, TestDatabaseError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match kind {
            StoreKind::Sqlite => {
                let dir = std::env::temp_dir().join(format!("tablesync-test-{unique}"));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    TestDatabaseError(format!("cannot create {}: {e}", dir.display()))
                })?;
                Ok(TestDatabase {
                    kind,
                    url: dir.join("test.db").display().to_string(),
                    cleanup: Cleanup::Dir(dir),
                })
            }
            StoreKind::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("tablesync_test_{unique}");
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| {
                    TestDatabaseError(format!(
                        "PostgreSQL is required by this test but cannot be reached at {admin_url} \
                         ({e}). Start it (bash scripts/ensure-postgres prints a URL) and set \
                         {PG_URL_ENV} when it is not {PG_URL_DEFAULT}."
                    ))
                })?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| TestDatabaseError(format!("CREATE DATABASE {name}: {e}")))?;
                let _ = conn.close().await;
                Ok(TestDatabase {
                    kind,
                    url: url_with_database(&admin_url, &name),
                    cleanup: Cleanup::Postgres { admin_url, name },
                })
            }
        }
    }

    /// [`create`](Self::create) for code without a runtime (or inside one: it runs on its own
    /// thread).
    pub fn create_blocking(kind: StoreKind) -> Result<TestDatabase, TestDatabaseError> {
        on_own_runtime(move || async move { TestDatabase::create(kind).await })
            .unwrap_or_else(|e| Err(TestDatabaseError(e)))
    }

    /// Which store this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The `database` setting (`--database` value): a file path or a `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                // Best effort: a leftover temporary directory is harmless.
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // FORCE ends the connections a still-running server holds.
                let dropped = on_own_runtime(move || async move {
                    let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                });
                match dropped {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("warning: could not drop test database: {e}"),
                    Err(e) => eprintln!("warning: could not drop test database: {e}"),
                }
            }
        }
    }
}

/// The prefix every server prints on its ready line, followed by its base URL.
const LISTENING_PREFIX: &str = "listening on ";

/// How often [`ServerProcess::wait_exit`] looks whether the process has exited.
const EXIT_POLL_MS: u64 = 50;

/// Bounds for a [`ServerProcess`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessLimits {
    /// How long the process may take to print its listening line: a bound against hanging for
    /// ever, not a timing assertion (generous by default: two shared cores, first start).
    pub listen_timeout_secs: u64,
    /// How much of the process's output is kept (the newest part); a busy server logs a line
    /// per request and long tests must not grow memory without bound. Up to twice this is
    /// held before it is cut back.
    pub output_keep_bytes: usize,
    /// How many bytes of the output (its tail) an error message shows.
    pub error_output_tail_bytes: usize,
}

impl Default for ProcessLimits {
    /// 120 s to start, 1 MiB of output kept, 8000 bytes of it in error messages.
    fn default() -> Self {
        ProcessLimits {
            listen_timeout_secs: 120,
            output_keep_bytes: 1 << 20,
            error_output_tail_bytes: 8_000,
        }
    }
}

/// Why a [`ServerProcess`] could not be started; the message carries the tail of its output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServerProcessError(String);

/// `<bin> serve --listen 127.0.0.1:0 --database <database>`: our server on a free port. Add
/// arguments (`--config <file>`) and environment (`RUST_LOG`) before spawning it.
pub fn serve_command(bin: impl AsRef<OsStr>, database: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database")
        .arg(database);
    command
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

/// A running server process. Dropping it closes its stdin (how the official Node server is told
/// to exit), kills it, waits for it, and only then drops what [`keep_alive`](Self::keep_alive)
/// was given (its database, its data directory).
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    port: u16,
    output: Arc<Mutex<String>>,
    /// Dropped after `Drop::drop` killed the process (fields drop after it).
    guards: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.child.id())
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ServerProcess {
    /// Starts `command` (stdin, stdout and stderr piped) and waits until it prints `listening on
    /// <url>` on stdout or stderr. Fails, with the tail of its output, when it cannot be started,
    /// exits first or does not get there within [`ProcessLimits::listen_timeout_secs`]. `what`
    /// names the server in messages.
    pub fn spawn(
        mut command: Command,
        what: &str,
        limits: &ProcessLimits,
    ) -> Result<ServerProcess, ServerProcessError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            ServerProcessError(format!("could not start {what} ({command:?}): {e}"))
        })?;
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            pump(
                out,
                tx.clone(),
                Arc::clone(&output),
                limits.output_keep_bytes,
            );
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tx, Arc::clone(&output), limits.output_keep_bytes);
        }
        let mut server = ServerProcess {
            child,
            stdin,
            url: String::new(),
            port: 0,
            output,
            guards: Vec::new(),
        };
        // On failure `server` is dropped here, which kills the process.
        (server.url, server.port) = server.wait_for_listening(&rx, what, limits)?;
        Ok(server)
    }

    /// Keeps `guard` (a temporary directory, a [`TestDatabase`], …) alive as long as the
    /// process runs; it is dropped after the process has been killed.
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> ServerProcess {
        self.guards.push(Box::new(guard));
        self
    }

    /// Base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the process printed so far (stdout and stderr, interleaved by line), or its
    /// newest [`ProcessLimits::output_keep_bytes`] and more.
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
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(EXIT_POLL_MS))
                }
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// The base URL and port from the listening line.
    fn wait_for_listening(
        &mut self,
        rx: &Receiver<Event>,
        what: &str,
        limits: &ProcessLimits,
    ) -> Result<(String, u16), ServerProcessError> {
        let timeout_secs = limits.listen_timeout_secs;
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        let mut open_streams = 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Line(line)) => {
                    if let Some(found) = listening_url(&line) {
                        return Ok(found);
                    }
                }
                Ok(Event::Closed) => {
                    open_streams -= 1;
                    if open_streams == 0 {
                        let status = self.child.wait();
                        return Err(ServerProcessError(format!(
                            "{what} exited ({status:?}) before printing its listening line; output:\n{}",
                            tail(&self.output(), limits.error_output_tail_bytes)
                        )));
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(ServerProcessError(format!(
                        "{what} printed no `listening on http://...` line within {timeout_secs} s; output:\n{}",
                        tail(&self.output(), limits.error_output_tail_bytes)
                    )));
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

/// The base URL and port in a `listening on http://127.0.0.1:<port>` line (the line may carry a
/// log prefix, e.g. from tracing).
fn listening_url(line: &str) -> Option<(String, u16)> {
    let at = line.find(LISTENING_PREFIX)?;
    let rest = &line[at + LISTENING_PREFIX.len()..];
    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    let url = url.trim_end_matches('/').to_owned();
    let port = url.rsplit(':').next()?.parse::<u16>().ok()?;
    url.starts_with("http://").then_some((url, port))
}

/// Reads `stream` line by line on a thread until it closes: every line goes into `output` (cut
/// back to the newest `keep_bytes` when it reaches twice that) and to `tx`.
fn pump(
    stream: impl Read + Send + 'static,
    tx: Sender<Event>,
    output: Arc<Mutex<String>>,
    keep_bytes: usize,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if let Ok(mut o) = output.lock() {
                        o.push_str(&line);
                        o.push('\n');
                        if o.len() > 2 * keep_bytes {
                            let keep = tail(&o, keep_bytes).to_owned();
                            *o = keep;
                        }
                    }
                    // Nobody listens once the server is up; keep draining the pipe anyway so
                    // the server never blocks on a full pipe.
                    let _ = tx.send(Event::Line(line));
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// Run an async job on a new current-thread runtime on a new thread (usable from sync code and
/// from inside another runtime, where blocking on a nested runtime would panic).
fn on_own_runtime<T, F, Fut>(job: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(runtime.block_on(job()))
    })
    .join()
    .unwrap_or_else(|_| Err("the database helper thread panicked".to_owned()))
}

/// `url` with its database (path) replaced by `name`; the query string is kept.
fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_url_parses_plain_and_prefixed_lines() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:4000"),
            Some(("http://127.0.0.1:4000".to_owned(), 4000))
        );
        assert_eq!(
            listening_url("listening on http://127.0.0.1:4000/"),
            Some(("http://127.0.0.1:4000".to_owned(), 4000))
        );
        assert_eq!(
            listening_url(
                "2026-11-28T10:00:00Z  INFO tablesync: listening on http://127.0.0.1:55 (db x)"
            ),
            Some(("http://127.0.0.1:55".to_owned(), 55))
        );
        assert_eq!(listening_url("listening on nothing"), None);
        assert_eq!(listening_url("listening on http://127.0.0.1"), None);
        assert_eq!(listening_url("starting"), None);
    }

    #[test]
    fn tails_cut_at_character_boundaries() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("abc", 10), "abc");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn serve_command_listens_on_a_free_local_port() {
        let command = serve_command("/bin/tablesync", "db.sqlite");
        assert_eq!(command.get_program(), "/bin/tablesync");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                "db.sqlite"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_process_that_exits_early_is_reported_with_its_output() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo starting; echo broken >&2; exit 3"]);
        let e = ServerProcess::spawn(command, "the test server", &ProcessLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the test server exited (")
                && e.contains(") before printing its listening line; output:\n"),
            "{e}"
        );
        assert!(e.contains("starting\n") && e.contains("broken\n"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listening_process_is_killed_on_drop_and_its_guards_dropped_after() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'log: listening on http://127.0.0.1:4321'; echo ready >&2; exec sleep 600",
        ]);
        let dir = std::env::temp_dir().join(format!(
            "tablesync-process-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        struct RemoveOnDrop(PathBuf);
        impl Drop for RemoveOnDrop {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let mut server = ServerProcess::spawn(command, "sleeper", &ProcessLimits::default())
            .unwrap()
            .keep_alive(RemoveOnDrop(dir.clone()));
        assert_eq!(
            (server.url(), server.port()),
            ("http://127.0.0.1:4321", 4321)
        );
        assert!(!server.wait_exit(Duration::from_millis(0)));
        let pid = server.pid();
        drop(server);
        assert!(!dir.exists(), "the guard was dropped with the process");
        // The process is gone (killed and reaped): no such pid in /proc.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            url_with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://h:1", "t3"),
            "postgres://h:1/t3"
        );
    }
}
