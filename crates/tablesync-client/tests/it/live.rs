//! Live mode (issue 14 point 3) end to end: contexts in live mode against our server's change
//! feed (`docs/extensions.md` section 5) on both stores, and against servers without one.
//!
//! No test here calls `pull` on the client under test: every row it gets arrives through live
//! mode. Waits are bounded by a generous deadline (a hang guard, not a timing assertion) and
//! poll the local store, which costs no request. Server restarts and cut connections go through
//! [`Relay`], a loopback TCP relay whose upstream can change, so the client's URL stays the same
//! while the server behind it is replaced.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tablesync_client::{
    BoxFuture, Client, ClientOptions, FeedState, HttpRequest, HttpResponse, HttpTransport,
    LiveHandle, LiveOptions, StreamingResponse, SyncContext, TableChanges, Transport,
    TransportError,
};
use tablesync_server::auth::{mint_dev_token, AuthConfig, FixedClock};

use crate::common::{
    fresh_database, is_discovery, todo_store, OfficialServer, OurServer, StoreKind,
};

store_tests!(
    live_clients_see_each_others_inserts_updates_and_deletes,
    a_feed_resumed_after_a_server_restart_misses_nothing,
    an_overflowed_subscriber_catches_up_by_pulling,
    a_subscriber_the_server_drops_catches_up_by_pulling,
    another_users_rows_reach_neither_the_feed_nor_the_notifications,
    without_a_feed_live_mode_polls,
    queued_writes_are_pushed_when_the_connection_is_back,
    stopping_leaves_the_store_consistent,
);

/// The longest any wait here may take before the test fails (a hang guard).
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `check` holds, re-checking every 10 ms.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fast reconnects, so restarts do not slow the suite.
fn options() -> LiveOptions {
    LiveOptions::new()
        .query("TodoItem", "all", "")
        .with_reconnect_backoff_ms(20, 200)
        .with_poll_interval_ms(50)
}

/// Waits until every table of `live` is in `state`.
async fn until_state(live: &LiveHandle, state: FeedState) {
    let mut status = live.status();
    let start = Instant::now();
    while !status.borrow_and_update().all(state) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(
            tokio::time::timeout(left, status.changed()).await.is_ok(),
            "timed out waiting for {state:?}: {:?}",
            *status.borrow()
        );
    }
}

/// The local rows of `ctx`'s TodoItem: id → (text, complete, version).
async fn rows(ctx: &SyncContext) -> Vec<(String, Value, Value, Value)> {
    let items = ctx
        .table("TodoItem")
        .unwrap()
        .read("$orderby=id")
        .await
        .unwrap()
        .items;
    items.into_iter().map(row).collect()
}

fn row(m: Map<String, Value>) -> (String, Value, Value, Value) {
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    (
        get("id").as_str().unwrap_or_default().to_string(),
        get("text"),
        get("complete"),
        get("version"),
    )
}

/// What the server holds, read by a fresh context with a full pull.
async fn server_rows(
    url: &str,
    dir: &Path,
    token: Option<String>,
) -> Vec<(String, Value, Value, Value)> {
    let path = dir.join(format!("check-{}.db", uuid::Uuid::new_v4()));
    let ctx = context_with(url, &path, None, token).await;
    ctx.table("TodoItem").unwrap().pull(None, "").await.unwrap();
    rows(&ctx).await
}

async fn context_with(
    url: &str,
    path: &Path,
    transport: Option<Arc<dyn Transport>>,
    token: Option<String>,
) -> SyncContext {
    let client = match transport {
        Some(t) => Client::with_transport(url, t).unwrap(),
        None => Client::with_options(
            url,
            ClientOptions::default().with_request_timeout_ms(20_000),
        )
        .unwrap(),
    };
    client.set_token(token);
    SyncContext::initialize(client, todo_store(path))
        .await
        .unwrap()
}

async fn context(url: &str, path: &Path) -> SyncContext {
    context_with(url, path, None, None).await
}

/// Receives notifications until `done` holds for those received, then everything already
/// queued: a notification is sent right after its page commits, so a test that saw the rows in
/// the store may still have to wait for it.
async fn notified(
    rx: &mut tokio::sync::broadcast::Receiver<TableChanges>,
    done: impl Fn(&[TableChanges]) -> bool,
) -> Vec<TableChanges> {
    let start = Instant::now();
    let mut got = Vec::new();
    while !done(&got) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(c)) => got.push(c),
            Ok(Err(e)) => panic!("notifications ended ({e}) after {got:?}"),
            Err(_) => panic!("timed out waiting for notifications; got {got:?}"),
        }
    }
    while let Ok(c) = rx.try_recv() {
        got.push(c);
    }
    got
}

