//! The client-side measurements: the SDK (the crate's public API, as an app uses it) over a
//! request-counting transport, plus the `tablesync pull` child process for peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tablesync_client::{
    BoxFuture, Client, ClientOptions, ColumnType, HttpRequest, HttpResponse, HttpTransport,
    LocalStore, SyncContext, TableDefinition, Transport, TransportError,
};

use crate::data::TABLE;
use crate::rng::SplitMix64;

/// Per-request timeout of the SDK in the bench, in milliseconds (a bound against a hung server).
const REQUEST_TIMEOUT_MS: u64 = 120_000;
/// Largest response the SDK accepts in the bench, in bytes (the SDK's default).
const RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How often the child's peak RSS is read while it runs, in milliseconds.
const RSS_POLL_MS: u64 = 2;
/// The query id of every incremental pull.
const QUERY_ID: &str = "all";

/// The SDK's HTTP transport, counting requests and the (decompressed) bytes answered.
pub struct Counting {
    inner: HttpTransport,
    requests: AtomicU64,
    body_bytes: AtomicU64,
}

impl Counting {
    pub fn new(accept_gzip: bool) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Counting {
            inner: HttpTransport::with_gzip(REQUEST_TIMEOUT_MS, RESPONSE_BYTES_MAX, accept_gzip)?,
            requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
        }))
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }
}

impl Transport for Counting {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let resp = self.inner.send(request).await?;
            self.body_bytes
                .fetch_add(resp.body.len() as u64, Ordering::SeqCst);
            Ok(resp)
        })
    }
}

/// The client store the app of the tutorial defines.
fn todo_store(path: &Path) -> anyhow::Result<LocalStore> {
    let mut store = LocalStore::new(path);
    store.define_table(
        TableDefinition::new(TABLE)
            .column("text", ColumnType::String)
            .column("complete", ColumnType::Boolean),
    )?;
    Ok(store)
}

/// A context on the store file `path` talking to `url` through `transport`, with the SDK's
/// default options except `batch_push` when given.
pub async fn context(
    url: &str,
    path: &Path,
    transport: Arc<Counting>,
    batch_push: Option<bool>,
) -> anyhow::Result<SyncContext> {
    let mut options = ClientOptions::default();
    if let Some(batch) = batch_push {
        options = options.with_batch_push(batch);
    }
    let client = Client::with_transport_and_options(url, transport, options)?;
    Ok(SyncContext::initialize(client, todo_store(path)?).await?)
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU used by the server `server_pid` and by this process (the SDK) while `f` runs.
pub struct CpuUse {
    pub server: Option<Duration>,
    pub client: Option<Duration>,
}

pub struct CpuMeter {
    server_pid: String,
    server_start: Option<Duration>,
    client_start: Option<Duration>,
}

impl CpuMeter {
    pub fn start(server_pid: u32) -> Self {
        let server_pid = server_pid.to_string();
        CpuMeter {
            server_start: cpu_time(&server_pid),
            client_start: cpu_time("self"),
            server_pid,
        }
    }

    pub fn stop(&self) -> CpuUse {
        let since =
            |start: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(start?));
        CpuUse {
            server: since(self.server_start, cpu_time(&self.server_pid)),
            client: since(self.client_start, cpu_time("self")),
        }
    }
}

/// One timed SDK action.
pub struct Timed {
    pub wall: Duration,
    pub requests: u64,
    pub body_bytes: u64,
    pub cpu: CpuUse,
    /// Rows the pull wrote, or operations the push completed.
    pub items: u64,
    /// Errors (a failed push's unhandled operation errors, or 1 for a failed action).
    pub errors: u64,
    pub first_error: Option<String>,
}

/// A cold pull of the whole table into the empty store `path` with the SDK's default options
/// (pages as large as the server allows; gzip unless `accept_gzip` is false).
pub async fn cold_pull(
    url: &str,
    path: &Path,
    accept_gzip: bool,
    server_pid: u32,
) -> anyhow::Result<Timed> {
    let transport = Counting::new(accept_gzip)?;
    let ctx = context(url, path, transport.clone(), None).await?;
    let table = ctx.table(TABLE)?;
    let cpu = CpuMeter::start(server_pid);
    let started = Instant::now();
    let result = table.pull(Some(QUERY_ID), "").await;
    let wall = started.elapsed();
    let cpu = cpu.stop();
    let (items, errors, first_error) = match result {
        Ok(s) => (s.upserted, 0, None),
        Err(e) => (0, 1, Some(e.to_string())),
    };
    Ok(Timed {
        wall,
        requests: transport.requests(),
        body_bytes: transport.body_bytes(),
        cpu,
        items,
        errors,
        first_error,
    })
}

