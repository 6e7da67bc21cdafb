//! The HTTP client: base URL, protocol headers, request building.
//!
//! [`Client`] is the tutorial's `MobileServiceClient`. It knows how to address tables and items
//! and which headers every request carries; it never interprets responses — that is `sync/`'s
//! job, so that only `sync/` depends on what the server answers.

use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::{AuthTransport, TokenRefresher};
use crate::error::{Error, Result};
use crate::transport::{HttpRequest, HttpTransport, Method, Transport};

/// The protocol version sent in `ZUMO-API-VERSION` on every request.
pub const ZUMO_API_VERSION: &str = "2.0.0";

/// Characters left unescaped in a URL path segment or query value: RFC 3986 unreserved.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Settings of a [`Client`]. Every limit carries its unit in its name.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Upper bound for one whole HTTP request (connect, send, receive), in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest response body accepted, in bytes; larger answers are network errors.
    pub response_bytes_max: u64,
    /// The first authentication token, sent as `X-ZUMO-AUTH` (see [`Client::set_token`]).
    pub auth_token: Option<String>,
    /// Push in batches when the server offers them (`docs/extensions.md` section 2; default
    /// `true`). `false` sends one request per operation, as against the official servers, and
    /// skips asking the server what it offers before a push.
    pub batch_push: bool,
    /// Send `Accept-Encoding: gzip` and decompress gzip answers (default `true`): a pulled page
    /// of JSON rows shrinks several times on the wire. `response_bytes_max` bounds the
    /// decompressed body either way.
    pub accept_gzip: bool,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("ClientOptions")
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("response_bytes_max", &self.response_bytes_max)
            .field("accept_gzip", &self.accept_gzip)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("batch_push", &self.batch_push)
            .finish()
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::request_timeout_ms`].
    pub fn with_request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = ms;
        self
    }

    /// Sets [`ClientOptions::response_bytes_max`].
    pub fn with_response_bytes_max(mut self, bytes: u64) -> Self {
        self.response_bytes_max = bytes;
        self
    }

    /// Sets [`ClientOptions::accept_gzip`].
    pub fn with_accept_gzip(mut self, accept_gzip: bool) -> Self {
        self.accept_gzip = accept_gzip;
        self
    }

    /// Sets [`ClientOptions::auth_token`].
    pub fn with_auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Sets [`ClientOptions::batch_push`].
    pub fn with_batch_push(mut self, batch_push: bool) -> Self {
        self.batch_push = batch_push;
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout_ms: 30_000,
            response_bytes_max: 64 * 1024 * 1024,
            auth_token: None,
            batch_push: true,
            accept_gzip: true,
        }
    }
}

/// Connection to a Mobile Apps (ZUMO-API-VERSION 2.0.0) backend.
///
/// Cheap to clone: clones share the transport and the credentials (a token set on one clone,
/// e.g. `ctx.client().set_token(…)`, is used by all).
#[derive(Clone)]
pub struct Client {
    base_url: String,
    /// The app's transport behind the credentials layer (`auth.rs`).
    transport: Arc<AuthTransport>,
    installation_id: String,
    batch_push: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the backend at `base_url` (e.g. `https://myapp.example.com/`) with default
    /// options and the reqwest transport.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_options(base_url, ClientOptions::default())
    }

    /// A client with explicit options and the reqwest transport.
    pub fn with_options(base_url: &str, options: ClientOptions) -> Result<Self> {
        if options.request_timeout_ms == 0 {
            return Err(Error::InvalidConfig(
                "request_timeout_ms must be greater than 0".into(),
            ));
        }
        let transport = HttpTransport::with_gzip(
            options.request_timeout_ms,
            options.response_bytes_max,
            options.accept_gzip,
        )
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Self::with_transport_and_options(base_url, Arc::new(transport), options)
    }

    /// A client over any [`Transport`] (tests use this to inject faults) with default options.
    pub fn with_transport(base_url: &str, transport: Arc<dyn Transport>) -> Result<Self> {
        Self::with_transport_and_options(base_url, transport, ClientOptions::default())
    }

    /// A client over any [`Transport`] with the options that are the client's own
    /// ([`ClientOptions::auth_token`], [`ClientOptions::batch_push`]); the transport's
    /// (`request_timeout_ms`, `response_bytes_max`, `accept_gzip`) are the transport's business.
    pub fn with_transport_and_options(
        base_url: &str,
        transport: Arc<dyn Transport>,
        options: ClientOptions,
    ) -> Result<Self> {
        let trimmed = base_url.trim();
        let lower = trimmed.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(Error::InvalidUrl {
                url: base_url.into(),
                reason: "must start with http:// or https://".into(),
            });
        }
        if trimmed.contains(['?', '#']) || trimmed.chars().any(|c| c.is_whitespace()) {
            return Err(Error::InvalidUrl {
                url: base_url.into(),
                reason: "must not contain a query, a fragment or whitespace".into(),
            });
        }
        let mut base_url = trimmed.to_string();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        Ok(Client {
            base_url,
            transport: Arc::new(AuthTransport::new(transport, options.auth_token)),
            installation_id: uuid::Uuid::new_v4().to_string(),
            batch_push: options.batch_push,
        })
    }

    /// Sets (or clears) the token sent as `X-ZUMO-AUTH` on every request from now on (the
    /// official clients' `currentUser.mobileServiceAuthenticationToken`).
    pub fn set_token(&self, token: Option<String>) {
        self.transport.set_token(token);
    }

    /// [`Client::set_token`] (the earlier name).
    pub fn set_auth_token(&mut self, token: Option<String>) {
        self.set_token(token);
    }

    /// The token requests carry now (after any refresh).
    pub fn token(&self) -> Option<String> {
        self.transport.token()
    }

    /// Called once when a request is answered 401, before the request is sent again with the
    /// token it returns (None: give up, the 401 stands). Concurrent 401s refresh once. A push
    /// whose retry is still refused stops with `CancelledByAuthenticationError` and keeps its
    /// queue.
    ///
    /// ```
    /// # let client = tablesync_client::Client::new("http://127.0.0.1:9/").unwrap();
    /// client.set_token_refresher(|| async {
    ///     // e.g. log in again or use a refresh token
    ///     Some("new-token".to_string())
    /// });
    /// ```
    pub fn set_token_refresher(&self, refresher: impl TokenRefresher) {
        self.transport.set_refresher(Some(Arc::new(refresher)));
    }

    /// Removes the refresher: a 401 is answered as it is.
    pub fn clear_token_refresher(&self) {
        self.transport.set_refresher(None);
    }

    /// The base URL, always ending in `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a push may use batches ([`ClientOptions::batch_push`]).
    pub fn batch_push(&self) -> bool {
        self.batch_push
    }

    /// The transport every request goes through: the credentials layer (token header, one
    /// refresh on 401) over the app's transport.
    pub(crate) fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    /// `<base>tables/<table>` or `<base>tables/<table>/<escaped id>`.
    pub(crate) fn table_url(&self, table: &str, id: Option<&str>) -> String {
        format!("{}{}", self.base_url, table_path(table, id))
    }

    /// A request with the protocol headers (and a JSON body when given).
    pub(crate) fn request(
        &self,
        method: Method,
        url: String,
        body: Option<&serde_json::Value>,
    ) -> HttpRequest {
        let mut req = HttpRequest::new(method, url);
        req.headers
            .push(("ZUMO-API-VERSION".into(), ZUMO_API_VERSION.into()));
        req.headers
            .push(("Accept".into(), "application/json".into()));
        req.headers.push((
            "X-ZUMO-INSTALLATION-ID".into(),
            self.installation_id.clone(),
        ));
        req.headers.push(("X-ZUMO-FEATURES".into(), "OL".into()));
        if let Some(body) = body {
            req.headers
                .push(("Content-Type".into(), "application/json".into()));
            // Serialising a Value cannot fail (string keys only).
            req.body = Some(serde_json::to_vec(body).unwrap_or_default());
        }
        req
    }
}

