//! One table's change feed on the wire (`docs/extensions.md` section 5): the subscription
//! request, the Server-Sent Events read from its streamed body by `eventsource-stream`, and
//! what each event means for live mode.
//!
//! The body is guarded before it reaches the parser: no chunk within the idle timeout (the
//! server heartbeats an idle feed, so silence means a dead connection a proxy kept open) ends the
//! feed, and so does an event larger than the byte bound (the parser would buffer it whole). The
//! pure parts — [`read_event`] and [`EventBytes`] — are tested on their own; the tests at the end
//! run the whole reader against canned streams from a tiny local HTTP server.

use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::capabilities::ChangesCapability;
use crate::client::{query_string, Client};
use crate::store::rows::normalize_date;
use crate::transport::{ByteStream, Method, TransportError};

use super::plan::Position;

/// What one event of the feed tells live mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeedEvent {
    /// A committed change of the row at this position.
    Change(Position),
    /// The server dropped this subscriber for falling behind: pull, then subscribe again.
    Overflow,
    /// An event live mode does not know (later extensions), ignored.
    Other,
}

/// Reads one event (pure). A `change` event must name `table` (case-insensitively, as table
/// names match) and carry a string `id` and a valid `updatedAt`; anything else is a broken feed.
pub(crate) fn read_event(table: &str, event: &str, data: &str) -> Result<FeedEvent, String> {
    match event {
        "change" => {}
        "overflow" => return Ok(FeedEvent::Overflow),
        _ => return Ok(FeedEvent::Other),
    }
    let value: Value =
        serde_json::from_str(data).map_err(|e| format!("change event is not JSON ({e})"))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    match field("table") {
        Some(t) if t.eq_ignore_ascii_case(table) => {}
        other => {
            return Err(format!(
                "change event for table {other:?} on the feed of {table:?}"
            ))
        }
    }
    let id = field("id").ok_or("change event without a string id")?;
    let updated_at = field("updatedAt")
        .and_then(normalize_date)
        .ok_or("change event without a valid updatedAt")?;
    Ok(FeedEvent::Change(Position {
        updated_at,
        id: id.to_string(),
    }))
}

/// Counts the bytes of the event being received (since the last blank line, which ends an
/// event), so an endless line or event is refused before the parser buffers it. Line ends are
/// `\n` or `\r\n`.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventBytes {
    since_boundary: usize,
    at_line_start: bool,
}

impl EventBytes {
    /// Takes a chunk; returns the size of the event in progress, in bytes.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> usize {
        for &b in chunk {
            match b {
                b'\n' if self.at_line_start => self.since_boundary = 0,
                b'\n' => self.at_line_start = true,
                b'\r' => {}
                _ => {
                    self.at_line_start = false;
                    self.since_boundary += 1;
                }
            }
        }
        self.since_boundary
    }
}

/// Why a subscription got no feed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The transport cannot stream: poll instead.
    Unsupported,
    /// No answer (refused, timed out, dropped).
    Network(TransportError),
    /// The server answered, but not with a feed (status, start of the body).
    Refused(u16, String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Unsupported => f.write_str("the transport does not stream"),
            OpenError::Network(e) => write!(f, "{e}"),
            OpenError::Refused(status, body) => write!(f, "the feed answered {status}: {body}"),
        }
    }
}

/// An open feed: its events, in order, until it ends.
pub(crate) struct Feed {
    table: String,
    events: std::pin::Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>,
}

impl Feed {
    /// The next event, or why the feed ended (closed by the server, silent past the idle
    /// timeout, broken).
    pub(crate) async fn next(&mut self) -> Result<FeedEvent, String> {
        match self.events.next().await {
            None => Err("the server closed the feed".into()),
            Some(Err(e)) => Err(e),
            Some(Ok(event)) => read_event(&self.table, &event.event, &event.data),
        }
    }
}

/// The largest part of an error answer kept for the message, in bytes.
const ERROR_BODY_SHOWN_BYTES_MAX: usize = 300;

