//! Regression tests for defects a review found (each names the defect it reproduces), on a
//! `Note` table with every column type and dynamic schema.

use serde_json::{json, Value};

use crate::{err, ids, send, StoreKind, TestServer};

const NOTE: &str = r#"
[[tables]]
name = "Note"
columns = { title = "string", stars = "number", pinned = "boolean", due = "date" }
soft_delete = false
dynamic_schema = true
"#;

const DATE_WRONG: &str =
    "The property 'due' must be a date string like 2024-01-31T12:00:00.000Z or null, not a string";

/// Dates outside 0001..=9999 (after the offset) are 400 on both stores, in bodies and filters.
async fn dates_outside_wire_range_are_400(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    for due in [
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "0000-12-31T23:59:59.999Z",
    ] {
        let r = s
            .post("/tables/Note", json!({"id": "n0", "due": due}))
            .await;
        assert_eq!(
            (r.status, r.body),
            (400, err("wrong_type", DATE_WRONG)),
            "{due}"
        );
    }
    let r = s
        .post(
            "/tables/Note",
            json!({"id": "n1", "due": "9999-12-31T23:59:59.999Z"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["due"], "9999-12-31T23:59:59.999Z");
    let r = s
        .post(
            "/tables/Note",
            json!({"id": "n2", "due": "0001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = s
        .patch("/tables/Note/n2", json!({"due": "0000-06-01T00:00:00Z"}))
        .await;
    assert_eq!((r.status, r.body), (400, err("wrong_type", DATE_WRONG)));
    let r = s
        .get("/tables/Note?$filter=createdAt%20gt%20datetime'0000-01-01T00:00:00Z'")
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["code"], "invalid_filter");
    let r = s
        .get("/tables/Note?$filter=due%20gt%20datetimeoffset'0001-01-01T00:00:00Z'&$orderby=due")
        .await;
    assert_eq!((r.status, ids(&r.body)), (200, vec!["n1".to_owned()]));
}

/// Long `$orderby`/`$select` lists are refused by config limits, not by the database.
async fn orderby_and_select_terms_are_limited(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    let long = vec!["title"; 2001].join(",");
    let r = s.get(&format!("/tables/Note?$orderby={long}")).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_orderby",
                "$orderby has 2001 terms; at most 32 are allowed"
            )
        )
    );
    let ok = vec!["stars desc"; 32].join(",");
    let r = s.get(&format!("/tables/Note?$orderby={ok}")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let long = vec!["title"; 129].join(",");
    let r = s.get(&format!("/tables/Note?$select={long}")).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_select",
                "$select has 129 terms; at most 128 are allowed"
            )
        )
    );
}

/// A write that fails must not add columns (dynamic schema).
async fn failed_writes_add_no_columns(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    let r = s
        .post("/tables/Note", json!({"id": "n1", "title": "a"}))
        .await;
    assert_eq!(r.status, 201);
    let version = r.body["version"].as_str().unwrap().to_owned();
    let r = s
        .patch("/tables/Note/doesnotexist", json!({"ghost": "boo"}))
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .patch("/tables/Note/n1", json!({"id": "other", "ghost2": 1}))
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .post("/tables/Note", json!({"id": "bad/id", "ghost3": true}))
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .patch_if("/tables/Note/n1", "\"stale\"", json!({"ghost4": 1}))
        .await;
    assert_eq!(r.status, 412);
    let r = s
        .post("/tables/Note", json!({"id": "n1", "ghost5": 1}))
        .await;
    assert_eq!(r.status, 409);
    let r = s.get("/tables/Note/n1").await;
    assert_eq!(r.body["version"], version.as_str());
    let keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for ghost in ["ghost", "ghost2", "ghost3", "ghost4", "ghost5"] {
        assert!(!keys.contains(&ghost), "{ghost} in {keys:?}");
        let r = s.get(&format!("/tables/Note?$select={ghost}")).await;
        assert_eq!(r.status, 400, "{ghost}");
    }
    // A successful write still adds its column.
    let r = s.patch("/tables/Note/n1", json!({"color": "red"})).await;
    assert_eq!((r.status, &r.body["color"]), (200, &json!("red")));
}

/// `$select=*` is every column.
async fn select_star_is_all_columns(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    s.post("/tables/Note", json!({"id": "n1", "title": "a"}))
        .await;
    let all = s.get("/tables/Note").await;
    let r = s.get("/tables/Note?$select=*").await;
    assert_eq!((r.status, &r.body), (200, &all.body));
}

