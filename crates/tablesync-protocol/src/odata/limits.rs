//! Limits every query expression must meet before it is lowered, shared by every store.
//!
//! The project promises one answer per filter on both stores (issue 11, defect 5). Each
//! database has limits of its own (SQLite refuses expressions deeper than 1000, PostgreSQL
//! cannot bind a NUL character, PostgreSQL raises an error where SQLite's doubles overflow to
//! infinity), so a filter near one of them was served by one store and refused by the other.
//! The rule: the protocol crate refuses, before lowering and for every dialect alike, whatever
//! could reach a database limit, with one 400 `invalid_filter` (or `invalid_orderby`) body:
//!
//! * more than `terms_max` terms (literals and property names) in the `$filter`, or in all
//!   `$orderby` keys together;
//! * a tree whose lowered SQL could be deeper than [`SQL_DEPTH_MAX`] (SQLite refuses expression
//!   trees deeper than 1000), by an estimate made on the tree, so the same on every store. Long
//!   chains (`id eq 'a' or id eq 'b' or …`, the .NET client's `Contains`) lower to grouped runs
//!   and stay shallow; what the estimate refuses is deep nesting of long chains;
//! * a string literal with a NUL character (U+0000): PostgreSQL text cannot hold one, and no
//!   stored string contains one (writes refuse it), so no filter could need it;
//! * a literal-only arithmetic (`1e308 mul 10`, `round(1e308 mul 10)`) whose value, or any
//!   step of it, leaves the range of a double. Arithmetic on stored values cannot be checked
//!   before it runs: that one case remains (ARCHITECTURE.md, "Known differences").

use super::ast::{BinaryOp, Expr, Function, Literal, UnaryOp};
use crate::error::ErrorCode;

use super::sql::LowerError;

/// The highest `terms_max` a server may configure, in terms: each literal is one bound
/// parameter, and SQLite binds at most 32766 per statement.
pub const FILTER_TERMS_MAX_LIMIT: usize = 10_000;

/// Checks `exprs` (one `$filter`, or every key of one `$orderby`) against the shared limits.
/// `option` (`$filter` or `$orderby`) names the option in messages and picks the error code.
pub fn check_expressions<'a>(
    exprs: impl IntoIterator<Item = &'a Expr>,
    option: &str,
    terms_max: usize,
) -> Result<(), LowerError> {
    let code = if option == "$orderby" {
        ErrorCode::InvalidOrderBy
    } else {
        ErrorCode::InvalidFilter
    };
    let fail = |message: String| LowerError {
        code,
        message: format!("{message} in {option}"),
    };
    let mut terms = 0usize;
    for expr in exprs {
        // An explicit work list: chains of `or` are long left spines.
        let mut todo = vec![expr];
        while let Some(e) = todo.pop() {
            match e {
                Expr::Literal(Literal::String(s)) if s.contains('\0') => {
                    return Err(fail(
                        "a string literal contains a NUL character (U+0000), which no stored string can contain".into(),
                    ))
                }
                Expr::Literal(_) | Expr::Member(_) => terms += 1,
                Expr::Unary { expr, .. } => todo.push(expr),
                Expr::Binary { left, right, .. } => {
                    todo.push(right);
                    todo.push(left);
                }
                Expr::Call { args, .. } => todo.extend(args.iter().rev()),
            }
        }
        if terms > terms_max {
            return Err(fail(format!(
                "the expression has more than {terms_max} terms (literals and property names)"
            )));
        }
        let depth = sql_depth(expr);
        if depth > SQL_DEPTH_MAX {
            return Err(fail(format!(
                "the expression is nested too deeply for the database (estimated depth {depth}, at most {SQL_DEPTH_MAX})"
            )));
        }
        if let Err(Overflow(e)) = constant(expr) {
            return Err(fail(format!(
                "`{e}` is beyond the range of a double (about ±1.8e308)"
            )));
        }
    }
    Ok(())
}

