//! The sync context: the store, the queue, the handler, and the one-sync-action-at-a-time rule.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::capabilities::Capabilities;
use crate::client::Client;
use crate::conflict::{DefaultHandler, Resolver, SyncHandler};
use crate::error::Result;
use crate::operation_error::OperationError;
use crate::queue::Operation;
use crate::store::{queue as q, LocalStore};
use crate::sync::session::Session;
use crate::table::{SyncTable, TypedSyncTable};
use crate::transaction::LocalTransaction;

/// The offline sync context (the tutorial's `client.SyncContext`): owns the local store, the
/// operation queue and the sync handler. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct SyncContext {
    inner: Arc<Session>,
}

impl std::fmt::Debug for SyncContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContext")
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

impl SyncContext {
    /// Opens the store (creating/upgrading its schema and tables) with the default handler
    /// (conflicts are left to the app).
    pub async fn initialize(client: Client, store: LocalStore) -> Result<Self> {
        Self::initialize_with_handler(client, store, Arc::new(DefaultHandler)).await
    }

    /// Opens the store with a [`SyncHandler`] such as [`crate::ServerWins`] or [`crate::ClientWins`].
    pub async fn initialize_with_handler(
        client: Client,
        store: LocalStore,
        handler: Arc<dyn SyncHandler>,
    ) -> Result<Self> {
        let store = tokio::task::spawn_blocking(move || store.open()).await??;
        Ok(SyncContext {
            inner: Arc::new(Session::new(client, store, handler)),
        })
    }

    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// An untyped sync table (items are JSON objects). The name matches the defined tables
    /// case-insensitively, as the server matches table names (`"todoitem"` finds `TodoItem`);
    /// the table keeps its defined name, which is what requests, the queue and tokens use.
    pub fn table(&self, name: &str) -> Result<SyncTable> {
        let defined = self.inner.store.table(name)?.name().to_string();
        Ok(SyncTable::new(Arc::clone(&self.inner), defined))
    }

    /// A typed sync table: items are `T` (serde).
    pub fn typed_table<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<TypedSyncTable<T>> {
        Ok(TypedSyncTable::new(self.table(name)?))
    }

    /// Names of the defined tables.
    pub fn table_names(&self) -> Vec<String> {
        self.inner.store.tables().keys().cloned().collect()
    }

    /// Pushes every queued operation of every table, in queue order.
    ///
    /// `Ok(())` when the push completed and every operation error (if any) was handled;
    /// otherwise `Err(Error::PushFailed { status, errors, message })` with the unhandled errors.
    /// A network failure stops the push (`CancelledByNetworkError`, `message` = the transport
    /// error) and leaves the queue intact; so does a 401 (`CancelledByAuthenticationError`,
    /// `message` = the server's message).
    ///
    /// Against a server that offers batches (`docs/extensions.md`) the queue goes in batches,
    /// one request per batch, each operation answered and classified exactly as its own request
    /// would be; otherwise (the official servers, or `ClientOptions::batch_push` off) one
    /// request per operation. Every write carries the operation's `Idempotency-Key`.
    pub async fn push(&self) -> Result<()> {
        let _guard = self.inner.sync_lock.lock().await;
        let pending = self.pending_operations().await?;
        self.inner
            .tracked(pending > 0, crate::sync::push::push_all(&self.inner))
            .await
    }

