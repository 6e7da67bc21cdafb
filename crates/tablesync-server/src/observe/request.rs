//! The outermost request layer: a request id, the client's address, one log line and the
//! request metrics for every request.
//!
//! * **Request id.** A client's `x-request-id` is kept when it is 1 to
//!   [`REQUEST_ID_BYTES_MAX`] visible ASCII characters, otherwise a new UUID is made; either way
//!   it is returned as `x-request-id` and every log line written while the request runs carries
//!   it (the `request` span).
//! * **Client address.** The TCP peer, or, when the peer is one of `trusted_proxies`, the
//!   right-most address of `X-Forwarded-For` that is not a trusted proxy itself. From any other
//!   peer the header is ignored: anyone can send it.
//! * **What is logged.** Method, path, query, status and latency. Credentials in the query are
//!   always redacted; `$filter` literals (strings, numbers, dates) are shown as `?` at `info` and
//!   only at `debug` as sent, because filters carry user data (names, e-mail addresses). No
//!   header is logged, so a token never is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use percent_encoding::percent_decode_str;
use tracing::Instrument as _;

use super::proxies::TrustedProxies;
use crate::app::App;

/// The request id header, read and returned.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept, in bytes; a longer one is replaced.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

static X_ZUMO_SERVER_VERSION: HeaderName = HeaderName::from_static("x-zumo-server-version");

/// Query keys whose values are credentials. No server reads a token from the query string, but
/// a client may still send one (`?access_token=`); the log must not keep it.
const CREDENTIAL_QUERY_KEYS: [&str; 6] = [
    "access_token",
    "id_token",
    "token",
    "x-zumo-auth",
    "authorization",
    "code",
];

/// The layer: id, address, span, then after the answer the log line and the metrics; stamps
/// `x-zumo-server-version` and `x-request-id` on the response.
pub async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = client_address(peer, req.headers(), app.trusted_proxies());
    let client_text = client.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let (table, operation) = classify(&app, &method, &path);

    let span = tracing::info_span!("request", id = %request_id, client = %client_text);
    let mut response = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();

    let headers = response.headers_mut();
    headers.insert(
        X_ZUMO_SERVER_VERSION.clone(),
        HeaderValue::from_static(crate::SERVER_VERSION),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    if let Some(metrics) = app.metrics() {
        metrics.request(&table, operation, status, took);
    }
    let shown_query = query.as_deref().map(|q| {
        let show_literals = tracing::enabled!(target: "tablesync::http", tracing::Level::DEBUG);
        loggable_query(q, show_literals)
    });
    let latency_ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| match shown_query {
        Some(q) => tracing::info!(
            target: "tablesync::http",
            "{method} {path}?{q} {status} {latency_ms:.1}ms"
        ),
        None => tracing::info!(
            target: "tablesync::http",
            "{method} {path} {status} {latency_ms:.1}ms"
        ),
    });
    response
}

/// The client's request id when acceptable, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= REQUEST_ID_BYTES_MAX
                && v.iter().all(|b| (0x21..=0x7e).contains(b))
        })
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The client's address (see the module docs): the peer, or from a trusted proxy the
/// right-most untrusted `X-Forwarded-For` entry. An unparsable entry ends the walk at the
/// last trusted hop, which is then reported: guessing would let a client choose its address.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(client)
}

/// The metric labels of a request: the configured table name (or `""`) and the operation.
fn classify(app: &App, method: &Method, path: &str) -> (String, &'static str) {
    if let Some(table) = path.strip_prefix("/$changes/") {
        let table = percent_decode_str(table).decode_utf8_lossy();
        let table = app.table_name(&table).unwrap_or_default().to_owned();
        return (table, "changes");
    }
    let Some(rest) = path.strip_prefix("/tables/") else {
        let operation = match path {
            "/health" => "health",
            "/ready" => "ready",
            "/metrics" => "metrics",
            "/$capabilities" => "capabilities",
            "/$batch" => "batch",
            "/openapi.json" => "openapi",
            _ => "other",
        };
        return (String::new(), operation);
    };
    let (table, has_id) = match rest.split_once('/') {
        Some((table, _)) => (table, true),
        None => (rest, false),
    };
    let table = percent_decode_str(table).decode_utf8_lossy();
    let table = app.table_name(&table).unwrap_or_default().to_owned();
    let operation = match (method.as_str(), has_id) {
        ("OPTIONS", _) => "preflight",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) => "get",
        ("POST", false) => "insert",
        ("POST", true) => "undelete",
        // The collection-URL forms (`PATCH /tables/{t}` with the id in the body, `DELETE
        // /tables/{t}?id=`) are the same operations.
        ("PATCH", _) => "update",
        ("DELETE", _) => "delete",
        _ => "other",
    };
    (table, operation)
}

