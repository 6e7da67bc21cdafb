//! `GET /$changes/{table}`: the change feed as Server-Sent Events (docs/extensions.md section 5;
//! the design is in `crate::feed`).
//!
//! The handler checks the position, takes a subscriber place and finds the start, then spawns
//! the subscriber's task and answers with a stream fed by a bounded channel:
//!
//! * the **task** ([`run`]) reads rows past its position whenever its table is woken (or
//!   `feed_poll_interval_ms` passed), as many as the channel has room for, and hands each as an
//!   event to the channel; when more changes are pending than fit it sends `overflow` into the
//!   slot kept for it and ends (the client pulls, then subscribes again);
//! * the **stream** turns channel messages into SSE events and adds `: heartbeat` when it has
//!   been silent for `feed_heartbeat_interval_ms` (axum's keep-alive).
//!
//! The task ends when the client goes away (the channel's receiver is dropped with the
//! response body), on overflow, or at shutdown (`FeedHub::close`), and its subscriber place is
//! given back then. A client that stops reading fills the socket's buffers, hyper stops polling
//! the body, the channel fills, and the task drops the subscriber: memory per subscriber is
//! bounded by the channel, never by the backlog.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc;

use super::extract::{Caller, TablePath};
use crate::app::{raw_query_value, App, FeedCursor};
use crate::error::ApiError;
use crate::feed::{read_plan, FeedMessage, Position, ReadOutcome, Subscription};

/// `GET /$changes/{table}?after=<position>` (or `Last-Event-ID: <position>`, which wins).
pub async fn changes_get(
    State(app): State<Arc<App>>,
    TablePath(table): TablePath,
    Caller(caller): Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let after = requested_position(&headers, uri.query().unwrap_or(""))?;
    let limits = app.limits();
    let subscription = app
        .feed()
        .admit(&table)
        .ok_or(ApiError::TooManySubscribers {
            max: limits.subscribers_max,
        })?;
    let cursor = app.feed_cursor(&table, &caller, after).await?;
    let (tx, rx) = mpsc::channel(limits.feed_subscriber_buffer_events.saturating_add(1));
    let heartbeat = Duration::from_millis(limits.feed_heartbeat_interval_ms);
    tokio::spawn(run(Arc::clone(&app), cursor, subscription, tx));
    let sse = Sse::new(FeedStream { rx }).keep_alive(
        KeepAlive::new()
            .interval(heartbeat)
            .event(Event::default().comment("heartbeat")),
    );
    let mut response = sse.into_response();
    // nginx and the like buffer responses unless told not to; a feed must not wait in a proxy.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The position asked for: `Last-Event-ID` when present and not empty (what an `EventSource`
/// sends on reconnecting), else `?after=` (form-encoded); None without either.
fn requested_position(headers: &HeaderMap, raw_query: &str) -> Result<Option<Position>, ApiError> {
    let text = match headers.get("last-event-id").map(|v| v.as_bytes()) {
        Some(bytes) if !bytes.is_empty() => std::str::from_utf8(bytes)
            .map_err(|_| {
                ApiError::InvalidPosition("the Last-Event-ID header is not UTF-8".to_owned())
            })?
            .to_owned(),
        _ => match raw_query_value(raw_query, "after", false) {
            Some(raw) => percent_decode_str(&raw.replace('+', " "))
                .decode_utf8()
                .map_err(|_| {
                    ApiError::InvalidPosition("the after parameter is not UTF-8".to_owned())
                })?
                .into_owned(),
            None => return Ok(None),
        },
    };
    Position::parse(&text)
        .map(Some)
        .map_err(ApiError::InvalidPosition)
}

/// The subscriber's task: read past the position on every wake-up, hand the changes to the
/// stream, stop on overflow, disconnect or shutdown (see the module docs).
async fn run(
    app: Arc<App>,
    mut cursor: FeedCursor,
    mut sub: Subscription,
    tx: mpsc::Sender<FeedMessage>,
) {
    let limits = app.limits();
    let poll = Duration::from_millis(limits.feed_poll_interval_ms);
    let page_max = usize::try_from(limits.page_size_max).unwrap_or(usize::MAX);
    loop {
        if *sub.closing.borrow() {
            return;
        }
        // Seen before reading: a write committed after this point wakes us again.
        sub.generation.borrow_and_update();
        loop {
            let plan = read_plan(tx.capacity(), page_max);
            let read = {
                let Ok(_permit) = sub.hub().reads().acquire().await else {
                    return;
                };
                tokio::select! {
                    read = app.feed_read(&cursor, plan.limit as u64) => read,
                    () = tx.closed() => return,
                }
            };
            let rows = match read {
                Ok(rows) => rows,
                Err(e) => {
                    // The database is away or busy: try again at the next wake-up or poll.
                    tracing::warn!(table = %cursor.table, "change feed read failed: {e}");
                    break;
                }
            };
            let outcome = plan.outcome(rows.len());
            let send = match outcome {
                ReadOutcome::Send { .. } => rows.len(),
                ReadOutcome::Overflow { send } => send,
            };
            for change in rows.into_iter().take(send) {
                cursor.position = Some(change.position());
                // Never full (the plan left room), so an error means the client is gone.
                if tx.try_send(FeedMessage::Change(Box::new(change))).is_err() {
                    return;
                }
            }
            if let Some(metrics) = app.metrics() {
                metrics.feed_events(&cursor.table, send as u64);
            }
            match outcome {
                ReadOutcome::Overflow { .. } => {
                    let _ = tx.try_send(FeedMessage::Overflow);
                    if let Some(metrics) = app.metrics() {
                        metrics.feed_drop(&cursor.table);
                    }
                    tracing::info!(table = %cursor.table, "change feed subscriber dropped: more than {} events behind", limits.feed_subscriber_buffer_events);
                    return;
                }
                ReadOutcome::Send { more: true } => continue,
                ReadOutcome::Send { more: false } => break,
            }
        }
        tokio::select! {
            changed = sub.generation.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(poll) => {}
            () = tx.closed() => return,
            _ = sub.closing.changed() => return,
        }
    }
}

/// The response body's events, from the subscriber's channel.
struct FeedStream {
    rx: mpsc::Receiver<FeedMessage>,
}

impl futures_core::Stream for FeedStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|message| message.map(|m| Ok(event(m))))
    }
}

/// One message as an SSE event.
fn event(message: FeedMessage) -> Event {
    match message {
        FeedMessage::Change(change) => {
            let id = change.position().to_wire();
            // Ids never hold line breaks or NUL (protocol.md 3.1 refuses control characters),
            // but axum panics on one: leave the field out rather than fail the stream.
            let event = if id.contains(['\r', '\n', '\0']) {
                Event::default()
            } else {
                Event::default().id(id)
            };
            event.event("change").data(change.data())
        }
        FeedMessage::Overflow => Event::default().event("overflow").data("{}"),
    }
}
