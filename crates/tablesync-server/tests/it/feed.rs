//! The change feed, `GET /$changes/{table}` (docs/extensions.md section 5), on both stores:
//! resuming with `Last-Event-ID` misses nothing, a user hears only of their own rows, a
//! subscriber that does not read is dropped and catches up by pulling, heartbeats on an idle
//! stream, and the refusals (400 position, 503 over `subscribers_max`, 401 without a token).
//!
//! Events are read off the real socket and parsed here (`Sse`), so the wire format is what is
//! tested. Waits are bounded ([`WAIT`]) against hangs; nothing asserts how long anything took.
//! Several server processes: `crates/tablesync-cli/tests/it/feed.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tokens::{self, token};
use crate::{send, StoreKind, TestServer};

/// The longest any single wait in these tests may take before the test fails (a bound against
/// hanging, generous for two shared cores).
const WAIT: Duration = Duration::from_secs(60);

/// One parsed SSE block.
#[derive(Clone, Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comments: Vec<String>,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).unwrap()
    }
}

/// Parse every complete block (`\n\n`-terminated) at the front of `buf`, leaving the rest.
fn parse_blocks(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut e = SseEvent::default();
        for line in block.lines().filter(|l| !l.is_empty()) {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "" => e.comments.push(value),
                "id" => e.id = Some(value),
                "event" => e.event = Some(value),
                "data" => e.data = Some(value),
                other => panic!("unexpected SSE field {other:?} in {block:?}"),
            }
        }
        out.push(e);
    }
    out
}

/// An open feed read through reqwest.
struct Sse {
    response: reqwest::Response,
    buf: String,
    ready: std::collections::VecDeque<SseEvent>,
}

impl Sse {
    /// The next block (events and comments), None when the stream ended.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("no event within the bound")
                .expect("the stream failed")?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            self.ready.extend(parse_blocks(&mut self.buf));
        }
    }

    /// The next `change` event, skipping heartbeats.
    async fn next_change(&mut self) -> SseEvent {
        loop {
            let e = self.next().await.expect("the stream ended");
            if e.event.as_deref() == Some("change") {
                return e;
            }
            assert!(e.event.is_none(), "unexpected event {e:?}");
            assert_eq!(e.comments, vec!["heartbeat".to_owned()], "{e:?}");
        }
    }
}

