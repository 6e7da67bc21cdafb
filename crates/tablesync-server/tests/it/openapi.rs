//! `GET /openapi.json`: parsed as typed OpenAPI 3.0 (`openapiv3`), every `$ref` resolves, and it
//! matches both the configuration and the server's behaviour: every configured route with
//! exactly the methods the server serves (each described operation is routed, each left-out
//! method answers 405), the columns with their types, the error codes, the auth rules.

use openapiv3::{
    OpenAPI, ReferenceOr, SchemaKind, SecurityScheme, StringFormat, Type, VariantOrUnknownOrEmpty,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tablesync_protocol::error::ErrorCode;
use tablesync_server::{ColumnType, Config};

use crate::tokens::{self, tables_with, token};
use crate::{StoreKind, TestServer};

const TABLES: &str = r#"
[[tables]]
name = "TodoItem"
columns = { text = "string", complete = "boolean", due = "date", priority = "number" }
page_size = 20

[[tables]]
name = "Country"
columns = { name = "string" }
operations = ["read"]

[[tables]]
name = "Log"
columns = { line = "string" }
soft_delete = false

[[tables]]
name = "Bag"
dynamic_schema = true

[[tables]]
name = "Counter"
id_type = "integer"
columns = { n = "number" }
"#;

/// The document as JSON and parsed into the typed model (which fails on any field of the wrong
/// shape).
async fn fetch(server: &TestServer, path: &str, token: Option<&str>) -> (Value, OpenAPI) {
    // No ZUMO-API-VERSION: the document does not need one.
    let mut req = server.client.get(format!("{}{path}", server.base));
    if let Some(token) = token {
        req = req.header("X-ZUMO-AUTH", token);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let raw: Value = resp.json().await.unwrap();
    let typed: OpenAPI = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(typed.openapi, "3.0.3");
    check_refs(&raw, &raw);
    (raw, typed)
}

/// Every `$ref` is a local JSON pointer that names something in the document.
fn check_refs(doc: &Value, at: &Value) {
    match at {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("not local: {r}"));
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
            }
            m.values().for_each(|v| check_refs(doc, v));
        }
        Value::Array(a) => a.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

/// The methods the document gives a path (lower case).
fn methods(doc: &OpenAPI, path: &str) -> Vec<&'static str> {
    let Some(ReferenceOr::Item(item)) = doc.paths.paths.get(path) else {
        return vec![];
    };
    let mut out = vec![];
    for (name, op) in [
        ("get", &item.get),
        ("post", &item.post),
        ("patch", &item.patch),
        ("delete", &item.delete),
        ("put", &item.put),
    ] {
        if op.is_some() {
            out.push(name);
        }
    }
    out
}

