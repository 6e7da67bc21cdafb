//! OData queries end-to-end on both stores: every operator and function class, literals,
//! ordering, paging with Link following, $select, $inlinecount, soft-delete filtering, and
//! query errors with positions.

use serde_json::{json, Value};

use crate::{err, ids, StoreKind, TestServer};

const TABLE: &str = "[[tables]]\nname = \"Q\"\ncolumns = { text = \"string\", n = \"number\", done = \"boolean\", due = \"date\" }";

/// Five rows inserted in the order a..e.
async fn seeded(kind: StoreKind) -> TestServer {
    let s = TestServer::with_toml(kind, TABLE).await;
    let rows = [
        json!({"id": "a", "text": "Apple pie", "n": 1, "done": true, "due": "2024-01-15T10:20:30.000Z"}),
        json!({"id": "b", "text": "banana", "n": 2.5, "done": false, "due": "2024-02-20T11:00:00.000Z"}),
        json!({"id": "c", "text": "O'Neil", "n": -3, "done": false, "due": null}),
        json!({"id": "d", "text": "  cherry  ", "n": 10, "done": true, "due": "2023-12-31T23:59:59.999Z"}),
        json!({"id": "e"}),
    ];
    for row in rows {
        assert_eq!(s.post("/tables/Q", row).await.status, 201);
    }
    s
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn filter_ids(s: &TestServer, filter: &str) -> Vec<String> {
    let r = s.get(&format!("/tables/Q?$filter={}", enc(filter))).await;
    assert_eq!(r.status, 200, "{filter}: {}", r.body);
    ids(&r.body)
}

async fn every_operator_function_and_literal(kind: StoreKind) {
    let s = seeded(kind).await;
    let cases: &[(&str, &[&str])] = &[
        // comparison
        ("text eq 'banana'", &["b"]),
        ("n ne 1 and n ne null", &["b", "c", "d"]),
        ("n gt 1", &["b", "d"]),
        ("n ge 1", &["a", "b", "d"]),
        ("n lt 0", &["c"]),
        ("n le 2.5", &["a", "b", "c"]),
        // logic
        ("done eq true and n gt 5", &["d"]),
        ("n eq 1 or n eq -3", &["a", "c"]),
        ("not(done eq true)", &["b", "c"]),
        ("not done", &["b", "c"]),
        ("done", &["a", "d"]),
        ("done eq false", &["b", "c"]),
        // arithmetic
        ("n add 1 eq 2", &["a"]),
        ("n sub 1 eq 1.5", &["b"]),
        ("n mul 2 eq 20", &["d"]),
        ("n div 2 eq 5", &["d"]),
        ("n mod 3 eq 1", &["a", "d"]),
        ("-n eq 3", &["c"]),
        // string functions: correct, case-sensitive, no wildcard semantics
        ("substringof('an', text)", &["b"]),
        ("substringof('%', text)", &[]),
        ("startswith(text, 'App')", &["a"]),
        ("startswith(text, 'app')", &[]),
        ("startswith(text, '_')", &[]),
        ("endswith(text, 'pie')", &["a"]),
        ("indexof(text, 'nan') eq 2", &["b"]),
        ("indexof(text, 'zzz') eq -1", &["a", "b", "c", "d"]),
        ("length(text) eq 6", &["b", "c"]),
        ("tolower(text) eq 'apple pie'", &["a"]),
        ("toupper(text) eq 'BANANA'", &["b"]),
        ("trim(text) eq 'cherry'", &["d"]),
        ("concat(text, '!') eq 'banana!'", &["b"]),
        ("concat(concat(text, ' '), 'x') eq 'banana x'", &["b"]),
        ("substring(text, 1) eq 'anana'", &["b"]),
        ("substring(text, 0, 3) eq 'App'", &["a"]),
        ("replace(text, 'a', 'o') eq 'bonono'", &["b"]),
        // date parts
        ("year(due) eq 2023", &["d"]),
        ("month(due) eq 2", &["b"]),
        ("day(due) eq 15", &["a"]),
        ("hour(due) eq 11", &["b"]),
        ("minute(due) eq 20", &["a"]),
        ("second(due) eq 59", &["d"]),
        // math functions
        ("round(n) eq 3", &["b"]),
        ("round(n) eq -3", &["c"]),
        ("floor(n) eq 2", &["b"]),
        ("ceiling(n) eq 3", &["b"]),
        // literals
        ("text eq 'O''Neil'", &["c"]),
        ("due eq null", &["c", "e"]),
        ("due ne null", &["a", "b", "d"]),
        ("due gt datetime'2024-01-01T00:00:00.000Z'", &["a", "b"]),
        (
            "due lt datetimeoffset'2024-01-01T01:00:00.0000000+01:00'",
            &["d"],
        ),
        ("due eq datetimeoffset'2024-01-15T10:20:30Z'", &["a"]),
        (
            "updatedAt ge datetimeoffset'1970-01-01T00:00:00.0000000+00:00'",
            &["a", "b", "c", "d", "e"],
        ),
        ("n eq 1L", &["a"]),
        ("n eq 2.5d", &["b"]),
        ("n eq 1e1", &["d"]),
        ("n lt -2", &["c"]),
        (
            "(n gt 0) and ((text eq 'banana') or (text eq 'Apple pie'))",
            &["a", "b"],
        ),
        ("id eq 'c'", &["c"]),
        ("deleted eq false", &["a", "b", "c", "d", "e"]),
    ];
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        let got = filter_ids(&s, filter).await;
        if got != *expected {
            failures.push(format!("{filter}: got {got:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn ordering_is_requested_then_id(kind: StoreKind) {
    let s = seeded(kind).await;
    let order = |q: &'static str| {
        let s = &s;
        async move { ids(&s.get(&format!("/tables/Q?$orderby={}", enc(q))).await.body) }
    };
    assert_eq!(
        ids(&s.get("/tables/Q").await.body),
        ["a", "b", "c", "d", "e"],
        "default: insertion order"
    );
    assert_eq!(order("n desc").await, ["d", "b", "a", "c", "e"]);
    assert_eq!(order("n").await, ["e", "c", "a", "b", "d"]);
    assert_eq!(
        order("done desc, text asc").await,
        ["d", "a", "c", "b", "e"]
    );
    assert_eq!(
        order("done").await,
        ["e", "b", "c", "a", "d"],
        "ties broken by id"
    );
    assert_eq!(order("length(text) desc").await, ["d", "a", "b", "c", "e"]);
    assert_eq!(order("updatedAt desc").await, ["e", "d", "c", "b", "a"]);
}

async fn paging_follows_link_headers(kind: StoreKind) {
    let s = seeded(kind).await;
    let mut url = format!("{}/tables/Q?$top=2&$orderby=id", s.base);
    let mut pages = Vec::new();
    loop {
        let r = crate::send(s.client.get(&url).header("ZUMO-API-VERSION", "2.0.0")).await;
        assert_eq!(r.status, 200);
        pages.push(ids(&r.body));
        match r.header("link") {
            Some(link) => {
                let next = link.strip_suffix("; rel=next").expect("Link format");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
    let host = s.base.trim_start_matches("http://");
    let r = s.get("/tables/Q?$top=2&$skip=2&$orderby=id").await;
    assert_eq!(
        r.header("link"),
        Some(format!("http://{host}/tables/Q?$top=2&$orderby=id&$skip=4; rel=next").as_str())
    );
    assert_eq!(ids(&s.get("/tables/Q?$skip=3").await.body), ["d", "e"]);
    let r = s.get("/tables/Q?$top=0").await;
    assert_eq!((r.body.clone(), r.header("link")), (json!([]), None));
    // A page that is not full has no Link.
    assert_eq!(s.get("/tables/Q?$top=10").await.header("link"), None);
}

async fn select_and_inlinecount(kind: StoreKind) {
    let s = seeded(kind).await;
    let r = s.get("/tables/Q?$select=text,id&$filter=n%20gt%201").await;
    assert_eq!(
        r.body,
        json!([{"id": "b", "text": "banana"}, {"id": "d", "text": "  cherry  "}])
    );
    let r = s
        .get("/tables/Q?$inlinecount=allpages&$top=2&$select=id")
        .await;
    assert_eq!(
        r.body,
        json!({"results": [{"id": "a"}, {"id": "b"}], "count": 5})
    );
    let r = s
        .get("/tables/Q?$inlinecount=allpages&$filter=done&$select=id")
        .await;
    assert_eq!(
        r.body,
        json!({"results": [{"id": "a"}, {"id": "d"}], "count": 2})
    );
    let r = s.get("/tables/Q?$inlinecount=none").await;
    assert!(r.body.is_array());
}

async fn soft_deleted_rows_only_with_include_deleted(kind: StoreKind) {
    let s = seeded(kind).await;
    assert_eq!(s.delete("/tables/Q/b").await.status, 200);
    assert_eq!(ids(&s.get("/tables/Q").await.body), ["a", "c", "d", "e"]);
    let r = s
        .get("/tables/Q?__includeDeleted=true&$inlinecount=allpages&$select=id,deleted")
        .await;
    assert_eq!(r.body["count"], 5);
    assert_eq!(r.body["results"][1], json!({"id": "b", "deleted": true}));
    assert_eq!(
        filter_ids(&s, "deleted eq true").await,
        Vec::<String>::new()
    );
    let r = s
        .get("/tables/Q?__includeDeleted=true&$filter=deleted%20eq%20true")
        .await;
    assert_eq!(ids(&r.body), ["b"]);
    // Incremental pull shape (ARCHITECTURE.md keyset paging) works.
    let first = s
        .get("/tables/Q?__includeDeleted=true&$orderby=updatedAt,id&$top=2")
        .await
        .body;
    assert_eq!(ids(&first), ["a", "c"], "b's tombstone is the newest write");
    let last = &first[1];
    let keyset = format!(
        "(updatedAt gt datetimeoffset'{t}' or (updatedAt eq datetimeoffset'{t}' and id gt '{id}'))",
        t = last["updatedAt"].as_str().unwrap(),
        id = last["id"].as_str().unwrap()
    );
    let r = s
        .get(&format!(
            "/tables/Q?__includeDeleted=true&$orderby=updatedAt,id&$top=10&$filter={}",
            enc(&keyset)
        ))
        .await;
    assert_eq!(ids(&r.body), ["d", "e", "b"]);
}

async fn query_errors_carry_codes_and_positions(kind: StoreKind) {
    let s = seeded(kind).await;
    let parse_err = |code: &str, message: &str, position: usize| json!({"error": message, "code": code, "position": position});
    let cases: Vec<(String, Value)> = vec![
        (
            format!("$filter={}", enc("text eq")),
            parse_err("invalid_filter", "expected an expression, found end of input at position 7 in $filter", 7),
        ),
        (
            format!("$filter={}", enc("text eq 'open")),
            parse_err("invalid_filter", "unterminated string literal at position 8 in $filter", 8),
        ),
        (
            format!("$orderby={}", enc("text sideways")),
            parse_err(
                "invalid_orderby",
                "expected 'asc', 'desc', ',' or end of input, found 'sideways' at position 5 in $orderby",
                5,
            ),
        ),
        (
            format!("$select={}", enc("text,,id")),
            parse_err("invalid_select", "expected a property name at position 5 in $select", 5),
        ),
        (format!("$filter={}", enc("frobnicate eq 1")), err("unknown_column", "unknown column 'frobnicate' in $filter")),
        (format!("$orderby={}", enc("nope desc")), err("unknown_column", "unknown column 'nope' in $orderby")),
        (
            format!("$filter={}", enc("year('abc') eq 1")),
            err("wrong_type", "'abc' is not a date (expected a 4-digit year) in $filter"),
        ),
    ];
    for (query, expected) in cases {
        let r = s.get(&format!("/tables/Q?{query}")).await;
        assert_eq!((r.status, r.body), (400, expected), "{query}");
    }
}

crate::store_tests!(
    every_operator_function_and_literal,
    ordering_is_requested_then_id,
    paging_follows_link_headers,
    select_and_inlinecount,
    soft_deleted_rows_only_with_include_deleted,
    query_errors_carry_codes_and_positions,
);
