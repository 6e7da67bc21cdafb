//! Integer-id tables (`id_type = "integer"`, the Node server's `autoIncrement`): the database
//! assigns the ids, JSON ids are numbers, and every route, query, precondition, soft delete and
//! undelete works as on a string-id table.

use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::Config;

use crate::{err, send, StoreKind, TestServer};

const TABLES: &str = r#"
[[tables]]
name = "IntIdTodo"
id_type = "integer"
columns = { text = "string", complete = "boolean" }

[[tables]]
name = "IntIdHard"
id_type = "integer"
soft_delete = false
columns = { text = "string" }
"#;

async fn server(kind: StoreKind) -> TestServer {
    TestServer::with_toml(kind, TABLES).await
}

/// Insert `text` and return the stored item (201 asserted).
async fn insert(s: &TestServer, table: &str, text: &str) -> Value {
    let r = s
        .post(&format!("/tables/{table}"), json!({ "text": text }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

fn int_ids(body: &Value) -> Vec<i64> {
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .iter()
        .map(|i| i["id"].as_i64().unwrap_or_else(|| panic!("id of {i}")))
        .collect()
}

async fn the_database_assigns_numeric_ids(kind: StoreKind) {
    let s = server(kind).await;
    let a = insert(&s, "IntIdTodo", "a").await;
    let b = insert(&s, "IntIdTodo", "b").await;
    assert_eq!(a["id"], json!(1));
    assert_eq!(b["id"], json!(2));
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "text",
            "complete",
            "createdAt",
            "updatedAt",
            "version",
            "deleted"
        ]
    );
    // Null and 0 mean "no id yet" (the official clients send them).
    for body in [
        json!({"id": null, "text": "c"}),
        json!({"id": 0, "text": "d"}),
    ] {
        let r = s.post("/tables/IntIdTodo", body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert!(r.body["id"].is_i64(), "{}", r.body);
    }
    let got = s.get("/tables/IntIdTodo/2").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b);
    got.assert_etag_matches_body();
    // Ids are never handed out twice, even after the newest row is removed for good.
    let h1 = insert(&s, "IntIdHard", "x").await;
    assert_eq!(
        s.delete(&format!("/tables/IntIdHard/{}", h1["id"]))
            .await
            .status,
        200
    );
    let h2 = insert(&s, "IntIdHard", "y").await;
    assert!(h2["id"].as_i64() > h1["id"].as_i64(), "{h1} then {h2}");
}

async fn an_insert_carrying_an_id_is_refused(kind: StoreKind) {
    let s = server(kind).await;
    let refused = err(
        "invalid_id",
        "invalid id: this table has integer ids assigned by the database: an insert must not carry an id",
    );
    for id in [json!(7), json!("7")] {
        let r = s
            .post("/tables/IntIdTodo", json!({"id": id, "text": "x"}))
            .await;
        assert_eq!((r.status, &r.body), (400, &refused), "{id}");
    }
    for id in [json!("abc"), json!(1.5), json!(-1), json!(true)] {
        let r = s
            .post("/tables/IntIdTodo", json!({"id": id, "text": "x"}))
            .await;
        assert_eq!(r.status, 400, "{id}: {:?}", r.body);
        assert_eq!(r.body["code"], "invalid_id", "{id}");
    }
    // Nothing was written.
    assert_eq!(s.get("/tables/IntIdTodo").await.body, json!([]));
}

async fn url_ids_must_be_integers(kind: StoreKind) {
    let s = server(kind).await;
    insert(&s, "IntIdTodo", "a").await;
    let bad = err(
        "invalid_id",
        "invalid id: this table has integer ids: the id must be an integer from 1 to 9223372036854775807",
    );
    for path in ["abc", "0", "01", "-1", "1.0", "9223372036854775808"] {
        for method in [Method::GET, Method::DELETE, Method::POST] {
            let r = send(s.req(method.clone(), &format!("/tables/IntIdTodo/{path}"))).await;
            assert_eq!((r.status, &r.body), (400, &bad), "{method} {path}");
        }
        let r = s
            .patch(&format!("/tables/IntIdTodo/{path}"), json!({"text": "x"}))
            .await;
        assert_eq!((r.status, &r.body), (400, &bad), "PATCH {path}");
    }
    // The OpenAPI document says so.
    let doc = s.get("/openapi.json").await.body;
    assert_eq!(
        doc["components"]["schemas"]["IntIdTodo"]["properties"]["id"]["type"],
        "integer"
    );
    let missing = s.get("/tables/IntIdTodo/99").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["code"], "item_not_found");
}

