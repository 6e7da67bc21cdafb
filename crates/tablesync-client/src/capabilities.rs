//! Discovery of the server's protocol extensions (`docs/extensions.md` section 1).
//!
//! Our server answers `GET {base}/$capabilities` with a small JSON document (largest page, batched
//! writes, idempotency keys, the change feed); the official servers answer 404. [`parse_capabilities`] turns any
//! answer into a [`Capabilities`] value (pure: anything but a 2xx JSON object means "no
//! extensions", so the client falls back to the plain protocol), and
//! [`crate::SyncContext::capabilities`] asks at most once per context.

use serde_json::Value;

use crate::transport::HttpResponse;

/// What a server offers beyond the Mobile Apps table protocol. [`Capabilities::default`] is a
/// server with no extensions (the official servers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The server's name and version (`tablesync-0.1.0`), when it said.
    pub server: Option<String>,
    /// The largest `$top` the server accepts, in rows.
    pub page_size_max: Option<u32>,
    /// Batched writes (`POST {base}/$batch`), when offered.
    pub batch: Option<BatchCapability>,
    /// `Idempotency-Key` on writes, when honoured.
    pub idempotency: Option<IdempotencyCapability>,
    /// The change feed (`GET {base}/$changes/{table}`, section 5), when offered.
    pub changes: Option<ChangesCapability>,
}

/// The change feed and its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangesCapability {
    /// Absolute URL of a table's feed, with `{table}` where the table name goes.
    pub url_template: String,
    /// How often the server sends a heartbeat on an idle feed, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

impl ChangesCapability {
    /// The feed URL of `table` (the name percent-encoded as a path segment).
    pub fn url(&self, table: &str) -> String {
        self.url_template
            .replace("{table}", &crate::client::encode_component(table))
    }
}

/// The batch endpoint and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCapability {
    /// Absolute URL of the batch endpoint.
    pub url: String,
    /// Most operations in one batch, in operations.
    pub operations_max: usize,
    /// Largest batch request body, in bytes.
    pub body_bytes_max: u64,
}

/// How the server keeps idempotency records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyCapability {
    /// How long a recorded outcome is replayed for the same key, in seconds.
    pub retention_s: u64,
}

/// The discovery URL for a base URL ending in `/`.
pub(crate) fn capabilities_url(base_url: &str) -> String {
    format!("{base_url}$capabilities")
}

/// Reads a discovery answer (pure). Members that are missing, of the wrong type or out of range
/// are treated as not offered; unknown members are ignored.
pub fn parse_capabilities(base_url: &str, resp: &HttpResponse) -> Capabilities {
    if !(200..300).contains(&resp.status) {
        return Capabilities::default();
    }
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&resp.body) else {
        return Capabilities::default();
    };
    let positive = |v: Option<&Value>| v.and_then(Value::as_u64).filter(|n| *n > 0);
    let batch = doc.get("batch").and_then(Value::as_object).and_then(|b| {
        let url = b.get("url").and_then(Value::as_str)?;
        Some(BatchCapability {
            url: resolve(base_url, url)?,
            operations_max: usize::try_from(positive(b.get("operations_max"))?).ok()?,
            body_bytes_max: positive(b.get("body_bytes_max"))?,
        })
    });
    let idempotency = doc
        .get("idempotency")
        .and_then(Value::as_object)
        .and_then(|i| {
            Some(IdempotencyCapability {
                retention_s: positive(i.get("retention_s"))?,
            })
        });
    let changes = doc.get("changes").and_then(Value::as_object).and_then(|c| {
        let url = c.get("url").and_then(Value::as_str)?;
        if !url.contains("{table}") {
            return None;
        }
        Some(ChangesCapability {
            url_template: resolve(base_url, url)?,
            heartbeat_interval_ms: positive(c.get("heartbeat_interval_ms"))?,
        })
    });
    Capabilities {
        server: doc.get("server").and_then(Value::as_str).map(str::to_owned),
        page_size_max: positive(doc.get("page_size_max")).and_then(|n| u32::try_from(n).ok()),
        batch,
        idempotency,
        changes,
    }
}