/// The query as logged: credential values redacted; `$filter` decoded, its literals shown only
/// when `show_literals`.
pub fn loggable_query(raw: &str, show_literals: bool) -> String {
    raw.split('&')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode_str(&key.replace('+', " "))
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if CREDENTIAL_QUERY_KEYS.contains(&decoded.as_str()) {
                format!("{key}=<redacted>")
            } else if decoded == "$filter" && !show_literals {
                let filter = percent_decode_str(&value.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                format!("{key}={}", hide_literals(&filter))
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An OData expression with every string literal (with its prefix, as in `datetimeoffset'…'`
/// or `guid'…'`) and every number replaced by `?`; names, operators and `true`/`false`/`null`
/// stay, so the line still tells which columns were filtered on and how.
pub fn hide_literals(filter: &str) -> String {
    let chars: Vec<char> = filter.chars().collect();
    let mut out = String::with_capacity(filter.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A quoted literal; `''` inside it is an escaped quote. A prefix word such as
            // `datetimeoffset` right before it belongs to the literal.
            while out.ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_') {
                out.pop();
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push('?');
        } else if c.is_ascii_digit()
            && !out.ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_' || p == '.')
        {
            // A number (also `1.5e3`, `12L`, `2.0m`): up to the next delimiter.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '+' || chars[i] == '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            out.push('?');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_logged_queries() {
        assert_eq!(
            loggable_query(
                "$top=1&access_token=abc.def.ghi&X-ZUMO-AUTH=x&%74oken=y",
                true
            ),
            "$top=1&access_token=<redacted>&X-ZUMO-AUTH=<redacted>&%74oken=<redacted>"
        );
        assert_eq!(
            loggable_query("$filter=a%20eq%201", true),
            "$filter=a%20eq%201"
        );
    }

    #[test]
    fn filter_literals_are_hidden() {
        assert_eq!(
            hide_literals("(text eq 'it''s secret') and n1 gt 12.5e-3 and complete eq true"),
            "(text eq ?) and n1 gt ? and complete eq true"
        );
        assert_eq!(
            hide_literals("updatedAt ge datetimeoffset'2024-01-01T00:00:00Z' or -3 eq x"),
            "updatedAt ge ? or -? eq x"
        );
        assert_eq!(
            loggable_query(
                "%24filter=text%20eq%20%27bob%40example.org%27&$top=5",
                false
            ),
            "%24filter=text eq ?&$top=5"
        );
        // An unterminated literal hides the rest.
        assert_eq!(hide_literals("a eq 'open"), "a eq ?");
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 203.0.113.9, 10.1.1.1"),
        );
        let at_with = |headers: &HeaderMap, peer: &str| {
            client_address(Some(peer.parse().unwrap()), headers, &trusted)
        };
        let at = |peer: &str| at_with(&headers, peer);
        // From an untrusted peer the header is ignored.
        assert_eq!(at("198.51.100.7"), Some("198.51.100.7".parse().unwrap()));
        // From a trusted one: the right-most untrusted hop (1.2.3.4 may be forged).
        assert_eq!(at("10.0.0.2"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(at("::1"), Some("203.0.113.9".parse().unwrap()));
        let mut junk = HeaderMap::new();
        junk.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.1.1.1"),
        );
        assert_eq!(
            at_with(&junk, "10.0.0.2"),
            Some("10.1.1.1".parse().unwrap())
        );
        assert_eq!(client_address(None, &headers, &trusted), None);
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&headers).len(), 32);
        let long = "x".repeat(REQUEST_ID_BYTES_MAX + 1);
        headers.insert(&X_REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&headers).len(), 32);
    }
}