/// `pulls` incremental pulls that find nothing, on the store `path` a cold pull filled: the
/// first in a new context (which asks the server's capabilities), the others warm. Returns the
/// first pull's requests and latency, and each warm pull's requests and latency.
pub async fn empty_pulls(
    url: &str,
    path: &Path,
    pulls: usize,
) -> anyhow::Result<((u64, Duration), Vec<(u64, Duration)>)> {
    let transport = Counting::new(true)?;
    let ctx = context(url, path, transport.clone(), None).await?;
    let table = ctx.table(TABLE)?;
    let mut runs = Vec::with_capacity(pulls);
    for _ in 0..pulls.max(1) + 1 {
        let before = transport.requests();
        let started = Instant::now();
        let s = table.pull(Some(QUERY_ID), "").await?;
        let wall = started.elapsed();
        if s.upserted + s.deleted > 0 {
            bail!(
                "an incremental pull after the cold pull found {} rows",
                s.upserted + s.deleted
            );
        }
        runs.push((transport.requests() - before, wall));
    }
    let first = runs.remove(0);
    Ok((first, runs))
}

/// The `page_size_max` a server announces in `GET /$capabilities`; `None` when it has no such
/// document (the official servers answer 404) or says nothing.
pub async fn page_size_max(url: &str) -> Option<u64> {
    let http = reqwest::Client::builder().no_proxy().build().ok()?;
    let resp = http.get(format!("{url}/$capabilities")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let caps: serde_json::Value = resp.json().await.ok()?;
    caps["page_size_max"].as_u64()
}

/// The cold pull's page requests without the SDK: the same keyset queries with `$top` = the
/// server's `page_size_max`, gzip accepted, each page parsed (its last row is the next
/// position) and dropped. How fast the server alone feeds a sequential puller.
pub async fn download_only(
    url: &str,
    server_pid: u32,
    expected_rows: u64,
) -> anyhow::Result<Timed> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build()?;
    let caps: serde_json::Value = http
        .get(format!("{url}/$capabilities"))
        .send()
        .await?
        .json()
        .await?;
    let top = caps["page_size_max"].as_u64().context("no page_size_max")?;
    let cpu = CpuMeter::start(server_pid);
    let started = Instant::now();
    let (mut requests, mut rows, mut body_bytes) = (1u64, 0u64, 0u64);
    let mut after: Option<(String, String)> = None;
    loop {
        let mut query = vec![
            ("$orderby", "updatedAt,id".to_string()),
            ("$top", top.to_string()),
            ("__includeDeleted", "true".to_string()),
        ];
        if let Some((u, id)) = &after {
            query.push((
                "$filter",
                format!(
                    "(updatedAt ge datetimeoffset'{u}') and ((updatedAt gt datetimeoffset'{u}') or \
                     ((updatedAt eq datetimeoffset'{u}') and (id gt '{}')))",
                    id.replace('\'', "''")
                ),
            ));
        }
        let body = http
            .get(format!("{url}/tables/{TABLE}"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        requests += 1;
        body_bytes += body.len() as u64;
        let page: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&body)?;
        rows += page.len() as u64;
        let Some(last) = page.last() else { break };
        after = Some((
            last["updatedAt"].as_str().unwrap_or_default().to_string(),
            last["id"].as_str().unwrap_or_default().to_string(),
        ));
        if (page.len() as u64) < top {
            break;
        }
    }
    let wall = started.elapsed();
    let (errors, first_error) = if rows == expected_rows {
        (0, None)
    } else {
        (1, Some(format!("{rows} rows downloaded")))
    };
    Ok(Timed {
        wall,
        requests,
        body_bytes,
        cpu: cpu.stop(),
        items: rows,
        errors,
        first_error,
    })
}

/// What a queue of operations holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueMix {
    pub inserts: usize,
    pub updates: usize,
    pub deletes: usize,
}

