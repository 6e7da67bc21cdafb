//! The OData v3 query subset of the table protocol (protocol.md section 4).
//!
//! Pipeline: a raw query string is split and percent-decoded by [`query::parse_query_string`];
//! `$filter` / `$orderby` / `$select` values go through the lexer and the recursive-descent
//! [`parse_filter`] / [`parse_orderby`] / [`parse_select`] into the [`ast`]; the server and the
//! client's offline store turn the tree into parameterised SQL with [`sql::lower_filter`] and
//! [`sql::lower_order_by`]; the client prints trees back into query strings with `Display`
//! (canonical form, `parse(print(e)) == e`) and [`query::TableQuery::to_query_string`].
//!
//! Errors carry a byte span into the offending option value so the server can answer with the
//! position and a caret display ([`ParseError::render`]).

pub mod ast;
mod lexer;
pub mod limits;
mod parser;
mod print;
pub mod query;
pub mod sql;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

pub use ast::*;
pub use parser::{FILTER_DEPTH_MAX, REPLACE_WITH_CHARS_MAX};
pub use print::orderby_to_string;

/// Parses a `$filter` value (already percent-decoded) into an expression.
pub fn parse_filter(input: &str) -> Result<Expr, ParseError> {
    parser::parse_filter(input)
}

/// Parses an `$orderby` value: `expr [asc|desc] (, expr [asc|desc])*`.
pub fn parse_orderby(input: &str) -> Result<Vec<OrderBy>, ParseError> {
    parser::parse_orderby(input)
}

/// Parses a `$select` value: a comma-separated list of property names (spaces around names are
/// ignored; names follow [`crate::system::is_valid_identifier`]).
pub fn parse_select(input: &str) -> Result<Vec<String>, ParseError> {
    parser::parse_select(input)
}

/// A syntax error with the byte span of the offending text in the input.
///
/// `Display` gives `"<message> at position <n>"` (n = byte offset of the span start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was expected and what was found, e.g. `expected an expression, found end of input`.
    pub message: String,
    /// Byte range in the input the error points at (empty at end of input).
    pub span: Range<usize>,
}

impl ParseError {
    /// An error with `message` at `span`.
    pub fn new(message: impl Into<String>, span: Range<usize>) -> Self {
        ParseError {
            message: message.into(),
            span,
        }
    }

    /// Byte offset the error points at.
    pub fn position(&self) -> usize {
        self.span.start
    }

    /// Two lines: the input (control characters shown as spaces) and a caret line under the
    /// span, e.g.
    /// ```text
    /// text eq
    ///        ^
    /// ```
    pub fn render(&self, input: &str) -> String {
        let clamp = |i: usize| {
            let mut i = i.min(input.len());
            while !input.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let start = clamp(self.span.start);
        let end = clamp(self.span.end).max(start);
        let line: String = input
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let pad = input[..start].chars().count();
        let width = input[start..end].chars().count().max(1);
        format!("{line}\n{}{}", " ".repeat(pad), "^".repeat(width))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.span.start)
    }
}

impl std::error::Error for ParseError {}
