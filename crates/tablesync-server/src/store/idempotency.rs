//! Write transactions that span several table operations, and the idempotency records kept in
//! them (`docs/extensions.md` sections 2 and 3).
//!
//! A batch runs in one [`StoreTx`]: every operation of it, and every `Idempotency-Key` record,
//! commits together or not at all. Inside it each operation (and each atomicity group) is
//! wrapped in a savepoint, so a refused or failed operation undoes only its own work; the
//! row methods themselves nest their compare-and-swap in a savepoint of their own (the stores
//! detect an open transaction), which is what rolls a failed swap's stamp back.
//!
//! Records live in `tablesync_idempotency` (created with the other system tables), keyed (`principal`, `idem_key`): the primary key is
//! the unique constraint that makes a concurrent duplicate wait. [`StoreTx::claim`] inserts the
//! key first, before the operation runs: on PostgreSQL a second process claiming the same key
//! blocks on the first one's uncommitted row and, once that commits, finds the recorded
//! outcome instead of applying the write again (if it rolls back, the claim goes through).
//! A record whose `created_s` is older than the retention is replaced by a new claim, as if it
//! did not exist; [`StoreTx::sweep`] deletes such rows now and then so the table stays small.

use std::sync::Arc;

use serde_json::Value;
use tablesync_protocol::odata::sql::SqlValue;

use super::{BoxFuture, Scope, Store, StoreResult, WriteOutcome};
use crate::table::{Column, Item, TableSchema};

/// SQLite DDL of the records table and its expiry index.
pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS tablesync_idempotency (\
     principal TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint TEXT NOT NULL, \
     status INTEGER, headers TEXT, body TEXT, created_s INTEGER NOT NULL, \
     PRIMARY KEY (principal, idem_key)); \
     CREATE INDEX IF NOT EXISTS ix_tablesync_idempotency_created ON tablesync_idempotency (created_s);";

/// PostgreSQL DDL of the records table and its expiry index (run under the DDL lock).
pub const POSTGRES_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS tablesync_idempotency (\
     principal TEXT COLLATE \"C\" NOT NULL, idem_key TEXT COLLATE \"C\" NOT NULL, \
     fingerprint TEXT NOT NULL, status INTEGER, headers TEXT, body TEXT, created_s BIGINT NOT NULL, \
     PRIMARY KEY (principal, idem_key))",
    "CREATE INDEX IF NOT EXISTS ix_tablesync_idempotency_created ON tablesync_idempotency (created_s)",
];

/// Which record a request names: the caller, its key and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordKey {
    /// `u:<user id>`, or `anonymous`: keys are scoped to the principal.
    pub principal: String,
    /// The `Idempotency-Key` value.
    pub key: String,
    /// Hash of method, table, id, `If-Match` and body (hex).
    pub fingerprint: String,
}

/// A decided outcome, as recorded and replayed: status, response headers, body.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Response body (JSON), if any.
    pub body: Option<Value>,
}

/// What [`StoreTx::claim`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// The key is new (or its record expired): it is now held by this transaction.
    New,
    /// A live record of this key; `outcome` is None only for a claim that committed without an
    /// outcome (cannot happen through this crate).
    Existing {
        /// The fingerprint the key was recorded with.
        fingerprint: String,
        /// The recorded outcome.
        outcome: Option<Recorded>,
    },
}

/// The row operations an `App` table operation needs, either straight on the store (each its
/// own transaction) or inside a [`StoreTx`].
pub trait Rows: Send + Sync {
    /// [`Store::get`].
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>>;
    /// [`Store::insert`].
    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;
    /// [`Store::update`].
    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;
    /// [`Store::delete`].
    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;
    /// [`Store::undelete`].
    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;
    /// [`Store::add_columns`].
    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>>;
}

