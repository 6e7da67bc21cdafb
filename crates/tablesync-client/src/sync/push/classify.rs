//! What one answer means for one pushed operation: pure functions, no IO.
//!
//! | answer | outcome | effect |
//! |---|---|---|
//! | 2xx with this operation's item, fitting the local table (insert/update) | `Success` | entry removed, server copy (ETag version) written back |
//! | 2xx (delete), 404 (delete) whose JSON body says the item is missing | `Success` | entry removed |
//! | no answer: refused, dropped, timeout | `NetworkError` | push stops, `CancelledByNetworkError`, queue intact; the transport error is the `PushFailed` message |
//! | 401 | `Unauthorized` | push stops, `CancelledByAuthenticationError`, queue intact; the server's message is the `PushFailed` message |
//! | 409, 412, other 4xx/5xx (424 included: a batch's atomicity group failed) | `Failed` | operation error recorded, push continues |
//! | 2xx garbage: no item, another item's `id`, a value of the wrong type | `Failed` (no server copy, raw body kept) | operation error recorded, nothing written, push continues |
//! | (local store failure) | — | push stops, `CancelledBySyncStoreError`, the store's error is the `PushFailed` message |
//!
//! A batch answers each operation with exactly the status, headers and body its own request
//! would get (`docs/extensions.md` section 2), so [`classify`] serves both paths. The follow-ups
//! that need the server's copy of the item (an insert answered 409, an update answered 404/410,
//! a 412) are `super::operation`'s; [`compare_server_copy`] is their pure part.

use serde_json::{Map, Value};
use tablesync_protocol::headers::version_from_etag;

use crate::queue::OpKind;
use crate::store::rows;
use crate::transport::{HttpResponse, TransportError};

/// The result of sending one operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The server applied the operation; `item` is its copy of the item when it sent one.
    Success {
        /// The server's copy (with `version` taken from the `ETag` header when present).
        item: Option<Map<String, Value>>,
    },
    /// No HTTP answer: connection refused or dropped, timeout, oversized body.
    NetworkError(String),
    /// The server answered 401; the server's message (the body's `error`/`message` string, or
    /// the body text).
    Unauthorized(String),
    /// The server refused or failed the operation.
    Failed {
        /// HTTP status (`None` when nothing was sent, e.g. the local row was missing).
        status: Option<u16>,
        /// The response body as text.
        raw: String,
        /// The server's copy of the item, when the body is a JSON object with an `id` (for an
        /// update answered 404/410, the tombstone that confirms the delete; see
        /// [`crate::TableOperation::execute`]).
        server_item: Option<Map<String, Value>>,
    },
}

/// Parses a response body as an item (a JSON object with a string `id`), taking `version` from a
/// strong `ETag` header when present. Weak ETags (`W/"…"`, express's body hash) are not versions.
pub fn parse_item(resp: &HttpResponse) -> Option<Map<String, Value>> {
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&resp.body) else {
        return None;
    };
    if !matches!(m.get("id"), Some(Value::String(_))) {
        return None;
    }
    if let Some(etag) = resp.header("etag") {
        if !etag.trim_start().starts_with("W/") {
            m.insert("version".into(), Value::String(version_from_etag(etag)));
        }
    }
    Some(m)
}

/// Longest server message kept from an error body, in characters.
const SERVER_MESSAGE_CHARS_MAX: usize = 500;

/// The human message of an error answer: the `error` or `message` string of a JSON body (the
/// official servers' and ours), else the body text; an empty body gives the status line.
pub(crate) fn server_message(resp: &HttpResponse) -> String {
    let from_json = match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => ["error", "message"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str).map(str::to_string)),
        _ => None,
    };
    let text = from_json.unwrap_or_else(|| resp.body_text().trim().to_string());
    if text.is_empty() {
        format!("HTTP {} without a message", resp.status)
    } else {
        text.chars().take(SERVER_MESSAGE_CHARS_MAX).collect()
    }
}