fn names(c: &TableChanges, id: &str) -> bool {
    c.ids.iter().any(|x| x == id)
}

/// A loopback TCP relay: forwards each connection to the current upstream, byte for byte (so
/// a feed streams through it); [`Relay::cut`] closes every open connection at once.
struct Relay {
    url: String,
    upstream: Arc<Mutex<SocketAddr>>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let upstream = Arc::new(Mutex::new(addr_of(upstream)));
        let open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up, conns) = (upstream.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *up.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = server.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        });
        Relay {
            url,
            upstream,
            open,
            accept,
        }
    }

    /// New connections go to `url` from now on.
    fn set_upstream(&self, url: &str) {
        *self.upstream.lock().unwrap() = addr_of(url);
    }

    /// Closes every open connection, as a network outage or a server crash would.
    fn cut(&self) {
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// The HTTP transport with taps: it can hide the server's extensions (answering
/// `$capabilities` 404 as the official servers do), records every byte of every feed, counts
/// feeds opened, and can swallow change events (then send `overflow` and close, as a server
/// dropping a slow subscriber does).
struct Tap {
    inner: HttpTransport,
    hide_capabilities: bool,
    /// Change events still to swallow; when the count reaches 0 the feed gets an overflow and
    /// ends.
    swallow: Arc<AtomicUsize>,
    /// Every byte received on feeds.
    streamed: Arc<Mutex<Vec<u8>>>,
    feeds_opened: AtomicUsize,
}

impl Tap {
    fn new(hide_capabilities: bool) -> Arc<Tap> {
        Arc::new(Tap {
            inner: HttpTransport::new(20_000, 16 * 1024 * 1024).unwrap(),
            hide_capabilities,
            swallow: Arc::new(AtomicUsize::new(0)),
            streamed: Arc::default(),
            feeds_opened: AtomicUsize::new(0),
        })
    }

    fn streamed_text(&self) -> String {
        String::from_utf8_lossy(&self.streamed.lock().unwrap()).into_owned()
    }
}

impl Transport for Tap {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            if self.hide_capabilities && is_discovery(request.method, &request.url) {
                return Ok(HttpResponse::new(404, "Cannot GET /$capabilities"));
            }
            self.inner.send(request).await
        })
    }

    fn open_stream(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'_, Result<StreamingResponse, TransportError>> {
        Box::pin(async move {
            let response = self.inner.open_stream(request).await?;
            self.feeds_opened.fetch_add(1, Ordering::SeqCst);
            let (streamed, swallow) = (self.streamed.clone(), self.swallow.clone());
            let swallowing = swallow.load(Ordering::SeqCst) > 0;
            let body = response.body.map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    streamed.lock().unwrap().extend_from_slice(bytes);
                }
                chunk
            });
            let body: tablesync_client::ByteStream = if swallowing {
                Box::pin(swallowed(Box::pin(body), swallow))
            } else {
                Box::pin(body)
            };
            Ok(StreamingResponse::new(
                response.status,
                response.headers.clone(),
                body,
            ))
        })
    }
}

/// A feed body with its change events removed while `swallow` counts down; at 0 an overflow
/// event is sent and the body ends. Other events and comments pass.
fn swallowed(
    body: tablesync_client::ByteStream,
    swallow: Arc<AtomicUsize>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, TransportError>> + Send {
    futures_util::stream::unfold(Some((body, Vec::<u8>::new())), move |state| {
        let swallow = swallow.clone();
        async move {
            let (mut body, mut buffer) = state?;
            loop {
                let chunk = match body.next().await {
                    Some(Ok(c)) => c,
                    other => return other.map(|e| (e, None)),
                };
                buffer.extend_from_slice(&chunk);
                let mut out = Vec::new();
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    if !String::from_utf8_lossy(&block).contains("event: change") {
                        out.extend_from_slice(&block);
                        continue;
                    }
                    let left = swallow.load(Ordering::SeqCst);
                    swallow.store(left.saturating_sub(1), Ordering::SeqCst);
                    if left <= 1 {
                        out.extend_from_slice(b"event: overflow\ndata: {}\n\n");
                        return Some((Ok(out), None));
                    }
                }
                if !out.is_empty() {
                    return Some((Ok(out), Some((body, buffer))));
                }
            }
        }
    })
}

