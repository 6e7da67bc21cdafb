//! `cargo bench -p tablesync-cli --bench sync`: the client SDK end to end (issue 9).
//!
//! One run prints one table (`report.rs`), every figure beside its anchor measured in the same
//! run:
//! * the local limit: a raw rusqlite bulk insert of the seeded rows (one transaction, one
//!   prepared statement) into an empty file laid out as the client store's table;
//! * cold pulls of the same rows by the SDK (public API, default options) from the release
//!   `tablesync serve` (SQLite) and from the official Node server, into empty stores; the same
//!   requests without storing anything (how fast the server alone feeds pages);
//! * incremental pulls that find nothing: requests and latency;
//! * a push of a queue of mixed inserts, updates and deletes, one request per operation, to
//!   both servers (the same queue: both servers hold identical seeded rows), and the same queue
//!   batched (`POST /$batch`) to ours, seeded afresh;
//! * the peak RSS of a cold pull of a large table by `tablesync pull` in a child process (so
//!   the server's memory is not counted).
//!
//! The servers' tables are seeded straight into their data files (`data.rs`), not with one POST
//! per row, so the large tables take seconds to make. BENCHMARKS.md explains every row and holds
//! a measured table. Run by `cargo test --all-targets` (no `--bench` argument) it only prints a
//! note.

mod data;
mod measure;
mod report;
// The server bench's helpers: server processes and the seeded generator.
#[path = "../server/process.rs"]
#[allow(dead_code)]
mod process;
#[path = "../server/rng.rs"]
mod rng;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use measure::Timed;
use report::{percentile, Row};
use tablesync_server::testing::ServerProcess;

const OURS: &str = "ours (SQLite)";
const OFFICIAL: &str = "official Node (SQLite)";
const LOCAL: &str = "local SQLite";

/// Which servers to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// The release `tablesync serve` on a SQLite file.
    Ours,
    /// The official Node server (`interop/official-server.js`) on a SQLite file.
    Official,
}

/// Benchmark of the client SDK's pull and push (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "sync-bench")]
struct Args {
    /// Rows in the servers' table, pulled cold by the SDK and inserted raw as the anchor.
    #[arg(long, env = "TABLESYNC_BENCH_ROWS", default_value_t = 100_000)]
    rows: usize,
    /// Queued operations pushed (mixed inserts, updates, deletes); at most `rows` are updates
    /// and deletes.
    #[arg(long, env = "TABLESYNC_BENCH_PUSH_OPS", default_value_t = 10_000)]
    push_ops: usize,
    /// Incremental pulls that find nothing, after the first one of a new context.
    #[arg(long, env = "TABLESYNC_BENCH_EMPTY_PULLS", default_value_t = 200)]
    empty_pulls: usize,
    /// Rows of the table whose cold pull by `tablesync pull` is measured for peak RSS (0: skip).
    #[arg(long, env = "TABLESYNC_BENCH_RSS_ROWS", default_value_t = 1_000_000)]
    rss_rows: usize,
    /// Servers to measure, in this order.
    #[arg(
        long,
        env = "TABLESYNC_BENCH_SERVERS",
        value_delimiter = ',',
        default_value = "ours,official"
    )]
    servers: Vec<Target>,
    /// Seed of the data set and of the queue.
    #[arg(long, env = "TABLESYNC_BENCH_SEED", default_value_t = 42)]
    seed: u64,
    /// Log level of the servers (RUST_LOG for ours, OFFICIAL_SERVER_LOG_LEVEL for Node).
    #[arg(long, env = "TABLESYNC_BENCH_SERVER_LOG", default_value = "warn")]
    server_log: String,
    /// Passed by `cargo bench`; without it the binary only prints a note.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    // Checked before clap: under `cargo test` this binary may get test-harness arguments.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sync bench: not run (use `cargo bench -p tablesync-cli --bench sync`)");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sync bench: some measurements had errors (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Copies a closed SQLite store file (and its WAL, if one was left).
fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let wal = |p: &Path| PathBuf::from(format!("{}-wal", p.display()));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to))?;
    }
    Ok(())
}

/// A server started once on `db` (so it creates its schema) and stopped, then seeded, then
/// started again for the measurements.
fn seeded_server(
    target: Target,
    db: &Path,
    rows: &[data::Row],
    log: &str,
) -> anyhow::Result<ServerProcess> {
    let db_text = db.to_string_lossy().into_owned();
    let start = || match target {
        Target::Ours => process::ours(&db_text, log, None),
        Target::Official => process::official_on(db, log),
    };
    drop(start()?);
    match target {
        Target::Ours => data::seed_ours(db, rows)?,
        Target::Official => data::seed_official(db, rows)?,
    }
    start()
}

