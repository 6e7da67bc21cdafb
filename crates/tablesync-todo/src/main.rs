//! `tablesync-todo`: the tutorial's todo app, offline-first, in the terminal.
//!
//! A thin shell: parses arguments, opens the model ([`app::App`]), runs one subcommand or the
//! terminal UI ([`ui`]), and maps the outcome to an exit code — here and nowhere else.

mod app;
mod conflict;
mod schedule;
mod status_line;
mod text;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use app::{App, Config, FailureKind, SyncReport, TodoItem};

/// Exit code: success.
const EXIT_OK: u8 = 0;
/// Exit code: an error (bad arguments, unreadable store, unknown item, ...); nothing was done.
const EXIT_ERROR: u8 = 1;
/// Exit code: the local action succeeded, but the sync could not reach the server (offline).
const EXIT_OFFLINE: u8 = 2;
/// Exit code: the local action succeeded and the server answered, but the sync failed
/// (operation errors such as conflicts, or the server refused the pull).
const EXIT_SYNC_FAILED: u8 = 3;

const AFTER_HELP: &str = "\
Without a command, the terminal UI starts: a add, space/enter toggle, d/Delete delete, r sync
now, c conflicts, j/k or arrows move, q quit. It syncs at start, after every change and on r,
and stays current by itself: the SDK's live mode follows the server's change feed, or pulls
every --sync-interval-s without one (--no-live: the app syncs every --sync-interval-s itself).
Offline, it retries every --offline-retry-interval-s and pushes at once when the server answers. Offline is shown on the status line; only a conflict opens
a dialog (m keep mine, s keep the server's, b show both, Esc later).

Data directory: --data-dir, else $TABLESYNC_TODO_DATA_DIR, else $XDG_DATA_HOME/tablesync-todo,
else $HOME/.local/share/tablesync-todo, else ./.tablesync-todo. It holds localstore.db (items
and the queue of changes not yet pushed) and last-sync.json.

Exit codes:
  0  success
  1  error (nothing was changed)
  2  the local action succeeded, but the server could not be reached (offline); the changes
     stay queued and are pushed by the next sync
  3  the local action succeeded, the server answered, but the sync failed (e.g. a conflict)";

/// The tutorial's todo app, offline-first, in the terminal.
#[derive(Debug, Parser)]
#[command(name = "tablesync-todo", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Directory for localstore.db and last-sync.json [default: see below]
    #[arg(
        long,
        global = true,
        env = "TABLESYNC_TODO_DATA_DIR",
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,
    /// Server base URL
    #[arg(
        long,
        global = true,
        env = "TABLESYNC_URL",
        default_value = app::DEFAULT_URL,
        value_name = "URL"
    )]
    url: String,
    /// Upper bound for one HTTP request, in milliseconds
    #[arg(long, global = true, default_value_t = app::REQUEST_TIMEOUT_MS_DEFAULT, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Authentication token sent as X-ZUMO-AUTH (e.g. from `tablesync token --user ID`); the
    /// pull's query id then names the token's user
    #[arg(
        long,
        global = true,
        env = "TABLESYNC_TOKEN",
        hide_env_values = true,
        value_name = "JWT"
    )]
    token: Option<String>,
    /// Work on the local store only: skip the sync of list, add, done, undone and delete
    #[arg(long, global = true)]
    no_sync: bool,
    /// Terminal UI: without the server's change feed, seconds between two background pulls
    /// while online (0: no background sync and no live mode)
    #[arg(long, global = true, env = "TABLESYNC_TODO_SYNC_INTERVAL_S",
          default_value_t = schedule::SYNC_INTERVAL_S_DEFAULT, value_name = "S",
          value_parser = clap::value_parser!(u64).range(0..=schedule::INTERVAL_S_MAX))]
    sync_interval_s: u64,
    /// Terminal UI: seconds between two retries while the server cannot be reached
    #[arg(long, global = true, env = "TABLESYNC_TODO_OFFLINE_RETRY_INTERVAL_S",
          default_value_t = schedule::OFFLINE_RETRY_INTERVAL_S_DEFAULT, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=schedule::INTERVAL_S_MAX))]
    offline_retry_interval_s: u64,
    /// Terminal UI: no live mode (the SDK's change feed or polling); the app syncs by itself
    /// every --sync-interval-s instead
    #[arg(long, global = true)]
    no_live: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync, then print the items (number, completion box, text, id)
    List,
    /// Add an item, then sync
    Add {
        /// The item's text
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Mark an item complete, then sync
    Done {
        /// The item's number in `list`, its id, or a unique prefix of its id (4+ characters)
        item: String,
    },
    /// Mark an item not complete, then sync
    Undone {
        /// The item's number in `list`, its id, or a unique prefix of its id (4+ characters)
        item: String,
    },
    /// Delete an item, then sync
    Delete {
        /// The item's number in `list`, its id, or a unique prefix of its id (4+ characters)
        item: String,
    },
    /// Push the queued changes, then pull the server's changes
    Sync,
    /// Print the server URL, the last sync and the number of pending operations (no network)
    Status,
}