/// Issue 14.3 and 14.6: B sees A's insert, update and delete without calling pull, each
/// announced as a notification with the row's id after it is committed in B's store. A is live
/// too and never calls push: its local writes are pushed by live mode.
async fn live_clients_see_each_others_inserts_updates_and_deletes(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context(&server.url, &dir.path().join("b.db")).await;
    let mut notes = b.changes();
    let live_a = a.live(options()).unwrap();
    let live_b = b.live(options()).unwrap();
    until_state(&live_a, FeedState::Streaming).await;
    until_state(&live_b, FeedState::Streaming).await;
    let todos = a.table("TodoItem").unwrap();

    todos
        .insert(json!({"id": "x", "text": "milk", "complete": false}))
        .await
        .unwrap();
    until("B has the insert", || async {
        rows(&b).await.iter().any(|r| r.0 == "x" && r.1 == "milk")
    })
    .await;
    todos
        .update(json!({"id": "x", "text": "oat milk", "complete": true}))
        .await
        .unwrap();
    until("B has the update", || async {
        rows(&b)
            .await
            .iter()
            .any(|r| r.0 == "x" && r.1 == "oat milk" && r.2 == true)
    })
    .await;
    todos.delete("x").await.unwrap();
    until("B has the delete", || async { rows(&b).await.is_empty() }).await;

    let got = notified(&mut notes, |g| g.len() >= 3).await;
    assert!(
        got.iter().all(|c| c.table == "TodoItem" && c.ids == ["x"]),
        "{got:?}"
    );
    assert!(
        got.len() >= 3,
        "one notification per change at least: {got:?}"
    );
    // B's rows are the server's, version included; A's queue was emptied by live mode.
    assert_eq!(
        rows(&b).await,
        server_rows(&server.url, dir.path(), None).await
    );
    until("A's queue pushed", || async {
        a.pending_operations().await.unwrap() == 0
    })
    .await;
    assert!(live_b.status().borrow().all(FeedState::Streaming));
    live_a.stop().await;
    live_b.stop().await;
    server.stop().await;
}

/// Issue 14.6: B's feed is cut and the server restarted (on the same database, behind the same
/// URL) while A goes on writing; B resubscribes from its delta token and ends with every row
/// equal to the server's, without calling pull.
async fn a_feed_resumed_after_a_server_restart_misses_nothing(kind: StoreKind) {
    let db = fresh_database(kind).await;
    let mut server = OurServer::start_on(&db).await;
    let relay = Relay::start(&server.url).await;
    let dir = tempfile::tempdir().unwrap();
    let a = context(&relay.url, &dir.path().join("a.db")).await;
    let b = context(&relay.url, &dir.path().join("b.db")).await;
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Streaming).await;
    let todos = a.table("TodoItem").unwrap();
    for round in 0..3 {
        for i in 0..5 {
            todos
                .insert(json!({"id": format!("r{round}-{i}"), "text": "t", "complete": false}))
                .await
                .unwrap();
        }
        push_until_done(&a).await;
        // The restart: every connection is cut, the server replaced on the same database; A
        // writes more (an update, a delete, inserts) while B is reconnecting.
        relay.cut();
        server.stop().await;
        server = OurServer::start_on(&db).await;
        relay.set_upstream(&server.url);
        todos
            .update(json!({"id": format!("r{round}-0"), "text": "edited", "complete": true}))
            .await
            .unwrap();
        todos.delete(&format!("r{round}-1")).await.unwrap();
        for i in 0..3 {
            todos
                .insert(json!({"id": format!("after{round}-{i}"), "text": "u", "complete": false}))
                .await
                .unwrap();
        }
        push_until_done(&a).await;
    }
    let expected = server_rows(&server.url, dir.path(), None).await;
    assert_eq!(expected.len(), 3 * (5 - 1 + 3));
    until("B equal to the server", || async {
        rows(&b).await == expected
    })
    .await;
    live_b.stop().await;
    drop(relay);
    server.stop().await;
}

