//! `cargo bench -p tablesync-cli --bench feed`: the change feed (issue 14 point 5,
//! BENCHMARKS.md "Change feed").
//!
//! Memory per idle subscriber: the release `tablesync serve` (SQLite) is started, warmed up and
//! left to settle, its resident set size (`VmRSS` of `/proc/<pid>/status`) read, then
//! [`SUBSCRIBERS`] `GET /$changes/TodoItem` streams are opened and left idle (the server's
//! `tablesync_feed_subscribers` gauge says when they are all in), and its RSS read again; the
//! difference divided by the number of streams is the cost of one. Anchor, from the same run on
//! a second server process started the same way: as many idle kept-alive HTTP connections that
//! each made one `GET /health`, which is what any connection costs; the difference between the
//! two rows is what the feed adds (its task, channel and SSE body).
//!
//! The table is a list of [`Row`]s so that further server-side feed measurements can be added as
//! rows beside these (the client's write → applied latency is `benches/live/`).
//!
//! Environment: `TABLESYNC_FEED_BENCH_SUBSCRIBERS` (default 1000).

use std::time::Duration;

use anyhow::{bail, Context};
use tablesync_server::testing::{serve_command, ProcessLimits, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle streams (and anchor connections) opened, unless the environment says otherwise.
const SUBSCRIBERS: usize = 1000;
/// How long the server is left alone before each RSS reading, so that work in flight (the
/// answers just sent, the allocator's thread caches) has settled.
const SETTLE: Duration = Duration::from_secs(2);
/// The target of issue 14 for one idle subscriber, in KiB.
const TARGET_KIB: f64 = 20.0;

/// One line of the result table.
struct Row {
    measure: String,
    value: String,
    anchor: String,
    target: String,
}

fn main() -> anyhow::Result<()> {
    let n = match std::env::var("TABLESYNC_FEED_BENCH_SUBSCRIBERS") {
        Ok(v) => v.parse().context("TABLESYNC_FEED_BENCH_SUBSCRIBERS")?,
        Err(_) => SUBSCRIBERS,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(memory_rows(n))?;
    print_table(n, &rows);
    Ok(())
}

/// The memory rows: idle subscribers against idle plain connections.
async fn memory_rows(n: usize) -> anyhow::Result<Vec<Row>> {
    let anchor = per_connection(n, Kind::PlainConnection).await?;
    let feed = per_connection(n, Kind::Subscriber).await?;
    let kib = |bytes: f64| bytes / 1024.0;
    Ok(vec![
        Row {
            measure: format!("server RSS per idle subscriber, {n} subscribers"),
            value: format!("{:.1} KiB", kib(feed.per_connection)),
            anchor: format!(
                "{:.1} KiB per idle kept-alive HTTP connection",
                kib(anchor.per_connection)
            ),
            target: format!(
                "< {TARGET_KIB} KiB: {}",
                if kib(feed.per_connection) < TARGET_KIB {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        },
        Row {
            measure: "what the feed adds to a connection".into(),
            value: format!(
                "{:.1} KiB",
                kib(feed.per_connection - anchor.per_connection)
            ),
            anchor: String::new(),
            target: String::new(),
        },
        Row {
            measure: "server RSS before → after".into(),
            value: format!(
                "{:.1} → {:.1} MiB",
                feed.before as f64 / 1048576.0,
                feed.after as f64 / 1048576.0
            ),
            anchor: format!(
                "{:.1} → {:.1} MiB",
                anchor.before as f64 / 1048576.0,
                anchor.after as f64 / 1048576.0
            ),
            target: String::new(),
        },
    ])
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    PlainConnection,
    Subscriber,
}

struct Memory {
    before: u64,
    after: u64,
    per_connection: f64,
}

/// Start a server, warm it up, read its RSS, open `n` idle connections of `kind`, read it again.
async fn per_connection(n: usize, kind: Kind) -> anyhow::Result<Memory> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("feed-bench.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nsubscribers_max = {}\nconnections_max = {}\n",
            n + 16,
            n + 64
        ),
    )?;
    let mut command = serve_command(env!("CARGO_BIN_EXE_tablesync"), dir.path().join("feed.db"));
    command.arg("--config").arg(&config).env("RUST_LOG", "warn");
    let server = ServerProcess::spawn(command, "tablesync serve", &ProcessLimits::default())?;
    let addr = server.url().trim_start_matches("http://").to_owned();
    let pid = server.pid();

    // Warm up: the paths both kinds use, so one-time allocations are in `before`.
    for _ in 0..3 {
        let mut s = connect(&addr).await?;
        request(&mut s, &addr, "/health").await?;
        let mut f = connect(&addr).await?;
        open_feed(&mut f, &addr).await?;
    }
    wait_subscribers(&addr, 0).await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss_bytes(pid)?;

    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(&addr).await?;
        match kind {
            Kind::PlainConnection => request(&mut s, &addr, "/health").await?,
            Kind::Subscriber => open_feed(&mut s, &addr).await?,
        }
        open.push(s);
    }
    if kind == Kind::Subscriber {
        wait_subscribers(&addr, n).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let after = rss_bytes(pid)?;
    drop(open);
    drop(server);
    Ok(Memory {
        before,
        after,
        per_connection: after.saturating_sub(before) as f64 / n as f64,
    })
}

async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    Ok(TcpStream::connect(addr).await?)
}

/// One `GET` on a kept-alive connection; its whole answer (a `Content-Length` body) is read.
async fn request(s: &mut TcpStream, addr: &str, path: &str) -> anyhow::Result<()> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let (head, mut body) = read_head(s).await?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while body.len() < length {
        let mut buf = [0u8; 4096];
        let got = s.read(&mut buf).await?;
        if got == 0 {
            bail!("closed mid-answer");
        }
        body.extend_from_slice(&buf[..got]);
    }
    Ok(())
}

/// Subscribe and read the answer's head (200, an event stream); the stream then stays idle.
async fn open_feed(s: &mut TcpStream, addr: &str) -> anyhow::Result<()> {
    s.write_all(
        format!("GET /$changes/TodoItem HTTP/1.1\r\nHost: {addr}\r\nZUMO-API-VERSION: 2.0.0\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let (head, _) = read_head(s).await?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the feed was refused: {head}");
    }
    Ok(())
}

/// The response head and whatever of the body came with it.
async fn read_head(s: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            return Ok((head, raw[end + 4..].to_vec()));
        }
        let mut buf = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await??;
        if got == 0 {
            bail!("closed before the head");
        }
        raw.extend_from_slice(&buf[..got]);
    }
}

/// Wait (bounded) until the server reports `n` subscribers.
async fn wait_subscribers(addr: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..600 {
        let mut s = connect(addr).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let now = text.lines().find_map(|l| {
            l.strip_prefix("tablesync_feed_subscribers ")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        if now == Some(n) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server never reported {n} subscribers")
}

/// `VmRSS` of a process, in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib * 1024)
}

fn print_table(n: usize, rows: &[Row]) {
    println!();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("Change feed ({n} idle connections each, SQLite, {profile} `tablesync serve`)");
    println!();
    println!("| measure | value | anchor (same run) | target |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.value, r.anchor, r.target
        );
    }
}
