//! The workload: a seeded data set and the measured phases, run against one server's base URL.
//!
//! Phases run in a fixed order on a fresh, empty `TodoItem` table (insert, read by id, update,
//! query, pulls), so every server sees exactly the same requests. The request phases are closed
//! loops with a fixed number of requests in flight; the pulls are sequential, as a client pulls.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, IF_MATCH};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::http::{BenchClient, RequestBuilder};
use crate::report::{Measurement, Rate};
use crate::rng::SplitMix64;

/// The table every server under test serves with the same columns (text, complete, soft delete).
const TABLE: &str = "TodoItem";

/// Per-request timeout, in seconds (a bound against a hung server, not a measurement).
const REQUEST_TIMEOUT_SECS: u64 = 60;

/// How many characters of an unexpected response body an error message shows.
const BODY_SHOWN_CHARS_MAX: usize = 300;

/// The query phase's `$filter`. The official server's sqlite provider answers `startswith` with
/// no rows (protocol.md Appendix A), which is why the rows column matters for this phase.
pub const QUERY_FILTER: &str = "complete eq false and startswith(text,'item 1')";

/// What the bench client reads of a listed row: its key (`id`, `updatedAt`), enough to check that
/// a pull got every row and to page on. The other fields are still checked to be valid JSON but
/// skipped without building a value (serde's `IgnoredAny`), as a client that decodes rows
/// straight into its own columns does (ours: `client/src/store/page.rs`). Building a
/// `serde_json::Value` tree per row cost this client about as much time as our server's whole
/// page, which is not what the pull rows are meant to measure; `read_rows::limit` prints both
/// decode costs beside the table. The two strings borrow the body where they have no escape
/// (always, for ids and dates): copying them out was an eighth of the decode.
#[derive(Debug, serde::Deserialize)]
pub struct RowKey<'a> {
    /// The row's id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The row's `updatedAt`, wire form.
    #[serde(borrow, rename = "updatedAt")]
    pub updated_at: Cow<'a, str>,
}

/// A listed page as the bench client decodes it (see [`RowKey`]).
pub fn decode_page(body: &[u8]) -> Result<Vec<RowKey<'_>>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The start of time for the official clients' delta token.
const EPOCH: &str = "1970-01-01T00:00:00.000Z";

/// The shape of a run: counts, concurrency, pull page sizes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rows inserted (and therefore pulled).
    pub rows: usize,
    /// GETs by id.
    pub reads: usize,
    /// PATCHes with If-Match.
    pub updates: usize,
    /// Filtered, ordered list queries.
    pub queries: usize,
    /// Requests in flight during the request phases.
    pub concurrency: usize,
    /// Warm-up requests (`GET /tables/TodoItem?$top=1`) before measuring; not reported.
    pub warmup: usize,
    /// How often each full pull runs (its numbers are the sum over the repeats).
    pub pull_repeats: usize,
    /// Unmeasured full pulls of each kind before its repeats (a failed one counts as an error).
    pub pull_warmups: usize,
    /// `$top` pages of the official clients' pull (their default is 50).
    pub official_pull_tops: Vec<u32>,
    /// `$top` of the keyset pull (our client's; 1000 is the official Node server's maximum).
    pub keyset_pull_top: u32,
}

/// One row of the data set.
#[derive(Debug, Clone)]
struct RowSpec {
    id: String,
    text: String,
    complete: bool,
}

/// Everything random in a run, derived from the seed up front so that every server gets the
/// same requests in the same order.
#[derive(Debug)]
struct DataSet {
    rows: Vec<RowSpec>,
    /// Row index of each read.
    reads: Vec<usize>,
    /// Row index and new `complete` value of each update (rows in a shuffled order, repeated
    /// when there are more updates than rows).
    updates: Vec<(usize, bool)>,
}

impl DataSet {
    fn new(plan: &Plan, seed: u64) -> DataSet {
        let mut rng = SplitMix64(seed);
        let rows = (0..plan.rows)
            .map(|i| RowSpec {
                id: rng.uuid(),
                text: format!("item {i}"),
                complete: rng.next() & 1 == 1,
            })
            .collect();
        let reads = (0..plan.reads).map(|_| rng.below(plan.rows)).collect();
        let mut order: Vec<usize> = (0..plan.rows).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let updates = (0..plan.updates)
            .map(|k| (order[k % order.len()], rng.next() & 1 == 1))
            .collect();
        DataSet {
            rows,
            reads,
            updates,
        }
    }
}

