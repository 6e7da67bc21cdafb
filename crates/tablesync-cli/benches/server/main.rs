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
//! Plain tokio and a lean HTTP/1.1 client on hyper (`http.rs`): the client is a single-threaded
//! runtime with a fixed number of requests in flight, so it takes at most one of the machine's
//! cores from the server, and as little of it as it can. Every
//! count is an option (`--help`) or an environment variable. The servers log at `warn` (the
//! official server's level in the interop harness) so neither pays for a log line per request.
//!
//! This is a benchmark, not a test: run by `cargo test --all-targets` (no `--bench` argument)
//! it prints a note and exits successfully.

mod http;
mod process;
mod queued_read;
mod read_rows;
mod report;
mod rng;
mod workload;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use process::PgDatabase;
use read_rows::{Db, Scale};
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
    /// Unmeasured full pulls of each kind before its measured repeats, so every server is in
    /// its steady state: Node's JIT, and PostgreSQL, which plans a statement afresh for its
    /// first five runs on each pooled connection (8 in flight opened about eight: 8 keyset
    /// pulls run its filtered page statement 40 times).
    #[arg(long, env = "TABLESYNC_BENCH_PULL_WARMUPS", default_value_t = 8)]
    pull_warmups: usize,
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
    /// Rows of our servers' scale table (`BigItem`, seeded with SQL): its pull pages and indexed
    /// query are measured at `--rows` rows and at this many; 0 skips the scale rows. BENCHMARKS.md
    /// shows `--scale-rows 1000000`.
    #[arg(long, env = "TABLESYNC_BENCH_SCALE_ROWS", default_value_t = 100_000)]
    scale_rows: usize,
    /// Keyset pages of 1000 rows after random positions measured at each scale size.
    #[arg(long, env = "TABLESYNC_BENCH_SCALE_PAGES", default_value_t = 100)]
    scale_pages: usize,
    /// Reads by id timed with 0 and with 20 writers queued behind a held write lock, per store
    /// of `--servers` (`queued_read.rs`); 0 skips those rows.
    #[arg(long, env = "TABLESYNC_BENCH_QUEUED_READS", default_value_t = 50)]
    queued_reads: usize,
    /// Passes over the servers: each pass starts every server of `--servers` afresh, in order,
    /// and runs the phases; the table shows each row's median pass (`report::median_of_passes`)
    /// and the notes each speed-up's spread over the passes. The per-user, no-index and scale
    /// rows run in the first pass only.
    #[arg(long, env = "TABLESYNC_BENCH_PASSES", default_value_t = 3)]
    passes: usize,
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
        pull_warmups: args.pull_warmups,
        official_pull_tops: args.official_pull_tops.clone(),
        keyset_pull_top: args.keyset_pull_top,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let load_at_start = load_average();
    let mut notes = Vec::new();
    let mut passes: Vec<Vec<Measurement>> = Vec::new();
    for pass in 0..args.passes.max(1) {
        let mut log = PassLog {
            first: pass == 0,
            notes: &mut notes,
        };
        let mut measured_in_pass: Vec<Measurement> = Vec::new();
        for &target in &args.servers {
            let (label, measured) = match target {
                Target::Sqlite => {
                    let dir = tempfile::tempdir().context("creating a temporary directory")?;
                    let db = dir.path().join("ours.db").to_string_lossy().into_owned();
                    let server = ours(&db, &args.server_log, Some(dir))?;
                    let db = Db::Sqlite(db.into());
                    let measured =
                        measure(&runtime, OURS_SQLITE, &server, &plan, args, &db, &mut log);
                    (OURS_SQLITE, measured)
                }
                Target::Postgres => {
                    let Some(admin_url) = &args.pg_url else {
                        log.first_pass_note(format!(
                        "{OURS_POSTGRES}: skipped (set TABLESYNC_BENCH_PG_URL=postgres://user@host:port/db to measure it)"
                    ));
                        continue;
                    };
                    let database = PgDatabase::create(admin_url)?;
                    log.first_pass_note(format!("{OURS_POSTGRES}: {}", pg_transport(admin_url)));
                    let db = Db::Postgres(database.url().to_string());
                    let measured =
                        ours(database.url(), &args.server_log, None).and_then(|server| {
                            measure(&runtime, OURS_POSTGRES, &server, &plan, args, &db, &mut log)
                        });
                    // The server has stopped (dropped above) before its database is dropped.
                    if let Err(e) = database.drop_now() {
                        log.notes.push(format!(
                            "{OURS_POSTGRES}: could not drop the bench database: {e:#}"
                        ));
                    }
                    (OURS_POSTGRES, measured)
                }
                Target::Official => {
                    let server = process::official(&args.server_log)?;
                    (
                        OFFICIAL,
                        measure(
                            &runtime,
                            OFFICIAL,
                            &server,
                            &plan,
                            args,
                            &Db::None,
                            &mut log,
                        ),
                    )
                }
            };
            let measured =
                measured.with_context(|| format!("measuring {label} (pass {})", pass + 1))?;
            measured_in_pass.extend(measured);
        }
        passes.push(measured_in_pass);
    }
    let spread = report::speed_up_spread(&passes, OFFICIAL);
    let all = report::median_of_passes(passes);

    println!();
    println!("{}", machine_facts(&plan, args.seed, args.passes.max(1)));
    println!(
        "load average (1 min) at the start: {load_at_start}, at the end: {}",
        load_average()
    );
    println!();
    print!("{}", report::markdown_table(&all, OFFICIAL));
    println!();
    for m in all.iter().filter(|m| m.operation == workload::QUERY_ROW) {
        let per_request = m.rows as f64 / (m.requests.max(1)) as f64;
        println!(
            "- query rows returned, {}: {} in {} requests ({per_request:.1} per request)",
            m.server, m.rows, m.requests
        );
    }
    for m in all.iter() {
        if let Some(ms) = m.server_mean_ms {
            println!(
                "- {} on {}: {ms:.2} ms a request inside the server (its request-duration \
                 histogram, mean), {:.2} ms p50 at the bench client",
                m.operation,
                m.server,
                m.percentile_ms(50.0)
            );
        }
    }
    if let Some(line) = end_to_end_pull(&all, &plan) {
        println!("- {line}");
    }
    for line in scale_lines(&all, &plan, args.scale_rows) {
        println!("- {line}");
    }
    for note in &notes {
        println!("- {note}");
    }
    for line in &spread {
        println!("- speed-up spread: {line}");
    }
    if args.queued_reads > 0 {
        let pg = args.servers.contains(&Target::Postgres);
        let table = queued_read::section(
            &runtime,
            args.servers.contains(&Target::Sqlite),
            args.pg_url.as_deref().filter(|_| pg),
            &args.server_log,
            args.queued_reads,
        )?;
        println!();
        print!("{table}");
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

/// How the PostgreSQL rows reached the database, for the notes under the table: the transport
/// moves a 1000-row page by 15–20 % (BENCHMARKS.md), so a table says which one it measured.
fn pg_transport(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return "reached through an unparsable URL".to_owned();
    };
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    match param("host").filter(|host| host.starts_with('/')) {
        Some(dir) => format!("database reached over its Unix socket in {dir} (no TCP, no TLS)"),
        None => format!(
            "database reached over TCP at {}:{}, sslmode={} (TLS when the server offers it, \
             unless `disable`)",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432),
            param("sslmode").unwrap_or_else(|| "prefer".to_owned())
        ),
    }
}

