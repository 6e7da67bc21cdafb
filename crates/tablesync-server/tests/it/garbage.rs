//! No input makes the server answer 500 or drop the connection: seeded random query strings,
//! paths, headers and bodies. Every error is a JSON `{"error", "code"}` body.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{send, StoreKind, TestServer};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const FILTER_PIECES: &[&str] = &[
    "text",
    "complete",
    "id",
    "updatedAt",
    "createdAt",
    "version",
    "deleted",
    "nope",
    " eq ",
    " ne ",
    " gt ",
    " and ",
    " or ",
    "not ",
    "(",
    ")",
    "'",
    "''",
    "'a'",
    "1",
    "-1",
    "1.5e300",
    "9999999999999999999999",
    "null",
    "true",
    "datetime'",
    "datetimeoffset'2020-01-01T00:00:00Z'",
    "substringof(",
    "startswith(",
    "length(",
    "indexof(",
    "substring(",
    "replace(",
    "concat(",
    "year(",
    "round(",
    ",",
    " add ",
    " div ",
    " mod ",
    "0",
    "%",
    "%25",
    "%ZZ",
    "&",
    "=",
    "+",
    "$",
    "\u{0}",
    "é",
    "🦀",
    "/",
    "tolower(",
    "trim(",
    "ceiling(",
];

