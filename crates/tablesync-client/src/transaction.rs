//! Local transactions: several writes that commit together and reach the server together.
//!
//! [`LocalTransaction`] collects inserts, updates and deletes on any tables of a context and
//! [`LocalTransaction::commit`] runs them in ONE SQLite transaction (`store::queue`'s
//! `local_transaction`): every row change commits with its queued operation, and a refused write
//! (an unknown id, a queue conflict, a wrongly typed value) rolls back all of them. The
//! operations of two or more writes share an atomicity group, which a batched push sends as one
//! OData `atomicityGroup`: the server applies them all or none (`docs/extensions.md` section 2).
//! A server without batches (the official ones) gets them one request at a time, without
//! atomicity; the protocol has nothing better.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::queue::{self as q, LocalWrite};
use crate::sync::session::Session;

/// Several local writes that commit together ([`crate::SyncContext::transaction`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tablesync_client::Result<()> {
/// # use tablesync_client::{Client, ColumnType, LocalStore, SyncContext, TableDefinition};
/// # let dir = tempfile::tempdir().unwrap();
/// # let mut store = LocalStore::new(dir.path().join("local.db"));
/// # store.define_table(TableDefinition::new("TodoItem")
/// #     .column("text", ColumnType::String).column("complete", ColumnType::Boolean))?;
/// # // Local writes only: nothing is sent, so no server is needed.
/// # let ctx = SyncContext::initialize(Client::new("http://127.0.0.1:9/")?, store).await?;
/// # let table = ctx.table("TodoItem")?;
/// # table.insert(serde_json::json!({"id": "milk", "text": "Milk"})).await?;
/// # table.insert(serde_json::json!({"id": "old", "text": "Old"})).await?;
/// use serde_json::json;
/// let mut tx = ctx.transaction();
/// tx.insert("TodoItem", json!({"id": "list", "text": "Groceries"}))?
///     .update("TodoItem", json!({"id": "milk", "complete": true}))?
///     .delete("TodoItem", "old");
/// let rows = tx.commit().await?; // all three, or none
/// # assert_eq!(rows.len(), 3);
/// # assert!(table.lookup("old").await?.is_none());
/// # Ok(())
/// # }
/// ```
#[must_use = "nothing is written until the transaction is committed"]
pub struct LocalTransaction {
    session: Arc<Session>,
    writes: Vec<LocalWrite>,
}

impl std::fmt::Debug for LocalTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTransaction")
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

/// `item` as a JSON object (typed items serialise to one).
fn to_object(item: impl Serialize) -> Result<Map<String, Value>> {
    match serde_json::to_value(item).map_err(|e| Error::Serialize(e.to_string()))? {
        Value::Object(mut m) => {
            // As the typed tables do: system properties the app leaves empty are not data.
            m.retain(|k, v| !(v.is_null() && tablesync_protocol::system::is_system(k)));
            Ok(m)
        }
        other => Err(Error::NotAnObject(other.to_string())),
    }
}

impl LocalTransaction {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        LocalTransaction {
            session,
            writes: Vec::new(),
        }
    }

    /// Adds an insert of `item` (a JSON object or any serialisable item) into `table`, as
    /// [`crate::SyncTable::insert`] does it (a missing id is generated).
    pub fn insert(&mut self, table: &str, item: impl Serialize) -> Result<&mut Self> {
        let item = to_object(item)?;
        self.writes.push(LocalWrite::Insert {
            table: table.to_string(),
            item,
        });
        Ok(self)
    }

    /// Adds an update (a merge of the given properties, which name the item's `id`) of a row of
    /// `table`, as [`crate::SyncTable::update`] does it.
    pub fn update(&mut self, table: &str, item: impl Serialize) -> Result<&mut Self> {
        let item = to_object(item)?;
        self.writes.push(LocalWrite::Update {
            table: table.to_string(),
            item,
        });
        Ok(self)
    }

    /// Adds a delete of the row `id` of `table`, as [`crate::SyncTable::delete`] does it.
    pub fn delete(&mut self, table: &str, id: &str) -> &mut Self {
        self.writes.push(LocalWrite::Delete {
            table: table.to_string(),
            id: id.to_string(),
        });
        self
    }

    /// Number of writes added.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether no write was added.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Runs every write in one local transaction. Returns, per write in order, the stored row
    /// (`None` for a delete). On the first refused write nothing is written and its error is
    /// returned (`Error::UnknownTable`, `Error::ItemNotFound`, `Error::QueueConflict`, …).
    pub async fn commit(self) -> Result<Vec<Option<Map<String, Value>>>> {
        let writes = self.writes;
        let rows = self
            .session
            .store
            .run(move |c, tables| q::local_transaction(c, tables, writes))
            .await?;
        self.session.local_write_done().await;
        Ok(rows)
    }
}
