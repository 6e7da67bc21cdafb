//! A sync table for a server table with integer ids (the Node server's `autoIncrement`, our
//! `id_type = "integer"`) is refused with [`Error::IntegerIdTable`] at the first pull, before
//! any row is applied.

use serde_json::json;
use tablesync_client::Error;
use tablesync_server::config::IdType;

use crate::common::{context, fresh_database, OurServer, StoreKind};

store_tests!(a_pull_from_an_integer_id_table_is_refused);

async fn a_pull_from_an_integer_id_table_is_refused(kind: StoreKind) {
    let db = fresh_database(kind).await;
    let mut config = tablesync_server::Config::default_todo().with_database(db.url());
    config.tables[0].id_type = IdType::Integer;
    let server = OurServer::start_with(config).await;
    let http = reqwest::Client::new();
    for text in ["a", "b"] {
        let r = http
            .post(format!("{}tables/TodoItem", server.url))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&server.url, &dir.path().join("a.db"), None).await;
    let t = ctx.table("TodoItem").unwrap();
    for query_id in [Some("all"), None] {
        match t.pull(query_id, "").await {
            Err(Error::IntegerIdTable(table)) => assert_eq!(table, "TodoItem"),
            other => panic!("pull of an integer-id table: {other:?}"),
        }
    }
    assert!(t.read("").await.unwrap().items.is_empty());
    let e = Error::IntegerIdTable("TodoItem".into()).to_string();
    assert!(e.contains("integer ids") && e.contains("string ids"), "{e}");
    server.stop().await;
}