/// Classifies the answer to one pushed operation (pure).
pub fn classify(kind: OpKind, answer: &Result<HttpResponse, TransportError>) -> Outcome {
    let resp = match answer {
        Err(e) => return Outcome::NetworkError(e.to_string()),
        Ok(r) => r,
    };
    let status = resp.status;
    if status == 401 {
        return Outcome::Unauthorized(server_message(resp));
    }
    let failed = |server_item| Outcome::Failed {
        status: Some(status),
        raw: resp.body_text(),
        server_item,
    };
    match (kind, status) {
        // A delete is done whatever the body says (Node: the row, .NET: 204 empty). A 404 means
        // someone else deleted it already, which is what we wanted, but only when the body says
        // the *item* is missing: an HTML page from a proxy or an unknown route, an empty body or
        // another resource's code says nothing about the item, and taking it as success would
        // drop the queued delete for good (the local row is already gone).
        (OpKind::Delete, 200..=299) => Outcome::Success {
            item: parse_item(resp),
        },
        (OpKind::Delete, 404) if says_item_not_found(resp) => Outcome::Success { item: None },
        (_, 200..=299) => match parse_item(resp) {
            Some(item) => Outcome::Success { item: Some(item) },
            // A 2xx without the item is a garbage answer: we cannot know the new version, so the
            // operation stays queued and is reported.
            None => failed(None),
        },
        _ => failed(parse_item(resp)),
    }
}

/// Whether a 404/410 answer to a GET by id says the item does not exist: a JSON error body
/// with `code` `item_not_found` (ours), or a JSON object without a `code` (the official Node
/// server's `{"error":"The item does not exist"}`). An HTML page (an unknown route or table on
/// express), an empty body or another code is not a confirmation.
pub(crate) fn says_item_not_found(resp: &HttpResponse) -> bool {
    if !matches!(resp.status, 404 | 410) {
        return false;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => match m.get("code") {
            Some(Value::String(c)) => c == "item_not_found",
            Some(_) => false,
            None => true,
        },
        _ => false,
    }
}

/// Whether the server's copy holds every value that was sent (lost-response detection).
pub(crate) fn same_content(sent: &Map<String, Value>, server: &Map<String, Value>) -> bool {
    sent.iter().all(|(k, v)| {
        let s = server.get(k).unwrap_or(&Value::Null);
        match (v, s) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::String(a), Value::String(b)) if a != b => {
                match (rows::normalize_date(a), rows::normalize_date(b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            }
            _ => v == s,
        }
    })
}

/// What the server's copy of an item (the body of a 412, or the GET after an insert's 409)
/// says about the operation being pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerCopy {
    /// It already holds exactly what this request sends (an insert or update): the operation
    /// is done, whoever wrote it.
    HoldsThisRequest,
    /// It is a tombstone and the operation is a delete: the item is gone, as wanted.
    DeletedAsWanted,
    /// It holds exactly what an earlier attempt of this operation sent, at this `version`:
    /// that attempt landed though its answer was lost. Rebase on the version and send again.
    HoldsEarlierAttempt(String),
    /// Anything else: a real conflict.
    Conflict,
}

/// Compares the server's copy with what this operation sends (`current`, the body of an
/// insert or update) and what its earlier attempts sent (`sent_before`, see
/// `store::queue`'s `sentItems`), exactly as the insert's lost-response check always did
/// ([`same_content`]). A tombstone is never rebased on (a deleted row cannot be updated); a
/// copy without a `version` cannot be (the resend needs `If-Match`).
pub(crate) fn compare_server_copy(
    kind: OpKind,
    current: &Map<String, Value>,
    sent_before: &[Map<String, Value>],
    server: &Map<String, Value>,
) -> ServerCopy {
    let deleted = server.get("deleted") == Some(&Value::Bool(true));
    match kind {
        OpKind::Delete if deleted => return ServerCopy::DeletedAsWanted,
        _ if deleted => return ServerCopy::Conflict,
        OpKind::Delete => {}
        _ if same_content(current, server) => return ServerCopy::HoldsThisRequest,
        _ => {}
    }
    match server.get("version") {
        Some(Value::String(version)) if sent_before.iter().any(|s| same_content(s, server)) => {
            ServerCopy::HoldsEarlierAttempt(version.clone())
        }
        _ => ServerCopy::Conflict,
    }
}

