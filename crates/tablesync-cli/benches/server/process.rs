//! The servers under test as child processes, and the throwaway PostgreSQL database.
//!
//! A server is a [`ServerProcess`] (`tablesync_server::testing`): started, its `listening on
//! http://127.0.0.1:<port>` line awaited, killed when dropped. Its output is drained for its
//! whole life (a full pipe would block the server mid-benchmark) and the newest part is kept for
//! error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tablesync_server::testing::{serve_command, ProcessLimits, ServerProcess};

/// How long a server may take to print its listening line (a bound against hanging, generous
/// because two shared cores may be busy).
const LISTEN_TIMEOUT_SECS: u64 = 60;

/// How much of a server's output is kept for error messages (the newest part), in bytes.
const OUTPUT_KEEP_BYTES: usize = 16 * 1024;

/// Starts `command` and waits for its listening line; an error carries all the output kept.
fn spawn(command: Command, what: &str) -> anyhow::Result<ServerProcess> {
    let limits = ProcessLimits {
        listen_timeout_secs: LISTEN_TIMEOUT_SECS,
        output_keep_bytes: OUTPUT_KEEP_BYTES,
        // Up to twice the kept size is held before it is cut back: show all of it.
        error_output_tail_bytes: 2 * OUTPUT_KEEP_BYTES,
    };
    Ok(ServerProcess::spawn(command, what, &limits)?)
}

/// Our `tablesync serve` (the release binary Cargo built for this bench) on a free port with
/// `database` (a SQLite file path or a `postgres://` URL) and log level `log_level`; `data_dir`
/// (the SQLite file's directory) is removed after the server stops.
///
/// It runs with [`OURS_CONFIG`]: `TodoItem` as before (anonymous, so the main workload sends no
/// token), plus the two tables of the 8-users phases, and `[auth]` with [`BENCH_SECRET`].
// The sync bench's server; the server bench runs `ours_with_config`.
#[allow(dead_code)]
pub fn ours(
    database: &str,
    log_level: &str,
    data_dir: Option<tempfile::TempDir>,
) -> anyhow::Result<ServerProcess> {
    ours_with_config(database, log_level, data_dir, OURS_CONFIG)
}

/// [`ours`] with the configuration `config_toml` (its `[auth]` reading the bench secret).
pub fn ours_with_config(
    database: &str,
    log_level: &str,
    data_dir: Option<tempfile::TempDir>,
    config_toml: &str,
) -> anyhow::Result<ServerProcess> {
    let config_dir = tempfile::tempdir().context("creating a temporary directory")?;
    let config = config_dir.path().join("bench.toml");
    std::fs::write(&config, config_toml).context("writing the bench config")?;
    let mut command = serve_command(env!("CARGO_BIN_EXE_tablesync"), database);
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", log_level)
        .env("TABLESYNC_BENCH_AUTH_SECRET", BENCH_SECRET);
    let server = spawn(command, "tablesync serve")?.keep_alive(config_dir);
    Ok(match data_dir {
        Some(dir) => server.keep_alive(dir),
        None => server,
    })
}

/// The HMAC secret our server verifies the 8 users' tokens with (bench only).
pub const BENCH_SECRET: &str = "bench-only-secret-0123456789abcdef";

/// Our server's tables: `TodoItem` for the main workload, `SharedItem` (one clock row for every
/// writer) and `UserItem` (per-user: one clock row per owner) for the 8-users insert phases.
#[allow(dead_code)]
const OURS_CONFIG: &str = r#"
[auth]
hmac_secret_env = "TABLESYNC_BENCH_AUTH_SECRET"

[[tables]]
name = "TodoItem"
columns = { text = "string", complete = "boolean" }
access = "anonymous"

[[tables]]
name = "SharedItem"
columns = { text = "string", complete = "boolean" }
access = "authenticated"

[[tables]]
name = "UserItem"
columns = { text = "string", complete = "boolean" }
owner_column = "userId"
"#;

/// The server bench's configuration: [`OURS_CONFIG`]'s tables, `TodoItem` with the declared
/// index the query phase reads (`complete`, `text`), and the tables of the read rows
/// (`read_rows.rs`): `TodoPlain` (the same without the index) and `BigItem` (the scale rows).
pub const SERVER_BENCH_CONFIG: &str = r#"
[auth]
hmac_secret_env = "TABLESYNC_BENCH_AUTH_SECRET"

[[tables]]
name = "TodoItem"
columns = { text = "string", complete = "boolean" }
access = "anonymous"
indexes = [["complete", "text"]]

[[tables]]
name = "TodoPlain"
columns = { text = "string", complete = "boolean" }
access = "anonymous"

[[tables]]
name = "BigItem"
columns = { text = "string", complete = "boolean" }
access = "anonymous"
indexes = [["complete", "text"]]

[[tables]]
name = "SharedItem"
columns = { text = "string", complete = "boolean" }
access = "authenticated"

[[tables]]
name = "UserItem"
columns = { text = "string", complete = "boolean" }
owner_column = "userId"
"#;

/// The official Node server (`interop/official-server.js`: azure-mobile-apps 4.0.2 on its
/// sqlite provider) on a free port with a fresh data file in a temporary directory.
pub fn official(log_level: &str) -> anyhow::Result<ServerProcess> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    Ok(official_on(&dir.path().join("official.sqlite"), log_level)?.keep_alive(dir))
}

/// The official Node server on the data file `db_file` (created when missing), which the caller
/// keeps (the sync bench seeds it between two runs of the server).
pub fn official_on(db_file: &Path, log_level: &str) -> anyhow::Result<ServerProcess> {
    let interop = interop_dir()?;
    let mut command = Command::new("node");
    command
        .arg(interop.join("official-server.js"))
        .current_dir(&interop)
        .env("DB_FILE", db_file)
        .env("PORT", "0")
        .env("OFFICIAL_SERVER_LOG_LEVEL", log_level);
    spawn(command, "the official Node server")
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
pub fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
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
