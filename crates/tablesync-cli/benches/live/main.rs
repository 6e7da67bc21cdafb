//! `cargo bench -p tablesync-cli --bench live`: how fast a write reaches another client in live
//! mode (issue 14 point 5, the latency half).
//!
//! Client A (the SDK, not live) writes one row and pushes it; client B (the SDK in live mode,
//! `SyncContext::live`) hears of it on its change feed, pulls it and commits it to its store,
//! then announces it on `SyncContext::changes`. Each sample is the time from A starting the push
//! to B's notification for that row (so it includes A's own write round trip: an upper bound
//! of "from the commit"), one write at a time, `--writes` samples after `--warmup` unmeasured
//! ones. Beside each figure, its anchor from the same run: A's push round trip alone (the
//! write's own cost, which the latency contains).
//!
//! Paths: one `tablesync serve` process on SQLite, one on PostgreSQL, and two processes on one
//! PostgreSQL database (A writes to process 1, B subscribes to process 2, so the change crosses
//! processes through `LISTEN/NOTIFY`). PostgreSQL runs need `TABLESYNC_BENCH_PG_URL` (an admin
//! URL; a fresh database is created and dropped). Target: p99 under 50 ms on loopback.
//! BENCHMARKS.md holds a measured table. Run by `cargo test --all-targets` (no `--bench`
//! argument) it only prints a note.

// The server bench's helpers: server processes and the throwaway PostgreSQL database.
#[path = "../server/process.rs"]
#[allow(dead_code)]
mod process;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use tablesync_client::{
    Client, ColumnType, FeedState, LiveOptions, LocalStore, SyncContext, TableDefinition,
};

/// The target of the issue: p99 from a write to the other client's store, in milliseconds.
const TARGET_P99_MS: f64 = 50.0;

/// Longest wait for one write to reach B before the run counts it as lost, in seconds.
const ARRIVAL_TIMEOUT_SECS: u64 = 10;