/// Whether an operation's failed answer was a definite refusal: a 4xx the server decided
/// (400, 404, 409, 412, 422, …), after which the request is known not to have applied, so
/// its idempotency key is replaced and the next attempt is decided afresh instead of
/// replaying the refusal. Not: no answer, 5xx (a 504 may still commit), 401, 408 and 429 (not
/// decided), 424 (the operation was only rolled back with its atomicity group; it is resent
/// as it was).
pub(crate) fn is_definite_refusal(status: Option<u16>) -> bool {
    matches!(status, Some(400..=499)) && !matches!(status, Some(401 | 408 | 424 | 429))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse::new(status, body))
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn success_takes_version_from_strong_etag() {
        let r = Ok(
            HttpResponse::new(201, r#"{"id":"a","text":"x","version":"old"}"#)
                .with_header("ETag", "\"MQ==\""),
        );
        assert_eq!(
            classify(OpKind::Insert, &r),
            Outcome::Success {
                item: Some(obj(json!({"id":"a","text":"x","version":"MQ=="})))
            }
        );
        let weak = Ok(HttpResponse::new(200, r#"{"id":"a","version":"Mg=="}"#)
            .with_header("etag", "W/\"1a-xyz\""));
        assert_eq!(
            classify(OpKind::Update, &weak),
            Outcome::Success {
                item: Some(obj(json!({"id":"a","version":"Mg=="})))
            }
        );
    }

    #[test]
    fn deletes_succeed_on_2xx_and_404() {
        assert_eq!(
            classify(OpKind::Delete, &resp(204, "")),
            Outcome::Success { item: None }
        );
        assert_eq!(
            classify(
                OpKind::Delete,
                &resp(404, r#"{"error":"The item does not exist"}"#)
            ),
            Outcome::Success { item: None }
        );
        // A 404 about the table is not "already deleted": the queued delete stays.
        let table_404 = r#"{"error":"Table 'Ghost' does not exist","code":"table_not_found"}"#;
        assert_eq!(
            classify(OpKind::Delete, &resp(404, table_404)),
            Outcome::Failed {
                status: Some(404),
                raw: table_404.into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(
                OpKind::Delete,
                &resp(404, r#"{"error":"gone","code":"item_not_found"}"#)
            ),
            Outcome::Success { item: None }
        );
        // A 404 that does not say the item is missing (an HTML page from a proxy or an unknown
        // route, an empty body, plain text) keeps the queued delete.
        for body in [
            "<html><body>Cannot DELETE /tables/todoitem/a</body></html>",
            "",
            "Not Found",
        ] {
            assert_eq!(
                classify(OpKind::Delete, &resp(404, body)),
                Outcome::Failed {
                    status: Some(404),
                    raw: body.into(),
                    server_item: None
                },
                "{body:?}"
            );
        }
        // Only an item-level 404 confirms a delete (ours, or the Node server's code-less body).
        assert!(says_item_not_found(&HttpResponse::new(
            404,
            r#"{"error":"x","code":"item_not_found"}"#
        )));
        assert!(says_item_not_found(&HttpResponse::new(
            404,
            r#"{"error":"The item does not exist"}"#
        )));
        assert!(!says_item_not_found(&HttpResponse::new(404, table_404)));
        assert!(!says_item_not_found(&HttpResponse::new(
            404,
            "<html>Cannot GET /tables/Ghost/x</html>"
        )));
        assert!(!says_item_not_found(&HttpResponse::new(404, "")));
        assert!(!says_item_not_found(&HttpResponse::new(
            500,
            r#"{"error":"x"}"#
        )));
        assert_eq!(
            classify(
                OpKind::Update,
                &resp(404, r#"{"error":"The item does not exist"}"#)
            ),
            Outcome::Failed {
                status: Some(404),
                raw: r#"{"error":"The item does not exist"}"#.into(),
                server_item: None
            }
        );
    }

    #[test]
    fn conflicts_carry_the_server_item() {
        let body = r#"{"id":"a","text":"server","version":"Mw=="}"#;
        assert_eq!(
            classify(OpKind::Update, &resp(412, body)),
            Outcome::Failed {
                status: Some(412),
                raw: body.into(),
                server_item: Some(obj(json!({"id":"a","text":"server","version":"Mw=="})))
            }
        );
        // An error body without an id is not an item.
        assert_eq!(
            classify(OpKind::Insert, &resp(409, r#"{"message":"PRIMARY KEY"}"#)),
            Outcome::Failed {
                status: Some(409),
                raw: r#"{"message":"PRIMARY KEY"}"#.into(),
                server_item: None
            }
        );
        // A batch's 424 (the atomicity group failed) is the operation's failure, not an item.
        let dependency = r#"{"error":"request 1 failed","code":"failed_dependency"}"#;
        assert_eq!(
            classify(OpKind::Update, &resp(424, dependency)),
            Outcome::Failed {
                status: Some(424),
                raw: dependency.into(),
                server_item: None
            }
        );
    }

    #[test]
    fn network_auth_and_garbage() {
        assert_eq!(
            classify(OpKind::Insert, &Err(TransportError::Timeout)),
            Outcome::NetworkError("request timed out".into())
        );
        assert_eq!(
            classify(
                OpKind::Insert,
                &Err(TransportError::Connection("reset".into()))
            ),
            Outcome::NetworkError("connection failed: reset".into())
        );
        assert_eq!(
            classify(OpKind::Delete, &resp(401, "")),
            Outcome::Unauthorized("HTTP 401 without a message".into())
        );
        assert_eq!(
            classify(OpKind::Update, &resp(401, r#"{"error":"token expired"}"#)),
            Outcome::Unauthorized("token expired".into())
        );
        assert_eq!(
            classify(OpKind::Insert, &resp(401, "  go away\n")),
            Outcome::Unauthorized("go away".into())
        );
        assert_eq!(
            classify(OpKind::Insert, &resp(200, "<html>hello</html>")),
            Outcome::Failed {
                status: Some(200),
                raw: "<html>hello</html>".into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(OpKind::Update, &resp(200, "[1,2]")),
            Outcome::Failed {
                status: Some(200),
                raw: "[1,2]".into(),
                server_item: None
            }
        );
        assert_eq!(
            classify(OpKind::Update, &resp(500, "\u{0}\u{1}")),
            Outcome::Failed {
                status: Some(500),
                raw: "\u{0}\u{1}".into(),
                server_item: None
            }
        );
    }

    #[test]
    fn lost_response_detection_compares_sent_values() {
        let sent = obj(json!({"id":"a","text":"x","n":1,"due":"2020-01-01T00:00:00Z"}));
        assert!(same_content(
            &sent,
            &obj(
                json!({"id":"a","text":"x","n":1.0,"due":"2020-01-01T00:00:00.000Z","version":"v"})
            )
        ));
        assert!(!same_content(
            &sent,
            &obj(json!({"id":"a","text":"y","n":1}))
        ));
    }

    #[test]
    fn a_server_copy_holding_an_earlier_attempt_means_that_attempt_landed() {
        let v2 = obj(json!({"id":"a","text":"v2","complete":false}));
        let v3 = obj(json!({"id":"a","text":"v3","complete":false}));
        let server_v2 = obj(json!({"id":"a","text":"v2","complete":false,"version":"S2"}));
        let sent = [v2.clone(), v3.clone()];
        use ServerCopy::*;
        // The user's newer edit is still to be sent; the server holds the earlier one.
        assert_eq!(
            compare_server_copy(OpKind::Update, &v3, &sent, &server_v2),
            HoldsEarlierAttempt("S2".into())
        );
        assert_eq!(
            compare_server_copy(OpKind::Insert, &v3, &sent, &server_v2),
            HoldsEarlierAttempt("S2".into())
        );
        // The server already holds what this request sends.
        assert_eq!(
            compare_server_copy(OpKind::Update, &v2, &sent, &server_v2),
            HoldsThisRequest
        );
        // Someone else's value is a conflict; so is ours without a version to rebase on.
        let other = obj(json!({"id":"a","text":"theirs","complete":false,"version":"S9"}));
        assert_eq!(
            compare_server_copy(OpKind::Update, &v3, &sent, &other),
            Conflict
        );
        let unversioned = obj(json!({"id":"a","text":"v2","complete":false}));
        assert_eq!(
            compare_server_copy(OpKind::Update, &v3, &sent, &unversioned),
            Conflict
        );
        // A delete whose replaced update landed rebases; a tombstone is what a delete wants,
        // and never something an update or insert rebases on.
        let queued_delete = obj(json!({"id":"a","text":"v1"}));
        assert_eq!(
            compare_server_copy(OpKind::Delete, &queued_delete, &sent, &server_v2),
            HoldsEarlierAttempt("S2".into())
        );
        assert_eq!(
            compare_server_copy(OpKind::Delete, &queued_delete, &[], &server_v2),
            Conflict
        );
        let tombstone =
            obj(json!({"id":"a","text":"v2","complete":false,"version":"S3","deleted":true}));
        assert_eq!(
            compare_server_copy(OpKind::Delete, &queued_delete, &[], &tombstone),
            DeletedAsWanted
        );
        assert_eq!(
            compare_server_copy(OpKind::Update, &v2, &sent, &tombstone),
            Conflict
        );
    }

    #[test]
    fn only_decided_refusals_replace_the_idempotency_key() {
        for status in [400, 403, 404, 405, 409, 410, 412, 413, 422] {
            assert!(is_definite_refusal(Some(status)), "{status}");
        }
        for status in [None, Some(200), Some(401), Some(408), Some(424), Some(429)] {
            assert!(!is_definite_refusal(status), "{status:?}");
        }
        for status in [500, 502, 503, 504] {
            assert!(!is_definite_refusal(Some(status)), "{status}");
        }
    }
}
