//! Proof 2 of issue 11: crashes lose nothing. Processes are killed with SIGKILL (`Child::kill`)
//! at seeded moments, many times per test, on each server store:
//!
//! * **The server, in the middle of writes.** Writers insert and update rows over HTTP, one
//!   request at a time each, and remember every write the server acknowledged; the server is
//!   killed while they write and started again on the same database. After each kill the
//!   database opens (SQLite: `PRAGMA integrity_check` is `ok`), and every acknowledged write is
//!   there with its acknowledged value (the one request in flight per writer may or may not have
//!   landed, and either is fine).
//! * **The client, in the middle of a push.** A store with queued inserts and updates is pushed
//!   by `tablesync push` processes that are killed at seeded moments. After each kill the store
//!   passes `PRAGMA integrity_check`, every local write is still in it, and each is either still
//!   queued or on the server with its value. A last push completes; then the server holds
//!   exactly the local writes and the queue is empty.
//! * **The client, in the middle of a pull.** `tablesync pull` with small pages is killed the
//!   same way. After each kill the store passes `integrity_check`, every local row equals the
//!   server's, and every server row up to the saved delta token is present (the token never
//!   runs ahead of the rows). A last pull completes and the store equals the server.
//!
//! Bounded: [`SERVER_KILLS`] + [`PUSH_KILLS`] + [`PULL_KILLS`] kills per store, each after at
//! most [`KILL_AFTER_MS_MAX`] ms; the delays only pick the moment, nothing asserts a timing.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tablesync_client::{Client, ColumnType, LocalStore, SyncContext, TableDefinition};

use crate::util::{fresh_database, tablesync_serve_env, ServerProcess, StoreKind};

/// Server kills per store.
const SERVER_KILLS: usize = 8;
/// `tablesync push` kills per store.
const PUSH_KILLS: usize = 10;
/// `tablesync pull` kills per store.
const PULL_KILLS: usize = 10;
/// Concurrent writers while the server is killed.
const WRITERS: usize = 3;
/// Rows queued in the client store before the push kills.
const QUEUED_ROWS: usize = 120;
/// Rows per page of the killed pulls (small: many pages, many transactions to interrupt).
const PULL_PAGE_ROWS: &str = "5";
/// The shortest and longest wait before a kill, in milliseconds (seeded within).
const KILL_AFTER_MS_MIN: u64 = 20;
const KILL_AFTER_MS_MAX: u64 = 400;
/// The span of the pulls' kill moments after [`KILL_AFTER_MS_MIN`], in milliseconds.
const PULL_KILL_AFTER_MS_SPAN: u64 = 120;
/// A bound against a hung request, not a timing assertion.
const REQUEST_TIMEOUT_SECS: u64 = 30;
const SEED: u64 = 0xC4A5_4ED1_0011;

/// SplitMix64, for the kill moments and the writers' choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A shorter wait, for the pulls (a whole pull of the test's rows takes well under
    /// [`KILL_AFTER_MS_MAX`] here, so most kills would come after it ended).
    fn short_kill_delay(&mut self) -> Duration {
        Duration::from_millis(KILL_AFTER_MS_MIN + self.next() % PULL_KILL_AFTER_MS_SPAN)
    }

    fn kill_delay(&mut self) -> Duration {
        Duration::from_millis(
            KILL_AFTER_MS_MIN + self.next() % (KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN + 1),
        )
    }
}

#[test]
fn server_killed_mid_writes_loses_no_acknowledged_write_sqlite() {
    server_killed_mid_writes(StoreKind::Sqlite);
}

#[test]
fn server_killed_mid_writes_loses_no_acknowledged_write_postgres() {
    server_killed_mid_writes(StoreKind::Postgres);
}

#[test]
fn client_killed_mid_push_and_mid_pull_loses_nothing_sqlite() {
    client_killed_mid_push_and_pull(StoreKind::Sqlite);
}

#[test]
fn client_killed_mid_push_and_mid_pull_loses_nothing_postgres() {
    client_killed_mid_push_and_pull(StoreKind::Postgres);
}

fn serve(database: &str) -> ServerProcess {
    tablesync_serve_env(Path::new(database), &[], &[("RUST_LOG", "warn")])
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .no_gzip()
        .build()
        .expect("HTTP client")
}

/// `PRAGMA integrity_check` of an SQLite file (server database or client store).
fn integrity_check(path: &Path) -> String {
    let c = rusqlite::Connection::open(path).expect("the database opens after the kill");
    c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check runs")
}

