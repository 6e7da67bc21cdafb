//! The servers under test as child processes, and the throwaway PostgreSQL database.
//!
//! A server is started, its `listening on http://127.0.0.1:<port>` line awaited, and it is
//! killed when its [`ServerProcess`] is dropped. Its output is drained for its whole life (a
//! full pipe would block the server mid-benchmark) and the newest part is kept for error
//! messages.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

/// How long a server may take to print its listening line (a bound against hanging, generous
/// because two shared cores may be busy).
const LISTEN_TIMEOUT_SECS: u64 = 60;

/// How much of a server's output is kept for error messages (the newest part), in bytes.
const OUTPUT_KEEP_BYTES: usize = 16 * 1024;

/// The prefix every server prints before its base URL.
const LISTENING_PREFIX: &str = "listening on ";

/// A running server process; dropping it stops the process.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    output: Arc<Mutex<String>>,
    // Keeps the server's temporary data directory alive as long as the server runs.
    _data_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Our `tablesync serve` (the release binary Cargo built for this bench) on a free port with
    /// `database` (a SQLite file path or a `postgres://` URL) and log level `log_level`.
    pub fn ours(
        database: &str,
        log_level: &str,
        data_dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tablesync"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .env("RUST_LOG", log_level);
        ServerProcess::spawn(command, "tablesync serve", data_dir)
    }

    /// The official Node server (`interop/official-server.js`: azure-mobile-apps 4.0.2 on its
    /// sqlite provider) on a free port with a fresh data file in a temporary directory.
    pub fn official(log_level: &str) -> anyhow::Result<ServerProcess> {
        let interop = interop_dir()?;
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let mut command = Command::new("node");
        command
            .arg(interop.join("official-server.js"))
            .current_dir(&interop)
            .env("DB_FILE", dir.path().join("official.sqlite"))
            .env("PORT", "0")
            .env("OFFICIAL_SERVER_LOG_LEVEL", log_level);
        ServerProcess::spawn(command, "the official Node server", Some(dir))
    }

    /// Starts `command` and waits for its listening line.
    fn spawn(
        mut command: Command,
        what: &str,
        data_dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<ServerProcess> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {what} ({command:?})"))?;
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
            _data_dir: data_dir,
        };
        server.url = server.wait_for_listening(&rx, what)?;
        Ok(server)
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The newest part of everything the server printed.
    pub fn output(&self) -> String {
        match self.output.lock() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn wait_for_listening(&mut self, rx: &Receiver<Event>, what: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(LISTEN_TIMEOUT_SECS);
        let mut open_streams = 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Line(line)) => {
                    if let Some(url) = listening_url(&line) {
                        return Ok(url);
                    }
                }
                Ok(Event::Closed) => {
                    open_streams -= 1;
                    if open_streams == 0 {
                        let status = self.child.wait();
                        bail!(
                            "{what} exited ({status:?}) before printing its listening line; output:\n{}",
                            self.output()
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => bail!(
                    "{what} printed no listening line within {LISTEN_TIMEOUT_SECS} s; output:\n{}",
                    self.output()
                ),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing stdin is how the official Node server is told to exit; kill covers ours.
        self.stdin = None;
        // The process may already be gone; nothing useful to do with an error here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<repo>/interop`, after checking that its npm packages are installed.
fn interop_dir() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let interop = manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .join("interop");
    let marker = interop.join("node_modules/azure-mobile-apps/package.json");
    if !marker.exists() {
        bail!(
            "the official server's npm packages are not installed ({} is missing): run \
             `bash scripts/ensure-npm` first, or leave the official server out with \
             `--servers sqlite,postgres`",
            marker.display()
        );
    }
    Ok(interop)
}

/// The base URL in a `listening on http://127.0.0.1:<port>` line (the line may carry a log
/// prefix).
fn listening_url(line: &str) -> Option<String> {
    let at = line.find(LISTENING_PREFIX)?;
    let rest = &line[at + LISTENING_PREFIX.len()..];
    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    let url = url.trim_end_matches('/').to_string();
    url.starts_with("http://").then_some(url)
}

/// What the output reader threads report.
enum Event {
    Line(String),
    Closed,
}

/// Reads `stream` line by line on a thread until it closes: every line goes into `output` (the
/// newest [`OUTPUT_KEEP_BYTES`]) and to `tx`.
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
                            let mut start = o.len() - OUTPUT_KEEP_BYTES;
                            while !o.is_char_boundary(start) {
                                start += 1;
                            }
                            o.drain(..start);
                        }
                    }
                    // Nobody listens once the server is up; the pipe is drained regardless.
                    let _ = tx.send(Event::Line(line));
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// A fresh PostgreSQL database created with `psql` for one run, dropped again by [`Self::drop_now`].
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates database `tablesync_bench_<pid>_<unix seconds>` through `admin_url` (any database
    /// the user may connect to, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
    pub fn create(admin_url: &str) -> anyhow::Result<PgDatabase> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = format!("tablesync_bench_{}_{secs}", std::process::id());
        let mut url = reqwest::Url::parse(admin_url)
            .with_context(|| format!("TABLESYNC_BENCH_PG_URL {admin_url:?} is not a URL"))?;
        url.set_path(&format!("/{name}"));
        psql(admin_url, &format!("CREATE DATABASE \"{name}\""))?;
        Ok(PgDatabase {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        })
    }

    /// The connection URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (call after the server using it has stopped).
    pub fn drop_now(self) -> anyhow::Result<()> {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        )
    }
}

/// Runs one SQL command with `psql`, failing with its stderr.
fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql `{sql}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
