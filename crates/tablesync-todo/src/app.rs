//! The model: the tutorial's `TodoItem` table over the client SDK, its `SyncAsync` (conflicts
//! taken from the server, or left for the user and settled with the SDK's resolutions), the
//! SDK's live mode and watches, and the status the app shows (server, whether the last sync
//! reached the server, pending operations, time of the last sync).
//!
//! Everything here goes through the public API of `tablesync-client` only. Both front ends (the
//! scriptable subcommands in `main.rs` and the terminal UI in `ui.rs`) share this one model, so
//! they cannot drift apart in behaviour.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tablesync_client::{
    Client, ClientOptions, ColumnType, Error, LiveHandle, LiveOptions, LocalStore, OperationError,
    PushStatus, SyncContext, SyncProgress, SyncStatus, TableChanges, TableDefinition,
    TypedSyncTable,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::conflict::{Conflict, Keep};
use crate::text::host_port;

/// The server table (the tutorial's `TodoItem`; `tablesync serve` serves it by default).
pub const TABLE: &str = "TodoItem";
/// The pull's query id: the pull is incremental and resumes from the delta token saved under it.
/// With a token, the user's id is appended, as the tutorial's `"todoItems" + userid` (see
/// [`query_id`]).
pub const QUERY_ID: &str = "todoItems";

/// The query id of the pull for the user a token names (its `sub`, read without verification:
/// it only names the delta token; the server verifies the token): `todoItems<user>`, or
/// `todoItems` without a token. A user id that cannot be part of a query id (a `|`, or too
/// long) is replaced by a stable hash of it.
pub fn query_id(token: Option<&str>) -> String {
    let Some(user) = token.and_then(tablesync_client::token_subject) else {
        return QUERY_ID.to_owned();
    };
    let id = format!("{QUERY_ID}{user}");
    if !id.contains('|') && id.chars().count() <= 255 {
        return id;
    }
    // FNV-1a: stable across builds, unlike `DefaultHasher`.
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{QUERY_ID}#{hash:016x}")
}
/// The local SQLite store's file name inside the data directory.
pub const STORE_FILE: &str = "localstore.db";
/// The file (inside the data directory) that remembers the last sync across runs.
pub const LAST_SYNC_FILE: &str = "last-sync.json";
/// The default server: the one the top README runs (`tablesync serve`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Default upper bound for one HTTP request, in milliseconds. Shorter than the SDK's default so
/// an unreachable server that swallows packets does not keep the user waiting long.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest item text accepted, in characters (a todo is a line, not a document).
pub const TEXT_CHARS_MAX: usize = 1_000;

/// Shortest id prefix `done`/`undone` accept, in characters.
pub const ID_PREFIX_CHARS_MIN: usize = 4;

/// Local order of the list: by text, then id. Stable across syncs (a local insert has no
/// `createdAt` until it is pushed, so ordering by it would reshuffle the list after a sync and
/// break `done <index>` between two runs).
const LIST_QUERY: &str = "$orderby=text,id";

/// The tutorial's `TodoItem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    /// Generated (UUID) by the SDK on insert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What to do. Another client may leave it out or null: shown as "".
    #[serde(default, deserialize_with = "null_as_default")]
    pub text: String,
    /// Whether it is done. Another client may leave it out or null (`curl -d '{"text":"x"}'`):
    /// shown as not done, and syncing goes on (a null once made every command exit 1).
    #[serde(default, deserialize_with = "null_as_default")]
    pub complete: bool,
}

/// A missing or null value as the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl TodoItem {
    /// The id, or `""` for an item that was never stored (not produced by this app).
    pub fn id_str(&self) -> &str {
        self.id.as_deref().unwrap_or("")
    }
}

/// Where the app keeps its files and which server it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory holding [`STORE_FILE`] and [`LAST_SYNC_FILE`]; created when missing.
    pub data_dir: PathBuf,
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub server_url: String,
    /// Upper bound for one HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Authentication token sent as `X-ZUMO-AUTH` (a per-user server needs one).
    pub token: Option<String>,
}

