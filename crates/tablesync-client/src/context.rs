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
        let result = crate::sync::push::push_all(&self.inner).await;
        // The server answered (a whole walk of a non-empty queue): it is the store's server now.
        let reached = match &result {
            Ok(()) => pending > 0,
            Err(crate::error::Error::PushFailed { status, .. }) => {
                *status == crate::error::PushStatus::Complete
            }
            Err(_) => false,
        };
        if reached {
            self.inner.remember_server().await?;
        }
        result
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

    /// Applies resolutions to operation errors (e.g. those of `Error::PushFailed`).
    pub fn resolver(&self) -> Resolver {
        Resolver::new(self.inner.store.clone())
    }
}
