//! The syntax tree of a `$filter` / `$orderby` expression (protocol.md 4.3, 4.4).
//!
//! The tree is untyped: whether `text add 1` makes sense depends on the table's columns, which
//! only the SQL lowering ([`super::sql`]) knows. `Display` (in `print.rs`) prints the canonical
//! form, and parsing that form gives back an equal tree.

use crate::time::Timestamp;

/// An expression.
///
/// `Clone`, `PartialEq` and `Drop` walk a chain of one associative operator (`a or b or c …`,
/// which the parser accepts at any length, see [`Expr::depth`]) iteratively, so a long chain
/// cannot overflow the stack; the derived `Debug` still recurses.
#[derive(Debug)]
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

    /// Whether `(a op b) op c` means `a op (b op c)`: `and`, `or`, `add`, `mul`. A left-leaning
    /// chain of one such operator is a flat list, not nesting (see [`Expr::depth`]).
    pub fn is_associative(self) -> bool {
        matches!(
            self,
            BinaryOp::And | BinaryOp::Or | BinaryOp::Add | BinaryOp::Mul
        )
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
    /// `concat(a, b)`: both strings (or null).
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

    /// Nesting depth of the tree: 1 for a leaf, +1 for a unary operator, a function call or a
    /// binary operator, except that a left operand which is the same associative operator
    /// (`a or b or c`, see [`BinaryOp::is_associative`]) adds no level: such a chain is a flat
    /// list (the .NET client sends hundreds of `or` terms), not nesting. The parser refuses
    /// trees deeper than [`super::FILTER_DEPTH_MAX`] by this measure, which bounds the recursion
    /// of every tree walk; chains are walked iteratively.
    pub fn depth(&self) -> usize {
        match self {
            Expr::Literal(_) | Expr::Member(_) => 1,
            Expr::Unary { expr, .. } => 1 + expr.depth(),
            Expr::Call { args, .. } => 1 + args.iter().map(Expr::depth).max().unwrap_or(0),
            Expr::Binary { op, .. } => {
                // Every operand of the chain (never itself a link of it) is one level down.
                let (first, rest) = self.chain(*op);
                rest.iter()
                    .map(|(_, r)| 1 + r.depth())
                    .fold(1 + first.depth(), usize::max)
            }
        }
    }

    /// Unrolls the left spine of `self` while it is `op` and `op` is associative (only the top
    /// node otherwise): `((a op b) op c)` gives `(a, [(op, b), (op, c)])`. Non-binary `self`
    /// gives `(self, [])`.
    pub(crate) fn chain(&self, op: BinaryOp) -> (&Expr, Vec<(BinaryOp, &Expr)>) {
        let mut rest = Vec::new();
        let mut cur = self;
        while let Expr::Binary { op: o, left, right } = cur {
            if *o != op || (!rest.is_empty() && !op.is_associative()) {
                break;
            }
            rest.push((*o, &**right));
            cur = left;
        }
        rest.reverse();
        (cur, rest)
    }
}

impl Clone for Expr {
    fn clone(&self) -> Expr {
        match self {
            Expr::Literal(l) => Expr::Literal(l.clone()),
            Expr::Member(m) => Expr::Member(m.clone()),
            Expr::Unary { op, expr } => Expr::unary(*op, (**expr).clone()),
            Expr::Call { func, args } => Expr::Call {
                func: *func,
                args: args.clone(),
            },
            Expr::Binary { op, .. } => {
                // Rebuild a chain bottom-up instead of recursing down its left spine.
                let (first, rest) = self.chain(*op);
                rest.into_iter()
                    .fold(first.clone(), |acc, (o, r)| Expr::binary(o, acc, r.clone()))
            }
        }
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        // A work list instead of recursion: trees can be long chains.
        let mut todo = vec![(self, other)];
        while let Some((a, b)) = todo.pop() {
            match (a, b) {
                (Expr::Literal(x), Expr::Literal(y)) if x == y => {}
                (Expr::Member(x), Expr::Member(y)) if x == y => {}
                (Expr::Unary { op: o1, expr: e1 }, Expr::Unary { op: o2, expr: e2 })
                    if o1 == o2 =>
                {
                    todo.push((e1, e2));
                }
                (
                    Expr::Binary {
                        op: o1,
                        left: l1,
                        right: r1,
                    },
                    Expr::Binary {
                        op: o2,
                        left: l2,
                        right: r2,
                    },
                ) if o1 == o2 => {
                    todo.push((l1, l2));
                    todo.push((r1, r2));
                }
                (Expr::Call { func: f1, args: a1 }, Expr::Call { func: f2, args: a2 })
                    if f1 == f2 && a1.len() == a2.len() =>
                {
                    todo.extend(a1.iter().zip(a2));
                }
                _ => return false,
            }
        }
        true
    }
}

impl Drop for Expr {
    fn drop(&mut self) {
        // The compiler's drop glue would recurse once per level of a (possibly 10 000-term)
        // chain; move children into a work list so each is dropped with its own children
        // already taken out.
        let mut todo: Vec<Expr> = Vec::new();
        let take = |e: &mut Expr, todo: &mut Vec<Expr>| match e {
            Expr::Unary { expr, .. } => {
                todo.push(std::mem::replace(&mut **expr, Expr::Literal(Literal::Null)))
            }
            Expr::Binary { left, right, .. } => {
                todo.push(std::mem::replace(&mut **left, Expr::Literal(Literal::Null)));
                todo.push(std::mem::replace(
                    &mut **right,
                    Expr::Literal(Literal::Null),
                ));
            }
            Expr::Call { args, .. } => todo.append(args),
            Expr::Literal(_) | Expr::Member(_) => {}
        };
        take(self, &mut todo);
        while let Some(mut e) = todo.pop() {
            take(&mut e, &mut todo);
        }
    }
}

impl From<Literal> for Expr {
    fn from(l: Literal) -> Expr {
        Expr::Literal(l)
    }
}
