//! Lowering of `$filter` / `$orderby` trees to parameterised SQL for SQLite and PostgreSQL.
//!
//! The server's stores and the client's offline store both call this, so one OData query means
//! the same rows online and offline (protocol.md 8.6 lists how the official stacks differ).
//! Output is SQL text with numbered placeholders (`?N` on SQLite, `$N` on PostgreSQL, numbered
//! from `first_param` so a fragment can be embedded in a larger statement) plus the values to
//! bind in order. User values are never spliced into the text.
//!
//! Typing: every sub-expression gets a [`ColumnType`] (or null) from the schema and the
//! literals; mismatches that can be seen statically (`text add 1`, `year('abc')`, `price eq 'x'`)
//! are [`ErrorCode::WrongType`] errors. A string literal compared with (or passed where the
//! function needs) a date is parsed as a timestamp.
//!
//! Semantics chosen to be identical on both databases, and correct where the official servers
//! are not (protocol.md appendix A):
//! * `x eq null` / `x ne null` are `IS NULL` / `IS NOT NULL`; other comparisons with `null` are
//!   type errors.
//! * a boolean column or literal used as a condition is "booleanized" (`complete` means
//!   `complete = true`, `not complete` means `NOT (complete = true)`).
//! * `substringof`, `startswith`, `endswith`, `indexof` are case-sensitive substring tests with no
//!   wildcard characters (`instr`/`substr` on SQLite, `strpos`/`left`/`right` on PostgreSQL);
//!   `indexof` and `substring` are zero-based. `startswith(column, 'literal')` on a string column
//!   is a range instead, `column >= 'literal' AND column < <successor>` ([`prefix_successor`]),
//!   which an index on the column can read; strings compare in byte order on both stores.
//! * `div` and `mod` by zero give NULL (SQLite's behaviour; PostgreSQL would raise an error), `mod`
//!   is the truncated remainder with the sign of the dividend, also for fractional numbers.
//! * `round` is half away from zero (PostgreSQL rounds `numeric`, not `double precision`,
//!   which would round half to even); `floor`/`ceiling` work without SQLite's optional math
//!   functions.
//! * `year`..`second` are UTC date parts of a date (SQLite stores dates as wire-form text,
//!   which `strftime` reads).
//! * numbers are doubles, as the columns are: integer literals bind as doubles, and on
//!   PostgreSQL `length`, `indexof` and the date parts are cast to `double precision`, so no
//!   expression does integer arithmetic (`9223372036854775807 add 1` overflowed on PostgreSQL
//!   only; `7 div 2` is 3.5 on both). SQLite's `/` of two integers (`length(a) div length(b)`)
//!   is made a real division.
//! * `substring` truncates fractional positions and lengths toward zero on both (PostgreSQL's
//!   cast would round) and clamps them to `0..=`[`SUBSTRING_POSITION_MAX`] (PostgreSQL's cast
//!   to `integer` would fail on 3000000000).
//! * `floor`/`ceiling` on SQLite return |x| ≥ 2^52 unchanged (such doubles are integral; the
//!   `CAST AS INTEGER` they use otherwise saturates at 2^63).
//! * ORDER BY puts NULLs first when ascending on both (SQLite's order; PostgreSQL gets explicit
//!   `NULLS FIRST`/`NULLS LAST`).
//!
//! * `concat` takes strings only (each database renders numbers, booleans and dates as text its
//!   own way).
//! * before lowering, [`super::limits::check_expressions`] refuses what could reach one
//!   database's limit only: too many terms, a NUL in a string literal, literal arithmetic that
//!   overflows a double.
//!
//! Known differences that remain: `tolower`/`toupper` fold only ASCII on SQLite; arithmetic on
//! stored values that overflows a double (`price mul 1e300` with a price of 1e10) is infinity
//! on SQLite but an error (400) on PostgreSQL.
//!
//! Binding: stores bind [`SqlValue::Bool`] as INTEGER 0/1 on SQLite and BOOLEAN on PostgreSQL;
//! [`SqlValue::Timestamp`] as its wire text on SQLite and as TIMESTAMPTZ on PostgreSQL. On
//! PostgreSQL every placeholder carries an explicit cast (`$1::text`, `$2::double precision`,
//! `$3::bigint`, `$4::boolean`, `$5::timestamptz`) so its type is never ambiguous.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::ast::{BinaryOp, Expr, Function, Literal, OrderBy, SortDirection, UnaryOp};
use crate::error::ErrorCode;
use crate::system;
use crate::time::{parse_timestamp, Timestamp};