/// `GET /$changes/{table}` with extra headers; the response as it came.
async fn subscribe(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = server.req(Method::GET, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .expect("no answer within the bound")
        .unwrap()
}

/// A feed that must open (200, an event stream).
async fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Sse {
    let response = subscribe(server, path, headers).await;
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    Sse {
        response,
        buf: String::new(),
        ready: Default::default(),
    }
}

/// id → version of a table as the caller lists it (tombstones included).
async fn listing(
    server: &TestServer,
    table: &str,
    token: Option<&str>,
) -> BTreeMap<String, String> {
    let mut req = server.req(
        Method::GET,
        &format!("/tables/{table}?__includeDeleted=true&$top=1000&$orderby=updatedAt,id"),
    );
    if let Some(t) = token {
        req = req.header("X-ZUMO-AUTH", t);
    }
    let r = send(req).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
        .as_array()
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

fn position(item: &Value) -> String {
    format!(
        "{}|{}",
        item["updatedAt"].as_str().unwrap(),
        item["id"].as_str().unwrap()
    )
}

/// Apply a change event to a collected id → version map, checking its position is past the
/// previous one (commit order) and matches its data.
fn apply(seen: &mut BTreeMap<String, String>, last: &mut Option<String>, e: &SseEvent) {
    let data = e.json();
    let id = e.id.clone().expect("a change event has an id");
    assert_eq!(id, position(&data), "{e:?}");
    if let Some(prev) = last.as_deref() {
        let (pt, pi) = prev.split_once('|').unwrap();
        let (t, i) = id.split_once('|').unwrap();
        assert!((t, i) > (pt, pi), "{id} does not follow {prev}");
    }
    *last = Some(id);
    seen.insert(
        data["id"].as_str().unwrap().to_owned(),
        data["version"].as_str().unwrap().to_owned(),
    );
}

async fn resumed_with_last_event_id_the_feed_misses_nothing(kind: StoreKind) {
    let server = TestServer::start(kind).await;
    // Written before subscribing: not sent (no position = from the current end).
    let before = server.insert_todo("before", "x", false).await;
    let mut feed = open(&server, "/$changes/TodoItem", &[]).await;
    let first = server.insert_todo("a1", "one", false).await;

    // The first event, whole: its id is the row's position, its data the row's system fields.
    let e = feed.next_change().await;
    assert_eq!(e.id.as_deref(), Some(position(&first).as_str()));
    assert_eq!(
        e.json(),
        json!({"table": "TodoItem", "id": "a1", "updatedAt": first["updatedAt"],
               "version": first["version"], "deleted": false})
    );
    let mut seen = BTreeMap::new();
    let mut last = None;
    apply(&mut seen, &mut last, &e);
    for i in 2..=5 {
        server.insert_todo(&format!("a{i}"), "x", false).await;
        let e = feed.next_change().await;
        apply(&mut seen, &mut last, &e);
    }
    drop(feed);

    // While disconnected: inserts, an update, a delete (a tombstone is a change too).
    for i in 6..=9 {
        server.insert_todo(&format!("a{i}"), "x", false).await;
    }
    assert_eq!(
        server
            .patch("/tables/TodoItem/a1", json!({"text": "edited"}))
            .await
            .status,
        200
    );
    assert_eq!(server.delete("/tables/TodoItem/a2").await.status, 200);

    // Resume: Last-Event-ID wins over a (malformed) `after`.
    let resume = last.clone().unwrap();
    let mut feed = open(
        &server,
        "/$changes/TodoItem?after=garbage",
        &[("Last-Event-ID", &resume)],
    )
    .await;
    let mut table = listing(&server, "TodoItem", None).await;
    table.remove("before");
    while seen != table {
        let e = feed.next_change().await;
        assert_ne!(e.json()["id"], json!("before"));
        apply(&mut seen, &mut last, &e);
    }
    // Nothing is sent twice: up to a new marker row, a2's tombstone does not come again.
    assert_eq!(up_to_marker(&mut feed, &server, "a2").await, None);
    assert_eq!(seen.get("before"), None);

    // `?after=` alone resumes the same way (`|` percent-encoded): every row past the position.
    let encoded = resume.replace('|', "%7C");
    let mut again = open(&server, &format!("/$changes/TodoItem?after={encoded}"), &[]).await;
    let rows = server
        .get("/tables/TodoItem?__includeDeleted=true&$top=1000&$orderby=updatedAt,id")
        .await;
    let (rt, ri) = resume.split_once('|').unwrap();
    let expected: BTreeMap<String, String> = rows
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| (r["updatedAt"].as_str().unwrap(), r["id"].as_str().unwrap()) > (rt, ri))
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 7, "a6..a9, a1, a2 and the marker");
    let mut replay = BTreeMap::new();
    let mut replay_last = None;
    while replay != expected {
        let e = again.next_change().await;
        apply(&mut replay, &mut replay_last, &e);
    }
    assert!(!before.is_null());
    // Every event handed to a stream is counted.
    let metrics = server.get("/metrics").await;
    let sent = metric(
        metrics.body.as_str().unwrap_or_default(),
        "tablesync_feed_events_total{table=\"TodoItem\"}",
    );
    assert!(sent >= (seen.len() + replay.len()) as f64, "{sent}");
}

/// After everything known was received: write a marker row and read up to it, returning the
/// event for `id` if one came on the way (None: nothing but the marker).
async fn up_to_marker(feed: &mut Sse, server: &TestServer, id: &str) -> Option<SseEvent> {
    server.insert_todo("marker", "m", false).await;
    let mut found = None;
    loop {
        let e = feed.next_change().await;
        let data = e.json();
        if data["id"] == json!("marker") {
            return found;
        }
        if data["id"] == json!(id) {
            found = Some(e);
        }
    }
}

