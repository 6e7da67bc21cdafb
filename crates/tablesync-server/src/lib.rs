//! tablesync-server: the Azure Mobile Apps table protocol (ZUMO-API-VERSION 2.0.0) over HTTP,
//! on an embedded SQLite database.
//!
//! # Layout
//!
//! * [`config`]: the TOML configuration; every limit named with its unit.
//! * `app`: shared state and the six table operations (list, get, insert, update, delete,
//!   undelete) in terms of the rules and the store.
//! * `http`: the only module that imports axum: the route table, handlers, extractors and the
//!   one `ApiError` → response match.
//! * `table`: protocol rules without HTTP or SQL (ids, reserved properties, types,
//!   `If-Match`, stamps, JSON output).
//! * `store`: the only place that runs SQL; the `Store` trait (dyn-compatible, boxed futures) and
//!   the SQLite store. A PostgreSQL store (issue 5) is another `Store` implementation there.
//!
//! # Running a server in-process (tests, other crates)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = tablesync_server::Config::default_todo()
//!     .with_database(dir.path().join("test.db").display().to_string());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base_url = format!("http://{}", listener.local_addr()?);
//! let server = tablesync_server::Server::open(config).await?; // database ready when this returns
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.run(listener, async { let _ = stopped.await; }));
//! // … talk to `base_url` …
//! let _ = stop.send(());
//! task.await??;
//! # Ok(()) }
//! ```

pub mod config;

mod app;
mod error;
mod http;
mod store;
mod table;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{
    Config, ConfigError, CorsConfig, DatabaseTarget, Limits, StoreConfig, TableConfig,
};
pub use http::SERVER_VERSION;
pub use store::{StoreError, StoreErrorKind};
pub use tablesync_protocol::odata::sql::ColumnType;

use app::App;
use store::sqlite::SqliteStore;
use store::Store;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or prepared.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The configured database kind is not available in this build.
    #[error("{0}")]
    Unsupported(String),
    /// Listening or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A server whose database is open and prepared, ready to [`run`](Server::run).
pub struct Server {
    app: Arc<App>,
    config: Config,
}

impl Server {
    /// Validate the config, open the database and create/migrate the tables.
    pub async fn open(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
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
            DatabaseTarget::Postgres(_) => {
                return Err(ServerError::Unsupported(
                    "PostgreSQL is not supported yet (issue 5)".into(),
                ))
            }
        };
        let app = App::new(&config, store).await?;
        Ok(Server {
            app: Arc::new(app),
            config,
        })
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serve on `listener` until `shutdown` completes; in-flight requests are finished first.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        http::serve(self.app, &self.config.cors, listener, shutdown).await?;
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