/// Why a sync did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The server could not be reached (refused, dropped, timeout). Local data is safe.
    Offline,
    /// The server answered, but the push left operation errors or the pull was refused.
    Rejected,
    /// The push completed, and some changes conflicted with the server; they wait for a
    /// choice ([`App::conflicts`], [`App::resolve`]), as [`ConflictPolicy::Ask`] leaves them.
    Conflict,
}

/// What [`App::sync_with`] does with the conflicts a push leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// The tutorial's `SyncAsync`: take the server's copy (the subcommands, which cannot ask).
    TakeServer,
    /// Leave them for the user to choose (the terminal UI's dialog).
    Ask,
}

/// How a sync failed, with the message the tutorial shows in its dialog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailure {
    /// Offline or rejected.
    pub kind: FailureKind,
    /// The push status when the push failed (`None` when the pull failed).
    pub push_status: Option<String>,
    /// The long text, e.g. "Push failed because of sync errors. You may be offline. ...".
    pub message: String,
    /// A few words for the status line, e.g. "cannot reach 127.0.0.1:8080" (never a whole
    /// URL); empty in files written before it existed.
    #[serde(default)]
    pub summary: String,
}

/// What one sync (push, then pull) did. Persisted as [`LAST_SYNC_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// When the sync ended (RFC 3339, UTC).
    pub at: String,
    /// The server URL the sync used.
    pub server_url: String,
    /// Whether the server answered (false: offline).
    pub reached_server: bool,
    /// Rows the pull wrote locally.
    pub pulled: u64,
    /// `None` when push and pull both succeeded.
    pub failure: Option<SyncFailure>,
    /// When a sync last succeeded: [`SyncReport::at`] for a successful one, carried over from
    /// the previous report otherwise (absent in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_at: Option<String>,
}

impl SyncReport {
    /// Whether push and pull both succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// [`SyncReport::at`] for people: `2026-11-28 17:58:41 UTC` (the raw text if unparsable).
    pub fn at_display(&self) -> String {
        display_time(&self.at)
    }
}

/// Formats an RFC 3339 time as `YYYY-MM-DD hh:mm:ss UTC`; returns the input when it does not parse.
pub fn display_time(rfc3339: &str) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&fmt).ok())
        .unwrap_or_else(|| rfc3339.to_string())
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The configured server URL.
    pub server_url: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Local items (complete or not).
    pub items: usize,
    /// Queued operations not yet pushed.
    pub pending_operations: u64,
    /// The last sync, from [`LAST_SYNC_FILE`] (`None` before the first sync).
    pub last_sync: Option<SyncReport>,
}

/// The app model: the sync context and the typed `TodoItem` table. Cheap to clone (clones share
/// the store), so the UI can hand a clone to a background sync task.
#[derive(Debug, Clone)]
pub struct App {
    ctx: SyncContext,
    todos: TypedSyncTable<TodoItem>,
    config: Config,
}