/// Largest `substring` position or length passed to the database, in characters: larger ones are
/// clamped to it (no string is that long; PostgreSQL's text values are at most 1 GB), so
/// PostgreSQL's `integer` never overflows.
pub const SUBSTRING_POSITION_MAX: i64 = 1_000_000_000;

/// 2^52: doubles at least this large in magnitude have no fractional part.
const DOUBLE_INTEGRAL_MIN: &str = "4503599627370496.0";

/// The SQL dialect to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (rusqlite): `?N` placeholders; booleans are INTEGER 0/1, dates wire-form TEXT.
    Sqlite,
    /// PostgreSQL: `$N` placeholders with casts; BOOLEAN, TIMESTAMPTZ(3).
    Postgres,
}

/// The protocol type of a column (ARCHITECTURE.md, "Column types and storage").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// TEXT
    String,
    /// REAL / DOUBLE PRECISION
    Number,
    /// INTEGER 0/1 / BOOLEAN
    Boolean,
    /// wire-form TEXT / TIMESTAMPTZ(3)
    Date,
}

/// Column lookup. System columns are the caller's responsibility to include (see
/// [`system_column_type`]).
pub trait Schema {
    /// The type of column `name`, or `None` when the table has no such column.
    fn column_type(&self, name: &str) -> Option<ColumnType>;
}

impl Schema for HashMap<String, ColumnType> {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.get(name).copied()
    }
}

impl Schema for BTreeMap<String, ColumnType> {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.get(name).copied()
    }
}

impl<const N: usize> Schema for [(&str, ColumnType); N] {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

impl Schema for Vec<(String, ColumnType)> {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }
}

/// The types of the five system columns: `id` string, `createdAt`/`updatedAt` date, `version`
/// string, `deleted` boolean.
pub fn system_column_type(name: &str) -> Option<ColumnType> {
    match name {
        system::ID | system::VERSION => Some(ColumnType::String),
        system::CREATED_AT | system::UPDATED_AT => Some(ColumnType::Date),
        system::DELETED => Some(ColumnType::Boolean),
        _ => None,
    }
}

/// A value to bind to a placeholder.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// NULL
    Null,
    /// SQLite: INTEGER 0/1; PostgreSQL: BOOLEAN.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// Double.
    Real(f64),
    /// Text.
    Text(String),
    /// SQLite: the wire-form text; PostgreSQL: TIMESTAMPTZ.
    Timestamp(Timestamp),
}

/// SQL text with placeholders numbered from `first_param` and the values to bind, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlFragment {
    /// The SQL text.
    pub sql: String,
    /// `params[i]` binds to placeholder number `first_param + i`.
    pub params: Vec<SqlValue>,
}

/// Why a tree could not be lowered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LowerError {
    /// [`ErrorCode::UnknownColumn`] or [`ErrorCode::WrongType`].
    pub code: ErrorCode,
    /// e.g. `unknown column 'frobnicate' in $filter`.
    pub message: String,
}