async fn a_user_never_receives_another_users_ids(kind: StoreKind) {
    let config = tokens::config_with(tokens::auth_config());
    let server = TestServer::with_clock(kind, config, tokens::clock()).await;
    let (alice, bob) = (token("alice"), token("bob"));
    let mut feeds = Vec::new();
    for t in [&alice, &bob] {
        feeds.push(open(&server, "/$changes/Todo", &[("X-ZUMO-AUTH", t)]).await);
    }
    // Interleaved writes; both users write the id "same" (per-user id spaces).
    for i in 0..6 {
        for (who, t) in [("alice", &alice), ("bob", &bob)] {
            let id = if i == 0 {
                "same".to_owned()
            } else {
                format!("{who}-{i}")
            };
            let r = send(
                server
                    .req(Method::POST, "/tables/Todo")
                    .header("X-ZUMO-AUTH", t.as_str())
                    .json(&json!({"id": id, "text": who})),
            )
            .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
    }
    for ((who, t), feed) in [("alice", &alice), ("bob", &bob)]
        .into_iter()
        .zip(&mut feeds)
    {
        let own = listing(&server, "Todo", Some(t)).await;
        assert_eq!(own.len(), 6);
        let mut seen = BTreeMap::new();
        let mut last = None;
        while seen.len() < own.len() {
            let e = feed.next_change().await;
            let id = e.json()["id"].as_str().unwrap().to_owned();
            assert!(
                own.contains_key(&id),
                "{who} was told of {id}, not one of their rows"
            );
            apply(&mut seen, &mut last, &e);
        }
        // Exactly their rows, with their versions (the shared id "same" is their own row).
        assert_eq!(seen, own, "{who}");
    }
}

async fn a_slow_subscriber_is_dropped_then_catches_up_by_pulling(kind: StoreKind) {
    let mut config = Config::default_todo();
    config.limits.feed_subscriber_buffer_events = 1000;
    let server = TestServer::with_config(kind, config).await;
    // A subscriber that reads all along, beside the one that does not: it keeps up with small
    // batches and is never dropped.
    let mut reader = open(&server, "/$changes/TodoItem", &[]).await;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = reader.next().await {
            if events_tx.send(e).is_err() {
                break;
            }
        }
    });
    let addr = server.base.trim_start_matches("http://").to_owned();
    // A socket with a small receive buffer that reads the answer's head and then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    tcp.write_all(
        format!(
            "GET /$changes/TodoItem HTTP/1.1\r\nHost: {addr}\r\nZUMO-API-VERSION: 2.0.0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    while find(&raw, b"\r\n\r\n").is_none() {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        raw.extend_from_slice(&buf[..n]);
    }
    let head_end = find(&raw, b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = raw[head_end..].to_vec();

    // Write until the server drops the subscriber (bounded: it must happen long before). The
    // socket buffers between the server and a client that does not read hold megabytes on
    // loopback, so ids are long (big events fill them in fewer rounds); batches of 250 stay
    // well under the reader's buffer of 1000 events.
    let mut dropped = false;
    for round in 0..1000 {
        let requests: Vec<Value> = (0..250)
            .map(|i| {
                json!({"id": format!("{i}"), "method": "POST", "url": "tables/TodoItem",
                       "body": {"id": format!("{round:04}-{i:03}-{}", "x".repeat(240)), "text": "y"}})
            })
            .collect();
        let r = server
            .post("/$batch", json!({ "requests": requests }))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let metrics = server.get("/metrics").await;
        let text = metrics.body.as_str().unwrap_or_default().to_owned();
        if metric(&text, "tablesync_feed_drops_total{table=\"TodoItem\"}") >= 1.0 {
            // The place was given back; the reader is still subscribed.
            assert_eq!(metric(&text, "tablesync_feed_subscribers"), 1.0, "{text}");
            dropped = true;
            break;
        }
    }
    assert!(
        dropped,
        "the subscriber that does not read was never dropped"
    );

    // Now read: every buffered change in order, then `overflow`, then the end of the body.
    let mut text = String::new();
    let mut events = Vec::new();
    loop {
        if let Some(done) = dechunk(&mut body, &mut text) {
            events.extend(parse_blocks(&mut text));
            if done {
                break;
            }
        }
        let mut buf = vec![0u8; 65536];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the body ended");
        body.extend_from_slice(&buf[..n]);
    }
    let (overflow, changes) = events.split_last().unwrap();
    assert_eq!(overflow.event.as_deref(), Some("overflow"));
    assert_eq!(overflow.data.as_deref(), Some("{}"));
    let mut seen = BTreeMap::new();
    let mut last = None;
    for e in changes.iter().filter(|e| e.event.is_some()) {
        assert_eq!(e.event.as_deref(), Some("change"), "{e:?}");
        apply(&mut seen, &mut last, e);
    }
    // It fell behind by more than its buffer: fewer changes came than were written.
    let table = listing_all(&server).await;
    assert!(seen.len() < table.len());

    // The reader got every row, without an overflow.
    let mut read = BTreeMap::new();
    let mut read_last = None;
    while read != table {
        let e = tokio::time::timeout(WAIT, events_rx.recv())
            .await
            .unwrap()
            .unwrap();
        if e.event.is_none() {
            continue;
        }
        assert_eq!(
            e.event.as_deref(),
            Some("change"),
            "the reader was dropped: {e:?}"
        );
        apply(&mut read, &mut read_last, &e);
    }

    // Catch up by pulling from the last position (the client's keyset pull), then compare.
    let mut token = last.clone();
    loop {
        let filter = match &token {
            Some(t) => {
                let (time, id) = t.split_once('|').unwrap();
                format!("&$filter=updatedAt ge datetimeoffset'{time}' and (updatedAt gt datetimeoffset'{time}' or (updatedAt eq datetimeoffset'{time}' and id gt '{id}'))")
            }
            None => String::new(),
        };
        let page = server
            .get(&format!(
                "/tables/TodoItem?__includeDeleted=true&$top=1000&$orderby=updatedAt,id{filter}"
            ))
            .await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let rows = page.body.as_array().unwrap().clone();
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            seen.insert(
                row["id"].as_str().unwrap().to_owned(),
                row["version"].as_str().unwrap().to_owned(),
            );
        }
        token = Some(position(rows.last().unwrap()));
    }
    assert_eq!(seen, table);
}

