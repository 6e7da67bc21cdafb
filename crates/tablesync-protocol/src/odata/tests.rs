//! Parser snapshot tests (one `check!` helper over a wide table of inputs) and the round-trip
//! property tests.

use proptest::prelude::*;

use super::*;
use crate::time::Timestamp;

/// A fully parenthesised prefix rendering of the tree, so precedence is visible in snapshots.
fn sexpr(e: &Expr) -> String {
    match e {
        Expr::Literal(l) => match l {
            Literal::Int(i) => format!("{i}i"),
            Literal::Number(n) => format!("{n:?}f"),
            l => l.to_string(),
        },
        Expr::Member(m) => format!("${m}"),
        Expr::Unary { op, expr } => {
            let name = match op {
                UnaryOp::Not => "not",
                UnaryOp::Negate => "neg",
            };
            format!("({name} {})", sexpr(expr))
        }
        Expr::Binary { op, left, right } => {
            format!("({} {} {})", op.keyword(), sexpr(left), sexpr(right))
        }
        Expr::Call { func, args } => {
            let args: Vec<String> = args.iter().map(sexpr).collect();
            format!("({}() {})", func.name(), args.join(" "))
        }
    }
}

/// `tree` then `print: <canonical form>` for a good filter (after checking that the canonical
/// form parses back to the same tree); the message and the caret display for a bad one.
fn parse_render(input: &str) -> String {
    match parse_filter(input) {
        Ok(e) => {
            let printed = e.to_string();
            assert_eq!(
                parse_filter(&printed).as_ref(),
                Ok(&e),
                "reparse of {printed}"
            );
            format!("{}\nprint: {printed}", sexpr(&e))
        }
        Err(err) => format!("error: {err}\n{}", err.render(input)),
    }
}

/// The one helper: parse `$input` as a `$filter` and compare with the inline snapshot.
macro_rules! check {
    ($input:expr, @$snap:literal) => {
        insta::assert_snapshot!(parse_render($input), @$snap)
    };
}