/// `If-Match` with a list matches when any listed tag matches.
async fn if_match_lists(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    let r = s
        .post("/tables/Note", json!({"id": "n1", "title": "a"}))
        .await;
    let v = r.body["version"].as_str().unwrap().to_owned();
    let r = s
        .patch_if(
            "/tables/Note/n1",
            &format!("\"nope\", \"{v}\""),
            json!({"title": "b"}),
        )
        .await;
    assert_eq!((r.status, &r.body["title"]), (200, &json!("b")));
    let r = s
        .patch_if(
            "/tables/Note/n1",
            &format!("\"nope\", \"{v}\""),
            json!({"title": "c"}),
        )
        .await;
    assert_eq!(r.status, 412);
    let r = s
        .patch_if("/tables/Note/n1", "\"nope\", *", json!({"title": "d"}))
        .await;
    assert_eq!((r.status, &r.body["title"]), (200, &json!("d")));
    // The same list on two header lines is one list (HTTP list-header semantics).
    let v = r.body["version"].as_str().unwrap().to_owned();
    let r = send(
        s.req(reqwest::Method::PATCH, "/tables/Note/n1")
            .header("If-Match", "\"nope\"")
            .header("If-Match", format!("\"{v}\""))
            .json(&json!({"title": "e"})),
    )
    .await;
    assert_eq!((r.status, &r.body["title"]), (200, &json!("e")));
    let r = send(
        s.req(reqwest::Method::PATCH, "/tables/Note/n1")
            .header("If-Match", "\"nope\"")
            .header("If-Match", format!("\"{v}\""))
            .json(&json!({"title": "f"})),
    )
    .await;
    assert_eq!(r.status, 412);
}

/// A write that outlives `request_timeout_ms` answers 504 `outcome_unknown` (it may still
/// commit), a read 503. The write is held up by a lock another connection holds (SQLite: the
/// write lock; PostgreSQL: the table's clock row), with a busy timeout far above the request
/// timeout, so the request times out while its write is queued in the store; once the lock is
/// released the write commits, which is exactly why 503 ("retry") would be wrong.
async fn timed_out_write_is_outcome_unknown(kind: StoreKind) {
    let toml =
        format!("[limits]\nrequest_timeout_ms = 300\n[store]\nbusy_timeout_ms = 60000\n{NOTE}");
    let s = TestServer::with_toml(kind, &toml).await;
    let r = s
        .post("/tables/Note", json!({"id": "n1", "title": "a"}))
        .await;
    assert_eq!(r.status, 201);
    let url = s.database_url().to_owned();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel::<()>();
    let holder = match kind {
        StoreKind::Sqlite => tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&url).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            released.recv().unwrap();
            conn.execute_batch("ROLLBACK").unwrap();
        }),
        StoreKind::Postgres => {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                handle.block_on(async move {
                    use sqlx::Connection as _;
                    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                    let mut tx = conn.begin().await.unwrap();
                    sqlx::query(
                        "SELECT 1 FROM tablesync_clock WHERE table_name = 'Note' FOR UPDATE",
                    )
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                    locked.send(()).unwrap();
                    released.recv().unwrap();
                    tx.rollback().await.unwrap();
                })
            })
        }
    };
    is_locked.await.unwrap();
    let r = s.patch("/tables/Note/n1", json!({"title": "b"})).await;
    assert_eq!(
        (r.status, r.body),
        (
            504,
            err(
                "outcome_unknown",
                "The request took longer than 300 ms; the write may or may not have been applied: read the item before retrying"
            )
        )
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    // The write is not abandoned with its request: the group commit runs it on a task of its
    // own (so that a cancelled request never takes the other writes of its group down with
    // it), which commits once the lock is free, on both stores. A write that timed out may
    // also never commit (a crash, a lock timeout), which is why the answer is "unknown".
    let expected = match kind {
        StoreKind::Sqlite | StoreKind::Postgres => "b",
    };
    let mut title = Value::Null;
    for _ in 0..200 {
        title = s.get("/tables/Note/n1").await.body["title"].clone();
        if title == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(title, expected);
}

crate::store_tests!(
    timed_out_write_is_outcome_unknown,
    dates_outside_wire_range_are_400,
    orderby_and_select_terms_are_limited,
    failed_writes_add_no_columns,
    select_star_is_all_columns,
    if_match_lists,
);
