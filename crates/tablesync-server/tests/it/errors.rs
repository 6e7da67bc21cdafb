//! Every 4xx path of the request edge and the table rules, with whole error bodies.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{err, send, StoreKind, TestServer};

const BAD_VERSION: &str =
    "An invalid API version was specified in the request, this request needs to specify a ZUMO-API-VERSION of 2.0.0.";

async fn api_version_is_required_on_tables(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let url = format!("{}/tables/TodoItem", s.base);
    let r = send(s.client.get(&url)).await;
    assert_eq!(
        (r.status, r.body),
        (400, err("api_version_missing", BAD_VERSION))
    );
    let r = send(s.client.get(&url).header("ZUMO-API-VERSION", "3.0.0")).await;
    assert_eq!(
        (r.status, r.body),
        (400, err("api_version_unsupported", BAD_VERSION))
    );
    // Header wins over the query.
    let r = send(
        s.client
            .get(format!("{url}?ZUMO-API-VERSION=2.0.0"))
            .header("ZUMO-API-VERSION", "1.0.0"),
    )
    .await;
    assert_eq!(r.status, 400);
    // Query key in any case; any 2.0.x.
    let r = send(s.client.get(format!("{url}?zumo-api-version=2.0.9"))).await;
    assert_eq!((r.status, r.body), (200, json!([])));
    let r = send(s.client.post(&url).json(&json!({}))).await;
    assert_eq!(r.status, 400);
}

async fn unknown_tables_routes_and_methods(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let r = s.get("/tables/Nope").await;
    assert_eq!(
        (r.status, r.body),
        (
            404,
            err("table_not_found", "The table 'Nope' does not exist")
        )
    );
    let r = s.post("/tables/Nope", json!({})).await;
    assert_eq!(
        (r.status, r.body),
        (
            404,
            err("table_not_found", "The table 'Nope' does not exist")
        )
    );
    let r = s.get("/tables/Nope/1").await;
    assert_eq!(
        (r.status, r.body),
        (
            404,
            err("table_not_found", "The table 'Nope' does not exist")
        )
    );
    let r = s.get("/elsewhere").await;
    assert_eq!(
        (r.status, r.body),
        (404, err("route_not_found", "No route for /elsewhere"))
    );
    let r = send(s.req(Method::PUT, "/tables/TodoItem/1")).await;
    assert_eq!(
        (r.status, r.body),
        (
            405,
            err(
                "method_not_allowed",
                "PUT is not supported on /tables/TodoItem/1"
            )
        )
    );
    // (PATCH and DELETE on the collection URL are routes: tests/it/collection_routes.rs.)
    let r = send(s.req(Method::PUT, "/tables/TodoItem")).await;
    assert_eq!(
        (r.status, r.body),
        (
            405,
            err(
                "method_not_allowed",
                "PUT is not supported on /tables/TodoItem"
            )
        )
    );
}

/// Operations a table's configuration leaves out answer 405 and change nothing.
async fn disabled_operations_are_405(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        "[[tables]]\nname = \"Ref\"\ncolumns = { label = \"string\" }\noperations = [\"read\"]\n\n\
         [[tables]]\nname = \"Log\"\noperations = [\"read\", \"insert\"]",
    )
    .await;
    let disabled = |table: &str, op: &str| {
        (
            405,
            err(
                "method_not_allowed",
                &format!("Table '{table}' does not allow the {op} operation"),
            ),
        )
    };
    let r = s
        .post("/tables/Ref", json!({"id": "a", "label": "x"}))
        .await;
    assert_eq!((r.status, r.body), disabled("Ref", "insert"));
    let r = s.get("/tables/Ref").await;
    assert_eq!((r.status, r.body), (200, json!([])));

    let r = s.post("/tables/Log", json!({"id": "a"})).await;
    assert_eq!(r.status, 201);
    let r = s.patch("/tables/Log/a", json!({})).await;
    assert_eq!((r.status, r.body), disabled("Log", "update"));
    let r = s.delete("/tables/Log/a").await;
    assert_eq!((r.status, r.body), disabled("Log", "delete"));
    let r = send(s.req(Method::POST, "/tables/Log/a")).await;
    assert_eq!((r.status, r.body), disabled("Log", "undelete"));
    let r = s.get("/tables/Log/a").await;
    assert_eq!((r.status, r.body["deleted"].clone()), (200, json!(false)));
    assert_eq!(
        r.body["version"],
        s.get("/tables/Log").await.body[0]["version"]
    );
}

