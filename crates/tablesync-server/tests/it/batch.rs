//! `POST /$batch` and `Idempotency-Key` (`docs/extensions.md` sections 2 and 3): answers equal
//! the single-item routes', atomicity groups, every whole-batch refusal (each changes nothing),
//! replays, keys scoped per user, expiry on an injected clock, and one key sent concurrently to
//! two servers on one PostgreSQL database.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::auth::FixedClock;
use tablesync_server::Config;

use crate::tokens::{self, config_with, token};
use crate::{err, send, Resp, StoreKind, TestServer};

/// POST a batch document.
async fn batch(s: &TestServer, doc: Value) -> Resp {
    send(s.req(Method::POST, "/$batch").json(&doc)).await
}

fn insert(id: &str, item: &str, key: &str) -> Value {
    json!({"id": id, "method": "POST", "url": "tables/TodoItem",
           "headers": {"idempotency-key": key}, "body": {"id": item, "text": item, "complete": false}})
}

/// Every row of TodoItem with deleted ones, by id order.
async fn all_rows(s: &TestServer) -> Value {
    s.get("/tables/TodoItem?__includeDeleted=true&$orderby=id")
        .await
        .body
}

/// The responses array of a 200 batch answer.
fn responses(r: &Resp) -> &Vec<Value> {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["responses"].as_array().expect("responses")
}

async fn batch_answers_are_the_single_routes_answers(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let b = s.insert_todo("b", "milk", false).await;
    let c = s.insert_todo("c", "eggs", false).await;
    let gone = s.insert_todo("gone", "x", false).await;
    assert_eq!(s.delete("/tables/TodoItem/gone").await.status, 200);
    let stale = format!("\"{}\"", gone["version"].as_str().unwrap());
    let b_tag = format!("\"{}\"", b["version"].as_str().unwrap());
    let r = batch(
        &s,
        json!({"requests": [
            {"id": "1", "method": "POST", "url": "tables/TodoItem", "body": {"id": "a", "text": "new", "complete": false}},
            {"id": "2", "method": "PATCH", "url": "/tables/TodoItem/b", "headers": {"If-Match": b_tag}, "body": {"text": "oat milk"}},
            {"id": "3", "method": "PATCH", "url": "tables/TodoItem/c", "headers": {"if-match": "\"stale\""}, "body": {"text": "no"}},
            {"id": "4", "method": "DELETE", "url": "tables/TodoItem/c"},
            {"id": "5", "method": "POST", "url": "tables/TodoItem/gone", "headers": {"if-match": stale}},
            {"id": "6", "method": "PATCH", "url": "tables/TodoItem/nope", "body": {"text": "x"}},
            {"id": "7", "method": "POST", "url": "tables/TodoItem", "body": {"id": "b", "text": "dup"}},
            {"id": "8", "method": "POST", "url": "tables/Nope", "body": {"id": "z"}},
            {"id": "9", "method": "POST", "url": "tables/TodoItem", "body": {"id": "bad", "updatedAt": "x"}}
        ]}),
    )
    .await;
    let out = responses(&r);
    let ids: Vec<&str> = out.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let status: Vec<u64> = out.iter().map(|o| o["status"].as_u64().unwrap()).collect();
    assert_eq!(status, [201, 200, 412, 200, 412, 404, 409, 404, 400]);
    // Each body and ETag is what the single routes answer now.
    let now_a = s.get("/tables/TodoItem/a").await;
    assert_eq!(out[0]["body"], now_a.body);
    assert_eq!(out[0]["headers"]["etag"], now_a.header("etag").unwrap());
    let now_b = s.get("/tables/TodoItem/b").await;
    assert_eq!(now_b.body["text"], "oat milk");
    assert_eq!(out[1]["body"], now_b.body);
    // 412 for c carried c as it was before the delete of request 4.
    assert_eq!(out[2]["body"], c);
    let c_deleted = s.get("/tables/TodoItem/c?__includeDeleted=true").await;
    assert_eq!(out[3]["body"], c_deleted.body);
    assert_eq!(c_deleted.body["deleted"], true);
    // The undelete with a stale If-Match is the 412 the route gives.
    let single = send(
        s.req(Method::POST, "/tables/TodoItem/gone")
            .header("If-Match", "\"stale\""),
    )
    .await;
    assert_eq!(out[4]["body"], single.body);
    let single = s.patch("/tables/TodoItem/nope", json!({"text": "x"})).await;
    assert_eq!(
        (out[5]["status"].as_u64().unwrap(), &out[5]["body"]),
        (single.status as u64, &single.body)
    );
    assert_eq!(out[6]["body"], now_b.body);
    let single = s.post("/tables/Nope", json!({"id": "z"})).await;
    assert_eq!(out[7]["body"], single.body);
    let single = s
        .post("/tables/TodoItem", json!({"id": "bad", "updatedAt": "x"}))
        .await;
    assert_eq!(out[8]["body"], single.body);
}

