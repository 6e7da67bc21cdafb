//! Connections: the accept loop, the connection cap, HTTP/1.1 through hyper with a header read
//! timeout, and our JSON body on the errors hyper answers by itself.
//!
//! * At most `limits.connections_max` connections are served at once (a semaphore). Above it a
//!   new connection gets a 503 `service_unavailable` JSON answer and is closed; open ones keep
//!   working. Before the cap, 1,100 stalled connections used every file descriptor.
//! * An accept error (EMFILE, ENFILE, ENOBUFS, …) waits before the next accept, doubling from
//!   [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`]: the loop never spins, and logs at most once
//!   per wait.
//! * hyper closes a connection whose request line and headers take longer than
//!   `limits.header_read_timeout_ms` (no answer: the client has not finished asking), and refuses
//!   a head over `limits.request_head_bytes_max`.
//! * hyper answers a request it cannot parse itself (400, 414, 431) with an empty body.
//!   [`JsonErrors`] sits between hyper and the socket and replaces such an answer, recognised as a
//!   response head without our `x-zumo-server-version` header (every answer of the router carries
//!   it), with our JSON error body; a 414/431 whose request line holds a `$filter` gets the 400
//!   `invalid_filter` a shorter long filter gets. After it the connection is closed, as hyper
//!   does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tablesync_protocol::error::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_http::add_extension::AddExtension;

use super::middleware::SERVER_VERSION;
use crate::config::Limits;

/// First wait after an accept error.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait after repeated accept errors.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the 503 of a connection over the cap may take to write before it is dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How many bytes of a request [`JsonErrors`] keeps to name a `$filter` in its answer.
const SNIFF_BYTES: usize = 4096;