async fn missing_items(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let not_found = err("item_not_found", "The item does not exist");
    for r in [
        s.get("/tables/TodoItem/x").await,
        s.patch("/tables/TodoItem/x", json!({"text": "a"})).await,
        s.patch_if("/tables/TodoItem/x", "*", json!({"text": "a"}))
            .await,
        s.delete("/tables/TodoItem/x").await,
    ] {
        assert_eq!((r.status, &r.body), (404, &not_found));
    }
}

async fn bad_bodies(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let raw = |body: &'static str| {
        s.req(Method::POST, "/tables/TodoItem")
            .header("Content-Type", "application/json")
            .body(body)
    };

    let json_error = serde_json::from_str::<Value>("{\"text\":")
        .unwrap_err()
        .to_string();
    let r = send(raw("{\"text\":")).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_json",
                &format!("The request body is not valid JSON: {json_error}")
            )
        )
    );
    let empty_error = serde_json::from_str::<Value>("").unwrap_err().to_string();
    let r = send(s.req(Method::PATCH, "/tables/TodoItem/a")).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_json",
                &format!("The request body is not valid JSON: {empty_error}")
            )
        )
    );

    // A key twice in one object: refused, naming the key, and nothing is stored (serde_json
    // alone would keep the last value).
    for body in [
        r#"{"id":"dup","text":"a","text":"b"}"#,
        r#"{"id":"dup","text":"a","id":"dup2"}"#,
    ] {
        let r = send(raw(body)).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.body["code"], "invalid_json");
        let message = r.body["error"].as_str().unwrap();
        assert!(
            message.starts_with("The request body is not valid JSON: the key \"")
                && message.contains("\" appears twice in one object at line 1 column"),
            "{message}"
        );
    }
    let r = send(
        s.req(Method::PATCH, "/tables/TodoItem/nct2")
            .header("Content-Type", "application/json")
            .body(r#"{"complete":true,"complete":false}"#),
    )
    .await;
    assert_eq!(r.body["code"], "invalid_json", "{:?}", r.body);
    for id in ["dup", "dup2"] {
        assert_eq!(s.get(&format!("/tables/TodoItem/{id}")).await.status, 404);
    }

    for body in ["[1,2]", "\"text\"", "42", "null"] {
        let r = send(raw(body)).await;
        assert_eq!(
            (r.status, r.body),
            (
                400,
                err("body_not_object", "The request body must be a JSON object")
            ),
            "{body}"
        );
    }

    let r = send(
        s.req(Method::POST, "/tables/TodoItem")
            .header("Content-Type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(
        (r.status, r.body),
        (
            415,
            err(
                "unsupported_media_type",
                "Unsupported content type 'text/plain': send application/json"
            )
        )
    );
    // No content type at all is taken as JSON.
    let r = send(
        s.req(Method::POST, "/tables/TodoItem")
            .body("{\"id\":\"nct\"}"),
    )
    .await;
    assert_eq!(r.status, 201);
}

async fn table_rules(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("a", "x", false).await;
    for name in ["createdAt", "UpdatedAt", "deleted"] {
        for r in [
            s.post(
                "/tables/TodoItem",
                json!({ name: "2024-01-01T00:00:00.000Z" }),
            )
            .await,
            s.patch("/tables/TodoItem/a", json!({ name: false })).await,
        ] {
            let message = format!("Cannot update item with property '{name}' as it is reserved");
            assert_eq!(
                (r.status, r.body),
                (400, err("reserved_property", &message))
            );
        }
    }
    let r = s.post("/tables/TodoItem", json!({"nope": 1})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "unknown_column",
                "The property 'nope' is not a column of table 'TodoItem'"
            )
        )
    );
    let r = s.patch("/tables/TodoItem/a", json!({"text": 5})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "wrong_type",
                "The property 'text' must be a string or null, not a number"
            )
        )
    );
    let r = s.post("/tables/TodoItem", json!({"complete": "yes"})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "wrong_type",
                "The property 'complete' must be a boolean or null, not a string"
            )
        )
    );
    let r = s
        .patch("/tables/TodoItem/a", json!({"id": "b", "text": "y"}))
        .await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "id_mismatch",
                "The item ID and querystring ID did not match"
            )
        )
    );
    let r = s.post("/tables/TodoItem", json!({"id": "a/b"})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_id",
                "invalid id: the id contains the forbidden character '/' at byte 1"
            )
        )
    );
    let r = s.post("/tables/TodoItem", json!({"id": 7})).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err("invalid_id", "invalid id: the id must be a string")
        )
    );
    // The HTTP client removes the dot segment before sending (URL normalisation), so this is a
    // request for `/tables/`: no such route. The raw `..` id is in `hostile.rs`.
    let r = s.get("/tables/TodoItem/..").await;
    assert_eq!(
        (r.status, r.body),
        (404, err("route_not_found", "No route for /tables/"))
    );
    let r = s.get("/tables/TodoItem/a%2Fb").await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err(
                "invalid_id",
                "invalid id: the id contains the forbidden character '/' at byte 1"
            )
        )
    );
    // Nothing was written by the rejected requests.
    let list = s.get("/tables/TodoItem").await;
    assert_eq!(crate::ids(&list.body), ["a"]);
    assert_eq!(list.body[0]["text"], "x");
}

