//! The batch request and its answer on the wire (`docs/extensions.md` section 2): pure
//! encoding and decoding, no IO.
//!
//! A request is built from per-operation *members* (`"method":…,"url":…,"headers":{…},"body":…`,
//! each encoded once) so that its exact size is known before it is assembled:
//! [`request_len`] and [`ENVELOPE_BYTES`] are what [`super::plan`] counts against
//! `body_bytes_max`, and [`encode_batch`] produces exactly that many bytes.
//!
//! The answer is usable only whole: `200` and a JSON `{"responses": […]}` holding exactly one
//! well-formed response per request id. Anything else ([`BatchAnswer::NotAnswered`],
//! [`BatchAnswer::Unreadable`]) says nothing reliable about any single operation, so the push
//! stops with the queue intact and the same idempotency keys, and a retry sends the batch again.

use serde_json::{Map, Value};
use tablesync_protocol::headers::etag_from_version;

use super::classify::server_message;
use crate::client::table_path;
use crate::queue::OpKind;
use crate::transport::{HttpResponse, TransportError};

/// `{"requests":[` and `]}` around the requests, in bytes.
pub(crate) const ENVELOPE_BYTES: usize = r#"{"requests":["#.len() + "]}".len();

/// The members of one request object except its `id` and `atomicityGroup`, as JSON text without
/// the braces: exactly the single-item request the operation makes on its own (method, path
/// relative to the base URL, `If-Match` for updates and deletes with a version, its
/// idempotency key, the body of inserts and updates).
pub(crate) fn request_members(
    kind: OpKind,
    table: &str,
    item_id: &str,
    body: &Map<String, Value>,
    version: Option<&str>,
    idempotency_key: &str,
) -> String {
    let (method, url) = match kind {
        OpKind::Insert => ("POST", table_path(table, None)),
        OpKind::Update => ("PATCH", table_path(table, Some(item_id))),
        OpKind::Delete => ("DELETE", table_path(table, Some(item_id))),
    };
    let mut headers = Map::new();
    headers.insert(
        "idempotency-key".into(),
        Value::String(idempotency_key.to_string()),
    );
    if kind != OpKind::Insert {
        if let Some(v) = version {
            headers.insert("if-match".into(), Value::String(etag_from_version(v)));
        }
    }
    let mut request = Map::new();
    request.insert("method".into(), Value::String(method.into()));
    request.insert("url".into(), Value::String(url));
    request.insert("headers".into(), Value::Object(headers));
    if kind != OpKind::Delete {
        request.insert("body".into(), Value::Object(body.clone()));
    }
    let text = Value::Object(request).to_string();
    // `{…}` with at least one member: the members are what lies between the braces.
    text[1..text.len() - 1].to_string()
}

/// The request id of the operation at `position` (1-based) in its batch.
fn request_id(position: usize) -> String {
    position.to_string()
}

/// The `atomicityGroup` label of the `n`th group (1-based) of a batch.
fn group_label(n: u32) -> String {
    format!("g{n}")
}

/// Bytes of the request object built from `members_len` bytes of members at `position`
/// (1-based) in its batch, in the atomicity group numbered `group` if any (the separating comma
/// not included).
pub(crate) fn request_len(members_len: usize, position: usize, group: Option<u32>) -> usize {
    // {"id":"<id>",<members>[,"atomicityGroup":"<label>"]}
    let id = r#"{"id":""#.len() + request_id(position).len() + r#"","#.len();
    let group = group.map_or(0, |g| {
        r#","atomicityGroup":""#.len() + group_label(g).len() + r#"""#.len()
    });
    id + members_len + group + "}".len()
}