/// The default data directory (see `AFTER_HELP`); the environment variable is handled by clap.
fn default_data_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("tablesync-todo");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/share/tablesync-todo");
    }
    PathBuf::from(".tablesync-todo")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own usage-error code is 2, which here means "offline"; keep 1 for errors.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match run(cli, &rt) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli, rt: &tokio::runtime::Runtime) -> anyhow::Result<u8> {
    let config = Config {
        data_dir: cli.data_dir.unwrap_or_else(default_data_dir),
        server_url: cli.url,
        request_timeout_ms: cli.request_timeout_ms,
        token: cli.token,
    };
    let app = rt.block_on(App::open(config))?;
    let sync = !cli.no_sync;
    let Some(command) = cli.command else {
        let intervals = schedule::Intervals {
            sync_interval_s: cli.sync_interval_s,
            offline_retry_interval_s: cli.offline_retry_interval_s,
            live: !cli.no_live,
        };
        ui::run(app, rt, intervals)?;
        return Ok(EXIT_OK);
    };
    rt.block_on(async {
        match command {
            Command::List => {
                let code = if sync {
                    report(&app, app.sync().await).await
                } else {
                    EXIT_OK
                };
                for (n, item) in app.items().await?.iter().enumerate() {
                    println!("{}", line(n + 1, item));
                }
                Ok(code)
            }
            Command::Add { text } => {
                let item = app.add(&text.join(" ")).await?;
                println!("added: {}", line_without_number(&item));
                Ok(if sync {
                    report(&app, app.sync().await).await
                } else {
                    EXIT_OK
                })
            }
            Command::Done { item } => set_complete(&app, &item, true, sync).await,
            Command::Undone { item } => set_complete(&app, &item, false, sync).await,
            Command::Delete { item } => {
                let item = app.find(&item).await?;
                let item = app.delete(item.id_str()).await?;
                println!("deleted: {}", line_without_number(&item));
                Ok(if sync {
                    report(&app, app.sync().await).await
                } else {
                    EXIT_OK
                })
            }
            Command::Sync => Ok(report(&app, app.sync().await).await),
            Command::Status => {
                print_status(&app).await?;
                Ok(EXIT_OK)
            }
        }
    })
}

async fn set_complete(app: &App, key: &str, complete: bool, sync: bool) -> anyhow::Result<u8> {
    let item = app.find(key).await?;
    let item = app.set_complete(item.id_str(), complete).await?;
    println!("updated: {}", line_without_number(&item));
    Ok(if sync {
        report(app, app.sync().await).await
    } else {
        EXIT_OK
    })
}

fn line_without_number(item: &TodoItem) -> String {
    let mark = if item.complete { "[x]" } else { "[ ]" };
    format!("{mark} {} (id: {})", item.text, item.id_str())
}

/// `list`'s line: `1. [ ] Buy milk (id: ...)`.
fn line(n: usize, item: &TodoItem) -> String {
    format!("{n}. {}", line_without_number(item))
}

/// Prints a sync's outcome (failures to stderr, as the tutorial's dialog text) and returns the
/// exit code it means.
async fn report(app: &App, report: SyncReport) -> u8 {
    let pending = app.pending_operations().await.ok();
    match &report.failure {
        None => {
            println!(
                "sync: ok, server {} reached, {} item(s) pulled",
                report.server_url, report.pulled
            );
            EXIT_OK
        }
        Some(f) => {
            eprintln!("sync failed:\n{}", f.message);
            if let Some(n) = pending {
                eprintln!("{n} operation(s) pending; they are pushed by the next sync");
            }
            match f.kind {
                FailureKind::Offline => EXIT_OFFLINE,
                FailureKind::Rejected | FailureKind::Conflict => EXIT_SYNC_FAILED,
            }
        }
    }
}

async fn print_status(app: &App) -> anyhow::Result<()> {
    let s = app.status().await?;
    println!("server:             {}", s.server_url);
    println!("data directory:     {}", s.data_dir.display());
    println!("items:              {}", s.items);
    println!("pending operations: {}", s.pending_operations);
    match &s.last_sync {
        None => println!("last sync:          never"),
        Some(r) => {
            let reached = if r.reached_server {
                "server reached"
            } else {
                "server not reached"
            };
            let outcome = if r.ok() { "ok" } else { "failed" };
            println!(
                "last sync:          {} ({reached}, {outcome}) with {}",
                r.at_display(),
                r.server_url
            );
            if let Some(f) = &r.failure {
                println!(
                    "last sync error:    {}",
                    f.message.replace('\n', "\n                    ")
                );
            }
        }
    }
    Ok(())
}
