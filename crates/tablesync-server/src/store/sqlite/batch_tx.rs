//! A batch's write transaction on SQLite ([`StoreTx`]), run through the group commit
//! (`sqlite/group.rs`): the batch is one entry of the writer's queue, and its work runs on the
//! blocking thread that holds the writer connection, inside the group's transaction and a
//! savepoint of its own (`tsw`), or in a `BEGIN IMMEDIATE` of its own when it is alone.
//!
//! The batch's code is async (`crate::batch` runs `App`'s table operations), but every call it
//! makes on this transaction is plain synchronous SQL on the connection in hand, answered with
//! a ready future: the whole batch is driven on the writer thread (`Handle::block_on`), one
//! hop to the blocking pool per batch instead of several per operation. Nothing the batch
//! awaits there needs the writer (schema refreshes read through the reader connections), so
//! it cannot wait for itself.
//!
//! Kept work is released into the group's transaction and committed with it, so the batch's
//! writes and idempotency records exist together or not at all; discarded work (the batch was
//! refused or failed) is rolled back to the savepoint, leaving the other writes of the group
//! alone.

use std::future::ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OptionalExtension};
use tablesync_protocol::odata::sql::SqlValue;

use super::super::idempotency::{
    existing, headers_to_text, Claim, RecordKey, Recorded, Rows, StoreTx, TxWork, WorkEnd,
};
use super::super::sql::CasKind;
use super::super::{BoxFuture, Scope, StoreResult, WriteOutcome};
use super::group::Done;
use super::{
    add_columns, cas_update, classify, get_row, hard_delete, insert_row, stored_columns, TYPES,
};
use crate::table::{Column, Item, TableSchema};

/// The open transaction as a batch sees it: the writer connection, in hand.
struct DirectTx<'c> {
    conn: Mutex<&'c mut Connection>,
    commit_order: bool,
    /// Open savepoints (their names are `tsb<depth>`).
    depth: AtomicUsize,
}

/// Run a transaction's `work` on the writer connection `conn` (see the module docs); driven
/// by `runtime`, the runtime of the request that queued it.
pub(super) fn run_work(
    conn: &mut Connection,
    commit_order: bool,
    runtime: &tokio::runtime::Handle,
    work: &mut TxWork,
) -> StoreResult<Done> {
    // Alone (a group of one, or run again after its group's transaction died): a transaction
    // of its own. Else a savepoint of the group's.
    let alone = conn.is_autocommit();
    let (begin, keep, discard) = if alone {
        ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
    } else {
        (
            "SAVEPOINT tsw",
            "RELEASE tsw",
            "ROLLBACK TO tsw; RELEASE tsw",
        )
    };
    conn.execute_batch(begin).map_err(classify)?;
    let end = {
        let tx = DirectTx {
            conn: Mutex::new(&mut *conn),
            commit_order,
            depth: AtomicUsize::new(0),
        };
        runtime.block_on(work(&tx))
    };
    let finish = match end {
        WorkEnd::Keep { .. } => keep,
        WorkEnd::Discard { .. } => discard,
    };
    let result = conn.execute_batch(finish).map_err(classify);
    if result.is_err() && alone && !conn.is_autocommit() {
        // A failed COMMIT may leave the transaction open: end it, so the next write does not
        // find the connection inside it.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result.map(|()| Done::Work(end.writes()))
}

impl<'c> DirectTx<'c> {
    fn conn(&self) -> MutexGuard<'_, &'c mut Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the connection now; its answer as a ready future.
    fn now<'s, T: Send + 's>(
        &'s self,
        f: impl FnOnce(&mut Connection, bool) -> StoreResult<T>,
    ) -> BoxFuture<'s, StoreResult<T>> {
        let result = f(&mut self.conn(), self.commit_order);
        Box::pin(ready(result))
    }

    fn sql(&self, sql: &str) -> BoxFuture<'_, StoreResult<()>> {
        self.now(|conn, _| conn.execute_batch(sql).map_err(classify))
    }
}

