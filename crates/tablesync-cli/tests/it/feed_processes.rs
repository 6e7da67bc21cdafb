//! The change feed across server processes (issue 14 points 2 and 6): four concurrent writers
//! spread over two `tablesync serve` processes on one database, two subscribers on each
//! process; when the writers are done, every subscriber's collected id → version map must end
//! equal to the table.
//!
//! * PostgreSQL: the subscribers' periodic re-read is set to 10 minutes, far beyond the wait
//!   bound, so a write made on the other process can only reach a subscriber through
//!   `LISTEN/NOTIFY`: a broken notification path fails the test instead of being papered over.
//! * SQLite (two processes on one file, no notifications): with a short re-read interval the
//!   safety net alone delivers every change.
//!
//! Waits are bounded ([`WAIT`]) against hangs; nothing asserts how long anything took.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{fresh_database, tablesync_serve_env, ServerProcess, StoreKind};

/// The longest wait for one event or answer before the test fails.
const WAIT: Duration = Duration::from_secs(60);
const WRITERS: usize = 4;
const OPS_PER_WRITER: usize = 40;

/// An open feed: the response and the SSE text not yet parsed into blocks.
struct Feed {
    response: reqwest::Response,
    buf: String,
    ready: VecDeque<(Option<String>, Option<Value>)>,
    /// id → version, as the events told.
    seen: BTreeMap<String, String>,
    last: Option<String>,
}

impl Feed {
    async fn open(http: &reqwest::Client, base: &str) -> Feed {
        let response = tokio::time::timeout(
            WAIT,
            http.get(format!("{base}/$changes/TodoItem"))
                .header("ZUMO-API-VERSION", "2.0.0")
                .send(),
        )
        .await
        .expect("no answer within the bound")
        .unwrap();
        assert_eq!(response.status(), 200);
        Feed {
            response,
            buf: String::new(),
            ready: VecDeque::new(),
            seen: BTreeMap::new(),
            last: None,
        }
    }

    /// Read and apply change events until the collected map equals `table`.
    async fn until_equal(&mut self, table: &BTreeMap<String, String>, what: &str) {
        while &self.seen != table {
            let Some((id, data)) = self.ready.pop_front() else {
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream ended");
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (None, None, None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            event = Some(v.to_owned());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str::<Value>(v).unwrap());
                        }
                    }
                    match event.as_deref() {
                        Some("change") => self.ready.push_back((id, data)),
                        None => {} // a heartbeat
                        Some(other) => panic!("{what}: unexpected event {other}: {block}"),
                    }
                }
                continue;
            };
            let data = data.expect("a change has data");
            let id = id.expect("a change has an id");
            let (rid, t) = (
                data["id"].as_str().unwrap(),
                data["updatedAt"].as_str().unwrap(),
            );
            assert_eq!(id, format!("{t}|{rid}"));
            // Strictly after the previous event: commit order, nothing sent twice out of order.
            if let Some(prev) = &self.last {
                let (pt, pi) = prev.split_once('|').unwrap();
                assert!((t, rid) > (pt, pi), "{what}: {id} after {prev}");
            }
            self.last = Some(id);
            self.seen
                .insert(rid.to_owned(), data["version"].as_str().unwrap().to_owned());
        }
    }
}

/// One writer's requests, alternating between the processes: inserts of its own ids, updates
/// and deletes of them (a small deterministic mix).
async fn writer(http: reqwest::Client, urls: Vec<String>, w: usize) {
    for k in 0..OPS_PER_WRITER {
        let base = &urls[(w + k) % urls.len()];
        let n = k / 4;
        let id = format!("w{w}-{n}");
        let request = match k % 4 {
            0 => http
                .post(format!("{base}/tables/TodoItem"))
                .json(&json!({"id": id, "text": "new"})),
            1 | 2 => http
                .patch(format!("{base}/tables/TodoItem/{id}"))
                .json(&json!({"text": format!("edit {k}")})),
            _ if n % 2 == 0 => http.delete(format!("{base}/tables/TodoItem/{id}")),
            _ => http
                .patch(format!("{base}/tables/TodoItem/{id}"))
                .json(&json!({"complete": true})),
        };
        let r = tokio::time::timeout(WAIT, request.header("ZUMO-API-VERSION", "2.0.0").send())
            .await
            .expect("no answer within the bound")
            .unwrap();
        assert!(r.status().is_success(), "writer {w} op {k}: {}", r.status());
    }
}

/// The table as listed (tombstones included), id → version.
async fn table(http: &reqwest::Client, base: &str) -> BTreeMap<String, String> {
    let r = http
        .get(format!(
            "{base}/tables/TodoItem?__includeDeleted=true&$top=1000&$orderby=updatedAt,id"
        ))
        .header("ZUMO-API-VERSION", "2.0.0")
        .send()
        .await
        .unwrap();
    let rows: Value = r.json().await.unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn run(kind: StoreKind, poll_interval_ms: u64) {
    let db = fresh_database(kind);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("feed.toml");
    std::fs::write(
        &config,
        format!("[limits]\nfeed_poll_interval_ms = {poll_interval_ms}\n"),
    )
    .expect("write config");
    let config = config.display().to_string();
    let start = || {
        tablesync_serve_env(
            Path::new(db.url()),
            &["--config", &config],
            &[("RUST_LOG", "warn")],
        )
    };
    // One after the other: two processes creating one SQLite file at once is not the point here.
    let servers: Vec<ServerProcess> = vec![start(), start()];
    let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut feeds = Vec::new();
        for base in urls.iter().chain(urls.iter()) {
            feeds.push((base.clone(), Feed::open(&http, base).await));
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(http.clone(), urls.clone(), w)))
            .collect();
        for w in writers {
            w.await.expect("a writer failed");
        }
        let table = table(&http, &urls[0]).await;
        assert_eq!(table.len(), WRITERS * OPS_PER_WRITER / 4);
        // One bound for the whole catch-up (heartbeats arrive meanwhile, so a bound per read
        // would never fire).
        for (i, (base, feed)) in feeds.iter_mut().enumerate() {
            let what = format!("subscriber {i} on {base}");
            if tokio::time::timeout(WAIT, feed.until_equal(&table, &what))
                .await
                .is_err()
            {
                let right = feed
                    .seen
                    .iter()
                    .filter(|(k, v)| table.get(*k) == Some(v))
                    .count();
                panic!(
                    "{what}: not equal to the table within the bound; {right} of {} rows right",
                    table.len()
                );
            }
        }
    });
    drop(servers);
}

#[test]
fn postgres_four_writers_on_two_processes_every_subscriber_ends_equal_to_the_table() {
    // Ten minutes: only LISTEN/NOTIFY can bring the other process's writes within WAIT.
    run(StoreKind::Postgres, 600_000);
}

#[test]
fn sqlite_four_writers_on_two_processes_every_subscriber_ends_equal_to_the_table() {
    // One SQLite file, two processes: no notifications, the periodic re-read delivers.
    run(StoreKind::Sqlite, 200);
}
