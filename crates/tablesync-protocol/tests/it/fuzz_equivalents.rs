//! The in-suite stand-in for the `odata` cargo-fuzz target (`fuzz/fuzz_targets/odata.rs`; CI has
//! no nightly toolchain): whole query strings built from OData tokens, percent escapes and raw
//! bytes, generated from a fixed seed, go through everything the server does with a query
//! before SQL runs — `parse_query_string`, the shared limits, the lowering for both dialects —
//! and must never panic. Every lowered filter must also pass an oracle:
//!
//! * its placeholders are exactly `first_param ..= first_param + params - 1`;
//! * every literal of the parsed filter is a bound parameter (a string literal's text is among
//!   the parameters; there are at least as many parameters as non-null literals), so a lowering
//!   that formats a literal into the SQL text fails here;
//! * the filter prints to a string that parses back to the same tree.
//!
//! The run counts the cases that reached each stage, and asserts every stage was reached often
//! (so a generator change cannot make the property vacuous).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use tablesync_protocol::odata::ast::{Expr, Literal};
use tablesync_protocol::odata::limits::check_expressions;
use tablesync_protocol::odata::parse_filter;
use tablesync_protocol::odata::query::parse_query_string;
use tablesync_protocol::odata::sql::{
    lower_filter, lower_order_by, ColumnType, Dialect, Schema, SqlValue,
};

/// Generated query strings per run.
const CASES: u32 = 4_000;
/// The shared limit on terms the server applies by default.
const TERMS_MAX: usize = 2_000;

const TOKENS: &[&str] = &[
    "text",
    "complete",
    "id",
    "updatedAt",
    "stars",
    "due",
    "nope",
    " eq ",
    " ne ",
    " gt ",
    " ge ",
    " lt ",
    " le ",
    " and ",
    " or ",
    "not ",
    " add ",
    " sub ",
    " mul ",
    " div ",
    " mod ",
    "-",
    "(",
    ")",
    ",",
    "'",
    "''",
    "'a'",
    "'it''s'",
    "'%'",
    "'_'",
    "1",
    "0",
    "-1",
    "1.5",
    "1e308",
    "-1e308",
    "9223372036854775807",
    "1L",
    "null",
    "true",
    "false",
    "datetime'",
    "datetimeoffset'2020-01-01T00:00:00Z'",
    "datetime'2016-10-10T12:08:35Z'",
    "guid'8c48a0b1-0f0e-4d3b-9a8e-8a2f0a0b1c2d'",
    "substringof(",
    "startswith(",
    "endswith(",
    "length(",
    "indexof(",
    "substring(",
    "replace(",
    "concat(",
    "tolower(",
    "toupper(",
    "trim(",
    "year(",
    "month(",
    "day(",
    "hour(",
    "round(",
    "floor(",
    "ceiling(",
    " asc",
    " desc",
    " ",
    "%20",
    "%27",
    "%25",
    "%ZZ",
    "%00",
    "%FF",
    "\u{0}",
    "é",
    "🦀",
    "/",
    "$",
];

const OPTIONS: &[&str] = &[
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

/// A query string: 1–3 options, each a key and a value of tokens (some raw, some escaped).
fn query_string() -> impl Strategy<Value = String> {
    let value =
        prop::collection::vec(prop::sample::select(TOKENS), 0..16).prop_map(|toks| toks.concat());
    let option =
        (prop::sample::select(OPTIONS), value, any::<bool>()).prop_map(|(key, value, escape)| {
            let value = if escape {
                percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            } else {
                value.replace(['&', '#'], "")
            };
            format!("{key}={value}")
        });
    let structured = (
        filter_text(),
        prop::option::of(prop::sample::select(TOKENS)),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(f, extra, at, escape)| {
            // Sometimes one stray token somewhere: the parser's error paths near valid input.
            let mut f = f;
            if let Some(t) = extra {
                let mut at = usize::from(at) % (f.len() + 1);
                while !f.is_char_boundary(at) {
                    at -= 1;
                }
                f.insert_str(at, t);
            }
            let value = if escape {
                percent_encoding::utf8_percent_encode(&f, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            } else {
                f.replace(['&', '#', '%', '+'], "")
            };
            format!("$filter={value}&$orderby=text desc,stars")
        });
    prop_oneof![
        4 => structured,
        3 => prop::collection::vec(option, 1..4).prop_map(|o| o.join("&")),
        1 => any::<String>(),
    ]
}

/// Filters that are mostly well formed: comparisons of columns (some unknown) with literals of
/// every kind (some of the wrong type), combined with `and`/`or`/`not`, parentheses and calls.
fn filter_text() -> impl Strategy<Value = String> {
    let column = prop::sample::select(vec![
        "text",
        "complete",
        "stars",
        "due",
        "id",
        "updatedAt",
        "nope",
    ]);
    let op = prop::sample::select(vec!["eq", "ne", "gt", "ge", "lt", "le"]);
    let literal = prop::sample::select(vec![
        "'a'",
        "'it''s'",
        "'%'",
        "'_'",
        "''",
        "'x'' OR ''1''=''1'",
        "1",
        "0",
        "-1",
        "1.5",
        "1e308",
        "9223372036854775807",
        "null",
        "true",
        "false",
        "datetime'2016-10-10T12:08:35Z'",
        "datetimeoffset'2020-01-01T00:00:00.123Z'",
        "'2021-02-03T04:05:06Z'",
        "guid'8c48a0b1-0f0e-4d3b-9a8e-8a2f0a0b1c2d'",
    ]);
    let leaf = prop_oneof![
        (column.clone(), op, literal.clone()).prop_map(|(c, o, l)| format!("{c} {o} {l}")),
        (literal.clone(), literal.clone())
            .prop_map(|(a, b)| format!("startswith(text, {a}) or substringof({b}, text)")),
        literal
            .clone()
            .prop_map(|l| format!("length(concat(text, {l})) gt 2")),
        literal
            .clone()
            .prop_map(|l| format!("indexof(tolower(text), {l}) ge 0")),
        literal
            .clone()
            .prop_map(|l| format!("round(stars add {l}) lt 10")),
        literal.prop_map(|l| format!("year(due) eq {l}")),
        column.prop_map(|c| c.to_string()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.prop_map(|a| format!("(({a}))")),
        ]
    })
}

/// Columns of a todo-like table with every type.
struct Table;

impl Schema for Table {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        Some(match name {
            "text" | "id" | "version" => ColumnType::String,
            "complete" | "deleted" => ColumnType::Boolean,
            "stars" => ColumnType::Number,
            "due" | "updatedAt" | "createdAt" => ColumnType::Date,
            _ => return None,
        })
    }
}