/// Every live row of `TodoItem` on the server: id → text.
async fn server_texts(http: &reqwest::Client, base: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    loop {
        let url = format!(
            "{base}/tables/TodoItem?$orderby=id&$top=1000&$skip={}",
            out.len()
        );
        let resp = http
            .get(&url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .send()
            .await
            .expect("list");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let page: Vec<Value> = resp.json().await.expect("JSON list");
        let n = page.len();
        for row in page {
            out.insert(
                row["id"].as_str().unwrap_or_default().to_owned(),
                row["text"].as_str().unwrap_or_default().to_owned(),
            );
        }
        if n < 1000 {
            return out;
        }
    }
}

/// What one writer knows: acknowledged values, and the one write whose answer never came.
#[derive(Default)]
struct Acked {
    values: BTreeMap<String, String>,
    in_flight: Option<(String, String)>,
}

/// Inserts and updates (sequentially) until a request fails, which the kill causes.
async fn write_until_killed(
    http: reqwest::Client,
    base: String,
    writer: usize,
    round: usize,
    acked: Arc<Mutex<Acked>>,
) {
    let mut rng = Rng(SEED ^ ((writer as u64) << 32) ^ round as u64);
    for i in 0.. {
        let known: Vec<String> = acked.lock().unwrap().values.keys().cloned().collect();
        let (method, id, text) = if known.is_empty() || !rng.next().is_multiple_of(3) {
            (
                reqwest::Method::POST,
                format!("w{writer}-r{round}-{i}"),
                format!("v{i}"),
            )
        } else {
            let id = known[(rng.next() % known.len() as u64) as usize].clone();
            (reqwest::Method::PATCH, id, format!("u{round}-{i}"))
        };
        acked.lock().unwrap().in_flight = Some((id.clone(), text.clone()));
        let url = match method {
            reqwest::Method::POST => format!("{base}/tables/TodoItem"),
            _ => format!("{base}/tables/TodoItem/{id}"),
        };
        let sent = http
            .request(method, &url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({"id": id, "text": text, "complete": false}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let mut a = acked.lock().unwrap();
                a.values.insert(id, text);
                a.in_flight = None;
            }
            Ok(r) => panic!("writer {writer}: {url} answered {}", r.status()),
            // The kill: the in-flight write's outcome is unknown.
            Err(_) => return,
        }
    }
}

fn server_killed_mid_writes(kind: StoreKind) {
    server_killed_mid_writes_with(kind, WRITERS);
}

/// [`server_killed_mid_writes`] with `writers` concurrent writers (`group_commit_crash.rs` runs
/// it with many). Returns, per kill, how many commits carrying more than one write the
/// server's metrics showed just before it (`tablesync_group_commit_operations`).
pub(crate) fn server_killed_mid_writes_with(kind: StoreKind, writers: usize) -> Vec<f64> {
    let db = fresh_database(kind);
    let mut grouped = Vec::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rng = Rng(SEED);
    let mut acked_total = 0;
    rt.block_on(async {
        let http = http();
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        for round in 0..SERVER_KILLS {
            let server = serve(db.url());
            let base = server.url().to_owned();
            let writers: Vec<_> = (0..writers)
                .map(|w| {
                    let acked = Arc::new(Mutex::new(Acked {
                        // Rows of earlier rounds may be updated too.
                        values: expected
                            .iter()
                            .filter(|(id, _)| id.starts_with(&format!("w{w}-")))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        in_flight: None,
                    }));
                    let task = tokio::spawn(write_until_killed(
                        http.clone(),
                        base.clone(),
                        w,
                        round,
                        Arc::clone(&acked),
                    ));
                    (acked, task)
                })
                .collect();
            tokio::time::sleep(rng.kill_delay()).await;
            grouped.push(multi_write_commits(&http, &base).await);
            drop(server); // SIGKILL, then wait for the process.
            let mut maybe: BTreeMap<String, String> = BTreeMap::new();
            for (acked, task) in writers {
                task.await.expect("writer task");
                let a = acked.lock().unwrap();
                for (id, text) in &a.values {
                    expected.insert(id.clone(), text.clone());
                }
                if let Some((id, text)) = &a.in_flight {
                    maybe.insert(id.clone(), text.clone());
                }
            }
            if kind == StoreKind::Sqlite {
                assert_eq!(integrity_check(Path::new(db.url())), "ok", "round {round}");
            }
            // Started again on the same database: every acknowledged write is there.
            let server = serve(db.url());
            let found = server_texts(&http, server.url()).await;
            for (id, text) in &expected {
                let got = found.get(id);
                let in_flight = maybe.get(id);
                assert!(
                    got == Some(text) || (in_flight.is_some() && got == in_flight),
                    "round {round}: acknowledged {id} = {text:?}, found {got:?} (in flight: {in_flight:?})"
                );
            }
            // What was in flight is now known: whatever the server holds.
            for id in maybe.keys() {
                if let Some(text) = found.get(id) {
                    expected.insert(id.clone(), text.clone());
                }
            }
            let unexpected: Vec<&String> =
                found.keys().filter(|id| !expected.contains_key(*id)).collect();
            assert!(unexpected.is_empty(), "round {round}: rows nobody wrote: {unexpected:?}");
            drop(server);
        }
        acked_total = expected.len();
    });
    assert!(
        acked_total > 0,
        "no write was acknowledged: the kills came too early"
    );
    eprintln!(
        "server killed {SERVER_KILLS} times mid-writes on {} ({writers} writers): {acked_total} \
         acknowledged rows, none lost; commits of several writes before each kill: {grouped:?}",
        kind.name()
    );
    grouped
}

/// Commits that carried more than one write so far (`_count` minus the `le="1.0"` bucket of
/// `tablesync_group_commit_operations`); 0 when the metrics cannot be read (the server may be
/// going down for another reason: the checks after the kill say).
async fn multi_write_commits(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(resp) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    sample("tablesync_group_commit_operations_count ")
        - sample("tablesync_group_commit_operations_bucket{le=\"1.0\"} ")
}

fn todo_store(path: &Path) -> LocalStore {
    let mut local = LocalStore::new(path);
    local
        .define_table(
            TableDefinition::new("TodoItem")
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean),
        )
        .expect("define table");
    local
}

