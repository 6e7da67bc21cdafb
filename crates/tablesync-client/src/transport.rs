//! The HTTP seam.
//!
//! Everything the SDK sends goes through one [`Transport`]: in production [`HttpTransport`]
//! (reqwest, rustls), in tests any implementation — typically one that wraps `HttpTransport` and
//! injects faults (dropped connections, garbage bodies) to prove the queue and the delta tokens
//! survive them. Requests and responses are plain values so a transport needs no HTTP library.
//!
//! One kind of answer is not a plain value: the change feed (`docs/extensions.md` section 5) is a
//! response that never ends. [`Transport::open_stream`] hands its body over chunk by chunk as a
//! [`ByteStream`]; a transport that cannot stream keeps the default, which says so
//! ([`TransportError::StreamingUnsupported`]), and live mode then polls instead.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future (the trait objects in this crate cannot use `async fn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// HTTP method used by the table protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// GET (list, read by id).
    Get,
    /// POST (insert).
    Post,
    /// PATCH (update).
    Patch,
    /// DELETE (delete).
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A request, fully built (absolute URL, headers, body).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Absolute URL including the query string.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Vec<u8>>,
}

impl HttpRequest {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response as received (status, headers, whole body).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with the given status and body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced), for error reports.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no HTTP response. All variants count as network failures for a push.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer within the configured request timeout.
    #[error("request timed out")]
    Timeout,
    /// Connection refused, reset, dropped mid-body, DNS failure, TLS failure...
    #[error("connection failed: {0}")]
    Connection(String),
    /// The response body exceeded the configured size limit.
    #[error("response body larger than {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded.
        limit_bytes: u64,
    },
    /// This transport cannot stream a response body ([`Transport::open_stream`]).
    #[error("this transport does not stream response bodies")]
    StreamingUnsupported,
}

/// A response body read as it arrives: chunks of bytes, then the end (or an error).
pub type ByteStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Vec<u8>, TransportError>> + Send + 'static>>;

/// A response whose body is streamed ([`Transport::open_stream`]).
#[non_exhaustive]
pub struct StreamingResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The body, chunk by chunk.
    pub body: ByteStream,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    /// A streamed response from its parts.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: ByteStream) -> Self {
        StreamingResponse {
            status,
            headers,
            body,
        }
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends requests. Implementations must not panic; every failure is a [`TransportError`].
pub trait Transport: Send + Sync + 'static {
    /// Sends one request and reads the whole response.
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>>;

    /// Sends one request and returns as soon as the response head arrived, with the body as a
    /// stream (the change feed, which never ends by itself). The whole-request timeout does not
    /// apply to the body; the caller bounds how long it waits for the next chunk.
    ///
    /// The default answers [`TransportError::StreamingUnsupported`]: live mode then polls, so a
    /// transport written before streaming existed keeps working.
    fn open_stream(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'_, Result<StreamingResponse, TransportError>> {
        drop(request);
        Box::pin(async { Err(TransportError::StreamingUnsupported) })
    }
}

/// The production transport: reqwest over rustls, with a per-request timeout, a body limit and
/// (unless switched off) `Accept-Encoding: gzip`, whose answers it decompresses. Server
/// certificates are verified against the platform's root store (`rustls-native-certs`: on Linux
/// the system CA bundle, so a corporate CA installed there is trusted), not a bundled list.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// For streamed answers: the same, but without the whole-request timeout (a change feed
    /// never ends) and without gzip (an event must reach the app when it is sent, not when a
    /// compressor's block is full).
    stream_client: reqwest::Client,
    request_timeout_ms: u64,
    response_bytes_max: u64,
}

impl HttpTransport {
    /// Builds a transport that accepts gzip. `request_timeout_ms` bounds each whole request
    /// (connect, send, receive); `response_bytes_max` bounds a response body (decompressed).
    pub fn new(request_timeout_ms: u64, response_bytes_max: u64) -> Result<Self, TransportError> {
        Self::with_gzip(request_timeout_ms, response_bytes_max, true)
    }

    /// [`HttpTransport::new`], choosing whether requests carry `Accept-Encoding: gzip`. Either
    /// way `response_bytes_max` bounds the body as decompressed, so a small compressed answer
    /// cannot grow past the limit in memory.
    pub fn with_gzip(
        request_timeout_ms: u64,
        response_bytes_max: u64,
        accept_gzip: bool,
    ) -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(request_timeout_ms))
            .gzip(accept_gzip)
            .build()
            .map_err(|e| TransportError::Connection(e.to_string()))?;
        let stream_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(request_timeout_ms))
            .gzip(false)
            .build()
            .map_err(|e| TransportError::Connection(e.to_string()))?;
        Ok(HttpTransport {
            client,
            stream_client,
            request_timeout_ms,
            response_bytes_max,
        })
    }

    /// The streamed request: the head must arrive within the request timeout, the body is
    /// handed over chunk by chunk.
    async fn open_stream_inner(
        &self,
        request: HttpRequest,
    ) -> Result<StreamingResponse, TransportError> {
        let builder = build(&self.stream_client, request);
        let resp = tokio::time::timeout(
            Duration::from_millis(self.request_timeout_ms),
            builder.send(),
        )
        .await
        .map_err(|_| TransportError::Timeout)?
        .map_err(map_reqwest)?;
        let status = resp.status().as_u16();
        let headers = header_list(resp.headers());
        let body = futures_util::stream::unfold(Some(resp), |resp| async move {
            let mut resp = resp?;
            match resp.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk.to_vec()), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((Err(map_reqwest(e)), None)),
            }
        });
        Ok(StreamingResponse::new(status, headers, Box::pin(body)))
    }

    async fn send_inner(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut resp = build(&self.client, request)
            .send()
            .await
            .map_err(map_reqwest)?;
        let status = resp.status().as_u16();
        let headers = header_list(resp.headers());
        // Chunks arrive decompressed (reqwest's gzip decoder), so the limit counts the bytes
        // held in memory, not the bytes on the wire.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_reqwest)? {
            if (body.len() + chunk.len()) as u64 > self.response_bytes_max {
                return Err(TransportError::BodyTooLarge {
                    limit_bytes: self.response_bytes_max,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// A reqwest request from one of ours.
fn build(client: &reqwest::Client, request: HttpRequest) -> reqwest::RequestBuilder {
    let method = match request.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    };
    let mut builder = client.request(method, &request.url);
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    builder
}

/// Response headers as plain pairs (names lower-case).
fn header_list(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn map_reqwest(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Include the source chain: reqwest's top-level message alone is often just
        // "error sending request".
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        TransportError::Connection(msg)
    }
}

impl Transport for HttpTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(self.send_inner(request))
    }

    fn open_stream(
        &self,
        request: HttpRequest,
    ) -> BoxFuture<'_, Result<StreamingResponse, TransportError>> {
        Box::pin(self.open_stream_inner(request))
    }
}