/// What the phases share: the HTTP client, the data set and the rows' current versions.
struct Ctx {
    http: BenchClient,
    /// `/tables/TodoItem`.
    table_path: String,
    data: DataSet,
    /// The current `version` of each row, as the last write answered it.
    versions: Mutex<Vec<String>>,
}

impl Ctx {
    fn version(&self, row: usize) -> Option<String> {
        let versions = match self.versions.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        versions.get(row).filter(|v| !v.is_empty()).cloned()
    }

    fn set_version(&self, row: usize, version: String) {
        let mut versions = match self.versions.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = versions.get_mut(row) {
            *slot = version;
        }
    }
}

/// Runs every phase against the server at `base_url` (labelled `server`) and returns one
/// measurement per phase, in order. `before_pulls` runs once, after the request phases and
/// before the first pull (the database's own upkeep the pulls should see, if any).
pub async fn run(
    server: &str,
    base_url: &str,
    plan: &Plan,
    seed: u64,
    before_pulls: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Measurement>> {
    let ctx = Arc::new(Ctx {
        http: bench_client(base_url)?,
        table_path: format!("/tables/{TABLE}"),
        data: DataSet::new(plan, seed),
        versions: Mutex::new(vec![String::new(); plan.rows]),
    });
    let conc = plan.concurrency.max(1);
    let mut out = Vec::new();

    // Opens the connections and lets Node's JIT warm up; the table stays empty.
    let warm = closed_loop(conc, plan.warmup, {
        let ctx = Arc::clone(&ctx);
        move |_| {
            let ctx = Arc::clone(&ctx);
            async move {
                list_len(&ctx.http, &ctx.table_path, &[("$top", "1".into())])
                    .await
                    .map(|_| 0)
            }
        }
    })
    .await;
    if let Some(e) = warm.tally.first_error {
        anyhow::bail!("{server}: warm-up request failed: {e}");
    }

    let phase = closed_loop(conc, plan.rows, {
        let ctx = Arc::clone(&ctx);
        move |i| insert(Arc::clone(&ctx), i)
    })
    .await;
    out.push(phase.into_measurement("insert (POST)", server, Rate::Requests));

    let phase = closed_loop(conc, plan.reads, {
        let ctx = Arc::clone(&ctx);
        move |k| read(Arc::clone(&ctx), k)
    })
    .await;
    out.push(phase.into_measurement("read by id (GET)", server, Rate::Requests));

    let phase = closed_loop(conc, plan.updates, {
        let ctx = Arc::clone(&ctx);
        move |k| update(Arc::clone(&ctx), k)
    })
    .await;
    out.push(phase.into_measurement("update (PATCH, If-Match)", server, Rate::Requests));

    let phase = query_loop(ctx.http.clone(), ctx.table_path.clone(), plan).await;
    out.push(phase.into_measurement(QUERY_ROW, server, Rate::Requests));

    before_pulls()?;
    let pulls = plan
        .official_pull_tops
        .iter()
        .map(|&top| {
            let label = format!("pull, official clients' way ($top={top})");
            (label, Pull::Official { top })
        })
        .chain(std::iter::once((
            format!(
                "pull, keyset, our client's way ($top={})",
                plan.keyset_pull_top
            ),
            Pull::Keyset {
                top: plan.keyset_pull_top,
            },
        )));
    for (label, pull) in pulls {
        // Read outside the pull's timing: two scrapes of `/metrics` around it.
        let before = list_durations(&ctx).await;
        let phase = repeat_pull(&ctx, plan, pull).await;
        let after = list_durations(&ctx).await;
        let mut measurement = phase.into_measurement(&label, server, Rate::Rows);
        measurement.server_mean_ms = mean_ms(before, after);
        out.push(measurement);
    }
    Ok(out)
}

/// The query phase's row (the anchor of the other query rows).
pub const QUERY_ROW: &str = "query (filter, orderby, top 50)";

/// `plan.queries` requests of the query phase (`QUERY_FILTER`, `$orderby=text`, `$top=50`)
/// against the table at `table_path`, `plan.concurrency` in flight.
async fn query_loop(http: BenchClient, table_path: String, plan: &Plan) -> Phase {
    let (http, url) = (Arc::new(http), Arc::new(table_path));
    closed_loop(plan.concurrency.max(1), plan.queries, move |_| {
        let (http, url) = (Arc::clone(&http), Arc::clone(&url));
        async move {
            let pairs = [
                ("$filter", QUERY_FILTER.to_string()),
                ("$orderby", "text".into()),
                ("$top", "50".into()),
            ];
            list_len(&http, &url, &pairs).await.map(|len| len as u64)
        }
    })
    .await
}

/// The client of the server at `base_url` (`http.rs`): every server under test gets the same.
fn bench_client(base_url: &str) -> anyhow::Result<BenchClient> {
    BenchClient::new(base_url, Duration::from_secs(REQUEST_TIMEOUT_SECS))
}

/// The query phase against another table of the same server (`table`), as row `label`.
pub async fn query_table(
    server: &str,
    base_url: &str,
    table: &str,
    plan: &Plan,
    label: &str,
) -> anyhow::Result<Measurement> {
    let http = bench_client(base_url)?;
    let phase = query_loop(http, format!("/tables/{table}"), plan).await;
    Ok(phase.into_measurement(label, server, Rate::Requests))
}

/// One keyset page of `top` rows after each of `positions` (`(updatedAt, id)` tokens), one
/// request at a time as a puller sends them; every page must come back full.
pub async fn keyset_pages(
    server: &str,
    base_url: &str,
    table: &str,
    positions: &[(String, String)],
    top: u32,
    label: &str,
) -> anyhow::Result<Measurement> {
    let http = bench_client(base_url)?;
    let url = format!("/tables/{table}");
    let mut tally = Tally::default();
    let mut delivered_rows = 0;
    let started = Instant::now();
    for (t, i) in positions {
        let pairs = [
            (
                "$filter",
                format!(
                    "(updatedAt ge datetimeoffset'{t}') and ((updatedAt gt datetimeoffset'{t}') or ((updatedAt eq datetimeoffset'{t}') and (id gt '{i}')))"
                ),
            ),
            ("$orderby", "updatedAt,id".into()),
            ("$top", top.to_string()),
            ("__includeDeleted", "true".into()),
        ];
        if let Ok(len) = tally.timed(list_len(&http, &url, &pairs)).await {
            tally.rows += len as u64;
            if len == top as usize {
                delivered_rows += len as u64;
            } else {
                tally.error(format!("a page after ({t}, {i}) had {len} rows"));
            }
        }
    }
    let phase = Phase {
        tally,
        delivered_rows,
        wall: started.elapsed(),
    };
    Ok(phase.into_measurement(label, server, Rate::Rows))
}

/// How many users write at once in the per-user phases (one per request in flight).
pub const USERS: usize = 8;

/// The per-owner clock's gain: `rows` inserts with `USERS` users writing concurrently (request
/// `i` by user `i % USERS`, with their token), first into a shared table (every writer takes
/// the table's one clock row), then into a per-user table (each owner has their own clock row,
/// so writers of different users do not queue behind each other). Same tokens, same bodies.
pub async fn per_user_inserts(
    server: &str,
    base_url: &str,
    plan: &Plan,
    seed: u64,
    tokens: Vec<String>,
) -> anyhow::Result<Vec<Measurement>> {
    let http = bench_client(base_url)?;
    let mut rng = SplitMix64(seed ^ 0x5eed_0008);
    let ids: Arc<Vec<String>> = Arc::new((0..plan.rows).map(|_| rng.uuid()).collect());
    let tokens = Arc::new(tokens);
    let mut out = Vec::new();
    for (table, label) in [
        (
            "SharedItem",
            format!("insert, shared table, {USERS} users concurrently"),
        ),
        (
            "UserItem",
            format!("insert, per-user table, {USERS} users concurrently"),
        ),
    ] {
        let url = Arc::new(format!("/tables/{table}"));
        let phase = closed_loop(USERS, plan.rows, {
            let (http, ids, tokens) = (http.clone(), Arc::clone(&ids), Arc::clone(&tokens));
            move |i| {
                let (http, ids, tokens, url) = (
                    http.clone(),
                    Arc::clone(&ids),
                    Arc::clone(&tokens),
                    Arc::clone(&url),
                );
                async move {
                    let token = &tokens[i % tokens.len()];
                    let body =
                        json!({ "id": ids[i], "text": format!("item {i}"), "complete": false });
                    let token = HeaderValue::from_str(token)
                        .map_err(|e| format!("a user's token is not a header value: {e}"))?;
                    let request = http
                        .post(url.as_str())
                        .header(HeaderName::from_static("x-zumo-auth"), token)
                        .json(&body);
                    send_item(request, "POST").await.map(|_| 1)
                }
            }
        })
        .await;
        out.push(phase.into_measurement(&label, server, Rate::Requests));
    }
    Ok(out)
}

/// Counts and latencies of a phase (or of one worker's share of it).
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    rows: u64,
    errors: u64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.rows += other.rows;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        if let Some(e) = other.first_error {
            self.first_error.get_or_insert(e);
        }
    }

    /// Times one request and books its outcome.
    async fn timed<T, F>(&mut self, request: F) -> Result<T, ()>
    where
        F: Future<Output = Result<T, String>>,
    {
        let started = Instant::now();
        let result = request.await;
        self.latencies.push(started.elapsed());
        self.requests += 1;
        result.map_err(|e| self.error(e))
    }

    /// One page of a pull, timed from the request to its decoded rows (which borrow `body`,
    /// hence the two steps): the body, for [`Tally::decoded`].
    async fn fetched(&mut self, ctx: &Ctx, pairs: &[(&str, String)]) -> Option<(Instant, Bytes)> {
        let started = Instant::now();
        match list_body(&ctx.http, &ctx.table_path, pairs).await {
            Ok(body) => Some((started, body)),
            Err(e) => {
                self.latencies.push(started.elapsed());
                self.requests += 1;
                self.error(e);
                None
            }
        }
    }

    /// The rows of a page [`Tally::fetched`] got, its time booked.
    fn decoded<'b>(&mut self, started: Instant, body: &'b [u8]) -> Option<Vec<RowKey<'b>>> {
        let rows = decode_list(body);
        self.latencies.push(started.elapsed());
        self.requests += 1;
        rows.map_err(|e| self.error(e)).ok()
    }
}