async fn an_atomicity_group_applies_all_or_nothing(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("b", "milk", false).await;
    let before = all_rows(&s).await;
    let r = batch(
        &s,
        json!({"requests": [
            {"id": "1", "method": "POST", "url": "tables/TodoItem", "body": {"id": "x"}, "atomicityGroup": "g1"},
            {"id": "2", "method": "PATCH", "url": "tables/TodoItem/b", "body": {"text": "changed"}, "atomicityGroup": "g1"},
            {"id": "3", "method": "PATCH", "url": "tables/TodoItem/missing", "body": {"text": "y"}, "atomicityGroup": "g1"},
            {"id": "4", "method": "POST", "url": "tables/TodoItem", "body": {"id": "y"}, "atomicityGroup": "g1"},
            {"id": "5", "method": "POST", "url": "tables/TodoItem", "body": {"id": "z"}}
        ]}),
    )
    .await;
    let out = responses(&r);
    let status: Vec<u64> = out.iter().map(|o| o["status"].as_u64().unwrap()).collect();
    assert_eq!(status, [424, 424, 404, 424, 201]);
    assert_eq!(out[0]["body"]["code"], "failed_dependency");
    assert!(
        out[0]["body"]["error"].as_str().unwrap().contains("'3'"),
        "{}",
        out[0]["body"]
    );
    assert_eq!(
        out[2]["body"],
        err("item_not_found", "The item does not exist")
    );
    // The group left nothing behind; the operation outside it applied.
    let mut expected = before.as_array().unwrap().clone();
    expected.push(s.get("/tables/TodoItem/z").await.body);
    assert_eq!(all_rows(&s).await, Value::Array(expected));
    // A group that succeeds applies whole.
    let r = batch(
        &s,
        json!({"requests": [
            {"id": "1", "method": "POST", "url": "tables/TodoItem", "body": {"id": "x"}, "atomicityGroup": "g"},
            {"id": "2", "method": "PATCH", "url": "tables/TodoItem/b", "body": {"text": "changed"}, "atomicityGroup": "g"}
        ]}),
    )
    .await;
    let status: Vec<u64> = responses(&r)
        .iter()
        .map(|o| o["status"].as_u64().unwrap())
        .collect();
    assert_eq!(status, [201, 200]);
    assert_eq!(s.get("/tables/TodoItem/b").await.body["text"], "changed");
}

/// A refusal: this status and code, a message containing `names`, and no row changed.
async fn assert_refused(s: &TestServer, r: Resp, status: u16, code: &str, names: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["code"], code, "{:?}", r.body);
    let message = r.body["error"].as_str().unwrap();
    assert!(message.contains(names), "{message} should name {names}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        s.get("/tables/TodoItem/fresh").await.status,
        404,
        "refused batch applied"
    );
}

