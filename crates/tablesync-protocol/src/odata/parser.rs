//! The `$filter` / `$orderby` / `$select` parser (protocol.md 4.3, 4.4).
//!
//! Grammar (BNF; precedence from lowest to highest, every binary operator left-associative):
//!
//! ```text
//! filter      ::= expr EOF
//! orderby     ::= order_item ( "," order_item )* EOF
//! order_item  ::= expr ( "asc" | "desc" )?
//! select      ::= name ( "," name )*                          (names: [A-Za-z_][A-Za-z0-9_]* or "*")
//! expr        ::= or_expr
//! or_expr     ::= and_expr ( "or" and_expr )*
//! and_expr    ::= cmp_expr ( "and" cmp_expr )*
//! cmp_expr    ::= add_expr ( ( "eq" | "ne" | "gt" | "ge" | "lt" | "le" ) add_expr )*
//! add_expr    ::= mul_expr ( ( "add" | "sub" ) mul_expr )*
//! mul_expr    ::= unary ( ( "mul" | "div" | "mod" ) unary )*
//! unary       ::= ( "-" | "not" ) unary | primary             ("not" binds tighter than "eq")
//! primary     ::= literal | call | member | "(" expr ")"
//! call        ::= function "(" ( expr ( "," expr )* )? ")"    (arity checked per function)
//! member      ::= identifier ( "/" identifier )*              (paths kept as "a/b")
//! literal     ::= "null" | "true" | "false" | number | string
//!               | "datetime" string | "datetimeoffset" string | "guid" string   (no space before the quote)
//! number      ::= "-"? digit+ ( "." digit+ )? ( [eE] [+-]? digit+ )? [LlFfMmDd]?
//! string      ::= "'" ( [^'] | "''" )* "'"
//! identifier  ::= [letter _ @] [letter digit _ -]*            (see lexer.rs for "-")
//! ```
//!
//! Keywords (`eq`, `and`, `not`, `null`, ...) and function names are lowercase and
//! case-sensitive; operator keywords cannot be used as member names. `replace` gets the
//! official servers' anti-DoS rules: its third argument must be a string literal of at most
//! [`REPLACE_WITH_CHARS_MAX`] characters and no `replace` may occur inside its arguments.
//! Nesting deeper than [`FILTER_DEPTH_MAX`] (parentheses, unary chains, function calls, chains
//! of mixed or non-associative operators; measured as [`Expr::depth`]) is refused, which bounds
//! the recursion of the parser and of every later tree walk. A chain of one associative
//! operator (`(id eq 'a') or (id eq 'b') or …`, which the .NET client's `Contains` produces
//! with hundreds of terms) is not nesting: it is built by a loop here and walked iteratively
//! by the printer, the lowering, `Clone`, `PartialEq` and `Drop`.
//! Limiting the input length is the caller's business.

use super::ast::{BinaryOp, Expr, Function, Literal, OrderBy, SortDirection, UnaryOp};
use super::lexer::{lex, Tok, Token};
use super::ParseError;

/// Deepest expression tree (and deepest parenthesis nesting) accepted, in levels.
pub const FILTER_DEPTH_MAX: usize = 64;
/// Longest replacement text accepted by `replace(s, find, with)`, in characters.
pub const REPLACE_WITH_CHARS_MAX: usize = 100;

type PResult<T> = Result<T, ParseError>;

/// A parsed expression with its source span and tree depth.
struct Node {
    expr: Expr,
    span: std::ops::Range<usize>,
    depth: usize,
}

pub(crate) fn parse_filter(input: &str) -> PResult<Expr> {
    let mut p = Parser::new(input)?;
    let e = p.expr()?;
    p.expect_eof("an operator or end of input")?;
    Ok(e.expr)
}

pub(crate) fn parse_orderby(input: &str) -> PResult<Vec<OrderBy>> {
    let mut p = Parser::new(input)?;
    let mut out = Vec::new();
    loop {
        let e = p.expr()?;
        let direction = match &p.peek().tok {
            Tok::Ident(w) if w == "asc" => {
                p.bump();
                SortDirection::Asc
            }
            Tok::Ident(w) if w == "desc" => {
                p.bump();
                SortDirection::Desc
            }
            _ => SortDirection::Asc,
        };
        out.push(OrderBy {
            expr: e.expr,
            direction,
        });
        if p.peek().tok == Tok::Comma {
            p.bump();
        } else {
            p.expect_eof("'asc', 'desc', ',' or end of input")?;
            return Ok(out);
        }
    }
}