/// Non-null literals of `e`, and its string literals.
fn literals<'a>(e: &'a Expr, count: &mut usize, strings: &mut Vec<&'a str>) {
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Literal(Literal::Null) | Expr::Member(_) => {}
            Expr::Literal(l) => {
                *count += 1;
                if let Literal::String(s) = l {
                    strings.push(s);
                }
            }
            Expr::Unary { expr, .. } => todo.push(expr),
            Expr::Binary { left, right, .. } => {
                todo.push(left);
                todo.push(right);
            }
            Expr::Call { args, .. } => todo.extend(args.iter()),
        }
    }
}

#[derive(Debug, Default)]
struct Reached {
    parsed: u32,
    with_filter: u32,
    within_limits: u32,
    lowered: u32,
}

fn check(raw: &str, reached: &mut Reached) -> Result<(), TestCaseError> {
    let Ok(q) = parse_query_string(raw) else {
        return Ok(());
    };
    reached.parsed += 1;
    if !q.order_by.is_empty()
        && check_expressions(q.order_by.iter().map(|o| &o.expr), "$orderby", TERMS_MAX).is_ok()
    {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let _ = lower_order_by(&q.order_by, &Table, d, 1);
        }
    }
    let Some(f) = &q.filter else {
        return Ok(());
    };
    reached.with_filter += 1;
    let printed = f.to_string();
    let reparsed = parse_filter(&printed);
    prop_assert_eq!(reparsed.as_ref(), Ok(f), "printed: {}", printed);
    if check_expressions([f], "$filter", TERMS_MAX).is_err() {
        return Ok(());
    }
    reached.within_limits += 1;
    let (mut count, mut strings) = (0, Vec::new());
    literals(f, &mut count, &mut strings);
    for d in [Dialect::Sqlite, Dialect::Postgres] {
        let first = 3;
        let Ok(frag) = lower_filter(f, &Table, d, first) else {
            continue;
        };
        reached.lowered += 1;
        let mark = if d == Dialect::Sqlite { '?' } else { '$' };
        for n in first..first + frag.params.len() {
            prop_assert!(
                frag.sql.contains(&format!("{mark}{n}")),
                "{d:?}: placeholder {mark}{n} missing in {}",
                frag.sql
            );
        }
        let next = first + frag.params.len();
        prop_assert!(
            !frag.sql.contains(&format!("{mark}{next}"))
                && !frag.sql.contains(&format!("{mark}{}", first - 1)),
            "{d:?}: a placeholder without a parameter in {}",
            frag.sql
        );
        prop_assert!(
            frag.params.len() >= count,
            "{d:?}: {count} literals but {} parameters: {}",
            frag.params.len(),
            frag.sql
        );
        for s in &strings {
            let bound = frag.params.iter().any(|p| match p {
                SqlValue::Text(t) => t == s,
                // A string compared with a date column binds as a timestamp.
                SqlValue::Timestamp(_) => true,
                _ => false,
            });
            prop_assert!(
                bound,
                "{d:?}: string literal {s:?} is not bound: {}",
                frag.sql
            );
        }
    }
    Ok(())
}

#[test]
fn generated_query_strings_never_panic_and_bind_every_literal() {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let reached = std::cell::RefCell::new(Reached::default());
    let result = runner.run(&query_string(), |raw| {
        check(&raw, &mut reached.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let reached = reached.into_inner();
    eprintln!("query strings: {CASES} cases run clean, {reached:?}");
    assert!(
        reached.parsed > CASES / 4
            && reached.with_filter > CASES / 10
            && reached.within_limits > CASES / 10
            && reached.lowered > CASES / 20,
        "{reached:?}"
    );
}
