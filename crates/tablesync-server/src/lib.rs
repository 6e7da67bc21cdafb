//! tablesync-server: the Azure Mobile Apps table protocol (ZUMO-API-VERSION 2.0.0) over HTTP,
//! on an embedded SQLite database or on PostgreSQL (any number of server processes on one
//! database).
//!
//! # Layout
//!
//! * [`config`]: the TOML configuration; every limit named with its unit.
//! * `app`: shared state and the six table operations (list, get, insert, update, delete,
//!   undelete) in terms of the rules and the store.
//! * `observe`: `/health`, `/ready`, `/metrics` (a registry per server), and the outer layer
//!   that gives each request an id, a client address and one log line.
//! * `http`: with `observe`, the only module that imports axum: the route table, handlers, extractors and the
//!   one `ApiError` → response match.
//! * [`auth`]: the only code that reads tokens: request headers → [`auth::Identity`] (a
//!   verified principal or anonymous) or a 401; the `[auth]` config; the injected clock.
//! * `feed`: the change feed's core (`GET /$changes/{table}`): positions, per-table wake-ups
//!   (in-process, and between processes through the store), the subscriber cap; no axum.
//! * `openapi`: the OpenAPI document of the configured tables (`GET /openapi.json`), generated
//!   from the config.
//! * `table`: protocol rules without HTTP or SQL (ids, reserved properties, types,
//!   `If-Match`, stamps, JSON output).
//! * `store`: the only place that runs SQL; the `Store` trait (dyn-compatible, boxed futures), the
//!   SQLite store and the PostgreSQL store (chosen by the `database` setting's form).
//! * `testing` (only with the `testing` cargo feature, which only dev-dependencies enable):
//!   support for tests of this and other crates: a server child process (`ServerProcess`) and
//!   a fresh database per test on either store.
//!
//! An app that has its own axum server mounts the tables with [`Server::router`] instead of
//! [`Server::run`] (see `examples/embedded.rs`).
//!
//! # Running a server in-process (tests, other crates)
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = tablesync_server::Config::default_todo()
//!     .with_database(dir.path().join("test.db").display().to_string());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base_url = format!("http://{}", listener.local_addr()?);
//! let server = tablesync_server::Server::open(config).await?; // database ready when this returns
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.run(listener, async { let _ = stopped.await; }));
//! // … talk to `base_url` …
//! # let answer = tokio::net::TcpStream::connect(base_url.trim_start_matches("http://")).await;
//! # assert!(answer.is_ok(), "the server listens");
//! let _ = stop.send(());
//! task.await??;
//! # Ok(()) }
//! ```

pub mod config;
// Test support is compiled only for this crate's unit tests and for crates that enable the
// `testing` feature (dev-dependencies only), so it is not part of the library's API.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

mod app;
pub mod auth;
mod batch;
mod error;
mod feed;
mod http;
mod json;
mod observe;
mod openapi;
mod store;
mod table;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{
    Config, ConfigError, CorsConfig, DatabaseTarget, Limits, LogFormat, MetricsConfig,
    SqliteSynchronous, StoreConfig, TableConfig,
};
pub use http::SERVER_VERSION;
pub use store::{StoreError, StoreErrorKind};
pub use tablesync_protocol::odata::sql::ColumnType;

use app::App;
use store::postgres::PostgresStore;
use store::sqlite::SqliteStore;
use store::Store;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or prepared. The store's message is part of this one
    /// and deliberately not a `source`, so a cause chain (`{:#}`) prints it once.
    #[error("database: {0}")]
    Store(StoreError),
    /// The configured database kind is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// A request given to [`Server::explain_list`] is invalid.
    #[error("invalid request: {0}")]
    Request(String),
    /// An address could not be listened on.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// A server whose database is open and prepared, ready to [`run`](Server::run).
pub struct Server {
    app: Arc<App>,
    config: Config,
    /// Bound at open when `[metrics] listen` is set, so a taken port fails the start.
    metrics_listener: Option<TcpListener>,
}

impl Server {
    /// Validate the config, load the auth keys (tokens are checked against the system clock),
    /// open the database and create/migrate the tables.
    pub async fn open(config: Config) -> Result<Server, ServerError> {
        Self::open_with_clock(config, Arc::new(auth::SystemClock)).await
    }

