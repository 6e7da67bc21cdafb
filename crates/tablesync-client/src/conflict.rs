//! Operation errors, their resolutions, and sync handlers (protocol.md 6.8).
//!
//! A push never stops on a conflict: 409, 412 and other failed answers become
//! [`OperationError`]s (persisted in `__errors`) and the push goes on. They are then resolved
//! either automatically by the context's [`SyncHandler`] — [`ClientWins`] and [`ServerWins`] ship
//! with the SDK — or by the app after `push()` returned `Error::PushFailed`, through a
//! [`Resolver`]. Every resolution is guarded by the operation's version: if the app changed the
//! item after the error was recorded, the resolution fails with `Error::OperationChanged` instead
//! of clobbering the newer edit.

use serde_json::{Map, Value};

use crate::error::{Error, PushStatus, Result};
use crate::operation_error::OperationError;
use crate::queue::OpKind;
use crate::store::{queue as q, Store, TableDefinition};
use crate::sync::push::classify::Outcome;
use crate::sync::push::operation::TableOperation;
use crate::transport::BoxFuture;

/// What a push ended with, handed to [`SyncHandler::on_push_complete`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PushCompletionResult {
    /// How the push ended.
    pub status: PushStatus,
    /// The operation errors of this push, in queue order.
    pub errors: Vec<OperationError>,
    /// Why a cancelled push stopped (transport error, the server's 401 message, or the local
    /// store's error); becomes `Error::PushFailed::message`.
    pub message: Option<String>,
}

/// Applies resolutions to operation errors. Obtained from `SyncContext::resolver`, and handed to
/// [`SyncHandler::on_push_complete`].
#[derive(Clone)]
pub struct Resolver {
    store: Store,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    pub(crate) fn new(store: Store) -> Self {
        Resolver { store }
    }

    /// Runs the resolution `f` (one store transaction, on the error's table) and marks `error`
    /// handled when it succeeded.
    async fn resolve<F>(&self, error: &mut OperationError, f: F) -> Result<()>
    where
        F: FnOnce(&mut rusqlite::Connection, &TableDefinition, &OperationError) -> Result<()>
            + Send
            + 'static,
    {
        let e = error.clone();
        let store = self.store.clone();
        self.store
            .run(move |c, _| f(c, store.table(&e.table)?, &e))
            .await?;
        error.handled = true;
        Ok(())
    }

    /// Cancels the operation and writes `item` into the local table as server data (pass
    /// `error.result` to accept the server's copy; an item with `deleted: true` removes the row).
    pub async fn cancel_and_update_item(
        &self,
        error: &mut OperationError,
        item: Map<String, Value>,
    ) -> Result<()> {
        self.resolve(error, move |c, def, e| {
            q::cancel_and_update(c, def, e, &item)
        })
        .await
    }

    /// Cancels the operation and deletes the local row.
    pub async fn cancel_and_discard_item(&self, error: &mut OperationError) -> Result<()> {
        self.resolve(error, q::cancel_and_discard).await
    }

    /// Keeps the operation with `item` as its new data (typically the client's data with the
    /// server's `version`, to overwrite the server on the next push). Nothing is sent now.
    ///
    /// An **insert** refused with 409 whose error carries the server's copy (the id exists on
    /// the server) becomes an **update** of that row, sent with `If-Match` = `item`'s `version`
    /// (the server copy's when `item` has none). The reference keeps it an insert, which then
    /// gets 409 on every push; the push makes the same conversion for an insert that landed
    /// while the app edited the item.
    pub async fn update_operation(
        &self,
        error: &mut OperationError,
        item: Map<String, Value>,
    ) -> Result<()> {
        self.resolve(error, move |c, def, e| {
            q::update_operation(c, def, e, &item)
        })
        .await
    }
}