/// A finished phase: its tally, the rows it delivered once and its wall-clock time.
struct Phase {
    tally: Tally,
    delivered_rows: u64,
    wall: Duration,
}

impl Phase {
    fn into_measurement(self, operation: &str, server: &str, rate: Rate) -> Measurement {
        let mut latencies = self.tally.latencies;
        latencies.sort_unstable();
        Measurement {
            operation: operation.to_string(),
            server: server.to_string(),
            rate,
            requests: self.tally.requests,
            rows: self.tally.rows,
            delivered_rows: self.delivered_rows,
            errors: self.tally.errors,
            wall: self.wall,
            latencies,
            first_error: self.tally.first_error,
            anchor: None,
            server_mean_ms: None,
        }
    }
}

/// The sum (seconds) and count of our server's `list` request durations on the bench table so
/// far, from `/metrics`; None when the server has no such histogram (the official server).
async fn list_durations(ctx: &Ctx) -> Option<(f64, u64)> {
    let response = ctx.http.get("/metrics").send().await.ok()?;
    if !response.status.is_success() {
        return None;
    }
    let text = String::from_utf8(response.body.to_vec()).ok()?;
    let labels = format!("{{table=\"{TABLE}\",operation=\"list\"}}");
    let value = |name: &str| {
        let prefix = format!("tablesync_http_request_duration_seconds_{name}{labels} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")? as u64))
}