/// Our `tablesync serve` with the server bench's tables.
fn ours(
    database: &str,
    log: &str,
    dir: Option<tempfile::TempDir>,
) -> anyhow::Result<ServerProcess> {
    process::ours_with_config(database, log, dir, process::SERVER_BENCH_CONFIG)
}

/// What one pass over the servers writes to: whether it is the first (which alone runs the
/// per-user, no-index and scale rows) and the lines for under the table.
struct PassLog<'a> {
    first: bool,
    notes: &'a mut Vec<String>,
}

impl PassLog<'_> {
    /// A line that every pass would repeat (a setting, a figure printed once): the first
    /// pass's only. Failures go to `notes` from every pass.
    fn first_pass_note(&mut self, line: String) {
        if self.first {
            self.notes.push(line);
        }
    }
}

/// Runs the workload against a started server (ours on `db`); on failure the server's output
/// is attached. Lines for under the table go to `log`.
fn measure(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    server: &ServerProcess,
    plan: &Plan,
    args: &Args,
    db: &Db,
    log: &mut PassLog<'_>,
) -> anyhow::Result<Vec<Measurement>> {
    let seed = args.seed;
    eprintln!("server bench: measuring {label} at {}", server.url());
    let mut measured = runtime
        .block_on(workload::run(label, server.url(), plan, seed, || {
            db.analyze_for_pulls()
        }))
        .with_context(|| format!("server output:\n{}", server.output()))?;
    if let Db::Sqlite(path) = db {
        // Right after the pulls, on the file exactly as they read it: the rows written later
        // (the per-user tables, a million scale rows) would leave a long WAL behind that every
        // read of the limit has to look through, and flatter the `× limit` column.
        let limit = read_rows::limit(path, plan.rows, plan.pull_repeats)?;
        log.first_pass_note(format!(
            "the bench client's own decode of a 1000-row page (the rows' id and updatedAt, the \
             rest skipped; in every pull row's time, not in the limit's): {:.2} ms (median); a \
             full parse of it into serde_json values would take {:.2} ms",
            limit.decode_p50.as_secs_f64() * 1000.0,
            limit.value_parse_p50.as_secs_f64() * 1000.0
        ));
        measured.push(limit.measurement);
    }
    if label != OFFICIAL && log.first {
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
        let scale = Scale {
            rows: args.scale_rows,
            pages: args.scale_pages,
        };
        measured.extend(
            runtime
                .block_on(read_rows::ours(label, server.url(), plan, seed, db, scale))
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
fn machine_facts(plan: &Plan, seed: u64, passes: usize) -> String {
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
         {} in flight, seed {seed}, pulls repeated {}× after {} unmeasured (query filter: `{}`); \
         {passes} passes, each row its median pass",
        std::env::consts::OS,
        std::env::consts::ARCH,
        plan.rows,
        plan.reads,
        plan.updates,
        plan.queries,
        plan.concurrency,
        plan.pull_repeats,
        plan.pull_warmups,
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

/// The 1-minute load average from `/proc/loadavg` ("?" where there is none): the machine is
/// shared, so the table says how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// For each of our servers, the scale rows' median page and query latency at `--rows` rows
/// and at `--scale-rows` rows: whether the cost per page grows with the table.
fn scale_lines(all: &[Measurement], plan: &Plan, scale_rows: usize) -> Vec<String> {
    let mut out = Vec::new();
    for server in [OURS_SQLITE, OURS_POSTGRES] {
        for what in [
            "pull page, keyset ($top=1000)",
            "query (filter, orderby, top 50), declared index",
        ] {
            let at = |rows: usize| {
                all.iter().find(|m| {
                    m.server == server && m.operation == format!("{what}, {rows}-row table")
                })
            };
            if let (Some(small), Some(large)) = (at(plan.rows), at(scale_rows)) {
                let (a, b) = (small.percentile_ms(50.0), large.percentile_ms(50.0));
                out.push(format!(
                    "{what} on {server}: p50 {a:.2} ms at {} rows, {b:.2} ms at {scale_rows} rows ({:.2}×)",
                    plan.rows,
                    if a > 0.0 { b / a } else { 0.0 }
                ));
            }
        }
    }
    out
}
