//! The protocol extensions of `docs/extensions.md`: discovery (batches: `batch.rs`).

use serde_json::json;

use crate::{send, StoreKind, TestServer};

async fn capabilities_need_no_api_version_and_report_the_limits(kind: StoreKind) {
    let s = TestServer::with_toml(kind, "[limits]\npage_size_max = 250").await;
    let r = send(s.client.get(format!("{}/$capabilities", s.base))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"server": tablesync_server::SERVER_VERSION, "page_size_max": 250,
               "batch": {"url": "$batch", "operations_max": 1000, "body_bytes_max": 1_048_576},
               "idempotency": {"retention_s": 86_400},
               "changes": {"url": "$changes/{table}", "heartbeat_interval_ms": 15_000}})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

crate::store_tests!(capabilities_need_no_api_version_and_report_the_limits);