async fn broken_batches_are_refused_whole_and_change_nothing(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[limits]\nbatch_operations_max = 3\nbody_bytes_max = 4096\n\
         [[tables]]\nname = \"TodoItem\"\ncolumns = { text = \"string\", complete = \"boolean\" }",
    )
    .await;
    let good = insert("ok", "fresh", "k-fresh");
    // Malformed JSON.
    let r = send(
        s.req(Method::POST, "/$batch")
            .header("content-type", "application/json")
            .body("{\"requests\": ["),
    )
    .await;
    assert_refused(&s, r, 400, "invalid_batch", "not valid JSON").await;
    // A key twice in one object (here an operation's body) is not taken as its last value.
    let r = send(
        s.req(Method::POST, "/$batch")
            .header("content-type", "application/json")
            .body(
                r#"{"requests": [{"id": "d", "method": "POST", "url": "tables/TodoItem",
                    "body": {"id": "dup", "text": "a", "text": "b"}}]}"#,
            ),
    )
    .await;
    assert_refused(
        &s,
        r,
        400,
        "invalid_batch",
        "the key \"text\" appears twice",
    )
    .await;
    // A request breaking the rules is named by its id.
    for (bad, names) in [
        (
            json!({"id": "b1", "method": "POST", "url": "tables/TodoItem", "body": [1]}),
            "'b1'",
        ),
        (
            json!({"id": "b2", "method": "GET", "url": "tables/TodoItem"}),
            "'b2'",
        ),
        (
            json!({"id": "b3", "method": "PUT", "url": "tables/TodoItem/a", "body": {}}),
            "'b3'",
        ),
        (
            json!({"id": "b4", "method": "POST", "url": "api/other", "body": {}}),
            "'b4'",
        ),
        (
            json!({"id": "b5", "method": "DELETE", "url": "tables/TodoItem/a?x=1"}),
            "'b5'",
        ),
        (
            json!({"id": "ok", "method": "DELETE", "url": "tables/TodoItem/a"}),
            "not unique",
        ),
    ] {
        let r = batch(&s, json!({"requests": [good.clone(), bad]})).await;
        assert_refused(&s, r, 400, "invalid_batch", names).await;
    }
    // Too many operations.
    let many: Vec<Value> = (0..4)
        .map(|i| insert(&i.to_string(), &format!("n{i}"), &format!("k{i}")))
        .collect();
    let r = batch(&s, json!({ "requests": many })).await;
    assert_refused(&s, r, 400, "batch_too_large", "at most 3").await;
    // Too many bytes.
    let big = json!({"requests": [good.clone(),
        {"id": "2", "method": "POST", "url": "tables/TodoItem", "body": {"id": "big", "text": "x".repeat(5000)}}]});
    let r = batch(&s, big).await;
    assert_refused(&s, r, 413, "payload_too_large", "4096").await;
    // A key recorded for another request: 422 naming the key, nothing else applied.
    let r = batch(&s, json!({"requests": [insert("1", "first", "k-used")]})).await;
    assert_eq!(responses(&r)[0]["status"], 201);
    let mut other = insert("2", "second", "k-used");
    other["body"]["text"] = json!("different");
    let r = batch(&s, json!({"requests": [good.clone(), other]})).await;
    assert_refused(&s, r, 422, "idempotency_key_reused", "k-used").await;
    assert_eq!(s.get("/tables/TodoItem/second").await.status, 404);
    // Without the API version or with a non-JSON content type.
    let r = send(
        s.client
            .post(format!("{}/$batch", s.base))
            .json(&json!({"requests": [good.clone()]})),
    )
    .await;
    assert_refused(&s, r, 400, "api_version_missing", "ZUMO-API-VERSION").await;
    let r = send(
        s.req(Method::POST, "/$batch")
            .header("content-type", "text/plain")
            .body(json!({"requests": [good]}).to_string()),
    )
    .await;
    assert_refused(&s, r, 415, "unsupported_media_type", "text/plain").await;
}

async fn a_resent_batch_is_replayed_and_applies_nothing_twice(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("b", "milk", false).await;
    let doc = json!({"requests": [
        insert("1", "a", "k1"),
        {"id": "2", "method": "PATCH", "url": "tables/TodoItem/b", "headers": {"idempotency-key": "k2"}, "body": {"text": "x"}},
        {"id": "3", "method": "PATCH", "url": "tables/TodoItem/missing", "headers": {"idempotency-key": "k3"}, "body": {"text": "x"}},
        {"id": "4", "method": "DELETE", "url": "tables/TodoItem/b", "headers": {"idempotency-key": "k4"}}
    ]});
    let first = batch(&s, doc.clone()).await;
    let first = responses(&first).clone();
    let rows = all_rows(&s).await;
    let again = batch(&s, doc).await;
    let again = responses(&again).clone();
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a["status"], b["status"]);
        assert_eq!(a["body"], b["body"]);
        assert_eq!(a["headers"]["etag"], b["headers"]["etag"]);
        assert_eq!(b["headers"]["idempotent-replayed"], "true", "{b}");
        assert!(a["headers"].get("idempotent-replayed").is_none());
    }
    assert_eq!(first[2]["status"], 404, "a decided refusal is replayed too");
    // Versions and updatedAt did not move: nothing was applied again.
    assert_eq!(all_rows(&s).await, rows);
}

