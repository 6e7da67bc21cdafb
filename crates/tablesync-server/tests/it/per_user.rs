//! Cross-user hostile cases of `shared/design/auth.md` 6.4 (12–18, 20) on the per-user tables
//! `Todo` (soft delete) and `Note` (hard delete), on both stores: Alice owns `r`; Bob is
//! authenticated. Every case is repeated with `r` soft-deleted. "Like a missing row" is checked
//! byte for byte: status, body bytes and every header but `date`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::tokens::{self, *};
use crate::{ids, send, Resp, StoreKind, TestServer};

async fn server(kind: StoreKind) -> TestServer {
    TestServer::with_clock(kind, config_with(auth_config()), tokens::clock()).await
}

/// A request as `user`.
fn req(s: &TestServer, method: Method, path: &str, user: &str) -> reqwest::RequestBuilder {
    s.req(method, path).header("X-ZUMO-AUTH", token(user))
}

async fn get(s: &TestServer, path: &str, user: &str) -> Resp {
    send(req(s, Method::GET, path, user)).await
}

async fn post(s: &TestServer, path: &str, user: &str, body: Value) -> Resp {
    send(req(s, Method::POST, path, user).json(&body)).await
}

async fn patch(
    s: &TestServer,
    path: &str,
    user: &str,
    if_match: Option<&str>,
    body: Value,
) -> Resp {
    let mut rb = req(s, Method::PATCH, path, user).json(&body);
    if let Some(tag) = if_match {
        rb = rb.header("If-Match", tag);
    }
    send(rb).await
}

/// Status, body bytes and headers (without `date` and `x-request-id`, which differ between any
/// two answers) of two answers are the same.
fn assert_same_answer(a: &Resp, b: &Resp, what: &str) {
    assert_eq!(
        a.status, b.status,
        "{what}: status ({:?} vs {:?})",
        a.body, b.body
    );
    assert_eq!(a.raw, b.raw, "{what}: body");
    let headers = |r: &Resp| {
        let mut h: Vec<(String, Vec<u8>)> = r
            .headers
            .iter()
            .filter(|(k, _)| k.as_str() != "date" && k.as_str() != "x-request-id")
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(a), headers(b), "{what}: headers");
}