/// The server's mean time per list request between two [`list_durations`] readings, in ms.
fn mean_ms(before: Option<(f64, u64)>, after: Option<(f64, u64)>) -> Option<f64> {
    let ((sum0, n0), (sum1, n1)) = (before?, after?);
    (n1 > n0).then(|| (sum1 - sum0) / (n1 - n0) as f64 * 1000.0)
}

/// Runs `count` operations with `concurrency` in flight: each worker takes the next index until
/// none is left. An operation returns the rows it wrote or received.
async fn closed_loop<F, Fut>(concurrency: usize, count: usize, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                let result = op(i).await;
                tally.latencies.push(t.elapsed());
                tally.requests += 1;
                match result {
                    Ok(rows) => tally.rows += rows,
                    Err(e) => tally.error(e),
                }
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("a worker task failed: {e}")),
        }
    }
    Phase {
        delivered_rows: tally.rows,
        tally,
        wall: started.elapsed(),
    }
}

/// Which pull algorithm, with its page size.
#[derive(Debug, Clone, Copy)]
enum Pull {
    /// The official clients' `ge` + `$skip` scheme.
    Official { top: u32 },
    /// Our client's keyset scheme.
    Keyset { top: u32 },
}

/// Runs a full pull `plan.pull_warmups` times unmeasured, then `plan.pull_repeats` times,
/// checking each time that every row arrived (a warm-up that fails is an error of the phase).
async fn repeat_pull(ctx: &Ctx, plan: &Plan, pull: Pull) -> Phase {
    let mut tally = Tally::default();
    for _ in 0..plan.pull_warmups {
        let mut warm = Tally::default();
        let outcome = pull_once(ctx, pull, &mut warm).await;
        match (outcome, warm.first_error) {
            (Err(e), _) | (Ok(_), Some(e)) => tally.error(format!("warm-up pull: {e}")),
            (Ok(_), None) => {}
        }
    }
    let repeats = plan.pull_repeats.max(1);
    let mut outcomes = Vec::with_capacity(repeats);
    let started = Instant::now();
    for _ in 0..repeats {
        outcomes.push(pull_once(ctx, pull, &mut tally).await);
    }
    let wall = started.elapsed();
    // Counted once the clock has stopped: hashing every id is the bench's bookkeeping, not
    // the server's time (a 1000-row page's ids took about 50 µs, a twentieth of our page).
    let mut delivered_rows = 0;
    for outcome in outcomes {
        match outcome.map(Received::distinct) {
            Ok(distinct) if distinct == plan.rows => delivered_rows += distinct as u64,
            Ok(distinct) => tally.error(format!(
                "the pull ended with {distinct} distinct rows, the table has {}",
                plan.rows
            )),
            Err(e) => tally.error(e),
        }
    }
    Phase {
        tally,
        delivered_rows,
        wall,
    }
}