async fn body_limit_is_413_json(kind: StoreKind) {
    let s = TestServer::with_toml(kind, "[limits]\nbody_bytes_max = 100").await;
    let big = json!({"text": "x".repeat(200)});
    let expected = err(
        "payload_too_large",
        "The request body is larger than 100 bytes",
    );
    let r = s.post("/tables/TodoItem", big.clone()).await;
    assert_eq!((r.status, &r.body), (413, &expected));
    let r = s.patch("/tables/TodoItem/a", big).await;
    assert_eq!((r.status, &r.body), (413, &expected));
    // Just under the limit is fine.
    assert_eq!(
        s.post("/tables/TodoItem", json!({"text": "x".repeat(50)}))
            .await
            .status,
        201
    );
}

async fn query_option_errors(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let r = s.get("/tables/TodoItem?$top=1001").await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err("top_too_large", "You cannot request more than 1000 records")
        )
    );
    let r = s.get("/tables/TodoItem?$select=text,bogus").await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err("unknown_column", "unknown column 'bogus' in $select")
        )
    );
    let long = format!("/tables/TodoItem?$filter=text eq '{}'", "x".repeat(9000));
    let r = s.get(&long).await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            err("invalid_filter", "The $filter is longer than 8192 bytes")
        )
    );
    for (query, message) in [
        ("$top=-1", "$top must be a non-negative integer, found '-1'"),
        (
            "$top=abc",
            "$top must be a non-negative integer, found 'abc'",
        ),
        (
            "$skip=99999999999999999999999",
            "$skip is too large: '99999999999999999999999'",
        ),
        (
            "$inlinecount=sometimes",
            "$inlinecount must be 'allpages' or 'none', found 'sometimes'",
        ),
        ("$top=1&$top=2", "query option $top is given more than once"),
        (
            "__includeDeleted=maybe",
            "__includeDeleted must be 'true' or 'false', found 'maybe'",
        ),
    ] {
        let r = s.get(&format!("/tables/TodoItem?{query}")).await;
        assert_eq!(
            (r.status, r.body),
            (400, err("invalid_query_option", message)),
            "{query}"
        );
    }
}

crate::store_tests!(
    api_version_is_required_on_tables,
    unknown_tables_routes_and_methods,
    disabled_operations_are_405,
    missing_items,
    bad_bodies,
    table_rules,
    body_limit_is_413_json,
    query_option_errors,
);
