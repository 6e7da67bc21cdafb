//! Query-string parsing and printing.

use tablesync_protocol::error::ErrorCode;
use tablesync_protocol::odata::query::{parse_query_string, QueryError, TableQuery};
use tablesync_protocol::odata::{parse_filter, parse_orderby};

fn err(raw: &str) -> QueryError {
    parse_query_string(raw).expect_err(raw)
}

#[test]
fn parses_all_options() {
    let q = parse_query_string(
        "$filter=(complete%20eq%20false)&$orderby=createdAt+desc&$skip=20&$top=10&$select=text,complete&$inlinecount=allpages&__includeDeleted=true&ZUMO-API-VERSION=2.0.0&__systemProperties=*",
    )
    .unwrap();
    assert_eq!(q.filter, Some(parse_filter("complete eq false").unwrap()));
    assert_eq!(q.order_by, parse_orderby("createdAt desc").unwrap());
    assert_eq!(q.skip, Some(20));
    assert_eq!(q.top, Some(10));
    assert_eq!(
        q.select,
        Some(vec!["text".to_string(), "complete".to_string()])
    );
    assert!(q.inline_count);
    assert!(q.include_deleted);
    assert_eq!(
        q.extra,
        vec![
            ("ZUMO-API-VERSION".to_string(), "2.0.0".to_string()),
            ("__systemProperties".to_string(), "*".to_string())
        ]
    );
    assert_eq!(q.extra_value("zumo-api-version"), Some("2.0.0"));
}

#[test]
fn percent_decoding_and_plus() {
    // The .NET client's pull: quotes, colons and the plus of the offset percent-encoded.
    let q = parse_query_string(
        "$filter=(updatedAt%20ge%20datetimeoffset'2016-10-10T12%3A08%3A35.2470000%2B00%3A00')&$orderby=updatedAt&$skip=0&$top=50&__includeDeleted=true",
    )
    .unwrap();
    assert_eq!(
        q.filter.unwrap().to_string(),
        "updatedAt ge datetimeoffset'2016-10-10T12:08:35.247Z'"
    );
    // `+` is a space; `%2B` is a plus; `%26` is an ampersand inside a value.
    let q = parse_query_string("$filter=text+eq+'a%2Bb%26c'").unwrap();
    assert_eq!(q.filter.unwrap().to_string(), "text eq 'a+b&c'");
    // Node's broken next links percent-encode the `$`.
    let q = parse_query_string("%24top=2&%24skip=2").unwrap();
    assert_eq!((q.top, q.skip), (Some(2), Some(2)));
    // Empty pairs and empty values are ignored; a key without `=` is an extra with "".
    let q = parse_query_string("&&$top=&flag").unwrap();
    assert_eq!(q.top, None);
    assert_eq!(q.extra, vec![("flag".to_string(), String::new())]);
    assert_eq!(parse_query_string("").unwrap(), TableQuery::default());
}

#[test]
fn include_deleted_and_inlinecount() {
    assert!(
        parse_query_string("__INCLUDEDELETED=TRUE")
            .unwrap()
            .include_deleted
    );
    assert!(
        !parse_query_string("__includeDeleted=False")
            .unwrap()
            .include_deleted
    );
    assert!(
        !parse_query_string("$inlinecount=none")
            .unwrap()
            .inline_count
    );
    let e = err("__includeDeleted=yes");
    assert_eq!(e.code, ErrorCode::InvalidQueryOption);
    assert_eq!(
        e.message,
        "__includeDeleted must be 'true' or 'false', found 'yes'"
    );
    let e = err("$inlinecount=some");
    assert_eq!(
        e.message,
        "$inlinecount must be 'allpages' or 'none', found 'some'"
    );
}

