//! `cargo bench -p tablesync-cli --bench server`: our server against the official Node server.
//!
//! Starts, one after another, `tablesync serve` on a fresh SQLite file, `tablesync serve` on a
//! fresh PostgreSQL database (only when `TABLESYNC_BENCH_PG_URL` is set; the database is created
//! and dropped with `psql`) and the official Node server (`interop/official-server.js`,
//! azure-mobile-apps 4.0.2 on its sqlite provider) on a fresh data file. Each gets the same
//! seeded workload over loopback (`workload.rs`): inserts, reads by id, If-Match updates,
//! filtered queries, then full pulls the official clients' way and our client's way. The result
//! is a markdown table (`report.rs`) with a speed-up column against the official server;
//! BENCHMARKS.md explains the rows and holds a measured table.
//!
//! Plain tokio + reqwest: the client is a single-threaded runtime with a fixed number of
//! requests in flight, so it takes at most one of the machine's cores from the server. Every
//! count is an option (`--help`) or an environment variable. The servers log at `warn` (the
//! official server's level in the interop harness) so neither pays for a log line per request.
//!
//! This is a benchmark, not a test: run by `cargo test --all-targets` (no `--bench` argument)
//! it prints a note and exits successfully.

mod process;
mod report;
mod rng;
mod workload;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use process::PgDatabase;
use report::Measurement;
use tablesync_server::testing::ServerProcess;
use workload::Plan;

/// The label of the official server: the reference of the speed-up column.
const OFFICIAL: &str = "official Node (SQLite)";
/// The label of our server on SQLite.
const OURS_SQLITE: &str = "ours (SQLite)";
/// The label of our server on PostgreSQL.
const OURS_POSTGRES: &str = "ours (PostgreSQL)";

/// Which servers to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// `tablesync serve` on a fresh SQLite file.
    Sqlite,
    /// `tablesync serve` on a fresh PostgreSQL database (needs `--pg-url`).
    Postgres,
    /// The official Node server on a fresh SQLite file.
    Official,
}

