//! Operations: health and readiness probes, metrics, and the per-request id, client address and
//! log line.
//!
//! * `health`: `GET /health` (liveness), `GET /ready` (a database round trip) and
//!   `GET /metrics`; [`routes`] mounts them beside the table routes, outside the table gate.
//! * [`metrics`]: one registry per server (no process-global recorder), its metric names and
//!   the hook points for batch and group-commit sizes.
//! * `request`: the outermost layer: request id (`x-request-id`), client address
//!   (`X-Forwarded-For` from `trusted_proxies` only), the log line (credentials redacted,
//!   `$filter` literals hidden at `info`) and the request metrics.
//! * `proxies`: parsing and matching `trusted_proxies`.
//!
//! Besides `http`, this is the only module that imports axum.

mod health;
pub mod metrics;
mod proxies;
pub mod request;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::app::App;
pub use proxies::TrustedProxies;

/// `/health`, `/ready`, and `/metrics` unless metrics are off or served on their own address.
pub fn routes(app: &App) -> Router<Arc<App>> {
    let metrics_here = app.metrics_on_main();
    let router = Router::new()
        .route("/health", get(health::health_get))
        .route("/ready", get(health::ready_get));
    if metrics_here {
        router.route("/metrics", get(health::metrics_get))
    } else {
        router
    }
}

/// The router of `[metrics] listen`: `/metrics` alone.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics_get))
        .with_state(app)
}
