//! The Node server's collection-URL writes: `PATCH /tables/{t}` with the id in the body (or
//! `?id=`) and `DELETE /tables/{t}?id=…`. Each answer is compared with the same request on the
//! id route, made on a twin row: status, body (ids and stamps aside) and headers, errors
//! included; then the id-specific errors (no id, an id in both places), access rules and
//! per-user rows, and `Idempotency-Key`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::tokens::{self, *};
use crate::{err, send, Resp, StoreKind, TestServer};

/// The answer with what differs between twin rows taken out: the id, the stamps and the ETag.
fn shape(r: &Resp) -> (u16, Value, Option<String>, Option<String>) {
    let mut body = r.body.clone();
    if let Some(o) = body.as_object_mut() {
        for k in ["id", "createdAt", "updatedAt", "version"] {
            if o.contains_key(k) {
                o.insert(k.into(), json!("…"));
            }
        }
    }
    (
        r.status,
        body,
        r.header("content-type").map(str::to_owned),
        r.header("etag").map(|_| "etag".to_owned()),
    )
}

/// Two live rows `a` (for the id route) and `b` (for the collection route) with the same text.
async fn twins(s: &TestServer) -> (String, String) {
    let mut versions = Vec::new();
    for id in ["a", "b"] {
        let r = s
            .post("/tables/TodoItem", json!({"id": id, "text": "t"}))
            .await;
        assert_eq!(r.status, 201);
        versions.push(r.body["version"].as_str().unwrap().to_owned());
    }
    (versions[0].clone(), versions[1].clone())
}

async fn patch_on_the_collection_answers_like_the_id_route(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let (va, vb) = twins(&s).await;
    let by_id = s
        .patch("/tables/TodoItem/a", json!({"complete": true}))
        .await;
    let by_body = s
        .patch("/tables/TodoItem", json!({"id": "b", "complete": true}))
        .await;
    assert_eq!(by_id.status, 200, "{:?}", by_id.body);
    assert_eq!(shape(&by_body), shape(&by_id));
    assert_eq!(by_body.body["id"], "b");
    by_body.assert_etag_matches_body();
    assert_eq!(s.get("/tables/TodoItem/b").await.body, by_body.body);
    // The id from the query instead of the body.
    let by_query = s.patch("/tables/TodoItem?id=b", json!({"text": "q"})).await;
    assert_eq!(by_query.status, 200, "{:?}", by_query.body);
    assert_eq!(by_query.body["text"], "q");
    // Stale If-Match: 412 with the current row, on both routes.
    let stale_id = s
        .patch_if(
            "/tables/TodoItem/a",
            &format!("\"{va}\""),
            json!({"text": "x"}),
        )
        .await;
    let stale_body = s
        .patch_if(
            "/tables/TodoItem",
            &format!("\"{vb}\""),
            json!({"id": "b", "text": "x"}),
        )
        .await;
    assert_eq!(stale_id.status, 412);
    assert_eq!(stale_body.status, 412);
    assert_eq!(stale_body.body, s.get("/tables/TodoItem/b").await.body);
    // Stale body version: 409 on both.
    let c_id = s
        .patch("/tables/TodoItem/a", json!({"version": va, "text": "y"}))
        .await;
    let c_body = s
        .patch(
            "/tables/TodoItem",
            json!({"id": "b", "version": vb, "text": "y"}),
        )
        .await;
    assert_eq!((c_id.status, c_body.status), (409, 409));
    // Missing row, bad values, reserved properties: the same errors.
    for body in [
        json!({"text": 5}),
        json!({"createdAt": "2020-01-01T00:00:00.000Z"}),
        json!({"nope": 1}),
    ] {
        let mut with_id = body.clone();
        with_id["id"] = json!("a");
        let one = s.patch("/tables/TodoItem/a", body.clone()).await;
        let coll = s.patch("/tables/TodoItem", with_id).await;
        assert_eq!((coll.status, &coll.body), (one.status, &one.body), "{body}");
        assert_eq!(one.status, 400);
    }
    let one = s.patch("/tables/TodoItem/zz", json!({"text": "x"})).await;
    let coll = s
        .patch("/tables/TodoItem", json!({"id": "zz", "text": "x"}))
        .await;
    assert_eq!((coll.status, &coll.body), (404, &one.body));
}

