//! Table handlers: extract, call [`App`], render. One function per route, named `noun_verb`.

use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::batch::{idempotency_key, keyed_write};
use super::error::item_response;
use super::extract::{Caller, IfMatch, ItemPath, JsonObject, TablePath};
use crate::app::App;
use crate::batch::OpKind;
use crate::error::ApiError;
use crate::table::collection_id;

/// `GET /tables/{table}`: a bare array, or `{"results", "count"}` with `$inlinecount=allpages`;
/// a full page carries `Link: <next page URL>; rel=next` (the URL without angle brackets).
pub async fn items_list(
    State(app): State<Arc<App>>,
    TablePath(table): TablePath,
    Caller(caller): Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The URI as the client sent it: when an app nests the router under a prefix (`/sync`),
    // the plain `Uri` has the prefix stripped, and the next link must keep it.
    let raw_query = uri.query().unwrap_or("");
    let page = app.list(&table, &caller, raw_query).await?;
    // The rows are JSON already (the store encoded them off the cursor); only the envelope is
    // written here, byte for byte what serde_json made of `{"results": […], "count": n}`.
    let rows = page.items.into_json();
    let body = match page.count {
        Some(count) => {
            let mut body = Vec::with_capacity(rows.len() + 40);
            body.extend_from_slice(b"{\"results\":");
            body.extend_from_slice(&rows);
            body.extend_from_slice(format!(",\"count\":{count}}}").as_bytes());
            body
        }
        None => rows,
    };
    let json = HeaderValue::from_static("application/json");
    let mut response = ([(header::CONTENT_TYPE, json)], body).into_response();
    if let Some(link) = page
        .next_skip
        .and_then(|skip| next_link(&headers, &uri, skip))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// `GET /tables/{table}/{id}`.
pub async fn item_get(
    State(app): State<Arc<App>>,
    ItemPath(table, id): ItemPath,
    Caller(caller): Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let item = app
        .get(&table, &caller, &id, uri.query().unwrap_or(""))
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `POST /tables/{table}`: 201 with the stored item.
pub async fn item_insert(
    State(app): State<Arc<App>>,
    TablePath(table): TablePath,
    Caller(caller): Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if let Some(key) = idempotency_key(&headers)? {
        return keyed_write(
            &app,
            &caller,
            OpKind::Insert,
            table,
            None,
            None,
            key,
            Some(body),
        )
        .await;
    }
    let item = app.insert(&table, &caller, body).await?;
    Ok(item_response(StatusCode::CREATED, item))
}

/// `PATCH /tables/{table}/{id}`.
pub async fn item_update(
    State(app): State<Arc<App>>,
    ItemPath(table, id): ItemPath,
    Caller(caller): Caller,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if let Some(key) = idempotency_key(&headers)? {
        let (kind, body) = (OpKind::Update, Some(body));
        return keyed_write(&app, &caller, kind, table, Some(id), if_match, key, body).await;
    }
    let item = app
        .update(&table, &caller, &id, body, if_match.as_deref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `DELETE /tables/{table}/{id}`: 200 with the item (soft: the tombstone; hard: the row as it was).
pub async fn item_delete(
    State(app): State<Arc<App>>,
    ItemPath(table, id): ItemPath,
    Caller(caller): Caller,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(key) = idempotency_key(&headers)? {
        let kind = OpKind::Delete;
        return keyed_write(&app, &caller, kind, table, Some(id), if_match, key, None).await;
    }
    let item = app
        .delete(&table, &caller, &id, if_match.as_deref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `POST /tables/{table}/{id}`: undelete; 200 with the item. The body is ignored.
///
/// Every write carrying `Idempotency-Key` goes through `crate::batch` as a batch of one, so its
/// outcome is recorded with the write (docs/extensions.md section 3).
pub async fn item_undelete(
    State(app): State<Arc<App>>,
    ItemPath(table, id): ItemPath,
    Caller(caller): Caller,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(key) = idempotency_key(&headers)? {
        let kind = OpKind::Undelete;
        return keyed_write(&app, &caller, kind, table, Some(id), if_match, key, None).await;
    }
    let item = app
        .undelete(&table, &caller, &id, if_match.as_deref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `PATCH /tables/{table}` with the id in the body (or `?id=`): the Node server's
/// collection-URL update, answered exactly like `PATCH /tables/{table}/{id}`, `Idempotency-Key`
/// included (the same key on either URL is the same request).
pub async fn items_update(
    State(app): State<Arc<App>>,
    TablePath(table): TablePath,
    Caller(caller): Caller,
    IfMatch(if_match): IfMatch,
    uri: Uri,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let id = collection_id(Some(&body), &query_ids(&uri))?;
    if let Some(key) = idempotency_key(&headers)? {
        let (kind, id, body) = (OpKind::Update, Some(id), Some(body));
        return keyed_write(&app, &caller, kind, table, id, if_match, key, body).await;
    }
    let item = app
        .update(&table, &caller, &id, body, if_match.as_deref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `DELETE /tables/{table}?id=…`: the Node server's collection-URL delete, answered exactly
/// like `DELETE /tables/{table}/{id}`, `Idempotency-Key` included. Without `?id=` it is 400 (no
/// filter-wide deletes).
pub async fn items_delete(
    State(app): State<Arc<App>>,
    TablePath(table): TablePath,
    Caller(caller): Caller,
    IfMatch(if_match): IfMatch,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = collection_id(None, &query_ids(&uri))?;
    if let Some(key) = idempotency_key(&headers)? {
        let (kind, id) = (OpKind::Delete, Some(id));
        return keyed_write(&app, &caller, kind, table, id, if_match, key, None).await;
    }
    let item = app
        .delete(&table, &caller, &id, if_match.as_deref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// Every `id` value of the query string, percent-decoded (`+` is a space, as in forms).
fn query_ids(uri: &Uri) -> Vec<String> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == "id").then(|| decode(v))
        })
        .collect()
}

/// `GET /$capabilities`: what this server offers beyond the Mobile Apps protocol
/// (`docs/extensions.md` section 1). Clients that find no such document fall back to the plain
/// protocol.
pub async fn capabilities_get(State(app): State<Arc<App>>) -> Response {
    let limits = app.limits();
    let mut document = json!({
        "server": super::SERVER_VERSION,
        "page_size_max": limits.page_size_max,
        "batch": {
            "url": "$batch",
            "operations_max": limits.batch_operations_max,
            "body_bytes_max": limits.body_bytes_max,
        },
        "idempotency": { "retention_s": limits.idempotency_retention_s },
    });
    // The change feed (section 5), unless `subscribers_max = 0` turned it off.
    if limits.subscribers_max > 0 {
        document["changes"] = json!({
            "url": "$changes/{table}",
            "heartbeat_interval_ms": limits.feed_heartbeat_interval_ms,
        });
    }
    Json(document).into_response()
}

/// `GET /openapi.json`: the configured tables as OpenAPI 3.0 (`crate::openapi`), with `servers`
/// naming the path the document was asked on without its last segment, so the description
/// stays right when an app nests the router under a prefix. No API version needed; with
/// `[auth]`, a valid token is (deny by default).
pub async fn openapi_get(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = super::middleware::caller(&app, &headers)?;
    if app.auth_configured() && identity == crate::auth::Identity::Anonymous {
        return Err(ApiError::Unauthenticated);
    }
    let base = uri.path().strip_suffix("/openapi.json").unwrap_or("");
    let mut document = app.openapi().clone();
    document["servers"] = json!([{ "url": if base.is_empty() { "/" } else { base } }]);
    Ok(Json(document).into_response())
}

/// Fallback for paths no route matches.
pub async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// Fallback for a known path with an unsupported method.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not supported on {}", uri.path()))
}

/// `scheme://host/path?same query with $skip advanced; rel=next`, or None when the Host
/// header is missing or not a valid authority (the link would be wrong, so send none).
///
/// No angle brackets around the URL: both official clients take everything before the first
/// `;` as the next-page URL (protocol.md 1.2), so RFC 8288's `<…>` would break them.
fn next_link(headers: &HeaderMap, uri: &Uri, next_skip: u64) -> Option<HeaderValue> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .or_else(|| uri.authority().cloned())?;
    // Behind a TLS-terminating proxy the client's scheme is only known from the proxy's header.
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let query = with_skip(uri.query().unwrap_or(""), next_skip);
    HeaderValue::from_str(&format!(
        "{scheme}://{host}{}?{query}; rel=next",
        uri.path()
    ))
    .ok()
}

/// The same raw query with every `$skip` pair replaced by `$skip=<skip>` (appended last).
pub fn with_skip(raw: &str, skip: u64) -> String {
    let mut pairs: Vec<&str> = raw
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && percent_decode_str(key).decode_utf8_lossy() != "$skip"
        })
        .collect();
    let skip = format!("$skip={skip}");
    pairs.push(&skip);
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_is_replaced() {
        assert_eq!(with_skip("", 50), "$skip=50");
        assert_eq!(
            with_skip("$top=2&$skip=2&$orderby=id", 4),
            "$top=2&$orderby=id&$skip=4"
        );
        assert_eq!(
            with_skip("%24skip=2&%24filter=a%20eq%201", 3),
            "%24filter=a%20eq%201&$skip=3"
        );
    }

    #[test]
    fn link_uses_host_and_path() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.org:8081"));
        let uri: Uri = "/tables/TodoItem?$top=2".parse().unwrap();
        let link = next_link(&headers, &uri, 2).unwrap();
        assert_eq!(
            link,
            "http://example.org:8081/tables/TodoItem?$top=2&$skip=2; rel=next"
        );
        headers.insert(header::HOST, HeaderValue::from_static("bad host>"));
        assert_eq!(next_link(&headers, &uri, 2), None);
    }
}
