//! Sync tables: local CRUD and queries, plus the table's pull and purge.
//!
//! Every write changes the local row and queues its operation in one SQLite transaction
//! (`store::queue`). Reads never touch the network. Queries use the same OData subset as the
//! server — parsed and lowered to SQL by `tablesync-protocol` — so a filter means the same thing
//! offline and online.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tablesync_protocol::odata::sql::{lower_filter, lower_order_by, Dialect};

use crate::error::{Error, Result};
use crate::store::{queue as q, rows, TableDefinition};
use crate::sync::pull::{parse_query, PullOptions, PullSummary};
use crate::sync::session::Session;
use crate::sync::{sql_params, LocalSchema};

/// The rows of a local query, and the total count when `$inlinecount=allpages` was asked.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueryResult<T> {
    /// Matching rows after `$skip`/`$top`/`$select`.
    pub items: Vec<T>,
    /// Number of rows matching `$filter`, ignoring `$skip`/`$top` (only with `$inlinecount=allpages`).
    pub count: Option<u64>,
}

/// An untyped sync table: items are JSON objects.
#[derive(Debug, Clone)]
pub struct SyncTable {
    session: Arc<Session>,
    name: String,
}

fn to_object(item: Value) -> Result<Map<String, Value>> {
    match item {
        Value::Object(m) => Ok(m),
        other => Err(Error::NotAnObject(other.to_string())),
    }
}

impl SyncTable {
    pub(crate) fn new(session: Arc<Session>, name: String) -> Self {
        SyncTable { session, name }
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn def(&self) -> Result<&TableDefinition> {
        self.session.store.table(&self.name)
    }

    /// Runs `f` with this table's definition through the store's one async/blocking seam.
    async fn run<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection, &TableDefinition) -> Result<R> + Send + 'static,
    {
        let def = self.def()?.clone();
        self.session.store.run(move |c, _| f(c, &def)).await
    }

    /// Inserts an item locally and queues its insert. A missing `id` is generated (UUID v4).
    /// Returns the stored row (with its system columns).
    pub async fn insert(&self, item: Value) -> Result<Map<String, Value>> {
        let item = to_object(item)?;
        let row = self
            .run(move |c, def| q::local_insert(c, def, item))
            .await?;
        self.session.local_write_done().await;
        Ok(row)
    }

    /// Updates (merges the given properties into) an existing local item and queues the update.
    /// `createdAt`, `updatedAt` and `deleted` are ignored; a `version` is kept.
    pub async fn update(&self, item: Value) -> Result<Map<String, Value>> {
        let item = to_object(item)?;
        let row = self
            .run(move |c, def| q::local_update(c, def, item))
            .await?;
        self.session.local_write_done().await;
        Ok(row)
    }

