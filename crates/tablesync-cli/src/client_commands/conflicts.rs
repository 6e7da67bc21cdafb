//! `tablesync errors` and `tablesync resolve`: the operation errors of the last push, shown with
//! the local and the server's version side by side, and one of the SDK's resolutions applied
//! to one of them, so that a conflict no longer blocks every later push and pull.
//!
//! `resolve ID --keep`:
//! * `server` — the SDK's cancel-and-update: the queued change is dropped and the server's copy
//!   (from the error) becomes the local row (a server tombstone removes it);
//! * `client` — the SDK's update-operation: the change stays queued with the server's `version`,
//!   so the next push overwrites the server's copy (an insert of an id the server has becomes
//!   an update of it);
//! * `discard` — the SDK's cancel-and-discard: the change and the local row are dropped; the next
//!   pull brings the server's copy back.
//!
//! `ID` is an item id, or `TABLE/ID` as `errors` prints it (ids cannot contain `/`).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use tablesync_client::{OperationError, SyncContext};

use super::output::{Fail, Out};
use super::report::{describe, error_json, one_line};

/// Which version a resolution keeps.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Take the server's copy; drop the local change.
    Server,
    /// Keep the local change; it overwrites the server's copy on the next push.
    Client,
    /// Drop the local change and the local row.
    Discard,
}

/// System properties `errors` leaves out: `id` is in the heading, the timestamps say nothing
/// about what to keep. `version` is shown; `deleted` when either side is a tombstone.
const SYSTEM_HIDDEN: &[&str] = &["id", "createdAt", "updatedAt"];

/// Prints the operation errors, plain or as `{"errors": [...]}`.
pub async fn list(ctx: &SyncContext, out: &mut Out, json: bool) -> anyhow::Result<()> {
    let errors = ctx.push_errors().await?;
    if json {
        let list: Vec<Value> = errors.iter().map(error_json).collect();
        return out.json(&json!({ "errors": list }));
    }
    if errors.is_empty() {
        return out.line("no operation errors");
    }
    for e in &errors {
        let what = if e.is_conflict() {
            "conflict"
        } else if e.is_deleted_on_server() {
            "deleted on the server"
        } else {
            "refused"
        };
        out.line(format!("{}: {what}", describe(e)))?;
        match &e.result {
            Some(server) => side_by_side(out, &e.item, server)?,
            None => {
                out.line("  the server's answer carried no copy of the item:")?;
                out.line(format!("  {}", one_line(&e.raw_result, 300)))?;
            }
        }
    }
    out.line(format!(
        "resolve each with `tablesync resolve TABLE/ID --keep server|client|discard` \
         ({} error(s))",
        errors.len()
    ))
}

/// `  column  local  server` rows: the sent item's columns, then the server's others.
fn side_by_side(
    out: &mut Out,
    local: &Map<String, Value>,
    server: &Map<String, Value>,
) -> anyhow::Result<()> {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    let tombstone = |m: &Map<String, Value>| m.get("deleted") == Some(&Value::Bool(true));
    for key in local.keys().chain(server.keys()) {
        let hidden = SYSTEM_HIDDEN.contains(&key.as_str())
            || (key == "deleted" && !tombstone(local) && !tombstone(server));
        if !hidden && seen.insert(key.as_str()) {
            names.push(key);
        }
    }
    let cell =
        |v: Option<&Value>| v.map_or_else(|| "-".to_string(), |v| one_line(&v.to_string(), 40));
    let rows: Vec<(String, String, String)> = names
        .iter()
        .map(|n| (n.to_string(), cell(local.get(*n)), cell(server.get(*n))))
        .collect();
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    out.line(format!("  {:<w0$}  {:<w1$}  server", "column", "local"))?;
    for (name, l, s) in rows {
        let mark = if l == s { ' ' } else { '*' };
        out.line(format!("{mark} {name:<w0$}  {l:<w1$}  {s}"))?;
    }
    Ok(())
}

/// The one error `id` (`ID` or `TABLE/ID`) names.
fn find(errors: Vec<OperationError>, id: &str) -> anyhow::Result<OperationError> {
    let (table, item) = match id.split_once('/') {
        Some((t, i)) => (Some(t), i),
        None => (None, id),
    };
    let mut found: Vec<OperationError> = errors
        .into_iter()
        .filter(|e| e.item_id == item && table.is_none_or(|t| e.table.eq_ignore_ascii_case(t)))
        .collect();
    match found.len() {
        0 => Err(Fail::input(format!(
            "no operation error for {id:?} (`tablesync errors` lists them)"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(Fail::input(format!(
            "{id:?} has errors in several tables; name one as TABLE/ID"
        ))),
    }
}

/// Applies `keep` to the error of `id` and says what was done.
pub async fn resolve(ctx: &SyncContext, out: &mut Out, id: &str, keep: Keep) -> anyhow::Result<()> {
    let mut error = find(ctx.push_errors().await?, id)?;
    let name = format!("{}/{}", error.table, error.item_id);
    let resolver = ctx.resolver();
    match keep {
        Keep::Server => {
            let Some(server) = error.result.clone() else {
                return Err(Fail::input(format!(
                    "the server's answer for {name} carried no copy of the item: keep client \
                     (send it again) or discard"
                )));
            };
            let deleted = error.is_deleted_on_server();
            resolver.cancel_and_update_item(&mut error, server).await?;
            if deleted {
                out.line(format!(
                    "{name}: accepted the server's delete; the local change and row are gone"
                ))
            } else {
                out.line(format!(
                    "{name}: took the server's copy; the local change is dropped"
                ))
            }
        }
        Keep::Client => {
            if error.is_deleted_on_server() {
                return Err(Fail::input(format!(
                    "the server deleted {name}; it cannot be updated: keep server (accept the \
                     delete) or discard"
                )));
            }
            let mut item = error.item.clone();
            if let Some(version) = error.result.as_ref().and_then(|s| s.get("version")) {
                item.insert("version".into(), version.clone());
            }
            resolver.update_operation(&mut error, item).await?;
            out.line(format!(
                "{name}: kept the local change; the next push sends it over the server's copy"
            ))
        }
        Keep::Discard => {
            resolver.cancel_and_discard_item(&mut error).await?;
            out.line(format!(
                "{name}: dropped the local change and the local row; the next pull brings the \
                 server's copy back"
            ))
        }
    }
}