    /// [`Server::open`] with the clock tokens' `exp`/`nbf` are checked against and idempotency
    /// records are dated by (tests pin it with [`auth::FixedClock`]).
    pub async fn open_with_clock(
        config: Config,
        clock: Arc<dyn auth::Clock>,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let authenticator = match &config.auth {
            Some(auth) => Some(
                auth::Authenticator::load(
                    auth,
                    std::path::Path::new("."),
                    &|name| std::env::var(name).ok(),
                    Arc::clone(&clock),
                )
                .map_err(|message| ConfigError::Invalid {
                    message,
                    place: config::ConfigPlace::Key("auth"),
                })?,
            ),
            None => {
                tracing::warn!(
                    "no [auth] section: every table is served anonymously (anyone who can reach the port reads and writes every row)"
                );
                None
            }
        };
        let store: Arc<dyn Store> = match config.database_target()? {
            DatabaseTarget::Sqlite(path) => {
                let store_config = config.store.clone();
                let store =
                    tokio::task::spawn_blocking(move || SqliteStore::open(&path, &store_config))
                        .await
                        .map_err(|e| {
                            ServerError::Unsupported(format!("database open task failed: {e}"))
                        })??;
                Arc::new(store)
            }
            DatabaseTarget::Postgres(url) => {
                Arc::new(PostgresStore::open(&url, &config.store).await?)
            }
        };
        let app = App::new(&config, store, authenticator, clock).await?;
        let metrics_listener = match config.metrics.listen {
            Some(addr) if config.metrics.enabled => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| ServerError::Listen { addr, source: e })?,
            ),
            _ => None,
        };
        Ok(Server {
            app: Arc::new(app),
            config,
            metrics_listener,
        })
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where `/metrics` is served when `[metrics] listen` gives it its own address (the bound
    /// address, with the real port when the config asked for port 0).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The database's query plan for `GET /tables/{table}?{raw_query}` (`raw_query` as on the
    /// wire, percent-encoded, without the `?`): `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN` on
    /// PostgreSQL. Tests and benchmarks use it to show that pulls are index scans.
    pub async fn explain_list(&self, table: &str, raw_query: &str) -> Result<String, ServerError> {
        self.explain_list_as(table, None, raw_query).await
    }

    /// [`Server::explain_list`] of a per-user table as `user_id` lists it (the owner predicate
    /// included); `None` for a shared table.
    pub async fn explain_list_as(
        &self,
        table: &str,
        user_id: Option<&str>,
        raw_query: &str,
    ) -> Result<String, ServerError> {
        self.app
            .explain_list(table, user_id, raw_query)
            .await
            .map_err(|e| match e {
                error::ApiError::Store(e) => ServerError::Store(e),
                other => ServerError::Request(other.to_string()),
            })
    }

    /// Every route of the server as an [`axum::Router`] (axum 0.8) with its state and the
    /// server's own layers (request timeout, gzip, CORS, version header, request log) already
    /// applied, for an app that serves it itself: nest it under a prefix beside the app's own
    /// routes (`Router::new().nest("/sync", server.router())`) and wrap it in the app's own
    /// layers (authentication, rate limits). Clients then use `https://host/sync/` as their base
    /// URL; the `Link` of a full page names the path as the client sent it, prefix included.
    /// `crates/tablesync-server/examples/embedded.rs` shows it.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.app), &self.config.cors)
    }

    /// A function that ends every open change feed (`GET /$changes/{table}`, whose responses
    /// never end by themselves): an app serving [`Server::router`] itself calls it when its
    /// graceful shutdown starts, which would otherwise wait for the feeds for ever (clients
    /// reconnect elsewhere). [`Server::run`] does this by itself.
    pub fn feed_closer(&self) -> impl Fn() + Send + Sync + 'static {
        let feed = Arc::clone(self.app.feed());
        move || feed.close()
    }

    /// Serve on `listener` until `shutdown` completes; in-flight requests are finished first
    /// and change feeds are ended.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        // The metrics listener lives as long as the main one: aborted once that has shut down.
        let metrics = self.metrics_listener.map(|listener| {
            let router = observe::metrics_router(Arc::clone(&self.app));
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!("metrics listener failed: {e}");
                }
            })
        });
        // Change feeds never end by themselves: close them when shutting down, so the
        // graceful shutdown (which finishes open responses) can finish.
        let feed = Arc::clone(self.app.feed());
        let shutdown = async move {
            shutdown.await;
            feed.close();
        };
        let served = http::serve(self.app, &self.config.cors, listener, shutdown).await;
        if let Some(task) = metrics {
            task.abort();
        }
        served?;
        Ok(())
    }
}

/// Open the database and serve on `listener` until `shutdown` completes
/// ([`Server::open`] then [`Server::run`]).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::open(config).await?.run(listener, shutdown).await
}
