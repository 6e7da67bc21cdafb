//! HTTP behaviour tests: a real server on 127.0.0.1:0, driven over a real socket with reqwest.
//! Error bodies are asserted whole.
//!
//! Every test body is an `async fn name(kind: StoreKind)` and runs once per store: the
//! [`store_tests!`] list at the end of each module generates `name::sqlite` and `name::postgres`
//! (like ripgrep's `rgtest!`; a module per test because `macro_rules!` cannot glue identifiers).
//! Each run gets a fresh database: a temporary SQLite file, or `CREATE DATABASE
//! tablesync_test_<random>` on `TABLESYNC_TEST_PG_URL` (default
//! postgres://postgres@127.0.0.1:5432/postgres), dropped at the end. PostgreSQL tests fail, never
//! skip, when PostgreSQL cannot be reached.

/// For each listed `async fn name(kind: StoreKind)`, a module `name` with the tests `sqlite` and
/// `postgres` running it on that store. A function left out of the list is dead code, which the
/// compiler reports.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::StoreKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::StoreKind::Postgres).await
                }
            }
        )+
    };
}

mod auth;
mod batch;
mod collection_routes;
mod concurrency;
mod crud;
mod embedded;
mod errors;
mod explain;
mod extensions;
mod feed;
mod fuzz_bodies;
mod garbage;
mod group_commit;
mod health;
mod hostile;
mod http_edges;
mod indexes;
mod int_ids;
mod isolation;
mod logs;
mod metrics;
mod openapi;
mod per_user;
mod portable;
mod query;
mod reconnect;
mod review;
mod review2;
mod schema;
mod tls;
mod tokens;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::auth::{Clock, SystemClock};
pub use tablesync_server::testing::{StoreKind, TestDatabase};
use tablesync_server::{Config, Server};

/// A fresh database of this kind; panics (fails the test) when it cannot be made.
pub async fn fresh_database(kind: StoreKind) -> TestDatabase {
    match TestDatabase::create(kind).await {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

/// A server running in this test's runtime, on its own fresh database.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// A shared HTTP client.
    pub client: reqwest::Client,
    /// The store it runs on.
    pub kind: StoreKind,
    /// Stops the server (before the database is dropped).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDatabase,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// The default configuration (`TodoItem`).
    pub async fn start(kind: StoreKind) -> Self {
        Self::with_config(kind, Config::default_todo()).await
    }

    /// Any configuration; the database is replaced by a fresh one of this kind.
    pub async fn with_config(kind: StoreKind, config: Config) -> Self {
        Self::with_clock(kind, config, std::sync::Arc::new(SystemClock)).await
    }

    /// [`TestServer::with_config`] checking tokens against `clock`.
    pub async fn with_clock(
        kind: StoreKind,
        config: Config,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Self {
        let db = fresh_database(kind).await;
        let config = config.with_database(db.url());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::open_with_clock(config, clock).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            // No automatic gzip decoding (on whenever the client SDK is in the same build, which
            // enables reqwest's gzip feature): tests look at the server's own answers.
            client: reqwest::Client::builder().no_gzip().build().unwrap(),
            kind,
            stop: Some(stop),
            _db: db,
        }
    }

    /// A server with the tables of a TOML snippet.
    pub async fn with_toml(kind: StoreKind, toml: &str) -> Self {
        Self::with_config(kind, Config::from_toml_str(toml).unwrap()).await
    }

    /// The database setting this server runs on (file path or `postgres://` URL).
    pub fn database_url(&self) -> &str {
        self._db.url()
    }

    /// A request with `ZUMO-API-VERSION: 2.0.0`.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("ZUMO-API-VERSION", "2.0.0")
    }

    /// GET with the API version header.
    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path)).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        send(self.req(Method::POST, path).json(&body)).await
    }

    /// PATCH a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        send(self.req(Method::PATCH, path).json(&body)).await
    }

    /// PATCH with `If-Match`.
    pub async fn patch_if(&self, path: &str, if_match: &str, body: Value) -> Resp {
        send(
            self.req(Method::PATCH, path)
                .header("If-Match", if_match)
                .json(&body),
        )
        .await
    }

    /// DELETE without `If-Match`.
    pub async fn delete(&self, path: &str) -> Resp {
        send(self.req(Method::DELETE, path)).await
    }

    /// Insert into TodoItem and return the stored item.
    pub async fn insert_todo(&self, id: &str, text: &str, complete: bool) -> Value {
        let r = self
            .post(
                "/tables/TodoItem",
                json!({"id": id, "text": text, "complete": complete}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }
}

/// A response: status, headers and the body parsed as JSON (a non-JSON body as a string).
#[derive(Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body as JSON (`Null` when empty, a string when not JSON).
    pub body: Value,
    /// The body as received.
    pub raw: Vec<u8>,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ETag must be the quoted version of the body.
    pub fn assert_etag_matches_body(&self) {
        let version = self.body["version"].as_str().expect("body has a version");
        assert_eq!(self.header("etag"), Some(format!("\"{version}\"").as_str()));
    }
}

/// Send and collect a [`Resp`].
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let response = rb.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.bytes().await.unwrap().to_vec();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
        raw,
    }
}

/// The whole error body for a code and message.
pub fn err(code: &str, message: &str) -> Value {
    json!({"error": message, "code": code})
}

/// Ids of a list body, in order.
pub fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}