/// Lowers a `$filter` expression to a SQL condition (for a `WHERE` clause).
pub fn lower_filter(
    expr: &Expr,
    schema: &dyn Schema,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, LowerError> {
    let mut l = Lowerer::new(schema, dialect, first_param, "$filter");
    let sql = l.predicate(expr)?;
    Ok(SqlFragment {
        sql,
        params: l.params,
    })
}

/// Lowers `$orderby` items to an ORDER BY body without the keywords, e.g. `"text" ASC, "id" ASC`
/// (PostgreSQL adds `NULLS FIRST`/`NULLS LAST`). The caller appends the `id` tie-breaker if
/// wanted. An empty slice gives an empty string.
pub fn lower_order_by(
    order: &[OrderBy],
    schema: &dyn Schema,
    dialect: Dialect,
    first_param: usize,
) -> Result<SqlFragment, LowerError> {
    let mut l = Lowerer::new(schema, dialect, first_param, "$orderby");
    let mut parts = Vec::with_capacity(order.len());
    for o in order {
        let v = l.value(&o.expr, None)?;
        let dir = match (o.direction, dialect) {
            (SortDirection::Asc, Dialect::Sqlite) => "ASC",
            (SortDirection::Desc, Dialect::Sqlite) => "DESC",
            (SortDirection::Asc, Dialect::Postgres) => "ASC NULLS FIRST",
            (SortDirection::Desc, Dialect::Postgres) => "DESC NULLS LAST",
        };
        // A bare `NULL` is a constant PostgreSQL refuses in ORDER BY; a typed one is not.
        let sql = if v.ty == Ty::Null {
            "CAST(NULL AS TEXT)".to_owned()
        } else {
            v.sql
        };
        parts.push(format!("{sql} {dir}"));
    }
    Ok(SqlFragment {
        sql: parts.join(", "),
        params: l.params,
    })
}

/// Operands of one chain joined flat up to this many, in operands; longer chains are grouped in
/// runs of this many, so SQLite's parse tree (one level per operator of a flat run) stays
/// shallow: a flat chain of 1000 `or` terms hit SQLite's expression depth limit of 1000.
pub const CHAIN_RUN_MAX: usize = 32;

/// `(a sep b sep …)`, as runs of at most [`CHAIN_RUN_MAX`] operands grouped recursively.
fn group_chain(mut parts: Vec<String>, sep: &str) -> String {
    while parts.len() > CHAIN_RUN_MAX {
        parts = parts
            .chunks(CHAIN_RUN_MAX)
            .map(|run| match run {
                [one] => one.clone(),
                _ => format!("({})", run.join(sep)),
            })
            .collect();
    }
    format!("({})", parts.join(sep))
}

/// The least string greater than every string that starts with `prefix` (in code point order,
/// which is UTF-8 byte order): the prefix with its last character replaced by the next one,
/// after dropping trailing U+10FFFF (which has no next); None when nothing is left (the empty
/// prefix, or only U+10FFFF). The surrogate gap is skipped: after U+D7FF comes U+E000.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Double-quotes an identifier (embedded `"` doubled, although validated names have none).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Static type of a lowered expression; `Null` is the type of the `null` literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Col(ColumnType),
    Null,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Col(ColumnType::String) => "string",
            Ty::Col(ColumnType::Number) => "number",
            Ty::Col(ColumnType::Boolean) => "boolean",
            Ty::Col(ColumnType::Date) => "date",
            Ty::Null => "null",
        })
    }
}

const STRING: Ty = Ty::Col(ColumnType::String);
const NUMBER: Ty = Ty::Col(ColumnType::Number);
const BOOLEAN: Ty = Ty::Col(ColumnType::Boolean);
const DATE: Ty = Ty::Col(ColumnType::Date);

/// A lowered sub-expression.
struct Val {
    sql: String,
    ty: Ty,
    /// Whether `sql` is already a condition (comparison, `AND`, `instr(..) > 0`) rather than a
    /// boolean value that needs booleanizing.
    predicate: bool,
}

impl Val {
    fn new(sql: String, ty: Ty) -> Val {
        Val {
            sql,
            ty,
            predicate: false,
        }
    }

