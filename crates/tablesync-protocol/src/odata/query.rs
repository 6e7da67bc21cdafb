//! The table query options of one request (protocol.md 4.1): parsing a raw query string into a
//! validated [`TableQuery`] and printing one back in canonical form.
//!
//! Rules (shared by the server, which parses, and the client, which prints):
//! * pairs are split on `&`, then on the first `=`; keys and values are percent-decoded and `+`
//!   means a space; a pair without `=` has an empty value; empty pairs are skipped;
//! * option names are case-sensitive (`$filter`, not `$Filter`, as on Node) except
//!   `__includeDeleted`, whose key and `true`/`false` value are case-insensitive (as on .NET);
//! * an option given twice is an error (which value would win is ambiguous);
//! * an option with an empty value counts as given but absent (`$top=` means no `$top`);
//! * every other pair, including `ZUMO-API-VERSION` and unknown `$` options, is kept in
//!   [`TableQuery::extra`] in order.
//!
//! Limits on `$top` (page size) are the server's configuration, not checked here.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::ast::{Expr, OrderBy};
use super::{parse_filter, parse_orderby, parse_select, ParseError};
use crate::error::ErrorCode;
use crate::headers::INCLUDE_DELETED;

/// The table query options of one request, parsed and validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableQuery {
    /// `$filter`
    pub filter: Option<Expr>,
    /// `$orderby` (empty when not given)
    pub order_by: Vec<OrderBy>,
    /// `$skip`
    pub skip: Option<u64>,
    /// `$top`
    pub top: Option<u64>,
    /// `$select`
    pub select: Option<Vec<String>>,
    /// `$inlinecount=allpages`
    pub inline_count: bool,
    /// `__includeDeleted=true`
    pub include_deleted: bool,
    /// Other name=value pairs, passed through (e.g. ZUMO-API-VERSION, __systemProperties), in order.
    pub extra: Vec<(String, String)>,
}

/// A malformed query string.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// `InvalidFilter`, `InvalidOrderBy`, `InvalidSelect` or `InvalidQueryOption`.
    pub code: ErrorCode,
    /// Human-readable message naming the option (and the position for parse errors).
    pub message: String,
    /// Byte offset into the (percent-decoded) option value, for parse errors.
    pub position: Option<usize>,
}

impl QueryError {
    fn option(message: String) -> Self {
        QueryError {
            code: ErrorCode::InvalidQueryOption,
            message,
            position: None,
        }
    }

    fn parse(code: ErrorCode, option: &str, e: ParseError) -> Self {
        QueryError {
            code,
            message: format!("{e} in {option}"),
            position: Some(e.position()),
        }
    }
}

fn decode(s: &str) -> Result<String, QueryError> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            QueryError::option(format!(
                "query parameter '{s}' is not valid UTF-8 after percent-decoding"
            ))
        })
}

fn parse_count(option: &str, value: &str) -> Result<u64, QueryError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::option(format!(
            "{option} must be a non-negative integer, found '{value}'"
        )));
    }
    value
        .parse()
        .map_err(|_| QueryError::option(format!("{option} is too large: '{value}'")))
}

/// Parses a raw (percent-encoded) query string like `$filter=...&$top=5` (no leading `?`).
pub fn parse_query_string(raw: &str) -> Result<TableQuery, QueryError> {
    let mut q = TableQuery::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        let value = decode(v)?;
        let known: Option<&'static str> = match key.as_str() {
            "$filter" => Some("$filter"),
            "$orderby" => Some("$orderby"),
            "$skip" => Some("$skip"),
            "$top" => Some("$top"),
            "$select" => Some("$select"),
            "$inlinecount" => Some("$inlinecount"),
            k if k.eq_ignore_ascii_case(INCLUDE_DELETED) => Some(INCLUDE_DELETED),
            _ => None,
        };
        let Some(option) = known else {
            q.extra.push((key, value));
            continue;
        };
        if seen.contains(&option) {
            return Err(QueryError::option(format!(
                "query option {option} is given more than once"
            )));
        }
        seen.push(option);
        if value.is_empty() {
            continue;
        }
        match option {
            "$filter" => {
                q.filter = Some(
                    parse_filter(&value)
                        .map_err(|e| QueryError::parse(ErrorCode::InvalidFilter, option, e))?,
                )
            }
            "$orderby" => {
                q.order_by = parse_orderby(&value)
                    .map_err(|e| QueryError::parse(ErrorCode::InvalidOrderBy, option, e))?
            }
            "$select" => {
                q.select = Some(
                    parse_select(&value)
                        .map_err(|e| QueryError::parse(ErrorCode::InvalidSelect, option, e))?,
                )
            }
            "$skip" => q.skip = Some(parse_count(option, &value)?),
            "$top" => q.top = Some(parse_count(option, &value)?),
            "$inlinecount" => {
                q.inline_count = match value.as_str() {
                    "allpages" => true,
                    "none" => false,
                    _ => {
                        return Err(QueryError::option(format!(
                            "$inlinecount must be 'allpages' or 'none', found '{value}'"
                        )))
                    }
                }
            }
            _ => {
                q.include_deleted = if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(QueryError::option(format!(
                        "{INCLUDE_DELETED} must be 'true' or 'false', found '{value}'"
                    )));
                }
            }
        }
    }
    Ok(q)
}

/// Characters percent-encoded in printed keys and values: everything that could end or split
/// a pair (`& = + #`), `%` itself, space (as `%20`), quotes and other characters that are not
/// safe in a URL query. `$ ( ) , : / @` stay readable.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl TableQuery {
    /// Canonical query string (no leading `?`): options in the order `$filter`, `$orderby`,
    /// `$skip`, `$top`, `$select`, `$inlinecount`, `__includeDeleted`, then the extras; values
    /// percent-encoded with spaces as `%20`. `parse_query_string` gives back an equal value.
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut push = |k: &str, v: &str| {
            parts.push(format!(
                "{}={}",
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE)
            ))
        };
        if let Some(f) = &self.filter {
            push("$filter", &f.to_string());
        }
        if !self.order_by.is_empty() {
            push("$orderby", &super::orderby_to_string(&self.order_by));
        }
        if let Some(s) = self.skip {
            push("$skip", &s.to_string());
        }
        if let Some(t) = self.top {
            push("$top", &t.to_string());
        }
        if let Some(sel) = &self.select {
            push("$select", &sel.join(","));
        }
        if self.inline_count {
            push("$inlinecount", "allpages");
        }
        if self.include_deleted {
            push(INCLUDE_DELETED, "true");
        }
        for (k, v) in &self.extra {
            push(k, v);
        }
        parts.join("&")
    }

    /// The value of the first extra parameter whose key equals `key` ignoring ASCII case
    /// (e.g. `ZUMO-API-VERSION`).
    pub fn extra_value(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}