/// One full pull of either kind.
async fn pull_once(ctx: &Ctx, pull: Pull, tally: &mut Tally) -> Result<Received, String> {
    match pull {
        Pull::Official { top } => pull_official(ctx, top, tally).await.map(Received::Ids),
        Pull::Keyset { top } => pull_keyset(ctx, top, tally).await.map(Received::Distinct),
    }
}

/// What one full pull received.
enum Received {
    /// Every id, repeats included (the official clients' pull downloads boundary rows again).
    Ids(Vec<String>),
    /// This many rows, known to be distinct (the keyset pull checks their order).
    Distinct(usize),
}

impl Received {
    /// How many distinct rows.
    fn distinct(self) -> usize {
        match self {
            Received::Ids(ids) => ids.iter().collect::<HashSet<&String>>().len(),
            Received::Distinct(n) => n,
        }
    }
}

/// A pull's request budget: far more than any correct pull needs, so a server that ignores
/// `$skip` cannot loop forever.
fn pull_requests_max(rows: usize) -> usize {
    2 * rows + 100
}

/// The official clients' incremental pull (protocol.md 6.9, .NET PullAsync):
/// `$filter=updatedAt ge datetimeoffset'<token>'&$orderby=updatedAt&$top=<top>&$skip=<skip>`;
/// after each page the token becomes the page's largest `updatedAt` and `$skip` returns to 0,
/// or, when the token did not move, `$skip` grows by the page's length; done on an empty page.
/// Returns the ids received, repeats included; downloaded rows (boundary rows again each time)
/// are counted in the tally.
async fn pull_official(ctx: &Ctx, top: u32, tally: &mut Tally) -> Result<Vec<String>, String> {
    let mut token = EPOCH.to_string();
    let mut skip = 0usize;
    let mut ids = Vec::with_capacity(ctx.data.rows.len());
    for _ in 0..pull_requests_max(ctx.data.rows.len()) {
        let pairs = [
            ("$filter", format!("updatedAt ge datetimeoffset'{token}'")),
            ("$orderby", "updatedAt".into()),
            ("$top", top.to_string()),
            ("$skip", skip.to_string()),
            ("__includeDeleted", "true".into()),
        ];
        let Some((started, body)) = tally.fetched(ctx, &pairs).await else {
            return Ok(ids);
        };
        let Some(page) = tally.decoded(started, &body) else {
            return Ok(ids);
        };
        if page.is_empty() {
            return Ok(ids);
        }
        tally.rows += page.len() as u64;
        // Wire-form timestamps (always 3 fractional digits and `Z`) order as text.
        let mut max: &str = &token;
        for row in &page {
            if *row.updated_at > *max {
                max = &row.updated_at;
            }
            ids.push(row.id.clone().into_owned());
        }
        if max > token.as_str() {
            token = max.to_owned();
            skip = 0;
        } else {
            skip += page.len();
        }
    }
    Err(format!(
        "the official-style pull did not finish within {} requests",
        pull_requests_max(ctx.data.rows.len())
    ))
}