/// Benchmark of `tablesync serve` against the official Node server (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "server-bench")]
struct Args {
    /// Rows inserted (one POST each), later pulled in full.
    #[arg(long, env = "TABLESYNC_BENCH_ROWS", default_value_t = 5000)]
    rows: usize,
    /// GETs by id.
    #[arg(long, env = "TABLESYNC_BENCH_READS", default_value_t = 5000)]
    reads: usize,
    /// PATCHes with If-Match.
    #[arg(long, env = "TABLESYNC_BENCH_UPDATES", default_value_t = 1000)]
    updates: usize,
    /// Filtered, ordered list queries.
    #[arg(long, env = "TABLESYNC_BENCH_QUERIES", default_value_t = 1000)]
    queries: usize,
    /// Requests in flight during the insert/read/update/query phases.
    #[arg(long, env = "TABLESYNC_BENCH_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Unmeasured warm-up requests per server (opens connections, warms Node's JIT).
    #[arg(long, env = "TABLESYNC_BENCH_WARMUP", default_value_t = 200)]
    warmup: usize,
    /// Seed of the data set (ids, values, read and update order).
    #[arg(long, env = "TABLESYNC_BENCH_SEED", default_value_t = 42)]
    seed: u64,
    /// How often each full pull runs.
    #[arg(long, env = "TABLESYNC_BENCH_PULL_REPEATS", default_value_t = 5)]
    pull_repeats: usize,
    /// `$top` values of the official clients' pull, one row each (their default page is 50).
    #[arg(
        long,
        env = "TABLESYNC_BENCH_OFFICIAL_PULL_TOPS",
        value_delimiter = ',',
        default_value = "50,1000"
    )]
    official_pull_tops: Vec<u32>,
    /// `$top` of our client's keyset pull (1000 is the official server's maximum).
    #[arg(long, env = "TABLESYNC_BENCH_KEYSET_PULL_TOP", default_value_t = 1000)]
    keyset_pull_top: u32,
    /// Servers to measure, in this order.
    #[arg(
        long,
        env = "TABLESYNC_BENCH_SERVERS",
        value_delimiter = ',',
        default_value = "sqlite,postgres,official"
    )]
    servers: Vec<Target>,
    /// PostgreSQL URL for the `postgres` row, e.g. postgres://postgres@127.0.0.1:5432/postgres;
    /// a fresh database is created through it. Without it that row is skipped.
    #[arg(long, env = "TABLESYNC_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// Log level of the servers (RUST_LOG for ours, OFFICIAL_SERVER_LOG_LEVEL for Node).
    #[arg(long, env = "TABLESYNC_BENCH_SERVER_LOG", default_value = "warn")]
    server_log: String,
    /// Passed by `cargo bench`; without it the binary only prints a note (so `cargo test
    /// --all-targets` does not run the benchmark).
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    // Checked before clap: under `cargo test` this binary may get test-harness arguments.
    if !std::env::args().any(|a| a == "--bench") {
        println!("server bench: not run (use `cargo bench -p tablesync-cli --bench server`)");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("server bench: some requests failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Measures every selected server and prints the table; `Ok(false)` when requests failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.rows == 0 {
        anyhow::bail!("--rows must be at least 1");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench binary has debug assertions on; numbers are meaningless outside `cargo bench` (release)");
    }
    let plan = Plan {
        rows: args.rows,
        reads: args.reads,
        updates: args.updates,
        queries: args.queries,
        concurrency: args.concurrency.max(1),
        warmup: args.warmup,
        pull_repeats: args.pull_repeats.max(1),
        official_pull_tops: args.official_pull_tops.clone(),
        keyset_pull_top: args.keyset_pull_top,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let mut notes = Vec::new();
    let mut all: Vec<Measurement> = Vec::new();
    for &target in &args.servers {
        let (label, measured) = match target {
            Target::Sqlite => {
                let dir = tempfile::tempdir().context("creating a temporary directory")?;
                let db = dir.path().join("ours.db").to_string_lossy().into_owned();
                let server = process::ours(&db, &args.server_log, Some(dir))?;
                (
                    OURS_SQLITE,
                    measure(&runtime, OURS_SQLITE, &server, &plan, args.seed),
                )
            }
            Target::Postgres => {
                let Some(admin_url) = &args.pg_url else {
                    notes.push(format!(
                        "{OURS_POSTGRES}: skipped (set TABLESYNC_BENCH_PG_URL=postgres://user@host:port/db to measure it)"
                    ));
                    continue;
                };
                let database = PgDatabase::create(admin_url)?;
                let measured = process::ours(database.url(), &args.server_log, None)
                    .and_then(|server| measure(&runtime, OURS_POSTGRES, &server, &plan, args.seed));
                // The server has stopped (dropped above) before its database is dropped.
                if let Err(e) = database.drop_now() {
                    notes.push(format!(
                        "{OURS_POSTGRES}: could not drop the bench database: {e:#}"
                    ));
                }
                (OURS_POSTGRES, measured)
            }
            Target::Official => {
                let server = process::official(&args.server_log)?;
                (
                    OFFICIAL,
                    measure(&runtime, OFFICIAL, &server, &plan, args.seed),
                )
            }
        };
        let measured = measured.with_context(|| format!("measuring {label}"))?;
        all.extend(measured);
    }

    println!();
    println!("{}", machine_facts(&plan, args.seed));
    println!();
    print!("{}", report::markdown_table(&all, OFFICIAL));
    println!();
    for m in all.iter().filter(|m| m.operation.starts_with("query")) {
        let per_request = m.rows as f64 / (m.requests.max(1)) as f64;
        println!(
            "- query rows returned, {}: {} in {} requests ({per_request:.1} per request)",
            m.server, m.rows, m.requests
        );
    }
    if let Some(line) = end_to_end_pull(&all, &plan) {
        println!("- {line}");
    }
    for note in &notes {
        println!("- {note}");
    }
    let mut clean = true;
    for m in all.iter().filter(|m| m.errors > 0) {
        clean = false;
        println!(
            "- ERRORS in {} on {}: {} (first: {})",
            m.operation,
            m.server,
            m.errors,
            m.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(clean)
}

/// Runs the workload against a started server; on failure the server's output is attached.
fn measure(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    server: &ServerProcess,
    plan: &Plan,
    seed: u64,
) -> anyhow::Result<Vec<Measurement>> {
    eprintln!("server bench: measuring {label} at {}", server.url());
    let mut measured = runtime
        .block_on(workload::run(label, server.url(), plan, seed))
        .with_context(|| format!("server output:\n{}", server.output()))?;
    if label != OFFICIAL {
        // The official server has no per-user clock to compare: these rows are ours only.
        let auth = tablesync_server::auth::AuthConfig::with_secret(process::BENCH_SECRET);
        let now = tablesync_server::auth::Clock::now_unix_s(&tablesync_server::auth::SystemClock);
        let tokens = (0..workload::USERS)
            .map(|u| {
                tablesync_server::auth::mint_dev_token(
                    &auth,
                    &|_| None,
                    &format!("user{u}"),
                    3600,
                    now,
                )
                .map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        measured.extend(
            runtime
                .block_on(workload::per_user_inserts(
                    label,
                    server.url(),
                    plan,
                    seed,
                    tokens,
                ))
                .with_context(|| format!("server output:\n{}", server.output()))?,
        );
    }
    for m in &measured {
        eprintln!(
            "  {:<45} {:>8.0} req/s {:>9.0} rows/s {:>4} errors",
            m.operation,
            m.requests_per_sec(),
            m.rows_per_sec(),
            m.errors
        );
    }
    Ok(measured)
}

/// One line on the machine and the plan, printed above the table.
fn machine_facts(plan: &Plan, seed: u64) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "not found".into());
    format!(
        "{cores} cores available, {} {}, node {node}; rows {}, reads {}, updates {}, queries {}, \
         {} in flight, seed {seed}, pulls repeated {}× (query filter: `{}`)",
        std::env::consts::OS,
        std::env::consts::ARCH,
        plan.rows,
        plan.reads,
        plan.updates,
        plan.queries,
        plan.concurrency,
        plan.pull_repeats,
        workload::QUERY_FILTER,
    )
}

/// Our keyset pull on our SQLite server against the official clients' default pull ($top=50)
/// on the official server: what an app sees end to end.
fn end_to_end_pull(all: &[Measurement], plan: &Plan) -> Option<String> {
    let ours = all.iter().find(|m| {
        m.server == OURS_SQLITE && m.operation.starts_with("pull, keyset") && m.errors == 0
    })?;
    let top = plan.official_pull_tops.first()?;
    let theirs = all.iter().find(|m| {
        m.server == OFFICIAL
            && m.operation == format!("pull, official clients' way ($top={top})")
            && m.errors == 0
    })?;
    let (a, b) = (ours.wall.as_secs_f64(), theirs.wall.as_secs_f64());
    (a > 0.0).then(|| {
        format!(
            "full pull end to end, our client's way on {OURS_SQLITE} ({:.3} s, {} requests) vs \
             the official clients' way ($top={top}) on {OFFICIAL} ({:.3} s, {} requests): {:.1}× faster",
            a, ours.requests, b, theirs.requests, b / a
        )
    })
}
