//! Tables from config and dynamic schema.

use serde_json::{json, Value};
use tablesync_server::{Config, Server};

use crate::{err, StoreKind, TestServer};

const DYNAMIC: &str =
    "[[tables]]\nname = \"Notes\"\ndynamic_schema = true\ncolumns = { title = \"string\" }";

async fn dynamic_schema_adds_typed_columns(kind: StoreKind) {
    let s = TestServer::with_toml(kind, DYNAMIC).await;
    assert_eq!(
        s.post("/tables/Notes", json!({"id": "old", "title": "t"}))
            .await
            .status,
        201
    );
    let r = s.post("/tables/Notes", json!({"id": "n", "title": "t", "stars": 4, "pinned": true, "tag": "x", "nothing": null})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "title",
            "stars",
            "pinned",
            "tag",
            "createdAt",
            "updatedAt",
            "version",
            "deleted"
        ]
    );
    assert_eq!(
        (
            r.body["stars"].clone(),
            r.body["pinned"].clone(),
            r.body["tag"].clone()
        ),
        (json!(4), json!(true), json!("x"))
    );
    // Every row now has the columns, null where unset.
    let old = s.get("/tables/Notes/old").await.body;
    assert_eq!(
        (
            old["stars"].clone(),
            old["pinned"].clone(),
            old["tag"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    // The new column is typed: a string for a number column is refused.
    let r = s.patch("/tables/Notes/old", json!({"stars": "many"})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "wrong_type",
                "The property 'stars' must be a number or null, not a string"
            )
        )
    );
    // Not a valid column name, or an object: refused.
    let r = s.post("/tables/Notes", json!({"bad-name": 1})).await;
    assert_eq!(
        (r.status, r.body),
        (400, err("unknown_column", "The property 'bad-name' cannot become a column: names must match ^[A-Za-z_][A-Za-z0-9_]{0,127}$"))
    );
    let r = s.post("/tables/Notes", json!({"obj": {"a": 1}})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "wrong_type",
                "The property 'obj' is an object or array; only scalar values can be stored"
            )
        )
    );
    // New columns can be filtered on.
    let r = s.get("/tables/Notes?$filter=stars%20gt%203").await;
    assert_eq!(crate::ids(&r.body), ["n"]);
}

async fn dynamic_columns_survive_a_restart(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let config = Config::from_toml_str(DYNAMIC)
        .unwrap()
        .with_database(db.url());
    {
        let server = Server::open(config.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        let r = reqwest::Client::new()
            .post(format!("{base}/tables/Notes"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({"id": "a", "extra": 1.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
    let server = Server::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.run(listener, std::future::pending()));
    let item: Value = reqwest::Client::new()
        .get(format!("{base}/tables/Notes/a"))
        .header("ZUMO-API-VERSION", "2.0.0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["extra"], json!(1.5));
    assert_eq!(item["title"], Value::Null);
}

async fn declared_columns_are_added_to_an_existing_table(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let v1 = Config::from_toml_str("[[tables]]\nname = \"T\"\ncolumns = { a = \"string\" }")
        .unwrap()
        .with_database(db.url());
    drop(Server::open(v1).await.unwrap());
    let v2 = Config::from_toml_str(
        "[[tables]]\nname = \"T\"\ncolumns = { a = \"string\", b = \"number\" }",
    )
    .unwrap()
    .with_database(db.url());
    assert!(Server::open(v2).await.is_ok());
    // Changing a stored column's type is refused at start.
    let v3 = Config::from_toml_str("[[tables]]\nname = \"T\"\ncolumns = { a = \"number\" }")
        .unwrap()
        .with_database(db.url());
    let e = Server::open(v3)
        .await
        .err()
        .expect("type change refused")
        .to_string();
    assert!(e.contains("T.a is stored as TEXT"), "{e}");
}

async fn page_size_is_per_table(kind: StoreKind) {
    let s = TestServer::with_toml(kind, "[[tables]]\nname = \"Small\"\npage_size = 2").await;
    for i in 0..3 {
        s.post("/tables/Small", json!({"id": format!("{i}")})).await;
    }
    let r = s.get("/tables/Small").await;
    assert_eq!(crate::ids(&r.body), ["0", "1"]);
    let host = s.base.trim_start_matches("http://");
    assert_eq!(
        r.header("link"),
        Some(format!("http://{host}/tables/Small?$skip=2; rel=next").as_str())
    );
}

/// Several servers starting at once on one database all prepare it (on PostgreSQL the DDL runs
/// under an advisory lock), and they serve the same rows.
async fn concurrent_starts_share_one_database(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let config = Config::from_toml_str(DYNAMIC)
        .unwrap()
        .with_database(db.url());
    let starting: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Server::open(config.clone())))
        .collect();
    let mut bases = Vec::new();
    for start in starting {
        let server = start.await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(server.run(listener, std::future::pending()));
    }
    let http = reqwest::Client::new();
    let written: Value = http
        .post(format!("{}/tables/Notes", bases[0]))
        .header("ZUMO-API-VERSION", "2.0.0")
        .json(&json!({"id": "shared", "title": "one row"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for base in &bases[1..] {
        let read: Value = http
            .get(format!("{base}/tables/Notes/shared"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read, written, "{base}");
    }
}

/// A PostgreSQL server that starts while another process holds the schema lock for longer than
/// `busy_timeout_ms` waits for it (up to `schema_lock_timeout_ms`) instead of failing: processes
/// starting together on a busy machine queue on that lock one after the other.
#[tokio::test]
async fn a_start_waits_for_the_schema_lock_longer_than_the_busy_timeout() {
    use sqlx::Connection;
    /// The store's DDL advisory lock key (`store/postgres.rs` `DDL_LOCK_KEY`, "tblsync").
    const DDL_LOCK_KEY: i64 = 0x0074_626c_7379_6e63;
    let db = crate::fresh_database(StoreKind::Postgres).await;
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut config = Config::from_toml_str(DYNAMIC)
        .unwrap()
        .with_database(db.url());
    config.store.busy_timeout_ms = 200;
    config.store.schema_lock_timeout_ms = 120_000;
    let start = tokio::spawn(Server::open(config));
    // Well past the busy timeout: a start bound by it has failed by now.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert!(
        !start.is_finished(),
        "the start gave up while the schema lock was held: {:?}",
        start.await.unwrap().err()
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let server = start.await.unwrap();
    assert!(server.is_ok(), "{:?}", server.err());
}

crate::store_tests!(
    concurrent_starts_share_one_database,
    dynamic_schema_adds_typed_columns,
    dynamic_columns_survive_a_restart,
    declared_columns_are_added_to_an_existing_table,
    page_size_is_per_table,
);