/// Our client's pull (ARCHITECTURE.md "Incremental pull"): keyset paging on (`updatedAt`, `id`)
/// with `$orderby=updatedAt,id`; done on a page shorter than `$top`. Returns how many rows it
/// received, all distinct: every key must be greater than the one before it (a key out of
/// order is an error), which proves it without keeping the ids.
async fn pull_keyset(ctx: &Ctx, top: u32, tally: &mut Tally) -> Result<usize, String> {
    let mut after: Option<(String, String)> = None;
    let mut received = 0;
    for _ in 0..pull_requests_max(ctx.data.rows.len()) {
        let mut pairs = Vec::with_capacity(4);
        if let Some((t, i)) = &after {
            pairs.push((
                "$filter",
                format!(
                    "(updatedAt ge datetimeoffset'{t}') and ((updatedAt gt datetimeoffset'{t}') or ((updatedAt eq datetimeoffset'{t}') and (id gt '{}')))",
                    i.replace('\'', "''")
                ),
            ));
        }
        pairs.push(("$orderby", "updatedAt,id".into()));
        pairs.push(("$top", top.to_string()));
        pairs.push(("__includeDeleted", "true".into()));
        let Some((started, body)) = tally.fetched(ctx, &pairs).await else {
            return Ok(received);
        };
        let Some(page) = tally.decoded(started, &body) else {
            return Ok(received);
        };
        tally.rows += page.len() as u64;
        let mut previous = after.as_ref().map(|(t, i)| (t.as_str(), i.as_str()));
        for row in &page {
            let key = (&*row.updated_at, &*row.id);
            if let Some(before) = previous.filter(|&before| key <= before) {
                return Err(format!(
                    "the keyset pull got the row {key:?} after {before:?}: out of order"
                ));
            }
            previous = Some(key);
        }
        received += page.len();
        if let Some(last) = page.last() {
            after = Some((last.updated_at.to_string(), last.id.to_string()));
        }
        if page.len() != top as usize {
            return Ok(received);
        }
    }
    Err(format!(
        "the keyset pull did not finish within {} requests",
        pull_requests_max(ctx.data.rows.len())
    ))
}

/// `POST /tables/TodoItem` with a client-generated id; remembers the row's version.
async fn insert(ctx: Arc<Ctx>, i: usize) -> Result<u64, String> {
    let Some(row) = ctx.data.rows.get(i) else {
        return Err(format!("no row {i} in the data set"));
    };
    let body = json!({ "id": row.id, "text": row.text, "complete": row.complete });
    let request = ctx.http.post(&ctx.table_path).json(&body);
    let item = send_item(request, "POST").await?;
    ctx.set_version(i, version_of(&item)?);
    Ok(1)
}

