//! The fast cold pull (issue 9): pages as large as the server allows, found with one discovery
//! request per context; one page of look-ahead; gzip answers, with the response limit on the
//! decompressed body.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tablesync_client::{
    BoxFuture, Client, ClientOptions, Error, HttpRequest, HttpResponse, HttpTransport, PullOptions,
    SyncContext, Transport, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    context, context_via, decoded, todo_store, Faulty, OfficialServer, OurServer, StoreKind,
};

store_tests!(
    a_pull_asks_for_the_largest_page_the_server_allows,
    an_explicit_page_size_wins_clamped_to_the_servers_limit,
    the_next_page_is_requested_while_the_current_one_is_applied,
);

/// The `$top` of a recorded page request.
fn top_of(url: &str) -> u32 {
    let (_, rest) = url.split_once("$top=").expect("a page request has $top");
    rest.split('&').next().unwrap().parse().unwrap()
}

async fn insert_and_push(ctx: &SyncContext, count: usize) {
    let t = ctx.table("TodoItem").unwrap();
    for i in 0..count {
        t.insert(json!({"id": format!("r{i:02}"), "text": format!("row {i}"), "complete": false}))
            .await
            .unwrap();
    }
    ctx.push().await.unwrap();
}

async fn a_pull_asks_for_the_largest_page_the_server_allows(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start_with_page_size_max(kind, 7).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 10).await;

    let recorder = Faulty::new();
    let b_path = dir.path().join("b.db");
    let b = context_via(&server.url, &b_path, recorder.clone(), None).await;
    let bt = b.table("TodoItem").unwrap();
    let s = bt.pull(Some("all"), "").await.unwrap();
    assert_eq!((s.pages, s.upserted), (2, 10));
    // `get_urls` leaves the discovery request out; `log` has every request.
    let gets = recorder.get_urls();
    assert_eq!(recorder.discovery_requests(), 1);
    assert_eq!(recorder.log.lock().unwrap().len(), 3);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(top_of(&gets[0]), 7);
    assert_eq!(top_of(&gets[1]), 7);

    // An incremental pull that finds nothing: exactly one request (discovery is remembered).
    let s = bt.pull(Some("all"), "").await.unwrap();
    assert_eq!((s.pages, s.upserted), (1, 0));
    assert_eq!(recorder.log.lock().unwrap().len(), 4);
    assert_eq!(recorder.discovery_requests(), 1);
    assert!(decoded(&recorder.get_urls()[2]).contains("id gt 'r09'"));
    drop(bt);
    drop(b);

    // A new context asks once more: two requests in its first pull, one after that.
    let recorder = Faulty::new();
    let b = context_via(&server.url, &b_path, recorder.clone(), None).await;
    let bt = b.table("TodoItem").unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    bt.pull(Some("all"), "").await.unwrap();
    assert_eq!(recorder.log.lock().unwrap().len(), 3);
    assert_eq!(recorder.discovery_requests(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_official_server_is_pulled_with_the_protocols_default_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 3).await;
    let recorder = Faulty::new();
    let b = context_via(
        &server.url,
        &dir.path().join("b.db"),
        recorder.clone(),
        None,
    )
    .await;
    let s = b
        .table("TodoItem")
        .unwrap()
        .pull(Some("all"), "")
        .await
        .unwrap();
    assert_eq!((s.pages, s.upserted), (1, 3));
    let gets = recorder.get_urls();
    assert_eq!(recorder.discovery_requests(), 1);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(top_of(&gets[0]), 50);
}

async fn an_explicit_page_size_wins_clamped_to_the_servers_limit(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start_with_page_size_max(kind, 7).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 10).await;

    // Up to the protocol's default page no discovery is needed: the size is sent as it is.
    let recorder = Faulty::new();
    let b = context_via(
        &server.url,
        &dir.path().join("b.db"),
        recorder.clone(),
        None,
    )
    .await;
    let bt = b.table("TodoItem").unwrap();
    let s = bt
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(4))
        .await
        .unwrap();
    assert_eq!((s.pages, s.upserted), (3, 10));
    let gets = recorder.get_urls();
    assert_eq!(recorder.discovery_requests(), 0);
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert!(gets.iter().all(|u| top_of(u) == 4), "{gets:?}");

    // Above it, the server's limit is asked once and the size clamped to it (the server
    // would refuse `$top=500` with 400).
    let recorder = Faulty::new();
    let c = context_via(
        &server.url,
        &dir.path().join("c.db"),
        recorder.clone(),
        None,
    )
    .await;
    let ct = c.table("TodoItem").unwrap();
    let s = ct
        .pull_with_options(None, "", PullOptions::with_page_size(500))
        .await
        .unwrap();
    assert_eq!(s.upserted, 10);
    let gets = recorder.get_urls();
    assert_eq!(recorder.discovery_requests(), 1);
    assert!(gets.iter().all(|u| top_of(u) == 7), "{gets:?}");
    // Once known, the limit clamps small sizes too, without asking again.
    let s = ct
        .pull_with_options(None, "", PullOptions::with_page_size(50))
        .await
        .unwrap();
    assert_eq!(s.upserted, 10);
    let later = &recorder.get_urls()[gets.len()..];
    assert!(
        !later.is_empty() && later.iter().all(|u| top_of(u) == 7),
        "{later:?}"
    );

    assert!(matches!(
        ct.pull_with_options(None, "", PullOptions::with_page_size(0))
            .await,
        Err(Error::InvalidConfig(_))
    ));
    server.stop().await;
}

