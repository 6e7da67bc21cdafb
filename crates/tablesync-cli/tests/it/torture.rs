//! The no-missed-rows torture test (issue 5): several `tablesync serve` processes on one fresh
//! PostgreSQL database, concurrent writers whose transactions take random lengths of time, and
//! incremental pullers pulling through both processes the whole time. At the end every puller's
//! local copy must equal the server's table row for row (id, version, deleted).
//!
//! * Writers (8): inserts, updates with `If-Match`, soft deletes, each request to a randomly
//!   chosen process. The servers run with the test-only `write_hold_ms_max`, which holds every
//!   write transaction open for a random time between taking its stamp and committing: exactly
//!   the window in which a timestamp-watermark pull can skip a row.
//! * Pullers (4, alternating between the processes page by page): two with our keyset scheme
//!   (`(updatedAt, id) > token`, `$orderby=updatedAt,id`), two with the official clients' scheme
//!   (`updatedAt ge token`, `$orderby=updatedAt`, `$skip` while the token does not move, stop on
//!   an empty page; `azure-mobile-apps-client`'s `pull.js`). They talk HTTP with reqwest, not
//!   through our SDK, so the test checks the server alone.
//! * The random choices come from a fixed seed; the run lasts [`TORTURE_SECS_DEFAULT`] seconds,
//!   or `TABLESYNC_TORTURE_SECS` for a longer soak.
//!
//! The second test runs the same body with the guard off (`commit_order_stamps = false`) and
//! must see at least one puller miss a row: proof that the first test can catch the bug.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{fresh_database, tablesync_serve_env, ServerProcess, StoreKind};

/// How long the writers write by default, in seconds (bounded for CI).
const TORTURE_SECS_DEFAULT: u64 = 8;
/// Environment variable that sets a longer run, in seconds.
const TORTURE_SECS_ENV: &str = "TABLESYNC_TORTURE_SECS";
/// The fixed seed of every random choice.
const SEED: u64 = 0x7AB1_E5C0_2024_0005;
const WRITERS: usize = 8;
const SERVERS: usize = 2;
/// Rows per pull page: small, so pulls take many pages and interleave with writes.
const PAGE_ROWS: usize = 20;
const TABLE: &str = "Torture";
/// A bound against a hung request, not a timing assertion.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A small deterministic generator (xorshift64*), so a seed reproduces a run's choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One row as a puller (or the server) knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowState {
    version: String,
    deleted: bool,
}

type Replica = HashMap<String, RowState>;

/// What one run changes.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// `[store] commit_order_stamps`.
    guard: bool,
    /// `[store] write_hold_ms_max`.
    write_hold_ms_max: u64,
    /// How long the writers write.
    secs: u64,
    seed: u64,
}

/// Everything a run observed.
struct Outcome {
    writes: u64,
    pulls: u64,
    server: Replica,
    /// Per puller: its name and its copy after the final pull.
    copies: Vec<(String, Replica)>,
}

/// How a copy differs from the server's table.
#[derive(Debug, Default)]
struct Diff {
    /// Rows the puller never got (id → the server's state).
    missing: BTreeMap<String, RowState>,
    /// Rows the puller has at another version or deleted flag (id → (puller's, server's)).
    stale: BTreeMap<String, (RowState, RowState)>,
    /// Rows the puller has that the server does not.
    extra: Vec<String>,
}

impl Diff {
    fn of(copy: &Replica, server: &Replica) -> Diff {
        let mut diff = Diff::default();
        for (id, want) in server {
            match copy.get(id) {
                None => {
                    diff.missing.insert(id.clone(), want.clone());
                }
                Some(have) if have != want => {
                    diff.stale.insert(id.clone(), (have.clone(), want.clone()));
                }
                Some(_) => {}
            }
        }
        diff.extra = copy
            .keys()
            .filter(|id| !server.contains_key(*id))
            .cloned()
            .collect();
        diff
    }

    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty() && self.extra.is_empty()
    }
}

fn torture_secs() -> u64 {
    match std::env::var(TORTURE_SECS_ENV) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{TORTURE_SECS_ENV}={v:?} is not a number of seconds")),
        Err(_) => TORTURE_SECS_DEFAULT,
    }
}

