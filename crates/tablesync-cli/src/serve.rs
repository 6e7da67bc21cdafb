//! `tablesync serve`: load the config, apply flag overrides, run the server until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tablesync_server::{Config, LogFormat, Server};

/// Arguments of `tablesync serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (tables, limits, CORS). Without it: one TodoItem table.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080, or the config's].
    #[arg(long, env = "TABLESYNC_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database: a path, sqlite://path or postgres://user@host:port/db [default: ./tablesync.db, or the config's].
    #[arg(long)]
    database: Option<String>,
    /// Log format: text or json [default: text, or the config's log_format].
    #[arg(long, env = "TABLESYNC_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("'{text}' is not a log format: text or json")),
    }
}

/// Run the server; returns when it has shut down.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default_todo(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(database) = args.database {
        config.database = database;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    crate::init_logging(config.log_format);
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let server = Server::open(config).await?;
        if let Some(addr) = server.metrics_addr() {
            println!("metrics on http://{addr}/metrics");
        }
        let listen = server.config().listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // Tests and scripts wait for this exact line (with the real port when given port 0).
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        server.run(listener, shutdown_signal()).await?;
        tracing::info!("shut down");
        Ok(())
    })
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
