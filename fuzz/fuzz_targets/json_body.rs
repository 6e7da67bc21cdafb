//! Fuzz target: any bytes as the JSON body of an insert and of an update, sent through the
//! server's router (in process, on a temporary SQLite database; no sockets). Nothing may panic;
//! the answer is never a 5xx, and every 4xx other than the protocol's 409/412 carries our JSON
//! error body.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = tablesync_server::Config::from_toml_str(
            "[[tables]]\nname = \"TodoItem\"\ncolumns = { text = \"string\", complete = \"boolean\" }\n\
             [[tables]]\nname = \"Notes\"\ndynamic_schema = true\ncolumns = { title = \"string\" }\n",
        )
        .expect("config")
        .with_database(dir.path().join("fuzz.db").display().to_string());
        let router = runtime.block_on(async {
            let server = tablesync_server::Server::open(config).await.expect("server");
            let router = server.router();
            // One row to update.
            let _ = send(&router, Method::POST, "/tables/TodoItem", br#"{"id":"seed","text":"x"}"#).await;
            router
        });
        Harness { runtime, router, _dir: dir }
    })
}

async fn send(router: &axum::Router, method: Method, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("ZUMO-API-VERSION", "2.0.0")
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, bytes.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.runtime.block_on(async {
        for (method, path) in [
            (Method::POST, "/tables/TodoItem"),
            (Method::PATCH, "/tables/TodoItem/seed"),
            (Method::POST, "/tables/Notes"),
        ] {
            let (status, body) = send(&h.router, method, path, data).await;
            assert!(status < 500, "{path}: {status} {}", String::from_utf8_lossy(&body));
            if status >= 400 && status != 409 && status != 412 {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
                assert!(v["error"].is_string() && v["code"].is_string(), "{v}");
            }
        }
    });
});
