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

use crate::capabilities::Capabilities;
use crate::client::{query_string, Client};
use crate::error::{Error, Result};
use crate::store::page::{PulledPage, RowKeyCell};
use crate::store::queue::{self as q, DeltaToken};
use crate::store::TableDefinition;
use crate::transport::{HttpResponse, Method};

use super::session::Session;

/// The protocol's default page size, in rows: what a pull asks of a server that does not say
/// how large a page it allows (the official servers), and the largest explicit page size that
/// needs no discovery (every Mobile Apps server serves it).
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Largest page asked of a server that does not announce its `page_size_max`, in rows (the
/// official Node server refuses `$top` above 1000); larger explicit sizes are clamped to it.
pub const PAGE_SIZE_MAX: u32 = 1000;
/// Longest query id, in characters (`^[^|]{0,255}$`).
pub const QUERY_ID_CHARS_MAX: usize = 255;

/// Options of a pull.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullOptions {
    /// Rows per request (`$top`). `None` (the default): the largest page the server allows, as
    /// its `GET /$capabilities` says (`page_size_max`, docs/extensions.md), or
    /// [`PAGE_SIZE_DEFAULT`] when it says nothing (the official servers). An explicit size wins,
    /// clamped to the server's `page_size_max` (or to [`PAGE_SIZE_MAX`] on a server that does
    /// not announce one); it must be at least 1.
    pub page_size: Option<u32>,
}

impl PullOptions {
    /// Options with an explicit page size.
    pub fn with_page_size(page_size: u32) -> Self {
        PullOptions {
            page_size: Some(page_size),
        }
    }
}

/// Whether choosing the page size needs the server's capabilities (pure): an automatic size
/// does, and so does an explicit one above [`PAGE_SIZE_DEFAULT`] (it may have to be clamped).
/// An explicit size up to the protocol's default is served by every server as it is, so such a
/// pull costs no discovery request.
pub(crate) fn page_size_needs_discovery(requested: Option<u32>) -> bool {
    requested.is_none_or(|n| n > PAGE_SIZE_DEFAULT)
}

/// The `$top` of a pull's requests (pure): see [`PullOptions::page_size`]. `capabilities` is
/// what the server said, when known.
pub(crate) fn choose_page_size(
    requested: Option<u32>,
    capabilities: Option<&Capabilities>,
) -> Result<u32> {
    let server_max = capabilities.and_then(|c| c.page_size_max);
    match requested {
        Some(0) => Err(Error::InvalidConfig(
            "page_size must be at least 1 row".into(),
        )),
        Some(n) => Ok(n.min(server_max.unwrap_or(PAGE_SIZE_MAX))),
        None => Ok(server_max.unwrap_or(PAGE_SIZE_DEFAULT)),
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

/// The (`updatedAt`, `id`) key of row `r` of a page; rows without one are garbage for keyset
/// paging.
fn row_key(page: &PulledPage, r: usize) -> Result<DeltaToken> {
    match page.key(r) {
        RowKeyCell::Key { id, updated_at } => Ok(DeltaToken {
            updated_at: updated_at.to_string(),
            id: id.to_string(),
        }),
        RowKeyCell::NoId => Err(Error::InvalidResponse(
            "a pulled row has no string id".into(),
        )),
        RowKeyCell::InvalidUpdatedAt { id, updated_at } => Err(Error::InvalidResponse(format!(
            "row {id:?} has an invalid updatedAt {updated_at:?}"
        ))),
        RowKeyCell::NoUpdatedAt { id } => Err(Error::InvalidResponse(format!(
            "row {id:?} has no updatedAt"
        ))),
    }
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

/// What one page request asks, apart from the position: the same for every page of a pull.
struct PageQuery<'a> {
    client: &'a Client,
    table: &'a str,
    /// The local table the rows are decoded for.
    def: TableDefinition,
    user_filter: Option<String>,
    extra: Vec<(String, String)>,
    page_size: u32,
}

/// One page as received: its rows (decoded for the local table) and whether the server
/// announced more (`rel=next`).
struct Page {
    rows: PulledPage,
    next_link: Option<String>,
}

impl PageQuery<'_> {
    /// Sends the keyset request for the page after `after` and reads the answer.
    async fn fetch(&self, after: Option<&DeltaToken>) -> Result<Page> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(f) = page_filter(self.user_filter.as_deref(), after) {
            pairs.push(("$filter", f));
        }
        pairs.push(("$orderby", "updatedAt,id".into()));
        pairs.push(("$top", self.page_size.to_string()));
        pairs.push(("__includeDeleted", "true".into()));
        for (k, v) in &self.extra {
            pairs.push((k.as_str(), v.clone()));
        }
        let url = format!(
            "{}?{}",
            self.client.table_url(self.table, None),
            query_string(&pairs)
        );
        let resp = self
            .client
            .transport()
            .send(self.client.request(Method::Get, url, None))
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
        // Decoded here, on the runtime, while the previous page is applied on the blocking pool.
        let rows = PulledPage::decode(&self.def, &resp.body, || parse_page(&resp).map(|_| ()))?;
        Ok(Page {
            rows,
            next_link: response_next_link(&resp),
        })
    }
}

