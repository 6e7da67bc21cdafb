//! Where the client commands write, and what their exit codes mean.
//!
//! Results go to stdout through [`Out`], which treats a closed pipe (`tablesync queue | head -1`)
//! as the reader being done: the command ends quietly with its exit code instead of panicking
//! as `println!` does on `EPIPE`. Explanations (why a push stopped, what to do next) go to
//! stderr through [`note`], so stdout stays the command's result, plain or `--json`.
//!
//! Exit codes ([`exit_code`], documented in `--help` and docs/cli.md):
//! * [`OK`] 0 — done;
//! * [`FAILURE`] 1 — anything else (the server refused the credentials, a server error, the
//!   local store failed);
//! * [`UNREACHABLE`] 2 — the server could not be reached (offline, refused, timed out);
//! * [`CONFLICT`] 3 — conflicts or operation errors: a push that ended with unhandled operation
//!   errors, a purge refused because of pending operations, a resolution of an operation that
//!   changed since its error;
//! * [`BAD_INPUT`] 4 — bad input: usage errors, a store file that does not exist, an unknown
//!   table without `--column`, an invalid query, URL, column or id.

use std::fmt::Display;
use std::io::{self, Write};

use tablesync_client::{Error, PushStatus};

/// Exit code: done.
pub const OK: i32 = 0;
/// Exit code: anything not covered by another code.
pub const FAILURE: i32 = 1;
/// Exit code: the server could not be reached.
pub const UNREACHABLE: i32 = 2;
/// Exit code: conflicts or operation errors.
pub const CONFLICT: i32 = 3;
/// Exit code: bad input.
pub const BAD_INPUT: i32 = 4;

/// A failure the command explains itself: the message (printed by `main` as `error: …`) and
/// the exit code.
#[derive(Debug)]
pub struct Fail {
    /// The process exit code.
    pub code: i32,
    /// What went wrong and what to do.
    pub message: String,
}

impl Fail {
    /// Bad input ([`BAD_INPUT`]).
    pub fn input(message: impl Into<String>) -> anyhow::Error {
        Fail {
            code: BAD_INPUT,
            message: message.into(),
        }
        .into()
    }
}

impl Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// The exit code of a command that ended with `err`: a [`Fail`]'s own code, else the code of the
/// first SDK [`Error`] in the chain, else [`FAILURE`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let code = err
        .chain()
        .find_map(|e| {
            if let Some(f) = e.downcast_ref::<Fail>() {
                Some(f.code)
            } else {
                e.downcast_ref::<Error>().map(sdk_code)
            }
        })
        .unwrap_or(FAILURE);
    u8::try_from(code).unwrap_or(1)
}

/// The exit code for an SDK error.
pub fn sdk_code(e: &Error) -> i32 {
    match e {
        Error::Network(_) => UNREACHABLE,
        Error::PushFailed { status, .. } => match status {
            PushStatus::CancelledByNetworkError => UNREACHABLE,
            PushStatus::Complete => CONFLICT,
            _ => FAILURE,
        },
        Error::PurgeRefused(_) | Error::OperationChanged | Error::QueueConflict { .. } => CONFLICT,
        Error::InvalidUrl { .. }
        | Error::InvalidTableName(_)
        | Error::InvalidColumn { .. }
        | Error::UnknownTable(_)
        | Error::UnknownColumn { .. }
        | Error::TypeMismatch { .. }
        | Error::InvalidQuery(_)
        | Error::InvalidQueryId
        | Error::UnsupportedPullOption(_)
        | Error::InvalidConfig(_)
        | Error::InvalidId { .. }
        | Error::MissingId => BAD_INPUT,
        _ => FAILURE,
    }
}

/// stdout for results; a closed pipe ends the output quietly.
#[derive(Debug, Default)]
pub struct Out {
    closed: bool,
}

impl Out {
    /// Writes one line. After the reader closed the pipe every write is dropped; other write
    /// errors (a full disk) are returned.
    pub fn line(&mut self, text: impl Display) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
        }
    }

    /// Writes one JSON document on one line.
    pub fn json(&mut self, value: &serde_json::Value) -> anyhow::Result<()> {
        self.line(value)
    }
}

/// Writes an explanation line to stderr; a closed stderr is ignored (the exit code still says
/// what happened).
pub fn note(text: impl Display) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// `host:port` of a base URL (the scheme's default port when it names none), without the path,
/// query or credentials: what an "offline" message names.
pub fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.rfind(':') {
        Some(at) => !authority[at..].contains(']'),
        None => false,
    };
    if has_port {
        authority.to_string()
    } else {
        let port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        format!("{authority}:{port}")
    }
}

/// The innermost cause of a transport message ("… : Connection refused (os error 111)"),
/// unless it names a URL (which may carry a long query).
pub fn short_cause(message: &str) -> Option<&str> {
    let last = message.rsplit(": ").next()?.trim();
    (!last.is_empty() && !last.contains("://")).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_drops_path_query_and_credentials() {
        assert_eq!(host_port("http://127.0.0.1:9/"), "127.0.0.1:9");
        assert_eq!(
            host_port("https://u:p@example.com/app/tables?x=1"),
            "example.com:443"
        );
        assert_eq!(host_port("http://[::1]:8080/a"), "[::1]:8080");
        assert_eq!(host_port("http://[::1]/a"), "[::1]:80");
    }

    #[test]
    fn short_cause_takes_the_innermost_message_without_urls() {
        assert_eq!(
            short_cause("connection failed: error sending request: tcp connect error: Connection refused (os error 111)"),
            Some("Connection refused (os error 111)")
        );
        assert_eq!(short_cause("request timed out"), Some("request timed out"));
        assert_eq!(short_cause("x: for url (http://h/p?q)"), None);
    }

    #[test]
    fn sdk_errors_map_to_documented_codes() {
        assert_eq!(sdk_code(&Error::Network("x".into())), UNREACHABLE);
        assert_eq!(sdk_code(&Error::InvalidQuery("x".into())), BAD_INPUT);
        assert_eq!(sdk_code(&Error::PurgeRefused("T".into())), CONFLICT);
        assert_eq!(sdk_code(&Error::Unauthorized), FAILURE);
        let wrapped = anyhow::Error::from(Error::InvalidQueryId).context("pulling");
        assert_eq!(exit_code(&wrapped), 4);
        assert_eq!(exit_code(&Fail::input("x")), 4);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }
}