/// With the guard on, no puller misses or keeps a stale row.
#[test]
fn torture_incremental_pulls_miss_no_rows() {
    let round = Round {
        guard: true,
        write_hold_ms_max: 25,
        secs: torture_secs(),
        seed: SEED,
    };
    let outcome = run(round);
    println!(
        "torture (guard on, {} s): {} writes, {} pull pages, {} rows",
        round.secs,
        outcome.writes,
        outcome.pulls,
        outcome.server.len()
    );
    assert!(
        outcome.writes > 0 && !outcome.server.is_empty(),
        "nothing was written"
    );
    let mut failures = Vec::new();
    for (name, copy) in &outcome.copies {
        let diff = Diff::of(copy, &outcome.server);
        if !diff.is_empty() {
            failures.push(format!("{name}: {diff:#?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "pullers' copies differ from the server's table:\n{}",
        failures.join("\n")
    );
}

/// The same body with the guard off must catch a missed row (a few bounded rounds, since the
/// race is probabilistic; long holds make it near certain in the first).
#[test]
fn torture_catches_missed_rows_without_the_guard() {
    const ROUNDS_MAX: u64 = 3;
    for attempt in 0..ROUNDS_MAX {
        let round = Round {
            guard: false,
            write_hold_ms_max: 200,
            secs: 5,
            seed: SEED.wrapping_add(attempt),
        };
        let outcome = run(round);
        let missed: Vec<String> = outcome
            .copies
            .iter()
            .filter_map(|(name, copy)| {
                let diff = Diff::of(copy, &outcome.server);
                (!diff.is_empty()).then(|| {
                    format!(
                        "{name}: {} missing, {} stale",
                        diff.missing.len(),
                        diff.stale.len()
                    )
                })
            })
            .collect();
        println!(
            "torture (guard off) round {attempt}: {} writes, {} pull pages, {} rows; differing copies: {missed:?}",
            outcome.writes,
            outcome.pulls,
            outcome.server.len()
        );
        if !missed.is_empty() {
            return;
        }
    }
    panic!(
        "with commit_order_stamps = false no puller missed a row in {ROUNDS_MAX} rounds: \
         the torture test does not catch the bug it exists for"
    );
}

/// One run: a fresh database, two server processes, writers and pullers for `round.secs`, then
/// a final pull each and the server's table.
fn run(round: Round) -> Outcome {
    let db = fresh_database(StoreKind::Postgres);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("torture.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ncommit_order_stamps = {}\nwrite_hold_ms_max = {}\npool_connections_max = 12\n\n\
             [[tables]]\nname = \"{TABLE}\"\ncolumns = {{ n = \"number\", note = \"string\" }}\n",
            round.guard, round.write_hold_ms_max
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    // Started at the same time, so they also race to create the schema (the advisory lock
    // serialises that). Per-request log lines would only cost CPU here.
    let servers: Vec<ServerProcess> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..SERVERS)
            .map(|_| {
                scope.spawn(|| {
                    tablesync_serve_env(
                        Path::new(db.url()),
                        &["--config", &config],
                        &[("RUST_LOG", "warn")],
                    )
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("server start"))
            .collect()
    });
    let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(drive(round, urls));
    // Server output on failure helps; keep the processes until here.
    drop(servers);
    outcome
}

async fn drive(round: Round, urls: Vec<String>) -> Outcome {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .build()
        .expect("http client");
    let urls = Arc::new(urls);
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let writer = Writer {
            n: w,
            http: http.clone(),
            urls: Arc::clone(&urls),
            rng: Rng::new(round.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            live: Vec::new(),
            inserted: 0,
            writes: 0,
        };
        writers.push(tokio::spawn(writer.run(Arc::clone(&stop))));
    }
    let mut pullers = Vec::new();
    for p in 0..4 {
        let scheme = if p % 2 == 0 {
            Scheme::Keyset { token: None }
        } else {
            Scheme::Official { token: None }
        };
        let puller = Puller {
            name: format!("puller {p} ({})", scheme.name()),
            scheme,
            http: http.clone(),
            urls: Arc::clone(&urls),
            next_server: p,
            rng: Rng::new(round.seed ^ (p as u64 + 101).wrapping_mul(0xD1B5_4A32_D192_ED03)),
            copy: Replica::new(),
            pages: 0,
        };
        pullers.push(tokio::spawn(puller.run(Arc::clone(&stop))));
    }

    tokio::time::sleep(Duration::from_secs(round.secs)).await;
    stop.store(true, Ordering::SeqCst);
    let mut writes = 0;
    for w in writers {
        writes += w.await.expect("writer task");
    }
    // Every write has been answered (so committed); one final pull each.
    let mut copies = Vec::new();
    let mut pulls = 0;
    for p in pullers {
        let mut puller = p.await.expect("puller task");
        puller.pull_until_caught_up().await;
        pulls += puller.pages;
        copies.push((puller.name, puller.copy));
    }
    let server = server_table(&http, &urls[0]).await;
    Outcome {
        writes,
        pulls,
        server,
        copies,
    }
}

/// GET with the API version header; the parsed JSON body. Panics (fails the test) on anything
/// but 200.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .header("ZUMO-API-VERSION", "2.0.0")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "GET {url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

fn row_state(item: &Value) -> (String, RowState) {
    let id = item["id"].as_str().expect("id").to_owned();
    let version = item["version"].as_str().expect("version").to_owned();
    let deleted = item["deleted"].as_bool().expect("deleted");
    (id, RowState { version, deleted })
}

/// The server's whole table, tombstones included, paged by id.
async fn server_table(http: &reqwest::Client, base: &str) -> Replica {
    let mut out = Replica::new();
    let mut skip = 0;
    loop {
        let page = get_json(
            http,
            &format!(
                "{base}/tables/{TABLE}?__includeDeleted=true&$orderby=id&$top=1000&$skip={skip}"
            ),
        )
        .await;
        let items = page.as_array().expect("a list is an array");
        for item in items {
            let (id, state) = row_state(item);
            out.insert(id, state);
        }
        if items.len() < 1000 {
            return out;
        }
        skip += items.len();
    }
}

/// One writer: its own rows, so its `If-Match` versions are always current and every write
/// must succeed.
struct Writer {
    n: usize,
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    rng: Rng,
    /// Its live rows: (id, current version).
    live: Vec<(String, String)>,
    inserted: u64,
    writes: u64,
}

impl Writer {
    async fn run(mut self, stop: Arc<AtomicBool>) -> u64 {
        while !stop.load(Ordering::SeqCst) {
            self.write_once().await;
        }
        self.writes
    }

    async fn write_once(&mut self) {
        let base = &self.urls[self.rng.below(self.urls.len() as u64) as usize];
        let choice = self.rng.below(100);
        let (method, url, body, if_match, index) = if self.live.is_empty() || choice < 40 {
            self.inserted += 1;
            let id = format!("w{}-{}", self.n, self.inserted);
            let body = json!({"id": id, "n": self.inserted, "note": "new"});
            (
                reqwest::Method::POST,
                format!("{base}/tables/{TABLE}"),
                Some(body),
                None,
                None,
            )
        } else {
            let index = self.rng.below(self.live.len() as u64) as usize;
            let (id, version) = &self.live[index];
            let url = format!("{base}/tables/{TABLE}/{id}");
            let etag = format!("\"{version}\"");
            if choice < 80 {
                let body = json!({"n": self.rng.below(1000), "note": "updated"});
                (
                    reqwest::Method::PATCH,
                    url,
                    Some(body),
                    Some(etag),
                    Some(index),
                )
            } else {
                (reqwest::Method::DELETE, url, None, Some(etag), Some(index))
            }
        };
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("ZUMO-API-VERSION", "2.0.0");
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Some(etag) = &if_match {
            request = request.header("If-Match", etag);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let expected = if method == reqwest::Method::POST {
            201
        } else {
            200
        };
        assert_eq!(status, expected, "{method} {url}: {text}");
        let item: Value = serde_json::from_str(&text).expect("a written item");
        let (id, state) = row_state(&item);
        match (method, index) {
            (reqwest::Method::DELETE, Some(i)) => {
                assert!(state.deleted, "{url}: {text}");
                self.live.swap_remove(i);
            }
            (_, Some(i)) => self.live[i].1 = state.version,
            (_, None) => self.live.push((id, state.version)),
        }
        self.writes += 1;
    }
}

/// A pull scheme and its delta token.
enum Scheme {
    /// Ours: `(updatedAt, id) > token`, ordered by (updatedAt, id).
    Keyset { token: Option<(String, String)> },
    /// The official clients': `updatedAt ge token`, ordered by updatedAt, `$skip` while the token
    /// does not move, stop on an empty page. The token starts at the epoch, like `pull.js`.
    /// After a skipped page it checks that the skip passed over the rows it meant to
    /// (`boundary_still_at`), which the official clients do not: see `pull_official`.
    Official { token: Option<String> },
}

impl Scheme {
    fn name(&self) -> &'static str {
        match self {
            Scheme::Keyset { .. } => "keyset",
            Scheme::Official { .. } => "official updatedAt ge",
        }
    }
}

struct Puller {
    name: String,
    scheme: Scheme,
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    /// Pages alternate between the processes.
    next_server: usize,
    rng: Rng,
    copy: Replica,
    pages: u64,
}

/// Percent-encode everything but unreserved characters (RFC 3986), enough for OData values.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Puller {
    async fn run(mut self, stop: Arc<AtomicBool>) -> Puller {
        while !stop.load(Ordering::SeqCst) {
            self.pull_until_caught_up().await;
            // A short random pause so pulls land at every point of the writers' transactions.
            let pause = self.rng.below(10);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self
    }

    fn base(&mut self) -> String {
        let base = self.urls[self.next_server % self.urls.len()].clone();
        self.next_server += 1;
        base
    }

    fn apply(&mut self, items: &[Value]) {
        for item in items {
            let (id, state) = row_state(item);
            self.copy.insert(id, state);
        }
    }

    /// One incremental pull: page until the scheme says it is done.
    async fn pull_until_caught_up(&mut self) {
        match &self.scheme {
            Scheme::Keyset { .. } => self.pull_keyset().await,
            Scheme::Official { .. } => self.pull_official().await,
        }
    }

    async fn pull_keyset(&mut self) {
        loop {
            let Scheme::Keyset { token } = &self.scheme else {
                unreachable!()
            };
            let filter = match token {
                Some((at, id)) => format!(
                    "$filter={}&",
                    enc(&format!(
                        "(updatedAt gt datetimeoffset'{at}') or ((updatedAt eq datetimeoffset'{at}') and (id gt '{}'))",
                        id.replace('\'', "''")
                    ))
                ),
                None => String::new(),
            };
            let base = self.base();
            let url = format!(
                "{base}/tables/{TABLE}?{filter}$orderby=updatedAt,id&$top={PAGE_ROWS}&__includeDeleted=true"
            );
            let page = get_json(&self.http, &url).await;
            let items = page.as_array().expect("a list is an array").clone();
            self.pages += 1;
            self.apply(&items);
            if let Some(last) = items.last() {
                let at = last["updatedAt"].as_str().expect("updatedAt").to_owned();
                let id = last["id"].as_str().expect("id").to_owned();
                self.scheme = Scheme::Keyset {
                    token: Some((at, id)),
                };
            }
            if items.len() < PAGE_ROWS {
                return;
            }
        }
    }

    /// Whether the first `count` rows at or after `at` are all still at `at`: then a `$skip` of
    /// `count` read after them skipped exactly those rows. Asked after the skipped page, so a
    /// yes also holds for that page's snapshot (a stamp only moves forward, never back to `at`).
    async fn boundary_still_at(&mut self, at: &str, count: usize) -> bool {
        let base = self.base();
        let url = format!(
            "{base}/tables/{TABLE}?$filter={}&$orderby=updatedAt&$top={count}&__includeDeleted=true",
            enc(&format!("updatedAt ge datetimeoffset'{at}'"))
        );
        let page = get_json(&self.http, &url).await;
        let rows = page.as_array().expect("a list is an array");
        rows.len() == count && rows.iter().all(|r| r["updatedAt"].as_str() == Some(at))
    }

    async fn pull_official(&mut self) {
        let mut skip = 0;
        loop {
            let Scheme::Official { token } = &self.scheme else {
                unreachable!()
            };
            let at = token
                .clone()
                .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned());
            let base = self.base();
            let url = format!(
                "{base}/tables/{TABLE}?$filter={}&$orderby=updatedAt&$top={PAGE_ROWS}&$skip={skip}&__includeDeleted=true",
                enc(&format!("updatedAt ge datetimeoffset'{at}'"))
            );
            let page = get_json(&self.http, &url).await;
            let items = page.as_array().expect("a list is an array").clone();
            self.pages += 1;
            self.apply(&items);
            if skip > 0 && !self.boundary_still_at(&at, skip).await {
                // The official clients' one hole, on any server: `$skip` is positional, so when
                // a row counted at the token was written again (its stamp moved past the
                // token) before this page was read, the skip passed over a newer row instead,
                // and a token taken from this page would step past that row for good
                // (ARCHITECTURE.md "PostgreSQL"). The stamps cannot close it; a client that
                // checks re-reads from the token, and so does this puller.
                skip = 0;
                continue;
            }
            let Some(last) = items.last() else {
                return;
            };
            let last_at = last["updatedAt"].as_str().expect("updatedAt").to_owned();
            if last_at == at {
                skip += items.len();
            } else {
                self.scheme = Scheme::Official {
                    token: Some(last_at),
                };
                skip = 0;
            }
        }
    }
}