/// Checks a page before any of it is applied (pure): every row has a key, and the last key lies
/// beyond the pull position `after` (a server that ignored the keyset would make the pull loop
/// forever). Returns the last row's key, the position after this page; `None` for an empty page.
fn check_page(rows: &PulledPage, after: Option<&DeltaToken>) -> Result<Option<DeltaToken>> {
    for r in 0..rows.len() {
        if let RowKeyCell::Key { .. } = rows.key(r) {
            continue;
        }
        row_key(rows, r)?;
    }
    let Some(last) = rows.len().checked_sub(1) else {
        return Ok(None);
    };
    let last_key = row_key(rows, last)?;
    if let Some(t) = after {
        if (&last_key.updated_at, &last_key.id) <= (&t.updated_at, &t.id) {
            return Err(Error::InvalidResponse(format!(
                "the server returned rows at or before the pull position ({}, {:?}); it does not \
                 support keyset paging on updatedAt,id",
                t.updated_at, t.id
            )));
        }
    }
    Ok(Some(last_key))
}

/// Pulls `table`. The caller holds the context's sync lock. The session's capabilities are
/// asked (once per session) only when the page size needs them, see
/// [`page_size_needs_discovery`].
///
/// Pages are fetched one ahead: while page N is applied (one local transaction on the blocking
/// pool), the request for page N+1 is already out, since its keyset position is page N's last
/// row, known before page N is applied. At most two pages are held in memory. When the
/// look-ahead request fails, page N is still applied (and its token saved) before the error is
/// returned, so an interrupted pull resumes after the last page that arrived.
pub(crate) async fn pull(
    session: &Session,
    table: &str,
    query_id: Option<&str>,
    query: &str,
    options: PullOptions,
) -> Result<PullSummary> {
    let (client, store) = (&session.client, &session.store);
    let def = store.table(table)?.clone();
    let query_id = check_query_id(query_id)?.map(str::to_string);
    choose_page_size(options.page_size, None)?;
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

    // A pulled row would overwrite un-pushed local edits: push the whole queue first (parents
    // before children across tables). If that push fails, so does the pull.
    let t = table.to_string();
    if store.run(move |c, _| q::pending_count(c, Some(&t))).await? > 0 {
        super::push::push_all(session).await?;
    }

    let known = if page_size_needs_discovery(options.page_size) {
        Some(
            session
                .known_capabilities()
                .await
                .map_err(|e| Error::Network(e.to_string()))?,
        )
    } else {
        session.capabilities_if_known()
    };
    let page_query = PageQuery {
        client,
        table,
        def,
        user_filter: parsed.filter.as_ref().map(|f| f.to_string()),
        extra: parsed.extra.clone(),
        page_size: choose_page_size(options.page_size, known.as_ref())?,
    };

    let mut token = match &query_id {
        Some(qid) => {
            let (t, qid) = (table.to_string(), qid.clone());
            store.run(move |c, _| q::load_token(c, &t, &qid)).await?
        }
        None => None,
    };
    let mut summary = PullSummary::default();
    let mut fetched = Some(page_query.fetch(token.as_ref()).await);
    while let Some(page) = fetched.take() {
        let page = page?;
        summary.pages += 1;
        // Integer ids: the server assigns them, so rows made offline could never be pushed.
        // Refused before anything of the page is applied.
        if page.rows.has_numeric_id() {
            return Err(Error::IntegerIdTable(table.to_owned()));
        }
        // An empty page ends the pull even with a next link: there is no row to go on from.
        let Some(last_key) = check_page(&page.rows, token.as_ref())? else {
            break;
        };
        // A short page is the last one only if the server does not say there is more (it may cap
        // pages below our `$top`).
        let more =
            page.rows.len() as u64 >= u64::from(page_query.page_size) || page.next_link.is_some();
        if let Some(link) = &page.next_link {
            tracing::debug!(table, rows = page.rows.len(), %link, "the server announces a next page");
        }
        let (s, qid, tok) = (store.clone(), query_id.clone(), last_key.clone());
        let tname = table.to_string();
        let rows = page.rows;
        let apply = store
            .run(move |c, _| q::apply_page(c, s.table(&tname)?, &rows, qid.as_deref(), Some(&tok)));
        let applied = if more {
            let (applied, next) = tokio::join!(apply, page_query.fetch(Some(&last_key)));
            fetched = Some(next);
            applied?
        } else {
            apply.await?
        };
        summary.upserted += applied.upserted;
        summary.deleted += applied.deleted;
        summary.skipped += applied.skipped;
        token = Some(last_key);
        // Committed: the app may read these rows now.
        session.monitor.changed(table, applied.changed_ids);
        // A checkpoint: the page and its token are committed.
        let rows = summary.upserted + summary.deleted + summary.skipped;
        session.monitor.pulled(table, summary.pages, rows);
        if session.monitor.cancel_requested() {
            return Err(Error::Cancelled);
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
    fn page_sizes() {
        let ours = Capabilities {
            page_size_max: Some(1000),
            ..Capabilities::default()
        };
        let official = Capabilities::default();
        // Automatic: the server's largest page, else the protocol's default.
        assert!(page_size_needs_discovery(None));
        assert_eq!(choose_page_size(None, Some(&ours)).unwrap(), 1000);
        assert_eq!(choose_page_size(None, Some(&official)).unwrap(), 50);
        assert_eq!(choose_page_size(None, None).unwrap(), 50);
        // Explicit: wins, clamped to what the server allows (1000 when it does not say).
        assert!(!page_size_needs_discovery(Some(3)));
        assert!(!page_size_needs_discovery(Some(50)));
        assert!(page_size_needs_discovery(Some(51)));
        assert_eq!(choose_page_size(Some(3), None).unwrap(), 3);
        assert_eq!(choose_page_size(Some(3), Some(&ours)).unwrap(), 3);
        assert_eq!(choose_page_size(Some(5000), Some(&ours)).unwrap(), 1000);
        assert_eq!(choose_page_size(Some(5000), Some(&official)).unwrap(), 1000);
        let small = Capabilities {
            page_size_max: Some(10),
            ..Capabilities::default()
        };
        assert_eq!(choose_page_size(Some(50), Some(&small)).unwrap(), 10);
        assert!(matches!(
            choose_page_size(Some(0), Some(&ours)),
            Err(Error::InvalidConfig(_))
        ));
    }

    /// `rows` decoded as a page of a table with only the system columns.
    fn decoded(rows: &[Map<String, Value>]) -> PulledPage {
        let body = serde_json::to_vec(rows).unwrap();
        PulledPage::decode(&TableDefinition::new("T"), &body, || Ok(())).unwrap()
    }

    #[test]
    fn pages_must_move_past_the_position() {
        let row = |u: &str, id: &str| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({"id": id, "updatedAt": u})).unwrap()
        };
        let t = DeltaToken {
            updated_at: "2020-01-01T00:00:00.000Z".into(),
            id: "b".into(),
        };
        assert_eq!(check_page(&decoded(&[]), Some(&t)).unwrap(), None);
        let ahead = [row("2020-01-01T00:00:00Z", "c")];
        assert_eq!(
            check_page(&decoded(&ahead), Some(&t)).unwrap(),
            Some(DeltaToken {
                updated_at: "2020-01-01T00:00:00.000Z".into(),
                id: "c".into()
            })
        );
        for behind in [
            row("2020-01-01T00:00:00.000Z", "b"),
            row("2020-01-01T00:00:00.000Z", "a"),
            row("2019-12-31T23:59:59.999Z", "z"),
        ] {
            assert!(matches!(
                check_page(&decoded(&[behind]), Some(&t)),
                Err(Error::InvalidResponse(_))
            ));
        }
        // Any row without a key spoils the page, not only the last one.
        let mut bad = ahead.to_vec();
        bad.insert(0, serde_json::from_str(r#"{"id":"x"}"#).unwrap());
        assert!(matches!(
            check_page(&decoded(&bad), None),
            Err(Error::InvalidResponse(_))
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
        let messages: Vec<String> = [
            r#"{"id":"a","updatedAt":"yesterday"}"#,
            r#"{"id":"a","updatedAt":5}"#,
            r#"{"id":"a"}"#,
            r#"{"id":null,"updatedAt":"2020-01-01T00:00:00Z"}"#,
        ]
        .iter()
        .map(|row| {
            let page = decoded(&[serde_json::from_str(row).unwrap()]);
            match row_key(&page, 0) {
                Err(Error::InvalidResponse(m)) => m,
                other => panic!("{row}: {other:?}"),
            }
        })
        .collect();
        assert_eq!(
            messages,
            [
                "row \"a\" has an invalid updatedAt \"yesterday\"",
                "row \"a\" has no updatedAt",
                "row \"a\" has no updatedAt",
                "a pulled row has no string id",
            ]
        );
    }
}
