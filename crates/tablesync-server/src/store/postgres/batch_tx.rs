//! A batch's write transaction on PostgreSQL ([`StoreTx`]): one connection of the write pool in
//! one READ COMMITTED transaction for the whole batch (not a group commit: a batch may span
//! tables and owners, and a group holds one clock row only). The row methods run with that connection as
//! their `outer` and nest their work in a savepoint; the idempotency claim is an `INSERT … ON
//! CONFLICT` on the records' primary key, so a second process sending the same key waits for
//! this transaction and then reads its committed outcome (module docs of `idempotency`).
//! Dropped without commit, sqlx rolls the transaction back.

use sqlx::{Postgres, Row, Transaction};
use tablesync_protocol::odata::sql::SqlValue;
use tokio::sync::Mutex;

use super::super::idempotency::{
    existing, headers_to_text, Claim, RecordKey, Recorded, Rows, StoreTx, TxWork, WorkEnd,
};
use super::super::sql::CasKind;
use super::super::{BoxFuture, Scope, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use super::{add_columns, classify, get_row, stored_columns, PostgresStore, TYPES};
use crate::table::{Column, Item, TableSchema};

/// An open batch transaction.
pub(super) struct PgTx {
    store: PostgresStore,
    /// None once committed.
    tx: Mutex<Option<Transaction<'static, Postgres>>>,
    /// Open savepoints (their names are `tsb<depth>`).
    depth: std::sync::atomic::AtomicUsize,
}

/// Run a transaction's `work` in a transaction of its own on a connection of the write pool,
/// then commit it (kept) or roll it back (discarded).
pub(super) async fn run_work(store: PostgresStore, mut work: TxWork) -> StoreResult<()> {
    let tx = store.begin_write().await?;
    let tx = PgTx {
        store,
        tx: Mutex::new(Some(tx)),
        depth: std::sync::atomic::AtomicUsize::new(0),
    };
    let end = work(&tx).await;
    let PgTx { store, tx, .. } = tx;
    let tx = tx.into_inner().ok_or_else(finished)?;
    match end {
        WorkEnd::Keep { writes } => {
            store.commit_write(tx, false).await?;
            store.commits.observe(writes);
            Ok(())
        }
        WorkEnd::Discard { .. } => tx.rollback().await.map_err(|e| classify(&e)),
    }
}

fn finished() -> StoreError {
    StoreError::new(
        StoreErrorKind::Internal,
        "batch transaction used after commit",
    )
}

/// Run `$body` with `$conn` bound to the transaction's connection.
macro_rules! on_tx {
    ($self:ident, |$conn:ident| $body:expr) => {
        Box::pin(async move {
            let mut guard = $self.tx.lock().await;
            let tx = guard.as_mut().ok_or_else(finished)?;
            let $conn: &mut sqlx::PgConnection = &mut *tx;
            $body
        })
    };
}

impl PgTx {
    async fn sql(&self, sql: String) -> StoreResult<()> {
        let mut guard = self.tx.lock().await;
        let tx = guard.as_mut().ok_or_else(finished)?;
        sqlx::query(&sql)
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }
}

impl Rows for PgTx {
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        on_tx!(self, |conn| get_row(conn, table, scope, id).await)
    }

    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        on_tx!(self, |conn| {
            self.store
                .insert_row(Some(conn), table, scope, id, &values)
                .await
        })
    }

    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        on_tx!(self, |conn| {
            self.store
                .cas_update(
                    Some(conn),
                    table,
                    scope,
                    id,
                    &values,
                    CasKind::Update,
                    expected.as_deref(),
                )
                .await
        })
    }

    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        on_tx!(self, |conn| {
            if table.soft_delete {
                self.store
                    .cas_update(
                        Some(conn),
                        table,
                        scope,
                        id,
                        &[],
                        CasKind::SoftDelete,
                        expected.as_deref(),
                    )
                    .await
            } else {
                self.store
                    .hard_delete(Some(conn), table, scope, id, expected.as_deref())
                    .await
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
        on_tx!(self, |conn| {
            self.store
                .cas_update(
                    Some(conn),
                    table,
                    scope,
                    id,
                    &[],
                    CasKind::Undelete,
                    expected.as_deref(),
                )
                .await
        })
    }

    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        on_tx!(self, |conn| add_columns(
            &self.store.write_pool,
            Some(conn),
            table,
            columns
        )
        .await)
    }
}

impl StoreTx for PgTx {
    fn savepoint(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::pin(self.sql(format!("SAVEPOINT tsb{depth}")))
    }

    fn release(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(self.sql(format!("RELEASE SAVEPOINT tsb{depth}")))
    }

    fn rollback_to(&self) -> BoxFuture<'_, StoreResult<()>> {
        let depth = self.depth.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            self.sql(format!("ROLLBACK TO SAVEPOINT tsb{depth}"))
                .await?;
            self.sql(format!("RELEASE SAVEPOINT tsb{depth}")).await
        })
    }

    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        Box::pin(async move {
            let mut guard = self.tx.lock().await;
            let tx = guard.as_mut().ok_or_else(finished)?;
            let stored = stored_columns(tx, &table.name).await?;
            let mut out = table.columns.clone();
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
        on_tx!(self, |conn| {
            let claimed = sqlx::query(
                "INSERT INTO tablesync_idempotency AS r \
                 (principal, idem_key, fingerprint, status, headers, body, created_s) \
                 VALUES ($1::text, $2::text, $3::text, NULL, NULL, NULL, $4::bigint) \
                 ON CONFLICT (principal, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 status = NULL, headers = NULL, body = NULL, created_s = excluded.created_s \
                 WHERE r.created_s <= $5::bigint RETURNING 1",
            )
            .bind(&key.principal)
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(now_s)
            .bind(expired_before_s)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| classify(&e))?;
            if claimed.is_some() {
                return Ok(Claim::New);
            }
            let row = sqlx::query(
                "SELECT fingerprint, status::bigint, headers, body FROM tablesync_idempotency \
                 WHERE principal = $1::text AND idem_key = $2::text",
            )
            .bind(&key.principal)
            .bind(&key.key)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(&e))?;
            let read = |row: &sqlx::postgres::PgRow| -> Result<Claim, sqlx::Error> {
                Ok(existing(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            };
            read(&row).map_err(|e| classify(&e))
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        outcome: &'a Recorded,
    ) -> BoxFuture<'a, StoreResult<()>> {
        on_tx!(self, |conn| {
            sqlx::query(
                "UPDATE tablesync_idempotency SET status = $3::integer, headers = $4::text, \
                 body = $5::text WHERE principal = $1::text AND idem_key = $2::text",
            )
            .bind(&key.principal)
            .bind(&key.key)
            .bind(i32::from(outcome.status))
            .bind(headers_to_text(&outcome.headers))
            .bind(outcome.body.as_ref().map(|b| b.to_string()))
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
        })
    }

    fn unclaim<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, StoreResult<()>> {
        on_tx!(self, |conn| {
            sqlx::query(
                "DELETE FROM tablesync_idempotency \
                 WHERE principal = $1::text AND idem_key = $2::text AND status IS NULL",
            )
            .bind(&key.principal)
            .bind(&key.key)
            .execute(&mut *conn)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
        })
    }

    fn sweep(&self, expired_before_s: i64) -> BoxFuture<'_, StoreResult<u64>> {
        on_tx!(self, |conn| {
            sqlx::query("DELETE FROM tablesync_idempotency WHERE created_s <= $1::bigint")
                .bind(expired_before_s)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| classify(&e))
        })
    }
}
