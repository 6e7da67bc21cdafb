//! The HTTP layer's edges over raw TCP (issue 11, defects 2, 4, 6 and 7): stalled and
//! half-sent requests, the connection cap, and requests hyper cannot parse. Every answer must
//! be our JSON error body. Timeouts are made short in the config; no test asserts a duration,
//! only that the answer comes (each read gives up after [`READ_WAIT`]).

use std::time::Duration;

use serde_json::{json, Value};
use tablesync_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{StoreKind, TestServer};

/// How long a test waits for an answer or a close before failing (far above any timeout the
/// tests configure).
const READ_WAIT: Duration = Duration::from_secs(20);

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// A server with short timeouts and a small connection cap.
async fn server(kind: StoreKind, edit: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::default_todo();
    config.limits.header_read_timeout_ms = 60_000;
    config.limits.body_read_timeout_ms = 60_000;
    edit(&mut config);
    TestServer::with_config(kind, config).await
}

/// Everything the server sends on `tcp` until it closes the connection.
async fn read_all(tcp: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(READ_WAIT, tcp.read_to_end(&mut out))
        .await
        .expect("the server neither answered nor closed the connection")
        .unwrap_or_default();
    out
}

/// Status and JSON body of one raw response.
fn parse(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("not our JSON body: {text:?}"));
    (status, body)
}

/// Send `request` on a fresh connection and parse the answer.
async fn exchange(s: &TestServer, request: &[u8]) -> (u16, Value) {
    let mut tcp = TcpStream::connect(addr(s)).await.unwrap();
    tcp.write_all(request).await.unwrap();
    parse(&read_all(&mut tcp).await)
}

/// A request line and headers that never finish are cut off after `header_read_timeout_ms`
/// (they stayed open for over 60 s).
async fn stalled_headers_are_closed(kind: StoreKind) {
    let s = server(kind, |c| c.limits.header_read_timeout_ms = 200).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
        tcp.write_all(b"GET /tables/TodoItem HT").await.unwrap();
        stalled.push(tcp);
    }
    for tcp in &mut stalled {
        assert_eq!(read_all(tcp).await, b"", "closed without an answer");
    }
    assert_eq!(s.get("/tables/TodoItem").await.status, 200);
}