async fn update_delete_and_undelete_by_integer_id(kind: StoreKind) {
    let s = server(kind).await;
    let a = insert(&s, "IntIdTodo", "a").await;
    let v1 = a["version"].as_str().unwrap().to_owned();
    // The body id may repeat the URL's, as a number or as its digits.
    for id in [json!(1), json!("1")] {
        let r = s
            .patch("/tables/IntIdTodo/1", json!({"id": id, "complete": true}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["id"], json!(1));
    }
    let r = s
        .patch("/tables/IntIdTodo/1", json!({"id": 2, "text": "x"}))
        .await;
    assert_eq!(
        (r.status, &r.body),
        (
            400,
            &err(
                "id_mismatch",
                "The item ID and querystring ID did not match"
            )
        )
    );
    // A stale If-Match is 412 with the current row; the current one works.
    let stale = s
        .patch_if(
            "/tables/IntIdTodo/1",
            &format!("\"{v1}\""),
            json!({"text": "b"}),
        )
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.body["id"], json!(1));
    let current = stale.body["version"].as_str().unwrap().to_owned();
    let ok = s
        .patch_if(
            "/tables/IntIdTodo/1",
            &format!("\"{current}\""),
            json!({"text": "b"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["text"], "b");
    // A body version that is stale is 409.
    let r = s
        .patch("/tables/IntIdTodo/1", json!({"version": v1, "text": "c"}))
        .await;
    assert_eq!(r.status, 409);
    // Soft delete, then the tombstone is hidden, listed with __includeDeleted, and undeleted.
    let d = s.delete("/tables/IntIdTodo/1").await;
    assert_eq!(d.status, 200);
    assert_eq!(
        (d.body["id"].clone(), d.body["deleted"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(s.get("/tables/IntIdTodo/1").await.status, 404);
    let listed = s.get("/tables/IntIdTodo?__includeDeleted=true").await;
    assert_eq!(int_ids(&listed.body), [1]);
    let u = send(s.req(Method::POST, "/tables/IntIdTodo/1")).await;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(
        (u.body["id"].clone(), u.body["deleted"].clone()),
        (json!(1), json!(false))
    );
    // Hard delete answers with the row as it was; then it is gone.
    let h = insert(&s, "IntIdHard", "x").await;
    let path = format!("/tables/IntIdHard/{}", h["id"]);
    let d = s.delete(&path).await;
    assert_eq!((d.status, &d.body), (200, &h));
    assert_eq!(s.get(&path).await.status, 404);
}

async fn queries_compare_ids_as_numbers(kind: StoreKind) {
    let s = server(kind).await;
    for i in 0..12 {
        insert(&s, "IntIdTodo", &format!("t{i}")).await;
    }
    let r = s.get("/tables/IntIdTodo?$filter=id%20eq%205").await;
    assert_eq!(int_ids(&r.body), [5]);
    // Numeric, not text, order: 10 and 11 come after 9.
    let r = s
        .get("/tables/IntIdTodo?$filter=id%20gt%208&$orderby=id")
        .await;
    assert_eq!(int_ids(&r.body), [9, 10, 11, 12]);
    let r = s.get("/tables/IntIdTodo?$orderby=id%20desc&$top=3").await;
    assert_eq!(int_ids(&r.body), [12, 11, 10]);
    let r = s
        .get("/tables/IntIdTodo?$filter=id%20le%202%20or%20id%20eq%2011&$select=id,text")
        .await;
    assert_eq!(
        r.body,
        json!([{"id": 1, "text": "t0"}, {"id": 2, "text": "t1"}, {"id": 11, "text": "t10"}])
    );
    // A string literal does not compare with a number column.
    let r = s.get("/tables/IntIdTodo?$filter=id%20eq%20'5'").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

/// The keyset pull of our client, spelled with a numeric id: rows sharing one `updatedAt` page
/// past the token by id, compared as numbers (9 < 10), and the pages cover every row once.
async fn keyset_paging_compares_the_id_as_a_number(kind: StoreKind) {
    let s = server(kind).await;
    for i in 0..11 {
        insert(&s, "IntIdTodo", &format!("t{i}")).await;
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut token: Option<(String, i64)> = None;
    loop {
        let filter = match &token {
            None => String::new(),
            Some((u, i)) => format!(
                "&$filter={}",
                urlencode(&format!(
                    "(updatedAt ge datetimeoffset'{u}') and ((updatedAt gt datetimeoffset'{u}') or ((updatedAt eq datetimeoffset'{u}') and (id gt {i})))"
                ))
            ),
        };
        let r = s
            .get(&format!(
                "/tables/IntIdTodo?$orderby=updatedAt,id&$top=4&__includeDeleted=true{filter}"
            ))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        token = Some((
            last["updatedAt"].as_str().unwrap().to_owned(),
            last["id"].as_i64().unwrap(),
        ));
        seen.extend(int_ids(&Value::Array(page)));
    }
    assert_eq!(seen, (1..=11).collect::<Vec<_>>());
    // A token on id 9 with the updatedAt of row 10 still finds row 10 (9 < 10 as numbers).
    let ten = s.get("/tables/IntIdTodo/10").await.body;
    let u = ten["updatedAt"].as_str().unwrap();
    let r = s
        .get(&format!(
            "/tables/IntIdTodo?$filter={}",
            urlencode(&format!("(updatedAt eq datetimeoffset'{u}') and (id gt 9)"))
        ))
        .await;
    assert_eq!(int_ids(&r.body), [10]);
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A table whose stored ids do not fit its configuration is refused at start, both ways.
async fn a_stored_id_type_that_does_not_fit_is_refused_at_start(kind: StoreKind) {
    let s = server(kind).await;
    insert(&s, "IntIdTodo", "a").await;
    let url = s.database_url().to_owned();
    for (table, id_type) in [("IntIdTodo", "string"), ("Other", "integer")] {
        let toml = format!("[[tables]]\nname = \"{table}\"\nid_type = \"{id_type}\"\n");
        let config = Config::from_toml_str(&toml).unwrap().with_database(&url);
        if table == "Other" {
            // Made with string ids first.
            let plain = Config::from_toml_str("[[tables]]\nname = \"Other\"\n")
                .unwrap()
                .with_database(&url);
            drop(tablesync_server::Server::open(plain).await.unwrap());
        }
        let e = match tablesync_server::Server::open(config).await {
            Ok(_) => panic!("{table} as {id_type} was served"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&format!("id_type = \"{id_type}\"")), "{e}");
    }
}

crate::store_tests!(
    the_database_assigns_numeric_ids,
    an_insert_carrying_an_id_is_refused,
    url_ids_must_be_integers,
    update_delete_and_undelete_by_integer_id,
    queries_compare_ids_as_numbers,
    keyset_paging_compares_the_id_as_a_number,
    a_stored_id_type_that_does_not_fit_is_refused_at_start,
);
