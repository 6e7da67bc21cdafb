//! SQL lowering on both dialects: SQL text plus bound parameters.

use tablesync_protocol::error::ErrorCode;
use tablesync_protocol::odata::sql::{
    lower_filter, lower_order_by, quote_ident, system_column_type, ColumnType, Dialect, Schema,
    SqlValue,
};
use tablesync_protocol::odata::{parse_filter, parse_orderby};
use tablesync_protocol::time::parse_timestamp;

/// The todo table: system columns plus text, complete, price, due.
struct Todo;

impl Schema for Todo {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        match name {
            "text" => Some(ColumnType::String),
            "complete" => Some(ColumnType::Boolean),
            "price" => Some(ColumnType::Number),
            "due" => Some(ColumnType::Date),
            _ => system_column_type(name),
        }
    }
}

fn render(params: &[SqlValue]) -> String {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => "NULL".to_string(),
            SqlValue::Bool(b) => format!("bool {b}"),
            SqlValue::Int(i) => format!("int {i}"),
            SqlValue::Real(r) => format!("real {r:?}"),
            SqlValue::Text(t) => format!("text {t:?}"),
            SqlValue::Timestamp(t) => format!("ts {t}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sqlite: <sql> [params]` and `postgres: <sql> [params]`, or the lowering error.
fn both(filter: &str) -> String {
    let e = parse_filter(filter).expect("test filters parse");
    let mut out = Vec::new();
    for (name, d) in [("sqlite", Dialect::Sqlite), ("postgres", Dialect::Postgres)] {
        match lower_filter(&e, &Todo, d, 1) {
            Ok(f) => out.push(format!("{name}: {} [{}]", f.sql, render(&f.params))),
            Err(err) => out.push(format!(
                "{name}: error {}: {}",
                err.code.as_str(),
                err.message
            )),
        }
    }
    out.join("\n")
}

#[test]
fn comparisons_and_logic() {
    insta::assert_snapshot!(both("text eq 'Buy milk' and price gt 2.5"), @r#"
    sqlite: (("text" = ?1) AND ("price" > ?2)) [text "Buy milk", real 2.5]
    postgres: (("text" = $1::text) AND ("price" > $2::double precision)) [text "Buy milk", real 2.5]
    "#);
    insta::assert_snapshot!(both("price ne 1 or price le -3 or price ge 0 or price lt 9"), @r#"
        sqlite: (("price" <> ?1) OR ("price" <= ?2) OR ("price" >= ?3) OR ("price" < ?4)) [real 1.0, real -3.0, real 0.0, real 9.0]
        postgres: (("price" <> $1::double precision) OR ("price" <= $2::double precision) OR ("price" >= $3::double precision) OR ("price" < $4::double precision)) [real 1.0, real -3.0, real 0.0, real 9.0]
    "#);
    insta::assert_snapshot!(both("text eq null or null ne text"), @r#"
        sqlite: (("text" IS NULL) OR ("text" IS NOT NULL)) []
        postgres: (("text" IS NULL) OR ("text" IS NOT NULL)) []
        "#);
    insta::assert_snapshot!(both("null eq null"), @r#"
        sqlite: (NULL IS NULL) []
        postgres: (NULL IS NULL) []
        "#);
    insta::assert_snapshot!(both("complete"), @r#"
        sqlite: ("complete" = 1) []
        postgres: ("complete" = TRUE) []
        "#);
    insta::assert_snapshot!(both("not complete"), @r#"
        sqlite: (NOT ("complete" = 1)) []
        postgres: (NOT ("complete" = TRUE)) []
        "#);
    insta::assert_snapshot!(both("complete eq false and deleted ne true"), @r#"
        sqlite: (("complete" = ?1) AND ("deleted" <> ?2)) [bool false, bool true]
        postgres: (("complete" = $1::boolean) AND ("deleted" <> $2::boolean)) [bool false, bool true]
        "#);
    insta::assert_snapshot!(both("true"), @r#"
        sqlite: (?1 = 1) [bool true]
        postgres: ($1::boolean = TRUE) [bool true]
        "#);
    insta::assert_snapshot!(both("not (text eq 'a')"), @r#"
        sqlite: (NOT ("text" = ?1)) [text "a"]
        postgres: (NOT ("text" = $1::text)) [text "a"]
        "#);
}

#[test]
fn dates() {
    insta::assert_snapshot!(both("updatedAt ge datetimeoffset'2016-10-10T12:08:35.2470000+00:00'"), @r#"
        sqlite: ("updatedAt" >= ?1) [ts 2016-10-10T12:08:35.247Z]
        postgres: ("updatedAt" >= $1::timestamptz) [ts 2016-10-10T12:08:35.247Z]
        "#);
    insta::assert_snapshot!(both("due lt datetime'2016-10-10T12:08:35Z'"), @r#"
        sqlite: ("due" < ?1) [ts 2016-10-10T12:08:35.000Z]
        postgres: ("due" < $1::timestamptz) [ts 2016-10-10T12:08:35.000Z]
        "#);
    insta::assert_snapshot!(both("due gt '2016-10-10T14:00:00+02:00'"), @r#"
        sqlite: ("due" > ?1) [ts 2016-10-10T12:00:00.000Z]
        postgres: ("due" > $1::timestamptz) [ts 2016-10-10T12:00:00.000Z]
        "#);
    insta::assert_snapshot!(both("'2016-10-10T14:00:00Z' le createdAt"), @r#"
        sqlite: (?1 <= "createdAt") [ts 2016-10-10T14:00:00.000Z]
        postgres: ($1::timestamptz <= "createdAt") [ts 2016-10-10T14:00:00.000Z]
        "#);
    insta::assert_snapshot!(both("due gt 'tomorrow'"), @r#"
        sqlite: error wrong_type: 'tomorrow' is not a date (expected a 4-digit year) in $filter
        postgres: error wrong_type: 'tomorrow' is not a date (expected a 4-digit year) in $filter
        "#);
    insta::assert_snapshot!(both(
        "(updatedAt gt datetimeoffset'2020-01-01T00:00:00.000Z' or (updatedAt eq datetimeoffset'2020-01-01T00:00:00.000Z' and id gt 'x'))"
    ), @r#"
        sqlite: (("updatedAt" > ?1) OR (("updatedAt" = ?2) AND ("id" > ?3))) [ts 2020-01-01T00:00:00.000Z, ts 2020-01-01T00:00:00.000Z, text "x"]
        postgres: (("updatedAt" > $1::timestamptz) OR (("updatedAt" = $2::timestamptz) AND ("id" > $3::text))) [ts 2020-01-01T00:00:00.000Z, ts 2020-01-01T00:00:00.000Z, text "x"]
        "#);
    insta::assert_snapshot!(both("year(due) eq 2016 and month(due) eq 10 and day(due) eq 10"), @r#"
        sqlite: ((CAST(strftime('%Y', "due") AS INTEGER) = ?1) AND (CAST(strftime('%m', "due") AS INTEGER) = ?2) AND (CAST(strftime('%d', "due") AS INTEGER) = ?3)) [real 2016.0, real 10.0, real 10.0]
        postgres: ((CAST(floor(EXTRACT(YEAR FROM ("due") AT TIME ZONE 'UTC')) AS double precision) = $1::double precision) AND (CAST(floor(EXTRACT(MONTH FROM ("due") AT TIME ZONE 'UTC')) AS double precision) = $2::double precision) AND (CAST(floor(EXTRACT(DAY FROM ("due") AT TIME ZONE 'UTC')) AS double precision) = $3::double precision)) [real 2016.0, real 10.0, real 10.0]
    "#);
    insta::assert_snapshot!(both("hour(createdAt) eq 1 and minute(createdAt) eq 2 and second(createdAt) eq 3"), @r#"
        sqlite: ((CAST(strftime('%H', "createdAt") AS INTEGER) = ?1) AND (CAST(strftime('%M', "createdAt") AS INTEGER) = ?2) AND (CAST(strftime('%S', "createdAt") AS INTEGER) = ?3)) [real 1.0, real 2.0, real 3.0]
        postgres: ((CAST(floor(EXTRACT(HOUR FROM ("createdAt") AT TIME ZONE 'UTC')) AS double precision) = $1::double precision) AND (CAST(floor(EXTRACT(MINUTE FROM ("createdAt") AT TIME ZONE 'UTC')) AS double precision) = $2::double precision) AND (CAST(floor(EXTRACT(SECOND FROM ("createdAt") AT TIME ZONE 'UTC')) AS double precision) = $3::double precision)) [real 1.0, real 2.0, real 3.0]
        "#);
    insta::assert_snapshot!(both("year('2016-10-10T00:00:00Z') eq 2016"), @r#"
        sqlite: (CAST(strftime('%Y', ?1) AS INTEGER) = ?2) [ts 2016-10-10T00:00:00.000Z, real 2016.0]
        postgres: (CAST(floor(EXTRACT(YEAR FROM ($1::timestamptz) AT TIME ZONE 'UTC')) AS double precision) = $2::double precision) [ts 2016-10-10T00:00:00.000Z, real 2016.0]
        "#);
    insta::assert_snapshot!(both("year('abc') eq 2016"), @r#"
        sqlite: error wrong_type: 'abc' is not a date (expected a 4-digit year) in $filter
        postgres: error wrong_type: 'abc' is not a date (expected a 4-digit year) in $filter
        "#);
    insta::assert_snapshot!(both("year(text) eq 2016"), @r#"
        sqlite: error wrong_type: argument 1 of year() expects a date, found `text` of type string in $filter
        postgres: error wrong_type: argument 1 of year() expects a date, found `text` of type string in $filter
        "#);
}

#[test]
fn prefix_successors() {
    use tablesync_protocol::odata::sql::prefix_successor;
    assert_eq!(prefix_successor("item 1").as_deref(), Some("item 2"));
    assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(
        prefix_successor("a\u{10FFFF}\u{10FFFF}").as_deref(),
        Some("b")
    );
    assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_successor("z\u{7F}").as_deref(), Some("z\u{80}"));
    assert_eq!(prefix_successor("\u{10FFFF}"), None);
    assert_eq!(prefix_successor(""), None);
}

#[test]
fn string_functions() {
    insta::assert_snapshot!(both("substringof('milk', text)"), @r#"
        sqlite: (instr("text", ?1) > 0) [text "milk"]
        postgres: (strpos("text", $1::text) > 0) [text "milk"]
        "#);
    // A column and a literal: an index-friendly range (the successor of the last character).
    insta::assert_snapshot!(both("startswith(text, 'Buy')"), @r#"
        sqlite: ("text" >= ?1 AND "text" < ?2) [text "Buy", text "Buz"]
        postgres: ("text" >= $1::text AND "text" < $2::text) [text "Buy", text "Buz"]
        "#);
    insta::assert_snapshot!(both("startswith(text, '')"), @r#"
        sqlite: ("text" >= ?1) [text ""]
        postgres: ("text" >= $1::text) [text ""]
        "#);
    // Anything else keeps the substring test.
    insta::assert_snapshot!(both("startswith(tolower(text), 'buy')"), @r#"
        sqlite: (substr(lower("text"), 1, length(?1)) = ?1) [text "buy"]
        postgres: (left(lower("text"), length($1::text)) = $1::text) [text "buy"]
        "#);
    insta::assert_snapshot!(both("endswith(text, 'milk') eq true"), @r#"
        sqlite: ((substr("text", length("text") - length(?1) + 1) = ?1) = ?2) [text "milk", bool true]
        postgres: ((right("text", length($1::text)) = $1::text) = $2::boolean) [text "milk", bool true]
        "#);
    insta::assert_snapshot!(both("indexof(text, 'm') eq -1"), @r#"
        sqlite: ((instr("text", ?1) - 1) = ?2) [text "m", real -1.0]
        postgres: (CAST(strpos("text", $1::text) - 1 AS double precision) = $2::double precision) [text "m", real -1.0]
    "#);
    insta::assert_snapshot!(both("length(trim(text)) gt 3"), @r#"
        sqlite: (length(trim("text")) > ?1) [real 3.0]
        postgres: (CAST(length(trim("text")) AS double precision) > $1::double precision) [real 3.0]
        "#);
    insta::assert_snapshot!(both("tolower(text) eq 'x' or toupper(text) eq 'X'"), @r#"
        sqlite: ((lower("text") = ?1) OR (upper("text") = ?2)) [text "x", text "X"]
        postgres: ((lower("text") = $1::text) OR (upper("text") = $2::text)) [text "x", text "X"]
        "#);
    // A number in concat was 'a1.0' on SQLite and 'a1' on PostgreSQL: strings only now.
    insta::assert_snapshot!(both("concat(text, price) eq 'a1'"), @r#"
        sqlite: error wrong_type: argument 2 of concat() expects a string, found `price` of type number in $filter
        postgres: error wrong_type: argument 2 of concat() expects a string, found `price` of type number in $filter
        "#);
    insta::assert_snapshot!(both("concat(text, '1') eq 'a1'"), @r#"
        sqlite: (("text" || ?1) = ?2) [text "1", text "a1"]
        postgres: (("text" || $1::text) = $2::text) [text "1", text "a1"]
        "#);
    insta::assert_snapshot!(both("substring(text, 1) eq 'uy'"), @r#"
        sqlite: (substr("text", min(max(CAST(?1 AS INTEGER), 0), 1000000000) + 1) = ?2) [real 1.0, text "uy"]
        postgres: (substr("text", CAST(LEAST(GREATEST(trunc(CAST($1::double precision AS double precision)), 0), 1000000000) AS integer) + 1) = $2::text) [real 1.0, text "uy"]
        "#);
    insta::assert_snapshot!(both("substring(text, 1, 2) eq 'uy'"), @r#"
        sqlite: (substr("text", min(max(CAST(?1 AS INTEGER), 0), 1000000000) + 1, min(max(CAST(?2 AS INTEGER), 0), 1000000000)) = ?3) [real 1.0, real 2.0, text "uy"]
        postgres: (substr("text", CAST(LEAST(GREATEST(trunc(CAST($1::double precision AS double precision)), 0), 1000000000) AS integer) + 1, CAST(LEAST(GREATEST(trunc(CAST($2::double precision AS double precision)), 0), 1000000000) AS integer)) = $3::text) [real 1.0, real 2.0, text "uy"]
        "#);
    insta::assert_snapshot!(both("replace(text, 'a', 'b') eq 'x'"), @r#"
        sqlite: (replace("text", ?1, ?2) = ?3) [text "a", text "b", text "x"]
        postgres: (replace("text", $1::text, $2::text) = $3::text) [text "a", text "b", text "x"]
        "#);
    insta::assert_snapshot!(both("startswith(price, 'a')"), @r#"
        sqlite: error wrong_type: argument 1 of startswith() expects a string, found `price` of type number in $filter
        postgres: error wrong_type: argument 1 of startswith() expects a string, found `price` of type number in $filter
        "#);
}

#[test]
fn arithmetic() {
    insta::assert_snapshot!(both("price add 1 sub 2 mul 3 gt 4"), @r#"
        sqlite: ((("price" + ?1) - (?2 * ?3)) > ?4) [real 1.0, real 2.0, real 3.0, real 4.0]
        postgres: ((("price" + $1::double precision) - ($2::double precision * $3::double precision)) > $4::double precision) [real 1.0, real 2.0, real 3.0, real 4.0]
    "#);
    insta::assert_snapshot!(both("price div 2 eq 1"), @r#"
        sqlite: ((CAST("price" AS REAL) / ?1) = ?2) [real 2.0, real 1.0]
        postgres: (("price" / NULLIF($1::double precision, 0)) = $2::double precision) [real 2.0, real 1.0]
        "#);
    insta::assert_snapshot!(both("price mod 2 eq 1"), @r#"
        sqlite: (("price" - ?1 * CAST("price" / ?1 AS INTEGER)) = ?2) [real 2.0, real 1.0]
        postgres: (CAST(mod(CAST("price" AS numeric), CAST(NULLIF($1::double precision, 0) AS numeric)) AS double precision) = $2::double precision) [real 2.0, real 1.0]
        "#);
    insta::assert_snapshot!(both("-price lt 0"), @r#"
        sqlite: ((-"price") < ?1) [real 0.0]
        postgres: ((-"price") < $1::double precision) [real 0.0]
        "#);
    insta::assert_snapshot!(both("round(price) eq 3 and floor(price) eq 2 and ceiling(price) eq 3"), @r#"
        sqlite: ((round("price") = ?1) AND ((SELECT CASE WHEN abs(v) >= 4503599627370496.0 THEN v WHEN v < CAST(v AS INTEGER) THEN CAST(v AS INTEGER) - 1 ELSE CAST(v AS INTEGER) END FROM (SELECT "price" AS v)) = ?2) AND ((SELECT CASE WHEN abs(v) >= 4503599627370496.0 THEN v WHEN v > CAST(v AS INTEGER) THEN CAST(v AS INTEGER) + 1 ELSE CAST(v AS INTEGER) END FROM (SELECT "price" AS v)) = ?3)) [real 3.0, real 2.0, real 3.0]
        postgres: ((CAST(round(CAST("price" AS numeric)) AS double precision) = $1::double precision) AND (floor(CAST("price" AS double precision)) = $2::double precision) AND (ceil(CAST("price" AS double precision)) = $3::double precision)) [real 3.0, real 2.0, real 3.0]
        "#);
    insta::assert_snapshot!(both("text add 1 eq 2"), @r#"
        sqlite: error wrong_type: operator 'add' expects a number, found `text` of type string in $filter
        postgres: error wrong_type: operator 'add' expects a number, found `text` of type string in $filter
        "#);
    insta::assert_snapshot!(both("price eq 'x'"), @r#"
        sqlite: error wrong_type: cannot compare `price` (number) with `'x'` (string) in $filter
        postgres: error wrong_type: cannot compare `price` (number) with `'x'` (string) in $filter
        "#);
    insta::assert_snapshot!(both("price"), @r#"
        sqlite: error wrong_type: `price` is a number, not a condition in $filter
        postgres: error wrong_type: `price` is a number, not a condition in $filter
        "#);
    insta::assert_snapshot!(both("price gt null"), @r#"
        sqlite: error wrong_type: null can only be compared with eq or ne, found `price gt null` in $filter
        postgres: error wrong_type: null can only be compared with eq or ne, found `price gt null` in $filter
        "#);
}

#[test]
fn unknown_columns() {
    insta::assert_snapshot!(both("frobnicate eq 1"), @r#"
        sqlite: error unknown_column: unknown column 'frobnicate' in $filter
        postgres: error unknown_column: unknown column 'frobnicate' in $filter
        "#);
    insta::assert_snapshot!(both("text/length eq 1"), @r#"
        sqlite: error unknown_column: member paths like 'text/length' are not supported (unknown column) in $filter
        postgres: error unknown_column: member paths like 'text/length' are not supported (unknown column) in $filter
        "#);
    let e = parse_filter("frobnicate eq 1").unwrap();
    let err = lower_filter(&e, &Todo, Dialect::Sqlite, 1).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownColumn);
    assert_eq!(err.message, "unknown column 'frobnicate' in $filter");
    assert_eq!(err.to_string(), "unknown column 'frobnicate' in $filter");
}

#[test]
fn placeholders_start_at_first_param() {
    let e = parse_filter("text eq 'a' and price eq 2").unwrap();
    let f = lower_filter(&e, &Todo, Dialect::Sqlite, 3).unwrap();
    assert_eq!(f.sql, r#"(("text" = ?3) AND ("price" = ?4))"#);
    let f = lower_filter(&e, &Todo, Dialect::Postgres, 3).unwrap();
    assert_eq!(
        f.sql,
        r#"(("text" = $3::text) AND ("price" = $4::double precision))"#
    );
    assert_eq!(
        f.params,
        vec![SqlValue::Text("a".into()), SqlValue::Real(2.0)]
    );
}

#[test]
fn order_by() {
    let show = |s: &str, d: Dialect| {
        let o = parse_orderby(s).unwrap();
        match lower_order_by(&o, &Todo, d, 1) {
            Ok(f) => format!("{} [{}]", f.sql, render(&f.params)),
            Err(e) => format!("error {}: {}", e.code.as_str(), e.message),
        }
    };
    assert_eq!(
        show("text,id", Dialect::Sqlite),
        r#""text" ASC, "id" ASC []"#
    );
    assert_eq!(
        show("updatedAt desc,id", Dialect::Postgres),
        r#""updatedAt" DESC NULLS LAST, "id" ASC NULLS FIRST []"#
    );
    assert_eq!(
        show("length(text) desc", Dialect::Sqlite),
        r#"length("text") DESC []"#
    );
    assert_eq!(
        show("price add 1", Dialect::Postgres),
        r#"("price" + $1::double precision) ASC NULLS FIRST [real 1.0]"#
    );
    assert_eq!(
        show("nope", Dialect::Sqlite),
        "error unknown_column: unknown column 'nope' in $orderby"
    );
    // PostgreSQL refuses a bare constant in ORDER BY ("non-integer constant"); a typed NULL
    // sorts every row equally on both stores.
    assert_eq!(
        show("null desc", Dialect::Postgres),
        r#"CAST(NULL AS TEXT) DESC NULLS LAST []"#
    );
    assert_eq!(
        show("null", Dialect::Sqlite),
        r#"CAST(NULL AS TEXT) ASC []"#
    );
    let empty = lower_order_by(&[], &Todo, Dialect::Sqlite, 1).unwrap();
    assert_eq!(empty.sql, "");
}

#[test]
fn schema_impls_and_quoting() {
    let map: std::collections::HashMap<String, ColumnType> =
        [("a".to_string(), ColumnType::Number)]
            .into_iter()
            .collect();
    let e = parse_filter("a eq 1").unwrap();
    assert!(lower_filter(&e, &map, Dialect::Sqlite, 1).is_ok());
    assert!(lower_filter(&e, &[("a", ColumnType::Number)], Dialect::Sqlite, 1).is_ok());
    let v = vec![("a".to_string(), ColumnType::Number)];
    assert!(lower_filter(&e, &v, Dialect::Sqlite, 1).is_ok());
    assert!(lower_filter(&e, &[("b", ColumnType::Number)], Dialect::Sqlite, 1).is_err());
    assert_eq!(quote_ident("text"), r#""text""#);
    assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    assert_eq!(system_column_type("updatedAt"), Some(ColumnType::Date));
    assert_eq!(system_column_type("text"), None);
    // Timestamps are bound as values, normalised to UTC milliseconds.
    let e = parse_filter("updatedAt eq datetimeoffset'2016-10-10T14:08:35.2479+02:00'").unwrap();
    let f = lower_filter(&e, &Todo, Dialect::Sqlite, 1).unwrap();
    assert_eq!(
        f.params,
        vec![SqlValue::Timestamp(
            parse_timestamp("2016-10-10T12:08:35.247Z").unwrap()
        )]
    );
}

/// Each function names its argument once: nested calls grow the SQL linearly, not by a factor
/// per level (SQLite's floor once pasted its argument five times, 5^n bytes for n levels).
#[test]
fn nested_functions_grow_linearly() {
    for d in [Dialect::Sqlite, Dialect::Postgres] {
        let nested = |n: usize| {
            let f = format!("{}price{} gt 0", "floor(ceiling(".repeat(n), "))".repeat(n));
            lower_filter(&parse_filter(&f).unwrap(), &Todo, d, 1)
                .unwrap()
                .sql
                .len()
        };
        let (ten, twenty) = (nested(10), nested(20));
        assert!(twenty < 3 * ten, "{d:?}: {ten} then {twenty} bytes");
    }
}