/// Alice's row `r` in `table`, soft-deleted when `deleted`; returns it as she sees it.
async fn alices_row(s: &TestServer, table: &str, deleted: bool) -> Value {
    let r = post(
        s,
        &format!("/tables/{table}"),
        "alice",
        json!({"id": "r", "text": "alice's secret"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["userId"], "alice",
        "the owner column is filled from the token"
    );
    if !deleted {
        return r.body;
    }
    let d = send(req(
        s,
        Method::DELETE,
        &format!("/tables/{table}/r"),
        "alice",
    ))
    .await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    d.body
}

/// Alice's row as it is now (to prove nothing changed it).
async fn alice_sees(s: &TestServer, table: &str) -> Value {
    let r = get(
        s,
        &format!("/tables/{table}/r?__includedeleted=true"),
        "alice",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// 6.4.12 and 6.4.14/15: Bob's reads and writes of Alice's `r` are answered exactly like the
/// same requests on an id nobody has, and change nothing.
async fn another_users_row_is_answered_like_a_missing_one(kind: StoreKind) {
    for (table, deleted) in [("Todo", false), ("Todo", true), ("Note", false)] {
        // A fresh database per round: a tombstone of `r` would stay in the way.
        let s = server(kind).await;
        let before = alices_row(&s, table, deleted).await;
        let etag = format!("\"{}\"", before["version"].as_str().unwrap());
        type Build<'a> = Box<dyn Fn(&str) -> reqwest::RequestBuilder + 'a>;
        let s = &s;
        let cases: Vec<(&str, Build)> = vec![
            ("GET", Box::new(|p| req(s, Method::GET, p, "bob"))),
            (
                "GET deleted",
                Box::new(|p| req(s, Method::GET, &format!("{p}?__includedeleted=true"), "bob")),
            ),
            (
                "PATCH",
                Box::new(|p| {
                    req(s, Method::PATCH, p, "bob").json(&json!({"text": "bob was here"}))
                }),
            ),
            (
                "PATCH If-Match",
                Box::new(|p| {
                    req(s, Method::PATCH, p, "bob")
                        .header("If-Match", &etag)
                        .json(&json!({"text": "x"}))
                }),
            ),
            (
                "PATCH If-Match *",
                Box::new(|p| {
                    req(s, Method::PATCH, p, "bob")
                        .header("If-Match", "*")
                        .json(&json!({"text": "x"}))
                }),
            ),
            (
                "PATCH body version",
                Box::new(|p| {
                    req(s, Method::PATCH, p, "bob")
                        .json(&json!({"text": "x", "version": before["version"]}))
                }),
            ),
            (
                "PATCH deleted false",
                Box::new(|p| req(s, Method::PATCH, p, "bob").json(&json!({"deleted": false}))),
            ),
            (
                "PUT",
                Box::new(|p| {
                    req(s, Method::PUT, &format!("{p}?__includedeleted=true"), "bob")
                        .json(&json!({"text": "x"}))
                }),
            ),
            ("DELETE", Box::new(|p| req(s, Method::DELETE, p, "bob"))),
            (
                "DELETE If-Match",
                Box::new(|p| req(s, Method::DELETE, p, "bob").header("If-Match", &etag)),
            ),
            ("undelete", Box::new(|p| req(s, Method::POST, p, "bob"))),
            (
                "undelete If-Match",
                Box::new(|p| req(s, Method::POST, p, "bob").header("If-Match", &etag)),
            ),
        ];
        for (what, build) in &cases {
            let a = send(build(&format!("/tables/{table}/r"))).await;
            // `q`: an id nobody has, as long as `r` (a 405 message echoes the path, so the
            // lengths must match for the bytes to).
            let b = send(build(&format!("/tables/{table}/q"))).await;
            let b = Resp {
                raw: String::from_utf8_lossy(&b.raw)
                    .replace("/q\"", "/r\"")
                    .into_bytes(),
                ..b
            };
            assert_same_answer(&a, &b, &format!("{table} deleted={deleted}: {what}"));
            assert!(a.status >= 400, "{what}: {:?}", a.body);
            assert!(!String::from_utf8_lossy(&a.raw).contains("alice"), "{what}");
        }
        assert_eq!(
            alice_sees(s, table).await,
            before,
            "{table}: Alice's row changed"
        );
        // Alice herself still reaches it.
        let own = get(s, &format!("/tables/{table}/r"), "alice").await;
        assert_eq!(own.status, if deleted { 404 } else { 200 });
    }
}

/// 6.4.13: lists, counts, pulls, filters and orders never show Alice's rows to Bob.
async fn lists_and_queries_only_ever_show_the_callers_rows(kind: StoreKind) {
    let s = server(kind).await;
    for n in 0..3 {
        let r = post(
            &s,
            "/tables/Todo",
            "alice",
            json!({"id": format!("a{n}"), "text": "alice"}),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let d = send(req(&s, Method::DELETE, "/tables/Todo/a2", "alice")).await;
    assert_eq!(d.status, 200);
    let r = post(
        &s,
        "/tables/Todo",
        "bob",
        json!({"id": "b0", "text": "bob"}),
    )
    .await;
    assert_eq!(r.status, 201);
    // (query, Bob's rows it matches)
    let queries: [(&str, &[&str]); 11] = [
        ("", &["b0"]),
        ("__includedeleted=true", &["b0"]),
        ("$filter=userId%20eq%20'alice'", &[]),
        ("$filter=userId%20eq%20'alice'%20or%20true&__includedeleted=true", &["b0"]),
        ("$filter=true%20or%20userId%20ne%20'bob'", &["b0"]),
        ("$filter=(text%20eq%20'alice')%20or%20(1%20eq%201)", &["b0"]),
        ("$orderby=userId%20desc", &["b0"]),
        ("$select=id,userId,text&__includedeleted=true", &["b0"]),
        ("$filter=updatedAt%20gt%20datetimeoffset'2000-01-01T00:00:00.000Z'&$orderby=updatedAt&__includedeleted=true", &["b0"]),
        ("$inlinecount=allpages&__includedeleted=true", &["b0"]),
        ("$top=1&$skip=0&$inlinecount=allpages", &["b0"]),
    ];
    for (q, expected) in queries {
        let r = get(&s, &format!("/tables/Todo?{q}"), "bob").await;
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
        let text = String::from_utf8_lossy(&r.raw).into_owned();
        assert!(
            !text.contains("alice") && !text.contains("\"a0\""),
            "{q}: {text}"
        );
        let rows = r.body.get("results").unwrap_or(&r.body);
        assert_eq!(ids(rows), expected, "{q}");
        if let Some(count) = r.body.get("count") {
            assert_eq!(
                count,
                expected.len(),
                "{q}: the count includes only Bob's rows"
            );
        }
    }
    // Alice's counts are hers.
    let r = get(
        &s,
        "/tables/Todo?$inlinecount=allpages&__includedeleted=true",
        "alice",
    )
    .await;
    assert_eq!(r.body["count"], 3);
    // Replaying Alice's next-page link as Bob gives Bob's page.
    let page = get(&s, "/tables/Todo?$top=1&$orderby=id", "alice").await;
    let link = page
        .header("link")
        .expect("a full page has a link")
        .to_owned();
    let url = link.split(';').next().unwrap().trim();
    let replay = send(
        s.client
            .get(url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .header("X-ZUMO-AUTH", token("bob")),
    )
    .await;
    assert_eq!(replay.status, 200);
    assert_eq!(
        ids(&replay.body),
        Vec::<String>::new(),
        "Bob has one row; skip=1 is past it"
    );
    let own = send(
        s.client
            .get(url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .header("X-ZUMO-AUTH", token("alice")),
    )
    .await;
    assert_eq!(ids(&own.body), ["a1"]);
}

/// 6.4.16: an id another user owns is free for Bob: his own row, Alice's untouched; and the
/// 409 read-back only ever shows the caller's row.
async fn each_user_has_their_own_id_space(kind: StoreKind) {
    let s = server(kind).await;
    for table in ["Todo", "Note"] {
        let alice = alices_row(&s, table, false).await;
        let path = format!("/tables/{table}");
        let r = post(&s, &path, "bob", json!({"id": "r", "text": "bob's"})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(
            (r.body["userId"].as_str(), r.body["text"].as_str()),
            (Some("bob"), Some("bob's"))
        );
        assert_eq!(alice_sees(&s, table).await, alice);
        // A second insert of r by Bob conflicts with Bob's row, never Alice's.
        let again = post(&s, &path, "bob", json!({"id": "r", "text": "again"})).await;
        assert_eq!(again.status, 409);
        assert_eq!(again.body["text"], "bob's");
        assert_eq!(again.body["userId"], "bob");
        // A stale If-Match on Bob's own row: 412 with Bob's row.
        let stale = patch(
            &s,
            &format!("{path}/r"),
            "bob",
            Some("\"AAAAAAAAAAA=\""),
            json!({"text": "x"}),
        )
        .await;
        assert_eq!(stale.status, 412);
        assert_eq!(stale.body["userId"], "bob");
        // Each sees their own r.
        assert_eq!(
            get(&s, &format!("{path}/r"), "bob").await.body["text"],
            "bob's"
        );
        assert_eq!(
            get(&s, &format!("{path}/r"), "alice").await.body["text"],
            "alice's secret"
        );
    }
}

/// 6.4.17 and 6.4.18: the owner comes from the token: a body naming another owner is 400 on
/// insert and update (also on Alice's own row), naming oneself is accepted.
async fn bodies_cannot_name_another_owner(kind: StoreKind) {
    let s = server(kind).await;
    let alice = alices_row(&s, "Todo", false).await;
    let mismatch = crate::err(
        "owner_mismatch",
        "The property 'userId' is set from your credentials; a body may only repeat your own user id",
    );
    for body in [
        json!({"id": "b1", "text": "x", "userId": "alice"}),
        json!({"id": "b1", "text": "x", "UserId": "alice"}),
        json!({"id": "b1", "text": "x", "userId": 7}),
    ] {
        let r = post(&s, "/tables/Todo", "bob", body.clone()).await;
        assert_eq!((r.status, &r.body), (400, &mismatch), "{body}");
    }
    // Bob's update of Alice's r naming her: 400 before any row is looked at (reveals nothing:
    // the same for a missing id).
    let a = patch(
        &s,
        "/tables/Todo/r",
        "bob",
        None,
        json!({"userId": "alice"}),
    )
    .await;
    let b = patch(
        &s,
        "/tables/Todo/missing",
        "bob",
        None,
        json!({"userId": "alice"}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.raw, b.raw);
    // Alice cannot give her row away.
    let r = patch(
        &s,
        "/tables/Todo/r",
        "alice",
        None,
        json!({"userId": "bob"}),
    )
    .await;
    assert_eq!((r.status, &r.body), (400, &mismatch));
    assert_eq!(alice_sees(&s, "Todo").await, alice);
    // Naming oneself (or null) is fine; the stored owner is the caller.
    let r = post(
        &s,
        "/tables/Todo",
        "bob",
        json!({"id": "b2", "text": "x", "userId": "bob"}),
    )
    .await;
    assert_eq!((r.status, r.body["userId"].as_str()), (201, Some("bob")));
    let r = post(
        &s,
        "/tables/Todo",
        "bob",
        json!({"id": "b3", "text": "x", "userId": null}),
    )
    .await;
    assert_eq!((r.status, r.body["userId"].as_str()), (201, Some("bob")));
    let r = patch(
        &s,
        "/tables/Todo/r",
        "alice",
        None,
        json!({"userId": "alice", "text": "new"}),
    )
    .await;
    assert_eq!((r.status, r.body["userId"].as_str()), (200, Some("alice")));
    // Bob still has no view of Alice's rows.
    assert_eq!(
        ids(&get(&s, "/tables/Todo", "bob").await.body),
        ["b2", "b3"]
    );
}

/// 6.4.20 (deviation: 401, not an empty list): an anonymous caller gets nothing from a per-user
/// table; its insert is 401 too.
async fn anonymous_callers_get_nothing_from_per_user_tables(kind: StoreKind) {
    let s = server(kind).await;
    alices_row(&s, "Todo", false).await;
    for (method, path) in [
        (Method::GET, "/tables/Todo"),
        (Method::GET, "/tables/Todo/r"),
        (Method::POST, "/tables/Todo"),
        (Method::PATCH, "/tables/Todo/r"),
        (Method::DELETE, "/tables/Todo/r"),
    ] {
        let r = send(s.req(method.clone(), path).json(&json!({"text": "anon"}))).await;
        assert_eq!(r.status, 401, "{method} {path}: {:?}", r.body);
        assert!(!String::from_utf8_lossy(&r.raw).contains("alice"));
    }
    assert_eq!(alice_sees(&s, "Todo").await["text"], "alice's secret");
}

/// The commit-order clock of a per-user table is per (table, owner): each user's first write
/// takes counter 1, and a user's stamps increase strictly.
async fn each_owner_has_their_own_clock(kind: StoreKind) {
    let s = server(kind).await;
    let first = "AAAAAAAAAAE="; // base64 of the counter 1
    let a = post(&s, "/tables/Todo", "alice", json!({"text": "a"})).await;
    let b = post(&s, "/tables/Todo", "bob", json!({"text": "b"})).await;
    assert_eq!(a.body["version"], first);
    assert_eq!(b.body["version"], first);
    let a2 = post(&s, "/tables/Todo", "alice", json!({"text": "a2"})).await;
    assert_eq!(a2.body["version"], "AAAAAAAAAAI=");
    assert!(a2.body["updatedAt"].as_str() > a.body["updatedAt"].as_str());
    // The shared table keeps its table clock.
    let p = post(&s, "/tables/Public", "alice", json!({"text": "p"})).await;
    assert_eq!(p.body["version"], first);
}

/// A table that already holds shared rows cannot become per-user by a config change (its key
/// is `id`), nor the other way round: the server refuses to start instead of mixing them.
async fn switching_a_table_between_shared_and_per_user_is_refused(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let shared = tablesync_server::Config::from_toml_str(
        "[[tables]]\nname = \"Todo\"\ncolumns = { text = \"string\" }",
    )
    .unwrap()
    .with_database(db.url());
    drop(tablesync_server::Server::open(shared).await.unwrap());
    let per_user = config_with(auth_config()).with_database(db.url());
    let e = tablesync_server::Server::open(per_user)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("owner_column was added"), "{e}");
    let db = crate::fresh_database(kind).await;
    drop(
        tablesync_server::Server::open(config_with(auth_config()).with_database(db.url()))
            .await
            .unwrap(),
    );
    let shared = tablesync_server::Config::from_toml_str(
        "[[tables]]\nname = \"Todo\"\ncolumns = { text = \"string\" }",
    )
    .unwrap()
    .with_database(db.url());
    let e = tablesync_server::Server::open(shared)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("per-user rows"), "{e}");
}

crate::store_tests!(
    another_users_row_is_answered_like_a_missing_one,
    lists_and_queries_only_ever_show_the_callers_rows,
    each_user_has_their_own_id_space,
    bodies_cannot_name_another_owner,
    anonymous_callers_get_nothing_from_per_user_tables,
    each_owner_has_their_own_clock,
    switching_a_table_between_shared_and_per_user_is_refused,
);