/// `tables/<table>` or `tables/<table>/<escaped id>`: a table route relative to the base URL
/// (batched requests name their operations so, `docs/extensions.md` section 2).
pub(crate) fn table_path(table: &str, id: Option<&str>) -> String {
    let mut path = format!("tables/{table}");
    if let Some(id) = id {
        path.push('/');
        path.extend(utf8_percent_encode(id, COMPONENT));
    }
    path
}

/// Percent-encodes a query-string key or value.
pub(crate) fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Builds `k1=v1&k2=v2` with every key and value percent-encoded (except `$` in keys, which
/// servers expect literally in `$filter` & co.).
pub(crate) fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let key = k
                .split('$')
                .map(encode_component)
                .collect::<Vec<_>>()
                .join("$");
            format!("{key}={}", encode_component(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers() {
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080/");
        assert_eq!(
            c.table_url("TodoItem", Some("a b/é")),
            "http://127.0.0.1:8080/tables/TodoItem/a%20b%2F%C3%A9"
        );
        let r = c.request(Method::Get, c.table_url("T", None), None);
        assert_eq!(r.header("zumo-api-version"), Some("2.0.0"));
        assert_eq!(r.header("content-type"), None);
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("http://x/?a=b"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn query_strings() {
        assert_eq!(
            query_string(&[
                ("$filter", "updatedAt gt datetimeoffset'2020-01-01T00:00:00.000Z'".into()),
                ("$top", "50".into()),
                ("__includeDeleted", "true".into()),
            ]),
            "$filter=updatedAt%20gt%20datetimeoffset%272020-01-01T00%3A00%3A00.000Z%27&$top=50&__includeDeleted=true"
        );
    }
}
