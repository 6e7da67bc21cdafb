//! Tokens end to end, on both stores: our server with `[auth]` and a per-user `TodoItem`
//! (`owner_column = "userId"`) on a fixed clock, and the SDK's token hook: `set_token`, one
//! refresher call on a 401, and a push that still gets 401 stopping with
//! `CancelledByAuthenticationError` with its whole queue kept (auth.md 6.4.19).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use tablesync_client::{token_subject, Client, Error, PushStatus, SyncContext};
use tablesync_server::auth::{mint_dev_token, AuthConfig, FixedClock};

use crate::common::{fresh_database, todo_store, StoreKind, TestDatabase};

const SECRET: &str = "client-test-secret-0123456789abc";
const NOW: i64 = 1_900_000_000;

fn auth() -> AuthConfig {
    AuthConfig::with_secret(SECRET)
}

/// A token for `user` valid from `NOW` for `ttl_s` seconds.
fn token(user: &str, ttl_s: u64) -> String {
    mint_dev_token(&auth(), &|_| None, user, ttl_s, NOW).unwrap()
}

/// A token that expired an hour before `NOW`.
fn expired(user: &str) -> String {
    mint_dev_token(&auth(), &|_| None, user, 60, NOW - 3600).unwrap()
}

struct AuthServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDatabase,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn server(kind: StoreKind) -> AuthServer {
    let db = fresh_database(kind).await;
    let mut todo = tablesync_server::Config::todo_table();
    todo.owner_column = Some("userId".into());
    let config = tablesync_server::Config::default_todo()
        .with_tables(vec![todo])
        .with_auth(auth())
        .with_database(db.url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tablesync_server::Server::open_with_clock(config, Arc::new(FixedClock::new(NOW)))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    AuthServer {
        url,
        stop: Some(stop),
        _db: db,
    }
}

async fn context(url: &str, path: &std::path::Path, token: Option<String>) -> SyncContext {
    let client = Client::new(url).unwrap();
    client.set_token(token);
    SyncContext::initialize(client, todo_store(path))
        .await
        .unwrap()
}

async fn queue_three(ctx: &SyncContext) {
    let t = ctx.table("TodoItem").unwrap();
    for (id, text) in [("a", "milk"), ("b", "eggs"), ("c", "bread")] {
        t.insert(json!({"id": id, "text": text, "complete": false}))
            .await
            .unwrap();
    }
    t.update(json!({"id": "a", "text": "oat milk", "complete": true}))
        .await
        .unwrap();
    t.delete("c").await.unwrap();
}

/// 6.4.19 and issue 8 point 4: a push with an expired token (and no refresher, or one that
/// gives another bad token) stops with `CancelledByAuthenticationError`; every queued operation
/// survives, unchanged, and a later push with a good token sends them all.
async fn a_refused_push_keeps_the_whole_queue(kind: StoreKind) {
    let s = server(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&s.url, &dir.path().join("a.db"), Some(expired("alice"))).await;
    queue_three(&ctx).await;
    let before = ctx.operations().await.unwrap();
    assert_eq!(
        before.len(),
        2,
        "a (insert, updated) and b; c collapsed away"
    );
    let refreshes = Arc::new(AtomicUsize::new(0));
    for with_refresher in [false, true] {
        if with_refresher {
            let counter = refreshes.clone();
            ctx.client().set_token_refresher(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Some(expired("alice")) }
            });
        }
        match ctx.push().await {
            Err(Error::PushFailed {
                status: PushStatus::CancelledByAuthenticationError,
                errors,
                message,
            }) => {
                assert!(errors.is_empty(), "{errors:?}");
                assert_eq!(
                    message.as_deref(),
                    Some("The authentication token was refused")
                );
            }
            other => panic!("push with an expired token: {other:?}"),
        }
        let after = ctx.operations().await.unwrap();
        let key = |ops: &[tablesync_client::Operation]| {
            ops.iter()
                .map(|o| {
                    (
                        o.sequence,
                        o.kind,
                        o.item_id.clone(),
                        o.version,
                        o.item.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&after), key(&before), "the queue is intact");
        assert!(ctx.push_errors().await.unwrap().is_empty());
    }
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "one refresh for the one 401"
    );
    // The pull also stops at the 401 (it pushes first) and writes nothing.
    assert!(ctx
        .table("TodoItem")
        .unwrap()
        .pull(Some("q"), "")
        .await
        .is_err());
    ctx.client().clear_token_refresher();
    ctx.client().set_token(Some(token("alice", 600)));
    ctx.push().await.unwrap();
    assert_eq!(ctx.pending_operations().await.unwrap(), 0);
    // The server has both rows, owned by Alice.
    let other = tempfile::tempdir().unwrap();
    let reader = context(
        &s.url,
        &other.path().join("r.db"),
        Some(token("alice", 600)),
    )
    .await;
    reader
        .table("TodoItem")
        .unwrap()
        .pull(Some("all"), "")
        .await
        .unwrap();
    let rows = reader
        .table("TodoItem")
        .unwrap()
        .read("$orderby=id")
        .await
        .unwrap()
        .items;
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("a".into(), "oat milk".into()), ("b".into(), "eggs".into())]
    );
}

/// The refresher is called once on a 401 and the request is retried with its token: the push
/// succeeds without the app seeing the 401.
async fn the_refresher_renews_an_expired_token(kind: StoreKind) {
    let s = server(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&s.url, &dir.path().join("a.db"), Some(expired("alice"))).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    ctx.client().set_token_refresher(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Some(token("alice", 600)) }
    });
    queue_three(&ctx).await;
    ctx.push().await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh, then the new token is kept"
    );
    assert_eq!(
        ctx.client()
            .token()
            .and_then(|t| token_subject(&t))
            .as_deref(),
        Some("alice")
    );
    ctx.table("TodoItem")
        .unwrap()
        .pull(Some("all"), "")
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Two users sync the same per-user table and each only ever gets their own rows, also for the
/// same item id.
async fn two_users_sync_only_their_own_rows(kind: StoreKind) {
    let s = server(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = context(
        &s.url,
        &dir.path().join("alice.db"),
        Some(token("alice", 600)),
    )
    .await;
    let bob = context(&s.url, &dir.path().join("bob.db"), Some(token("bob", 600))).await;
    for (ctx, text) in [(&alice, "alice's"), (&bob, "bob's")] {
        let t = ctx.table("TodoItem").unwrap();
        t.insert(json!({"id": "same-id", "text": text, "complete": false}))
            .await
            .unwrap();
        t.insert(json!({"id": format!("only-{text}"), "text": text, "complete": false}))
            .await
            .unwrap();
        ctx.push().await.unwrap();
    }
    for (ctx, user, text) in [(&alice, "alice", "alice's"), (&bob, "bob", "bob's")] {
        let t = ctx.table("TodoItem").unwrap();
        t.purge(None, "", true).await.unwrap();
        t.pull(Some(&format!("todoItems{user}")), "").await.unwrap();
        let rows = t.read("$orderby=id").await.unwrap().items;
        assert_eq!(rows.len(), 2, "{user}: {rows:?}");
        assert!(rows.iter().all(|r| r["text"] == text), "{user}: {rows:?}");
    }
}

store_tests!(
    a_refused_push_keeps_the_whole_queue,
    the_refresher_renews_an_expired_token,
    two_users_sync_only_their_own_rows,
);
