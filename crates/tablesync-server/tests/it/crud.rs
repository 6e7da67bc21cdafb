//! Insert, read, update, delete, undelete: items, system properties, ETags, headers.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{err, send, StoreKind, TestServer};

fn is_wire_date(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    let b = s.as_bytes();
    s.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.chars().enumerate().all(|(i, c)| {
            [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit() || c == '-' || c == ':'
        })
}

async fn insert_generates_id_and_every_system_property(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let r = s.post("/tables/TodoItem", json!({"text": "milk"})).await;
    assert_eq!(r.status, 201);
    r.assert_etag_matches_body();
    let item = r.body.as_object().unwrap();
    let keys: Vec<&str> = item.keys().map(String::as_str).collect();
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
    let id = item["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_lowercase());
    assert_eq!(id.matches('-').count(), 4);
    assert_eq!(item["text"], "milk");
    assert_eq!(item["complete"], Value::Null);
    assert_eq!(item["deleted"], false);
    assert!(is_wire_date(&item["createdAt"]), "{}", item["createdAt"]);
    assert_eq!(item["createdAt"], item["updatedAt"]);
    // version: base64 of an 8-byte counter.
    assert_eq!(item["version"].as_str().unwrap().len(), 12);
    assert_eq!(
        r.header("x-zumo-server-version"),
        Some(tablesync_server::SERVER_VERSION)
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));

    let got = s.get(&format!("/tables/TodoItem/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r.body);
    got.assert_etag_matches_body();
}

async fn client_ids_are_kept_and_insert_version_is_ignored(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let r = s
        .post(
            "/tables/TodoItem",
            json!({"id": "Todo-1 é", "text": "x", "complete": true, "version": "AAAA"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["id"], "Todo-1 é");
    assert_ne!(r.body["version"], "AAAA");
    assert_eq!(r.body["complete"], true);
    // The id round-trips through a percent-encoded URL.
    let got = s.get("/tables/TodoItem/Todo-1%20%C3%A9").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r.body);
    // A null id is generated.
    let r = s
        .post("/tables/TodoItem", json!({"id": null, "text": "y"}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["id"].as_str().unwrap().len(), 36);
}

async fn patch_merges_and_restamps(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let created = s.insert_todo("a", "milk", false).await;
    let r = s
        .patch("/tables/TodoItem/a", json!({"text": "oat milk"}))
        .await;
    assert_eq!(r.status, 200);
    r.assert_etag_matches_body();
    assert_eq!(r.body["text"], "oat milk");
    assert_eq!(r.body["complete"], false, "unsupplied properties are kept");
    assert_eq!(r.body["createdAt"], created["createdAt"]);
    assert_ne!(r.body["version"], created["version"]);
    assert!(
        r.body["updatedAt"].as_str() > created["updatedAt"].as_str(),
        "stamps strictly increase"
    );

    // A matching If-Match, the id in the body, and `If-Match: *`.
    let etag = r.header("etag").unwrap().to_owned();
    let r2 = s
        .patch_if(
            "/tables/TodoItem/a",
            &etag,
            json!({"id": "a", "complete": true}),
        )
        .await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["complete"], true);
    let r3 = s
        .patch_if("/tables/TodoItem/a", "*", json!({"text": "any"}))
        .await;
    assert_eq!(r3.status, 200);
    // Unquoted If-Match works too (Node accepts it).
    let v = r3.body["version"].as_str().unwrap().to_owned();
    let r4 = s
        .patch_if("/tables/TodoItem/a", &v, json!({"text": "unquoted"}))
        .await;
    assert_eq!(r4.status, 200);
    // A matching body version without If-Match; an empty body still writes a new version.
    let r5 = s
        .patch(
            "/tables/TodoItem/a",
            json!({"version": r4.body["version"], "text": "v"}),
        )
        .await;
    assert_eq!(r5.status, 200);
    let r6 = s.patch("/tables/TodoItem/a", json!({})).await;
    assert_eq!(r6.status, 200);
    assert_ne!(r6.body["version"], r5.body["version"]);
    assert_eq!(r6.body["text"], "v");
}

async fn every_write_gets_a_new_increasing_stamp(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let mut stamps = Vec::new();
    for i in 0..5 {
        let r = s
            .post("/tables/TodoItem", json!({"id": format!("i{i}")}))
            .await;
        stamps.push((
            r.body["updatedAt"].as_str().unwrap().to_owned(),
            r.body["version"].as_str().unwrap().to_owned(),
        ));
        let r = s
            .patch(&format!("/tables/TodoItem/i{i}"), json!({"text": "t"}))
            .await;
        stamps.push((
            r.body["updatedAt"].as_str().unwrap().to_owned(),
            r.body["version"].as_str().unwrap().to_owned(),
        ));
    }
    for pair in stamps.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{pair:?}");
        assert!(
            counter(&pair[0].1) < counter(&pair[1].1),
            "versions of one table increase: {pair:?}"
        );
    }
}

/// The write counter inside a version (base64 of 8 big-endian bytes).
fn counter(version: &str) -> u64 {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(version)
        .unwrap();
    u64::from_be_bytes(bytes.try_into().unwrap())
}

async fn soft_delete_tombstones_and_undelete(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let created = s.insert_todo("a", "milk", false).await;
    s.insert_todo("b", "eggs", false).await;

    let r = s.delete("/tables/TodoItem/a").await;
    assert_eq!(r.status, 200);
    r.assert_etag_matches_body();
    assert_eq!(r.body["deleted"], true);
    assert_eq!(r.body["text"], "milk");
    assert_ne!(r.body["version"], created["version"]);
    assert!(r.body["updatedAt"].as_str() > created["updatedAt"].as_str());
    let tombstone = r.body.clone();

    let not_found = err("item_not_found", "The item does not exist");
    let g = s.get("/tables/TodoItem/a").await;
    assert_eq!((g.status, g.body), (404, not_found.clone()));
    let g = s.get("/tables/TodoItem/a?__includeDeleted=true").await;
    assert_eq!((g.status, &g.body), (200, &tombstone));
    assert_eq!(crate::ids(&s.get("/tables/TodoItem").await.body), ["b"]);
    assert_eq!(
        crate::ids(&s.get("/tables/TodoItem?__includeDeleted=true").await.body),
        ["a", "b"]
    );

    for r in [
        s.patch("/tables/TodoItem/a", json!({"text": "x"})).await,
        s.delete("/tables/TodoItem/a").await,
    ] {
        assert_eq!((r.status, r.body), (404, not_found.clone()));
    }
    // Re-inserting a tombstoned id conflicts with the stored tombstone.
    let r = s
        .post("/tables/TodoItem", json!({"id": "a", "text": "again"}))
        .await;
    assert_eq!((r.status, &r.body), (409, &tombstone));

    // Undelete: stale If-Match first, then a plain one.
    let r = send(
        s.req(Method::POST, "/tables/TodoItem/a")
            .header("If-Match", "\"stale\""),
    )
    .await;
    assert_eq!((r.status, &r.body), (412, &tombstone));
    r.assert_etag_matches_body();
    let r = send(s.req(Method::POST, "/tables/TodoItem/a").header(
        "If-Match",
        format!("\"{}\"", tombstone["version"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(r.status, 200);
    r.assert_etag_matches_body();
    assert_eq!(r.body["deleted"], false);
    assert_ne!(r.body["version"], tombstone["version"]);
    assert!(r.body["updatedAt"].as_str() > tombstone["updatedAt"].as_str());
    // Undeleting a live row changes nothing.
    let again = send(s.req(Method::POST, "/tables/TodoItem/a")).await;
    assert_eq!((again.status, &again.body), (200, &r.body));
    assert_eq!(s.get("/tables/TodoItem/a").await.status, 200);
    let missing = send(s.req(Method::POST, "/tables/TodoItem/zzz")).await;
    assert_eq!((missing.status, missing.body), (404, not_found));
}

async fn hard_delete_tables(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[[tables]]\nname = \"Plain\"\nsoft_delete = false\ncolumns = { text = \"string\" }",
    )
    .await;
    let created = s
        .post("/tables/Plain", json!({"id": "p", "text": "x"}))
        .await;
    assert_eq!(
        created.body["deleted"], false,
        "deleted is present on hard-delete tables"
    );
    let r = s.delete("/tables/Plain/p").await;
    assert_eq!(
        (r.status, &r.body),
        (200, &created.body),
        "the row as it was"
    );
    r.assert_etag_matches_body();
    assert_eq!(s.get("/tables/Plain/p").await.status, 404);
    assert_eq!(
        s.get("/tables/Plain/p?__includeDeleted=true").await.status,
        404
    );
    assert_eq!(s.delete("/tables/Plain/p").await.status, 404);
    let r = send(s.req(Method::POST, "/tables/Plain/p")).await;
    assert_eq!(
        (r.status, r.body),
        (
            405,
            err(
                "method_not_allowed",
                "Table 'Plain' has no soft delete, so nothing can be undeleted"
            )
        )
    );
    // The id is free again.
    assert_eq!(
        s.post("/tables/Plain", json!({"id": "p"})).await.status,
        201
    );
}

async fn delete_with_if_match(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let created = s.insert_todo("a", "milk", false).await;
    let r = send(
        s.req(Method::DELETE, "/tables/TodoItem/a")
            .header("If-Match", "\"nope\""),
    )
    .await;
    assert_eq!((r.status, &r.body), (412, &created));
    r.assert_etag_matches_body();
    let etag = format!("\"{}\"", created["version"].as_str().unwrap());
    let r = send(
        s.req(Method::DELETE, "/tables/TodoItem/a")
            .header("If-Match", etag),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["deleted"], true);
}

async fn table_names_match_case_insensitively(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    assert_eq!(
        s.post("/tables/todoitem", json!({"id": "a"})).await.status,
        201
    );
    assert_eq!(s.get("/tables/TODOITEM/a").await.status, 200);
}

async fn typed_columns_round_trip(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[[tables]]\nname = \"T\"\ncolumns = { s = \"string\", n = \"number\", b = \"boolean\", d = \"date\" }",
    )
    .await;
    let r = s
        .post(
            "/tables/T",
            json!({"id": "1", "s": "x", "n": 3, "b": 1, "d": "2024-01-02T03:04:05+01:00"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["n"], json!(3));
    assert_eq!(
        r.body["n"].to_string(),
        "3",
        "integral numbers print without .0"
    );
    assert_eq!(r.body["b"], true);
    assert_eq!(r.body["d"], "2024-01-02T02:04:05.000Z");
    let r = s
        .patch(
            "/tables/T/1",
            json!({"n": 2.5, "d": "2024-01-02T02:04:05.1234567Z", "s": null}),
        )
        .await;
    assert_eq!(r.body["n"], json!(2.5));
    assert_eq!(r.body["d"], "2024-01-02T02:04:05.123Z");
    assert_eq!(r.body["s"], Value::Null);
}

async fn cors_and_compression(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("a", "x", false).await;
    let r = send(
        s.req(Method::GET, "/tables/TodoItem")
            .header("Origin", "http://example.com"),
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("link") && exposed.contains("etag"),
        "{exposed}"
    );
    // Preflight: answered by the CORS layer, no ZUMO-API-VERSION needed.
    let pre = s
        .client
        .request(Method::OPTIONS, format!("{}/tables/TodoItem/a", s.base))
        .header("Origin", "http://example.com")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "zumo-api-version,if-match",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    let methods = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("PATCH"), "{methods}");
    // gzip when asked for (the test client does not decode, so look at the header only).
    let filler = "x".repeat(2000);
    s.patch("/tables/TodoItem/a", json!({"text": filler})).await;
    let r = s
        .req(Method::GET, "/tables/TodoItem")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
}

crate::store_tests!(
    insert_generates_id_and_every_system_property,
    client_ids_are_kept_and_insert_version_is_ignored,
    patch_merges_and_restamps,
    every_write_gets_a_new_increasing_stamp,
    soft_delete_tombstones_and_undelete,
    hard_delete_tables,
    delete_with_if_match,
    table_names_match_case_insensitively,
    typed_columns_round_trip,
    cors_and_compression,
);