    /// The sync status (idle or syncing, pending operations, last success and error, online as
    /// last seen), updated as pushes, pulls and local writes happen.
    ///
    /// ```no_run
    /// # async fn demo(ctx: tablesync_client::SyncContext) {
    /// let mut status = ctx.status();
    /// tokio::spawn(async move {
    ///     while status.changed().await.is_ok() {
    ///         let s = status.borrow_and_update().clone();
    ///         let line = match (s.syncing, s.online) {
    ///             (true, _) => "syncing…".to_string(),
    ///             (false, Some(false)) => "offline".to_string(),
    ///             _ => format!("{} change(s) to push", s.pending_operations.unwrap_or(0)),
    ///         };
    ///         println!("{line}");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn status(&self) -> tokio::sync::watch::Receiver<crate::sync::monitor::SyncStatus> {
        self.inner.monitor.status()
    }

    /// Progress of the running pull (pages and rows committed) or push (operations done out
    /// of the queue's length), reported after each page or operation/batch; `Idle` between
    /// actions.
    ///
    /// ```no_run
    /// use tablesync_client::SyncProgress;
    /// # async fn demo(ctx: tablesync_client::SyncContext) -> tablesync_client::Result<()> {
    /// let mut progress = ctx.progress();
    /// let shown = tokio::spawn(async move {
    ///     while progress.changed().await.is_ok() {
    ///         match &*progress.borrow_and_update() {
    ///             SyncProgress::Pull { table, rows, .. } => eprintln!("{table}: {rows} row(s)"),
    ///             SyncProgress::Push { done, total } => eprintln!("pushed {done}/{total}"),
    ///             _ => {}
    ///         }
    ///     }
    /// });
    /// ctx.table("TodoItem")?.pull(Some("all"), "").await?;
    /// drop(ctx); // closes the channel, ending the loop
    /// let _ = shown.await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn progress(&self) -> tokio::sync::watch::Receiver<crate::sync::monitor::SyncProgress> {
        self.inner.monitor.progress()
    }

    /// Asks the running pull or push (of this context or any of its tables) to stop at its next
    /// checkpoint: after the page or operation/batch in flight is committed. The action then
    /// returns `Error::Cancelled` with the store consistent and resumable: an incremental pull
    /// goes on from the last committed page, a push with the operations not yet sent still
    /// queued. Returns `false` when nothing was running (a later action is not affected).
    ///
    /// ```no_run
    /// # async fn demo(ctx: tablesync_client::SyncContext) -> tablesync_client::Result<()> {
    /// let table = ctx.table("TodoItem")?;
    /// let pull = tokio::spawn(async move { table.pull(Some("all"), "").await });
    /// // ... the user pressed Escape:
    /// ctx.cancel_sync();
    /// match pull.await.expect("pull task") {
    ///     Err(tablesync_client::Error::Cancelled) => eprintln!("stopped; pull again to resume"),
    ///     other => drop(other?),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel_sync(&self) -> bool {
        self.inner.monitor.cancel()
    }

    /// The base URL of the server this store last synced with: recorded by a completed pull and
    /// by a push that walked a non-empty queue (`LocalStore::last_server_url` reads it without
    /// a context).
    pub async fn last_server_url(&self) -> Result<Option<String>> {
        self.inner
            .store
            .run(|c, _| crate::store::meta::server_url(c))
            .await
    }

    /// What the server offers beyond the Mobile Apps protocol (`docs/extensions.md`): asked with
    /// one `GET {base}/$capabilities` the first time it is needed (a push with a non-empty queue
    /// asks too, unless `ClientOptions::batch_push` is off) and remembered for the life of the
    /// context. A server without extensions (the official ones) gives
    /// [`Capabilities::default`]; when the server cannot be reached the answer is also the
    /// default, but it is not remembered, so the next call asks again.
    pub async fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().await
    }

    /// A local transaction: several inserts, updates and deletes, on any tables of the context,
    /// that commit together (each row change with its queued operation) when
    /// [`LocalTransaction::commit`] is called, or not at all. Their operations form one atomicity
    /// group, so a push to a server that offers batches sends them all or nothing.
    pub fn transaction(&self) -> LocalTransaction {
        LocalTransaction::new(Arc::clone(&self.inner))
    }

    /// Number of queued operations.
    pub async fn pending_operations(&self) -> Result<u64> {
        self.inner.store.run(|c, _| q::pending_count(c, None)).await
    }

    /// The queue, in push order.
    pub async fn operations(&self) -> Result<Vec<Operation>> {
        self.inner.store.run(|c, _| q::list_ops(c)).await
    }

    /// The operation errors recorded by the last push and not resolved since.
    pub async fn push_errors(&self) -> Result<Vec<OperationError>> {
        self.inner.store.run(|c, _| q::list_errors(c)).await
    }

    /// Rows that pulls changed in the local store, per table with their ids, sent after each
    /// committed page: by live mode's pulls and by the app's own ([`SyncTable::pull`]) alike.
    /// Only notifications sent after this call are received. A receiver that falls more than
    /// [`crate::CHANGES_CHANNEL_NOTIFICATIONS_MAX`] notifications behind gets
    /// `RecvError::Lagged` once (it should then re-read its tables) and goes on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::sync::monitor::TableChanges> {
        self.inner.monitor.changes()
    }

    /// Live mode: keeps the given queries current while the server can be reached, until the
    /// returned handle is stopped or dropped. Against a server with a change feed
    /// (`docs/extensions.md` section 5) each table's feed stays open and every burst of changes
    /// runs the incremental pull of the queries it concerns; against one without (the official
    /// servers) each table pulls every `poll_interval_ms`. Local writes are pushed shortly
    /// after they are made, and queued writes as soon as a dropped connection is back.
    /// Notifications arrive on [`SyncContext::changes`]. Must be called inside a tokio
    /// runtime; several live handles on one context are allowed but pull the same queries
    /// twice.
    ///
    /// ```
    /// use serde_json::json;
    /// use tablesync_client::{LiveOptions, SyncContext};
    ///
    /// // Device B keeps its TodoItem table current while it shows it.
    /// async fn show_live(b: SyncContext) -> tablesync_client::Result<()> {
    ///     let mut changes = b.changes(); // before going live: nothing is missed
    ///     let live = b.live(LiveOptions::new().query("TodoItem", "allTodoItems", ""))?;
    ///     let todos = b.table("TodoItem")?;
    ///     while let Ok(change) = changes.recv().await {
    ///         // Committed locally: re-read what the view shows.
    ///         let items = todos.read("$orderby=text").await?.items;
    ///         println!("{} changed {:?}; {} item(s)", change.table, change.ids, items.len());
    /// #       if change.ids == ["milk"] { break; }
    ///     }
    ///     live.stop().await; // a pull or push in flight finishes first
    ///     Ok(())
    /// }
    /// # async fn context(url: &str, path: &std::path::Path) -> SyncContext {
    /// #     let mut store = tablesync_client::LocalStore::new(path);
    /// #     store.define_table(tablesync_client::TableDefinition::new("TodoItem")
    /// #         .column("text", tablesync_client::ColumnType::String)).unwrap();
    /// #     SyncContext::initialize(tablesync_client::Client::new(url).unwrap(), store).await.unwrap()
    /// # }
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let config = tablesync_server::Config::default_todo()
    /// #     .with_database(dir.path().join("server.db").display().to_string());
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("http://{}/", listener.local_addr()?);
    /// # let server = tablesync_server::Server::open(config).await?;
    /// # tokio::spawn(server.run(listener, std::future::pending::<()>()));
    /// # let b = context(&url, &dir.path().join("b.db")).await;
    /// # let shown = tokio::spawn(show_live(b));
    /// // Meanwhile device A writes and syncs; B shows it without pulling.
    /// # let a = context(&url, &dir.path().join("a.db")).await;
    /// a.table("TodoItem")?.insert(json!({"id": "milk", "text": "Buy milk"})).await?;
    /// a.push().await?;
    /// # tokio::time::timeout(std::time::Duration::from_secs(60), shown).await???;
    /// # Ok(())
    /// # }
    /// ```
    pub fn live(
        &self,
        options: crate::sync::live::LiveOptions,
    ) -> Result<crate::sync::live::LiveHandle> {
        crate::sync::live::start(Arc::clone(&self.inner), options)
    }

    /// Applies resolutions to operation errors (e.g. those of `Error::PushFailed`).
    pub fn resolver(&self) -> Resolver {
        Resolver::new(self.inner.store.clone())
    }
}
