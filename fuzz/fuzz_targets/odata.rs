//! Fuzz target: any bytes as a request's query string, through everything the server does with
//! a query before SQL runs (parse, the shared limits, lowering for both dialects). Nothing may
//! panic; a lowered filter's placeholders must match its parameters and every string literal
//! must be bound, and a parsed filter must print to text that parses back to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tablesync_protocol::odata::ast::{Expr, Literal};
use tablesync_protocol::odata::limits::check_expressions;
use tablesync_protocol::odata::parse_filter;
use tablesync_protocol::odata::query::parse_query_string;
use tablesync_protocol::odata::sql::{lower_filter, lower_order_by, ColumnType, Dialect, SqlValue};

/// The server's default `filter_terms_max`.
const TERMS_MAX: usize = 2_000;

fn schema() -> Vec<(String, ColumnType)> {
    [
        ("id", ColumnType::String),
        ("text", ColumnType::String),
        ("complete", ColumnType::Boolean),
        ("stars", ColumnType::Number),
        ("due", ColumnType::Date),
        ("updatedAt", ColumnType::Date),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t))
    .collect()
}

fn string_literals(e: &Expr, out: &mut Vec<String>) {
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Literal(Literal::String(s)) => out.push(s.clone()),
            Expr::Literal(_) | Expr::Member(_) => {}
            Expr::Unary { expr, .. } => todo.push(expr),
            Expr::Binary { left, right, .. } => todo.extend([&**left, &**right]),
            Expr::Call { args, .. } => todo.extend(args.iter()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = parse_query_string(raw) else {
        return;
    };
    let schema = schema();
    if check_expressions(q.order_by.iter().map(|o| &o.expr), "$orderby", TERMS_MAX).is_ok() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let _ = lower_order_by(&q.order_by, &schema, d, 1);
        }
    }
    let Some(f) = q.filter else { return };
    assert_eq!(parse_filter(&f.to_string()).as_ref(), Ok(&f));
    if check_expressions([&f], "$filter", TERMS_MAX).is_err() {
        return;
    }
    let mut strings = Vec::new();
    string_literals(&f, &mut strings);
    for d in [Dialect::Sqlite, Dialect::Postgres] {
        let Ok(frag) = lower_filter(&f, &schema, d, 1) else {
            continue;
        };
        let mark = if d == Dialect::Sqlite { '?' } else { '$' };
        for n in 1..=frag.params.len() {
            assert!(frag.sql.contains(&format!("{mark}{n}")), "{}", frag.sql);
        }
        assert!(!frag.sql.contains(&format!("{mark}{}", frag.params.len() + 1)));
        for s in &strings {
            assert!(
                frag.params.iter().any(|p| match p {
                    SqlValue::Text(t) => t == s,
                    SqlValue::Timestamp(_) => true,
                    _ => false,
                }),
                "string literal {s:?} not bound: {}",
                frag.sql
            );
        }
    }
});