/// Holds the local store's write lock (another connection's `BEGIN IMMEDIATE`) until the pull
/// sends its request for a page after the first one. A pull that applied page 1 before asking
/// for page 2 would wait on the lock until SQLite's busy timeout and fail.
struct ReleaseLockOnNextPage {
    inner: HttpTransport,
    lock: Mutex<Option<rusqlite::Connection>>,
    released_by_next_page: AtomicBool,
}

impl Transport for ReleaseLockOnNextPage {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            if decoded(&request.url).contains("id gt") {
                if let Some(conn) = self.lock.lock().unwrap().take() {
                    conn.execute_batch("ROLLBACK").unwrap();
                    self.released_by_next_page.store(true, Ordering::SeqCst);
                }
            }
            self.inner.send(request).await
        })
    }
}

async fn the_next_page_is_requested_while_the_current_one_is_applied(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(kind).await;
    let a = context(&server.url, &dir.path().join("a.db"), None).await;
    insert_and_push(&a, 7).await;

    let b_path = dir.path().join("b.db");
    let transport = Arc::new(ReleaseLockOnNextPage {
        inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
        lock: Mutex::new(None),
        released_by_next_page: AtomicBool::new(false),
    });
    let b = context_via(&server.url, &b_path, transport.clone(), None).await;
    let lock = rusqlite::Connection::open(&b_path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    *transport.lock.lock().unwrap() = Some(lock);

    let bt = b.table("TodoItem").unwrap();
    let s = bt
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(3))
        .await
        .unwrap();
    assert!(transport.released_by_next_page.load(Ordering::SeqCst));
    assert_eq!((s.pages, s.upserted), (3, 7));
    assert_eq!(bt.read("").await.unwrap().items.len(), 7);
    server.stop().await;
}

/// A one-connection-per-request HTTP server that answers every request with `page` (a JSON
/// array), gzip-compressed when the request accepts gzip, and records each request's head.
async fn page_server(page: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let gzip = head
                .lines()
                .any(|l| l.starts_with("accept-encoding:") && l.contains("gzip"));
            seen.lock().unwrap().push(head);
            let (encoding, body) = if gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&page).unwrap();
                ("Content-Encoding: gzip\r\n", enc.finish().unwrap())
            } else {
                ("", page.clone())
            };
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            resp.extend_from_slice(&body);
            let _ = sock.write_all(&resp).await;
        }
    });
    (url, heads)
}

/// One pulled row whose text is `text_bytes` long: a page that gzip shrinks a thousandfold.
fn big_page(text_bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&json!([{
        "id": "big", "updatedAt": "2024-01-01T00:00:00.000Z", "version": "v1",
        "deleted": false, "text": "a".repeat(text_bytes), "complete": false
    }]))
    .unwrap()
}

async fn pull_big(url: &str, options: ClientOptions, path: &std::path::Path) -> Result<(), Error> {
    let client = Client::with_options(url, options).unwrap();
    let ctx = SyncContext::initialize(client, todo_store(path))
        .await
        .unwrap();
    // 50 rows: no discovery request, so the server's one answer is the page.
    ctx.table("TodoItem")
        .unwrap()
        .pull_with_options(None, "", PullOptions::with_page_size(50))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn gzip_is_accepted_by_default_and_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let (url, heads) = page_server(big_page(100_000)).await;
    pull_big(&url, ClientOptions::default(), &dir.path().join("a.db"))
        .await
        .unwrap();
    pull_big(
        &url,
        ClientOptions::default().with_accept_gzip(false),
        &dir.path().join("b.db"),
    )
    .await
    .unwrap();
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    assert!(heads[0].contains("accept-encoding: gzip"), "{}", heads[0]);
    assert!(!heads[1].contains("accept-encoding"), "{}", heads[1]);
    // Both stores hold the whole row: the gzip answer was decompressed.
    for db in ["a.db", "b.db"] {
        let conn = rusqlite::Connection::open(dir.path().join(db)).unwrap();
        let len: i64 = conn
            .query_row(
                "SELECT length(text) FROM \"TodoItem\" WHERE id = 'big'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(len, 100_000, "{db}");
    }
}

#[tokio::test]
async fn the_response_limit_applies_to_the_decompressed_body() {
    let dir = tempfile::tempdir().unwrap();
    // About 1 MB of JSON that travels as about 1 kB of gzip.
    let page = big_page(1_000_000);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&page).unwrap();
    let wire_bytes = enc.finish().unwrap().len();
    assert!(wire_bytes < 100_000, "{wire_bytes}");
    let (url, _) = page_server(page).await;
    let err = pull_big(
        &url,
        ClientOptions::default().with_response_bytes_max(100_000),
        &dir.path().join("a.db"),
    )
    .await
    .unwrap_err();
    match err {
        Error::Network(message) => {
            assert_eq!(message, "response body larger than 100000 bytes")
        }
        other => panic!("{other:?}"),
    }
    pull_big(
        &url,
        ClientOptions::default().with_response_bytes_max(2_000_000),
        &dir.path().join("b.db"),
    )
    .await
    .unwrap();
}
