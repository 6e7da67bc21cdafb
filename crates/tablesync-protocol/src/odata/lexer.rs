//! The `$filter` / `$orderby` tokenizer.
//!
//! Follows the Node server's lexer (protocol.md 4.3) with two deliberate differences that only
//! turn its errors into sensible parses:
//! * An identifier may contain `-` (Node: `my-col`), but a `-` does not continue an identifier
//!   whose text so far is an operator keyword, so `a sub-1` is `a sub -1` and `x eq-1` is
//!   `x eq -1` (Node lexes `sub-1` as one identifier and fails).
//! * A `-` is folded into a following number (`-5` is the literal -5), as in Node.
//!
//! Keywords are not recognised here: words are [`Tok::Ident`] and the parser decides, because
//! `eq` and `year` are only special in some positions.

use std::ops::Range;

use super::ast::{BinaryOp, Literal};
use super::ParseError;
use crate::time::parse_timestamp;

/// A token kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A word: member name, keyword, function name.
    Ident(String),
    /// A literal (number, string, typed literal).
    Lit(Literal),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `/` (member paths)
    Slash,
    /// `-` not followed by a digit: unary negation.
    Minus,
    /// End of input.
    Eof,
}

/// A token and its byte span in the input.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Range<usize>,
}

/// Words that end an identifier before a `-` (see the module docs).
fn is_operator_keyword(word: &str) -> bool {
    word == "not" || BinaryOp::from_keyword(word).is_some()
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '@'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits `input` into tokens, ending with [`Tok::Eof`].
pub(crate) fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer { input, pos: 0 };
    let mut out = Vec::new();
    loop {
        let t = lexer.next_token()?;
        let eof = t.tok == Tok::Eof;
        out.push(t);
        if eof {
            return Ok(out);
        }
    }
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.input
            .get(self.pos + offset..)
            .and_then(|s| s.chars().next())
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        while let Some(c) = self.peek() {
            if matches!(c, ' ' | '\t' | '\r' | '\n') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token {
                tok: Tok::Eof,
                span: start..start,
            });
        };
        let single = |tok: Tok| Token {
            tok,
            span: start..start + 1,
        };
        let tok = match c {
            '(' => single(Tok::LParen),
            ')' => single(Tok::RParen),
            ',' => single(Tok::Comma),
            '/' => single(Tok::Slash),
            '-' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => {
                return self.number(start);
            }
            '-' => single(Tok::Minus),
            '\'' => {
                let s = self.string(start)?;
                return Ok(Token {
                    tok: Tok::Lit(Literal::String(s)),
                    span: start..self.pos,
                });
            }
            c if c.is_ascii_digit() => return self.number(start),
            c if is_ident_start(c) => return self.word(start),
            c => {
                return Err(ParseError::new(
                    format!("unexpected character '{c}'"),
                    start..start + c.len_utf8(),
                ))
            }
        };
        self.pos = tok.span.end;
        Ok(tok)
    }

    /// A word, or a typed literal when the word is directly followed by a quote.
    fn word(&mut self, start: usize) -> Result<Token, ParseError> {
        self.pos += self.peek().map_or(1, char::len_utf8);
        while let Some(c) = self.peek() {
            if is_ident_continue(c) {
                self.pos += c.len_utf8();
            } else if c == '-'
                && self.peek_at(1).is_some_and(is_ident_continue)
                && !is_operator_keyword(&self.input[start..self.pos])
            {
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = &self.input[start..self.pos];
        if self.peek() != Some('\'') {
            return Ok(Token {
                tok: Tok::Ident(word.to_string()),
                span: start..self.pos,
            });
        }
        let quote = self.pos;
        let text = self.string(quote)?;
        let span = start..self.pos;
        let lit = match word {
            "datetime" => {
                // OData v3 datetime literals may omit the zone; they then mean UTC.
                let t = parse_timestamp(&text)
                    .or_else(|e| parse_timestamp(&format!("{text}Z")).map_err(|_| e))
                    .map_err(|e| ParseError::new(format!("invalid datetime literal: {e}"), span.clone()))?;
                Literal::DateTime(t)
            }
            "datetimeoffset" => {
                let t = parse_timestamp(&text).map_err(|e| {
                    ParseError::new(format!("invalid datetimeoffset literal: {e}"), span.clone())
                })?;
                Literal::DateTimeOffset(t)
            }
            "guid" => {
                if !is_guid(&text) {
                    return Err(ParseError::new(
                        format!("invalid guid literal '{text}': expected 8-4-4-4-12 hex digits"),
                        span,
                    ));
                }
                Literal::Guid(text)
            }
            _ => {
                return Err(ParseError::new(
                    format!("unknown typed literal '{word}': expected datetime, datetimeoffset or guid before a quote"),
                    start..quote,
                ))
            }
        };
        Ok(Token {
            tok: Tok::Lit(lit),
            span,
        })
    }

    /// A single-quoted string starting at `start`; `''` is an embedded quote.
    fn string(&mut self, start: usize) -> Result<String, ParseError> {
        self.pos = start + 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ParseError::new(
                        "unterminated string literal",
                        start..self.input.len(),
                    ))
                }
                Some('\'') if self.peek_at(1) == Some('\'') => {
                    s.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// `-? digits (. digits)? ([eE] [+-]? digits)? [LlFfMmDd]?`
    fn number(&mut self, start: usize) -> Result<Token, ParseError> {
        let b = self.input.as_bytes();
        let mut p = start;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        let digits = |p: &mut usize| {
            let s = *p;
            while b.get(*p).is_some_and(u8::is_ascii_digit) {
                *p += 1;
            }
            *p - s
        };
        digits(&mut p);
        let mut real = false;
        if b.get(p) == Some(&b'.') {
            p += 1;
            real = true;
            if digits(&mut p) == 0 {
                return Err(ParseError::new("expected a digit after '.'", start..p));
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            p += 1;
            real = true;
            if matches!(b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if digits(&mut p) == 0 {
                return Err(ParseError::new(
                    "expected a digit in the exponent",
                    start..p,
                ));
            }
        }
        let text = &self.input[start..p];
        let suffix = b.get(p).copied().filter(|c| b"LlFfMmDd".contains(c));
        if suffix.is_some() {
            p += 1;
        }
        self.pos = p;
        let span = start..p;
        if self
            .peek()
            .is_some_and(|c| is_ident_continue(c) || c == '.')
        {
            let end = p + self.peek().map_or(0, char::len_utf8);
            return Err(ParseError::new("invalid number literal", start..end));
        }
        let lit = match suffix {
            Some(b'L' | b'l') => {
                if real {
                    return Err(ParseError::new("the L suffix needs an integer", span));
                }
                Literal::Int(text.parse().map_err(|_| {
                    ParseError::new(
                        "integer literal out of range for a 64-bit integer",
                        span.clone(),
                    )
                })?)
            }
            None if !real => match text.parse::<i64>() {
                Ok(i) => Literal::Int(i),
                // Too large for an i64: keep it as a number, like Node (everything is a double).
                Err(_) => Literal::Number(parse_finite(text, &span)?),
            },
            _ => Literal::Number(parse_finite(text, &span)?),
        };
        Ok(Token {
            tok: Tok::Lit(lit),
            span,
        })
    }
}

fn parse_finite(text: &str, span: &Range<usize>) -> Result<f64, ParseError> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(ParseError::new("number literal out of range", span.clone())),
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