/// Subscribes to `table`'s feed after `position` (none: from the feed's current end).
pub(crate) async fn open(
    client: &Client,
    changes: &ChangesCapability,
    table: &str,
    position: Option<&Position>,
    idle: Duration,
    event_bytes_max: usize,
) -> Result<Feed, OpenError> {
    let mut url = changes.url(table);
    if let Some(p) = position {
        // The query form rather than `Last-Event-ID`: an id may hold characters a header
        // cannot carry.
        url.push('?');
        url.push_str(&query_string(&[("after", p.wire())]));
    }
    let mut request = client.request(Method::Get, url, None);
    request
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("accept"));
    request
        .headers
        .push(("Accept".into(), "text/event-stream".into()));
    let mut response = match client.transport().open_stream(request).await {
        Ok(r) => r,
        Err(TransportError::StreamingUnsupported) => return Err(OpenError::Unsupported),
        Err(e) => return Err(OpenError::Network(e)),
    };
    let is_stream = response
        .header("content-type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    if response.status != 200 || !is_stream {
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_SHOWN_BYTES_MAX {
            match tokio::time::timeout(idle, response.body.next()).await {
                Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(ERROR_BODY_SHOWN_BYTES_MAX);
        return Err(OpenError::Refused(
            response.status,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    let events = guarded(response.body, idle, event_bytes_max)
        .eventsource()
        .map(|r| {
            r.map_err(|e| match e {
                EventStreamError::Transport(t) => t.to_string(),
                other => format!("the feed is not a valid event stream: {other}"),
            })
        });
    Ok(Feed {
        table: table.to_string(),
        events: Box::pin(events),
    })
}

/// The body, ended with an error when no chunk arrives within `idle` or an event grows past
/// `event_bytes_max` bytes.
fn guarded(
    body: ByteStream,
    idle: Duration,
    event_bytes_max: usize,
) -> impl Stream<Item = Result<Vec<u8>, TransportError>> + Send {
    futures_util::stream::unfold(
        Some((body, EventBytes::default())),
        move |state| async move {
            let (mut body, mut bytes) = state?;
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Some((Err(TransportError::Timeout), None)),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(Some(Ok(chunk))) => {
                    if bytes.feed(&chunk) > event_bytes_max {
                        Some((
                            Err(TransportError::BodyTooLarge {
                                limit_bytes: event_bytes_max as u64,
                            }),
                            None,
                        ))
                    } else {
                        Some((Ok(chunk), Some((body, bytes))))
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::parse_capabilities;
    use crate::transport::HttpResponse;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CHANGE: &str = r#"{"table":"TodoItem","id":"abc","updatedAt":"2026-12-01T16:00:00.123Z","version":"AAAAAAAAB9E=","deleted":false}"#;

    fn at(t: &str, id: &str) -> FeedEvent {
        FeedEvent::Change(Position {
            updated_at: t.into(),
            id: id.into(),
        })
    }

    #[test]
    fn events_are_read_by_name() {
        assert_eq!(
            read_event("todoitem", "change", CHANGE).unwrap(),
            at("2026-12-01T16:00:00.123Z", "abc")
        );
        assert_eq!(
            read_event("TodoItem", "overflow", "{}").unwrap(),
            FeedEvent::Overflow
        );
        assert_eq!(
            read_event("TodoItem", "message", "x").unwrap(),
            FeedEvent::Other
        );
        // Offsets are normalised to the wire form the tokens use.
        let offset = r#"{"table":"TodoItem","id":"a","updatedAt":"2026-12-01T17:00:00+01:00"}"#;
        assert_eq!(
            read_event("TodoItem", "change", offset).unwrap(),
            at("2026-12-01T16:00:00.000Z", "a")
        );
        for bad in [
            "not json",
            r#"{"table":"Other","id":"a","updatedAt":"2026-12-01T16:00:00.000Z"}"#,
            r#"{"table":"TodoItem","id":5,"updatedAt":"2026-12-01T16:00:00.000Z"}"#,
            r#"{"table":"TodoItem","id":"a","updatedAt":"yesterday"}"#,
            r#"{"table":"TodoItem","id":"a"}"#,
        ] {
            assert!(read_event("TodoItem", "change", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_bytes_count_from_the_last_blank_line() {
        let mut b = EventBytes::default();
        assert_eq!(b.feed(b"id: 1\ndata: abc"), 14, "newlines are not counted");
        assert_eq!(b.feed(b"\n\n"), 0);
        assert_eq!(b.feed(b": heartbeat\r\n\r\n"), 0);
        assert_eq!(b.feed(b"data: x\r\n"), 7);
        assert_eq!(b.feed(b"data: y"), 14, "lines of one event add up");
    }

    /// A one-connection-at-a-time HTTP server answering every request with `head` and then the
    /// `chunks` (with a pause before each), then closing; the request heads it read go to the
    /// returned channel.
    async fn canned(
        head: &'static str,
        chunks: Vec<(u64, String)>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = socket.write_all(head.as_bytes()).await;
                for (pause_ms, chunk) in &chunks {
                    tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        });
        (url, rx)
    }

    const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";

    fn feed_of(url: &str) -> (Client, ChangesCapability) {
        let client = Client::new(url).unwrap();
        let caps = parse_capabilities(
            client.base_url(),
            &HttpResponse::new(
                200,
                r#"{"changes":{"url":"$changes/{table}","heartbeat_interval_ms":1000}}"#,
            ),
        );
        (client, caps.changes.unwrap())
    }

    #[tokio::test]
    async fn a_canned_stream_reads_as_changes_then_overflow_then_the_end() {
        let body = format!(
            ": heartbeat\n\nid: x\nevent: change\ndata: {CHANGE}\n\n: heartbeat\n\nevent: change\ndata: {}\n\nevent: overflow\ndata: {{}}\n\n",
            CHANGE.replace("abc", "abd")
        );
        // Split mid-line, so the parser must join chunks.
        let (first, rest) = body.split_at(40);
        let (url, mut requests) = canned(
            SSE_HEAD,
            vec![(0, first.to_string()), (20, rest.to_string())],
        )
        .await;
        let (client, changes) = feed_of(&url);
        let position = Position {
            updated_at: "2026-12-01T16:00:00.000Z".into(),
            id: "a b".into(),
        };
        let mut feed = open(
            &client,
            &changes,
            "TodoItem",
            Some(&position),
            Duration::from_secs(5),
            4096,
        )
        .await
        .unwrap();
        assert_eq!(
            feed.next().await.unwrap(),
            at("2026-12-01T16:00:00.123Z", "abc")
        );
        assert_eq!(
            feed.next().await.unwrap(),
            at("2026-12-01T16:00:00.123Z", "abd")
        );
        assert_eq!(feed.next().await.unwrap(), FeedEvent::Overflow);
        assert!(feed.next().await.unwrap_err().contains("closed"));
        let request = requests.recv().await.unwrap();
        let line = request.lines().next().unwrap().to_string();
        assert_eq!(
            line,
            "GET /$changes/TodoItem?after=2026-12-01T16%3A00%3A00.000Z%7Ca%20b HTTP/1.1"
        );
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("accept: text/event-stream"), "{request}");
        assert!(lower.contains("zumo-api-version: 2.0.0"), "{request}");
    }

    #[tokio::test]
    async fn silence_past_the_idle_timeout_ends_the_feed() {
        let (url, _requests) = canned(
            SSE_HEAD,
            vec![(0, ": hi\n\n".into()), (5_000, String::new())],
        )
        .await;
        let (client, changes) = feed_of(&url);
        let mut feed = open(
            &client,
            &changes,
            "TodoItem",
            None,
            Duration::from_millis(100),
            4096,
        )
        .await
        .unwrap();
        let err = feed.next().await.unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn an_endless_event_is_refused_at_the_byte_bound() {
        let long = format!("data: {}", "x".repeat(10_000));
        let (url, _requests) = canned(SSE_HEAD, vec![(0, long)]).await;
        let (client, changes) = feed_of(&url);
        let mut feed = open(
            &client,
            &changes,
            "TodoItem",
            None,
            Duration::from_secs(5),
            1024,
        )
        .await
        .unwrap();
        let err = feed.next().await.unwrap_err();
        assert!(err.contains("larger than 1024 bytes"), "{err}");
    }

    #[tokio::test]
    async fn a_refusal_or_a_page_that_is_no_stream_is_no_feed() {
        let (url, _r) = canned(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 47\r\nconnection: close\r\n\r\n{\"error\":\"too many\",\"code\":\"service_unavailable\"}",
            vec![],
        )
        .await;
        let (client, changes) = feed_of(&url);
        match open(
            &client,
            &changes,
            "TodoItem",
            None,
            Duration::from_secs(5),
            1024,
        )
        .await
        {
            Err(OpenError::Refused(503, body)) => assert!(body.contains("service_unavailable")),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let (url, _r) = canned(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            vec![],
        )
        .await;
        let (client, changes) = feed_of(&url);
        assert!(matches!(
            open(
                &client,
                &changes,
                "TodoItem",
                None,
                Duration::from_secs(5),
                1024
            )
            .await,
            Err(OpenError::Refused(200, _))
        ));
        let (client, changes) = feed_of("http://127.0.0.1:1/");
        assert!(matches!(
            open(
                &client,
                &changes,
                "TodoItem",
                None,
                Duration::from_secs(5),
                1024
            )
            .await,
            Err(OpenError::Network(_))
        ));
    }
}
