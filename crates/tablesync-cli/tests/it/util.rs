//! Process helpers shared by the integration tests: start a server process (our `tablesync serve`
//! or the official Node server) as a [`ServerProcess`] (`tablesync_server::testing`: waits for
//! its `listening on http://127.0.0.1:<port>` line, keeps its output for failure messages, kills
//! it when dropped), check the interop npm packages, run Node scripts.

// Shared by several test modules (interop, todo app end-to-end, multi-process torture tests);
// not every helper is used by every module at every point in time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tablesync_server::testing::{serve_command, ProcessLimits};
pub use tablesync_server::testing::{tail, ServerProcess, StoreKind, TestDatabase};

/// How many bytes of a process's captured output a failure message shows (its tail).
pub const OUTPUT_TAIL_BYTES: usize = 8_000;

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

/// A fresh database of this kind (a temporary SQLite file, or a new PostgreSQL database on
/// `TABLESYNC_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/postgres). Panics (fails
/// the test, never skips it) when PostgreSQL cannot be reached.
pub fn fresh_database(kind: StoreKind) -> TestDatabase {
    match TestDatabase::create_blocking(kind) {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

/// Starts `command` as a server and waits for its listening line (120 s at most: CI machines
/// have two shared cores and the first start may include SQLite file creation; a bound against
/// hanging forever, not a timing assertion). Panics with the process's output if it exits first
/// or does not get there.
pub fn spawn(command: Command, what: &str) -> ServerProcess {
    let limits = ProcessLimits {
        error_output_tail_bytes: OUTPUT_TAIL_BYTES,
        ..ProcessLimits::default()
    };
    ServerProcess::spawn(command, what, &limits).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts our `tablesync serve` on a free port with a database in a fresh temporary directory.
pub fn tablesync_serve() -> ServerProcess {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("could not create a temporary directory: {e}"),
    };
    let db = dir.path().join("db");
    tablesync_serve_with(&db, &[]).keep_alive(dir)
}

/// Starts our `tablesync serve` on a free port on a fresh database of this kind (dropped after
/// the process).
pub fn tablesync_serve_on(kind: StoreKind) -> ServerProcess {
    let db = fresh_database(kind);
    tablesync_serve_with(Path::new(db.url()), &[]).keep_alive(db)
}

/// Starts our `tablesync serve` on a free port with the given database file and extra
/// arguments (for example `--config <file>`).
pub fn tablesync_serve_with(database: &Path, extra_args: &[&str]) -> ServerProcess {
    tablesync_serve_env(database, extra_args, &[])
}

/// [`tablesync_serve_with`] with extra environment variables (for example `RUST_LOG=warn` to
/// keep a busy server's per-request log lines out). `database` is a file path or a
/// `postgres://` URL.
pub fn tablesync_serve_env(
    database: &Path,
    extra_args: &[&str],
    envs: &[(&str, &str)],
) -> ServerProcess {
    let mut command = serve_command(env!("CARGO_BIN_EXE_tablesync"), database);
    command.args(extra_args).envs(envs.iter().copied());
    spawn(command, "tablesync serve")
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
    spawn(command, "the official Node server")
}
