//! `Server::router` inside another app: the example `examples/embedded.rs` (compiled into this
//! test) mounts the tables under `/sync` beside its own routes, behind its own session layer.
//! The client SDK syncs against `http://host/sync/`, discovery and next links included.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tablesync_client::{
    Client, ClientOptions, ColumnType, LocalStore, PullOptions, SyncContext, TableDefinition,
};
use tablesync_server::{Config, Server};

use crate::{fresh_database, StoreKind};

#[allow(dead_code)] // its `main` is the example's, not the test's
#[path = "../../examples/embedded.rs"]
mod example;

const SESSION: &str = "session-of-alice";

/// The example app on a fresh database, served on 127.0.0.1:0: its base URL, and what must live
/// as long as the test (the database, and the sender whose drop stops the server).
async fn start(
    kind: StoreKind,
) -> (
    String,
    tablesync_server::testing::TestDatabase,
    tokio::sync::oneshot::Sender<()>,
) {
    let db = fresh_database(kind).await;
    let server = Server::open(Config::default_todo().with_database(db.url()))
        .await
        .unwrap();
    let sessions = Arc::new(HashSet::from([SESSION.to_owned()]));
    let app = example::app(&server, sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (base, db, stop)
}

fn local_store(dir: &tempfile::TempDir, name: &str) -> LocalStore {
    let mut store = LocalStore::new(dir.path().join(name));
    store
        .define_table(
            TableDefinition::new("TodoItem")
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean),
        )
        .unwrap();
    store
}

async fn context(base: &str, dir: &tempfile::TempDir, name: &str) -> SyncContext {
    let client = Client::with_options(
        &format!("{base}/sync/"),
        ClientOptions::default().with_auth_token(SESSION),
    )
    .unwrap();
    SyncContext::initialize(client, local_store(dir, name))
        .await
        .unwrap()
}

/// The app's routes, its session layer in front of the tables, and tablesync's own answers
/// (JSON 404, API version gate) under the prefix.
async fn app_routes_and_session_layer(kind: StoreKind) {
    let (base, _db, _stop) = start(kind).await;
    let http = reqwest::Client::builder().no_gzip().build().unwrap();

    let home = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(home.text().await.unwrap(), "the app's home page\n");
    let hello: Value = http
        .get(format!("{base}/api/hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hello, json!("hello from the app"));

    // No session, or an unknown one: the app's layer refuses before tablesync sees the request.
    for token in [None, Some("forged")] {
        let mut req = http
            .get(format!("{base}/sync/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0");
        if let Some(token) = token {
            req = req.header("X-ZUMO-AUTH", token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(resp.headers().get("x-zumo-server-version").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "sign in to the app first", "code": "unauthorized"})
        );
    }

    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .header("X-ZUMO-AUTH", SESSION)
            .send()
    };
    let list = get("/sync/tables/TodoItem?ZUMO-API-VERSION=2.0.0")
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    assert!(list.headers().get("x-zumo-server-version").is_some());
    assert_eq!(list.json::<Value>().await.unwrap(), json!([]));

    // tablesync's gate and fallback still answer, with its JSON bodies, under the prefix.
    let no_version = get("/sync/tables/TodoItem").await.unwrap();
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST);
    let unknown = get("/sync/tables/Nope?ZUMO-API-VERSION=2.0.0")
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["code"],
        json!("table_not_found")
    );
    let nowhere = get("/sync/elsewhere").await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        nowhere.json::<Value>().await.unwrap()["code"],
        json!("route_not_found")
    );
    // The OpenAPI document names the prefix as its server, so its paths resolve under it.
    let openapi: Value = get("/sync/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["servers"], json!([{"url": "/sync"}]));
    assert!(openapi["paths"]["/tables/TodoItem"]["get"].is_object());
    // The tables are not reachable outside the prefix.
    let bare = get("/tables/TodoItem?ZUMO-API-VERSION=2.0.0")
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::NOT_FOUND);
}

/// A full page's `Link` keeps the prefix (and the client can follow it); `$capabilities` is
/// found at `{base}/$capabilities`.
async fn next_link_and_discovery_under_the_prefix(kind: StoreKind) {
    let (base, _db, _stop) = start(kind).await;
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    for i in 0..3 {
        let resp = http
            .post(format!("{base}/sync/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .header("X-ZUMO-AUTH", SESSION)
            .json(&json!({"id": format!("i{i}"), "text": "t", "complete": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let first = http
        .get(format!("{base}/sync/tables/TodoItem?$top=2"))
        .header("ZUMO-API-VERSION", "2.0.0")
        .header("X-ZUMO-AUTH", SESSION)
        .send()
        .await
        .unwrap();
    let link = first.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("{base}/sync/tables/TodoItem?$top=2&$skip=2; rel=next")
    );
    let next_url = link.split(';').next().unwrap();
    let rest: Value = http
        .get(next_url)
        .header("ZUMO-API-VERSION", "2.0.0")
        .header("X-ZUMO-AUTH", SESSION)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest.as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest[0]["id"], json!("i2"));

    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&base, &dir, "a.db").await;
    let caps = ctx.capabilities().await;
    assert_eq!(
        caps.server.as_deref(),
        Some(tablesync_server::SERVER_VERSION)
    );
    assert!(caps.page_size_max.is_some(), "{caps:?}");
}

/// Two devices sync through the app: one pushes, the other pulls in pages of 2.
async fn client_syncs_through_the_app(kind: StoreKind) {
    let (base, _db, _stop) = start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let writer = context(&base, &dir, "writer.db").await;
    let table = writer.table("TodoItem").unwrap();
    for i in 0..5 {
        table
            .insert(json!({"id": format!("item-{i}"), "text": format!("t{i}"), "complete": false}))
            .await
            .unwrap();
    }
    writer.push().await.unwrap();
    assert_eq!(writer.pending_operations().await.unwrap(), 0);

    let reader = context(&base, &dir, "reader.db").await;
    let summary = reader
        .table("TodoItem")
        .unwrap()
        .pull_with_options(Some("all"), "", PullOptions::with_page_size(2))
        .await
        .unwrap();
    assert_eq!(summary.upserted, 5, "{summary:?}");
    assert!(summary.pages >= 3, "{summary:?}");
    let local = reader.table("TodoItem").unwrap().read("").await.unwrap();
    assert_eq!(local.items.len(), 5);

    // A client without the app's session is refused by the app, and says so.
    let stranger =
        Client::with_options(&format!("{base}/sync/"), ClientOptions::default()).unwrap();
    let ctx = SyncContext::initialize(stranger, local_store(&dir, "stranger.db"))
        .await
        .unwrap();
    let err = ctx
        .table("TodoItem")
        .unwrap()
        .pull(None, "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

crate::store_tests!(
    app_routes_and_session_layer,
    next_link_and_discovery_under_the_prefix,
    client_syncs_through_the_app,
);
