//! The request log, captured in-process: each line carries the request id (the client's
//! `x-request-id` or a new one, returned either way) and the client address (`X-Forwarded-For`
//! only from `trusted_proxies`); no token ever appears, at any level; `$filter` literals are
//! hidden at `info` and shown at `debug`.
//!
//! One subscriber is installed for the whole test process (tracing allows one global); each
//! test finds its own lines by the request ids it sent, so tests running beside it do not
//! disturb it. Its level can be switched (a reload layer) for the literal test.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::Method;
use serde_json::json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::tokens;
use crate::{send, StoreKind, TestServer};

/// Most captured bytes kept, in bytes (older ones are dropped): a bound for `cargo test`, where
/// every test of the binary logs into the same buffer.
const CAPTURE_BYTES_MAX: usize = 64 * 1024 * 1024;

struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    level: reload::Handle<LevelFilter, tracing_subscriber::Registry>,
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.len() + bytes.len() > CAPTURE_BYTES_MAX {
            buffer.clear();
        }
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's capture, installed on first use at TRACE (everything, every crate).
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let (filter, level) = reload::Layer::new(LevelFilter::TRACE);
        let writer = Writer(Arc::clone(&buffer));
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .init();
        Capture { buffer, level }
    })
}

/// Captured lines containing `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    let buffer = capture().buffer.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buffer)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Everything captured so far.
fn all_text() -> String {
    let buffer = capture().buffer.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buffer).into_owned()
}

/// A fresh id for this test's requests.
fn id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}{:x}", std::process::id())
}

/// The request line of request `rid` (the log line is written as the answer goes out, so it
/// is there once the response was received).
fn request_line(rid: &str) -> String {
    let lines: Vec<String> = lines_with(&format!("id={rid}"))
        .into_iter()
        .filter(|l| l.contains("tablesync::http"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

/// Tokens in every place a client may put one, accepted and refused, at TRACE (every crate):
/// no token, and no part of one, reaches the log.
async fn tokens_are_never_logged(kind: StoreKind) {
    capture();
    let s = TestServer::with_clock(
        kind,
        tokens::config_with(tokens::auth_config()),
        tokens::clock(),
    )
    .await;
    let good = tokens::token("alice");
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let forged = format!("{}.{}.{}", parts[0], parts[1], "QUJD".repeat(11));
    let rid = id("tok");
    let cases = [
        ("X-ZUMO-AUTH", good.clone(), 200),
        ("Authorization", format!("Bearer {good}"), 200),
        ("X-ZUMO-AUTH", forged.clone(), 401),
        ("Authorization", format!("Bearer {forged}"), 401),
    ];
    for (n, (header, value, status)) in cases.iter().enumerate() {
        let r = send(
            s.req(Method::GET, "/tables/Todo")
                .header(*header, value)
                .header("x-request-id", format!("{rid}-{n}")),
        )
        .await;
        assert_eq!(r.status, *status, "{header}: {:?}", r.body);
        assert_eq!(
            r.header("x-request-id"),
            Some(format!("{rid}-{n}").as_str())
        );
    }
    let r = send(
        s.req(Method::GET, &format!("/tables/Todo?access_token={good}"))
            .header("x-request-id", format!("{rid}-q")),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = send(
        s.req(Method::POST, "/tables/Todo")
            .header("X-ZUMO-AUTH", &good)
            .header("x-request-id", format!("{rid}-w"))
            .json(&json!({"id": "a", "text": "t"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    // The lines are there: one per request, the refused ones with their reason.
    for n in 0..4 {
        request_line(&format!("{rid}-{n}"));
    }
    assert!(request_line(&format!("{rid}-q")).contains("access_token=<redacted>"));
    let refusals = lines_with(&format!("{rid}-2"));
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("token refused: the signature does not verify")),
        "{refusals:?}"
    );
    let text = all_text();
    for secret in [
        good.as_str(),
        forged.as_str(),
        &parts[1],
        &parts[2],
        "QUJDQUJD",
    ] {
        assert!(!text.contains(secret), "a token (part) is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_literals_are_hidden_at_info_and_shown_at_debug() {
    let c = capture();
    let s = TestServer::start(StoreKind::Sqlite).await;
    let path =
        "/tables/TodoItem?$filter=text%20eq%20'bob%40example.org'%20and%20complete%20eq%20true";
    c.level.modify(|l| *l = LevelFilter::INFO).unwrap();
    let rid_info = id("info");
    let r = send(s.req(Method::GET, path).header("x-request-id", &rid_info)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    c.level.modify(|l| *l = LevelFilter::DEBUG).unwrap();
    let rid_debug = id("debug");
    let r = send(s.req(Method::GET, path).header("x-request-id", &rid_debug)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    c.level.modify(|l| *l = LevelFilter::TRACE).unwrap();

    let info = request_line(&rid_info);
    assert!(
        info.contains("$filter=text eq ? and complete eq true"),
        "{info}"
    );
    assert!(!info.contains("bob"), "{info}");
    let debug = request_line(&rid_debug);
    assert!(debug.contains("bob%40example.org"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_when_missing_and_returned() {
    capture();
    let s = TestServer::start(StoreKind::Sqlite).await;
    let r = s.get("/tables/TodoItem").await;
    let rid = r.header("x-request-id").expect("a request id").to_owned();
    assert_eq!(rid.len(), 32, "{rid}");
    assert!(request_line(&rid).contains("GET /tables/TodoItem 200"));
    // One too long (or not visible ASCII) is replaced, not echoed.
    let long = "x".repeat(129);
    let r = send(s.req(Method::GET, "/health").header("x-request-id", &long)).await;
    assert_ne!(r.header("x-request-id"), Some(long.as_str()));
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    capture();
    let forwarded = "198.51.100.1, 203.0.113.7";
    for (trusted, expected) in [
        (vec![], "127.0.0.1"),
        (vec!["127.0.0.0/8".to_owned()], "203.0.113.7"),
    ] {
        let mut config = tablesync_server::Config::default_todo();
        config.trusted_proxies = trusted;
        let s = TestServer::with_config(StoreKind::Sqlite, config).await;
        let rid = id("xff");
        let r = send(
            s.req(Method::GET, "/tables/TodoItem")
                .header("x-forwarded-for", forwarded)
                .header("x-request-id", &rid),
        )
        .await;
        assert_eq!(r.status, 200);
        let line = request_line(&rid);
        assert!(line.contains(&format!("client={expected}")), "{line}");
    }
}

crate::store_tests!(tokens_are_never_logged);
