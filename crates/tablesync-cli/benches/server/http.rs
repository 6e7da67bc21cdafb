//! The bench's HTTP client: HTTP/1.1 on hyper's client connections, kept idle between requests,
//! with nothing else between the workload and the socket. A load generator, not an SDK.
//!
//! Why not reqwest, which the bench used before: on this 2-core machine the client shares the
//! CPU with the server it measures, so whatever the client spends on a request the server does
//! not get. reqwest's pool, timers, redirect and decompression layers and per-request URL
//! parsing made the bench client a third of the machine's CPU during reads by id, and `wrk`
//! (a C load generator) reached 10.8k inserts/s where the bench reached 8.0k on the same server.
//! The official server is slow enough that the client's cost hardly moves its figures, so the
//! client's cost compressed every speed-up. Every server is measured with this same client.
//!
//! What it still does per request: percent-encodes the query, sends `Host`, the protocol
//! version and any given headers, reads the whole body and hands back the status with it. The
//! workload checks both (`workload.rs`).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The protocol version header every request carries.
const API_VERSION: (&str, &str) = ("zumo-api-version", "2.0.0");

/// What a query value keeps unencoded: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A client of one server (`http://host:port`), cheap to clone; connections are opened as
/// requests need them and kept for the next request.
#[derive(Clone)]
pub struct BenchClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    host: HeaderValue,
    /// The base URL's path (`/` stripped at the end), put before every request's path.
    prefix: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// A bound against a hung server, not a measurement.
    timeout: Duration,
}

impl BenchClient {
    /// A client of the server at `base_url` (`http://` only: the bench runs on loopback).
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base_url).with_context(|| format!("parsing {base_url}"))?;
        anyhow::ensure!(
            url.scheme() == "http",
            "{base_url}: the bench speaks plain http"
        );
        let host = url
            .host_str()
            .with_context(|| format!("{base_url} has no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let authority = format!("{host}:{port}");
        Ok(BenchClient {
            inner: Arc::new(Inner {
                addr,
                host: HeaderValue::from_str(&authority)?,
                prefix: url.path().trim_end_matches('/').to_owned(),
                idle: Mutex::new(Vec::new()),
                timeout,
            }),
        })
    }

    /// A GET of `path` (below the base URL).
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A POST to `path`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A PATCH of `path`.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            uri: format!("{}{path}", self.inner.prefix),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// An idle connection that is still open, or a new one.
    async fn checkout(&self) -> Result<(SendRequest<Full<Bytes>>, bool), String> {
        loop {
            let idle = self.lock_idle().pop();
            let Some(mut sender) = idle else { break };
            // A connection the server closed meanwhile (Node's keep-alive timeout) says so here.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        let stream = tokio::net::TcpStream::connect(self.inner.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.inner.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.inner.addr))?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or every sender is dropped.
            let _ = connection.await;
        });
        Ok((sender, false))
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        self.lock_idle().push(sender);
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Full<Bytes>>>> {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request being built ([`BenchClient::get`] and the others).
pub struct RequestBuilder {
    client: BenchClient,
    method: Method,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl RequestBuilder {
    /// Appends `pairs` as the query string (values percent-encoded; the keys are the
    /// protocol's own, such as `$filter`, which need none).
    pub fn query(mut self, pairs: &[(&str, String)]) -> Self {
        for (i, (key, value)) in pairs.iter().enumerate() {
            self.uri.push(if i == 0 { '?' } else { '&' });
            self.uri.push_str(key);
            self.uri.push('=');
            self.uri
                .extend(utf8_percent_encode(value, QUERY_VALUE).map(|s| s.to_owned()));
        }
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sends `body` as JSON.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        // A `Value` always serialises.
        self.body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        self
    }

    /// Sends the request with the protocol version header and reads the whole answer.
    pub async fn send(self) -> Result<Response, String> {
        let timeout = self.client.inner.timeout;
        let what = format!("{} {}", self.method, self.uri);
        tokio::time::timeout(timeout, self.exchange())
            .await
            .unwrap_or_else(|_| Err(format!("{what}: no answer within {} s", timeout.as_secs())))
    }

    async fn exchange(self) -> Result<Response, String> {
        // One retry, on a new connection, for a request a reused connection refused before
        // sending it (the server closed it just then): nothing of it reached the server.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut sender, reused) = self.client.checkout().await?;
            let mut request = Request::builder()
                .method(self.method.clone())
                .uri(self.uri.as_str())
                .header(HOST, self.client.inner.host.clone())
                .header(API_VERSION.0, API_VERSION.1);
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            let request = request
                .body(Full::new(self.body.clone()))
                .map_err(|e| format!("{} {}: {e}", self.method, self.uri))?;
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(e) if e.is_canceled() && reused && attempt == 1 => continue,
                Err(e) => return Err(format!("{} {}: {e}", self.method, self.uri)),
            };
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{} {}: reading the body: {e}", self.method, self.uri))?
                .to_bytes();
            // The answer is read in full, so the connection can take the next request.
            self.client.checkin(sender);
            return Ok(Response { status, body });
        }
    }
}

/// A whole answer.
pub struct Response {
    /// Its status.
    pub status: StatusCode,
    /// Its body, read in full.
    pub body: Bytes,
}
