//! Pull: download a table (or the rows matching a query) into the local store.
//!
//! Paging is keyset paging on (`updatedAt`, `id`), not the reference's `ge` + `$skip` scheme
//! (ARCHITECTURE.md "Incremental pull"). Each request asks for
//! `$filter=(<user filter>) and (updatedAt ge T and (updatedAt gt T or (updatedAt eq T and id gt 'I')))`,
//! `$orderby=updatedAt,id`, `$top=<page_size>`, `__includeDeleted=true`, where (T, I) is the key
//! of the last row received. So:
//! * no boundary row is ever downloaded twice, and a pull with nothing new costs one request;
//! * any number of rows sharing one `updatedAt` page correctly (the `id` breaks the tie);
//! * with a query id, (T, I) is the delta token, saved in the same local transaction as the
//!   page's rows, so an interrupted pull resumes exactly after the last applied row.
//!
//! When to stop: a server may serve fewer rows than `$top` asked for (the official .NET server
//! caps pages at 50 and says so with a `Link: <…>; rel=next` header), so a short page alone does
//! not mean the end. The pull goes on while a page is full **or** its answer carries a
//! `rel=next` link (with or without angle brackets: ours and the official Node server send none),
//! and ends on an empty page or on a short page without a next link. The link itself is not
//! followed: the next request is our own keyset query after the last row received, which is
//! exact whatever paging scheme the server's link uses. A server that caps pages silently (no
//! link) still ends the pull early; the next incremental pull picks up from the saved token.
//!
//! A row with a queued operation is not written (the local edit wins until it is pushed), but
//! the token still moves past it: keyset paging cannot revisit it without re-reading the page.
//! This is safe because a pull pushes first, so such rows only exist when that push left errors
//! the app chose to keep, and resolving those errors brings the server's copy.

use serde_json::{Map, Value};
use tablesync_protocol::odata::query::{parse_query_string, TableQuery};

use crate::client::query_string;
use crate::error::{Error, Result};
use crate::store::queue::{self as q, DeltaToken};
use crate::store::rows;
use crate::transport::{HttpResponse, Method};

use super::session::Session;

/// Default rows per request (the protocol's default page size).
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Largest accepted page size (the official Node server refuses `$top` above 1000).
pub const PAGE_SIZE_MAX: u32 = 1000;
/// Longest query id, in characters (`^[^|]{0,255}$`).
pub const QUERY_ID_CHARS_MAX: usize = 255;

/// Options of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullOptions {
    /// Rows per request (`$top`), 1..=[`PAGE_SIZE_MAX`].
    pub page_size: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            page_size: PAGE_SIZE_DEFAULT,
        }
    }
}

impl PullOptions {
    /// Options with the given page size.
    pub fn with_page_size(page_size: u32) -> Self {
        PullOptions { page_size }
    }
}

/// What a pull did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullSummary {
    /// Requests that returned a page.
    pub pages: u64,
    /// Rows written locally.
    pub upserted: u64,
    /// Local rows removed because the server marked them deleted.
    pub deleted: u64,
    /// Rows not written because they have a queued operation (or no id).
    pub skipped: u64,
}

/// Validates a query id: `None` or empty means a full (non-incremental) pull.
pub(crate) fn check_query_id(query_id: Option<&str>) -> Result<Option<&str>> {
    match query_id {
        None | Some("") => Ok(None),
        Some(q) if q.contains('|') || q.chars().count() > QUERY_ID_CHARS_MAX => {
            Err(Error::InvalidQueryId)
        }
        Some(q) => Ok(Some(q)),
    }
}

/// Parses an OData query string given to pull/purge/read.
pub(crate) fn parse_query(query: &str) -> Result<TableQuery> {
    let query = query.trim_start_matches('?');
    parse_query_string(query).map_err(|e| Error::InvalidQuery(e.message))
}