    /// Deletes a local item and queues the delete (with the item's version for `If-Match`).
    pub async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.run(move |c, def| q::local_delete(c, def, &id)).await?;
        self.session.local_write_done().await;
        Ok(())
    }

    /// The local item with this id, if any.
    pub async fn lookup(&self, id: &str) -> Result<Option<Map<String, Value>>> {
        let id = id.to_string();
        self.run(move |c, def| rows::read_row(c, def, &id)).await
    }

    /// Runs an OData query string (`$filter`, `$orderby`, `$skip`, `$top`, `$select`,
    /// `$inlinecount=allpages`) against the local table, e.g.
    /// `"$filter=complete eq false&$orderby=text"`. An empty string reads every row.
    pub async fn read(&self, query: &str) -> Result<QueryResult<Map<String, Value>>> {
        let def = self.def()?.clone();
        let parsed = parse_query(query)?;
        let schema = LocalSchema(&def);
        let (where_sql, mut params) = match &parsed.filter {
            Some(f) => {
                let frag = lower_filter(f, &schema, Dialect::Sqlite, 1)
                    .map_err(|e| Error::InvalidQuery(e.message))?;
                (format!(" WHERE {}", frag.sql), sql_params(frag.params))
            }
            None => (String::new(), Vec::new()),
        };
        let n_filter = params.len();
        let order_sql = if parsed.order_by.is_empty() {
            String::new()
        } else {
            let frag = lower_order_by(&parsed.order_by, &schema, Dialect::Sqlite, params.len() + 1)
                .map_err(|e| Error::InvalidQuery(e.message))?;
            params.extend(sql_params(frag.params));
            format!(" ORDER BY {}", frag.sql)
        };
        if let Some(sel) = &parsed.select {
            for name in sel {
                // `*` is every column, as on the server (it is expanded below).
                if name != "*"
                    && tablesync_protocol::odata::sql::Schema::column_type(&schema, name).is_none()
                {
                    return Err(Error::InvalidQuery(format!(
                        "unknown column '{name}' in $select"
                    )));
                }
            }
        }
        // SQLite wants a LIMIT before an OFFSET; -1 means no limit.
        let limit = parsed
            .top
            .map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let offset = parsed
            .skip
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let count_wanted = parsed.inline_count;
        // `*` anywhere in `$select` selects every column: the same as no `$select`.
        let select = parsed
            .select
            .clone()
            .filter(|sel| !sel.iter().any(|n| n == "*"));
        self.session
            .store
            .run(move |c, _| {
                let sql = format!(
                    "SELECT {} FROM \"{}\"{where_sql}{order_sql} LIMIT {limit} OFFSET {offset}",
                    rows::select_list(&def),
                    def.name()
                );
                let mut stmt = c.prepare(&sql)?;
                let items = stmt
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        rows::row_to_json(&def, r)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let items = match &select {
                    Some(sel) => items
                        .into_iter()
                        .map(|m| {
                            sel.iter()
                                .map(|k| (k.clone(), m.get(k).cloned().unwrap_or(Value::Null)))
                                .collect()
                        })
                        .collect(),
                    None => items,
                };
                let count = if count_wanted {
                    // The filter's parameters are the leading ones of `params`.
                    let n: i64 = c.query_row(
                        &format!("SELECT count(*) FROM \"{}\"{where_sql}", def.name()),
                        rusqlite::params_from_iter(params.iter().take(n_filter)),
                        |r| r.get(0),
                    )?;
                    Some(n.max(0) as u64)
                } else {
                    None
                };
                Ok(QueryResult { items, count })
            })
            .await
    }

    /// Pulls the rows matching `query` (an OData query string with at most a `$filter`) from the
    /// server. With a `query_id` the pull is incremental: it resumes from the delta token saved
    /// under that id. Pushes the whole queue first when this table has pending operations.
    /// Pages are as large as the server allows ([`PullOptions::page_size`]): the context's first
    /// pull asks the server once (`GET /$capabilities`), so an incremental pull that finds
    /// nothing costs one request, two in a context's first pull.
    pub async fn pull(&self, query_id: Option<&str>, query: &str) -> Result<PullSummary> {
        self.pull_with_options(query_id, query, PullOptions::default())
            .await
    }

    /// [`SyncTable::pull`] with explicit options (page size, see [`PullOptions::page_size`]).
    pub async fn pull_with_options(
        &self,
        query_id: Option<&str>,
        query: &str,
        options: PullOptions,
    ) -> Result<PullSummary> {
        let _guard = self.session.sync_lock.lock().await;
        self.session
            .tracked(
                true,
                crate::sync::pull::pull(&self.session, &self.name, query_id, query, options),
            )
            .await
    }

    /// Removes the local rows matching `query` (`$filter` only; empty = all rows) and resets the
    /// delta token of `query_id`, and every other delta token of the table when rows were
    /// removed (so no incremental pull keeps them away). Refuses while the table has pending
    /// operations unless `force`, which drops the pending operations of the purged rows. Returns
    /// the number of rows removed.
    pub async fn purge(&self, query_id: Option<&str>, query: &str, force: bool) -> Result<u64> {
        let _guard = self.session.sync_lock.lock().await;
        crate::sync::purge::purge(&self.session.store, &self.name, query_id, query, force).await
    }
}

/// A typed sync table: items are `T` (serde), with the JSON names of the protocol (`id`,
/// `version`, ... and the declared columns). `T` may omit system properties it does not need.
#[derive(Debug, Clone)]
pub struct TypedSyncTable<T> {
    table: SyncTable,
    _t: PhantomData<fn() -> T>,
}

/// One row as `T`. The error names the row's id: a row written by another client (say a null
/// where `T` has a `bool`) is data, not a bug of this app, and the caller needs to know which.
fn from_row<T: DeserializeOwned>(m: Map<String, Value>) -> Result<T> {
    let id = m
        .get(tablesync_protocol::system::ID)
        .and_then(Value::as_str)
        .map(str::to_owned);
    serde_json::from_value(Value::Object(m)).map_err(|e| match id {
        Some(id) => Error::Deserialize(format!("row '{id}': {e}")),
        None => Error::Deserialize(e.to_string()),
    })
}

/// A row [`TypedSyncTable::read_lenient`] could not read as `T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    /// The row's id (empty if it has none).
    pub id: String,
    /// Why it does not fit `T` (serde's message).
    pub reason: String,
}