/// The batch request body: one request per members text, ids `1`…`n` in order, with the given
/// atomicity groups. Its length is [`ENVELOPE_BYTES`] plus each [`request_len`] plus a comma
/// between requests.
pub(crate) fn encode_batch(members: &[String], groups: &[Option<u32>]) -> Vec<u8> {
    let mut out = String::from(r#"{"requests":["#);
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"id":""#);
        out.push_str(&request_id(i + 1));
        out.push_str(r#"","#);
        out.push_str(m);
        if let Some(g) = groups.get(i).copied().flatten() {
            out.push_str(r#","atomicityGroup":""#);
            out.push_str(&group_label(g));
            out.push('"');
        }
        out.push('}');
    }
    out.push_str("]}");
    out.into_bytes()
}

/// What the answer to a batch says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BatchAnswer {
    /// One answer per operation, in request order, each exactly what the operation's own
    /// request would have been answered.
    Answers(Vec<HttpResponse>),
    /// No HTTP answer (the batch may or may not have been applied).
    NetworkError(String),
    /// The batch's own authentication failed (401); the server's message.
    Unauthorized(String),
    /// Another status than 200: the batch was refused as a whole (4xx: nothing applied) or
    /// failed (5xx: unknown). The server's message.
    NotAnswered { status: u16, message: String },
    /// `200`, but not one well-formed response per request (what was wrong).
    Unreadable(String),
}

/// Reads the answer to a batch of `count` requests (ids `1`…`count`). Never panics.
pub(crate) fn read_batch_answer(
    count: usize,
    answer: &Result<HttpResponse, TransportError>,
) -> BatchAnswer {
    let resp = match answer {
        Err(e) => return BatchAnswer::NetworkError(e.to_string()),
        Ok(r) => r,
    };
    match resp.status {
        200 => {}
        401 => return BatchAnswer::Unauthorized(server_message(resp)),
        status => {
            return BatchAnswer::NotAnswered {
                status,
                message: server_message(resp),
            }
        }
    }
    match responses(count, resp) {
        Ok(answers) => BatchAnswer::Answers(answers),
        Err(reason) => BatchAnswer::Unreadable(reason),
    }
}

/// The responses of a 200 answer, in request order, or what is wrong with them.
fn responses(count: usize, resp: &HttpResponse) -> Result<Vec<HttpResponse>, String> {
    let doc: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("the batch answer is not JSON: {e}"))?;
    let Some(list) = doc.get("responses").and_then(Value::as_array) else {
        return Err("the batch answer has no responses array".into());
    };
    let mut slots: Vec<Option<HttpResponse>> = vec![None; count];
    for (n, r) in list.iter().enumerate() {
        let Some(r) = r.as_object() else {
            return Err(format!("response {n} of the batch answer is not an object"));
        };
        let Some(id) = r.get("id").and_then(Value::as_str) else {
            return Err(format!("response {n} of the batch answer has no string id"));
        };
        let slot = id
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=count).contains(p) && request_id(*p) == id)
            .ok_or_else(|| format!("the batch answer has a response for unknown request {id:?}"))?;
        let status = r
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| format!("the response for request {id} has no valid status"))?;
        let mut headers = Vec::new();
        match r.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    let Some(v) = v.as_str() else {
                        return Err(format!(
                            "the response for request {id} has a non-string header {k:?}"
                        ));
                    };
                    headers.push((k.to_ascii_lowercase(), v.to_string()));
                }
            }
            Some(_) => {
                return Err(format!(
                    "the response for request {id} has headers that are not an object"
                ))
            }
        }
        let body = match r.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => v.to_string().into_bytes(),
        };
        let entry = &mut slots[slot - 1];
        if entry.is_some() {
            return Err(format!(
                "the batch answer has two responses for request {id}"
            ));
        }
        *entry = Some(HttpResponse {
            status,
            headers,
            body,
        });
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or_else(|| format!("the batch answer has no response for request {}", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn requests_are_the_single_item_requests() {
        let body = obj(json!({"id": "a b", "text": "x"}));
        let insert = request_members(OpKind::Insert, "TodoItem", "a b", &body, Some("v"), "k1");
        let update = request_members(OpKind::Update, "TodoItem", "a b", &body, Some("v"), "k2");
        let delete = request_members(OpKind::Delete, "TodoItem", "a/b", &body, None, "k3");
        let batch = encode_batch(
            &[insert.clone(), update.clone(), delete.clone()],
            &[Some(1), Some(1), None],
        );
        let doc: Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(
            doc,
            json!({"requests": [
                {"id": "1", "method": "POST", "url": "tables/TodoItem",
                 "headers": {"idempotency-key": "k1"}, "body": {"id": "a b", "text": "x"},
                 "atomicityGroup": "g1"},
                {"id": "2", "method": "PATCH", "url": "tables/TodoItem/a%20b",
                 "headers": {"idempotency-key": "k2", "if-match": "\"v\""},
                 "body": {"id": "a b", "text": "x"}, "atomicityGroup": "g1"},
                {"id": "3", "method": "DELETE", "url": "tables/TodoItem/a%2Fb",
                 "headers": {"idempotency-key": "k3"}}
            ]})
        );
        // The planned size is the encoded size, byte for byte.
        let planned = ENVELOPE_BYTES
            + request_len(insert.len(), 1, Some(1))
            + 1
            + request_len(update.len(), 2, Some(1))
            + 1
            + request_len(delete.len(), 3, None);
        assert_eq!(planned, batch.len());
        let many: Vec<String> = (0..120).map(|_| delete.clone()).collect();
        let groups: Vec<Option<u32>> = (0..120).map(|i| Some(i / 7 + 1)).collect();
        let planned: usize = ENVELOPE_BYTES
            + many
                .iter()
                .zip(&groups)
                .enumerate()
                .map(|(i, (m, g))| request_len(m.len(), i + 1, *g) + usize::from(i > 0))
                .sum::<usize>();
        assert_eq!(planned, encode_batch(&many, &groups).len());
    }

    fn answer(status: u16, body: &str) -> BatchAnswer {
        read_batch_answer(3, &Ok(HttpResponse::new(status, body)))
    }

    #[test]
    fn answers_come_back_in_request_order_whatever_their_order() {
        let got = answer(
            200,
            r#"{"responses":[
                {"id":"3","status":200,"headers":{"ETag":"\"v3\""},"body":{"id":"c","deleted":true}},
                {"id":"1","status":201,"body":{"id":"a"}},
                {"id":"2","status":424,"headers":{},"body":{"error":"request 1 failed","code":"failed_dependency"}}
            ]}"#,
        );
        let BatchAnswer::Answers(answers) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            answers,
            vec![
                HttpResponse::new(201, r#"{"id":"a"}"#),
                HttpResponse::new(
                    424,
                    r#"{"error":"request 1 failed","code":"failed_dependency"}"#
                ),
                HttpResponse::new(200, r#"{"id":"c","deleted":true}"#)
                    .with_header("etag", "\"v3\""),
            ]
        );
        // A response without a body is an empty body (a 204 delete).
        let BatchAnswer::Answers(a) = read_batch_answer(
            1,
            &Ok(HttpResponse::new(
                200,
                r#"{"responses":[{"id":"1","status":204}]}"#,
            )),
        ) else {
            panic!()
        };
        assert_eq!(a, vec![HttpResponse::new(204, "")]);
    }

    #[test]
    fn every_malformed_answer_is_unusable_as_a_whole() {
        let ok = r#"{"id":"1","status":200,"body":{"id":"a"}}"#;
        let two = r#"{"id":"2","status":200,"body":{"id":"b"}}"#;
        for (body, reason) in [
            ("<html>proxy</html>", "not JSON"),
            ("", "not JSON"),
            ("[1,2]", "no responses array"),
            (r#"{"responses":{}}"#, "no responses array"),
            (
                &format!(r#"{{"responses":[{ok},{two}]}}"#),
                "no response for request 3",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{ok}]}}"#),
                "two responses for request 1",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"4","status":200}}]}}"#),
                "unknown request \"4\"",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"03","status":200}}]}}"#),
                "unknown request \"03\"",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":3,"status":200}}]}}"#),
                "no string id",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"3","status":"ok"}}]}}"#),
                "no valid status",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"3","status":99}}]}}"#),
                "no valid status",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"3","status":70000}}]}}"#),
                "no valid status",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},{{"id":"3","status":200,"headers":[]}}]}}"#),
                "headers that are not an object",
            ),
            (
                &format!(
                    r#"{{"responses":[{ok},{two},{{"id":"3","status":200,"headers":{{"etag":1}}}}]}}"#
                ),
                "non-string header",
            ),
            (
                &format!(r#"{{"responses":[{ok},{two},7]}}"#),
                "not an object",
            ),
        ] {
            match answer(200, body) {
                BatchAnswer::Unreadable(r) => assert!(r.contains(reason), "{body}: {r}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            answer(
                413,
                r#"{"error":"body too large","code":"payload_too_large"}"#
            ),
            BatchAnswer::NotAnswered {
                status: 413,
                message: "body too large".into()
            }
        );
        assert_eq!(
            answer(502, "<html>bad gateway</html>"),
            BatchAnswer::NotAnswered {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
        assert_eq!(
            answer(201, r#"{"responses":[]}"#),
            BatchAnswer::NotAnswered {
                status: 201,
                message: r#"{"responses":[]}"#.into()
            }
        );
        assert_eq!(
            answer(401, r#"{"error":"token expired"}"#),
            BatchAnswer::Unauthorized("token expired".into())
        );
        assert_eq!(
            read_batch_answer(3, &Err(TransportError::Timeout)),
            BatchAnswer::NetworkError("request timed out".into())
        );
    }
}