impl App {
    /// The tutorial's `InitLocalStoreAsync` (without the sync, which the caller runs): opens
    /// `localstore.db` in the data directory, defines `TodoItem`, initialises the sync context.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let mut options =
            ClientOptions::default().with_request_timeout_ms(config.request_timeout_ms);
        if let Some(token) = &config.token {
            options = options.with_auth_token(token.clone());
        }
        let client = Client::with_options(&config.server_url, options)
            .with_context(|| format!("invalid server URL {:?}", config.server_url))?;
        let store_path = config.data_dir.join(STORE_FILE);
        let mut store = LocalStore::new(&store_path);
        store.define_table(
            TableDefinition::new(TABLE)
                .column("text", ColumnType::String)
                .column("complete", ColumnType::Boolean),
        )?;
        let ctx = SyncContext::initialize(client, store)
            .await
            .with_context(|| format!("cannot open the local store {}", store_path.display()))?;
        let todos = ctx.typed_table::<TodoItem>(TABLE)?;
        Ok(App { ctx, todos, config })
    }

    /// The configuration the app was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every local item, ordered by text then id (the order `list` numbers them in). A row
    /// that still does not fit `TodoItem` is skipped with a warning on stderr, never an error.
    pub async fn items(&self) -> anyhow::Result<Vec<TodoItem>> {
        let (items, misfits) = self.todos.read_lenient(LIST_QUERY).await?;
        for m in misfits {
            eprintln!("warning: skipping item {}: {}", m.id, m.reason);
        }
        Ok(items)
    }

    /// Inserts a new, incomplete item locally (queued for the next push). Does not sync.
    pub async fn add(&self, text: &str) -> anyhow::Result<TodoItem> {
        let text = text.trim();
        if text.is_empty() {
            bail!("the item text must not be empty");
        }
        let chars = text.chars().count();
        if chars > TEXT_CHARS_MAX {
            bail!("the item text has {chars} characters; at most {TEXT_CHARS_MAX} are allowed");
        }
        let item = TodoItem {
            id: None,
            text: text.to_string(),
            complete: false,
        };
        Ok(self.todos.insert(&item).await?)
    }

    /// Deletes the item with this id locally (queued for the next push); returns what it was.
    /// Does not sync.
    pub async fn delete(&self, id: &str) -> anyhow::Result<TodoItem> {
        let Some(item) = self.todos.lookup(id).await? else {
            bail!("no item with id {id:?}");
        };
        self.todos.delete(id).await?;
        Ok(item)
    }

    /// Sets `complete` on the item with this id locally (queued for the next push). Does not sync.
    pub async fn set_complete(&self, id: &str, complete: bool) -> anyhow::Result<TodoItem> {
        let Some(mut item) = self.todos.lookup(id).await? else {
            bail!("no item with id {id:?}");
        };
        item.complete = complete;
        Ok(self.todos.update(&item).await?)
    }

    /// Finds an item by its 1-based position in [`App::items`] (as `list` prints it), by its id,
    /// or by a unique prefix of its id of at least [`ID_PREFIX_CHARS_MIN`] characters.
    pub async fn find(&self, id_or_index: &str) -> anyhow::Result<TodoItem> {
        let key = id_or_index.trim();
        let items = self.items().await?;
        if let Ok(n) = key.parse::<usize>() {
            if (1..=items.len()).contains(&n) {
                return Ok(items[n - 1].clone());
            }
        }
        if let Some(item) = items.iter().find(|i| i.id_str() == key) {
            return Ok(item.clone());
        }
        // Short keys are list numbers, never id prefixes: "3" must not pick an id starting with 3.
        let matches: Vec<&TodoItem> = if key.chars().count() < ID_PREFIX_CHARS_MIN {
            Vec::new()
        } else {
            items
                .iter()
                .filter(|i| i.id_str().starts_with(key))
                .collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!(
                "no item {key:?}: give a number from `list` (1..={}) or an item id",
                items.len()
            ),
            many => bail!(
                "{} items have an id starting with {key:?}; give more of it",
                many.len()
            ),
        }
    }

    /// Queued operations not yet pushed.
    pub async fn pending_operations(&self) -> anyhow::Result<u64> {
        Ok(self.ctx.pending_operations().await?)
    }

    /// The tutorial's `SyncAsync`: push the queue, then pull `TodoItem` with the query id
    /// `todoItems` (plus the user, see [`query_id`]). Never fails: a failure is part of the report (with the tutorial's dialog
    /// text), and the report is saved as the last sync (a save failure is reported as a
    /// rejected sync rather than lost). Errors left by the push are resolved as the tutorial
    /// does (see `resolve_push_errors`: a conflict takes the server's copy, an item deleted on
    /// the server drops the local change), so one error does not block every later sync; the
    /// report still says the push failed.
    pub async fn sync(&self) -> SyncReport {
        self.sync_with(ConflictPolicy::TakeServer).await
    }

    /// [`App::sync`], with conflicts either resolved as the tutorial does or left for the user
    /// ([`ConflictPolicy::Ask`]: the report's failure is then [`FailureKind::Conflict`], and
    /// every later push meets them again until [`App::resolve`] settles them).
    pub async fn sync_with(&self, policy: ConflictPolicy) -> SyncReport {
        let mut report = SyncReport {
            at: String::new(),
            server_url: self.config.server_url.clone(),
            reached_server: true,
            pulled: 0,
            failure: None,
            last_ok_at: None,
        };
        match self.ctx.push().await {
            Ok(()) => match self
                .todos
                .pull(Some(&query_id(self.config.token.as_deref())), "")
                .await
            {
                Ok(summary) => report.pulled = summary.upserted,
                Err(e) => {
                    report.reached_server = !is_network(&e);
                    report.failure = Some(pull_failure(&e, &self.host()));
                }
            },
            Err(e) => {
                report.reached_server = !is_network(&e);
                let resolved = policy == ConflictPolicy::TakeServer;
                if let (Error::PushFailed { errors, .. }, true) = (&e, resolved) {
                    self.resolve_push_errors(errors.clone()).await;
                }
                report.failure = Some(push_failure(&e, &self.host(), resolved));
            }
        }
        report.at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        report.last_ok_at = if report.ok() {
            Some(report.at.clone())
        } else {
            // An unreadable previous report only loses the time of the last success.
            load_last_sync(&self.config.data_dir)
                .ok()
                .flatten()
                .and_then(|r| {
                    let ok = r.ok();
                    r.last_ok_at.or(ok.then_some(r.at))
                })
        };
        if let Err(e) = save_last_sync(&self.config.data_dir, &report) {
            let note = format!("\n\nThe sync result could not be saved: {e:#}");
            match &mut report.failure {
                Some(f) => f.message.push_str(&note),
                None => {
                    report.failure = Some(SyncFailure {
                        kind: FailureKind::Rejected,
                        push_status: None,
                        message: note.trim_start().to_string(),
                        summary: "the sync result could not be saved".into(),
                    })
                }
            }
        }
        report
    }

    /// Resolves what the push left, as the tutorial's `SyncAsync` does, so one error does not
    /// block every later sync (a failed push also skips the pull):
    /// * the item was deleted on the server (an update answered 404/410 and confirmed by the
    ///   SDK, or a conflict with a tombstone): `CancelAndDiscard`, the local change goes;
    /// * the answer carries the server's copy (409/412): `CancelAndUpdate` with that copy.
    ///
    /// Anything else (no answer, a 5xx, a 404 about the table rather than the item) stays
    /// queued and is retried by the next sync: discarding it could lose a change the server
    /// never refused. Best effort: a resolution that fails (the item changed meanwhile) leaves
    /// the error for the next push.
    async fn resolve_push_errors(&self, errors: Vec<tablesync_client::OperationError>) {
        let resolver = self.ctx.resolver();
        for mut e in errors {
            if e.is_deleted_on_server() {
                let _ = resolver.cancel_and_discard_item(&mut e).await;
            } else if let Some(server) = e.result.clone() {
                let _ = resolver.cancel_and_update_item(&mut e, server).await;
            }
        }
    }

    /// The server's host and port (what the status line and short messages name).
    pub fn host(&self) -> String {
        host_port(&self.config.server_url)
    }

    /// The SDK's sync status watch (syncing, pending operations, last success, online).
    pub fn sync_status(&self) -> tokio::sync::watch::Receiver<SyncStatus> {
        self.ctx.status()
    }

    /// The SDK's progress watch of the running push or pull.
    pub fn sync_progress(&self) -> tokio::sync::watch::Receiver<SyncProgress> {
        self.ctx.progress()
    }

    /// The SDK's live mode on this app's pull (`TodoItem`, the same query id as
    /// [`App::sync`]): the server's change feed when it has one, else a pull every
    /// `poll_interval_s`; local writes pushed shortly after they are made. Changes arrive on
    /// [`App::changes`]. Runs until the handle is dropped; must be called inside the runtime.
    pub fn live(&self, poll_interval_s: u64) -> anyhow::Result<LiveHandle> {
        let options = LiveOptions::new()
            .query(TABLE, &query_id(self.config.token.as_deref()), "")
            .with_poll_interval_ms(poll_interval_s.saturating_mul(1000).max(1));
        Ok(self.ctx.live(options)?)
    }

    /// The rows pulls changed (live mode's and [`App::sync`]'s), per table.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<TableChanges> {
        self.ctx.changes()
    }

    /// The conflicts the last push left on `TodoItem` (errors that carry the server's copy),
    /// in queue order.
    pub async fn conflicts(&self) -> anyhow::Result<Vec<Conflict>> {
        Ok(self
            .ctx
            .push_errors()
            .await?
            .iter()
            .filter(|e| e.table.eq_ignore_ascii_case(TABLE))
            .filter_map(Conflict::from_error)
            .collect())
    }

    /// Settles a conflict with the SDK's resolutions (as `tablesync resolve` does), so the
    /// next sync goes through; returns what was done, in a few words. The error is looked up
    /// again by its operation id, and the SDK refuses a resolution when the item was edited
    /// since (`OperationChanged`): the next sync then brings a fresh conflict.
    /// * [`Keep::Server`]: cancel-and-update with the server's copy (a tombstone removes the
    ///   local row);
    /// * [`Keep::Mine`]: update-operation with my item and the server's `version` (client
    ///   wins on the next push); when the server deleted the item, it is added again as a new
    ///   item (first, so a crash in between leaves both rather than neither) and the old
    ///   change discarded.
    pub async fn resolve(&self, conflict: &Conflict, keep: Keep) -> anyhow::Result<String> {
        let mut error: OperationError = self
            .ctx
            .push_errors()
            .await?
            .into_iter()
            .find(|e| e.operation_id == conflict.operation_id)
            .context("the conflict is gone (settled, or the item changed); syncing again")?;
        let resolver = self.ctx.resolver();
        let text = conflict.text().to_string();
        match keep {
            Keep::Server => {
                let server = error
                    .result
                    .clone()
                    .context("the server sent no copy of the item")?;
                resolver.cancel_and_update_item(&mut error, server).await?;
                Ok(format!("kept the server's \u{201c}{text}\u{201d}"))
            }
            Keep::Mine => match conflict.mine_over_server() {
                Some(item) => {
                    resolver.update_operation(&mut error, item).await?;
                    Ok(format!("kept your \u{201c}{text}\u{201d}; sending it"))
                }
                None => {
                    if let crate::conflict::Version::Item { text, complete } = &conflict.mine {
                        self.todos
                            .insert(&TodoItem {
                                id: None,
                                text: text.clone(),
                                complete: *complete,
                            })
                            .await?;
                    }
                    resolver.cancel_and_discard_item(&mut error).await?;
                    Ok(format!("added your \u{201c}{text}\u{201d} again"))
                }
            },
        }
    }

    /// The status line's facts.
    pub async fn status(&self) -> anyhow::Result<Status> {
        Ok(Status {
            server_url: self.config.server_url.clone(),
            data_dir: self.config.data_dir.clone(),
            items: self.items().await?.len(),
            pending_operations: self.pending_operations().await?,
            last_sync: load_last_sync(&self.config.data_dir)?,
        })
    }
}