/// The target of the `rel=next` link in a `Link` header value, if any.
///
/// Accepts RFC 8288 links (`<url>; rel="next"`, several separated by commas) and the bare form
/// of the Mobile Apps servers (`http://host/tables/T?…; rel=next`, where everything before the
/// first `;` is the URL and may itself contain commas). `rel` may list several relation types.
pub fn next_link(value: &str) -> Option<String> {
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (target, after) = match rest.strip_prefix('<') {
            Some(r) => {
                let end = r.find('>')?;
                (&r[..end], &r[end + 1..])
            }
            None => match rest.find(';') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            },
        };
        // This link's parameters end where the next link starts (a comma).
        let (params, next) = match after.find(',') {
            Some(i) => (&after[..i], &after[i + 1..]),
            None => (after, ""),
        };
        let is_next = params.split(';').any(|param| {
            let Some((name, val)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && val
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next && !target.trim().is_empty() {
            return Some(target.trim().to_string());
        }
        rest = next.trim_start();
    }
    None
}

/// The `rel=next` link of a list answer (the first `Link` header that has one).
fn response_next_link(resp: &HttpResponse) -> Option<String> {
    resp.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
        .find_map(|(_, v)| next_link(v))
}

/// Reads a list answer: a JSON array of objects, or `{"results": [...]}` (inline count).
pub fn parse_page(resp: &HttpResponse) -> Result<Vec<Map<String, Value>>> {
    let value: Value = serde_json::from_slice(&resp.body).map_err(|e| {
        Error::InvalidResponse(format!(
            "list response is not JSON ({e}): {}",
            snippet(resp)
        ))
    })?;
    let items = match value {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("results") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Error::InvalidResponse(format!(
                    "list response is an object without a results array: {}",
                    snippet(resp)
                )))
            }
        },
        _ => {
            return Err(Error::InvalidResponse(format!(
                "list response is not an array: {}",
                snippet(resp)
            )))
        }
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Object(m) => Ok(m),
            other => Err(Error::InvalidResponse(format!(
                "list element is not an object: {}",
                truncate(&other.to_string())
            ))),
        })
        .collect()
}

fn truncate(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 200;
    s.chars().take(SHOWN_CHARS_MAX).collect()
}

fn snippet(resp: &HttpResponse) -> String {
    truncate(&resp.body_text())
}

/// The (`updatedAt`, `id`) key of a pulled row; rows without one are garbage for keyset paging.
fn row_key(item: &Map<String, Value>) -> Result<DeltaToken> {
    let id = match item.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(Error::InvalidResponse(
                "a pulled row has no string id".into(),
            ))
        }
    };
    let updated_at = match item.get("updatedAt") {
        Some(Value::String(s)) => rows::normalize_date(s).ok_or_else(|| {
            Error::InvalidResponse(format!("row {id:?} has an invalid updatedAt {s:?}"))
        })?,
        _ => {
            return Err(Error::InvalidResponse(format!(
                "row {id:?} has no updatedAt"
            )))
        }
    };
    Ok(DeltaToken { updated_at, id })
}

/// OData string literal: single quotes doubled.
fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `$filter` of one page request.
///
/// The leading `updatedAt ge T` is implied by the keyset condition after it, but it lets both
/// stores' planners read the (`updatedAt`, `id`) index as one range from the token instead of
/// OR-ing two index searches and sorting (ARCHITECTURE.md, "Indexes").
pub(crate) fn page_filter(user_filter: Option<&str>, after: Option<&DeltaToken>) -> Option<String> {
    let keyset = after.map(|t| {
        format!(
            "(updatedAt ge datetimeoffset'{u}') and ((updatedAt gt datetimeoffset'{u}') or ((updatedAt eq datetimeoffset'{u}') and (id gt {i})))",
            u = t.updated_at,
            i = odata_string(&t.id)
        )
    });
    match (user_filter, keyset) {
        (Some(f), Some(k)) => Some(format!("({f}) and ({k})")),
        (Some(f), None) => Some(f.to_string()),
        (None, k) => k,
    }
}