/// Pushes until the queue is empty: the first request after a restart may meet a pooled
/// connection the restart closed (an ordinary network error).
async fn push_until_done(ctx: &SyncContext) {
    for _ in 0..20 {
        if ctx.push().await.is_ok() && ctx.pending_operations().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the push did not go through: {:?}", ctx.push().await);
}

/// Issue 14.6: a subscriber whose feed loses events (here the tap swallows every change event
/// of the first feed, then sends `overflow` and closes, as the server does to a subscriber that
/// fell behind) catches up by pulling, resubscribes, and follows the feed again.
async fn an_overflowed_subscriber_catches_up_by_pulling(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new(false);
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context_with(
        &server.url,
        &dir.path().join("b.db"),
        Some(tap.clone()),
        None,
    )
    .await;
    // A first row, so B subscribes from a position (no catch-up pull after subscribing).
    let todos = a.table("TodoItem").unwrap();
    todos
        .insert(json!({"id": "first", "text": "t", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    tap.swallow.store(20, Ordering::SeqCst);
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Streaming).await;
    assert_eq!(rows(&b).await.len(), 1, "the first sync");
    for i in 0..20 {
        todos
            .insert(json!({"id": format!("o{i:02}"), "text": "t", "complete": false}))
            .await
            .unwrap();
        // One request per row, so the feed reports twenty events.
        a.push().await.unwrap();
    }
    until("B equal to the server after the overflow", || async {
        rows(&b).await.len() == 21
    })
    .await;
    assert_eq!(
        tap.swallow.load(Ordering::SeqCst),
        0,
        "every event was swallowed"
    );
    until("resubscribed after the overflow", || async {
        tap.feeds_opened.load(Ordering::SeqCst) >= 2
    })
    .await;
    // The new feed works: one more write arrives through it.
    todos
        .insert(json!({"id": "after", "text": "t", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    until("the write after the overflow", || async {
        rows(&b).await.len() == 22
    })
    .await;
    assert_eq!(
        rows(&b).await,
        server_rows(&server.url, dir.path(), None).await
    );
    live_b.stop().await;
    server.stop().await;
}

/// Issue 14.6, with the server's own overflow: its subscriber buffer holds 2 events, a batch of
/// 12 rows commits at once, so the server drops B's feed with `overflow`; B pulls, resubscribes
/// and ends equal to the server.
async fn a_subscriber_the_server_drops_catches_up_by_pulling(kind: StoreKind) {
    let db = fresh_database(kind).await;
    let mut config = tablesync_server::Config::default_todo().with_database(db.url());
    config.limits.feed_subscriber_buffer_events = 2;
    let server = OurServer::start_with(config).await;
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new(false);
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context_with(
        &server.url,
        &dir.path().join("b.db"),
        Some(tap.clone()),
        None,
    )
    .await;
    let todos = a.table("TodoItem").unwrap();
    todos
        .insert(json!({"id": "first", "text": "t", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Streaming).await;
    // One local transaction: one batch, one commit on the server.
    let mut burst = a.transaction();
    for i in 0..12 {
        burst
            .insert(
                "TodoItem",
                json!({"id": format!("b{i:02}"), "text": "t", "complete": false}),
            )
            .unwrap();
    }
    burst.commit().await.unwrap();
    a.push().await.unwrap();
    until(
        "B equal to the server after the server dropped it",
        || async { rows(&b).await.len() == 13 },
    )
    .await;
    assert!(
        tap.streamed_text().contains("event: overflow"),
        "the server sent overflow: {}",
        tap.streamed_text()
    );
    until("resubscribed after the overflow", || async {
        tap.feeds_opened.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        rows(&b).await,
        server_rows(&server.url, dir.path(), None).await
    );
    live_b.stop().await;
    server.stop().await;
    drop(db);
}

const SECRET: &str = "live-test-secret-0123456789abcdef";
const NOW: i64 = 1_900_000_000;

fn token(user: &str) -> String {
    mint_dev_token(&AuthConfig::with_secret(SECRET), &|_| None, user, 3600, NOW).unwrap()
}

/// Issue 14.6: on a per-user table, bob's live context never hears of alice's rows — not on
/// the wire of its feed, not as a notification — while alice's second device does. Commit
/// order makes the check exact: bob's own later row reaching bob means alice's earlier one
/// would have reached him before it.
async fn another_users_rows_reach_neither_the_feed_nor_the_notifications(kind: StoreKind) {
    let db = fresh_database(kind).await;
    let mut todo = tablesync_server::Config::todo_table();
    todo.owner_column = Some("userId".into());
    let config = tablesync_server::Config::default_todo()
        .with_tables(vec![todo])
        .with_auth(AuthConfig::with_secret(SECRET))
        .with_database(db.url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = tablesync_server::Server::open_with_clock(config, Arc::new(FixedClock::new(NOW)))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run(listener, async {
        let _ = stopped.await;
    }));

    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new(false);
    let alice = context_with(
        &url,
        &dir.path().join("alice.db"),
        None,
        Some(token("alice")),
    )
    .await;
    let alice2 = context_with(
        &url,
        &dir.path().join("alice2.db"),
        None,
        Some(token("alice")),
    )
    .await;
    let bob = context_with(
        &url,
        &dir.path().join("bob.db"),
        Some(tap.clone()),
        Some(token("bob")),
    )
    .await;
    let bob2 = context_with(&url, &dir.path().join("bob2.db"), None, Some(token("bob"))).await;
    let mut bob_notes = bob.changes();
    let mut alice2_notes = alice2.changes();
    let live_bob = bob.live(options()).unwrap();
    let live_alice2 = alice2.live(options()).unwrap();
    until_state(&live_bob, FeedState::Streaming).await;
    until_state(&live_alice2, FeedState::Streaming).await;

    alice
        .table("TodoItem")
        .unwrap()
        .insert(json!({"id": "alices-secret", "text": "a", "complete": false}))
        .await
        .unwrap();
    alice.push().await.unwrap();
    until("alice's second device has her row", || async {
        rows(&alice2).await.len() == 1
    })
    .await;
    bob2.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "bobs-own", "text": "b", "complete": false}))
        .await
        .unwrap();
    bob2.push().await.unwrap();
    until("bob has his own row", || async {
        rows(&bob).await.iter().any(|r| r.0 == "bobs-own")
    })
    .await;

    let bob_got = notified(&mut bob_notes, |g| g.iter().any(|c| names(c, "bobs-own"))).await;
    assert!(
        bob_got.iter().all(|c| c.ids == ["bobs-own"]),
        "bob was told of another user's row: {bob_got:?}"
    );
    assert!(!bob_got.is_empty());
    let alice_got = notified(&mut alice2_notes, |g| {
        g.iter().any(|c| names(c, "alices-secret"))
    })
    .await;
    assert!(
        alice_got.iter().all(|c| c.ids == ["alices-secret"]),
        "{alice_got:?}"
    );
    let wire = tap.streamed_text();
    assert!(
        wire.contains("bobs-own"),
        "bob's feed carried his row: {wire}"
    );
    assert!(!wire.contains("alices-secret"), "bob's feed leaked: {wire}");
    assert_eq!(rows(&bob).await.len(), 1);
    live_bob.stop().await;
    live_alice2.stop().await;
    let _ = stop.send(());
    let _ = served.await;
}

/// Issue 14.3: against a server that offers no feed (its `$capabilities` answered 404, as the
/// official servers answer), live mode polls every `poll_interval_ms`: B gets A's writes, and
/// pushes its own, without calling pull or push.
async fn without_a_feed_live_mode_polls(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let tap = Tap::new(true);
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context_with(
        &server.url,
        &dir.path().join("b.db"),
        Some(tap.clone()),
        None,
    )
    .await;
    let mut notes = b.changes();
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Polling).await;
    a.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "p", "text": "polled", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    until("B polled A's row", || async { rows(&b).await.len() == 1 }).await;
    notified(&mut notes, |g| g.iter().any(|c| c.ids == ["p"])).await;
    b.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "q", "text": "from b", "complete": false}))
        .await
        .unwrap();
    until("B's write pushed", || async {
        b.pending_operations().await.unwrap() == 0
    })
    .await;
    assert_eq!(
        tap.feeds_opened.load(Ordering::SeqCst),
        0,
        "no feed without the capability"
    );
    assert_eq!(server_rows(&server.url, dir.path(), None).await.len(), 2);
    assert!(live_b.status().borrow().all(FeedState::Polling));
    live_b.stop().await;
    server.stop().await;
}

/// Issue 14.3 and 14.6: writes made while the server is away are queued, and pushed by live
/// mode as soon as its feed is back (no push call); the other live client then gets them.
async fn queued_writes_are_pushed_when_the_connection_is_back(kind: StoreKind) {
    let db = fresh_database(kind).await;
    let mut server = OurServer::start_on(&db).await;
    let relay = Relay::start(&server.url).await;
    let dir = tempfile::tempdir().unwrap();
    let a = context(&relay.url, &dir.path().join("a.db")).await;
    let live_a = a.live(options()).unwrap();
    until_state(&live_a, FeedState::Streaming).await;
    relay.cut();
    server.stop().await;
    let todos = a.table("TodoItem").unwrap();
    for i in 0..5 {
        todos
            .insert(json!({"id": format!("q{i}"), "text": "offline", "complete": false}))
            .await
            .unwrap();
    }
    // The push after these writes found no server: they stay queued.
    until("A reconnecting", || async {
        !live_a.status().borrow().all(FeedState::Streaming)
    })
    .await;
    assert_eq!(a.pending_operations().await.unwrap(), 5);
    server = OurServer::start_on(&db).await;
    relay.set_upstream(&server.url);
    let b = context(&server.url, &dir.path().join("b.db")).await;
    let live_b = b.live(options()).unwrap();
    until("A's queue pushed after the reconnect", || async {
        a.pending_operations().await.unwrap() == 0
    })
    .await;
    until("B has A's offline writes", || async {
        rows(&b).await.len() == 5
    })
    .await;
    assert_eq!(rows(&a).await, rows(&b).await, "versions included");
    live_a.stop().await;
    live_b.stop().await;
    drop(relay);
    server.stop().await;
}

/// Issue 14.3: stopping live mode in the middle of a stream of changes leaves the store
/// consistent: each pulled page committed with its token, so an ordinary incremental pull of
/// the same query afterwards ends equal to the server.
async fn stopping_leaves_the_store_consistent(kind: StoreKind) {
    let server = OurServer::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context(&server.url, &dir.path().join("b.db")).await;
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Streaming).await;
    let todos = a.table("TodoItem").unwrap();
    for i in 0..30 {
        todos
            .insert(json!({"id": format!("s{i:02}"), "text": "t", "complete": false}))
            .await
            .unwrap();
        a.push().await.unwrap();
        if i == 15 {
            until("B got some rows", || async { !rows(&b).await.is_empty() }).await;
        }
    }
    let mut status = live_b.status();
    live_b.stop().await;
    assert!(status.borrow_and_update().all(FeedState::Stopped));
    todos
        .insert(json!({"id": "late", "text": "t", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    // The same query id resumes exactly where live mode stopped.
    b.table("TodoItem")
        .unwrap()
        .pull(Some("all"), "")
        .await
        .unwrap();
    assert_eq!(
        rows(&b).await,
        server_rows(&server.url, dir.path(), None).await
    );
    assert_eq!(rows(&b).await.len(), 31);
    server.stop().await;
}

/// Issue 14.3: against the official Node server (no `$capabilities`, no feed) live mode polls:
/// B gets A's insert and delete, and its own write is pushed, without calling pull or push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_polls_the_official_node_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = OfficialServer::start(&dir.path().join("official.sqlite")).await;
    let a = context(&server.url, &dir.path().join("a.db")).await;
    let b = context(&server.url, &dir.path().join("b.db")).await;
    let mut notes = b.changes();
    let live_b = b.live(options()).unwrap();
    until_state(&live_b, FeedState::Polling).await;
    let todos = a.table("TodoItem").unwrap();
    todos
        .insert(json!({"id": "n1", "text": "from a", "complete": false}))
        .await
        .unwrap();
    a.push().await.unwrap();
    until("B polled A's row", || async { rows(&b).await.len() == 1 }).await;
    todos.delete("n1").await.unwrap();
    a.push().await.unwrap();
    until("B polled A's delete", || async {
        rows(&b).await.is_empty()
    })
    .await;
    let got = notified(&mut notes, |g| {
        g.iter().filter(|c| c.ids == ["n1"]).count() >= 2
    })
    .await;
    assert!(got.iter().all(|c| c.ids == ["n1"]), "{got:?}");
    b.table("TodoItem")
        .unwrap()
        .insert(json!({"id": "n2", "text": "from b", "complete": false}))
        .await
        .unwrap();
    until("B's write pushed", || async {
        b.pending_operations().await.unwrap() == 0
    })
    .await;
    assert_eq!(
        server_rows(&server.url, dir.path(), None).await,
        rows(&b).await
    );
    live_b.stop().await;
}