fn timed_row(measurement: &str, server: &str, t: &Timed, unit: &'static str) -> Row {
    Row {
        measurement: measurement.into(),
        server: server.into(),
        items: t.items,
        requests: Some(t.requests),
        errors: t.errors,
        wall: t.wall,
        unit,
        server_cpu: t.cpu.server,
        client_cpu: t.cpu.client,
        ..Row::default()
    }
}

fn report_error(what: &str, server: &str, t: &Timed, expected: u64) -> Option<String> {
    if t.errors > 0 || t.items != expected {
        Some(format!(
            "{what} on {server}: {} of {expected} done, {} errors (first: {})",
            t.items,
            t.errors,
            t.first_error.as_deref().unwrap_or("none")
        ))
    } else {
        None
    }
}

/// Everything measured against one server.
struct ServerRun {
    cold: Row,
    cold_plain: Option<Row>,
    download: Option<Row>,
    first_empty: Row,
    warm_empty: Row,
    push: Option<Row>,
    /// Ours only: the same queue pushed batched (`$batch`) to a freshly seeded server.
    push_batched: Option<Row>,
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if args.rows == 0 {
        bail!("--rows must be at least 1");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench binary has debug assertions on; numbers are meaningless outside `cargo bench` (release)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let load_start = load_average();
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let rows = data::rows(args.rows, args.seed);
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut problems: Vec<String> = Vec::new();

    eprintln!("sync bench: raw insert of {} rows", rows.len());
    let raw_cpu_start = measure::cpu_time("self");
    let raw_wall = data::raw_insert(&work.path().join("raw.db"), &rows)?;
    let raw_cpu = raw_cpu_start
        .zip(measure::cpu_time("self"))
        .map(|(a, b)| b.saturating_sub(a));
    let raw = Row {
        measurement: "raw rusqlite insert (1 transaction, 1 prepared statement)".into(),
        server: LOCAL.into(),
        items: rows.len() as u64,
        wall: raw_wall,
        client_cpu: raw_cpu,
        unit: "rows/s",
        versus: "(anchor of the cold pulls)".into(),
        ..Row::default()
    };

    // The queue every push sends: built once from the first cold pull's store.
    let queue_template = work.path().join("queue.db");
    let mut queue_mix: Option<measure::QueueMix> = None;
    let mut runs: Vec<(Target, ServerRun)> = Vec::new();
    for &target in &args.servers {
        let (label, name) = match target {
            Target::Ours => (OURS, "ours"),
            Target::Official => (OFFICIAL, "official"),
        };
        let db = work.path().join(format!("{name}-server.sqlite"));
        eprintln!("sync bench: seeding {label} with {} rows", rows.len());
        let server = seeded_server(target, &db, &rows, &args.server_log)?;
        let url = server.url().to_string();
        let pid = server.pid();
        let measured = runtime.block_on(async {
            eprintln!("sync bench: cold pull from {label}");
            let store = work.path().join(format!("{name}-client.db"));
            let cold = measure::cold_pull(&url, &store, true, pid).await?;
            problems.extend(report_error("cold pull", label, &cold, rows.len() as u64));
            // The page the SDK chose, printed beside the figure: the server's `page_size_max`
            // (its default config), or the protocol's 50 where it announces none.
            let page_rows = match measure::page_size_max(&url).await {
                Some(n) => format!("{n} rows, the server's page_size_max"),
                None => "50 rows, the protocol's default".into(),
            };
            let mut cold_row = timed_row(
                &format!("cold pull, SDK defaults (largest page: {page_rows}; gzip)"),
                label,
                &cold,
                "rows/s",
            );
            cold_row.versus = format!(
                "{:.2}× the raw insert's time",
                cold.wall.as_secs_f64() / raw_wall.as_secs_f64()
            );
            eprintln!(
                "  {:.0} rows/s in {} requests",
                cold_row.rate(),
                cold.requests
            );
            let (cold_plain, download) = if target == Target::Ours {
                let plain = measure::cold_pull(
                    &url,
                    &work.path().join(format!("{name}-client-plain.db")),
                    false,
                    pid,
                )
                .await?;
                problems.extend(report_error(
                    "cold pull, gzip off",
                    label,
                    &plain,
                    rows.len() as u64,
                ));
                let mut plain_row = timed_row("cold pull, gzip off", label, &plain, "rows/s");
                plain_row.versus = format!(
                    "{:.2}× the raw insert's time; {:.0} bytes of JSON per row",
                    plain.wall.as_secs_f64() / raw_wall.as_secs_f64(),
                    plain.body_bytes as f64 / rows.len() as f64
                );
                let download = measure::download_only(&url, pid, rows.len() as u64).await?;
                problems.extend(report_error(
                    "download only",
                    label,
                    &download,
                    rows.len() as u64,
                ));
                let mut download_row = timed_row(
                    "the cold pull's page requests only (gzip, parsed, nothing stored)",
                    label,
                    &download,
                    "rows/s",
                );
                download_row.versus = format!(
                    "{:.0} % of the cold pull's wall time",
                    100.0 * download.wall.as_secs_f64() / cold.wall.as_secs_f64()
                );
                (Some(plain_row), Some(download_row))
            } else {
                (None, None)
            };

            eprintln!("sync bench: incremental pulls that find nothing, {label}");
            let ((first_requests, first_wall), warm) =
                measure::empty_pulls(&url, &store, args.empty_pulls).await?;
            let first_empty = Row {
                measurement: "incremental pull, nothing new: first pull of a new context".into(),
                server: label.into(),
                items: 1,
                requests: Some(first_requests),
                wall: first_wall,
                unit: "pulls/s",
                p50: Some(first_wall),
                versus: "discovery + 1 page request".into(),
                ..Row::default()
            };
            let mut latencies: Vec<Duration> = warm.iter().map(|(_, d)| *d).collect();
            latencies.sort();
            let warm_requests: u64 = warm.iter().map(|(n, _)| n).sum();
            let per_pull: Vec<u64> = warm.iter().map(|(n, _)| *n).collect();
            let warm_empty = Row {
                measurement: "incremental pull, nothing new: warm context".into(),
                server: label.into(),
                items: warm.len() as u64,
                requests: Some(warm_requests),
                wall: latencies.iter().sum(),
                unit: "pulls/s",
                p50: percentile(&latencies, 50.0),
                p99: percentile(&latencies, 99.0),
                versus: format!(
                    "requests per pull: {}..={}",
                    per_pull.iter().min().unwrap_or(&0),
                    per_pull.iter().max().unwrap_or(&0)
                ),
                ..Row::default()
            };

            let push = if args.push_ops > 0 {
                if queue_mix.is_none() {
                    eprintln!(
                        "sync bench: queueing {} operations (not measured)",
                        args.push_ops
                    );
                    copy_store(&store, &queue_template)?;
                    queue_mix = Some(
                        measure::queue_operations(&queue_template, &ids, args.push_ops, args.seed)
                            .await?,
                    );
                }
                eprintln!("sync bench: push to {label}");
                let push_store = work.path().join(format!("{name}-push.db"));
                copy_store(&queue_template, &push_store)?;
                let pushed = measure::push(&url, &push_store, pid, false).await?;
                problems.extend(report_error("push", label, &pushed, args.push_ops as u64));
                let mix = queue_mix.unwrap_or_default();
                let mut row = timed_row(
                    &format!(
                        "push, one request per operation ({} inserts, {} updates, {} deletes)",
                        mix.inserts, mix.updates, mix.deletes
                    ),
                    label,
                    &pushed,
                    "ops/s",
                );
                row.versus = format!(
                    "{:.2} requests per operation",
                    pushed.requests as f64 / pushed.items.max(1) as f64
                );
                Some(row)
            } else {
                None
            };
            anyhow::Ok(ServerRun {
                cold: cold_row,
                cold_plain,
                download,
                first_empty,
                warm_empty,
                push,
                push_batched: None,
            })
        });
        let mut measured = measured
            .with_context(|| format!("measuring {label}; server output:\n{}", server.output()))?;
        drop(server);
        if target == Target::Ours && args.push_ops > 0 {
            // The same queue, batched, to a server seeded afresh with the same rows (the first
            // push changed them; every queued operation must meet the rows it was queued on).
            let db = work.path().join("ours-batch-server.sqlite");
            eprintln!("sync bench: seeding {label} again for the batched push");
            let server = seeded_server(target, &db, &rows, &args.server_log)?;
            let push_store = work.path().join("ours-push-batched.db");
            copy_store(&queue_template, &push_store)?;
            eprintln!("sync bench: batched push to {label}");
            let pushed = runtime
                .block_on(measure::push(server.url(), &push_store, server.pid(), true))
                .with_context(|| format!("batched push; server output:\n{}", server.output()))?;
            problems.extend(report_error(
                "batched push",
                label,
                &pushed,
                args.push_ops as u64,
            ));
            let mix = queue_mix.unwrap_or_default();
            let mut row = timed_row(
                &format!(
                    "push, batched ({} inserts, {} updates, {} deletes)",
                    mix.inserts, mix.updates, mix.deletes
                ),
                label,
                &pushed,
                "ops/s",
            );
            let single = measured.push.as_ref().map(Row::rate).unwrap_or(0.0);
            row.versus = format!(
                "{} requests incl. discovery ({:.0} operations per request); {:.1}× the one-request-per-operation push",
                pushed.requests,
                pushed.items as f64 / pushed.requests.saturating_sub(1).max(1) as f64,
                if single > 0.0 { row.rate() / single } else { 0.0 }
            );
            measured.push_batched = Some(row);
            drop(server);
        }
        runs.push((target, measured));
    }

    let mut rss_row = None;
    if args.rss_rows > 0 && args.servers.contains(&Target::Ours) {
        eprintln!(
            "sync bench: seeding {OURS} with {} rows for the peak RSS pull",
            args.rss_rows
        );
        let big = data::rows(args.rss_rows, args.seed.wrapping_add(1));
        let db = work.path().join("rss-server.sqlite");
        let server = seeded_server(Target::Ours, &db, &big, &args.server_log)?;
        drop(big);
        eprintln!("sync bench: `tablesync pull` of {} rows", args.rss_rows);
        let cpu = measure::CpuMeter::start(server.pid());
        let child = measure::child_pull(server.url(), &work.path().join("rss-client.db"))?;
        let cpu = cpu.stop();
        if child.rows != args.rss_rows as u64 {
            problems.push(format!(
                "tablesync pull wrote {} of {} rows",
                child.rows, args.rss_rows
            ));
        }
        rss_row = Some(Row {
            measurement: format!(
                "cold pull of {} rows by `tablesync pull` (child process)",
                args.rss_rows
            ),
            server: OURS.into(),
            items: child.rows,
            // The page requests the command reported, plus its discovery request.
            requests: Some(child.pages + 1),
            wall: child.wall,
            unit: "rows/s",
            server_cpu: cpu.server,
            peak_rss_bytes: Some(child.peak_rss_bytes),
            versus: "peak RSS of the child (VmHWM)".into(),
            ..Row::default()
        });
    }

    // One table: the anchor, then pulls, empty pulls, pushes, memory; Node rows beside ours.
    let get = |t: Target| runs.iter().find(|(x, _)| *x == t).map(|(_, r)| r);
    let (ours, official) = (get(Target::Ours), get(Target::Official));
    let faster = |ours: Option<&Row>, theirs: &Row| {
        ours.filter(|_| theirs.rate() > 0.0)
            .map(|o| format!("ours {:.1}× faster", o.rate() / theirs.rate()))
            .unwrap_or_default()
    };
    let mut table = vec![raw];
    if let Some(o) = ours {
        table.push(o.cold.clone());
        table.extend(o.cold_plain.clone());
        table.extend(o.download.clone());
    }
    if let Some(n) = official {
        let mut row = n.cold.clone();
        row.versus = format!("{}; {}", row.versus, faster(ours.map(|o| &o.cold), &n.cold));
        table.push(row);
    }
    for r in [ours, official].into_iter().flatten() {
        table.push(r.first_empty.clone());
        table.push(r.warm_empty.clone());
    }
    if let Some(p) = ours.and_then(|o| o.push.clone()) {
        table.push(p);
    }
    if let Some(p) = ours.and_then(|o| o.push_batched.clone()) {
        table.push(p);
    }
    if let Some(p) = official.and_then(|n| n.push.clone()) {
        let mut row = p.clone();
        row.versus = format!(
            "{}; {}",
            row.versus,
            faster(ours.and_then(|o| o.push.as_ref()), &p)
        );
        table.push(row);
    }
    table.extend(rss_row);

    println!();
    println!("{}", machine_facts(args));
    println!(
        "load average (1 min) at the start: {load_start}, at the end: {}",
        load_average()
    );
    println!();
    print!("{}", report::markdown_table(&table));
    println!();
    for p in &problems {
        println!("- ERROR: {p}");
    }
    Ok(problems.is_empty())
}

/// The 1-minute load average (`/proc/loadavg`), `?` where there is none: the machine is shared,
/// and the table is only readable beside it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// One line on the machine and the plan, printed above the table.
fn machine_facts(args: &Args) -> String {
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
        "{cores} cores available, {} {}, node {node}; rows {}, push ops {}, empty pulls {}, \
         RSS pull rows {}, seed {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        args.rows,
        args.push_ops,
        args.empty_pulls,
        args.rss_rows,
        args.seed,
    )
}
