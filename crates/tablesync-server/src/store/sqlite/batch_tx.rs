//! A batch's write transaction on SQLite ([`StoreTx`]): `BEGIN IMMEDIATE` on the writer
//! connection, held across the batch's awaits by the store's write gate (every other write
//! waits for the gate, so none meets the connection mid-batch). Each call runs on the blocking
//! pool like any other write; the row functions see the open transaction and nest their work
//! in a savepoint. Dropped without commit (a cancelled request), the transaction is rolled back
//! on the blocking pool before the gate is given up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};
use tablesync_protocol::odata::sql::SqlValue;
use tokio::sync::OwnedMutexGuard;

use super::super::idempotency::{
    existing, headers_to_text, Claim, RecordKey, Recorded, Rows, StoreTx,
};
use super::super::sql::CasKind;
use super::super::{BoxFuture, Scope, StoreResult, WriteOutcome};
use super::{
    add_columns, cas_update, classify, get_row, hard_delete, insert_row, lock, run_blocking,
    stored_columns, Inner, TYPES,
};
use crate::table::{Column, Item, TableSchema};

/// An open batch transaction on the writer connection.
pub(super) struct SqliteTx {
    inner: Arc<Inner>,
    /// Held until commit or rollback; None once finished.
    gate: Option<OwnedMutexGuard<()>>,
    /// Open savepoints (their names are `tsb<depth>`).
    depth: AtomicUsize,
}

/// Begin a batch transaction: wait for the write gate, then `BEGIN IMMEDIATE`.
pub(super) async fn begin(inner: Arc<Inner>) -> StoreResult<Box<dyn StoreTx>> {
    let gate = Arc::clone(&inner.gate).lock_owned().await;
    let writer = Arc::clone(&inner);
    run_blocking(move || {
        lock(&writer.writer)
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(classify)
    })
    .await?;
    Ok(Box::new(SqliteTx {
        inner,
        gate: Some(gate),
        depth: AtomicUsize::new(0),
    }))
}

impl SqliteTx {
    /// Run `f` on the writer connection (inside the open transaction) on the blocking pool.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection, bool) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let mut conn = lock(&inner.writer);
            f(&mut conn, inner.commit_order_stamps)
        })
        .await
    }

    async fn sql(&self, sql: String) -> StoreResult<()> {
        self.run(move |conn, _| conn.execute_batch(&sql).map_err(classify))
            .await
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let rollback = move || {
            let conn = lock(&inner.writer);
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!("batch rollback failed: {e}");
                }
            }
            drop(gate);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(rollback)),
            Err(_) => rollback(),
        }
    }
}

impl Rows for SqliteTx {
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.run(move |conn, _| get_row(conn, &table, &scope, &id).map_err(classify)))
    }

    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.run(move |conn, commit_order| {
            insert_row(conn, commit_order, &table, &scope, &id, &values)
        }))
    }

    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.run(move |conn, commit_order| {
            cas_update(
                conn,
                commit_order,
                &table,
                &scope,
                &id,
                &values,
                CasKind::Update,
                expected.as_deref(),
            )
        }))
    }

    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.run(move |conn, commit_order| {
            if table.soft_delete {
                cas_update(
                    conn,
                    commit_order,
                    &table,
                    &scope,
                    &id,
                    &[],
                    CasKind::SoftDelete,
                    expected.as_deref(),
                )
            } else {
                hard_delete(conn, &table, &scope, &id, expected.as_deref())
            }
        }))
    }

    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.run(move |conn, commit_order| {
            cas_update(
                conn,
                commit_order,
                &table,
                &scope,
                &id,
                &[],
                CasKind::Undelete,
                expected.as_deref(),
            )
        }))
    }

    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        let (table, columns) = (table.clone(), columns.to_vec());
        Box::pin(self.run(move |conn, _| add_columns(conn, &table, &columns)))
    }
}

impl StoreTx for SqliteTx {
    fn savepoint(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(self.sql(format!("SAVEPOINT tsb{depth}")))
    }

    fn release(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, Ordering::SeqCst);
        Box::pin(self.sql(format!("RELEASE tsb{depth}")))
    }

    fn rollback_to(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, Ordering::SeqCst);
        Box::pin(self.sql(format!("ROLLBACK TO tsb{depth}; RELEASE tsb{depth}")))
    }

    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        let table = table.clone();
        Box::pin(self.run(move |conn, _| {
            let stored = stored_columns(conn, &table.name).map_err(classify)?;
            let mut out: Vec<Column> = table.columns.clone();
            out.extend(super::sql::extra_columns(&table, &stored, &TYPES)?);
            Ok(out)
        }))
    }

    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        now_s: i64,
        expired_before_s: i64,
    ) -> BoxFuture<'a, StoreResult<Claim>> {
        let key = key.clone();
        Box::pin(self.run(move |conn, _| {
            let claimed = conn
                .query_row(
                    "INSERT INTO tablesync_idempotency \
                     (principal, idem_key, fingerprint, status, headers, body, created_s) \
                     VALUES (?1, ?2, ?3, NULL, NULL, NULL, ?4) \
                     ON CONFLICT (principal, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
                     status = NULL, headers = NULL, body = NULL, created_s = excluded.created_s \
                     WHERE tablesync_idempotency.created_s <= ?5 RETURNING 1",
                    params![key.principal, key.key, key.fingerprint, now_s, expired_before_s],
                    |_| Ok(()),
                )
                .optional()
                .map_err(classify)?;
            if claimed.is_some() {
                return Ok(Claim::New);
            }
            conn.query_row(
                "SELECT fingerprint, status, headers, body FROM tablesync_idempotency \
                 WHERE principal = ?1 AND idem_key = ?2",
                params![key.principal, key.key],
                |r| Ok(existing(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(classify)
        }))
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        outcome: &'a Recorded,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let key = key.clone();
        let status = i64::from(outcome.status);
        let headers = headers_to_text(&outcome.headers);
        let body = outcome.body.as_ref().map(|b| b.to_string());
        Box::pin(self.run(move |conn, _| {
            conn.execute(
                "UPDATE tablesync_idempotency SET status = ?3, headers = ?4, body = ?5 \
                 WHERE principal = ?1 AND idem_key = ?2",
                params![key.principal, key.key, status, headers, body],
            )
            .map(drop)
            .map_err(classify)
        }))
    }

    fn unclaim<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, StoreResult<()>> {
        let key = key.clone();
        Box::pin(self.run(move |conn, _| {
            conn.execute(
                "DELETE FROM tablesync_idempotency \
                 WHERE principal = ?1 AND idem_key = ?2 AND status IS NULL",
                params![key.principal, key.key],
            )
            .map(drop)
            .map_err(classify)
        }))
    }

    fn sweep(&self, expired_before_s: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.run(move |conn, _| {
            conn.execute(
                "DELETE FROM tablesync_idempotency WHERE created_s <= ?1",
                [expired_before_s],
            )
            .map(|n| n as u64)
            .map_err(classify)
        }))
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, StoreResult<()>> {
        let gate = self.gate.take();
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let result = run_blocking(move || {
                let conn = lock(&inner.writer);
                let result = conn.execute_batch("COMMIT").map_err(classify);
                // A failed COMMIT (disk full, I/O) leaves the transaction open: end it, so the
                // next write does not find the connection inside it.
                if result.is_err() && !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                result
            })
            .await;
            drop(gate);
            result
        })
    }
}