    fn pred(sql: String) -> Val {
        Val {
            sql,
            ty: BOOLEAN,
            predicate: true,
        }
    }
}

struct Lowerer<'a> {
    schema: &'a dyn Schema,
    dialect: Dialect,
    first_param: usize,
    /// `$filter` or `$orderby`, for messages.
    option: &'static str,
    params: Vec<SqlValue>,
}

impl<'a> Lowerer<'a> {
    fn new(
        schema: &'a dyn Schema,
        dialect: Dialect,
        first_param: usize,
        option: &'static str,
    ) -> Self {
        Lowerer {
            schema,
            dialect,
            first_param,
            option,
            params: Vec::new(),
        }
    }

    fn wrong_type(&self, message: String) -> LowerError {
        LowerError {
            code: ErrorCode::WrongType,
            message: format!("{message} in {}", self.option),
        }
    }

    fn pg(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// Adds a bound value and returns its placeholder.
    fn param(&mut self, v: SqlValue) -> String {
        let cast = match &v {
            SqlValue::Null => "",
            SqlValue::Bool(_) => "::boolean",
            SqlValue::Int(_) => "::bigint",
            SqlValue::Real(_) => "::double precision",
            SqlValue::Text(_) => "::text",
            SqlValue::Timestamp(_) => "::timestamptz",
        };
        self.params.push(v);
        let n = self.first_param + self.params.len() - 1;
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}{cast}"),
        }
    }

    fn column(&self, name: &str) -> Result<ColumnType, LowerError> {
        let unknown = |what: String| LowerError {
            code: ErrorCode::UnknownColumn,
            message: format!("{what} in {}", self.option),
        };
        if name.contains('/') {
            return Err(unknown(format!(
                "member paths like '{name}' are not supported (unknown column)"
            )));
        }
        self.schema
            .column_type(name)
            .ok_or_else(|| unknown(format!("unknown column '{name}'")))
    }

    /// The type `e` will have, without emitting anything (used as a hint for the other side of
    /// a comparison, so `createdAt gt '2020-01-01T00:00:00Z'` binds a timestamp).
    fn static_type(&self, e: &Expr) -> Option<Ty> {
        Some(match e {
            Expr::Literal(l) => match l {
                Literal::Null => Ty::Null,
                Literal::Bool(_) => BOOLEAN,
                Literal::Int(_) | Literal::Number(_) => NUMBER,
                Literal::String(_) | Literal::Guid(_) => STRING,
                Literal::DateTime(_) | Literal::DateTimeOffset(_) => DATE,
            },
            Expr::Member(m) => Ty::Col(self.column(m).ok()?),
            Expr::Unary {
                op: UnaryOp::Not, ..
            } => BOOLEAN,
            Expr::Unary {
                op: UnaryOp::Negate,
                ..
            } => NUMBER,
            Expr::Binary { op, .. } if op.precedence() <= 3 => BOOLEAN,
            Expr::Binary { .. } => NUMBER,
            Expr::Call { func, .. } => match func {
                Function::SubstringOf | Function::StartsWith | Function::EndsWith => BOOLEAN,
                Function::ToLower
                | Function::ToUpper
                | Function::Trim
                | Function::Concat
                | Function::Substring
                | Function::Replace => STRING,
                _ => NUMBER,
            },
        })
    }

    /// Lowers `e` as a condition, booleanizing boolean values.
    fn predicate(&mut self, e: &Expr) -> Result<String, LowerError> {
        let v = self.value(e, None)?;
        match v.ty {
            Ty::Col(ColumnType::Boolean) if v.predicate => Ok(v.sql),
            Ty::Col(ColumnType::Boolean) => Ok(match self.dialect {
                Dialect::Sqlite => format!("({} = 1)", v.sql),
                Dialect::Postgres => format!("({} = TRUE)", v.sql),
            }),
            Ty::Null => Ok(v.sql),
            ty => Err(self.wrong_type(format!("`{e}` is a {ty}, not a condition"))),
        }
    }

    /// Lowers `e` and checks it has type `want` (null is accepted everywhere).
    fn typed(
        &mut self,
        e: &Expr,
        want: Ty,
        what: &dyn Fn() -> String,
    ) -> Result<String, LowerError> {
        let v = self.value(e, Some(want))?;
        if v.ty == want || v.ty == Ty::Null {
            Ok(v.sql)
        } else {
            Err(self.wrong_type(format!(
                "{} expects a {want}, found `{e}` of type {}",
                what(),
                v.ty
            )))
        }
    }

    fn value(&mut self, e: &Expr, hint: Option<Ty>) -> Result<Val, LowerError> {
        match e {
            Expr::Literal(l) => Ok(self.literal(l, hint)?),
            Expr::Member(m) => {
                let t = self.column(m)?;
                Ok(Val::new(quote_ident(m), Ty::Col(t)))
            }
            Expr::Unary {
                op: UnaryOp::Not,
                expr,
            } => {
                let inner = self.predicate(expr)?;
                Ok(Val::pred(format!("(NOT {inner})")))
            }
            Expr::Unary {
                op: UnaryOp::Negate,
                expr,
            } => {
                let inner = self.typed(expr, NUMBER, &|| "'-'".to_string())?;
                Ok(Val::new(format!("(-{inner})"), NUMBER))
            }
            Expr::Binary { op, .. } if op.is_associative() => self.chain(e, *op),
            Expr::Binary { op, left, right } => self.binary(*op, left, right),
            Expr::Call { func, args } => self.call(*func, args),
        }
    }

    fn literal(&mut self, l: &Literal, hint: Option<Ty>) -> Result<Val, LowerError> {
        Ok(match l {
            Literal::Null => Val::new("NULL".to_string(), Ty::Null),
            Literal::Bool(b) => Val::new(self.param(SqlValue::Bool(*b)), BOOLEAN),
            // Bound as a double: numbers are doubles (the columns are), and integer arithmetic
            // would overflow on PostgreSQL where SQLite silently switches to REAL.
            #[allow(clippy::cast_precision_loss)]
            Literal::Int(i) => Val::new(self.param(SqlValue::Real(*i as f64)), NUMBER),
            Literal::Number(n) => Val::new(self.param(SqlValue::Real(*n)), NUMBER),
            Literal::String(s) if hint == Some(DATE) => match parse_timestamp(s) {
                Ok(t) => Val::new(self.param(SqlValue::Timestamp(t)), DATE),
                Err(e) => {
                    return Err(self.wrong_type(format!(
                        "{} is not a date ({})",
                        Literal::String(s.clone()),
                        e.reason
                    )))
                }
            },
            Literal::String(s) | Literal::Guid(s) => {
                Val::new(self.param(SqlValue::Text(s.clone())), STRING)
            }
            Literal::DateTime(t) | Literal::DateTimeOffset(t) => {
                Val::new(self.param(SqlValue::Timestamp(*t)), DATE)
            }
        })
    }

    /// A chain of one associative operator (`and`, `or`, `add`, `mul`), lowered by a loop: the
    /// parser accepts such chains at any length. `and`/`or` become `(a OR b OR …)` and
    /// `add`/`mul` `(a + b + …)` (SQL's operators are left-associative too), flat up to
    /// [`CHAIN_RUN_MAX`] operands and grouped in runs beyond.
    fn chain(&mut self, e: &Expr, op: BinaryOp) -> Result<Val, LowerError> {
        let (first, rest) = e.chain(op);
        let what = || format!("operator '{}'", op.keyword());
        let (sep, logical) = match op {
            BinaryOp::And => (" AND ", true),
            BinaryOp::Or => (" OR ", true),
            BinaryOp::Add => (" + ", false),
            _ => (" * ", false),
        };
        let mut parts = Vec::with_capacity(rest.len() + 1);
        for operand in std::iter::once(first).chain(rest.into_iter().map(|(_, r)| r)) {
            parts.push(if logical {
                self.predicate(operand)?
            } else {
                self.typed(operand, NUMBER, &what)?
            });
        }
        let sql = group_chain(parts, sep);
        Ok(if logical {
            Val::pred(sql)
        } else {
            Val::new(sql, NUMBER)
        })
    }

    fn binary(&mut self, op: BinaryOp, left: &Expr, right: &Expr) -> Result<Val, LowerError> {
        match op {
            BinaryOp::And | BinaryOp::Or => {
                let l = self.predicate(left)?;
                let r = self.predicate(right)?;
                let kw = if op == BinaryOp::And { "AND" } else { "OR" };
                Ok(Val::pred(format!("({l} {kw} {r})")))
            }
            _ if op.is_comparison() => self.comparison(op, left, right),
            _ => {
                let what = || format!("operator '{}'", op.keyword());
                let l = self.typed(left, NUMBER, &what)?;
                let r = self.typed(right, NUMBER, &what)?;
                let pg = self.pg();
                let sql = match op {
                    BinaryOp::Add => format!("({l} + {r})"),
                    BinaryOp::Sub => format!("({l} - {r})"),
                    BinaryOp::Mul => format!("({l} * {r})"),
                    BinaryOp::Div if pg => format!("({l} / NULLIF({r}, 0))"),
                    // Two INTEGER operands (`length(a) div length(b)`) would divide as integers.
                    BinaryOp::Div => format!("(CAST({l} AS REAL) / {r})"),
                    BinaryOp::Mod if pg => format!(
                        "CAST(mod(CAST({l} AS numeric), CAST(NULLIF({r}, 0) AS numeric)) AS double precision)"
                    ),
                    // SQLite's % truncates REAL operands to integers first; this is the real
                    // remainder (and NULL for a zero divisor, since l / 0 is NULL).
                    _ => format!("({l} - {r} * CAST({l} / {r} AS INTEGER))"),
                };
                Ok(Val::new(sql, NUMBER))
            }
        }
    }

    fn comparison(&mut self, op: BinaryOp, left: &Expr, right: &Expr) -> Result<Val, LowerError> {
        let is_null = |e: &Expr| matches!(e, Expr::Literal(Literal::Null));
        if is_null(left) || is_null(right) {
            let other = if is_null(left) { right } else { left };
            let v = self.value(other, None)?;
            return match op {
                BinaryOp::Eq => Ok(Val::pred(format!("({} IS NULL)", v.sql))),
                BinaryOp::Ne => Ok(Val::pred(format!("({} IS NOT NULL)", v.sql))),
                _ => Err(self.wrong_type(format!(
                    "null can only be compared with eq or ne, found `{}`",
                    Expr::binary(op, left.clone(), right.clone())
                ))),
            };
        }
        let lhint = self.static_type(right);
        let rhint = self.static_type(left);
        let l = self.value(left, lhint)?;
        let r = self.value(right, rhint)?;
        if l.ty != r.ty && l.ty != Ty::Null && r.ty != Ty::Null {
            return Err(self.wrong_type(format!(
                "cannot compare `{left}` ({}) with `{right}` ({})",
                l.ty, r.ty
            )));
        }
        let sym = match op {
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "<>",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Lt => "<",
            _ => "<=",
        };
        Ok(Val::pred(format!("({} {sym} {})", l.sql, r.sql)))
    }

    /// `startswith(column, 'prefix')` as `(column >= 'prefix' AND column < <successor>)`: the
    /// same rows as the substring test (the strings starting with the prefix are exactly those
    /// in that range, in code point order), but a range an index on the column can read. Both
    /// stores compare strings in byte order (SQLite's BINARY, PostgreSQL's `COLLATE "C"` on
    /// every string column) and UTF-8 byte order is code point order, so both answer alike.
    /// No successor (the empty prefix, or one made only of U+10FFFF): `column >= 'prefix'`.
    fn prefix_range(&mut self, column: &str, prefix: &str) -> Val {
        let x = quote_ident(column);
        let low = self.param(SqlValue::Text(prefix.to_owned()));
        match prefix_successor(prefix) {
            Some(next) => {
                let high = self.param(SqlValue::Text(next));
                Val::pred(format!("({x} >= {low} AND {x} < {high})"))
            }
            None => Val::pred(format!("({x} >= {low})")),
        }
    }

    fn call(&mut self, func: Function, args: &[Expr]) -> Result<Val, LowerError> {
        let arity = func.arity();
        if !arity.contains(&args.len()) {
            // Only reachable for hand-built trees; the parser checks arity.
            return Err(self.wrong_type(format!(
                "function '{}' takes {} to {} arguments, found {}",
                func.name(),
                arity.start(),
                arity.end(),
                args.len()
            )));
        }
        let name = func.name();
        let arg = |i: usize| move || format!("argument {} of {name}()", i + 1);
        let pg = self.pg();
        let s = |this: &mut Self, i: usize| this.typed(&args[i], STRING, &arg(i));
        let n = |this: &mut Self, i: usize| this.typed(&args[i], NUMBER, &arg(i));
        Ok(match func {
            Function::SubstringOf => {
                let needle = s(self, 0)?;
                let hay = s(self, 1)?;
                let f = if pg { "strpos" } else { "instr" };
                Val::pred(format!("({f}({hay}, {needle}) > 0)"))
            }
            Function::StartsWith => {
                // A string column and a literal prefix: a range an index on the column can read.
                if let (Expr::Member(column), Expr::Literal(Literal::String(prefix))) =
                    (&args[0], &args[1])
                {
                    if self.column(column).ok() == Some(ColumnType::String) {
                        return Ok(self.prefix_range(column, prefix));
                    }
                }
                let (x, p) = (s(self, 0)?, s(self, 1)?);
                if pg {
                    Val::pred(format!("(left({x}, length({p})) = {p})"))
                } else {
                    Val::pred(format!("(substr({x}, 1, length({p})) = {p})"))
                }
            }
            Function::EndsWith => {
                let (x, p) = (s(self, 0)?, s(self, 1)?);
                if pg {
                    Val::pred(format!("(right({x}, length({p})) = {p})"))
                } else {
                    // A start <= 0 yields a piece of x shorter than p, so never equal: correct.
                    Val::pred(format!(
                        "(substr({x}, length({x}) - length({p}) + 1) = {p})"
                    ))
                }
            }
            Function::IndexOf => {
                let (x, needle) = (s(self, 0)?, s(self, 1)?);
                let f = if pg { "strpos" } else { "instr" };
                if pg {
                    Val::new(
                        format!("CAST(strpos({x}, {needle}) - 1 AS double precision)"),
                        NUMBER,
                    )
                } else {
                    Val::new(format!("({f}({x}, {needle}) - 1)"), NUMBER)
                }
            }
            Function::Length if pg => Val::new(
                format!("CAST(length({}) AS double precision)", s(self, 0)?),
                NUMBER,
            ),
            Function::Length => Val::new(format!("length({})", s(self, 0)?), NUMBER),
            Function::ToLower => Val::new(format!("lower({})", s(self, 0)?), STRING),
            Function::ToUpper => Val::new(format!("upper({})", s(self, 0)?), STRING),
            Function::Trim => Val::new(format!("trim({})", s(self, 0)?), STRING),
            Function::Concat => {
                // Strings only: each database renders numbers, booleans and dates as text its
                // own way (`1.0` and `1`, `1` and `true`), so one filter had two answers.
                let (a, b) = (s(self, 0)?, s(self, 1)?);
                Val::new(format!("({a} || {b})"), STRING)
            }
            Function::Substring => {
                let x = s(self, 0)?;
                let start = n(self, 1)?;
                let len = if args.len() == 3 {
                    Some(n(self, 2)?)
                } else {
                    None
                };
                // Truncated toward zero and clamped to 0..=SUBSTRING_POSITION_MAX on both.
                let max = SUBSTRING_POSITION_MAX;
                let clamp = |v: &str| {
                    if pg {
                        format!(
                            "CAST(LEAST(GREATEST(trunc(CAST({v} AS double precision)), 0), {max}) AS integer)"
                        )
                    } else {
                        format!("min(max(CAST({v} AS INTEGER), 0), {max})")
                    }
                };
                let sql = match len {
                    Some(len) => format!("substr({x}, {} + 1, {})", clamp(&start), clamp(&len)),
                    None => format!("substr({x}, {} + 1)", clamp(&start)),
                };
                Val::new(sql, STRING)
            }
            Function::Replace => {
                let (x, find, with) = (s(self, 0)?, s(self, 1)?, s(self, 2)?);
                Val::new(format!("replace({x}, {find}, {with})"), STRING)
            }
            Function::Year
            | Function::Month
            | Function::Day
            | Function::Hour
            | Function::Minute
            | Function::Second => {
                let d = self.typed(&args[0], DATE, &arg(0))?;
                let sql = if pg {
                    let field = match func {
                        Function::Year => "YEAR",
                        Function::Month => "MONTH",
                        Function::Day => "DAY",
                        Function::Hour => "HOUR",
                        Function::Minute => "MINUTE",
                        _ => "SECOND",
                    };
                    // EXTRACT(SECOND) includes the fraction; floor keeps whole seconds.
                    format!(
                        "CAST(floor(EXTRACT({field} FROM ({d}) AT TIME ZONE 'UTC')) AS double precision)"
                    )
                } else {
                    let fmt = match func {
                        Function::Year => "%Y",
                        Function::Month => "%m",
                        Function::Day => "%d",
                        Function::Hour => "%H",
                        Function::Minute => "%M",
                        _ => "%S",
                    };
                    format!("CAST(strftime('{fmt}', {d}) AS INTEGER)")
                };
                Val::new(sql, NUMBER)
            }
            Function::Round => {
                let x = n(self, 0)?;
                if pg {
                    Val::new(
                        format!("CAST(round(CAST({x} AS numeric)) AS double precision)"),
                        NUMBER,
                    )
                } else {
                    // SQLite's round() rounds half away from zero.
                    Val::new(format!("round({x})"), NUMBER)
                }
            }
            Function::Floor | Function::Ceiling => {
                let x = n(self, 0)?;
                let floor = func == Function::Floor;
                if pg {
                    let f = if floor { "floor" } else { "ceil" };
                    Val::new(format!("{f}(CAST({x} AS double precision))"), NUMBER)
                } else {
                    // Without SQLite's optional math functions: truncate, then step once. A double
                    // of magnitude >= 2^52 is already integral, and CAST AS INTEGER would
                    // saturate at 2^63, so it is returned as is.
                    // The argument is named once in a correlated sub-select: pasted five times
                    // into the CASE, `floor(floor(…))` grew the SQL fivefold per level.
                    let (cmp, step) = if floor { ("<", "- 1") } else { (">", "+ 1") };
                    Val::new(
                        format!(
                            "(SELECT CASE WHEN abs(v) >= {DOUBLE_INTEGRAL_MIN} THEN v WHEN v {cmp} CAST(v AS INTEGER) THEN CAST(v AS INTEGER) {step} ELSE CAST(v AS INTEGER) END FROM (SELECT {x} AS v))"
                        ),
                        NUMBER,
                    )
                }
            }
        })
    }
}