pub(crate) fn parse_select(input: &str) -> PResult<Vec<String>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for item in input.split(',') {
        let lead = item.len() - item.trim_start().len();
        let name = item.trim();
        let start = offset + lead;
        // `*` is "every column" (OData); the server expands it against the table's schema.
        if name != "*" && !crate::system::is_valid_identifier(name) {
            let what = if name.is_empty() {
                "expected a property name".to_string()
            } else {
                format!("expected a property name, found '{name}'")
            };
            return Err(ParseError::new(what, start..start + name.len()));
        }
        out.push(name.to_string());
        offset += item.len() + 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Current recursion depth (parentheses, unary operators, call arguments).
    nesting: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(w) => format!("'{w}'"),
        Tok::Lit(l) => format!("{l}"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Slash => "'/'".into(),
        Tok::Minus => "'-'".into(),
        Tok::Eof => "end of input".into(),
    }
}

fn too_deep(span: std::ops::Range<usize>) -> ParseError {
    ParseError::new(
        format!("expression nested too deeply (more than {FILTER_DEPTH_MAX} levels)"),
        span,
    )
}

impl Parser {
    fn new(input: &str) -> PResult<Self> {
        Ok(Parser {
            toks: lex(input)?,
            pos: 0,
            nesting: 0,
        })
    }

    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `bump` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, expected: &str) -> ParseError {
        let t = self.peek();
        ParseError::new(
            format!("expected {expected}, found {}", describe(&t.tok)),
            t.span.clone(),
        )
    }

    fn expect_eof(&self, expected: &str) -> PResult<()> {
        if self.peek().tok == Tok::Eof {
            Ok(())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> PResult<Token> {
        if self.peek().tok == tok {
            Ok(self.bump())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn enter(&mut self, span: std::ops::Range<usize>) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > FILTER_DEPTH_MAX {
            return Err(too_deep(span));
        }
        Ok(())
    }

    fn expr(&mut self) -> PResult<Node> {
        self.binary(1)
    }

    /// The binary operator at the cursor if it has precedence `level`.
    fn binary_op_at(&self, level: u8) -> Option<BinaryOp> {
        match &self.peek().tok {
            Tok::Ident(w) => BinaryOp::from_keyword(w).filter(|op| op.precedence() == level),
            _ => None,
        }
    }

    /// Precedence climbing over the five binary levels (1 = `or` ... 5 = `mul`).
    fn binary(&mut self, level: u8) -> PResult<Node> {
        if level > 5 {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.binary_op_at(level) {
            self.bump();
            let right = self.binary(level + 1)?;
            // The same rule as `Expr::depth`: extending a chain of one associative operator
            // adds no level.
            let same_chain =
                op.is_associative() && matches!(&left.expr, Expr::Binary { op: o, .. } if *o == op);
            let left_depth = if same_chain {
                left.depth
            } else {
                1 + left.depth
            };
            let depth = left_depth.max(1 + right.depth);
            let span = left.span.start..right.span.end;
            if depth > FILTER_DEPTH_MAX {
                return Err(too_deep(span));
            }
            left = Node {
                expr: Expr::binary(op, left.expr, right.expr),
                span,
                depth,
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        let op = match &t.tok {
            Tok::Minus => UnaryOp::Negate,
            Tok::Ident(w) if w == "not" => UnaryOp::Not,
            _ => return self.primary(),
        };
        self.bump();
        self.enter(t.span.clone())?;
        let inner = self.unary()?;
        self.nesting -= 1;
        let depth = inner.depth + 1;
        let span = t.span.start..inner.span.end;
        if depth > FILTER_DEPTH_MAX {
            return Err(too_deep(span));
        }
        Ok(Node {
            expr: Expr::unary(op, inner.expr),
            span,
            depth,
        })
    }

    fn primary(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Lit(l) => {
                self.bump();
                Ok(Node {
                    expr: Expr::Literal(l),
                    span: t.span,
                    depth: 1,
                })
            }
            Tok::LParen => {
                self.bump();
                self.enter(t.span.clone())?;
                let inner = self.expr()?;
                self.nesting -= 1;
                let close = self.expect(Tok::RParen, "')' or an operator")?;
                Ok(Node {
                    span: t.span.start..close.span.end,
                    ..inner
                })
            }
            Tok::Ident(word) => {
                self.bump();
                let lit = match word.as_str() {
                    "null" => Some(Literal::Null),
                    "true" => Some(Literal::Bool(true)),
                    "false" => Some(Literal::Bool(false)),
                    _ => None,
                };
                if let Some(l) = lit {
                    return Ok(Node {
                        expr: Expr::Literal(l),
                        span: t.span,
                        depth: 1,
                    });
                }
                if BinaryOp::from_keyword(&word).is_some() {
                    return Err(ParseError::new(
                        format!("expected an expression, found the operator '{word}'"),
                        t.span,
                    ));
                }
                if self.peek().tok == Tok::LParen {
                    return self.call(word, t.span);
                }
                let mut name = word;
                let mut span = t.span;
                while self.peek().tok == Tok::Slash {
                    self.bump();
                    let seg = self.peek().clone();
                    match seg.tok {
                        Tok::Ident(s) if BinaryOp::from_keyword(&s).is_none() => {
                            self.bump();
                            name.push('/');
                            name.push_str(&s);
                            span.end = seg.span.end;
                        }
                        _ => return Err(self.error_here("a property name after '/'")),
                    }
                }
                Ok(Node {
                    expr: Expr::Member(name),
                    span,
                    depth: 1,
                })
            }
            _ => Err(self.error_here("an expression")),
        }
    }

    fn call(&mut self, name: String, name_span: std::ops::Range<usize>) -> PResult<Node> {
        let Some(func) = Function::from_name(&name) else {
            return Err(ParseError::new(
                format!("unknown function '{name}'"),
                name_span,
            ));
        };
        let open = self.bump(); // the '('
        self.enter(open.span)?;
        let mut args: Vec<Node> = Vec::new();
        if self.peek().tok != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if self.peek().tok == Tok::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        let close = self.expect(Tok::RParen, "',' or ')'")?;
        self.nesting -= 1;
        let span = name_span.start..close.span.end;
        let arity = func.arity();
        if !arity.contains(&args.len()) {
            let want = if arity.start() == arity.end() {
                format!("{}", arity.start())
            } else {
                format!("{} or {}", arity.start(), arity.end())
            };
            let plural = if *arity.end() == 1 { "" } else { "s" };
            return Err(ParseError::new(
                format!(
                    "function '{name}' takes {want} argument{plural}, found {}",
                    args.len()
                ),
                span,
            ));
        }
        if func == Function::Replace {
            check_replace(&args)?;
        }
        let depth = 1 + args.iter().map(|a| a.depth).max().unwrap_or(0);
        if depth > FILTER_DEPTH_MAX {
            return Err(too_deep(span));
        }
        Ok(Node {
            expr: Expr::Call {
                func,
                args: args.into_iter().map(|a| a.expr).collect(),
            },
            span,
            depth,
        })
    }
}

fn contains_replace(e: &Expr) -> bool {
    // A work list, not recursion: an argument may be a long chain.
    let mut todo = vec![e];
    while let Some(e) = todo.pop() {
        match e {
            Expr::Literal(_) | Expr::Member(_) => {}
            Expr::Unary { expr, .. } => todo.push(expr),
            Expr::Binary { left, right, .. } => todo.extend([&**left, &**right]),
            Expr::Call { func, args } => {
                if *func == Function::Replace {
                    return true;
                }
                todo.extend(args);
            }
        }
    }
    false
}

/// The official servers' anti-DoS rules for `replace` (protocol.md 4.4).
fn check_replace(args: &[Node]) -> PResult<()> {
    for a in args {
        if contains_replace(&a.expr) {
            return Err(ParseError::new(
                "replace() cannot be nested inside replace()",
                a.span.clone(),
            ));
        }
    }
    if let Some(with) = args.get(2) {
        match &with.expr {
            Expr::Literal(Literal::String(s)) if s.chars().count() <= REPLACE_WITH_CHARS_MAX => {}
            Expr::Literal(Literal::String(_)) => {
                return Err(ParseError::new(
                    format!(
                        "the third argument of replace() must be at most {REPLACE_WITH_CHARS_MAX} characters"
                    ),
                    with.span.clone(),
                ))
            }
            _ => {
                return Err(ParseError::new(
                    "the third argument of replace() must be a string literal",
                    with.span.clone(),
                ))
            }
        }
    }
    Ok(())
}
