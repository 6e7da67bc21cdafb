//! The `tablesync` binary: a thin clap dispatcher.
//!
//! Each subcommand lives in its own module; only [`main`] maps outcomes to exit codes:
//! 0 ok, 1 anything else, 2 server not reached, 3 conflicts or operation errors, 4 bad input
//! (usage errors included; `client_commands::output` says which failure gets which code).
//!
//! * `serve` — the table server (`serve.rs`).
//! * `pull`, `push`, `purge`, `queue`, `status`, `errors`, `resolve` — drive and inspect a client store by hand
//!   (`client_commands.rs`).
//! * `token` — mint an HS256 development token from the config's `[auth]` secret (`token.rs`).

mod client_commands;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tablesync_server::LogFormat;

/// tablesync: an offline data sync server and client for the Mobile Apps table protocol.
#[derive(Parser)]
#[command(name = "tablesync", version, about, after_help = client_commands::EXIT_CODES_HELP)]
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0; a usage error is bad input (4), not clap's 2, which
        // means "server not reached" here.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 4 } else { 0 });
        }
    };
    let result = match cli.command {
        // `serve` starts its log once it knows the configured format.
        Command::Serve(args) => serve::run(args).map(|()| 0),
        Command::Token(args) => {
            init_logging(LogFormat::Text);
            token::run(args).map(|()| 0)
        }
        Command::Client(cmd) => {
            init_logging(LogFormat::Text);
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(client_commands::run(cmd)))
        }
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // The one place an error is printed: its whole cause chain on one line, each cause
            // once (the error types never repeat their source in their own message).
            eprintln!("error: {e:#}");
            ExitCode::from(client_commands::exit_code(&e))
        }
    }
}

/// Logs go to stderr (stdout carries command output such as the listen address); `RUST_LOG`
/// overrides the default `info` level. `json`: one object per line with the event's fields and
/// its spans (the request span carries the request id and client address).
pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        _ => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).init()
        }
    }
}
