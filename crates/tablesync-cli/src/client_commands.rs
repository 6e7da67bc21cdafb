//! `tablesync pull|push|purge|queue|status`: drive and inspect a client sync by hand.
//!
//! Every command opens a local store (`--store`) with every table an earlier run (or the app)
//! recorded in it, plus `--table` (default `TodoItem`). Without `--column`, a table the store
//! already knows keeps its recorded definition, and only a new one gets the defaults (`TodoItem`:
//! `text:string`, `complete:boolean`; others: no columns). `--column NAME:TYPE` declarations
//! extend the recorded definition; they never narrow it (a column recorded with another type is
//! refused), so `push` always sends every column of a row. Talks to the server at `--url` (or
//! `TABLESYNC_URL`), with the token of `--token` (or `TABLESYNC_TOKEN`) when given. Output is
//! plain text on stdout.
//!
//! Exit codes from [`run`]: 0 done; 1 the sync action finished but did not succeed (push with
//! unhandled operation errors or cancelled, purge refused). Other failures are `Err`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use tablesync_client::{
    Client, ClientOptions, ColumnType, Error, LocalStore, PullOptions, SyncContext, TableDefinition,
};

/// Arguments every client command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The local SQLite store file (created when missing).
    #[arg(long, value_name = "PATH", default_value = "tablesync-client.db")]
    pub store: PathBuf,
    /// Base URL of the server.
    #[arg(
        long,
        value_name = "URL",
        env = "TABLESYNC_URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    pub url: String,
    /// The table to work on.
    #[arg(long, value_name = "NAME", default_value = "TodoItem")]
    pub table: String,
    /// A column of the table as NAME:TYPE (TYPE: string, number, boolean, date); repeatable.
    /// Extends the definition the store recorded. Without any, the recorded definition is used;
    /// a table the store does not know gets text:string and complete:boolean for TodoItem, no
    /// columns otherwise.
    #[arg(long = "column", value_name = "NAME:TYPE")]
    pub columns: Vec<String>,
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