/// An extension URL from the document, relative to the base URL (a leading `/` is taken as
/// relative too, so a server mounted under a path prefix keeps working). Absolute URLs are
/// accepted only on the base URL's own origin: a document must not redirect writes elsewhere.
fn resolve(base_url: &str, url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return url
            .to_ascii_lowercase()
            .starts_with(&base_url.to_ascii_lowercase())
            .then(|| url.to_owned());
    }
    if url.is_empty() || url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return None;
    }
    Some(format!("{base_url}{}", url.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://h:1/sync/";

    fn answer(status: u16, body: &str) -> Capabilities {
        parse_capabilities(BASE, &HttpResponse::new(status, body))
    }

    #[test]
    fn full_document() {
        let caps = answer(
            200,
            r#"{"server":"tablesync-0.1.0","page_size_max":1000,
                "batch":{"url":"$batch","operations_max":500,"body_bytes_max":1048576},
                "idempotency":{"retention_s":86400},"future":{"x":1},
                "changes":{"url":"$changes/{table}","heartbeat_interval_ms":15000}}"#,
        );
        assert_eq!(
            caps,
            Capabilities {
                server: Some("tablesync-0.1.0".into()),
                page_size_max: Some(1000),
                batch: Some(BatchCapability {
                    url: "http://h:1/sync/$batch".into(),
                    operations_max: 500,
                    body_bytes_max: 1_048_576,
                }),
                idempotency: Some(IdempotencyCapability { retention_s: 86400 }),
                changes: Some(ChangesCapability {
                    url_template: "http://h:1/sync/$changes/{table}".into(),
                    heartbeat_interval_ms: 15000,
                }),
            }
        );
        let feed = caps.changes.unwrap();
        assert_eq!(
            feed.url("Todo Item"),
            "http://h:1/sync/$changes/Todo%20Item"
        );
    }

    #[test]
    fn a_feed_needs_a_table_placeholder_a_heartbeat_and_our_origin() {
        for bad in [
            r#"{"changes":{"url":"$changes","heartbeat_interval_ms":1000}}"#,
            r#"{"changes":{"url":"$changes/{table}","heartbeat_interval_ms":0}}"#,
            r#"{"changes":{"url":"$changes/{table}"}}"#,
            r#"{"changes":{"url":"http://evil.example/{table}","heartbeat_interval_ms":1000}}"#,
            r#"{"changes":true}"#,
        ] {
            assert_eq!(answer(200, bad).changes, None, "{bad}");
        }
    }

    #[test]
    fn official_servers_and_garbage_offer_nothing() {
        for (status, body) in [
            (404, "<html>Cannot GET /$capabilities</html>"),
            (404, r#"{"error":"not found"}"#),
            (405, ""),
            (200, "<html>proxy</html>"),
            (200, "[1,2]"),
            (500, r#"{"page_size_max":1000}"#),
        ] {
            assert_eq!(
                answer(status, body),
                Capabilities::default(),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn bad_members_are_not_offered() {
        let caps = answer(
            200,
            r#"{"page_size_max":0,"batch":{"url":"$batch","operations_max":-1,"body_bytes_max":10},
                "idempotency":{"retention_s":"long"}}"#,
        );
        assert_eq!(caps, Capabilities::default());
        let caps = answer(200, r#"{"page_size_max":99999999999}"#);
        assert_eq!(caps.page_size_max, None);
    }

    #[test]
    fn batch_urls_stay_on_the_base() {
        let batch = |url: &str| {
            let body = format!(
                r#"{{"batch":{{"url":{},"operations_max":1,"body_bytes_max":1}}}}"#,
                serde_json::to_string(url).unwrap()
            );
            answer(200, &body).batch.map(|b| b.url)
        };
        assert_eq!(batch("/$batch").as_deref(), Some("http://h:1/sync/$batch"));
        assert_eq!(
            batch("http://h:1/sync/$batch").as_deref(),
            Some("http://h:1/sync/$batch")
        );
        assert_eq!(batch("http://evil.example/$batch"), None);
        assert_eq!(batch("$batch?x=1"), None);
        assert_eq!(batch(""), None);
    }
}
