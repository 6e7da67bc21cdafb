//! What a push (alone or the one a pull starts with) and a failed network call tell the user:
//! the wording follows the push status (issue 13, point 4), and names the server by host and
//! port only (a base URL may be long, and the transport's messages carry whole request URLs).

use serde_json::{json, Value};
use tablesync_client::{Error, OperationError, PushStatus};

use super::output::{host_port, note, sdk_code, short_cause, UNREACHABLE};

/// `update TodoItem/cli-1 (412)`.
pub fn describe(e: &OperationError) -> String {
    let status = e
        .status
        .map_or_else(|| "no answer".to_string(), |s| s.to_string());
    format!("{} {}/{} ({status})", e.kind, e.table, e.item_id)
}

/// Explains on stderr why a push stopped or what its operation errors were, and returns the
/// exit code; `None` when `err` is not a failed push or a network error (the caller reports it).
/// `pending` is the queue length after the push.
pub fn explain(err: &Error, base_url: &str, pending: u64) -> Option<i32> {
    let server = host_port(base_url);
    match err {
        Error::Network(message) => {
            note(offline(&server, Some(message)));
            Some(UNREACHABLE)
        }
        Error::Unauthorized => {
            note(format!(
                "the server at {server} refused the credentials (401): log in again (pass a new \
                 token with --token or TABLESYNC_TOKEN, e.g. from `tablesync token`)"
            ));
            Some(super::output::FAILURE)
        }
        Error::Cancelled => {
            note(format!(
                "cancelled: what was received is kept, {pending} operation(s) queued; run the \
                 command again to resume"
            ));
            Some(super::output::FAILURE)
        }
        Error::PushFailed {
            status,
            errors,
            message,
        } => {
            let queued = format!("{pending} operation(s) still queued, nothing was lost");
            match status {
                PushStatus::CancelledByNetworkError => {
                    note(format!(
                        "{}; {queued}. Push again once it is reachable.",
                        offline(&server, message.as_deref())
                    ));
                }
                PushStatus::CancelledByAuthenticationError => note(format!(
                    "the server at {server} refused the credentials (401): log in again (pass a \
                     new token with --token or TABLESYNC_TOKEN, e.g. from `tablesync token`); \
                     {queued}"
                )),
                PushStatus::Complete => explain_errors(errors),
                PushStatus::CancelledByServerError => note(format!(
                    "the server at {server} could not take the batch ({}); the queue is intact \
                     ({queued}): push again",
                    message.as_deref().unwrap_or("no reason given")
                )),
                PushStatus::CancelledBySyncStoreError => note(format!(
                    "the local store failed during the push ({}); {pending} operation(s) queued",
                    message.as_deref().unwrap_or("no reason given")
                )),
                other => note(format!("the push stopped: {other}; {queued}")),
            }
            Some(if *status == PushStatus::Complete && errors.is_empty() {
                0
            } else {
                sdk_code(err)
            })
        }
        _ => None,
    }
}

/// `offline: could not reach the server at 127.0.0.1:9 (Connection refused)`.
fn offline(server: &str, message: Option<&str>) -> String {
    match message.and_then(short_cause) {
        Some(cause) => format!("offline: could not reach the server at {server} ({cause})"),
        None => format!("offline: could not reach the server at {server}"),
    }
}

/// The operation errors of a push that walked the whole queue.
fn explain_errors(errors: &[OperationError]) {
    let (conflicts, others): (Vec<_>, Vec<_>) = errors.iter().partition(|e| e.is_conflict());
    if !conflicts.is_empty() {
        note(format!(
            "{} change(s) conflicted with the server:",
            conflicts.len()
        ));
        for e in &conflicts {
            note(format!("  {}", describe(e)));
        }
    }
    if !others.is_empty() {
        note(format!(
            "{} change(s) were refused by the server:",
            others.len()
        ));
        for e in &others {
            note(format!(
                "  {}: {}",
                describe(e),
                one_line(&e.raw_result, 200)
            ));
        }
    }
    note(
        "The other changes were pushed. These stay queued with your local edits untouched; \
         compare both versions with `tablesync errors`, then choose with \
         `tablesync resolve TABLE/ID --keep server|client|discard`.",
    );
}

/// `text` on one line, at most `chars_max` characters.
pub fn one_line(text: &str, chars_max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > chars_max {
        let cut: String = flat.chars().take(chars_max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The JSON form of an operation error (docs/cli.md, `errors --json` and `push --json`).
pub fn error_json(e: &OperationError) -> Value {
    json!({
        "table": e.table,
        "id": e.item_id,
        "operation": e.kind.to_string(),
        "status": e.status,
        "conflict": e.is_conflict(),
        "local": Value::Object(e.item.clone()),
        "server": e.result.clone().map(Value::Object),
        "response": e.raw_result,
    })
}