async fn delete_on_the_collection_answers_like_the_id_route(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let (va, vb) = twins(&s).await;
    // Stale If-Match first (changes nothing), then the delete.
    let stale_id = send(
        s.req(Method::DELETE, "/tables/TodoItem/a")
            .header("If-Match", "\"AAAAAAAAAAA=\""),
    )
    .await;
    let stale_coll = send(
        s.req(Method::DELETE, "/tables/TodoItem?id=b")
            .header("If-Match", "\"AAAAAAAAAAA=\""),
    )
    .await;
    assert_eq!(stale_id.status, 412);
    assert_eq!(shape(&stale_coll), shape(&stale_id));
    let by_id = send(
        s.req(Method::DELETE, "/tables/TodoItem/a")
            .header("If-Match", format!("\"{va}\"")),
    )
    .await;
    let by_query = send(
        s.req(Method::DELETE, "/tables/TodoItem?id=b")
            .header("If-Match", format!("\"{vb}\"")),
    )
    .await;
    assert_eq!(by_id.status, 200);
    assert_eq!(shape(&by_query), shape(&by_id));
    assert_eq!(by_query.body["deleted"], true);
    // Deleted now: both routes answer 404 alike.
    let again_id = s.delete("/tables/TodoItem/a").await;
    let again = s.delete("/tables/TodoItem?id=b").await;
    assert_eq!((again.status, &again.body), (404, &again_id.body));
    // A percent-encoded id.
    for (id, query) in [("x y é", "x%20y%20%C3%A9"), ("p q", "p+q")] {
        let r = s
            .post("/tables/TodoItem", json!({"id": id, "text": "t"}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let r = s.delete(&format!("/tables/TodoItem?id={query}")).await;
        assert_eq!((r.status, &r.body["id"]), (200, &json!(id)));
    }
}

async fn collection_writes_need_exactly_one_id(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("a", "t", false).await;
    s.insert_todo("b", "t", false).await;
    let before = s.get("/tables/TodoItem").await.body;
    let no_id = err(
        "invalid_id",
        "invalid id: a write to the table URL needs the item's id in the body or as ?id=",
    );
    let r = s.patch("/tables/TodoItem", json!({"text": "x"})).await;
    assert_eq!((r.status, &r.body), (400, &no_id));
    let r = s
        .patch("/tables/TodoItem", json!({"id": null, "text": "x"}))
        .await;
    assert_eq!((r.status, &r.body), (400, &no_id));
    let r = s.delete("/tables/TodoItem").await;
    assert_eq!((r.status, &r.body), (400, &no_id));
    // A filter is not an id: no filter-wide deletes.
    let r = s.delete("/tables/TodoItem?$filter=text%20eq%20't'").await;
    assert_eq!((r.status, &r.body), (400, &no_id));
    // Body and query naming different items: 400, like a body id differing from the URL's.
    let mismatch = err(
        "id_mismatch",
        "The item ID and querystring ID did not match",
    );
    let r = s
        .patch("/tables/TodoItem?id=b", json!({"id": "a", "text": "x"}))
        .await;
    assert_eq!((r.status, &r.body), (400, &mismatch));
    // Naming the same item twice is fine.
    let r = s
        .patch("/tables/TodoItem?id=a", json!({"id": "a", "text": "same"}))
        .await;
    assert_eq!((r.status, &r.body["text"]), (200, &json!("same")));
    let r = s.delete("/tables/TodoItem?id=a&id=b").await;
    assert_eq!(
        (r.status, &r.body),
        (
            400,
            &err("invalid_id", "invalid id: the query gives more than one id")
        )
    );
    let r = s
        .patch("/tables/TodoItem", json!({"id": 5, "text": "x"}))
        .await;
    assert_eq!(
        (r.status, &r.body),
        (
            400,
            &err("invalid_id", "invalid id: the id must be a string")
        )
    );
    let r = s.delete("/tables/TodoItem?id=a%2F..").await;
    assert_eq!(r.status, 400);
    // Only the one accepted PATCH changed anything.
    let mut expected = before.clone();
    let after = s.get("/tables/TodoItem").await.body;
    expected[0]["text"] = json!("same");
    for k in ["updatedAt", "version"] {
        expected[0][k] = after[0][k].clone();
    }
    assert_eq!(after, expected);
}

async fn collection_writes_on_integer_id_tables(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[[tables]]\nname = \"IntIdTodo\"\nid_type = \"integer\"\ncolumns = { text = \"string\" }\n",
    )
    .await;
    for t in ["a", "b"] {
        assert_eq!(
            s.post("/tables/IntIdTodo", json!({"text": t})).await.status,
            201
        );
    }
    let r = s
        .patch("/tables/IntIdTodo", json!({"id": 2, "text": "B"}))
        .await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["text"]),
        (200, &json!(2), &json!("B"))
    );
    let r = s
        .patch("/tables/IntIdTodo?id=2", json!({"id": 2, "text": "C"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s
        .patch("/tables/IntIdTodo?id=1", json!({"id": 2, "text": "x"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "id_mismatch");
    let r = s.delete("/tables/IntIdTodo?id=1").await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["deleted"]),
        (200, &json!(1), &json!(true))
    );
    let r = s.delete("/tables/IntIdTodo?id=one").await;
    assert_eq!((r.status, &r.body["code"]), (400, &json!("invalid_id")));
}

async fn collection_writes_honour_access_rules_and_per_user_rows(kind: StoreKind) {
    let toml = format!(
        "{}\n[[tables]]\nname = \"ReadOnly\"\naccess = \"anonymous\"\noperations = [\"read\", \"insert\"]\ncolumns = {{ text = \"string\" }}\n",
        tokens::TABLES
    );
    let s = TestServer::with_clock(kind, tables_with(&toml, auth_config()), tokens::clock()).await;
    let as_user =
        |m: Method, path: &str, user: &str| s.req(m, path).header("X-ZUMO-AUTH", token(user));
    let r = send(
        as_user(Method::POST, "/tables/Todo", "alice").json(&json!({"id": "r", "text": "secret"})),
    )
    .await;
    assert_eq!(r.status, 201);
    // Anonymous: 401 before the body is looked at, on both routes.
    for (m, path) in [
        (Method::PATCH, "/tables/Todo"),
        (Method::DELETE, "/tables/Todo?id=r"),
    ] {
        let r = send(s.req(m.clone(), path).json(&json!({"id": "r"}))).await;
        assert_eq!(r.status, 401, "{m} {path}: {:?}", r.body);
    }
    // Bob's writes to Alice's row are answered exactly like writes to a row nobody has.
    for (m, path, body) in [
        (
            Method::PATCH,
            "/tables/Todo",
            json!({"id": "r", "text": "mine"}),
        ),
        (Method::PATCH, "/tables/Todo?id=r", json!({"text": "mine"})),
        (Method::DELETE, "/tables/Todo?id=r", json!(null)),
    ] {
        let missing_path = path.replace("=r", "=nobody");
        let missing_body = if body.is_null() {
            body.clone()
        } else {
            let mut b = body.clone();
            if b.get("id").is_some() {
                b["id"] = json!("nobody");
            }
            b
        };
        let rb = |p: &str, b: &Value| {
            let r = as_user(m.clone(), p, "bob");
            if b.is_null() {
                r
            } else {
                r.json(b)
            }
        };
        let bob = send(rb(path, &body)).await;
        let nobody = send(rb(&missing_path, &missing_body)).await;
        assert_eq!(bob.status, 404, "{m} {path}: {:?}", bob.body);
        assert_eq!(
            (bob.status, &bob.raw),
            (nobody.status, &nobody.raw),
            "{m} {path}"
        );
    }
    let alice = send(as_user(Method::GET, "/tables/Todo/r", "alice")).await;
    assert_eq!(alice.body["text"], "secret");
    // Alice herself can.
    let r = send(
        as_user(Method::PATCH, "/tables/Todo", "alice").json(&json!({"id": "r", "text": "new"})),
    )
    .await;
    assert_eq!((r.status, &r.body["text"]), (200, &json!("new")));
    let r = send(as_user(Method::DELETE, "/tables/Todo?id=r", "alice")).await;
    assert_eq!(r.status, 200);
    // Disabled operations are 405 on the collection URL too.
    for m in [Method::PATCH, Method::DELETE] {
        let r = send(
            s.req(m.clone(), "/tables/ReadOnly?id=x")
                .json(&json!({"id": "x"})),
        )
        .await;
        assert_eq!(r.status, 405, "{m}: {:?}", r.body);
        assert_eq!(r.body["code"], "method_not_allowed");
    }
}

/// `Idempotency-Key` on the collection URL: a resent PATCH or DELETE is replayed, not applied
/// again; the same key with another body is refused; the same request on the id route is the
/// same record; a malformed key is 400 and changes nothing.
async fn collection_writes_honour_the_idempotency_key(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    twins(&s).await;
    let keyed = |m: Method, url: &'static str, key: &'static str, body: Option<Value>| {
        let r = s.req(m, url).header("Idempotency-Key", key);
        send(match body {
            Some(b) => r.json(&b),
            None => r,
        })
    };
    let patch = |key, text: &str| {
        let body = json!({"id": "a", "text": text});
        keyed(Method::PATCH, "/tables/TodoItem", key, Some(body))
    };
    let first = patch("p1", "one").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = patch("p1", "one").await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.get("/tables/TodoItem/a").await.body, first.body);
    let reused = patch("p1", "two").await;
    assert_eq!(reused.status, 422, "{:?}", reused.body);
    assert_eq!(reused.body["code"], "idempotency_key_reused");
    let on_the_id_route = keyed(
        Method::PATCH,
        "/tables/TodoItem/a",
        "p1",
        Some(json!({"id": "a", "text": "one"})),
    )
    .await;
    assert_eq!(on_the_id_route.body, first.body);
    assert_eq!(on_the_id_route.header("idempotent-replayed"), Some("true"));

    let delete = || keyed(Method::DELETE, "/tables/TodoItem?id=b", "d1", None);
    let deleted = delete().await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.body["deleted"], true);
    // Unkeyed, a second delete of the tombstone would be 404; keyed, it is the first answer.
    let replayed = delete().await;
    assert_eq!((replayed.status, &replayed.body), (200, &deleted.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));

    let before = s
        .get("/tables/TodoItem?__includeDeleted=true&$orderby=id")
        .await;
    for (m, body) in [
        (Method::PATCH, Some(json!({"id": "a", "text": "bad key"}))),
        (Method::DELETE, None),
    ] {
        let r = keyed(m.clone(), "/tables/TodoItem?id=a", "has space", body).await;
        assert_eq!(r.status, 400, "{m}: {:?}", r.body);
        assert_eq!(r.body["code"], "invalid_idempotency_key");
    }
    let after = s
        .get("/tables/TodoItem?__includeDeleted=true&$orderby=id")
        .await;
    assert_eq!(after.body, before.body);
}

crate::store_tests!(
    patch_on_the_collection_answers_like_the_id_route,
    delete_on_the_collection_answers_like_the_id_route,
    collection_writes_need_exactly_one_id,
    collection_writes_on_integer_id_tables,
    collection_writes_honour_access_rules_and_per_user_rows,
    collection_writes_honour_the_idempotency_key,
);
