//! The `tablesync` binary: a thin clap dispatcher.
//!
//! Each subcommand lives in its own module; only [`main`] maps outcomes to exit codes:
//! 0 success, 1 failure (including a push that ended with operation errors or a refused purge),
//! 2 usage errors (clap).
//!
//! * `serve` — the table server (`serve.rs`).
//! * `pull`, `push`, `purge`, `queue`, `status` — drive and inspect a client store by hand
//!   (`client_commands.rs`).
//! * `token` — mint an HS256 development token from the config's `[auth]` secret (`token.rs`).

mod client_commands;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tablesync: an offline data sync server and client for the Mobile Apps table protocol.
#[derive(Parser)]
#[command(name = "tablesync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the table server (default: TodoItem on ./tablesync.db at 127.0.0.1:8080).
    Serve(serve::ServeArgs),
    /// Mint an HS256 development token for a user, signed with the config's auth secret.
    Token(token::TokenArgs),
    #[command(flatten)]
    Client(client_commands::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| 0),
        Command::Token(args) => token::run(args).map(|()| 0),
        Command::Client(cmd) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(client_commands::run(cmd))),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries command output such as the listen address); `RUST_LOG`
/// overrides the default `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