async fn single_item_writes_honour_the_key_too(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let post = |key: &'static str, text: &'static str| {
        send(
            s.req(Method::POST, "/tables/TodoItem")
                .header("Idempotency-Key", key)
                .json(&json!({"id": "a", "text": text})),
        )
    };
    let first = post("s1", "one").await;
    assert_eq!(first.status, 201);
    first.assert_etag_matches_body();
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let again = post("s1", "one").await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let reused = post("s1", "two").await;
    assert_eq!(
        (reused.status, &reused.body),
        (
            422,
            &err(
                "idempotency_key_reused",
                "The Idempotency-Key 's1' was already used for a different request"
            )
        )
    );
    // The same key in a batch is the same record (same fingerprint): replayed.
    let r = batch(
        &s,
        json!({"requests": [{"id": "1", "method": "POST", "url": "tables/TodoItem",
            "headers": {"idempotency-key": "s1"}, "body": {"id": "a", "text": "one"}}]}),
    )
    .await;
    assert_eq!(responses(&r)[0]["body"], first.body);
    let bad = send(
        s.req(Method::DELETE, "/tables/TodoItem/a")
            .header("Idempotency-Key", "has space"),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["code"], "invalid_idempotency_key");
    assert_eq!(s.get("/tables/TodoItem/a").await.body, first.body);
}

async fn keys_are_scoped_to_the_principal(kind: StoreKind) {
    let s = TestServer::with_clock(kind, config_with(tokens::auth_config()), tokens::clock()).await;
    let as_user = |user: &str, text: &str| {
        s.req(Method::POST, "/$batch")
            .header("X-ZUMO-AUTH", token(user))
            .json(
                &json!({"requests": [{"id": "1", "method": "POST", "url": "tables/Todo",
                "headers": {"idempotency-key": "same"}, "body": {"id": "t", "text": text}}]}),
            )
    };
    let alice = send(as_user("alice", "mine")).await;
    assert_eq!(responses(&alice)[0]["status"], 201);
    // Bob's identical key (even with a different body) is his own: applied, not 422, no replay.
    let bob = send(as_user("bob", "his")).await;
    let answer = &responses(&bob)[0];
    assert_eq!(answer["status"], 201, "{answer}");
    assert_eq!(answer["body"]["text"], "his");
    assert!(answer["headers"].get("idempotent-replayed").is_none());
    // No token: the batch's own authentication is checked first.
    let anonymous = send(
        s.req(Method::POST, "/$batch")
            .json(&json!({"requests": []})),
    )
    .await;
    assert_eq!(anonymous.status, 200, "an empty batch needs no table");
    let r = send(s.req(Method::POST, "/$batch").json(&json!({"requests": [
        {"id": "1", "method": "POST", "url": "tables/Todo", "body": {"id": "u"}}]})))
    .await;
    assert_eq!(responses(&r)[0]["status"], 401);
    let refused = send(
        s.req(Method::POST, "/$batch")
            .header("X-ZUMO-AUTH", "not-a-token")
            .json(&json!({"requests": []})),
    )
    .await;
    assert_eq!(refused.status, 401);
}