/// Rows as `T`, and those that do not fit, in order.
fn split_rows<T: DeserializeOwned>(rows: Vec<Map<String, Value>>) -> (Vec<T>, Vec<Misfit>) {
    let mut items = Vec::with_capacity(rows.len());
    let mut misfits = Vec::new();
    for m in rows {
        let id = m
            .get(tablesync_protocol::system::ID)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match serde_json::from_value(Value::Object(m)) {
            Ok(item) => items.push(item),
            Err(e) => misfits.push(Misfit {
                id,
                reason: e.to_string(),
            }),
        }
    }
    (items, misfits)
}

impl<T: Serialize + DeserializeOwned> TypedSyncTable<T> {
    pub(crate) fn new(table: SyncTable) -> Self {
        TypedSyncTable {
            table,
            _t: PhantomData,
        }
    }

    /// The untyped view of the same table.
    pub fn untyped(&self) -> &SyncTable {
        &self.table
    }

    /// Inserts an item (see [`SyncTable::insert`]); returns it as stored (with its id).
    pub async fn insert(&self, item: &T) -> Result<T> {
        let mut v = serde_json::to_value(item).map_err(|e| Error::Serialize(e.to_string()))?;
        // `id: None` serialises as null; system properties the app leaves empty are not data.
        if let Value::Object(m) = &mut v {
            m.retain(|k, v| !(v.is_null() && tablesync_protocol::system::is_system(k)));
        }
        from_row(self.table.insert(v).await?)
    }

    /// Updates an item (see [`SyncTable::update`]).
    pub async fn update(&self, item: &T) -> Result<T> {
        let mut v = serde_json::to_value(item).map_err(|e| Error::Serialize(e.to_string()))?;
        if let Value::Object(m) = &mut v {
            m.retain(|k, v| !(v.is_null() && tablesync_protocol::system::is_system(k)));
        }
        from_row(self.table.update(v).await?)
    }

    /// Deletes the item with this id (see [`SyncTable::delete`]).
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.table.delete(id).await
    }

    /// The local item with this id.
    pub async fn lookup(&self, id: &str) -> Result<Option<T>> {
        self.table.lookup(id).await?.map(from_row).transpose()
    }

    /// Local query (see [`SyncTable::read`]); `$select` is not useful here since `T` needs its fields.
    pub async fn read(&self, query: &str) -> Result<Vec<T>> {
        self.table
            .read(query)
            .await?
            .items
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// [`TypedSyncTable::read`] that does not fail on a row that does not fit `T` (another
    /// client may write what `T` cannot hold, e.g. a null where `T` has a `bool`): such rows
    /// come back as [`Misfit`]s beside the items, so an app can warn and keep working. `read`
    /// fails on the first one with [`Error::Deserialize`] naming its id.
    pub async fn read_lenient(&self, query: &str) -> Result<(Vec<T>, Vec<Misfit>)> {
        Ok(split_rows(self.table.read(query).await?.items))
    }

    /// Pull (see [`SyncTable::pull`]).
    pub async fn pull(&self, query_id: Option<&str>, query: &str) -> Result<PullSummary> {
        self.table.pull(query_id, query).await
    }

    /// Pull with options (see [`SyncTable::pull_with_options`]).
    pub async fn pull_with_options(
        &self,
        query_id: Option<&str>,
        query: &str,
        options: PullOptions,
    ) -> Result<PullSummary> {
        self.table.pull_with_options(query_id, query, options).await
    }

    /// Purge (see [`SyncTable::purge`]).
    pub async fn purge(&self, query_id: Option<&str>, query: &str, force: bool) -> Result<u64> {
        self.table.purge(query_id, query, force).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Todo {
        id: String,
        complete: bool,
    }

    #[test]
    fn rows_that_do_not_fit_are_set_aside_with_their_id() {
        let rows = vec![
            serde_json::json!({"id": "a", "complete": true}),
            serde_json::json!({"id": "b", "complete": null}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect::<Vec<_>>();
        let (items, misfits) = split_rows::<Todo>(rows.clone());
        assert_eq!(
            items,
            [Todo {
                id: "a".into(),
                complete: true
            }]
        );
        assert_eq!(misfits.len(), 1);
        assert_eq!(misfits[0].id, "b");
        assert!(misfits[0]
            .reason
            .contains("invalid type: null, expected a boolean"));
        let err = from_row::<Todo>(rows[1].clone()).unwrap_err().to_string();
        assert!(err.contains("row 'b': invalid type: null"), "{err}");
    }
}