impl Rows for DirectTx<'_> {
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        self.now(|conn, _| get_row(conn, table, scope, id).map_err(classify))
    }

    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.now(|conn, commit_order| insert_row(conn, commit_order, table, scope, id, &values))
    }

    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.now(|conn, commit_order| {
            cas_update(
                conn,
                commit_order,
                table,
                scope,
                id,
                &values,
                CasKind::Update,
                expected.as_deref(),
            )
        })
    }

    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.now(|conn, commit_order| {
            if table.soft_delete {
                cas_update(
                    conn,
                    commit_order,
                    table,
                    scope,
                    id,
                    &[],
                    CasKind::SoftDelete,
                    expected.as_deref(),
                )
            } else {
                hard_delete(conn, table, scope, id, expected.as_deref())
            }
        })
    }

    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        self.now(|conn, commit_order| {
            cas_update(
                conn,
                commit_order,
                table,
                scope,
                id,
                &[],
                CasKind::Undelete,
                expected.as_deref(),
            )
        })
    }

    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        self.now(|conn, _| add_columns(conn, table, columns))
    }
}

impl StoreTx for DirectTx<'_> {
    fn savepoint(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        self.sql(&format!("SAVEPOINT tsb{depth}"))
    }

    fn release(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, Ordering::SeqCst);
        self.sql(&format!("RELEASE tsb{depth}"))
    }

    fn rollback_to(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, Ordering::SeqCst);
        self.sql(&format!("ROLLBACK TO tsb{depth}; RELEASE tsb{depth}"))
    }

    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        self.now(|conn, _| {
            let stored = stored_columns(conn, &table.name).map_err(classify)?;
            let mut out: Vec<Column> = table.columns.clone();
            out.extend(super::sql::extra_columns(table, &stored, &TYPES)?);
            Ok(out)
        })
    }

    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        now_s: i64,
        expired_before_s: i64,
    ) -> BoxFuture<'a, StoreResult<Claim>> {
        self.now(|conn, _| {
            let claimed = conn
                .prepare_cached(
                    "INSERT INTO tablesync_idempotency \
                     (principal, idem_key, fingerprint, status, headers, body, created_s) \
                     VALUES (?1, ?2, ?3, NULL, NULL, NULL, ?4) \
                     ON CONFLICT (principal, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
                     status = NULL, headers = NULL, body = NULL, created_s = excluded.created_s \
                     WHERE tablesync_idempotency.created_s <= ?5 RETURNING 1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![key.principal, key.key, key.fingerprint, now_s, expired_before_s],
                        |_| Ok(()),
                    )
                    .optional()
                })
                .map_err(classify)?;
            if claimed.is_some() {
                return Ok(Claim::New);
            }
            conn.prepare_cached(
                "SELECT fingerprint, status, headers, body FROM tablesync_idempotency \
                 WHERE principal = ?1 AND idem_key = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![key.principal, key.key], |r| {
                    Ok(existing(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
            })
            .map_err(classify)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        outcome: &'a Recorded,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let status = i64::from(outcome.status);
        let headers = headers_to_text(&outcome.headers);
        let body = outcome.body.as_ref().map(|b| b.to_string());
        self.now(move |conn, _| {
            conn.prepare_cached(
                "UPDATE tablesync_idempotency SET status = ?3, headers = ?4, body = ?5 \
                 WHERE principal = ?1 AND idem_key = ?2",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![key.principal, key.key, status, headers, body])
            })
            .map(drop)
            .map_err(classify)
        })
    }

    fn unclaim<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, StoreResult<()>> {
        self.now(|conn, _| {
            conn.prepare_cached(
                "DELETE FROM tablesync_idempotency \
                 WHERE principal = ?1 AND idem_key = ?2 AND status IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![key.principal, key.key]))
            .map(drop)
            .map_err(classify)
        })
    }

    fn sweep(&self, expired_before_s: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.now(move |conn, _| {
            conn.execute(
                "DELETE FROM tablesync_idempotency WHERE created_s <= ?1",
                [expired_before_s],
            )
            .map(|n| n as u64)
            .map_err(classify)
        })
    }
}
