//! One answer on both stores: inputs that once got a different answer on SQLite and on
//! PostgreSQL (issue 11, defects 1 and 5). Each test runs on both stores and asserts the whole
//! answer, so the two runs agree by construction.

use serde_json::json;
use tablesync_server::Config;

use crate::{err, StoreKind, TestServer};

const NOTE: &str =
    "[[tables]]\nname = \"Note\"\ndynamic_schema = true\ncolumns = { text = \"string\" }";

/// PostgreSQL's system columns and SQLite's row-id names cannot become dynamic columns: 400
/// `unknown_column` on both stores (PostgreSQL used to answer 500, SQLite 201), nothing added.
async fn system_column_names_are_refused_as_dynamic_columns(kind: StoreKind) {
    let s = TestServer::with_toml(kind, NOTE).await;
    for name in [
        "xmin", "xmax", "cmin", "cmax", "ctid", "tableoid", "oid", "rowid", "_rowid_", "XMIN",
    ] {
        let r = s.post("/tables/Note", json!({ "id": "n", name: 1 })).await;
        assert_eq!(
            (r.status, r.body),
            (
                400,
                err(
                    "unknown_column",
                    &format!("The property '{name}' cannot become a column: the databases reserve the names tableoid, xmin, cmin, xmax, cmax, ctid, oid, rowid, _rowid_")
                )
            ),
            "{name}"
        );
    }
    // Nothing was written, and an ordinary new column still works.
    assert_eq!(s.get("/tables/Note/n").await.status, 404);
    let r = s.post("/tables/Note", json!({"id": "n", "xmin2": 1})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // At config load the same names are refused, whatever the store.
    let err = Config::from_toml_str("[[tables]]\nname = \"Note\"\ncolumns = { ctid = \"string\" }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column 'ctid' is a name the databases reserve"),
        "{err}"
    );
}

crate::store_tests!(system_column_names_are_refused_as_dynamic_columns);

const PRICED: &str = "[limits]\nfilter_bytes_max = 65536\n[[tables]]\nname = \"Item\"\ncolumns = { text = \"string\", price = \"number\" }";

/// The answer to one `$filter` as both stores must give it: the status and, for a list, the
/// ids in order, else the whole error body.
async fn answer(s: &TestServer, filter: &str) -> (u16, serde_json::Value) {
    let encoded: String =
        percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let r = s
        .get(&format!("/tables/Item?$orderby=id&$filter={encoded}"))
        .await;
    if r.status == 200 {
        (200, json!(crate::ids(&r.body)))
    } else {
        (r.status, r.body)
    }
}

/// The same filters on both stores, answers compared; each defect-5 filter also has its
/// expected answer, because both stores refusing it the same wrong way would agree too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_filter_one_answer_on_both_stores() {
    let sqlite = TestServer::with_toml(StoreKind::Sqlite, PRICED).await;
    let postgres = TestServer::with_toml(StoreKind::Postgres, PRICED).await;
    for s in [&sqlite, &postgres] {
        for (id, text, price) in [("a", "x", 1.0), ("b", "y", 2.5), ("c", "x1", -3.5)] {
            let r = s
                .post(
                    "/tables/Item",
                    json!({"id": id, "text": text, "price": price}),
                )
                .await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
    }
    let chain = |n: usize| vec!["true"; n].join(" or ");
    // Alternating `or`/`and` chains of 32 terms, each the first operand of the next.
    let nested_chains = |levels: usize| {
        (0..levels).fold("true".to_owned(), |f, level| {
            let op = if level % 2 == 0 { " or " } else { " and " };
            format!("({f}){}", op.to_owned() + &vec!["true"; 31].join(op))
        })
    };
    let deep = format!(
        "{}{}{}",
        "not (not (".repeat(10),
        chain(500),
        "))".repeat(10)
    );
    let expected: Vec<(String, u16, serde_json::Value)> = vec![
        // SQLite refused a 1000-term chain as too complex; PostgreSQL served it.
        (chain(1000), 200, json!(["a", "b", "c"])),
        (chain(2000), 200, json!(["a", "b", "c"])),
        (chain(2001), 400, err("invalid_filter", "the expression has more than 2000 terms (literals and property names) in $filter")),
        (nested_chains(20), 400, err("invalid_filter", "the expression is nested too deeply for the database (estimated depth 801, at most 800) in $filter")),
        (nested_chains(12), 200, json!(["a", "b", "c"])),
        (deep, 200, json!(["a", "b", "c"])),
        // SQLite computed infinity; PostgreSQL raised an overflow error.
        ("round(1e308 mul 10) gt 0".into(), 400, err("invalid_filter", "`1e308 mul 10` is beyond the range of a double (about ±1.8e308) in $filter")),
        // PostgreSQL cannot bind a NUL; SQLite compared it.
        ("text eq 'a\u{0}b'".into(), 400, err("invalid_filter", "a string literal contains a NUL character (U+0000), which no stored string can contain in $filter")),
        // 'x1.0' on SQLite, 'x1' on PostgreSQL.
        ("concat(text, price) eq 'x1'".into(), 400, err("wrong_type", "argument 2 of concat() expects a string, found `price` of type number in $filter")),
        ("concat(text, '1') eq 'x1'".into(), 200, json!(["a"])),
    ];
    let more = [
        "floor(price) eq -4",
        "ceiling(price) eq 3",
        "round(price) eq -4",
        "floor(floor(floor(floor(floor(floor(price)))))) eq 1",
        "price div 0 eq null",
        "price mod 2 eq 0.5",
        "1e308 mul 1 gt price",
        "substring(text, 1) eq '1'",
        "length(concat(text, text)) eq 4",
        "price mul 1e300 gt 0",
    ];
    for (filter, status, body) in &expected {
        for s in [&sqlite, &postgres] {
            assert_eq!(
                answer(s, filter).await,
                (*status, body.clone()),
                "{:?} {filter:.60}",
                s.kind
            );
        }
    }
    for filter in more {
        let (a, b) = (
            answer(&sqlite, filter).await,
            answer(&postgres, filter).await,
        );
        assert_eq!(a, b, "{filter}");
        assert_eq!(a.0, 200, "{filter}: {a:?}");
    }
}