/// Every row of TodoItem, id → version.
async fn listing_all(server: &TestServer) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut skip = 0;
    loop {
        let page = server
            .get(&format!(
                "/tables/TodoItem?__includeDeleted=true&$top=1000&$skip={skip}&$orderby=updatedAt,id"
            ))
            .await;
        let rows = page.body.as_array().unwrap().clone();
        if rows.is_empty() {
            return all;
        }
        skip += rows.len();
        for row in rows {
            all.insert(
                row["id"].as_str().unwrap().to_owned(),
                row["version"].as_str().unwrap().to_owned(),
            );
        }
    }
}

/// Move the complete chunks of a chunked body from `raw` into `text`; Some(true) once the last
/// (empty) chunk was read, Some(false) when some progress was made, None when none.
fn dechunk(raw: &mut Vec<u8>, text: &mut String) -> Option<bool> {
    let mut progressed = false;
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return progressed.then_some(false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        let needed = line_end + 2 + size + 2;
        if raw.len() < needed {
            return progressed.then_some(false);
        }
        text.push_str(std::str::from_utf8(&raw[line_end + 2..line_end + 2 + size]).unwrap());
        raw.drain(..needed);
        progressed = true;
        if size == 0 {
            return Some(true);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A sample's value in the metrics text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn an_idle_stream_gets_heartbeats(kind: StoreKind) {
    let mut config = Config::default_todo();
    config.limits.feed_heartbeat_interval_ms = 50;
    let server = TestServer::with_config(kind, config).await;
    let caps = server.get("/$capabilities").await;
    assert_eq!(
        caps.body["changes"],
        json!({"url": "$changes/{table}", "heartbeat_interval_ms": 50})
    );
    let mut feed = open(&server, "/$changes/TodoItem", &[]).await;
    for _ in 0..3 {
        let e = feed.next().await.expect("the stream ended");
        assert_eq!(
            e,
            SseEvent {
                comments: vec!["heartbeat".into()],
                ..Default::default()
            }
        );
    }
    // The raw form is `: heartbeat`, never compressed (a gzip stream would hold events back).
    let mut raw = subscribe(
        &server,
        "/$changes/TodoItem",
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(raw.headers().get("content-encoding"), None);
    assert_eq!(raw.headers()["x-accel-buffering"], "no");
    let chunk = tokio::time::timeout(WAIT, raw.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b": heartbeat\n\n");
}

async fn a_bad_position_is_400(kind: StoreKind) {
    let server = TestServer::with_toml(
        kind,
        "[[tables]]\nname = \"TodoItem\"\ncolumns = { text = \"string\" }\n\n[[tables]]\nname = \"Counter\"\nid_type = \"integer\"\n",
    )
    .await;
    let t = "2026-12-01T16:00:00.123Z";
    for (path, header) in [
        ("/$changes/TodoItem?after=nobar".to_owned(), None),
        ("/$changes/TodoItem?after=".to_owned(), None),
        (format!("/$changes/TodoItem?after={t}%7C"), None),
        ("/$changes/TodoItem?after=yesterday%7Cx".to_owned(), None),
        (format!("/$changes/TodoItem?after={t}%7Ca%22b"), None),
        (format!("/$changes/Counter?after={t}%7Cabc"), None),
        (format!("/$changes/Counter?after={t}%7C0"), None),
        ("/$changes/TodoItem".to_owned(), Some("2026-12-01|x")),
        (
            format!("/$changes/TodoItem?after={t}%7Cok"),
            Some("no-bar-here"),
        ),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("Last-Event-ID", h)).into_iter().collect();
        let r = subscribe(&server, &path, &headers).await;
        assert_eq!(r.status(), 400, "{path} {header:?}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], json!("invalid_position"), "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid change feed position: "),
            "{body}"
        );
    }
    // A good position, another offset, an integer id: accepted.
    for path in [
        format!("/$changes/TodoItem?after={t}%7Cany%7Cid"),
        "/$changes/TodoItem?after=2026-12-01T17:00:00.123%2B01:00%7Cx".to_owned(),
        format!("/$changes/Counter?after={t}%7C42"),
    ] {
        assert_eq!(subscribe(&server, &path, &[]).await.status(), 200, "{path}");
    }
    // Unknown table: 404 as for a table read; no API version: 400.
    let r = subscribe(&server, "/$changes/Nope", &[]).await;
    assert_eq!(r.status(), 404);
    let r = server
        .client
        .get(format!("{}/$changes/TodoItem", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn over_subscribers_max_is_503(kind: StoreKind) {
    let mut config = Config::default_todo();
    config.limits.subscribers_max = 2;
    let server = TestServer::with_config(kind, config).await;
    let a = open(&server, "/$changes/TodoItem", &[]).await;
    let _b = open(&server, "/$changes/TodoItem", &[]).await;
    let r = subscribe(&server, "/$changes/TodoItem", &[]).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "The server is serving as many change feed subscribers as it may (2, limits.subscribers_max); try again later or poll",
               "code": "service_unavailable"})
    );
    // A subscriber that leaves gives its place back (once the server noticed: bounded retry).
    drop(a);
    let mut admitted = false;
    for _ in 0..600 {
        let r = subscribe(&server, "/$changes/TodoItem", &[]).await;
        if r.status() == 200 {
            admitted = true;
            break;
        }
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted,
        "the place of a subscriber that left was never given back"
    );

    // subscribers_max = 0: the feed is off and not offered.
    let mut config = Config::default_todo();
    config.limits.subscribers_max = 0;
    let off = TestServer::with_config(kind, config).await;
    assert_eq!(off.get("/$capabilities").await.body.get("changes"), None);
    assert_eq!(
        subscribe(&off, "/$changes/TodoItem", &[]).await.status(),
        503
    );
}

async fn without_a_token_it_is_401_where_auth_is_on(kind: StoreKind) {
    let config = tokens::config_with(tokens::auth_config());
    let server = TestServer::with_clock(kind, config, tokens::clock()).await;
    for (table, header) in [
        ("Todo", None),
        ("Todo", Some("not-a-token")),
        ("Public", Some("not-a-token")),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("X-ZUMO-AUTH", h)).into_iter().collect();
        let r = subscribe(&server, &format!("/$changes/{table}"), &headers).await;
        assert_eq!(r.status(), 401, "{table} {header:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], json!("unauthorized"));
    }
    // Anonymous reads of `Public` are allowed, so is its feed; a valid token opens `Todo`'s.
    open(&server, "/$changes/Public", &[]).await;
    open(
        &server,
        "/$changes/Todo",
        &[("X-ZUMO-AUTH", &token("alice"))],
    )
    .await;
}

async fn a_graceful_shutdown_ends_open_feeds(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let server = tablesync_server::Server::open(Config::default_todo().with_database(db.url()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let response = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .get(format!("{base}/$changes/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut feed = Sse {
        response,
        buf: String::new(),
        ready: Default::default(),
    };
    stop.send(()).unwrap();
    // The server finishes (it waits for open responses, so the feed must have ended) …
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the shutdown waited on the open feed")
        .unwrap()
        .unwrap();
    // … and the client sees its stream end.
    assert_eq!(feed.next().await, None);
}

crate::store_tests!(
    a_graceful_shutdown_ends_open_feeds,
    resumed_with_last_event_id_the_feed_misses_nothing,
    a_user_never_receives_another_users_ids,
    a_slow_subscriber_is_dropped_then_catches_up_by_pulling,
    an_idle_stream_gets_heartbeats,
    a_bad_position_is_400,
    over_subscribers_max_is_503,
    without_a_token_it_is_401_where_auth_is_on,
);