/// `GET /tables/TodoItem/{id}`; checks that the right row came back.
async fn read(ctx: Arc<Ctx>, k: usize) -> Result<u64, String> {
    let Some(row) = ctx.data.reads.get(k).and_then(|&r| ctx.data.rows.get(r)) else {
        return Err(format!("no read {k} in the data set"));
    };
    let request = ctx.http.get(&format!("{}/{}", ctx.table_path, row.id));
    let item = send_item(request, "GET").await?;
    match item.get("id").and_then(Value::as_str) {
        Some(id) if id == row.id => Ok(1),
        _ => Err(format!("GET {} answered another item: {item}", row.id)),
    }
}

/// `PATCH /tables/TodoItem/{id}` with `If-Match: "<current version>"`; remembers the new one.
async fn update(ctx: Arc<Ctx>, k: usize) -> Result<u64, String> {
    let Some(&(r, complete)) = ctx.data.updates.get(k) else {
        return Err(format!("no update {k} in the data set"));
    };
    let Some(row) = ctx.data.rows.get(r) else {
        return Err(format!("no row {r} in the data set"));
    };
    let Some(version) = ctx.version(r) else {
        return Err(format!(
            "row {} has no known version (its insert failed)",
            row.id
        ));
    };
    let if_match = HeaderValue::from_str(&format!("\"{version}\""))
        .map_err(|e| format!("version {version:?} is not a header value: {e}"))?;
    // The new text keeps the row's `item <i>` prefix, so the query phase's startswith still
    // selects the same rows.
    let body = json!({ "text": format!("{} (edited {k})", row.text), "complete": complete });
    let request = ctx
        .http
        .patch(&format!("{}/{}", ctx.table_path, row.id))
        .header(IF_MATCH, if_match)
        .json(&body);
    let item = send_item(request, "PATCH").await?;
    ctx.set_version(r, version_of(&item)?);
    Ok(1)
}

/// `GET <table_path>?<pairs>`; how many rows the page has (decoded as [`RowKey`]s).
async fn list_len(
    http: &BenchClient,
    table_path: &str,
    pairs: &[(&str, String)],
) -> Result<usize, String> {
    let body = list_body(http, table_path, pairs).await?;
    decode_list(&body).map(|rows| rows.len())
}

/// `GET <table_path>?<pairs>`; the page's body, not yet decoded.
async fn list_body(
    http: &BenchClient,
    table_path: &str,
    pairs: &[(&str, String)],
) -> Result<Bytes, String> {
    send_bytes(http.get(table_path).query(pairs), "GET list").await
}

/// A listed page's rows (their keys, [`RowKey`]), or why the body is none.
fn decode_list(body: &[u8]) -> Result<Vec<RowKey<'_>>, String> {
    decode_page(body).map_err(|e| {
        format!(
            "GET list answered no array of rows with string id and updatedAt ({e}): {}",
            shorten(&String::from_utf8_lossy(body))
        )
    })
}

/// Sends a single-item request and returns the item.
async fn send_item(request: RequestBuilder, what: &str) -> Result<Value, String> {
    match send(request, what).await? {
        item @ Value::Object(_) => Ok(item),
        other => Err(format!(
            "{what} answered a non-object: {}",
            shorten(&other.to_string())
        )),
    }
}

/// Sends `request` with the API version header; a 2xx JSON body or a descriptive error.
async fn send(request: RequestBuilder, what: &str) -> Result<Value, String> {
    let body = send_bytes(request, what).await?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{what} answered invalid JSON ({e}): {}",
            shorten(&String::from_utf8_lossy(&body))
        )
    })
}

/// Sends `request` with the API version header; a 2xx body or a descriptive error.
async fn send_bytes(request: RequestBuilder, what: &str) -> Result<Bytes, String> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    let (status, body) = (response.status, response.body);
    if !status.is_success() {
        return Err(format!(
            "{what} answered {status}: {}",
            shorten(&String::from_utf8_lossy(&body))
        ));
    }
    Ok(body)
}

/// The `version` of an item.
fn version_of(item: &Value) -> Result<String, String> {
    item.get("version")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the answer has no version: {}", shorten(&item.to_string())))
}

fn shorten(text: &str) -> String {
    text.chars().take(BODY_SHOWN_CHARS_MAX).collect()
}
