//! `tablesync pull|push|purge|queue|status|errors|resolve`: drive and inspect a client sync by
//! hand (docs/cli.md has every command, its `--json` schema and the exit codes).
//!
//! The store (`--store`): `pull` creates it when missing; every other command needs an existing
//! file and creates nothing (exit 4 otherwise), so a typo in the path is an error, not a new
//! empty store.
//!
//! The table (`--table`, default `TodoItem`; `pull` and `purge` only): every command opens the
//! store with every table it records (by an earlier run or the app). The `--table` must be one
//! of them, with two exceptions: `TodoItem` (the sample app's table) gets `text:string` and
//! `complete:boolean` when the store does not record it; any other new table needs its columns
//! as `--column NAME:TYPE`. A name that is neither is refused (exit 4) and nothing is written,
//! so `--table Nope` is not recorded. `--column` declarations extend a recorded definition;
//! they never narrow it (a column recorded with another type is refused), so `push` always sends
//! every column of a row.
//!
//! The server (`--url`, or `TABLESYNC_URL`): by default the one the store last synced with
//! (the SDK records it on a completed pull or push; `status` shows it), else
//! `http://127.0.0.1:8080/`. The token of `--token` (or `TABLESYNC_TOKEN`) when given.
//!
//! Output: results on stdout (one JSON document with `--json`), explanations on stderr; a closed
//! pipe ends the output quietly. Progress on stderr while `pull` or `push` runs (pages and rows;
//! operations done of total), only when stderr is a terminal. Exit codes: see [`output`] (0 ok, 1 other failure, 2 server not
//! reached, 3 conflicts or operation errors, 4 bad input).

mod conflicts;
mod output;
mod progress;
mod report;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Value};
use tablesync_client::{
    Client, ClientOptions, ColumnType, Error, LocalStore, PullOptions, SyncContext, TableDefinition,
};

pub use output::exit_code;
use output::{Fail, Out, OK};

/// The server a store that never synced talks to when no `--url` is given.
const DEFAULT_URL: &str = "http://127.0.0.1:8080/";

/// Exit codes, shown at the end of `--help` of the binary and of each client command.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 ok; 1 other failure (e.g. credentials \
refused, server error); 2 server not reached (offline); 3 conflicts or operation errors (push \
with unresolved errors, purge refused by pending operations); 4 bad input (usage, missing store \
file, unknown table, invalid query).";

/// Arguments every client command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The local SQLite store file (only `pull` creates it when missing).
    #[arg(long, value_name = "PATH", default_value = "tablesync-client.db")]
    pub store: PathBuf,
    /// Base URL of the server [default: the server the store last synced with, else
    /// http://127.0.0.1:8080/].
    #[arg(long, value_name = "URL", env = "TABLESYNC_URL")]
    pub url: Option<String>,
    /// Upper bound for one HTTP request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Authentication token sent as X-ZUMO-AUTH (e.g. from `tablesync token`).
    #[arg(
        long,
        value_name = "JWT",
        env = "TABLESYNC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// The table a `pull` or `purge` works on.
#[derive(clap::Args, Debug, Clone)]
pub struct TableArgs {
    /// The table to work on: one the store records, TodoItem, or a new one with --column.
    #[arg(long, value_name = "NAME", default_value = "TodoItem")]
    pub table: String,
    /// A column of the table as NAME:TYPE (TYPE: string, number, boolean, date); repeatable.
    /// Extends the definition the store recorded; required for a table the store does not
    /// record (except TodoItem, which defaults to text:string and complete:boolean).
    #[arg(long = "column", value_name = "NAME:TYPE")]
    pub columns: Vec<String>,
}

