//! HTTP behaviour tests: a real server on 127.0.0.1:0 with a temporary SQLite database, driven
//! over a real socket with reqwest. Error bodies are asserted whole.

mod concurrency;
mod crud;
mod errors;
mod garbage;
mod query;
mod schema;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::{Config, Server};

/// A server running in this test's runtime, on its own temporary database.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// A shared HTTP client.
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// The default configuration (`TodoItem`).
    pub async fn start() -> Self {
        Self::with_config(Config::default_todo()).await
    }

    /// Any configuration; the database is replaced by a temporary file.
    pub async fn with_config(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config.with_database(dir.path().join("test.db").display().to_string());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::open(config).await.unwrap();
        tokio::spawn(server.run(listener, std::future::pending()));
        TestServer {
            base,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A server with the tables of a TOML snippet.
    pub async fn with_toml(toml: &str) -> Self {
        Self::with_config(Config::from_toml_str(toml).unwrap()).await
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
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
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
