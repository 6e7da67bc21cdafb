//! The HTTP layer: the only module that imports axum.
//!
//! The whole route table is [`router`]. Handlers (`handlers.rs`) are `async fn noun_verb(State,
//! extractors…) -> Result<Response, ApiError>`; extractors (`extract.rs`) reject with
//! [`ApiError`](crate::error::ApiError), and `error.rs` turns every error into a JSON response in
//! one exhaustive match, so no request ever gets a plain-text or empty error.

mod batch;
mod conn;
mod error;
mod extract;
mod feed;
mod handlers;
mod middleware;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::CompressionLevel;

use crate::app::App;
use crate::config::CorsConfig;
pub(crate) use extract::is_json_media_type;
use handlers::*;
pub use middleware::SERVER_VERSION;

/// Every route of the server.
///
/// | route | handler |
/// |---|---|
/// | `GET /tables/{table}` | list (OData query) |
/// | `POST /tables/{table}` | insert |
/// | `PATCH /tables/{table}` | update, id in the body or `?id=` (the Node server's route) |
/// | `DELETE /tables/{table}?id=…` | delete (the Node server's route) |
/// | `GET /tables/{table}/{id}` | read one |
/// | `PATCH /tables/{table}/{id}` | update |
/// | `DELETE /tables/{table}/{id}` | delete |
/// | `POST /tables/{table}/{id}` | undelete |
/// | `POST /$batch` | batched writes (`docs/extensions.md` section 2), behind the same gate as tables |
/// | `GET /$changes/{table}` | the change feed, Server-Sent Events (`docs/extensions.md` section 5), behind the same gate as a table read |
/// | `GET /$capabilities` | the extensions this server offers (`docs/extensions.md`); no API version needed |
/// | `GET /openapi.json` | the configured tables as OpenAPI 3.0 (`crate::openapi`); a token when `[auth]` is configured |
/// | `GET /health`, `GET /ready`, `GET /metrics` | probes and metrics (`crate::observe`); no API version or token needed |
///
/// Layers, innermost first: API-version gate + no-cache (table routes only), request timeout,
/// body read timeout, gzip, CORS, HTTP/1.1 framing checks, and `crate::observe::request`
/// (request id, server-version header, the request log and metrics).
pub fn router(app: Arc<App>, cors: &CorsConfig) -> Router {
    Router::new()
        .route(
            "/tables/{table}",
            get(items_list)
                .post(item_insert)
                .patch(items_update)
                .delete(items_delete),
        )
        .route(
            "/tables/{table}/{id}",
            get(item_get)
                .patch(item_update)
                .delete(item_delete)
                .post(item_undelete),
        )
        .route("/$batch", axum::routing::post(batch::batch_post))
        .route("/$changes/{table}", get(feed::changes_get))
        .route_layer(from_fn_with_state(Arc::clone(&app), middleware::table_gate))
        .route("/$capabilities", get(capabilities_get))
        .route("/openapi.json", get(openapi_get))
        .merge(crate::observe::routes(&app))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(Arc::clone(&app), middleware::timeout))
        // Outside the request timeout: a write only starts once its body is in.
        .layer(from_fn_with_state(
            Arc::clone(&app),
            middleware::body_in_time,
        ))
        // The fastest level: on a fast network compressing costs more time than the bytes it
        // saves, and level 1 already shrinks JSON pages several times.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        .layer(cors_layer(cors))
        .layer(from_fn(middleware::framing))
        .layer(from_fn_with_state(
            Arc::clone(&app),
            crate::observe::request::observe,
        ))
        .with_state(app)
}

fn cors_layer(config: &CorsConfig) -> CorsLayer {
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([header::LINK, header::ETAG])
        .max_age(Duration::from_secs(config.max_age_s))
}

/// Serve `app` on `listener` until `shutdown` completes, then finish in-flight requests
/// (connection handling: `conn.rs`).
pub async fn serve(
    app: Arc<App>,
    cors: &CorsConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = app.limits().clone();
    conn::serve(router(app, cors), &limits, listener, shutdown).await
}