/// Whether an SDK error means the server was not reached.
fn is_network(e: &Error) -> bool {
    matches!(
        e,
        Error::Network(_)
            | Error::PushFailed {
                status: PushStatus::CancelledByNetworkError,
                ..
            }
    )
}

/// The tutorial's push-failure text (`MobileServicePushFailedException`): its dialog line, the
/// push status, then the cause of a cancelled push (e.g. the connection was refused, or the
/// server's 401 message) or, for a push that walked the queue, the SDK's error and the failed
/// operations.
fn push_failure(e: &Error, host: &str, resolved: bool) -> SyncFailure {
    let (status, cause) = match e {
        Error::PushFailed {
            status, message, ..
        } => (Some(status.to_string()), message.clone()),
        _ => (None, None),
    };
    let mut message = String::from("Push failed because of sync errors. You may be offline.");
    if let Some(s) = &status {
        message.push_str(&format!("\nPushResult.Status: {s}"));
    }
    match cause {
        Some(cause) => message.push_str(&format!("\nMessage: {cause}")),
        None => message.push_str(&format!("\nMessage: {e}")),
    }
    if let Error::PushFailed { errors, .. } = e {
        for err in errors {
            let http = err
                .status
                .map_or("no answer".to_string(), |s| s.to_string());
            message.push_str(&format!(
                "\n- {} {:?}: {http}{}",
                err.kind,
                err.item_id,
                match (resolved, err.is_deleted_on_server(), err.result.is_some()) {
                    (true, true, _) => " (deleted on the server; the local change was discarded)",
                    (true, false, true) => " (the server's copy was kept)",
                    (false, _, true) => " (waiting for your choice)",
                    _ => "",
                }
            ));
        }
    }
    let conflicts = match e {
        Error::PushFailed { errors, .. } => errors.iter().filter(|e| e.result.is_some()).count(),
        _ => 0,
    };
    let kind = if is_network(e) {
        FailureKind::Offline
    } else if conflicts > 0 && !resolved {
        FailureKind::Conflict
    } else {
        FailureKind::Rejected
    };
    SyncFailure {
        kind,
        push_status: status,
        message,
        summary: push_summary(e, host, conflicts),
    }
}