fn schema_type(doc: &OpenAPI, table: &str, column: &str) -> (String, Option<String>, bool) {
    let components = doc.components.as_ref().unwrap();
    let ReferenceOr::Item(schema) = &components.schemas[table] else {
        panic!("{table} is a reference");
    };
    let SchemaKind::Type(Type::Object(object)) = &schema.schema_kind else {
        panic!("{table} is not an object");
    };
    let ReferenceOr::Item(property) = &object.properties[column] else {
        panic!("{table}.{column} is a reference");
    };
    let read_only = property.schema_data.read_only;
    match &property.schema_kind {
        SchemaKind::Type(Type::String(s)) => {
            let format = match &s.format {
                VariantOrUnknownOrEmpty::Item(StringFormat::DateTime) => Some("date-time".into()),
                VariantOrUnknownOrEmpty::Item(StringFormat::Byte) => Some("byte".into()),
                VariantOrUnknownOrEmpty::Empty => None,
                other => Some(format!("{other:?}")),
            };
            ("string".into(), format, read_only)
        }
        SchemaKind::Type(Type::Number(_)) => ("number".into(), None, read_only),
        SchemaKind::Type(Type::Boolean(_)) => ("boolean".into(), None, read_only),
        SchemaKind::Type(Type::Integer(_)) => ("integer".into(), None, read_only),
        other => (format!("{other:?}"), None, read_only),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_config_and_the_server() {
    let config = Config::from_toml_str(TABLES).unwrap();
    let server = TestServer::with_config(StoreKind::Sqlite, config.clone()).await;
    let (raw, doc) = fetch(&server, "/openapi.json", None).await;
    assert_eq!(raw["servers"], json!([{"url": "/"}]));

    // Exactly these paths and methods: the configured tables' offered operations, discovery and
    // the document itself.
    let mut expected: Vec<(String, Vec<&str>)> = vec![
        (
            "/tables/TodoItem".into(),
            vec!["get", "post", "patch", "delete"],
        ),
        (
            "/tables/TodoItem/{id}".into(),
            vec!["get", "post", "patch", "delete"],
        ),
        ("/tables/Country".into(), vec!["get"]),
        ("/tables/Country/{id}".into(), vec!["get"]),
        ("/tables/Log".into(), vec!["get", "post", "patch", "delete"]),
        ("/tables/Log/{id}".into(), vec!["get", "patch", "delete"]),
        ("/tables/Bag".into(), vec!["get", "post", "patch", "delete"]),
        (
            "/tables/Bag/{id}".into(),
            vec!["get", "post", "patch", "delete"],
        ),
        (
            "/tables/Counter".into(),
            vec!["get", "post", "patch", "delete"],
        ),
        (
            "/tables/Counter/{id}".into(),
            vec!["get", "post", "patch", "delete"],
        ),
        ("/$changes/TodoItem".into(), vec!["get"]),
        ("/$changes/Country".into(), vec!["get"]),
        ("/$changes/Log".into(), vec!["get"]),
        ("/$changes/Bag".into(), vec!["get"]),
        ("/$changes/Counter".into(), vec!["get"]),
        ("/$capabilities".into(), vec!["get"]),
        ("/$batch".into(), vec!["post"]),
        ("/openapi.json".into(), vec!["get"]),
    ];
    let mut described: Vec<(String, Vec<&str>)> = doc
        .paths
        .paths
        .keys()
        .map(|p| (p.clone(), methods(&doc, p)))
        .collect();
    expected.sort();
    described.sort();
    assert_eq!(described, expected);

    // The server agrees: every described table operation is routed (whatever its answer, it
    // is not 405), and every other method on a table path answers 405.
    for (path, offered) in &described {
        if !path.starts_with("/tables/") && !path.starts_with("/$changes/") {
            continue;
        }
        let url = path.replace("{id}", "nope");
        for method in ["get", "post", "patch", "delete", "put"] {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = server.req(m, &url);
            if method != "get" && method != "delete" {
                req = req.json(&json!({"id": "n1"}));
            }
            let status = req.send().await.unwrap().status();
            if offered.contains(&method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
            }
        }
    }

    // System and user columns with their types; the Bag takes any property.
    for table in &config.tables {
        for (column, kind, format, read_only) in [
            if table.name == "Counter" {
                ("id", "integer", None, true)
            } else {
                ("id", "string", None, false)
            },
            ("createdAt", "string", Some("date-time"), true),
            ("updatedAt", "string", Some("date-time"), true),
            ("version", "string", Some("byte"), false),
            ("deleted", "boolean", None, true),
        ] {
            assert_eq!(
                schema_type(&doc, &table.name, column),
                (kind.to_owned(), format.map(str::to_owned), read_only),
                "{}.{column}",
                table.name
            );
        }
        for (column, column_type) in &table.columns {
            let (kind, format) = match column_type {
                ColumnType::String => ("string", None),
                ColumnType::Number => ("number", None),
                ColumnType::Boolean => ("boolean", None),
                ColumnType::Date => ("string", Some("date-time")),
            };
            assert_eq!(
                schema_type(&doc, &table.name, column),
                (kind.to_owned(), format.map(str::to_owned), false),
                "{}.{column}",
                table.name
            );
        }
        let additional = &raw["components"]["schemas"][&table.name]["additionalProperties"];
        assert_eq!(additional, &json!(table.dynamic_schema), "{}", table.name);
    }
    assert_eq!(
        schema_type(&doc, "TodoItem", "due").1.as_deref(),
        Some("date-time")
    );

    // List query options, bounded as configured.
    let list = &raw["paths"]["/tables/TodoItem"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p.get("$ref") {
            Some(Value::String(r)) => raw.pointer(r.trim_start_matches('#')).unwrap()["name"]
                .as_str()
                .unwrap(),
            _ => p["name"].as_str().unwrap(),
        })
        .collect();
    for option in [
        "$filter",
        "$orderby",
        "$select",
        "$top",
        "$skip",
        "$inlinecount",
        "__includeDeleted",
        "ZUMO-API-VERSION",
    ] {
        assert!(names.contains(&option), "{option} missing from {names:?}");
    }
    let top = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "$top")
        .unwrap();
    assert_eq!(top["schema"]["default"], json!(20));
    assert_eq!(
        top["schema"]["maximum"],
        json!(Config::default_todo().limits.page_size_max)
    );
    assert!(list["responses"]["200"]["headers"]["Link"].is_object());

    // Error answers name the one error body, whose codes are all of ours.
    assert_eq!(
        list["responses"]["400"],
        json!({"$ref": "#/components/responses/Error"})
    );
    let codes: Vec<&str> = raw["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, ours);
    // 409/412 carry the item, not an error body.
    assert_eq!(
        raw["paths"]["/tables/TodoItem/{id}"]["patch"]["responses"]["412"]["content"]
            ["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/TodoItem"})
    );

    // No [auth]: no security anywhere.
    assert!(doc.components.as_ref().unwrap().security_schemes.is_empty());
    for (path, item) in &doc.paths.paths {
        let ReferenceOr::Item(item) = item else {
            panic!()
        };
        for op in item.iter().map(|(_, op)| op) {
            assert_eq!(op.security.as_deref(), Some(&[][..]), "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_the_document_needs_a_token_and_describes_it() {
    let config = tables_with(tokens::TABLES, tokens::auth_config());
    let server = TestServer::with_clock(StoreKind::Sqlite, config, tokens::clock()).await;

    // Anonymous, or with a bad token: 401 with our error body.
    for bad in [None, Some("not-a-token")] {
        let mut req = server.client.get(format!("{}/openapi.json", server.base));
        if let Some(t) = bad {
            req = req.header("X-ZUMO-AUTH", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], json!("unauthorized"));
    }

    let (raw, doc) = fetch(&server, "/openapi.json", Some(&token("alice"))).await;
    let schemes = &doc.components.as_ref().unwrap().security_schemes;
    match &schemes["x-zumo-auth"] {
        ReferenceOr::Item(SecurityScheme::APIKey { name, .. }) => {
            assert_eq!(name.to_ascii_lowercase(), "x-zumo-auth")
        }
        other => panic!("{other:?}"),
    }
    match &schemes["authorization"] {
        ReferenceOr::Item(SecurityScheme::HTTP { scheme, .. }) => assert_eq!(scheme, "bearer"),
        other => panic!("{other:?}"),
    }
    // Per-user `Todo`: every operation needs a token; `Public` reads are anonymous (the empty
    // requirement first), its writes are authenticated (the default with [auth]).
    let security = |path: &str, method: &str| raw["paths"][path][method]["security"].clone();
    let required = json!([{"x-zumo-auth": []}, {"authorization": []}]);
    assert_eq!(security("/tables/Todo", "get"), required);
    assert_eq!(security("/tables/Todo/{id}", "patch"), required);
    assert_eq!(security("/openapi.json", "get"), required);
    assert_eq!(security("/$capabilities", "get"), json!([]));
    // A batch may be anonymous; each of its operations is checked as its own route is.
    assert_eq!(security("/$batch", "post")[0], json!({}));
    let public_read = security("/tables/Public", "get");
    assert_eq!(public_read[0], json!({}), "{public_read}");
    // The owner column is the server's to fill in.
    assert_eq!(
        raw["components"]["schemas"]["Todo"]["properties"]["userId"]["readOnly"],
        json!(true)
    );
}