/// The store itself: every row operation is its own transaction.
impl Rows for Arc<dyn Store> {
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        (**self).get(table, scope, id)
    }
    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        (**self).insert(table, scope, id, values)
    }
    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        (**self).update(table, scope, id, values, expected)
    }
    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        (**self).delete(table, scope, id, expected)
    }
    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        (**self).undelete(table, scope, id, expected)
    }
    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        (**self).add_columns(table, columns)
    }
}

/// The work of one write transaction spanning several operations (a batch), handed to
/// [`Store::transaction`]: it gets the open transaction and says whether to keep what it did.
/// It may be called again after its transaction was rolled back without its doing (SQLite runs
/// it again alone when the group it rode in died), so it must start afresh each time.
pub type TxWork = Box<dyn for<'t> FnMut(&'t dyn StoreTx) -> BoxFuture<'t, WorkEnd> + Send>;

/// What a [`TxWork`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkEnd {
    /// Commit its work; it carried `writes` writes (for the group commit metric).
    Keep {
        /// Writes it carried.
        writes: usize,
    },
    /// Roll its work back; it carried `writes` writes.
    Discard {
        /// Writes it carried.
        writes: usize,
    },
}

impl WorkEnd {
    /// The writes it carried.
    pub fn writes(self) -> usize {
        match self {
            WorkEnd::Keep { writes } | WorkEnd::Discard { writes } => writes,
        }
    }
}

/// One open write transaction (a batch's), as [`Store::transaction`] lends it to its work;
/// the store commits or rolls it back when the work ends. Savepoints nest:
/// [`StoreTx::savepoint`] opens one, [`StoreTx::release`] keeps its work,
/// [`StoreTx::rollback_to`] undoes it; both close the innermost one.
pub trait StoreTx: Rows {
    /// Open a savepoint.
    fn savepoint(&self) -> BoxFuture<'_, StoreResult<()>>;
    /// Close the innermost savepoint, keeping its work.
    fn release(&self) -> BoxFuture<'_, StoreResult<()>>;
    /// Close the innermost savepoint, undoing its work.
    fn rollback_to(&self) -> BoxFuture<'_, StoreResult<()>>;
    /// The table's columns as this transaction sees them (after a rolled-back `ADD COLUMN`).
    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>>;
    /// Hold `key` for this transaction (see the module docs), unless a record younger than
    /// `expired_before_s` (a time in seconds: records created at or before it are expired)
    /// exists. `now_s` is the new record's creation time.
    fn claim<'a>(
        &'a self,
        key: &'a RecordKey,
        now_s: i64,
        expired_before_s: i64,
    ) -> BoxFuture<'a, StoreResult<Claim>>;
    /// Store the outcome of a key this transaction claimed.
    fn complete<'a>(
        &'a self,
        key: &'a RecordKey,
        outcome: &'a Recorded,
    ) -> BoxFuture<'a, StoreResult<()>>;
    /// Let go of a key this transaction claimed but did not [`complete`](StoreTx::complete)
    /// (a recorded outcome is never deleted here).
    fn unclaim<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, StoreResult<()>>;
    /// Delete records created at or before `expired_before_s`.
    fn sweep(&self, expired_before_s: i64) -> BoxFuture<'_, StoreResult<u64>>;
}

/// Headers as stored: a JSON object of strings.
pub(super) fn headers_to_text(headers: &[(String, String)]) -> String {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(map).to_string()
}

/// [`headers_to_text`] read back (anything unreadable is dropped: it was written by us).
pub(super) fn headers_from_text(text: Option<&str>) -> Vec<(String, String)> {
    match text.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        Some(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

/// A record row read back: (fingerprint, status, headers, body) → [`Claim::Existing`].
pub(super) fn existing(
    fingerprint: String,
    status: Option<i64>,
    headers: Option<String>,
    body: Option<String>,
) -> Claim {
    let outcome = status
        .and_then(|s| u16::try_from(s).ok())
        .map(|status| Recorded {
            status,
            headers: headers_from_text(headers.as_deref()),
            body: body.and_then(|b| serde_json::from_str(&b).ok()),
        });
    Claim::Existing {
        fingerprint,
        outcome,
    }
}