/// The client commands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Download server changes into the local store (pushes pending operations first).
    Pull {
        /// Store, server and table.
        #[command(flatten)]
        store: StoreArgs,
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
    },
    /// Send every queued operation to the server, in queue order.
    Push {
        /// Store, server and table.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove local rows (nothing is sent) and reset the query's delta token.
    Purge {
        /// Store, server and table.
        #[command(flatten)]
        store: StoreArgs,
        /// Reset the delta token saved under this id.
        #[arg(long, value_name = "ID")]
        query_id: Option<String>,
        /// OData query string selecting the rows, e.g. '$filter=complete eq true'; empty = all.
        #[arg(long, value_name = "QUERY", default_value = "")]
        query: String,
        /// Purge even with pending operations, dropping those of the purged rows.
        #[arg(long)]
        force: bool,
    },
    /// List the operation queue.
    Queue {
        /// Store, server and table.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the store: tables, row counts, pending operations, errors of the last push.
    Status {
        /// Store, server and table.
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_column(spec: &str) -> anyhow::Result<(String, ColumnType)> {
    let (name, ty) = spec
        .split_once(':')
        .with_context(|| format!("column {spec:?} must be NAME:TYPE"))?;
    let ty = match ty.trim().to_ascii_lowercase().as_str() {
        "string" => ColumnType::String,
        "number" => ColumnType::Number,
        "boolean" | "bool" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        other => bail!("column {name:?}: unknown type {other:?} (string, number, boolean, date)"),
    };
    Ok((name.trim().to_string(), ty))
}

async fn open(args: &StoreArgs) -> anyhow::Result<SyncContext> {
    let mut store = LocalStore::new(&args.store);
    let stored = |store: &mut LocalStore| {
        store
            .define_stored_tables()
            .with_context(|| format!("reading table definitions from {}", args.store.display()))
    };
    if args.columns.is_empty() {
        // The store's own definitions (an app's) come first; the defaults only describe a
        // table the store does not know yet.
        stored(&mut store)?;
        let mut def = TableDefinition::new(args.table.clone());
        if args.table == "TodoItem" {
            def = def
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean);
        }
        match store.define_table(def) {
            Ok(()) | Err(Error::TableAlreadyDefined(_)) => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        // Explicit columns extend the stored definition (the SDK merges them at open); they
        // never narrow it, so the push still sends every column of a row.
        let mut def = TableDefinition::new(args.table.clone());
        for spec in &args.columns {
            let (name, ty) = parse_column(spec)?;
            def = def.column(name, ty);
        }
        store.define_table(def)?;
        stored(&mut store)?;
    }
    let mut options = ClientOptions::default().with_request_timeout_ms(args.request_timeout_ms);
    if let Some(token) = &args.token {
        options = options.with_auth_token(token.clone());
    }
    let client = Client::with_options(&args.url, options)?;
    SyncContext::initialize(client, store)
        .await
        .with_context(|| format!("opening the local store {}", args.store.display()))
}

/// Prints a failed push and returns exit code 1.
fn report_push_failure(err: &Error) -> Option<i32> {
    let Error::PushFailed { status, errors, .. } = err else {
        return None;
    };
    println!("push failed: {status}");
    for e in errors {
        let status = e.status.map_or_else(|| "-".to_string(), |s| s.to_string());
        println!(
            "  {} {}/{}: status {} {}",
            e.kind, e.table, e.item_id, status, e.raw_result
        );
    }
    Some(1)
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<i32> {
    match cmd {
        ClientCommand::Pull {
            store,
            query_id,
            query,
            page_size,
        } => {
            let ctx = open(&store).await?;
            let table = ctx.table(&store.table)?;
            let options = match page_size {
                Some(rows) => PullOptions::with_page_size(rows),
                None => PullOptions::default(),
            };
            match table
                .pull_with_options(query_id.as_deref(), &query, options)
                .await
            {
                Ok(s) => {
                    println!(
                        "pulled {}: {} page(s), {} row(s) written, {} deleted, {} skipped",
                        store.table, s.pages, s.upserted, s.deleted, s.skipped
                    );
                    Ok(0)
                }
                Err(e) => match report_push_failure(&e) {
                    Some(code) => Ok(code),
                    None => Err(e.into()),
                },
            }
        }
        ClientCommand::Push { store } => {
            let ctx = open(&store).await?;
            let before = ctx.pending_operations().await?;
            match ctx.push().await {
                Ok(()) => {
                    println!("pushed {before} operation(s)");
                    Ok(0)
                }
                Err(e) => match report_push_failure(&e) {
                    Some(code) => {
                        println!(
                            "{} operation(s) still queued",
                            ctx.pending_operations().await?
                        );
                        Ok(code)
                    }
                    None => Err(e.into()),
                },
            }
        }
        ClientCommand::Purge {
            store,
            query_id,
            query,
            force,
        } => {
            let ctx = open(&store).await?;
            let table = ctx.table(&store.table)?;
            match table.purge(query_id.as_deref(), &query, force).await {
                Ok(n) => {
                    println!("purged {n} row(s) from {}", store.table);
                    Ok(0)
                }
                Err(e @ Error::PurgeRefused(_)) => {
                    println!("{e} (use --force to drop them)");
                    Ok(1)
                }
                Err(e) => Err(e.into()),
            }
        }
        ClientCommand::Queue { store } => {
            let ctx = open(&store).await?;
            let ops = ctx.operations().await?;
            if ops.is_empty() {
                println!("queue is empty");
            }
            for op in ops {
                println!(
                    "{:>6} {:<6} {:<9} {}/{} (version {})",
                    op.sequence, op.kind, op.state, op.table, op.item_id, op.version
                );
            }
            Ok(0)
        }
        ClientCommand::Status { store } => {
            let ctx = open(&store).await?;
            println!("store:   {}", store.store.display());
            println!("server:  {}", ctx.client().base_url());
            for name in ctx.table_names() {
                let rows = ctx
                    .table(&name)?
                    .read("$top=0&$inlinecount=allpages")
                    .await?
                    .count
                    .unwrap_or(0);
                println!("table:   {name} ({rows} row(s))");
            }
            println!("pending: {} operation(s)", ctx.pending_operations().await?);
            let errors = ctx.push_errors().await?;
            println!("errors:  {} from the last push", errors.len());
            for e in errors {
                let status = e.status.map_or_else(|| "-".to_string(), |s| s.to_string());
                println!("  {} {}/{}: status {status}", e.kind, e.table, e.item_id);
            }
            Ok(0)
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
        assert!(parse_column("x:blob").is_err());
    }
}