async fn records_expire_after_the_retention(kind: StoreKind) {
    let clock = Arc::new(FixedClock::new(1_000_000));
    let config = Config::from_toml_str(
        "[limits]\nidempotency_retention_s = 10\n\
         [[tables]]\nname = \"TodoItem\"\ncolumns = { text = \"string\", complete = \"boolean\" }",
    )
    .unwrap();
    let s = TestServer::with_clock(kind, config, clock.clone()).await;
    let doc = json!({"requests": [insert("1", "a", "k")]});
    assert_eq!(responses(&batch(&s, doc.clone()).await)[0]["status"], 201);
    clock.set(1_000_009);
    let r = batch(&s, doc.clone()).await;
    assert_eq!(responses(&r)[0]["status"], 201);
    assert_eq!(responses(&r)[0]["headers"]["idempotent-replayed"], "true");
    // At 10 s the record is gone: the key is new, the insert runs again and meets its own row.
    clock.set(1_000_010);
    let r = batch(&s, doc).await;
    assert_eq!(responses(&r)[0]["status"], 409);
    assert!(responses(&r)[0]["headers"]
        .get("idempotent-replayed")
        .is_none());
    // And a different request may now use the key.
    clock.set(1_000_030);
    let r = batch(&s, json!({"requests": [insert("1", "b", "k")]})).await;
    assert_eq!(responses(&r)[0]["status"], 201);
}

async fn capabilities_offer_batches_and_idempotency(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[limits]\nbatch_operations_max = 7\nbody_bytes_max = 5000\nidempotency_retention_s = 60\n\
         [[tables]]\nname = \"TodoItem\"\ncolumns = { text = \"string\" }",
    )
    .await;
    let r = send(s.client.get(format!("{}/$capabilities", s.base))).await;
    assert_eq!(
        r.body["batch"],
        json!({"url": "$batch", "operations_max": 7, "body_bytes_max": 5000})
    );
    assert_eq!(r.body["idempotency"], json!({"retention_s": 60}));
}

crate::store_tests!(
    batch_answers_are_the_single_routes_answers,
    an_atomicity_group_applies_all_or_nothing,
    broken_batches_are_refused_whole_and_change_nothing,
    a_resent_batch_is_replayed_and_applies_nothing_twice,
    single_item_writes_honour_the_key_too,
    keys_are_scoped_to_the_principal,
    records_expire_after_the_retention,
    capabilities_offer_batches_and_idempotency,
);

/// Two servers (separate pools, as two processes would have) on one PostgreSQL database get the
/// same keyed batch at the same time, many times over: each time exactly one applies it, and
/// both answer with the same outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_key_sent_to_two_servers_at_once_applies_once() {
    let a = TestServer::start(StoreKind::Postgres).await;
    let config = Config::default_todo().with_database(a.database_url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_b = format!("http://{}", listener.local_addr().unwrap());
    let server = tablesync_server::Server::open(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    a.insert_todo("counter", "0", false).await;
    for round in 0..20u64 {
        // An update without If-Match would apply twice if run twice: the version would move by 2.
        let doc = json!({"requests": [
            {"id": "1", "method": "PATCH", "url": "tables/TodoItem/counter",
             "headers": {"idempotency-key": format!("round-{round}")}, "body": {"text": round.to_string()}},
            insert("2", &format!("row{round}"), &format!("insert-{round}"))
        ]});
        let to = |base: &str| {
            a.client
                .post(format!("{base}/$batch"))
                .header("ZUMO-API-VERSION", "2.0.0")
                .json(&doc)
        };
        let (ra, rb) = tokio::join!(send(to(&a.base)), send(to(&base_b)));
        let (oa, ob) = (responses(&ra).clone(), responses(&rb).clone());
        for (x, y) in oa.iter().zip(&ob) {
            assert_eq!(x["status"], y["status"], "round {round}: {x} vs {y}");
            assert_eq!(x["body"], y["body"], "round {round}");
        }
        let replays = [&oa[0], &ob[0]]
            .iter()
            .filter(|o| o["headers"].get("idempotent-replayed").is_some())
            .count();
        assert_eq!(replays, 1, "round {round}: exactly one server applied");
        // The table's write counter (the largest version) moved by exactly two writes.
        let rows = a.get("/tables/TodoItem?$top=1000").await.body;
        let largest = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|row| counter(row["version"].as_str().unwrap()))
            .max()
            .unwrap();
        assert_eq!(
            largest,
            1 + 2 * (round + 1),
            "round {round}: each write once"
        );
        assert_eq!(rows.as_array().unwrap().len() as u64, 2 + round);
    }
    let _ = stop.send(());
}

/// The write counter a version renders.
fn counter(version: &str) -> u64 {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(version)
        .unwrap();
    u64::from_be_bytes(bytes.try_into().expect("an 8-byte version"))
}