fn garbage_filter(rng: &mut Rng) -> String {
    let n = 1 + rng.next() % 12;
    (0..n).map(|_| rng.pick(FILTER_PIECES)).collect()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn assert_sane(what: &str, status: u16, body: &Value) {
    assert!(status < 500, "{what} -> {status} {body}");
    if status >= 400 && status != 409 && status != 412 {
        let obj = body
            .as_object()
            .unwrap_or_else(|| panic!("{what}: not a JSON object: {body}"));
        assert!(
            obj["error"].is_string() && obj["code"].is_string(),
            "{what}: {body}"
        );
    }
}

async fn garbage_queries_never_500(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("a", "x", false).await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let options = [
        "$filter",
        "$orderby",
        "$select",
        "$top",
        "$skip",
        "$inlinecount",
        "__includeDeleted",
        "$Filter",
        "x",
    ];
    let mut served = 0;
    for _ in 0..300 {
        let key = rng.pick(&options);
        let value = garbage_filter(&mut rng);
        let raw = if matches!(rng.next() % 3, 0) {
            value.replace(['&', '#'], "")
        } else {
            encode(&value)
        };
        let path = format!("/tables/TodoItem?{key}={raw}");
        let r = send(s.req(Method::GET, &path)).await;
        assert_sane(&format!("{key}={value:?}"), r.status, &r.body);
        if r.status == 200 && key == "$filter" {
            served += 1;
            assert_literals_bound(&format!("{key}={raw}"));
        }
    }

    // Well-formed filters whose string literals are hostile (quotes, LIKE wildcards, escapes),
    // checked against a reference evaluation over the stored rows and by the binding oracle.
    let texts = ["x", "it's", "%_", "50%", "a_b", "\\", "' or '1'='1"];
    for (n, t) in texts.iter().enumerate() {
        let r = s
            .post(
                "/tables/TodoItem",
                json!({"id": format!("t{n}"), "text": t}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let pieces = [
        "x",
        "it's",
        "%",
        "_",
        "%_",
        "50%",
        "a_b",
        "\\",
        "' or '1'='1",
        "'",
        "",
        "i",
        "a",
    ];
    for _ in 0..150 {
        let lit = rng.pick(&pieces);
        let quoted = lit.replace('\'', "''");
        let (filter, keep): (String, Keep) = match rng.next() % 4 {
            0 => (format!("text eq '{quoted}'"), Box::new(move |t| t == lit)),
            1 => (format!("text ne '{quoted}'"), Box::new(move |t| t != lit)),
            2 => (
                format!("startswith(text, '{quoted}')"),
                Box::new(move |t| t.starts_with(lit)),
            ),
            _ => (
                format!("substringof('{quoted}', text)"),
                Box::new(move |t| t.contains(lit)),
            ),
        };
        let query = format!("$filter={}&$orderby=id&$top=100", encode(&filter));
        let r = send(s.req(Method::GET, &format!("/tables/TodoItem?{query}"))).await;
        assert_eq!(r.status, 200, "{filter}: {:?}", r.body);
        let got: Vec<String> = crate::ids(&r.body);
        let mut want: Vec<String> = std::iter::once(("a".to_owned(), "x"))
            .chain(texts.iter().enumerate().map(|(n, t)| (format!("t{n}"), *t)))
            .filter(|(_, t)| keep(t))
            .map(|(id, _)| id)
            .collect();
        want.sort();
        assert_eq!(got, want, "{filter}");
        assert_literals_bound(&query);
        served += 1;
    }
    // The oracle must have had work (seeded, so stable).
    assert!(served >= 10, "only {served} filters were checked");
}

/// The reference evaluation of one generated filter over a row's text.
type Keep = Box<dyn Fn(&str) -> bool>;

/// The oracle for a filter the server served: lowered as the server lowers it (same function,
/// same schema), every non-null literal is a bound parameter and every string literal's text is
/// among the parameters. A lowering that formats a literal into the SQL text fails here, where
/// the status and body checks alone cannot tell.
fn assert_literals_bound(query: &str) {
    use tablesync_protocol::odata::ast::{Expr, Literal};
    use tablesync_protocol::odata::sql::{lower_filter, ColumnType, Dialect, SqlValue};
    let Ok(q) = tablesync_protocol::odata::query::parse_query_string(query) else {
        return;
    };
    let Some(filter) = q.filter else { return };
    let (mut literals, mut strings) = (0usize, Vec::new());
    let mut todo = vec![&filter];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Literal(Literal::Null) | Expr::Member(_) => {}
            Expr::Literal(l) => {
                literals += 1;
                if let Literal::String(t) = l {
                    strings.push(t.clone());
                }
            }
            Expr::Unary { expr, .. } => todo.push(expr),
            Expr::Binary { left, right, .. } => todo.extend([&**left, &**right]),
            Expr::Call { args, .. } => todo.extend(args.iter()),
        }
    }
    let schema: Vec<(String, ColumnType)> = [
        ("id", ColumnType::String),
        ("text", ColumnType::String),
        ("complete", ColumnType::Boolean),
        ("version", ColumnType::String),
        ("deleted", ColumnType::Boolean),
        ("createdAt", ColumnType::Date),
        ("updatedAt", ColumnType::Date),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t))
    .collect();
    for d in [Dialect::Sqlite, Dialect::Postgres] {
        let Ok(frag) = lower_filter(&filter, &schema, d, 1) else {
            continue;
        };
        assert!(
            frag.params.len() >= literals,
            "{query}: {literals} literals, {} parameters: {}",
            frag.params.len(),
            frag.sql
        );
        for t in &strings {
            assert!(
                frag.params.iter().any(|p| match p {
                    SqlValue::Text(v) => v == t,
                    SqlValue::Timestamp(_) => true,
                    _ => false,
                }),
                "{query}: the literal {t:?} is not bound: {}",
                frag.sql
            );
        }
    }
}

const NOTE_PIECES: &[&str] = &[
    "title",
    "stars",
    "pinned",
    "due",
    "color",
    " eq ",
    " gt ",
    " le ",
    " add ",
    " sub ",
    " mul ",
    " div ",
    " mod ",
    " and ",
    " or ",
    "not ",
    "-",
    "(",
    ")",
    ",",
    "1e308",
    "-1e308",
    "9223372036854775807",
    "0",
    "1.5",
    "3000000000",
    "null",
    "true",
    "'x'",
    "datetime'0001-01-01T00:00:00Z'",
    "datetimeoffset'9999-12-31T23:59:59.999Z'",
    "datetime'0000-01-01T00:00:00Z'",
    "floor(",
    "ceiling(",
    "round(",
    "substring(",
    "indexof(",
    "length(",
    "year(",
    "day(",
    "concat(",
    "tolower(",
];

/// The same on a dynamic-schema table with number, boolean and date columns, with numeric edge
/// values, date edges, long `$orderby` lists and long flat `or` chains.
async fn garbage_queries_on_typed_dynamic_table_never_500(kind: StoreKind) {
    let s = TestServer::with_toml(
        kind,
        r#"
[[tables]]
name = "Note"
columns = { title = "string", stars = "number", pinned = "boolean", due = "date" }
soft_delete = false
dynamic_schema = true
"#,
    )
    .await;
    let r = s
        .post(
            "/tables/Note",
            json!({"id": "a", "title": "x", "stars": 1.5, "pinned": true,
                   "due": "2024-01-01T00:00:00Z", "color": "red"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..300 {
        let key = rng.pick(&["$filter", "$orderby", "$select"]);
        let n = 1 + rng.next() % 12;
        let value: String = (0..n).map(|_| rng.pick(NOTE_PIECES)).collect();
        let path = format!("/tables/Note?{key}={}", encode(&value));
        let r = send(s.req(Method::GET, &path)).await;
        assert_sane(&format!("{key}={value:?}"), r.status, &r.body);
    }
    for terms in [31, 32, 33, 1000, 2001, 5000] {
        let value = vec!["stars desc", "title", "due", "pinned"]
            .into_iter()
            .cycle()
            .take(terms)
            .collect::<Vec<_>>()
            .join(",");
        let r = s
            .get(&format!("/tables/Note?$orderby={}", encode(&value)))
            .await;
        assert_sane(&format!("$orderby with {terms} terms"), r.status, &r.body);
        let r = s
            .get(&format!(
                "/tables/Note?$select={}",
                value.replace(" desc", "")
            ))
            .await;
        assert_sane(&format!("$select with {terms} terms"), r.status, &r.body);
    }
    for terms in [64, 65, 300, 2000] {
        let value = (0..terms)
            .map(|i| format!("id eq '{i}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        let r = s
            .get(&format!("/tables/Note?$filter={}", encode(&value)))
            .await;
        assert_sane(&format!("or chain with {terms} terms"), r.status, &r.body);
    }
}

async fn garbage_bodies_and_paths_never_500(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("a", "x", false).await;
    let bodies = [
        "",
        "{",
        "}",
        "[]",
        "{}",
        "null",
        "{\"id\":{}}",
        "{\"id\":\"\"}",
        "{\"id\":\"a\"}",
        "{\"text\":[1]}",
        "{\"complete\":2}",
        "{\"version\":1}",
        "{\"\":1}",
        "{\"id\":\"\\u0000\"}",
        "{\"text\":\"\\ud800\"}",
        "\u{feff}{}",
        "{\"a\":1e999}",
        "{\"complete\":0}",
    ];
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let paths = [
        "/tables/TodoItem",
        "/tables/TodoItem/a",
        "/tables/TodoItem/%FF",
        "/tables/TodoItem/%",
        "/tables//x",
        "/tables/TodoItem/a/b",
        "/tables/%00",
    ];
    for path in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::PUT,
        ] {
            for body in bodies.iter().copied().chain([deep.as_str()]) {
                let r = send(
                    s.req(method.clone(), path)
                        .header("Content-Type", "application/json")
                        .body(body.to_owned()),
                )
                .await;
                assert_sane(&format!("{method} {path} {body:.40}"), r.status, &r.body);
            }
        }
    }
    for if_match in ["*", "\"\"", "W/\"x\"", "\"a\", \"b\"", "\u{e9}"] {
        let r = send(
            s.req(Method::PATCH, "/tables/TodoItem/a")
                .header("If-Match", if_match)
                .body("{}"),
        )
        .await;
        assert_sane(if_match, r.status, &r.body);
    }
}

/// PostgreSQL text cannot hold U+0000; both stores refuse it the same way, as a 400 naming the
/// property, and store nothing.
async fn nul_characters_are_refused_on_every_store(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let a = s.insert_todo("a", "x", false).await;
    let r = s
        .post(
            "/tables/TodoItem",
            json!({"id": "b", "text": "nul\u{0}here"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        crate::err(
            "wrong_type",
            "The property 'text' contains a NUL character (U+0000), which cannot be stored"
        )
    );
    assert_eq!(s.get("/tables/TodoItem/b").await.status, 404);
    let r = s
        .patch(
            "/tables/TodoItem/a",
            json!({"text": "\u{0}", "version": "x"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .patch("/tables/TodoItem/a", json!({"version": "\u{0}"}))
        .await;
    assert_eq!(
        (r.status, r.body),
        (
            400,
            crate::err(
                "wrong_type",
                "the property 'version' contains a NUL character (U+0000)"
            )
        )
    );
    for path in ["/tables/TodoItem/%00", "/tables/TodoItem/a%00b"] {
        for method in [Method::GET, Method::PATCH, Method::DELETE, Method::POST] {
            let r = send(
                s.req(method.clone(), path)
                    .header("Content-Type", "application/json")
                    .body("{}"),
            )
            .await;
            assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
            assert_eq!(r.body["code"], "invalid_id", "{method} {path}");
        }
    }
    let unchanged = s.get("/tables/TodoItem/a").await;
    assert_eq!(unchanged.body["text"], "x");
    assert_eq!(unchanged.body["version"], a["version"]);
}

crate::store_tests!(
    garbage_queries_never_500,
    garbage_queries_on_typed_dynamic_table_never_500,
    garbage_bodies_and_paths_never_500,
    nul_characters_are_refused_on_every_store,
);
