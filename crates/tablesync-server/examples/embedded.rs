//! An app that serves its own routes and mounts tablesync's tables under `/sync`, behind its own
//! authentication layer.
//!
//! ```text
//! cargo run -p tablesync-server --example embedded -- [database] [address]
//! # database: an SQLite path or a postgres:// URL (default embedded.db)
//! # address:  where to listen (default 127.0.0.1:8080)
//! curl http://127.0.0.1:8080/                                    # the app's own route
//! curl -H 'ZUMO-API-VERSION: 2.0.0' -H 'X-ZUMO-AUTH: demo-session' \
//!      http://127.0.0.1:8080/sync/tables/TodoItem               # the tables
//! ```
//!
//! A client SDK then uses `http://127.0.0.1:8080/sync/` as its base URL and the app's session
//! token as its auth token (`ClientOptions::with_auth_token`): the SDK sends it as `X-ZUMO-AUTH`
//! on every request, the app's layer checks it, and tablesync itself runs without an `[auth]`
//! section (the app decides who may sync; all callers it admits share the tables).
//!
//! `tests/it/embedded.rs` runs [`app`] and syncs through it with the client SDK.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tablesync_protocol::error::{ErrorBody, ErrorCode};
use tablesync_server::{Config, Server};

/// The header the app's sessions travel in: the one Mobile Apps clients send their token in.
pub const SESSION_HEADER: &str = "x-zumo-auth";

/// The session tokens the app has issued (a real app would look them up in its session store).
pub type Sessions = Arc<HashSet<String>>;

/// The whole app: its own routes at the root, and the sync tables (`server.router()`) under
/// `/sync`, where only callers with a known session get through.
pub fn app(server: &Server, sessions: Sessions) -> Router {
    let sync = server
        .router()
        .layer(from_fn_with_state(sessions, require_session));
    Router::new()
        .route("/", get(|| async { "the app's home page\n" }))
        .route("/api/hello", get(|| async { Json("hello from the app") }))
        .nest("/sync", sync)
}

/// The app's authentication layer: a known session in [`SESSION_HEADER`], or 401 with the
/// same JSON error body tablesync sends, so the client SDK reports it as it reports its own.
/// CORS preflights carry no credentials, so they pass to tablesync's CORS layer.
async fn require_session(State(sessions): State<Sessions>, req: Request, next: Next) -> Response {
    let known = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| sessions.contains(token));
    if known || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let body = ErrorBody::new(ErrorCode::Unauthorized, "sign in to the app first");
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Session"),
    );
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let database = args.next().unwrap_or_else(|| "embedded.db".to_owned());
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let server = Server::open(Config::default_todo().with_database(database)).await?;
    let sessions: Sessions = Arc::new(HashSet::from(["demo-session".to_owned()]));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // Change feeds never end by themselves: end them when shutting down, or the graceful
    // shutdown waits for them for ever.
    let close_feeds = server.feed_closer();
    axum::serve(listener, app(&server, sessions))
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            close_feeds();
        })
        .await?;
    Ok(())
}