/// At `connections_max` a new connection is answered 503 and closed, while the open ones keep
/// working (the fd-exhaustion case, with a cap of 4 instead of the open-file limit).
async fn connections_over_the_cap_get_503(kind: StoreKind) {
    let s = server(kind, |c| c.limits.connections_max = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(addr(&s)).await.unwrap();
        tcp.write_all(b"GET /tables/TodoItem HTTP/1.1\r\n")
            .await
            .unwrap();
        open.push(tcp);
    }
    // Probes until one is refused: a probe the server takes before it has accepted all four
    // is served (and closes, freeing its slot), so the first refusal comes once the four are in.
    let probe = b"GET /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nConnection: close\r\n\r\n";
    let mut refused = None;
    for _ in 0..100 {
        let answer = exchange(&s, probe).await;
        if answer.0 == 503 {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refused,
        Some((
            503,
            json!({"error": "The server is serving as many connections as it may (limits.connections_max); try again later", "code": "service_unavailable"})
        ))
    );
    let mut first = open.remove(0);
    first
        .write_all(b"Host: x\r\nZUMO-API-VERSION: 2.0.0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = parse(&read_all(&mut first).await);
    assert_eq!((status, body), (200, json!([])));
    // Its slot is free again once it closed.
    drop(first);
    let mut ok = false;
    for _ in 0..50 {
        let (status, _) = exchange(
            &s,
            b"GET /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nConnection: close\r\n\r\n",
        )
        .await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a freed slot serves again");
}

/// A write whose body never arrives is 408 `request_timeout` once `body_read_timeout_ms` passes
/// (it was 504 `outcome_unknown` after the request timeout), and nothing is written.
async fn stalled_body_is_408_and_writes_nothing(kind: StoreKind) {
    let s = server(kind, |c| {
        c.limits.body_read_timeout_ms = 200;
        c.limits.request_timeout_ms = 100;
    })
    .await;
    let (status, body) = exchange(
        &s,
        b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":\"a\",\"",
    )
    .await;
    assert_eq!(
        (status, body),
        (
            408,
            json!({"error": "The request body did not arrive within 200 ms; nothing was done", "code": "request_timeout"})
        )
    );
    assert_eq!(s.get("/tables/TodoItem/a").await.status, 404);
}

/// What hyper refused with an empty body now carries our JSON body.
async fn unparsable_requests_get_our_json(kind: StoreKind) {
    let s = server(kind, |c| c.limits.request_head_bytes_max = 16 * 1024).await;
    let bad = json!({"error": "The request is not valid HTTP/1.1 (request line, header syntax or framing)", "code": "bad_request"});
    for request in [
        &b"GET /tables/TodoItem HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        b"GET /tables/TodoItem HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G@T /tables/TodoItem HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n{}",
    ] {
        assert_eq!(exchange(&s, request).await, (400, bad.clone()), "{:?}", String::from_utf8_lossy(request));
    }
    let big_header = format!(
        "GET /tables/TodoItem HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        exchange(&s, big_header.as_bytes()).await,
        (
            431,
            json!({"error": "The request line and headers are larger than 16384 bytes, or too many", "code": "headers_too_large"})
        )
    );
    // A long $filter gets the answer a shorter long one gets, not an empty 414/431.
    let long_filter = format!(
        "GET /tables/TodoItem?$filter=text%20eq%20%27{}%27 HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(
        exchange(&s, long_filter.as_bytes()).await,
        (
            400,
            json!({"error": "The $filter is longer than 8192 bytes", "code": "invalid_filter"})
        )
    );
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    assert_eq!(exchange(&s, long_path.as_bytes()).await.0, 431);
    // The server still serves.
    assert_eq!(s.get("/tables/TodoItem").await.status, 200);
}

/// RFC 9112: 501 for a transfer coding other than chunked, 400 for no Host or two on HTTP/1.1.
async fn framing_follows_rfc_9112(kind: StoreKind) {
    let s = server(kind, |_| {}).await;
    let chunked_gzip = b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    assert_eq!(
        exchange(&s, chunked_gzip).await,
        (
            501,
            json!({"error": "The transfer coding 'gzip' is not implemented; only chunked is", "code": "not_implemented"})
        )
    );
    let (no_host, two_hosts) = (
        &b"GET /tables/TodoItem HTTP/1.1\r\nZUMO-API-VERSION: 2.0.0\r\n\r\n"[..],
        &b"GET /tables/TodoItem HTTP/1.1\r\nHost: a\r\nHost: b\r\nZUMO-API-VERSION: 2.0.0\r\n\r\n"
            [..],
    );
    assert_eq!(
        exchange(&s, no_host).await,
        (
            400,
            json!({"error": "An HTTP/1.1 request must have exactly one Host header; this one has no Host header", "code": "bad_request"})
        )
    );
    assert_eq!(
        exchange(&s, two_hosts).await,
        (
            400,
            json!({"error": "An HTTP/1.1 request must have exactly one Host header; this one has more than one Host header", "code": "bad_request"})
        )
    );
    // A content coding we do not decode is refused, not parsed as plain bytes (RFC 9110 8.4.1).
    let gzip_body = b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{\"id\":\"g\"}";
    assert_eq!(
        exchange(&s, gzip_body).await,
        (
            415,
            json!({"error": "The content coding 'gzip' is not supported; send the request body unencoded", "code": "unsupported_media_type"})
        )
    );
    assert_eq!(
        s.get("/tables/TodoItem/g").await.status,
        404,
        "nothing was written"
    );
    // Plain chunked and HTTP/1.0 without Host are still served.
    let chunked = b"POST /tables/TodoItem HTTP/1.1\r\nHost: x\r\nZUMO-API-VERSION: 2.0.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nA\r\n{\"id\":\"c\"}\r\n0\r\n\r\n";
    assert_eq!(exchange(&s, chunked).await.0, 201);
    let old = b"GET /tables/TodoItem/c HTTP/1.0\r\nZUMO-API-VERSION: 2.0.0\r\n\r\n";
    assert_eq!(exchange(&s, old).await.0, 200);
}

crate::store_tests!(
    stalled_headers_are_closed,
    connections_over_the_cap_get_503,
    stalled_body_is_408_and_writes_nothing,
    unparsable_requests_get_our_json,
    framing_follows_rfc_9112,
);