/// The status line's few words for a failed push: offline names the host and port only, a
/// conflict counts the changes, a refused token says to log in again.
fn push_summary(e: &Error, host: &str, conflicts: usize) -> String {
    match e {
        _ if is_network(e) => format!("cannot reach {host}"),
        Error::PushFailed {
            status: PushStatus::CancelledByAuthenticationError,
            ..
        } => "the server refused the token: log in again".to_string(),
        Error::PushFailed {
            status: PushStatus::Complete,
            errors,
            ..
        } => {
            let refused = errors.len() - conflicts;
            let mut parts = Vec::new();
            if conflicts > 0 {
                parts.push(format!("{conflicts} change(s) conflicted with the server"));
            }
            if refused > 0 {
                let http = errors
                    .iter()
                    .find(|e| e.result.is_none())
                    .and_then(|e| e.status)
                    .map_or("no answer".to_string(), |s| format!("HTTP {s}"));
                parts.push(format!("{refused} change(s) refused ({http})"));
            }
            parts.join(", ")
        }
        Error::PushFailed { status, .. } => format!("push stopped: {status}"),
        other => other.to_string(),
    }
}

/// The tutorial's pull-failure text.
fn pull_failure(e: &Error, host: &str) -> SyncFailure {
    SyncFailure {
        kind: if is_network(e) {
            FailureKind::Offline
        } else {
            FailureKind::Rejected
        },
        push_status: None,
        message: format!(
            "Pull failed: {e}\n\nIf you are still in an offline scenario, you can try your pull \
             again when connected with your server."
        ),
        summary: if is_network(e) {
            format!("cannot reach {host}")
        } else {
            format!("pull refused: {e}")
        },
    }
}