/// Queues `ops` operations in the store `path` (which holds the pulled `ids`), offline: about
/// 40 % inserts of new items, 40 % updates and 20 % deletes of distinct pulled rows, in a
/// seeded order. Nothing is sent (the context's URL is never dialled).
pub async fn queue_operations(
    path: &Path,
    ids: &[String],
    ops: usize,
    seed: u64,
) -> anyhow::Result<QueueMix> {
    let ctx = context("http://127.0.0.1:9/", path, Counting::new(true)?, None).await?;
    let table = ctx.table(TABLE)?;
    let mut rng = SplitMix64(seed ^ 0x5155_4555);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut existing = order.into_iter();
    let mut mix = QueueMix::default();
    for i in 0..ops {
        let roll = rng.below(10);
        let target = if roll >= 4 { existing.next() } else { None };
        match (roll, target) {
            (4..=7, Some(row)) => {
                table
                    .update(
                        json!({"id": ids[row], "text": format!("edited {i}"), "complete": true}),
                    )
                    .await?;
                mix.updates += 1;
            }
            (8..=9, Some(row)) => {
                table.delete(&ids[row]).await?;
                mix.deletes += 1;
            }
            _ => {
                table
                    .insert(
                        json!({"id": rng.uuid(), "text": format!("new {i}"), "complete": false}),
                    )
                    .await?;
                mix.inserts += 1;
            }
        }
    }
    let pending = ctx.pending_operations().await?;
    if pending != ops as u64 {
        bail!("{pending} operations queued, expected {ops}");
    }
    Ok(mix)
}

/// Pushes the queue of the store `path` to `url`, one request per operation
/// (`ClientOptions::batch_push` off), or batched when the server offers it if `batched`.
pub async fn push(url: &str, path: &Path, server_pid: u32, batched: bool) -> anyhow::Result<Timed> {
    let transport = Counting::new(true)?;
    let ctx = context(url, path, transport.clone(), Some(batched)).await?;
    let queued = ctx.pending_operations().await?;
    let cpu = CpuMeter::start(server_pid);
    let started = Instant::now();
    let result = ctx.push().await;
    let wall = started.elapsed();
    let cpu = cpu.stop();
    let left = ctx.pending_operations().await?;
    let (errors, first_error) = match result {
        Ok(()) => (0, None),
        Err(tablesync_client::Error::PushFailed {
            errors, message, ..
        }) => (
            errors.len().max(1) as u64,
            Some(
                errors
                    .first()
                    .map(|e| format!("{:?} {}: {}", e.status, e.item_id, e.raw_result))
                    .or(message)
                    .unwrap_or_else(|| "push failed".into()),
            ),
        ),
        Err(e) => (1, Some(e.to_string())),
    };
    Ok(Timed {
        wall,
        requests: transport.requests(),
        body_bytes: transport.body_bytes(),
        cpu,
        items: queued - left,
        errors,
        first_error,
    })
}

/// A cold pull by the release `tablesync pull` in a child process, and the child's peak RSS.
pub struct ChildPull {
    pub wall: Duration,
    pub peak_rss_bytes: u64,
    /// Page requests the command reported (it prints `N page(s)`).
    pub pages: u64,
    pub rows: u64,
}

/// Runs `tablesync pull --store <path> --url <url> --query-id all` and reads its peak resident
/// set (`VmHWM` in `/proc/<pid>/status`, the kernel's high-water mark) every [`RSS_POLL_MS`]
/// until it exits; the mark only grows, so the last reading is the peak up to that moment.
pub fn child_pull(url: &str, path: &Path) -> anyhow::Result<ChildPull> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(["pull", "--url", url, "--query-id", QUERY_ID, "--store"])
        .arg(path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running tablesync pull")?;
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(RSS_POLL_MS));
    };
    let wall = started.elapsed();
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !status.success() {
        bail!(
            "tablesync pull failed ({status}): {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "pulled TodoItem: 1001 page(s), 1000000 row(s) written, 0 deleted, 0 skipped"
    let number_before = |word: &str| -> Option<u64> {
        let at = stdout.find(word)?;
        stdout[..at]
            .split_whitespace()
            .last()?
            .trim_matches(',')
            .parse()
            .ok()
    };
    Ok(ChildPull {
        wall,
        peak_rss_bytes: peak_kib * 1024,
        pages: number_before("page(s)").unwrap_or(0),
        rows: number_before("row(s)").unwrap_or(0),
    })
}