/// The deepest lowered SQL accepted, in levels of an upper-bound estimate (`sql_depth`):
/// SQLite refuses expression trees deeper than 1000, and the store wraps the filter in a few
/// levels of its own (`deleted`, owner, keyset conditions).
pub const SQL_DEPTH_MAX: usize = 800;

/// Levels of SQL any one operator or function adds at most when lowered, in levels (the
/// deepest is SQLite's `mod`, `(l - r * CAST(l / r AS INTEGER))`, and a booleanized operand).
const NODE_SQL_DEPTH_MAX: usize = 8;

/// An upper bound of the depth of the SQL that [`super::sql`] makes of `e` on either dialect:
/// every operator adds at most [`NODE_SQL_DEPTH_MAX`] levels, and a chain of n operands adds its
/// grouping (flat runs of [`super::sql::CHAIN_RUN_MAX`], one level per operator of a run).
/// Computed on the tree, so it is the same for every store.
fn sql_depth(e: &Expr) -> usize {
    match e {
        Expr::Literal(_) | Expr::Member(_) => 1,
        Expr::Unary { expr, .. } => NODE_SQL_DEPTH_MAX + sql_depth(expr),
        Expr::Call { args, .. } => {
            NODE_SQL_DEPTH_MAX + args.iter().map(sql_depth).max().unwrap_or(0)
        }
        Expr::Binary { op, .. } if op.is_associative() => {
            let (first, rest) = e.chain(*op);
            let deepest = rest
                .iter()
                .map(|(_, r)| sql_depth(r))
                .fold(sql_depth(first), usize::max);
            let run = super::sql::CHAIN_RUN_MAX;
            let (mut operands, mut grouping) = (rest.len() + 1, 0);
            while operands > run {
                grouping += run;
                operands = operands.div_ceil(run);
            }
            NODE_SQL_DEPTH_MAX + grouping + operands + deepest
        }
        Expr::Binary { left, right, .. } => {
            NODE_SQL_DEPTH_MAX + sql_depth(left).max(sql_depth(right))
        }
    }
}

/// A literal-only arithmetic sub-expression whose value is not a finite double.
struct Overflow(Expr);

