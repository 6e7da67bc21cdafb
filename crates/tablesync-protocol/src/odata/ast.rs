//! The syntax tree of a `$filter` / `$orderby` expression (protocol.md 4.3, 4.4).
//!
//! The tree is untyped: whether `text add 1` makes sense depends on the table's columns, which
//! only the SQL lowering ([`super::sql`]) knows. `Display` (in `print.rs`) prints the canonical
//! form, and parsing that form gives back an equal tree.

use crate::time::Timestamp;

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// A property (column) name. Member paths `a/b` are kept verbatim as `"a/b"`; the lowering
    /// rejects them as unknown columns.
    Member(String),
    /// `not e` or `-e`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<Expr>,
    },
    /// `left op right`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// The left operand.
        left: Box<Expr>,
        /// The right operand.
        right: Box<Expr>,
    },
    /// A function call; the parser has checked the arity.
    Call {
        /// The function.
        func: Function,
        /// The arguments, in source order.
        args: Vec<Expr>,
    },
}

/// A constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer literal without fraction or exponent that fits in an i64 (also `12L`).
    Int(i64),
    /// Any other finite number: with a fraction, an exponent, an `f`/`m`/`d` suffix, or too large
    /// for an i64. The decimal value is kept as an f64 (a `f` suffix does not round to f32).
    Number(f64),
    /// `'text'` (the value, with `''` already unescaped).
    String(String),
    /// `datetime'...'`
    DateTime(Timestamp),
    /// `datetimeoffset'...'`
    DateTimeOffset(Timestamp),
    /// `guid'...'`, the text between the quotes (validated as 8-4-4-4-12 hex digits).
    Guid(String),
}

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `not`: logical negation.
    Not,
    /// `-`: arithmetic negation (a `-` directly before a number is part of the number instead).
    Negate,
}

/// An infix operator. All are left-associative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
    /// `and`
    And,
    /// `or`
    Or,
    /// `add`
    Add,
    /// `sub`
    Sub,
    /// `mul`
    Mul,
    /// `div`
    Div,
    /// `mod`
    Mod,
}

impl BinaryOp {
    /// Every operator.
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Mod,
    ];

    /// The keyword, e.g. `"eq"`.
    pub fn keyword(self) -> &'static str {
        match self {
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Mod => "mod",
        }
    }

    /// The operator spelled `word`, if any (case-sensitive).
    pub fn from_keyword(word: &str) -> Option<Self> {
        BinaryOp::ALL.into_iter().find(|op| op.keyword() == word)
    }

    /// Binding strength: `or` 1 < `and` 2 < comparisons 3 < `add`/`sub` 4 < `mul`/`div`/`mod` 5.
    /// Unary operators bind tighter than all of these.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Lt
            | BinaryOp::Le => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
        }
    }

    /// Whether this is one of `eq ne gt ge lt le`.
    pub fn is_comparison(self) -> bool {
        self.precedence() == 3
    }
}

/// A built-in function (protocol.md 4.4). Names are lowercase and case-sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    /// `substringof(needle, haystack)`: whether haystack contains needle (note the order).
    SubstringOf,
    /// `startswith(s, prefix)`
    StartsWith,
    /// `endswith(s, suffix)`
    EndsWith,
    /// `indexof(s, needle)`: zero-based position, -1 when absent.
    IndexOf,
    /// `length(s)`: character count.
    Length,
    /// `tolower(s)`
    ToLower,
    /// `toupper(s)`
    ToUpper,
    /// `trim(s)`: strips leading and trailing spaces.
    Trim,
    /// `concat(a, b)`: non-strings are converted to text.
    Concat,
    /// `substring(s, start[, len])`: `start` is zero-based.
    Substring,
    /// `replace(s, find, with)`: `with` must be a string literal of at most 100 characters.
    Replace,
    /// `day(d)`
    Day,
    /// `month(d)`
    Month,
    /// `year(d)`
    Year,
    /// `hour(d)`
    Hour,
    /// `minute(d)`
    Minute,
    /// `second(d)`
    Second,
    /// `round(x)`: half away from zero.
    Round,
    /// `floor(x)`
    Floor,
    /// `ceiling(x)`
    Ceiling,
}

impl Function {
    /// Every function.
    pub const ALL: [Function; 20] = [
        Function::SubstringOf,
        Function::StartsWith,
        Function::EndsWith,
        Function::IndexOf,
        Function::Length,
        Function::ToLower,
        Function::ToUpper,
        Function::Trim,
        Function::Concat,
        Function::Substring,
        Function::Replace,
        Function::Day,
        Function::Month,
        Function::Year,
        Function::Hour,
        Function::Minute,
        Function::Second,
        Function::Round,
        Function::Floor,
        Function::Ceiling,
    ];

    /// The OData name, e.g. `"startswith"`.
    pub fn name(self) -> &'static str {
        match self {
            Function::SubstringOf => "substringof",
            Function::StartsWith => "startswith",
            Function::EndsWith => "endswith",
            Function::IndexOf => "indexof",
            Function::Length => "length",
            Function::ToLower => "tolower",
            Function::ToUpper => "toupper",
            Function::Trim => "trim",
            Function::Concat => "concat",
            Function::Substring => "substring",
            Function::Replace => "replace",
            Function::Day => "day",
            Function::Month => "month",
            Function::Year => "year",
            Function::Hour => "hour",
            Function::Minute => "minute",
            Function::Second => "second",
            Function::Round => "round",
            Function::Floor => "floor",
            Function::Ceiling => "ceiling",
        }
    }

    /// The function called `name`, if any (case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Accepted argument counts, inclusive.
    pub fn arity(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Function::Length
            | Function::ToLower
            | Function::ToUpper
            | Function::Trim
            | Function::Day
            | Function::Month
            | Function::Year
            | Function::Hour
            | Function::Minute
            | Function::Second
            | Function::Round
            | Function::Floor
            | Function::Ceiling => 1..=1,
            Function::SubstringOf
            | Function::StartsWith
            | Function::EndsWith
            | Function::IndexOf
            | Function::Concat => 2..=2,
            Function::Substring => 2..=3,
            Function::Replace => 3..=3,
        }
    }
}

/// One `$orderby` item.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    /// What to sort by.
    pub expr: Expr,
    /// Which way.
    pub direction: SortDirection,
}

/// Sort direction; ascending when not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SortDirection {
    /// `asc`
    #[default]
    Asc,
    /// `desc`
    Desc,
}

impl Expr {
    /// `Expr::Member(name)`.
    pub fn member(name: impl Into<String>) -> Expr {
        Expr::Member(name.into())
    }

    /// `left op right`.
    pub fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        }
    }

    /// `op expr`.
    pub fn unary(op: UnaryOp, expr: Expr) -> Expr {
        Expr::Unary {
            op,
            expr: Box::new(expr),
        }
    }

    /// `left and right`.
    pub fn and(left: Expr, right: Expr) -> Expr {
        Expr::binary(BinaryOp::And, left, right)
    }

    /// Nesting depth of the tree: 1 for a leaf.
    pub fn depth(&self) -> usize {
        match self {
            Expr::Literal(_) | Expr::Member(_) => 1,
            Expr::Unary { expr, .. } => 1 + expr.depth(),
            Expr::Binary { left, right, .. } => 1 + left.depth().max(right.depth()),
            Expr::Call { args, .. } => 1 + args.iter().map(Expr::depth).max().unwrap_or(0),
        }
    }
}

impl From<Literal> for Expr {
    fn from(l: Literal) -> Expr {
        Expr::Literal(l)
    }
}