#[test]
fn literals() {
    check!("null", @r#"
        null
        print: null
        "#);
    check!("true", @r#"
        true
        print: true
        "#);
    check!("false", @r#"
        false
        print: false
        "#);
    check!("42", @r#"
        42i
        print: 42
        "#);
    check!("-42", @r#"
        -42i
        print: -42
        "#);
    check!("42L", @r#"
        42i
        print: 42
        "#);
    check!("9223372036854775807", @r#"
        9223372036854775807i
        print: 9223372036854775807
        "#);
    check!("-9223372036854775808", @r#"
        -9223372036854775808i
        print: -9223372036854775808
        "#);
    check!("9223372036854775808", @r#"
        9.223372036854776e18f
        print: 9.223372036854776e18
        "#);
    check!("1.5", @r#"
        1.5f
        print: 1.5
        "#);
    check!("-0.25", @r#"
        -0.25f
        print: -0.25
        "#);
    check!("1e3", @r#"
        1000.0f
        print: 1000.0
        "#);
    check!("2.5E-3", @r#"
        0.0025f
        print: 0.0025
        "#);
    check!("1.5f", @r#"
        1.5f
        print: 1.5
        "#);
    check!("3m", @r#"
        3.0f
        print: 3.0
        "#);
    check!("0.1d", @r#"
        0.1f
        print: 0.1
        "#);
    check!("'O''Neil'", @r#"
        'O''Neil'
        print: 'O''Neil'
        "#);
    check!("''", @r#"
        ''
        print: ''
        "#);
    check!("'ünï ☃'", @r#"
        'ünï ☃'
        print: 'ünï ☃'
        "#);
    check!("datetime'2016-10-10T12:08:35.247Z'", @r#"
        datetime'2016-10-10T12:08:35.247Z'
        print: datetime'2016-10-10T12:08:35.247Z'
        "#);
    check!("datetime'2016-10-10T12:08:35'", @r#"
        datetime'2016-10-10T12:08:35.000Z'
        print: datetime'2016-10-10T12:08:35.000Z'
        "#);
    check!("datetimeoffset'2016-10-10T12:08:35.2470000+00:00'", @r#"
        datetimeoffset'2016-10-10T12:08:35.247Z'
        print: datetimeoffset'2016-10-10T12:08:35.247Z'
        "#);
    check!("datetimeoffset'2016-10-10T14:08:35.2479999+02:00'", @r#"
        datetimeoffset'2016-10-10T12:08:35.247Z'
        print: datetimeoffset'2016-10-10T12:08:35.247Z'
        "#);
    check!("guid'0f8fad5b-d9cb-469f-a165-70867728950e'", @r#"
        guid'0f8fad5b-d9cb-469f-a165-70867728950e'
        print: guid'0f8fad5b-d9cb-469f-a165-70867728950e'
        "#);
}

#[test]
fn operators_and_precedence() {
    check!("a eq 1", @r#"
        (eq $a 1i)
        print: a eq 1
        "#);
    check!("a ne 'x'", @r#"
        (ne $a 'x')
        print: a ne 'x'
        "#);
    check!("a gt 1 and a ge 2 and a lt 3 and a le 4", @r#"
        (and (and (and (gt $a 1i) (ge $a 2i)) (lt $a 3i)) (le $a 4i))
        print: a gt 1 and a ge 2 and a lt 3 and a le 4
        "#);
    check!("a or b and c", @r#"
        (or $a (and $b $c))
        print: a or b and c
        "#);
    check!("(a or b) and c", @r#"
        (and (or $a $b) $c)
        print: (a or b) and c
        "#);
    check!("a eq 1 or b eq 2 and c eq 3", @r#"
        (or (eq $a 1i) (and (eq $b 2i) (eq $c 3i)))
        print: a eq 1 or b eq 2 and c eq 3
        "#);
    check!("a add b mul c", @r#"
        (add $a (mul $b $c))
        print: a add b mul c
        "#);
    check!("(a add b) mul c", @r#"
        (mul (add $a $b) $c)
        print: (a add b) mul c
        "#);
    check!("a sub b sub c", @r#"
        (sub (sub $a $b) $c)
        print: a sub b sub c
        "#);
    check!("a sub (b sub c)", @r#"
        (sub $a (sub $b $c))
        print: a sub (b sub c)
        "#);
    check!("a div b mod c", @r#"
        (mod (div $a $b) $c)
        print: a div b mod c
        "#);
    check!("a mul (b div c)", @r#"
        (mul $a (div $b $c))
        print: a mul (b div c)
        "#);
    check!("a add 1 gt b sub 2", @r#"
        (gt (add $a 1i) (sub $b 2i))
        print: a add 1 gt b sub 2
        "#);
    check!("a eq b eq c", @r#"
        (eq (eq $a $b) $c)
        print: a eq b eq c
        "#);
    check!("not a eq b", @r#"
        (eq (not $a) $b)
        print: not a eq b
        "#);
    check!("not (a eq b)", @r#"
        (not (eq $a $b))
        print: not(a eq b)
        "#);
    check!("not(a eq b)", @r#"
        (not (eq $a $b))
        print: not(a eq b)
        "#);
    check!("not not complete", @r#"
        (not (not $complete))
        print: not not complete
        "#);
    check!("-a add b", @r#"
        (add (neg $a) $b)
        print: -a add b
        "#);
    check!("-(a add b)", @r#"
        (neg (add $a $b))
        print: -(a add b)
        "#);
    check!("- 5", @r#"
        (neg 5i)
        print: -(5)
        "#);
    check!("-(5)", @r#"
        (neg 5i)
        print: -(5)
        "#);
    check!("--a", @r#"
        (neg (neg $a))
        print: --a
        "#);
    check!("a sub-1", @r#"
        (sub $a -1i)
        print: a sub -1
        "#);
    check!("a sub -1", @r#"
        (sub $a -1i)
        print: a sub -1
        "#);
    check!("price mul-1 eq x", @r#"
        (eq (mul $price -1i) $x)
        print: price mul -1 eq x
        "#);
    check!("my-col eq 1", @r#"
        (eq $my-col 1i)
        print: my-col eq 1
        "#);
    check!("a/b eq 1", @r#"
        (eq $a/b 1i)
        print: a/b eq 1
        "#);
    check!("@p eq _x1", @r#"
        (eq $@p $_x1)
        print: @p eq _x1
        "#);
    check!("  a   eq\t1  ", @r#"
        (eq $a 1i)
        print: a eq 1
        "#);
    check!("((((a))))", @r#"
        $a
        print: a
        "#);
}

#[test]
fn functions() {
    check!("substringof('milk', text)", @r#"
        (substringof() 'milk' $text)
        print: substringof('milk', text)
        "#);
    check!("startswith(text, 'Buy')", @r#"
        (startswith() $text 'Buy')
        print: startswith(text, 'Buy')
        "#);
    check!("endswith(text, 'milk') eq true", @r#"
        (eq (endswith() $text 'milk') true)
        print: endswith(text, 'milk') eq true
        "#);
    check!("indexof(text, 'm') eq -1", @r#"
        (eq (indexof() $text 'm') -1i)
        print: indexof(text, 'm') eq -1
        "#);
    check!("length(text) gt 3", @r#"
        (gt (length() $text) 3i)
        print: length(text) gt 3
        "#);
    check!("tolower(text) eq 'x'", @r#"
        (eq (tolower() $text) 'x')
        print: tolower(text) eq 'x'
        "#);
    check!("toupper(text) eq 'X'", @r#"
        (eq (toupper() $text) 'X')
        print: toupper(text) eq 'X'
        "#);
    check!("trim(text) eq 'x'", @r#"
        (eq (trim() $text) 'x')
        print: trim(text) eq 'x'
        "#);
    check!("concat(concat(a, ' '), b) eq 'x y'", @r#"
        (eq (concat() (concat() $a ' ') $b) 'x y')
        print: concat(concat(a, ' '), b) eq 'x y'
        "#);
    check!("substring(text, 1) eq 'uy'", @r#"
        (eq (substring() $text 1i) 'uy')
        print: substring(text, 1) eq 'uy'
        "#);
    check!("substring(text, 1, 2) eq 'uy'", @r#"
        (eq (substring() $text 1i 2i) 'uy')
        print: substring(text, 1, 2) eq 'uy'
        "#);
    check!("replace(text, 'a', 'b') eq 'x'", @r#"
        (eq (replace() $text 'a' 'b') 'x')
        print: replace(text, 'a', 'b') eq 'x'
        "#);
    check!("year(createdAt) eq 2016 and month(createdAt) eq 10 and day(createdAt) eq 10", @r#"
        (and (and (eq (year() $createdAt) 2016i) (eq (month() $createdAt) 10i)) (eq (day() $createdAt) 10i))
        print: year(createdAt) eq 2016 and month(createdAt) eq 10 and day(createdAt) eq 10
        "#);
    check!("hour(d) eq 1 or minute(d) eq 2 or second(d) eq 3", @r#"
        (or (or (eq (hour() $d) 1i) (eq (minute() $d) 2i)) (eq (second() $d) 3i))
        print: hour(d) eq 1 or minute(d) eq 2 or second(d) eq 3
        "#);
    check!("round(p) eq 2 and floor(p) eq 1 and ceiling(p) eq 2", @r#"
        (and (and (eq (round() $p) 2i) (eq (floor() $p) 1i)) (eq (ceiling() $p) 2i))
        print: round(p) eq 2 and floor(p) eq 1 and ceiling(p) eq 2
        "#);
    check!("length (text) eq 1", @r#"
        (eq (length() $text) 1i)
        print: length(text) eq 1
        "#);
    check!("year eq 1", @r#"
        (eq $year 1i)
        print: year eq 1
        "#);
}

#[test]
fn errors() {
    check!("", @r#"
        error: expected an expression, found end of input at position 0

        ^
        "#);
    check!("text eq", @r#"
        error: expected an expression, found end of input at position 7
        text eq
               ^
        "#);
    check!("text eq 'abc", @r#"
        error: unterminated string literal at position 8
        text eq 'abc
                ^^^^
        "#);
    check!("frobnicate(x)", @r#"
        error: unknown function 'frobnicate' at position 0
        frobnicate(x)
        ^^^^^^^^^^
        "#);
    check!("Year(createdAt) eq 1", @r#"
        error: unknown function 'Year' at position 0
        Year(createdAt) eq 1
        ^^^^
        "#);
    check!("substring(text)", @r#"
        error: function 'substring' takes 2 or 3 arguments, found 1 at position 0
        substring(text)
        ^^^^^^^^^^^^^^^
        "#);
    check!("length(a, b)", @r#"
        error: function 'length' takes 1 argument, found 2 at position 0
        length(a, b)
        ^^^^^^^^^^^^
        "#);
    check!("startswith(text 'a')", @r#"
        error: expected ',' or ')', found 'a' at position 16
        startswith(text 'a')
                        ^^^
        "#);
    check!("(a eq 1", @r#"
        error: expected ')' or an operator, found end of input at position 7
        (a eq 1
               ^
        "#);
    check!("a eq 1)", @r#"
        error: expected an operator or end of input, found ')' at position 6
        a eq 1)
              ^
        "#);
    check!("a = 1", @r#"
        error: unexpected character '=' at position 2
        a = 1
          ^
        "#);
    check!("a EQ 1", @r#"
        error: expected an operator or end of input, found 'EQ' at position 2
        a EQ 1
          ^^
        "#);
    check!("eq eq 1", @r#"
        error: expected an expression, found the operator 'eq' at position 0
        eq eq 1
        ^^
        "#);
    check!("a eq 1 b", @r#"
        error: expected an operator or end of input, found 'b' at position 7
        a eq 1 b
               ^
        "#);
    check!("1.", @r#"
        error: expected a digit after '.' at position 0
        1.
        ^^
        "#);
    check!("1e", @r#"
        error: expected a digit in the exponent at position 0
        1e
        ^^
        "#);
    check!("12abc", @r#"
        error: invalid number literal at position 0
        12abc
        ^^^
        "#);
    check!("1.5L", @r#"
        error: the L suffix needs an integer at position 0
        1.5L
        ^^^^
        "#);
    check!("99999999999999999999L", @r#"
        error: integer literal out of range for a 64-bit integer at position 0
        99999999999999999999L
        ^^^^^^^^^^^^^^^^^^^^^
        "#);
    check!("1e999", @r#"
        error: number literal out of range at position 0
        1e999
        ^^^^^
        "#);
    check!("datetime'yesterday'", @r#"
        error: invalid datetime literal: invalid timestamp 'yesterday': expected a 4-digit year (format: YYYY-MM-DDTHH:MM:SS[.fffffff] and Z or +hh:mm) at position 0
        datetime'yesterday'
        ^^^^^^^^^^^^^^^^^^^
        "#);
    check!("datetimeoffset'2016-10-10T12:08:35'", @r#"
        error: invalid datetimeoffset literal: invalid timestamp '2016-10-10T12:08:35': expected 'Z' or an offset like +00:00 (format: YYYY-MM-DDTHH:MM:SS[.fffffff] and Z or +hh:mm) at position 0
        datetimeoffset'2016-10-10T12:08:35'
        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        "#);
    check!("guid'nope'", @r#"
        error: invalid guid literal 'nope': expected 8-4-4-4-12 hex digits at position 0
        guid'nope'
        ^^^^^^^^^^
        "#);
    check!("binary'00'", @r#"
        error: unknown typed literal 'binary': expected datetime, datetimeoffset or guid before a quote at position 0
        binary'00'
        ^^^^^^
        "#);
    check!("datetime '2016-10-10T12:08:35Z'", @r#"
        error: expected an operator or end of input, found '2016-10-10T12:08:35Z' at position 9
        datetime '2016-10-10T12:08:35Z'
                 ^^^^^^^^^^^^^^^^^^^^^^
        "#);
    check!("replace(text, 'a', b) eq 'x'", @r#"
        error: the third argument of replace() must be a string literal at position 19
        replace(text, 'a', b) eq 'x'
                           ^
        "#);
    check!("replace(replace(text, 'a', 'b'), 'c', 'd') eq 'x'", @r#"
        error: replace() cannot be nested inside replace() at position 8
        replace(replace(text, 'a', 'b'), 'c', 'd') eq 'x'
                ^^^^^^^^^^^^^^^^^^^^^^^
        "#);
    check!("a/ eq 1", @r#"
        error: expected a property name after '/', found 'eq' at position 3
        a/ eq 1
           ^^
        "#);
    check!("not", @r#"
        error: expected an expression, found end of input at position 3
        not
           ^
        "#);
    check!("a eq ünï", @r#"
        (eq $a $ünï)
        print: a eq ünï
        "#);
    check!("'ü' eq 1 =", @r#"
        error: unexpected character '=' at position 10
        'ü' eq 1 =
                 ^
        "#);
}

#[test]
fn replace_limit() {
    let ok = format!(
        "replace(t, 'a', '{}') eq 'x'",
        "é".repeat(REPLACE_WITH_CHARS_MAX)
    );
    assert!(parse_filter(&ok).is_ok());
    let bad = format!(
        "replace(t, 'a', '{}') eq 'x'",
        "é".repeat(REPLACE_WITH_CHARS_MAX + 1)
    );
    let err = parse_filter(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the third argument of replace() must be at most 100 characters at position 16"
    );
}

#[test]
fn depth_limit() {
    let nested = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    assert!(parse_filter(&nested(FILTER_DEPTH_MAX)).is_ok());
    let err = parse_filter(&nested(FILTER_DEPTH_MAX + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expression nested too deeply (more than 64 levels) at position 64"
    );
    // Chains of a non-associative operator (and mixed chains) nest, and unary chains too, so
    // they are bounded (no stack overflow later).
    let chain = |n: usize, op: &str| vec!["a"; n].join(op);
    assert!(parse_filter(&chain(FILTER_DEPTH_MAX, " sub ")).is_ok());
    assert_eq!(
        parse_filter(&chain(FILTER_DEPTH_MAX + 1, " sub "))
            .unwrap_err()
            .message,
        "expression nested too deeply (more than 64 levels)"
    );
    let mixed = |n: usize| format!("a{}", " add a sub a".repeat(n));
    assert!(parse_filter(&mixed(FILTER_DEPTH_MAX / 2 - 1)).is_ok());
    assert!(parse_filter(&mixed(FILTER_DEPTH_MAX / 2)).is_err());
    // A chain of one associative operator is a flat list: any length.
    assert_eq!(parse_filter(&chain(10_000, " add ")).unwrap().depth(), 2);
    assert!(parse_filter(&format!("{}a", "not ".repeat(FILTER_DEPTH_MAX - 1))).is_ok());
    assert!(parse_filter(&format!("{}a", "not ".repeat(FILTER_DEPTH_MAX))).is_err());
    assert!(parse_filter(&format!("{}a", "-".repeat(100_000))).is_err());
    assert!(parse_filter(&"(".repeat(100_000)).is_err());
    assert!(parse_filter(&format!("{}a{}", "length(".repeat(1000), ")".repeat(1000))).is_err());
}

/// The .NET client's `list.Contains(x.Id)`: thousands of `or` terms. Parsing, printing, the
/// round trip, both lowerings, `Expr::depth`, `Clone`, `PartialEq` and `Drop` all handle it
/// without deep recursion (run on a thread with a small stack to prove it).
#[test]
fn long_or_chain() {
    let run = || {
        let terms: Vec<String> = (0..5000).map(|i| format!("(id eq 'k{i}')")).collect();
        let input = terms.join(" or ");
        let e = parse_filter(&input).unwrap();
        assert_eq!(e.depth(), 3);
        let printed = e.to_string();
        let canonical: Vec<String> = (0..5000).map(|i| format!("id eq 'k{i}'")).collect();
        assert_eq!(printed, canonical.join(" or "));
        let again = parse_filter(&printed).unwrap();
        assert!(again == e);
        assert!(again.clone() == e);
        for d in [sql::Dialect::Sqlite, sql::Dialect::Postgres] {
            let f = sql::lower_filter(&e, &[("id", sql::ColumnType::String)], d, 1).unwrap();
            assert_eq!(f.params.len(), 5000);
            assert_eq!(f.sql.matches(" OR ").count(), 4999);
            // 5000 terms lower as runs of `CHAIN_RUN_MAX` (32): 157 runs, grouped again into 5,
            // inside the outer parentheses, so the first term sits four levels deep.
            let first = if d == sql::Dialect::Sqlite {
                "((((\"id\" = ?1) OR (\"id\" = ?2) OR "
            } else {
                "((((\"id\" = $1::text) OR (\"id\" = $2::text) OR "
            };
            assert!(f.sql.starts_with(first), "{}", &f.sql[..80]);
        }
        // A 10 000-term hand-built left-leaning chain (of a non-associative operator, so
        // `Clone`/`PartialEq` chains do not apply) is still dropped without recursion.
        let deep = (0..10_000).fold(Expr::member("a"), |acc, _| {
            Expr::binary(BinaryOp::Sub, acc, Expr::member("a"))
        });
        drop(deep);
    };
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn orderby() {
    let show = |s: &str| match parse_orderby(s) {
        Ok(o) => {
            let printed = orderby_to_string(&o);
            assert_eq!(parse_orderby(&printed).as_ref(), Ok(&o));
            printed
        }
        Err(e) => format!("error: {e}\n{}", e.render(s)),
    };
    insta::assert_snapshot!(show("updatedAt,id"), @"updatedAt asc,id asc");
    insta::assert_snapshot!(show("createdAt desc"), @"createdAt desc");
    insta::assert_snapshot!(show("text asc, length(text) desc ,id"), @"text asc,length(text) desc,id asc");
    insta::assert_snapshot!(show("a add b desc"), @"a add b desc");
    insta::assert_snapshot!(show("desc desc"), @"desc desc");
    insta::assert_snapshot!(show("text sideways"), @r#"
        error: expected 'asc', 'desc', ',' or end of input, found 'sideways' at position 5
        text sideways
             ^^^^^^^^
        "#);
    insta::assert_snapshot!(show("text,"), @r#"
        error: expected an expression, found end of input at position 5
        text,
             ^
        "#);
    insta::assert_snapshot!(show(""), @r#"
        error: expected an expression, found end of input at position 0

        ^
        "#);
    insta::assert_snapshot!(show("text DESC"), @r#"
        error: expected 'asc', 'desc', ',' or end of input, found 'DESC' at position 5
        text DESC
             ^^^^
        "#);
}

#[test]
fn select() {
    assert_eq!(
        parse_select("text, complete ,id"),
        Ok(vec![
            "text".to_string(),
            "complete".to_string(),
            "id".to_string()
        ])
    );
    // `*` is every column; the server expands it.
    assert_eq!(parse_select("*"), Ok(vec!["*".to_string()]));
    assert_eq!(
        parse_select("text, *"),
        Ok(vec!["text".to_string(), "*".to_string()])
    );
    let show = |s: &str| {
        let e = parse_select(s).unwrap_err();
        format!("error: {e}\n{}", e.render(s))
    };
    insta::assert_snapshot!(show("text,,id"), @r#"
        error: expected a property name at position 5
        text,,id
             ^
        "#);
    insta::assert_snapshot!(show("text, a-b"), @r#"
        error: expected a property name, found 'a-b' at position 6
        text, a-b
              ^^^
        "#);
    insta::assert_snapshot!(show(""), @r#"
        error: expected a property name at position 0

        ^
        "#);
}

#[test]
fn render_edge_cases() {
    let e = ParseError::new("x", 100..200);
    assert_eq!(e.render("ab"), "ab\n  ^");
    let e = ParseError::new("x", 1..2);
    assert_eq!(e.render("a\tb"), "a b\n ^");
    // A span inside a multi-byte character does not panic.
    let e = ParseError::new("x", 1..2);
    assert_eq!(e.render("ü"), "ü\n^");
}

// ---- property tests -------------------------------------------------------------------------

const RESERVED: [&str; 17] = [
    "eq", "ne", "gt", "ge", "lt", "le", "and", "or", "add", "sub", "mul", "div", "mod", "not",
    "null", "true", "false",
];

fn member() -> impl Strategy<Value = Expr> {
    "[A-Za-z_][A-Za-z0-9_]{0,6}"
        .prop_filter("keyword", |s| !RESERVED.contains(&s.as_str()))
        .prop_map(Expr::Member)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN_WIRE.0..=Timestamp::MAX_WIRE.0).prop_map(Timestamp)
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        any::<i64>().prop_map(Literal::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Literal::Number),
        any::<String>().prop_map(Literal::String),
        timestamp().prop_map(Literal::DateTime),
        timestamp().prop_map(Literal::DateTimeOffset),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9A-F]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Literal::Guid),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![literal().prop_map(Expr::Literal), member()]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(6, 48, 3, |inner| {
        let funcs: Vec<Function> = Function::ALL
            .into_iter()
            .filter(|f| *f != Function::Replace)
            .collect();
        prop_oneof![
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Negate]),
                inner.clone()
            )
                .prop_map(|(op, e)| Expr::unary(op, e)),
            (
                prop::sample::select(BinaryOp::ALL.to_vec()),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, l, r)| Expr::binary(op, l, r)),
            (
                prop::sample::select(funcs),
                prop::collection::vec(inner.clone(), 3)
            )
                .prop_map(|(func, mut args)| {
                    args.truncate(*func.arity().end());
                    Expr::Call { func, args }
                }),
            (leaf(), leaf(), "[^']{0,5}").prop_map(|(s, f, w)| Expr::Call {
                func: Function::Replace,
                args: vec![s, f, Expr::Literal(Literal::String(w))],
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The round-trip law: parse(print(e)) == e.
    #[test]
    fn print_parse_round_trip(e in expr()) {
        let printed = e.to_string();
        prop_assert_eq!(parse_filter(&printed), Ok(e), "printed: {}", printed);
    }

    #[test]
    fn orderby_round_trip(items in prop::collection::vec((expr(), any::<bool>()), 1..4)) {
        let order: Vec<OrderBy> = items
            .into_iter()
            .map(|(expr, desc)| OrderBy {
                expr,
                direction: if desc { SortDirection::Desc } else { SortDirection::Asc },
            })
            .collect();
        let printed = orderby_to_string(&order);
        prop_assert_eq!(parse_orderby(&printed), Ok(order), "printed: {}", printed);
    }

    /// The parser never panics, and its spans are inside the input.
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let errors = [parse_filter(&s).err(), parse_orderby(&s).err(), parse_select(&s).err()];
        for e in errors.into_iter().flatten() {
            prop_assert!(e.span.start <= e.span.end && e.span.end <= s.len());
            let _ = e.render(&s);
        }
    }

    /// Same, on inputs made of filter-like tokens (far more likely to get deep into the grammar).
    #[test]
    fn parse_never_panics_tokens(
        toks in prop::collection::vec(
            prop::sample::select(vec![
                "a", "eq", "and", "or", "not", "-", "(", ")", ",", "'x'", "'", "1", "-1", "1.5e3",
                "substring", "replace", "datetime'", "2016-10-10T12:08:35Z'", "/", "null", " ",
                "year", "guid", "add", "asc", "desc", "sub-1", "1L", "@",
            ]),
            0..24,
        )
    ) {
        let s: String = toks.concat();
        for e in [parse_filter(&s).err(), parse_orderby(&s).err()].into_iter().flatten() {
            prop_assert!(e.span.start <= e.span.end && e.span.end <= s.len());
        }
    }

    /// Lowering never panics on any tree the parser can produce, for either dialect, and the
    /// placeholders it emits match the parameters it returns.
    #[test]
    fn lowering_never_panics(e in expr()) {
        use sql::{lower_filter, ColumnType, Dialect};
        // Every member resolves, to a type chosen by its first letter, so lowering gets deep.
        struct Any;
        impl sql::Schema for Any {
            fn column_type(&self, name: &str) -> Option<ColumnType> {
                Some(match name.as_bytes().first().copied().unwrap_or(b'a') % 4 {
                    0 => ColumnType::String,
                    1 => ColumnType::Number,
                    2 => ColumnType::Boolean,
                    _ => ColumnType::Date,
                })
            }
        }
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            if let Ok(f) = lower_filter(&e, &Any, d, 1) {
                let mark = if d == Dialect::Sqlite { '?' } else { '$' };
                let highest = (1..=f.params.len() + 1)
                    .rev()
                    .find(|n| f.sql.contains(&format!("{mark}{n}")));
                prop_assert_eq!(highest.unwrap_or(0), f.params.len(), "{}", f.sql);
            }
        }
    }
}