/// The value of `e` when it is a number computed from literals only (`Ok(None)` otherwise, or
/// when it is null, as `x div 0` is), or the first sub-expression whose value overflows.
/// Recursion is bounded by the parser's depth limit; associative chains are walked as lists.
fn constant(e: &Expr) -> Result<Option<f64>, Overflow> {
    let finite = |v: f64, e: &Expr| {
        if v.is_finite() {
            Ok(Some(v))
        } else {
            Err(Overflow(e.clone()))
        }
    };
    match e {
        #[allow(clippy::cast_precision_loss)]
        Expr::Literal(Literal::Int(i)) => Ok(Some(*i as f64)),
        Expr::Literal(Literal::Number(n)) => Ok(Some(*n)),
        Expr::Literal(_) | Expr::Member(_) => Ok(None),
        Expr::Unary {
            op: UnaryOp::Negate,
            expr,
        } => Ok(constant(expr)?.map(|v| -v)),
        Expr::Unary { expr, .. } => constant(expr).map(|_| None),
        Expr::Call { func, args } => {
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(constant(a)?);
            }
            match (func, values.as_slice()) {
                // Rounding a finite double stays finite.
                (Function::Round | Function::Floor | Function::Ceiling, [Some(v)]) => Ok(Some(*v)),
                _ => Ok(None),
            }
        }
        Expr::Binary { op, .. } if op.is_associative() => {
            let (first, rest) = e.chain(*op);
            let mut acc = constant(first)?;
            for (_, operand) in rest {
                let v = constant(operand)?;
                acc = match (op, acc, v) {
                    (BinaryOp::Add, Some(a), Some(b)) => finite(a + b, e)?,
                    (BinaryOp::Mul, Some(a), Some(b)) => finite(a * b, e)?,
                    _ => None,
                };
            }
            Ok(acc)
        }
        Expr::Binary { op, left, right } => {
            let (l, r) = (constant(left)?, constant(right)?);
            match (op, l, r) {
                (BinaryOp::Add, Some(a), Some(b)) => finite(a + b, e),
                (BinaryOp::Sub, Some(a), Some(b)) => finite(a - b, e),
                (BinaryOp::Mul, Some(a), Some(b)) => finite(a * b, e),
                // Division by zero is null on both stores, not an overflow.
                (BinaryOp::Div, Some(_), Some(0.0)) => Ok(None),
                (BinaryOp::Div, Some(a), Some(b)) => finite(a / b, e),
                (BinaryOp::Mod, Some(_), Some(0.0)) => Ok(None),
                (BinaryOp::Mod, Some(a), Some(b)) => finite(a % b, e),
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::{parse_filter, parse_orderby};

    fn check(filter: &str, terms_max: usize) -> Result<(), String> {
        let e = parse_filter(filter).unwrap();
        check_expressions([&e], "$filter", terms_max).map_err(|e| {
            assert_eq!(e.code, ErrorCode::InvalidFilter);
            e.message
        })
    }

    #[test]
    fn terms_are_counted_across_chains_and_calls() {
        let chain = |n: usize| vec!["true"; n].join(" or ");
        assert_eq!(check(&chain(5000), 5000), Ok(()));
        assert_eq!(
            check(&chain(501), 500).unwrap_err(),
            "the expression has more than 500 terms (literals and property names) in $filter"
        );
        assert_eq!(check("substring(text, 1, 2) eq 'x'", 4), Ok(()));
        assert!(check("substring(text, 1, 2) eq 'x'", 3).is_err());
        let keys = parse_orderby("text, price add 1, id").unwrap();
        let exprs: Vec<&Expr> = keys.iter().map(|k| &k.expr).collect();
        assert!(check_expressions(exprs.iter().copied(), "$orderby", 4).is_ok());
        let err = check_expressions(exprs.iter().copied(), "$orderby", 3).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidOrderBy);
    }

    #[test]
    fn nesting_of_long_chains_is_bounded() {
        // Alternating `or`/`and` chains of 32, each the first operand of the next, 20 deep:
        // flat, SQLite would have put the innermost term 20 * 31 levels down.
        let mut f = "true".to_owned();
        for level in 0..20 {
            let op = if level % 2 == 0 { " or " } else { " and " };
            f = format!("({f}){}", op.to_owned() + &vec!["true"; 31].join(op));
        }
        let err = check(&f, 10_000).unwrap_err();
        assert!(
            err.starts_with("the expression is nested too deeply for the database"),
            "{err}"
        );
        let shallow: String = (0..8).fold("true".to_owned(), |f, level| {
            let op = if level % 2 == 0 { " or " } else { " and " };
            format!("({f}){}", op.to_owned() + &vec!["true"; 31].join(op))
        });
        assert_eq!(check(&shallow, 10_000), Ok(()));
    }

    #[test]
    fn nul_in_string_literals_is_refused() {
        assert_eq!(
            check("text eq 'a\u{0}b'", 10).unwrap_err(),
            "a string literal contains a NUL character (U+0000), which no stored string can contain in $filter"
        );
        assert_eq!(check("text eq 'a b'", 10), Ok(()));
    }

    #[test]
    fn literal_arithmetic_must_stay_finite() {
        assert_eq!(
            check("round(1e308 mul 10) gt 0", 10).unwrap_err(),
            "`1e308 mul 10` is beyond the range of a double (about ±1.8e308) in $filter"
        );
        for bad in [
            "1e308 add 1e308 gt 0",
            "-1e308 sub 1e308 lt 0",
            "1 div 1e-308 div 1e-308 gt 0",
            "price add 1e308 mul 1e308 gt 0",
            "2 mul 1e308 mul 0 eq 0",
        ] {
            assert!(check(bad, 10).is_err(), "{bad}");
        }
        for good in [
            "1e308 mul 1 gt 0",
            "1 div 0 eq null",
            "5 mod 0 eq null",
            "price mul 1e308 gt 0",
            "round(1.5) eq 2",
        ] {
            assert_eq!(check(good, 10), Ok(()), "{good}");
        }
    }
}
