//! The canonical printer: `Display` for [`Expr`], [`Literal`] and [`OrderBy`].
//!
//! The canonical form uses single spaces around infix keywords and parentheses only where the
//! grammar needs them, so that `parse(print(e)) == e` holds for every tree the parser can produce
//! (the round-trip law, property-tested in `tests.rs`). Points that matter for that law:
//! * a numeric operand of `-` is printed `-(5)`, because `-5` would lex as the literal -5;
//! * a right operand of the same precedence is parenthesised (all operators are left-associative);
//! * an operand of `not` or `-` that is a binary expression is parenthesised (unary binds tighter).
//!
//! Non-finite numbers cannot be printed as OData (the parser never produces them); they print
//! as `null`.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::{Expr, Literal, OrderBy, SortDirection, UnaryOp};

/// Binding strength of unary operators (tighter than every binary operator).
const UNARY_PRECEDENCE: u8 = 6;
/// Binding strength of literals, members, calls.
const PRIMARY_PRECEDENCE: u8 = 7;

fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Binary { op, .. } => op.precedence(),
        Expr::Unary { .. } => UNARY_PRECEDENCE,
        _ => PRIMARY_PRECEDENCE,
    }
}

fn write_paren(f: &mut Formatter<'_>, e: &Expr, paren: bool) -> fmt::Result {
    if paren {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Member(m) => f.write_str(m),
            Expr::Unary { op, expr } => {
                let paren = precedence(expr) < UNARY_PRECEDENCE;
                match op {
                    UnaryOp::Not => {
                        if paren {
                            write!(f, "not({expr})")
                        } else {
                            write!(f, "not {expr}")
                        }
                    }
                    UnaryOp::Negate => {
                        let numeric =
                            matches!(**expr, Expr::Literal(Literal::Int(_) | Literal::Number(_)));
                        f.write_char('-')?;
                        write_paren(f, expr, paren || numeric)
                    }
                }
            }
            Expr::Binary { op, .. } => {
                // A chain of one associative operator is printed by a loop (it may have
                // thousands of terms); its first operand is never a link of the chain.
                let p = op.precedence();
                let (first, rest) = self.chain(*op);
                write_paren(f, first, precedence(first) < p)?;
                for (op, right) in rest {
                    write!(f, " {} ", op.keyword())?;
                    write_paren(f, right, precedence(right) <= p)?;
                }
                Ok(())
            }
            Expr::Call { func, args } => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_char(')')
            }
        }
    }
}

/// Writes `s` as an OData string literal: single-quoted, embedded quotes doubled.
fn write_quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    f.write_str(&s.replace('\'', "''"))?;
    f.write_char('\'')
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` is the shortest text that parses back to the same f64 and always contains
            // a `.` or an exponent, so it re-lexes as a Number, never as an Int.
            Literal::Number(n) if n.is_finite() => write!(f, "{n:?}"),
            Literal::Number(_) => f.write_str("null"),
            Literal::String(s) => write_quoted(f, s),
            Literal::DateTime(t) => write!(f, "datetime'{t}'"),
            Literal::DateTimeOffset(t) => write!(f, "datetimeoffset'{t}'"),
            Literal::Guid(g) => write!(f, "guid'{g}'"),
        }
    }
}

impl Display for SortDirection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SortDirection::Asc => "asc",
            SortDirection::Desc => "desc",
        })
    }
}

/// `expr asc` or `expr desc`.
impl Display for OrderBy {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.expr, self.direction)
    }
}

/// The canonical `$orderby` value: items printed as `expr dir`, joined by `,`.
pub fn orderby_to_string(order: &[OrderBy]) -> String {
    let mut s = String::new();
    for (i, o) in order.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{o}");
    }
    s
}