/// Runs `tablesync <command> --store <store> --url <url> [args]` and kills it after `delay`
/// (SIGKILL) unless it finished first; returns whether it was killed.
fn run_and_kill(
    command: &str,
    store: &Path,
    url: &str,
    args: &[&str],
    delay: Option<Duration>,
) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .arg(command)
        .arg("--store")
        .arg(store)
        .arg("--url")
        .arg(url)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tablesync");
    match delay {
        Some(d) => {
            std::thread::sleep(d);
            let finished = matches!(child.try_wait(), Ok(Some(_)));
            let _ = child.kill();
            let _ = child.wait();
            !finished
        }
        None => {
            let out = child.wait_with_output().expect("tablesync runs");
            assert!(
                out.status.success(),
                "tablesync {command} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
    }
}

/// The store's rows (id → text) and queued item ids, read with plain SQLite.
fn store_state(path: &Path) -> (BTreeMap<String, String>, HashSet<String>, Option<Value>) {
    let c = rusqlite::Connection::open(path).expect("store opens");
    let has_table: bool = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'TodoItem'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("sqlite_master")
        == 1;
    if !has_table {
        // Killed while the store was being created: nothing in it yet.
        return (BTreeMap::new(), HashSet::new(), None);
    }
    let rows = c
        .prepare("SELECT \"id\", \"text\" FROM \"TodoItem\"")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .unwrap()
        .map(|r| {
            let (id, text) = r.unwrap();
            (id, text.unwrap_or_default())
        })
        .collect();
    let queued = c
        .prepare("SELECT \"itemId\" FROM \"__operations\"")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let token: Option<String> = c
        .query_row(
            "SELECT \"value\" FROM \"__config\" WHERE \"key\" = 'deltaToken|TodoItem|all'",
            [],
            |r| r.get(0),
        )
        .ok();
    (
        rows,
        queued,
        token.map(|t| serde_json::from_str(&t).expect("token JSON")),
    )
}

/// Every server row with its (updatedAt, id) key, read over HTTP.
async fn server_keys(http: &reqwest::Client, base: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    loop {
        let url = format!(
            "{base}/tables/TodoItem?$orderby=updatedAt,id&$top=1000&$skip={}",
            out.len()
        );
        let resp = http
            .get(&url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .send()
            .await
            .expect("list");
        let page: Vec<Value> = resp.json().await.expect("JSON list");
        let n = page.len();
        for row in page {
            out.push((
                row["updatedAt"].as_str().unwrap_or_default().to_owned(),
                row["id"].as_str().unwrap_or_default().to_owned(),
                row["text"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        if n < 1000 {
            return out;
        }
    }
}

/// Queues, through the SDK, [`QUEUED_ROWS`] inserts (ids of `batch`) and updates of every
/// seventh row written so far, and records them in `model`.
fn queue_writes(
    rt: &tokio::runtime::Runtime,
    store: &Path,
    model: &mut BTreeMap<String, String>,
    batch: usize,
) {
    rt.block_on(async {
        let client = Client::new("http://127.0.0.1:9/").expect("client");
        let ctx = SyncContext::initialize(client, todo_store(store))
            .await
            .expect("init");
        let t = ctx.table("TodoItem").expect("table");
        for i in 0..QUEUED_ROWS {
            let id = format!("b{batch}-{i:03}");
            t.insert(json!({"id": id, "text": format!("v{i}"), "complete": false}))
                .await
                .expect("insert");
            model.insert(id, format!("v{i}"));
        }
        let ids: Vec<String> = model.keys().step_by(7).cloned().collect();
        for id in ids {
            let text = format!("edited in batch {batch}");
            t.update(json!({"id": id, "text": text}))
                .await
                .expect("update");
            model.insert(id, text);
        }
    });
}

/// Removes a store file with its WAL and shared-memory files.
fn remove_store(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn client_killed_mid_push_and_pull(kind: StoreKind) {
    let db = fresh_database(kind);
    let server = serve(db.url());
    let url = format!("{}/", server.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = dir.path().join("writer.db");
    let reader = dir.path().join("reader.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = http();
    let mut rng = Rng(SEED ^ 0xC11E);

    // Offline writes, as an app makes them: inserts, then updates of some.
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    queue_writes(&rt, &writer, &mut model, 0);

    let mut push_kills = 0;
    for round in 0..PUSH_KILLS {
        let struck = run_and_kill("push", &writer, &url, &[], Some(rng.kill_delay()));
        push_kills += usize::from(struck);
        assert_eq!(integrity_check(&writer), "ok", "push kill {round}");
        let (rows, queued, _) = store_state(&writer);
        let on_server = rt.block_on(server_texts(&http, server.url()));
        for (id, text) in &model {
            assert_eq!(
                rows.get(id),
                Some(text),
                "push kill {round}: local row {id}"
            );
            assert!(
                queued.contains(id) || on_server.get(id) == Some(text),
                "push kill {round}: {id} = {text:?} neither queued nor on the server ({:?})",
                on_server.get(id)
            );
        }
        if !struck {
            // That push ran to its end: give the next one work to be killed in.
            queue_writes(&rt, &writer, &mut model, round + 1);
        }
    }
    run_and_kill("push", &writer, &url, &[], None);
    let (_, queued, _) = store_state(&writer);
    assert!(queued.is_empty(), "left queued: {queued:?}");
    let on_server = rt.block_on(server_texts(&http, server.url()));
    assert_eq!(
        on_server, model,
        "the server holds exactly the local writes"
    );

    let pull_args = ["--query-id", "all", "--page-size", PULL_PAGE_ROWS];
    let keys = rt.block_on(server_keys(&http, server.url()));
    let mut pull_kills = 0;
    for round in 0..PULL_KILLS {
        let struck = run_and_kill(
            "pull",
            &reader,
            &url,
            &pull_args,
            Some(rng.short_kill_delay()),
        );
        pull_kills += usize::from(struck);
        if !reader.exists() {
            continue; // killed before it created the store
        }
        assert_eq!(integrity_check(&reader), "ok", "pull kill {round}");
        let (rows, queued, token) = store_state(&reader);
        assert!(queued.is_empty());
        for (id, text) in &rows {
            assert_eq!(
                model.get(id),
                Some(text),
                "pull kill {round}: local row {id}"
            );
        }
        if let Some(token) = token {
            let (t_at, t_id) = (
                token["updatedAt"].as_str().unwrap_or_default(),
                token["id"].as_str().unwrap_or_default(),
            );
            for (at, id, _) in &keys {
                if (at.as_str(), id.as_str()) <= (t_at, t_id) {
                    assert!(
                        rows.contains_key(id),
                        "pull kill {round}: {id} is before the token but missing"
                    );
                }
            }
        }
        if !struck {
            // That pull ran to its end: start the next one from an empty store.
            remove_store(&reader);
        }
    }
    run_and_kill("pull", &reader, &url, &pull_args, None);
    let (rows, _, _) = store_state(&reader);
    assert_eq!(
        rows, model,
        "the reader equals the server after its last pull"
    );
    assert!(
        push_kills > 0 && pull_kills > 0,
        "no kill struck a running process: {push_kills} / {pull_kills}"
    );
    eprintln!(
        "client on {}: {push_kills} of {PUSH_KILLS} push kills and {pull_kills} of {PULL_KILLS} pull kills struck a running process; nothing lost",
        kind.name()
    );
}