/// Latency benchmark of live mode (see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "live-bench")]
struct Args {
    /// Measured writes per path.
    #[arg(long, env = "TABLESYNC_BENCH_LIVE_WRITES", default_value_t = 200)]
    writes: usize,
    /// Unmeasured writes first (connections, statement caches).
    #[arg(long, env = "TABLESYNC_BENCH_LIVE_WARMUP", default_value_t = 20)]
    warmup: usize,
    /// Admin URL of a PostgreSQL server for the PostgreSQL paths (left out without it).
    #[arg(long, env = "TABLESYNC_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// Log level of the servers.
    #[arg(long, env = "TABLESYNC_BENCH_SERVER_LOG", default_value = "warn")]
    server_log: String,
    /// Passed by `cargo bench`; without it the binary only prints a note.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    // Checked before clap: under `cargo test` this binary may get test-harness arguments.
    if !std::env::args().any(|a| a == "--bench") {
        println!("live bench: not run (use `cargo bench -p tablesync-cli --bench live`)");
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One measured path.
struct Measured {
    path: &'static str,
    store: &'static str,
    /// A's push start → B's notification, sorted.
    latency: Vec<Duration>,
    /// A's push round trip, sorted (the anchor).
    write: Vec<Duration>,
    lost: usize,
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.writes == 0 {
        bail!("--writes must be at least 1");
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this bench binary has debug assertions on; numbers are meaningless outside `cargo bench` (release)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let mut results = Vec::new();

    let sqlite_dir = tempfile::tempdir()?;
    let db = sqlite_dir.path().join("live.db").display().to_string();
    let server = process::ours(&db, &args.server_log, Some(sqlite_dir))?;
    results.push(runtime.block_on(measure(
        args,
        work.path(),
        "one process",
        "SQLite",
        server.url(),
        server.url(),
    ))?);
    drop(server);

    match &args.pg_url {
        None => eprintln!("live bench: TABLESYNC_BENCH_PG_URL not set, PostgreSQL paths left out"),
        Some(admin) => {
            let pg = process::PgDatabase::create(admin)?;
            let one = process::ours(pg.url(), &args.server_log, None)?;
            let measured = runtime.block_on(measure(
                args,
                work.path(),
                "one process",
                "PostgreSQL",
                one.url(),
                one.url(),
            ));
            let two = process::ours(pg.url(), &args.server_log, None)?;
            let crossed = measured.and_then(|m| {
                results.push(m);
                runtime.block_on(measure(
                    args,
                    work.path(),
                    "two processes (A → 1, B ← 2)",
                    "PostgreSQL",
                    one.url(),
                    two.url(),
                ))
            });
            drop(one);
            drop(two);
            pg.drop_now()?;
            results.push(crossed?);
        }
    }
    print!("{}", table(&results));
    let lost: usize = results.iter().map(|m| m.lost).sum();
    if lost > 0 {
        bail!("{lost} write(s) never reached B within {ARRIVAL_TIMEOUT_SECS} s");
    }
    Ok(())
}

async fn context(url: &str, path: &Path) -> anyhow::Result<SyncContext> {
    let mut store = LocalStore::new(path);
    store.define_table(
        TableDefinition::new("TodoItem")
            .column("text", ColumnType::String)
            .column("complete", ColumnType::Boolean),
    )?;
    Ok(SyncContext::initialize(Client::new(url)?, store).await?)
}

/// `writes` samples of A (on `url_a`) writing and B (live on `url_b`) receiving.
async fn measure(
    args: &Args,
    dir: &Path,
    path: &'static str,
    store: &'static str,
    url_a: &str,
    url_b: &str,
) -> anyhow::Result<Measured> {
    let tag = uuid_tag();
    let a = context(url_a, &dir.join(format!("a-{tag}.db"))).await?;
    let b = context(url_b, &dir.join(format!("b-{tag}.db"))).await?;
    let mut changes = b.changes();
    let live = b.live(LiveOptions::new().query("TodoItem", "all", ""))?;
    let mut status = live.status();
    let streaming = tokio::time::timeout(Duration::from_secs(30), async {
        while !status.borrow_and_update().all(FeedState::Streaming) {
            if status.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    if streaming != Ok(true) {
        bail!(
            "B's feed on {url_b} did not open ({:?}): does the server offer `changes`?",
            *live.status().borrow()
        );
    }
    let todos = a.table("TodoItem")?;
    let mut m = Measured {
        path,
        store,
        latency: Vec::new(),
        write: Vec::new(),
        lost: 0,
    };
    for i in 0..args.warmup + args.writes {
        let id = format!("{tag}-{i}");
        todos
            .insert(json!({"id": id, "text": "live", "complete": false}))
            .await?;
        let start = Instant::now();
        a.push().await?;
        let written = start.elapsed();
        let arrived = tokio::time::timeout(Duration::from_secs(ARRIVAL_TIMEOUT_SECS), async {
            loop {
                match changes.recv().await {
                    Ok(c) if c.ids.contains(&id) => return true,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        let latency = start.elapsed();
        if i < args.warmup {
            continue;
        }
        if arrived == Ok(true) {
            m.latency.push(latency);
            m.write.push(written);
        } else {
            m.lost += 1;
        }
    }
    live.stop().await;
    m.latency.sort();
    m.write.sort();
    Ok(m)
}

fn uuid_tag() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Nearest-rank percentile `p` (0–100) of sorted `values`, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// The markdown table: each latency beside its anchor (A's write alone) and the target.
fn table(results: &[Measured]) -> String {
    let mut out = String::from(
        "| path | store | samples | lost | write → B's store p50 ms | p99 ms | max ms | anchor: A's write p50 ms | p99 ms | p99 target |\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for m in results {
        let p99 = pct(&m.latency, 99.0);
        let verdict = if p99 < TARGET_P99_MS { "met" } else { "missed" };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | < {TARGET_P99_MS} ms: {verdict} |\n",
            m.path,
            m.store,
            m.latency.len(),
            m.lost,
            pct(&m.latency, 50.0),
            p99,
            pct(&m.latency, 100.0),
            pct(&m.write, 50.0),
            pct(&m.write, 99.0),
        ));
    }
    out
}