/// The client commands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Download server changes into the local store (pushes pending operations first).
    #[command(after_help = EXIT_CODES_HELP)]
    Pull {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// The table.
        #[command(flatten)]
        table: TableArgs,
        /// Incremental pull: resume from the delta token saved under this id.
        #[arg(long, value_name = "ID")]
        query_id: Option<String>,
        /// OData query string, e.g. '$filter=complete eq false'.
        #[arg(long, value_name = "QUERY", default_value = "")]
        query: String,
        /// Rows per request; by default the largest page the server allows (asked with
        /// `GET /$capabilities`), or the protocol's 50 on a server that does not say.
        #[arg(long, value_name = "ROWS")]
        page_size: Option<u32>,
        /// Print the result as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Send every queued operation to the server, in queue order.
    #[command(after_help = EXIT_CODES_HELP)]
    Push {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// Print the result as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Remove local rows (nothing is sent) and reset the query's delta token.
    #[command(after_help = EXIT_CODES_HELP)]
    Purge {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// The table.
        #[command(flatten)]
        table: TableArgs,
        /// Reset the delta token saved under this id.
        #[arg(long, value_name = "ID")]
        query_id: Option<String>,
        /// OData query string selecting the rows, e.g. '$filter=complete eq true'; empty = all.
        #[arg(long, value_name = "QUERY", default_value = "")]
        query: String,
        /// Purge even with pending operations, dropping those of the purged rows.
        #[arg(long)]
        force: bool,
        /// Print the result as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// List the operation queue.
    #[command(after_help = EXIT_CODES_HELP)]
    Queue {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// Print the queue as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Show the store: its server, tables, row counts, pending operations, operation errors.
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// Print the status as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// List the operation errors of the last push: the local and the server's version side by
    /// side.
    #[command(after_help = EXIT_CODES_HELP)]
    Errors {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// Print the errors as one JSON object (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Resolve one operation error: keep the server's copy, the local change, or neither.
    #[command(after_help = EXIT_CODES_HELP)]
    Resolve {
        /// Store and server.
        #[command(flatten)]
        store: StoreArgs,
        /// The item: its id, or TABLE/ID as `tablesync errors` prints it.
        #[arg(value_name = "ID")]
        id: String,
        /// Which version wins: server (drop the local change), client (send it over the
        /// server's copy on the next push), discard (drop the change and the local row).
        #[arg(long, value_enum)]
        keep: conflicts::Keep,
    },
}

fn parse_column(spec: &str) -> anyhow::Result<(String, ColumnType)> {
    let Some((name, ty)) = spec.split_once(':') else {
        return Err(Fail::input(format!("column {spec:?} must be NAME:TYPE")));
    };
    let ty = match ty.trim().to_ascii_lowercase().as_str() {
        "string" => ColumnType::String,
        "number" => ColumnType::Number,
        "boolean" | "bool" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        other => {
            return Err(Fail::input(format!(
                "column {name:?}: unknown type {other:?} (string, number, boolean, date)"
            )))
        }
    };
    Ok((name.trim().to_string(), ty))
}

/// The table definitions of the file (none for a missing file).
fn stored(path: &Path) -> anyhow::Result<LocalStore> {
    let mut store = LocalStore::new(path);
    store
        .define_stored_tables()
        .with_context(|| format!("reading table definitions from {}", path.display()))?;
    Ok(store)
}

/// An open context and the name of its `--table` (as the store spells it) when one was given.
struct Opened {
    ctx: SyncContext,
    table: Option<String>,
}

/// Opens the store with its recorded tables and `table` (see the module docs for which tables
/// are accepted). Nothing is written before every argument has been checked.
async fn open(args: &StoreArgs, table: Option<&TableArgs>) -> anyhow::Result<Opened> {
    let path = &args.store;
    let mut store = stored(path)?;
    let mut table_name = None;
    if let Some(t) = table {
        let recorded = store
            .table_names()
            .into_iter()
            .find(|n| n.eq_ignore_ascii_case(&t.table))
            .map(str::to_string);
        let mut def = TableDefinition::new(t.table.clone());
        for spec in &t.columns {
            let (name, ty) = parse_column(spec)?;
            def = def.column(name, ty);
        }
        if recorded.is_none() && t.columns.is_empty() {
            if !t.table.eq_ignore_ascii_case("TodoItem") {
                let known = store.table_names().join(", ");
                return Err(Fail::input(format!(
                    "table {:?} is not recorded in the store {} (it records: {}); to sync a \
                     new table name its columns with --column NAME:TYPE",
                    t.table,
                    path.display(),
                    if known.is_empty() { "none" } else { &known }
                )));
            }
            def = def
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean);
        }
        if recorded.is_none() || !t.columns.is_empty() {
            // Explicit columns extend the stored definition (the SDK merges them at open); they
            // never narrow it. Defined before the stored ones, so this definition is the one
            // merged.
            let mut with_new = LocalStore::new(path);
            with_new.define_table(def)?;
            with_new
                .define_stored_tables()
                .with_context(|| format!("reading table definitions from {}", path.display()))?;
            store = with_new;
        }
        table_name = Some(recorded.unwrap_or_else(|| t.table.clone()));
    }
    let url = match &args.url {
        Some(url) => url.clone(),
        None => store
            .last_server_url()
            .with_context(|| format!("reading {}", path.display()))?
            .unwrap_or_else(|| DEFAULT_URL.to_string()),
    };
    let mut options = ClientOptions::default().with_request_timeout_ms(args.request_timeout_ms);
    if let Some(token) = &args.token {
        options = options.with_auth_token(token.clone());
    }
    let client = Client::with_options(&url, options)?;
    let ctx = SyncContext::initialize(client, store)
        .await
        .with_context(|| format!("opening the local store {}", path.display()))?;
    Ok(Opened {
        ctx,
        table: table_name,
    })
}

/// Refuses a store path that is not an existing file (nothing is created).
fn require_store(args: &StoreArgs) -> anyhow::Result<()> {
    if args.store.is_file() {
        return Ok(());
    }
    Err(Fail::input(format!(
        "no store at {} (nothing was created; `tablesync pull` creates a store)",
        args.store.display()
    )))
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<i32> {
    let mut out = Out::default();
    match cmd {
        ClientCommand::Pull {
            store,
            table,
            query_id,
            query,
            page_size,
            json,
        } => {
            let Opened { ctx, table } = open(&store, Some(&table)).await?;
            let name = table.unwrap_or_default();
            let sync_table = ctx.table(&name)?;
            let options = match page_size {
                Some(rows) => PullOptions::with_page_size(rows),
                None => PullOptions::default(),
            };
            let bar = progress::Progress::start(&ctx, format!("pulling {name}"));
            let interrupt = progress::cancel_on_ctrl_c(&ctx);
            let result = sync_table
                .pull_with_options(query_id.as_deref(), &query, options)
                .await;
            interrupt.abort();
            bar.finish();
            match result {
                Ok(s) => {
                    if json {
                        out.json(&json!({
                            "table": name,
                            "pages": s.pages,
                            "upserted": s.upserted,
                            "deleted": s.deleted,
                            "skipped": s.skipped,
                        }))?;
                    } else {
                        out.line(format!(
                            "pulled {name}: {} page(s), {} row(s) written, {} deleted, {} skipped",
                            s.pages, s.upserted, s.deleted, s.skipped
                        ))?;
                    }
                    Ok(OK)
                }
                Err(e) => {
                    let pending = ctx.pending_operations().await?;
                    match report::explain(&e, ctx.client().base_url(), pending) {
                        Some(code) => Ok(code),
                        None => Err(e.into()),
                    }
                }
            }
        }
        ClientCommand::Push { store, json } => {
            require_store(&store)?;
            let Opened { ctx, .. } = open(&store, None).await?;
            let before = ctx.pending_operations().await?;
            let bar = progress::Progress::start(&ctx, format!("pushing {before} operation(s)"));
            let interrupt = progress::cancel_on_ctrl_c(&ctx);
            let pushed = ctx.push().await;
            interrupt.abort();
            let result = match pushed {
                Err(e) if !matches!(e, Error::PushFailed { .. }) => {
                    bar.finish();
                    let pending = ctx.pending_operations().await?;
                    return match report::explain(&e, ctx.client().base_url(), pending) {
                        Some(code) => Ok(code),
                        None => Err(e.into()),
                    };
                }
                other => other,
            };
            bar.finish();
            let pending = ctx.pending_operations().await?;
            let (status, errors, message) = match &result {
                Err(Error::PushFailed {
                    status,
                    errors,
                    message,
                }) => (
                    status.to_string(),
                    errors.iter().map(report::error_json).collect(),
                    message.clone(),
                ),
                _ => ("Complete".to_string(), Vec::new(), None),
            };
            let pushed = before.saturating_sub(pending);
            if json {
                out.json(&json!({
                    "status": status,
                    "pushed": pushed,
                    "pending": pending,
                    "errors": errors,
                    "message": message,
                }))?;
            } else if result.is_ok() {
                out.line(format!("pushed {before} operation(s)"))?;
            } else {
                out.line(format!(
                    "push {status}: {pushed} operation(s) pushed, {pending} still queued"
                ))?;
            }
            match result {
                Ok(()) => Ok(OK),
                Err(e) => Ok(report::explain(&e, ctx.client().base_url(), pending)
                    .unwrap_or(output::FAILURE)),
            }
        }
        ClientCommand::Purge {
            store,
            table,
            query_id,
            query,
            force,
            json,
        } => {
            require_store(&store)?;
            let Opened { ctx, table } = open(&store, Some(&table)).await?;
            let name = table.unwrap_or_default();
            match ctx
                .table(&name)?
                .purge(query_id.as_deref(), &query, force)
                .await
            {
                Ok(n) => {
                    if json {
                        out.json(&json!({ "table": name, "purged": n }))?;
                    } else {
                        out.line(format!("purged {n} row(s) from {name}"))?;
                    }
                    Ok(OK)
                }
                Err(e @ Error::PurgeRefused(_)) => Err(Fail {
                    code: output::CONFLICT,
                    message: format!("{e} (use --force to drop them)"),
                }
                .into()),
                Err(e) => Err(e.into()),
            }
        }
        ClientCommand::Queue { store, json } => {
            require_store(&store)?;
            let Opened { ctx, .. } = open(&store, None).await?;
            let ops = ctx.operations().await?;
            if json {
                let list: Vec<Value> = ops
                    .iter()
                    .map(|op| {
                        json!({
                            "sequence": op.sequence,
                            "operation": op.kind.to_string(),
                            "state": op.state.to_string(),
                            "table": op.table,
                            "id": op.item_id,
                            "version": op.version,
                        })
                    })
                    .collect();
                out.json(&json!({ "operations": list }))?;
                return Ok(OK);
            }
            if ops.is_empty() {
                out.line("queue is empty")?;
            }
            for op in ops {
                out.line(format!(
                    "{:>6} {:<6} {:<9} {}/{} (version {})",
                    op.sequence, op.kind, op.state, op.table, op.item_id, op.version
                ))?;
            }
            Ok(OK)
        }
        ClientCommand::Status { store, json } => {
            require_store(&store)?;
            let Opened { ctx, .. } = open(&store, None).await?;
            let server = ctx.last_server_url().await?;
            let mut tables = Vec::new();
            for name in ctx.table_names() {
                let rows = ctx
                    .table(&name)?
                    .read("$top=0&$inlinecount=allpages")
                    .await?
                    .count
                    .unwrap_or(0);
                tables.push((name, rows));
            }
            let pending = ctx.pending_operations().await?;
            let errors = ctx.push_errors().await?;
            if json {
                out.json(&json!({
                    "store": store.store.display().to_string(),
                    "server": server,
                    "tables": tables
                        .iter()
                        .map(|(name, rows)| json!({ "name": name, "rows": rows }))
                        .collect::<Vec<_>>(),
                    "pending": pending,
                    "errors": errors.len(),
                }))?;
                return Ok(OK);
            }
            out.line(format!("store:   {}", store.store.display()))?;
            out.line(format!(
                "server:  {}",
                server.as_deref().unwrap_or("none yet (never synced)")
            ))?;
            for (name, rows) in tables {
                out.line(format!("table:   {name} ({rows} row(s))"))?;
            }
            out.line(format!("pending: {pending} operation(s)"))?;
            out.line(format!("errors:  {} from the last push", errors.len()))?;
            for e in errors {
                out.line(format!("  {}", report::describe(&e)))?;
            }
            Ok(OK)
        }
        ClientCommand::Errors { store, json } => {
            require_store(&store)?;
            let Opened { ctx, .. } = open(&store, None).await?;
            conflicts::list(&ctx, &mut out, json).await?;
            Ok(OK)
        }
        ClientCommand::Resolve { store, id, keep } => {
            require_store(&store)?;
            let Opened { ctx, .. } = open(&store, None).await?;
            conflicts::resolve(&ctx, &mut out, &id, keep).await?;
            Ok(OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns() {
        assert_eq!(
            parse_column("due:date").unwrap(),
            ("due".to_string(), ColumnType::Date)
        );
        assert_eq!(
            parse_column("n: Number").unwrap(),
            ("n".to_string(), ColumnType::Number)
        );
        assert!(parse_column("x").is_err());
        assert_eq!(exit_code(&parse_column("x:blob").unwrap_err()), 4);
    }
}
