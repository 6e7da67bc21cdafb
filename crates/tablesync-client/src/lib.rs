//! tablesync-client: the offline sync SDK for Mobile Apps table backends (ZUMO-API-VERSION 2.0.0).
//!
//! An app keeps a local SQLite copy of its tables, reads and writes it offline, and syncs when it
//! can: [`SyncContext::push`] sends the queued local writes, [`SyncTable::pull`] downloads server
//! changes, [`SyncTable::purge`] forgets local rows. It is modelled on the reference .NET client
//! (`MobileServiceClient` → [`Client`], `MobileServiceSQLiteStore` → [`LocalStore`],
//! `SyncContext` → [`SyncContext`], `IMobileServiceSyncTable` → [`SyncTable`] /
//! [`TypedSyncTable`]) with three deliberate differences: a local write and its queued operation
//! commit in one SQLite transaction; pull pages on (`updatedAt`, `id`) so it never re-downloads
//! boundary rows nor loops on rows sharing a timestamp; a forced purge may carry a filter.
//!
//! # Example (the tutorial's `InitLocalStoreAsync` and `SyncAsync`)
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use tablesync_client::{Client, ColumnType, Error, LocalStore, SyncContext, TableDefinition};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct TodoItem {
//!     #[serde(skip_serializing_if = "Option::is_none")]
//!     id: Option<String>,
//!     text: String,
//!     complete: bool,
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! // InitLocalStoreAsync: define the local tables, then initialise the sync context.
//! let client = Client::new("https://myapp.example.com/")?;
//! let mut store = LocalStore::new("localstore.db");
//! store.define_table(
//!     TableDefinition::new("TodoItem")
//!         .column("text", ColumnType::String)
//!         .column("complete", ColumnType::Boolean),
//! )?;
//! let ctx = SyncContext::initialize(client, store).await?;
//! let todos = ctx.typed_table::<TodoItem>("TodoItem")?;
//!
//! // Work offline: writes go to the local store and the operation queue.
//! todos.insert(&TodoItem { id: None, text: "Buy milk".into(), complete: false }).await?;
//!
//! // SyncAsync: push local changes, then pull server changes incrementally.
//! match ctx.push().await {
//!     Ok(()) => {}
//!     Err(Error::PushFailed { status, errors, .. }) => {
//!         // Resolve conflicts: here, simply take the server's copy.
//!         let resolver = ctx.resolver();
//!         for mut e in errors {
//!             if let Some(server) = e.result.clone() {
//!                 resolver.cancel_and_update_item(&mut e, server).await?;
//!             }
//!         }
//!         eprintln!("push ended with {status}");
//!     }
//!     Err(other) => return Err(other),
//! }
//! todos.pull(Some("allTodoItems"), "").await?;
//! let open = todos.read("$filter=complete eq false&$orderby=text").await?;
//! println!("{} open items", open.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! * `client` — [`Client`]: base URL, protocol headers, request building.
//! * `capabilities` — [`Capabilities`]: what a server offers beyond the protocol (`docs/extensions.md`).
//! * `transport` — the [`Transport`] seam (reqwest in production, fault injection in tests).
//! * `store/` — rusqlite: schema and migrations, rows, queue/error/token tables. The only SQL,
//!   reached from async code through one `spawn_blocking` seam.
//! * `queue` — [`Operation`]s and the pure [`collapse`] rules.
//! * `operation_error` — [`OperationError`], plain data.
//! * `table` — [`SyncTable`] / [`TypedSyncTable`]: local CRUD and queries.
//! * `transaction` — [`LocalTransaction`]: several writes that commit (and push) together.
//! * `sync/` — push (batched or one request per operation; [`classify`] and the planner are
//!   pure), pull (keyset paging), purge, the session a context and its tables share. The only
//!   network code.
//! * `conflict` — [`Resolver`], [`SyncHandler`], [`ClientWins`], [`ServerWins`].
//! * `error` — [`Error`].
//!
//! The modules form no import cycle (ARCHITECTURE.md lists their layers; a test checks it).

mod capabilities;
mod client;
mod conflict;
mod context;
mod error;
mod operation_error;
mod queue;
mod store;
mod sync;
mod table;
mod transaction;
mod transport;

pub use capabilities::{parse_capabilities, BatchCapability, Capabilities, IdempotencyCapability};
pub use client::{Client, ClientOptions, ZUMO_API_VERSION};
pub use conflict::{
    ClientWins, DefaultHandler, PushCompletionResult, Resolver, ServerWins, SyncHandler,
};
pub use context::SyncContext;
pub use error::{Error, PushStatus, Result};
pub use operation_error::OperationError;
pub use queue::{
    collapse, Decision, OpKind, OpState, Operation, MSG_DELETE_QUEUED, MSG_INCONSISTENT,
    MSG_INSERT_QUEUED, MSG_UPDATE_QUEUED,
};
pub use store::{Column, LocalStore, TableDefinition, STORE_SCHEMA_VERSION};
pub use sync::pull::{
    next_link, parse_page, PullOptions, PullSummary, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
};
pub use sync::push::classify::{classify, parse_item, Outcome};
pub use sync::push::operation::TableOperation;
pub use table::{QueryResult, SyncTable, TypedSyncTable};
pub use tablesync_protocol::odata::sql::ColumnType;
pub use transaction::LocalTransaction;
pub use transport::{
    BoxFuture, HttpRequest, HttpResponse, HttpTransport, Method, Transport, TransportError,
};