/// Serve `router` on `listener` until `shutdown` completes, then let open connections finish
/// their requests.
pub async fn serve(
    router: Router,
    limits: &Limits,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_buf_size(limits.request_head_bytes_max)
        // Vectored writes: a response head and its body go out in one `writev`, and a page's
        // body is not copied into hyper's buffer first (flattening copied every 250 KB page).
        .writev(true);
    let filter_limit = limits.filter_bytes_max;
    let head_limit = limits.request_head_bytes_max;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    let incoming = &listener;
    let mut accept = move || incoming.accept();
    loop {
        let next = accept_next(&mut accept, &tokio::time::sleep, &mut backoff);
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = next => accepted,
        };
        // TCP_NODELAY: a gzip answer is streamed as chunks, and with Nagle's algorithm its last
        // small chunk waits for the client's delayed ACK (tens of ms per request on a kept-alive
        // connection, measured by the sync bench).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        let io = TokioIo::new(JsonErrors::new(tcp, filter_limit, head_limit));
        // The peer's address as axum's `ConnectInfo`: the request log and `X-Forwarded-For`
        // handling (`crate::observe::request`) read it.
        let service =
            TowerToHyperService::new(AddExtension::new(router.clone(), ConnectInfo(peer)));
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, bad framing): nothing to answer.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The next accepted connection. After an accept error (EMFILE when the process is out of file
/// descriptors, ECONNABORTED, …) it logs and `sleep`s before the next try, `backoff` doubling
/// from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`] (and back to the minimum after a
/// success): the loop never spins, and logs at most once per wait. The server used to log
/// "accept error: Too many open files" without pause.
async fn accept_next<T, A, AF, S, SF>(accept: &mut A, sleep: &S, backoff: &mut Duration) -> T
where
    A: FnMut() -> AF,
    AF: Future<Output = io::Result<T>>,
    S: Fn(Duration) -> SF,
    SF: Future<Output = ()>,
{
    loop {
        match accept().await {
            Ok(accepted) => {
                *backoff = ACCEPT_BACKOFF_MIN;
                return accepted;
            }
            Err(e) => {
                tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accept error; waiting before the next accept");
                sleep(*backoff).await;
                *backoff = (*backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Answer a connection over the cap with 503 and close it.
async fn refuse(mut tcp: TcpStream) {
    let body = ErrorBody::new(
        ErrorCode::ServiceUnavailable,
        "The server is serving as many connections as it may (limits.connections_max); try again later",
    );
    let response = raw_response(503, "Service Unavailable", &body, &[("retry-after", "1")]);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await
    })
    .await;
}

/// A whole HTTP/1.1 response with our JSON error body, closing the connection.
fn raw_response(status: u16, reason: &str, body: &ErrorBody, extra: &[(&str, &str)]) -> Vec<u8> {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-zumo-server-version: {SERVER_VERSION}\r\n",
        json.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&json);
    out
}

/// The socket as hyper sees it, replacing hyper's own empty-bodied error answers with ours.
pub struct JsonErrors<T> {
    inner: T,
    /// The first [`SNIFF_BYTES`] bytes read since the last answer began.
    sniffed: Vec<u8>,
    /// Our replacement answer and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    filter_limit: usize,
    head_limit: usize,
}

impl<T> JsonErrors<T> {
    fn new(inner: T, filter_limit: usize, head_limit: usize) -> Self {
        JsonErrors {
            inner,
            sniffed: Vec::new(),
            replacement: None,
            filter_limit,
            head_limit,
        }
    }

    /// Our answer instead of `head` when it is one of hyper's own (a status line, and no
    /// `x-zumo-server-version` in its headers).
    fn replace(&self, head: &[u8]) -> Option<Vec<u8>> {
        let status_line = head
            .strip_prefix(b"HTTP/1.1 ")
            .or(head.strip_prefix(b"HTTP/1.0 "))?;
        let end = find(head, b"\r\n\r\n").unwrap_or(head.len());
        let lower = head[..end].to_ascii_lowercase();
        if find(&lower, b"x-zumo-server-version:").is_some() {
            return None;
        }
        let status: u16 = std::str::from_utf8(status_line.get(..3)?)
            .ok()?
            .parse()
            .ok()?;
        let request_line = match find(&self.sniffed, b"\r\n") {
            Some(n) => &self.sniffed[..n],
            None => &self.sniffed[..],
        };
        let request_line = request_line.to_ascii_lowercase();
        let names_filter = find(&request_line, b"$filter=").is_some()
            || find(&request_line, b"%24filter=").is_some();
        let (status, reason, code, message) = match status {
            414 | 431 if names_filter => (
                400,
                "Bad Request",
                ErrorCode::InvalidFilter,
                format!("The $filter is longer than {} bytes", self.filter_limit),
            ),
            414 => (
                414,
                "URI Too Long",
                ErrorCode::UriTooLong,
                "The request target (URL) is too long".to_owned(),
            ),
            431 => (
                431,
                "Request Header Fields Too Large",
                ErrorCode::HeadersTooLarge,
                format!(
                    "The request line and headers are larger than {} bytes, or too many",
                    self.head_limit
                ),
            ),
            400..=499 => (
                400,
                "Bad Request",
                ErrorCode::BadRequest,
                "The request is not valid HTTP/1.1 (request line, header syntax or framing)"
                    .to_owned(),
            ),
            // Not an error hyper makes up (e.g. 100 Continue): leave it.
            _ => return None,
        };
        Some(raw_response(
            status,
            reason,
            &ErrorBody::new(code, message),
            &[],
        ))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    // Compare only where the first byte matches: every answer's head is searched, and a
    // slice comparison at each position showed in the write path's profile.
    (0..hay.len().checked_sub(rest.len())?)
        .filter(|&i| hay[i] == first)
        .find(|&i| &hay[i + 1..i + needle.len()] == rest)
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Write out the replacement answer, if any.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.replacement {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let room = SNIFF_BYTES.saturating_sub(this.sniffed.len());
        let new = &buf.filled()[before..];
        this.sniffed.extend_from_slice(&new[..new.len().min(room)]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_some() {
            // hyper closes after its error answer; anything more it writes is dropped.
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if buf.starts_with(b"HTTP/1.") {
            if let Some(ours) = this.replace(buf) {
                this.replacement = Some((ours, 0));
                // The answer is queued; flush and shutdown finish writing it.
                let _ = this.poll_replacement(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
            // A new answer: the next request's bytes are sniffed afresh.
            this.sniffed.clear();
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// hyper writes a response head and its body chunks as one vectored write. The head is the
    /// first buffer when an answer begins, so the check above runs on it alone; the rest goes to
    /// the socket as it is.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if this.replacement.is_some() || first.starts_with(b"HTTP/1.") {
            if this.replacement.is_some() || this.replace(first).is_some() {
                // hyper's own answer (or what it writes after one): the scalar path replaces it.
                return Pin::new(this).poll_write(cx, first);
            }
            this.sniffed.clear();
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Every accept error is followed by a wait, doubling up to the maximum: 12 failures (as
    /// with EMFILE) ask for 10, 20, 40, … ms, then 1 s each, never a retry without a wait.
    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning() {
        let waits = RefCell::new(Vec::new());
        let sleep = |d: Duration| {
            waits.borrow_mut().push(d.as_millis() as u64);
            std::future::ready(())
        };
        let mut failures = 12;
        let mut accept = || {
            let result = if failures > 0 {
                failures -= 1;
                Err(io::Error::from_raw_os_error(24)) // EMFILE
            } else {
                Ok(7)
            };
            std::future::ready(result)
        };
        let mut backoff = ACCEPT_BACKOFF_MIN;
        assert_eq!(accept_next(&mut accept, &sleep, &mut backoff).await, 7);
        assert_eq!(
            *waits.borrow(),
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
        // After a success the next error waits the minimum again.
        assert_eq!(backoff, ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn find_finds_the_first_occurrence() {
        assert_eq!(find(b"abcabdabd", b"abd"), Some(3));
        assert_eq!(find(b"abd", b"abd"), Some(0));
        assert_eq!(find(b"ab", b"abd"), None);
        assert_eq!(find(b"xx\r\n\r\n", b"\r\n\r\n"), Some(2));
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"abc", b""), None);
    }

    /// hyper's own answers are replaced; ours (stamped) and informational ones are not.
    #[test]
    fn only_hypers_own_error_answers_are_replaced() {
        let mut io = JsonErrors::new((), 8192, 65536);
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let ours =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nx-zumo-server-version: t\r\n\r\n{}";
        let replaced = String::from_utf8(io.replace(hyper_400).unwrap()).unwrap();
        assert!(
            replaced.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{replaced}"
        );
        assert!(
            replaced.ends_with("\"code\":\"bad_request\"}"),
            "{replaced}"
        );
        assert_eq!(io.replace(ours), None);
        assert_eq!(io.replace(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        io.sniffed = b"GET /tables/T?%24filter=aaaa".to_vec();
        let replaced =
            String::from_utf8(io.replace(b"HTTP/1.1 414 URI Too Long\r\n\r\n").unwrap()).unwrap();
        assert!(
            replaced.contains("\"code\":\"invalid_filter\""),
            "{replaced}"
        );
    }
}