/// Pulls `table`. The caller holds the context's sync lock.
pub(crate) async fn pull(
    session: &Session,
    table: &str,
    query_id: Option<&str>,
    query: &str,
    options: PullOptions,
) -> Result<PullSummary> {
    let (client, store) = (&session.client, &session.store);
    store.table(table)?;
    let query_id = check_query_id(query_id)?.map(str::to_string);
    if options.page_size == 0 || options.page_size > PAGE_SIZE_MAX {
        return Err(Error::InvalidConfig(format!(
            "page_size must be between 1 and {PAGE_SIZE_MAX} rows, got {}",
            options.page_size
        )));
    }
    let parsed = parse_query(query)?;
    if parsed.select.is_some() {
        return Err(Error::UnsupportedPullOption("$select"));
    }
    if !parsed.order_by.is_empty() {
        return Err(Error::UnsupportedPullOption("$orderby"));
    }
    if parsed.skip.is_some() {
        return Err(Error::UnsupportedPullOption("$skip"));
    }
    if parsed.top.is_some() {
        return Err(Error::UnsupportedPullOption("$top"));
    }
    if parsed.include_deleted || query.to_ascii_lowercase().contains("__includedeleted") {
        return Err(Error::UnsupportedPullOption("__includeDeleted"));
    }
    let user_filter = parsed.filter.as_ref().map(|f| f.to_string());

    // A pulled row would overwrite un-pushed local edits: push the whole queue first (parents
    // before children across tables). If that push fails, so does the pull.
    let t = table.to_string();
    if store.run(move |c, _| q::pending_count(c, Some(&t))).await? > 0 {
        super::push::push_all(session).await?;
    }

    let mut token = match &query_id {
        Some(qid) => {
            let (t, qid) = (table.to_string(), qid.clone());
            store.run(move |c, _| q::load_token(c, &t, &qid)).await?
        }
        None => None,
    };
    let mut summary = PullSummary::default();
    loop {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(f) = page_filter(user_filter.as_deref(), token.as_ref()) {
            pairs.push(("$filter", f));
        }
        pairs.push(("$orderby", "updatedAt,id".into()));
        pairs.push(("$top", options.page_size.to_string()));
        pairs.push(("__includeDeleted", "true".into()));
        for (k, v) in &parsed.extra {
            pairs.push((k.as_str(), v.clone()));
        }
        let url = format!("{}?{}", client.table_url(table, None), query_string(&pairs));
        let resp = client
            .transport()
            .send(client.request(Method::Get, url, None))
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        match resp.status {
            200..=299 => {}
            401 => return Err(Error::Unauthorized),
            status => {
                return Err(Error::Http {
                    status,
                    body: snippet(&resp),
                })
            }
        }
        let page = parse_page(&resp)?;
        let next = response_next_link(&resp);
        summary.pages += 1;
        // An empty page ends the pull even with a next link: there is no row to go on from.
        let Some(last) = page.last() else {
            break;
        };
        // Validate the whole page before applying any of it, and insist that the server honoured
        // the keyset: a last key not beyond the token would make the pull loop forever.
        for item in &page {
            row_key(item)?;
        }
        let last_key = row_key(last)?;
        if let Some(t) = &token {
            if (&last_key.updated_at, &last_key.id) <= (&t.updated_at, &t.id) {
                return Err(Error::InvalidResponse(format!(
                    "the server returned rows at or before the pull position ({}, {:?}); it does not \
                     support keyset paging on updatedAt,id",
                    t.updated_at, t.id
                )));
            }
        }
        // A short page is the last one only if the server does not say there is more (it may cap
        // pages below our `$top`).
        let more = page.len() as u64 >= u64::from(options.page_size) || next.is_some();
        if let Some(link) = &next {
            tracing::debug!(table, rows = page.len(), %link, "the server announces a next page");
        }
        let (s, qid, tok) = (store.clone(), query_id.clone(), last_key.clone());
        let tname = table.to_string();
        let applied = store
            .run(move |c, _| q::apply_page(c, s.table(&tname)?, &page, qid.as_deref(), Some(&tok)))
            .await?;
        summary.upserted += applied.upserted;
        summary.deleted += applied.deleted;
        summary.skipped += applied.skipped;
        token = Some(last_key);
        if !more {
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids() {
        assert_eq!(check_query_id(None).unwrap(), None);
        assert_eq!(check_query_id(Some("")).unwrap(), None);
        assert_eq!(check_query_id(Some("all")).unwrap(), Some("all"));
        assert!(matches!(
            check_query_id(Some("a|b")),
            Err(Error::InvalidQueryId)
        ));
        assert!(check_query_id(Some(&"x".repeat(255))).is_ok());
        assert!(matches!(
            check_query_id(Some(&"x".repeat(256))),
            Err(Error::InvalidQueryId)
        ));
    }

    #[test]
    fn filters() {
        assert_eq!(page_filter(None, None), None);
        assert_eq!(
            page_filter(Some("complete eq false"), None).as_deref(),
            Some("complete eq false")
        );
        let t = DeltaToken {
            updated_at: "2020-01-01T00:00:00.000Z".into(),
            id: "o'k".into(),
        };
        assert_eq!(
            page_filter(Some("complete eq false"), Some(&t)).as_deref(),
            Some("(complete eq false) and ((updatedAt ge datetimeoffset'2020-01-01T00:00:00.000Z') and ((updatedAt gt datetimeoffset'2020-01-01T00:00:00.000Z') or ((updatedAt eq datetimeoffset'2020-01-01T00:00:00.000Z') and (id gt 'o''k'))))")
        );
    }

    #[test]
    fn next_links() {
        let bare = "http://127.0.0.1:8080/tables/TodoItem?$orderby=updatedAt,id&$skip=50; rel=next";
        assert_eq!(
            next_link(bare).as_deref(),
            Some("http://127.0.0.1:8080/tables/TodoItem?$orderby=updatedAt,id&$skip=50")
        );
        assert_eq!(
            next_link("<https://h/tables/T?$skip=50&$top=50>; rel=\"next\"").as_deref(),
            Some("https://h/tables/T?$skip=50&$top=50")
        );
        assert_eq!(
            next_link("<https://h/a>; rel=prev, <https://h/b>; title=\"x\"; REL=\"last next\"")
                .as_deref(),
            Some("https://h/b")
        );
        assert_eq!(
            next_link("<https://h/b>; rel=next, <https://h/a>; rel=prev").as_deref(),
            Some("https://h/b")
        );
        for none in [
            "",
            "http://h/tables/T",
            "<https://h/a>; rel=prev",
            "<https://h/a>; rel=nextpage",
            "; rel=next",
            "<>; rel=next",
            "<https://h/unterminated; rel=next",
        ] {
            assert_eq!(next_link(none), None, "{none:?}");
        }
    }

    #[test]
    fn pages() {
        let ok = HttpResponse::new(200, r#"[{"id":"a"}]"#);
        assert_eq!(parse_page(&ok).unwrap().len(), 1);
        let counted = HttpResponse::new(200, r#"{"results":[{"id":"a"},{"id":"b"}],"count":2}"#);
        assert_eq!(parse_page(&counted).unwrap().len(), 2);
        for garbage in ["", "nope", "{}", "[1]", "\"x\"", "{\"results\":5}"] {
            assert!(
                matches!(
                    parse_page(&HttpResponse::new(200, garbage)),
                    Err(Error::InvalidResponse(_))
                ),
                "{garbage}"
            );
        }
        assert!(matches!(
            row_key(&serde_json::from_str(r#"{"id":"a","updatedAt":"yesterday"}"#).unwrap()),
            Err(Error::InvalidResponse(_))
        ));
    }
}