/// Hooks around a push (the reference's `IMobileServiceSyncHandler`).
///
/// Every method has a default: run the operation as is; leave errors unhandled; allow batches.
pub trait SyncHandler: Send + Sync + 'static {
    /// Runs one queued operation. Implementations may change the operation (its item, its
    /// version) and call [`TableOperation::execute`] any number of times, or return an outcome
    /// without sending anything.
    ///
    /// When the push sends batches ([`SyncHandler::sends_in_batches`]), the operation has
    /// already been sent, as it was queued, in a batch when this runs: the first
    /// [`TableOperation::execute`] returns that answer (classified exactly as its own request's
    /// would be) without sending anything; a later `execute`, or one after the operation was
    /// changed, sends a request of its own.
    fn execute_table_operation<'a>(&'a self, op: &'a mut TableOperation) -> BoxFuture<'a, Outcome> {
        Box::pin(op.execute())
    }

    /// Whether the push may send operations in batches before this handler sees them (see
    /// [`SyncHandler::execute_table_operation`]). A handler that must change operations before
    /// they are first sent returns `false`; the push then sends one request per operation.
    fn sends_in_batches(&self) -> bool {
        true
    }

    /// Called once the queue has been walked (or the push stopped), with every operation error of
    /// this push. Resolve errors through `resolver`; unhandled ones make the push fail.
    fn on_push_complete<'a>(
        &'a self,
        result: &'a mut PushCompletionResult,
        resolver: &'a Resolver,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (result, resolver);
        Box::pin(async { Ok(()) })
    }
}

/// The default handler: sends each operation as is and resolves nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultHandler;

impl SyncHandler for DefaultHandler {}

/// Applies a resolution unless the app changed the item since the error (then the error stays
/// unhandled and is reported).
async fn resolve_unless_changed(
    resolution: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    match resolution.await {
        Err(Error::OperationChanged) => Ok(()),
        other => other,
    }
}

/// The server deleted the item (confirmed, see [`OperationError::is_deleted_on_server`]): accept
/// that (the local row and the operation go). Shared by both shipped handlers: bringing a
/// deleted row back would need an undelete, which tables without soft delete and the official
/// servers' default settings do not offer, and a local edit of a row someone deleted is the
/// classic case where the delete should win.
async fn accept_server_delete(e: &mut OperationError, resolver: &Resolver) -> Result<()> {
    match e.result.clone() {
        Some(tombstone) => {
            resolve_unless_changed(resolver.cancel_and_update_item(e, tombstone)).await
        }
        // Not reached: a confirmed delete always carries its tombstone.
        None => Ok(()),
    }
}

/// Conflicts are resolved by taking the server's copy (cancel-and-update-item with the server
/// item) for every 409/412 error that carries one; an update of an item the server confirms
/// deleted (404 and a tombstone or `item_not_found` on a GET) drops the local item and the
/// operation. A 404 about anything else (e.g. `table_not_found`) stays an unhandled error.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerWins;

impl SyncHandler for ServerWins {
    fn on_push_complete<'a>(
        &'a self,
        result: &'a mut PushCompletionResult,
        resolver: &'a Resolver,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for e in result.errors.iter_mut() {
                if e.is_deleted_on_server() {
                    accept_server_delete(e, resolver).await?;
                } else if e.is_conflict() {
                    if let Some(server) = e.result.clone() {
                        resolve_unless_changed(resolver.cancel_and_update_item(e, server)).await?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Conflicts are resolved by re-sending the client's data with the server's `version`, at once,
/// up to [`ClientWins::retries_max`] times per operation. An insert that conflicts with an existing
/// server row becomes an update of that row. A delete on the server wins: an update answered 404
/// for an item the server confirms deleted, or a conflict with a server tombstone, drops the
/// local item and the operation. A 404 about anything else stays an unhandled error.
#[derive(Debug, Clone, Copy)]
pub struct ClientWins {
    /// How many times one operation is re-sent after a conflict.
    pub retries_max: u32,
}

impl Default for ClientWins {
    fn default() -> Self {
        ClientWins { retries_max: 3 }
    }
}

impl SyncHandler for ClientWins {
    fn execute_table_operation<'a>(&'a self, op: &'a mut TableOperation) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut outcome = op.execute().await;
            for _ in 0..self.retries_max {
                let Outcome::Failed {
                    status: Some(409 | 412),
                    server_item: Some(server),
                    ..
                } = &outcome
                else {
                    break;
                };
                let Some(Value::String(version)) = server.get("version") else {
                    break;
                };
                // A soft-deleted server row cannot be updated (404); leave that to the app.
                if server.get("deleted") == Some(&Value::Bool(true)) {
                    break;
                }
                op.set_version(Some(version.clone()));
                if op.kind() == OpKind::Insert {
                    op.convert_insert_to_update();
                }
                outcome = op.execute().await;
            }
            outcome
        })
    }

    fn on_push_complete<'a>(
        &'a self,
        result: &'a mut PushCompletionResult,
        resolver: &'a Resolver,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for e in result.errors.iter_mut() {
                if e.is_deleted_on_server() {
                    accept_server_delete(e, resolver).await?;
                }
            }
            Ok(())
        })
    }
}