/// Writes the report atomically (temp file + rename) so a crash never leaves half a file.
pub fn save_last_sync(data_dir: &Path, report: &SyncReport) -> anyhow::Result<()> {
    let path = data_dir.join(LAST_SYNC_FILE);
    let tmp = data_dir.join(format!("{LAST_SYNC_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads the last sync report; `None` when there was none yet.
pub fn load_last_sync(data_dir: &Path) -> anyhow::Result<Option<SyncReport>> {
    let path = data_dir.join(LAST_SYNC_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a valid sync report", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_from_other_clients_with_nulls_are_read_with_defaults() {
        let item: TodoItem =
            serde_json::from_value(serde_json::json!({"id": "x", "text": "x", "complete": null}))
                .unwrap();
        assert_eq!((item.text.as_str(), item.complete), ("x", false));
        let item: TodoItem =
            serde_json::from_value(serde_json::json!({"id": "y", "text": null})).unwrap();
        assert_eq!((item.text.as_str(), item.complete), ("", false));
    }

    fn config(dir: &Path, url: &str) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            server_url: url.to_string(),
            request_timeout_ms: 5_000,
            token: None,
        }
    }

    #[test]
    fn query_ids_name_the_user() {
        // {"alg":"HS256"} . {"sub":"alice"} . sig
        let alice = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
        assert_eq!(query_id(Some(alice)), "todoItemsalice");
        assert_eq!(query_id(None), "todoItems");
        assert_eq!(query_id(Some("not a jwt")), "todoItems");
        // {"sub":"a|b"}
        let piped = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhfGIifQ.c2ln";
        let id = query_id(Some(piped));
        assert!(id.starts_with("todoItems#") && !id.contains('|'), "{id}");
    }

    /// A port nothing listens on: bind one, then drop the listener.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn local_actions_and_offline_sync() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(config(dir.path(), &dead_url())).await.unwrap();
        assert!(app.add("   ").await.is_err());
        assert!(app.add(&"x".repeat(TEXT_CHARS_MAX + 1)).await.is_err());
        let b = app.add("b item").await.unwrap();
        let a = app.add(" a item ").await.unwrap();
        assert_eq!(a.text, "a item");
        let items = app.items().await.unwrap();
        assert_eq!(
            items.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(),
            ["a item", "b item"]
        );
        assert_eq!(app.find("2").await.unwrap(), b);
        assert_eq!(app.find(a.id_str()).await.unwrap(), a);
        assert_eq!(app.find(&a.id_str()[..8]).await.unwrap(), a);
        assert!(app.find("3").await.is_err());
        assert!(app.find("abc").await.is_err());
        assert!(app.find("").await.is_err());
        let done = app.set_complete(b.id_str(), true).await.unwrap();
        assert!(done.complete);
        assert!(app.set_complete("nope", true).await.is_err());
        // Two inserts; the update collapses into the queued insert.
        assert_eq!(app.pending_operations().await.unwrap(), 2);

        let report = app.sync().await;
        assert!(!report.reached_server);
        let failure = report.failure.clone().unwrap();
        assert_eq!(failure.kind, FailureKind::Offline);
        assert_eq!(
            failure.push_status.as_deref(),
            Some("CancelledByNetworkError")
        );
        // The dialog names the cause: the transport's error for a port nothing listens on.
        let (head, cause) = failure
            .message
            .split_once("\nMessage: ")
            .expect("a Message line");
        assert_eq!(
            head,
            "Push failed because of sync errors. You may be offline.\n\
             PushResult.Status: CancelledByNetworkError"
        );
        assert!(
            cause.starts_with("connection failed: ")
                && cause.to_ascii_lowercase().contains("connection refused"),
            "{}",
            failure.message
        );
        assert_eq!(app.pending_operations().await.unwrap(), 2);
        let status = app.status().await.unwrap();
        assert_eq!(status.items, 2);
        assert_eq!(status.last_sync, Some(report));
    }

    #[tokio::test]
    async fn pull_failure_when_nothing_to_push() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(config(dir.path(), &dead_url())).await.unwrap();
        let report = app.sync().await;
        let failure = report.failure.unwrap();
        assert!(!report.reached_server);
        assert_eq!(failure.kind, FailureKind::Offline);
        assert_eq!(failure.push_status, None);
        assert!(
            failure.message.starts_with("Pull failed: network error"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn last_sync_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_last_sync(dir.path()).unwrap(), None);
        let report = SyncReport {
            at: "2026-11-28T17:58:41.123Z".into(),
            server_url: DEFAULT_URL.into(),
            reached_server: true,
            pulled: 3,
            failure: None,
            last_ok_at: Some("2026-11-28T17:58:41.123Z".into()),
        };
        save_last_sync(dir.path(), &report).unwrap();
        assert_eq!(load_last_sync(dir.path()).unwrap(), Some(report.clone()));
        assert_eq!(report.at_display(), "2026-11-28 17:58:41 UTC");
        std::fs::write(dir.path().join(LAST_SYNC_FILE), b"{not json").unwrap();
        let err = load_last_sync(dir.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a valid sync report"),
            "{err:#}"
        );
        assert_eq!(display_time("garbage"), "garbage");
    }

    #[tokio::test]
    async fn bad_url_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = App::open(config(dir.path(), "ftp://x")).await.unwrap_err();
        assert!(format!("{err:#}").contains("invalid server URL"), "{err:#}");
    }
}