#[test]
fn errors_with_code_and_position() {
    let e = err("$filter=text%20eq");
    assert_eq!(
        e,
        QueryError {
            code: ErrorCode::InvalidFilter,
            message: "expected an expression, found end of input at position 7 in $filter".into(),
            position: Some(7),
        }
    );
    let e = err("$orderby=text%20sideways");
    assert_eq!(e.code, ErrorCode::InvalidOrderBy);
    assert_eq!(e.position, Some(5));
    assert_eq!(
        e.message,
        "expected 'asc', 'desc', ',' or end of input, found 'sideways' at position 5 in $orderby"
    );
    let e = err("$select=a,,b");
    assert_eq!((e.code, e.position), (ErrorCode::InvalidSelect, Some(2)));
    for (raw, msg) in [
        ("$top=-1", "$top must be a non-negative integer, found '-1'"),
        ("$top=+1", "$top must be a non-negative integer, found ' 1'"),
        (
            "$skip=abc",
            "$skip must be a non-negative integer, found 'abc'",
        ),
        (
            "$top=99999999999999999999",
            "$top is too large: '99999999999999999999'",
        ),
        ("$top=1&$top=2", "query option $top is given more than once"),
        (
            "__includeDeleted=true&__INCLUDEDELETED=true",
            "query option __includeDeleted is given more than once",
        ),
        (
            "$filter=%FF",
            "query parameter '%FF' is not valid UTF-8 after percent-decoding",
        ),
    ] {
        let e = err(raw);
        assert_eq!(
            (e.code, e.message.as_str(), e.position),
            (ErrorCode::InvalidQueryOption, msg, None),
            "{raw}"
        );
    }
    // Option names are case-sensitive: `$Filter` is passed through, not parsed.
    let q = parse_query_string("$Filter=garbage(").unwrap();
    assert_eq!(q.filter, None);
    assert_eq!(
        q.extra,
        vec![("$Filter".to_string(), "garbage(".to_string())]
    );
}

#[test]
fn to_query_string_is_canonical_and_round_trips() {
    let q = parse_query_string(
        "ZUMO-API-VERSION=2.0.0&__includeDeleted=TRUE&$top=50&$orderby=updatedAt,id&$filter=(text eq 'it''s a+b %25 & c') and (updatedAt gt datetimeoffset'2020-01-01T00:00:00.000Z' or (updatedAt eq datetimeoffset'2020-01-01T00:00:00.000Z' and id gt 'x'))&$skip=0&$select=id,text&$inlinecount=allpages"
            .replace("+b", "%2Bb")
            .replace("& c", "%26 c")
            .replace(' ', "%20")
            .as_str(),
    )
    .unwrap();
    let s = q.to_query_string();
    assert_eq!(
        s,
        "$filter=text%20eq%20%27it%27%27s%20a%2Bb%20%25%20%26%20c%27%20and%20(updatedAt%20gt%20datetimeoffset%272020-01-01T00:00:00.000Z%27%20or%20updatedAt%20eq%20datetimeoffset%272020-01-01T00:00:00.000Z%27%20and%20id%20gt%20%27x%27)\
&$orderby=updatedAt%20asc,id%20asc&$skip=0&$top=50&$select=id,text&$inlinecount=allpages&__includeDeleted=true&ZUMO-API-VERSION=2.0.0"
    );
    assert_eq!(parse_query_string(&s).unwrap(), q);
    assert_eq!(TableQuery::default().to_query_string(), "");
}

proptest::proptest! {
    /// Any values survive printing and parsing: encoding covers `&`, `=`, `+`, `%`, quotes and
    /// non-ASCII text in extras, string literals and counts.
    #[test]
    fn query_string_round_trip(
        text in ".{0,12}",
        skip in proptest::option::of(0u64..u64::MAX),
        top in proptest::option::of(0u64..2000),
        inline_count in proptest::bool::ANY,
        include_deleted in proptest::bool::ANY,
        extra in proptest::collection::vec(("[^$_].{0,6}", ".{0,6}"), 0..3),
    ) {
        let filter = tablesync_protocol::odata::Expr::binary(
            tablesync_protocol::odata::BinaryOp::Eq,
            tablesync_protocol::odata::Expr::member("text"),
            tablesync_protocol::odata::Literal::String(text).into(),
        );
        let q = TableQuery {
            filter: Some(filter),
            order_by: parse_orderby("updatedAt desc,id").unwrap(),
            skip,
            top,
            select: Some(vec!["id".into(), "text".into()]),
            inline_count,
            include_deleted,
            extra,
        };
        let s = q.to_query_string();
        proptest::prop_assert_eq!(parse_query_string(&s), Ok(q), "{}", s);
    }
}
